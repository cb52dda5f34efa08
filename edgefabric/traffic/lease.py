"""One writer per record: the lease a controller holds while it applies.

Exactly one writer applies a record at a time. A controller takes or renews the lease on
every tick and applies only while it holds it; a second controller stands by (it keeps
probing, so its evidence is warm) and takes over once the holder stops renewing: within
one lease period plus one tick of the holder's last renewal, so within two lease periods
when the tick is shorter than the period. `pulumi up` (`WeightedFailover`) reads the same
lease (`EDGEFABRIC_LEASE_FILE`, or the clusters' Leases through `quorum_lease_holder`) and,
while a live controller holds it, follows the controller's verdict instead of writing over
it (`edgefabric.traffic.reconcile`).

- `Lease` is the interface;
- `FileLease` keeps the record (`edgefabric.traffic.reconcile.LeaseRecord`, JSON: holder,
  record, acquired/renewed/expiry times) in a file, read-modify-written under an exclusive
  `fcntl.flock` on a sidecar `<file>.lock`, and replaced atomically (readers never see half
  a record). It serves writers on one machine: the local stack, a controller beside cron
  `--once` runs, two controllers on one host. Across machines the clocks and the file
  would have to be shared: that is the Kubernetes lease below.
- `KubernetesLease` keeps it in one `coordination.k8s.io/v1` Lease object (holderIdentity,
  leaseDurationSeconds, acquireTime, renewTime, leaseTransitions), written with optimistic
  concurrency on resourceVersion, so of two writers racing for it exactly one wins. Like
  client-go's leader election, a candidate judges expiry by its own clock: a record is
  expired once it has seen it unchanged for leaseDurationSeconds, so clocks on other
  machines never matter, only their rates.
- `QuorumLease` holds one `KubernetesLease` in each of several clusters (the core clusters
  on aws, azure, gcp) and leads only while it holds a majority of them. Two majorities of
  one set always share a cluster, and in that cluster only one holder can be live: no
  split brain. A Lease in one cluster would die with its cloud; with three, losing any one
  still leaves a majority for the survivor to hold or take. A candidate that gets only a
  minority gives back what it got, so two or three candidates splitting the clusters
  between them never block each other for longer than a tick.

A holder stops writing a margin (a tenth of the period) before the expiry it last wrote, so
it has stopped before anyone else may start. A backend call already in flight cannot be
fenced: keep the period longer than `dns.applyTimeoutS`.

Engine-free: never imports pulumi.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import math
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from edgefabric.errors import ConfigError
from edgefabric.traffic.reconcile import LeaseRecord, read_lease

if TYPE_CHECKING:
    from kubernetes.client import ApiClient


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


# ------------------------------------------------------------------ Kubernetes

IN_CLUSTER = "in-cluster"  # a cluster given as this, not a kubeconfig path: the pod's own service account


class LeaseUnavailable(OSError):
    """Too few clusters answered to hold (or even judge) a quorum; the daemon logs it and stands by."""


def lease_object_name(record: str) -> str:
    """The Lease object's name for a DNS record: a DNS subdomain, like the record itself."""
    return "edgefabric-failover." + record.rstrip(".").lower()


def api_client(where: str | Path) -> ApiClient:
    """A client of one cluster: `in-cluster` (the pod's service account) or a kubeconfig file.
    No urllib3 retries: a cluster that does not answer costs one timeout, never three."""
    from kubernetes import client, config  # lazily: the file lease needs none of it

    cfg = client.Configuration()
    if str(where) == IN_CLUSTER:
        config.load_incluster_config(client_configuration=cfg)
    else:
        config.load_kube_config(config_file=str(where), client_configuration=cfg, persist_config=False)
    cfg.retries = 0
    return client.ApiClient(cfg)


def api_client_from_kubeconfig(text: str) -> ApiClient:
    """A client of one cluster from a kubeconfig's contents (a secret `pulumi up` hands the
    failover resource), never written to a file of ours. No urllib3 retries, as `api_client`."""
    import yaml
    from kubernetes import client, config

    cfg = client.Configuration()
    config.load_kube_config_from_dict(yaml.safe_load(text), client_configuration=cfg, persist_config=False)
    cfg.retries = 0
    return client.ApiClient(cfg)


def _micro_time(epoch: float) -> str:
    """RFC 3339 with exactly six fraction digits: what the API's MicroTime parses."""
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _epoch(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.timestamp()
    return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


class KubernetesLease:
    """A lease in one `coordination.k8s.io/v1` Lease object (see the module doc).

    `acquire` reads the object and, when it is free, expired by our own observation, or
    ours, replaces it carrying the resourceVersion it read: a concurrent writer makes the API
    answer 409 and we simply did not get it this time. leaseDurationSeconds is whole seconds
    in the API, so `duration_s` is rounded up."""

    def __init__(
        self,
        client: ApiClient,
        namespace: str,
        record: str,
        duration_s: float,
        identity: str | None = None,
        *,
        name: str | None = None,
        cluster: str = "",
        request_timeout_s: float | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        from kubernetes.client import CoordinationV1Api

        if duration_s <= 0:
            raise ValueError(f"lease duration {duration_s!r}: seconds > 0")  # a caller's bug; the CLI checks input
        self.api = CoordinationV1Api(client)
        self.namespace = namespace
        self.record = record
        self.name = name or lease_object_name(record)
        self.duration_s = float(math.ceil(duration_s))
        self.identity = identity or default_identity()
        self.cluster = cluster
        # Each request well inside a period: a black-holed cluster must not eat the lease.
        self.request_timeout_s = request_timeout_s or max(0.2, min(2.0, self.duration_s / 4))
        self.clock = clock
        self.monotonic = monotonic
        self._held_until: float | None = None  # monotonic end of our term, as of our last write
        self._seen: tuple[str, str, str] | None = None  # (holder, renewTime, resourceVersion) last read
        self._seen_at = 0.0  # monotonic: when `_seen` last changed

    @property
    def margin_s(self) -> float:
        return self.duration_s / 10

    def _read(self) -> Any:
        from kubernetes.client.exceptions import ApiException

        try:
            return self.api.read_namespaced_lease(self.name, self.namespace, _request_timeout=self.request_timeout_s)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def _body(self, acquired_at: float, now: float, transitions: int, holder: str | None,
              duration_s: float, resource_version: str | None) -> dict[str, Any]:  # fmt: skip
        meta: dict[str, Any] = {"name": self.name, "namespace": self.namespace,
                                "labels": {"app.kubernetes.io/managed-by": "edgefabric"}}  # fmt: skip
        if resource_version is not None:
            meta["resourceVersion"] = resource_version  # the optimistic-concurrency check
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": meta,
            "spec": {
                "holderIdentity": holder,
                "leaseDurationSeconds": int(duration_s),
                "acquireTime": _micro_time(acquired_at),
                "renewTime": _micro_time(now),
                "leaseTransitions": transitions,
            },
        }

    def _observe(self, obj: Any) -> bool:
        """Note what we read; True when the holder in it has lapsed by our own clock."""
        spec = obj.spec
        seen = (spec.holder_identity or "", str(spec.renew_time), str(obj.metadata.resource_version))
        now = self.monotonic()
        if seen != self._seen:
            self._seen, self._seen_at = seen, now
        if not spec.holder_identity:
            return True
        return now - self._seen_at >= float(spec.lease_duration_seconds or self.duration_s)

    def acquire(self) -> LeaseStatus:
        from kubernetes.client.exceptions import ApiException

        started = self.monotonic()  # our term counts from before the write: never longer than theirs
        now = self.clock()
        obj = self._read()
        was_ours = self._held_until is not None and started < self._held_until
        try:
            if obj is None:
                body = self._body(now, now, 0, self.identity, self.duration_s, None)
                self.api.create_namespaced_lease(self.namespace, body, _request_timeout=self.request_timeout_s)
                acquired = True
            else:
                spec = obj.spec
                expired = self._observe(obj)
                ours = spec.holder_identity == self.identity
                if not ours and not expired:
                    self._held_until = None
                    renewed = _epoch(spec.renew_time)
                    until = renewed + float(spec.lease_duration_seconds or 0) if renewed is not None else None
                    return LeaseStatus(False, spec.holder_identity, until)
                acquired = not (ours and was_ours)
                acquired_at = _epoch(spec.acquire_time) if not acquired and spec.acquire_time else now
                transitions = int(spec.lease_transitions or 0) + (0 if ours else 1)
                body = self._body(acquired_at or now, now, transitions, self.identity, self.duration_s,
                                  obj.metadata.resource_version)  # fmt: skip
                self.api.replace_namespaced_lease(self.name, self.namespace, body,
                                                  _request_timeout=self.request_timeout_s)  # fmt: skip
        except ApiException as exc:
            if exc.status == 409:  # another writer got there first: theirs this round
                self._held_until = None
                return LeaseStatus(False, None, None)
            raise
        self._held_until = started + self.duration_s
        return LeaseStatus(True, self.identity, now + self.duration_s, acquired=acquired)

    def may_write(self) -> bool:
        return self._held_until is not None and self.monotonic() < self._held_until - self.margin_s

    def release(self) -> None:
        """Hand the lease back (holder cleared), only if it is still ours; a standby takes it at once."""
        from kubernetes.client.exceptions import ApiException

        self._held_until = None
        obj = self._read()
        if obj is None or obj.spec.holder_identity != self.identity:
            return
        now = self.clock()
        body = self._body(_epoch(obj.spec.acquire_time) or now, now, int(obj.spec.lease_transitions or 0), None, 1,
                          obj.metadata.resource_version)  # fmt: skip
        with contextlib.suppress(ApiException):  # 409: someone wrote since; it is not ours to clear
            self.api.replace_namespaced_lease(self.name, self.namespace, body, _request_timeout=self.request_timeout_s)

    def current(self) -> LeaseRecord | None:
        obj = self._read()
        if obj is None or not obj.spec.holder_identity:
            return None
        spec = obj.spec
        renewed = _epoch(spec.renew_time) or 0.0
        return LeaseRecord(spec.holder_identity, self.record, _epoch(spec.acquire_time) or renewed, renewed,
                           renewed + float(spec.lease_duration_seconds or 0))  # fmt: skip

    def __repr__(self) -> str:
        where = f"{self.cluster}:" if self.cluster else ""
        return (f"KubernetesLease({where}{self.namespace}/{self.name}, identity={self.identity!r}, "
                f"duration_s={self.duration_s:g})")  # fmt: skip


class QuorumLease:
    """Leads while it holds the Lease in a majority of clusters (see the module doc).

    Every cluster is asked at once, each within its request timeout, so a lost cloud costs one
    timeout per tick, not one per cluster. `member_errors` says what the last round could not
    reach."""

    def __init__(self, members: Mapping[str, KubernetesLease], identity: str, duration_s: float) -> None:
        if not members:
            raise ValueError("a quorum lease needs at least one cluster")
        self.members = dict(members)
        self.identity = identity
        self.duration_s = max(m.duration_s for m in self.members.values())
        self.majority = len(self.members) // 2 + 1
        self.member_errors: dict[str, str] = {}
        self._leading = False
        self._pool = ThreadPoolExecutor(len(self.members), thread_name_prefix="lease")
        self._lock = threading.Lock()

    def _each(self, fn: Callable[[KubernetesLease], Any]) -> dict[str, Any | BaseException]:
        futures = {name: self._pool.submit(fn, m) for name, m in self.members.items()}
        out: dict[str, Any | BaseException] = {}
        for name, fut in futures.items():
            try:
                out[name] = fut.result()
            except Exception as exc:  # an unreachable or refusing cluster: a vote we did not get
                out[name] = exc
        return out

    def acquire(self) -> LeaseStatus:
        with self._lock:
            results = self._each(lambda m: m.acquire())
            self.member_errors = {n: f"{type(r).__name__}: {r}" for n, r in results.items()
                                  if isinstance(r, BaseException)}  # fmt: skip
            statuses = {n: r for n, r in results.items() if isinstance(r, LeaseStatus)}
            held = [n for n, st in statuses.items() if st.held]
            if len(held) >= self.majority:
                acquired = not self._leading
                self._leading = True
                # The quorum lasts while a majority does: the majority-th latest expiry.
                expiries = sorted((statuses[n].expires_at or 0.0 for n in held), reverse=True)
                return LeaseStatus(True, self.identity, expiries[self.majority - 1], acquired=acquired)
            self._leading = False
            if held:  # a minority is no use to us and would keep another candidate from a majority
                for name in held:
                    with contextlib.suppress(Exception):
                        self.members[name].release()
            if len(statuses) < self.majority:
                raise LeaseUnavailable(f"{len(statuses)} of {len(self.members)} clusters answered, "
                                       f"{self.majority} needed: {self.member_errors}")  # fmt: skip
            others = [st.holder for st in statuses.values() if st.holder and st.holder != self.identity]
            holder = max(set(others), key=others.count) if others else None
            expires = [st.expires_at for st in statuses.values() if st.holder == holder and st.expires_at]
            return LeaseStatus(False, holder, min(expires) if expires else None)

    def may_write(self) -> bool:
        return sum(m.may_write() for m in self.members.values()) >= self.majority

    def release(self) -> None:
        with self._lock:
            self._leading = False
            self._each(lambda m: m.release())

    def current(self, live_at: float | None = None) -> LeaseRecord | None:
        """The holder of a majority of the clusters' Leases, if there is one; with `live_at`
        (epoch seconds), counting only the Leases unexpired then."""
        records = [r for r in self._each(lambda m: m.current()).values() if isinstance(r, LeaseRecord)]
        if live_at is not None:
            records = [r for r in records if r.live(live_at)]
        holders = [r.holder for r in records]
        for rec in records:
            if holders.count(rec.holder) >= self.majority:
                return rec
        return None

    def close(self) -> None:
        """Let the worker threads go (a short-lived reader; a controller keeps its quorum)."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    def __repr__(self) -> str:
        first = next(iter(self.members.values()))
        return (f"QuorumLease({first.namespace}/{first.name} in {sorted(self.members)}, majority={self.majority}, "
                f"identity={self.identity!r}, duration_s={self.duration_s:g})")  # fmt: skip


def lease_cluster_args(values: list[str]) -> dict[str, str]:
    """`--lease-kubeconfig CLUSTER=PATH` values: every cluster once, each a readable kubeconfig
    or `in-cluster`; ConfigError naming the flag otherwise."""
    out: dict[str, str] = {}
    for v in values:
        name, _, where = v.partition("=")
        if not name or not where:
            raise ConfigError.one("--lease-kubeconfig", v, f"CLUSTER=PATH (a kubeconfig) or CLUSTER={IN_CLUSTER}",
                                  namespace="")
        if name in out:
            raise ConfigError.one("--lease-kubeconfig", v, f"each cluster once; {name!r} is given twice", namespace="")
        if where != IN_CLUSTER and not os.access(where, os.R_OK):
            raise ConfigError.one("--lease-kubeconfig", v, f"a readable kubeconfig; {where} is not", namespace="")
        out[name] = where
    return out


def kubernetes_lease(
    clusters: Mapping[str, str | Path],
    namespace: str,
    record: str,
    duration_s: float,
    identity: str | None = None,
) -> QuorumLease:
    """The record's lease over `clusters` (name -> kubeconfig path, or `in-cluster`). One
    cluster is a quorum of one: a plain Kubernetes lease."""
    who = identity or default_identity()
    members = {}
    for name, where in clusters.items():
        lease = KubernetesLease(api_client(where), namespace, record, duration_s, who, cluster=name)
        members[name] = lease
    return QuorumLease(members, who, duration_s)


def quorum_lease_holder(
    kubeconfigs: Mapping[str, str],
    namespace: str,
    record: str,
    request_timeout_s: float = 2.0,
    now: float | None = None,
) -> LeaseRecord | None:
    """The live holder of `record`'s quorum lease as a reader sees it: the identity whose
    unexpired Lease sits in a majority of the clusters (cloud -> kubeconfig contents). What
    `pulumi up` asks before it writes a record that controllers in the clusters keep.

    It only reads. A cluster that does not answer (or a Lease not made yet: the first `up`)
    is a vote for nobody, so with no majority holder in sight the caller writes; the holder
    itself could not lead without that majority either. Expiry is judged by renewTime plus
    leaseDurationSeconds against this machine's clock (a reader cannot watch a record for a
    period as a candidate does); with skewed clocks it errs one way or the other by the skew."""
    if not kubeconfigs:
        return None
    members = {name: KubernetesLease(api_client_from_kubeconfig(text), namespace, record, 1.0, "reader",
                                     cluster=name, request_timeout_s=request_timeout_s)
               for name, text in kubeconfigs.items()}  # fmt: skip
    quorum = QuorumLease(members, "reader", 1.0)
    try:
        return quorum.current(live_at=time.time() if now is None else now)
    finally:
        quorum.close()
