"""`make demo`'s data-flow step (devenv.mosquitto.demo): one reading published at an edge
site's broker arrives at the core, through brokers running a stack's own `dataFlows`."""

from __future__ import annotations

from pathlib import Path

from devenv.mosquitto import demo
from edgefabric.config import DataFlowsConfig, FlowTopic


def test_a_reading_at_the_edge_arrives_at_the_core_under_the_stacks_topics(tmp_path: Path) -> None:
    # Another stack's sites are ignored: only the demo site's chain runs.
    flows = DataFlowsConfig(up=[FlowTopic(root="readings")],
                            sites={"store-austin": "us-east", "factory-berlin": "eu-west"})
    line = demo(tmp_path, "store-austin", "us-east", "aws", flows=flows)
    assert line.startswith("edge-store-austin -> region-us-east -> core-aws: "
                           "readings/store-austin/line-1/temperature = 21.5 in "), line
    assert (tmp_path / "edge-store-austin").is_dir() and not (tmp_path / "edge-factory-berlin").exists()

