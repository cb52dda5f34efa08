"""Shared helpers for the edgefabric policies: safe property access, config, constructors.

Policies receive props wrapped by the pulumi_policy runtime: dicts and lists become proxies
that raise `UnknownValueError` when a value is not known yet (preview). The helpers here
read through those proxies without raising, and report unknown values as `UNKNOWN`, so a
policy can skip a check it cannot decide instead of failing the whole preview.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from pulumi_policy import (
    PolicyConfigSchema,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.proxy import (
    UNKNOWN_ARCHIVE_VALUE,
    UNKNOWN_ARRAY_VALUE,
    UNKNOWN_ASSET_VALUE,
    UNKNOWN_BOOLEAN_VALUE,
    UNKNOWN_NUMBER_VALUE,
    UNKNOWN_OBJECT_VALUE,
    UNKNOWN_STRING_VALUE,
)

_UNKNOWN_SENTINELS = frozenset({
    UNKNOWN_BOOLEAN_VALUE, UNKNOWN_NUMBER_VALUE, UNKNOWN_STRING_VALUE, UNKNOWN_ARRAY_VALUE,
    UNKNOWN_ASSET_VALUE, UNKNOWN_ARCHIVE_VALUE, UNKNOWN_OBJECT_VALUE,
})


class _Unknown:
    """A value the engine does not know yet (preview)."""

    def __repr__(self) -> str:
        return "<unknown>"


UNKNOWN = _Unknown()


class SecretStr(str):
    """A string input that the engine marked secret.

    The stock runtime unwraps secrets before a policy sees them (see runtime.py); the pack
    keeps this mark so the secrets policy can tell a secret from a plain value. It is a
    `str`, so every other policy reads it like any string.
    """

    __slots__ = ()


def is_unknown(value: Any) -> bool:
    return value is UNKNOWN or (isinstance(value, str) and value in _UNKNOWN_SENTINELS)


def plain(value: Any) -> Any:
    """A proxy-free copy of `value`: dicts, lists, leaves; unknown values become UNKNOWN.

    Reads the proxies' `__target` so that nothing raises UnknownValueError.
    """
    if isinstance(value, str):
        return UNKNOWN if value in _UNKNOWN_SENTINELS else value
    if isinstance(value, Mapping):
        target = value if isinstance(value, dict) else value["__target"]
        return {k: plain(v) for k, v in target.items()}
    if isinstance(value, Sequence):
        target = value if isinstance(value, list | tuple) else value["__target"]
        return [plain(v) for v in target]
    return value


def get(obj: Any, *path: str | int, default: Any = None) -> Any:
    """`obj[path[0]][path[1]]...` on plain data; `default` when a step is missing or unknown."""
    cur = obj
    for step in path:
        if is_unknown(cur):
            return UNKNOWN
        if isinstance(step, int):
            if not isinstance(cur, list) or step >= len(cur):
                return default
            cur = cur[step]
        else:
            if not isinstance(cur, dict) or step not in cur:
                return default
            cur = cur[step]
        if cur is None:
            return default
    return cur


def leaves(obj: Any, path: str = "") -> Iterator[tuple[str, Any, Any]]:
    """Every leaf of plain data as (dotted path, value, parent container)."""
    if isinstance(obj, dict):
        for key, val in obj.items():
            yield from _leaf_children(f"{path}.{key}" if path else str(key), val, obj)
    elif isinstance(obj, list):
        for i, val in enumerate(obj):
            yield from _leaf_children(f"{path}[{i}]", val, obj)


def _leaf_children(path: str, val: Any, parent: Any) -> Iterator[tuple[str, Any, Any]]:
    if isinstance(val, dict | list):
        yield from leaves(val, path)
    else:
        yield path, val, parent


def config_value(args: ResourceValidationArgs | StackValidationArgs, key: str, default: Any) -> Any:
    """A policy config property, falling back to the documented default."""
    conf = args.get_config() or {}
    value = conf.get(key)
    return default if value is None else value


def labels_of(props: dict[str, Any]) -> dict[str, Any]:
    labels = get(props, "metadata", "labels", default={})
    return labels if isinstance(labels, dict) else {}


_IMAGE_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def image_problem(image: Any) -> str | None:
    """Why `image` is not pinned, or None. Pinned: an explicit tag other than `latest`, or a
    sha256 digest (`name@sha256:...`, or a bare image id `sha256:...`)."""
    if is_unknown(image) or image is None:
        return None
    if not isinstance(image, str) or not image:
        return f"image {image!r} is empty"
    if _IMAGE_DIGEST.match(image):
        return None
    name, _, digest = image.partition("@")
    if digest:
        return None if _IMAGE_DIGEST.match(digest) else f"image {image!r} has a malformed digest"
    last = name.rsplit("/", 1)[-1]
    if ":" not in last:
        return f"image {image!r} has no tag (it means ':latest')"
    if last.rsplit(":", 1)[1] == "latest":
        return f"image {image!r} uses ':latest'"
    return None


Validate = Callable[[ResourceValidationArgs, ReportViolation], None]
StackValidate = Callable[[StackValidationArgs, ReportViolation], None]


def schema(**properties: dict[str, Any]) -> PolicyConfigSchema:
    return PolicyConfigSchema(properties=properties)


def resource_policy(name: str, description: str, remediation: str, validate: Validate,
                    config: PolicyConfigSchema | None = None) -> ResourceValidationPolicy:
    """A resource policy whose validate sees plain props (see `ResourceCheck`)."""
    return ResourceValidationPolicy(
        name=name, description=description, validate=validate, config_schema=config,
        remediation_steps=remediation,
    )


def stack_policy(name: str, description: str, remediation: str, validate: StackValidate,
                 config: PolicyConfigSchema | None = None) -> StackValidationPolicy:
    return StackValidationPolicy(
        name=name, description=description, validate=validate, config_schema=config,
        remediation_steps=remediation,
    )


def show(value: Any) -> str:
    """A value for a message. Numbers arrive as floats (protobuf Struct), so 3.0 shows as 3."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:g}"
    return repr(value)


def stack_config(key: str) -> Any:
    """A top-level `edgefabric:` key of the stack being checked, or None.

    Some facts are configuration rather than resources (who gets paged, how often agents
    heartbeat). The engine hands the stack's config to the pack (PULUMI_CONFIG, applied by
    pulumi_policy before each call); `make render` and the tests set it in-process.
    """
    import pulumi  # local: only these policies need the SDK's config store

    conf = pulumi.Config("edgefabric")
    try:
        value = conf.get_object(key)
    except (ValueError, pulumi.ConfigTypeError):  # a non-JSON scalar: read it as text
        value = None
    return value if value is not None else conf.get(key)
