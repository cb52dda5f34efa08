"""Registry: a staging/prod registry lives on a real chain, is not deployed with a public dev
key, and gives each service room for missed heartbeats.

The dynamic resources carry their own tokens (edgefabric/dynamic/registry.py):
`pulumi-python:dynamic/registry:RegistryContract` and
`pulumi-python:dynamic/registry:ServiceRegistration`.
"""

from __future__ import annotations

import os
import re
from typing import Any

from pulumi_policy import ReportViolation, ResourceValidationArgs

from .common import (
    SecretStr,
    config_value,
    is_unknown,
    leaves,
    plain,
    resource_policy,
    schema,
    show,
    stack_config,
)
from .devkeys import DEV_ADDRESSES, DEV_CHAIN_IDS, DEV_PRIVATE_KEYS

REGISTRY_CONTRACT = "pulumi-python:dynamic/registry:RegistryContract"
SERVICE_REGISTRATION = "pulumi-python:dynamic/registry:ServiceRegistration"
REGISTRY_TYPES = (REGISTRY_CONTRACT, SERVICE_REGISTRATION)
_REF = re.compile(r"^(env:[A-Za-z_][A-Za-z0-9_]*|config:[A-Za-z][A-Za-z0-9_.-]*)$")
_ADDRESS_KEY = re.compile(r"(deployer|owner|signer|from)", re.IGNORECASE)


def _props(args: ResourceValidationArgs) -> dict[str, Any]:
    if args.resource_type not in REGISTRY_TYPES:
        args.not_applicable(f"{args.resource_type} is not a registry resource")
    return {k: v for k, v in plain(args.props).items() if not k.startswith("__")}


def _first(props: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if props.get(key) is not None:
            return props[key]
    return None


def _chain(args: ResourceValidationArgs, report: ReportViolation) -> None:
    p = _props(args)
    chain_id = _first(p, "chain_id", "chainId")
    if is_unknown(chain_id):
        return
    forbidden = {int(c) for c in config_value(args, "forbiddenChainIds", sorted(DEV_CHAIN_IDS))}
    if chain_id is None:
        report(f"registry resource '{args.name}' does not state its chain id")
    elif int(chain_id) in forbidden:
        report(f"registry resource '{args.name}' targets development chain id {int(chain_id)}; staging and "
               f"prod need a real network (forbidden: {', '.join(map(str, sorted(forbidden)))})")


registry_chain = resource_policy(
    "registry-not-dev-chain",
    "A staging or prod registry is not on a development chain (31337, 1337, eth-tester).",
    "Point edgefabric:registry.rpcUrl and chainId at the target network (e.g. Polygon 137, "
    "Sepolia 11155111); dev chains are for the local stack only.",
    _chain,
    schema(forbiddenChainIds={"type": "array", "items": {"type": "integer"}}),
)


def resolve_ref(ref: str) -> str | None:
    """The value behind an `env:NAME` / `config:KEY` reference, as the provider would read it.

    The engine starts the pack with its own environment and the stack's config, so the pack
    sees what the provider will see. Returns None when it is not available."""
    kind, _, name = ref.partition(":")
    if kind == "env":
        return os.environ.get(name)
    if kind == "config":
        value = stack_config(name)
        return value if isinstance(value, str) else None
    return None


def _deployer(args: ResourceValidationArgs, report: ReportViolation) -> None:
    p = _props(args)
    for path, value, _ in leaves(p):
        if is_unknown(value) or not isinstance(value, str):
            continue
        if path.endswith("_ref") and _REF.match(value):
            behind = resolve_ref(value)
            if behind is not None and behind.strip().lower().removeprefix("0x") in DEV_PRIVATE_KEYS:
                report(f"registry resource '{args.name}' {path} ({value}) resolves to a public anvil/hardhat dev "
                       "key; anyone can sign with it")
        elif value.lower().removeprefix("0x") in DEV_PRIVATE_KEYS:
            kind = "a secret" if isinstance(value, SecretStr) else "a plain value"
            report(f"registry resource '{args.name}' input {path} is a public anvil/hardhat dev key ({kind}); "
                   "anyone can sign with it")
        elif _ADDRESS_KEY.search(path) and value.lower() in DEV_ADDRESSES:
            report(f"registry resource '{args.name}' {path} {value} is a public anvil/hardhat dev account")


registry_deployer_key = resource_policy(
    "registry-deployer-not-dev-key",
    "The registry deployer key is not one of the public anvil/hardhat development keys.",
    "Generate a dedicated deployer key, fund it on the target chain, and reference it with "
    "edgefabric:registry.deployerKeyRef (env:NAME or config:KEY set with --secret).",
    _deployer,
)


def _ttl(args: ResourceValidationArgs, report: ReportViolation) -> None:
    p = _props(args)
    ttl = _first(p, "service_ttl_s", "ttl_s", "ttl")
    if ttl is None:
        args.not_applicable("no service TTL on this resource")
    # The heartbeat interval drives the agents, not the registration: read it from the
    # resource when it carries it, else from the stack's registry config (default 100 s).
    beat = _first(p, "heartbeat_interval_s", "heartbeat_s")
    if beat is None:
        reg = stack_config("registry")
        beat = reg.get("heartbeatIntervalS", 100) if isinstance(reg, dict) else 100
    if is_unknown(ttl) or is_unknown(beat):
        return
    factor = int(config_value(args, "factor", 3))
    if float(ttl) < factor * float(beat):
        report(f"registry resource '{args.name}': service TTL {show(ttl)} s < {factor} x heartbeat interval {show(beat)} s; "
               f"{factor - 1} missed heartbeat(s) would expire a live service")


registry_ttl_heartbeat = resource_policy(
    "registry-ttl-vs-heartbeat",
    "A registered service's TTL is at least 3 times its heartbeat interval.",
    "Raise edgefabric:registry.serviceTtlS or lower heartbeatIntervalS (seed: 300 s TTL, 100 s heartbeat).",
    _ttl,
    schema(factor={"type": "integer", "minimum": 1}),
)

POLICIES = [registry_chain, registry_deployer_key, registry_ttl_heartbeat]
