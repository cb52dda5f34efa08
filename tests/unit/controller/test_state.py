"""The evidence on disk, and what the published answers say about health."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from edgefabric.controller import state
from edgefabric.traffic.reconcile import absent_from_published
from tests.unit.controller.fakes import FakeBackend, World, spec

RECORD = "api.unit.test."
EVIDENCE = {"azure": {"healthy": False, "consecutive_successes": 1, "success_streak_since": 99.0}}


def test_round_trip_is_atomic(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "s.json"
    state.save(path, RECORD, EVIDENCE, now=1000.0)
    loaded = state.load(path, RECORD, max_age_s=60, now=1030.0)
    assert loaded.evidence == EVIDENCE and loaded.reason == "fresh" and loaded.age_s == 30
    assert [p.name for p in path.parent.iterdir()] == ["s.json"]  # no temporary file left behind


@pytest.mark.parametrize(("content", "reason"), [
    (None, "no state file"),
    ("{", "not JSON"),
    ("[]", "not a JSON object"),
    (json.dumps({"version": 1, "record": "other.test.", "saved_at": 1000.0, "evidence": {}}), "for another record"),
    (json.dumps({"version": 1, "record": RECORD, "saved_at": 900.0, "evidence": EVIDENCE}), "stale"),
    (json.dumps({"version": 1, "record": RECORD, "saved_at": 1000.0, "evidence": [1]}), "no evidence"),
])  # fmt: skip
def test_unusable_evidence_says_why(tmp_path: Path, content: str | None, reason: str) -> None:
    path = tmp_path / "s.json"
    if content is not None:
        path.write_text(content)
    loaded = state.load(path, RECORD, max_age_s=60, now=1000.0)
    assert loaded.evidence is None and loaded.reason.startswith(reason)


def test_the_bare_form_of_once_is_read_by_its_age(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text(json.dumps(EVIDENCE))
    os.utime(path, (1000.0, 1000.0))
    assert state.load(path, RECORD, max_age_s=60, now=1010.0).evidence == EVIDENCE
    assert state.load(path, RECORD, max_age_s=60, now=1100.0).evidence is None


def _backend(name: str, published: dict | None, scale: int = 100, regions: bool = False) -> FakeBackend:
    world = World(published={name: published})
    return FakeBackend(name, world, scale=scale, supports_regions=regions)


def test_a_cloud_left_out_of_any_backend_is_absent() -> None:
    s = spec()  # 50 / 25 / 25 configured
    pdns = _backend("powerdns", {"default": {"aws": 67, "gcp": 33}})
    r53 = _backend("route53", {"default": {"aws": 128, "azure": 64, "gcp": 63}}, scale=255, regions=True)
    published = {"powerdns": pdns.read(s.record_spec()), "route53": r53.read(s.record_spec())}
    assert absent_from_published(s, published, [pdns, r53]) == {"azure": "absent from powerdns's default answer"}


def test_no_record_errors_and_foreign_addresses_say_nothing() -> None:
    s = spec()
    pdns = _backend("powerdns", None)
    broken = _backend("gcp_dns", None)
    moved = _backend("azure_tm", {"default": {"aws": 50, "192.0.2.9": 50}})
    published = {"powerdns": None, "gcp_dns": "error: timeout", "azure_tm": moved.read(s.record_spec())}
    assert absent_from_published(s, published, [pdns, broken, moved]) == {}


def test_weight_the_configuration_never_gives_is_no_evidence() -> None:
    # active-passive: only the primary is configured to serve, so the standbys' zeros say nothing.
    s = spec(strategy={"order": ["aws", "azure", "gcp"], "replication": "active-passive"})
    served_by_standby = _backend("powerdns", {"default": {"azure": 100}})
    published = {"powerdns": served_by_standby.read(s.record_spec())}
    assert absent_from_published(s, published, [served_by_standby]) == {
        "aws": "absent from powerdns's default answer"}
    # Failing open publishes the configured weights: nothing is absent.
    fail_open = _backend("powerdns", {"default": {"aws": 50, "azure": 25, "gcp": 25}})
    assert absent_from_published(s, {"powerdns": fail_open.read(s.record_spec())}, [fail_open]) == {}


def test_region_answers_count_each() -> None:
    rules = {"rules": [{"name": "europe-africa", "regions": ["europe"], "cloud": "azure", "weight": 70}],
             "default_weight": 100}  # fmt: skip
    s = spec(routing=rules)
    gcp = _backend("gcp_dns", {"default": {"aws": 100}, "europe-africa": {"azure": 82, "aws": 18}}, regions=True)
    # gcp is configured at 15 in europe-africa and serves 0 there: it was taken out.
    assert absent_from_published(s, {"gcp_dns": gcp.read(s.record_spec())}, [gcp]) == {
        "gcp": "absent from gcp_dns's europe-africa answer"}
