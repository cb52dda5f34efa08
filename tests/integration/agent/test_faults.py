"""The heartbeat agent under RPC faults (a loopback fault proxy in front of a real anvil),
with an expired service, and its Prometheus metrics over HTTP."""

from __future__ import annotations

import logging
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.heartbeat import AgentConfig, HeartbeatAgent, main
from devenv.anvil import AnvilProcess, free_loopback_port, start_anvil
from devenv.faultproxy import FaultProxy, Mode
from edgefabric.chain.client import ChainClient, connect, load_account
from edgefabric.chain.registry import Registry, load_artifact, service_id


@pytest.fixture(scope="module")
def anvil() -> Iterator[AnvilProcess]:
    with start_anvil() as node:
        yield node


def _setup(anvil: AnvilProcess, tmp_path: Path, key: str, names: list[str], ttl: int,
           rpc_url: str) -> tuple[Registry, dict[str, str], list[str]]:
    art = load_artifact()
    client = ChainClient(connect(anvil.rpc_url), load_account(key), abi=art["abi"])
    address = client.deploy(art["abi"], art["bytecode"], "deploy").contract_address
    assert address is not None
    reg = Registry(client, address)
    for name in names:
        reg.register(name, "1.0.0", ["https://e"], "", ttl)
    ids = [service_id(n, "1.0.0", client.address) for n in names]
    env = {
        "EDGEFABRIC_RPC_URL": rpc_url, "EDGEFABRIC_CHAIN_ID": "31337", "EDGEFABRIC_REGISTRY_ADDRESS": address,
        "EDGEFABRIC_SERVICE_IDS": ",".join(ids), "EDGEFABRIC_ALIVE_FILE": str(tmp_path / "alive"),
        "EDGEFABRIC_HEARTBEAT_INTERVAL_S": "0.5",
    }
    return reg, env, ids


def test_the_agent_rides_out_every_fault_and_resumes_within_2_s(anvil: AnvilProcess, tmp_path: Path) -> None:
    """Each fault lasts 1.5 s (well inside the 30 s TTL); after each, the next heartbeat is mined
    within 2 s, the run loop never exits, and no service expires."""
    with FaultProxy(anvil.rpc_url) as proxy:
        key = anvil.private_keys[5]
        reg, env, ids = _setup(anvil, tmp_path, key, ["api-gateway", "analytics"], 30, proxy.url)
        agent = HeartbeatAgent(AgentConfig.from_env(env), key, timeout=0.5)
        stop = threading.Event()
        loop = threading.Thread(target=agent.run, args=(stop,), daemon=True)
        loop.start()
        recoveries: dict[Mode, float] = {}
        sent = agent.metrics.sent.labels(ids[0])
        try:
            for mode in ("refuse", "429", "5xx", "stall", "drop"):
                proxy.set(mode)  # type: ignore[arg-type]
                time.sleep(1.5)
                assert loop.is_alive(), f"the agent exited during {mode}"
                before = sent._value.get()
                proxy.set("pass")
                restored = time.monotonic()
                while sent._value.get() == before and time.monotonic() - restored < 10:
                    time.sleep(0.01)
                recoveries[mode] = time.monotonic() - restored
        finally:
            stop.set()
            loop.join(10)
        assert not loop.is_alive()
        assert all(v <= 2.0 for v in recoveries.values()), recoveries
        assert (agent.metrics.value("edgefabric_agent_heartbeat_failures_total",
                                    {"service": ids[0], "reason": "rpc"}) or 0) \
            + (agent.metrics.value("edgefabric_agent_rounds_failed_total") or 0) >= 5
        assert all(reg.is_alive(i) for i in ids)
        assert all(agent.metrics.value("edgefabric_agent_service_alive", {"service": i}) == 1 for i in ids)


def test_an_expired_service_is_alerted_and_the_others_keep_beating(
    anvil: AnvilProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key = anvil.private_keys[6]
    reg, env, ids = _setup(anvil, tmp_path, key, ["short"], 3, anvil.rpc_url)
    reg.register("long", "1.0.0", ["https://e"], "", 600)
    long_id = service_id("long", "1.0.0", reg.client.address)
    agent = HeartbeatAgent(AgentConfig.from_env(env | {"EDGEFABRIC_SERVICE_IDS": f"{ids[0]},{long_id}"}), key)
    w3 = reg.client.w3
    w3.provider.make_request("evm_mine", [int(w3.eth.get_block("latest")["timestamp"]) + 10])  # type: ignore[arg-type]
    with caplog.at_level(logging.ERROR, logger="agent.heartbeat"):
        result = agent.beat_once()
    assert result.expired == (ids[0],) and result.sent == (long_id,) and result.failed == ()
    assert f"service {ids[0]} is not alive on chain" in caplog.text and "run `pulumi up`" in caplog.text
    assert agent.metrics.value("edgefabric_agent_service_alive", {"service": ids[0]}) == 0
    assert agent.metrics.value("edgefabric_agent_service_alive", {"service": long_id}) == 1
    assert agent.metrics.value("edgefabric_agent_heartbeat_failures_total",
                               {"service": ids[0], "reason": "expired"}) == 1
    assert not Path(env["EDGEFABRIC_ALIVE_FILE"]).exists()  # not every service is alive: probe fails


def test_an_unreachable_node_at_start_is_not_fatal(anvil: AnvilProcess, tmp_path: Path) -> None:
    with FaultProxy(anvil.rpc_url) as proxy:
        key = anvil.private_keys[5]
        _, env, ids = _setup(anvil, tmp_path, key, ["late"], 30, proxy.url)
        proxy.set("refuse")
        agent = HeartbeatAgent(AgentConfig.from_env(env), key, timeout=0.5)  # no RPC yet
        stop = threading.Event()
        loop = threading.Thread(target=agent.run, args=(stop,), daemon=True)
        loop.start()
        time.sleep(1.0)
        assert loop.is_alive() and agent.metrics.value("edgefabric_agent_rounds_failed_total")
        proxy.set("pass")
        deadline = time.monotonic() + 10
        while not agent.metrics.value("edgefabric_agent_heartbeats_sent_total", {"service": ids[0]}):
            assert time.monotonic() < deadline, "no heartbeat after the node came up"
            time.sleep(0.05)
        stop.set()
        loop.join(10)


def test_metrics_are_served_over_http(anvil: AnvilProcess, tmp_path: Path) -> None:
    key = anvil.private_keys[5]
    _, env, ids = _setup(anvil, tmp_path, key, ["scraped"], 30, anvil.rpc_url)
    port = free_loopback_port()
    key_file = tmp_path / "key"
    key_file.write_text(key)
    env |= {"EDGEFABRIC_METRICS_PORT": str(port), "EDGEFABRIC_METRICS_ADDR": "127.0.0.1",
            "EDGEFABRIC_DEPLOYER_KEY_FILE": str(key_file), "EDGEFABRIC_HEARTBEAT_INTERVAL_S": "0.1"}
    assert main(["--max-rounds", "2"], env) == 0
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    assert f'edgefabric_agent_heartbeats_sent_total{{service="{ids[0]}"}} 2.0' in text
    assert f'edgefabric_agent_service_alive{{service="{ids[0]}"}} 1.0' in text
    assert "edgefabric_agent_last_success_timestamp_seconds" in text
