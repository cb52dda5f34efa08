"""The heartbeat agent's config check against the deployment ledger: the decision and its settings."""

from __future__ import annotations

import pytest

from agent.heartbeat import AgentConfigError, ConfigWatch, LedgerCheck, config_verdict

X, Y, Z = "0x" + "aa" * 32, "0x" + "bb" * 32, "0x" + "cc" * 32


def test_no_reading_is_unknown_not_a_mismatch() -> None:
    assert config_verdict(X, None) == "unknown"
    assert config_verdict(X, X) == "match"
    assert config_verdict(X, X.upper().replace("0X", "0x")) == "match"  # hex case is not a difference
    assert config_verdict(X, Y) == "mismatch"


def test_a_mismatch_warns_once_per_change() -> None:
    watch = ConfigWatch(X)
    assert watch.state == "unknown"
    # (ledger reading, warning due, state after)
    steps = [
        (None, False, "unknown"),  # no ledger yet
        (X, False, "match"),
        (X, False, "match"),
        (Y, True, "mismatch"),  # a newer `up` the agent did not get
        (Y, False, "mismatch"),  # the same mismatch again: no second warning
        (None, False, "unknown"),  # the ledger unreadable: unknown, and no warning
        (Y, True, "mismatch"),  # seen again after an unknown: warned again
        (Z, True, "mismatch"),  # the ledger moved on, still not ours: a new warning
        (X, False, "match"),  # back in line
        (Y, True, "mismatch"),
    ]
    for reading, warn, state in steps:
        assert watch.observe(reading) is warn, (reading, watch.state)
        assert watch.state == state
        assert watch.ledger_hash == (reading.lower() if reading else None)


def _env(**over: str) -> dict[str, str]:
    return {"EDGEFABRIC_LEDGER_ADDRESS": "0x" + "12" * 20, "EDGEFABRIC_STACK": "staging",
            "EDGEFABRIC_CONFIG_HASH": X} | over


def test_ledger_check_settings() -> None:
    assert LedgerCheck.from_env({}) is None  # not configured: no check
    check = LedgerCheck.from_env(_env(EDGEFABRIC_LEDGER_FROM_BLOCK="42", EDGEFABRIC_LEDGER_CHECK_EVERY="3"))
    assert check == LedgerCheck("0x" + "12" * 20, "staging", X, from_block=42, every_rounds=3)
    default = LedgerCheck.from_env(_env(EDGEFABRIC_CONFIG_HASH=X.upper().replace("0X", "0x")))
    assert default is not None and default.config_hash == X and default.every_rounds == 10


@pytest.mark.parametrize(("over", "named"), [
    ({"EDGEFABRIC_STACK": ""}, "EDGEFABRIC_STACK required"),
    ({"EDGEFABRIC_LEDGER_ADDRESS": "", "EDGEFABRIC_CONFIG_HASH": ""}, "EDGEFABRIC_LEDGER_ADDRESS, EDGEFABRIC_CONFIG_HASH"),
    ({"EDGEFABRIC_CONFIG_HASH": "0x1234"}, "EDGEFABRIC_CONFIG_HASH must be a 32-byte"),
    ({"EDGEFABRIC_LEDGER_ADDRESS": "ledger"}, "EDGEFABRIC_LEDGER_ADDRESS must be"),
    ({"EDGEFABRIC_LEDGER_CHECK_EVERY": "0"}, "EDGEFABRIC_LEDGER_CHECK_EVERY must be >= 1"),
    ({"EDGEFABRIC_LEDGER_FROM_BLOCK": "-1"}, "EDGEFABRIC_LEDGER_FROM_BLOCK must be"),
])
def test_a_bad_ledger_setting_is_named(over: dict[str, str], named: str) -> None:
    with pytest.raises(AgentConfigError, match=named):
        LedgerCheck.from_env(_env(**over))
