"""The chain client under faults, against a real anvil behind a loopback fault proxy:
refused, rate-limited, failing, stalled and dropped requests; an underpriced (stuck)
transaction; a receipt timeout; a reorg under a registration."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hexbytes import HexBytes
from web3 import Web3

from devenv.anvil import AnvilProcess, start_anvil
from devenv.faultproxy import FaultProxy, Mode, wait_for_mode_requests
from edgefabric.chain.client import (
    ChainClient,
    ChainError,
    FeePolicy,
    RetryPolicy,
    connect,
    load_account,
)
from edgefabric.chain.registry import Registry, load_artifact, service_id


@pytest.fixture(scope="module")
def anvil() -> Iterator[AnvilProcess]:
    with start_anvil() as node:
        yield node


@pytest.fixture
def proxy(anvil: AnvilProcess) -> Iterator[FaultProxy]:
    with FaultProxy(anvil.rpc_url) as p:
        yield p


@pytest.fixture(scope="module")
def contract(anvil: AnvilProcess) -> str:
    art = load_artifact()
    client = ChainClient(connect(anvil.rpc_url), load_account(anvil.private_keys[0]), abi=art["abi"])
    address = client.deploy(art["abi"], art["bytecode"], "deploy").contract_address
    assert address is not None
    return address


def _registry(url: str, key: str, address: str, **client_kwargs: Any) -> Registry:
    w3 = connect(url, timeout=0.5, policy=RetryPolicy(attempts=40, backoff_s=0.05, max_s=20))
    return Registry(ChainClient(w3, load_account(key), abi=load_artifact()["abi"], **client_kwargs), address)


def _rpc(anvil: AnvilProcess, method: str, *params: Any) -> Any:
    return Web3(Web3.HTTPProvider(anvil.rpc_url)).provider.make_request(method, list(params))  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["refuse", "429", "5xx", "stall", "drop"])
def test_a_passing_fault_is_retried_and_the_write_lands(
    mode: Mode, anvil: AnvilProcess, proxy: FaultProxy, contract: str
) -> None:
    reg = _registry(proxy.url, anvil.private_keys[1], contract)
    proxy.set(mode)
    outcome: dict[str, Any] = {}

    def register() -> None:
        try:
            outcome["result"] = reg.register(f"svc-{mode}", "1.0.0", ["https://e"], "", 60)
        except Exception as exc:  # the assertion below shows what escaped
            outcome["error"] = exc

    worker = threading.Thread(target=register)
    worker.start()
    if mode != "refuse":  # a refused connection never reaches the proxy's handler
        wait_for_mode_requests(proxy, mode, 2)
    else:
        time.sleep(0.5)
    proxy.set("pass")
    worker.join(30)
    assert "error" not in outcome, outcome.get("error")
    assert outcome["result"].block_number > 0
    assert reg.is_alive(service_id(f"svc-{mode}", "1.0.0", reg.client.address))


@pytest.mark.parametrize("mode", ["refuse", "429", "5xx", "stall", "drop"])
def test_a_lasting_fault_is_a_chain_error_without_the_url_secret(
    mode: Mode, anvil: AnvilProcess, proxy: FaultProxy, contract: str
) -> None:
    reg = _registry(proxy.url + "/v3/s3cr3t-api-key", anvil.private_keys[1], contract)
    reg.client.w3.provider._policy = RetryPolicy(attempts=3, backoff_s=0.01, max_s=3)  # type: ignore[attr-defined]
    proxy.set(mode)
    calls: list[Callable[[], object]] = [
        lambda: reg.get_service("0x" + "00" * 32),
        lambda: reg.send_register("never", "1", ["e"], "", 60),
        lambda: reg.client.fees(fresh=True),
    ]
    for call in calls:
        with pytest.raises(ChainError) as info:
            call()
        assert "s3cr3t" not in str(info.value) and "127.0.0.1" in str(info.value)
    proxy.set("pass")


def test_an_underpriced_transaction_is_bumped_and_mined(anvil: AnvilProcess, contract: str) -> None:
    """Automine off; the base fee jumps 50x after the send: the pool cannot mine the transaction,
    so the client re-signs it with the same nonce and a higher fee after 2 blocks."""
    reg = _registry(anvil.rpc_url, anvil.private_keys[2], contract, fee_policy=FeePolicy(bump_after_blocks=2))
    w3 = reg.client.w3
    _rpc(anvil, "evm_setAutomine", False)
    stop = threading.Event()
    try:
        pending = reg.send_register("stuck", "1.0.0", ["https://e"], "", 60)
        base = int(w3.eth.get_block("latest")["baseFeePerGas"])
        _rpc(anvil, "anvil_setNextBlockBaseFeePerGas", hex(base * 50))

        def miner() -> None:
            while not stop.is_set():
                _rpc(anvil, "evm_mine")
                time.sleep(0.1)

        threading.Thread(target=miner, daemon=True).start()
        result = reg.client.wait(pending)
    finally:
        stop.set()
        _rpc(anvil, "evm_setAutomine", True)
    assert result.tx_hash != pending.tx_hash  # the replacement was mined, not the original
    mined = w3.eth.get_transaction(HexBytes(result.tx_hash))
    assert mined["nonce"] == pending.nonce
    assert mined["maxFeePerGas"] > pending.tx["maxFeePerGas"]
    assert reg.is_alive(service_id("stuck", "1.0.0", reg.client.address))


def test_the_fee_cap_is_never_exceeded(anvil: AnvilProcess, contract: str) -> None:
    cap = Web3.to_wei(3, "gwei")
    reg = _registry(anvil.rpc_url, anvil.private_keys[2], contract, fee_policy=FeePolicy(max_fee_wei=cap))
    fees = reg.client.fees(fresh=True)
    assert fees["maxFeePerGas"] <= cap and fees["maxPriorityFeePerGas"] <= cap
    tx = {"maxFeePerGas": cap, "maxPriorityFeePerGas": Web3.to_wei(1, "gwei")}
    assert reg.client._bumped(tx) is None  # at the cap: no replacement is possible


def test_a_receipt_timeout_resyncs_the_nonce(anvil: AnvilProcess, contract: str) -> None:
    reg = _registry(anvil.rpc_url, anvil.private_keys[3], contract, receipt_timeout=0.5,
                    fee_policy=FeePolicy(bump_after_blocks=1000))
    w3 = reg.client.w3
    _rpc(anvil, "evm_setAutomine", False)
    try:
        pending = reg.send_register("lost", "1.0.0", ["https://e"], "", 60)
        with pytest.raises(ChainError, match=r"no receipt for .* after 0.5s \(nonce \d+\); the nonce will be re-read"):
            reg.client.wait(pending)
        _rpc(anvil, "anvil_dropTransaction", pending.tx_hash)  # the node forgot it: the nonce is free again
    finally:
        _rpc(anvil, "evm_setAutomine", True)
    result = reg.register("found", "1.0.0", ["https://e"], "", 60)
    assert w3.eth.get_transaction(HexBytes(result.tx_hash))["nonce"] == pending.nonce


def test_a_reorg_under_a_registration_is_survived(anvil: AnvilProcess, contract: str) -> None:
    """Mined, then reorged out (anvil drops its transactions); wait() re-sends it and returns
    only once it is 2 blocks deep on the canonical chain."""
    reg = _registry(anvil.rpc_url, anvil.private_keys[4], contract, confirmations=2)
    w3 = reg.client.w3
    _rpc(anvil, "evm_setAutomine", False)
    outcome: dict[str, Any] = {}
    try:
        pending = reg.send_register("reorged", "1.0.0", ["https://e"], "", 60)
        worker = threading.Thread(target=lambda: outcome.setdefault("result", reg.client.wait(pending)))
        worker.start()
        _rpc(anvil, "evm_mine")
        first = int(w3.eth.get_transaction_receipt(HexBytes(pending.tx_hash))["blockNumber"])
        time.sleep(0.2)
        assert "result" not in outcome  # one block deep is not enough
        _rpc(anvil, "anvil_reorg", 1, [])  # the block with our transaction is replaced by an empty one
        sid = service_id("reorged", "1.0.0", reg.client.address)
        assert reg.get_service(sid) is None
        deadline = time.monotonic() + 20
        while "result" not in outcome and time.monotonic() < deadline:
            time.sleep(0.2)
            _rpc(anvil, "evm_mine")
        worker.join(5)
    finally:
        _rpc(anvil, "evm_setAutomine", True)
    result = outcome["result"]
    assert result.block_number > first
    assert w3.eth.block_number - result.block_number + 1 >= 2
    assert reg.is_alive(sid)


def test_discovery_ignores_a_spammers_registrations_under_our_names(anvil: AnvilProcess, contract: str) -> None:
    """Anyone can register under any name: with the publishers allowlist (the stack's deployer)
    discovery returns only ours, and stays bounded however many the spammer adds."""
    ours = _registry(anvil.rpc_url, anvil.private_keys[5], contract)
    spammer = _registry(anvil.rpc_url, anvil.private_keys[6], contract)
    ours.register("spammed-api", "1.0.0", ["https://ours"], "", 600)
    for i in range(12):
        spammer.register("spammed-api", f"6.6.{i}", ["https://evil"], "", 600)
    everyone = ours.discover("spammed-api")
    assert len(everyone) == 13
    mine = ours.discover("spammed-api", publishers=[ours.client.address])
    assert mine == [service_id("spammed-api", "1.0.0", ours.client.address)]
    assert len(ours.discover("spammed-api", page=5, limit=4)) == 4  # bounded by limit
    assert len(ours.discover("spammed-api", page=2, max_pages=3)) == 6  # bounded by pages
