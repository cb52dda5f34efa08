"""A credential-free Markdown summary of a stack, rendered under Pulumi mocks.

    python -m tooling.report --stack prod                # or: make render STACK=prod
    python -m tooling.report --stack prod --base none    # no comparison with a base ref
    edgefabric-render --stack prod                       # the same, as the console script

The stack is rendered under Pulumi mocks (tooling.render: the same harness the unit
tests use) and summarised in `.render/<stack>.md`:
- resources by tier and type;
- the change against the base branch's render: the base ref's files are exported with
  `git archive` into a temporary directory and rendered there, in a fresh interpreter; the
  two are compared by URN (logical name, type, parent chain) and by flattened inputs;
- policy results: the pack's resource and stack policies over the rendered resources, at
  the enforcement levels of policies/config/<stack>.json;
- the failover weight plan per user region, healthy and with each cloud down.

Secret inputs are never written: they appear as `[secret]`. Progress goes to stderr (a
status line per step); stdout gets one summary line, or, with the internal `--emit-json`
used for the base render, nothing but the JSON.

Exit status: 0 when rendered (policy violations are reported, not fatal, unless
`--fail-on-mandatory`), 1 when the stack cannot be rendered.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

ROOT = Path(__file__).resolve().parent.parent
SECRET = "[secret]"
PROVIDER_CODE = "__provider"
COMPONENT_TIERS = {
    "edgefabric:core:CloudCore": "core",
    "edgefabric:edge:RegionalEdge": "regional-edge",
    "edgefabric:edge:EdgeSite": "edge",
    "edgefabric:registry:BlockchainRegistry": "registry",
    "edgefabric:traffic:GlobalTraffic": "traffic",
}


# ----------------------------------------------------------------- rendering


def render_resources(root: Path, stack: str) -> list[dict[str, Any]]:
    """Render `root`'s Pulumi.<stack>.yaml under mocks; resources as JSON-able dicts."""
    # `root` is this tree, or a base tree whose own report script runs with PYTHONPATH=root.
    from tooling.render import render_stack_file

    rendered = render_stack_file(root / f"Pulumi.{stack}.yaml")
    out = []
    for r in rendered.resources:
        secret_keys = set(getattr(r, "secret_inputs", set()))
        out.append({
            "urn": r.urn, "type": r.type, "name": r.name, "parent": r.parent or "",
            "inputs": {k: SECRET if k in secret_keys else v for k, v in r.inputs.items()},
            "secretInputs": sorted(secret_keys),
            "rawInputs": r.inputs,
            # A base tree's render may predate dependency tracking: then none.
            "dependencies": list(getattr(r, "dependencies", [])),
            "propertyDependencies": dict(getattr(r, "property_dependencies", {})),
            "provider": getattr(r, "provider", ""),
        })
    return out


def render_base(ref: str, stack: str) -> tuple[list[dict[str, Any]] | None, str]:
    """The base ref's render, or (None, why not)."""
    check = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
                           capture_output=True, text=True)
    if check.returncode != 0:
        return None, f"base ref `{ref}` does not exist here"
    commit = check.stdout.strip()
    with tempfile.TemporaryDirectory(prefix="edgefabric-base-") as tmp:
        # git archive, not a worktree: nothing is registered in the shared .git directory.
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", commit],
                                 capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
        if not (Path(tmp) / f"Pulumi.{stack}.yaml").exists():
            return [], f"`{ref}` ({commit[:10]}) has no Pulumi.{stack}.yaml: everything is new"
        # The base renders with its own harness and program, in a fresh interpreter whose
        # imports resolve in the base tree (PYTHONPATH and cwd): its layout may differ from ours.
        if (Path(tmp) / "tooling" / "report.py").exists():
            command = ["-m", "tooling.report"]
        elif (Path(tmp) / "scripts" / "render.py").exists():  # before the move to tooling/
            command = [str(Path(tmp) / "scripts" / "render.py")]
        else:
            return None, f"`{ref}` ({commit[:10]}) has no report script to render with"
        proc = subprocess.run(
            [sys.executable, *command, "--emit-json", "--root", tmp, "--stack", stack],
            capture_output=True, text=True, cwd=tmp,
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": tmp},
        )
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
            return None, f"`{ref}` ({commit[:10]}) does not render: {tail}"
        return json.loads(proc.stdout), f"`{ref}` ({commit[:10]})"


# --------------------------------------------------------------------- tiers


def tier_of(res: Mapping[str, Any], by_urn: Mapping[str, Mapping[str, Any]]) -> str:
    inputs = res["inputs"] if isinstance(res["inputs"], dict) else {}
    # `metadata` is a Kubernetes ObjectMeta on most resources, but a plain string on some
    # (a registry ServiceRegistration's on-chain metadata).
    meta = inputs.get("metadata")
    labels = meta.get("labels") if isinstance(meta, dict) else None
    for holder in labels, inputs.get("tags"), inputs.get("resourceLabels"):
        if isinstance(holder, dict):
            tier = holder.get("edgefabric.io/tier") or holder.get("tier")
            if isinstance(tier, str):
                return tier
    cur: Mapping[str, Any] | None = res
    while cur is not None:
        if cur["type"] in COMPONENT_TIERS:
            return COMPONENT_TIERS[cur["type"]]
        cur = by_urn.get(cur["parent"])
    return "stack"


# ---------------------------------------------------------------------- diff


def flatten(value: Any, path: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(flatten(v, f"{path}.{k}" if path else str(k)))
        return out
    if isinstance(value, list) and value:
        out = {}
        for i, v in enumerate(value):
            out.update(flatten(v, f"{path}[{i}]"))
        return out
    return {path: value}


def _short(value: Any) -> str:
    # Inputs reach the mocks through protobuf: every number is a float.
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = json.dumps(value) if not isinstance(value, str) else value
    text = text.replace("\n", "\\n").replace("|", "\\|")
    return text if len(text) <= 60 else text[:57] + "..."


def diff(base: list[dict[str, Any]], head: list[dict[str, Any]]) -> dict[str, Any]:
    """Added, removed and changed resources (by URN), with the changed input paths.

    A null input is no input (the engine drops nulls), so `None` and absent compare equal:
    harnesses that keep nulls and ones that drop them render the same change set."""
    b, h = {r["urn"]: r for r in base}, {r["urn"]: r for r in head}
    changed = []
    for urn in sorted(set(b) & set(h)):
        fb, fh = _present(flatten(b[urn]["inputs"])), _present(flatten(h[urn]["inputs"]))
        paths = []
        for path in sorted(set(fb) | set(fh)):
            if fb.get(path) == fh.get(path):
                continue
            if path == PROVIDER_CODE:
                paths.append((path, "(dynamic provider code)", "(changed)"))
            else:
                paths.append((path, fb.get(path, "(absent)"), fh.get(path, "(absent)")))
        if paths:
            changed.append((h[urn], paths))
    return {
        "added": [h[u] for u in sorted(set(h) - set(b))],
        "removed": [b[u] for u in sorted(set(b) - set(h))],
        "changed": changed,
    }


def _present(flat: dict[str, Any]) -> dict[str, Any]:
    return {path: value for path, value in flat.items() if value is not None}


# ------------------------------------------------------------------ policies


def policy_config(stack: str) -> tuple[dict[str, Any], str]:
    path = ROOT / "policies" / "config" / f"{stack}.json"
    if not path.exists():
        path = ROOT / "policies" / "config" / "dev.json"
    return json.loads(path.read_text()), str(path.relative_to(ROOT))


def run_policies(resources: list[dict[str, Any]], config: Mapping[str, Any]) -> Any:
    from policies.rules import ALL_POLICIES
    from policies.rules.runtime import Resource, evaluate, secret

    policy_resources = [
        Resource(r["type"], r["name"], r["urn"],
                 {k: secret(v) if k in r["secretInputs"] else v for k, v in r["rawInputs"].items()},
                 r["parent"] or None, tuple(r.get("dependencies", ())),
                 {k: tuple(v) for k, v in r.get("propertyDependencies", {}).items()}, r.get("provider", ""))
        for r in resources if r["type"] != "pulumi:pulumi:Stack"
    ]
    return ALL_POLICIES, evaluate(ALL_POLICIES, policy_resources, config)


# ------------------------------------------------------------- weight plan


def weight_plan(stack_file: Path) -> list[str]:
    from edgefabric.config import CLOUDS, USER_REGIONS, load_stack_file
    from edgefabric.traffic.planner import PlanInput, RegionRule, Strategy, plan

    cfg = load_stack_file(stack_file)
    if cfg.dns is None or cfg.dns.strategy not in cfg.strategies:
        return ["This stack publishes no global record (no `edgefabric:dns`)."]
    strat = cfg.strategies[cfg.dns.strategy]
    enabled = cfg.clouds.enabled
    # The same order the failover resource uses: ranked clouds, then other enabled ones.
    order = tuple(c for c in strat.order if c in enabled) + tuple(
        c for c in CLOUDS if c in enabled and c not in strat.order)
    rules = tuple(RegionRule(r.name, tuple(r.regions), r.cloud, r.weight) for r in cfg.routing.rules)
    strategy = Strategy(order=order, replication=strat.replication, failover=strat.failover)
    scenarios: list[tuple[str, dict[str, bool]]] = [("all healthy", {})]
    scenarios += [(f"{c} down", {c: False}) for c in order]
    plans = [(label, plan(PlanInput(strategy, rules, cfg.routing.default_weight, health))) for label, health in scenarios]
    region_answer = {region: next((r.name for r in rules if region in r.regions), "default")
                     for region in USER_REGIONS}
    lines = [
        f"Record `{cfg.dns.record_name}` (TTL {cfg.dns.ttl} s), strategy `{cfg.dns.strategy}`: "
        f"{' > '.join(order)}, {strat.replication}, {strat.failover} failover. Weights out of 100.",
        "",
        "| user region | answer | " + " | ".join(label for label, _ in plans) + " |",
        "|---|---|" + "---|" * len(plans),
    ]
    for region, answer in region_answer.items():
        cells = [" / ".join(f"{c} {p.answers[answer].weights[c]}" for c in order) for _, p in plans]
        lines.append(f"| {region} ({USER_REGIONS[region]}) | {answer} | " + " | ".join(cells) + " |")
    return lines


# -------------------------------------------------------------------- report


def markdown(stack: str, head: list[dict[str, Any]], base: list[dict[str, Any]] | None, base_note: str,
             policies: Iterable[Any], report: Any, config_path: str, plan_lines: list[str]) -> str:
    by_urn = {r["urn"]: r for r in head}
    real = [r for r in head if r["type"] != "pulumi:pulumi:Stack"]
    out = [f"# edgefabric render: `{stack}`", "",
           f"{len(real)} resources rendered under mocks (no cloud credentials used).", ""]

    out += ["## Resources by tier and type", "", "| tier | type | count |", "|---|---|---|"]
    counts = Counter((tier_of(r, by_urn), r["type"]) for r in real)
    for (tier, typ), n in sorted(counts.items()):
        out.append(f"| {tier} | `{typ}` | {n} |")

    out += ["", "## Changes against the base", ""]
    if base is None:
        out.append(f"Not compared: {base_note}.")
    else:
        d = diff([r for r in base if r["type"] != "pulumi:pulumi:Stack"], real)
        out.append(f"Base: {base_note}. {len(d['added'])} added, {len(d['removed'])} removed, "
                   f"{len(d['changed'])} changed.")
        for title, items in (("Added", d["added"]), ("Removed", d["removed"])):
            if items:
                out += ["", f"**{title}**", ""] + [f"- `{r['type']}` **{r['name']}**" for r in items]
        if d["changed"]:
            out += ["", "**Changed inputs**", "", "| resource | input | base | head |", "|---|---|---|---|"]
            for r, paths in d["changed"]:
                for path, old, new in paths:
                    out.append(f"| `{r['type']}` {r['name']} | `{path}` | {_short(old)} | {_short(new)} |")

    out += ["", "## Policy results", "", f"Levels from `{config_path}`."]
    by_policy: dict[str, list[Any]] = defaultdict(list)
    for v in report.violations:
        by_policy[v.policy].append(v)
    mandatory = len(report.mandatory())
    out += [f"{len(report.violations)} violation(s), {mandatory} mandatory.", "",
            "| policy | checked | result | level |", "|---|---|---|---|"]
    for pol in policies:
        found = by_policy.get(pol.name, [])
        checked = report.checked.get(pol.name)
        if checked is None:
            result, checked = "disabled", "-"
        elif not checked:
            result = "n/a"
        else:
            result = f"FAIL {len(found)}" if found else "pass"
        out.append(f"| `{pol.name}` | {checked} | {result} | {found[0].level if found else ''} |")
    if report.violations:
        out += ["", "**Violations**", ""]
        for v in report.violations:
            first = v.message.splitlines()[0]
            out.append(f"- [{v.level}] `{v.policy}`: {first}")
    for name, urn, why in report.errors:
        out.append(f"- [undecided] `{name}` on {urn}: {why}")

    out += ["", "## Failover weight plan per user region", "", *plan_lines]
    return "\n".join(out) + "\n"


def default_base() -> str:
    if os.environ.get("RENDER_BASE"):
        return os.environ["RENDER_BASE"]
    if os.environ.get("GITHUB_BASE_REF"):
        return f"origin/{os.environ['GITHUB_BASE_REF']}"
    return "main"


@contextmanager
def _step(console: Console, what: str) -> Iterator[Callable[[], str]]:
    """A status spinner while the block runs; yields a function giving the time it took."""
    start = time.perf_counter()
    end: list[float] = []
    with console.status(what + "…"):
        try:
            yield lambda: f"{(end[0] if end else time.perf_counter()) - start:.1f} s"
        finally:
            end.append(time.perf_counter())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stack", required=True)
    parser.add_argument("--base", default=None, help="git ref to compare with (default: $RENDER_BASE, "
                        "origin/$GITHUB_BASE_REF, else main); 'none' skips the comparison")
    parser.add_argument("--out", type=Path, default=None, help="default: .render/<stack>.md")
    parser.add_argument("--fail-on-mandatory", action="store_true")
    parser.add_argument("--emit-json", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, default=ROOT, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.emit_json:  # the base render, in its own interpreter and tree: stdout is the JSON only
        print(json.dumps(render_resources(args.root.resolve(), args.stack), default=str))
        return 0

    stack_file = ROOT / f"Pulumi.{args.stack}.yaml"
    if not stack_file.exists():
        print(f"render: no stack file {stack_file.name}", file=sys.stderr)
        return 1
    from edgefabric.config import ConfigError

    # Progress on stderr: a spinner while a step runs (on a terminal), then one line per step.
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    stack = escape(args.stack)
    try:
        with _step(console, f"rendering [bold]{stack}[/] under mocks") as took:
            head = render_resources(ROOT, args.stack)
    except ConfigError as exc:
        print(f"render: {exc}", file=sys.stderr)
        return 1
    resources = sum(1 for r in head if r["type"] != "pulumi:pulumi:Stack")
    console.print(f"[green]✓[/] rendered {stack}: {resources} resources ({took()})")

    base_ref = args.base or default_base()
    if base_ref == "none":
        base, note = None, "comparison skipped (--base none)"
        console.print("[dim]-[/] base: comparison skipped (--base none)")
    else:
        with _step(console, f"rendering the base [bold]{escape(base_ref)}[/] in a fresh interpreter") as took:
            base, note = render_base(base_ref, args.stack)
        if base is None:
            console.print(f"[yellow]![/] base not compared: {escape(note)}")
        else:
            console.print(f"[green]✓[/] rendered the base {escape(note)}: "
                          f"{sum(1 for r in base if r['type'] != 'pulumi:pulumi:Stack')} resources ({took()})")

    with _step(console, "evaluating the policy pack") as took:
        config, config_path = policy_config(args.stack)
        policies, report = run_policies(head, config)
    mandatory = len(report.mandatory())
    mark = "[red]x[/]" if mandatory else "[yellow]![/]" if report.violations else "[green]✓[/]"
    console.print(f"{mark} policies at {escape(config_path)} levels: {len(report.violations)} violation(s), "
                  f"{mandatory} mandatory ({took()})")

    text = markdown(args.stack, head, base, note, policies, report, config_path, weight_plan(stack_file))
    out = args.out or ROOT / ".render" / f"{args.stack}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"render: wrote {out} ({resources} resources, {len(report.violations)} policy violation(s), "
          f"{mandatory} mandatory)")
    if args.fail_on_mandatory and report.mandatory():
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
