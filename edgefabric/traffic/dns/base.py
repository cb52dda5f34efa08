"""The one DNS backend interface, and what every backend shares.

A backend publishes the weighted answer sets of one record name:
- `read(spec)`   -> the weights currently published (answer -> cloud -> weight),
                    or None when nothing is published;
- `apply(spec, plan)` -> makes the published state equal to the plan; applying
                    the same plan twice changes nothing (returns changed=False);
- `delete(spec)` -> removes everything the backend published for the name;
                    deleting what is already gone succeeds.

Backends are built per call from settings plus credentials passed in by the
caller (read from the environment or from Pulumi secrets there); nothing here
is pickled into Pulumi state.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from tenacity import (
    RetryError,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from edgefabric.traffic.health import Thresholds
from edgefabric.traffic.planner import Plan

T = TypeVar("T")
Published = dict[str, dict[str, int]]


class DnsBackendError(RuntimeError):
    """A backend call failed after retries (or with a non-retryable error)."""


class TransientError(RuntimeError):
    """Throttling / 5xx / connection trouble: worth retrying."""


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
    """What to publish: an FQDN (trailing dot), TTL, and one IPv4 per cloud."""

    name: str
    ttl: int
    endpoints: Mapping[str, str]
    health: HealthSettings = field(default_factory=HealthSettings)
    # Route53 health-check ids per cloud (optional, attached to weighted sets).
    health_check_ids: Mapping[str, str] = field(default_factory=dict)

    def fqdn(self) -> str:
        return self.name if self.name.endswith(".") else self.name + "."

    def cloud_for_ip(self) -> dict[str, str]:
        return {ip: cloud for cloud, ip in self.endpoints.items()}


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


def apply_all(
    backends: Sequence[DnsBackend], spec: RecordSpec, plan_for_scale: Callable[[int], Plan]
) -> list[BackendOutcome]:
    """Apply to every backend; one backend failing never stops the others.

    Each backend's own apply is all-or-nothing where the API allows it (one
    Route53 batch, one PowerDNS PATCH), so a failed backend keeps its previous
    answer set and the next reconcile converges it.
    """
    outcomes: list[BackendOutcome] = []
    for backend in backends:
        try:
            res = backend.apply(spec, plan_for_scale(backend.scale))
            outcomes.append(BackendOutcome(backend.name, True, res.changed, res.record_ids))
        except Exception as exc:
            outcomes.append(BackendOutcome(backend.name, False, error=f"{type(exc).__name__}: {exc}"))
    return outcomes


def read_all(backends: Sequence[DnsBackend], spec: RecordSpec) -> dict[str, Published | str | None]:
    out: dict[str, Published | str | None] = {}
    for backend in backends:
        try:
            out[backend.name] = backend.read(spec)
        except Exception as exc:
            out[backend.name] = f"error: {type(exc).__name__}: {exc}"
    return out
