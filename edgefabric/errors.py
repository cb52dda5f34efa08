"""The one error type for mistakes a user can make, and how each mistake is worded.

Every problem names the key path it was found at, the bad value, and what is allowed,
the same way whether it comes from the stack config, a dynamic resource's inputs, the
controller's command line or a secret reference that points at nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

NAMESPACE = "edgefabric"


def show(value: Any) -> str:
    """A value as the user wrote it, shortened: 30 not 30.0, long lists cut."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


@dataclass(frozen=True)
class Problem:
    """One mistake: `path` is the key path without the namespace (`dns.ttl`)."""

    path: str
    value: Any
    allowed: str
    namespace: str = NAMESPACE

    def __str__(self) -> str:
        where = f"{self.namespace}:{self.path}" if self.namespace else self.path
        return f"{where} = {show(self.value)}: {self.allowed}"


class ConfigError(ValueError):
    """Bad user input. `problems` holds one line per problem, each naming the key."""

    def __init__(self, problems: Iterable[Problem | str]) -> None:
        self.problems = [str(p) for p in problems]
        super().__init__("invalid stack configuration:\n" + "\n".join(f"  - {p}" for p in self.problems))

    @classmethod
    def one(cls, path: str, value: Any, allowed: str, namespace: str = NAMESPACE) -> ConfigError:
        return cls([Problem(path, value, allowed, namespace)])
