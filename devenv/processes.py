"""Stopping the local stand-ins by pid: one way for anvil, PowerDNS, the endpoints and the CLI."""

from __future__ import annotations

import contextlib
import os
import signal
import time


def alive(pid: int) -> bool:
    """True while `pid` runs. A zombie (exited, not yet reaped) counts as gone: detached
    stand-ins are not our children, and PID 1 may take seconds to reap them."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def terminate(pid: int, timeout_s: float = 10.0) -> bool:
    """SIGTERM, wait until it exits (reaping it if it is our child), SIGKILL after `timeout_s`.

    Returns False if it was not running.
    """
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return True
        if not alive(pid):
            return True
        time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError):  # it may exit between the last check and now
        os.kill(pid, signal.SIGKILL)
    return True
