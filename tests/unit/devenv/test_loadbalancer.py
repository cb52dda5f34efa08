"""The local LoadBalancer controller's answers: aws hostnames shaped like an NLB's, IPs from a
per-cluster loopback pool that stay with their Service, and the controller's sync decisions
(against a recording fake of the API, no cluster)."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

import pytest

from devenv.loadbalancer import (
    DEFAULT_POOLS,
    LoadBalancerController,
    PoolExhausted,
    aws_hostname,
    desired_ingress,
    pick_ip,
    scheme_for,
)

NLB = re.compile(
    r"^k8s-[a-z0-9]{1,8}-[a-z0-9]{1,8}-[0-9a-f]{10}-[0-9a-f]{16}\.elb\.[a-z0-9-]+\.amazonaws\.com$"
)


def test_aws_hostname_has_the_nlb_shape_and_a_32_char_lb_name() -> None:
    host = aws_hostname("aws", "edge-gateway", "global-api-gateway", "4f1c-uid", "eu-central-1")
    assert NLB.match(host), host
    assert host.endswith(".elb.eu-central-1.amazonaws.com")
    lb_name = host.split(".")[0].rsplit("-", 1)[0]
    assert len(lb_name) <= 32  # AWS's limit on load balancer names
    assert lb_name.startswith("k8s-edgegate-globalap-")


def test_aws_hostname_is_stable_and_changes_with_identity() -> None:
    a = aws_hostname("aws", "default", "web", "uid-1", "us-east-1")
    assert a == aws_hostname("aws", "default", "web", "uid-1", "us-east-1")
    assert a != aws_hostname("aws", "default", "web", "uid-2", "us-east-1")  # recreated Service
    assert a != aws_hostname("aws2", "default", "web", "uid-1", "us-east-1")  # other cluster
    assert a != aws_hostname("aws", "other", "web", "uid-1", "us-east-1")


def test_schemes_per_flavor() -> None:
    aws = scheme_for("aws", "c1")
    assert aws.uses_hostname and aws.region == "us-east-1"
    assert scheme_for("azure", "c2").pool == ipaddress.ip_network(DEFAULT_POOLS["azure"])
    assert scheme_for("gcp", "c3").pool == ipaddress.ip_network("127.0.3.0/24")
    assert scheme_for("gcp", "c3", pool="127.0.9.0/28").pool == ipaddress.ip_network("127.0.9.0/28")


@pytest.mark.parametrize(
    ("flavor", "pool", "message"),
    [
        ("openstack", None, "unknown"),
        ("azure", "10.0.0.0/24", "not inside 127.0.0.0/8"),
        ("gcp", "127.0.3.0/31", "too small"),
        ("aws", "127.0.5.0/24", "hostname"),
    ],
)
def test_bad_schemes_are_refused(flavor: str, pool: str | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        scheme_for(flavor, "c", pool=pool)


def test_pick_ip_takes_the_lowest_free_host() -> None:
    pool = ipaddress.IPv4Network("127.0.2.0/29")  # hosts .1-.6
    assert pick_ip(pool, []) == "127.0.2.1"
    assert pick_ip(pool, ["127.0.2.1", "127.0.2.3"]) == "127.0.2.2"
    with pytest.raises(PoolExhausted):
        pick_ip(pool, [f"127.0.2.{i}" for i in range(1, 7)])


def test_desired_ingress_keeps_a_current_pool_ip_and_never_shares_one() -> None:
    azure = scheme_for("azure", "az")
    assert desired_ingress(azure, "ns", "a", "u", [], []) == [{"ip": "127.0.2.1", "ipMode": "VIP"}]
    kept = desired_ingress(azure, "ns", "a", "u", [{"ip": "127.0.2.7"}], ["127.0.2.1"])
    assert kept == [{"ip": "127.0.2.7", "ipMode": "VIP"}]
    # Another Service holds .7 already: a fresh address instead of a shared one.
    moved = desired_ingress(azure, "ns", "a", "u", [{"ip": "127.0.2.7"}], ["127.0.2.1", "127.0.2.7"])
    assert moved == [{"ip": "127.0.2.2", "ipMode": "VIP"}]
    # An address outside the pool (someone else's) is replaced.
    assert desired_ingress(azure, "ns", "a", "u", [{"ip": "127.0.3.1"}], [])[0]["ip"] == "127.0.2.1"
    aws = scheme_for("aws", "aws", region="us-west-2")
    (only,) = desired_ingress(aws, "ns", "a", "u", [{"ip": "127.0.2.1"}], [])
    assert set(only) == {"hostname"} and NLB.match(only["hostname"])


class FakeApi:
    """Records status patches; `services` is what a list returns."""

    def __init__(self, services: list[dict[str, Any]]) -> None:
        self.services = services
        self.patches: list[tuple[str, Any]] = []

    def get(self, path: str, **_: Any) -> Any:
        assert path == "/api/v1/services"
        return {"metadata": {"resourceVersion": "42"}, "items": self.services}

    def merge_patch(self, path: str, body: Any) -> Any:
        self.patches.append((path, body))
        return body


def svc(name: str, *, type_: str = "LoadBalancer", ingress: list[dict[str, str]] | None = None,
        created: str = "2026-01-01T00:00:00Z", lb_class: str | None = None) -> dict[str, Any]:  # fmt: skip
    spec: dict[str, Any] = {"type": type_}
    if lb_class:
        spec["loadBalancerClass"] = lb_class
    status = {"loadBalancer": {"ingress": ingress}} if ingress else {}
    return {"metadata": {"namespace": "default", "name": name, "uid": f"uid-{name}", "creationTimestamp": created},
            "spec": spec, "status": status}  # fmt: skip


def test_resync_keeps_existing_ips_and_answers_new_services_with_free_ones() -> None:
    api = FakeApi([
        svc("new", created="2026-01-01T00:00:00Z"),  # older, but .1 is already held by `old`
        svc("old", ingress=[{"ip": "127.0.2.1", "ipMode": "VIP"}], created="2026-01-02T00:00:00Z"),
        svc("plain", type_="ClusterIP"),
        svc("classed", lb_class="example.com/other"),
    ])  # fmt: skip
    ctl = LoadBalancerController(api, scheme_for("azure", "az"))  # type: ignore[arg-type]
    assert ctl.resync() == "42"
    assert api.patches == [
        ("/api/v1/namespaces/default/services/new/status",
         {"status": {"loadBalancer": {"ingress": [{"ip": "127.0.2.2", "ipMode": "VIP"}]}}}),
    ]  # fmt: skip
    assert ctl.assigned == {"default/old": "127.0.2.1", "default/new": "127.0.2.2"}


def test_a_service_that_stops_being_a_load_balancer_loses_its_ingress_and_its_ip() -> None:
    api = FakeApi([])
    ctl = LoadBalancerController(api, scheme_for("gcp", "g"))  # type: ignore[arg-type]
    assert ctl.sync(svc("web"))
    assert ctl.assigned == {"default/web": "127.0.3.1"}
    assert ctl.sync(svc("web", type_="ClusterIP", ingress=[{"ip": "127.0.3.1", "ipMode": "VIP"}]))
    assert api.patches[-1][1] == {"status": {"loadBalancer": {"ingress": None}}}
    assert ctl.assigned == {}
    # Already answered: nothing to write.
    assert not ctl.sync(svc("web", ingress=[{"ip": "127.0.3.1", "ipMode": "VIP"}]))


def test_aws_cluster_writes_a_hostname_only() -> None:
    api = FakeApi([])
    ctl = LoadBalancerController(api, scheme_for("aws", "aws", region="eu-west-1"))  # type: ignore[arg-type]
    assert ctl.sync(svc("web"))
    (entry,) = api.patches[0][1]["status"]["loadBalancer"]["ingress"]
    assert set(entry) == {"hostname"} and entry["hostname"].endswith(".elb.eu-west-1.amazonaws.com")
    assert ctl.assigned == {}
