"""How each image a stack runs is started so that it serves the port its probes ask.

The facts come from `image_facts.yaml` (one row per image repository, each citing its
Dockerfile); the CrossGuard policy `image-facts` checks rendered pods against the same rows.
This module turns a row and a workload into an `ImageRuntime`: the numeric user and group,
the command and arguments, extra environment, mounted config files, extra container ports
and where the probes point. The config files are rendered here (pure text), and
`edgefabric.tiers.workloads` mounts them from a ConfigMap.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from edgefabric.config import Port, Workload, memory_mb

FACTS_FILE = Path(__file__).with_name("image_facts.yaml")
# Envoy's admin interface stays on loopback; the probed listener forwards /ready to it.
ENVOY_ADMIN_PORT = 9901
KEYCLOAK_MANAGEMENT_PORT = 9000
HTTP_FAMILY = ("http", "http2", "grpc", "websocket")


@dataclass(frozen=True)
class ImageFacts:
    """One row of image_facts.yaml."""

    repository: str
    source: str
    run_as_user: int
    run_as_group: int
    ports: tuple[int, ...] | None  # None: the image listens on the ports the stack declares
    config_path: str | None
    port_env: tuple[str, ...]
    required_args: tuple[str, ...]
    required_env: tuple[str, ...]
    tools: tuple[str, ...] = ()  # what a Docker health check can run in the image
    docker_health: tuple[str, ...] | None = None  # its HEALTHCHECK test, with {port} and {path}

    def docker_health_test(self, port: int, path: str) -> list[str] | None:
        """The Docker HEALTHCHECK test for the service's first port and health path, or None
        when the image ships nothing to probe with."""
        if self.docker_health is None:
            return None
        return [part.format(port=port, path=path) for part in self.docker_health]


@cache
def all_facts() -> dict[str, ImageFacts]:
    rows: Mapping[str, Mapping[str, Any]] = yaml.safe_load(FACTS_FILE.read_text())["images"]
    return {repo: ImageFacts(
        repository=repo, source=str(row["source"]),
        run_as_user=int(row["runAsUser"]), run_as_group=int(row["runAsGroup"]),
        ports=None if row.get("ports") == "declared" else tuple(int(p) for p in row.get("ports") or []),
        config_path=row.get("configPath"),
        port_env=tuple(row.get("portEnv") or ()), required_args=tuple(row.get("requiredArgs") or ()),
        required_env=tuple(row.get("requiredEnv") or ()), tools=tuple(row.get("tools") or ()),
        docker_health=tuple(row["dockerHealth"]) if row.get("dockerHealth") else None,
    ) for repo, row in rows.items()}


def repository(image: str) -> str:
    """`quay.io/keycloak/keycloak:26.0.7` -> `quay.io/keycloak/keycloak` (tag and digest dropped)."""
    name = image.split("@", 1)[0]
    head, _, last = name.rpartition("/")
    last = last.split(":", 1)[0]
    return f"{head}/{last}" if head else last


def facts_for(image: str) -> ImageFacts | None:
    return all_facts().get(repository(image))


@dataclass(frozen=True)
class ProbeTarget:
    """Where liveness and readiness point when the image's health lives elsewhere."""

    port: int
    liveness_path: str
    readiness_path: str


@dataclass(frozen=True)
class KeycloakDatabase:
    """What Keycloak's `start` needs of its database (the password stays a secret Output)."""

    jdbc_url: str
    username: str
    password_secret: str  # the Kubernetes Secret holding `password`


@dataclass(frozen=True)
class ImageRuntime:
    """How to run one workload's image: everything beyond what the config says."""

    run_as_user: int | None = None
    run_as_group: int | None = None
    command: list[str] | None = None
    args: list[str] | None = None
    env: dict[str, str] = field(default_factory=dict)
    secret_env: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (secret, key)
    config_dir: str | None = None
    config_files: dict[str, str] = field(default_factory=dict)
    extra_ports: list[Port] = field(default_factory=list)
    probe: ProbeTarget | None = None


def runtime_for(workload: Workload, *, backend: str | None = None,
                database: KeycloakDatabase | None = None) -> ImageRuntime:
    """The runtime of `workload`'s image. `backend` is `host:port` of what a cache fronts;
    `database` what Keycloak stores its realms in. Images without a row run as configured
    (the `image-facts` policy names them)."""
    facts = facts_for(workload.image)
    if facts is None:
        return ImageRuntime()
    uid, gid = facts.run_as_user, facts.run_as_group
    repo = facts.repository
    if repo == "envoyproxy/envoy":
        return ImageRuntime(run_as_user=uid, run_as_group=gid, command=["envoy", "-c", "/etc/envoy/envoy.yaml"],
                            config_dir="/etc/envoy", config_files={"envoy.yaml": envoy_config(workload)})
    if repo == "eclipse-mosquitto":
        return ImageRuntime(run_as_user=uid, run_as_group=gid, config_dir="/mosquitto/config",
                            config_files={"mosquitto.conf": mosquitto_config(workload.ports)})
    if repo == "varnish":
        if backend is None:
            raise ValueError(f"{workload.name}: varnish needs a backend (the region's gateway)")
        port = workload.ports[0].container_port
        # Half the memory request for the cache: varnishd's own overhead and transient
        # storage live outside the malloc arena.
        size = max(16, int(memory_mb(workload.memory) // 2))
        return ImageRuntime(
            run_as_user=uid, run_as_group=gid, command=["varnishd", "-F", "-f", "/etc/varnish/default.vcl",
                             "-a", f"http=:{port},HTTP", "-p", "feature=+http2", "-s", f"malloc,{size}M"],
            config_dir="/etc/varnish", config_files={"default.vcl": varnish_vcl(backend, workload.health_path)})
    if repo == "quay.io/keycloak/keycloak":
        return keycloak_runtime(workload, facts, database)
    return ImageRuntime(run_as_user=uid, run_as_group=gid)


def keycloak_runtime(workload: Workload, facts: ImageFacts, database: KeycloakDatabase | None) -> ImageRuntime:
    port = workload.ports[0].container_port
    issuer = workload.env.get("OAUTH2_ISSUER", "")
    parsed = urlparse(issuer)
    env = {
        "KC_HTTP_ENABLED": "true", "KC_HTTP_PORT": str(port),
        "KC_HTTP_MANAGEMENT_PORT": str(KEYCLOAK_MANAGEMENT_PORT), "KC_HEALTH_ENABLED": "true",
        # TLS ends at the load balancer/gateway in front; trust its forwarded headers.
        "KC_PROXY_HEADERS": "xforwarded",
        "KC_HOSTNAME": f"{parsed.scheme}://{parsed.netloc}" if parsed.netloc else "",
    }
    secret_env: dict[str, tuple[str, str]] = {}
    if database is not None:
        env.update(KC_DB="postgres", KC_DB_URL=database.jdbc_url, KC_DB_USERNAME=database.username)
        secret_env["KC_DB_PASSWORD"] = (database.password_secret, "password")
        args = ["start"]
    else:
        # No database: only a stack on an existing (local) cluster gets here (config rule
        # `keycloak-database`); start-dev keeps the H2 file store start refuses.
        args = ["start-dev"]
    return ImageRuntime(
        run_as_user=facts.run_as_user, run_as_group=facts.run_as_group, args=args, env=env,
        secret_env=secret_env,
        extra_ports=[Port(name="management", port=KEYCLOAK_MANAGEMENT_PORT, protocol="http")],
        probe=ProbeTarget(port=KEYCLOAK_MANAGEMENT_PORT, liveness_path="/health/live",
                          readiness_path="/health/ready"))


def envoy_config(workload: Workload) -> str:
    """An envoy bootstrap with a listener per HTTP-family port of the workload. `<health_path>`
    (the probed path, /ready) is forwarded to the admin interface on loopback, which answers
    200 only while envoy is live and not draining; other paths get 404 until routes are set."""
    listeners = []
    for port in workload.ports:
        if port.protocol not in HTTP_FAMILY:
            continue
        listeners.append({
            "name": port.name,
            "address": {"socket_address": {"address": "0.0.0.0", "port_value": port.container_port}},
            "filter_chains": [{"filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager"
                             ".v3.HttpConnectionManager",
                    "stat_prefix": port.name,
                    "codec_type": "AUTO",
                    "route_config": {"name": port.name, "virtual_hosts": [{
                        "name": port.name, "domains": ["*"],
                        "routes": [
                            {"match": {"path": workload.health_path},
                             "route": {"cluster": "admin", "prefix_rewrite": "/ready"}},
                            {"match": {"prefix": "/"}, "direct_response": {"status": 404}},
                        ],
                    }]},
                    "http_filters": [{
                        "name": "envoy.filters.http.router",
                        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
                    }],
                },
            }]}],
        })
    config = {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": ENVOY_ADMIN_PORT}}},
        "static_resources": {
            "listeners": listeners,
            "clusters": [{
                "name": "admin", "type": "STATIC", "connect_timeout": "1s",
                "load_assignment": {"cluster_name": "admin", "endpoints": [{"lb_endpoints": [{"endpoint": {
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": ENVOY_ADMIN_PORT}}}}]}]},
            }],
        },
    }
    return yaml.safe_dump(config, sort_keys=False)


def mosquitto_config(ports: Sequence[Port]) -> str:
    """A listener on every declared MQTT port. No anonymous clients: mosquitto 2 refuses
    them anyway once a listener is declared; credentials are added by the data-flow config."""
    lines = ["# rendered by edgefabric/tiers/images.py", "per_listener_settings false",
             "allow_anonymous false", "persistence false", "log_dest stdout"]
    lines += [f"listener {p.container_port}" for p in ports if p.protocol in ("mqtt", "tcp")]
    return "\n".join(lines) + "\n"


def varnish_vcl(backend: str, health_path: str) -> str:
    """The origin is `backend`; the probed path is answered by varnish itself, so the cache's
    readiness does not follow its origin's (a probe passed through would take every cache
    out of its Service whenever the gateway blinks)."""
    host, _, port = backend.rpartition(":")
    return (
        "vcl 4.1;\n\n"
        "# rendered by edgefabric/tiers/images.py: the region's gateway is the origin.\n"
        f'backend default {{\n    .host = "{host}";\n    .port = "{port}";\n}}\n\n'
        f'sub vcl_recv {{\n    if (req.url == "{health_path}") {{\n        return (synth(200, "OK"));\n    }}\n}}\n'
    )
