"""Controller processes for the integration tests: a stack file, start/kill, the JSON log,
DNS sampling and metrics scrapes, all on loopback."""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dns.exception
import dns.resolver
import yaml
from prometheus_client.parser import text_string_to_metric_families

from devenv.endpoints import LocalEndpoints
from devenv.powerdns import PowerDnsServer
from edgefabric.traffic.dns.http import json_request

REPO = Path(__file__).resolve().parents[3]


def write_stack(dirpath: Path, name: str, eps: LocalEndpoints, record: str, backends: dict[str, Any],
                hold_down_s: float, interval_s: float = 0.5, **dns_over: Any) -> None:  # fmt: skip
    cfg = {
        "environment": name,
        "clouds": {c: {"enabled": True, "ingress": {"address": eps.address(c)}} for c in ("aws", "azure", "gcp")},
        "strategies": {"api-gateway": {"primary": "aws", "secondary": "azure", "tertiary": "gcp"}},
        "routing": {"rules": [], "defaultWeight": 50},
        "healthCheck": {"intervalS": interval_s, "timeoutS": 0.3, "failureThreshold": 2, "successThreshold": 2,
                        "recoveryHoldDownS": hold_down_s,
                        "check": {"type": "http", "path": "/health", "expectedStatus": 200, "port": eps.port}},
        "dns": {"recordName": record, "ttl": 1, "strategy": "api-gateway", "backends": backends, **dns_over},
    }  # fmt: skip
    (dirpath / f"Pulumi.{name}.yaml").write_text(yaml.safe_dump({"config": {f"edgefabric:{k}": v for k, v in cfg.items()}}))


def lua_records(pdns: PowerDnsServer, record: str) -> list[str]:
    """The LUA record contents published for `record`: what a writer applied, read back."""
    url = f"{pdns.api_url}/api/v1/servers/localhost/zones/{pdns.zone}?rrset_name={record}&rrset_type=LUA"
    _, zone = json_request("GET", url, {"X-API-Key": pdns.api_key})
    return [r["content"] for rr in zone["rrsets"] if rr["type"] == "LUA" for r in rr["records"]]


def pdns_backend(pdns: PowerDnsServer, zone: str) -> dict[str, Any]:
    return {"powerdns": {"apiUrl": pdns.api_url, "apiKeyRef": "config:powerdnsApiKey", "zone": zone}}


class Ctl:
    """One controller process; its JSON lines in `log_path`."""

    def __init__(self, workdir: Path, stack: str, args: list[str], env: dict[str, str], tag: str) -> None:
        self.log_path = workdir / f"{tag}.log"
        self.tag = tag
        with self.log_path.open("a") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edgefabric.controller.daemon", "--stack", stack, "--project-dir", str(workdir),
                 *args],
                cwd=workdir, env={**os.environ, "PYTHONPATH": str(REPO), **env}, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def lines(self) -> list[dict[str, Any]]:
        out = []
        for x in self.log_path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                if x.startswith("{"):
                    out.append(json.loads(x))
        return out

    def events(self, name: str) -> list[dict[str, Any]]:
        return [x for x in self.lines() if x["event"] == name]

    def metrics_url(self, timeout_s: float = 15) -> str:
        wait_for(f"{self.tag} serving metrics", lambda: bool(self.events("metrics")), timeout_s)
        return str(self.events("metrics")[0]["url"])

    def kill(self) -> None:
        """SIGKILL: no clean stop, no lease release: a crash."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        return self.proc.wait(timeout=15)


def wait_for(what: str, cond: Callable[[], bool], timeout_s: float, step_s: float = 0.05) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if cond():
            return time.monotonic() - started
        time.sleep(step_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for: {what}")


def seen(pdns: PowerDnsServer, record: str, n: int = 20) -> collections.Counter[str]:
    r = pdns.resolver(lifetime=1.0)
    counts: collections.Counter[str] = collections.Counter()
    for _ in range(n):
        with contextlib.suppress(dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.exception.Timeout):
            counts.update(a.address for a in r.resolve(record, "A"))
    return counts


class Sampler:
    """Resolves `record` over and over on a thread; records when each address was answered."""

    def __init__(self, pdns: PowerDnsServer, record: str) -> None:
        self.pdns, self.record = pdns, record
        self.hits: dict[str, list[float]] = collections.defaultdict(list)
        self.rounds = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        r = self.pdns.resolver(lifetime=1.0)
        while not self._stop.is_set():
            with contextlib.suppress(dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.exception.Timeout):
                now = time.monotonic()
                for a in r.resolve(self.record, "A"):
                    self.hits[a.address].append(now)
            self.rounds += 1
            time.sleep(0.005)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)


def scrape(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    with urllib.request.urlopen(url + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def value(metrics: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    """The sample of `name` whose labels include `labels`; 0 when there is none."""
    for got, v in metrics.get(name, []):
        if all(got.get(k) == want for k, want in labels.items()):
            return v
    return 0.0
