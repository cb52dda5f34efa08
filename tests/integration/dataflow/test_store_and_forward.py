"""Store and forward: the regional broker is stopped for 10 s while the edge publishes
1,000 QoS 1 messages; after it starts again, every one of them reaches the core."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devenv.mosquitto import LocalFabric, connect, subscribe
from edgefabric.config import DataFlowsConfig

OUTAGE_S = 10.0
COUNT = 1000


@pytest.fixture
def small_fabric(tmp_path: Path) -> Iterator[LocalFabric]:
    fab = LocalFabric.create(tmp_path, DataFlowsConfig(sites={"factory-berlin": "eu-west"}), {"eu-west": "aws"})
    fab.start()
    try:
        yield fab
    finally:
        fab.stop()


def test_nothing_acknowledged_is_lost_across_a_regional_outage(small_fabric: LocalFabric) -> None:
    fabric = small_fabric
    # A persistent consumer at the core: it is there before, during and after the outage.
    core = subscribe(fabric, "core-aws", "core-aws", "telemetry/#", client_id="analytics", clean=False)
    site = connect(fabric, "site-factory-berlin", "edge-factory-berlin")
    region = fabric.broker("region-eu-west")
    try:
        region.stop()
        stopped = time.monotonic()
        for i in range(COUNT):
            # Acknowledged by the edge broker (PUBACK) while its upstream is down.
            info = site.publish(f"telemetry/factory-berlin/meter/{i % 7}", str(i), qos=1)
            info.wait_for_publish(5)
            assert info.is_published(), f"message {i} not acknowledged by the edge broker"
        assert core.messages == [], "messages reached the core while the region was down"
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - stopped)))
        region.start()
        received = core.wait_for(COUNT, 30)
        # QoS 1 is at least once: a redelivered duplicate is allowed, a missing id is not.
        ids = {int(m.payload) for m in received}
        missing = sorted(set(range(COUNT)) - ids)
        assert missing == [], f"{len(missing)} of {COUNT} lost, e.g. {missing[:10]}"
    finally:
        site.disconnect()
        core.close()
