"""One writer: two controller processes on loopback share a lease file; only the holder
applies, the other stands by, and takes over within two lease periods once the holder is
killed. `pulumi up`'s WeightedFailover, pointed at the same lease, follows the holder
instead of writing over it. Metrics are scraped over loopback and parsed with
prometheus_client's text parser."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from devenv.endpoints import LocalEndpoints
from devenv.powerdns import PowerDnsServer
from edgefabric.config import load_stack_file
from edgefabric.controller.daemon import failover_spec
from edgefabric.dynamic.failover import PROVIDER_VERSION, WeightedFailoverProvider
from edgefabric.traffic.reconcile import LEASE_FILE_ENV, read_lease
from tests.integration.conftest import ZONE
from tests.integration.controller.kit import (
    Ctl,
    Sampler,
    lua_records,
    pdns_backend,
    scrape,
    seen,
    value,
    wait_for,
    write_stack,
)

PERIOD_S = 1.5
INTERVAL_S = 0.5
HOLD_DOWN_S = 6.0


def _applies(url: str) -> float:
    return value(scrape(url), "edgefabric_apply_duration_seconds_count", backend="powerdns")


def _healthz(url: str) -> tuple[int, dict[str, Any]]:
    with urllib.request.urlopen(url + "/healthz", timeout=5) as resp:
        return resp.status, json.loads(resp.read())


def test_one_writer_takeover_and_pulumi_up_follows(
    tmp_path: Path, pdns: PowerDnsServer, endpoints: LocalEndpoints, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = "lease." + ZONE
    write_stack(tmp_path, "lease", endpoints, record, pdns_backend(pdns, ZONE), HOLD_DOWN_S, INTERVAL_S)
    lease_file = tmp_path / "lease.json"
    args = ["--lease-file", str(lease_file), "--lease-duration", str(PERIOD_S), "--metrics-port", "0"]
    env = {"EDGEFABRIC_SECRET_POWERDNSAPIKEY": pdns.api_key}
    azure = endpoints.address("azure")
    a = Ctl(tmp_path, "lease", [*args, "--state-file", str(tmp_path / "a.json"), "--identity", "ctl-a"], env, "a")
    b = None
    try:
        wait_for("a holds the lease", lambda: bool(a.events("lease_acquired")), 15)
        b = Ctl(tmp_path, "lease", [*args, "--state-file", str(tmp_path / "b.json"), "--identity", "ctl-b"], env, "b")
        a_url, b_url = a.metrics_url(), b.metrics_url()
        wait_for("b stands by", lambda: bool(b.events("standby")), 15)
        wait_for("all three clouds answered", lambda: len(seen(pdns, record)) == 3, 15)
        endpoints.stop("azure")
        wait_for("azure out of the answers", lambda: seen(pdns, record, 40)[azure] == 0, 10)
        time.sleep(4 * INTERVAL_S)
        # Only the holder applied; the standby probed the same world and wrote nothing.
        ma, mb = scrape(a_url), scrape(b_url)
        assert value(ma, "edgefabric_apply_duration_seconds_count", backend="powerdns") >= 5
        assert value(mb, "edgefabric_apply_duration_seconds_count", backend="powerdns") == 0
        assert value(ma, "edgefabric_lease_held", identity="ctl-a") == 1
        assert value(mb, "edgefabric_lease_held", identity="ctl-b") == 0
        assert value(mb, "edgefabric_lease_holder", holder="ctl-a") == 1
        assert value(mb, "edgefabric_cloud_healthy", cloud="azure") == 0  # the standby's evidence is warm
        assert value(ma, "edgefabric_weight", answer="default", cloud="azure") == 0
        assert value(ma, "edgefabric_probe_latency_seconds_count", cloud="aws") >= 5
        assert _healthz(a_url)[0] == _healthz(b_url)[0] == 200

        # pulumi up while the controller holds the lease: azure answers again now, so an up of
        # its own would put it back at once; following the holder, it writes nothing.
        spec = failover_spec(load_stack_file(tmp_path / "Pulumi.lease.yaml"))
        props = {**spec.to_inputs(), "provider_version": PROVIDER_VERSION}
        endpoints.start("azure")
        before = lua_records(pdns, record)
        monkeypatch.setenv(LEASE_FILE_ENV, str(lease_file))
        monkeypatch.setenv("EDGEFABRIC_SECRET_POWERDNSAPIKEY", pdns.api_key)
        outs = WeightedFailoverProvider().create(props).outs
        # route-to-secondary (the default action): azure's share goes to the next cloud in priority order.
        assert outs["plan"]["answers"]["default"]["weights"] == {"aws": 50, "azure": 0, "gcp": 50}
        assert outs["health"]["azure"]["healthy"] is False and outs["backend_status"] == {"powerdns": "ok"}
        assert lua_records(pdns, record) == before
        endpoints.stop("azure")

        # The holder dies: no release. The standby takes over within two lease periods, and
        # azure, still down, is never answered in between.
        with Sampler(pdns, record) as during:
            a_applies = _applies(a_url)
            a.kill()
            died = time.monotonic()
            wait_for("b takes over", lambda: bool(b.events("lease_acquired")), 3 * PERIOD_S)
            took = time.monotonic() - died
            wait_for("b applies", lambda: _applies(b_url) > 0, 5)
            time.sleep(4 * INTERVAL_S)
        assert took <= 2 * PERIOD_S, f"takeover after {took:.2f}s > two lease periods ({2 * PERIOD_S}s)"
        assert during.rounds > 50 and not during.hits[azure]
        holder = read_lease(lease_file)
        assert holder is not None and holder.holder == "ctl-b" and a_applies >= 5

        # The old holder comes back: it stands by; still one writer.
        a2 = Ctl(tmp_path, "lease", [*args, "--state-file", str(tmp_path / "a.json"), "--identity", "ctl-a"], env, "a2")
        try:
            a2_url = a2.metrics_url()
            wait_for("a stands by", lambda: bool(a2.events("standby")), 10)
            time.sleep(4 * INTERVAL_S)
            assert _applies(a2_url) == 0 and _applies(b_url) >= 5
        finally:
            assert a2.stop() == 0
    finally:
        endpoints.start("azure")
        a.kill()
        if b is not None:
            assert b.stop() == 0
            assert b.events("stop")[-1]["released"] is True
