"""`scripts/local-env`: start, stop and fail the local stand-ins of the `local` stack.

    python -m devenv.cli up              clusters + anvil + PowerDNS + cloud endpoints (idempotent)
    python -m devenv.cli status [--json] what runs where (clusters, nodes, kubeconfigs)
    python -m devenv.cli env             the environment the program needs, as shell exports:
                                         eval "$(scripts/local-env env)"
    python -m devenv.cli fail aws        aws's /health answers 503 from now on
    python -m devenv.cli heal aws        ... and 200 again
    python -m devenv.cli down [--purge]  stop everything (--purge also deletes cluster, chain and DNS data)

Where things run comes from the stack file (Pulumi.local.yaml by default), so the stand-ins and
the stack cannot drift apart: the anvil port from `edgefabric:registry.rpcUrl`, the PowerDNS API
port and zone from `edgefabric:dns.backends.powerdns`, the endpoint port from
`edgefabric:healthCheck.check.port`. The DNS (UDP/TCP) port of PowerDNS is not part of the stack;
it defaults to 18053.

Local Kubernetes (devenv/kubernetes.py), one etcd for all clusters:
- one cluster per enabled cloud with `clouds.<cloud>.cluster` (named like the cloud, of its
  flavour: aws load balancers answer with a hostname, azure and gcp with an IP from
  127.0.2.0/24 and 127.0.3.0/24), two kwok nodes each;
- one cluster per kubeconfig the `kubernetes` edge sites name (`edge` for
  `env:EDGEFABRIC_KUBECONFIG_EDGE`), with one kwok node per site: the site's declared
  cpu/memory/storage, the `edge.nodeSelector` labels, the `edge.tolerationKey` taint and the
  label `edgefabric.io/site=<site>`. An admission policy there adds that label to the node
  selector of the site's pods, so each site runs on its own nodes as it would on its own cluster.
The kubeconfigs are written to <dir>/<cluster>/kubeconfig (0600); `env` prints, for each
`env:NAME` reference, `export NAME="$(cat <that file>)"`: the contents never appear on a
command line or in the stack file. Ports: etcd 12379/12380, cluster i 16400+10i.. (--k8s-port-base).

Where each cloud's /health endpoint listens: at `edgefabric:clouds.<cloud>.ingress.address`, or,
for a cloud on a local cluster, where its api-gateway's load balancer answers: the first
address of the cloud's pool (azure 127.0.2.1, gcp 127.0.3.1; the api-gateway is the first
LoadBalancer Service there) and, for aws, the address its load balancers' hostnames resolve to
(127.0.1.1: the aws cluster's LoadBalancer controller writes an A record per hostname into the
local PowerDNS, zone `elb.<region>.amazonaws.com.`; the program resolves with it through
EDGEFABRIC_RESOLVER).

Pids, logs and data live in <repo>/.local-env/ (or --dir). The layout used by `up` is recorded
there (env.json), so `status`, `fail`, `heal` and `down` act on what actually runs.
Engine-free: never import pulumi here.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import shlex
import shutil
import socket
import sys
import urllib.error
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pydantic
import yaml
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from devenv import anvil, endpoints, powerdns
from devenv import kubernetes as k8s
from devenv.loadbalancer import DEFAULT_POOLS, DNS_API_KEY_ENV, hostname_zone
from devenv.processes import alive, terminate
from edgefabric.config.models import Clouds, EdgeConfig, Region
from edgefabric.config.vocab import CLOUDS

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DIR = REPO_ROOT / ".local-env"
DEFAULT_STACK_FILE = REPO_ROOT / "Pulumi.local.yaml"

# The local PowerDNS API key. It guards a server bound to 127.0.0.1 only and is published on
# purpose, like the anvil dev key: Pulumi.local.yaml holds it as the secret `powerdnsApiKey`.
LOCAL_PDNS_API_KEY = "edgefabric-local-pdns-key"
DEFAULT_PDNS_DNS_PORT = 18053
DEFAULT_ETCD_PORT = 12379  # and the peer port above it
DEFAULT_K8S_PORT_BASE = 16400  # cluster i: apiserver base+10i, controller-manager +1, scheduler +2, kwok +3
PORTS_PER_CLUSTER = 10
SITE_LABEL = "edgefabric.io/site"
# Directories of <dir> that are not clusters.
RESERVED_NAMES = frozenset({"anvil", "powerdns", "endpoints", "etcd"})
# Each cloud cluster's kwok nodes: two of the cloud's 4 cpu / 16 GiB machine type.
CLOUD_MACHINES = {"aws": "m5.xlarge", "azure": "Standard_D4s_v5", "gcp": "e2-standard-4"}


# Where the program resolves DNS names (edgefabric.traffic.dns.resolver reads it): here the local
# PowerDNS, which serves the aws load balancers' hostnames.
RESOLVER_ENV = "EDGEFABRIC_RESOLVER"
# The Kubernetes provider applies server-side without force, so a field another writer took
# over (`kubectl scale`, `kubectl label`) conflicts instead of being repaired by `pulumi up`.
# On the local clusters the stack is the only writer: it takes such fields back. (A cloud
# stack can opt in per object with the `pulumi.com/patchForce` annotation.)
PATCH_FORCE = {"PULUMI_K8S_ENABLE_PATCH_FORCE": "true"}


class LocalEnvError(RuntimeError):
    """A user-facing problem: says what is wrong and what to do."""


@dataclass
class ClusterPlan:
    """One local cluster as the stack file asks for it (recorded in env.json by `up`)."""

    name: str
    flavor: str  # aws | azure | gcp | generic (devenv.loadbalancer)
    region: str
    kubeconfig_ref: str  # the reference the stack file names: env:NAME or config:KEY
    nodes: list[dict[str, Any]]  # NodeSpec fields; taints as [key, value, effect]
    sites: list[str] = field(default_factory=list)  # edge sites whose pods are pinned to their node
    regions: list[str] = field(default_factory=list)  # far regions that bring this cluster as theirs
    ports: dict[str, int] = field(default_factory=dict)  # ClusterPorts fields

    def spec(self, layout: Layout) -> k8s.ClusterSpec:
        nodes = tuple(
            k8s.NodeSpec(name=n["name"], cpu=n["cpu"], memory=n["memory"], ephemeral_storage=n["ephemeral_storage"],
                         pods=int(n.get("pods", 110)), labels=dict(n.get("labels") or {}),
                         taints=tuple(k8s.Taint(*t) for t in n.get("taints") or ()))
            for n in self.nodes
        )  # fmt: skip
        lb_args: tuple[str, ...] = ()
        lb_env: dict[str, str] = {}
        if self.flavor == "aws":
            # Hostnames resolve through the local PowerDNS, to the aws endpoint's address.
            address = layout.endpoint_ips.get(self.name, endpoints.DEFAULT_IPS["aws"])
            lb_args = ("--dns-api", layout.pdns_api_url, "--dns-address", address)
            lb_env = {DNS_API_KEY_ENV: layout.pdns_api_key}
        return k8s.ClusterSpec(self.name, nodes=nodes, flavor=self.flavor, region=self.region,
                               lb_args=lb_args, lb_env=lb_env)

    @property
    def server(self) -> str:
        return f"https://{k8s.LOOPBACK}:{self.ports['apiserver']}"

    @property
    def env_name(self) -> str | None:
        """The variable the program reads the kubeconfig from (an `env:` reference), else None."""
        kind, _, name = self.kubeconfig_ref.partition(":")
        return name if kind == "env" else None


@dataclass
class Layout:
    """Where each stand-in listens. Recorded in <dir>/env.json by `up`."""

    anvil_port: int = 18545
    chain_id: int = anvil.DEFAULT_CHAIN_ID
    pdns_api_port: int = 18081
    pdns_dns_port: int = DEFAULT_PDNS_DNS_PORT
    pdns_api_key: str = LOCAL_PDNS_API_KEY
    zone: str = "edgefabric.local."
    record_name: str = "api.edgefabric.local."
    endpoint_port: int = 18080
    endpoint_ips: dict[str, str] = field(default_factory=lambda: dict(endpoints.DEFAULT_IPS))
    etcd_port: int = DEFAULT_ETCD_PORT
    k8s_port_base: int = DEFAULT_K8S_PORT_BASE
    clusters: list[dict[str, Any]] = field(default_factory=list)  # ClusterPlan fields

    @property
    def cluster_plans(self) -> list[ClusterPlan]:
        return [ClusterPlan(**c) for c in self.clusters]

    @property
    def rpc_url(self) -> str:
        return f"http://{anvil.LOOPBACK}:{self.anvil_port}"

    @property
    def pdns_api_url(self) -> str:
        return f"http://127.0.0.1:{self.pdns_api_port}"


def _port_of(url: str, key: str) -> int:
    parsed = urlparse(url)
    if parsed.hostname not in ("127.0.0.1", "localhost") or parsed.port is None:
        raise LocalEnvError(
            f"{key}={url!r}: the local stand-ins listen on 127.0.0.1 with an explicit port, "
            "e.g. http://127.0.0.1:18545"
        )
    return parsed.port


def layout_from_stack_file(path: Path, **overrides: Any) -> Layout:
    """Read the stand-ins' addresses from a stack file; keyword overrides win (tests use free ports)."""
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError as exc:
        raise LocalEnvError(f"stack file {path} not found (pass --stack-file)") from exc
    cfg = doc.get("config") or {}
    layout = Layout()
    registry = cfg.get("edgefabric:registry") or {}
    if registry.get("rpcUrl"):
        layout.anvil_port = _port_of(registry["rpcUrl"], "edgefabric:registry.rpcUrl")
    if registry.get("chainId"):
        layout.chain_id = int(registry["chainId"])
    dns = cfg.get("edgefabric:dns") or {}
    pdns = (dns.get("backends") or {}).get("powerdns") or {}
    if pdns.get("apiUrl"):
        layout.pdns_api_port = _port_of(pdns["apiUrl"], "edgefabric:dns.backends.powerdns.apiUrl")
    if pdns.get("zone"):
        layout.zone = pdns["zone"]
    if dns.get("recordName"):
        layout.record_name = dns["recordName"]
    check = (cfg.get("edgefabric:healthCheck") or {}).get("check") or {}
    if check.get("port"):
        layout.endpoint_port = int(check["port"])
    clouds = cfg.get("edgefabric:clouds") or {}
    for cloud in CLOUDS:
        address = ((clouds.get(cloud) or {}).get("ingress") or {}).get("address")
        if address:
            layout.endpoint_ips[cloud] = address
    for key, value in overrides.items():
        if value is not None:
            setattr(layout, key, value)
    plans = cluster_plans(cfg)
    for i, plan in enumerate(plans):
        base = layout.k8s_port_base + PORTS_PER_CLUSTER * i
        plan.ports = {"apiserver": base, "controller_manager": base + 1, "scheduler": base + 2, "kwok": base + 3}
        if plan.flavor in ("azure", "gcp") and plan.name == plan.flavor:
            # The cloud's api-gateway is the first LoadBalancer Service of its cluster.
            layout.endpoint_ips[plan.name] = str(next(ipaddress.ip_network(DEFAULT_POOLS[plan.flavor]).hosts()))
    layout.clusters = [asdict(p) for p in plans]
    return layout


def _typed(model: type[pydantic.BaseModel], raw: Any, key: str) -> Any:
    try:
        return model.model_validate(raw or {})
    except pydantic.ValidationError as exc:
        raise LocalEnvError(f"{key} in the stack file: {exc}") from None


def _cluster_name(ref: str, where: str) -> str:
    """A cluster's name from the kubeconfig reference naming it (the models checked its form):
    env:EDGEFABRIC_KUBECONFIG_EDGE -> edge."""
    name = ref.partition(":")[2]
    name = re.sub(r"[^a-z0-9-]", "-", name.removeprefix("EDGEFABRIC_KUBECONFIG_").lower()).strip("-")
    if not name or name in RESERVED_NAMES:
        raise LocalEnvError(f"{where}={ref!r}: no cluster name can be made of it; use e.g. env:EDGEFABRIC_KUBECONFIG_EDGE")
    return name[:40]


def _cloud_nodes(prefix: str, cloud: str, region: str) -> list[dict[str, Any]]:
    """Two untainted nodes of `cloud`'s machine in `region`, one per zone (a, b), named
    `<prefix>-node-<zone>`: a cloud's core cluster, or a far region's own."""
    zones = [f"{region}{z}" if cloud == "aws" else f"{region}-{z}" for z in ("a", "b")]
    return [{"name": f"{prefix}-node-{z[-1]}", "cpu": "4", "memory": "16Gi", "ephemeral_storage": "100Gi",
             "pods": 110, "taints": [],
             "labels": {"node.kubernetes.io/instance-type": CLOUD_MACHINES[cloud],
                        "topology.kubernetes.io/region": region, "topology.kubernetes.io/zone": z}}
            for z in zones]  # fmt: skip


def cluster_plans(cfg: dict[str, Any]) -> list[ClusterPlan]:
    """The clusters a stack file's config asks for: one per enabled cloud that brings a
    `cluster`, and one per kubeconfig its `kubernetes` edge sites and far regions name, with
    one node per site and two per region."""
    clouds: Clouds = _typed(Clouds, cfg.get("edgefabric:clouds"), "edgefabric:clouds")
    edge: EdgeConfig = _typed(EdgeConfig, cfg.get("edgefabric:edge"), "edgefabric:edge")
    by_ref: dict[str, ClusterPlan] = {}
    for cloud in clouds.enabled:
        settings = clouds.get(cloud)
        if settings.cluster is None:
            continue
        region = str(getattr(settings, "location", None) or getattr(settings, "region", ""))
        by_ref[settings.cluster.kubeconfig_ref] = ClusterPlan(
            cloud, cloud, region, settings.cluster.kubeconfig_ref, _cloud_nodes(cloud, cloud, region))
    for i, site in enumerate(edge.sites):
        if site.capabilities.runtime != "kubernetes" or site.kubeconfig_ref is None:
            continue
        ref = site.kubeconfig_ref
        plan = by_ref.get(ref)
        if plan is None:
            name = _cluster_name(ref, f"edgefabric:edge.sites[{i}].kubeconfigRef")
            plan = by_ref[ref] = ClusterPlan(name, "generic", "", ref, [])
        caps = site.capabilities
        plan.nodes.append({
            "name": f"{site.name}-node", "cpu": f"{caps.cpu:g}", "memory": f"{caps.memory_mb}Mi",
            "ephemeral_storage": f"{caps.storage_mb}Mi", "pods": 110,
            "labels": {**edge.node_selector, SITE_LABEL: site.name, "topology.kubernetes.io/zone": site.name},
            "taints": [[edge.toleration_key, site.name, "NoSchedule"]],
        })  # fmt: skip
        plan.sites.append(site.name)
    # A far region that brings its cluster (`regions[].kubeconfigRef`): two untainted nodes of its
    # cloud's machine in its location, on the cluster that reference names (a new one, or one
    # the sites share; their nodes are tainted, so the region's pods land on its own).
    regions = pydantic.TypeAdapter(list[Region])
    try:
        far = [r for r in regions.validate_python(cfg.get("edgefabric:regions") or []) if r.kubeconfig_ref]
    except pydantic.ValidationError as exc:
        raise LocalEnvError(f"edgefabric:regions in the stack file: {exc}") from None
    for far_region in far:
        assert far_region.kubeconfig_ref is not None
        ref = far_region.kubeconfig_ref
        plan = by_ref.get(ref)
        if plan is None:
            plan = by_ref[ref] = ClusterPlan(_cluster_name(ref, f"edgefabric:regions[{far_region.name}].kubeconfigRef"),
                                             "generic", "", ref, [])
        plan.regions.append(far_region.name)
        plan.nodes += _cloud_nodes(far_region.name, far_region.cloud, far_region.location)
    names = [p.name for p in by_ref.values()]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise LocalEnvError(f"two kubeconfig references make the same cluster name {dupes}: rename one")
    return list(by_ref.values())


class LocalEnv:
    """The three kinds of stand-ins under one data dir."""

    def __init__(self, data_dir: Path, layout: Layout) -> None:
        self.dir = data_dir
        self.layout = layout

    # ---- files
    @property
    def env_file(self) -> Path:
        return self.dir / "env.json"

    @property
    def anvil_dir(self) -> Path:
        return self.dir / "anvil"

    @property
    def anvil_pid_file(self) -> Path:
        return self.anvil_dir / "anvil.pid"

    @property
    def pdns_dir(self) -> Path:
        return self.dir / "powerdns"

    @property
    def endpoints(self) -> endpoints.LocalEndpoints:
        return endpoints.LocalEndpoints(
            self.dir / "endpoints", port=self.layout.endpoint_port, ips=dict(self.layout.endpoint_ips)
        )

    @classmethod
    def load(cls, data_dir: Path, stack_file: Path, for_up: bool = False, **overrides: Any) -> LocalEnv:
        """The layout recorded by a previous `up`, else the stack file's (plus overrides).

        `up` re-reads the stack file (it may have changed) unless something recorded still runs:
        then it keeps the recorded layout, so a second `up` never starts a second set.
        """
        env_file = data_dir / "env.json"
        explicit = any(v is not None for v in overrides.values())
        if env_file.exists() and not explicit:
            recorded = cls(data_dir, Layout(**json.loads(env_file.read_text())))
            if not for_up or recorded.anything_running():
                return recorded
        return cls(data_dir, layout_from_stack_file(stack_file, **overrides))

    def anything_running(self) -> bool:
        eps = self.endpoints
        return (
            self._anvil_pid() is not None
            or self._pdns_record() is not None
            or any(eps.is_running(c) for c in eps.clouds())
            or self._etcd_record() is not None
            or any(any((k8s.cluster_status(self.cluster_dir(p.name)) or {}).get("running", {}).values())
                   for p in self.layout.cluster_plans)
        )

    # ---- Kubernetes
    @property
    def etcd_dir(self) -> Path:
        return self.dir / "etcd"

    def cluster_dir(self, name: str) -> Path:
        return self.dir / name

    def kubeconfig_path(self, name: str) -> Path:
        return self.cluster_dir(name) / "kubeconfig"

    def cluster(self, plan: ClusterPlan, binaries: k8s.KubeBinaries | None = None) -> k8s.LocalCluster:
        """The LocalCluster of a plan (started or not: its `api` works once it runs)."""
        # No LoadBalancer controller of its own: one process serves every cluster (`_start_loadbalancers`).
        return k8s.LocalCluster(plan.spec(self.layout), self.cluster_dir(plan.name),
                                ports=k8s.ClusterPorts(**plan.ports), etcd_url=self.etcd_url, binaries=binaries,
                                loadbalancer=False)  # fmt: skip

    @property
    def loadbalancer_record(self) -> Path:
        return self.dir / "loadbalancer.json"

    def _start_loadbalancers(self, plans: list[ClusterPlan]) -> None:
        """One LoadBalancer controller process for every cluster (a thread each), recorded in
        each cluster's state as its `loadbalancer` component. Kept when it runs for the same
        clusters; replaced otherwise."""
        clusters = [self.cluster(plan) for plan in plans]
        wanted = [c.loadbalancer_args() for c in clusters]
        try:
            record = json.loads(self.loadbalancer_record.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            record = {}
        pid = int(record.get("pid") or 0)
        if not (record.get("clusters") == wanted and k8s.runs(pid, "loadbalancer")):
            if k8s.runs(pid, "loadbalancer"):
                terminate(pid)
            args_file = self.dir / "loadbalancer.clusters.json"
            args_file.write_text(json.dumps(wanted, indent=1) + "\n")
            env: dict[str, str] = {}
            for plan in plans:
                env.update(plan.spec(self.layout).lb_env)
            pid = k8s.spawn_detached([sys.executable, "-m", "devenv.loadbalancer", "--clusters", str(args_file)],
                                     self.dir / "loadbalancer.log", k8s.loadbalancer_env(env))  # fmt: skip
            self.loadbalancer_record.write_text(json.dumps({"pid": pid, "clusters": wanted}) + "\n")
        for cluster in clusters:
            cluster.record_component("loadbalancer", pid)

    @property
    def etcd_url(self) -> str:
        return f"http://{k8s.LOOPBACK}:{self.layout.etcd_port}"

    def _etcd_record(self) -> dict[str, Any] | None:
        try:
            info = json.loads((self.etcd_dir / "etcd.pid.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return info if alive(int(info.get("pid", 0))) else None

    def _binaries(self, console: Console) -> k8s.KubeBinaries:
        """The Kubernetes binaries; built first (with a spinner) when missing."""
        log_path = self.dir / "k8s-build.log"
        with open(log_path, "a") as log:
            try:
                return k8s.ensure_binaries(build=False, log=log)
            except k8s.KubernetesError:
                pass
            with console.status(f"Kubernetes binaries: building from Go modules (~12 min cold on 2 cores; "
                                f"log {log_path})"):
                return k8s.ensure_binaries(build=True, log=log)

    def start_clusters(self, console: Console | None = None) -> str:
        """etcd and every planned cluster: start what does not run (in parallel), bring the nodes
        and the edge sites' placement policy to what the plan says, write the kubeconfigs."""
        plans = self.layout.cluster_plans
        if not plans:
            return "none in the stack file"
        console = console or Console(stderr=True)
        binaries = self._binaries(console)
        for plan in plans:
            if plan.flavor == "aws":  # where its LoadBalancer controller publishes hostnames
                powerdns.ensure_zone(self.layout.pdns_api_url, self.layout.pdns_api_key, hostname_zone(plan.region))
        if self._etcd_record() is None:
            k8s.stop_etcd_from_dir(self.etcd_dir)
            _require_free(k8s.LOOPBACK, self.layout.etcd_port, "etcd (--etcd-port)")
            _require_free(k8s.LOOPBACK, self.layout.etcd_port + 1, "etcd peer (--etcd-port + 1)")
            k8s.start_etcd(self.etcd_dir, self.layout.etcd_port, self.layout.etcd_port + 1, etcd_binary=binaries.etcd)
        todo: list[tuple[ClusterPlan, k8s.LocalCluster]] = []
        for plan in plans:
            state = k8s.cluster_status(self.cluster_dir(plan.name))
            if state and all(state["running"].get(c) for c in k8s.COMPONENTS if c != "loadbalancer"):
                continue
            if state:
                k8s.stop_from_dir(self.cluster_dir(plan.name))  # half a cluster: start it afresh
            for component, port in plan.ports.items():
                _require_free(k8s.LOOPBACK, port, f"cluster {plan.name}: {component} (--k8s-port-base)")
            todo.append((plan, self.cluster(plan, binaries)))
        errors = []
        if todo:
            columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
            with Progress(*columns, console=console) as progress, ThreadPoolExecutor(len(todo)) as pool:
                tasks = {plan.name: progress.add_task(f"cluster {plan.name}: starting", total=1) for plan, _ in todo}
                futures = {pool.submit(cluster.start, 300.0): plan.name for plan, cluster in todo}
                for future in as_completed(futures):
                    name = futures[future]
                    try:
                        future.result()
                        progress.update(tasks[name], description=f"cluster {name}: ready", completed=1)
                    except k8s.KubernetesError as exc:
                        errors.append(f"cluster {name}: {exc}")
                        progress.update(tasks[name], description=f"cluster {name}: FAILED", completed=1)
        if errors:
            raise LocalEnvError("\n".join(errors))
        self._start_loadbalancers(plans)
        for plan in plans:
            cluster = self.cluster(plan)
            cluster.apply_nodes()
            if plan.sites:
                ensure_site_placement(cluster.api)
            shutil.copyfile(cluster.kubeconfig, self.kubeconfig_path(plan.name))
            self.kubeconfig_path(plan.name).chmod(0o600)
        started = [plan.name for plan, _ in todo]
        kept = [plan.name for plan in plans if plan.name not in started]
        return "; ".join(part for part in (
            f"started {', '.join(started)}" if started else "",
            f"{', '.join(kept)} already running" if kept else "") if part)  # fmt: skip

    def stop_clusters(self) -> str:
        stopped = []
        for plan in self.layout.cluster_plans:
            state = k8s.cluster_status(self.cluster_dir(plan.name))
            if state and any(state["running"].values()):
                stopped.append(plan.name)
            k8s.stop_from_dir(self.cluster_dir(plan.name))
        self.loadbalancer_record.unlink(missing_ok=True)  # its process was each cluster's component
        etcd = self._etcd_record() is not None
        k8s.stop_etcd_from_dir(self.etcd_dir)
        what = stopped + (["etcd"] if etcd else [])
        return f"stopped {', '.join(what)}" if what else "not running"

    def clusters_status(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for plan in self.layout.cluster_plans:
            state = k8s.cluster_status(self.cluster_dir(plan.name)) or {}
            components = {c: bool(state.get("running", {}).get(c)) for c in k8s.COMPONENTS}
            cluster = self.cluster(plan)
            cluster.pids = {c: int(pid) for c, pid in state.get("pids", {}).items() if components.get(c)}
            running = all(components.values())
            entry: dict[str, Any] = {
                "running": running,
                "flavor": plan.flavor,
                "region": plan.region,
                "server": plan.server,
                "kubeconfig": str(self.kubeconfig_path(plan.name)),
                "kubeconfig_ref": plan.kubeconfig_ref,
                "sites": list(plan.sites),
                "components": components,
                "rss_bytes": sum(cluster.rss_bytes().values()),
                "nodes": [],
                "log_dir": str(self.cluster_dir(plan.name) / "logs"),
            }
            if running:
                try:
                    entry["nodes"] = [_node_summary(n) for n in cluster.api.get("/api/v1/nodes").get("items", [])]
                except (k8s.KubernetesError, OSError) as exc:
                    entry["error"] = str(exc)
            out[plan.name] = entry
        return out

    def _cluster_pids(self) -> set[int]:
        """Every running component's pid, each once (the LoadBalancer process serves them all)."""
        pids: set[int] = set()
        for plan in self.layout.cluster_plans:
            state = k8s.cluster_status(self.cluster_dir(plan.name)) or {}
            pids |= {int(pid) for c, pid in state.get("pids", {}).items() if state["running"].get(c)}
        return pids

    def etcd_status(self) -> dict[str, Any]:
        info = self._etcd_record()
        return {
            "running": info is not None,
            "pid": info["pid"] if info else None,
            "url": self.etcd_url,
            "rss_bytes": k8s.process_rss(int(info["pid"])) if info else 0,
            "log": str(self.etcd_dir / "etcd.log"),
        }

    def program_env(self) -> dict[str, str]:
        """What the program reads from the environment here: each `env:` kubeconfig reference's
        variable (the kubeconfig's contents), where DNS names resolve (EDGEFABRIC_RESOLVER), and
        that the Kubernetes provider takes back fields another writer changed (see PATCH_FORCE)."""
        out = {}
        for plan in self.layout.cluster_plans:
            if plan.env_name and self.kubeconfig_path(plan.name).exists():
                out[plan.env_name] = self.kubeconfig_path(plan.name).read_text()
        out[RESOLVER_ENV] = f"127.0.0.1:{self.layout.pdns_dns_port}"
        if self.layout.cluster_plans:
            out.update(PATCH_FORCE)
        return out

    def env_exports(self) -> list[str]:
        """`program_env` as shell lines that read the files themselves (eval "$(local-env env)")."""
        lines = []
        for plan in self.layout.cluster_plans:
            path = shlex.quote(str(self.kubeconfig_path(plan.name)))
            if plan.env_name:
                lines.append(f'export {plan.env_name}="$(cat {path})"')
            else:
                key = plan.kubeconfig_ref.split(":", 1)[1]
                lines.append(f"# {plan.kubeconfig_ref}: pulumi config set --secret {shlex.quote(key)} < {path}")
        lines.append(f"export {RESOLVER_ENV}=127.0.0.1:{self.layout.pdns_dns_port}")
        if self.layout.cluster_plans:
            lines += [f"export {k}={v}" for k, v in PATCH_FORCE.items()]
        return lines

    # ---- anvil
    def _anvil_pid(self) -> int | None:
        try:
            pid = int(json.loads(self.anvil_pid_file.read_text())["pid"])
        except (FileNotFoundError, ValueError, KeyError, json.JSONDecodeError):
            return None
        return pid if alive(pid) else None

    def anvil_status(self) -> dict[str, Any]:
        pid = self._anvil_pid()
        answering = False
        block: int | None = None
        if pid is not None:
            try:
                block = int(str(anvil.rpc_call(self.layout.rpc_url, "eth_blockNumber", timeout=1.0)), 16)
                answering = True
            except (urllib.error.URLError, OSError, anvil.AnvilError):
                answering = False
        return {
            "running": answering,
            "pid": pid,
            "rpc_url": self.layout.rpc_url,
            "chain_id": self.layout.chain_id,
            "block": block,
            "state_file": str(self.anvil_dir / "state.json"),
            "log": str(self.anvil_dir / "anvil.log"),
        }

    def start_anvil(self) -> str:
        if self.anvil_status()["running"]:
            return "already running"
        _require_free("127.0.0.1", self.layout.anvil_port, "anvil (edgefabric:registry.rpcUrl)")
        proc = anvil.start_anvil(
            self.layout.anvil_port,
            data_dir=self.anvil_dir,
            state_file=self.anvil_dir / "state.json",
            chain_id=self.layout.chain_id,
            detach=True,
        )
        self.anvil_pid_file.write_text(json.dumps({"pid": proc.pid, "port": proc.port}))
        return f"started (pid {proc.pid})"

    def stop_anvil(self) -> str:
        pid = self._anvil_pid()
        self.anvil_pid_file.unlink(missing_ok=True)
        if pid is None:
            return "not running"
        # SIGTERM: anvil writes its --state file on the way out, so `up` resumes the same chain.
        terminate(pid)
        return f"stopped (pid {pid}), chain saved"

    # ---- PowerDNS
    def _pdns_record(self) -> dict[str, Any] | None:
        try:
            info = json.loads((self.pdns_dir / "pdns.pid.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return info if alive(int(info.get("pid", 0))) else None

    def pdns_status(self) -> dict[str, Any]:
        info = self._pdns_record()
        answering = False
        if info is not None:
            try:
                status, _ = powerdns._api(
                    "GET", f"{self.layout.pdns_api_url}/api/v1/servers/localhost", self.layout.pdns_api_key
                )
                answering = status == 200
            except OSError:
                answering = False
        return {
            "running": answering,
            "pid": info["pid"] if info else None,
            "api_url": self.layout.pdns_api_url,
            "dns": f"127.0.0.1:{self.layout.pdns_dns_port} (udp+tcp)",
            "zone": self.layout.zone,
            "record": self.layout.record_name,
            "log": str(self.pdns_dir / "pdns.log"),
        }

    def start_pdns(self) -> str:
        if self.pdns_status()["running"]:
            return "already running"
        powerdns.stop_from_data_dir(self.pdns_dir)  # a stale pid file of a dead server
        _require_free("127.0.0.1", self.layout.pdns_api_port, "PowerDNS API (edgefabric:dns.backends.powerdns.apiUrl)")
        _require_free("127.0.0.1", self.layout.pdns_dns_port, "PowerDNS DNS (--pdns-dns-port)")
        server = powerdns.start_powerdns(
            powerdns.PowerDnsSettings(
                data_dir=self.pdns_dir,
                zone=self.layout.zone,
                dns_port=self.layout.pdns_dns_port,
                api_port=self.layout.pdns_api_port,
                api_key=self.layout.pdns_api_key,
            )
        )
        return f"started (pid {server.pid})"

    def stop_pdns(self) -> str:
        info = self._pdns_record()
        (self.pdns_dir / "pdns.pid.json").unlink(missing_ok=True)
        if info is None:
            return "not running"
        terminate(int(info["pid"]))
        return f"stopped (pid {info['pid']})"

    # ---- endpoints
    def endpoints_status(self) -> dict[str, Any]:
        return self.endpoints.status()

    def start_endpoints(self) -> str:
        eps = self.endpoints
        started = []
        for cloud in eps.clouds():
            if not eps.is_running(cloud):
                _require_free(eps.address(cloud), self.layout.endpoint_port, f"endpoint {cloud}")
                eps.start(cloud)
                started.append(cloud)
        return f"started {', '.join(started)}" if started else "already running"

    def set_health(self, cloud: str, healthy: bool) -> str:
        if cloud not in self.layout.endpoint_ips:
            raise LocalEnvError(f"cloud {cloud!r} is unknown; allowed: {', '.join(sorted(self.layout.endpoint_ips))}")
        eps = self.endpoints
        eps.set_healthy(cloud, healthy)
        word = "healthy (200)" if healthy else "unhealthy (503)"
        note = "" if eps.is_running(cloud) else " (its endpoint is not running: `up` starts it)"
        return f"{cloud}: {eps.health_url(cloud)} now answers {word}{note}"

    # ---- whole environment
    def up(self, console: Console | None = None) -> list[str]:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.env_file.write_text(json.dumps(asdict(self.layout), indent=2) + "\n")
        return [
            f"anvil:     {self.start_anvil()}",
            f"powerdns:  {self.start_pdns()}",
            # After PowerDNS: the aws cluster's load balancer controller publishes hostnames there.
            f"clusters:  {self.start_clusters(console)}",
            f"endpoints: {self.start_endpoints()}",
        ]

    def stop_endpoints(self) -> str:
        eps = self.endpoints
        stopped = []
        for cloud in eps.clouds():
            try:
                pid = int(eps.pid_file(cloud).read_text())
            except (FileNotFoundError, ValueError):
                continue
            eps.pid_file(cloud).unlink(missing_ok=True)
            if alive(pid):
                terminate(pid)
                stopped.append(cloud)
        return f"stopped {', '.join(stopped)}" if stopped else "not running"

    def down(self, purge: bool = False) -> list[str]:
        lines = [
            f"endpoints: {self.stop_endpoints()}",
            f"clusters:  {self.stop_clusters()}",
            f"powerdns:  {self.stop_pdns()}",
            f"anvil:     {self.stop_anvil()}",
        ]
        if purge and self.dir.exists():
            shutil.rmtree(self.dir)
            lines.append(f"purged {self.dir} (cluster, chain and DNS data, kubeconfigs, logs)")
        return lines

    def status(self) -> dict[str, Any]:
        clusters = self.clusters_status()
        etcd = self.etcd_status()
        return {
            "dir": str(self.dir),
            "anvil": self.anvil_status(),
            "powerdns": self.pdns_status(),
            "endpoints": self.endpoints_status(),
            "etcd": etcd,
            "clusters": clusters,
            # Every control plane together: etcd, and each cluster's components (the shared
            # LoadBalancer controller once).
            "k8s_rss_bytes": etcd["rss_bytes"] + sum(k8s.process_rss(pid) for pid in self._cluster_pids()),
        }


# Each edge site's pods land on that site's nodes: the EdgeSite tier selects edge nodes
# (`edge.nodeSelector`) and its pods carry `edgefabric.io/site`; several sites sharing one local
# cluster stand for several clusters, so the cluster adds the site to each such pod's node selector.
SITE_PLACEMENT = "edgefabric-site-placement"


def ensure_site_placement(api: k8s.KubeApi) -> None:
    """The MutatingAdmissionPolicy (and its binding) that pins a pod labelled
    `edgefabric.io/site=<site>` to nodes with the same label. Idempotent."""
    base = "/apis/admissionregistration.k8s.io/v1"
    policy: dict[str, Any] = {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingAdmissionPolicy",
        "metadata": {"name": SITE_PLACEMENT},
        "spec": {
            "matchConstraints": {
                "resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                                   "resources": ["pods"]}],
                "objectSelector": {"matchExpressions": [{"key": SITE_LABEL, "operator": "Exists"}]},
            },
            "failurePolicy": "Fail",
            "reinvocationPolicy": "Never",
            # A JSON patch: nodeSelector is an atomic map, which an apply configuration may not merge into.
            "mutations": [{"patchType": "JSONPatch", "jsonPatch": {"expression": (
                f'has(object.spec.nodeSelector) ? '
                f'[JSONPatch{{op: "add", path: "/spec/nodeSelector/{SITE_LABEL.replace("/", "~1")}", '
                f'value: object.metadata.labels["{SITE_LABEL}"]}}] : '
                f'[JSONPatch{{op: "add", path: "/spec/nodeSelector", '
                f'value: {{"{SITE_LABEL}": object.metadata.labels["{SITE_LABEL}"]}}}}]')}}],
        },
    }  # fmt: skip
    binding: dict[str, Any] = {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingAdmissionPolicyBinding",
        "metadata": {"name": SITE_PLACEMENT}, "spec": {"policyName": SITE_PLACEMENT},
    }  # fmt: skip
    for path, body in ((f"{base}/mutatingadmissionpolicies", policy),
                       (f"{base}/mutatingadmissionpolicybindings", binding)):
        status, current = api.request("GET", f"{path}/{SITE_PLACEMENT}", ok=(404,))
        if status == 404:
            api.create(path, body)
        else:
            body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            api.request("PUT", f"{path}/{SITE_PLACEMENT}", body)


def _node_summary(node: dict[str, Any]) -> dict[str, Any]:
    status = node.get("status") or {}
    labels = (node.get("metadata") or {}).get("labels") or {}
    return {
        "name": node["metadata"]["name"],
        "ready": any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []),
        "capacity": {k: v for k, v in (status.get("capacity") or {}).items() if k in ("cpu", "memory", "ephemeral-storage")},
        "site": labels.get(SITE_LABEL),
        "taints": [f"{t['key']}={t.get('value', '')}:{t['effect']}" for t in (node.get("spec") or {}).get("taints") or []],
    }


def _require_free(host: str, port: int, what: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise LocalEnvError(
                f"{what}: {host}:{port} is already in use by another process ({exc.strerror}); "
                f"stop it, or change the port in the stack file"
            ) from exc


def format_status(st: dict[str, Any]) -> str:
    a, p, eps = st["anvil"], st["powerdns"], st["endpoints"]

    def state(running: bool, pid: int | None) -> str:
        return f"running (pid {pid})" if running else "stopped"

    lines = [
        f"local stand-ins in {st['dir']}",
        f"  anvil      {state(a['running'], a['pid'])}  {a['rpc_url']}  chain {a['chain_id']}"
        + (f"  block {a['block']}" if a["block"] is not None else ""),
        f"  powerdns   {state(p['running'], p['pid'])}  API {p['api_url']}  DNS {p['dns']}  zone {p['zone']}",
    ]
    for cloud, ep in eps.items():
        lines.append(
            f"  {cloud:<9}  {'running' if ep['running'] else 'stopped'}  "
            f"http://{ep['ip']}:{ep['port']}/health -> {ep['health']}"
        )
    clusters = st.get("clusters") or {}
    if clusters:
        etcd = st["etcd"]
        lines.append(f"  etcd       {state(etcd['running'], etcd['pid'])}  {etcd['url']}")
        for name, c in clusters.items():
            down = [comp for comp, up in c["components"].items() if not up]
            how = "hostnames" if c["flavor"] == "aws" else "IPs"
            lines.append(
                f"  cluster {name:<6} {'running' if c['running'] else 'stopped'}"
                + (f" (not running: {', '.join(down)})" if down and len(down) < len(c["components"]) else "")
                + f"  {c['server']}  {c['flavor']} load balancers ({how})  {c['rss_bytes'] / 2**20:.0f} MiB"
            )
            lines.append(f"    kubeconfig {c['kubeconfig']}  ({c['kubeconfig_ref']})")
            for node in c["nodes"]:
                cap = node["capacity"]
                lines.append(
                    f"    node {node['name']:<24} {'Ready' if node['ready'] else 'NotReady':<8} "
                    f"cpu {cap.get('cpu', '?')}, memory {cap.get('memory', '?')}, storage {cap.get('ephemeral-storage', '?')}"
                    + (f"  site {node['site']}" if node["site"] else "")
                )
        lines.append(f"  control planes: {st['k8s_rss_bytes'] / 2**20:.0f} MiB resident (etcd and every cluster)")
        lines.append('  environment: eval "$(scripts/local-env env)"   (kubeconfigs, resolver)')
    lines.append(f"  query:     dig @127.0.0.1 -p {p['dns'].split(':')[1].split()[0]} {p['record']} A")
    return "\n".join(lines)


def all_running(st: dict[str, Any]) -> bool:
    clusters = st.get("clusters") or {}
    return bool(
        st["anvil"]["running"] and st["powerdns"]["running"] and all(e["running"] for e in st["endpoints"].values())
        and all(c["running"] for c in clusters.values()) and (not clusters or st["etcd"]["running"])
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/local-env", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=Path(os.environ.get("EDGEFABRIC_LOCAL_ENV_DIR", DEFAULT_DIR)),
                        help="pids, logs and data (default: <repo>/.local-env)")
    parser.add_argument("--stack-file", type=Path, default=DEFAULT_STACK_FILE,
                        help="stack file the addresses come from (default: Pulumi.local.yaml)")
    parser.add_argument("--anvil-port", type=int)
    parser.add_argument("--pdns-api-port", type=int)
    parser.add_argument("--pdns-dns-port", type=int)
    parser.add_argument("--endpoint-port", type=int)
    parser.add_argument("--etcd-port", type=int, help=f"etcd's client port, the peer port above it "
                                                      f"(default {DEFAULT_ETCD_PORT})")
    parser.add_argument("--k8s-port-base", type=int, help=f"cluster i listens on base+10i .. base+10i+3 "
                                                          f"(default {DEFAULT_K8S_PORT_BASE})")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("up", help="start whatever is not running")
    sub.add_parser("env", help='the environment the program needs, as shell exports: eval "$(scripts/local-env env)"')
    down = sub.add_parser("down", help="stop everything")
    down.add_argument("--purge", action="store_true", help="also delete chain state, DNS data and logs")
    status = sub.add_parser("status", help="what runs where (exit 0 if all run, 3 if not)")
    status.add_argument("--json", action="store_true")
    for name, text in (("fail", "make a cloud's /health answer 503"), ("heal", "make it answer 200 again")):
        p = sub.add_parser(name, help=text)
        p.add_argument("cloud", choices=CLOUDS)
    args = parser.parse_args(argv)

    env = LocalEnv.load(
        args.dir.resolve(),
        args.stack_file,
        for_up=args.cmd == "up",
        anvil_port=args.anvil_port,
        pdns_api_port=args.pdns_api_port,
        pdns_dns_port=args.pdns_dns_port,
        endpoint_port=args.endpoint_port,
        etcd_port=args.etcd_port,
        k8s_port_base=args.k8s_port_base,
    )
    try:
        if args.cmd == "up":
            for line in env.up():
                print(line)
            print(format_status(env.status()))
        elif args.cmd == "env":
            print("\n".join(env.env_exports()))
        elif args.cmd == "down":
            for line in env.down(purge=args.purge):
                print(line)
        elif args.cmd == "status":
            st = env.status()
            print(json.dumps(st, indent=2) if args.json else format_status(st))
            return 0 if all_running(st) else 3
        elif args.cmd in ("fail", "heal"):
            print(env.set_health(args.cloud, healthy=args.cmd == "heal"))
    except (LocalEnvError, anvil.AnvilError, powerdns.PowerDnsStartError, endpoints.EndpointError,
            k8s.KubernetesError) as exc:
        print(f"local-env {args.cmd}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
