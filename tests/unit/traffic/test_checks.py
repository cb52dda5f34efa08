"""Several health checks per target: the probes the spec builds from them, the one mapping to
the clouds' native checkers (which take one check), and what the preview says about the rest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_gcp as gcp
import pytest

from edgefabric.config import HealthCheckConfig, load_stack_file
from edgefabric.errors import ConfigError
from edgefabric.tiers.traffic import GlobalTraffic
from edgefabric.traffic.health import AllOf, CustomProbe, HttpProbe, TcpProbe
from edgefabric.traffic.spec import FailoverSpec, NativeCheck, native_check
from tests.unit.tiers.test_traffic import start_mocks, traffic_args

ROOT = Path(__file__).resolve().parents[3]
PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
HTTPS = {"type": "http", "scheme": "https", "port": 443, "path": "/healthz"}
TCP = {"type": "tcp", "port": 8081, "timeout_s": 2}
CUSTOM = {"type": "custom", "command": ["/usr/local/bin/deep-check", "--quick"], "timeout_s": 4}


def spec(health_check: dict[str, Any]) -> FailoverSpec:
    cfg = load_stack_file(ROOT / "Pulumi.prod.yaml")
    addresses = {c: f"203.0.113.{i + 10}" for i, c in enumerate(cfg.traffic_clouds)}
    inputs = FailoverSpec.from_config(cfg, addresses).to_inputs()
    return FailoverSpec.from_inputs({**inputs, "health_check": {"interval_s": 30, "timeout_s": 5, **health_check}})


def test_several_checks_are_one_probe_per_target_each_with_its_own_timeout() -> None:
    probes = spec({"checks": [TCP, {**HTTPS, "host_header": "health.edgefabric.example.com"}, CUSTOM]}).probes()
    assert probes["gcp"] == AllOf(
        (TcpProbe("203.0.113.12", 8081, 2.0),
         HttpProbe("https://203.0.113.12:443/healthz", "GET", 200, "health.edgefabric.example.com"),
         CustomProbe(("/usr/local/bin/deep-check", "--quick", "203.0.113.12"), 4.0)),
        ("healthCheck.checks[0]", "healthCheck.checks[1]", "healthCheck.checks[2]"),
    )  # fmt: skip


def test_a_one_item_list_and_the_single_check_probe_alike() -> None:
    one = spec({"checks": [HTTPS]}).probes()
    single = spec({"check": HTTPS}).probes()
    assert one == single
    assert one["aws"] == HttpProbe("https://203.0.113.10:443/healthz", "GET", 200, "api.edgefabric.example.com")
    # Neither form: the default check, plain http on port 80.
    assert HealthCheckConfig().all_checks == HealthCheckConfig(check={"type": "http"}).all_checks


def test_check_and_checks_together_name_the_key() -> None:
    with pytest.raises(ConfigError) as info:
        spec({"check": HTTPS, "checks": [TCP]})
    assert [p.split(" = ")[0] for p in info.value.problems] == ["WeightedFailover:health_check.checks"]
    assert "not both" in info.value.problems[0]


def test_a_bad_item_of_checks_names_its_index() -> None:
    with pytest.raises(ConfigError) as info:
        spec({"checks": [TCP, {**HTTPS, "port": 0}]})
    assert [p.split(" = ")[0] for p in info.value.problems] == ["WeightedFailover:health_check.checks[1].port"]


def test_the_ca_bundle_reference_is_resolved_and_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEFABRIC_TEST_CA", PEM)
    probes = spec({"checks": [{**HTTPS, "ca_bundle_ref": "env:EDGEFABRIC_TEST_CA"}]}).probes()
    assert isinstance(probes["aws"], HttpProbe) and probes["aws"].ca_pem == PEM
    assert PEM not in repr(probes["aws"])
    # `config:` references: the caller's lookup first (a provider's secrets), then the environment.
    looked = spec({"checks": [{**HTTPS, "ca_bundle_ref": "config:edgeCa"}]}).probes(lookup={"edgeCa": PEM}.get)
    assert looked["aws"].ca_pem == PEM  # type: ignore[union-attr]
    monkeypatch.delenv("EDGEFABRIC_TEST_CA")
    with pytest.raises(ConfigError, match=r"healthCheck\.checks\[0\]\.caBundleRef = 'env:EDGEFABRIC_TEST_CA'"):
        spec({"checks": [{**HTTPS, "ca_bundle_ref": "env:EDGEFABRIC_TEST_CA"}]}).probes()
    monkeypatch.setenv("EDGEFABRIC_TEST_CA", "s3cret-not-a-pem")
    with pytest.raises(ConfigError, match="PEM bundle") as info:
        spec({"check": {**HTTPS, "ca_bundle_ref": "env:EDGEFABRIC_TEST_CA"}}).probes()
    assert "healthCheck.check.caBundleRef" in str(info.value) and "s3cret" not in str(info.value)


def test_a_ca_bundle_only_goes_with_https() -> None:
    with pytest.raises(ConfigError, match=r"health_check\.check\.ca_bundle_ref.*scheme https"):
        spec({"check": {"type": "http", "ca_bundle_ref": "env:X"}})


@pytest.mark.parametrize(("checks", "native", "notes"), [
    ([HTTPS], NativeCheck("HTTPS", 443, "/healthz"), []),
    ([CUSTOM, TCP, HTTPS], NativeCheck("TCP", 8081, None), ["checks[0]", "checks[2]"]),
    ([CUSTOM, HTTPS], NativeCheck("HTTPS", 443, "/healthz"), ["checks[0]"]),
    ([CUSTOM], NativeCheck("TCP", 80, None), ["checks[0]"]),
    ([CUSTOM, {**CUSTOM, "command": ["/bin/true"]}], NativeCheck("TCP", 80, None), ["checks[0]", "checks[1]"]),
])
def test_the_native_checkers_take_the_first_http_or_tcp_check(checks: list[dict[str, Any]], native: NativeCheck,
                                                              notes: list[str]) -> None:
    hc = spec({"checks": checks}).health_check
    got = native_check(hc)
    assert got == native
    assert [n.split(" ", 1)[0] for n in got.notes] == [f"healthCheck.{n}" for n in notes]
    health = spec({"checks": checks}).health_settings()
    assert (health.protocol, health.port, health.path) == (native.protocol, native.port, native.path)


def test_the_notes_say_what_the_native_checkers_do_instead() -> None:
    (only,) = native_check(spec({"check": CUSTOM}).health_check).notes
    assert only.startswith("healthCheck.check (custom /usr/local/bin/deep-check --quick) cannot run in the "
                           "clouds' native checkers")
    assert only.endswith("they connect over TCP to port 80 instead")
    (extra,) = native_check(spec({"checks": [HTTPS, TCP]}).health_check).notes
    assert extra.startswith("healthCheck.checks[1] (tcp :8081) is not run by the clouds' native checkers")
    assert extra.endswith("they run only healthCheck.checks[0] (https GET :443/healthz)")


def test_the_preview_says_which_checks_the_native_checkers_do_not_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """Never silently another path: the tier warns with each note, once."""
    cfg = load_stack_file(ROOT / "Pulumi.prod.yaml")
    hc = HealthCheckConfig.model_validate({"checks": [HTTPS, CUSTOM]})
    cfg = cfg.model_copy(update={"health_check": hc})
    warned: list[str] = []
    monkeypatch.setattr(pulumi.log, "warn", lambda msg, *a, **k: warned.append(msg))
    start_mocks("prod", monkeypatch, "unused")

    @pulumi.runtime.test
    def program() -> pulumi.Output[Any]:
        providers = {"aws": aws.Provider("aws", region="us-east-1"), "gcp": gcp.Provider("gcp", project="p-test")}
        endpoints = {c: f"203.0.113.{i + 10}" for i, c in enumerate(cfg.traffic_clouds)}
        comp = GlobalTraffic("global", traffic_args(cfg, endpoints, providers))
        return comp.plan

    program()
    assert warned == list(native_check(hc).notes) and len(warned) == 1
    assert warned[0].startswith("healthCheck.checks[1] (custom /usr/local/bin/deep-check --quick)")
