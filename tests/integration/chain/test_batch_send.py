"""ChainClient.send_many / wait_many and Registry.send_register_many against a real anvil."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hexbytes import HexBytes

from devenv.anvil import AnvilProcess, start_anvil
from devenv.faultproxy import FaultProxy, wait_for_mode_requests
from edgefabric.chain.client import (
    BatchSendError,
    Call,
    ChainClient,
    TransactionReverted,
    _calldata,
    connect,
    load_account,
)
from edgefabric.chain.registry import Registry, load_artifact, service_id

PAYLOAD = ("1.0.0", ["https://a.example/x", "https://b.example/x"], '{"tier":"core"}', 600)


@pytest.fixture(scope="module")
def anvil() -> Iterator[AnvilProcess]:
    with start_anvil() as node:
        yield node


@pytest.fixture(scope="module")
def contract(anvil: AnvilProcess) -> str:
    art = load_artifact()
    client = ChainClient(connect(anvil.rpc_url), load_account(anvil.private_keys[0]), abi=art["abi"])
    address = client.deploy(art["abi"], art["bytecode"], "deploy").contract_address
    assert address is not None
    return address


def _registry(url: str, key: str, address: str) -> Registry:
    return Registry(ChainClient(connect(url), load_account(key), abi=load_artifact()["abi"]), address)


def _pending_nonce(reg: Registry) -> int:
    return int(reg.client.w3.eth.get_transaction_count(reg.client.address, "pending"))


def test_calldata_is_webs_encoding(anvil: AnvilProcess, contract: str) -> None:
    reg = _registry(anvil.rpc_url, anvil.private_keys[0], contract)
    fns = [
        reg.contract.functions.registerService("n", "1", ["e1", "e2"], "m", 60),
        reg.contract.functions.updateHeartbeat(HexBytes("0x" + "ab" * 32)),
        # a hex string for bytes32: eth_abi refuses it, web3 normalises it (the fallback)
        reg.contract.functions.updateHeartbeat("0x" + "cd" * 32),
        reg.contract.functions.setHeartbeatDelegate(HexBytes("0x" + "01" * 32), reg.client.address),
    ]
    for fn in fns:
        assert _calldata(fn) == fn._encode_transaction_data()


def test_a_batch_is_two_round_trips_and_every_registration_lands(anvil: AnvilProcess, contract: str) -> None:
    with FaultProxy(anvil.rpc_url) as proxy:
        reg = _registry(proxy.url, anvil.private_keys[1], contract)
        reg.client.fees()  # priced before counting (cached for 2 s, as in a burst)
        first = _pending_nonce(reg)
        before = proxy.requests["pass"]
        pending = reg.send_register_many([(f"batch-{i:02d}", *PAYLOAD) for i in range(30)])
        sent_requests = proxy.requests["pass"] - before
        results = reg.client.wait_many(pending)
        # one estimate batch, one broadcast batch (and the nonce read on a fresh manager)
        assert sent_requests <= 3, sent_requests
        assert [p.nonce for p in pending] == list(range(first, first + 30))
        assert all(r.gas_used > 0 for r in results)
        assert [r.tx_hash for r in results] == [p.tx_hash for p in pending]
        owner = reg.client.address
        assert all(reg.is_alive(service_id(f"batch-{i:02d}", PAYLOAD[0], owner)) for i in range(30))


def test_a_would_be_revert_names_the_call_and_sends_nothing(anvil: AnvilProcess, contract: str) -> None:
    reg = _registry(anvil.rpc_url, anvil.private_keys[2], contract)
    reg.register("taken", *PAYLOAD)
    nonce = _pending_nonce(reg)
    batch = [("fresh-1", *PAYLOAD), ("taken", *PAYLOAD), ("fresh-2", *PAYLOAD), ("taken", *PAYLOAD)]
    with pytest.raises(TransactionReverted) as info:
        reg.send_register_many(batch)
    assert "registerService(taken@1.0.0)" in str(info.value)
    assert "and 1 more of the 4 calls" in str(info.value)
    assert info.value.error_name == "AlreadyRegistered"
    assert _pending_nonce(reg) == nonce
    # the manager handed out nothing: the next send takes the same nonce
    assert reg.send_register("fresh-1", *PAYLOAD).nonce == nonce


def test_a_refused_broadcast_in_the_middle_leaves_no_gap_and_a_rerun_converges(
    anvil: AnvilProcess, contract: str
) -> None:
    """The middle call asks for more gas than a block holds: the node refuses it at broadcast,
    after the earlier ones were accepted and while the later ones sit behind its nonce."""
    reg = _registry(anvil.rpc_url, anvil.private_keys[3], contract)
    fn = reg.contract.functions
    names = [f"mid-{i}" for i in range(5)]
    calls = [Call(fn.registerService(n, *PAYLOAD), f"registerService({n})") for n in names]
    calls[2] = Call(calls[2].fn, calls[2].description, gas=40_000_000)
    first = _pending_nonce(reg)
    with pytest.raises(BatchSendError) as info:
        reg.client.send_many(calls)
    assert info.value.failed == [2]
    assert "registerService(mid-2)" in str(info.value)
    sent = info.value.sent
    assert [p.nonce for p in sent] == [first, first + 1, first + 3, first + 4]
    reg.client.wait_many(sent)  # the later ones are mined: the gap was filled
    owner = reg.client.address
    assert [reg.get_service(service_id(n, PAYLOAD[0], owner)) is not None for n in names] == [
        True, True, False, True, True]
    assert _pending_nonce(reg) == first + 5
    # the rerun: only the missing registration, with an estimate; the nonce manager agrees
    again = reg.send_register_many([("mid-2", *PAYLOAD)])
    assert again[0].nonce == first + 5
    reg.client.wait_many(again)
    assert len(reg.owner_services(owner)) == 5


def test_a_passing_fault_on_the_batch_is_retried(anvil: AnvilProcess, contract: str) -> None:
    with FaultProxy(anvil.rpc_url) as proxy:
        reg = _registry(proxy.url, anvil.private_keys[4], contract)
        reg.client.fees()
        proxy.set("5xx")
        outcome: dict[str, Any] = {}

        def send() -> None:
            try:
                outcome["pending"] = reg.send_register_many([(f"flaky-{i}", *PAYLOAD) for i in range(5)])
                outcome["results"] = reg.client.wait_many(outcome["pending"])
            except Exception as exc:  # shown by the assertion below
                outcome["error"] = exc

        worker = threading.Thread(target=send)
        worker.start()
        wait_for_mode_requests(proxy, "5xx", 2)
        proxy.set("pass")
        worker.join(30)
        assert "error" not in outcome, outcome.get("error")
        assert len(outcome["results"]) == 5
        assert len(reg.owner_services(reg.client.address)) == 5


def test_wait_many_raises_a_decoded_failure_after_the_others_settle(anvil: AnvilProcess, contract: str) -> None:
    """Two registrations of one name in one batch: both estimates pass (each against the state
    before the batch), the second reverts when mined and is decoded through `wait`."""
    reg = _registry(anvil.rpc_url, anvil.private_keys[5], contract)
    pending = reg.send_register_many([("twice", *PAYLOAD), ("once", *PAYLOAD), ("twice", *PAYLOAD)])
    with pytest.raises(TransactionReverted) as info:
        reg.client.wait_many(pending)
    assert info.value.error_name == "AlreadyRegistered"
    assert "registerService(twice@1.0.0)" in str(info.value)
    owner = reg.client.address
    assert reg.is_alive(service_id("once", PAYLOAD[0], owner))
    assert reg.is_alive(service_id("twice", PAYLOAD[0], owner))
