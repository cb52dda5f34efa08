"""Real `mosquitto` brokers on loopback, started here, running exactly the configs that
`edgefabric.dataflow` generates (devenv/mosquitto.py writes them, certificates and all)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devenv.mosquitto import LocalFabric
from edgefabric.config import DataFlowsConfig

# Two regions on one cloud core; the late site is not started with the others.
SITES = {"factory-berlin": "eu-west", "store-paris": "eu-west", "store-austin": "us-east"}
REGIONS = {"eu-west": "aws", "us-east": "aws"}
LATE_SITE = "edge-store-austin"


def make_fabric(root: Path) -> LocalFabric:
    return LocalFabric.create(root, DataFlowsConfig(sites=SITES), REGIONS)


@pytest.fixture(scope="module")
def fabric(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFabric]:
    fab = make_fabric(tmp_path_factory.mktemp("fabric"))
    fab.start([k for k in fab.brokers if k != LATE_SITE])
    try:
        yield fab
    finally:
        fab.stop()
