"""Suite-wide guard: every test starts with a current event loop in the main thread.

`asyncio.run()` (the probes, the MQTT and controller tests) ends by setting the main thread's
loop to None, and from then on `asyncio.get_event_loop()` raises instead of creating one. Pulumi's
mocks (the render harness, the bad-config tests) ask for that loop, so a test that happened to
run after an `asyncio.run()` failed for reasons of order alone.
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _current_event_loop() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            loop = asyncio.get_event_loop()
            if loop.is_closed():
                raise RuntimeError("closed")
        except RuntimeError:
            asyncio.set_event_loop(asyncio.new_event_loop())
    yield
