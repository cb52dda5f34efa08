"""Edge placement: what is deployed on an edge site fits the site's declared capabilities.

A stack policy, because it needs both sides: the site (an `edgefabric:edge:EdgeSite`
component whose props carry `capabilities`) and the workloads registered under it. Demand
is read from what is actually deployed, per runtime:
- kubernetes: Deployment/StatefulSet container requests times replicas (cpu, memory,
  ephemeral-storage);
- docker: Container `cpus` and `memory` (MB);
- native: the systemd unit's `CPUQuota=` and `MemoryMax=` in the remote.Command.
"""

from __future__ import annotations

import re
from typing import Any

from pulumi_policy import PolicyResource, ReportViolation, StackValidationArgs

from .common import get, is_unknown, plain, stack_policy

EDGE_SITE = "edgefabric:edge:EdgeSite"
_REPLICATED = ("kubernetes:apps/v1:Deployment", "kubernetes:apps/v1:StatefulSet")
DOCKER_CONTAINER = "docker:index/container:Container"
REMOTE_COMMAND = "command:remote:Command"

_MEM_UNITS = {"Ki": 1 / 1024, "Mi": 1.0, "Gi": 1024.0, "Ti": 1024.0**2,
              "K": 1e3 / 2**20, "M": 1e6 / 2**20, "G": 1e9 / 2**20, "T": 1e12 / 2**20}


def cpu_cores(quantity: Any) -> float:
    text = str(quantity)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


def mebibytes(quantity: Any) -> float:
    m = re.fullmatch(r"([0-9.]+)([KMGT]i?)?", str(quantity))
    if not m:
        raise ValueError(f"not a quantity: {quantity!r}")
    number, unit = float(m.group(1)), m.group(2)
    return number / 2**20 if unit is None else number * _MEM_UNITS[unit]


def _site_of(res: PolicyResource) -> PolicyResource | None:
    cur = res.parent
    while cur is not None:
        if cur.resource_type == EDGE_SITE:
            return cur
        cur = cur.parent
    return None


def demand(resource_type: str, props: dict[str, Any]) -> dict[str, float] | None:
    """(cpu cores, memory MiB, storage MiB) one resource takes from its site, or None."""
    if resource_type in _REPLICATED:
        replicas = get(props, "spec", "replicas", default=1)
        total = {"cpu": 0.0, "memoryMb": 0.0, "storageMb": 0.0}
        for c in get(props, "spec", "template", "spec", "containers", default=[]) or []:
            req = get(c, "resources", "requests", default={}) or {}
            if is_unknown(req) or is_unknown(replicas):
                return None
            total["cpu"] += cpu_cores(req.get("cpu", 0))
            total["memoryMb"] += mebibytes(req.get("memory", 0))
            total["storageMb"] += mebibytes(req.get("ephemeral-storage", 0))
        return {k: v * int(replicas) for k, v in total.items()}
    if resource_type == DOCKER_CONTAINER:
        cpus, memory = props.get("cpus"), props.get("memory")
        if is_unknown(cpus) or is_unknown(memory):
            return None
        # docker `memory` is in MB; without it the container is unbounded, counted as 0 here
        # and caught by the requests/limits policies' intent at review.
        return {"cpu": float(cpus or 0), "memoryMb": float(memory or 0), "storageMb": 0.0}
    if resource_type == REMOTE_COMMAND:
        text = " ".join(str(t) for t in (props.get("triggers") or []) if not is_unknown(t))
        text += " " + str(props.get("create") or "")
        quota = re.search(r"CPUQuota=([0-9.]+)%", text)
        mem = re.search(r"MemoryMax=([0-9.]+[KMGT]?)", text)
        if not quota and not mem:
            return None
        return {"cpu": float(quota.group(1)) / 100 if quota else 0.0,
                "memoryMb": mebibytes(mem.group(1)) if mem else 0.0, "storageMb": 0.0}
    return None


def _validate(args: StackValidationArgs, report: ReportViolation) -> None:
    sites = [r for r in args.resources if r.resource_type == EDGE_SITE]
    if not sites:
        args.not_applicable("no edge sites in this stack")
    used: dict[str, dict[str, float]] = {s.urn: {"cpu": 0.0, "memoryMb": 0.0, "storageMb": 0.0} for s in sites}
    parts: dict[str, list[str]] = {s.urn: [] for s in sites}
    for res in args.resources:
        site = _site_of(res)
        if site is None:
            continue
        need = demand(res.resource_type, plain(res.props))
        if need is None:
            continue
        for key, amount in need.items():
            used[site.urn][key] += amount
        parts[site.urn].append(res.name)
    for site in sites:
        caps = get(plain(site.props), "capabilities", default=None)
        if not isinstance(caps, dict):
            report(f"edge site '{site.name}' does not carry its capabilities (props.capabilities: cpu, "
                   "memoryMb, storageMb), so its placement cannot be checked", site.urn)
            continue
        for key, unit in (("cpu", "cores"), ("memoryMb", "MiB"), ("storageMb", "MiB")):
            have, want = caps.get(key), used[site.urn][key]
            if have is None or is_unknown(have):
                continue
            if want > float(have) + 1e-9:
                report(f"edge site '{site.name}': workloads ({', '.join(sorted(parts[site.urn]))}) request "
                       f"{want:g} {unit} of {key} but the site declares {float(have):g}", site.urn)


edge_placement_fits = stack_policy(
    "edge-placement-fits",
    "Every edge site's deployed workloads fit the site's declared cpu, memory and storage.",
    "Lower the services' requirements or replicas in edgefabric:edge.sites[*].services, move a "
    "service to a larger site, or raise the site's declared capabilities if the hardware grew.",
    _validate,
)

POLICIES = [edge_placement_fits]
