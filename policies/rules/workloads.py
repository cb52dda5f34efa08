"""Kubernetes workloads: requests and limits, probes, no privilege, pinned images, non-root.

Pod templates are found in every workload kind edgefabric (or a chart) can register. Edge
containers run through pulumi-docker are held to the same image and privilege rules.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pulumi_policy import ReportViolation, ResourceValidationArgs

from .common import config_value, get, image_problem, is_unknown, plain, resource_policy, schema

# Where each kind keeps its pod spec.
POD_SPEC_PATHS: dict[str, tuple[str, ...]] = {
    "kubernetes:apps/v1:Deployment": ("spec", "template", "spec"),
    "kubernetes:apps/v1:StatefulSet": ("spec", "template", "spec"),
    "kubernetes:apps/v1:DaemonSet": ("spec", "template", "spec"),
    "kubernetes:apps/v1:ReplicaSet": ("spec", "template", "spec"),
    "kubernetes:batch/v1:Job": ("spec", "template", "spec"),
    "kubernetes:batch/v1:CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
    "kubernetes:core/v1:Pod": ("spec",),
}
DOCKER_CONTAINER = "docker:index/container:Container"
DOCKER_IMAGE = "docker:index/remoteImage:RemoteImage"
TIER_LABEL = "edgefabric.io/tier"


def _pod(args: ResourceValidationArgs) -> tuple[dict[str, Any], dict[str, Any]]:
    """(props, pod spec); not applicable for kinds without a pod template."""
    path = POD_SPEC_PATHS.get(args.resource_type)
    if path is None:
        args.not_applicable(f"{args.resource_type} has no pod template")
    props = plain(args.props)
    spec = get(props, *path, default={})
    return props, spec if isinstance(spec, dict) else {}


def _containers(spec: dict[str, Any], *, init: bool) -> Iterator[tuple[str, dict[str, Any]]]:
    keys = ("containers", "initContainers") if init else ("containers",)
    for key in keys:
        items = spec.get(key) or []
        if not isinstance(items, list):
            continue
        for i, c in enumerate(items):
            if isinstance(c, dict):
                yield f"{key}[{i}] '{c.get('name', '?')}'", c


def _subject(args: ResourceValidationArgs) -> str:
    return f"{args.resource_type.rsplit(':', 1)[-1]} '{args.name}'"


# ---------------------------------------------------------------- requests & limits

def _resources(args: ResourceValidationArgs, report: ReportViolation) -> None:
    _, spec = _pod(args)
    for where, c in _containers(spec, init=False):
        res = c.get("resources") or {}
        if is_unknown(res):
            continue
        missing = [f"{kind}.{what}" for kind in ("requests", "limits") for what in ("cpu", "memory")
                   if not get(res, kind, what)]
        if missing:
            report(f"{_subject(args)} container {where} has no {', '.join(missing)}")


k8s_requests_limits = resource_policy(
    "k8s-requests-limits",
    "Every container sets cpu and memory requests and limits.",
    "Set resources.requests and resources.limits (cpu, memory) on each container; "
    "edgefabric/tiers/workloads.py derives limits as twice the request when the config omits them.",
    _resources,
)


# -------------------------------------------------------------------------- probes

def _probes(args: ResourceValidationArgs, report: ReportViolation) -> None:
    _, spec = _pod(args)
    if args.resource_type in ("kubernetes:batch/v1:Job", "kubernetes:batch/v1:CronJob"):
        args.not_applicable("run-to-completion jobs are not probed")
    for where, c in _containers(spec, init=False):
        missing = [p for p in ("livenessProbe", "readinessProbe") if not c.get(p)]
        if missing:
            report(f"{_subject(args)} container {where} has no {' and no '.join(missing)}")


k8s_probes = resource_policy(
    "k8s-probes",
    "Every long-running container has a liveness and a readiness probe.",
    "Add livenessProbe and readinessProbe (httpGet on the service's healthPath, or tcpSocket/grpc "
    "for non-HTTP ports), as components/workloads.probe() does.",
    _probes,
)


# --------------------------------------------------------------------- privileged

def _privileged(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type == DOCKER_CONTAINER:
        if plain(args.props).get("privileged") is True:
            report(f"docker container '{args.name}' runs privileged")
        return
    _, spec = _pod(args)
    for where, c in _containers(spec, init=True):
        if get(c, "securityContext", "privileged") is True:
            report(f"{_subject(args)} container {where} runs privileged")


no_privileged = resource_policy(
    "no-privileged-containers",
    "No container runs privileged.",
    "Remove securityContext.privileged (Kubernetes) or privileged=True (docker); grant only the "
    "specific capabilities the process needs.",
    _privileged,
)


def _host_network(args: ResourceValidationArgs, report: ReportViolation) -> None:
    props, spec = _pod(args)
    tiers = list(config_value(args, "tiers", ["core"]))
    tier = get(props, "metadata", "labels", TIER_LABEL) or get(
        props, *POD_SPEC_PATHS[args.resource_type][:-1], "metadata", "labels", TIER_LABEL)
    if tier not in tiers:
        args.not_applicable(f"tier {tier!r} may use the host network")
    if spec.get("hostNetwork") is True:
        report(f"{_subject(args)} in tier '{tier}' sets hostNetwork: true")


no_host_network_core = resource_policy(
    "no-host-network-core",
    "Core-tier pods do not share the node's network namespace (hostNetwork).",
    "Drop spec.hostNetwork from core-tier pod templates and expose ports through a Service.",
    _host_network,
    schema(tiers={"type": "array", "items": {"type": "string"}}),
)


# ------------------------------------------------------------------------- images

def _images(args: ResourceValidationArgs, report: ReportViolation) -> None:
    typ = args.resource_type
    if typ == DOCKER_CONTAINER:
        problem = image_problem(plain(args.props).get("image"))
        if problem:
            report(f"docker container '{args.name}': {problem}")
        return
    if typ == DOCKER_IMAGE:
        problem = image_problem(plain(args.props).get("name"))
        if problem:
            report(f"docker image '{args.name}': {problem}")
        return
    _, spec = _pod(args)
    for where, c in _containers(spec, init=True):
        problem = image_problem(c.get("image"))
        if problem:
            report(f"{_subject(args)} container {where}: {problem}")


pinned_images = resource_policy(
    "pinned-images",
    "Images are pinned: an explicit tag other than ':latest', or a sha256 digest.",
    "Pin every image to a version tag (e.g. 'redis:7.4.1') or a digest ('name@sha256:...').",
    _images,
)


# --------------------------------------------------------------------- non-root

def _non_root(args: ResourceValidationArgs, report: ReportViolation) -> None:
    _, spec = _pod(args)
    allowed = [str(p) for p in config_value(args, "rootImages", [])]
    pod_level = get(spec, "securityContext", "runAsNonRoot")
    for where, c in _containers(spec, init=True):
        image = c.get("image") or ""
        if is_unknown(image) or any(isinstance(image, str) and image.startswith(p) for p in allowed):
            continue  # this image is known to need root; listed in policy config
        own = get(c, "securityContext", "runAsNonRoot")
        effective = own if own is not None else pod_level
        if effective is not True:
            report(f"{_subject(args)} container {where} (image {image!r}) does not set runAsNonRoot: true")


run_as_non_root = resource_policy(
    "run-as-non-root",
    "Containers run as non-root unless their image is listed as needing root.",
    "Set securityContext.runAsNonRoot: true (and a numeric runAsUser if the image has no USER); "
    "if the image really needs root, add its name prefix to this policy's rootImages config.",
    _non_root,
    schema(rootImages={"type": "array", "items": {"type": "string"}}),
)

POLICIES = [k8s_requests_limits, k8s_probes, no_privileged, no_host_network_core, pinned_images,
            run_as_non_root]
