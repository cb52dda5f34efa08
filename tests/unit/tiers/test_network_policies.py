"""NetworkPolicies: every namespace denies ingress by default; each service opens exactly the
ports it serves, to the peers that use them (tooling.render, every shipped stack)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from edgefabric.config import Port, StackConfig
from edgefabric.tiers.network_policies import DEFAULT_DENY, Listener, ingress_rules, listeners, policy_specs
from tooling.render import Rendered, provider_name

POLICY = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
TCP = "TCP"


def _ports(rule: dict[str, Any]) -> set[int]:
    assert rule["ports"], "a rule without ports admits every port"
    assert all(p["protocol"] == TCP for p in rule["ports"]), rule
    return {int(p["port"]) for p in rule["ports"]}


# ------------------------------------------------------------------------------- pure logic


def test_a_namespace_denies_every_ingress_unless_a_service_opens_it() -> None:
    specs = policy_specs([])
    assert specs == {DEFAULT_DENY: {"podSelector": {}, "policyTypes": ["Ingress"]}}


def test_an_exposed_service_takes_every_port_from_anywhere() -> None:
    gateway = Listener("api-gateway", (Port(name="http", port=8080), Port(name="https", port=443, target_port=8443)),
                       exposed=True)
    assert ingress_rules(gateway) == [{"ports": [{"protocol": TCP, "port": 8080}, {"protocol": TCP, "port": 8443}]}]


def test_an_internal_service_takes_connections_only_from_its_own_namespace() -> None:
    rules = ingress_rules(Listener("business-logic", (Port(name="http", port=8080), Port(name="grpc", port=9090,
                                                                                          protocol="grpc"))))
    assert rules == [{"from": [{"podSelector": {}}],
                      "ports": [{"protocol": TCP, "port": 8080}, {"protocol": TCP, "port": 9090}]}]


def test_mqtt_listeners_take_devices_from_anywhere_and_metrics_any_namespace() -> None:
    broker = Listener("sensor-ingest", (Port(name="mqtt", port=1883, protocol="mqtt"),
                                        Port(name="metrics", port=9100),
                                        Port(name="admin", port=8080)))
    assert ingress_rules(broker) == [
        {"ports": [{"protocol": TCP, "port": 1883}]},
        {"from": [{"namespaceSelector": {}}], "ports": [{"protocol": TCP, "port": 9100}]},
        {"from": [{"podSelector": {}}], "ports": [{"protocol": TCP, "port": 8080}]},
    ]


def test_a_container_port_two_ports_share_is_opened_once_by_the_widest_rule() -> None:
    # mqtt on 1883 and a tcp alias of it: 1883 is open from anywhere, and no rule is left empty
    # (a rule without ports would admit every port).
    shared = Listener("broker", (Port(name="mqtt", port=1883, protocol="mqtt"),
                                 Port(name="alt", port=11883, target_port=1883, protocol="tcp")))
    assert ingress_rules(shared) == [{"ports": [{"protocol": TCP, "port": 1883}]}]


def test_listeners_mark_the_exposed_services_by_name() -> None:
    class Svc:
        def __init__(self, name: str) -> None:
            self.name, self.ports = name, [Port(name="http", port=8080)]

    got = listeners([Svc("gw"), Svc("cache")], exposed=["gw"])
    assert [(x.app, x.exposed) for x in got] == [("gw", True), ("cache", False)]
    assert set(policy_specs(got)) == {DEFAULT_DENY, "allow-gw", "allow-cache"}


# --------------------------------------------------------------------- every shipped stack


Where = tuple[str, str]  # (provider name: which cluster, namespace)


def _by_namespace(rendered: Rendered, typ: str) -> dict[Where, list[Any]]:
    out: dict[Where, list[Any]] = defaultdict(list)
    for res in rendered.of_type(typ):
        meta = res.inputs["metadata"]
        out[(provider_name(res.provider), meta.get("namespace", meta["name"]))].append(res)
    return out


def test_every_namespace_has_a_default_deny_policy(stack: tuple[StackConfig, Rendered]) -> None:
    _, rendered = stack
    namespaces = _by_namespace(rendered, "kubernetes:core/v1:Namespace")
    policies = _by_namespace(rendered, POLICY)
    assert namespaces and set(policies) == set(namespaces), rendered.stack
    for where in namespaces:
        deny = [p for p in policies[where] if p.inputs["metadata"]["name"] == DEFAULT_DENY]
        assert len(deny) == 1, where
        assert deny[0].inputs["spec"] == {"podSelector": {}, "policyTypes": ["Ingress"]}, where


def test_each_service_opens_exactly_the_ports_it_serves_to_its_peers(stack: tuple[StackConfig, Rendered]) -> None:
    """Per Deployment one `allow-<name>` policy selecting its pods, opening exactly the ports its
    Service sends it and its `metrics` port; what a LoadBalancer Service sends it is open from anywhere, the rest of a ClusterIP
    Service's ports from its own namespace or (MQTT) from anywhere."""
    _, rendered = stack
    policies = {(w, p.inputs["metadata"]["name"]): p.inputs["spec"]
                for w, ps in _by_namespace(rendered, POLICY).items() for p in ps}
    services = {(w, s.inputs["metadata"]["name"]): s.inputs["spec"]
                for w, ss in _by_namespace(rendered, "kubernetes:core/v1:Service").items() for s in ss}
    allows = 0
    for where, deployments in _by_namespace(rendered, "kubernetes:apps/v1:Deployment").items():
        if where[1] == "kube-system":
            # EKS's cluster-autoscaler runs beside the cloud's own add-ons, in a namespace we
            # do not own and put no default deny in (it would cut coredns off).
            continue
        for dep in deployments:
            name = dep.inputs["metadata"]["name"]
            template = dep.inputs["spec"]["template"]
            ports = [p for c in template["spec"]["containers"] for p in c.get("ports", [])]
            metrics = {int(p["containerPort"]) for p in ports if p.get("name") == "metrics"}
            svc = services.get((where, name), {"ports": []})
            # Exactly what its Service sends it, and its metrics: ports a container adds for its
            # own probes (the kubelet connects from the node, which policies always let through)
            # stay closed.
            served = {int(p["targetPort"]) for p in svc["ports"]} | metrics
            spec = policies.get((where, f"allow-{name}"))
            if not served:
                assert spec is None, (where, name)
                continue
            allows += 1
            assert spec is not None, f"{rendered.stack}: {where} {name}: no allow policy"
            selector = spec["podSelector"]["matchLabels"]
            assert selector.items() <= template["metadata"]["labels"].items(), (where, name)
            rules = spec["ingress"]
            assert set().union(*(_ports(r) for r in rules)) == served, (where, name, rules)
            anywhere = set().union(*(_ports(r) for r in rules if "from" not in r))
            in_namespace = set().union(*(_ports(r) for r in rules if r.get("from") == [{"podSelector": {}}]))
            scraped = set().union(*(_ports(r) for r in rules if r.get("from") == [{"namespaceSelector": {}}]))
            assert metrics <= anywhere | scraped, (where, name, rules)
            for port in svc["ports"]:
                target = int(port["targetPort"])
                if svc.get("type") == "LoadBalancer":
                    assert target in anywhere, (where, name, port)
                else:
                    assert target in anywhere | in_namespace, (where, name, port)
    assert allows == len(policies) - len(_by_namespace(rendered, "kubernetes:core/v1:Namespace"))
