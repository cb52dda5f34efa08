"""WeightedFailover under the real Pulumi engine (file backend, passphrase secrets).

A throwaway project whose program is one WeightedFailover against the test's
PowerDNS and local endpoints: up, no-change preview, a health change showing as
an update in preview, refresh detecting an out-of-band edit, a replace on
record_name, destroy, and the PowerDNS key never in plaintext in the state.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from devenv.endpoints import LocalEndpoints
from devenv.powerdns import PowerDnsServer
from edgefabric.traffic.dns.powerdns import PowerDnsBackend
from edgefabric.traffic.planner import PlanInput, Strategy, plan
from edgefabric.traffic.spec import FailoverSpec
from tests.integration import conftest as services
from tests.integration.conftest import ZONE
from tests.kits.engine import Engine, ensure_engine, steps_by_op

pytestmark = pytest.mark.engine
# The local services this test runs against: the integration tier's fixtures.
pdns, endpoints = services.pdns, services.endpoints
REPO = Path(__file__).resolve().parents[2]
LABEL = "pulumi-python:dynamic/failover:WeightedFailover::global"

PROGRAM = '''
import json, os
import pulumi
from edgefabric.dynamic.failover import WeightedFailover, WeightedFailoverArgs
from edgefabric.traffic.spec import FailoverSpec

spec = FailoverSpec.from_inputs(json.loads(os.environ["WF_PROPS"]))
key = pulumi.Config().require_secret("pdnsKey")
wf = WeightedFailover("global", WeightedFailoverArgs(spec, secrets={"config:pdnsKey": key}))
pulumi.export("plan", wf.plan)
pulumi.export("health", wf.health)
pulumi.export("record_ids", wf.record_ids)
pulumi.export("last_change_at", wf.last_change_at)
'''


def _props(eps: LocalEndpoints, pdns: PowerDnsServer, record: str) -> dict:
    return {
        "record_name": record,
        "ttl": 5,
        "endpoints": {c: {"address": eps.address(c)} for c in eps.clouds()},
        "health_check": {"interval_s": 1, "timeout_s": 0.5, "failure_threshold": 2, "success_threshold": 1,
                         "recovery_hold_down_s": 60,
                         "check": {"type": "http", "path": "/health", "port": eps.port}},
        "strategy": {"order": ["aws", "azure", "gcp"], "replication": "active-active", "failover": "automatic"},
        "routing": {"rules": [], "default_weight": 60},
        "backends": {"powerdns": {"api_url": pdns.api_url, "api_key_ref": "config:pdnsKey", "zone": ZONE}},
        "probe_round_gap_s": 0.1,
    }  # fmt: skip


def test_weighted_failover_under_the_engine(tmp_path: Path, pdns: PowerDnsServer, endpoints: LocalEndpoints) -> None:
    bin_dir = ensure_engine()
    project = tmp_path / "project"
    project.mkdir()
    (project / "Pulumi.yaml").write_text(
        "name: wf-engine-test\nruntime:\n  name: python\n  options:\n    toolchain: pip\n    virtualenv: venv\n"
    )
    (project / "__main__.py").write_text(PROGRAM)
    for name in ("providers", "venv"):
        (project / name).symlink_to(REPO / name)
    record = "engine." + ZONE
    props = _props(endpoints, pdns, record)
    env = {"WF_PROPS": json.dumps(props), "PYTHONPATH": str(project)}
    eng = Engine(project=project, root=tmp_path / "engine", bin_dir=bin_dir, passphrase="test-pass", extra_env=env)
    eng.run("stack", "init", "t")
    eng.run("config", "set", "--secret", "pdnsKey", pdns.api_key, "--stack", "t")

    eng.run("up", "--yes", "--stack", "t")
    out = eng.outputs("t")
    assert out["plan"]["answers"]["default"]["weights"] == {"aws": 60, "azure": 20, "gcp": 20}
    backend = PowerDnsBackend(pdns.api_url, pdns.api_key, ZONE)
    spec = FailoverSpec.from_inputs(props).record_spec()
    assert backend.read(spec) == {"default": {"aws": 60, "azure": 20, "gcp": 20}}

    assert "update" not in steps_by_op(eng.preview_json("t")), "unchanged world must preview no change"

    endpoints.stop("gcp")
    ops = steps_by_op(eng.preview_json("t"))
    assert ops.get("update") == [LABEL], ops
    eng.run("up", "--yes", "--stack", "t")
    assert backend.read(spec) == {"default": {"aws": 75, "azure": 25}}
    assert "update" not in steps_by_op(eng.preview_json("t"))

    # Out-of-band edit: refresh records it, the next preview wants to fix it.
    backend.apply(spec, plan(PlanInput(Strategy(("aws", "azure", "gcp")), default_weight=100)))
    eng.run("refresh", "--yes", "--stack", "t")
    assert "update" in steps_by_op(eng.preview_json("t"))
    eng.run("up", "--yes", "--stack", "t")
    assert backend.read(spec) == {"default": {"aws": 75, "azure": 25}}

    # record_name forces a replacement.
    moved = {**props, "record_name": "engine2." + ZONE}
    eng.extra_env = {**env, "WF_PROPS": json.dumps(moved)}
    ops = steps_by_op(eng.preview_json("t"))
    assert LABEL in ops.get("replace", []), ops
    eng.extra_env = env

    state = json.dumps(eng.export("t"))
    assert pdns.api_key not in state, "PowerDNS key in plaintext in the state"
    eng.run("destroy", "--yes", "--stack", "t")
    assert backend.read(spec) is None
