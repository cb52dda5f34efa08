"""The heartbeat agent's config check against a real DeploymentLedger on anvil."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.heartbeat import AgentConfig, HeartbeatAgent
from devenv.anvil import AnvilProcess, start_anvil
from edgefabric.chain.client import ChainClient, connect, load_account
from edgefabric.chain.ledger import Ledger, load_ledger_artifact
from edgefabric.chain.registry import Registry, load_artifact, service_id

STACK = "agent-check"
X, Y = "0x" + "5a" * 32, "0x" + "6b" * 32
COMMIT, GRAPH = "0x" + "e8" * 20, "0x" + "c3" * 32


@pytest.fixture(scope="module")
def anvil() -> Iterator[AnvilProcess]:
    with start_anvil() as node:
        yield node


@pytest.fixture
def chain(anvil: AnvilProcess) -> tuple[Registry, Ledger, int]:
    """A registry with one service, and a ledger (deployed by the same owner key)."""
    key = anvil.private_keys[3]
    w3 = connect(anvil.rpc_url)
    art = load_artifact()
    client = ChainClient(w3, load_account(key), abi=art["abi"])
    address = client.deploy(art["abi"], art["bytecode"], "deploy registry").contract_address
    assert address is not None
    reg = Registry(client, address)
    reg.register("api-gateway", "1.0.0", ["https://e"], "", 600)
    ledger_art = load_ledger_artifact()
    ledger_client = ChainClient(w3, load_account(key), abi=ledger_art["abi"])
    deployed = ledger_client.deploy(ledger_art["abi"], ledger_art["bytecode"], "deploy ledger")
    assert deployed.contract_address is not None
    return reg, Ledger(ledger_client, deployed.contract_address), deployed.block_number


def _agent(anvil: AnvilProcess, reg: Registry, tmp_path: Path, ledger_address: str, from_block: int,
           digest: str = X, stack: str = STACK) -> HeartbeatAgent:
    env = {
        "EDGEFABRIC_RPC_URL": anvil.rpc_url, "EDGEFABRIC_CHAIN_ID": str(anvil.chain_id),
        "EDGEFABRIC_REGISTRY_ADDRESS": reg.address,
        "EDGEFABRIC_SERVICE_IDS": service_id("api-gateway", "1.0.0", reg.client.address),
        "EDGEFABRIC_HEARTBEAT_INTERVAL_S": "0.2", "EDGEFABRIC_ALIVE_FILE": str(tmp_path / "alive"),
        "EDGEFABRIC_LEDGER_ADDRESS": ledger_address, "EDGEFABRIC_STACK": stack, "EDGEFABRIC_CONFIG_HASH": digest,
        "EDGEFABRIC_LEDGER_FROM_BLOCK": str(from_block), "EDGEFABRIC_LEDGER_CHECK_EVERY": "2",
    }
    return HeartbeatAgent(AgentConfig.from_env(env), anvil.private_keys[3], timeout=2.0)


def _gauges(agent: HeartbeatAgent, stack: str = STACK) -> tuple[float | None, float | None]:
    labels = {"stack": stack}
    return (agent.metrics.value("edgefabric_agent_config_mismatch", labels),
            agent.metrics.value("edgefabric_agent_config_known", labels))


def test_a_newer_ledger_entry_turns_the_mismatch_gauge_on(
    anvil: AnvilProcess, chain: tuple[Registry, Ledger, int], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reg, ledger, first_block = chain
    ledger.record(STACK, COMMIT, X, GRAPH)
    agent = _agent(anvil, reg, tmp_path, ledger.address, first_block)
    stop = threading.Event()
    loop = threading.Thread(target=agent.run, args=(stop,), daemon=True)
    with caplog.at_level(logging.INFO, logger="agent.heartbeat"):
        loop.start()
        try:
            deadline = time.monotonic() + 20
            while _gauges(agent) != (0.0, 1.0) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert _gauges(agent) == (0.0, 1.0)  # deployed with X, the ledger's latest is X
            assert agent.config_watch is not None and agent.config_watch.state == "match"
            # Another `up` records config Y; this agent still runs with X.
            ledger.record(STACK, "0x" + "9f" * 20, Y, GRAPH)
            while _gauges(agent)[0] != 1.0 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert _gauges(agent) == (1.0, 1.0)
            # Six more rounds, three more checks: still one warning for this change.
            sent = {"service": agent.config.service_ids[0]}
            rounds = agent.metrics.value("edgefabric_agent_heartbeats_sent_total", sent) or 0
            while (agent.metrics.value("edgefabric_agent_heartbeats_sent_total", sent) or 0) < rounds + 6:
                assert time.monotonic() < deadline + 10, "the agent stopped beating"
                time.sleep(0.05)
            assert _gauges(agent) == (1.0, 1.0)
        finally:
            stop.set()
            loop.join(10)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "config mismatch" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert X in warnings[0].getMessage() and Y in warnings[0].getMessage()
    assert "config mismatch" in (tmp_path / "alive").read_text()


def test_no_ledger_or_no_entry_is_unknown_not_a_mismatch(
    anvil: AnvilProcess, chain: tuple[Registry, Ledger, int], tmp_path: Path
) -> None:
    reg, ledger, first_block = chain
    # Nothing deployed at the address (the registry's owner address has no code).
    nowhere = _agent(anvil, reg, tmp_path, reg.client.address, 0)
    assert nowhere.check_config() == "unknown"
    assert _gauges(nowhere) == (0.0, 0.0)
    # A ledger without an entry for this stack (another stack has one).
    ledger.record("some-other-stack", COMMIT, Y, GRAPH)
    empty = _agent(anvil, reg, tmp_path, ledger.address, first_block, stack="never-recorded")
    assert empty.check_config() == "unknown"
    assert _gauges(empty, "never-recorded") == (0.0, 0.0)
    # The entry appears: matched from then on, with the events read once.
    ledger.record("never-recorded", COMMIT, X, GRAPH)
    assert empty.check_config() == "match"
    assert _gauges(empty, "never-recorded") == (0.0, 1.0)
    empty.beat_once()
    assert "config match" in (tmp_path / "alive").read_text()
