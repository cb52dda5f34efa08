"""Health probes and the per-target hysteresis state machine.

Engine-free: never imports pulumi. Used by the WeightedFailover provider, the
continuous controller and the benchmark.

Probes are async (asyncio) and run with bounded concurrency. A probe never
raises: every failure (refused, timeout, wrong status, non-zero exit) becomes a
`ProbeResult(ok=False, detail=...)`.

State machine (per target), with an injectable clock so tests run instantly:
- a target starts healthy (like Route53: no evidence yet means serve it);
- it goes DOWN after `failure_threshold` consecutive failures;
- it comes back UP after `success_threshold` consecutive successes AND once the
  current success streak has lasted `recovery_hold_down_s` seconds. Measuring
  the hold-down from the start of the streak (not from the moment it went
  down) is what stops a flapping target from oscillating: any failure resets
  the streak, so a target that flaps every probe never qualifies.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Literal, Union
from urllib.parse import urlsplit

from edgefabric.config.models import HealthCheckConfig
from edgefabric.errors import ConfigError, Problem

Clock = Callable[[], float]
_SEED = HealthCheckConfig.model_validate({})  # the seed's thresholds: the stack config's defaults, not restated


@dataclass(frozen=True)
class HttpProbe:
    """GET/HEAD/... `url`; healthy iff the status equals `expected_status`."""

    url: str
    method: str = "GET"
    expected_status: int = 200


@dataclass(frozen=True)
class TcpProbe:
    """Healthy iff a TCP connection to host:port completes within the timeout."""

    host: str
    port: int


@dataclass(frozen=True)
class CustomProbe:
    """Run `command` (no shell); healthy iff it exits 0 within the timeout."""

    command: tuple[str, ...]


Probe = Union[HttpProbe, TcpProbe, CustomProbe]


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    latency_s: float
    detail: str


@dataclass(frozen=True)
class Thresholds:
    """Hysteresis settings (`healthCheck.failureThreshold`, `successThreshold`,
    `recoveryHoldDownS`); defaults are the stack config's."""

    failure_threshold: int = _SEED.failure_threshold
    success_threshold: int = _SEED.success_threshold
    recovery_hold_down_s: float = _SEED.recovery_hold_down_s

    def __post_init__(self) -> None:
        problems = [
            Problem(path, value, allowed)
            for path, value, allowed, ok in (
                ("healthCheck.failureThreshold", self.failure_threshold, "an integer >= 1", self.failure_threshold >= 1),
                ("healthCheck.successThreshold", self.success_threshold, "an integer >= 1", self.success_threshold >= 1),
                ("healthCheck.recoveryHoldDownS", self.recovery_hold_down_s, "seconds >= 0",
                 self.recovery_hold_down_s >= 0),
            )
            if not ok
        ]
        if problems:
            raise ConfigError(problems)


# --------------------------------------------------------------------------- probes


async def _probe_http(probe: HttpProbe, timeout_s: float) -> tuple[bool, str]:
    # A raw HTTP/1.1 request over asyncio streams: no client library, no
    # connection pool, so 1,000 concurrent probes cost one socket each and a
    # black-holed target costs exactly the timeout.
    parts = urlsplit(probe.url)
    if parts.scheme != "http":
        # https would need TLS verification config; the in-cluster ingress
        # health paths this project probes are plain http.
        return False, f"unsupported scheme {parts.scheme!r} (http only)"
    host = parts.hostname or ""
    port = parts.port or 80
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    reader, writer = await asyncio.open_connection(host, port)
    try:
        request = (
            f"{probe.method} {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            "User-Agent: edgefabric-health/1\r\nConnection: close\r\n\r\n"
        )
        writer.write(request.encode("ascii"))
        await writer.drain()
        status_line = await reader.readline()
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    fields = status_line.decode("latin-1").split()
    if len(fields) < 2 or not fields[1].isdigit():
        return False, f"malformed status line {status_line[:60]!r}"
    status = int(fields[1])
    if status != probe.expected_status:
        return False, f"status {status} != expected {probe.expected_status}"
    return True, f"status {status}"


async def _probe_tcp(probe: TcpProbe, _timeout_s: float) -> tuple[bool, str]:
    _reader, writer = await asyncio.open_connection(probe.host, probe.port)
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True, "connected"


async def _probe_custom(probe: CustomProbe, _timeout_s: float) -> tuple[bool, str]:
    proc = await asyncio.create_subprocess_exec(
        *probe.command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        code = await proc.wait()
    except asyncio.CancelledError:
        # Timed out: do not leave the child running behind us.
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    return code == 0, f"exit {code}"


async def probe_once(probe: Probe, timeout_s: float) -> ProbeResult:
    """Run one probe with a hard timeout. Never raises for target failures."""
    started = time.perf_counter()
    runner: Callable[[Probe, float], Awaitable[tuple[bool, str]]]
    if isinstance(probe, HttpProbe):
        runner = _probe_http  # type: ignore[assignment]
    elif isinstance(probe, TcpProbe):
        runner = _probe_tcp  # type: ignore[assignment]
    elif isinstance(probe, CustomProbe):
        runner = _probe_custom  # type: ignore[assignment]
    else:  # pragma: no cover - a bug, not a user error
        raise TypeError(f"unknown probe {probe!r}")
    try:
        ok, detail = await asyncio.wait_for(runner(probe, timeout_s), timeout=timeout_s)
    except TimeoutError:
        ok, detail = False, f"timeout after {timeout_s}s"
    except (OSError, UnicodeError, ValueError) as exc:
        ok, detail = False, f"{type(exc).__name__}: {exc}"
    return ProbeResult(ok=ok, latency_s=time.perf_counter() - started, detail=detail)


async def probe_many(
    probes: Mapping[str, Probe], timeout_s: float, concurrency: int = 100
) -> dict[str, ProbeResult]:
    """Probe every target, at most `concurrency` at a time."""
    if concurrency < 1:
        raise ValueError(f"concurrency {concurrency!r}: an integer >= 1")  # a caller's bug, not user input
    gate = asyncio.Semaphore(concurrency)

    async def one(key: str, probe: Probe) -> tuple[str, ProbeResult]:
        async with gate:
            return key, await probe_once(probe, timeout_s)

    pairs = await asyncio.gather(*(one(k, p) for k, p in probes.items()))
    return dict(pairs)


def probe_many_sync(
    probes: Mapping[str, Probe], timeout_s: float, concurrency: int = 100
) -> dict[str, ProbeResult]:
    """`probe_many` for synchronous callers (providers, controller).

    Runs on a private event loop and leaves the thread's current loop alone
    (`asyncio.run` would reset it, breaking a caller such as the Pulumi runtime
    that uses the thread's loop afterwards). From inside a running loop it
    runs on a helper thread instead of failing.
    """

    def fresh() -> dict[str, ProbeResult]:
        loop = asyncio.new_event_loop()
        try:
            return loop.run_until_complete(probe_many(probes, timeout_s, concurrency))
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return fresh()
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(fresh).result()


# ------------------------------------------------------------------ state machine


@dataclass
class TargetState:
    """Observable health of one target; serialisable as evidence."""

    healthy: bool = True
    consecutive_failures: int = 0
    consecutive_successes: int = 0
    success_streak_since: float | None = None
    last_probe_at: float | None = None
    last_transition_at: float | None = None
    last_detail: str = ""

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> TargetState:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})  # type: ignore[arg-type]


@dataclass(frozen=True)
class Transition:
    target: str
    to_healthy: bool
    at: float
    detail: str

    @property
    def kind(self) -> Literal["recovery", "failure"]:
        return "recovery" if self.to_healthy else "failure"


def advance(state: TargetState, ok: bool, now: float, thresholds: Thresholds, detail: str = "") -> bool:
    """Apply one probe outcome to `state` in place; return True if it flipped."""
    state.last_probe_at = now
    state.last_detail = detail
    if ok:
        state.consecutive_failures = 0
        if state.consecutive_successes == 0:
            state.success_streak_since = now
        state.consecutive_successes += 1
        if not state.healthy:
            streak_age = now - (state.success_streak_since if state.success_streak_since is not None else now)
            if (
                state.consecutive_successes >= thresholds.success_threshold
                and streak_age >= thresholds.recovery_hold_down_s
            ):
                state.healthy = True
                state.last_transition_at = now
                return True
        return False
    state.consecutive_successes = 0
    state.success_streak_since = None
    state.consecutive_failures += 1
    if state.healthy and state.consecutive_failures >= thresholds.failure_threshold:
        state.healthy = False
        state.last_transition_at = now
        return True
    return False


def is_settled(state: TargetState, thresholds: Thresholds) -> bool:
    """True when more probes right now could not change the verdict.

    Used by one-shot assessments (pulumi preview/up): a failing-but-healthy
    target needs more probes before it can be declared down.
    """
    if state.healthy:
        return state.consecutive_failures == 0
    return True  # recovery is gated by the hold-down, which back-to-back probes cannot satisfy


@dataclass
class HealthTracker:
    """Hysteresis over a set of named targets."""

    thresholds: Thresholds
    clock: Clock = time.time
    states: dict[str, TargetState] = field(default_factory=dict)

    def observe(self, results: Mapping[str, ProbeResult]) -> list[Transition]:
        now = self.clock()
        transitions: list[Transition] = []
        for target in sorted(results):
            result = results[target]
            state = self.states.setdefault(target, TargetState())
            if advance(state, result.ok, now, self.thresholds, result.detail):
                transitions.append(Transition(target, state.healthy, now, result.detail))
        return transitions

    def healthy(self) -> dict[str, bool]:
        return {name: st.healthy for name, st in sorted(self.states.items())}

    def evidence(self) -> dict[str, dict[str, object]]:
        return {name: st.to_dict() for name, st in sorted(self.states.items())}

    @classmethod
    def from_evidence(
        cls,
        thresholds: Thresholds,
        evidence: Mapping[str, Mapping[str, object]] | None,
        clock: Clock = time.time,
    ) -> HealthTracker:
        states = {name: TargetState.from_dict(data) for name, data in (evidence or {}).items()}
        return cls(thresholds=thresholds, clock=clock, states=states)

    def unsettled(self, targets: Iterable[str]) -> list[str]:
        return [
            t for t in targets if not is_settled(self.states.setdefault(t, TargetState()), self.thresholds)
        ]


def assess(
    probes: Mapping[str, Probe],
    thresholds: Thresholds,
    timeout_s: float,
    evidence: Mapping[str, Mapping[str, object]] | None = None,
    round_gap_s: float = 1.0,
    clock: Clock = time.time,
    sleep: Callable[[float], None] = time.sleep,
    concurrency: int = 100,
) -> HealthTracker:
    """One-shot health verdict for deploy-time callers.

    Continues from stored `evidence` (so a recovery hold-down spans runs) and
    probes up to `failure_threshold` rounds, `round_gap_s` apart, re-probing
    only targets whose verdict is still open. A preview therefore shows a dead
    endpoint as weight 0 without waiting for several previews.
    """
    tracker = HealthTracker.from_evidence(thresholds, evidence, clock)
    # Targets no longer configured drop out of the evidence.
    tracker.states = {k: v for k, v in tracker.states.items() if k in probes}
    pending = dict(probes)
    for round_no in range(thresholds.failure_threshold):
        if round_no:
            sleep(round_gap_s)
        tracker.observe(probe_many_sync(pending, timeout_s, concurrency))
        pending = {k: probes[k] for k in tracker.unsettled(pending)}
        if not pending:
            break
    return tracker
