"""Every DNS backend against a real or schema-validating service on loopback."""

from __future__ import annotations

import dataclasses
import json
import time
import urllib.error
import urllib.request

import boto3
import pytest
from azure.core.credentials import AccessToken
from google.oauth2.credentials import Credentials

from devenv.powerdns import PowerDnsServer
from edgefabric.traffic.dns import Secondary
from edgefabric.traffic.dns.azure_tm import EXTERNAL, AzureTmBackend
from edgefabric.traffic.dns.base import DnsBackendError, HealthSettings, RecordSpec, apply_all
from edgefabric.traffic.dns.gcp_dns import GcpDnsBackend
from edgefabric.traffic.dns.http import json_request
from edgefabric.traffic.dns.powerdns import PowerDnsBackend
from edgefabric.traffic.dns.resolver import resolve_a
from edgefabric.traffic.dns.route53 import OWN_PREFIX, Route53Backend
from edgefabric.traffic.health import Thresholds
from edgefabric.traffic.planner import PlanInput, RegionRule, Strategy, plan
from tests.fakes.azure_tm import FakeTrafficManager, load_example
from tests.fakes.gcp_dns import FakeCloudDns
from tests.integration.conftest import AZ_SUB, GCP_PROJECT, GCP_ZONE, RECORD, ZONE, ElbNames, answer_counts

IPS = {"aws": "127.0.1.1", "azure": "127.0.1.2", "gcp": "127.0.1.3"}
AAA = Strategy(("aws", "azure", "gcp"))
RULES = (
    RegionRule("americas", ("north-america", "south-america"), "aws", 70),
    RegionRule("europe-africa", ("europe", "africa"), "azure", 70),
)
SPEC = RecordSpec(RECORD, 30, IPS, HealthSettings("HTTP", 8080, "/health", 10, 5, Thresholds(3, 2, 60)))


def pdns_backend(pdns: PowerDnsServer) -> PowerDnsBackend:
    return PowerDnsBackend(pdns.api_url, pdns.api_key, pdns.zone)


# ------------------------------------------------------------------ PowerDNS


def test_powerdns_shares_match_plan_over_2000_resolutions(pdns: PowerDnsServer) -> None:
    backend = pdns_backend(pdns)
    p = plan(PlanInput(AAA, default_weight=50))  # 50 / 25 / 25
    spec = RecordSpec("shares." + ZONE, 1, IPS)
    backend.apply(spec, p)
    counts = answer_counts(pdns, spec.name, 2000)
    total = sum(counts.values())
    assert total == 2000
    for cloud, ip in IPS.items():
        share = 100 * counts[ip] / total
        assert abs(share - p.default[cloud]) <= 5, (cloud, share, p.default)
    backend.delete(spec)


def test_powerdns_idempotent_read_and_zero_weight_dropped(pdns: PowerDnsServer) -> None:
    backend = pdns_backend(pdns)
    p = plan(PlanInput(AAA, default_weight=70, health={"gcp": False}))
    assert backend.apply(SPEC, p).changed is True
    assert backend.apply(SPEC, p).changed is False
    assert backend.read(SPEC) == {"default": {"aws": 82, "azure": 18}}
    counts = answer_counts(pdns, RECORD, 200)
    assert counts[IPS["gcp"]] == 0 and counts[IPS["aws"]] > counts[IPS["azure"]] > 0
    backend.delete(SPEC)
    assert backend.read(SPEC) is None
    backend.delete(SPEC)  # already gone: fine


def test_powerdns_wrong_key_is_a_clear_error(pdns: PowerDnsServer) -> None:
    backend = PowerDnsBackend(pdns.api_url, "not-the-key", pdns.zone)
    with pytest.raises(Exception, match="HTTP 401"):
        backend.read(SPEC)
    assert "not-the-key" not in repr(backend)


# ------------------------------------------------------------------ Route53 (moto)


def test_route53_weighted_sets_with_health_checks_idempotent(aws_env: str, hosted_zone: str) -> None:
    client = boto3.client("route53", endpoint_url=aws_env)
    hc = client.create_health_check(
        CallerReference=f"hc-{time.monotonic_ns()}",
        HealthCheckConfig={"IPAddress": IPS["aws"], "Port": 8080, "Type": "HTTP", "ResourcePath": "/health",
                           "RequestInterval": 10, "FailureThreshold": 3},
    )["HealthCheck"]["Id"]  # fmt: skip
    spec = RecordSpec(RECORD, 30, IPS, SPEC.health, health_check_ids={"aws": hc})
    backend = Route53Backend(ZONE)
    p = plan(PlanInput(AAA, default_weight=70), scale=255)
    assert backend.apply(spec, p).changed is True
    assert backend.apply(spec, p).changed is False
    sets = client.list_resource_record_sets(HostedZoneId=hosted_zone)["ResourceRecordSets"]
    weighted = {s["SetIdentifier"]: s for s in sets if s.get("SetIdentifier")}
    assert {k: v["Weight"] for k, v in weighted.items()} == {"edgefabric-aws": 179, "edgefabric-azure": 38,
                                                             "edgefabric-gcp": 38}  # fmt: skip
    assert weighted["edgefabric-aws"]["HealthCheckId"] == hc and "HealthCheckId" not in weighted["edgefabric-gcp"]
    assert backend.read(spec) == {"default": {"aws": 179, "azure": 38, "gcp": 38}}


def test_route53_geolocation_for_region_rules(aws_env: str, hosted_zone: str) -> None:
    client = boto3.client("route53", endpoint_url=aws_env)
    backend = Route53Backend(ZONE, hosted_zone_id=hosted_zone)
    p = plan(PlanInput(AAA, RULES, health={"azure": False}), scale=255)
    backend.apply(SPEC, p)
    sets = client.list_resource_record_sets(HostedZoneId=hosted_zone)["ResourceRecordSets"]
    geo = {s["SetIdentifier"].removeprefix(OWN_PREFIX): s for s in sets if s["Name"] == RECORD and "GeoLocation" in s}
    assert set(geo) == {"default", "americas-NA", "americas-SA", "europe-africa-AF", "europe-africa-EU"}
    assert geo["default"]["GeoLocation"] == {"CountryCode": "*"}
    assert geo["europe-africa-EU"]["AliasTarget"]["DNSName"].rstrip(".") == "europe-africa." + RECORD.rstrip(".")
    assert backend.read(SPEC) == {
        "default": {"aws": 255},
        "americas": {"aws": 210, "gcp": 45},
        "europe-africa": {"aws": 128, "gcp": 127},
    }
    assert backend.apply(SPEC, p).changed is False
    # Back to plain weighted: the geolocation layer and sub-names are removed in the same batch.
    flat = plan(PlanInput(AAA, default_weight=100), scale=255)
    assert backend.apply(SPEC, flat).changed is True
    names = {s["Name"] for s in client.list_resource_record_sets(HostedZoneId=hosted_zone)["ResourceRecordSets"]}
    assert not any(n.startswith(("americas.", "europe-africa.", "default.")) for n in names)
    backend.delete(SPEC)
    assert backend.read(SPEC) is None
    backend.delete(SPEC)


# ------------------------------------------------------------------ Azure TM (fake)


class FakeCredential:
    """azure-core TokenCredential returning a constant token (the fake only checks presence)."""

    def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
        return AccessToken("fake-token", int(time.time()) + 3600)


def tm_backend(fake: FakeTrafficManager) -> AzureTmBackend:
    return AzureTmBackend(AZ_SUB, "rg-edge", "api-tm", "api-edgefabric", credential=FakeCredential(),
                          base_url=fake.url, tags={"managed-by": "edgefabric"})  # fmt: skip


def test_azure_weighted_profile_disabled_endpoint_for_zero(azure_fake: FakeTrafficManager) -> None:
    backend = tm_backend(azure_fake)
    p = plan(PlanInput(AAA, default_weight=70, health={"gcp": False}))
    assert backend.apply(SPEC, p).changed is True
    assert backend.apply(SPEC, p).changed is False
    prof = azure_fake.profiles[(AZ_SUB, "rg-edge", "api-tm")]
    props = prof["properties"]
    assert props["trafficRoutingMethod"] == "Weighted"
    mon = props["monitorConfig"]
    assert {k: mon[k] for k in ("protocol", "port", "path", "intervalInSeconds", "timeoutInSeconds",
                                "toleratedNumberOfFailures")} == {
        "protocol": "HTTP", "port": 8080, "path": "/health", "intervalInSeconds": 10, "timeoutInSeconds": 5,
        "toleratedNumberOfFailures": 2}  # fmt: skip
    eps = {e["name"]: e["properties"] for e in props["endpoints"]}
    assert eps["gcp"]["endpointStatus"] == "Disabled"
    assert (eps["aws"]["weight"], eps["azure"]["weight"]) == (82, 18)
    assert backend.read(SPEC) == {"default": {"aws": 82, "azure": 18}}
    # Response shape follows the published example for a profile with endpoints.
    example = load_example("Profile-GET-WithEndpoints.json")["responses"]["200"]["body"]
    assert set(example) <= set(prof) | {"properties"}
    assert set(example["properties"]["endpoints"][0]) == set(props["endpoints"][0])


def test_azure_nested_geographic_profile_for_rules(azure_fake: FakeTrafficManager) -> None:
    backend = tm_backend(azure_fake)
    p = plan(PlanInput(AAA, RULES))
    backend.apply(SPEC, p)
    geo = azure_fake.profiles[(AZ_SUB, "rg-edge", "api-tm-geo")]["properties"]
    assert geo["trafficRoutingMethod"] == "Geographic"
    mapping = {e["name"]: sorted(e["properties"]["geoMapping"]) for e in geo["endpoints"]}
    assert mapping == {"default": ["WORLD"], "americas": ["GEO-NA", "GEO-SA"], "europe-africa": ["GEO-AF", "GEO-EU"]}
    assert backend.read(SPEC) == {
        "default": {"aws": 100},
        "americas": {"aws": 70, "azure": 15, "gcp": 15},
        "europe-africa": {"aws": 15, "azure": 70, "gcp": 15},
    }
    assert backend.apply(SPEC, p).changed is False
    backend.apply(SPEC, plan(PlanInput(AAA)))  # rules removed: child + geo profiles go
    assert set(azure_fake.profiles) == {(AZ_SUB, "rg-edge", "api-tm")}
    backend.delete(SPEC)
    assert azure_fake.profiles == {} and backend.read(SPEC) is None
    backend.delete(SPEC)


def _raw_put(fake: FakeTrafficManager, body: dict, api_version: str = "2022-04-01") -> int:
    url = (f"{fake.url}/subscriptions/{AZ_SUB}/resourceGroups/rg-edge/providers/Microsoft.Network/"
           f"trafficmanagerprofiles/bad?api-version={api_version}")  # fmt: skip
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="PUT")
    req.add_header("Authorization", "Bearer x")
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_azure_fake_rejects_schema_invalid_requests(azure_fake: FakeTrafficManager) -> None:
    good = load_example("Profile-PUT-WithEndpoints.json")["parameters"]["parameters"]
    assert _raw_put(azure_fake, good) == 201
    bad_type = json.loads(json.dumps(good))
    bad_type["properties"]["monitorConfig"]["port"] = "eighty"
    unknown = json.loads(json.dumps(good))
    unknown["properties"]["weightz"] = 3
    read_only = json.loads(json.dumps(good))
    read_only["properties"]["dnsConfig"]["fqdn"] = "x.trafficmanager.net"
    bad_enum = json.loads(json.dumps(good))
    bad_enum["properties"]["trafficRoutingMethod"] = "Weigthed"
    for body in (bad_type, unknown, read_only, bad_enum):
        assert _raw_put(azure_fake, body) == 400
    assert _raw_put(azure_fake, good, api_version="2018-08-01") == 400
    problems = list(azure_fake.violations)
    azure_fake.violations.clear()  # expected here; the fixture asserts none are left
    assert len(problems) == 5
    assert any("expected integer" in p for p in problems)
    assert any("weightz: unknown property" in p for p in problems)
    assert any("fqdn: read-only" in p for p in problems)
    assert any("Weigthed" in p for p in problems)
    assert any("api-version" in p for p in problems)


def test_azure_backend_error_surfaces_schema_rejection(azure_fake: FakeTrafficManager) -> None:
    backend = tm_backend(azure_fake)
    backend.relative_dns_name = "x"
    backend.tags = {"bad": 1}  # type: ignore[dict-item]  # not a string: the schema rejects tags values
    with pytest.raises(Exception, match="HTTP 400"):
        backend.apply(SPEC, plan(PlanInput(AAA)))
    assert any("$body.tags.bad" in v for v in azure_fake.violations)
    azure_fake.violations.clear()


# ------------------------------------------------------------------ GCP Cloud DNS (fake)


def gcp_backend(fake: FakeCloudDns) -> GcpDnsBackend:
    return GcpDnsBackend(GCP_PROJECT, GCP_ZONE, credentials=Credentials(token="fake-token"), api_endpoint=fake.url + "/")


def test_gcp_wrr_record_sets_idempotent(gcp_fake: FakeCloudDns) -> None:
    backend = gcp_backend(gcp_fake)
    p = plan(PlanInput(AAA, RULES, health={"gcp": False}))
    assert backend.apply(SPEC, p).changed is True
    assert backend.apply(SPEC, p).changed is False
    stored = gcp_fake.rrsets[(GCP_PROJECT, GCP_ZONE)]
    assert set(stored) == {(RECORD, "A"), ("americas." + RECORD, "A"), ("europe-africa." + RECORD, "A")}
    items = stored[(RECORD, "A")]["routingPolicy"]["wrr"]["items"]
    assert items == [{"weight": 100.0, "rrdatas": [IPS["aws"]]}]
    assert backend.read(SPEC) == {
        "default": {"aws": 100},
        "americas": {"aws": 82, "azure": 18},
        "europe-africa": {"aws": 18, "azure": 82},
    }
    # A health change is one atomic change: deletions + additions in one changes.create.
    posts = len([r for r in gcp_fake.requests if r.method == "POST"])
    backend.apply(SPEC, plan(PlanInput(AAA, RULES)))
    assert len([r for r in gcp_fake.requests if r.method == "POST"]) == posts + 1
    backend.delete(SPEC)
    assert gcp_fake.rrsets[(GCP_PROJECT, GCP_ZONE)] == {} and backend.read(SPEC) is None
    backend.delete(SPEC)


def test_gcp_items_are_health_checked_when_a_check_is_given(gcp_fake: FakeCloudDns) -> None:
    """With the stack's compute HealthCheck, Cloud DNS itself skips an unhealthy item between
    reconciles: the policy names the check and every item lists its address as a target."""
    check = f"https://www.googleapis.com/compute/v1/projects/{GCP_PROJECT}/global/healthChecks/api-check"
    backend = dataclasses.replace(gcp_backend(gcp_fake), health_check=check)
    p = plan(PlanInput(AAA, default_weight=60))
    assert backend.apply(SPEC, p).changed is True
    assert backend.apply(SPEC, p).changed is False  # idempotent with the check in place
    policy = gcp_fake.rrsets[(GCP_PROJECT, GCP_ZONE)][(RECORD, "A")]["routingPolicy"]
    assert policy["healthCheck"] == check
    assert {i["rrdatas"][0]: i["healthCheckedTargets"] for i in policy["wrr"]["items"]} == {
        ip: {"externalEndpoints": [ip]} for ip in IPS.values()}
    assert not gcp_fake.violations  # every request matched the published discovery document
    # Dropping the check is a change, and the record is rewritten without it.
    assert gcp_backend(gcp_fake).apply(SPEC, p).changed is True
    assert "healthCheck" not in gcp_fake.rrsets[(GCP_PROJECT, GCP_ZONE)][(RECORD, "A")]["routingPolicy"]


def test_gcp_fake_rejects_schema_invalid_requests(gcp_fake: FakeCloudDns) -> None:
    svc = gcp_backend(gcp_fake)._service()
    from googleapiclient.errors import HttpError

    bad_bodies = [
        {"additions": [{"name": RECORD, "type": "A", "ttl": "thirty", "rrdatas": ["127.0.1.1"]}]},
        {"additions": [{"name": RECORD, "type": "A", "ttl": 30, "routingPolicy": {"wrr": {"itemz": []}}}]},
        {"additions": [{"name": RECORD, "type": "A", "ttl": 30, "rrdatas": ["127.0.1.1"], "kind": "x"}]},
    ]
    for body in bad_bodies:
        with pytest.raises(HttpError) as err:
            svc.changes().create(project=GCP_PROJECT, managedZone=GCP_ZONE, body=body).execute()
        assert err.value.resp.status == 400
    problems = list(gcp_fake.violations)
    gcp_fake.violations.clear()
    assert any("expected integer" in p for p in problems)
    assert any("itemz: unknown property" in p for p in problems)
    assert any("kind: read-only" in p for p in problems)


# ------------------------------------------------------------------ only our records
# Each backend marks what it creates and deletes only what it marked: a record someone else
# keeps beside ours survives our apply and our delete.

FOREIGN_IP = "192.0.2.10"


def _pdns_patch(pdns: PowerDnsServer, *rrsets: dict) -> None:
    url = f"{pdns.api_url}/api/v1/servers/localhost/zones/{pdns.zone}"
    json_request("PATCH", url, {"X-API-Key": pdns.api_key}, {"rrsets": list(rrsets)})


def _pdns_rrsets(pdns: PowerDnsServer) -> dict[tuple[str, str], list[str]]:
    url = f"{pdns.api_url}/api/v1/servers/localhost/zones/{pdns.zone}"
    _, zone = json_request("GET", url, {"X-API-Key": pdns.api_key})
    return {(r["name"], r["type"]): [x["content"] for x in r["records"]] for r in zone["rrsets"]}


def test_powerdns_keeps_foreign_records_and_refuses_a_foreign_lua(pdns: PowerDnsServer) -> None:
    backend = dataclasses.replace(pdns_backend(pdns), call_timeout_s=5)  # as the controller builds it
    name = "owned." + ZONE
    spec = RecordSpec(name, 30, IPS)
    foreign_lua = 'A "ifportup(443, {\'192.0.2.10\'})"'
    _pdns_patch(pdns,
                {"name": name, "type": "TXT", "ttl": 60, "changetype": "REPLACE",
                 "records": [{"content": '"site-verification=abc"', "disabled": False}]},
                {"name": "legacy." + name, "type": "A", "ttl": 60, "changetype": "REPLACE",
                 "records": [{"content": FOREIGN_IP, "disabled": False}]},
                {"name": "other." + ZONE, "type": "LUA", "ttl": 60, "changetype": "REPLACE",
                 "records": [{"content": foreign_lua, "disabled": False}]})  # fmt: skip
    foreign = {k: v for k, v in _pdns_rrsets(pdns).items() if k[1] != "SOA"}
    assert backend.apply(spec, plan(PlanInput(AAA))).changed is True
    assert backend.apply(spec, plan(PlanInput(AAA, health={"aws": False}))).changed is True
    rrsets = _pdns_rrsets(pdns)
    assert rrsets[(name, "LUA")] == ['A "pickwrandom({{100,\'127.0.1.2\'}})"']
    assert {k: rrsets[k] for k in foreign} == foreign
    assert [t.to_text() for t in pdns.resolver().resolve(name, "TXT")] == ['"site-verification=abc"']
    backend.delete(spec)
    rrsets = _pdns_rrsets(pdns)
    assert (name, "LUA") not in rrsets and {k: rrsets[k] for k in foreign} == foreign
    # A LUA record at our name that we did not write is neither overwritten nor deleted.
    _pdns_patch(pdns, {"name": name, "type": "LUA", "ttl": 60, "changetype": "REPLACE",
                       "records": [{"content": foreign_lua, "disabled": False}]})  # fmt: skip
    with pytest.raises(DnsBackendError, match="did not write"):
        backend.apply(spec, plan(PlanInput(AAA)))
    assert backend.read(spec) is None
    backend.delete(spec)
    assert _pdns_rrsets(pdns)[(name, "LUA")] == [foreign_lua]
    for n, t in [(name, "LUA"), (name, "TXT"), ("legacy." + name, "A"), ("other." + ZONE, "LUA")]:
        _pdns_patch(pdns, {"name": n, "type": t, "changetype": "DELETE"})


def test_powerdns_adopts_its_unmarked_record_from_earlier_versions(pdns: PowerDnsServer) -> None:
    backend = pdns_backend(pdns)
    spec = RecordSpec("earlier." + ZONE, 30, IPS)
    _pdns_patch(pdns, {"name": spec.name, "type": "LUA", "ttl": 30, "changetype": "REPLACE",
                       "records": [{"content": 'A "pickwrandom({{100,\'127.0.1.1\'}})"', "disabled": False}]})  # fmt: skip
    assert backend.read(spec) == {"default": {"aws": 100}}
    assert backend.apply(spec, plan(PlanInput(AAA))).changed is True  # same answer, now marked
    assert backend.apply(spec, plan(PlanInput(AAA))).changed is False
    backend.delete(spec)
    assert (spec.name, "LUA") not in _pdns_rrsets(pdns)


def _r53_upsert(client: object, zone_id: str, *sets: dict) -> None:
    client.change_resource_record_sets(  # type: ignore[attr-defined]
        HostedZoneId=zone_id, ChangeBatch={"Changes": [{"Action": "UPSERT", "ResourceRecordSet": s} for s in sets]})


def test_route53_keeps_foreign_sets_and_renames_its_earlier_ones(aws_env: str, hosted_zone: str) -> None:
    client = boto3.client("route53", endpoint_url=aws_env)
    foreign = [
        {"Name": RECORD, "Type": "A", "SetIdentifier": "onprem", "Weight": 10, "TTL": 60,
         "ResourceRecords": [{"Value": FOREIGN_IP}]},
        {"Name": "other." + RECORD, "Type": "A", "SetIdentifier": "blue", "Weight": 1, "TTL": 60,
         "ResourceRecords": [{"Value": "192.0.2.20"}]},
        {"Name": RECORD, "Type": "TXT", "TTL": 60, "ResourceRecords": [{"Value": '"site-verification=abc"'}]},
    ]  # fmt: skip
    # What an earlier version wrote: weighted sets named after the clouds, no prefix.
    earlier = [{"Name": RECORD, "Type": "A", "SetIdentifier": c, "Weight": 85, "TTL": 30,
                "ResourceRecords": [{"Value": ip}]} for c, ip in IPS.items()]  # fmt: skip
    _r53_upsert(client, hosted_zone, *foreign, *earlier)

    def theirs() -> list[tuple[str, str, str]]:
        sets = client.list_resource_record_sets(HostedZoneId=hosted_zone)["ResourceRecordSets"]
        return sorted((s["Name"], s["Type"], s.get("SetIdentifier", "")) for s in sets
                      if s["Type"] != "SOA" and s["Type"] != "NS" and not s.get("SetIdentifier", "").startswith(OWN_PREFIX))

    backend = Route53Backend(ZONE, hosted_zone_id=hosted_zone, call_timeout_s=5)
    assert backend.read(SPEC) == {"default": {"aws": 85, "azure": 85, "gcp": 85}}  # the earlier sets are ours
    p = plan(PlanInput(AAA, default_weight=70), scale=255)
    assert backend.apply(SPEC, p).changed is True
    expected = sorted([(RECORD, "A", "onprem"), ("other." + RECORD, "A", "blue"), (RECORD, "TXT", "")])
    assert theirs() == expected  # the earlier unprefixed sets were renamed, the foreign ones kept
    assert backend.read(SPEC) == {"default": {"aws": 179, "azure": 38, "gcp": 38}}
    assert backend.apply(SPEC, p).changed is False
    backend.delete(SPEC)
    assert backend.read(SPEC) is None
    assert theirs() == expected


def _tm_put(fake: FakeTrafficManager, profile: str, body: dict) -> int:
    url = (f"{fake.url}/subscriptions/{AZ_SUB}/resourceGroups/rg-edge/providers/Microsoft.Network/"
           f"trafficmanagerprofiles/{profile}?api-version=2022-04-01")  # fmt: skip
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="PUT")
    req.add_header("Authorization", "Bearer x")
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=5) as resp:
        return resp.status


def _writable(profile: dict) -> dict:
    """A stored profile as a PUT body (the read-only parts the service adds left out)."""
    props = json.loads(json.dumps(profile["properties"]))
    props["dnsConfig"].pop("fqdn", None)
    props["monitorConfig"].pop("profileMonitorStatus", None)
    for ep in props["endpoints"]:
        ep.pop("id", None)
        ep["properties"].pop("endpointMonitorStatus", None)
    return {"location": "global", "tags": dict(profile.get("tags", {})), "properties": props}


def test_azure_keeps_foreign_profiles_and_endpoints(azure_fake: FakeTrafficManager) -> None:
    backend = dataclasses.replace(tm_backend(azure_fake), call_timeout_s=5)
    key = (AZ_SUB, "rg-edge")
    # Someone else's profile under a name like ours (and a relative DNS name of its own).
    theirs = _writable({"tags": {"team": "legacy"}, "properties": {
        "profileStatus": "Enabled", "trafficRoutingMethod": "Weighted",
        "dnsConfig": {"relativeName": "someone-else", "ttl": 60},
        "monitorConfig": {"protocol": "HTTP", "port": 80, "path": "/"},
        "endpoints": [{"name": "x", "type": EXTERNAL, "properties": {"target": FOREIGN_IP, "weight": 1,
                                                                     "endpointStatus": "Enabled"}}]}})  # fmt: skip
    assert _tm_put(azure_fake, "api-tm-legacy", theirs) == 201
    backend.apply(SPEC, plan(PlanInput(AAA, RULES)))
    assert {k[2] for k in azure_fake.profiles} == {"api-tm", "api-tm-americas", "api-tm-europe-africa", "api-tm-geo",
                                                  "api-tm-legacy"}  # fmt: skip
    ours = azure_fake.profiles[(*key, "api-tm")]
    assert ours["tags"]["edgefabric-record"] == RECORD and ours["tags"]["edgefabric-endpoints"] == "aws,azure,gcp"
    # Someone adds an endpoint of theirs to our default profile.
    body = _writable(ours)
    body["properties"]["endpoints"].append({"name": "onprem", "type": EXTERNAL, "properties": {
        "target": FOREIGN_IP, "weight": 5, "endpointStatus": "Enabled"}})  # fmt: skip
    assert _tm_put(azure_fake, "api-tm", body) == 200
    assert backend.read(SPEC)["default"] == {"aws": 100}  # our weights only
    # Rules removed and a cloud down: our children go, their profile and endpoint stay.
    assert backend.apply(SPEC, plan(PlanInput(AAA, health={"aws": False}))).changed is True
    assert {k[2] for k in azure_fake.profiles} == {"api-tm", "api-tm-legacy"}
    eps = {e["name"]: e["properties"] for e in azure_fake.profiles[(*key, "api-tm")]["properties"]["endpoints"]}
    assert set(eps) == {"aws", "azure", "gcp", "onprem"} and eps["onprem"]["target"] == FOREIGN_IP
    assert backend.apply(SPEC, plan(PlanInput(AAA, health={"aws": False}))).changed is False
    # Delete: our endpoints and tags leave; the profile stays for the endpoint someone added.
    backend.delete(SPEC)
    assert {k[2] for k in azure_fake.profiles} == {"api-tm", "api-tm-legacy"}
    left = azure_fake.profiles[(*key, "api-tm")]
    assert [e["name"] for e in left["properties"]["endpoints"]] == ["onprem"]
    assert "edgefabric-record" not in left["tags"] and left["tags"]["edgefabric-released"] == RECORD
    assert backend.read(SPEC) is None
    assert azure_fake.profiles[(*key, "api-tm-legacy")]["properties"]["dnsConfig"]["relativeName"] == "someone-else"
    backend.delete(SPEC)
    # A profile of someone else's holding our very name is not overwritten.
    with pytest.raises(DnsBackendError, match="not edgefabric's"):
        dataclasses.replace(backend, profile_name="api-tm-legacy").apply(SPEC, plan(PlanInput(AAA)))


def test_azure_adopts_its_untagged_profiles_from_earlier_versions(azure_fake: FakeTrafficManager) -> None:
    backend = tm_backend(azure_fake)
    backend.apply(SPEC, plan(PlanInput(AAA, RULES)))
    for name in ("api-tm", "api-tm-americas", "api-tm-europe-africa", "api-tm-geo"):  # as an earlier version left them
        prof = azure_fake.profiles[(AZ_SUB, "rg-edge", name)]
        prof["tags"] = {"managed-by": "edgefabric"}
    assert backend.read(SPEC) is not None
    backend.delete(SPEC)  # the children are ours because our geo profile points at them
    assert azure_fake.profiles == {}


def test_gcp_keeps_foreign_record_sets(gcp_fake: FakeCloudDns) -> None:
    backend = dataclasses.replace(gcp_backend(gcp_fake), call_timeout_s=5)
    svc = backend._service()
    foreign = [
        {"name": "legacy." + RECORD, "type": "A", "ttl": 60,
         "routingPolicy": {"wrr": {"items": [{"weight": 1.0, "rrdatas": [FOREIGN_IP]}]}}},
        {"name": RECORD, "type": "TXT", "ttl": 60, "rrdatas": ['"site-verification=abc"']},
    ]  # fmt: skip
    svc.changes().create(project=GCP_PROJECT, managedZone=GCP_ZONE, body={"additions": foreign}).execute()
    backend.apply(SPEC, plan(PlanInput(AAA, RULES)))
    assert set(gcp_fake.rrsets[(GCP_PROJECT, GCP_ZONE)]) == {(RECORD, "A"), ("americas." + RECORD, "A"), ("europe-africa." + RECORD, "A"),
                           ("legacy." + RECORD, "A"), (RECORD, "TXT")}  # fmt: skip
    backend.apply(SPEC, plan(PlanInput(AAA)))  # rules removed: only our rule answers go
    assert set(gcp_fake.rrsets[(GCP_PROJECT, GCP_ZONE)]) == {(RECORD, "A"), ("legacy." + RECORD, "A"), (RECORD, "TXT")}
    assert backend.read(SPEC) == {"default": {"aws": 100}}
    backend.delete(SPEC)
    stored = gcp_fake.rrsets[(GCP_PROJECT, GCP_ZONE)]
    assert set(stored) == {("legacy." + RECORD, "A"), (RECORD, "TXT")}
    assert stored[("legacy." + RECORD, "A")]["routingPolicy"]["wrr"]["items"][0]["rrdatas"] == [FOREIGN_IP]


# ------------------------------------------------------------------ partial failure


def test_partial_failure_is_reported_per_backend(pdns: PowerDnsServer) -> None:
    good = pdns_backend(pdns)
    dead = PowerDnsBackend("http://127.0.0.1:9", pdns.api_key, pdns.zone)  # discard port: refused
    dead.name = "powerdns-dead"
    spec = RecordSpec("partial." + ZONE, 30, IPS)
    outcomes = apply_all([dead, good], spec, lambda scale: plan(PlanInput(AAA), scale))
    by = {o.backend: o for o in outcomes}
    assert by["powerdns"].ok and by["powerdns"].changed
    assert not by["powerdns-dead"].ok and "failed after" in (by["powerdns-dead"].error or "")
    assert good.read(spec) == {"default": {"aws": 100}}
    good.delete(spec)


# ------------------------------------------------------------------ retries


def test_retry_backs_off_on_transient_errors_only() -> None:
    from edgefabric.traffic.dns.base import DnsBackendError, TransientError, retry

    calls: list[int] = []
    sleeps: list[float] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise TransientError("HTTP 503")
        return "ok"

    assert retry(flaky, "op", sleep=sleeps.append) == "ok"
    assert len(calls) == 3 and len(sleeps) == 2 and sleeps[0] <= 0.2 and sleeps[1] <= 0.4

    def always() -> None:
        raise TransientError("HTTP 429")

    with pytest.raises(DnsBackendError, match="failed after 4 attempts"):
        retry(always, "op", sleep=sleeps.append)

    def fatal() -> None:
        calls.append(1)
        raise DnsBackendError("HTTP 422: bad record")

    before = len(calls)
    with pytest.raises(DnsBackendError, match="422"):
        retry(fatal, "op", sleep=sleeps.append)
    assert len(calls) == before + 1  # not retried


# ------------------------------------------------------------------ hostname ingress
#
# An AWS load balancer reports a hostname. Every backend answers with A records for the
# addresses the name resolves to (here: in the local PowerDNS), aws's share split evenly
# between them; Traffic Manager alone takes the name itself, as an endpoint target.

ELB_IPS = ("127.0.1.11", "127.0.1.12")


@pytest.fixture
def elb(elb_names: ElbNames) -> str:
    return elb_names.add("k8s-edgefabric-api", list(reversed(ELB_IPS)))


def resolved(elb: str, elb_names: ElbNames, name: str = RECORD, **over: object) -> RecordSpec:
    """SPEC with the aws endpoint at the load balancer's name, resolved the way the spec does."""
    addresses = resolve_a(elb, elb_names.resolver, 2.0)
    return dataclasses.replace(SPEC, name=name, endpoints={**IPS, "aws": elb}, addresses={"aws": addresses}, **over)


def test_resolve_a_follows_the_name_and_says_when_it_does_not_resolve(elb: str, elb_names: ElbNames) -> None:
    assert resolve_a(elb, elb_names.resolver, 2.0) == ELB_IPS  # sorted
    assert resolve_a("gone.elb." + ZONE, elb_names.resolver, 2.0) == ()
    elb_names.set(elb, ["127.0.1.13"])
    assert resolve_a(elb, elb_names.resolver, 2.0) == ("127.0.1.13",)


def test_powerdns_answers_each_resolved_address_with_an_even_part(pdns: PowerDnsServer, elb: str,
                                                                  elb_names: ElbNames) -> None:  # fmt: skip
    backend = pdns_backend(pdns)
    spec = resolved(elb, elb_names, "elb-shares." + ZONE, ttl=1)
    p = plan(PlanInput(AAA, default_weight=60))  # 60 / 20 / 20: aws's 60 is 30 + 30
    assert backend.apply(spec, p).changed is True
    assert backend.apply(spec, p).changed is False
    assert backend.read(spec) == {"default": {"aws": 60, "azure": 20, "gcp": 20}}
    counts = answer_counts(pdns, spec.name, 2000)
    assert set(counts) == {*ELB_IPS, IPS["azure"], IPS["gcp"]}  # A records only, never the name
    for ip, share in ((ELB_IPS[0], 30), (ELB_IPS[1], 30), (IPS["azure"], 20), (IPS["gcp"], 20)):
        assert abs(100 * counts[ip] / 2000 - share) <= 5, (ip, counts)
    # The load balancer moves: the next apply follows the name.
    elb_names.set(elb, ["127.0.1.13"])
    moved = resolved(elb, elb_names, spec.name, ttl=1)
    assert backend.apply(moved, p).changed is True
    assert backend.read(moved) == {"default": {"aws": 60, "azure": 20, "gcp": 20}}
    # The name stops resolving: aws is left out of the answer, which never goes empty.
    elb_names.drop(elb)
    gone = resolved(elb, elb_names, spec.name, ttl=1)
    assert gone.addresses == {"aws": ()}
    backend.apply(gone, p)
    assert backend.read(gone) == {"default": {"azure": 20, "gcp": 20}}
    with pytest.raises(DnsBackendError, match="empty answer"):
        backend.apply(gone, plan(PlanInput(AAA, default_weight=100)))  # all of it on aws
    assert backend.read(gone) == {"default": {"azure": 20, "gcp": 20}}  # the last answer stays
    backend.delete(gone)


def test_route53_weighted_set_per_resolved_address(aws_env: str, hosted_zone: str, elb: str,
                                                   elb_names: ElbNames) -> None:  # fmt: skip
    client = boto3.client("route53", endpoint_url=aws_env)
    hc = client.create_health_check(
        CallerReference=f"hc-elb-{time.monotonic_ns()}",
        HealthCheckConfig={"FullyQualifiedDomainName": elb, "Port": 8080, "Type": "HTTP",
                           "ResourcePath": "/health", "RequestInterval": 10, "FailureThreshold": 3},
    )["HealthCheck"]["Id"]  # fmt: skip
    spec = resolved(elb, elb_names, health_check_ids={"aws": hc})
    backend = Route53Backend(ZONE, hosted_zone_id=hosted_zone)
    p = plan(PlanInput(AAA, default_weight=70), scale=255)  # 179 / 38 / 38
    assert backend.apply(spec, p).changed is True
    assert backend.apply(spec, p).changed is False
    sets = client.list_resource_record_sets(HostedZoneId=hosted_zone)["ResourceRecordSets"]
    weighted = {s["SetIdentifier"].removeprefix(OWN_PREFIX): s for s in sets if s.get("SetIdentifier")}
    assert {k: (v["Type"], v["Weight"], [r["Value"] for r in v["ResourceRecords"]]) for k, v in weighted.items()} == {
        f"aws/{ELB_IPS[0]}": ("A", 90, [ELB_IPS[0]]), f"aws/{ELB_IPS[1]}": ("A", 89, [ELB_IPS[1]]),
        "azure": ("A", 38, [IPS["azure"]]), "gcp": ("A", 38, [IPS["gcp"]])}  # fmt: skip
    assert weighted[f"aws/{ELB_IPS[0]}"]["HealthCheckId"] == weighted[f"aws/{ELB_IPS[1]}"]["HealthCheckId"] == hc
    assert backend.read(spec) == {"default": {"aws": 179, "azure": 38, "gcp": 38}}
    # The name stops resolving: aws's sets go, in the same batch as the new weights.
    elb_names.drop(elb)
    gone = resolved(elb, elb_names, health_check_ids={"aws": hc})
    assert backend.apply(gone, p).changed is True
    names = {s["SetIdentifier"].removeprefix(OWN_PREFIX)
             for s in client.list_resource_record_sets(HostedZoneId=hosted_zone)["ResourceRecordSets"]
             if s.get("SetIdentifier")}  # fmt: skip
    assert names == {"azure", "gcp"}
    # All the weight on a cloud without an address would be all-zero sets (every one served): refused.
    with pytest.raises(DnsBackendError, match="empty answer"):
        backend.apply(gone, plan(PlanInput(AAA, default_weight=100), scale=255))
    assert backend.read(gone) == {"default": {"azure": 38, "gcp": 38}}
    backend.delete(gone)
    assert backend.read(gone) is None


def test_azure_takes_the_name_as_an_external_endpoint_target(azure_fake: FakeTrafficManager, elb: str,
                                                             elb_names: ElbNames) -> None:  # fmt: skip
    backend = tm_backend(azure_fake)
    spec = resolved(elb, elb_names)
    p = plan(PlanInput(AAA, default_weight=60))
    assert backend.apply(spec, p).changed is True
    assert backend.apply(spec, p).changed is False
    props = azure_fake.profiles[(AZ_SUB, "rg-edge", "api-tm")]["properties"]
    targets = {e["name"]: (e["type"], e["properties"]["target"], e["properties"]["weight"]) for e in props["endpoints"]}
    assert targets == {"aws": (EXTERNAL, elb, 60), "azure": (EXTERNAL, IPS["azure"], 20),
                       "gcp": (EXTERNAL, IPS["gcp"], 20)}  # fmt: skip
    assert backend.read(spec) == {"default": {"aws": 60, "azure": 20, "gcp": 20}}
    # Traffic Manager resolves the name itself: nothing to follow when it moves.
    elb_names.set(elb, ["127.0.1.13"])
    assert backend.apply(resolved(elb, elb_names), p).changed is False


def test_gcp_wrr_item_per_resolved_address(gcp_fake: FakeCloudDns, elb: str, elb_names: ElbNames) -> None:
    check = f"https://www.googleapis.com/compute/v1/projects/{GCP_PROJECT}/global/healthChecks/api-check"
    backend = dataclasses.replace(gcp_backend(gcp_fake), health_check=check)
    spec = resolved(elb, elb_names)
    p = plan(PlanInput(AAA, default_weight=60))
    assert backend.apply(spec, p).changed is True
    assert backend.apply(spec, p).changed is False
    rrset = gcp_fake.rrsets[(GCP_PROJECT, GCP_ZONE)][(RECORD, "A")]
    assert rrset["type"] == "A"
    items = {i["rrdatas"][0]: (i["weight"], i["healthCheckedTargets"]) for i in rrset["routingPolicy"]["wrr"]["items"]}
    assert items == {ip: (float(w), {"externalEndpoints": [ip]})
                     for ip, w in ((ELB_IPS[0], 30), (ELB_IPS[1], 30), (IPS["azure"], 20), (IPS["gcp"], 20))}
    assert backend.read(spec) == {"default": {"aws": 60, "azure": 20, "gcp": 20}}
    elb_names.drop(elb)
    gone = resolved(elb, elb_names)
    assert backend.apply(gone, p).changed is True
    assert backend.read(gone) == {"default": {"azure": 20, "gcp": 20}}
    backend.delete(gone)


def test_a_secondary_publishes_under_its_standby_name_only(pdns: PowerDnsServer) -> None:
    """A backend whose zone is delegated from the authority's (edgefabric.config.zones) answers
    at `<first label>.<its zone>`: read, apply, the batch and delete all use that one name, and
    the name itself is left to the authority."""
    zone = "standby." + ZONE
    backend = Secondary(pdns_backend(pdns), zone)
    spec = RecordSpec("stby." + ZONE, 1, IPS)
    other = RecordSpec("stby2." + ZONE, 1, IPS)
    p = plan(PlanInput(AAA, default_weight=80, health={"gcp": False}))
    assert backend.apply(spec, p).changed is True
    assert backend.apply_many([(spec, p), (other, p)]).changed is True  # the batch: only `other` is new
    assert backend.read(spec) == {"default": {"aws": 89, "azure": 11}} == backend.read(other)
    counts = answer_counts(pdns, "stby." + zone, 100)
    assert sum(counts.values()) == 100 and counts[IPS["gcp"]] == 0
    assert pdns_backend(pdns).read(spec) is None  # nothing at the record name itself
    backend.delete(spec)
    backend.delete(other)
    assert backend.read(spec) is None and backend.read(other) is None
