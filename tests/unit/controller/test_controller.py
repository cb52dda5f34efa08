"""The controller with in-process backends: deadlines, restarts, the lease, its metrics."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from edgefabric.controller.daemon import Controller
from edgefabric.controller.metrics import MetricsServer
from edgefabric.traffic.lease import FileLease
from tests.unit.controller.fakes import Clock, FakeBackend, Probes, World, names, recorder, spec

Events = list[tuple[str, dict[str, Any]]]


def controller(world: World, backends: list[FakeBackend], events: Events, **kw: Any) -> Controller:
    kw.setdefault("apply_timeout_s", 0.3)
    s = kw.pop("spec", None) or spec()
    return Controller(s, [], recorder(events), backends=lambda: list(backends), **kw)


# ------------------------------------------------------------------ deadlines


def test_a_hung_backend_never_delays_the_others_nor_the_loop(probes: Probes, events: Events) -> None:
    world = World()
    hang = threading.Event()
    fast, hung = FakeBackend("powerdns", world), FakeBackend("azure_tm", world, gate=hang)
    ctl = controller(world, [hung, fast], events)
    try:
        t0 = time.monotonic()
        ctl.tick(wait=False)
        assert time.monotonic() - t0 < 0.2  # the loop went on at once
        deadline = time.monotonic() + 2
        while "powerdns" not in world.published and time.monotonic() < deadline:
            time.sleep(0.01)
        assert world.published["powerdns"] == {"default": {"aws": 50, "azure": 25, "gcp": 25}}
        # Past the deadline: reported once, as an apply error naming the backend.
        time.sleep(0.35)
        t0 = time.monotonic()
        rec = ctl.tick(wait=True)
        assert time.monotonic() - t0 < 0.2  # a waiting tick waits for its own calls only
        by = {o.backend: o for o in rec.outcomes}
        assert by["powerdns"].ok and not by["azure_tm"].ok
        assert "previous call still running" in (by["azure_tm"].error or "")
        assert hung.calls == ["apply"]  # never a second call while the first hangs
        errors = [f for e, f in events if e == "apply_error"]
        assert errors[0] == {"backend": "azure_tm", "error": "no answer within 0.3s (dns.applyTimeoutS); "
                                                              "still running, retried once it returns"}
        assert len(errors) == 2 and errors[1]["backend"] == "azure_tm"
        assert errors[1]["error"].startswith("previous apply still running after 0.")
        # A waiting tick whose own call hangs waits for the deadline, no longer.
        slow = FakeBackend("gcp_dns", world, gate=hang)
        other = controller(world, [slow], [])
        t0 = time.monotonic()
        rec = other.tick(wait=True)
        assert 0.3 <= time.monotonic() - t0 < 0.6
        assert rec.outcomes[0].error == "no answer within 0.3s"
        probes.down.add("gcp")
        for _ in range(2):
            ctl.tick(wait=True)  # the probes and the healthy backend go on
        assert world.published["powerdns"] == {"default": {"aws": 67, "azure": 33}}
        hang.set()  # the hung call returns; the next tick retries with the current plan
        ctl.calls.idle(1)
        ctl.tick(wait=True)
        assert hung.calls == ["apply", "apply"] and world.published["azure_tm"] == {"default": {"aws": 67, "azure": 33}}
    finally:
        hang.set()
        ctl.close()


# ------------------------------------------------------------------ restarts


def test_restart_without_evidence_starts_a_cloud_absent_from_dns_down(probes: Probes, events: Events) -> None:
    clock = Clock()
    world = World(published={"powerdns": {"default": {"aws": 67, "gcp": 33}}})  # azure was taken out
    ctl = controller(world, [FakeBackend("powerdns", world)], events, clock=clock)
    ctl.start()
    rec = ctl.tick()
    assert rec.plan.default == {"aws": 67, "azure": 0, "gcp": 33}
    assert ("seeded", {"target": "azure", "to": "unhealthy",
                       "reason": "absent from powerdns's default answer for api.unit.test."}) in events
    # azure answers from now on: it must serve successThreshold (2) and the hold-down (5 s).
    for _ in range(4):
        clock.now += 1
        assert ctl.tick().plan.default["azure"] == 0
    clock.now += 1.5
    assert ctl.tick().plan.default["azure"] == 25  # streak since the first tick: 5.5 s
    assert world.published["powerdns"] == {"default": {"aws": 50, "azure": 25, "gcp": 25}}
    ctl.close()


def test_restart_continues_from_fresh_evidence(tmp_path: Path, probes: Probes, events: Events) -> None:
    clock = Clock()
    world = World()
    state_file = tmp_path / "ctl.state.json"
    first = controller(world, [FakeBackend("powerdns", world)], events, clock=clock, state_path=state_file)
    first.start()
    probes.down.add("azure")
    for _ in range(2):
        clock.now += 1
        first.tick()
    probes.down.clear()
    clock.now += 1
    first.tick()  # azure's success streak starts here, inside its recovery
    # Killed: no close(). Someone restores azure in DNS by hand meanwhile; the evidence wins.
    world.published["powerdns"] = {"default": {"aws": 50, "azure": 25, "gcp": 25}}
    clock.now += 2
    second = controller(world, [FakeBackend("powerdns", world)], events, clock=clock, state_path=state_file)
    second.start()
    assert ("restore", {"state_file": str(state_file), "used": True, "reason": "fresh", "age_s": 2.0,
                        "health": {"aws": True, "azure": False, "gcp": True}}) in events  # fmt: skip
    assert second.tick().plan.default["azure"] == 0  # 2 successes, but 2 s into a 5 s hold-down
    clock.now += 3
    assert second.tick().plan.default["azure"] == 25  # the hold-down it began before the restart
    second.close()


def test_stale_evidence_is_not_trusted(tmp_path: Path, probes: Probes, events: Events) -> None:
    clock = Clock()
    world = World(published={"powerdns": {"default": {"aws": 50, "azure": 25, "gcp": 25}}})
    state_file = tmp_path / "ctl.state.json"
    state_file.write_text(json.dumps({"version": 1, "record": "api.unit.test.", "saved_at": clock.now - 3600,
                                      "evidence": {"azure": {"healthy": False}}}))  # fmt: skip
    ctl = controller(world, [FakeBackend("powerdns", world)], events, clock=clock, state_path=state_file)
    ctl.start()
    assert ctl.tick().plan.default == {"aws": 50, "azure": 25, "gcp": 25}
    assert any(e == "restore" and f["used"] is False and f["reason"].startswith("stale") for e, f in events)
    ctl.close()


def test_a_library_caller_driving_tick_owns_its_tracker(probes: Probes, events: Events) -> None:
    # Without start() (the benchmark, tests), nothing is seeded from DNS.
    world = World(published={"powerdns": {"default": {"aws": 100}}})
    ctl = controller(world, [FakeBackend("powerdns", world)], events)
    assert ctl.tick().plan.default == {"aws": 50, "azure": 25, "gcp": 25}
    assert "seeded" not in names(events)
    ctl.close()


# ------------------------------------------------------------------ one writer


def test_one_writer_at_a_time_and_takeover_within_two_periods(
    tmp_path: Path, probes: Probes, events: Events
) -> None:
    world = World()
    lease_file = tmp_path / "api.lease"
    period, interval = 0.5, 0.05
    ctls, stops, threads = {}, {}, {}
    for who in ("a", "b"):
        lease = FileLease(lease_file, "api.unit.test.", period, identity=who)
        backends = [FakeBackend("powerdns", world, writer=who), FakeBackend("route53", world, writer=who, scale=255)]
        ctls[who] = controller(world, backends, events, lease=lease, interval_s=interval)
        stops[who] = threading.Event()
    threads["a"] = threading.Thread(target=ctls["a"].run, args=(interval, stops["a"]), daemon=True)
    threads["a"].start()
    time.sleep(0.2)
    threads["b"] = threading.Thread(target=ctls["b"].run, args=(interval, stops["b"]), daemon=True)
    threads["b"].start()
    time.sleep(1.0)
    assert {w for w, *_ in world.writes} == {"a"} and not ctls["b"].leader
    # a dies: its loop stops, and nobody releases its lease.
    ctls["a"].lease.release = lambda: None  # type: ignore[method-assign]
    stops["a"].set()
    threads["a"].join(5)
    died = time.monotonic()
    while not ctls["b"].leader and time.monotonic() - died < 3 * period:
        time.sleep(0.01)
    took = time.monotonic() - died
    assert ctls["b"].leader and took <= 2 * period, took
    time.sleep(0.3)
    stops["b"].set()
    threads["b"].join(5)
    writers = [w for w, *_ in world.writes]
    assert writers.count("a") >= 10 and writers.count("b") >= 3
    a_last = max(end for w, _b, _s, end in world.writes if w == "a")
    b_first = min(start for w, _b, start, _e in world.writes if w == "b")
    assert a_last < b_first  # never two writers at once
    assert writers == sorted(writers)  # all of a's writes, then all of b's


# ------------------------------------------------------------------ metrics


def _scrape(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    with urllib.request.urlopen(url + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def _get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_metrics_and_healthz_over_loopback(tmp_path: Path, probes: Probes, events: Events) -> None:
    world = World()
    hang = threading.Event()
    lease = FileLease(tmp_path / "api.lease", "api.unit.test.", 10, identity="ctl-1")
    ctl = controller(world, [FakeBackend("powerdns", world), FakeBackend("azure_tm", world, gate=hang)], events,
                     lease=lease, interval_s=1.0)  # fmt: skip
    other = controller(world, [], [], interval_s=1.0)  # a second controller in the process: its own registry
    server = MetricsServer(ctl.metrics, ctl.health).start()
    try:
        probes.down.add("gcp")
        for _ in range(2):
            ctl.tick()
        other.tick()
        m = _scrape(server.url)
        rec = {"record": "api.unit.test."}
        assert ({**rec, "cloud": "gcp"}, 0.0) in m["edgefabric_cloud_healthy"]
        assert ({**rec, "cloud": "aws"}, 1.0) in m["edgefabric_cloud_healthy"]
        assert ({**rec, "answer": "default", "cloud": "aws"}, 67.0) in m["edgefabric_weight"]
        assert ({**rec, "answer": "default", "cloud": "gcp"}, 0.0) in m["edgefabric_weight"]
        # The deadline missed, then a tick it could not be applied in (its call still hung).
        assert ({**rec, "backend": "azure_tm"}, 2.0) in m["edgefabric_apply_errors_total"]
        assert ({**rec, "backend": "powerdns"}, 2.0) in m["edgefabric_apply_duration_seconds_count"]
        assert ({**rec, "cloud": "aws"}, 2.0) in m["edgefabric_probe_latency_seconds_count"]
        assert ({**rec, "identity": "ctl-1"}, 1.0) in m["edgefabric_lease_held"]
        assert ({**rec, "holder": "ctl-1"}, 1.0) in m["edgefabric_lease_holder"]
        assert ({**rec}, 2.0) in m["edgefabric_ticks_total"]
        status, body = _get(server.url + "/healthz")
        assert status == 200 and body["status"] == "ok" and body["leader"] is True
        ctl._last_tick_at -= 3.5  # the loop stopped ticking 3.5 intervals ago
        status, body = _get(server.url + "/healthz")
        assert status == 503 and body["status"] == "stale"
    finally:
        hang.set()
        server.stop()
        ctl.close()
        other.close()


@pytest.mark.parametrize("path", ["/", "/nope"])
def test_unknown_paths_are_404(path: str, probes: Probes) -> None:
    ctl = controller(World(), [], [])
    server = MetricsServer(ctl.metrics, ctl.health).start()
    try:
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(server.url + path, timeout=5)
        assert err.value.code == 404
    finally:
        server.stop()
        ctl.close()
