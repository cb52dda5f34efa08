"""Hysteresis with a fake clock, and real probes against local HTTP/TCP endpoints."""

from __future__ import annotations

import selectors
import socket
import sys
import threading
from collections.abc import Iterator

import pytest

from devenv.endpoints import LocalEndpoints
from edgefabric.errors import ConfigError
from edgefabric.traffic.health import (
    CustomProbe,
    HealthTracker,
    HttpProbe,
    ProbeResult,
    TcpProbe,
    Thresholds,
    assess,
    probe_many_sync,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def ok(flag: bool) -> dict[str, ProbeResult]:
    return {"aws": ProbeResult(flag, 0.001, "ok" if flag else "fail")}


def feed(tracker: HealthTracker, clock: FakeClock, outcomes: list[bool], step: float = 1.0) -> list[bool]:
    seen = []
    for flag in outcomes:
        clock.advance(step)
        tracker.observe(ok(flag))
        seen.append(tracker.states["aws"].healthy)
    return seen


def test_down_only_after_failure_threshold_consecutive_failures() -> None:
    clock = FakeClock()
    t = HealthTracker(Thresholds(3, 2, 10), clock)
    assert feed(t, clock, [False, False, True, False, False]) == [True] * 5
    transitions = []
    clock.advance(1)
    transitions += t.observe(ok(False))
    assert t.states["aws"].healthy is False
    assert [(x.target, x.to_healthy) for x in transitions] == [("aws", False)]


def test_recovery_needs_success_threshold_and_hold_down() -> None:
    clock = FakeClock()
    t = HealthTracker(Thresholds(failure_threshold=1, success_threshold=2, recovery_hold_down_s=10), clock)
    feed(t, clock, [False])
    assert t.states["aws"].healthy is False
    # Two successes are enough for the threshold but the streak is only 1 s old.
    assert feed(t, clock, [True, True]) == [False, False]
    # Streak age reaches 10 s at the 11th success (streak started at the first one).
    states = feed(t, clock, [True] * 9)
    assert states[-2] is False and states[-1] is True
    assert t.states["aws"].last_transition_at == clock.now


def test_hold_down_restarts_after_any_failure() -> None:
    clock = FakeClock()
    t = HealthTracker(Thresholds(1, 1, 5), clock)
    feed(t, clock, [False])
    feed(t, clock, [True, True, True, True])  # 3 s of streak
    feed(t, clock, [False])  # resets the streak
    assert feed(t, clock, [True] * 5) == [False] * 5
    assert feed(t, clock, [True]) == [True]


def test_success_threshold_larger_than_hold_down() -> None:
    clock = FakeClock()
    t = HealthTracker(Thresholds(1, 4, 0), clock)
    feed(t, clock, [False])
    assert feed(t, clock, [True] * 4) == [False, False, False, True]


def test_flapping_target_never_changes_state() -> None:
    clock = FakeClock()
    t = HealthTracker(Thresholds(3, 2, 5), clock)
    flips = 0
    last = True
    for i in range(60):
        clock.advance(1)
        t.observe(ok(i % 2 == 0))
        flips += t.states["aws"].healthy != last
        last = t.states["aws"].healthy
    assert flips == 0 and last is True


def test_flapping_while_down_never_recovers() -> None:
    clock = FakeClock()
    t = HealthTracker(Thresholds(2, 2, 3), clock)
    feed(t, clock, [False, False])
    assert feed(t, clock, [True, False] * 20) == [False] * 40


def test_evidence_round_trip_keeps_hold_down_across_runs() -> None:
    clock = FakeClock()
    th = Thresholds(1, 1, 10)
    t = HealthTracker(th, clock)
    feed(t, clock, [False, True])
    again = HealthTracker.from_evidence(th, t.evidence(), clock)
    clock.advance(9)  # streak age 9 s
    again.observe(ok(True))
    assert again.states["aws"].healthy is False
    clock.advance(1)
    again.observe(ok(True))
    assert again.states["aws"].healthy is True


def test_invalid_thresholds_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"healthCheck\.failureThreshold"):
        Thresholds(failure_threshold=0)
    with pytest.raises(ConfigError, match=r"healthCheck\.recoveryHoldDownS"):
        Thresholds(recovery_hold_down_s=-1)


# ----------------------------------------------------------- real endpoints


class Blackhole:
    """Accepts connections and never answers; records the peak number held open at once."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(256)
        self.sock.setblocking(False)
        self.address = self.sock.getsockname()
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self.sock, selectors.EVENT_READ)
        open_conns = 0
        while not self._stop.is_set():
            for key, _ in sel.select(timeout=0.05):
                if key.fileobj is self.sock:
                    conn, _ = self.sock.accept()
                    sel.register(conn, selectors.EVENT_READ)
                    open_conns += 1
                    self.peak = max(self.peak, open_conns)
                else:
                    conn = key.fileobj  # type: ignore[assignment]
                    if not conn.recv(4096):  # the client gave up (timeout) and closed
                        sel.unregister(conn)
                        conn.close()
                        open_conns -= 1
        sel.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


@pytest.fixture
def blackhole() -> Iterator[Blackhole]:
    hole = Blackhole()
    yield hole
    hole.close()


def test_http_probes_against_real_endpoints(endpoints: LocalEndpoints) -> None:
    probes = {c: HttpProbe(endpoints.health_url(c)) for c in endpoints.clouds()}
    assert all(r.ok for r in probe_many_sync(probes, 1.0).values())
    endpoints.set_healthy("azure", False)
    endpoints.stop("gcp")
    res = probe_many_sync(probes, 1.0)
    assert res["aws"].ok
    assert not res["azure"].ok and "503" in res["azure"].detail
    assert not res["gcp"].ok and "Refused" in res["gcp"].detail


def test_http_expected_status_and_tcp(endpoints: LocalEndpoints) -> None:
    url = endpoints.health_url("aws")
    assert not probe_many_sync({"x": HttpProbe(url, expected_status=204)}, 1.0)["x"].ok
    assert probe_many_sync({"x": TcpProbe(endpoints.address("aws"), endpoints.port)}, 1.0)["x"].ok
    endpoints.stop("aws")
    assert not probe_many_sync({"x": TcpProbe(endpoints.address("aws"), endpoints.port)}, 1.0)["x"].ok


@pytest.mark.parametrize("concurrency", [1, 5, 20])
def test_timeouts_and_concurrency_bound(blackhole: Blackhole, concurrency: int) -> None:
    host, port = blackhole.address
    probes = {f"t{i}": HttpProbe(f"http://{host}:{port}/health") for i in range(2 * concurrency)}
    res = probe_many_sync(probes, 0.3, concurrency=concurrency)
    assert all(not r.ok and "timeout" in r.detail for r in res.values())
    assert all(r.latency_s >= 0.3 for r in res.values())  # a hung target costs the whole timeout
    # The black hole saw exactly `concurrency` probes held open at once: bounded, and used fully.
    assert blackhole.peak == concurrency


def test_custom_probe_exit_code_and_timeout() -> None:
    res = probe_many_sync(
        {
            "good": CustomProbe((sys.executable, "-c", "raise SystemExit(0)")),
            "bad": CustomProbe((sys.executable, "-c", "raise SystemExit(3)")),
            "slow": CustomProbe((sys.executable, "-c", "import time; time.sleep(5)")),
        },
        1.0,
    )
    assert res["good"].ok and not res["bad"].ok and res["bad"].detail == "exit 3"
    assert not res["slow"].ok and "timeout" in res["slow"].detail


def test_assess_reaches_a_verdict_in_threshold_rounds(endpoints: LocalEndpoints) -> None:
    endpoints.stop("gcp")
    probes = {c: HttpProbe(endpoints.health_url(c)) for c in endpoints.clouds()}
    sleeps: list[float] = []
    tracker = assess(probes, Thresholds(3, 2, 60), 0.5, round_gap_s=0.25, sleep=sleeps.append)
    assert tracker.healthy() == {"aws": True, "azure": True, "gcp": False}
    assert sleeps == [0.25, 0.25]  # three rounds, and only gcp was re-probed
    # With everything healthy one round is enough.
    endpoints.start("gcp")
    sleeps.clear()
    fresh = assess(probes, Thresholds(3, 2, 60), 0.5, round_gap_s=0.25, sleep=sleeps.append)
    assert all(fresh.healthy().values()) and sleeps == []
    # Continuing from the down evidence, gcp stays down: the hold-down has not passed.
    again = assess(probes, Thresholds(3, 2, 60), 0.5, evidence=tracker.evidence(), sleep=sleeps.append)
    assert again.healthy()["gcp"] is False
