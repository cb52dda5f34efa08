"""`caBundleRef` goes through the one secret resolver (`edgefabric.secrets`) like every other
reference: in the WeightedFailover provider a `config:` bundle comes from the resource's secret
input (as the backends' keys do), in the controller from EDGEFABRIC_SECRET_<KEY>; a reference
that points at nothing is a ConfigError naming the key path. Real https on loopback with a CA
made in the test, real PowerDNS."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devenv.endpoints import LocalEndpoints
from devenv.powerdns import PowerDnsServer
from edgefabric.dynamic.failover import PROVIDER_VERSION, WeightedFailoverProvider
from edgefabric.errors import ConfigError
from edgefabric.traffic.health import probe_many_sync
from edgefabric.traffic.spec import FailoverSpec
from tests.integration.conftest import ZONE
from tests.integration.traffic.test_health import NAME, RECORD, LocalCa, https_endpoint

REF = "config:probeCa"
ENV = "EDGEFABRIC_SECRET_PROBECA"


@pytest.fixture
def https_aws(tmp_path: Path) -> Iterator[tuple[LocalEndpoints, LocalCa]]:
    (tmp_path / "ca").mkdir()
    ca = LocalCa(tmp_path / "ca")
    eps = https_endpoint(tmp_path, ca, "good", NAME)
    yield eps, ca
    eps.stop_all()


def _props(eps: LocalEndpoints, pdns: PowerDnsServer, **over: Any) -> dict[str, Any]:
    return {
        "record_name": RECORD, "ttl": 5,
        "endpoints": {"aws": {"address": eps.address("aws")}},
        "health_check": {"interval_s": 1, "timeout_s": 1, "failure_threshold": 1, "success_threshold": 1,
                         "recovery_hold_down_s": 0,
                         "check": {"type": "http", "scheme": "https", "path": "/health", "port": eps.port,
                                   "ca_bundle_ref": REF}},
        "strategy": {"order": ["aws"]},
        "routing": {"rules": [], "default_weight": 60},
        "backends": {"powerdns": {"api_url": pdns.api_url, "api_key_ref": "config:pdnsKey", "zone": ZONE}},
        "health_check_ids": {}, "probe_round_gap_s": 0.05, "provider_version": PROVIDER_VERSION, **over,
    }  # fmt: skip


def test_provider_reads_the_bundle_from_its_secret_input(https_aws: tuple[LocalEndpoints, LocalCa],
                                                         pdns: PowerDnsServer,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    eps, ca = https_aws
    monkeypatch.delenv(ENV, raising=False)
    assert RECORD.endswith(ZONE)
    props = _props(eps, pdns, secrets={REF: ca.pem, "config:pdnsKey": pdns.api_key})
    prov = WeightedFailoverProvider()
    outs = prov.create(props).outs
    try:
        assert outs["health"]["aws"]["healthy"] is True, outs["health"]
        assert outs["backend_status"] == {"powerdns": "ok"}
        assert prov.diff(RECORD, outs, props).changes is False  # diff re-probes with the same bundle
    finally:
        prov.delete(RECORD, outs)
    # Without it, the reference names nothing: an error naming the key, never "aws is down".
    with pytest.raises(ConfigError) as err:
        prov.create(_props(eps, pdns, secrets={"config:pdnsKey": pdns.api_key}))
    assert "healthCheck.check.caBundleRef" in str(err.value) and ca.pem not in str(err.value)


def test_controller_reads_the_bundle_from_its_environment(https_aws: tuple[LocalEndpoints, LocalCa],
                                                          pdns: PowerDnsServer,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    eps, ca = https_aws
    spec = FailoverSpec.from_inputs(_props(eps, pdns))
    monkeypatch.delenv(ENV, raising=False)
    with pytest.raises(ConfigError, match=r"healthCheck\.check\.caBundleRef.*EDGEFABRIC_SECRET_PROBECA"):
        spec.probes()
    monkeypatch.setenv(ENV, ca.pem)
    res = probe_many_sync(spec.probes(), 1.0)["aws"]
    assert res.ok and res.detail == "status 200", res.detail
