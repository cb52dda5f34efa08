"""Images run the way their Dockerfiles allow: checked against edgefabric/tiers/image_facts.yaml.

Every container's image has a row (each row cites the image's Dockerfile); the container
runs as the row's numeric user (runAsNonRoot cannot be verified against root or a named
USER, so the kubelet refuses to start it); every probe points at a port the image really
listens on, with its default config or with the config the pod mounts, the command it is
given or the port variables it sets; and the arguments and variables the image needs to
start are there. The table is read from the repository, the same file the program uses.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from pulumi_policy import ReportViolation, ResourceValidationArgs

from .common import config_value, get, is_unknown, resource_policy, schema, show
from .workloads import _containers, _pod, _subject

FACTS_FILE = Path(__file__).resolve().parents[2] / "edgefabric" / "tiers" / "image_facts.yaml"
PROBES = ("livenessProbe", "readinessProbe", "startupProbe")


@cache
def facts() -> Mapping[str, Mapping[str, Any]]:
    rows: Mapping[str, Mapping[str, Any]] = yaml.safe_load(FACTS_FILE.read_text())["images"]
    return rows


def split_image(image: str) -> tuple[str, str | None]:
    """(repository, tag or None): `quay.io/keycloak/keycloak:26.0.7` -> (`quay.io/keycloak/keycloak`, `26.0.7`)."""
    name = image.split("@", 1)[0]
    head, _, last = name.rpartition("/")
    base, _, tag = last.partition(":")
    return (f"{head}/{base}" if head else base), (tag or None)


def _probe_ports(container: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    named = {p.get("name"): p.get("containerPort") for p in container.get("ports") or [] if isinstance(p, dict)}
    for kind in PROBES:
        probe = container.get(kind)
        if not isinstance(probe, dict):
            continue
        for action in ("httpGet", "tcpSocket", "grpc"):
            port = get(probe, action, "port")
            if port is not None:
                yield kind, named.get(port, port) if isinstance(port, str) else port


def _as_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def served_ports(row: Mapping[str, Any], container: dict[str, Any]) -> set[int] | None:
    """The ports the container listens on, or None when that cannot be known (unknowns)."""
    declared = {_as_int(p.get("containerPort")) for p in container.get("ports") or [] if isinstance(p, dict)}
    declared.discard(None)
    if row.get("ports") == "declared":
        return {p for p in declared if p is not None}
    served = {int(p) for p in row.get("ports") or []}
    config = row.get("configPath")
    mounts = [m.get("mountPath") for m in container.get("volumeMounts") or [] if isinstance(m, dict)]
    if any(is_unknown(m) for m in mounts):
        return None
    if config and any(isinstance(m, str) and (config == m or config.startswith(m.rstrip("/") + "/"))
                      for m in mounts):
        # The pod mounts its own config over the image's: its listeners are the declared ports.
        served |= {p for p in declared if p is not None}
    words = [str(w) for w in [*(container.get("command") or []), *(container.get("args") or [])]]
    env = {e.get("name"): e.get("value") for e in container.get("env") or [] if isinstance(e, dict)}
    for port in declared:
        if port is None:
            continue
        if any(w == str(port) or w.endswith(f":{port}") or f":{port}," in w for w in words):
            served.add(port)
        if any(env.get(name) == str(port) for name in row.get("portEnv") or []):
            served.add(port)
    return served


def _user(spec: dict[str, Any], container: dict[str, Any]) -> Any:
    own = get(container, "securityContext", "runAsUser")
    return own if own is not None else get(spec, "securityContext", "runAsUser")


def _validate(args: ResourceValidationArgs, report: ReportViolation) -> None:
    _, spec = _pod(args)
    table = facts()
    # Development modes (e.g. Keycloak start-dev) only where the environment's config allows.
    allow_dev = bool(config_value(args, "allowDevModes", False))
    for where, c in _containers(spec, init=True):
        image = c.get("image")
        if is_unknown(image) or not isinstance(image, str):
            continue
        repo, tag = split_image(image)
        row = table.get(repo)
        subject = f"{_subject(args)} container {where} (image {image!r})"
        if row is None:
            report(f"{subject} has no row in edgefabric/tiers/image_facts.yaml: its user, ports and "
                   "required config are unknown")
            continue
        if tag is not None and "@" not in image and tag not in [str(t) for t in row.get("tags") or []]:
            report(f"{subject}: image_facts.yaml was read for tags {row.get('tags')}, not {tag!r}")
        user = _user(spec, c)
        if not is_unknown(user) and _as_int(user) != int(row["runAsUser"]):
            report(f"{subject} runs as user {show(user)}; the image needs runAsUser {row['runAsUser']} "
                   f"(Dockerfile USER {row.get('imageUser')!r}, {row['source']})")
        served = served_ports(row, c)
        if served is not None:
            for kind, port in _probe_ports(c):
                if is_unknown(port):
                    continue
                if _as_int(port) not in served:
                    report(f"{subject} {kind} asks port {show(port)}, but the image listens on "
                           f"{sorted(served) or 'nothing reachable'} as configured (mount a config at "
                           f"{row.get('configPath')!r} or set its port)")
        wanted = [str(a) for a in row.get("requiredArgs") or []]
        given = [str(a) for a in c.get("args") or []]
        dev = [str(a) for a in row.get("devArgs") or []]
        dev_mode = bool(dev) and given[:len(dev)] == dev and allow_dev
        if wanted and given[:len(wanted)] != wanted and not dev_mode:
            report(f"{subject} starts with args {given}; the image needs {wanted}")
        env_names = {e.get("name") for e in c.get("env") or [] if isinstance(e, dict)}
        exempt = set(row.get("devNotRequiredEnv") or []) if dev_mode else set()
        missing = [n for n in row.get("requiredEnv") or [] if n not in env_names and n not in exempt]
        if missing:
            report(f"{subject} does not set {', '.join(missing)}, which the image needs")


image_facts = resource_policy(
    "image-facts",
    "Containers run their image as its Dockerfile allows: the numeric user, probed ports the image "
    "listens on, required arguments and variables (edgefabric/tiers/image_facts.yaml).",
    "Add the image's row to edgefabric/tiers/image_facts.yaml (citing its Dockerfile), and let "
    "edgefabric/tiers/images.py set its user, command and mounted config.",
    _validate,
    schema(allowDevModes={"type": "boolean"}),
)

POLICIES = [image_facts]
