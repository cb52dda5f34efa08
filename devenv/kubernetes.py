"""Local Kubernetes control planes on loopback, for tests and scripts/local-env.

One cluster is: kube-apiserver, kube-controller-manager and kube-scheduler (built from Go modules
by tools/kubernetes/build.sh), kwok (fake nodes of a declared size; pods on them become
Running/Ready), a LoadBalancer controller (devenv/loadbalancer.py) and Debian's etcd. One etcd may
serve several clusters: each apiserver keeps its objects under its own --etcd-prefix.

    etcd = start_etcd(data_dir / "etcd")                       # optional: shared by clusters
    cluster = LocalCluster(
        ClusterSpec("aws", flavor="aws", region="us-east-1",
                    nodes=(NodeSpec("aws-1", cpu="4", memory="16Gi"),)),
        data_dir / "aws", etcd_url=etcd.url,                   # no etcd_url: its own etcd
    )
    cluster.start()            # waits until the nodes are Ready; raises KubernetesError
    cluster.kubeconfig         # admin kubeconfig (0600, certificates embedded)
    cluster.api.get("/api/v1/nodes")
    cluster.stop(); etcd.stop()
    cluster_status(data_dir / "aws")                           # from another process: pids, ports,
    stop_from_dir(data_dir / "aws")                            #   which run; stop them
    stop_etcd_from_dir(data_dir / "etcd")

Everything listens on 127.0.0.1 only; certificates come from a CA made here (cryptography) and
kept in <dir>/pki, so a restarted cluster keeps its identity. Logs: <dir>/logs/<component>.log.
Engine-free: never import pulumi here.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import requests
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from devenv.kubeapi import KubeApi, KubernetesError
from devenv.processes import alive, terminate

REPO_ROOT = Path(__file__).resolve().parent.parent
TOOLS_DIR = REPO_ROOT / "tools" / "kubernetes"
BUILD_SCRIPT = TOOLS_DIR / "build.sh"
BIN_DIR = REPO_ROOT / ".tools" / "bin"
LOOPBACK = "127.0.0.1"
ETCD_INSTALL_HINT = "scripts/bootstrap.sh k8s (apt-get install etcd-server)"
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
SERVICE_CIDR = "10.96.0.0/16"  # virtual: nothing routes or listens there (no kube-proxy, no kubelet)
POD_CIDR = "10.244.0.0/16"  # kwok hands pod IPs out of it; nothing listens there either
STATE_FILE = "cluster.json"
# Memory: four clusters share one laptop (issue 10: every control plane together <= 2,000 MB).
# The Go runtime's default lets a heap grow to twice what is live before collecting; these
# small clusters have little live data and a lot of start-up garbage, and once started they
# allocate little, so collecting early costs almost no CPU. GOGC=5 collects at 1.05x the live
# heap. No GOMEMLIMIT: a limit below a process's live heap makes the collector run without
# pause. Measured (bench/local_stack.py conditions, the local stack deployed, summed RSS; CPU of
# the four apiservers together while idle):
#   apiserver GOGC=15 + GOMEMLIMIT=100MiB, others GOGC=50: 2,001 MB, 0.8-1.2 cores, preview 11.6 s
#   apiserver GOGC=25, others 50:                          2,131 MB, 0.03 cores, preview 8.0 s
#   GOGC=10 everywhere:                                    2,012 MB, 0.04 cores, preview 7.8 s
#   GOGC=5 everywhere:                                     1,997 MB, 0.06 cores, preview 8.6 s
GO_ENV = {"GOGC": "5"}
# The watch cache keeps every object of every resource in memory per apiserver, a copy of etcd
# a handful of objects large; without it reads go to etcd, which serves these few clients easily.
APISERVER_MEMORY_FLAGS = ("--watch-cache=false",)
# The controllers these clusters need: Deployments down to pods, namespaces and garbage
# collection (destroy), service accounts and their tokens (pods need `default`), node lifecycle
# (it lifts the not-ready taint of new nodes), PDB status, HPAs, pod GC, kube-root-ca.crt, and
# Endpoints (the Kubernetes provider's Service await waits for them) and EndpointSlices. The other ~35 (jobs, volumes, CSRs, daemonsets, ...) each hold informers.
# (Turning API groups off with --runtime-config saves little and breaks clients that list
# them: kwok and the controllers watch RuntimeClasses, the scheduler the storage and DRA APIs.)
CONTROLLERS = (
    "deployment-controller", "replicaset-controller", "namespace-controller", "garbage-collector-controller",
    "serviceaccount-controller", "serviceaccount-token-controller", "node-lifecycle-controller",
    "disruption-controller", "horizontal-pod-autoscaler-controller", "pod-garbage-collector-controller",
    "endpoints-controller", "endpointslice-controller", "root-ca-certificate-publisher-controller",
    "taint-eviction-controller",
)  # fmt: skip


# ------------------------------------------------------------------------------------- binaries


def k8s_version() -> str:
    """The Kubernetes release pinned in tools/kubernetes/go.mod (what build.sh builds)."""
    for line in (TOOLS_DIR / "go.mod").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "k8s.io/kubernetes" and parts[1].startswith("v"):
            return parts[1]
    raise KubernetesError(f"no k8s.io/kubernetes version in {TOOLS_DIR / 'go.mod'}")


def cache_dir() -> Path:
    """Where build.sh puts this release: ${EDGEFABRIC_CACHE:-~/.cache/edgefabric}/k8s/<version>."""
    root = os.environ.get("EDGEFABRIC_CACHE") or str(Path.home() / ".cache" / "edgefabric")
    return Path(root) / "k8s" / k8s_version()


@dataclass(frozen=True)
class KubeBinaries:
    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kwok: Path
    etcd: Path
    stages: tuple[Path, ...]  # kwok Stage documents, each passed with --config


def find_binaries() -> KubeBinaries:
    """The built binaries (no build). Raises KubernetesError saying how to get what is missing."""
    dest = cache_dir()
    bins = {
        name: dest / "bin" / name
        for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
    }
    missing = [name for name, path in bins.items() if not os.access(path, os.X_OK)]
    stages = tuple(sorted((dest / "stages").glob("*.yaml")))
    if missing or not stages or not (dest / "stamp").is_file():
        what = ", ".join(missing) if missing else "kwok stages / build stamp"
        raise KubernetesError(
            f"Kubernetes {k8s_version()} binaries not built ({what} missing in {dest}): "
            f"run {BUILD_SCRIPT.relative_to(REPO_ROOT)} (cached; a cold build takes ~12 min)"
        )
    etcd = shutil.which("etcd") or ("/usr/bin/etcd" if os.access("/usr/bin/etcd", os.X_OK) else None)
    if etcd is None:
        raise KubernetesError(f"etcd not found; install it: {ETCD_INSTALL_HINT}")
    return KubeBinaries(
        kube_apiserver=bins["kube-apiserver"],
        kube_controller_manager=bins["kube-controller-manager"],
        kube_scheduler=bins["kube-scheduler"],
        kwok=bins["kwok"],
        etcd=Path(etcd),
        stages=stages,
    )


def ensure_binaries(build: bool = True, log: IO[str] | None = None) -> KubeBinaries:
    """Ask build.sh, which knows whether the cached build matches its pins (its stamp): a cached
    build is relinked in ~0.05 s; else build=True builds (locked, so concurrent test runs build
    once) and build=False raises. Output goes to `log` (default: stderr)."""
    script = BUILD_SCRIPT.relative_to(REPO_ROOT)
    result = subprocess.run(
        ["bash", str(BUILD_SCRIPT), *([] if build else ["--check"])],
        stdout=log or sys.stderr,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    if result.returncode != 0:
        if build:
            raise KubernetesError(f"{script} failed with exit code {result.returncode}")
        raise KubernetesError(
            f"Kubernetes {k8s_version()} binaries not built (or built from other pins) in {cache_dir()}: "
            f"run {script} (cached; a cold build takes ~12 min)"
        )
    return find_binaries()


# ----------------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class Taint:
    key: str
    value: str = ""
    effect: str = "NoSchedule"  # NoSchedule | PreferNoSchedule | NoExecute

    def manifest(self) -> dict[str, str]:
        out = {"key": self.key, "effect": self.effect}
        if self.value:
            out["value"] = self.value
        return out


@dataclass(frozen=True)
class NodeSpec:
    """A kwok node: what the scheduler sees as its capacity (= allocatable), labels and taints."""

    name: str
    cpu: str = "4"
    memory: str = "16Gi"
    ephemeral_storage: str = "100Gi"
    pods: int = 110
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: tuple[Taint, ...] = ()

    def capacity(self) -> dict[str, str]:
        return {
            "cpu": self.cpu,
            "memory": self.memory,
            "ephemeral-storage": self.ephemeral_storage,
            "pods": str(self.pods),
        }

    def manifest(self) -> dict[str, Any]:
        labels = {
            "kubernetes.io/hostname": self.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "type": "kwok",
            **dict(self.labels),
        }
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.name, "labels": labels, "annotations": {KWOK_NODE_ANNOTATION: "fake"}},
            "spec": {"taints": [t.manifest() for t in self.taints]},
            "status": {"capacity": self.capacity(), "allocatable": self.capacity()},
        }


@dataclass(frozen=True)
class ClusterSpec:
    """name: the cluster (and its etcd prefix); flavor: aws | azure | gcp | generic, which decides
    how the LoadBalancer controller answers (devenv.loadbalancer); region: for aws hostnames."""

    name: str
    nodes: tuple[NodeSpec, ...] = ()
    flavor: str = "generic"
    region: str = ""
    lb_pool: str | None = None  # IP pool for azure/gcp/generic; None: the flavor's default
    # More arguments and environment for the LoadBalancer controller (e.g. aws: `--dns-api`,
    # `--dns-address`, with the API key in the environment, never in the arguments).
    lb_args: tuple[str, ...] = ()
    lb_env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ClusterPorts:
    apiserver: int
    controller_manager: int
    scheduler: int
    kwok: int

    @classmethod
    def free(cls) -> ClusterPorts:
        ports = free_loopback_ports(4)
        return cls(*ports)


def free_loopback_ports(n: int) -> list[int]:
    """n distinct TCP ports free on 127.0.0.1 a moment ago (held together so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((LOOPBACK, 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


# --------------------------------------------------------------------------------- API client


# -------------------------------------------------------------------------------------- PKI


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, 0o600)


def _key_pem(key: Any) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(cn: str, orgs: Iterable[str] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    return x509.Name([*attrs, x509.NameAttribute(NameOID.COMMON_NAME, cn)])


class Pki:
    """A cluster's CA and the certificates signed by it, as files in `dir` (kept across restarts)."""

    VALIDITY = dt.timedelta(days=3650)

    def __init__(self, dir: Path, cluster: str) -> None:
        self.dir = dir
        self.cluster = cluster

    def path(self, name: str) -> Path:
        return self.dir / name

    @property
    def ca_cert(self) -> Path:
        return self.path("ca.crt")

    @property
    def ca_key(self) -> Path:
        return self.path("ca.key")

    def ensure(self) -> Pki:
        """Make whatever is missing: CA, serving certs, client certs, service-account key pair."""
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        self._ca("ca", f"edgefabric-local-{self.cluster}-ca")
        # The aggregation layer's own CA: the apiserver publishes it (extension-apiserver-authentication)
        # and delegating components (controller manager, scheduler) read it; without it they log errors.
        self._ca("front-proxy-ca", f"edgefabric-local-{self.cluster}-front-proxy-ca")
        service_ip = str(next(ipaddress.ip_network(SERVICE_CIDR).hosts()))  # the `kubernetes` service
        self._leaf("apiserver", "kube-apiserver", server=True, ips=(LOOPBACK, service_ip),
                   dns=("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                        "kubernetes.default.svc.cluster.local"))  # fmt: skip
        self._leaf(
            "controller-manager-serving",
            "kube-controller-manager",
            server=True,
            ips=(LOOPBACK,),
            dns=("localhost",),
        )
        self._leaf("scheduler-serving", "kube-scheduler", server=True, ips=(LOOPBACK,), dns=("localhost",))
        self._leaf("admin", "edgefabric-admin", orgs=("system:masters",))
        self._leaf("controller-manager", "system:kube-controller-manager")
        self._leaf("scheduler", "system:kube-scheduler")
        self._leaf("kwok", "edgefabric:kwok", orgs=("system:masters",))
        self._leaf("loadbalancer", "edgefabric:loadbalancer-controller", orgs=("system:masters",))
        self._leaf("front-proxy-client", "front-proxy-client", ca="front-proxy-ca")
        if not self.path("sa.key").exists():
            sa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            _write_private(self.path("sa.key"), _key_pem(sa))
            self.path("sa.pub").write_bytes(
                sa.public_key().public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                )
            )
        return self

    def _ca(self, name: str, cn: str) -> None:
        crt, key_path = self.path(f"{name}.crt"), self.path(f"{name}.key")
        if crt.exists() and key_path.exists():
            return
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        subject = _name(cn)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + self.VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )  # fmt: skip
        _write_private(key_path, _key_pem(key))
        crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    def _leaf(self, name: str, cn: str, *, orgs: Iterable[str] = (), server: bool = False, ca: str = "ca",
              ips: Iterable[str] = (), dns: Iterable[str] = ()) -> None:  # fmt: skip
        crt, key_path = self.path(f"{name}.crt"), self.path(f"{name}.key")
        if crt.exists() and key_path.exists():
            return
        ca_key = serialization.load_pem_private_key(self.path(f"{ca}.key").read_bytes(), password=None)
        issuer = x509.load_pem_x509_certificate(self.path(f"{ca}.crt").read_bytes())
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(cn, orgs)).issuer_name(issuer.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + self.VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, True, False, False, False, False, False, False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.public_key()), critical=False)  # type: ignore[arg-type]
        )  # fmt: skip
        sans: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        sans += [x509.DNSName(d) for d in dns]
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
        _write_private(key_path, _key_pem(key))
        crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    def kubeconfig(self, out: Path, server: str, user: str, context: str) -> Path:
        """A kubeconfig (mode 0600) for client cert `user`, certificates embedded."""
        import base64

        def b64(p: Path) -> str:
            return base64.b64encode(p.read_bytes()).decode()

        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": context, "cluster": {"server": server, "certificate-authority-data": b64(self.ca_cert)}}],
            "users": [{"name": f"{context}-{user}", "user": {
                "client-certificate-data": b64(self.path(f"{user}.crt")),
                "client-key-data": b64(self.path(f"{user}.key")),
            }}],
            "contexts": [{"name": context, "context": {"cluster": context, "user": f"{context}-{user}"}}],
            "current-context": context,
        }  # fmt: skip
        _write_private(out, yaml.safe_dump(doc, sort_keys=False).encode())
        return out

    def api(self, server: str, user: str = "admin") -> KubeApi:
        return KubeApi(server, self.ca_cert, self.path(f"{user}.crt"), self.path(f"{user}.key"))


# ------------------------------------------------------------------------------------- processes


def _log_tail(path: Path, n: int = 25) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()[-n:]
    except FileNotFoundError:
        return "(no log)"
    return "\n".join("    " + line[:400] for line in lines)


def _spawn(cmd: list[str], log_path: Path, env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n".encode())
        log.flush()
        return subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
            start_new_session=True,  # Ctrl-C in a test run must not hit it twice; outlives `up`
        )  # fmt: skip


def _wait_http(what: str, url: str, proc: subprocess.Popen[bytes], log_path: Path, timeout: float,
               check: Callable[[requests.Response], bool] = lambda r: r.status_code == 200,
               **kwargs: Any) -> None:  # fmt: skip
    """Poll `url` until `check` passes; raise with the log's tail if the process exits or time runs out."""
    deadline = time.monotonic() + timeout
    last: object = None
    with requests.Session() as session:
        session.trust_env = False
        while True:
            if proc.poll() is not None:
                raise KubernetesError(
                    f"{what} exited with code {proc.returncode} before it was ready; log {log_path}:\n{_log_tail(log_path)}"
                )
            try:
                resp = session.get(url, timeout=2, **kwargs)
                if check(resp):
                    return
                last = f"HTTP {resp.status_code}: {resp.text[:300]}"
            except requests.RequestException as exc:
                last = exc
            if time.monotonic() > deadline:
                raise KubernetesError(
                    f"{what} not ready at {url} after {timeout:.0f} s (last: {last}); log {log_path}:\n{_log_tail(log_path)}"
                )
            time.sleep(0.2)


def _stop_proc(proc: subprocess.Popen[bytes] | None, pid: int | None, timeout: float = 10.0) -> None:
    if pid is None:
        return
    terminate(pid, timeout)
    if proc is not None:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class LocalEtcd:
    """A single-member etcd on loopback (plain HTTP on 127.0.0.1; nothing else can reach it)."""

    data_dir: Path
    client_port: int
    peer_port: int
    pid: int
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.client_port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "etcd.log"

    def stop(self, timeout: float = 10.0) -> None:
        _stop_proc(self._proc, self.pid, timeout)
        (self.data_dir / "etcd.pid.json").unlink(missing_ok=True)


def start_etcd(data_dir: Path, client_port: int = 0, peer_port: int = 0, timeout: float = 30.0,
               etcd_binary: Path | None = None) -> LocalEtcd:  # fmt: skip
    """Start etcd with its data in `data_dir`/data (kept across restarts) and wait for /health."""
    binary = etcd_binary or Path(shutil.which("etcd") or "/usr/bin/etcd")
    if not os.access(binary, os.X_OK):
        raise KubernetesError(f"etcd not found; install it: {ETCD_INSTALL_HINT}")
    data_dir.mkdir(parents=True, exist_ok=True)
    if not client_port or not peer_port:
        client_port, peer_port = free_loopback_ports(2)
    peer = f"http://{LOOPBACK}:{peer_port}"
    client = f"http://{LOOPBACK}:{client_port}"
    cmd = [
        str(binary),
        "--name", "edgefabric",
        "--data-dir", str(data_dir / "data"),
        "--listen-client-urls", client, "--advertise-client-urls", client,
        "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
        "--initial-cluster", f"edgefabric={peer}", "--initial-cluster-state", "new",
        "--logger", "zap", "--log-outputs", "stderr",
        # Raft entries kept in memory between snapshots (plus 5,000 for catch-up): few clients here.
        "--snapshot-count", "2500",
        "--auto-compaction-mode", "periodic", "--auto-compaction-retention", "1h",
    ]  # fmt: skip
    log_path = data_dir / "etcd.log"
    proc = _spawn(cmd, log_path, {**os.environ, **GO_ENV})  # a Go heap too (see GO_ENV)
    etcd = LocalEtcd(data_dir, client_port, peer_port, proc.pid, proc)
    try:
        _wait_http("etcd", f"{client}/health", proc, log_path, timeout,
                   check=lambda r: r.status_code == 200 and r.json().get("health") in ("true", True))  # fmt: skip
    except BaseException:
        etcd.stop()
        raise
    (data_dir / "etcd.pid.json").write_text(
        json.dumps({"pid": proc.pid, "url": etcd.url, "peer_port": peer_port})
    )
    return etcd


def stop_etcd_from_dir(data_dir: Path) -> bool:
    """Stop an etcd started by another process; False if none was recorded."""
    pidfile = data_dir / "etcd.pid.json"
    try:
        pid = int(json.loads(pidfile.read_text())["pid"])
    except (FileNotFoundError, ValueError, KeyError, json.JSONDecodeError):
        return False
    if runs(pid, "etcd"):
        terminate(pid)
    pidfile.unlink(missing_ok=True)
    return True


# ------------------------------------------------------------------------------------- cluster

COMPONENTS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "loadbalancer")


class LocalCluster:
    """One control plane with kwok nodes under `data_dir`:

    pki/            CA, serving and client certificates, service-account key pair
    admin.kubeconfig, <component>.kubeconfig (0600)
    logs/           one log per component (and etcd/ with its own, if the cluster has its own)
    cluster.json    pids and ports of what runs (for status/stop from another process)
    """

    def __init__(self, spec: ClusterSpec, data_dir: Path, *, ports: ClusterPorts | None = None,
                 etcd_url: str | None = None, binaries: KubeBinaries | None = None,
                 loadbalancer: bool = True, apiserver_only: bool = False) -> None:  # fmt: skip
        self.spec = spec
        self.dir = Path(data_dir)
        self.ports = ports or ClusterPorts.free()
        self.etcd_url = etcd_url
        self.binaries = binaries
        self.loadbalancer = loadbalancer
        # Only the API (and etcd): enough for clients of the API alone, such as leases; no
        # controllers, no scheduler, no nodes (the spec's nodes are not made).
        self.apiserver_only = apiserver_only
        self.pki = Pki(self.dir / "pki", spec.name)
        self.etcd: LocalEtcd | None = None  # our own, when no etcd_url was given
        self.pids: dict[str, int] = {}
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    # ---- addresses and files
    @property
    def server(self) -> str:
        return f"https://{LOOPBACK}:{self.ports.apiserver}"

    @property
    def kubeconfig(self) -> Path:
        return self.dir / "admin.kubeconfig"

    @property
    def etcd_prefix(self) -> str:
        return f"/edgefabric/{self.spec.name}/registry"

    def log_path(self, component: str) -> Path:
        return self.dir / "logs" / f"{component}.log"

    @property
    def api(self) -> KubeApi:
        return self.pki.api(self.server)

    # ---- lifecycle
    def start(self, timeout: float = 120.0) -> LocalCluster:
        """Start everything and wait until the API answers, the controllers and kwok are healthy
        and every declared node is Ready without the not-ready taint. Stops what it started and
        raises KubernetesError (pointing at the log) on failure."""
        running = cluster_status(self.dir)
        if running and any(running["running"].values()):
            pids = {c: pid for c, pid in running["pids"].items() if running["running"][c]}
            raise KubernetesError(
                f"cluster {self.spec.name} already runs from {self.dir} ({pids}): stop it first (stop_from_dir)"
            )
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout

        def left() -> float:
            return max(5.0, deadline - time.monotonic())

        b = self.binaries = self.binaries or find_binaries()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.pki.ensure()
        p = self.pki.path
        if self.etcd_url is None:
            self.etcd = start_etcd(self.dir / "etcd", etcd_binary=b.etcd)
            self.pids["etcd"] = self.etcd.pid
            self._write_state()
            etcd_url = self.etcd.url
        else:
            etcd_url = self.etcd_url
        for user in ("admin", "controller-manager", "scheduler", "kwok", "loadbalancer"):
            self.pki.kubeconfig(self.dir / f"{user}.kubeconfig", self.server, user, self.spec.name)

        self._run("kube-apiserver", [
            str(b.kube_apiserver),
            f"--etcd-servers={etcd_url}",
            f"--etcd-prefix={self.etcd_prefix}",
            f"--bind-address={LOOPBACK}", f"--secure-port={self.ports.apiserver}",
            f"--advertise-address={LOOPBACK}",
            # The `kubernetes` service's endpoints would be this loopback address, which the
            # apiserver refuses to reconcile; nothing in a kwok cluster dials it anyway.
            "--endpoint-reconciler-type=none",
            f"--tls-cert-file={p('apiserver.crt')}", f"--tls-private-key-file={p('apiserver.key')}",
            f"--client-ca-file={self.pki.ca_cert}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={p('sa.pub')}",
            f"--service-account-signing-key-file={p('sa.key')}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC",
            f"--requestheader-client-ca-file={p('front-proxy-ca.crt')}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={p('front-proxy-client.crt')}",
            f"--proxy-client-key-file={p('front-proxy-client.key')}",
            "--enable-priority-and-fairness=false",
            *APISERVER_MEMORY_FLAGS,
            "--profiling=false",
        ], {**os.environ, **GO_ENV})  # fmt: skip
        admin = self.pki.api(self.server)
        _wait_http("kube-apiserver", f"{self.server}/readyz", self._procs["kube-apiserver"],
                   self.log_path("kube-apiserver"), left(),
                   verify=str(self.pki.ca_cert), cert=(str(p("admin.crt")), str(p("admin.key"))))  # fmt: skip
        if self.apiserver_only:
            return

        cm_kc, sched_kc = self.dir / "controller-manager.kubeconfig", self.dir / "scheduler.kubeconfig"
        self._run("kube-controller-manager", [
            str(b.kube_controller_manager),
            f"--kubeconfig={cm_kc}", f"--authentication-kubeconfig={cm_kc}", f"--authorization-kubeconfig={cm_kc}",
            f"--bind-address={LOOPBACK}", f"--secure-port={self.ports.controller_manager}",
            f"--tls-cert-file={p('controller-manager-serving.crt')}",
            f"--tls-private-key-file={p('controller-manager-serving.key')}",
            f"--client-ca-file={self.pki.ca_cert}",
            "--leader-elect=false",  # one instance; a stale lease of a previous run would stall it
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={p('sa.key')}",
            f"--root-ca-file={self.pki.ca_cert}",
            f"--cluster-signing-cert-file={self.pki.ca_cert}", f"--cluster-signing-key-file={self.pki.ca_key}",
            f"--cluster-name={self.spec.name}",
            f"--controllers={','.join(CONTROLLERS)}",
            "--profiling=false",
        ], {**os.environ, **GO_ENV})  # fmt: skip
        self._run("kube-scheduler", [
            str(b.kube_scheduler),
            f"--kubeconfig={sched_kc}", f"--authentication-kubeconfig={sched_kc}", f"--authorization-kubeconfig={sched_kc}",
            f"--bind-address={LOOPBACK}", f"--secure-port={self.ports.scheduler}",
            f"--tls-cert-file={p('scheduler-serving.crt')}", f"--tls-private-key-file={p('scheduler-serving.key')}",
            f"--client-ca-file={self.pki.ca_cert}",
            "--leader-elect=false",
            "--profiling=false",
        ], {**os.environ, **GO_ENV})  # fmt: skip
        kwok_env = {**os.environ, **GO_ENV, "HOME": str(self.dir)}  # kwok reads ~/.kwok/kwok.yaml: not the user's
        self._run("kwok", [
            str(b.kwok),
            f"--kubeconfig={self.dir / 'kwok.kubeconfig'}",
            *(f"--config={s}" for s in b.stages),
            f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
            f"--server-address={LOOPBACK}:{self.ports.kwok}",  # healthz; without it: 0.0.0.0:<node-port>
            f"--node-ip={LOOPBACK}",  # node addresses: anything that dials a node stays on loopback
            f"--cidr={POD_CIDR}",
        ], kwok_env)  # fmt: skip
        if self.loadbalancer:
            self._start_loadbalancer()

        ca = str(self.pki.ca_cert)
        _wait_http(
            "kube-controller-manager",
            f"https://{LOOPBACK}:{self.ports.controller_manager}/healthz",
            self._procs["kube-controller-manager"],
            self.log_path("kube-controller-manager"),
            left(),
            verify=ca,
        )
        _wait_http(
            "kube-scheduler",
            f"https://{LOOPBACK}:{self.ports.scheduler}/readyz",
            self._procs["kube-scheduler"],
            self.log_path("kube-scheduler"),
            left(),
            verify=ca,
        )
        _wait_http("kwok", f"http://{LOOPBACK}:{self.ports.kwok}/healthz",
                   self._procs["kwok"], self.log_path("kwok"), left())  # fmt: skip

        self.apply_nodes(admin)
        names = [n.name for n in self.spec.nodes]
        hint = f"; logs: {self.log_path('kwok')}, {self.log_path('kube-controller-manager')}"
        admin.wait_for(f"cluster {self.spec.name}: nodes {names} Ready and schedulable",
                       lambda: all(self._node_ready(admin, n) for n in names), left(), hint=hint)  # fmt: skip
        # Pods need their namespace's `default` service account (made by the controller manager).
        admin.wait_for(f"cluster {self.spec.name}: service account default/default",
                       lambda: admin.request("GET", "/api/v1/namespaces/default/serviceaccounts/default",
                                             ok=(404,))[0] == 200, left(),
                       hint=f"; log: {self.log_path('kube-controller-manager')}")  # fmt: skip

    def _run(self, component: str, cmd: list[str], env: Mapping[str, str] | None = None) -> None:
        proc = _spawn(cmd, self.log_path(component), env)
        self._procs[component] = proc
        self.pids[component] = proc.pid
        self._write_state()  # at once: a caller killed mid-start leaves a record to stop it by

    def loadbalancer_args(self) -> list[str]:
        """The LoadBalancer controller's arguments for this cluster (`python -m devenv.loadbalancer
        ARGS`); several clusters' lists go to one process with `--clusters` (devenv/cli.py)."""
        from devenv import loadbalancer

        # A bad flavor or pool fails here, not in the child's log.
        loadbalancer.scheme_for(self.spec.flavor, self.spec.name, self.spec.region, self.spec.lb_pool)
        p = self.pki.path
        args = [
            "--server", self.server, "--ca", str(self.pki.ca_cert),
            "--cert", str(p("loadbalancer.crt")), "--key", str(p("loadbalancer.key")),
            "--cluster", self.spec.name, "--flavor", self.spec.flavor,
        ]  # fmt: skip
        if self.spec.region:
            args += ["--region", self.spec.region]
        if self.spec.lb_pool:
            args += ["--pool", self.spec.lb_pool]
        return args + list(self.spec.lb_args)

    def _start_loadbalancer(self) -> None:
        env = loadbalancer_env(self.spec.lb_env)
        self._run("loadbalancer", [sys.executable, "-m", "devenv.loadbalancer", *self.loadbalancer_args()], env)

    def record_component(self, component: str, pid: int) -> None:
        """Record a component another process started for this cluster (the LoadBalancer
        controller that devenv/cli.py runs once for all its clusters), so status and stop see it."""
        self.pids.update(json.loads((self.dir / STATE_FILE).read_text()).get("pids", {}))
        self.pids[component] = pid
        self._write_state()

    @staticmethod
    def _node_ready(api: KubeApi, name: str) -> bool:
        node = api.get(f"/api/v1/nodes/{name}")
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in node.get("status", {}).get("conditions", [])
        )
        not_ready_taint = any(
            t.get("key", "").startswith("node.kubernetes.io/")
            for t in node.get("spec", {}).get("taints") or []
        )
        return ready and not not_ready_taint

    def apply_nodes(self, api: KubeApi | None = None) -> None:
        """Create the declared nodes, or bring existing ones to the declared labels, taints and size."""
        api = api or self.api
        for node in self.spec.nodes:
            body = node.manifest()
            status, _ = api.request("POST", "/api/v1/nodes", body, ok=(409,))
            if status == 409:
                current = api.get(f"/api/v1/nodes/{node.name}")
                # Keep taints the node-lifecycle controller manages; replace the declared ones.
                managed = [
                    t
                    for t in current.get("spec", {}).get("taints") or []
                    if t["key"].startswith("node.kubernetes.io/")
                ]
                api.merge_patch(f"/api/v1/nodes/{node.name}", {
                    "metadata": {"labels": body["metadata"]["labels"], "annotations": body["metadata"]["annotations"]},
                    "spec": {"taints": body["spec"]["taints"] + managed},
                })  # fmt: skip
                api.merge_patch(f"/api/v1/nodes/{node.name}/status", {"status": body["status"]})

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every component (kwok and the controllers first, etcd last)."""
        for component in reversed(COMPONENTS):
            _stop_proc(self._procs.pop(component, None), self.pids.pop(component, None), timeout)
        if self.etcd is not None:
            self.etcd.stop(timeout)
            self.etcd = None
            self.pids.pop("etcd", None)
        (self.dir / STATE_FILE).unlink(missing_ok=True)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- state for other processes
    def _write_state(self) -> None:
        state = {
            "name": self.spec.name,
            "flavor": self.spec.flavor,
            "server": self.server,
            "kubeconfig": str(self.kubeconfig),
            "etcd": self.etcd.url if self.etcd else self.etcd_url,
            "etcd_prefix": self.etcd_prefix,
            "own_etcd_dir": str(self.etcd.data_dir) if self.etcd else None,
            "ports": asdict(self.ports),
            "pids": dict(self.pids),
        }
        (self.dir / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")

    def rss_bytes(self) -> dict[str, int]:
        """Resident memory of each running component (from /proc)."""
        return {c: _rss(pid) for c, pid in self.pids.items() if alive(pid)}


def loadbalancer_env(extra: Mapping[str, str]) -> dict[str, str]:
    """The environment of a LoadBalancer controller process: ours, the repository importable,
    and `extra` (the PowerDNS API key for aws hostnames: never in its arguments)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def spawn_detached(cmd: list[str], log_path: Path, env: Mapping[str, str] | None = None) -> int:
    """Start a process that outlives us, its output in `log_path`; its pid."""
    return _spawn(cmd, log_path, env).pid


def process_rss(pid: int) -> int:
    """Resident memory of one process in bytes (from /proc); 0 when it is gone."""
    return _rss(pid)


def _rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except FileNotFoundError:
        pass
    return 0


# What a component's command line contains: a recorded pid that lives on but runs something else
# (the machine rebooted and reused it) is not ours to stop.
_CMDLINE_MARK = {"loadbalancer": "devenv.loadbalancer"}


def runs(pid: int, component: str) -> bool:
    """True while `pid` runs and is that component (not a recycled pid)."""
    if not alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return _CMDLINE_MARK.get(component, component) in cmdline


def cluster_status(data_dir: Path) -> dict[str, Any] | None:
    """What a cluster started by any process records, with which components still run; None if nothing."""
    try:
        state = json.loads((Path(data_dir) / STATE_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    state["running"] = {c: runs(int(pid), c) for c, pid in state.get("pids", {}).items()}
    return state


def stop_from_dir(data_dir: Path, timeout: float = 10.0) -> bool:
    """Stop a cluster started by another process (scripts/local-env down); False if none was recorded."""
    state = cluster_status(data_dir)
    if state is None:
        return False
    pids, running = state.get("pids", {}), state["running"]
    for component in (*reversed(COMPONENTS), "etcd"):
        if running.get(component):
            terminate(int(pids[component]), timeout)
    if state.get("own_etcd_dir"):
        (Path(state["own_etcd_dir"]) / "etcd.pid.json").unlink(missing_ok=True)
    (Path(data_dir) / STATE_FILE).unlink(missing_ok=True)
    return True
