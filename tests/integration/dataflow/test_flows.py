"""Data flows through real brokers: up from an edge site to the core, config down (retained)
to every edge broker, topic ACLs per site, and TLS client certificates required."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from devenv.mosquitto import LocalFabric, connect, subscribe
from edgefabric.dataflow import issue, new_ca
from tests.integration.dataflow.conftest import LATE_SITE, SITES

CORE = "core-aws"


def _publish(client: mqtt.Client, topic: str, payload: str, *, qos: int = 1, retain: bool = False) -> None:
    info = client.publish(topic, payload, qos=qos, retain=retain)
    info.wait_for_publish(10)
    assert info.is_published(), f"{topic}: not acknowledged by the broker"


def test_a_reading_published_at_an_edge_broker_reaches_the_core(fabric: LocalFabric) -> None:
    core = subscribe(fabric, "core-aws", CORE, "telemetry/#")
    region = subscribe(fabric, "region-eu-west", "region-eu-west", "telemetry/#")
    site = connect(fabric, "site-factory-berlin", "edge-factory-berlin")
    try:
        reading = f"21.5C {uuid.uuid4()}"
        _publish(site, "telemetry/factory-berlin/line-1/temperature", reading)
        [at_core] = core.wait_for(1, 10)
        assert (at_core.topic, at_core.payload.decode()) == ("telemetry/factory-berlin/line-1/temperature", reading)
        assert [m.payload.decode() for m in region.wait_for(1, 5)] == [reading]
    finally:
        site.disconnect()
        core.close()
        region.close()


def test_config_published_at_the_core_arrives_retained_at_every_edge_broker(fabric: LocalFabric) -> None:
    operator = connect(fabric, "core-aws", CORE)
    version = str(uuid.uuid4())
    try:
        _publish(operator, "config/sensor-ingest/sampling", version, retain=True)
        _publish(operator, "models/anomaly/v3", f"weights {version}", retain=True)
    finally:
        operator.disconnect()
    # The site started only now learns it from its region's retained copy.
    fabric.broker(LATE_SITE).start()
    for site in SITES:
        identity = f"site-{site}"
        deadline = time.monotonic() + 15
        got: dict[str, tuple[str, bool]] = {}
        while time.monotonic() < deadline and len(got) < 2:
            # A fresh subscription after the fact: only a retained message can answer it.
            late = subscribe(fabric, identity, f"edge-{site}", "config/#")
            models = subscribe(fabric, identity, f"edge-{site}", "models/#")
            for sub in (late, models):
                for msg in sub.wait_for(1, 1):
                    got[msg.topic] = (msg.payload.decode(), msg.retain)
                sub.close()
        assert got == {"config/sensor-ingest/sampling": (version, True),
                       "models/anomaly/v3": (f"weights {version}", True)}, f"{site}: {got}"


def test_a_site_publishes_only_under_its_own_prefix(fabric: LocalFabric) -> None:
    core = subscribe(fabric, "core-aws", CORE, "telemetry/#")
    at_edge = subscribe(fabric, "site-factory-berlin", "edge-factory-berlin", "config/#")
    site = connect(fabric, "site-factory-berlin", "edge-factory-berlin")
    # The site's bridge identity, used directly at its region: a stolen bridge certificate
    # still writes only under its own site's prefix.
    bridge_dir = fabric.broker("edge-factory-berlin").root / "certs"
    bridge = connect(fabric, "bridge-edge-factory-berlin", "region-eu-west",
                     tls_files=(str(bridge_dir / "ca.crt"), str(bridge_dir / "bridge.crt"),
                                str(bridge_dir / "bridge.key")))
    try:
        marker = str(uuid.uuid4())
        _publish(site, "telemetry/store-paris/spoofed", marker)
        _publish(site, "config/sensor-ingest/sampling", marker)  # config only comes down
        _publish(bridge, "telemetry/store-austin/spoofed", marker)
        _publish(bridge, "aggregates/eu-west/spoofed", marker)
        # What the same clients may do arrives, so silence above means refusal, not slowness.
        _publish(site, "telemetry/factory-berlin/own", marker)
        _publish(bridge, "telemetry/factory-berlin/via-bridge", marker)
        arrived = {m.topic for m in core.wait_for(2, 10)}
        time.sleep(1)
        arrived |= {m.topic for m in core.messages}
        assert arrived == {"telemetry/factory-berlin/own", "telemetry/factory-berlin/via-bridge"}
        assert all(m.payload.decode() != marker for m in at_edge.messages)
    finally:
        for client in (site, bridge):
            client.disconnect()
        core.close()
        at_edge.close()


def test_a_client_without_a_certificate_is_refused(fabric: LocalFabric, tmp_path: Path) -> None:
    for key in ("edge-factory-berlin", "region-eu-west", CORE):
        with pytest.raises(ConnectionError):
            connect(fabric, None, key, timeout_s=3)
    # A certificate from any other CA is no better than none.
    stranger_ca = new_ca("not the stack CA")
    stranger = issue(stranger_ca, "site-factory-berlin", "client")
    (tmp_path / "c.crt").write_text(stranger.cert_pem)
    (tmp_path / "c.key").write_text(stranger.key_pem)
    with pytest.raises(ConnectionError):
        connect(fabric, None, "edge-factory-berlin", timeout_s=3,
                tls_files=(str(fabric.root / "ca.crt"), str(tmp_path / "c.crt"), str(tmp_path / "c.key")))
    # The control: the stack's own certificate is accepted by the same broker.
    connect(fabric, "site-factory-berlin", "edge-factory-berlin").disconnect()
