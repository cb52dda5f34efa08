"""Restart seeding reads every published name, not only the first one.

A `manual` first name serves every configured cloud whatever their health, so its answers
never leave a cloud out; an automatic name beside it that dropped a cloud is the only
evidence left after a restart. These tests hold the controller to reading each name once
per backend, to starting such a cloud down for every name, and to a name whose read hangs
or fails costing the others nothing beyond the deadline.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from edgefabric.controller.daemon import Controller
from edgefabric.traffic.dns.base import ApplyResult, Published, RecordSpec, published_view
from edgefabric.traffic.planner import Plan
from edgefabric.traffic.spec import FailoverSpec
from tests.unit.controller.fakes import CLOUDS, Clock, Probes, recorder, spec

Events = list[tuple[str, dict[str, Any]]]

A, B = "a.unit.test.", "b.unit.test."
# What the configured weights publish with every cloud healthy (order aws, azure, gcp;
# default weight 50), and the same answer once aws was taken out.
ALL = {"default": {"aws": 50, "azure": 25, "gcp": 25}}
WITHOUT_AWS = {"default": {"azure": 50, "gcp": 50}}


def manual_and_automatic() -> list[FailoverSpec]:
    """Name A fails over by hand (never drops a cloud); name B automatically."""
    return [spec(record_name=A, strategy={"order": list(CLOUDS), "failover": "manual"}),
            spec(record_name=B, strategy={"order": list(CLOUDS)})]  # fmt: skip


@dataclass
class NamedBackend:
    """A backend publishing several names: record name -> answers. A read of a name in
    `hang` blocks until `gate` is set; a read of a name in `fail` raises."""

    name: str
    published: dict[str, Published]
    scale: int = 100
    supports_regions: bool = False
    hang: frozenset[str] = frozenset()
    fail: frozenset[str] = frozenset()
    gate: threading.Event = field(default_factory=threading.Event)
    reads: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def read(self, spec: RecordSpec) -> Published | None:
        with self.lock:
            self.reads.append(spec.name)
        if spec.name in self.hang:
            self.gate.wait()
        if spec.name in self.fail:
            raise RuntimeError(f"{self.name}: 503 reading {spec.name}")
        with self.lock:
            return self.published.get(spec.name)

    def apply(self, spec: RecordSpec, plan: Plan) -> ApplyResult:
        want = published_view(plan, self.supports_regions)
        with self.lock:
            changed = self.published.get(spec.name) != want
            self.published[spec.name] = want
        return ApplyResult(changed, [f"{self.name}:{spec.name}"])

    def delete(self, spec: RecordSpec) -> None:
        with self.lock:
            self.published.pop(spec.name, None)


def controller(records: list[FailoverSpec], backends: list[NamedBackend], events: Events) -> Controller:
    return Controller(records[0], [], recorder(events), clock=Clock(), apply_timeout_s=0.3,
                      backends=lambda: list(backends), records=records)  # fmt: skip


def test_a_cloud_dropped_by_the_automatic_second_name_starts_down(probes: Probes, events: Events) -> None:
    records = manual_and_automatic()
    pdns = NamedBackend("powerdns", {A: ALL, B: WITHOUT_AWS})
    ctl = controller(records, [pdns], events)
    try:
        ctl.start()
        rec = ctl.tick()
        # The manual first name serves aws, so only B's answer says aws was down.
        assert ("seeded", {"target": "aws", "to": "unhealthy",
                           "reason": f"absent from powerdns's default answer for {B}"}) in events  # fmt: skip
        assert ctl.tracker.healthy() == {"aws": False, "azure": True, "gcp": True}
        # B keeps aws out (no window serving the down cloud); manual A never moves.
        assert rec.plans is not None
        assert rec.plans[B].default == {"aws": 0, "azure": 50, "gcp": 50}
        assert rec.plans[A].default == {"aws": 50, "azure": 25, "gcp": 25}
        assert pdns.published[B] == WITHOUT_AWS
        seeded = [f for e, f in events if e == "seeded_from_published"]
        # Before the first probe only the seeded cloud has a verdict.
        assert seeded == [{"read": {A: ["powerdns"], B: ["powerdns"]}, "unread": {}, "errors": {},
                           "absent": ["aws"], "health": {"aws": False}}]  # fmt: skip
    finally:
        ctl.close()


def test_the_first_name_alone_would_not_have_seen_it(probes: Probes, events: Events) -> None:
    # The same published state, with the controller knowing only name A: nothing is seeded.
    # This is what the previous first-name-only seeding did, and why B must be read.
    records = manual_and_automatic()
    ctl = controller(records[:1], [NamedBackend("powerdns", {A: ALL, B: WITHOUT_AWS})], events)
    try:
        ctl.start()
        ctl.tick()
        assert not [f for e, f in events if e == "seeded"]
        assert ctl.tracker.healthy() == {"aws": True, "azure": True, "gcp": True}
    finally:
        ctl.close()


def test_one_read_per_backend_and_name(probes: Probes, events: Events) -> None:
    c = spec(record_name="c.unit.test.", strategy={"order": ["azure", "aws", "gcp"]})
    records = [*manual_and_automatic(), c]
    backends = [NamedBackend("powerdns", {A: ALL, B: ALL}), NamedBackend("route53", {A: ALL, B: WITHOUT_AWS})]
    ctl = controller(records, backends, events)
    try:
        ctl.start()
        ctl.tick()
        for _ in range(3):
            ctl.tick()  # later ticks apply; they read nothing
        for b in backends:
            assert sorted(b.reads) == sorted([A, B, c.record_name]), b.name
        assert ("seeded", {"target": "aws", "to": "unhealthy",
                           "reason": f"absent from route53's default answer for {B}"}) in events  # fmt: skip
        # `--once` without evidence seeds through `seed_evidence`: the same one read each.
        for b in backends:
            b.reads.clear()
        ctl.calls.idle(1)
        evidence = ctl.seed_evidence({})
        assert evidence["aws"]["healthy"] is False
        # By now the ticks have taken aws out of B on both backends too.
        assert evidence["aws"]["last_detail"] == f"started down: absent from powerdns's default answer for {B}"
        for b in backends:
            assert sorted(b.reads) == sorted([A, B, c.record_name]), b.name
    finally:
        ctl.close()


def test_a_hung_or_failing_name_costs_the_others_nothing_beyond_the_deadline(
    probes: Probes, events: Events
) -> None:
    # powerdns hangs reading A but answers B (aws dropped); route53 fails reading B.
    pdns = NamedBackend("powerdns", {A: ALL, B: WITHOUT_AWS}, hang=frozenset({A}))
    r53 = NamedBackend("route53", {A: ALL, B: ALL}, fail=frozenset({B}))
    ctl = controller(manual_and_automatic(), [pdns, r53], events)
    try:
        ctl.start()
        t0 = time.monotonic()
        rec = ctl.tick(wait=True)
        took = time.monotonic() - t0
        assert 0.3 <= took < 0.3 + 0.4, took  # waited for the hung read's deadline, no longer
        # B's answer on powerdns was read beside the hung A, and counts.
        assert ("seeded", {"target": "aws", "to": "unhealthy",
                           "reason": f"absent from powerdns's default answer for {B}"}) in events  # fmt: skip
        seeded = [f for e, f in events if e == "seeded_from_published"]
        assert len(seeded) == 1
        assert seeded[0]["read"] == {A: ["route53"], B: ["powerdns"]}
        assert seeded[0]["unread"] == {A: ["powerdns"], B: ["route53"]}
        # The failure is told; the hang (still running, no answer) is not an error yet.
        assert seeded[0]["errors"] == {B: {"route53": f"RuntimeError: route53: 503 reading {B}"}}
        # The backend whose call returned applies at once, with aws down for B.
        by = {o.backend: o for o in rec.outcomes}
        assert by["route53"].ok
        assert r53.published[B] == WITHOUT_AWS
        # powerdns's read call still runs: it gets no second call until it returns.
        assert not by["powerdns"].ok and "previous call still running" in (by["powerdns"].error or "")
        assert sorted(pdns.reads) == [A, B]
    finally:
        pdns.gate.set()
        ctl.close()
