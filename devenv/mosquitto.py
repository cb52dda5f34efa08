"""Real `mosquitto` brokers on loopback running the generated data-flow configs: for the
integration tests, `bench/dataflow.py` and the local demo.

Debian package: mosquitto (2.0). Every broker of a topology gets a directory with exactly
what `edgefabric.dataflow` renders (`config/mosquitto.conf`, `config/acl`, `certs/*`,
`data/`), a free loopback port, and a `mosquitto -c` process of its own, which can be
stopped and started again on the same port and data (an upstream outage).

    fabric = LocalFabric.create(tmp, flows, {"eu-west": "azure"})
    fabric.start()
    fabric.client_tls("site-factory-berlin")   # (ca, cert, key) paths for a client
    fabric.broker("region-eu-west").stop(); ...; .start()
    fabric.stop()
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

from devenv.processes import terminate
from edgefabric.config import DataFlowsConfig
from edgefabric.dataflow import Endpoint, Issued, Placement, Topology, issue, new_ca, topology_of
from edgefabric.dataflow.mosquitto import cert_files, config_files

INSTALL_HINT = "apt-get update && apt-get install -y mosquitto mosquitto-clients"
HOSTS = ("127.0.0.1", "localhost")


class MosquittoStartError(RuntimeError):
    pass


def mosquitto_binary() -> str:
    for candidate in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if candidate and Path(candidate).exists():
            return candidate
    raise MosquittoStartError(f"mosquitto is not installed; {INSTALL_HINT}")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _write(path: Path, text: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Created with its final mode: a key is never readable by others, not even for a moment.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(path, mode)


@dataclass
class LocalBroker:
    """One broker's directory, port and process."""

    key: str
    port: int
    root: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def config(self) -> Path:
        return self.root / "config" / "mosquitto.conf"

    @property
    def log(self) -> Path:
        return self.root / "mosquitto.log"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout_s: float = 10.0) -> None:
        if self.running:
            return
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([mosquitto_binary(), "-c", str(self.config)],
                                         stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise MosquittoStartError(f"mosquitto {self.key} exited {self.proc.returncode}:\n"
                                          f"{self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise MosquittoStartError(f"mosquitto {self.key} did not listen on {self.port} in {timeout_s}s")

    def stop(self) -> None:
        """SIGTERM: mosquitto writes its persistence file on the way out."""
        if self.proc is not None:
            terminate(self.proc.pid)
            self.proc.wait()
            self.proc = None


@dataclass
class LocalFabric:
    """Every broker of a topology on loopback, with the stack CA and its client certificates."""

    topo: Topology
    root: Path
    ca: Issued
    brokers: dict[str, LocalBroker]
    clients: dict[str, Issued] = field(default_factory=dict)

    @classmethod
    def create(cls, root: Path, flows: DataFlowsConfig, region_clouds: Mapping[str, str]) -> LocalFabric:
        """Issue the certificates and render every broker's files under `root` (not started)."""
        topo = topology_of(flows, region_clouds)
        ca = new_ca("edgefabric local data flows")
        brokers = {b.key: LocalBroker(b.key, free_port(), root / b.key) for b in topo.brokers}
        fabric = cls(topo, root, ca, brokers)
        for broker in topo.brokers:
            fabric.render(broker.key)
        for identity in topo.client_identities():
            if not identity.startswith("bridge-"):
                fabric.clients[identity] = issue(ca, identity, "client")
        return fabric

    def placement(self, key: str) -> Placement:
        local = self.brokers[key]
        return Placement(port=local.port, config_dir=str(local.root / "config"),
                         certs_dir=str(local.root / "certs"), data_dir=str(local.root / "data"),
                         bind="127.0.0.1", log_dest="stderr", user="root" if os.geteuid() == 0 else None)

    def render(self, key: str) -> None:
        broker, local = self.topo.broker(key), self.brokers[key]
        upstream = Endpoint("127.0.0.1", self.brokers[broker.upstream].port) if broker.upstream else None
        place = self.placement(key)
        for name, text in config_files(self.topo, key, place, upstream).items():
            _write(local.root / "config" / name, text, 0o644)
        server = issue(self.ca, key, "server", hosts=HOSTS)
        bridge = issue(self.ca, broker.bridge_identity, "client") if broker.bridge_identity else None
        for name, text in cert_files(self.ca.cert_pem, server, bridge).items():
            _write(local.root / "certs" / name, text, 0o600 if name.endswith(".key") else 0o644)
        (local.root / "data").mkdir(parents=True, exist_ok=True)

    def broker(self, key: str) -> LocalBroker:
        return self.brokers[key]

    def start(self, keys: list[str] | None = None) -> None:
        """Start brokers, upstream first, so that bridges connect at once."""
        order = {"core": 0, "region": 1, "edge": 2}
        for broker in sorted(self.topo.brokers, key=lambda b: order[b.tier]):
            if keys is None or broker.key in keys:
                self.brokers[broker.key].start()

    def stop(self) -> None:
        for local in self.brokers.values():
            local.stop()

    def client_tls(self, identity: str) -> tuple[str, str, str]:
        """(ca, cert, key) file paths for a client presenting `identity`."""
        issued = self.clients[identity]
        where = self.root / "clients" / identity
        if not (where / "client.key").exists():
            _write(where / "ca.crt", self.ca.cert_pem, 0o644)
            _write(where / "client.crt", issued.cert_pem, 0o644)
            _write(where / "client.key", issued.key_pem, 0o600)
        return str(where / "ca.crt"), str(where / "client.crt"), str(where / "client.key")


class Subscriber:
    """A paho client that records every message it receives on `topic`, thread-safely."""

    def __init__(self, client: mqtt.Client) -> None:
        self.client = client
        self.messages: list[mqtt.MQTTMessage] = []
        self.arrived: list[float] = []  # time.perf_counter() at arrival, per message
        self._lock = threading.Lock()
        client.on_message = self._on_message

    def _on_message(self, _client: mqtt.Client, _userdata: object, msg: mqtt.MQTTMessage) -> None:
        now = time.perf_counter()
        with self._lock:
            self.messages.append(msg)
            self.arrived.append(now)

    def wait_for(self, count: int, timeout_s: float) -> list[mqtt.MQTTMessage]:
        """The first `count` messages, waiting up to `timeout_s`; fewer if they do not come."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.messages) >= count:
                    return list(self.messages)
            time.sleep(0.01)
        with self._lock:
            return list(self.messages)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def connect(fabric: LocalFabric, identity: str | None, broker_key: str, *, client_id: str = "",
            clean: bool = True, timeout_s: float = 10.0,
            tls_files: tuple[str, str, str] | None = None) -> mqtt.Client:
    """A connected paho client (network loop running) of `broker_key`, presenting the client
    certificate of `identity`, or `tls_files` (ca, cert, key), or none at all (identity None).
    Raises ConnectionError when the broker does not accept it."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean,
                         reconnect_on_failure=False)
    if tls_files is None and identity is not None:
        tls_files = fabric.client_tls(identity)
    if tls_files is not None:
        client.tls_set(ca_certs=tls_files[0], certfile=tls_files[1], keyfile=tls_files[2])
    else:
        client.tls_set(ca_certs=str(_ca_file(fabric)))
    connected = threading.Event()
    outcome: list[str] = []

    def on_connect(_c: mqtt.Client, _u: object, _f: object, reason: ReasonCode, _p: object) -> None:
        outcome.append(str(reason))
        connected.set()

    client.on_connect = on_connect
    client.max_inflight_messages_set(100)
    try:
        client.connect("127.0.0.1", fabric.broker(broker_key).port, keepalive=30)
    except (OSError, ssl.SSLError) as exc:
        raise ConnectionError(f"{broker_key} refused {identity or 'a client without a certificate'}: {exc}") from exc
    client.loop_start()
    if not connected.wait(timeout_s) or outcome != ["Success"]:
        client.loop_stop()
        raise ConnectionError(f"{broker_key} did not accept {identity}: {outcome or 'no CONNACK'}")
    return client


def subscribe(fabric: LocalFabric, identity: str, broker_key: str, topic: str, *, qos: int = 1,
              client_id: str = "", clean: bool = True) -> Subscriber:
    """A subscriber of `topic` at `broker_key`, subscribed (SUBACK received) when this returns."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean,
                         reconnect_on_failure=True)
    subscriber = Subscriber(client)
    ca, cert, key = fabric.client_tls(identity)
    client.tls_set(ca_certs=ca, certfile=cert, keyfile=key)
    subscribed = threading.Event()

    def on_connect(c: mqtt.Client, _u: object, _f: object, reason: ReasonCode, _p: object) -> None:
        if not reason.is_failure:
            c.subscribe(topic, qos)

    def on_subscribe(_c: mqtt.Client, _u: object, _mid: int, reasons: list[ReasonCode], _p: object) -> None:
        if all(not r.is_failure for r in reasons):
            subscribed.set()

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.connect("127.0.0.1", fabric.broker(broker_key).port, keepalive=30)
    client.loop_start()
    if not subscribed.wait(10):
        subscriber.close()
        raise ConnectionError(f"{identity} could not subscribe to {topic} at {broker_key}")
    return subscriber


def _ca_file(fabric: LocalFabric) -> Path:
    path = fabric.root / "ca.crt"
    if not path.exists():
        _write(path, fabric.ca.cert_pem, 0o644)
    return path


def demo(root: Path, site: str = "factory-berlin", region: str = "eu-west", cloud: str = "azure",
         flows: DataFlowsConfig | None = None) -> str:
    """Publish one reading at an edge site's broker and return it as the core broker received it.
    `flows` is a stack's `dataFlows` (topics, retention, buffers); only `site`'s chain runs."""
    flows = (flows or DataFlowsConfig()).model_copy(update={"sites": {site: region}})
    fabric = LocalFabric.create(root, flows, {region: cloud})
    fabric.start()
    try:
        root_topic = flows.up[0].root
        core = subscribe(fabric, f"core-{cloud}", f"core-{cloud}", f"{root_topic}/{site}/#")
        edge = connect(fabric, f"site-{site}", f"edge-{site}")
        sent = time.perf_counter()
        edge.publish(f"{root_topic}/{site}/line-1/temperature", "21.5", qos=1).wait_for_publish(10)
        edge.disconnect()
        received = core.wait_for(1, 10)
        core.close()
        if not received:
            raise MosquittoStartError("the reading did not reach the core broker within 10 s")
        msg, took_ms = received[0], (core.arrived[0] - sent) * 1000
        return (f"edge-{site} -> region-{region} -> core-{cloud}: {msg.topic} = {msg.payload.decode()} "
                f"in {took_ms:.1f} ms (TLS bridges; a CA and client certificates made for this run by the stack's PKI code)")
    finally:
        fabric.stop()


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory(prefix="edgefabric-mqtt-") as tmp:
        print(demo(Path(tmp)))
