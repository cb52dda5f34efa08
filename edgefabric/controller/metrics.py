"""The controller's Prometheus metrics and its `/metrics` + `/healthz` endpoint.

Each `Controller` has its own `CollectorRegistry` (never the process-global one), so several
controllers in one process (tests, the benchmark) keep apart.

| metric | type | labels |
|---|---|---|
| `edgefabric_probe_latency_seconds` | histogram | record, cloud |
| `edgefabric_cloud_healthy` | gauge: the hysteresis verdict, 1 healthy, 0 down | record, cloud |
| `edgefabric_weight` | gauge: planned weight of 100 | record, answer, cloud |
| `edgefabric_fail_open` | gauge: 1 while every cloud is down and the configured weights are kept | record |
| `edgefabric_apply_duration_seconds` | histogram: one backend call, error or not | record, backend |
| `edgefabric_apply_errors_total` | counter: failed, timed-out or skipped applies | record, backend |
| `edgefabric_lease_held` | gauge: 1 while this controller holds the record's lease | record, identity |
| `edgefabric_lease_holder` | gauge: 1 for the holder this controller last saw | record, holder |
| `edgefabric_ticks_total` | counter | record |
| `edgefabric_last_tick_timestamp_seconds` | gauge | record |

`/healthz` answers 200 while the loop ticks and 503 once the last completed tick is older
than three intervals (a JSON body says which), for a liveness probe.

Engine-free: never imports pulumi.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_APPLY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)


class ControllerMetrics:
    def __init__(self, record: str, identity: str) -> None:
        self.record = record
        self.identity = identity
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.probe_latency = Histogram("edgefabric_probe_latency_seconds", "Health probe latency per cloud.",
                                       ["record", "cloud"], buckets=_LATENCY_BUCKETS, registry=r)  # fmt: skip
        self.cloud_healthy = Gauge("edgefabric_cloud_healthy", "Hysteresis verdict per cloud: 1 healthy, 0 down.",
                                   ["record", "cloud"], registry=r)  # fmt: skip
        self.weight = Gauge("edgefabric_weight", "Planned weight (of 100) per answer and cloud.",
                            ["record", "answer", "cloud"], registry=r)  # fmt: skip
        self.fail_open = Gauge("edgefabric_fail_open", "1 while every cloud is down (configured weights kept).",
                               ["record"], registry=r)  # fmt: skip
        self.apply_duration = Histogram("edgefabric_apply_duration_seconds", "One backend apply, error or not.",
                                        ["record", "backend"], buckets=_APPLY_BUCKETS, registry=r)  # fmt: skip
        self.apply_errors = Counter("edgefabric_apply_errors", "Backend applies that failed, timed out or were skipped.",
                                    ["record", "backend"], registry=r)  # fmt: skip
        self.lease_held = Gauge("edgefabric_lease_held", "1 while this controller holds the record's lease.",
                                ["record", "identity"], registry=r)  # fmt: skip
        self.lease_holder = Gauge("edgefabric_lease_holder", "1 for the lease holder this controller last saw.",
                                  ["record", "holder"], registry=r)  # fmt: skip
        self.ticks = Counter("edgefabric_ticks", "Control loop ticks.", ["record"], registry=r)
        self.last_tick = Gauge("edgefabric_last_tick_timestamp_seconds", "When the last tick completed (epoch s).",
                               ["record"], registry=r)  # fmt: skip
        self._holder: str | None = None
        self._lock = threading.Lock()

    # ---- recording
    def probe(self, cloud: str, latency_s: float) -> None:
        self.probe_latency.labels(self.record, cloud).observe(latency_s)

    def verdicts(self, healthy: Mapping[str, bool]) -> None:
        for cloud, ok in healthy.items():
            self.cloud_healthy.labels(self.record, cloud).set(1 if ok else 0)

    def weights(self, answers: Mapping[str, Mapping[str, int]], fail_open: bool, record: str | None = None) -> None:
        """One published name's planned weights (default: the controller's first name)."""
        name = record if record is not None else self.record
        for answer, weights in answers.items():
            for cloud, w in weights.items():
                self.weight.labels(name, answer, cloud).set(w)
        self.fail_open.labels(name).set(1 if fail_open else 0)

    def applied(self, backend: str, duration_s: float | None) -> None:
        """One backend apply returned (successfully or not) after `duration_s`."""
        if duration_s is not None:
            self.apply_duration.labels(self.record, backend).observe(duration_s)

    def apply_error(self, backend: str) -> None:
        self.apply_errors.labels(self.record, backend).inc()

    def lease(self, held: bool, holder: str | None) -> None:
        self.lease_held.labels(self.record, self.identity).set(1 if held else 0)
        with self._lock:
            if holder != self._holder:
                if self._holder is not None:
                    self.lease_holder.remove(self.record, self._holder)
                if holder is not None:
                    self.lease_holder.labels(self.record, holder).set(1)
                self._holder = holder

    def tick(self, at: float) -> None:
        self.ticks.labels(self.record).inc()
        self.last_tick.labels(self.record).set(at)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class MetricsServer:
    """`/metrics` and `/healthz` over HTTP on `host:port` (port 0: any free port)."""

    def __init__(self, metrics: ControllerMetrics, health: Callable[[], tuple[bool, dict[str, object]]],
                 host: str = "127.0.0.1", port: int = 0) -> None:  # fmt: skip
        self.metrics = metrics
        self.health = health
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, CONTENT_TYPE_LATEST, server.metrics.exposition())
                elif path == "/healthz":
                    ok, detail = server.health()
                    self._send(200 if ok else 503, "application/json", json.dumps(detail).encode() + b"\n")
                else:
                    self._send(404, "text/plain; charset=utf-8", b"not found: /metrics, /healthz\n")

            def _send(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return  # the controller logs JSON lines; scrapes are not events

        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._httpd.daemon_threads = True
        self.host, self.port = host, int(self._httpd.server_address[1])
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="metrics", daemon=True)  # fmt: skip

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def staleness(last_tick_at: float, interval_s: float, now: float | None = None) -> tuple[bool, dict[str, object]]:
    """Healthy while the last tick (monotonic seconds) is at most three intervals old."""
    age = (time.monotonic() if now is None else now) - last_tick_at
    ok = age <= 3 * interval_s
    return ok, {"status": "ok" if ok else "stale", "last_tick_age_s": round(age, 3), "interval_s": interval_s}
