"""The delivery workflows: actionlint-clean, and shaped as the delivery design says."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
ACTIONLINT = ROOT / "tools" / "actionlint.sh"


def actionlint(*files: Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(ACTIONLINT), "-no-color", "-oneline", *map(str, files)], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def load(name: str) -> dict[Any, Any]:
    return yaml.safe_load((WORKFLOWS / name).read_text())


def test_actionlint_passes_on_every_workflow() -> None:
    files = sorted(WORKFLOWS.glob("*.yml"))
    assert {f.name for f in files} >= {"preview.yml", "promote.yml"}
    proc = actionlint(*files)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path: Path) -> None:
    """The lint is real: a bad expression and an unknown action input are reported."""
    wf = tmp_path / ".github" / "workflows"
    wf.mkdir(parents=True)
    text = (WORKFLOWS / "preview.yml").read_text()
    text = text.replace("fetch-depth: 0", "fetch-depht: 0", 1)
    text = text.replace("needs.changes.outputs.stacks != '[]'", "needs.chnages.outputs.stacks != '[]'", 1)
    (wf / "preview.yml").write_text(text)
    proc = actionlint(wf / "preview.yml", cwd=tmp_path)
    assert proc.returncode == 1
    assert 'input "fetch-depht" is not defined' in proc.stdout
    assert "chnages" in proc.stdout


def test_preview_runs_tests_then_previews_with_the_pack_and_comments() -> None:
    wf = load("preview.yml")
    assert "pull_request" in wf[True]  # PyYAML reads the `on:` key as True
    jobs = wf["jobs"]
    assert any(s.get("run") == "make test" for s in jobs["test"]["steps"])
    setup = next(s for s in jobs["test"]["steps"] if s.get("uses", "").startswith("actions/setup-python"))
    assert setup["with"]["cache"] == "pip" and setup["with"]["cache-dependency-path"] == "requirements.txt"
    preview = jobs["preview"]
    assert set(preview["needs"]) == {"test", "changes"}
    assert preview["permissions"]["pull-requests"] == "write"
    assert preview["permissions"]["id-token"] == "write"
    uses = [s.get("uses", "") for s in preview["steps"]]
    for action in ("aws-actions/configure-aws-credentials", "azure/login", "google-github-actions/auth",
                   "pulumi/actions"):
        assert any(u.startswith(action + "@") for u in uses), action
    pulumi = next(s for s in preview["steps"] if s.get("uses", "").startswith("pulumi/actions@"))
    assert pulumi["with"]["command"] == "preview"
    assert pulumi["with"]["comment-on-pr"] is True
    assert pulumi["with"]["policyPacks"] == "policies"
    assert pulumi["with"]["policyPackConfigs"] == "policies/config/${{ matrix.stack }}.json"
    # No long-lived cloud secrets anywhere: only the job's own GITHUB_TOKEN. A preview signs
    # nothing, so pull-request code never gets the registry key; only the gated `up` does.
    def secrets_in(name: str) -> set[str]:
        return {s.split("}}")[0].strip() for s in (WORKFLOWS / name).read_text().split("secrets.")[1:]}

    assert secrets_in("preview.yml") <= {"GITHUB_TOKEN"}
    assert "EDGEFABRIC_DEPLOYER_KEY" not in (WORKFLOWS / "preview.yml").read_text().replace(
        "# No EDGEFABRIC_DEPLOYER_KEY", "")
    assert secrets_in("deploy-stack.yml") <= {"GITHUB_TOKEN", "EDGEFABRIC_DEPLOYER_KEY"}
    up = load("deploy-stack.yml")["jobs"]["up"]
    keyed = [s for s in up["steps"] if "EDGEFABRIC_DEPLOYER_KEY" in (s.get("env") or {})]
    assert [s["with"]["command"] for s in keyed] == ["up"]  # the one step that signs, in its environment


def test_render_posts_when_no_credentials() -> None:
    render = load("preview.yml")["jobs"]["render"]
    assert "credentials != 'true'" in render["if"]
    assert any("make render" in s.get("run", "") for s in render["steps"])
    comment = load("render-comment.yml")
    assert comment[True]["workflow_run"]["workflows"] == ["preview"]
    # The commenter never checks out pull request code.
    assert not any(s.get("uses", "").startswith("actions/checkout") for s in comment["jobs"]["comment"]["steps"])


def test_promote_chain_same_commit_environments_and_concurrency() -> None:
    wf = load("promote.yml")
    assert wf[True]["push"]["branches"] == ["main"]
    jobs = wf["jobs"]
    assert "needs" not in jobs["dev"]
    assert jobs["staging"]["needs"] == "dev" and jobs["prod"]["needs"] == "staging"
    for stack, job in jobs.items():
        assert job["uses"] == "./.github/workflows/deploy-stack.yml"
        assert job["with"]["stack"] == stack
        assert job["with"]["ref"] == "${{ github.sha }}"
    assert jobs["staging"]["with"]["promote-from"] == "dev"
    assert jobs["prod"]["with"]["promote-from"] == "staging"
    up = load("deploy-stack.yml")["jobs"]["up"]
    assert up["environment"] == "${{ inputs.stack }}"
    assert up["concurrency"] == {"group": "pulumi-${{ inputs.stack }}", "cancel-in-progress": False}
    pulumi = next(s for s in up["steps"] if s.get("uses", "").startswith("pulumi/actions@"))
    assert pulumi["with"]["command"] == "up"


def test_shellcheck_backs_actionlint() -> None:
    # actionlint lints `run:` scripts with shellcheck only when it is installed.
    assert shutil.which("shellcheck"), "install shellcheck (apt-get install -y shellcheck)"


@pytest.mark.parametrize("name", ["preview.yml", "promote.yml", "deploy-stack.yml", "render-comment.yml"])
def test_workflows_pin_action_versions(name: str) -> None:
    for job in load(name)["jobs"].values():
        for step in job.get("steps", []):
            if "uses" in step:
                assert "@" in step["uses"], step["uses"]


def test_images_are_built_from_our_dockerfiles_pushed_and_pinned_by_digest_through_a_pull_request() -> None:
    wf = load("images.yml")
    assert wf[True]["push"]["branches"] == ["main"]
    build, pin = wf["jobs"]["build"], wf["jobs"]["pin"]
    assert build["permissions"]["packages"] == "write" and "packages" not in pin["permissions"]
    legs = {leg["name"]: leg["dockerfile"] for leg in build["strategy"]["matrix"]["include"]}
    assert legs == {"heartbeat-agent": "agent/Dockerfile", "failover-controller": "edgefabric/controller/Dockerfile"}
    assert all((ROOT / path).is_file() for path in legs.values())
    push = next(s for s in build["steps"] if s.get("uses", "").startswith("docker/build-push-action@"))
    assert push["with"]["push"] is True and push["with"]["file"] == "${{ matrix.dockerfile }}"
    # Every source the images copy triggers a build (the Dockerfiles' COPY lines).
    paths = wf[True]["push"]["paths"]
    for dockerfile in legs.values():
        for line in (ROOT / dockerfile).read_text().splitlines():
            if line.startswith("COPY "):
                for src in line.split()[1:-1]:
                    assert any(src.startswith(p.removesuffix("**")) or src == p for p in paths), (dockerfile, src)
    run = next(s for s in pin["steps"] if "tooling.pin_images" in s.get("run", ""))
    assert "--image \"$AGENT\"" in run["run"] and "--image \"$CONTROLLER\"" in run["run"]
    assert pin["needs"] == "build"
    assert any(s.get("uses", "").startswith("peter-evans/create-pull-request@") for s in pin["steps"])
