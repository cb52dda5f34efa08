"""The program's side of config loading: read every declared top-level key through
`pulumi.Config` and hand the raw values to the engine-free `edgefabric.config`.

Secret keys (what `config:` references point at) are not read here; they are resolved
where they are used, as secret Outputs.
"""

from __future__ import annotations

import pulumi

from edgefabric.config import NAMESPACE, TOP_LEVEL_KEYS, StackConfig, from_raw_values


def read_stack_config() -> StackConfig:
    """The current stack's typed config; ConfigError lists every problem before any
    resource is registered."""
    conf = pulumi.Config(NAMESPACE)
    return from_raw_values({key: conf.get(key) for key in TOP_LEVEL_KEYS}, pulumi.get_stack())
