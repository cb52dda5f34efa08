"""Fixtures for the engine tier: the real Pulumi CLI (built once, cached across runs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.kits.engine import ensure_engine


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.engine)


@pytest.fixture(scope="session")
def engine_bin() -> Path:
    """Directory of the `pulumi` to use: .tools/bin (built from Go modules) or a compatible one on PATH."""
    return ensure_engine()
