"""The layout's import rules, checked over every Python file of the tree.

`__main__` -> `tiers` -> `dynamic` -> `chain`, `traffic` -> `config` -> `errors`;
`controller` and `tooling` use the engine-free packages, never the reverse. Imports inside
functions count too: a function-level import that dodges a cycle is still a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OURS = ("edgefabric", "tooling", "devenv", "agent", "policies", "tests", "bench")
SKIP = {"venv", ".git", "node_modules", ".tools", ".pulumi-home", ".state", ".local-env", ".render", "build"}

# What each unit of the package may import of ours (besides itself).
ALLOWED: dict[str, set[str]] = {
    "edgefabric.errors": set(),
    "edgefabric.secrets": {"edgefabric.errors"},
    "edgefabric.config": {"edgefabric.errors"},
    "edgefabric.chain": {"edgefabric.errors", "edgefabric.secrets", "edgefabric.config"},
    "edgefabric.traffic": {"edgefabric.errors", "edgefabric.secrets", "edgefabric.config"},
    "edgefabric.controller": {"edgefabric.errors", "edgefabric.secrets", "edgefabric.config",
                              "edgefabric.traffic", "edgefabric.chain"},
    # `edgefabric simulate`: scenarios through the controller's hysteresis and planner, pure.
    "edgefabric.simulate": {"edgefabric.errors", "edgefabric.config", "edgefabric.traffic"},
    # MQTT data flows: topology, Mosquitto configs and the PKI, pure and engine-free.
    "edgefabric.dataflow": {"edgefabric.errors", "edgefabric.config"},
    "edgefabric.dynamic": {"edgefabric.errors", "edgefabric.secrets", "edgefabric.config",
                           "edgefabric.traffic", "edgefabric.chain", "edgefabric.dataflow"},
    # Tiers declare resources; the typed failover spec is data, the only piece of traffic
    # they build. They never reach a chain or DNS client.
    "edgefabric.tiers": {"edgefabric.errors", "edgefabric.secrets", "edgefabric.config",
                         "edgefabric.dynamic", "edgefabric.traffic.spec", "edgefabric.dataflow"},
    "__main__": {"edgefabric.errors", "edgefabric.secrets", "edgefabric.config", "edgefabric.tiers"},
    "agent": {"edgefabric.errors", "edgefabric.secrets", "edgefabric.chain"},
    "devenv": {"edgefabric.errors", "edgefabric.config", "edgefabric.dataflow"},
}
ENGINE_FREE = ("edgefabric.errors", "edgefabric.secrets", "edgefabric.config", "edgefabric.chain",
               "edgefabric.traffic", "edgefabric.controller", "edgefabric.dataflow", "edgefabric.simulate")


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _files() -> list[Path]:
    return sorted(p for p in ROOT.rglob("*.py") if not SKIP.intersection(p.relative_to(ROOT).parts))


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    out: list[tuple[int, str]] = []
    package = _module_name(path).rsplit(".", 0 if path.name == "__init__.py" else 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this file's package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join([*base, node.module] if node.module else base)
            else:
                mod = node.module or ""
            out.append((node.lineno, mod))
            # `from edgefabric import config` imports edgefabric.config
            out += [(node.lineno, f"{mod}.{a.name}") for a in node.names if mod in ("edgefabric",)]
    return out


def _unit(module: str) -> str | None:
    """The rule that governs `module`: the longest key of ALLOWED it falls under."""
    if module == "__main__":
        return "__main__"
    keys = [k for k in ALLOWED if module == k or module.startswith(k + ".")]
    return max(keys, key=len) if keys else None


def _within(imported: str, allowed: set[str]) -> bool:
    return any(imported == a or imported.startswith(a + ".") for a in allowed)


def violations() -> list[str]:
    found: list[str] = []
    for path in _files():
        module = _module_name(path)
        unit = _unit(module)
        rel = path.relative_to(ROOT)
        for line, imported in _imports(path):
            top = imported.split(".")[0]
            if unit in ENGINE_FREE and top.startswith("pulumi"):
                found.append(f"{rel}:{line}: engine-free {unit} imports {imported}")
            if module.startswith("edgefabric") and top in OURS and top != "edgefabric":
                found.append(f"{rel}:{line}: the package imports {imported} (tooling, tests and the like "
                             "sit on top of it, never under)")
            if unit is None or top != "edgefabric" or imported == "edgefabric":
                continue
            if _unit(imported) == unit:
                continue
            if not _within(imported, ALLOWED[unit]):
                found.append(f"{rel}:{line}: {unit} imports {imported}; allowed: "
                             f"{', '.join(sorted(ALLOWED[unit])) or 'nothing of ours'}")
    return found


def test_imports_point_one_way() -> None:
    assert violations() == []


def test_every_package_module_is_governed_by_a_rule() -> None:
    ungoverned = [str(p.relative_to(ROOT)) for p in _files()
                  if _module_name(p).startswith("edgefabric.") and _unit(_module_name(p)) is None]
    assert ungoverned == []


@pytest.mark.parametrize(("source", "problem"), [
    ("edgefabric/config/bad.py", "import pulumi\n"),
    ("edgefabric/config/bad.py", "from edgefabric.traffic.dns.regions import AZURE_GEO\n"),
    ("edgefabric/traffic/bad.py", "def f():\n    from edgefabric.tiers import traffic\n"),
    ("edgefabric/chain/bad.py", "def f():\n    import pulumi.dynamic\n"),
    ("edgefabric/tiers/bad.py", "from edgefabric.traffic.dns import powerdns\n"),
    ("edgefabric/traffic/bad.py", "from tooling import render\n"),
])
def test_the_rule_catches_a_wrong_import(source: str, problem: str, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # The checker run over a tree holding one offending file: it must name that file.
    fake = tmp_path / source
    fake.parent.mkdir(parents=True)
    fake.write_text(problem)
    monkeypatch.setattr(__import__(__name__, fromlist=["ROOT"]), "ROOT", tmp_path)
    found = violations()
    assert len(found) == 1 and found[0].startswith(source), found
