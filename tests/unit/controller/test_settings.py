"""`dns.applyTimeoutS`: the controller's deadline for one backend call, checked by key path."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from edgefabric.config import ConfigError, load_config, raw_from_stack_file

ROOT = Path(__file__).resolve().parents[3]
DEV = raw_from_stack_file(ROOT / "Pulumi.dev.yaml")


def test_the_default_is_20_seconds() -> None:
    cfg = load_config(DEV)
    assert cfg.dns is not None and cfg.dns.apply_timeout_s == 20


@pytest.mark.parametrize(("value", "allowed"), [(0, "greater than 0"), (601, "less than or equal to 600"),
                                                ("soon", "a valid number")])  # fmt: skip
def test_a_bad_value_names_its_key(value: object, allowed: str) -> None:
    raw = copy.deepcopy(DEV)
    raw["dns"]["applyTimeoutS"] = value
    with pytest.raises(ConfigError) as err:
        load_config(raw)
    (problem,) = err.value.problems
    assert problem.startswith(f"edgefabric:dns.applyTimeoutS = {value!r}") and allowed in problem


def test_a_good_value_is_taken() -> None:
    raw = copy.deepcopy(DEV)
    raw["dns"]["applyTimeoutS"] = 7.5
    cfg = load_config(raw)
    assert cfg.dns is not None and cfg.dns.apply_timeout_s == 7.5
