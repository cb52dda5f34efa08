"""WeightedFailoverProvider's CRUD against real PowerDNS and moto's Route53.

The provider methods are called the way the dynamic-provider host calls them
(plain dict props in, CreateResult/DiffResult/... out). The real engine run is
the lead's engine test; here each lifecycle rule is checked directly.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import boto3
import dill
import pytest

from devenv.endpoints import LocalEndpoints
from devenv.powerdns import PowerDnsServer
from edgefabric.dynamic._unknown import UNKNOWN
from edgefabric.dynamic.failover import (
    PROVIDER_VERSION,
    SECRET_OUTPUTS,
    WeightedFailover,
    WeightedFailoverArgs,
    WeightedFailoverProvider,
)
from edgefabric.errors import ConfigError
from edgefabric.traffic.dns.powerdns import PowerDnsBackend
from edgefabric.traffic.dns.route53 import Route53Backend
from edgefabric.traffic.planner import PlanInput, Strategy, plan
from edgefabric.traffic.spec import PENDING_ADDRESS, FailoverSpec
from tests.integration.conftest import ZONE, ElbNames, answer_counts


def props(eps: LocalEndpoints, backends: dict[str, Any], record: str, **over: Any) -> dict[str, Any]:
    base = {
        "record_name": record,
        "ttl": 5,
        "endpoints": {c: {"address": eps.address(c)} for c in eps.clouds()},
        "health_check": {"interval_s": 1, "timeout_s": 0.5, "failure_threshold": 2, "success_threshold": 1,
                         "recovery_hold_down_s": 60,
                         "check": {"type": "http", "path": "/health", "expected_status": 200, "port": eps.port}},
        "strategy": {"order": ["aws", "azure", "gcp"], "replication": "active-active", "failover": "automatic"},
        "routing": {"rules": [], "default_weight": 60},
        "backends": backends,
        "health_check_ids": {},
        "probe_round_gap_s": 0.05,
        "provider_version": PROVIDER_VERSION,
    }  # fmt: skip
    base.update(over)
    return base


def pdns_backends(pdns: PowerDnsServer) -> dict[str, Any]:
    return {"powerdns": {"api_url": pdns.api_url, "api_key_ref": "env:TEST_PDNS_KEY", "zone": ZONE,
                         "server_id": "localhost"}}  # fmt: skip


@pytest.fixture
def pdns_key(pdns: PowerDnsServer, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("TEST_PDNS_KEY", pdns.api_key)
    return pdns.api_key


def test_lifecycle_against_powerdns(pdns: PowerDnsServer, pdns_key: str, endpoints: LocalEndpoints) -> None:
    prov = WeightedFailoverProvider()
    record = "provider." + ZONE
    news = props(endpoints, pdns_backends(pdns), record)
    assert prov.check({}, news).failures == []

    created = prov.create(news)
    outs = created.outs
    assert created.id == record
    assert outs["plan"]["answers"]["default"]["weights"] == {"aws": 60, "azure": 20, "gcp": 20}
    assert outs["backend_status"] == {"powerdns": "ok"}
    assert outs["record_ids"]["powerdns"] == [f"powerdns:localhost/{ZONE}/{record}/LUA"]
    assert outs["health"]["aws"]["healthy"] is True and outs["health"]["aws"]["last_probe_at"]
    backend = PowerDnsBackend(pdns.api_url, pdns_key, ZONE)
    spec = FailoverSpec.from_inputs(news).record_spec()
    assert backend.read(spec) == {"default": {"aws": 60, "azure": 20, "gcp": 20}}

    # create is idempotent: a second create (crash before state was saved) adopts.
    again = prov.create(news)
    assert again.outs["plan"] == outs["plan"]

    # Unchanged world, unchanged inputs: no diff.
    d = prov.diff(record, outs, news)
    assert d.changes is False and d.replaces == []

    # Health change: gcp goes away -> the preview diff shows a change, without replace.
    endpoints.stop("gcp")
    d = prov.diff(record, outs, news)
    assert d.changes is True and d.replaces == []
    updated = prov.update(record, outs, news).outs
    assert updated["plan"]["answers"]["default"]["weights"] == {"aws": 75, "azure": 25, "gcp": 0}
    assert updated["health"]["gcp"]["healthy"] is False
    assert updated["last_change_at"] >= outs["last_change_at"]
    assert backend.read(spec) == {"default": {"aws": 75, "azure": 25}}
    # ... and then a stable world is again no diff (gcp still down, evidence carried).
    assert prov.diff(record, updated, news).changes is False

    # Drift: an out-of-band edit is seen by read (refresh) and the next diff reports it.
    backend.apply(spec, plan(PlanInput(Strategy(("aws", "azure", "gcp")), default_weight=100)))
    refreshed = prov.read(record, updated).outs
    assert refreshed["published"] == {"powerdns": {"default": {"aws": 100}}}
    assert prov.diff(record, refreshed, news).changes is True
    fixed = prov.update(record, refreshed, news).outs
    assert prov.read(record, fixed).outs["published"] == {"powerdns": {"default": {"aws": 75, "azure": 25}}}

    # Input diffs: ttl updates in place; record_name replaces.
    assert prov.diff(record, fixed, {**news, "ttl": 10}).replaces == []
    assert prov.diff(record, fixed, {**news, "ttl": 10}).changes is True
    assert prov.diff(record, fixed, {**news, "record_name": "other." + ZONE}).replaces == ["record_name"]
    # Preview with unknown inputs tolerates them.
    unknown = prov.diff(record, fixed, {**news, "endpoints": UNKNOWN})
    assert unknown.changes is True and unknown.replaces == []
    one_unknown = {**news["endpoints"], "gcp": {"address": UNKNOWN}}  # one address not known yet
    assert prov.diff(record, fixed, {**news, "endpoints": one_unknown}).changes is True
    assert prov.check({}, {**news, "endpoints": one_unknown}).failures == []

    # Delete removes the record; deleting again succeeds.
    prov.delete(record, fixed)
    assert backend.read(spec) is None
    prov.delete(record, fixed)

    # Credentials appear nowhere in outputs or in the pickled provider.
    for o in (outs, updated, refreshed, fixed):
        assert pdns_key not in json.dumps(o)
    assert pdns_key.encode() not in dill.dumps(prov, recurse=True)


def test_check_rejects_bad_inputs_naming_the_key(endpoints: LocalEndpoints, pdns: PowerDnsServer) -> None:
    prov = WeightedFailoverProvider()
    bad = props(endpoints, pdns_backends(pdns), "x." + ZONE, ttl=0)
    failures = prov.check({}, bad).failures
    assert [f.property for f in failures] == ["ttl"] and failures[0].reason.startswith("WeightedFailover:ttl = 0: ")
    bad = props(endpoints, {"bind": {}}, "x." + ZONE)
    (failure,) = prov.check({}, bad).failures
    assert failure.property == "backends" and "backends.bind" in failure.reason and "unknown key" in failure.reason
    bad = props(endpoints, pdns_backends(pdns), "x." + ZONE, routing={"rules": [
        {"name": "eu", "regions": ["europe"], "cloud": "aws", "weight": 300}]})  # fmt: skip
    (failure,) = prov.check({}, bad).failures
    assert failure.property == "routing" and "routing.rules[0].weight = 300" in failure.reason
    # Every problem is reported at once, each on the input it names.
    many = props(endpoints, pdns_backends(pdns), "Not A Name", ttl=0,
                 strategy={"order": ["aws", "oracle"]})  # fmt: skip
    assert sorted(f.property for f in prov.check({}, many).failures) == ["record_name", "strategy", "ttl"]
    # A rule for a cloud the strategy cannot serve: the planner's own rule, on `routing`.
    one_cloud = props(endpoints, pdns_backends(pdns), "x." + ZONE,
                      endpoints={"aws": {"address": endpoints.address("aws")}}, strategy={"order": ["aws"]},
                      routing={"rules": [{"name": "eu", "regions": ["europe"], "cloud": "gcp", "weight": 70}]})
    (failure,) = prov.check({}, one_cloud).failures
    assert failure.property == "routing" and "routing.rules[0].cloud = 'gcp'" in failure.reason
    # The program's placeholder for an address it only knows as an Output never passes.
    pending = props(endpoints, pdns_backends(pdns), "x." + ZONE,
                    endpoints={c: {"address": PENDING_ADDRESS} for c in endpoints.clouds()})
    assert {f.property for f in prov.check({}, pending).failures} == {"endpoints"}
    with pytest.raises(ConfigError, match=r"endpoints\.aws\.address = '0\.0\.0\.0'"):
        prov.create(pending)
    # Unknowns during preview are not errors.
    assert prov.check({}, {**bad, "endpoints": UNKNOWN}).failures == []


def test_missing_secret_is_a_clear_error(endpoints: LocalEndpoints, pdns: PowerDnsServer,
                                         monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.delenv("TEST_PDNS_KEY", raising=False)
    with pytest.raises(ConfigError, match=r"dns\.backends\.powerdns\.apiKeyRef = 'env:TEST_PDNS_KEY': "
                                          r"environment variable TEST_PDNS_KEY is not set"):
        WeightedFailoverProvider().create(props(endpoints, pdns_backends(pdns), "x." + ZONE))


def test_secret_passed_as_input_is_only_a_secret_output(endpoints: LocalEndpoints, pdns: PowerDnsServer) -> None:
    prov = WeightedFailoverProvider()
    backends = {"powerdns": {**pdns_backends(pdns)["powerdns"], "api_key_ref": "config:powerdnsApiKey"}}
    news = props(endpoints, backends, "secret." + ZONE, secrets={"config:powerdnsApiKey": pdns.api_key})
    outs = prov.create(news).outs
    # WeightedFailover marks these additional_secret_outputs: the backends' keys, and the lease's kubeconfigs.
    assert SECRET_OUTPUTS == ["secrets", "lease"]
    assert pdns.api_key not in json.dumps({k: v for k, v in outs.items() if k not in SECRET_OUTPUTS})
    prov.delete("secret." + ZONE, outs)  # delete authenticates from the stored (encrypted) secret
    assert pdns.api_key.encode() not in dill.dumps(prov, recurse=True)


def test_lifecycle_against_route53_moto(aws_env: str, endpoints: LocalEndpoints) -> None:
    client = boto3.client("route53", endpoint_url=aws_env)
    # A zone of its own, found by name: moto's zone ids are not Route53's `Z...` ids, which
    # the inputs accept (dns.backends.route53.hostedZoneId), so the provider looks it up.
    zone = f"wf{time.monotonic_ns()}.{ZONE}"
    hosted_zone = client.create_hosted_zone(Name=zone, CallerReference=zone)["HostedZone"]["Id"].rsplit("/", 1)[-1]
    hc = client.create_health_check(
        CallerReference=f"provider-hc-{zone}",
        HealthCheckConfig={"IPAddress": endpoints.address("aws"), "Port": endpoints.port, "Type": "HTTP",
                           "ResourcePath": "/health", "RequestInterval": 10, "FailureThreshold": 2},
    )["HealthCheck"]["Id"]  # fmt: skip
    prov = WeightedFailoverProvider()
    record = "r53." + zone
    news = props(
        endpoints,
        {"route53": {"zone_name": zone, "health_check_ids": True}},
        record,
        health_check_ids={"aws": hc},
        routing={"rules": [{"name": "americas", "regions": ["north-america"], "cloud": "aws", "weight": 70}],
                 "default_weight": 100},
    )  # fmt: skip
    outs = prov.create(news).outs
    assert outs["backend_status"] == {"route53": "ok"}
    assert any(i.endswith("/default") for i in outs["record_ids"]["route53"])
    spec = FailoverSpec.from_inputs(news).record_spec()
    backend = Route53Backend(zone, hosted_zone_id=hosted_zone)
    assert backend.read(spec) == {"default": {"aws": 255}, "americas": {"aws": 179, "azure": 38, "gcp": 38}}
    assert prov.diff(record, outs, news).changes is False
    endpoints.stop("aws")
    assert prov.diff(record, outs, news).changes is True
    updated = prov.update(record, outs, news).outs
    assert updated["plan"]["answers"]["americas"]["weights"] == {"aws": 0, "azure": 50, "gcp": 50}
    assert backend.read(spec) == {"default": {"azure": 255}, "americas": {"azure": 128, "gcp": 127}}
    refreshed = prov.read(record, updated).outs
    assert refreshed["published"]["route53"]["americas"] == {"azure": 128, "gcp": 127}
    assert prov.diff(record, refreshed, news).changes is False
    prov.delete(record, refreshed)
    assert backend.read(spec) is None
    for o in (outs, updated, refreshed):
        assert "testing-secret-key" not in json.dumps(o)
    assert b"testing-secret-key" not in dill.dumps(prov, recurse=True)


def test_resource_type_token() -> None:
    assert WeightedFailover._resource_type_name == "dynamic/failover:WeightedFailover"


def test_args_lay_the_outputs_over_the_serialised_spec(endpoints: LocalEndpoints, pdns: PowerDnsServer) -> None:
    # As the program has it (`FailoverSpec.from_config(cfg)`): the addresses are Outputs, pending here.
    pending = props(endpoints, pdns_backends(pdns), "x." + ZONE,
                    endpoints={c: {"address": PENDING_ADDRESS} for c in endpoints.clouds()})
    spec = FailoverSpec.model_validate({k: v for k, v in pending.items() if k in FailoverSpec.model_fields})
    addresses = {c: f"<output {c}>" for c in endpoints.clouds()}  # stand-ins for pulumi Outputs
    inputs = WeightedFailoverArgs(spec, addresses=addresses, health_check_ids={"aws": "<hc>"}).inputs()
    assert {c: ep["address"] for c, ep in inputs["endpoints"].items()} == addresses
    assert inputs["health_check_ids"] == {"aws": "<hc>"}
    assert {k: v for k, v in inputs.items() if k not in ("endpoints", "health_check_ids")} == {
        k: v for k, v in spec.to_inputs().items() if k not in ("endpoints", "health_check_ids")}
    with pytest.raises(ValueError, match="no address for aws, azure, gcp"):
        WeightedFailoverArgs(spec).inputs()
    with pytest.raises(ValueError, match="no gcp_dns backend"):
        WeightedFailoverArgs(spec, addresses=addresses, gcp_health_check="<link>").inputs()


# ------------------------------------------------------------------ hostname ingress


def _with_aws_name(eps: LocalEndpoints, name: str) -> dict[str, Any]:
    return {**{c: {"address": eps.address(c)} for c in eps.clouds()}, "aws": {"address": name}}


def test_hostname_endpoint_is_resolved_probed_at_each_address_and_published(
    pdns: PowerDnsServer, pdns_key: str, endpoints: LocalEndpoints, elb_names: ElbNames, tmp_path: Path
) -> None:
    """An AWS load balancer reports a hostname, never an IP: the aws endpoint is a name that
    (the local PowerDNS standing in for DNS) resolves to two addresses, each with a live
    endpoint. Both are probed; each gets half of aws's share in the A answers."""
    second = LocalEndpoints(tmp_path / "second", endpoints.port, ips={"aws": "127.0.1.4"})
    second.start_all()
    try:
        name = elb_names.add("k8s-edgefabric-api", [endpoints.address("aws"), "127.0.1.4"])
        prov = WeightedFailoverProvider()
        record = "hostname." + ZONE
        news = props(endpoints, pdns_backends(pdns), record, endpoints=_with_aws_name(endpoints, name),
                     resolver=elb_names.resolver)  # fmt: skip
        assert prov.check({}, news).failures == []
        outs = prov.create(news).outs
        assert outs["endpoints"]["aws"] == {"address": name}  # a name stays a name in the state
        assert outs["plan"]["answers"]["default"]["weights"] == {"aws": 60, "azure": 20, "gcp": 20}
        aws = outs["health"]["aws"]
        assert aws["healthy"] is True and "127.0.1.1" in aws["last_detail"] and "127.0.1.4" in aws["last_detail"]
        backend = PowerDnsBackend(pdns.api_url, pdns_key, ZONE)
        spec = FailoverSpec.from_inputs(news).record_spec()
        assert spec.addresses == {"aws": ("127.0.1.1", "127.0.1.4")}
        assert backend.read(spec) == {"default": {"aws": 60, "azure": 20, "gcp": 20}}
        counts = answer_counts(pdns, record, 400)
        assert counts["127.0.1.4"] > 0 and counts["127.0.1.1"] > 0 and counts[name] == 0
        assert prov.diff(record, outs, news).changes is False

        # One of the name's addresses dies: it would get a quarter of the answers, so aws fails.
        second.stop("aws")
        assert prov.diff(record, outs, news).changes is True
        updated = prov.update(record, outs, news).outs
        assert updated["plan"]["answers"]["default"]["weights"] == {"aws": 0, "azure": 50, "gcp": 50}
        assert "127.0.1.4" in updated["health"]["aws"]["last_detail"]
        assert backend.read(spec) == {"default": {"azure": 50, "gcp": 50}}
        prov.delete(record, updated)
        assert backend.read(spec) is None
    finally:
        second.stop_all()


def test_hostname_that_does_not_resolve_is_down_and_never_an_empty_answer(
    pdns: PowerDnsServer, pdns_key: str, endpoints: LocalEndpoints, elb_names: ElbNames
) -> None:
    name = elb_names.add("k8s-edgefabric-api", [endpoints.address("aws")])
    elb_names.drop(name)  # the load balancer is gone; its name with it
    prov = WeightedFailoverProvider()
    record = "unresolved." + ZONE
    news = props(endpoints, pdns_backends(pdns), record, endpoints=_with_aws_name(endpoints, name),
                 resolver=elb_names.resolver)  # fmt: skip
    outs = prov.create(news).outs
    aws = outs["health"]["aws"]
    assert aws["healthy"] is False and f"{name} does not resolve" in aws["last_detail"]
    assert outs["plan"]["answers"]["default"]["weights"] == {"aws": 0, "azure": 50, "gcp": 50}
    backend = PowerDnsBackend(pdns.api_url, pdns_key, ZONE)
    spec = FailoverSpec.from_inputs(news).record_spec()
    assert spec.addresses == {"aws": ()}
    assert backend.read(spec) == {"default": {"azure": 50, "gcp": 50}}
    # Every cloud down (the name gone, the others failing): fail open keeps the configured
    # weights, and the unresolved cloud is left out of the A answers instead of emptying them.
    endpoints.stop("azure")
    endpoints.stop("gcp")
    open_ = prov.update(record, outs, news).outs
    assert open_["fail_open"] is True
    assert backend.read(spec) == {"default": {"azure": 20, "gcp": 20}}
    # Deleting needs no address: the dead name does not stand in the way.
    prov.delete(record, open_)
    assert backend.read(spec) is None


def test_check_accepts_a_hostname_and_names_a_bad_one(endpoints: LocalEndpoints, pdns: PowerDnsServer) -> None:
    prov = WeightedFailoverProvider()
    good = props(endpoints, pdns_backends(pdns), "x." + ZONE,
                 endpoints=_with_aws_name(endpoints, "k8s-api-0a1b2c3d4e5f6a7b.elb.us-east-1.amazonaws.com"))
    assert prov.check({}, good).failures == []
    bad = props(endpoints, pdns_backends(pdns), "x." + ZONE, endpoints=_with_aws_name(endpoints, "lb..elb"))
    (failure,) = prov.check({}, bad).failures
    assert failure.property == "endpoints" and "endpoints.aws.address = 'lb..elb'" in failure.reason
    assert "DNS name" in failure.reason
    bad_resolver = props(endpoints, pdns_backends(pdns), "x." + ZONE, resolver="dns.example.com")
    (failure,) = prov.check({}, bad_resolver).failures
    assert failure.property == "resolver"
