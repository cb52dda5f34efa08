"""`make promote-check FROM=... TO=...`: `python -m tooling.promote_check` on shipped and edited stacks."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def promote(src: str, dst: str, root: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tooling.promote_check", "--from", src, "--to", dst,
                           "--root", str(root)], cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(("src", "dst"), [("dev", "staging"), ("staging", "prod")])
def test_shipped_promotions_pass_and_show_differences(src: str, dst: str) -> None:
    proc = promote(src, dst)
    assert proc.returncode == 0, proc.stdout
    assert f"OK: Pulumi.{src}.yaml and Pulumi.{dst}.yaml have the same schema" in proc.stdout
    assert "  ~ edgefabric:core.clusters.aws.machineType: " in proc.stdout


@pytest.fixture
def pair(tmp_path: Path) -> Callable[[Callable[[dict[str, Any]], None]], Path]:
    """Pulumi.a.yaml = the shipped dev stack; Pulumi.b.yaml = dev edited by `edit`."""
    def make(edit: Callable[[dict[str, Any]], None]) -> Path:
        shutil.copy(ROOT / "Pulumi.dev.yaml", tmp_path / "Pulumi.a.yaml")
        doc = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())
        edit(doc["config"])
        (tmp_path / "Pulumi.b.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
        return tmp_path
    return make


def test_missing_key_fails_naming_it(pair: Callable[..., Path]) -> None:
    root = pair(lambda c: c["edgefabric:dns"].pop("ttl"))
    proc = promote("a", "b", root)
    assert proc.returncode == 1
    assert ("x edgefabric:dns.ttl is set in Pulumi.a.yaml but missing in Pulumi.b.yaml; add it to both, or "
            "list it under perEnvironment in policies/config/promotion.yaml") in proc.stdout


def test_ill_typed_key_fails(pair: Callable[..., Path]) -> None:
    # The loader would coerce "30" to a number; promotion still refuses the type change.
    root = pair(lambda c: c["edgefabric:healthCheck"].update(intervalS="30"))
    proc = promote("a", "b", root)
    assert proc.returncode == 1
    assert ("x edgefabric:healthCheck.intervalS is ill-typed: number in Pulumi.a.yaml but string in "
            "Pulumi.b.yaml") in proc.stdout


def test_invalid_config_fails_with_the_key_path(pair: Callable[..., Path]) -> None:
    root = pair(lambda c: c["edgefabric:dns"].update(ttl=0))
    proc = promote("a", "b", root)
    assert proc.returncode == 1
    assert "x Pulumi.b.yaml: edgefabric:dns.ttl = 0:" in proc.stdout


def test_per_environment_keys_and_value_changes_pass(pair: Callable[..., Path]) -> None:
    def edit(c: dict[str, Any]) -> None:
        c["edgefabric:tags"] = {**c.get("edgefabric:tags", {}), "team": "edge"}
        c["edgefabric:dns"]["ttl"] = 45

    proc = promote("a", "b", pair(edit))
    assert proc.returncode == 0, proc.stdout
    assert "= edgefabric:tags.team is set in Pulumi.b.yaml but missing in Pulumi.a.yaml (per-environment)" in proc.stdout
    assert "~ edgefabric:dns.ttl: 60 -> 45" in proc.stdout


def test_same_stack_is_a_usage_error() -> None:
    assert promote("dev", "dev").returncode == 2
