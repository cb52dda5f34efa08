"""edgefabric/chain/client.py against a real anvil: nonce resync, fees, receipts, decoding, keys."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from eth_account import Account

from devenv.anvil import AnvilProcess, start_anvil
from edgefabric.chain.client import (
    ChainClient,
    ChainError,
    ErrorDecoder,
    TransactionReverted,
    connect,
    load_account,
    nonce_manager,
)
from edgefabric.chain.registry import Registry, load_artifact

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def anvil() -> Iterator[AnvilProcess]:
    with start_anvil() as node:
        yield node


def _registry(anvil: AnvilProcess, key: str) -> Registry:
    art = load_artifact()
    client = ChainClient(connect(anvil.rpc_url), load_account(key), abi=art["abi"])
    address = client.deploy(art["abi"], art["bytecode"], "deploy").contract_address
    assert address is not None
    return Registry(client, address)


def test_nonce_manager_resyncs_after_an_out_of_band_transaction(
    anvil: AnvilProcess, caplog: pytest.LogCaptureFixture
) -> None:
    key = anvil.private_keys[8]
    reg = _registry(anvil, key)
    reg.register("a", "1", ["e"], "", 60)  # the manager now expects nonce n+1
    # Another process (same key) sends a transaction the manager does not know about.
    w3 = reg.client.w3
    acct = Account.from_key(key)
    nonce = w3.eth.get_transaction_count(acct.address, "pending")
    fees = reg.client.fees()
    signed = acct.sign_transaction({"to": acct.address, "value": 0, "gas": 21000, "nonce": nonce,
                                    "chainId": 31337, "type": 2, **fees})
    w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(signed.raw_transaction))
    # Our next send gets "nonce too low", resyncs from `pending` and goes through.
    with caplog.at_level(logging.INFO, logger="edgefabric.chain.client"):
        result = reg.register("b", "1", ["e"], "", 60)
    assert "rejected" in caplog.text and "resyncing" in caplog.text and "nonce too low" in caplog.text
    assert result.block_number > 0
    assert reg.is_alive("0x" + reg.contract.functions.getServiceId("b", "1", acct.address).call().hex())


def test_concurrent_sends_reach_the_node_in_nonce_order(anvil: AnvilProcess) -> None:
    """Threads sharing a key broadcast in nonce order. Out of order, anvil's automine leaves the
    later nonce queued behind the gap and never mines it (seen as a 120 s receipt timeout in
    `pulumi up`); a random delay inside the broadcast widens every race window."""
    import random
    import time

    from eth_account.typed_transactions import TypedTransaction

    key = anvil.private_keys[7]
    reg = _registry(anvil, key)
    eth = reg.client.w3.eth
    forward = eth.send_raw_transaction
    arrived: list[int] = []
    gate = threading.Lock()

    def slow_send(raw: bytes) -> object:
        time.sleep(random.uniform(0, 0.01))
        with gate:
            arrived.append(int(TypedTransaction.from_bytes(raw).as_dict()["nonce"]))
            return forward(raw)

    eth.send_raw_transaction = slow_send  # type: ignore[method-assign]
    pending: list[object] = []

    def register(i: int) -> None:
        pending.append(reg.send_register(f"ordered-{i}", "1", ["e"], "", 60))

    threads = [threading.Thread(target=register, args=(i,)) for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert arrived == sorted(arrived) and len(set(arrived)) == 24
    for p in pending:  # every one is mined: no nonce was left queued behind a gap
        assert reg.client.wait(p).block_number > 0  # type: ignore[arg-type]


def test_one_manager_per_chain_instance_and_address(anvil: AnvilProcess) -> None:
    a = nonce_manager(31337, "0xgenesis1", "0xAbC")
    assert nonce_manager(31337, "0xgenesis1", "0xabc") is a
    assert nonce_manager(31337, "0xgenesis2", "0xabc") is not a  # a restarted dev chain
    results: list[int] = []
    w3 = connect(anvil.rpc_url)
    address = load_account(anvil.private_keys[9]).address
    manager = nonce_manager(31337, "thread-test", address)
    threads = [threading.Thread(target=lambda: results.extend(manager.allocate(w3, address) for _ in range(25)))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    start = w3.eth.get_transaction_count(address, "pending")
    assert sorted(results) == list(range(start, start + 200))  # no duplicates, no gaps


def test_eip1559_fees_and_receipts(anvil: AnvilProcess) -> None:
    reg = _registry(anvil, anvil.private_keys[8])
    fees = reg.client.fees()
    base = reg.client.w3.eth.get_block("latest")["baseFeePerGas"]
    assert fees["maxFeePerGas"] >= 2 * base and fees["maxPriorityFeePerGas"] > 0
    pending = reg.send_register("fees", "1", ["e"], "", 60)
    tx = reg.client.w3.eth.get_transaction(pending.tx_hash)
    assert tx["type"] == 2 and tx["maxFeePerGas"] == fees["maxFeePerGas"]
    assert reg.client.wait(pending).gas_used > 0


def test_a_mined_revert_is_decoded_from_the_receipt(anvil: AnvilProcess) -> None:
    reg = _registry(anvil, anvil.private_keys[8])
    # A fixed gas limit skips the estimate, so the revert happens on chain (status 0).
    fn = reg.contract.functions.updateHeartbeat(b"\x01" * 32)
    with pytest.raises(TransactionReverted) as info:
        reg.client.transact(fn, "updateHeartbeat(svc@1)", gas=100_000)
    assert info.value.error_name == "ServiceNotFound"
    assert str(info.value) == "updateHeartbeat(svc@1): reverted: ServiceNotFound(serviceId=0x" + "01" * 32 + ")"


def test_error_decoder_builtin_errors() -> None:
    dec = ErrorDecoder(load_artifact()["abi"])
    from eth_abi import encode

    assert dec.decode("0x08c379a0" + encode(["string"], ["boom"]).hex())[2] == "Error(reason='boom')"
    assert dec.decode("0x4e487b71" + encode(["uint256"], [0x11]).hex())[2] == "Panic(code=17)"
    assert dec.decode("0xdeadbeef")[2].startswith("reverted with unknown error data 0xdeadbeef")
    assert dec.decode(None)[2] == "reverted without a reason"


def test_keys_and_urls_are_checked_without_echoing_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGEFABRIC_DEPLOYER_KEY", raising=False)
    with pytest.raises(ChainError, match="no deployer key: set EDGEFABRIC_DEPLOYER_KEY"):
        load_account(None)
    secretish = "0x" + "g1" * 32
    with pytest.raises(ChainError) as info:
        load_account(secretish)
    assert "g1g1" not in str(info.value)
    with pytest.raises(ChainError, match="only http\\(s\\) JSON-RPC endpoints"):
        connect("ws://127.0.0.1:8546")
    with pytest.raises(ChainError, match=r"cannot reach the chain at http://127\.0\.0\.1:9 after 2 attempts"):
        connect("http://127.0.0.1:9", retries=1, backoff=0.01, timeout=1)


def test_engine_free_modules_do_not_import_pulumi() -> None:
    code = ("import sys, devenv.anvil, edgefabric.chain.client, edgefabric.chain.registry, agent.heartbeat; "
            "assert 'pulumi' not in sys.modules, sorted(m for m in sys.modules if m.startswith('pulumi'))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60,
                          check=False, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
