"""tooling.pin_images: the images workflow's last step writes the pushed digests into the stack
files. Only the image values change (comments and everything else stay byte for byte), the
result is validated by the config models, and a reference without a digest is refused."""

from __future__ import annotations

import difflib
import shutil
from pathlib import Path

import pytest

from edgefabric.config import load_stack_file
from tooling.pin_images import PinError, apply, main, pins_for

ROOT = Path(__file__).resolve().parents[2]
AGENT = "ghcr.io/edgefabric/heartbeat-agent:0.1.0@sha256:" + "a" * 64
CONTROLLER = "ghcr.io/edgefabric/failover-controller:0.1.0@sha256:" + "b" * 64


def changed_lines(before: str, after: str) -> list[str]:
    return [line for line in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
            if line[:1] in "+-" and not line.startswith(("+++", "---"))]


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_the_agent_digest_replaces_only_its_value(stack: str, tmp_path: Path) -> None:
    shutil.copy(ROOT / f"Pulumi.{stack}.yaml", tmp_path)
    before = (tmp_path / f"Pulumi.{stack}.yaml").read_text()
    assert main(["--project-dir", str(tmp_path), "--stack", stack, "--image", AGENT, "--image", CONTROLLER]) == 0
    after = (tmp_path / f"Pulumi.{stack}.yaml").read_text()
    diff = changed_lines(before, after)
    assert len(diff) == 2 and diff[0].startswith("-") and "agentImage:" in diff[0], diff
    assert diff[1].startswith("+") and diff[1].endswith(f"agentImage: {AGENT}"), diff
    cfg = load_stack_file(tmp_path / f"Pulumi.{stack}.yaml")
    assert cfg.registry is not None and cfg.registry.agent_image == AGENT
    # These stacks do not deploy the controller: nothing of it is added.
    assert "failover-controller" not in after


def test_a_controller_block_gets_its_image_added_and_then_replaced() -> None:
    text = (ROOT / "Pulumi.dev.yaml").read_text()
    with_controller = text.replace("  edgefabric:dns:\n", "  edgefabric:dns:\n    controller:\n      deploy: true\n", 1)
    (pin,) = pins_for([CONTROLLER])
    added = apply(with_controller, pin)
    assert changed_lines(with_controller, added) == [f"+      image: {CONTROLLER}"]
    again = apply(added, pins_for([CONTROLLER.replace("b" * 64, "c" * 64)])[0])
    assert changed_lines(added, again) == [f"-      image: {CONTROLLER}",
                                           f"+      image: {CONTROLLER.replace('b' * 64, 'c' * 64)}"]


@pytest.mark.parametrize(("ref", "says"), [
    ("ghcr.io/edgefabric/heartbeat-agent:0.1.0", "pinned by digest"),
    ("ghcr.io/edgefabric/heartbeat-agent@sha256:abc", "pinned by digest"),
    ("ghcr.io/someone/else:1.0@sha256:" + "a" * 64, "not an image of ours"),
])
def test_bad_references_are_refused(ref: str, says: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(PinError, match=says):
        pins_for([ref])
    shutil.copy(ROOT / "Pulumi.dev.yaml", tmp_path)
    assert main(["--project-dir", str(tmp_path), "--stack", "dev", "--image", ref]) == 2
    assert says in capsys.readouterr().err
    assert (tmp_path / "Pulumi.dev.yaml").read_text() == (ROOT / "Pulumi.dev.yaml").read_text()
