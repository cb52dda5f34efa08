"""`healthCheck.checks` in the stack config: one form or the other, each check's own timeout,
and ports the ingress actually serves (the api-gateway core service's)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from edgefabric.config import (
    HttpCheck,
    TcpCheck,
    load_config,
    load_stack_file,
    raw_from_stack_file,
)
from tests.kits.config import config_problems as problems

ROOT = Path(__file__).resolve().parents[3]
DEV = raw_from_stack_file(ROOT / "Pulumi.dev.yaml")
HTTPS = {"type": "http", "scheme": "https", "port": 443, "path": "/healthz"}


def dev(**health_check: Any) -> dict[str, Any]:
    raw = copy.deepcopy(DEV)
    hc = {k: v for k, v in raw["healthCheck"].items() if k != "check"}
    raw["healthCheck"] = {**hc, **health_check}
    return raw


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_the_shipped_stacks_probe_https_on_a_port_the_gateway_serves(stack: str) -> None:
    cfg = load_stack_file(ROOT / f"Pulumi.{stack}.yaml")
    (check,) = cfg.health_check.all_checks
    assert isinstance(check, HttpCheck) and (check.scheme, check.port) == ("https", 443)
    (gateway,) = [s for s in cfg.core.services if s.kind == "api-gateway"]
    assert 443 in {p.port for p in gateway.ports}


def test_checks_load_with_their_own_timeouts() -> None:
    cfg = load_config(dev(checks=[{"type": "tcp", "port": 8081, "timeoutS": 2}, HTTPS]))
    tcp, https = cfg.health_check.all_checks
    assert isinstance(tcp, TcpCheck) and tcp.timeout_s == 2 and isinstance(https, HttpCheck)
    assert cfg.health_check.check is None


def test_a_port_the_gateway_does_not_serve_names_both_keys() -> None:
    (line,) = problems(dev(checks=[HTTPS, {"type": "tcp", "port": 9999}]))
    assert line.startswith("edgefabric:healthCheck.checks[1].port = 9999: not a port of core.services[0] "
                           "(api-gateway): 8080, 8081, 8082, 443"), line
    (line,) = problems(dev(check={**HTTPS, "port": 8443}))
    assert line.startswith("edgefabric:healthCheck.check.port = 8443: not a port of core.services[0] (api-gateway)")
    # Neither form: the default check (plain http on 80) is checked too.
    (line,) = problems(dev())
    assert line.startswith("edgefabric:healthCheck.check.port = 80: not a port of core.services[0]"), line


def test_the_gateway_is_the_first_api_gateway_service_wherever_it_is_listed() -> None:
    raw = dev(check=HTTPS)
    services = raw["core"]["services"]
    raw["core"]["services"] = [*services[1:], services[0]]
    (line,) = problems({**raw, "healthCheck": {**raw["healthCheck"], "check": {**HTTPS, "port": 9090}}})
    assert "not a port of core.services[3] (api-gateway)" in line and "core.services[3].ports" in line


def test_without_a_gateway_nothing_serves_the_check() -> None:
    raw = dev(check=HTTPS)
    raw["core"]["services"][0]["kind"] = "business-logic"
    (line,) = problems(raw)
    assert line.startswith("edgefabric:healthCheck.check.port = 443: a port of the api-gateway core service"), line
    assert "no service of kind api-gateway" in line


def test_custom_checks_have_no_port_to_check() -> None:
    load_config(dev(checks=[HTTPS, {"type": "custom", "command": ["/bin/true"]}]))


def test_skipped_for_an_ingress_or_without_core_services() -> None:
    raw = dev(check={**HTTPS, "port": 9999})
    with_ingress = copy.deepcopy(raw)
    with_ingress["clouds"]["gcp"]["ingress"] = {"address": "203.0.113.12"}
    load_config(with_ingress)  # that cloud's ports are not ours to know
    without_services = copy.deepcopy(with_ingress)
    del without_services["clouds"]["gcp"]["ingress"]
    without_services["core"] = {"clusters": raw["core"]["clusters"]}
    without_services["strategies"] = {k: v for k, v in raw["strategies"].items() if k == "api-gateway"}
    load_config(without_services)  # no core services: no gateway ports declared to compare with
    no_dns = {k: v for k, v in raw.items() if k != "dns"}
    load_config(no_dns)  # nothing is probed


def test_one_form_or_the_other() -> None:
    (line,) = problems(dev(check=HTTPS, checks=[HTTPS]))
    assert line.startswith("edgefabric:healthCheck.checks = ") and "not both" in line, line


@pytest.mark.parametrize(("health_check", "path", "allowed"), [
    ({"checks": []}, "healthCheck.checks", "at least 1 item"),
    ({"checks": [HTTPS, {"type": "tcp", "port": 8081, "timeoutS": 30}]}, "healthCheck.checks[1].timeoutS",
     "must be < healthCheck.intervalS (30)"),
    ({"check": {**HTTPS, "timeoutS": 0}}, "healthCheck.check.timeoutS", "greater than 0"),
    ({"checks": [{**HTTPS, "scheme": "http", "caBundleRef": "env:CA"}]}, "healthCheck.checks[0].caBundleRef",
     "set scheme https"),
    ({"checks": [{**HTTPS, "caBundleRef": "-----BEGIN CERTIFICATE-----"}]}, "healthCheck.checks[0].caBundleRef",
     "must match"),
    ({"checks": [{**HTTPS, "hostHeader": "API.Example.com."}]}, "healthCheck.checks[0].hostHeader", "must match"),
    ({"checks": [{"type": "custom", "command": ["x"], "shell": True}]}, "healthCheck.checks[0].shell",
     "unknown key"),
])
def test_bad_checks_name_their_key_path(health_check: dict[str, Any], path: str, allowed: str) -> None:
    lines = problems(dev(**health_check))
    assert any(line.startswith(f"edgefabric:{path} = ") and allowed in line for line in lines), lines
