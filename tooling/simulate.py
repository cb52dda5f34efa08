"""`edgefabric simulate`: replay a scenario through the controller's hysteresis and planner.

    edgefabric simulate SCENARIO.yaml [--stack Pulumi.local.yaml] [--change KEY=VALUE ...] [--png OUT.png]
    python -m tooling.simulate SCENARIO.yaml ...

Prints the weight table over time and writes a PNG of health and weights per name
(default: `<scenario>.png` in the working directory). The settings are the scenario's own
`settings`, or with `--stack` the stack file's (checked as `pulumi up` checks it). Each
`--change` (repeatable: `healthCheck.recoveryHoldDownS=60`, `failover.action=route-to-healthy`,
`strategies.user-service.loadBalancing=weighted`) is a proposed change: the table and the
picture then show the timeline now and the proposed one side by side.

Exit 0; 2 when the scenario, the stack or a change is wrong (every problem named by key path).
No probes, no DNS, no engine: see `edgefabric.simulate`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edgefabric.config.loading import load_stack_file, raw_from_stack_file
from edgefabric.errors import ConfigError
from edgefabric.simulate.engine import Timeline, simulate
from edgefabric.simulate.report import picture, table
from edgefabric.simulate.scenario import apply_change, load_scenario, settings_from_stack


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scenario", type=Path, help="the scenario file (YAML)")
    parser.add_argument("--stack", type=Path, default=None,
                        help="plan with this stack file's settings instead of the scenario's")
    parser.add_argument("--change", action="append", default=[], metavar="KEY=VALUE",
                        help="a proposed change to the settings, repeatable; shows both timelines")
    parser.add_argument("--png", type=Path, default=None, help="where to write the picture "
                                                               "(default: <scenario>.png here)")


def run(args: argparse.Namespace) -> int:
    try:
        scenario = load_scenario(args.scenario)
        raw = scenario.settings
        label = "scenario"
        if args.stack is not None:
            if not args.stack.exists():
                raise ConfigError.one("--stack", str(args.stack), "an existing stack file", "")
            raw = settings_from_stack(load_stack_file(args.stack), raw_from_stack_file(args.stack))
            label = args.stack.name
        timelines: list[Timeline] = [simulate(scenario, raw, label if args.change else "")]
        if args.change:
            proposed = raw
            for change in args.change:
                proposed = apply_change(proposed, change)
            timelines.append(simulate(scenario, proposed, "proposed: " + ", ".join(args.change)))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    title = f"{args.scenario.stem}: {scenario.description}".rstrip(": ")
    print(title)
    print(table(timelines))
    out = picture(timelines, args.png or Path(f"{args.scenario.stem}.png"), title)
    print(f"picture: {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tooling.simulate", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
