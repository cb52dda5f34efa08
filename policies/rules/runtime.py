"""How props reach the policies, and a small evaluator for runs outside the engine.

The engine sends resource inputs to the pack with secrets still wrapped (KeepSecrets), but
pulumi_policy 1.21 unwraps them in `Analyze`/`AnalyzeStack` (`deserialize_properties(...,
proxy_secrets=False)`), so a policy cannot tell a secret from a plain value. The pack
installs `deserialize_marking_secrets` in its place: identical output, except that secret
strings come back as `SecretStr` (still a `str`). Remediation (proxy_secrets=True) is left
untouched.

`wrap_props` turns a plain property dict (secrets as the RPC secret envelope, the form the
mocks monitor records) into exactly what a policy receives from the engine: a protobuf
Struct, `MessageToDict`, the pack's deserializer, `unknown_checking_proxy`. The render and
the tests use it, so they exercise the same path as `pulumi preview --policy-pack`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pulumi_policy.policy as _pp
from google.protobuf import json_format, struct_pb2
from pulumi_policy import (
    EnforcementLevel,
    Policy,
    PolicyCustomTimeouts,
    PolicyProviderResource,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.deserialize import SPECIAL_SECRET_SIG, SPECIAL_SIG_KEY, deserialize_properties
from pulumi_policy.proxy import UnknownValueError, unknown_checking_proxy
from pulumi_policy.secret import Secret

from .common import SecretStr

_original_deserialize = deserialize_properties


def _mark(value: Any) -> Any:
    """Replace Secret(...) holders by their values, marking strings inside as SecretStr."""
    if isinstance(value, Secret):
        return _mark_all(_mark(value.value))
    if isinstance(value, Mapping):
        target = value if isinstance(value, dict) else value["__target"]
        return {k: _mark(v) for k, v in target.items()}
    if isinstance(value, list):
        return [_mark(v) for v in value]
    return value


def _mark_all(value: Any) -> Any:
    if isinstance(value, str):
        return SecretStr(value)
    if isinstance(value, dict):
        return {k: _mark_all(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_mark_all(v) for v in value]
    return value


def deserialize_marking_secrets(props: dict[str, Any], proxy_secrets: bool = False) -> Any:
    if proxy_secrets:
        return _original_deserialize(props, True)
    return _mark(_original_deserialize(props, True))


def install_secret_marking() -> None:
    """Make the pulumi_policy servicer keep the secret mark (called by policies/__main__.py)."""
    _pp.deserialize_properties = deserialize_marking_secrets  # type: ignore[assignment]


def secret(value: Any) -> dict[str, Any]:
    """The RPC envelope of a secret value, as the engine and the mocks monitor carry it."""
    return {SPECIAL_SIG_KEY: SPECIAL_SECRET_SIG, "value": value}


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    # Resource references and other SDK objects: the policies only need a stable text.
    return str(value)


def wrap_props(props: Mapping[str, Any]) -> Mapping[str, Any]:
    """`props` exactly as a policy sees them from the engine (see module docstring)."""
    struct = struct_pb2.Struct()
    json_format.ParseDict(_jsonable(props), struct)
    return unknown_checking_proxy(deserialize_marking_secrets(json_format.MessageToDict(struct)))


# ----------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class Resource:
    """One registered resource, as the mocks or a test describe it."""

    type: str
    name: str
    urn: str
    props: Mapping[str, Any]
    parent: str | None = None
    # URNs, as the engine gives them to AnalyzeStack: every dependency, and per input.
    dependencies: tuple[str, ...] = ()
    property_dependencies: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    provider: str = ""  # the provider reference (`<provider urn>::<id>`), "" for the default


@dataclass(frozen=True)
class Violation:
    policy: str
    level: str  # advisory | mandatory
    message: str
    urn: str


@dataclass
class Report:
    violations: list[Violation] = field(default_factory=list)
    # Policies that could not decide (unknown values): (policy, urn, reason).
    errors: list[tuple[str, str, str]] = field(default_factory=list)
    # How many resources (or stacks) each policy applied to; 0 means "not applicable".
    checked: dict[str, int] = field(default_factory=dict)

    def mandatory(self) -> list[Violation]:
        return [v for v in self.violations if v.level == "mandatory"]


def _levels(config: Mapping[str, Any], policy: Policy) -> tuple[EnforcementLevel, dict[str, Any]]:
    """The enforcement level and properties of `policy` under a policy config file, the
    way the CLI reads it: per-policy entry, else `all`, else the policy's own default."""
    entry = config.get(policy.name)
    level: Any = None
    props: dict[str, Any] = {}
    if isinstance(entry, str):
        level = entry
    elif isinstance(entry, Mapping):
        level = entry.get("enforcementLevel")
        props = {k: v for k, v in entry.items() if k != "enforcementLevel"}
    if level is None:
        all_entry = config.get("all")
        level = all_entry.get("enforcementLevel") if isinstance(all_entry, Mapping) else all_entry
    if level is None:
        level = policy.enforcement_level.value if policy.enforcement_level else "advisory"
    return EnforcementLevel(level), props


def evaluate(policies: Iterable[Policy], resources: list[Resource],
             config: Mapping[str, Any] | None = None) -> Report:
    """Run resource policies on each resource and stack policies on all of them."""
    config = config or {}
    report = Report()
    wrapped = [(r, wrap_props(r.props)) for r in resources]
    opts = PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [], None)
    for policy in policies:
        level, props = _levels(config, policy)
        if level == EnforcementLevel.DISABLED:
            continue
        report.checked.setdefault(policy.name, 0)
        shown = "mandatory" if level in (EnforcementLevel.MANDATORY, EnforcementLevel.REMEDIATE) else "advisory"

        def reporter(urn: str, name: str = policy.name, lvl: str = shown):
            def report_violation(message: str, at: str | None = None) -> None:
                report.violations.append(Violation(name, lvl, message, at or urn))
            return report_violation

        if isinstance(policy, ResourceValidationPolicy):
            for res, p in wrapped:
                args = ResourceValidationArgs(res.type, p, res.urn, res.name, opts, None, dict(props))
                _run(policy, args, reporter(res.urn), report, res.urn)
        elif isinstance(policy, StackValidationPolicy):
            by_urn = {r.urn: PolicyResource(r.type, p, r.urn, r.name, opts, None, None, [], {})
                      for r, p in wrapped}
            for r, _ in wrapped:
                res = by_urn[r.urn]
                if r.parent in by_urn:
                    res.parent = by_urn[r.parent]
                res.dependencies = [by_urn[u] for u in r.dependencies if u in by_urn]
                res.property_dependencies = {k: [by_urn[u] for u in v if u in by_urn]
                                             for k, v in r.property_dependencies.items()}
                provider_urn = r.provider.rsplit("::", 1)[0]
                if provider_urn in by_urn:
                    target = by_urn[provider_urn]
                    res.provider = PolicyProviderResource(target.resource_type, target.props, target.urn,
                                                          target.name)
            args = StackValidationArgs(list(by_urn.values()), dict(props))
            _run(policy, args, reporter(""), report, "")
    return report


def _run(policy: Policy, args: Any, report_violation: Any, report: Report, urn: str) -> None:
    report.checked.setdefault(policy.name, 0)
    try:
        policy.validate(args, report_violation)  # type: ignore[attr-defined]
    except _pp._NotApplicableError:
        return
    except UnknownValueError as exc:
        report.errors.append((policy.name, urn, exc.message))
        return
    report.checked[policy.name] += 1
