"""NetworkPolicies for a namespace of ours: deny every ingress by default, then open what is used.

Every namespace a tier renders gets a `default-deny-ingress` policy (all pods, no rule: nothing
may connect), and each service in it an `allow-<service>` policy for the traffic it serves:

- a service clients reach from outside the cluster (a LoadBalancer Service: the core's
  api-gateway, a region's gateway and MQTT broker; an edge site's gateway) takes every one of
  its ports from anywhere. A load balancer keeps the client's address (or, with
  `externalTrafficPolicy: Cluster`, replaces it with a node's), so no narrower peer describes
  "from the load balancer" on every cloud;
- MQTT listeners take connections from anywhere too: devices connect to them directly;
- a port named `metrics` takes scrapes from any namespace (Prometheus runs in its own);
- every other port of an internal service takes connections only from pods of its own
  namespace: its tier, which includes that tier's gateway. Traffic between tiers goes through
  the gateways' load-balancer addresses, never straight to another tier's internal services.

Probes need no rule: the kubelet connects from the pod's own node, which NetworkPolicy
implementations always let through (see the Kubernetes NetworkPolicy documentation, "What you
can't do"). Egress is not restricted: services reach the chain, DNS and the other tiers.

Ports are the container ports (what a policy sees after the Service's translation), by number:
Kubernetes resolves a named port per pod, and a number says exactly what is open.

`policy_specs` is pure (the specs as plain dicts); `namespace_policies` registers them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from edgefabric.config import Port

DEFAULT_DENY = "default-deny-ingress"
ALLOW_PREFIX = "allow-"
METRICS = "metrics"  # the port name that takes scrapes
APP_LABEL = "app.kubernetes.io/name"


@dataclass(frozen=True)
class Listener:
    """One service of a namespace, as its policy sees it: its pods' `app.kubernetes.io/name`,
    its ports, and whether clients outside the cluster reach it (a load-balanced entry point)."""

    app: str
    ports: tuple[Port, ...]
    exposed: bool = False


def listeners(services: Iterable[Any], exposed: Iterable[str] = ()) -> list[Listener]:
    """Listeners from a tier's services (anything with `name` and `ports`); `exposed` names the
    services clients outside the cluster reach."""
    outside = set(exposed)
    return [Listener(app=s.name, ports=tuple(s.ports), exposed=s.name in outside) for s in services]


def _tcp(ports: Iterable[int]) -> list[dict[str, Any]]:
    # Every protocol we serve (http, http2, grpc, websocket, tcp, mqtt) runs over TCP.
    return [{"protocol": "TCP", "port": port} for port in sorted(set(ports))]


def takes_outside_traffic(listener: Listener, port: Port) -> bool:
    """Whether clients beyond the namespace (or a Docker site's network) reach `port`: every
    port of an exposed service, and MQTT listeners (devices connect to them directly)."""
    return listener.exposed or port.protocol == "mqtt"


def outside_ports(listener: Listener) -> list[int]:
    """The container ports of `listener` open to anywhere, in declaration order."""
    return list(dict.fromkeys(p.container_port for p in listener.ports if takes_outside_traffic(listener, p)))


def ingress_rules(listener: Listener) -> list[dict[str, Any]]:
    """The ingress rules of one service's policy (see the module docstring). A rule without
    `from` admits every source; no empty list is rendered (the API server drops them)."""
    anywhere = set(outside_ports(listener))
    scrape: set[int] = set()
    own: set[int] = set()
    for port in listener.ports:
        if port.container_port in anywhere:
            continue
        if port.name == METRICS:
            scrape.add(port.container_port)
        else:
            own.add(port.container_port)
    # Two ports may share a container port: the widest rule that admits it wins. A rule with
    # no ports would admit every port, so none is rendered.
    scrape -= anywhere
    own -= anywhere | scrape
    rules: list[dict[str, Any]] = []
    if anywhere:
        rules.append({"ports": _tcp(anywhere)})
    if scrape:
        rules.append({"from": [{"namespaceSelector": {}}], "ports": _tcp(scrape)})
    if own:
        rules.append({"from": [{"podSelector": {}}], "ports": _tcp(own)})
    return rules


def policy_specs(services: Sequence[Listener]) -> dict[str, dict[str, Any]]:
    """Policy name -> spec for one namespace: the default deny, then one allow per service."""
    specs: dict[str, dict[str, Any]] = {DEFAULT_DENY: {"podSelector": {}, "policyTypes": ["Ingress"]}}
    for svc in services:
        spec: dict[str, Any] = {"podSelector": {"matchLabels": {APP_LABEL: svc.app}}, "policyTypes": ["Ingress"]}
        rules = ingress_rules(svc)
        if rules:
            spec["ingress"] = rules
        specs[f"{ALLOW_PREFIX}{svc.app}"] = spec
    return specs


def namespace_policies(prefix: str, namespace: str, services: Sequence[Listener], *,
                       labels: Mapping[str, str], provider: pulumi.ProviderResource,
                       namespace_resource: pulumi.Resource, parent: pulumi.Resource,
                       ) -> list[k8s.networking.v1.NetworkPolicy]:
    """Register the namespace's policies under `parent`, through `provider`.

    Logical names are `<prefix>-default-deny` and `<prefix>-<service>-allow`: the suffixes keep
    them apart whatever a service is called. The namespace is named statically and ordered
    with `depends_on`, as the workloads are."""
    opts = pulumi.ResourceOptions(parent=parent, provider=provider, depends_on=[namespace_resource])
    out = []
    for name, spec in policy_specs(services).items():
        app = name.removeprefix(ALLOW_PREFIX) if name != DEFAULT_DENY else None
        logical = f"{prefix}-default-deny" if app is None else f"{prefix}-{app}-allow"
        meta_labels = dict(labels) if app is None else {**labels, APP_LABEL: app}
        out.append(k8s.networking.v1.NetworkPolicy(
            logical,
            metadata=k8s.meta.v1.ObjectMetaArgs(name=name, namespace=namespace, labels=meta_labels),
            spec=spec,  # plain dict: the wire shape, which `policy_specs` keeps testable
            opts=opts,
        ))
    return out
