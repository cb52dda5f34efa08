"""`pulumi preview` of the local stack with no deployer key anywhere: not in the stack config,
not in the environment. What a key would sign is unknown at preview, so the preview passes (as
pull-request previews in CI must, where no key is handed to the code under review). That `up`
stops on the missing key before it registers anything is tests/unit/tiers/test_registry.py's.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.kits.engine import Engine, copy_project, install_k8s_provider, pick_local_ports

# The Kubernetes provider previews against an unreachable cluster (it plans every object as a
# create), so the preview needs no running cluster or chain.
UNREACHABLE_KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: none, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: none, user: {token: preview-only}}]
contexts: [{name: none, context: {cluster: none, user: none}}]
current-context: none
"""


def test_the_local_stack_previews_without_any_key(engine_bin: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("EDGEFABRIC_DEPLOYER_KEY", "EDGEFABRIC_SECRET_DEPLOYERKEY"):
        monkeypatch.delenv(var, raising=False)
    project = copy_project(tmp_path / "project", pick_local_ports())
    stack_file = project / "Pulumi.local.yaml"
    doc = yaml.safe_load(stack_file.read_text())
    assert doc["config"]["edgefabric:registry"]["deployerKeyRef"] == "config:deployerKey"
    del doc["config"]["edgefabric:deployerKey"]  # the key is gone; every other secret stays
    stack_file.write_text(yaml.safe_dump(doc, sort_keys=False))
    kubeconfigs = {f"EDGEFABRIC_KUBECONFIG_{name}": UNREACHABLE_KUBECONFIG for name in ("AWS", "AZURE", "GCP", "EDGE")}
    engine = Engine(project=project, root=tmp_path, bin_dir=engine_bin, extra_env=kubeconfigs)
    install_k8s_provider(engine.home)
    engine.run("stack", "init", "local")

    preview = engine.preview_json("local")  # fails the test on a non-zero exit
    shown = json.dumps(preview.get("diagnostics") or [])
    assert "previewing without the deployer key" in shown, shown
    urns = [step["urn"] for step in preview["steps"] if step["op"] == "create"]
    for planned in ("RegistryContract", "ServiceRegistration", "apps/v1:Deployment::registry-aws-agent"):
        assert any(planned in urn for urn in urns), planned
