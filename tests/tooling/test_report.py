"""`make render`: `python -m tooling.report` on a throwaway git repository with a base commit."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tooling import report as render_script

ROOT = Path(__file__).resolve().parents[2]

SKIP = shutil.ignore_patterns("venv", ".git", "node_modules", ".tools", ".pulumi-home", ".state", ".local-env",
                              ".render", "__pycache__", ".pytest_cache", ".ruff_cache", ".hypothesis", "tests")


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
                          check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the project committed as the base, then a dev change on top (uncommitted)."""
    dst = tmp_path_factory.mktemp("render") / "edgefabric"
    shutil.copytree(ROOT, dst, ignore=SKIP, symlinks=True)
    git(dst, "init", "-q", "-b", "main")
    git(dst, "add", "-A")
    git(dst, "commit", "-q", "-m", "base")
    stack = dst / "Pulumi.dev.yaml"
    doc = yaml.safe_load(stack.read_text())
    cfg = doc["config"]
    cfg["edgefabric:core"]["clusters"]["aws"]["maxNodes"] = 8
    site = cfg["edgefabric:edge"]["sites"][0]
    # Not its MQTT broker: `dataFlows` bridges every site's sensor-ingest.
    removed = next(s for s in reversed(site["services"]) if s["kind"] != "sensor-ingest")
    site["services"].remove(removed)
    stack.write_text(yaml.safe_dump(doc, sort_keys=False))
    (dst / "removed.txt").write_text(f"{site['name']}-{removed['name']}")
    return dst


def run_render(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # -m from the copy: its own tooling, package and program, not the tree under test's.
    return subprocess.run([sys.executable, "-m", "tooling.report", *args], cwd=repo,
                          capture_output=True, text=True, timeout=300)


def test_render_summarises_tiers_diff_policies_and_weights(repo: Path) -> None:
    proc = run_render(repo, "--stack", "dev", "--base", "main")
    assert proc.returncode == 0, proc.stderr
    md = (repo / ".render" / "dev.md").read_text()
    assert "## Resources by tier and type" in md
    assert "| core | `aws:eks/cluster:Cluster` | 1 |" in md
    assert "| edge | `kubernetes:apps/v1:Deployment` |" in md
    # The diff against the base commit: the changed input and the removed service.
    assert "Base: `main` (" in md
    assert "| `aws:eks/nodeGroup:NodeGroup` aws-nodes | `scalingConfig.maxSize` | 6 | 8 |" in md
    removed = (repo / "removed.txt").read_text()
    assert f"`kubernetes:apps/v1:Deployment` **{removed}**" in md.split("**Removed**")[1]
    assert "**Added**" not in md
    # Policy results at dev's levels, and the weight plan per user region.
    assert "Levels from `policies/config/dev.json`." in md
    assert "| `required-labels` |" in md and "| `no-plaintext-secrets` |" in md
    assert "| north-america (NA) | americas |" in md
    # Secrets never reach the summary.
    assert "mock-secret" not in md and "mock-env" not in md


def test_render_without_a_base(repo: Path) -> None:
    proc = run_render(repo, "--stack", "dev", "--base", "no-such-ref", "--out", str(repo / "x.md"))
    assert proc.returncode == 0, proc.stderr
    assert "Not compared: base ref `no-such-ref` does not exist here." in (repo / "x.md").read_text()
    # One summary line on stdout; the steps went to stderr.
    assert proc.stdout.startswith(f"render: wrote {repo / 'x.md'} (") and proc.stdout.count("\n") == 1
    assert "rendered dev:" in proc.stderr and "base not compared" in proc.stderr


def test_emit_json_prints_nothing_but_the_json(repo: Path) -> None:
    """What the base render reads: stdout must parse as JSON whatever else the run logs."""
    proc = run_render(repo, "--emit-json", "--root", str(repo), "--stack", "local")
    assert proc.returncode == 0, proc.stderr
    resources = json.loads(proc.stdout)
    assert resources[0]["type"] == "pulumi:pulumi:Stack"
    assert {"urn", "type", "name", "parent", "inputs", "secretInputs", "rawInputs"} <= set(resources[1])


def test_render_fails_on_unknown_stack(repo: Path) -> None:
    proc = run_render(repo, "--stack", "nope")
    assert proc.returncode == 1
    assert "no stack file Pulumi.nope.yaml" in proc.stderr


def test_diff_reports_added_removed_and_changed_inputs() -> None:
    base = [{"urn": "u1", "type": "t", "name": "a", "inputs": {"spec": {"replicas": 2}, "__provider": "x"}},
            {"urn": "u2", "type": "t", "name": "gone", "inputs": {}}]
    head = [{"urn": "u1", "type": "t", "name": "a", "inputs": {"spec": {"replicas": 3}, "__provider": "y"}},
            {"urn": "u3", "type": "t", "name": "new", "inputs": {}}]
    d = render_script.diff(base, head)
    assert [r["name"] for r in d["added"]] == ["new"]
    assert [r["name"] for r in d["removed"]] == ["gone"]
    (res, paths), = d["changed"]
    assert res["name"] == "a"
    assert paths == [("__provider", "(dynamic provider code)", "(changed)"), ("spec.replicas", 2, 3)]


def test_diff_treats_a_null_input_as_no_input() -> None:
    """A base rendered by a harness that kept nulls shows no change against one that drops them."""
    base = [{"urn": "u1", "type": "t", "name": "a", "inputs": {"spec": {"cidrs": None, "n": 1}}}]
    head = [{"urn": "u1", "type": "t", "name": "a", "inputs": {"spec": {"n": 1}}}]
    assert render_script.diff(base, head)["changed"] == []
