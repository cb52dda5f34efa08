"""The continuous failover controller: probe -> plan -> apply, every interval.

    python -m edgefabric.controller.daemon --stack local [--once] [--interval 1] [--project-dir .]
        [--state-file F] [--lease-file F | --lease-kubeconfig CLUSTER=PATH ...] [--metrics-port 9464]

Reads `Pulumi.<stack>.yaml` through the same typed models as `pulumi up`
(edgefabric.config.load_stack_file), so the record, thresholds, strategy,
routing rules and backends are exactly the deployed ones. Between deployments
this keeps failover working.

- Every tick probes each cloud once and feeds the hysteresis state machine, then
  hands the plan to every backend (idempotent: unchanged answers are not
  rewritten). One JSON object per line on stdout for each transition, each
  plan change, each backend error and each notification failure.
- Backends are applied in parallel, off the loop, each call under a deadline
  (`dns.applyTimeoutS`): a hung backend is reported and retried on a later tick,
  never gets a second call while its first still runs, and never delays another
  backend or the probes (`edgefabric.controller.calls`).
- One writer: the controller applies only while it holds the record's lease
  (`edgefabric.traffic.lease`); a second controller stands by, probing, and
  takes over when the holder stops renewing.
- Restarts: the writer saves its evidence after every tick (`--state-file`,
  atomically) and continues from it when it is fresh. Without fresh evidence,
  and whenever it takes the lease, it reads what the backends publish for every
  name first (one read per backend and name, one call per backend under the
  deadline): a cloud that any name's answers leave out starts down for all
  names and serves its whole recovery (successThreshold + recoveryHoldDownS)
  before it returns (`edgefabric.controller.state`,
  `edgefabric.traffic.reconcile.absent_from_published`).
- Every failover, recovery and fail-open sends a notification to each
  configured channel (Slack webhook, PagerDuty Events v2, SMTP), off the loop,
  from the lease holder only.
- `--metrics-port`: Prometheus metrics on /metrics and a liveness /healthz
  (`edgefabric.controller.metrics`), on loopback unless `--metrics-host` says otherwise.
- Every published name (`dns.records`, or the one `dns.recordName`) follows its own
  strategy: the clouds are probed once per tick (every name shares their ingresses), then
  each name is planned with its own modes and all of them go to a backend in one call
  (`apply_records`: one Route53 ChangeBatch per 1,000 changes, one PowerDNS PATCH, one
  Cloud DNS change). performance-based names plan from the probes' latency, smoothed per
  name (`strategies.<s>.latencySmoothing`), and keep their shares within the band.
  The restart seeding reads every name (above). The lease and the state file stay one
  per controller, named after the first name: health evidence is per cloud and shared by
  every name, and one writer applies all of them in the same calls.
- Never publishes an empty answer set: the planner always returns weights that
  sum to the scale, failing open to the configured weights when all are down.
- `--once`: one reconcile (probing up to failure_threshold rounds to reach a
  verdict, continuing from `--state-file` if given), then exit 0 if every
  backend applied (or another writer holds the lease), 1 if any failed, 2 on a
  configuration error (a `config_error` line listing every problem by key path).

The record is the one typed `FailoverSpec` the WeightedFailover resource
publishes (`FailoverSpec.from_config`). Secrets come from the environment only,
through the one resolver (`edgefabric.secrets`): `env:NAME` refs read NAME;
`config:KEY` refs read EDGEFABRIC_SECRET_<KEY>. Cloud ingress addresses come
from `--endpoint cloud=IP`, EDGEFABRIC_ENDPOINT_<CLOUD>, or the stack's
`clouds.<cloud>.ingress`, in that order.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from edgefabric.config import StackConfig, load_stack_file
from edgefabric.controller import state
from edgefabric.controller.calls import BackendCalls, Call
from edgefabric.controller.metrics import ControllerMetrics, MetricsServer, staleness
from edgefabric.controller.notify import EmailNotifier, Event, Notifier, PagerDutyNotifier, SlackNotifier
from edgefabric.errors import ConfigError
from edgefabric.secrets import resolve
from edgefabric.traffic.dns import build_backends
from edgefabric.traffic.dns.base import ApplyResult, BackendOutcome, DnsBackend, Published, apply_records
from edgefabric.traffic.health import HealthTracker, Transition
from edgefabric.traffic.lease import (
    FileLease,
    Lease,
    default_identity,
    kubernetes_lease,
    lease_cluster_args,
)
from edgefabric.traffic.planner import Plan
from edgefabric.traffic.reconcile import (
    LEASE_FILE_ENV,
    Reconciled,
    RecordPlanner,
    absent_from_published,
    assess_health,
    plan_from_health,
    probe_round_results,
    seeded_down,
)
from edgefabric.traffic.spec import FailoverSpec

REPO_ROOT = Path(__file__).resolve().parents[2]
# Names with settings of their own for a backend (Traffic Manager profiles) applied at once.
OWN_SETTINGS_CONCURRENCY = 16
# Where a controller keeps its evidence and its lease unless told otherwise: under the
# directory it runs in, one file each per stack.
WORK_DIR = Path(".edgefabric")


# ------------------------------------------------------------------ config


def ingress_addresses(cfg: StackConfig, overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """Each enabled cloud's ingress address: `--endpoint`, EDGEFABRIC_ENDPOINT_<CLOUD>, or
    `clouds.<cloud>.ingress.address`, first found."""
    addresses: dict[str, str] = {}
    for cloud in cfg.traffic_clouds:
        ingress = cfg.clouds.get(cloud).ingress
        variable = f"EDGEFABRIC_ENDPOINT_{cloud.upper()}"
        address = (overrides or {}).get(cloud) or os.environ.get(variable) or (ingress.address if ingress else None)
        if not address:
            raise ConfigError.one(f"clouds.{cloud}.ingress", None,
                                  f"an address for enabled cloud {cloud!r}: set the ingress, "
                                  f"--endpoint {cloud}=IP, or {variable}")
        addresses[cloud] = address
    return addresses


def failover_spec(cfg: StackConfig, overrides: Mapping[str, str] | None = None) -> FailoverSpec:
    """The record the stack's WeightedFailover publishes, with the addresses found here."""
    return FailoverSpec.from_config(cfg, ingress_addresses(cfg, overrides))


def failover_specs(cfg: StackConfig, overrides: Mapping[str, str] | None = None) -> list[FailoverSpec]:
    """Every published name's spec (`dns.records`, or the one `dns.recordName`)."""
    return FailoverSpec.all_from_config(cfg, ingress_addresses(cfg, overrides))


def notifiers_from_config(cfg: StackConfig) -> list[Notifier]:
    out: list[Notifier] = []
    for i, n in enumerate(cfg.failover.notifications):
        where = f"failover.notifications[{i}]"
        if n.type == "slack":
            out.append(SlackNotifier(resolve(n.url_ref, where + ".urlRef")))
        elif n.type == "pagerduty":
            out.append(PagerDutyNotifier(resolve(n.routing_key_ref, where + ".routingKeyRef"), n.events_url))
        elif n.type == "email":
            password = resolve(n.password_ref, where + ".passwordRef") if n.password_ref else None
            out.append(
                EmailNotifier(n.smtp_host, n.smtp_port, n.sender, list(n.recipients), n.starttls, n.username, password)
            )
    return out


# ------------------------------------------------------------------ logging


class JsonLog:
    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream if stream is not None else sys.stdout  # this moment's stdout, not import time's
        self._lock = threading.Lock()

    def __call__(self, event: str, **fields: Any) -> None:
        line = json.dumps({"ts": round(time.time(), 3), "event": event, **fields}, default=str, sort_keys=True)
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()


# ------------------------------------------------------------------ the loop


class LeaseLost(RuntimeError):
    """The lease lapsed between the tick that planned an apply and the apply itself."""


class _NameReads:
    """One backend's reads of every published name, kept as each returns, so a name whose
    read hangs or fails never hides the answers of the names read beside it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._published: dict[str, Published | None] = {}
        self._errors: dict[str, str] = {}

    def put(self, record: str, value: Published | None) -> None:
        with self._lock:
            self._published[record] = value

    def fail(self, record: str, error: str) -> None:
        with self._lock:
            self._errors[record] = error

    def snapshot(self) -> tuple[dict[str, Published | None], dict[str, str]]:
        """(record -> what the backend publishes for it, record -> why it could not be read)
        as of now; a read still running is in neither."""
        with self._lock:
            return dict(self._published), dict(self._errors)


@dataclass
class _Seeding:
    """The reads a new lease holder makes before its first apply (see `Controller._seed`):
    one call per backend, reading every published name."""

    calls: dict[str, Call]
    reads: dict[str, _NameReads]
    backends: list[DnsBackend]


@dataclass(frozen=True)
class _Seed:
    """What the published answers said: the clouds they leave out (cloud -> reason naming
    the record and the backend), per record which backends answered and which did not, and
    why a read failed (record -> backend -> error)."""

    absent: dict[str, str]
    read: dict[str, list[str]]
    unread: dict[str, list[str]]
    errors: dict[str, dict[str, str]]


class Controller:
    """probe -> plan -> apply for one record; see the module doc.

    `tick()` is one round, waiting for this round's backend calls until their deadline (for
    `--once`, tests and benchmarks); `run()` ticks at a fixed cadence without ever waiting for
    a backend. `backends` builds the backends for one tick (default: from the spec, fresh
    clients each tick, secrets from the environment).
    """

    def __init__(
        self,
        spec: FailoverSpec,
        notifiers: list[Notifier],
        log: Callable[..., None],
        clock: Callable[[], float] = time.time,
        *,
        apply_timeout_s: float = 20.0,
        lease: Lease | None = None,
        state_path: Path | None = None,
        state_max_age_s: float | None = None,
        interval_s: float | None = None,
        metrics: ControllerMetrics | None = None,
        backends: Callable[[], list[DnsBackend]] | None = None,
        records: Sequence[FailoverSpec] | None = None,
    ) -> None:
        self.spec = spec
        # Every published name; `spec` (the first) names the lease, the state and the metrics.
        self.records: list[FailoverSpec] = list(records) if records else [spec]
        if self.records[0] is not spec:
            raise ValueError("Controller: records[0] must be spec")  # a caller's bug
        # Plans every name; performance-based ones keep smoothed latency and held shares.
        self.planner = RecordPlanner(self.records)
        self.last_plans: dict[str, dict[str, Any]] = {}
        self.notifiers = notifiers
        self.log = log
        self.clock = clock
        self.tracker = HealthTracker(spec.thresholds, clock=clock)
        self.last_weights: dict[str, Any] | None = None
        self.fail_open = False
        self.apply_timeout_s = apply_timeout_s
        self.lease = lease
        self.identity = lease.identity if lease is not None else default_identity()
        self.state_path = state_path
        self.interval_s = interval_s if interval_s is not None else spec.interval_s
        self.state_max_age_s = state_max_age_s if state_max_age_s is not None else max(5 * self.interval_s, 60.0)
        self.metrics = metrics or ControllerMetrics(spec.record_name, self.identity)
        self._build_backends = backends or (lambda: build_backends(spec.backends))
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="notify")
        self.calls = BackendCalls(apply_timeout_s, on_done=self._call_done)
        self.leader = False
        self._seed_on_lead = False  # set by start(): read the published answers on taking the lease
        self._seeding: _Seeding | None = None
        self._seeded = True
        self._last_holder: str | None = None
        self._last_tick_at = time.monotonic()

    # ---- restart: evidence from the state file, then from the published answers
    def start(self) -> None:
        """Continue from the state file when it is fresh; either way, check the published
        answers before the first apply as lease holder (and on every later takeover)."""
        if self.state_path is not None:
            loaded = state.load(self.state_path, self.spec.record_name, self.state_max_age_s, self.clock())
            if loaded.evidence is not None:
                self.tracker = HealthTracker.from_evidence(self.spec.thresholds, loaded.evidence, self.clock)
                self.tracker.states = {c: s for c, s in self.tracker.states.items() if c in self.spec.endpoints}
            self.log("restore", state_file=str(self.state_path), used=loaded.evidence is not None,
                     reason=loaded.reason, age_s=None if loaded.age_s is None else round(loaded.age_s, 3),
                     health=self.tracker.healthy())  # fmt: skip
        self._seed_on_lead = True

    def seed_evidence(self, evidence: Mapping[str, Any] | None = None) -> dict[str, dict[str, object]]:
        """`evidence` with every healthy-or-unknown cloud the published answers (of every
        name) leave out started down; reads every backend now, each within the deadline
        (`--once`)."""
        out = {str(k): dict(v) for k, v in (evidence or {}).items()}
        seeding = self._start_reads()
        self.calls.wait(seeding.calls.values())
        now = self.clock()
        for cloud, reason in self._absent(seeding).absent.items():
            if bool(out.get(cloud, {}).get("healthy", True)):
                out[cloud] = seeded_down(reason, now).to_dict()
                self.log("seeded", target=cloud, to="unhealthy", reason=reason)
        return out

    def _start_reads(self) -> _Seeding:
        """One call per backend (its one call in flight, under the deadline) that reads every
        published name once; a backend with a call still running says nothing this time."""
        backends = self._backends()
        calls: dict[str, Call] = {}
        reads: dict[str, _NameReads] = {}
        for b in backends:
            into = _NameReads()
            call = self.calls.submit(b.name, "read", functools.partial(self._read_names, b, into))
            if call is not None:
                calls[b.name], reads[b.name] = call, into
        return _Seeding(calls, reads, backends)

    def _read_names(self, backend: DnsBackend, into: _NameReads) -> dict[str, Published | None]:
        """On the backend's call thread: read each name once, up to OWN_SETTINGS_CONCURRENCY
        at a time, each on a daemon thread (a hung read must not hold up the interpreter's
        exit, nor the names after it). Every answer goes to `into` as it returns, so the
        seeder uses what has arrived when the call's deadline passes."""
        work = list(self.records)
        lock = threading.Lock()
        todo = iter(work)

        def worker() -> None:
            while True:
                with lock:
                    record = next(todo, None)
                if record is None:
                    return
                try:
                    # A name with its own settings (its own Traffic Manager profiles) is read
                    # where it is published, by a backend built from them.
                    shared = self._same_settings(record, backend.name)
                    reader = backend if shared else self._own_backend(record, backend.name)
                    into.put(record.record_name, reader.read(record.record_spec()))
                except Exception as exc:  # one name's failure says nothing about the others
                    into.fail(record.record_name, f"{type(exc).__name__}: {exc}")

        if len(work) == 1:
            worker()
        else:
            threads = [threading.Thread(target=worker, name=f"read-{backend.name}-{i}", daemon=True)
                       for i in range(min(len(work), OWN_SETTINGS_CONCURRENCY))]  # fmt: skip
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        return into.snapshot()[0]

    def _absent(self, seeding: _Seeding) -> _Seed:
        """Every name's answers, each held against that name's own configured plan
        (`absent_from_published`), and the union of what they leave out: health evidence is
        per cloud, shared by every name, so a cloud one name's answer dropped starts down for
        all. The first name found keeps its reason."""
        snapshots = {b: reads.snapshot() for b, reads in seeding.reads.items()}
        absent: dict[str, str] = {}
        read: dict[str, list[str]] = {}
        unread: dict[str, list[str]] = {}
        errors: dict[str, dict[str, str]] = {}
        for record in self.records:
            name = record.record_name
            published: dict[str, Published | str | None] = {
                b: got[name] for b, (got, _) in snapshots.items() if name in got}
            read[name] = sorted(published)
            missing = sorted({b.name for b in seeding.backends} - set(published))
            if missing:
                unread[name] = missing
            failed = {b: failures[name] for b, (_, failures) in snapshots.items() if name in failures}
            if failed:
                errors[name] = failed
            for cloud, reason in absent_from_published(record, published, seeding.backends).items():
                absent.setdefault(cloud, f"{reason} for {name}")
        return _Seed(absent, read, unread, errors)

    def _seed(self, wait_s: float) -> bool:
        """As new lease holder: read every name's published answers (off the loop, one call
        per backend within the deadline) and start the clouds they leave out down. True once
        done."""
        if self._seeding is None:
            self._seeding = self._start_reads()
        pending = [c for c in self._seeding.calls.values() if not c.done.is_set()]
        end = time.monotonic() + wait_s
        for call in pending:
            call.done.wait(max(0.0, min(end, call.deadline_at) - time.monotonic()))
        now_m = time.monotonic()
        if any(not c.done.is_set() and now_m < c.deadline_at for c in self._seeding.calls.values()):
            return False
        seed = self._absent(self._seeding)
        now = self.clock()
        for cloud, reason in seed.absent.items():
            st = self.tracker.states.get(cloud)
            if st is None or st.healthy:
                self.tracker.states[cloud] = seeded_down(reason, now)
                self.log("seeded", target=cloud, to="unhealthy", reason=reason)
        self.log("seeded_from_published", read=seed.read, unread=seed.unread, errors=seed.errors,
                 absent=sorted(seed.absent), health=self.tracker.healthy())  # fmt: skip
        self._seeding = None
        return True

    # ---- the lease
    def _lease_step(self) -> bool:
        """Take or renew the lease; True while we may write. A new term (first start, a
        takeover, our own lapse) checks the published answers again before applying."""
        holder: str | None
        if self.lease is None:
            acquired, holder = not self.leader, self.identity
            self.leader = True
        else:
            try:
                st = self.lease.acquire()
            except OSError as exc:
                self.log("lease_error", error=f"{type(exc).__name__}: {exc}")
                st = None
            was = self.leader
            self.leader = st is not None and st.held
            acquired = self.leader and ((st is not None and st.acquired) or not was)
            holder = st.holder if st is not None else None
            if was and not self.leader:
                self.log("lease_lost", holder=holder)
            elif not self.leader and (was or self._last_holder != holder):
                self.log("standby", holder=holder,
                         expires_at=st.expires_at if st is not None else None)  # fmt: skip
            self._last_holder = holder
        self.metrics.lease(self.leader, holder)
        if acquired:
            self.log("lease_acquired", identity=self.identity,
                     duration_s=self.lease.duration_s if self.lease is not None else None)  # fmt: skip
            if self._seed_on_lead:
                self._seeded, self._seeding = False, None
        return self.leader

    def _may_write(self) -> bool:
        return self.lease is None or self.lease.may_write()

    # ---- backends
    def _backends(self) -> list[DnsBackend]:
        backends = self._build_backends()
        for b in backends:
            # Bound each HTTP request by the deadline too, so a hung call's thread ends.
            if hasattr(b, "call_timeout_s"):
                b.call_timeout_s = self.apply_timeout_s
        return backends

    def _call_done(self, call: Call) -> None:
        """On the call's own thread, when it returns (possibly long after its deadline)."""
        if call.kind != "apply":
            return
        self.metrics.applied(call.backend, call.duration_s)
        if not call.ok:
            if not call.late:  # a late call was counted as an error when its deadline passed
                self.metrics.apply_error(call.backend)
            self.log("apply_error", backend=call.backend, error=call.error, late=call.late,
                     duration_s=round(call.duration_s or 0, 3))  # fmt: skip
        elif isinstance(call.value, ApplyResult) and call.value.changed:
            self.log("applied", backend=call.backend, record_ids=call.value.record_ids, late=call.late,
                     duration_s=round(call.duration_s or 0, 3))  # fmt: skip

    def _same_settings(self, record: FailoverSpec, backend: str) -> bool:
        """Does `record` publish to `backend` with the first name's settings (so one backend
        object, and one batch, serves both)? A backend that is no settings field (a test's
        stand-in) always does."""
        if backend not in type(self.spec.backends).model_fields:
            return True
        return bool(getattr(record.backends, backend) == getattr(self.spec.backends, backend))

    def _own_backend(self, record: FailoverSpec, backend: str) -> DnsBackend:
        """`backend` built from `record`'s own settings, each request bounded by the deadline."""
        built = build_backends(record.backends, only=[backend])[0]
        if hasattr(built, "call_timeout_s"):
            built.call_timeout_s = self.apply_timeout_s
        return built

    def _dispatch(
        self, plans: Mapping[str, Mapping[str, Plan]], backends: list[DnsBackend]
    ) -> dict[str, Call | None]:
        """One call per backend carrying every name's plan (`apply_records` batches them).

        A name whose settings for a backend differ from the first name's (its own Traffic
        Manager profile) is written, in the same call, by a backend built from its own."""
        specs = {r.record_name: r.record_spec() for r in self.records}

        def apply(b: DnsBackend, p: Mapping[str, Plan]) -> ApplyResult:
            if not self._may_write():
                raise LeaseLost("the lease lapsed before the call: not applied")
            shared = [r for r in self.records if self._same_settings(r, b.name)]

            # A name with its own settings (its own Traffic Manager profiles) goes in the same
            # call, written by a backend built from them; Traffic Manager reads the resource
            # group once for all of them.
            own = [(self._own_backend(r, b.name), specs[r.record_name], p[r.record_name])
                   for r in self.records if r not in shared]  # fmt: skip
            return apply_records(b, [(specs[r.record_name], p[r.record_name]) for r in shared], own,
                                 concurrency=OWN_SETTINGS_CONCURRENCY)

        out: dict[str, Call | None] = {}
        for b in backends:
            call = self.calls.submit(b.name, "apply", functools.partial(apply, b, plans[b.name]))
            if call is None:
                running = self.calls.running(b.name)
                if running is not None and running.overdue_reported:
                    age = time.monotonic() - running.started_at
                    self.metrics.apply_error(b.name)
                    self.log("apply_error", backend=b.name,
                             error=f"previous {running.kind} still running after {age:.1f}s: not applied")  # fmt: skip
            out[b.name] = call
        return out

    def _report_overdue(self) -> None:
        for call in self.calls.overdue():
            if call.kind == "apply":
                self.metrics.apply_error(call.backend)
            self.log("apply_error" if call.kind == "apply" else "read_error", backend=call.backend,
                     error=f"no answer within {self.apply_timeout_s:g}s (dns.applyTimeoutS); "
                           f"still running, retried once it returns")  # fmt: skip

    def _outcomes(self, calls: Mapping[str, Call | None]) -> list[BackendOutcome]:
        out = []
        for name, call in calls.items():
            if call is None:
                running = self.calls.running(name)
                age = 0.0 if running is None else time.monotonic() - running.started_at
                out.append(BackendOutcome(name, False, error=f"previous call still running after {age:.1f}s"))
            elif not call.done.is_set():
                out.append(BackendOutcome(name, False, error=f"no answer within {self.apply_timeout_s:g}s"))
            elif not call.ok:
                out.append(BackendOutcome(name, False, error=call.error))
            else:
                res: ApplyResult = call.value
                out.append(BackendOutcome(name, True, res.changed, res.record_ids))
        return out

    # ---- notifications
    def _notify(self, event: Event) -> None:
        self.log("notify", kind=event.kind, target=event.target, summary=event.summary,
                 channels=[n.name for n in self.notifiers])  # fmt: skip
        for notifier in self.notifiers:
            self._pool.submit(self._send, notifier, event)

    def _send(self, notifier: Notifier, event: Event) -> None:
        try:
            notifier.send(event)
        except Exception as exc:
            self.log("notify_error", channel=notifier.name, kind=event.kind, error=str(exc))

    def _events(self, transitions: list[Transition], plan: Plan, notify: bool) -> None:
        weights = plan.default
        events: list[Event] = []
        for t in transitions:
            if t.to_healthy:
                summary = f"{self.spec.record_name} {t.target} recovered; weights now {weights}"
                events.append(Event("recovery", self.spec.record_name, t.target, summary, "info",
                                    {"detail": t.detail, "weights": weights}))  # fmt: skip
            else:
                summary = f"{self.spec.record_name} {t.target} is DOWN; failover: weights now {weights}"
                events.append(Event("failure", self.spec.record_name, t.target, summary, "critical",
                                    {"detail": t.detail, "weights": weights,
                                     "failover": self.spec.strategy.failover}))  # fmt: skip
        if plan.fail_open and not self.fail_open:
            summary = f"{self.spec.record_name}: every cloud is unhealthy; failing open with configured weights {weights}"
            events.append(Event("fail-open", self.spec.record_name, "*", summary, "critical",
                                {"weights": weights, "alerts": list(plan.alerts)}))  # fmt: skip
        elif self.fail_open and not plan.fail_open:
            events.append(Event("fail-open-cleared", self.spec.record_name, "*",
                                f"{self.spec.record_name}: a cloud is healthy again; fail-open ended", "info",
                                {"weights": weights}))  # fmt: skip
        self.fail_open = plan.fail_open
        if notify:  # the lease holder speaks; a standby saw the same and stays quiet
            for event in events:
                self._notify(event)

    def _observe(self, transitions: list[Transition], plans: Mapping[str, Plan]) -> None:
        """Log transitions, and each name's plan when it changed (`record` says whose)."""
        for t in transitions:
            self.log("transition", target=t.target, to="healthy" if t.to_healthy else "unhealthy",
                     at=t.at, detail=t.detail)  # fmt: skip
        several = len(plans) > 1
        for record, plan in plans.items():
            weights = plan.weights()
            if weights != self.last_plans.get(record):
                extra = {"record": record} if several else {}
                self.log("plan", weights=weights, fail_open=plan.fail_open, alerts=list(plan.alerts),
                         health={c: s.healthy for c, s in self.tracker.states.items()}, **extra)  # fmt: skip
                self.last_plans[record] = weights
            self.metrics.weights(weights, plan.fail_open, record)
        self.last_weights = self.last_plans.get(self.spec.record_name)
        self.metrics.verdicts({c: self.tracker.states[c].healthy if c in self.tracker.states else True
                               for c in self.spec.endpoints})  # fmt: skip

    def _save_state(self) -> None:
        if self.state_path is None:
            return
        try:
            state.save(self.state_path, self.spec.record_name, self.tracker.evidence(), self.clock())
        except OSError as exc:
            self.log("state_error", state_file=str(self.state_path), error=f"{type(exc).__name__}: {exc}")

    # ---- one tick
    def tick(self, wait: bool = True) -> Reconciled:
        """Probe once, plan, and (as lease holder) hand the plan to every backend.

        With `wait`, waits for this tick's backend calls until their deadline and reports
        their outcomes; without, returns at once (outcomes are logged as calls return)."""
        self._report_overdue()
        leader = self._lease_step()
        if leader and not self._seeded:
            self._seeded = self._seed(self.apply_timeout_s if wait else min(self.apply_timeout_s, self.interval_s / 2))
        results, transitions = probe_round_results(self.spec, self.tracker)
        for cloud, r in results.items():
            self.metrics.probe(cloud, r.latency_s)
        self.planner.observe(results)
        writing = leader and self._seeded
        backends = self._backends() if writing else []
        plans, per_backend = self.planner.plans(self.tracker, {b.name: b.scale for b in backends})
        plan = plans[self.spec.record_name]
        self._observe(transitions, plans)
        outcomes: list[BackendOutcome] = []
        if writing:
            calls = self._dispatch(per_backend, backends)
            if wait:
                self.calls.wait(c for c in calls.values() if c is not None)
                outcomes = self._outcomes(calls)
            self._save_state()
        self._events(transitions, plan, notify=leader)
        self._report_overdue()
        self._last_tick_at = time.monotonic()
        self.metrics.tick(time.time())
        return Reconciled(plan, self.tracker.evidence(), outcomes, transitions, plans=plans)

    def once(self, evidence: Mapping[str, Any] | None) -> Reconciled:
        """One deploy-time style reconcile (`--once`): a verdict in up to failure_threshold
        probe rounds, continuing from `evidence`, applied to every backend as lease holder."""
        if not self._lease_step():
            holder = self.lease.current() if self.lease is not None else None
            self.log("not_applied", reason="another writer holds the lease",
                     holder=holder.holder if holder else None)  # fmt: skip
            plan = plan_from_health(self.spec, HealthTracker.from_evidence(self.spec.thresholds, evidence))
            return Reconciled(plan, dict(evidence or {}), [], [], followed=holder)
        before = {k: bool(v.get("healthy", True)) for k, v in (evidence or {}).items()}
        self.tracker = assess_health(self.spec, evidence)
        transitions = [
            Transition(c, st.healthy, st.last_transition_at or time.time(), st.last_detail)
            for c, st in self.tracker.states.items()
            if before.get(c, True) != st.healthy
        ]
        backends = self._backends()
        plans, per_backend = self.planner.plans(self.tracker, {b.name: b.scale for b in backends})
        plan = plans[self.spec.record_name]
        self._observe(transitions, plans)
        calls = self._dispatch(per_backend, backends)
        self.calls.wait(c for c in calls.values() if c is not None)
        self._report_overdue()
        outcomes = self._outcomes(calls)
        self._save_state()
        self._events(transitions, plan, notify=True)
        return Reconciled(plan, self.tracker.evidence(), outcomes, transitions, plans=plans)

    def health(self) -> tuple[bool, dict[str, object]]:
        """For /healthz: ticking (the last tick at most three intervals ago)?"""
        ok, detail = staleness(self._last_tick_at, self.interval_s)
        return ok, {**detail, "leader": self.leader, "identity": self.identity}

    def run(self, interval_s: float, stop: threading.Event, max_ticks: int | None = None) -> None:
        """Tick every interval_s (fixed cadence, not sleep-after-work) until stop is set.
        Never waits for a backend: calls run off the loop (see `tick(wait=False)`)."""
        self.interval_s = interval_s
        self.start()
        self.log("start", record=self.spec.record_name, records=[r.record_name for r in self.records],
                 interval_s=interval_s, identity=self.identity,
                 backends=self.spec.backends.names, clouds=sorted(self.spec.endpoints),
                 apply_timeout_s=self.apply_timeout_s, lease=repr(self.lease) if self.lease else None)  # fmt: skip
        self._last_tick_at = time.monotonic()
        started = time.monotonic()
        n = 0
        while not stop.is_set() and (max_ticks is None or n < max_ticks):
            try:
                self.tick(wait=False)
            except Exception as exc:
                self.log("tick_error", error=f"{type(exc).__name__}: {exc}")
            n += 1
            next_at = started + n * interval_s
            stop.wait(max(0.0, next_at - time.monotonic()))
        self.close()

    def close(self) -> None:
        """Stop: let quick calls finish (never a hung one), save the evidence, and give the
        lease up when nothing of ours is still writing, so a standby takes over at once."""
        idle = self.calls.idle(min(2.0, self.apply_timeout_s))
        if self.leader:
            self._save_state()
            if self.lease is not None and idle:
                try:
                    self.lease.release()
                except OSError as exc:
                    self.log("lease_error", error=f"{type(exc).__name__}: {exc}")
        self._pool.shutdown(wait=True)
        self.log("stop", released=bool(self.leader and self.lease is not None and idle))


# ------------------------------------------------------------------ CLI


def _endpoint_args(values: list[str]) -> dict[str, str]:
    out = {}
    for v in values:
        cloud, _, address = v.partition("=")
        if not address:
            raise ConfigError.one("--endpoint", v, "cloud=IP, e.g. aws=203.0.113.10", namespace="")
        out[cloud] = address
    return out


def _positive(flag: str, value: float | None, allowed: str) -> None:
    if value is not None and not value > 0:
        raise ConfigError.one(flag, value, allowed, namespace="")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgefabric.controller.daemon", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", required=True, help="stack name: reads Pulumi.<stack>.yaml")
    parser.add_argument("--project-dir", type=Path, default=REPO_ROOT, help="directory holding the stack files")
    parser.add_argument("--once", action="store_true", help="one reconcile, then exit")
    parser.add_argument("--interval", type=float, default=None, help="seconds between ticks (default: healthCheck.intervalS)")
    parser.add_argument("--endpoint", action="append", default=[], help="cloud=IPv4 override, repeatable")
    parser.add_argument("--state-file", type=Path, default=None,
                        help="the evidence, saved every tick (default: .edgefabric/<stack>.state.json under the "
                             "working directory; --once: none unless given)")  # fmt: skip
    parser.add_argument("--state-max-age", type=float, default=None,
                        help="seconds after which saved evidence is stale (default: max(5 intervals, 60))")
    parser.add_argument("--lease-file", type=Path, default=None,
                        help=f"the record's lease (default: ${LEASE_FILE_ENV}, else .edgefabric/<stack>.lease "
                             "under the working directory)")  # fmt: skip
    parser.add_argument("--lease-kubeconfig", action="append", default=[], metavar="CLUSTER=PATH",
                        help="hold the lease as coordination.k8s.io Lease objects instead of a file: one per "
                             "cluster (a kubeconfig, or `in-cluster`), repeatable; with several, leads only "
                             "while holding a majority")  # fmt: skip
    parser.add_argument("--lease-namespace", default="edgefabric-failover",
                        help="namespace of the Lease objects (default: edgefabric-failover, where "
                             "dns.controller.deploy runs the controller)")
    parser.add_argument("--lease-duration", type=float, default=None,
                        help="seconds a lease lasts unless renewed (default: 3 intervals)")
    parser.add_argument("--identity", default=None, help="this controller's name in the lease (default: host/pid)")
    parser.add_argument("--metrics-port", type=int, default=None,
                        help="serve /metrics and /healthz on this port (0: any free port; default: off)")
    parser.add_argument("--metrics-host", default="127.0.0.1", help="address to serve metrics on (default: loopback)")
    args = parser.parse_args(argv)
    log = JsonLog()
    try:
        stack_file = args.project_dir / f"Pulumi.{args.stack}.yaml"
        if not stack_file.exists():
            raise ConfigError.one("--stack", args.stack, f"a stack with a file; {stack_file} does not exist",
                                  namespace="")
        cfg = load_stack_file(stack_file)
        specs = failover_specs(cfg, _endpoint_args(args.endpoint))
        spec = specs[0]
        notifiers = notifiers_from_config(cfg)
        build_backends(spec.backends)  # resolve every secret now: fail fast with the ref's name
        if args.interval is not None and args.interval <= spec.timeout_s:
            raise ConfigError.one("--interval", args.interval, f"> healthCheck.timeoutS ({spec.timeout_s:g})",
                                  namespace="")
        interval = args.interval or spec.interval_s
        _positive("--state-max-age", args.state_max_age, "seconds > 0")
        lease_duration = args.lease_duration if args.lease_duration is not None else 3 * interval
        if not lease_duration > interval:
            raise ConfigError.one("--lease-duration", lease_duration,
                                  f"> the interval ({interval:g}s): the holder renews every tick", namespace="")
        lease_clusters = lease_cluster_args(args.lease_kubeconfig)
        if args.metrics_port is not None and not 0 <= args.metrics_port <= 65535:
            raise ConfigError.one("--metrics-port", args.metrics_port, "0..65535", namespace="")
    except ConfigError as exc:
        log("config_error", error=str(exc), problems=exc.problems)
        return 2
    assert cfg.dns is not None  # failover_spec raised otherwise
    lease_file = args.lease_file or (Path(os.environ[LEASE_FILE_ENV]) if os.environ.get(LEASE_FILE_ENV)
                                     else (WORK_DIR / f"{args.stack}.lease").absolute())  # fmt: skip
    lease: Lease
    if args.lease_kubeconfig:
        lease = kubernetes_lease(lease_clusters, args.lease_namespace, spec.record_name, lease_duration, args.identity)
    else:
        lease = FileLease(lease_file, spec.record_name, lease_duration, identity=args.identity)
    state_file = args.state_file
    if state_file is None and not args.once:
        state_file = (WORK_DIR / f"{args.stack}.state.json").absolute()
    controller = Controller(spec, notifiers, log, apply_timeout_s=cfg.dns.apply_timeout_s, lease=lease,
                            state_path=state_file, state_max_age_s=args.state_max_age, interval_s=interval,
                            records=specs)  # fmt: skip
    server = None
    if args.metrics_port is not None:
        try:
            server = MetricsServer(controller.metrics, controller.health, args.metrics_host, args.metrics_port).start()
        except OSError as exc:
            log("config_error", error=f"--metrics-port {args.metrics_port}: {exc}",
                problems=[f"--metrics-port = {args.metrics_port}: a free port on {args.metrics_host} ({exc})"])  # fmt: skip
            return 2
        log("metrics", url=server.url)
    try:
        if args.once:
            evidence: Mapping[str, Any] | None = None
            if state_file is not None:
                loaded = state.load(state_file, spec.record_name, controller.state_max_age_s, time.time())
                log("restore", state_file=str(state_file), used=loaded.evidence is not None, reason=loaded.reason)
                evidence = loaded.evidence
                if evidence is None:  # no fresh evidence: start from what the answers say
                    evidence = controller.seed_evidence()
            rec = controller.once(evidence)
            controller.close()
            return 1 if rec.failed else 0
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        controller.run(interval, stop)
        return 0
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    raise SystemExit(main())
