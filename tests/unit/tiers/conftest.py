"""Fixtures for the mocks tier: each shipped stack rendered once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgefabric.config import StackConfig, load_stack_file
from tooling.render import Rendered, render_stack_file

ROOT = Path(__file__).resolve().parents[3]
STACKS = ("local", "dev", "staging", "prod")
_cache: dict[str, Rendered] = {}


def rendered_stack(stack: str) -> Rendered:
    if stack not in _cache:
        _cache[stack] = render_stack_file(ROOT / f"Pulumi.{stack}.yaml")
    return _cache[stack]


@pytest.fixture(params=STACKS)
def stack(request: pytest.FixtureRequest) -> tuple[StackConfig, Rendered]:
    name = request.param
    return load_stack_file(ROOT / f"Pulumi.{name}.yaml"), rendered_stack(name)
