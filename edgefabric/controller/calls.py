"""Backend calls off the control loop: at most one in flight per backend, each under a deadline.

The loop submits a call (an apply, or the read that seeds a new lease holder) and goes back
to probing; it never waits for a backend unless asked to (`wait`, for `--once` and tests),
and then only until the call's deadline. A backend whose previous call is still running
gets no second one: the loop reports it and submits again on a later tick, when the call
has returned. A call past its deadline is reported once (`overdue`); its thread runs on
until the client's own timeouts end it, and reports again then (`late`).

Each call has its own daemon thread: a thread cannot be cancelled, and a pool's workers
are joined at interpreter exit, so one hung client would hold up a clean shutdown.

Engine-free: never imports pulumi.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Call:
    backend: str
    kind: str  # "apply" | "read"
    started_at: float  # monotonic
    deadline_at: float
    done: threading.Event = field(default_factory=threading.Event)
    ok: bool | None = None
    value: Any = None
    error: str | None = None
    finished_at: float | None = None
    overdue_reported: bool = False

    @property
    def duration_s(self) -> float | None:
        return None if self.finished_at is None else self.finished_at - self.started_at

    @property
    def late(self) -> bool:
        """Finished after its deadline (and was reported overdue)."""
        return self.overdue_reported


class BackendCalls:
    """At most one call in flight per backend; `on_done` runs on the call's thread."""

    def __init__(
        self,
        deadline_s: float,
        on_done: Callable[[Call], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.deadline_s = deadline_s
        self.on_done = on_done
        self.clock = clock
        self._lock = threading.Lock()
        self._inflight: dict[str, Call] = {}

    def running(self, backend: str) -> Call | None:
        with self._lock:
            return self._inflight.get(backend)

    def submit(self, backend: str, kind: str, fn: Callable[[], Any]) -> Call | None:
        """Start `fn` on its own thread; None (nothing started) while `backend` has a call running."""
        with self._lock:
            if backend in self._inflight:
                return None
            now = self.clock()
            call = Call(backend, kind, now, now + self.deadline_s)
            self._inflight[backend] = call
        threading.Thread(target=self._run, args=(call, fn), name=f"{kind}-{backend}", daemon=True).start()
        return call

    def _run(self, call: Call, fn: Callable[[], Any]) -> None:
        try:
            call.value, call.ok = fn(), True
        except Exception as exc:
            call.ok, call.error = False, f"{type(exc).__name__}: {exc}"
        call.finished_at = self.clock()
        with self._lock:
            if self._inflight.get(call.backend) is call:
                del self._inflight[call.backend]
        try:
            if self.on_done is not None:
                self.on_done(call)
        finally:
            call.done.set()

    def overdue(self) -> list[Call]:
        """Calls past their deadline not reported before; each is returned once."""
        now = self.clock()
        out = []
        with self._lock:
            for call in self._inflight.values():
                if not call.overdue_reported and now >= call.deadline_at and not call.done.is_set():
                    call.overdue_reported = True
                    out.append(call)
        return out

    def wait(self, calls: Iterable[Call]) -> None:
        """Wait for each call until it is done or its deadline has passed."""
        for call in calls:
            call.done.wait(max(0.0, call.deadline_at - self.clock()))

    def idle(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for every call to finish; True if none is left running."""
        end = self.clock() + timeout_s
        while True:
            with self._lock:
                calls = list(self._inflight.values())
            if not calls:
                return True
            left = end - self.clock()
            if left <= 0:
                return False
            calls[0].done.wait(min(left, 0.05))
