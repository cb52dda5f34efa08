"""The one resolver of secret references.

Config never holds a secret, only a reference to one:
- `env:NAME`   the environment variable NAME of the process that uses the secret;
- `config:KEY` the Pulumi secret `edgefabric:KEY`. The program reads it through
  `pulumi.Config` (see `edgefabric.tiers`); a dynamic provider gets it from the stack config
  the engine hands to `configure`; the controller, which runs without the engine, from the
  environment variable `EDGEFABRIC_SECRET_<KEY>` (see `config_env_name`).

Engine-free: where the value comes from for `config:` is the caller's `lookup`, so one
function serves the program, the dynamic providers and the controller, and every error
reads the same way (key path, the reference, what is allowed). No error ever carries a
secret value.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from typing import Literal, TypeVar

from edgefabric.errors import ConfigError

T = TypeVar("T")
RefKind = Literal["env", "config"]
_REF = re.compile(r"^(env):([A-Za-z_][A-Za-z0-9_]*)$|^(config):([A-Za-z][A-Za-z0-9_.-]*)$")
ALLOWED = "env:NAME (an environment variable) or config:KEY (a Pulumi secret edgefabric:KEY)"


def parse(ref: str, where: str) -> tuple[RefKind, str]:
    """(kind, name) of a reference; ConfigError naming `where` if it is not one."""
    match = _REF.match(ref or "")
    if not match:
        raise ConfigError.one(where, ref, f"a secret reference: {ALLOWED}")
    if match.group(1):
        return "env", match.group(2)
    return "config", match.group(4)


def env_name(ref: str) -> str | None:
    """The variable name of an `env:` reference, else None."""
    return ref.split(":", 1)[1] if ref.startswith("env:") else None


def config_env_name(key: str) -> str:
    """Where a process without the engine (the controller) finds `config:KEY`."""
    return "EDGEFABRIC_SECRET_" + re.sub(r"[^A-Za-z0-9]", "_", key).upper()


def resolve(
    ref: str,
    where: str,
    lookup: Callable[[str], T | None] | None = None,
    environ: Mapping[str, str] | None = None,
) -> str | T:
    """The secret `ref` names.

    `env:NAME` comes from `environ` (default: this process's environment). `config:KEY`
    comes from `lookup(KEY)` when one is given (the program passes `pulumi.Config.get_secret`,
    a provider its configured stack config), then from `EDGEFABRIC_SECRET_<KEY>`.
    """
    env = os.environ if environ is None else environ
    kind, name = parse(ref, where)
    if kind == "env":
        value = env.get(name)
        if not value:
            raise ConfigError.one(where, ref, f"environment variable {name} is not set; export it, "
                                              "or use config:KEY with `pulumi config set --secret KEY`")
        return value
    if lookup is not None:
        found = lookup(name)
        if found:
            return found
    value = env.get(config_env_name(name))
    if not value:
        raise ConfigError.one(where, ref, f"secret config key edgefabric:{name} is not set; run "
                                          f"`pulumi config set --secret {name} <value>` (or, outside "
                                          f"the engine, export {config_env_name(name)})")
    return value
