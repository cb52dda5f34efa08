"""Every tier has one shape: `Tier(name, TierArgs, opts=None)`, with only its slice of config.

A component that takes the whole `StackConfig` can read anything, so a change to any part of
the config could change any tier; one that takes a typed args object states what it reads.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import pkgutil
import typing
from pathlib import Path

import pulumi
import pytest

import edgefabric.tiers

TIERS_DIR = Path(edgefabric.tiers.__file__).parent
# Not a tier: the program's config reader. It builds the StackConfig that __main__ slices.
NOT_A_TIER = {"edgefabric.tiers.stack"}
# The components each of these modules must define (more may come; none may go unnoticed).
EXPECTED = {
    "CloudCore": "edgefabric.tiers.cloud_core",
    "RegionalEdge": "edgefabric.tiers.regional_edge",
    "EdgeSite": "edgefabric.tiers.edge_sites",
    "BlockchainRegistry": "edgefabric.tiers.registry",
}


def _modules() -> list[str]:
    names = ["edgefabric.tiers"]
    names += [m.name for m in pkgutil.walk_packages([str(TIERS_DIR)], prefix="edgefabric.tiers.")]
    return sorted(n for n in names if n not in NOT_A_TIER)


def _components() -> dict[str, type[pulumi.ComponentResource]]:
    found: dict[str, type[pulumi.ComponentResource]] = {}
    for name in _modules():
        module = importlib.import_module(name)
        for obj in vars(module).values():
            if (inspect.isclass(obj) and issubclass(obj, pulumi.ComponentResource)
                    and obj.__module__ == name):
                found[obj.__name__] = obj
    return found


COMPONENTS = _components()


def test_the_tier_components_are_all_found() -> None:
    for cls_name, module in EXPECTED.items():
        assert cls_name in COMPONENTS, f"{module}.{cls_name} is gone or renamed"
        assert COMPONENTS[cls_name].__module__ == module


@pytest.mark.parametrize("cls_name", sorted(COMPONENTS))
def test_init_is_name_args_opts(cls_name: str) -> None:
    cls = COMPONENTS[cls_name]
    params = list(inspect.signature(cls.__init__).parameters.values())
    assert [p.name for p in params] == ["self", "name", "args", "opts"], f"{cls_name}{inspect.signature(cls.__init__)}"
    assert all(p.kind is p.POSITIONAL_OR_KEYWORD for p in params), cls_name
    assert params[1].default is params[1].empty and params[2].default is params[2].empty, cls_name
    assert params[3].default is None, f"{cls_name}: opts must default to None"

    hints = typing.get_type_hints(cls.__init__)
    assert hints["name"] is str, cls_name
    assert hints["opts"] == pulumi.ResourceOptions | None, cls_name
    args_type = hints["args"]
    assert args_type.__name__ == f"{cls_name}Args", f"{cls_name} takes {args_type.__name__}"
    assert dataclasses.is_dataclass(args_type), f"{args_type.__name__} is not a dataclass"
    assert args_type.__dataclass_params__.frozen, f"{args_type.__name__} is not frozen"  # type: ignore[attr-defined]


@pytest.mark.parametrize("cls_name", sorted(COMPONENTS))
def test_args_carry_no_whole_stack_config(cls_name: str) -> None:
    from edgefabric.config import StackConfig

    args_type = typing.get_type_hints(COMPONENTS[cls_name].__init__)["args"]
    for field_name, hint in typing.get_type_hints(args_type).items():
        assert StackConfig not in _types_in(hint), f"{args_type.__name__}.{field_name}: {hint}"


def _types_in(hint: object) -> set[object]:
    out = {hint}
    for arg in typing.get_args(hint):
        out |= _types_in(arg)
    return out


def _tier_files() -> list[Path]:
    skip = {TIERS_DIR / (name.rsplit(".", 1)[-1] + ".py") for name in NOT_A_TIER}
    return sorted(p for p in TIERS_DIR.rglob("*.py") if p not in skip)


@pytest.mark.parametrize("path", _tier_files(), ids=lambda p: str(p.relative_to(TIERS_DIR)))
def test_no_tier_module_imports_stack_config(path: Path) -> None:
    tree = ast.parse(path.read_text(), str(path))
    found = [node.lineno for node in ast.walk(tree)
             if (isinstance(node, ast.alias) and node.name.rsplit(".", 1)[-1] == "StackConfig")
             or (isinstance(node, ast.Attribute) and node.attr == "StackConfig")
             or (isinstance(node, ast.Name) and node.id == "StackConfig")]
    assert not found, f"{path.relative_to(TIERS_DIR.parents[1])}: StackConfig on line(s) {found}"
