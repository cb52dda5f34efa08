"""In-process stand-ins for the controller's unit tests: backends that publish into a dict
(one can hang until released), a probe round answered from a dict, and a settable clock."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from edgefabric.controller import daemon
from edgefabric.traffic.dns.base import ApplyResult, Published, RecordSpec, published_view
from edgefabric.traffic.health import HealthTracker, ProbeResult, Transition
from edgefabric.traffic.planner import Plan
from edgefabric.traffic.spec import FailoverSpec

CLOUDS = ("aws", "azure", "gcp")


def spec(hold_down_s: float = 5.0, interval_s: float = 1.0, **over: Any) -> FailoverSpec:
    props: dict[str, Any] = {
        "record_name": "api.unit.test.",
        "ttl": 30,
        "endpoints": {c: {"address": f"127.0.1.{i + 1}"} for i, c in enumerate(CLOUDS)},
        "health_check": {"interval_s": interval_s, "timeout_s": 0.5, "failure_threshold": 2, "success_threshold": 2,
                         "recovery_hold_down_s": hold_down_s, "check": {"type": "http", "port": 9}},
        "strategy": {"order": list(CLOUDS)},
        "routing": {"rules": [], "default_weight": 50},
        "backends": {"powerdns": {"api_url": "http://127.0.0.1:9", "api_key_ref": "env:UNIT_KEY",
                                  "zone": "unit.test."}},
        **over,
    }  # fmt: skip
    return FailoverSpec.from_inputs(props)


@dataclass
class World:
    """What every fake backend publishes, and who wrote it when."""

    published: dict[str, Published | None] = field(default_factory=dict)
    writes: list[tuple[str, str, float, float]] = field(default_factory=list)  # (writer, backend, start, end)
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class FakeBackend:
    name: str
    world: World
    writer: str = "?"
    scale: int = 100
    supports_regions: bool = False
    gate: threading.Event | None = None  # apply/read block until it is set
    apply_s: float = 0.0
    calls: list[str] = field(default_factory=list)

    def read(self, spec: RecordSpec) -> Published | None:
        self.calls.append("read")
        if self.gate is not None:
            self.gate.wait()
        with self.world.lock:
            return self.world.published.get(self.name)

    def apply(self, spec: RecordSpec, plan: Plan) -> ApplyResult:
        self.calls.append("apply")
        start = time.monotonic()
        if self.gate is not None:
            self.gate.wait()
        time.sleep(self.apply_s)
        want = published_view(plan, self.supports_regions)
        with self.world.lock:
            changed = self.world.published.get(self.name) != want
            self.world.published[self.name] = want
            self.world.writes.append((self.writer, self.name, start, time.monotonic()))
        return ApplyResult(changed, [f"{self.name}:{spec.name}"])

    def delete(self, spec: RecordSpec) -> None:
        with self.world.lock:
            self.world.published.pop(self.name, None)


class Probes:
    """The probe round: each cloud healthy unless listed in `down`."""

    def __init__(self) -> None:
        self.down: set[str] = set()
        self.rounds = 0

    def __call__(self, spec: FailoverSpec, tracker: HealthTracker, concurrency: int = 100
                 ) -> tuple[dict[str, ProbeResult], list[Transition]]:  # fmt: skip
        self.rounds += 1
        results = {c: ProbeResult(c not in self.down, 0.001, "fake") for c in spec.endpoints}
        return results, tracker.observe(results)


@pytest.fixture
def probes(monkeypatch: pytest.MonkeyPatch) -> Probes:
    fake = Probes()
    monkeypatch.setattr(daemon, "probe_round_results", fake)
    return fake


class Clock:
    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def events() -> Iterator[list[tuple[str, dict[str, Any]]]]:
    yield []


def recorder(into: list[tuple[str, dict[str, Any]]]) -> Callable[..., None]:
    def log(event: str, **fields: Any) -> None:
        into.append((event, fields))

    return log


def names(events: list[tuple[str, dict[str, Any]]]) -> list[str]:
    return [e for e, _ in events]
