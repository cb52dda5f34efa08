"""The image-facts policy, called directly (passing and violating cases), and over the pods
the program renders for every image the shipped stacks use."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from edgefabric.config import Port, Workload
from edgefabric.tiers.images import FACTS_FILE, KeycloakDatabase, runtime_for
from policies.rules import images
from tests.kits.policy import NOT_APPLICABLE, check

DEPLOYMENT = "kubernetes:apps/v1:Deployment"


def pod(container: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "x"}, "spec": {"template": {"spec": {"containers": [container], **spec}}}}


def envoy(**overrides: Any) -> dict[str, Any]:
    c: dict[str, Any] = {
        "name": "api", "image": "envoyproxy/envoy:v1.32.3",
        "ports": [{"name": "http", "containerPort": 8080}],
        "command": ["envoy", "-c", "/etc/envoy/envoy.yaml"],
        "volumeMounts": [{"name": "image-config", "mountPath": "/etc/envoy", "readOnly": True}],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}},
        "livenessProbe": {"httpGet": {"path": "/ready", "port": "http"}},
        "securityContext": {"runAsNonRoot": True, "runAsUser": 101},
    }
    c.update(overrides)
    return c


def test_every_row_cites_its_dockerfile_and_names_a_numeric_user() -> None:
    rows = yaml.safe_load(FACTS_FILE.read_text())["images"]
    for repo, row in rows.items():
        assert (row["source"].startswith(("https://github.com/", "edgefabric image contract"))
                or row["source"].endswith("(this repository)")), repo
        assert isinstance(row["runAsUser"], int) and row["runAsUser"] > 0, repo
        assert row["tags"], repo


def test_a_configured_envoy_passes() -> None:
    assert check(images.image_facts, DEPLOYMENT, pod(envoy())) == []


def test_envoy_without_a_numeric_user_is_refused() -> None:
    c = envoy(securityContext={"runAsNonRoot": True})
    msgs = check(images.image_facts, DEPLOYMENT, pod(c), name="gw")
    assert msgs == ["Deployment 'gw' container containers[0] 'api' (image 'envoyproxy/envoy:v1.32.3') runs as "
                    "user None; the image needs runAsUser 101 (Dockerfile USER 'root', "
                    "https://github.com/envoyproxy/envoy/blob/v1.32.3/ci/Dockerfile-envoy)"]
    # A pod-level user counts.
    assert check(images.image_facts, DEPLOYMENT, pod(c, securityContext={"runAsUser": 101})) == []


def test_envoy_probed_on_8080_with_its_default_config_is_refused() -> None:
    # The image's own envoy.yaml listens on 10000 (and admin on 9901): nothing answers 8080.
    c = envoy()
    del c["volumeMounts"]
    msgs = check(images.image_facts, DEPLOYMENT, pod(c), name="gw")
    assert len(msgs) == 2
    assert msgs[1].endswith("readinessProbe asks port 8080, but the image listens on [9901, 10000] as configured "
                            "(mount a config at '/etc/envoy/envoy.yaml' or set its port)")


def test_mosquitto_without_a_listener_serves_nothing_reachable() -> None:
    c = {"name": "mqtt", "image": "eclipse-mosquitto:2.0.20", "ports": [{"name": "mqtt", "containerPort": 1883}],
         "readinessProbe": {"tcpSocket": {"port": 1883}}, "securityContext": {"runAsUser": 1883}}
    msgs = check(images.image_facts, DEPLOYMENT, pod(c))
    assert msgs and "listens on nothing reachable" in msgs[0]
    c["volumeMounts"] = [{"name": "image-config", "mountPath": "/mosquitto/config"}]
    assert check(images.image_facts, DEPLOYMENT, pod(c)) == []


def test_keycloak_needs_start_a_database_and_its_management_port() -> None:
    c = {"name": "kc", "image": "quay.io/keycloak/keycloak:26.0.7",
         "ports": [{"name": "http", "containerPort": 8080}],
         "readinessProbe": {"httpGet": {"path": "/health/ready", "port": 8080}},
         "securityContext": {"runAsUser": 1000}}
    msgs = check(images.image_facts, DEPLOYMENT, pod(c))
    assert any("asks port 8080, but the image listens on [8443, 9000]" in m for m in msgs)
    assert any("starts with args []; the image needs ['start']" in m for m in msgs)
    assert any("does not set KC_DB, KC_DB_URL, KC_DB_USERNAME, KC_DB_PASSWORD, KC_HOSTNAME, "
               "KC_HEALTH_ENABLED" in m for m in msgs)


def test_an_image_without_a_row_and_a_tag_not_read_are_named() -> None:
    c = envoy(image="ghcr.io/acme/unknown:1.0")
    assert check(images.image_facts, DEPLOYMENT, pod(c)) == [
        "Deployment 'r' container containers[0] 'api' (image 'ghcr.io/acme/unknown:1.0') has no row in "
        "edgefabric/tiers/image_facts.yaml: its user, ports and required config are unknown"]
    msgs = check(images.image_facts, DEPLOYMENT, pod(envoy(image="envoyproxy/envoy:v1.20.0")))
    assert msgs == ["Deployment 'r' container containers[0] 'api' (image 'envoyproxy/envoy:v1.20.0'): "
                    "image_facts.yaml was read for tags ['v1.32.3'], not 'v1.20.0'"]


def test_not_applicable_to_kinds_without_pods() -> None:
    assert check(images.image_facts, "kubernetes:core/v1:Service", {"spec": {}}) == NOT_APPLICABLE


# ------------------------------------------------------------ what the program renders


def _workload(image: str, ports: list[Port], health: str = "/healthz", **extra: Any) -> Workload:
    return Workload(name="svc", image=image, ports=ports, health_path=health, memory="512Mi", **extra)


def test_envoy_config_listens_on_every_http_port_and_forwards_the_probe_to_admin() -> None:
    w = _workload("envoyproxy/envoy:v1.32.3", [Port(name="http", port=8080, protocol="http2"),
                                                Port(name="grpc", port=8081, protocol="grpc"),
                                                Port(name="https", port=443, target_port=8443, protocol="tcp")],
                  health="/ready")
    rt = runtime_for(w)
    config = yaml.safe_load(rt.config_files["envoy.yaml"])
    assert config["admin"]["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 9901}
    ports = [lst["address"]["socket_address"]["port_value"] for lst in config["static_resources"]["listeners"]]
    assert ports == [8080, 8081]
    routes = (config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
              ["route_config"]["virtual_hosts"][0]["routes"])
    assert routes[0] == {"match": {"path": "/ready"}, "route": {"cluster": "admin", "prefix_rewrite": "/ready"}}
    assert rt.run_as_user == 101 and rt.command == ["envoy", "-c", "/etc/envoy/envoy.yaml"]


def test_mosquitto_gets_a_listener_per_port_and_no_anonymous_clients() -> None:
    rt = runtime_for(_workload("eclipse-mosquitto:2.0.20", [Port(name="mqtt", port=1883, protocol="mqtt")]))
    lines = rt.config_files["mosquitto.conf"].splitlines()
    assert "listener 1883" in lines and "allow_anonymous false" in lines
    assert rt.run_as_user == 1883 and rt.config_dir == "/mosquitto/config"


def test_varnish_listens_unprivileged_and_fronts_its_backend() -> None:
    w = _workload("varnish:7.6.1", [Port(name="http", port=8080)])
    with pytest.raises(ValueError, match="varnish needs a backend"):
        runtime_for(w)
    rt = runtime_for(w, backend="gw.region-x.svc.cluster.local:8080")
    assert rt.command is not None and "http=:8080,HTTP" in rt.command and "malloc,256M" in rt.command
    assert '.host = "gw.region-x.svc.cluster.local";' in rt.config_files["default.vcl"]
    assert 'if (req.url == "/healthz")' in rt.config_files["default.vcl"]


def test_keycloak_starts_with_its_database_and_probes_port_9000() -> None:
    w = _workload("quay.io/keycloak/keycloak:26.0.7", [Port(name="http", port=8080)], health="/health/ready",
                  env={"OAUTH2_ISSUER": "https://auth.example.com/realms/x"})
    rt = runtime_for(w, database=KeycloakDatabase("jdbc:postgresql://db:5432/kc", "kc", "kc-db"))
    assert rt.args == ["start"]
    assert rt.env["KC_HOSTNAME"] == "https://auth.example.com" and rt.env["KC_DB"] == "postgres"
    assert rt.secret_env == {"KC_DB_PASSWORD": ("kc-db", "password")}
    assert rt.probe is not None and rt.probe.port == 9000


def test_rendered_pods_pass_and_the_old_security_context_does_not() -> None:
    from edgefabric.tiers.workloads import container
    from policies.rules.runtime import wrap_props  # noqa: F401 - the path the kit takes

    w = _workload("redis:7.4.1", [Port(name="redis", port=6379, protocol="tcp")])
    c = container(w.name, w.image, w.ports, w.health_path, cpu="250m", memory="256Mi", cpu_limit="250m",
                  memory_limit="256Mi")
    rendered = {"name": c.name, "image": c.image, "ports": [{"name": "redis", "containerPort": 6379}],
                "readinessProbe": {"tcpSocket": {"port": 6379}},
                "securityContext": {"runAsNonRoot": True, "runAsUser": c.security_context.run_as_user}}
    assert check(images.image_facts, DEPLOYMENT, pod(rendered)) == []
    old = copy.deepcopy(rendered)
    old["securityContext"] = {"runAsNonRoot": True}  # what workloads.container() set before
    assert check(images.image_facts, DEPLOYMENT, pod(old)) != []


def test_keycloak_dev_mode_only_where_the_environment_allows_it() -> None:
    c = {"name": "kc", "image": "quay.io/keycloak/keycloak:26.0.7", "args": ["start-dev"],
         "ports": [{"name": "http", "containerPort": 8080}, {"name": "management", "containerPort": 9000}],
         "env": [{"name": "KC_HOSTNAME", "value": "https://auth.example.com"},
                 {"name": "KC_HEALTH_ENABLED", "value": "true"}],
         "readinessProbe": {"httpGet": {"path": "/health/ready", "port": 9000}},
         "securityContext": {"runAsUser": 1000}}
    assert check(images.image_facts, DEPLOYMENT, pod(c), config={"allowDevModes": True}) == []
    msgs = check(images.image_facts, DEPLOYMENT, pod(c))
    assert [m.split(") ", 1)[1] for m in msgs] == [
        "starts with args ['start-dev']; the image needs ['start']",
        "does not set KC_DB, KC_DB_URL, KC_DB_USERNAME, KC_DB_PASSWORD, which the image needs"]
