"""The one test for a value that is not known yet.

During `pulumi preview`, `check` and `diff` receive inputs that depend on resources not yet
created as a placeholder instead of a value, anywhere inside a dict or list: the engine's
sentinel string, or (the SDK's dynamic-provider host deserialises with `keep_unknowns`) a
`pulumi.output.Unknown` object.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pulumi.output import Unknown
from pulumi.runtime.rpc import UNKNOWN

__all__ = ["UNKNOWN", "is_unknown"]


def is_unknown(value: Any) -> bool:
    """True if `value`, or anything inside it, is not known yet."""
    if isinstance(value, Mapping):
        return any(is_unknown(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(is_unknown(v) for v in value)
    return isinstance(value, Unknown) or (isinstance(value, str) and value == UNKNOWN)
