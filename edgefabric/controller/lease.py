"""One writer per record: the lease a controller holds while it applies.

Exactly one writer applies a record at a time. A controller takes or renews the lease on
every tick and applies only while it holds it; a second controller stands by (it keeps
probing, so its evidence is warm) and takes over once the holder stops renewing: within
one lease period plus one tick of the holder's last renewal, so within two lease periods
when the tick is shorter than the period. `pulumi up` (`WeightedFailover`) reads the same
lease (`EDGEFABRIC_LEASE_FILE`) and, while a live controller holds it, follows the
controller's verdict instead of writing over it (`edgefabric.traffic.reconcile`).

- `Lease` is the interface;
- `FileLease` keeps the record (`edgefabric.traffic.reconcile.LeaseRecord`, JSON: holder,
  record, acquired/renewed/expiry times) in a file, read-modify-written under an exclusive
  `fcntl.flock` on a sidecar `<file>.lock`, and replaced atomically (readers never see half
  a record). It serves writers on one machine: the local stack, a controller beside cron
  `--once` runs, two controllers on one host. Across machines the clocks and the file
  would have to be shared; that is a Kubernetes `coordination.k8s.io/v1` Lease, a later
  implementation of the same interface.

A holder stops writing a margin (a tenth of the period) before the expiry it last wrote, so
it has stopped before anyone else may start. A backend call already in flight cannot be
fenced: keep the period longer than `dns.applyTimeoutS`.

Engine-free: never imports pulumi.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from edgefabric.traffic.reconcile import LeaseRecord, read_lease


@dataclass(frozen=True)
class LeaseStatus:
    """What one `acquire` found: whether we hold the lease, who does, until when, and whether
    we just took it (`acquired`: a new term, e.g. after a takeover or our own lapse)."""

    held: bool
    holder: str | None
    expires_at: float | None
    acquired: bool = False


class Lease(Protocol):
    identity: str
    duration_s: float

    def acquire(self) -> LeaseStatus:
        """Take the lease if it is free or expired, renew it if it is ours; never waits for
        another holder."""
        ...

    def may_write(self) -> bool:
        """True while our last acquire holds, short of the safety margin."""
        ...

    def release(self) -> None:
        """Give the lease up now (clean shutdown), so a standby takes over at its next tick."""
        ...

    def current(self) -> LeaseRecord | None:
        """The record as stored, whoever holds it."""
        ...


def default_identity() -> str:
    return f"{socket.gethostname()}/{os.getpid()}"


class FileLease:
    """A lease in a JSON file on this machine (see the module doc)."""

    def __init__(
        self,
        path: Path,
        record: str,
        duration_s: float,
        identity: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if duration_s <= 0:
            raise ValueError(f"lease duration {duration_s!r}: seconds > 0")  # a caller's bug; the CLI checks input
        self.path = Path(path)
        self.record = record
        self.duration_s = duration_s
        self.identity = identity or default_identity()
        self.clock = clock
        self._expires_at: float | None = None  # of our own term, as we last wrote it

    @property
    def margin_s(self) -> float:
        return self.duration_s / 10

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # held for one read-modify-write: microseconds
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    def _write(self, rec: LeaseRecord) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with open(tmp, "w") as f:
            f.write(rec.to_json())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def acquire(self) -> LeaseStatus:
        with self._locked():
            now = self.clock()
            cur = read_lease(self.path)
            if cur is not None and cur.holder != self.identity and cur.live(now):
                self._expires_at = None
                return LeaseStatus(False, cur.holder, cur.expires_at)
            ours = cur is not None and cur.holder == self.identity and cur.live(now) and self._expires_at is not None
            acquired_at = cur.acquired_at if ours and cur is not None else now
            rec = LeaseRecord(self.identity, self.record, acquired_at, now, now + self.duration_s)
            self._write(rec)
            self._expires_at = rec.expires_at
            return LeaseStatus(True, self.identity, rec.expires_at, acquired=not ours)

    def may_write(self) -> bool:
        return self._expires_at is not None and self.clock() < self._expires_at - self.margin_s

    def release(self) -> None:
        with self._locked():
            cur = read_lease(self.path)
            if cur is not None and cur.holder == self.identity:
                now = self.clock()
                self._write(LeaseRecord(self.identity, self.record, cur.acquired_at, now, now))
            self._expires_at = None

    def current(self) -> LeaseRecord | None:
        return read_lease(self.path)

    def __repr__(self) -> str:
        return f"FileLease({str(self.path)!r}, identity={self.identity!r}, duration_s={self.duration_s:g})"
