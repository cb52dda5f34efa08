"""Resolve `SecretRef`s (`env:NAME`, `config:KEY`) into Pulumi secret Outputs.

A reference is resolved where it is used and the value is wrapped as a secret at once,
so it is encrypted in state and masked in logs. Dynamic providers that can read the
environment themselves get the variable *name* instead (see `env_name`), so the value
never enters the program at all.
"""

from __future__ import annotations

import os

import pulumi

from edgefabric.config import NAMESPACE, ConfigError


def env_name(ref: str) -> str | None:
    """The variable name of an `env:` reference, else None."""
    return ref.split(":", 1)[1] if ref.startswith("env:") else None


def resolve(ref: str, key_path: str) -> pulumi.Output[str]:
    """The secret a reference names, as a secret Output. `key_path` names the config key
    that holds the reference, for the error message."""
    kind, name = ref.split(":", 1)
    if kind == "env":
        value = os.environ.get(name)
        if value is None:
            raise ConfigError([f"{NAMESPACE}:{key_path} = {ref!r}: environment variable {name} is not set; "
                               f"export it, or use config:KEY with `pulumi config set --secret KEY`"])
        return pulumi.Output.secret(value)
    secret = pulumi.Config(NAMESPACE).get_secret(name)
    if secret is None:
        raise ConfigError([f"{NAMESPACE}:{key_path} = {ref!r}: secret config key {NAMESPACE}:{name} is not set; "
                           f"run `pulumi config set --secret {name} <value>`"])
    return secret
