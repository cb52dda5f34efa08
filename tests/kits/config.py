"""Stack-config helpers shared by the config and tier tests."""

from __future__ import annotations

from typing import Any

import pytest

from edgefabric.config import ConfigError, load_config


def config_problems(raw: dict[str, Any]) -> list[str]:
    """The problems `load_config` raises for `raw` (which must be invalid)."""
    with pytest.raises(ConfigError) as info:
        load_config(raw)
    return info.value.problems
