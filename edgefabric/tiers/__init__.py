"""The Pulumi ComponentResources, one per tier. Each takes `(name, XArgs, opts)` with only
its slice of the stack config; none calls a chain or DNS API itself.

`secret_output` is the program's side of the one secret resolver (`edgefabric.secrets`):
a reference becomes a secret Output at once, encrypted in state and masked in logs.
Dynamic providers that read the environment themselves get an `env:` reference's
variable *name* instead (`edgefabric.secrets.env_name`), so that value never enters the
program at all.
"""

from __future__ import annotations

import pulumi

from edgefabric.errors import NAMESPACE
from edgefabric.secrets import resolve


def secret_output(ref: str, where: str) -> pulumi.Output[str]:
    """The secret `ref` names, as a secret Output; `where` is the key path holding the
    reference (`registry.deployerKeyRef`), for the error. `config:KEY` is the stack's
    secret `edgefabric:KEY`."""
    value = resolve(ref, where, lookup=pulumi.Config(NAMESPACE).get_secret)
    return value if isinstance(value, pulumi.Output) else pulumi.Output.secret(value)
