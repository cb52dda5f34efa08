"""A Docker edge site runs each image the way the Kubernetes runtime does (image_facts.yaml),
and publishes on the host only what a Kubernetes site opens to anywhere: the gateway and the
MQTT listeners. Before, every port of every container was published (redis with no password
included) and the images ran with their defaults: envoy listened on 10000, not on the probed
8080, and mosquitto 2 without a listener served its own loopback only."""

from __future__ import annotations

import yaml

from edgefabric.config import EdgeService
from edgefabric.tiers.edge_sites import docker_container_spec
from edgefabric.tiers.network_policies import listeners

REQ = {"cpu": 0.25, "memoryMb": 256, "storageMb": 256}
GATEWAY = EdgeService.model_validate({
    "name": "edge-gateway", "kind": "edge-gateway", "image": "envoyproxy/envoy:v1.32.3", "requirements": REQ,
    "ports": [{"name": "http", "port": 8080, "protocol": "http"}], "healthPath": "/ready"})
CACHE = EdgeService.model_validate({
    "name": "local-cache", "kind": "local-cache", "image": "redis:7.4.1", "requirements": REQ,
    "ports": [{"name": "redis", "port": 6379, "protocol": "tcp"}]})
BROKER = EdgeService.model_validate({
    "name": "sensor-ingest", "kind": "sensor-ingest", "image": "eclipse-mosquitto:2.0.20", "requirements": REQ,
    "ports": [{"name": "mqtt", "port": 1883, "protocol": "mqtt"}, {"name": "metrics", "port": 9234, "protocol": "http"}]})
SITE = [GATEWAY, CACHE, BROKER]


def spec(svc: EdgeService, address: str = "192.0.2.10") -> dict:
    by_app = {lst.app: lst for lst in listeners(SITE, exposed=["edge-gateway"])}
    return docker_container_spec(svc, by_app[svc.name], address)


def test_only_the_gateway_and_mqtt_listeners_are_published_on_the_site_address() -> None:
    assert spec(GATEWAY)["ports"] == [{"internal": 8080, "external": 8080, "ip": "192.0.2.10"}]
    assert spec(BROKER)["ports"] == [{"internal": 1883, "external": 1883, "ip": "192.0.2.10"}]
    # redis takes no password here: only the site's containers reach it, on the site network.
    assert spec(CACHE)["ports"] == []


def test_each_image_gets_the_config_that_serves_its_port_through_its_own_entrypoint() -> None:
    gateway = spec(GATEWAY)
    # Envoy's docker-entrypoint.sh runs `envoy ...` as uid 101 (su-exec); replacing the
    # entrypoint would run it as root.
    assert gateway["command"] == ["envoy", "-c", "/etc/envoy/envoy.yaml"]
    assert "entrypoints" not in gateway and "user" not in gateway
    (upload,) = gateway["uploads"]
    assert upload["file"] == "/etc/envoy/envoy.yaml"
    listener = yaml.safe_load(upload["content"])["static_resources"]["listeners"][0]
    assert listener["address"]["socket_address"] == {"address": "0.0.0.0", "port_value": 8080}

    broker = spec(BROKER)
    (conf,) = broker["uploads"]
    # The path the image's CMD reads, and the one the data flows replace with their own.
    assert conf["file"] == "/mosquitto/config/mosquitto.conf"
    assert "listener 1883" in conf["content"].splitlines()
    assert "command" not in broker

    cache = spec(CACHE)
    assert "uploads" not in cache and "command" not in cache
