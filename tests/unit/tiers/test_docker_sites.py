"""A Docker edge site runs each image the way the Kubernetes runtime does (image_facts.yaml),
and publishes on the host only what a Kubernetes site opens to anywhere: the gateway and the
MQTT listeners. Before, every port of every container was published (redis with no password
included) and the images ran with their defaults: envoy listened on 10000, not on the probed
8080, and mosquitto 2 without a listener served its own loopback only."""

from __future__ import annotations

import http.server
import os
import shutil
import socket
import subprocess
import threading

import yaml

from edgefabric.config import EdgeService
from edgefabric.tiers.edge_sites import docker_container_spec, docker_health
from edgefabric.tiers.images import facts_for
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


PROCESSOR = EdgeService.model_validate({
    "name": "realtime-processing", "kind": "realtime-processing", "image": "ghcr.io/edgefabric/stream-processor:0.9.3",
    "requirements": REQ, "ports": [{"name": "http", "port": 8090, "protocol": "http"}]})


def test_health_checks_run_only_what_each_image_ships() -> None:
    # Before: `wget` for every http service and `nc` for the rest, through /bin/sh. envoy's image
    # (ubuntu, ca-certificates only) has neither, redis's has neither, a distroless one no shell.
    for svc in (GATEWAY, CACHE, BROKER, PROCESSOR):
        health = docker_health(svc)
        facts = facts_for(svc.image)
        assert facts is not None
        if health is None:
            assert facts.docker_health is None and svc is PROCESSOR
            continue
        test = health.tests
        assert test[0] == "CMD" and test[1] in facts.tools, (svc.name, test, facts.tools)
    assert docker_health(CACHE).tests == ["CMD", "redis-cli", "-p", "6379", "ping"]  # type: ignore[union-attr]
    assert docker_health(BROKER).tests == ["CMD", "nc", "-z", "127.0.0.1", "1883"]  # type: ignore[union-attr]


class _Status(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/ready" else 503)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_envoys_health_check_really_reads_the_status_with_bash_alone() -> None:
    """The envoy test runs as Docker would run it (exec, no shell of ours), with bash only:
    200 on the health path passes, 503 and a closed port fail."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Status)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        bash = shutil.which("bash")
        assert bash is not None

        def run(path: str, to: int) -> int:
            test = facts_for(GATEWAY.image).docker_health_test(to, path)  # type: ignore[union-attr]
            assert test is not None and test[:2] == ["CMD", "bash"]
            return subprocess.run([bash, *test[2:]], env={"PATH": os.defpath}, timeout=10,
                                  capture_output=True).returncode

        assert run("/ready", port) == 0
        assert run("/not-ready", port) != 0
        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))
        free = closed.getsockname()[1]
        closed.close()
        assert run("/ready", free) != 0
    finally:
        server.shutdown()
