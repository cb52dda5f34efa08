"""The tooling's console scripts: `main(argv=None)` entry points that need no sys.path help."""

from __future__ import annotations

import ast
import importlib
import inspect
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
SCRIPTS = {name: target for name, target in
           tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"].items()
           if target.startswith("tooling.")}
TOOLING = sorted(p for p in (ROOT / "tooling").glob("*.py") if p.name != "__init__.py")


def test_the_tooling_scripts_are_declared() -> None:
    assert set(SCRIPTS.values()) >= {"tooling.report:main", "tooling.promote_check:main",
                                     "tooling.config_reference:main"}


@pytest.mark.parametrize("target", sorted(SCRIPTS.values()))
def test_entry_point_takes_an_optional_argv_and_shows_help(target: str,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    module, _, attr = target.partition(":")
    main = getattr(importlib.import_module(module), attr)
    params = list(inspect.signature(main).parameters.values())
    assert [p.name for p in params] == ["argv"] and params[0].default is None, target
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    assert "usage:" in capsys.readouterr().out


@pytest.mark.parametrize("path", TOOLING, ids=lambda p: p.name)
def test_no_sys_path_edits_and_docstrings_name_the_module(path: Path) -> None:
    tree = ast.parse(path.read_text())
    edits = [ast.unparse(n) for n in ast.walk(tree)
             if isinstance(n, ast.Attribute) and n.attr == "path" and ast.unparse(n.value) == "sys"]
    assert edits == [], f"{path.name} touches sys.path"
    doc = ast.get_docstring(tree) or ""
    assert "scripts/" not in doc
    if any(t.startswith(f"tooling.{path.stem}:") for t in SCRIPTS.values()):
        assert f"python -m tooling.{path.stem}" in doc
