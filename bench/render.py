"""How fast the program renders under Pulumi mocks, against the SDK floor.

Topology: 3 clouds x 6 regions x N edge sites x 4 services, for N = 10, 100, 1000. The
floor is the same number of bare resources registered through the same harness
(`tooling.render.render_program`: the same mocks and recording) in the same process: what
the Pulumi SDK itself costs per resource. The ratio to the floor is
what edgefabric adds (config validation, input building, nesting).

    python bench/render.py            # table
    python bench/render.py --json     # {"runs": [{"n": ..., "resources": ..., ...}]}
    python bench/render.py --sizes 10,100 --repeat 3
"""

from __future__ import annotations

import argparse
import copy
import importlib
import json
import re
import resource
import statistics
import time
from pathlib import Path
from typing import Any

import pulumi

from edgefabric.config import raw_from_stack_file
from tooling.render import release_garbage, render, render_program

ROOT = Path(__file__).resolve().parent.parent

SDK_PACKAGES = {"aws": "pulumi_aws", "gcp": "pulumi_gcp", "azure-native": "pulumi_azure_native",
                "kubernetes": "pulumi_kubernetes", "docker": "pulumi_docker", "command": "pulumi_command"}

REGION_LOCATIONS = {"aws": ["us-east-1", "us-west-2"], "azure": ["westeurope", "swedencentral"],
                    "gcp": ["asia-southeast1", "asia-south1"]}


def topology(n_sites: int) -> dict[str, Any]:
    """The prod stack with 6 regions (2 per cloud) and `n_sites` kubernetes edge sites."""
    raw = copy.deepcopy(raw_from_stack_file(ROOT / "Pulumi.prod.yaml"))
    template_region = raw["regions"][0]
    raw["regions"] = [
        {**copy.deepcopy(template_region), "name": f"{cloud}-{i}", "cloud": cloud, "location": loc}
        for cloud, locs in REGION_LOCATIONS.items() for i, loc in enumerate(locs)
    ]
    site = next(s for s in raw["edge"]["sites"] if s["capabilities"]["runtime"] == "kubernetes")
    raw["edge"]["sites"] = [{**copy.deepcopy(site), "name": f"site-{i:04d}", "location": f"site {i}"}
                            for i in range(n_sites)]
    return raw


def _sdk_class(token: str) -> type[pulumi.CustomResource] | None:
    """The SDK class for a type token, e.g. kubernetes:apps/v1:Deployment -> k8s.apps.v1.Deployment."""
    package, module, name = token.split(":")
    if package not in SDK_PACKAGES:
        return None
    mod = importlib.import_module(SDK_PACKAGES[package])
    # Kubernetes modules are paths (apps/v1); the others are `module/resourceName`.
    parts = module.split("/") if package == "kubernetes" else module.split("/")[:1]
    for part in parts:
        if part != "index":
            mod = getattr(mod, part)
    return getattr(mod, name)


def _snake(key: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()


def _floor(replay: list[tuple[str, str, dict[str, Any]]], *, typed: bool) -> float:
    """Register the same resources bare through the same harness: mocks, recording and all."""
    classes = {t: _sdk_class(t) if typed else None for t in {t for t, _, _ in replay}}

    def program() -> None:
        for typ, name, inputs in replay:
            cls = classes[typ]
            if cls is None:  # components, dynamic resources, or the untyped floor
                pulumi.CustomResource(typ, name, dict(inputs))
            else:
                cls(name, **{_snake(k): v for k, v in inputs.items()})

    start = time.perf_counter()
    rendered = render_program(program, stack="bench")
    elapsed = time.perf_counter() - start
    assert len(rendered.resources) == len(replay) + 1  # + the stack
    return elapsed


def _program(raw: dict[str, Any]) -> tuple[float, list[tuple[str, str, dict[str, Any]]]]:
    start = time.perf_counter()
    rendered = render(raw, stack="bench")
    elapsed = time.perf_counter() - start
    # Components are logical only; the floor replays what a provider would receive.
    replay = [(r.type, r.name, r.inputs) for r in rendered.resources
              if r.type != "pulumi:pulumi:Stack"]
    return elapsed, replay


def run(sizes: list[int], repeat: int) -> list[dict[str, Any]]:
    runs = []
    for n in sizes:
        raw = topology(n)
        program_s, floor_s, bare_s = [], [], []
        _program(raw)  # warm-up: the first render imports the provider SDKs
        for _ in range(repeat):
            release_garbage()  # the previous run's objects: cleanup stays out of the timings
            seconds, replay = _program(raw)
            program_s.append(seconds)
            release_garbage()  # the previous run's objects: cleanup stays out of the timings
            floor_s.append(_floor(replay, typed=True))
            release_garbage()  # the previous run's objects: cleanup stays out of the timings
            bare_s.append(_floor(replay, typed=False))
        resources = len(replay)
        seconds = statistics.median(program_s)
        floor = statistics.median(floor_s)
        bare = statistics.median(bare_s)
        runs.append({
            "n": n,
            "resources": resources,
            "seconds": round(seconds, 3),
            "floor_seconds": round(floor, 3),
            "ms_per_resource": round(seconds * 1000 / resources, 3),
            "ratio_to_floor": round(seconds / floor, 3),
            "untyped_floor_seconds": round(bare, 3),
            "ratio_to_untyped_floor": round(seconds / bare, 3),
            # ru_maxrss is the process's peak so far: it grows with the largest N run.
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        })
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--sizes", default="10,100,1000", help="edge-site counts (default 10,100,1000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per size; medians are reported")
    args = parser.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    runs = run(sizes, args.repeat)
    first, last = runs[0], runs[-1]
    linearity = round(last["ms_per_resource"] / first["ms_per_resource"], 3)
    if args.json:
        print(json.dumps({"runs": runs, "linearity": linearity, "repeat": args.repeat}))
        return
    print(f"render under mocks: 3 clouds x 6 regions x N edge sites x 4 services (median of {args.repeat})")
    print(f"{'N':>6} {'resources':>10} {'seconds':>9} {'floor s':>9} {'ms/res':>8} {'ratio':>7} "
          f"{'untyped s':>10} {'ratio':>7} {'peak RSS MB':>12}")
    for r in runs:
        print(f"{r['n']:>6} {r['resources']:>10} {r['seconds']:>9.3f} {r['floor_seconds']:>9.3f} "
              f"{r['ms_per_resource']:>8.3f} {r['ratio_to_floor']:>7.3f} {r['untyped_floor_seconds']:>10.3f} "
              f"{r['ratio_to_untyped_floor']:>7.3f} {r['peak_rss_mb']:>12.1f}")
    print(f"ms/resource at N={last['n']} vs N={first['n']}: {linearity}x (target <= 1.2)")
    worst = max(r["ratio_to_floor"] for r in runs)
    print(f"worst ratio to the SDK floor: {worst} (target <= 1.3)")


if __name__ == "__main__":
    main()
