"""Loading a stack's config: from a stack file, or from the values the program read
through `pulumi.Config` (the reading itself belongs to the program: this package is engine-free).

Everything is parsed and checked before the first resource is registered; `ConfigError`
lists every problem at once.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from edgefabric.config.models import NAMESPACE, TOP_LEVEL_KEYS, ConfigError, StackConfig
from edgefabric.config.rules import Problem, semantic_problems


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("http", "tcp", "custom", "slack", "pagerduty", "email") and out:
            continue  # discriminated-union tags are not keys the user wrote
        else:
            out += ("." if out else "") + str(part)
    return out


def _allowed(err: Mapping[str, Any]) -> str:
    msg = err["msg"]
    ctx = err.get("ctx") or {}
    if err["type"] == "string_pattern_mismatch":
        return f"must match {ctx.get('pattern')}"
    if err["type"] == "extra_forbidden":
        return "unknown key (check spelling; keys are camelCase)"
    if err["type"] == "literal_error":
        return f"one of {ctx.get('expected')}"
    return msg.removeprefix("Value error, ")


def load_config(raw: Mapping[str, Any]) -> StackConfig:
    """Parse and check one stack's `edgefabric:` keys (namespace already stripped).

    Raises ConfigError listing every problem; nothing is registered before this returns.
    """
    try:
        cfg = StackConfig.model_validate(dict(raw))
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            path = _path(err["loc"])
            value = err.get("input") if err["type"] != "missing" else None
            problems.append(str(Problem(path, value, _allowed(err))))
        raise ConfigError(problems) from None
    sem = semantic_problems(cfg)
    if sem:
        raise ConfigError(str(x) for x in sem)
    return cfg


def raw_from_stack_file(path: Path) -> dict[str, Any]:
    """The `edgefabric:` keys of a stack file, without the secrets (`secure:` values are
    secret config keys that `config:` references point at, not part of the structure)."""
    return raw_from_stack_text(Path(path).read_text())


def raw_from_stack_text(text: str) -> dict[str, Any]:
    """`raw_from_stack_file` of a stack file's text."""
    doc = yaml.safe_load(text) or {}
    config = doc.get("config") or {}
    prefix = f"{NAMESPACE}:"
    return {k[len(prefix):]: v for k, v in config.items()
            if k.startswith(prefix) and not (isinstance(v, dict) and set(v) == {"secure"})}


def load_stack_file(path: Path | str) -> StackConfig:
    """Load a `Pulumi.<stack>.yaml` without the engine (controller, render, promote-check)."""
    return load_config(raw_from_stack_file(Path(path)))


def from_raw_values(values: Mapping[str, str | None], stack: str) -> StackConfig:
    """Parse the values the program read for each top-level key (`pulumi.Config(NAMESPACE)
    .get(key)` in `edgefabric.tiers.stack`): JSON text for structured values, plain text
    for strings, None for unset. The environment defaults to the stack's name."""
    raw: dict[str, Any] = {}
    for key in TOP_LEVEL_KEYS:
        text = values.get(key)
        if text is None:
            continue
        # Structured values arrive as JSON text; plain strings (environment) do not parse.
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        # Pulumi.yaml declares an empty default for every key (declared keys without one are
        # required by the engine); empty means "not set", so the model's default applies.
        if value not in ("", {}, []):
            raw[key] = value
    if "environment" not in raw:
        raw["environment"] = stack
    return load_config(raw)
