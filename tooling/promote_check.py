"""Promotion guard: two stack configs must have the same schema before promoting.

    python -m tooling.promote_check --from dev --to staging   # or: make promote-check FROM=dev TO=staging
    edgefabric-promote-check --from dev --to staging          # the same, as the console script

It compares Pulumi.dev.yaml and Pulumi.staging.yaml:
- each file must load and validate (edgefabric.config.load_stack_file), else it fails with
  the key-path problems;
- every key present in one and missing in the other fails, unless it matches a pattern in
  policies/config/promotion.yaml (`perEnvironment`);
- a key whose value has a different type on each side (a string here, a number there) fails;
- value differences on shared keys are printed, for the reviewer; they never fail.

Exit status: 0 when promotable, 1 when not, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from edgefabric.config import ConfigError, load_stack_file, raw_from_stack_file

ROOT = Path(__file__).resolve().parent.parent

PROMOTION_FILE = ROOT / "policies" / "config" / "promotion.yaml"
SECURE = "(secure value)"


def flatten(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """(key path, leaf value) pairs. Named lists collapse to `[]`; typed lists key by type.

    A list of scalars is one leaf, and so is a `{secure: ...}` value."""
    if isinstance(value, dict) and set(value) == {"secure"}:
        yield path, SECURE
    elif isinstance(value, dict) and value:
        for key, val in value.items():
            yield from flatten(val, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        for item in value:
            tag = f"[type={item['type']}]" if isinstance(item.get("type"), str) else "[]"
            yield from flatten(item, path + tag)
    else:
        yield path, value


def type_name(value: Any) -> str:
    if value == SECURE:
        return "secure"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if value is None:
        return "null"
    names: dict[type, str] = {str: "string", list: "list", dict: "map"}
    return names.get(type(value), type(value).__name__)


def glob(pattern: str) -> re.Pattern[str]:
    return re.compile("^" + re.escape(pattern).replace(r"\*", ".*") + "$")


def per_environment_patterns(path: Path = PROMOTION_FILE) -> list[str]:
    doc = yaml.safe_load(path.read_text()) or {}
    return [str(p) for p in doc.get("perEnvironment") or []]


@dataclass
class Result:
    problems: list[str] = field(default_factory=list)
    allowed: list[str] = field(default_factory=list)
    differences: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _collect(raw: dict[str, Any]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for path, value in flatten(raw):
        out.setdefault(path, []).append(value)
    return out


def _show(values: list[Any]) -> str:
    shown = sorted({repr(v) for v in values})
    text = ", ".join(shown[:4]) + (f", ... ({len(shown)} values)" if len(shown) > 4 else "")
    return text if len(text) <= 160 else text[:157] + "..."


def compare(src: Path, dst: Path, patterns: list[str] | None = None) -> Result:
    """Compare two stack files; see the module docstring for the rules."""
    res = Result()
    names = (src.name, dst.name)
    for path in (src, dst):
        if not path.exists():
            res.problems.append(f"{path.name}: no such stack file")
    if res.problems:
        return res
    for path in (src, dst):
        try:
            load_stack_file(path)
        except ConfigError as exc:
            res.problems += [f"{path.name}: {p}" for p in exc.problems]
    regexes = [glob(p) for p in (per_environment_patterns() if patterns is None else patterns)]
    a, b = _collect(raw_from_stack_file(src)), _collect(raw_from_stack_file(dst))
    for key in sorted(set(a) | set(b)):
        if key not in a or key not in b:
            have, lack = (names[0], names[1]) if key in a else (names[1], names[0])
            line = f"edgefabric:{key} is set in {have} but missing in {lack}"
            if any(r.match(key) for r in regexes):
                res.allowed.append(line + " (per-environment)")
            else:
                res.problems.append(line + "; add it to both, or list it under perEnvironment in "
                                    f"{PROMOTION_FILE.relative_to(ROOT)}")
            continue
        types_a, types_b = {type_name(v) for v in a[key]}, {type_name(v) for v in b[key]}
        if types_a != types_b and "null" not in types_a | types_b:
            res.problems.append(f"edgefabric:{key} is ill-typed: {'/'.join(sorted(types_a))} in {names[0]} "
                                f"but {'/'.join(sorted(types_b))} in {names[1]}")
        elif sorted(map(repr, a[key])) != sorted(map(repr, b[key])):
            res.differences.append(f"edgefabric:{key}: {_show(a[key])} -> {_show(b[key])}")
    return res


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="src", required=True, help="stack promoted from, e.g. dev")
    parser.add_argument("--to", dest="dst", required=True, help="stack promoted to, e.g. staging")
    parser.add_argument("--root", type=Path, default=ROOT, help="directory holding Pulumi.<stack>.yaml")
    args = parser.parse_args(argv)
    if args.src == args.dst:
        print("promote-check: FROM and TO are the same stack", file=sys.stderr)
        return 2
    src, dst = args.root / f"Pulumi.{args.src}.yaml", args.root / f"Pulumi.{args.dst}.yaml"
    res = compare(src, dst)
    print(f"promote-check {args.src} -> {args.dst}")
    if res.differences:
        print(f"\nvalue differences ({len(res.differences)}):")
        for line in res.differences:
            print(f"  ~ {line}")
    if res.allowed:
        print(f"\nper-environment keys ({len(res.allowed)}):")
        for line in res.allowed:
            print(f"  = {line}")
    if res.problems:
        print(f"\nFAIL: {len(res.problems)} problem(s):")
        for line in res.problems:
            print(f"  x {line}")
        return 1
    print(f"\nOK: {src.name} and {dst.name} have the same schema")
    return 0


if __name__ == "__main__":
    sys.exit(main())
