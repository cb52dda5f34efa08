"""The file lease: one holder at a time, renewal, takeover after expiry, release."""

from __future__ import annotations

import threading
from pathlib import Path

from edgefabric.traffic.lease import FileLease
from edgefabric.traffic.reconcile import LeaseRecord, live_lease_holder, read_lease
from tests.unit.controller.fakes import Clock, spec

RECORD = "api.unit.test."


def pair(tmp_path: Path, clock: Clock, duration_s: float = 10.0) -> tuple[FileLease, FileLease]:
    path = tmp_path / "api.lease"
    return (FileLease(path, RECORD, duration_s, identity="a", clock=clock),
            FileLease(path, RECORD, duration_s, identity="b", clock=clock))  # fmt: skip


def test_one_holder_renews_the_other_stands_by(tmp_path: Path) -> None:
    clock = Clock()
    a, b = pair(tmp_path, clock)
    first = a.acquire()
    assert first.held and first.acquired and first.holder == "a"
    standby = b.acquire()
    assert not standby.held and standby.holder == "a" and standby.expires_at == clock.now + 10
    clock.now += 6
    renewed = a.acquire()
    assert renewed.held and not renewed.acquired  # the same term, renewed
    clock.now += 6  # 12 s after the first acquire, 6 s after the renewal: still a's
    assert not b.acquire().held
    assert a.may_write() and not b.may_write()
    record = read_lease(tmp_path / "api.lease")
    assert record is not None and record.holder == "a" and record.acquired_at == clock.now - 12


def test_takeover_after_expiry_and_the_old_holder_steps_back(tmp_path: Path) -> None:
    clock = Clock()
    a, b = pair(tmp_path, clock)
    a.acquire()
    clock.now += 9.5
    assert not a.may_write()  # inside the margin (a tenth of the period): a stops first
    assert not b.acquire().held  # ... before b may start
    clock.now += 0.5
    took = b.acquire()
    assert took.held and took.acquired and took.holder == "b"
    back = a.acquire()
    assert not back.held and back.holder == "b" and not a.may_write()


def test_release_hands_over_at_once(tmp_path: Path) -> None:
    clock = Clock()
    a, b = pair(tmp_path, clock)
    a.acquire()
    a.release()
    assert not a.may_write()
    assert b.acquire().held
    a.release()  # not the holder: changes nothing
    assert not a.acquire().held


def test_a_restarted_holder_starts_a_new_term(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "api.lease"
    FileLease(path, RECORD, 10, identity="a", clock=clock).acquire()
    again = FileLease(path, RECORD, 10, identity="a", clock=clock).acquire()  # same identity, new process
    assert again.held and again.acquired


def test_a_broken_file_is_a_free_lease(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "api.lease"
    path.write_text('{"holder": "x", "rec')
    assert read_lease(path) is None
    assert FileLease(path, RECORD, 10, identity="a", clock=clock).acquire().held


def test_concurrent_acquirers_never_both_hold(tmp_path: Path) -> None:
    path = tmp_path / "api.lease"
    leases = [FileLease(path, RECORD, 60, identity=f"c{i}") for i in range(8)]
    winners: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(len(leases))

    def contend(lease: FileLease) -> None:
        start.wait()
        for _ in range(20):
            if lease.acquire().held:
                with lock:
                    winners.append(lease.identity)

    threads = [threading.Thread(target=contend, args=(lease,)) for lease in leases]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(winners)) == 1 and len(winners) == 20


def test_pulumi_up_sees_a_live_holder_of_its_record_only(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "api.lease"
    s = spec()
    assert live_lease_holder(s, path) is None  # no file
    FileLease(path, s.record_name, 10, identity="ctl", clock=clock).acquire()
    held = live_lease_holder(s, path, now=clock.now + 1)
    assert isinstance(held, LeaseRecord) and held.holder == "ctl"
    assert live_lease_holder(s, path, now=clock.now + 11) is None  # expired: the controller is gone
    other = spec(record_name="other.unit.test.")
    assert live_lease_holder(other, path, now=clock.now + 1) is None
