"""The pack run by the real engine: `pulumi preview --stack local --policy-pack policies`.

A throwaway copy of the project (tests/engine/engine_kit.py: code symlinked, the local stack
rewritten with free ports) and a file backend. The shipped local config passes; a copy with
a deliberately bad setting fails, and the engine names the policy.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.kits.engine import Engine, copy_project, ensure_engine, install_k8s_provider, pick_local_ports

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.engine


def mandatory_local_config(path: Path) -> Path:
    """local.json with every enabled policy made mandatory, so a violation fails the preview."""
    config = json.loads((ROOT / "policies" / "config" / "local.json").read_text())
    for key, entry in config.items():
        if entry == "advisory":
            config[key] = "mandatory"
        elif isinstance(entry, dict) and entry.get("enforcementLevel") == "advisory":
            entry["enforcementLevel"] = "mandatory"
    path.write_text(json.dumps(config))
    return path


@pytest.fixture(scope="module")
def engine_bin() -> Path:
    return ensure_engine()


# A preview needs no cluster: the Kubernetes provider previews against an unreachable one (it
# says so and plans every object as a create), so the policies see every rendered object.
UNREACHABLE_KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: none, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: none, user: {token: preview-only}}]
contexts: [{name: none, context: {cluster: none, user: none}}]
current-context: none
"""


def project(engine_bin: Path, root: Path) -> Engine:
    proj = copy_project(root / "project", pick_local_ports())
    kubeconfigs = {f"EDGEFABRIC_KUBECONFIG_{name}": UNREACHABLE_KUBECONFIG for name in ("AWS", "AZURE", "GCP", "EDGE")}
    eng = Engine(project=proj, root=root, bin_dir=engine_bin, extra_env=kubeconfigs)
    install_k8s_provider(eng.home)
    eng.run("stack", "init", "local")
    return eng


def preview(eng: Engine, config: Path) -> tuple[int, str]:
    proc = eng.run("preview", "--stack", "local", "--policy-pack", "policies", "--policy-pack-config", str(config),
                   check=False)
    return proc.returncode, proc.stdout + proc.stderr


def test_shipped_local_stack_passes_the_pack(engine_bin: Path, tmp_path: Path) -> None:
    eng = project(engine_bin, tmp_path)
    code, out = preview(eng, ROOT / "policies" / "config" / "local.json")
    assert code == 0, out
    assert "edgefabric@v0.1.0" in out
    # Even with every enabled policy mandatory, the shipped local stack is clean.
    code, out = preview(eng, mandatory_local_config(tmp_path / "mandatory.json"))
    assert code == 0, out
    assert "mandatory" not in out.lower(), out


def test_bad_copy_fails_naming_the_policy(engine_bin: Path, tmp_path: Path) -> None:
    eng = project(engine_bin, tmp_path)
    stack = eng.project / "Pulumi.local.yaml"
    doc = yaml.safe_load(stack.read_text())
    # Config-legal (1..86400) but a failover nobody would notice for five minutes.
    doc["config"]["edgefabric:dns"]["ttl"] = 300
    stack.write_text(yaml.safe_dump(doc, sort_keys=False))
    code, out = preview(eng, mandatory_local_config(tmp_path / "mandatory.json"))
    assert code != 0, out
    assert "failover-ttl" in out, out
    assert "has ttl 300" in out, out
