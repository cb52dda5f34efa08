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
from edgefabric.traffic.dns.azure_tm import AzureTmBackend
from edgefabric.traffic.dns.base import HealthSettings, RecordSpec, apply_all
from edgefabric.traffic.dns.gcp_dns import GcpDnsBackend
from edgefabric.traffic.dns.powerdns import PowerDnsBackend
from edgefabric.traffic.dns.route53 import Route53Backend
from edgefabric.traffic.health import Thresholds
from edgefabric.traffic.planner import PlanInput, RegionRule, Strategy, plan
from tests.fakes.azure_tm import FakeTrafficManager, load_example
from tests.fakes.gcp_dns import FakeCloudDns
from tests.integration.conftest import AZ_SUB, GCP_PROJECT, GCP_ZONE, RECORD, ZONE, answer_counts

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
    assert {k: v["Weight"] for k, v in weighted.items()} == {"aws": 179, "azure": 38, "gcp": 38}
    assert weighted["aws"]["HealthCheckId"] == hc and "HealthCheckId" not in weighted["gcp"]
    assert backend.read(spec) == {"default": {"aws": 179, "azure": 38, "gcp": 38}}


def test_route53_geolocation_for_region_rules(aws_env: str, hosted_zone: str) -> None:
    client = boto3.client("route53", endpoint_url=aws_env)
    backend = Route53Backend(ZONE, hosted_zone_id=hosted_zone)
    p = plan(PlanInput(AAA, RULES, health={"azure": False}), scale=255)
    backend.apply(SPEC, p)
    sets = client.list_resource_record_sets(HostedZoneId=hosted_zone)["ResourceRecordSets"]
    geo = {s["SetIdentifier"]: s for s in sets if s["Name"] == RECORD and "GeoLocation" in s}
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
