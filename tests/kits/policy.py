"""Build policy arguments the way the runtime builds them, and collect what a policy says.

Props go through `policies.rules.runtime.wrap_props`: a protobuf Struct, MessageToDict,
the pack's deserializer and `unknown_checking_proxy`, exactly the path `Analyze` takes.
Secrets are given in their RPC envelope (`secret(value)`), as the engine sends them.
(A unique module name: conftest modules of different test directories collide.)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pulumi_policy import (
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    StackValidationArgs,
)
from pulumi_policy.policy import _NotApplicableError

from policies.rules.runtime import wrap_props

OPTS = PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [], None)
NOT_APPLICABLE = "not applicable"


def urn(typ: str, name: str) -> str:
    return f"urn:pulumi:test::edgefabric::{typ}::{name}"


def resource_args(typ: str, props: Mapping[str, Any], *, name: str = "r",
                  config: Mapping[str, Any] | None = None) -> ResourceValidationArgs:
    return ResourceValidationArgs(typ, wrap_props(props), urn(typ, name), name, OPTS, None, dict(config or {}))


def run(policy: Any, args: ResourceValidationArgs | StackValidationArgs) -> list[str] | str:
    """The violation messages, or NOT_APPLICABLE."""
    messages: list[str] = []
    try:
        policy.validate(args, lambda msg, _urn=None: messages.append(msg))
    except _NotApplicableError:
        return NOT_APPLICABLE
    return messages


def check(policy: Any, typ: str, props: Mapping[str, Any], *, name: str = "r",
          config: Mapping[str, Any] | None = None) -> list[str] | str:
    return run(policy, resource_args(typ, props, name=name, config=config))


def stack_args(resources: list[tuple[str, str, Mapping[str, Any], str | None]],
               config: Mapping[str, Any] | None = None) -> StackValidationArgs:
    """resources: (type, name, props, parent name or None)."""
    built: dict[str, PolicyResource] = {}
    for typ, name, props, _ in resources:
        built[name] = PolicyResource(typ, wrap_props(props), urn(typ, name), name, OPTS, None, None, [], {})
    for _, name, _, parent in resources:
        if parent is not None:
            built[name].parent = built[parent]
    return StackValidationArgs(list(built.values()), dict(config or {}))
