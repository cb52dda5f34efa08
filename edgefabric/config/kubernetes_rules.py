"""What the Kubernetes API server would refuse in the objects a config renders, refused first.

The tiers turn config values into Kubernetes names, labels, ports, quantities and env vars. A
value our models accept but the API server rejects would fail in the middle of `pulumi up`,
after other resources were made; these rules refuse it before anything is registered, with
the key path the user wrote. What each rule mirrors (Kubernetes API validation):

- the namespaces the tiers derive (`region-<name>`, `edge-<site>`) are DNS-1123 labels, at
  most 63 characters;
- a container port's name is unique in its container and an IANA service name: at most 15
  characters, lower case letters, digits and single hyphens, at least one letter; a Service
  takes each port number once;
- an environment variable's name has no `=` and is not empty (we ask for a C identifier, what
  every shell and runtime accepts);
- an image has no whitespace (a Deployment takes it, then the ReplicaSet can make no Pod);
- a Service's name starts with a letter on the clusters the clouds run (1.31 by default;
  newer API servers relax it);
- a node selector's keys are qualified names and its values label values; a toleration key is
  a qualified name;
- a cpu request or limit below 1m and a memory one below 1Mi cannot be honoured (Kubernetes
  rounds cpu to millicores, and the default limit, twice the request, would round to 0 and
  fall below the request, which the server refuses).

tests/integration/kubernetes/test_validation_parity.py sends rendered mutations of the
shipped stacks to a real API server: it fails when the server refuses something these rules
let through, and shows, with these rules switched off, that the server refuses what they refuse.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from edgefabric.config.models import EdgeService, Port, StackConfig, Workload, cpu_cores, memory_mb
from edgefabric.errors import Problem

# Mirrors k8s.io/apimachinery/pkg/util/validation.
DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
IANA_SVC_NAME = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_LABEL = 63
MAX_PORT_NAME = 15
# The namespaces the tiers make (edgefabric.tiers.regional_edge, edgefabric.tiers.edge_sites).
REGION_NAMESPACE = "region-{}"
SITE_NAMESPACE = "edge-{}"
MIN_CPU_CORES = 0.001  # 1m
MIN_MEMORY_MB = 1.0  # 1Mi


def is_dns1035_label(value: str) -> bool:
    return len(value) <= MAX_LABEL and DNS1035_LABEL.fullmatch(value) is not None


def is_dns1123_label(value: str) -> bool:
    return len(value) <= MAX_LABEL and DNS1123_LABEL.fullmatch(value) is not None


def is_port_name(value: str) -> bool:
    return (len(value) <= MAX_PORT_NAME and IANA_SVC_NAME.fullmatch(value) is not None
            and "--" not in value and any(c.isalpha() for c in value))


def is_qualified_name(value: str) -> bool:
    """A label or taint key: `[prefix/]name`, the prefix a DNS subdomain."""
    parts = value.split("/")
    if len(parts) > 2:
        return False
    prefix, name = (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0])
    if prefix is not None and (len(prefix) > 253 or DNS1123_SUBDOMAIN.fullmatch(prefix) is None):
        return False
    return 0 < len(name) <= MAX_LABEL and QUALIFIED_NAME.fullmatch(name) is not None


def is_label_value(value: str) -> bool:
    return len(value) <= MAX_LABEL and LABEL_VALUE.fullmatch(value) is not None


def kubernetes_problems(cfg: StackConfig) -> list[Problem]:
    """Every value a tier hands the Kubernetes API that its validation would refuse."""
    p: list[Problem] = []
    for i, svc in enumerate(cfg.core.services):
        p += _workload(svc, f"core.services[{i}]")
    for i, region in enumerate(cfg.regions):
        p += _namespace(REGION_NAMESPACE, region.name, f"regions[{i}].name")
        for j, regional in enumerate(region.services):
            p += _workload(regional, f"regions[{i}].services[{j}]")
    sites = [(i, s) for i, s in enumerate(cfg.edge.sites) if s.capabilities.runtime == "kubernetes"]
    for i, site in sites:
        p += _namespace(SITE_NAMESPACE, site.name, f"edge.sites[{i}].name")
        for j, edge in enumerate(site.services):
            p += _workload(edge, f"edge.sites[{i}].services[{j}]")
    if sites:
        p += _selector(cfg.edge.node_selector, "edge.nodeSelector")
        if not is_qualified_name(cfg.edge.toleration_key):
            p.append(Problem("edge.tolerationKey", cfg.edge.toleration_key, _QUALIFIED))
    return p


_QUALIFIED = ("a qualified name, as Kubernetes label and taint keys are: an optional DNS subdomain "
              "prefix and '/', then at most 63 letters, digits, '-', '_' or '.', starting and ending "
              "with a letter or digit")


def _namespace(pattern: str, name: str, path: str) -> list[Problem]:
    namespace = pattern.format(name)
    if is_dns1123_label(namespace):
        return []
    room = MAX_LABEL - len(pattern.format(""))
    return [Problem(path, name, f"at most {room} characters: the tier names its namespace {namespace[:20]!r}..., "
                                f"which Kubernetes allows up to {MAX_LABEL}")]


def _workload(svc: Workload | EdgeService, path: str) -> list[Problem]:
    p: list[Problem] = []
    if not is_dns1035_label(svc.name):
        p.append(Problem(f"{path}.name", svc.name,
                         "a name starting with a letter (lower case letters, digits and '-'): it names the "
                         "service's Kubernetes Service, a DNS-1035 label"))
    if any(c.isspace() for c in svc.image):
        p.append(Problem(f"{path}.image", svc.image, "an image reference without whitespace"))
    # Workloads' port names are checked for repeats with the other workload rules (rules.py).
    p += _ports(svc.ports, path, unique_names=not isinstance(svc, Workload))
    if isinstance(svc, Workload):
        p += _quantities(svc, path)
        for name in svc.env:
            if ENV_NAME.fullmatch(name) is None:
                p.append(Problem(f"{path}.env", name, "variable names are letters, digits and '_', "
                                                      "not starting with a digit (e.g. LOG_LEVEL)"))
    return p


def _ports(ports: Iterable[Port], path: str, *, unique_names: bool) -> list[Problem]:
    p: list[Problem] = []
    seen: set[int] = set()
    names: set[str] = set()
    for k, port in enumerate(ports):
        if unique_names and port.name in names:
            p.append(Problem(f"{path}.ports[{k}].name", port.name, "port names must be unique per service"))
        names.add(port.name)
        if not is_port_name(port.name):
            p.append(Problem(f"{path}.ports[{k}].name", port.name,
                             f"at most {MAX_PORT_NAME} characters of lower case letters, digits and single "
                             "hyphens, with at least one letter: it names a container port (an IANA service name)"))
        if port.port in seen:
            p.append(Problem(f"{path}.ports[{k}].port", port.port, "each port number once per service"))
        seen.add(port.port)
    return p


def _quantities(svc: Workload, path: str) -> list[Problem]:
    p: list[Problem] = []
    for key, value in (("cpu", svc.cpu), ("cpuLimit", svc.cpu_limit)):
        if value is not None and cpu_cores(value) < MIN_CPU_CORES:
            p.append(Problem(f"{path}.{key}", value, "at least 1m (Kubernetes counts cpu in millicores)"))
    for key, value in (("memory", svc.memory), ("memoryLimit", svc.memory_limit)):
        if value is not None and memory_mb(value) < MIN_MEMORY_MB:
            p.append(Problem(f"{path}.{key}", value, "at least 1Mi"))
    return p


def _selector(selector: Mapping[str, str], path: str) -> list[Problem]:
    p: list[Problem] = []
    for key, value in selector.items():
        if not is_qualified_name(key):
            p.append(Problem(f"{path}", key, f"keys: {_QUALIFIED}"))
        if not is_label_value(value):
            p.append(Problem(f"{path}.{key}", value,
                             "a label value: at most 63 letters, digits, '-', '_' or '.', starting and ending "
                             "with a letter or digit (or empty)"))
    return p
