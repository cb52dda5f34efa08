"""Local stack benchmark: every tier deployed by the real CLI onto the local control planes.

    venv/bin/python bench/local_stack.py [--json] [--runs 1] [--cold]

Figures (issue 10; medians of --runs, each run on a fresh set of clusters and a fresh stack)
- k8s_build_s: building the Kubernetes binaries (tools/kubernetes/build.sh) and the provider
  plugin (tools/pulumi-kubernetes/build.sh). A cold build takes ~25 min on 2 cores and cannot be
  rerun each time, so by default this is what the scripts recorded of their last build
  (<cache>/build.json), with `k8s_build_warm` true when that build found the Go build cache warm
  (it added < 500 MB to it). `--cold` rebuilds both with an empty Go build cache and times them.
- up_s: a first `pulumi up --skip-preview` (as `make demo` runs it) of a copy of the shipped
  `local` stack (4 clusters, chain, DNS). Target <= 120 s. up_timeline: from its event log, when
  the first resource step began (program start-up), when the last ended, the longest step of
  each resource type.
- preview_nochange_s: `pulumi preview --expect-no-changes` right after. Target <= 15 s.
- k8s_objects: Kubernetes objects the stack deployed (checked against the clusters).
- control_planes_rss_mb: resident memory of etcd and every cluster's components, deployed,
  summed (`scripts/local-env status`), in MB (10^6 bytes, the unit of the target: 2,000 MB
  is 1,907 MiB). Target <= 2,000 MB. control_planes_memory_mb: what
  they take together: anonymous memory plus each binary's file-backed pages once (summed RSS
  counts the code of the four apiservers four times; the page cache holds it once).
- baseline_api_s, up_vs_api: the same objects created straight through the API servers (one
  client, namespaces first, then every object, then waiting until every Deployment is
  Available, as the provider's await does), in the same process on the same clusters; the
  ratio is what the engine, the providers and the program cost on top of the API servers.
  (`up` also deploys the registry contract, registrations and the DNS record.)
- destroy_s: `pulumi destroy` of the stack.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from devenv.kubernetes import KubeApi, cache_dir, process_rss  # noqa: E402
from edgefabric.config import CLOUDS  # noqa: E402
from tests.kits.engine import (  # noqa: E402
    Engine,
    ensure_engine,
    install_k8s_provider,
    local_env,
    local_program_env,
    pick_local_ports,
)
from tests.kits.engine import copy_project as copy_local_project  # noqa: E402
from tooling.render import provider_name, render_stack_file  # noqa: E402

STACK = "local"
TARGETS = {"up_s": 120.0, "preview_nochange_s": 15.0, "control_planes_rss_mb": 2000.0}
MANAGED = "app.kubernetes.io/managed-by=edgefabric"
WARM_CACHE_MB = 500  # a build that added less than this to the Go build cache found it warm
BUILDS = {"kubernetes": REPO / "tools" / "kubernetes" / "build.sh",
          "pulumi-kubernetes": REPO / "tools" / "pulumi-kubernetes" / "build.sh"}  # fmt: skip

# (cluster, API path of the collection, body)
Obj = tuple[str, str, dict[str, Any]]


def collection_path(token: str, namespace: str) -> str:
    """`kubernetes:apps/v1:Deployment`, `ns` -> `/apis/apps/v1/namespaces/ns/deployments`."""
    _, group_version, kind = token.split(":")
    group, version = group_version.split("/")
    plural = kind.lower()[:-1] + "ies" if kind.endswith("y") else kind.lower() + "s"
    base = f"/api/{version}" if group == "core" else f"/apis/{group}/{version}"
    return f"{base}/namespaces/{namespace}/{plural}" if namespace else f"{base}/{plural}"


def integral(value: Any) -> Any:
    """Rendered inputs went through protobuf Structs, where every number is a double (8080.0);
    the API server takes an integer field only as an integer."""
    if isinstance(value, dict):
        return {k: integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [integral(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# ------------------------------------------------------------------------------------ builds


def recorded_builds() -> dict[str, Any]:
    """What the build scripts recorded of their last build (<cache>/build.json)."""
    root = cache_dir().parent.parent  # ${EDGEFABRIC_CACHE:-~/.cache/edgefabric}
    out: dict[str, Any] = {}
    for name, path in (("kubernetes", cache_dir() / "build.json"),
                       ("pulumi-kubernetes", next((root / "pulumi-kubernetes").glob("*/build.json"), None))):  # fmt: skip
        if path is None or not path.is_file():
            raise SystemExit(f"{name}: no build.json in its cache: run {BUILDS[name].relative_to(REPO)} --force "
                             "once (or pass --cold)")
        out[name] = json.loads(path.read_text())
    return out


def cold_builds() -> dict[str, Any]:
    """Both builds with an empty Go build cache (the module cache stays: downloads are not
    compilation), timed here."""
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-gocache-") as gocache, \
         tempfile.TemporaryDirectory(prefix="bench-pulumi-home-") as home:  # fmt: skip
        for name, script in BUILDS.items():
            started = time.monotonic()
            subprocess.run(["bash", str(script), "--force"], check=True, stdout=sys.stderr, stderr=subprocess.STDOUT,
                           env={**os.environ, "GOCACHE": gocache, "PULUMI_HOME": home})  # fmt: skip
            out[name] = {"seconds": round(time.monotonic() - started), "go_build_cache_added_mb": None, "cold": True}
    return out


# ------------------------------------------------------------------------------------ stack


class LocalStack:
    """A copy of the shipped local stack on free ports, its clusters and stand-ins, an engine."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ports = pick_local_ports()
        self.project = copy_local_project(root / "project", self.ports)
        self.env_dir = root / "local-env"
        self.engine = Engine(project=self.project, root=root / "engine", bin_dir=ensure_engine())

    def local_env(self, *args: str) -> str:
        return local_env(self.project, self.env_dir, self.ports, *args).stdout

    def start(self) -> None:
        self.local_env("up")
        install_k8s_provider(self.engine.home)
        # PULUMI_DEBUG_COMMANDS: this CLI offers `--event-log` only with it.
        self.engine.extra_env = {**local_program_env(self.project, self.env_dir, self.ports),
                                 "PYTHONPATH": str(REPO), "PULUMI_DEBUG_COMMANDS": "true"}  # fmt: skip
        self.engine.run("stack", "init", STACK)
        from devenv.cli import LocalEnv

        handle = LocalEnv.load(self.env_dir, self.project / "Pulumi.local.yaml", pdns_dns_port=self.ports.pdns_dns,
                               etcd_port=self.ports.etcd or None, k8s_port_base=self.ports.k8s_base or None)
        self.plans = {plan.name: plan for plan in handle.layout.cluster_plans}
        self.apis: dict[str, KubeApi] = {name: handle.cluster(plan).api for name, plan in self.plans.items()}

    def stop(self) -> None:
        self.engine.run("cancel", "--yes", "--stack", STACK, check=False)
        self.engine.run("destroy", "--yes", "--stack", STACK, check=False, timeout=1800)
        self.local_env("down", "--purge")

    def rss_mb(self) -> float:
        """What `scripts/local-env status` reports: every process's resident memory, summed."""
        return float(json.loads(self.local_env("status", "--json"))["k8s_rss_bytes"]) / 1e6

    def _component_pids(self) -> dict[int, str]:
        """pid -> component of etcd and every cluster's processes, each once (one LoadBalancer
        process serves every cluster)."""
        by_pid: dict[int, str] = {}
        for record in self.env_dir.glob("*/cluster.json"):
            by_pid.update({int(pid): c for c, pid in json.loads(record.read_text()).get("pids", {}).items()})
        for record in self.env_dir.glob("etcd/etcd.pid.json"):
            by_pid[int(json.loads(record.read_text())["pid"])] = "etcd"
        return by_pid

    def rss_by_component_mb(self) -> dict[str, float]:
        """Summed RSS per kind of process (all clusters' apiservers together, ...), each process once."""
        out: dict[str, float] = {}
        for pid, component in self._component_pids().items():
            out[component] = out.get(component, 0.0) + process_rss(pid) / 1e6
        return {c: round(v) for c, v in sorted(out.items())}

    def memory_mb(self) -> float:
        """The memory the control planes take together: their anonymous memory (heaps, stacks),
        plus each binary's file-backed pages once. Summed RSS counts a binary's code once per
        process, although the four apiservers (and so on) share one copy of it in the page cache."""
        anon_kb, file_kb = 0, dict[str, int]()
        for pid, component in self._component_pids().items():
            try:
                rollup = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]
            except OSError:
                continue
            fields = {line.split(":")[0]: int(line.split()[1]) for line in rollup}
            anon_kb += fields["Anonymous"]
            file_kb[component] = max(file_kb.get(component, 0), fields["Rss"] - fields["Anonymous"])
        return (anon_kb + sum(file_kb.values())) * 1024 / 1e6

    def rendered(self) -> list[Obj]:
        """Every Kubernetes object the program renders (under mocks) for this stack, by cluster:
        what `up` creates; namespaces first (what the objects in them need)."""
        # A site's or a far region's provider (`<name>-k8s`) points at the cluster its plan names.
        site_cluster = {x: plan.name for plan in self.plans.values() for x in (*plan.sites, *plan.regions)}
        out: list[Obj] = []
        for res in render_stack_file(self.project / "Pulumi.local.yaml").resources:
            if not res.type.startswith("kubernetes:"):
                continue
            owner = provider_name(res.provider).removesuffix("-k8s")
            cluster = owner if owner in CLOUDS else site_cluster[owner]
            _, group_version, kind = res.type.split(":")
            api_version = group_version.removeprefix("core/")
            body = {"apiVersion": api_version, "kind": kind, **integral(res.inputs)}
            namespace = (res.inputs.get("metadata") or {}).get("namespace", "")
            out.append((cluster, collection_path(res.type, namespace), body))
        return sorted(out, key=lambda o: o[2]["kind"] != "Namespace")

    def missing(self, objects: list[Obj]) -> list[str]:
        """The rendered objects that are not in their cluster (each looked up by name)."""
        out = []
        for cluster, path, body in objects:
            status, _ = self.apis[cluster].request("GET", f"{path}/{body['metadata']['name']}", ok=(404,))
            if status == 404:
                out.append(f"{cluster}: {path}/{body['metadata']['name']}")
        return out

    def ours_gone(self) -> bool:
        return all(not api.get("/api/v1/namespaces", labelSelector=MANAGED).get("items") for api in self.apis.values())


def wait(what: str, check: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


def deployments_available(apis: Mapping[str, KubeApi]) -> bool:
    for api in apis.values():
        for dep in api.get("/apis/apps/v1/deployments", labelSelector=MANAGED).get("items", []):
            status = dep.get("status") or {}
            if not any(c["type"] == "Available" and c["status"] == "True" for c in status.get("conditions", [])):
                return False
            if status.get("updatedReplicas") != dep["spec"]["replicas"]:
                return False
    return True


def through_the_api(stack: LocalStack, objects: list[Obj]) -> float:
    """Baseline: create `objects` with one client, wait until every Deployment is Available."""
    started = time.perf_counter()
    for cluster, path, body in objects:
        stack.apis[cluster].create(path, body)
    wait("every Deployment Available (baseline)", lambda: deployments_available(stack.apis), 600)
    elapsed = time.perf_counter() - started
    for cluster, path, body in objects:
        if body["kind"] == "Namespace":
            stack.apis[cluster].delete(f"{path}/{body['metadata']['name']}")
    wait("the baseline's namespaces gone", stack.ours_gone, 600)
    return elapsed


@contextmanager
def local_stack() -> Iterator[LocalStack]:
    with tempfile.TemporaryDirectory(prefix="bench-local-stack-") as tmp:
        stack = LocalStack(Path(tmp))
        try:
            stack.start()
            yield stack
        finally:
            stack.stop()


def where_the_time_goes(event_log: Path) -> dict[str, float]:
    """From `--event-log` (one-second timestamps), seconds after the first event: when the first
    resource step began (the program's start-up before it), when the last one finished, and
    the longest step of each resource type."""
    began: dict[str, tuple[int, str]] = {}
    origin: int | None = None
    first_step: int | None = None
    last = 0
    longest: dict[str, float] = {}
    for line in event_log.read_text().splitlines():
        event = json.loads(line)
        ts = int(event.get("timestamp", 0))
        origin = ts if origin is None else origin
        for key in ("resourcePreEvent", "resOutputsEvent"):
            meta = (event.get(key) or {}).get("metadata")
            if not meta or meta["type"].startswith(("pulumi:pulumi:", "edgefabric:")):
                continue  # the stack and our components only wait on their children
            if key == "resourcePreEvent":
                began[meta["urn"]] = (ts, meta["type"])
                first_step = ts if first_step is None else first_step
            elif meta["urn"] in began:
                start, token = began.pop(meta["urn"])
                longest[token] = max(longest.get(token, 0.0), float(ts - start))
                last = max(last, ts)
    zero = origin or 0
    return {"first_step_s": float((first_step or zero) - zero), "last_step_done_s": float(last - zero),
            **{f"longest {token}": s for token, s in sorted(longest.items())}}


def one_run(stack: LocalStack) -> dict[str, Any]:
    objects = stack.rendered()
    event_log = stack.root / f"up-events-{time.monotonic_ns()}.jsonl"
    t0 = time.perf_counter()
    # --skip-preview: as `make demo` runs it (scripts/demo.py); a preview first would run the
    # program and diff every resource once more before the update.
    stack.engine.run("up", "--yes", "--skip-preview", "--stack", STACK, "--event-log", str(event_log), timeout=1800)
    up_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    stack.engine.run("preview", "--expect-no-changes", "--stack", STACK, timeout=900)
    preview_s = time.perf_counter() - t0
    rss, memory, by_component = stack.rss_mb(), stack.memory_mb(), stack.rss_by_component_mb()
    print(f"up {up_s:.1f} s, no-change preview {preview_s:.1f} s, {len(objects)} objects, control planes "
          f"{rss:.0f} MB summed RSS ({by_component}), {memory:.0f} MB counted once", file=sys.stderr)
    missing = stack.missing(objects)
    if missing:
        raise SystemExit(f"rendered but not in the clusters after up: {missing}")
    t0 = time.perf_counter()
    stack.engine.run("destroy", "--yes", "--stack", STACK, timeout=1800)
    destroy_s = time.perf_counter() - t0
    wait("destroy's namespaces gone", stack.ours_gone, 600)
    print(f"destroy {destroy_s:.1f} s", file=sys.stderr)
    baseline = through_the_api(stack, objects)
    print(f"the same objects through the API servers: {baseline:.1f} s", file=sys.stderr)
    return {"up_s": up_s, "preview_nochange_s": preview_s, "k8s_objects": float(len(objects)),
            "control_planes_rss_mb": rss, "control_planes_memory_mb": memory, "destroy_s": destroy_s,
            "baseline_api_s": baseline, "rss_by_component_mb": by_component,
            "up_timeline": where_the_time_goes(event_log)}  # fmt: skip


def run(runs: int, cold: bool) -> dict[str, Any]:
    builds = cold_builds() if cold else recorded_builds()
    results, idle = [], []
    for _ in range(runs):
        # Each run on clusters of its own, as `make demo` meets them on a fresh clone (clusters
        # reused after a destroy carry its history: etcd and the apiservers grow by ~70 MB a round).
        with local_stack() as stack:
            idle.append(stack.rss_mb())
            results.append(one_run(stack))
    idle_rss = statistics.median(idle)
    med = {key: statistics.median(r[key] for r in results) for key in results[0]
           if key not in ("up_timeline", "rss_by_component_mb")}  # fmt: skip
    build_s = sum(float(b["seconds"]) for b in builds.values())
    warm = not cold and all((b.get("go_build_cache_added_mb") or 0) < WARM_CACHE_MB for b in builds.values())
    out: dict[str, Any] = {
        "k8s_build_s": round(build_s),
        "up_s": round(med["up_s"], 1),
        "preview_nochange_s": round(med["preview_nochange_s"], 1),
        "k8s_objects": int(med["k8s_objects"]),
        "control_planes_rss_mb": round(med["control_planes_rss_mb"]),
        "control_planes_memory_mb": round(med["control_planes_memory_mb"]),
        "baseline_api_s": round(med["baseline_api_s"], 1),
        "up_vs_api": round(med["up_s"] / med["baseline_api_s"], 2),
        "destroy_s": round(med["destroy_s"], 1),
        # Where the first up's time went (the first run): from its event log.
        "up_timeline": results[0]["up_timeline"],
        "control_planes_rss_mb_idle": round(idle_rss),
        "control_planes_rss_mb_by_component": results[0]["rss_by_component_mb"],
        "k8s_build_warm": warm,
        "builds": builds,
        "runs": runs,
        "cores": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "targets": TARGETS,
    }
    out["meets_targets"] = all(out[k] <= v for k, v in TARGETS.items())
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--runs", type=int, default=1, help="up/preview/destroy/baseline rounds; medians reported")
    parser.add_argument("--cold", action="store_true", help="rebuild the binaries and the provider with an empty "
                        "Go build cache (~25 min on 2 cores) instead of reading the recorded build times")  # fmt: skip
    args = parser.parse_args()
    res = run(args.runs, args.cold)
    if args.json:
        print(json.dumps(res))
        return 0
    kind = "recorded, warm Go cache" if res["k8s_build_warm"] else ("cold, measured" if args.cold else "recorded")
    print(f"local stack: {res['k8s_objects']} Kubernetes objects on {len(CLOUDS) + 1} clusters, "
          f"median of {res['runs']} run(s), load {res['load_avg_1m']} on {res['cores']} cores")
    print(f"  k8s_build_s            {res['k8s_build_s']:8d}   ({kind})")
    print(f"  up_s                   {res['up_s']:8.1f}   target <= {TARGETS['up_s']:.0f}")
    print(f"  preview_nochange_s     {res['preview_nochange_s']:8.1f}   target <= {TARGETS['preview_nochange_s']:.0f}")
    print(f"  control_planes_rss_mb  {res['control_planes_rss_mb']:8d}   target <= {TARGETS['control_planes_rss_mb']:.0f}"
          f"   (idle {res['control_planes_rss_mb_idle']}; summed RSS)")
    print(f"  control_planes_memory_mb {res['control_planes_memory_mb']:6d}   anonymous memory + each binary's code once")
    print(f"  baseline_api_s         {res['baseline_api_s']:8.1f}   the same objects straight through the API servers")
    print(f"  up_vs_api              {res['up_vs_api']:8.2f} x")
    print(f"  destroy_s              {res['destroy_s']:8.1f}")
    print("meets targets:", res["meets_targets"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
