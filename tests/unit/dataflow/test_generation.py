"""The pure side of the data flows: topology, bridge topics and ACLs (what the real-broker
tests in tests/integration/dataflow run)."""

from __future__ import annotations

import pytest

from edgefabric.config import DataFlowsConfig, load_stack_file
from edgefabric.dataflow import Endpoint, Placement, acl_file, mosquitto_conf, topology, topology_of

FLOWS = DataFlowsConfig.model_validate({"sites": {"berlin": "eu-west", "paris": "eu-west", "austin": "us-east"},
                                         "regionalUp": [{"root": "aggregates", "qos": 0}]})
TOPO = topology_of(FLOWS, {"eu-west": "azure", "us-east": "aws"})


def _lines(text: str, prefix: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(prefix)]


def test_each_region_bridges_to_the_core_of_its_own_cloud() -> None:
    assert {b.key: b.upstream for b in TOPO.brokers} == {
        "core-aws": None, "core-azure": None, "region-eu-west": "core-azure", "region-us-east": "core-aws",
        "edge-berlin": "region-eu-west", "edge-paris": "region-eu-west", "edge-austin": "region-us-east"}
    assert TOPO.sites_under("core-azure") == ["berlin", "paris"]


def test_bridges_carry_only_their_own_sites_up_and_the_down_roots_down() -> None:
    edge = mosquitto_conf(TOPO, "edge-paris", Placement(8883), Endpoint("10.0.0.1", 8883))
    assert _lines(edge, "topic ") == ["topic telemetry/paris/# out 1", "topic alerts/paris/# out 1",
                                      "topic config/# in 1", "topic models/# in 1"]
    region = mosquitto_conf(TOPO, "region-eu-west", Placement(1883), Endpoint("core", 8883))
    assert _lines(region, "topic ") == [
        "topic telemetry/berlin/# out 1", "topic telemetry/paris/# out 1", "topic alerts/berlin/# out 1",
        "topic alerts/paris/# out 1", "topic aggregates/eu-west/# out 0", "topic config/# in 1", "topic models/# in 1"]
    core = mosquitto_conf(TOPO, "core-aws", Placement(8883), None)
    assert "connection " not in core and "require_certificate true" in core


def test_a_bridge_needs_its_upstream() -> None:
    with pytest.raises(ValueError, match="edge-paris bridges to region-eu-west"):
        mosquitto_conf(TOPO, "edge-paris", Placement(8883), None)


def test_buffers_and_retention_reach_the_broker() -> None:
    flows = DataFlowsConfig.model_validate({
        "sites": {"berlin": "eu-west"}, "buffers": {"edge": {"maxQueuedMessages": 5000, "maxQueuedMb": 0}},
        "retention": {"persistence": False, "sessionExpiryH": 2}})
    conf = mosquitto_conf(topology_of(flows, {"eu-west": "aws"}), "edge-berlin", Placement(1), Endpoint("r", 1))
    assert {"max_queued_messages 5000", "max_queued_bytes 0", "persistence false",
            "persistent_client_expiration 2h"} <= set(conf.splitlines())


def test_acls_grant_each_identity_only_its_prefixes() -> None:
    region = acl_file(TOPO, "region-eu-west")
    blocks = {b.splitlines()[0]: b.splitlines()[1:] for b in region.split("\n\n")[1:]}
    assert blocks["user bridge-edge-paris"] == ["topic write telemetry/paris/#", "topic write alerts/paris/#",
                                                "topic read config/#", "topic read models/#"]
    assert set(blocks) == {"user region-eu-west", "user bridge-edge-berlin", "user bridge-edge-paris"}
    core = acl_file(TOPO, "core-azure")
    assert "user bridge-region-eu-west\ntopic write telemetry/berlin/#" in core
    assert "austin" not in core


def test_a_stack_has_no_data_flows_until_it_asks() -> None:
    # prod runs two device-management replicas per region; a bridged broker must be one.
    assert topology(load_stack_file("Pulumi.prod.yaml")) is None
    assert topology(load_stack_file("Pulumi.staging.yaml")) is not None
