"""Generate the README's configuration reference from the pydantic models.

    python -m tooling.config_reference           # print the Markdown
    python -m tooling.config_reference --write   # replace the block in README.md
    python -m tooling.config_reference --check   # exit 1 if README.md is stale (make lint)

`edgefabric-config-reference` is the same, as a console script.

The block sits between `<!-- config-reference:start -->` and `<!-- config-reference:end -->`;
tests/unit/test_docs.py fails when README.md and the models disagree.
"""

from __future__ import annotations

import argparse
import sys
import types
import typing
from pathlib import Path

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from edgefabric import config as c

ROOT = Path(__file__).resolve().parent.parent

START, END = "<!-- config-reference:start -->", "<!-- config-reference:end -->"


def _type_name(annotation: object) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        inner, *meta = args
        pattern = next((getattr(m, "pattern", None) for m in meta if getattr(m, "pattern", None)), None)
        if inner is str and pattern and pattern.startswith("^(env:"):
            return "secret ref (`env:NAME` \\| `config:KEY`)"
        return _type_name(inner)
    if origin in (typing.Union, types.UnionType):
        names = [_type_name(a) for a in args if a is not type(None)]
        optional = type(None) in args
        return " \\| ".join(names) + (" (optional)" if optional else "")
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin in (list, tuple):
        return f"list of {_type_name(args[0])}"
    if origin is dict:
        return f"map {_type_name(args[0])} → {_type_name(args[1])}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return f"[{annotation.__name__}](#{annotation.__name__.lower()})"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: typing.Any) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "**required**"
    value = field.default_factory() if field.default_factory else field.default
    if isinstance(value, BaseModel):
        return "(defaults)"
    if value in ({}, []):
        return "empty"
    return f"`{value}`" if value is not None else "none"


def _pattern(field: typing.Any) -> str | None:
    return next((getattr(m, "pattern", None) for m in field.metadata if getattr(m, "pattern", None)), None)


def _constraints(field: typing.Any) -> str:
    parts = []
    pattern = _pattern(field)
    if pattern and not pattern.startswith("^(env:"):
        parts.append(f"matches `{pattern}`".replace("|", "\\|"))
    for meta in field.metadata:
        for attr, sym in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<"), ("min_length", "min length")):
            value = getattr(meta, attr, None)
            if value is not None:
                parts.append(f"{sym} {value}")
    return ", ".join(parts)


def _models() -> list[type[BaseModel]]:
    """Every model reachable from StackConfig, in first-seen order."""
    seen: list[type[BaseModel]] = []

    def walk(model: type[BaseModel]) -> None:
        if model in seen:
            return
        seen.append(model)
        for field in model.model_fields.values():
            for sub in _nested(field.annotation):
                walk(sub)

    walk(c.StackConfig)
    return seen


def _nested(annotation: object) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for a in typing.get_args(annotation) for m in _nested(a)]


def reference() -> str:
    lines = [START, "", "Top-level keys live under the `edgefabric:` namespace of `Pulumi.<stack>.yaml`."
             " Keys are camelCase. Every rule below is checked before any resource is registered.", ""]
    for model in _models():
        title = "StackConfig (top-level keys)" if model is c.StackConfig else model.__name__
        lines.append(f"#### {title}" if model is c.StackConfig else f"#### {model.__name__}")
        doc = " ".join((model.__doc__ or "").strip().split("\n\n")[0].split())
        if doc and model is not c.StackConfig:
            lines += ["", doc]
        lines += ["", "| key | type | default | constraints |", "|---|---|---|---|"]
        for name, field in model.model_fields.items():
            key = field.alias or name
            typ = _type_name(field.annotation)
            if (_pattern(field) or "").startswith("^(env:"):
                typ = "secret ref (`env:NAME` \\| `config:KEY`)" + (" (optional)" if "optional" in typ else "")
            lines.append(f"| `{key}` | {typ} | {_default(field)} | "
                         f"{_constraints(field)} |")
        lines.append("")
    lines.append(END)
    return "\n".join(lines)


def replace_block(readme: str, block: str) -> str:
    head, _, rest = readme.partition(START)
    _, _, tail = rest.partition(END)
    return head + block + tail


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="update README.md in place")
    parser.add_argument("--check", action="store_true", help="exit 1 if README.md is stale")
    args = parser.parse_args(argv)
    block = reference()
    if args.check:
        readme = (ROOT / "README.md").read_text()
        if replace_block(readme, block) != readme:
            print("README.md configuration reference is stale: run `python -m tooling.config_reference --write`",
                  file=sys.stderr)
            return 1
    elif args.write:
        path = ROOT / "README.md"
        path.write_text(replace_block(path.read_text(), block))
    else:
        print(block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
