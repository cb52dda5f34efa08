"""The heartbeat agent against a real anvil: in process and as `python -m agent.heartbeat`."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.heartbeat import AgentConfig, AgentConfigError, HeartbeatAgent, main
from devenv.anvil import AnvilProcess, start_anvil
from edgefabric.chain.client import ChainClient, connect, load_account
from edgefabric.chain.registry import Registry, load_artifact, service_id

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def anvil() -> Iterator[AnvilProcess]:
    with start_anvil() as node:
        yield node


@pytest.fixture
def setup(anvil: AnvilProcess, tmp_path: Path) -> tuple[Registry, dict[str, str], list[str]]:
    key = anvil.private_keys[7]
    art = load_artifact()
    client = ChainClient(connect(anvil.rpc_url), load_account(key), abi=art["abi"])
    address = client.deploy(art["abi"], art["bytecode"], "deploy").contract_address
    assert address is not None
    reg = Registry(client, address)
    ids = []
    for name in ("api-gateway", "analytics"):
        reg.register(name, "1.0.0", ["https://e"], "", 30)
        ids.append(service_id(name, "1.0.0", client.address))
    key_file = tmp_path / "key"
    key_file.write_text(key + "\n")
    env = {
        "EDGEFABRIC_RPC_URL": anvil.rpc_url, "EDGEFABRIC_CHAIN_ID": "31337",
        "EDGEFABRIC_REGISTRY_ADDRESS": address, "EDGEFABRIC_SERVICE_IDS": ",".join(ids),
        "EDGEFABRIC_DEPLOYER_KEY_FILE": str(key_file), "EDGEFABRIC_ALIVE_FILE": str(tmp_path / "alive"),
    }
    return reg, env, ids


def now(reg: Registry) -> int:
    return int(reg.client.w3.eth.get_block("latest")["timestamp"])


def mine_at(reg: Registry, ts: int) -> None:
    reg.client.w3.provider.make_request("evm_mine", [ts])  # type: ignore[arg-type]


def test_heartbeats_keep_services_alive_past_their_ttl(setup: tuple[Registry, dict[str, str], list[str]]) -> None:
    reg, env, ids = setup
    reg.register("not-watched", "1.0.0", ["https://e"], "", 30)
    control = service_id("not-watched", "1.0.0", reg.client.address)
    agent = HeartbeatAgent(AgentConfig.from_env(env), Path(env["EDGEFABRIC_DEPLOYER_KEY_FILE"]).read_text().strip())
    assert agent.interval() == 10.0  # ttl 30 / 3
    for _ in range(3):  # 3 rounds, 20 s apart: 60 s in total, twice the TTL
        round_start = now(reg) + 20
        mine_at(reg, round_start)
        result = agent.beat_once()
        assert set(result.sent) == set(ids) and result.failed == ()
        # Each heartbeat is mined in its own block, at or after the round's start.
        assert all(reg.get_service(i).last_heartbeat >= round_start for i in ids)  # type: ignore[union-attr]
    assert all(reg.is_alive(i) for i in ids)
    assert not reg.is_alive(control)
    assert Path(env["EDGEFABRIC_ALIVE_FILE"]).exists()


def test_run_loop_beats_every_interval_until_stopped(setup: tuple[Registry, dict[str, str], list[str]]) -> None:
    reg, env, ids = setup
    agent = HeartbeatAgent(AgentConfig.from_env(env | {"EDGEFABRIC_HEARTBEAT_INTERVAL_S": "0.05"}),
                           Path(env["EDGEFABRIC_DEPLOYER_KEY_FILE"]).read_text().strip())
    before = reg.client.w3.eth.block_number
    assert agent.run(threading.Event(), max_rounds=3) == 3
    beats = reg.contract.events.ServiceHeartbeat().get_logs(from_block=before + 1)
    assert len(beats) == 3 * len(ids)
    stopped = threading.Event()
    stopped.set()
    assert agent.run(stopped) == 0  # SIGTERM sets the event: the loop ends at once


def test_container_entry_point_once(setup: tuple[Registry, dict[str, str], list[str]], anvil: AnvilProcess) -> None:
    _, env, _ = setup
    proc = subprocess.run([sys.executable, "-m", "agent.heartbeat", "--once"], env=env | {"PYTHONPATH": str(REPO)},
                          cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "heartbeat round: 2 sent, 0 failed" in proc.stderr
    key = anvil.private_keys[7]
    assert key not in proc.stderr + proc.stdout and key[2:] not in proc.stderr + proc.stdout
    alive = subprocess.run([sys.executable, "-m", "agent.heartbeat", "--check-alive", "60"],
                           env=env | {"PYTHONPATH": str(REPO)}, cwd=REPO, capture_output=True, timeout=60, check=False)
    assert alive.returncode == 0


def test_a_deregistered_service_is_reported_and_the_others_still_beat(
    setup: tuple[Registry, dict[str, str], list[str]], caplog: pytest.LogCaptureFixture
) -> None:
    reg, env, ids = setup
    reg.deregister(ids[0])
    before = now(reg) + 10
    mine_at(reg, before)
    assert main(["--once"], env) == 1
    assert f"updateHeartbeat({ids[0]}): reverted: ServiceNotActive" in caplog.text
    assert reg.get_service(ids[1]).last_heartbeat >= before  # type: ignore[union-attr]


def test_configuration_errors_name_the_variable(setup: tuple[Registry, dict[str, str], list[str]]) -> None:
    _, env, _ = setup
    with pytest.raises(AgentConfigError, match="EDGEFABRIC_SERVICE_IDS is required"):
        AgentConfig.from_env({k: v for k, v in env.items() if k != "EDGEFABRIC_SERVICE_IDS"})
    with pytest.raises(AgentConfigError, match="EDGEFABRIC_SERVICE_IDS: not 32-byte 0x ids: \\['0x12'\\]"):
        AgentConfig.from_env(env | {"EDGEFABRIC_SERVICE_IDS": "0x12"})
    with pytest.raises(AgentConfigError, match="EDGEFABRIC_CHAIN_ID must be a positive integer"):
        AgentConfig.from_env(env | {"EDGEFABRIC_CHAIN_ID": "abc"})
    assert main(["--once"], env | {"EDGEFABRIC_CHAIN_ID": "5"}) == 2  # wrong chain: refuse
