"""The backends behind one name -> factory map, their secrets through the one resolver, and
the retry every backend call goes through."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgefabric.config import DnsBackends, load_stack_file
from edgefabric.errors import ConfigError
from edgefabric.traffic.dns import FACTORIES, BackendSettings, StaticTokenCredential, build_backends
from edgefabric.traffic.dns.azure_tm import AzureTmBackend
from edgefabric.traffic.dns.base import DnsBackendError, TransientError, retry
from edgefabric.traffic.dns.gcp_dns import GcpDnsBackend
from edgefabric.traffic.dns.powerdns import PowerDnsBackend
from edgefabric.traffic.dns.route53 import Route53Backend

ROOT = Path(__file__).resolve().parents[3]
PDNS = {"powerdns": {"api_url": "http://127.0.0.1:8081", "api_key_ref": "config:powerdnsApiKey", "zone": "x."}}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_ROUTE_53", "EDGEFABRIC_AZURE_BASE_URL", "EDGEFABRIC_AZURE_TOKEN",
                 "EDGEFABRIC_GCP_DNS_ENDPOINT", "EDGEFABRIC_GCP_ACCESS_TOKEN", "EDGEFABRIC_SECRET_POWERDNSAPIKEY"):
        monkeypatch.delenv(name, raising=False)


def test_one_factory_per_backend_setting() -> None:
    assert list(FACTORIES) == list(BackendSettings.model_fields) == list(DnsBackends.model_fields)


def test_every_configured_backend_is_built_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARM_SUBSCRIPTION_ID", "sub-1")
    monkeypatch.setenv("EDGEFABRIC_AZURE_TOKEN", "tok")
    cfg = load_stack_file(ROOT / "Pulumi.prod.yaml")
    assert cfg.dns is not None
    settings = BackendSettings.model_validate({
        **cfg.dns.backends.model_dump(exclude_none=True),
        "gcp_dns": {**cfg.dns.backends.model_dump()["gcp_dns"], "health_check": "https://hc/link"},
    })
    r53, tm, gdns = build_backends(settings)
    assert isinstance(r53, Route53Backend) and r53.zone_name == "edgefabric.example.com."
    assert isinstance(tm, AzureTmBackend) and tm.subscription_id == "sub-1"
    assert isinstance(tm.credential, StaticTokenCredential) and "tok" not in repr(tm.credential)
    assert isinstance(gdns, GcpDnsBackend) and gdns.health_check == "https://hc/link"
    assert [b.name for b in build_backends(settings, only=["gcp_dns"])] == ["gcp_dns"]


def test_config_secrets_come_from_the_input_then_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = BackendSettings.model_validate(PDNS)
    (backend,) = build_backends(settings, {"config:powerdnsApiKey": "from-input"})
    assert isinstance(backend, PowerDnsBackend) and backend.api_key == "from-input"
    monkeypatch.setenv("EDGEFABRIC_SECRET_POWERDNSAPIKEY", "from-env")
    (backend,) = build_backends(settings)
    assert isinstance(backend, PowerDnsBackend) and backend.api_key == "from-env"


def test_a_missing_secret_names_the_key_path_and_where_it_was_looked_for() -> None:
    with pytest.raises(ConfigError) as info:
        build_backends(BackendSettings.model_validate(PDNS))
    (problem,) = info.value.problems
    assert problem.startswith("edgefabric:dns.backends.powerdns.apiKeyRef = 'config:powerdnsApiKey': ")
    assert "EDGEFABRIC_SECRET_POWERDNSAPIKEY" in problem


@pytest.mark.parametrize(("url", "ok"), [
    ("http://127.0.0.1:5000", True), ("http://localhost:5000", True), ("https://route53.example", True),
    ("http://route53.example", False),
])
def test_endpoint_overrides_are_plain_http_on_loopback_only(url: str, ok: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", url)
    settings = BackendSettings.model_validate({"route53": {"zone_name": "x."}})
    if ok:
        (backend,) = build_backends(settings)
        assert isinstance(backend, Route53Backend) and backend.endpoint_url == url
    else:
        with pytest.raises(ConfigError, match=r"AWS_ENDPOINT_URL = 'http://route53\.example': https, or plain http"):
            build_backends(settings)


def test_retry_is_bounded_with_full_jitter_backoff() -> None:
    sleeps: list[float] = []
    calls: list[int] = []

    def always() -> None:
        calls.append(1)
        raise TransientError("HTTP 503")

    with pytest.raises(DnsBackendError, match=r"^op: failed after 5 attempts: HTTP 503$") as info:
        retry(always, "op", attempts=5, base_delay_s=0.1, sleep=sleeps.append)
    assert isinstance(info.value.__cause__, TransientError)
    assert len(calls) == 5 and len(sleeps) == 4
    assert all(0 <= s <= 0.1 * 2**i for i, s in enumerate(sleeps))

    def fatal() -> None:
        calls.append(1)
        raise DnsBackendError("HTTP 422")

    calls.clear()
    with pytest.raises(DnsBackendError, match=r"^HTTP 422$"):
        retry(fatal, "op", sleep=sleeps.append)
    assert len(calls) == 1
