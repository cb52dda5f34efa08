"""The mock-rendering harness stands on the Pulumi SDK's public API only, and the benchmark
on the harness's public functions only: an SDK upgrade may change what is private."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def _private_uses(source: str, packages: tuple[str, ...]) -> list[str]:
    """Underscore-prefixed names imported from `packages`, or reached as attributes of them.

    Covers `from pulumi.x import _y`, `import pulumi._x`, `from pulumi._x import y` and
    `pulumi.runtime._y` / `alias._y` where `alias` was imported from one of the packages.
    """
    tree = ast.parse(source)
    found: list[str] = []
    bound: set[str] = set()  # local names bound to modules or objects of `packages`

    def ours(module: str) -> bool:
        return any(module == p or module.startswith(p + ".") for p in packages)

    def private(dotted: str) -> bool:
        return any(part.startswith("_") for part in dotted.split("."))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if ours(alias.name):
                    if private(alias.name):
                        found.append(f"line {node.lineno}: import {alias.name}")
                    bound.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and not node.level and ours(node.module or ""):
            module = node.module or ""
            if private(module):
                found.append(f"line {node.lineno}: from {module} import ...")
            for alias in node.names:
                if alias.name.startswith("_"):
                    found.append(f"line {node.lineno}: from {module} import {alias.name}")
                bound.add(alias.asname or alias.name)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            base = node.value
            while isinstance(base, ast.Attribute):
                base = base.value
            if isinstance(base, ast.Name) and base.id in bound:
                found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


@pytest.mark.parametrize("path", ["tooling/render.py", "bench/render.py"])
def test_no_private_pulumi_names(path: str) -> None:
    assert _private_uses((ROOT / path).read_text(), ("pulumi",)) == []


def test_bench_uses_only_the_harness_public_functions() -> None:
    assert _private_uses((ROOT / "bench" / "render.py").read_text(), ("tooling",)) == []


@pytest.mark.parametrize("source", [
    "from pulumi.runtime.sync_await import _sync_await\n",
    "from pulumi.runtime import _sync_await as s\n",
    "import pulumi.runtime._json\n",
    "from pulumi.runtime._context import wrap_with_context\n",
    "import pulumi\npulumi.runtime.settings._set_rpc_manager(None)\n",
    "from pulumi.runtime import settings as s\ns._get_callbacks()\n",
])
def test_the_check_catches_private_uses(source: str) -> None:
    assert _private_uses(source, ("pulumi",)) != []


def test_the_check_allows_public_uses() -> None:
    source = ("import pulumi\nimport pulumi.runtime\nfrom pulumi.runtime import Mocks, set_mocks\n"
              "pulumi.runtime.set_mocks(Mocks())\nx = {}\nx._private = 1\nclass C:\n    def __init__(self): ...\n")
    assert _private_uses(source, ("pulumi",)) == []
