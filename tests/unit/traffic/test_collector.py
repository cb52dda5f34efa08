"""A probe round pauses Python's cyclic collector (bench/failover.py measured it at 12 % of a
500-target round's CPU) and leaves it as it found it, whatever the round does."""

from __future__ import annotations

import gc
import socket

import pytest

from edgefabric.traffic import health
from edgefabric.traffic.health import TcpProbe, collector_paused, probe_many_sync


def test_paused_inside_and_restored_after_even_on_error() -> None:
    assert gc.isenabled()
    with pytest.raises(RuntimeError), collector_paused():
        assert not gc.isenabled()
        raise RuntimeError("a round that fails")
    assert gc.isenabled()


def test_a_collector_already_off_stays_off() -> None:
    gc.disable()
    try:
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_a_round_runs_with_the_collector_paused_unless_asked_not_to(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[bool] = []
    real = health.probe_many

    async def watching(*args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(gc.isenabled())
        return await real(*args, **kwargs)

    monkeypatch.setattr(health, "probe_many", watching)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        probes = {"t": TcpProbe("127.0.0.1", listener.getsockname()[1])}
        assert probe_many_sync(probes, 1.0)["t"].ok
        assert probe_many_sync(probes, 1.0, pause_collector=False)["t"].ok
    assert seen == [False, True] and gc.isenabled()
