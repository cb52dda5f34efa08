"""The zones global traffic publishes in, as rendered: created or adopted, the secondaries
delegated from the one authoritative zone, Traffic Manager reached by a CNAME, and the
weighted records written only after all of it (and removed before it on destroy)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from edgefabric.traffic.dns import BackendSettings, Secondary, build_backends
from tests.unit.tiers.conftest import rendered_stack
from tooling.render import Registered, Rendered, raw_from_stack_file, render

ROOT = Path(__file__).resolve().parents[3]
DEV = raw_from_stack_file(ROOT / "Pulumi.dev.yaml")


def one(rendered: Rendered, typ: str, name: str) -> Registered:
    [found] = [r for r in rendered.of_type(typ) if r.name == name]
    return found


def test_dev_delegates_cloud_dns_and_cnames_traffic_manager_from_route53() -> None:
    rendered = rendered_stack("dev")
    # Route53's zone is adopted (shared by every environment): read, never created.
    assert rendered.of_type("aws:route53/zone:Zone") == []
    zone = one(rendered, "gcp:dns/managedZone:ManagedZone", "global-zone-gcp")
    assert zone.inputs["dnsName"] == "gcp.dev.edgefabric.example.com." and zone.inputs["visibility"] == "public"
    delegation = one(rendered, "aws:route53/record:Record", "global-delegate-gcp")
    assert delegation.inputs["type"] == "NS" and delegation.inputs["name"] == "gcp.dev.edgefabric.example.com"
    # The name servers Cloud DNS reports for the zone, in the zone Route53 reports for the name.
    servers = delegation.inputs["records"]
    assert len(servers) == 4 and all(s.startswith("ns-cloud-") and s.endswith(".googledomains.com.")
                                     for s in servers), servers
    assert delegation.inputs["zoneId"].startswith("Z")
    alias = one(rendered, "aws:route53/record:Record", "global-tm-alias")
    assert (alias.inputs["type"], alias.inputs["name"], alias.inputs["records"]) == (
        "CNAME", "api.tm.dev.edgefabric.example.com", ["edgefabric-dev.trafficmanager.net."])
    group = one(rendered, "azure-native:resources:ResourceGroup", "global-tm-rg")
    assert group.inputs["resourceGroupName"] == "edgefabric-dev-dns"
    assert rendered.outputs["dnsNames"] == {"api.dev.edgefabric.example.com.": {
        "route53": "api.dev.edgefabric.example.com.", "azureTm": "api.tm.dev.edgefabric.example.com.",
        "gcpDns": "api.gcp.dev.edgefabric.example.com."}}
    # The failover writes into the zones only after they exist: and destroy runs the other way.
    [failover] = rendered.of_type("pulumi-python:dynamic/failover:WeightedFailover")
    assert {zone.urn, delegation.urn, alias.urn, group.urn} <= set(failover.dependencies)


def test_the_failover_publishes_cloud_dns_answers_under_the_standby_name() -> None:
    rendered = rendered_stack("dev")
    [failover] = rendered.of_type("pulumi-python:dynamic/failover:WeightedFailover")
    assert failover.inputs["record_name"] == "api.dev.edgefabric.example.com."
    backends = BackendSettings.model_validate(failover.inputs["backends"])
    assert backends.gcp_dns is not None and backends.route53 is not None
    assert backends.gcp_dns.secondary_zone == "gcp.dev.edgefabric.example.com."
    assert backends.route53.secondary_zone is None  # the authority publishes the name itself
    built = {b.name: b for b in build_backends(backends, secrets={}, only=["route53", "gcp_dns"])}
    secondary = built["gcp_dns"]
    assert isinstance(secondary, Secondary) and not isinstance(built["route53"], Secondary)
    # The controller bounds each request by its deadline: that reaches the wrapped backend.
    secondary.call_timeout_s = 3.0
    assert secondary.inner.call_timeout_s == 3.0  # type: ignore[attr-defined]


def created(raw: dict[str, Any]) -> Rendered:
    return render(raw, stack="dev")


def test_a_zone_not_adopted_is_created_and_delegated_from() -> None:
    raw = copy.deepcopy(DEV)
    raw["dns"]["backends"]["route53"]["adopt"] = False
    raw["dns"]["backends"]["azureTm"]["adopt"] = True
    rendered = created(raw)
    zone = one(rendered, "aws:route53/zone:Zone", "global-zone-route53")
    assert zone.inputs["name"] == "edgefabric.example.com"
    delegation = one(rendered, "aws:route53/record:Record", "global-delegate-gcp")
    assert zone.urn in delegation.dependencies  # written into the zone it created
    # An adopted resource group is neither created nor deleted.
    assert [g for g in rendered.of_type("azure-native:resources:ResourceGroup") if g.name == "global-tm-rg"] == []


def test_cloud_dns_as_authority_delegates_route53_with_fully_qualified_name_servers() -> None:
    raw = copy.deepcopy(DEV)
    dns = raw["dns"]
    dns["authority"] = "gcpDns"
    dns["backends"]["gcpDns"]["dnsName"] = "edgefabric.example.com."
    dns["backends"]["route53"] = {"zoneName": "aws.dev.edgefabric.example.com.", "healthCheckIds": True}
    rendered = created(raw)
    delegation = one(rendered, "gcp:dns/recordSet:RecordSet", "global-delegate-aws")
    assert delegation.inputs["type"] == "NS" and delegation.inputs["name"] == "aws.dev.edgefabric.example.com."
    # Route53 reports its name servers without the final dot; Cloud DNS takes only FQDNs.
    servers = delegation.inputs["rrdatas"]
    assert len(servers) == 4 and all(".awsdns-" in s and s.endswith(".") for s in servers), servers
    alias = one(rendered, "gcp:dns/recordSet:RecordSet", "global-tm-alias")
    assert alias.inputs["rrdatas"] == ["edgefabric-dev.trafficmanager.net."]
    assert alias.inputs["project"] == "edgefabric-dev"
    [failover] = rendered.of_type("pulumi-python:dynamic/failover:WeightedFailover")
    assert failover.inputs["backends"]["route53"]["secondary_zone"] == "aws.dev.edgefabric.example.com."


@pytest.mark.parametrize("stack", ["local"])
def test_the_local_stack_keeps_its_one_powerdns_zone(stack: str) -> None:
    rendered = rendered_stack(stack)
    assert not [r for r in rendered.resources if r.type.startswith(("aws:", "gcp:", "azure-native:"))]
    names = rendered.outputs["dnsNames"]
    assert names == {n: {"powerdns": n} for n in ("api.edgefabric.local.", "analytics.edgefabric.local.")}
