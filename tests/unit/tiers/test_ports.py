"""Service ports and container ports: a Service's 443 reaches a non-root container on 8443."""

from __future__ import annotations

import pytest

from edgefabric.config import Port
from edgefabric.errors import ConfigError
from tests.unit.tiers.conftest import rendered_stack


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_https_443_is_served_by_an_unprivileged_container_port(stack: str) -> None:
    rendered = rendered_stack(stack)
    gateways = [r for r in rendered.of_type("kubernetes:core/v1:Service")
                if r.inputs["metadata"]["name"] == "api-gateway"]
    assert gateways
    for svc in gateways:
        https = next(p for p in svc.inputs["spec"]["ports"] if p["name"] == "https")
        assert (https["port"], https["targetPort"]) == (443, 8443)
    for dep in rendered.of_type("kubernetes:apps/v1:Deployment"):
        if dep.inputs["metadata"]["name"] != "api-gateway":
            continue
        container = dep.inputs["spec"]["template"]["spec"]["containers"][0]
        listened = {p["containerPort"] for p in container["ports"]}
        assert 8443 in listened and not any(port < 1024 for port in listened), listened


def test_a_privileged_target_port_is_refused() -> None:
    with pytest.raises(ValueError, match="greater than or equal to 1024"):
        Port(name="https", port=443, target_port=443)


def test_ipv6_ingress_is_refused_with_its_key_path() -> None:
    from edgefabric.config import load_config

    raw = {"environment": "dev", "clouds": {"aws": {"enabled": True, "ingress": {"address": "2001:db8::1"}}}}
    with pytest.raises(ConfigError) as err:
        load_config(raw)
    text = str(err.value)
    assert "edgefabric:clouds.aws.ingress.address = '2001:db8::1'" in text and "A records" in text
