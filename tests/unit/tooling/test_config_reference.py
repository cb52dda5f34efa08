"""Docs that must match the code."""

from __future__ import annotations

from pathlib import Path

from edgefabric.config import TOP_LEVEL_KEYS
from tooling import config_reference

ROOT = Path(__file__).resolve().parents[3]


def test_readme_config_reference_matches_models() -> None:
    readme = (ROOT / "README.md").read_text()
    start, end = config_reference.START, config_reference.END
    block = start + readme.split(start, 1)[1].split(end, 1)[0] + end
    assert block == config_reference.reference(), (
        "README.md's configuration reference is stale: run `python -m tooling.config_reference --write`")


def test_pulumi_yaml_declares_exactly_the_model_keys() -> None:
    import yaml

    declared = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["config"]
    assert sorted(k.removeprefix("edgefabric:") for k in declared) == sorted(TOP_LEVEL_KEYS)


def test_readme_quickstart_is_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    quick = readme.split("## Quickstart", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    assert [line.split("#")[0].strip() for line in quick.strip().splitlines()] == ["make demo", "make test"]
