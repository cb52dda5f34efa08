"""scripts/local-env (devenv.cli) against the real stand-ins: idempotent up, status, fail/heal,
down, and a chain that survives a restart (anvil --state). The local stack's clusters start and
stop with them (their own checks: tests/engine/test_tiers.py)."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from devenv.anvil import rpc_call
from devenv.processes import alive
from tests.kits.engine import LocalPorts, copy_project, local_env, pick_local_ports


def _health(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


@pytest.fixture()
def stack(tmp_path: Path) -> tuple[Path, Path, LocalPorts]:
    ports = pick_local_ports()
    project = copy_project(tmp_path / "project", ports)
    data = tmp_path / "local-env"
    yield project, data, ports
    local_env(project, data, ports, "down")


def test_up_is_idempotent_and_status_says_what_runs_where(stack: tuple[Path, Path, LocalPorts]) -> None:
    project, data, ports = stack
    first = local_env(project, data, ports, "up").stdout
    assert "anvil:     started" in first and "endpoints: started aws, azure, gcp" in first, first
    assert "clusters:  started aws, azure, gcp, edge" in first, first
    again = local_env(project, data, ports, "up").stdout
    assert "anvil:     already running" in again and "powerdns:  already running" in again, again
    assert "endpoints: already running" in again and "clusters:  aws, azure, gcp, edge already running" in again, again

    proc = local_env(project, data, ports, "status", "--json")
    assert proc.returncode == 0
    st = json.loads(proc.stdout)
    assert st["anvil"]["rpc_url"] == f"http://127.0.0.1:{ports.anvil}" and st["anvil"]["running"]
    assert st["powerdns"]["api_url"] == f"http://127.0.0.1:{ports.pdns_api}" and st["powerdns"]["running"]
    # Where each cloud's api-gateway load balancer answers: aws's hostname resolves to 127.0.1.1,
    # azure and gcp get the first address of their pools.
    assert {c: (e["ip"], e["port"], e["running"]) for c, e in st["endpoints"].items()} == {
        "aws": ("127.0.1.1", ports.endpoint, True),
        "azure": ("127.0.2.1", ports.endpoint, True),
        "gcp": ("127.0.3.1", ports.endpoint, True),
    }
    assert all(c["running"] for c in st["clusters"].values()) and st["etcd"]["running"], st["clusters"]
    # One LoadBalancer controller process answers every cluster (a thread each), each cluster's
    # `loadbalancer` component; `up` replaces it when it dies and keeps the control planes.
    lb_pids = {json.loads((data / n / "cluster.json").read_text())["pids"]["loadbalancer"] for n in st["clusters"]}
    assert len(lb_pids) == 1, lb_pids
    (lb_pid,) = lb_pids
    log = (data / "loadbalancer.log").read_text()
    assert all(f"cluster {n} (" in log for n in st["clusters"]), log
    apiservers = {n: json.loads((data / n / "cluster.json").read_text())["pids"]["kube-apiserver"] for n in st["clusters"]}
    os.kill(lb_pid, signal.SIGKILL)
    wait_until = time.monotonic() + 10
    while alive(lb_pid) and time.monotonic() < wait_until:
        time.sleep(0.1)
    down = json.loads(local_env(project, data, ports, "status", "--json").stdout)
    assert not any(c["components"]["loadbalancer"] for c in down["clusters"].values()), down["clusters"]
    assert "clusters:  aws, azure, gcp, edge already running" in local_env(project, data, ports, "up").stdout
    st = json.loads(local_env(project, data, ports, "status", "--json").stdout)
    assert all(c["running"] for c in st["clusters"].values()), st["clusters"]
    new_pids = {json.loads((data / n / "cluster.json").read_text())["pids"]["loadbalancer"] for n in st["clusters"]}
    assert len(new_pids) == 1 and new_pids != lb_pids
    assert apiservers == {n: json.loads((data / n / "cluster.json").read_text())["pids"]["kube-apiserver"]
                          for n in st["clusters"]}  # fmt: skip
    text = local_env(project, data, ports, "status").stdout
    assert f"http://127.0.2.1:{ports.endpoint}/health -> healthy" in text, text


def test_fail_and_heal_flip_a_clouds_health(stack: tuple[Path, Path, LocalPorts]) -> None:
    project, data, ports = stack
    local_env(project, data, ports, "up")
    url = f"http://127.0.1.1:{ports.endpoint}/health"
    assert _health(url) == 200
    local_env(project, data, ports, "fail", "aws")
    assert _health(url) == 503
    assert _health(f"http://127.0.2.1:{ports.endpoint}/health") == 200
    local_env(project, data, ports, "heal", "aws")
    assert _health(url) == 200


def test_down_stops_everything_and_the_chain_survives_a_restart(stack: tuple[Path, Path, LocalPorts]) -> None:
    project, data, ports = stack
    local_env(project, data, ports, "up")
    rpc = f"http://127.0.0.1:{ports.anvil}"
    rpc_call(rpc, "anvil_mine", ["0x7"])
    assert int(str(rpc_call(rpc, "eth_blockNumber")), 16) == 7

    assert "anvil:     stopped" in local_env(project, data, ports, "down").stdout
    assert local_env(project, data, ports, "status").returncode == 3
    assert "not running" in local_env(project, data, ports, "down").stdout  # idempotent

    local_env(project, data, ports, "up")
    assert int(str(rpc_call(rpc, "eth_blockNumber")), 16) == 7
