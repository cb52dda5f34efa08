"""The `dataFlows` section: defaults, and bad values failing with key-path errors before any
resource is registered."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from edgefabric.config import ConfigError, load_config, raw_from_stack_file
from tooling.render import last_registrations, render

ROOT = Path(__file__).resolve().parents[3]
DEV = raw_from_stack_file(ROOT / "Pulumi.dev.yaml")
GOOD = {"sites": {"factory-berlin": "us-east", "store-austin": "us-east"}}


def _with(flows: dict[str, Any]) -> dict[str, Any]:
    raw = copy.deepcopy(DEV)
    raw["dataFlows"] = flows
    return raw


def test_defaults_carry_telemetry_and_alerts_up_and_config_and_models_down() -> None:
    flows = load_config(_with(GOOD)).data_flows
    assert flows is not None and flows.enabled
    assert [(t.root, t.qos) for t in flows.up] == [("telemetry", 1), ("alerts", 1)]
    assert [(t.root, t.retained) for t in flows.down] == [("config", True), ("models", True)]
    assert flows.retention.persistence and flows.buffers.edge.max_queued_messages == 100_000


CASES: list[tuple[str, dict[str, Any], str, str, str]] = [
    ("unknown-site", {"sites": {**GOOD["sites"], "atlantis": "us-east"}},
     "edgefabric:dataFlows.sites.atlantis", "'us-east'", "a key naming an edge site: factory-berlin, store-austin"),
    ("unknown-region", {"sites": {"factory-berlin": "mars", "store-austin": "us-east"}},
     "edgefabric:dataFlows.sites.factory-berlin", "'mars'", "a region name: us-east"),
    ("site-without-region", {"sites": {"factory-berlin": "us-east"}},
     "edgefabric:dataFlows.sites.store-austin", "None", "the region edge.sites[1] bridges to"),
    ("qos-3", {**GOOD, "up": [{"root": "telemetry", "qos": 3}]},
     "edgefabric:dataFlows.up[0].qos", "3", "one of 0, 1 or 2"),
    ("wildcard-root", {**GOOD, "down": [{"root": "config/#"}]},
     "edgefabric:dataFlows.down[0].root", "'config/#'", "must match"),
    ("root-both-ways", {**GOOD, "down": [{"root": "telemetry"}]},
     "edgefabric:dataFlows.down[0].root", "'telemetry'", "a root not already in dataFlows.up"),
    ("no-up-topics", {**GOOD, "up": []},
     "edgefabric:dataFlows.up", "[]", "at least 1 item"),
    ("tiny-buffer", {**GOOD, "buffers": {"edge": {"maxQueuedMessages": 10}}},
     "edgefabric:dataFlows.buffers.edge.maxQueuedMessages", "10", "greater than or equal to 100"),
    ("inflight-over-queue", {**GOOD, "buffers": {"region": {"maxQueuedMessages": 100, "maxInflightMessages": 500}}},
     "edgefabric:dataFlows.buffers.region.maxInflightMessages", "500", "<= maxQueuedMessages (100)"),
    ("privileged-port", {**GOOD, "port": 883},
     "edgefabric:dataFlows.port", "883", "greater than or equal to 1024"),
    ("session-expiry-zero", {**GOOD, "retention": {"sessionExpiryH": 0}},
     "edgefabric:dataFlows.retention.sessionExpiryH", "0", "greater than or equal to 1"),
    ("typo", {**GOOD, "topicsUp": ["telemetry"]},
     "edgefabric:dataFlows.topicsUp", "['telemetry']", "unknown key"),
    ("latest-core-image", {**GOOD, "coreImage": "eclipse-mosquitto:latest"},
     "edgefabric:dataFlows.coreImage", "'eclipse-mosquitto:latest'", "':latest' is not allowed"),
]


@pytest.mark.parametrize(("flows", "path", "value", "allowed"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_data_flows_name_key_value_and_allowed(flows: dict[str, Any], path: str, value: str,
                                                   allowed: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(_with(flows))
    lines = [p for p in err.value.problems if p.startswith(f"{path} = ")]
    assert lines, f"no problem names {path}; got:\n{err.value}"
    assert any(f"= {value}:" in line and allowed in line for line in lines), f"got:\n{err.value}"


def test_a_bridged_broker_runs_one_replica() -> None:
    raw = _with(GOOD)
    raw["regions"][0]["services"][3]["replicas"] = 2
    with pytest.raises(ConfigError, match=r"edgefabric:regions\[0\]\.services\[3\]\.replicas = 2: "
                                          r"1 for the device-management broker"):
        load_config(raw)


def test_a_region_without_a_broker_cannot_bridge() -> None:
    raw = _with(GOOD)
    raw["regions"][0]["services"] = [s for s in raw["regions"][0]["services"] if s["kind"] != "device-management"]
    with pytest.raises(ConfigError, match=r"edgefabric:regions\[0\]\.services = .*device-management"):
        load_config(raw)


def test_a_bad_data_flows_config_registers_nothing() -> None:
    """Through the whole program: the error comes before the first resource."""
    with pytest.raises(ConfigError, match=r"edgefabric:dataFlows.sites.factory-berlin = 'mars'"):
        render(_with({"sites": {"factory-berlin": "mars", "store-austin": "us-east"}}), stack="dev")
    registered = last_registrations()
    assert registered == [], f"registered before failing: {[f'{r.type}::{r.name}' for r in registered]}"
