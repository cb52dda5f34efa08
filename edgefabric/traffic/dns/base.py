"""The one DNS backend interface, and what every backend shares.

A backend publishes the weighted answer sets of one record name:
- `read(spec)`   -> the weights currently published (answer -> cloud -> weight),
                    or None when nothing is published;
- `apply(spec, plan)` -> makes the published state equal to the plan; applying
                    the same plan twice changes nothing (returns changed=False);
- `delete(spec)` -> removes everything the backend published for the name;
                    deleting what is already gone succeeds.

Only our records: each backend marks what it creates (a Route53 SetIdentifier prefix,
Traffic Manager tags, a PowerDNS rrset comment; Cloud DNS by exact names and our
addresses) and reads, rewrites and deletes only what carries its mark. A record someone
else keeps beside ours survives apply and delete.

`call_all` runs one call per backend in parallel, each under an optional deadline, so one
hung backend never holds up the others (`apply_all`, `read_all`).

Backends are built per call from settings plus credentials passed in by the
caller (read from the environment or from Pulumi secrets there); nothing here
is pickled into Pulumi state.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from tenacity import (
    RetryError,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from edgefabric.config.models import is_ip_address
from edgefabric.traffic.health import Thresholds
from edgefabric.traffic.planner import Plan

T = TypeVar("T")
Published = dict[str, dict[str, int]]


class DnsBackendError(RuntimeError):
    """A backend call failed after retries (or with a non-retryable error)."""


class TransientError(RuntimeError):
    """Throttling / 5xx / connection trouble: worth retrying."""


class DeadlineExceeded(DnsBackendError):
    """A backend did not answer within the caller's deadline (`dns.applyTimeoutS`)."""


@dataclass(frozen=True)
class HealthSettings:
    """What native checkers (Traffic Manager monitor, Route53 checks) need; built from the
    health check by `edgefabric.traffic.spec.native_check`, the one mapping."""

    protocol: str = "HTTP"  # HTTP | HTTPS | TCP
    port: int = 80
    path: str | None = "/health"  # None for TCP
    interval_s: float = 30.0
    timeout_s: float = 5.0
    thresholds: Thresholds = field(default_factory=Thresholds)


@dataclass(frozen=True)
class RecordSpec:
    """What to publish: an FQDN (trailing dot), TTL, and per cloud its endpoint (an IPv4
    address, or a DNS name such as an AWS load balancer's) with the IPv4 addresses it
    answers at.

    Every backend answers with A records. A cloud with several addresses gets one answer
    per address, its weight split evenly between them (`split`); Traffic Manager alone
    takes a DNS name natively, as an external endpoint's target.
    """

    name: str
    ttl: int
    endpoints: Mapping[str, str]
    health: HealthSettings = field(default_factory=HealthSettings)
    # Route53 health-check ids per cloud (optional, attached to weighted sets).
    health_check_ids: Mapping[str, str] = field(default_factory=dict)
    # Cloud -> the IPv4 addresses its endpoint resolved to for this apply. A cloud not
    # listed answers at its endpoint when that is an IP; an empty tuple (or a name not
    # listed) means the name did not resolve: the cloud is left out of every A answer.
    addresses: Mapping[str, Sequence[str]] = field(default_factory=dict)

    def fqdn(self) -> str:
        return self.name if self.name.endswith(".") else self.name + "."

    def answers_for(self, cloud: str) -> tuple[str, ...]:
        """The IPv4 addresses `cloud` is published with, in a stable order."""
        if cloud in self.addresses:
            return tuple(self.addresses[cloud])
        endpoint = self.endpoints[cloud]
        return () if not is_ip_address(endpoint) else (endpoint,)

    def split(self, weights: Mapping[str, int]) -> list[tuple[str, str, int]]:
        """(cloud, address, weight) for each address of each cloud in `weights`, by cloud.

        A cloud's weight is split evenly between its addresses; the remainder goes one unit
        each to the first ones, so the parts add up to the cloud's weight exactly (and
        `read` gives back the plan's weights). A cloud without an address has no part."""
        out: list[tuple[str, str, int]] = []
        for cloud in sorted(weights):
            answers = self.answers_for(cloud)
            if not answers:
                continue
            base, extra = divmod(int(weights[cloud]), len(answers))
            out += [(cloud, a, base + (1 if i < extra else 0)) for i, a in enumerate(answers)]
        return out

    def cloud_for_ip(self) -> dict[str, str]:
        """Which cloud an answer (an address, or a Traffic Manager target) belongs to."""
        out = {ip: cloud for cloud, ip in self.endpoints.items()}
        for cloud, answers in self.addresses.items():
            out.update(dict.fromkeys(answers, cloud))
        return out


@dataclass(frozen=True)
class ApplyResult:
    changed: bool
    record_ids: list[str]


class DnsBackend(Protocol):
    name: str
    scale: int
    supports_regions: bool

    def read(self, spec: RecordSpec) -> Published | None: ...

    def apply(self, spec: RecordSpec, plan: Plan) -> ApplyResult: ...

    def delete(self, spec: RecordSpec) -> None: ...


def apply_records(
    backend: DnsBackend,
    items: Sequence[tuple[RecordSpec, Plan]],
    own: Sequence[tuple[DnsBackend, RecordSpec, Plan]] = (),
    concurrency: int = 16,
) -> ApplyResult:
    """Every record's plan on one backend. A backend with `apply_many` batches them (one
    Route53 ChangeBatch per 1,000 changes, one PowerDNS PATCH per zone, one Cloud DNS change
    per zone); the others apply record by record.

    `own` are names whose settings for this backend differ from `backend`'s (each name's own
    Traffic Manager profiles), each with a backend built from its settings. A backend type
    with `apply_group` takes them together with `items` in one go (Traffic Manager: one list
    of the resource group for the round, then only the PUTs needed); otherwise they are
    applied `concurrency` at a time, so 100 names cost a few round trips, not 100."""
    group = getattr(type(backend), "apply_group", None)
    if callable(group):
        grouped: ApplyResult = group([(backend, spec, plan) for spec, plan in items] + list(own))
        return grouped
    many = getattr(backend, "apply_many", None)
    changed, ids = False, []
    if callable(many):
        result: ApplyResult = many(items)
        changed, ids = result.changed, list(result.record_ids)
    else:
        for spec, plan in items:
            one = backend.apply(spec, plan)
            changed, ids = changed or one.changed, ids + one.record_ids
    if own:
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=f"dns-{backend.name}") as pool:
            for one in pool.map(lambda w: w[0].apply(w[1], w[2]), own):
                changed, ids = changed or one.changed, ids + one.record_ids
    return ApplyResult(changed, ids)


def published_view(plan: Plan, supports_regions: bool) -> Published:
    """The part of a plan a backend can publish, with zero weights dropped."""
    answers = plan.weights() if supports_regions else {"default": plan.default}
    return {name: {c: w for c, w in ws.items() if w > 0} for name, ws in answers.items()}


def retry(
    fn: Callable[[], T],
    what: str,
    attempts: int = 4,
    base_delay_s: float = 0.2,
    retry_on: tuple[type[BaseException], ...] = (TransientError,),
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call fn; retry `retry_on` errors up to `attempts` calls in all, with exponential
    backoff and full jitter (before retry n: uniform(0, base_delay_s * 2**(n-1)) seconds),
    which keeps several controllers from retrying in lockstep. Any other error is raised at
    once; running out of attempts raises DnsBackendError naming `what`."""
    retrying = Retrying(
        stop=stop_after_attempt(attempts),
        wait=wait_random_exponential(multiplier=base_delay_s),
        retry=retry_if_exception_type(retry_on),
        sleep=sleep,
    )
    try:
        return retrying(fn)
    except RetryError as exc:
        last = exc.last_attempt.exception()
        raise DnsBackendError(f"{what}: failed after {attempts} attempts: {last}") from last


@dataclass
class BackendOutcome:
    backend: str
    ok: bool
    changed: bool = False
    record_ids: list[str] = field(default_factory=list)
    error: str | None = None


def call_all(
    backends: Sequence[DnsBackend], fn: Callable[[DnsBackend], T], deadline_s: float | None = None
) -> dict[str, T | BaseException]:
    """`fn(backend)` for every backend at once, each on its own thread; backend name -> result,
    or the exception it raised.

    With `deadline_s`, a backend that has not answered by then gets a `DeadlineExceeded` and
    the others are not kept waiting. Its thread is a daemon left to finish on its own (a
    thread cannot be cancelled; the clients' own timeouts end it): it never holds up the
    caller, nor the interpreter's exit.
    """
    results: dict[str, T | BaseException] = {}
    lock = threading.Lock()

    def run(backend: DnsBackend) -> None:
        try:
            value: T | BaseException = fn(backend)
        except Exception as exc:
            value = exc
        with lock:
            results.setdefault(backend.name, value)

    threads = [threading.Thread(target=run, args=(b,), name=f"dns-{b.name}", daemon=True) for b in backends]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(None if deadline_s is None else max(0.0, started + deadline_s - time.monotonic()))
    with lock:
        for b in backends:
            if b.name not in results:  # only with a deadline: without one, every thread was joined
                results[b.name] = DeadlineExceeded(f"{b.name}: no answer within {deadline_s}s")
        return {b.name: results[b.name] for b in backends}


def _error(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, DeadlineExceeded) else f"{type(exc).__name__}: {exc}"


def apply_all(
    backends: Sequence[DnsBackend],
    spec: RecordSpec,
    plan_for_scale: Callable[[int], Plan],
    deadline_s: float | None = None,
) -> list[BackendOutcome]:
    """Apply to every backend in parallel (`call_all`); one backend failing or hanging never
    stops or delays the others beyond `deadline_s`.

    Each backend's own apply is all-or-nothing where the API allows it (one
    Route53 batch, one PowerDNS PATCH), so a failed backend keeps its previous
    answer set and the next reconcile converges it.
    """
    plans = {b.name: plan_for_scale(b.scale) for b in backends}  # on this thread: callers' trackers are not shared
    results = call_all(backends, lambda b: b.apply(spec, plans[b.name]), deadline_s)
    outcomes: list[BackendOutcome] = []
    for name, res in results.items():
        if isinstance(res, BaseException):
            outcomes.append(BackendOutcome(name, False, error=_error(res)))
        else:
            outcomes.append(BackendOutcome(name, True, res.changed, res.record_ids))
    return outcomes


def read_all(
    backends: Sequence[DnsBackend], spec: RecordSpec, deadline_s: float | None = None
) -> dict[str, Published | str | None]:
    """What every backend publishes (read in parallel); an error or a missed deadline is a
    string `error: ...` in place of that backend's answer."""
    results = call_all(backends, lambda b: b.read(spec), deadline_s)
    return {name: f"error: {_error(res)}" if isinstance(res, BaseException) else res
            for name, res in results.items()}
