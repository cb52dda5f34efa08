"""Health probes and the per-target hysteresis state machine.

Engine-free: never imports pulumi. Used by the WeightedFailover provider, the
continuous controller and the benchmark.

Probes are async (asyncio) and run with bounded concurrency. A probe never
raises: every failure (refused, timeout, wrong status, a certificate problem,
non-zero exit) becomes a `ProbeResult(ok=False, detail=...)`.

- http/https: aiohttp, one fresh connection per probe, to the ingress address,
  while Host, TLS SNI and certificate verification use the name the record
  serves (`HttpProbe.server_name`); a certificate problem says which one
  (expired, hostname mismatch, unknown CA);
- tcp: a connect; custom: a command (argv, no shell, PATH as its environment);
- several checks of one target (`AllOf`): healthy iff all pass.
Every check is bounded by its own timeout (`asyncio.timeout`), so a
black-holed target costs its timeout and no more.

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
import functools
import gc
import os
import signal
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Literal, Union

import aiohttp
import uvloop
from yarl import URL

from edgefabric.config.models import HealthCheckConfig
from edgefabric.errors import ConfigError, Problem

Clock = Callable[[], float]
_SEED = HealthCheckConfig.model_validate({})  # the seed's thresholds: the stack config's defaults, not restated


@dataclass(frozen=True)
class HttpProbe:
    """`method` `url` (http or https); healthy iff the status equals `expected_status`.

    The TCP connection goes to the URL's host (the cloud's ingress address). `server_name`,
    when set, is what the request is *for*: the Host header (with the port when it is not
    the scheme's default), the TLS SNI and the name the certificate must be valid for.
    TLS is verified against the system CAs, or against `ca_pem` (PEM text) instead.
    Redirects are not followed: a 301 is not the expected 200.
    """

    url: str
    method: str = "GET"
    expected_status: int = 200
    server_name: str | None = None
    ca_pem: str | None = field(default=None, repr=False)
    timeout_s: float | None = None  # None: the caller's timeout


@dataclass(frozen=True)
class TcpProbe:
    """Healthy iff a TCP connection to host:port completes within the timeout."""

    host: str
    port: int
    timeout_s: float | None = None


@dataclass(frozen=True)
class CustomProbe:
    """Run `command` (argv, no shell) with PATH as its only environment; healthy iff it
    exits 0 within the timeout. On timeout its whole process group is killed."""

    command: tuple[str, ...]
    timeout_s: float | None = None


# Why a target whose ingress is a DNS name fails a round when the name has no A records.
DOES_NOT_RESOLVE = "does not resolve"


@dataclass(frozen=True)
class Unresolved:
    """A target whose DNS name resolved to no address this round: a failed round whose
    reason is `DOES_NOT_RESOLVE`, at once, with nothing connected to and nothing run. The
    name is resolved again on the next round (`edgefabric.traffic.spec.FailoverSpec.targets`)."""

    name: str


SingleProbe = Union[HttpProbe, TcpProbe, CustomProbe]


@dataclass(frozen=True)
class AllOf:
    """Several checks of one target: healthy iff every one passes. They run at the same
    time, each within its own timeout, so a round costs the slowest check, no more."""

    probes: tuple[SingleProbe, ...]
    labels: tuple[str, ...] = ()  # one per probe, for the detail (`healthCheck.checks[1]`)


Probe = Union[HttpProbe, TcpProbe, CustomProbe, AllOf, Unresolved]


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    latency_s: float
    detail: str
    # A failure's kind when it has one that callers tell apart (`DOES_NOT_RESOLVE`).
    reason: str | None = None


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

USER_AGENT = "edgefabric-health/2"
# OpenSSL's verify codes for the certificate problems an operator has to tell apart.
_CERT_REASONS = {
    10: "certificate expired",  # X509_V_ERR_CERT_HAS_EXPIRED
    9: "certificate not yet valid",  # X509_V_ERR_CERT_NOT_YET_VALID
    62: "hostname mismatch",  # X509_V_ERR_HOSTNAME_MISMATCH
    64: "IP address mismatch",  # X509_V_ERR_IP_ADDRESS_MISMATCH
    2: "unknown CA",  # X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT
    18: "unknown CA",  # X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT
    19: "unknown CA",  # X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN
    20: "unknown CA",  # X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY
    21: "unknown CA",  # X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE
    23: "certificate revoked",  # X509_V_ERR_CERT_REVOKED
}


@functools.lru_cache(maxsize=64)
def tls_context(ca_pem: str | None = None) -> ssl.SSLContext:
    """A verifying client context: the system CAs, or only the CAs of `ca_pem`. Cached, so
    1,000 probes share one context (loading the system store costs milliseconds)."""
    if ca_pem is None:
        return ssl.create_default_context()
    return ssl.create_default_context(cadata=ca_pem)


def _new_session() -> aiohttp.ClientSession:
    # One fresh connection per probe (force_close): a probe sees the target as it is now, and
    # a hung target holds exactly one socket. No pool limit (the caller's semaphore bounds
    # concurrency), no proxies or netrc from the environment, no cookies, no timeouts of its
    # own: `_run` bounds every probe with `asyncio.timeout`.
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, force_close=True, use_dns_cache=False),
        timeout=aiohttp.ClientTimeout(total=None, connect=None, sock_connect=None, sock_read=None),
        trust_env=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        headers={"User-Agent": USER_AGENT},
    )


@functools.lru_cache(maxsize=16384)
def _url(text: str) -> URL:
    """The parsed URL of a probe (yarl URLs are immutable): every round probes the same
    targets, so each is parsed once, not once per probe."""
    return URL(text)


def _host_header(url: URL, server_name: str) -> str:
    default = {"http": 80, "https": 443}.get(url.scheme)
    return server_name if url.port in (None, default) else f"{server_name}:{url.port}"


async def _probe_http(probe: HttpProbe, session: aiohttp.ClientSession | None) -> tuple[bool, str]:
    url = _url(probe.url)
    if url.scheme not in ("http", "https"):
        return False, f"unsupported scheme {url.scheme!r} (http or https)"
    if session is None:
        async with _new_session() as own:
            return await _probe_http(probe, own)
    headers = {}
    if probe.server_name:
        headers["Host"] = _host_header(url, probe.server_name)
    https = url.scheme == "https"
    try:
        async with session.request(
            probe.method, url, headers=headers, allow_redirects=False,
            ssl=tls_context(probe.ca_pem) if https else True,
            server_hostname=probe.server_name if https else None,
        ) as resp:
            status = resp.status
    except aiohttp.ClientConnectorCertificateError as exc:
        return False, _tls_detail(exc, probe)
    if status != probe.expected_status:
        return False, f"status {status} != expected {probe.expected_status}"
    return True, f"status {status}"


async def _probe_tcp(probe: TcpProbe) -> tuple[bool, str]:
    _reader, writer = await asyncio.open_connection(probe.host, probe.port)
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True, "connected"


def _probe_env() -> dict[str, str]:
    """A custom check's whole environment: PATH. Never our secrets or credentials."""
    return {"PATH": os.environ.get("PATH") or os.defpath}


async def _probe_custom(probe: CustomProbe) -> tuple[bool, str]:
    proc = await asyncio.create_subprocess_exec(
        *probe.command, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL, env=_probe_env(), start_new_session=True,
    )
    try:
        code = await proc.wait()
    except asyncio.CancelledError:
        # Timed out: leave nothing running behind us, children of the command included.
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
        raise
    return code == 0, f"exit {code}"


def _tls_detail(exc: aiohttp.ClientConnectorCertificateError, probe: HttpProbe) -> str:
    err = exc.certificate_error
    code = getattr(err, "verify_code", None)
    message = getattr(err, "verify_message", None) or str(err)
    reason = _CERT_REASONS.get(code, "certificate rejected") if isinstance(code, int) else "certificate rejected"
    name = probe.server_name or URL(probe.url).host
    return f"TLS {reason}: {message} (name {name!r}, {exc.host}:{exc.port})"


async def _run(probe: SingleProbe, timeout_s: float, session: aiohttp.ClientSession | None) -> ProbeResult:
    """One check, bounded by its own timeout (or `timeout_s`). Never raises for target failures."""
    timeout = probe.timeout_s if probe.timeout_s is not None else timeout_s
    started = time.perf_counter()
    work: Awaitable[tuple[bool, str]]
    if isinstance(probe, HttpProbe):
        work = _probe_http(probe, session)
    elif isinstance(probe, TcpProbe):
        work = _probe_tcp(probe)
    elif isinstance(probe, CustomProbe):
        work = _probe_custom(probe)
    else:  # pragma: no cover - a bug, not a user error
        raise TypeError(f"unknown probe {probe!r}")
    try:
        async with asyncio.timeout(timeout):  # in this task: no helper task per probe, unlike wait_for
            ok, detail = await work
    except TimeoutError:
        ok, detail = False, f"timeout after {timeout:g}s"
    except (aiohttp.ClientSSLError, ssl.SSLError) as exc:
        ok, detail = False, f"TLS handshake failed: {exc}"
    except aiohttp.ClientConnectorError as exc:
        ok, detail = False, f"{type(exc.os_error).__name__}: {exc.os_error}"
    except aiohttp.ClientError as exc:
        ok, detail = False, f"{type(exc).__name__}: {exc}"
    except (OSError, UnicodeError, ValueError) as exc:
        ok, detail = False, f"{type(exc).__name__}: {exc}"
    return ProbeResult(ok=ok, latency_s=time.perf_counter() - started, detail=detail)


async def probe_once(probe: Probe, timeout_s: float, session: aiohttp.ClientSession | None = None) -> ProbeResult:
    """Run one probe, each check within its own timeout (default `timeout_s`). Never raises
    for target failures. `session` is shared by `probe_many`; without one, http probes open
    their own."""
    if isinstance(probe, Unresolved):
        return ProbeResult(ok=False, latency_s=0.0, detail=f"{probe.name} {DOES_NOT_RESOLVE}", reason=DOES_NOT_RESOLVE)
    if not isinstance(probe, AllOf):
        return await _run(probe, timeout_s, session)
    started = time.perf_counter()
    results = await asyncio.gather(*(_run(p, timeout_s, session) for p in probe.probes))
    labels = probe.labels if len(probe.labels) == len(results) else tuple(f"check {i}" for i in range(len(results)))
    named = [(f"{label}: {r.detail}", r.ok) for label, r in zip(labels, results, strict=True)]
    failed = [text for text, ok in named if not ok]
    # The detail says why a target failed: its failed checks only; all of them when it passed.
    detail = "; ".join(failed or [text for text, _ in named])
    return ProbeResult(ok=not failed, latency_s=time.perf_counter() - started, detail=detail)


def _needs_session(probe: Probe) -> bool:
    if isinstance(probe, Unresolved):
        return False
    return any(isinstance(p, HttpProbe) for p in (probe.probes if isinstance(probe, AllOf) else (probe,)))


async def probe_many(
    probes: Mapping[str, Probe], timeout_s: float, concurrency: int = 100
) -> dict[str, ProbeResult]:
    """Probe every target, at most `concurrency` targets at a time (a target's checks run
    together in its slot)."""
    if concurrency < 1:
        raise ValueError(f"concurrency {concurrency!r}: an integer >= 1")  # a caller's bug, not user input
    gate = asyncio.Semaphore(concurrency)

    async def one(key: str, probe: Probe, session: aiohttp.ClientSession | None) -> tuple[str, ProbeResult]:
        async with gate:
            return key, await probe_once(probe, timeout_s, session)

    if not any(_needs_session(p) for p in probes.values()):
        return dict(await asyncio.gather(*(one(k, p, None) for k, p in probes.items())))
    async with _new_session() as session:
        return dict(await asyncio.gather(*(one(k, p, session) for k, p in probes.items())))


def new_probe_loop() -> asyncio.AbstractEventLoop:
    """The event loop probes run on: uvloop's. Its TLS transport is compiled (asyncio's own is
    pure Python), which makes an https probe about a quarter cheaper in CPU; with hundreds of
    targets the round is CPU-bound, so that is what `probe_1000_c500_s` measures
    (bench/failover.py prints both loops)."""
    return uvloop.new_event_loop()


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic-GC passes during a probe round. A round allocates tens of thousands of
    short-lived objects (tasks, futures, transports, TLS objects), which keep triggering
    collections that rescan the whole heap and find no cycles worth the scan: 12 % of a
    500-target round's CPU by a sampling profile, and the round is CPU-bound at that scale
    (bench/failover.py `probe_1000_c500_s`). Refcounting still frees everything as usual;
    the collector runs again once the round is over. Process-wide: another thread's round
    ending first turns it back on early, which only costs the saving."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def probe_many_sync(
    probes: Mapping[str, Probe],
    timeout_s: float,
    concurrency: int = 100,
    loop_factory: Callable[[], asyncio.AbstractEventLoop] = new_probe_loop,
    pause_collector: bool = True,
) -> dict[str, ProbeResult]:
    """`probe_many` for synchronous callers (providers, controller).

    Runs on a private event loop and leaves the thread's current loop alone
    (`asyncio.run` would reset it, breaking a caller such as the Pulumi runtime
    that uses the thread's loop afterwards). From inside a running loop it
    runs on a helper thread instead of failing. The cyclic collector is paused for the
    round (`collector_paused`) unless `pause_collector` is false (the benchmark's baseline).
    """

    def fresh() -> dict[str, ProbeResult]:
        loop = loop_factory()
        try:
            with collector_paused() if pause_collector else contextlib.nullcontext():
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
