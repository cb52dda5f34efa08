"""The `edgefabric` command: one entry point, one subcommand per tool.

    edgefabric simulate SCENARIO.yaml [...]
    python -m tooling.cli simulate SCENARIO.yaml [...]

A subcommand is a module with `add_arguments(parser)` and `run(args) -> int` (its exit
code); adding one is one line in `SUBCOMMANDS`.
"""

from __future__ import annotations

import argparse
import importlib

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "simulate": ("tooling.simulate", "replay a failover scenario through the hysteresis and planner"),
    "audit": ("tooling.audit", "print a stack's deployment ledger and check the deployed state against it"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edgefabric", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in SUBCOMMANDS.items():
        tool = importlib.import_module(module)
        child = sub.add_parser(name, help=help_text, description=(tool.__doc__ or help_text).split("\n\n")[0])
        tool.add_arguments(child)
        child.set_defaults(_run=tool.run)
    args = parser.parse_args(argv)
    code: int = args._run(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
