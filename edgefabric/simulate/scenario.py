"""A scenario file, typed: when each cloud's probes fail, how fast each answers, and the
settings to plan with. Every mistake is a ConfigError naming its key path (`scenario:`).

    description: aws loses its region for seven minutes
    start: "10:00"            # the virtual clock: HH:MM or HH:MM:SS
    end: "10:20"
    stepS: 10                 # optional: one probe round per step (default healthCheck.intervalS)
    clouds:                   # every cloud the names serve
      aws:
        latencyMs: 20         # what a passing probe measures (performance-based reads it)
        down: [{from: "10:00", to: "10:07"}]          # every probe fails
        flap: [{from: "10:05", to: "10:10", everyS: 20}]  # fails, passes, fails ... every 20 s
        slow: [{from: "10:12", to: "10:15", latencyMs: 400}]
      azure: {}
    settings:                 # the stack config's own keys (or take a stack file's: --stack)
      healthCheck: {intervalS: 10, failureThreshold: 3, successThreshold: 2, recoveryHoldDownS: 120}
      strategies: {user-service: {primary: aws, secondary: azure}}
      routing: {defaultWeight: 60}
      failover: {action: route-to-secondary}
      records: [{name: user.api.example.com., strategy: user-service}]

A window is `from` <= t < `to`. Down wins over flap, flap over up.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from pydantic.alias_generators import to_camel

from edgefabric.config.models import (
    DnsRecord,
    FailoverConfig,
    HealthCheckConfig,
    RoutingConfig,
    StackConfig,
    StrategyConfig,
)
from edgefabric.config.vocab import Cloud
from edgefabric.errors import ConfigError, Problem

NAMESPACE = "scenario"
_CLOCK = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?$")
# The settings a scenario may carry: the stack config's keys the controller plans with.
SETTINGS_KEYS = ("healthCheck", "strategies", "routing", "failover", "records")


def parse_clock(value: Any) -> float:
    """`HH:MM` or `HH:MM:SS` -> seconds since midnight. YAML 1.1 reads an unquoted 10:07 as
    the sexagesimal integer 607; that is read back as 10:07 too."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 24 * 60:
        return float(value // 60 * 3600 + value % 60 * 60)
    m = _CLOCK.match(str(value)) if isinstance(value, str) else None
    if m is None:
        raise ValueError("a time of day: HH:MM or HH:MM:SS, e.g. \"10:07\"")
    return float(int(m[1]) * 3600 + int(m[2]) * 60 + int(m[3] or 0))


def show_clock(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


class _Model(BaseModel):
    # As the stack config: camelCase keys, unknown keys are typos.
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class Window(_Model):
    start: float = Field(alias="from")
    stop: float = Field(alias="to")

    @field_validator("start", "stop", mode="before")
    @classmethod
    def _clock(cls, value: Any) -> float:
        return parse_clock(value)

    @field_validator("stop")
    @classmethod
    def _after_start(cls, value: float, info: ValidationInfo) -> float:
        start = info.data.get("start")
        if start is not None and value <= start:
            raise ValueError(f"a time after `from` ({show_clock(start)})")
        return value

    def covers(self, t: float) -> bool:
        return self.start <= t < self.stop


class Flap(Window):
    every_s: float = Field(gt=0, le=86400)

    def failing(self, t: float) -> bool:
        """Fails for the first `everyS`, passes for the next, and so on."""
        return int((t - self.start) // self.every_s) % 2 == 0


class Slow(Window):
    latency_ms: float = Field(gt=0, le=600_000)


class CloudTimeline(_Model):
    latency_ms: float = Field(20, gt=0, le=600_000)
    down: list[Window] = []
    flap: list[Flap] = []
    slow: list[Slow] = []

    def probe(self, t: float) -> tuple[bool, float]:
        """(passes, latency in seconds) of this cloud's probe at `t`."""
        if any(w.covers(t) for w in self.down):
            return False, 0.0
        if any(f.covers(t) and f.failing(t) for f in self.flap):
            return False, 0.0
        latency = next((s.latency_ms for s in self.slow if s.covers(t)), self.latency_ms)
        return True, latency / 1000


class Settings(_Model):
    """What the controller plans with, as the stack config spells it."""

    health_check: HealthCheckConfig = HealthCheckConfig()
    strategies: dict[str, StrategyConfig] = Field(min_length=1)
    routing: RoutingConfig = RoutingConfig()
    failover: FailoverConfig = FailoverConfig()
    records: list[DnsRecord] = Field(min_length=1, max_length=20)


class Scenario(_Model):
    description: str = ""
    start: float
    end: float
    step_s: float | None = Field(None, gt=0, le=3600)
    clouds: dict[Cloud, CloudTimeline] = Field(min_length=1)
    settings: dict[str, Any] | None = None  # raw: a proposed change is laid over it first

    @field_validator("start", "end", mode="before")
    @classmethod
    def _clock(cls, value: Any) -> float:
        return parse_clock(value)

    @field_validator("end")
    @classmethod
    def _after_start(cls, value: float, info: ValidationInfo) -> float:
        start = info.data.get("start")
        if start is not None and value <= start:
            raise ValueError(f"a time after `start` ({show_clock(start)})")
        return value


# ------------------------------------------------------------------ loading


def _path(loc: tuple[Any, ...], prefix: str = "") -> str:
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("http", "tcp", "custom", "slack", "pagerduty", "email", "[key]") and out:
            continue  # a discriminated union's tag, or a bad key: not keys anybody wrote
        else:
            out += ("." if out else "") + str(part)
    return out


def _problems(exc: ValidationError, prefix: str = "") -> list[Problem]:
    out = []
    for err in exc.errors():
        path = _path(err["loc"], prefix) or "(scenario)"
        value = None if err["type"] == "missing" else err.get("input")
        allowed = {"missing": "required", "extra_forbidden": "unknown key (keys are camelCase)"}.get(
            err["type"], str(err["msg"]).removeprefix("Value error, "))
        out.append(Problem(path, value if not isinstance(value, dict) else "{...}", allowed, NAMESPACE))
    return out


def load_scenario(path: Path | str) -> Scenario:
    """Read and check a scenario file; ConfigError lists every problem by key path."""
    file = Path(path)
    try:
        raw = yaml.safe_load(file.read_text())
    except OSError as exc:
        raise ConfigError.one("(file)", str(file), f"a readable scenario file ({exc.strerror})", NAMESPACE) from None
    except yaml.YAMLError as exc:
        raise ConfigError.one("(file)", str(file), f"YAML ({exc})", NAMESPACE) from None
    if not isinstance(raw, dict):
        raise ConfigError.one("(file)", str(file), "a mapping of scenario keys", NAMESPACE)
    try:
        return Scenario.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_problems(exc)) from None


def settings_from_stack(cfg: StackConfig, raw: Mapping[str, Any]) -> dict[str, Any]:
    """A stack's planning settings, raw (camelCase) so a proposed change applies to them as to
    a scenario's. `cfg` is the checked stack, `raw` its `edgefabric:` keys."""
    records = [{"name": r.name, "strategy": r.strategy} for r in (cfg.dns.all_records if cfg.dns else [])]
    out = {k: raw[k] for k in ("healthCheck", "strategies", "routing") if k in raw}
    out["failover"] = {"action": cfg.failover.action}
    out["records"] = records
    return out


def check_settings(raw: Mapping[str, Any] | None, clouds: Mapping[str, Any], where: str = "settings") -> Settings:
    """The settings, checked: the models' own rules, plus every name's strategy defined and
    every cloud it ranks present in the scenario's `clouds`."""
    if raw is None:
        raise ConfigError.one(where, None, "the settings to plan with: a `settings` mapping, or --stack FILE",
                              NAMESPACE)
    unknown = sorted(set(raw) - set(SETTINGS_KEYS))
    if unknown:
        raise ConfigError([Problem(f"{where}.{k}", raw[k] if not isinstance(raw[k], dict) else "{...}",
                                   f"one of {', '.join(SETTINGS_KEYS)}", NAMESPACE) for k in unknown])
    try:
        settings = Settings.model_validate(dict(raw))
    except ValidationError as exc:
        raise ConfigError(_problems(exc, where)) from None
    p: list[Problem] = []
    for i, record in enumerate(settings.records):
        strategy = settings.strategies.get(record.strategy)
        if strategy is None:
            p.append(Problem(f"{where}.records[{i}].strategy", record.strategy,
                             f"a key of {where}.strategies: {', '.join(sorted(settings.strategies))}", NAMESPACE))
            continue
        missing = [c for c in strategy.order if c not in clouds]
        if missing:
            p.append(Problem("clouds", sorted(clouds), f"a timeline for every cloud strategies.{record.strategy} "
                                                       f"ranks: {', '.join(missing)} missing", NAMESPACE))
    if p:
        raise ConfigError(p)
    return settings


_KEY = re.compile(r"([A-Za-z0-9_-]+)((?:\[\d+\])*)")


def apply_change(raw: Mapping[str, Any] | None, change: str) -> dict[str, Any]:
    """`raw` with one proposed change laid over it: `key.path=VALUE` (VALUE read as YAML,
    `[n]` indexes a list), e.g. `healthCheck.recoveryHoldDownS=60`. The input is not changed."""
    key, sep, text = change.partition("=")
    parts = key.split(".")
    if not sep or not all(_KEY.fullmatch(part) for part in parts):
        raise ConfigError.one("--change", change, "KEY.PATH=VALUE, e.g. healthCheck.recoveryHoldDownS=60", "")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError.one("--change", change, f"a YAML value after '=' ({exc})", "") from None
    out: dict[str, Any] = yaml.safe_load(yaml.safe_dump(dict(raw or {})))  # a deep copy of plain data
    node: Any = out
    steps: list[str | int] = []
    for part in parts:
        m = _KEY.fullmatch(part)
        assert m is not None
        steps.append(m[1])
        steps += [int(i) for i in re.findall(r"\[(\d+)\]", m[2])]
    for i, step in enumerate(steps):
        last = i == len(steps) - 1
        if isinstance(step, int):
            if not isinstance(node, list) or step >= len(node):
                raise ConfigError.one("--change", change, f"an index within the list at {key!r}", "")
            if last:
                node[step] = value
            else:
                node = node[step]
        else:
            if not isinstance(node, dict):
                raise ConfigError.one("--change", change, f"a path through mappings: {key!r}", "")
            if last:
                node[step] = value
            else:
                node = node.setdefault(step, [] if isinstance(steps[i + 1], int) else {})
    return out


__all__ = ["CloudTimeline", "Scenario", "Settings", "apply_change", "check_settings",
           "load_scenario", "parse_clock", "settings_from_stack", "show_clock"]
