"""Helpers for the engine tier: the real Pulumi CLI on throwaway projects and stacks.

Every engine call gets its own PULUMI_HOME and file backend under a temporary directory, the
engine from .tools/bin (built by tools/pulumi-engine/build.sh), no update check and no plugin
download. Nothing here talks to anything but loopback.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
TOOLS_BIN = REPO / ".tools" / "bin"
VENV_PYTHON = REPO / "venv" / "bin" / "python"
# The `local` stack's passphrase is published on purpose (it only guards the public anvil dev
# key and a loopback-only PowerDNS key). Other stacks bring their own secrets provider.
LOCAL_PASSPHRASE = "edgefabric-local"
# Anvil's first dev account: a PUBLIC, well-known key (never use it off a dev chain).
ANVIL_DEV_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"


class EngineCommandError(AssertionError):
    """A pulumi command failed; the message carries the command and its output."""


def ensure_engine() -> Path:
    """Build or find the engine (cached after the first time); return the directory holding `pulumi`."""
    proc = subprocess.run(
        [str(REPO / "tools" / "pulumi-engine" / "build.sh")],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            "tools/pulumi-engine/build.sh failed; the engine tests need the Pulumi CLI.\n"
            f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"
        )
    found = shutil.which("pulumi", path=f"{TOOLS_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if found is None:
        raise RuntimeError(f"build.sh succeeded but no `pulumi` on {TOOLS_BIN} or PATH:\n{proc.stdout}")
    return Path(found).parent


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def free_udp_tcp_port(host: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP (a DNS server listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((host, 0))
            port = int(udp.getsockname()[1])
            with socket.socket() as tcp:
                try:
                    tcp.bind((host, port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no port free for both UDP and TCP on loopback")


@dataclass
class Engine:
    """Runs the CLI for one project directory with an isolated home and backend."""

    project: Path
    root: Path
    bin_dir: Path
    passphrase: str = LOCAL_PASSPHRASE
    extra_env: Mapping[str, str] | None = None

    @property
    def home(self) -> Path:
        return self.root / "pulumi-home"

    @property
    def backend_dir(self) -> Path:
        return self.root / "state"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            PULUMI_HOME=str(self.home),
            # metadata=skip: checkpoints are written to a temporary file and renamed, with no
            # `.attrs` sidecar that a killed run can leave empty (scripts/engine-env.sh).
            PULUMI_BACKEND_URL=f"file://{self.backend_dir}?metadata=skip",
            PULUMI_CONFIG_PASSPHRASE=self.passphrase,
            PULUMI_SKIP_UPDATE_CHECK="true",
            PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION="true",
            # Plain, uncoloured, non-interactive output the tests can read.
            PULUMI_COLOR="never",
            NO_COLOR="1",
            PATH=f"{self.bin_dir}{os.pathsep}{env.get('PATH', '')}",
        )
        env.pop("PULUMI_ACCESS_TOKEN", None)
        if self.extra_env:
            env.update(self.extra_env)
        return env

    def argv(self, args: Sequence[str]) -> list[str]:
        return [str(self.bin_dir / "pulumi"), *args, "--non-interactive", "--color", "never"]

    def run(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        self.home.mkdir(parents=True, exist_ok=True)
        self.backend_dir.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(
            self.argv(args), cwd=self.project, env=self.env(), capture_output=True, text=True, timeout=timeout
        )
        if check and proc.returncode != 0:
            raise EngineCommandError(describe(proc))
        return proc

    def start(self, *args: str, log: Path) -> subprocess.Popen[bytes]:
        """Start a command in its own process group (so a test can kill the whole tree)."""
        self.home.mkdir(parents=True, exist_ok=True)
        self.backend_dir.mkdir(parents=True, exist_ok=True)
        with open(log, "wb") as out:
            return subprocess.Popen(
                self.argv(args), cwd=self.project, env=self.env(), stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip

    def kill(self, proc: subprocess.Popen[bytes]) -> list[int]:
        """SIGKILL a started command and every process it left behind, as a crash would.

        Plugins run in their own process groups, so killing the CLI's group is not enough: the
        stragglers are found by the PULUMI_HOME this engine gave them (unique to the test).
        Returns the pids of the stragglers."""
        kill_group(proc, signal.SIGKILL)
        marker = f"PULUMI_HOME={self.home}".encode()
        stragglers = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                environ = (entry / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if marker in environ:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(entry.name), signal.SIGKILL)
                stragglers.append(int(entry.name))
        return stragglers

    def export(self, stack: str, show_secrets: bool = False) -> dict[str, Any]:
        args = ["stack", "export", "--stack", stack]
        if show_secrets:
            args.append("--show-secrets")
        return dict(json.loads(self.run(*args).stdout))

    def outputs(self, stack: str, show_secrets: bool = False) -> dict[str, Any]:
        args = ["stack", "output", "--json", "--stack", stack]
        if show_secrets:
            args.append("--show-secrets")
        return dict(json.loads(self.run(*args).stdout))

    def preview_json(self, stack: str, *extra: str) -> dict[str, Any]:
        """`pulumi preview --json`: the planned steps, machine-readable."""
        return dict(json.loads(self.run("preview", "--json", "--stack", stack, *extra).stdout))


def describe(proc: subprocess.CompletedProcess[str]) -> str:
    args = proc.args if isinstance(proc.args, list) else [str(proc.args)]
    return (
        f"`{' '.join(str(a) for a in args)}` exited {proc.returncode}\n"
        f"--- stdout (tail)\n{proc.stdout[-6000:]}\n--- stderr (tail)\n{proc.stderr[-4000:]}"
    )


def steps_by_op(preview: Mapping[str, Any]) -> dict[str, list[str]]:
    """{op: [type::name, ...]} from `pulumi preview --json` (ops: create, update, replace, same, ...)."""
    out: dict[str, list[str]] = {}
    for step in preview.get("steps", []):
        urn = str(step.get("urn", ""))
        parts = urn.split("::")
        label = f"{parts[-2].rsplit('$', 1)[-1]}::{parts[-1]}" if len(parts) >= 2 else urn
        out.setdefault(str(step.get("op")), []).append(label)
    return out


_DIFF_HEAD = re.compile(r"^\s*(?:[-+~]|\+-|-\+)\s+(\S+): \(([\w-]+)\)")
_DIFF_URN = re.compile(r"\[urn=(urn:pulumi:[^\]]+)\]")


def diff_ops(text: str) -> dict[str, str]:
    """{resource name: op} from the `--diff` text of preview/refresh, e.g. {"global-failover": "update"}."""
    ops: dict[str, str] = {}
    pending: str | None = None
    for line in text.splitlines():
        head = _DIFF_HEAD.match(line)
        if head:
            pending = head.group(2)
            continue
        urn = _DIFF_URN.search(line)
        if urn and pending:
            ops[urn.group(1).rsplit("::", 1)[-1]] = pending
            pending = None
    return ops


def resources_of_type(deployment: Mapping[str, Any], type_token: str) -> list[dict[str, Any]]:
    return [r for r in deployment["deployment"].get("resources", []) if r.get("type") == type_token]


def kill_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    """Kill a process started with start_new_session=True and every child it spawned."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    proc.wait(timeout=30)


def wait_for(predicate: Any, timeout: float, interval: float = 0.1, what: str = "condition") -> Any:
    """Poll until predicate() is truthy (bounded); return its value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


# --------------------------------------------------------------------------- the local stack


@dataclass
class LocalPorts:
    anvil: int
    pdns_api: int
    pdns_dns: int
    endpoint: int
    etcd: int = 0  # etcd's client port (the peer port is the next one); 0: the stack's default
    k8s_base: int = 0  # cluster i: k8s_base + 10i .. + 3 (devenv.cli); 0: the stack's default


def free_port_block(n: int, host: str = "127.0.0.1", avoid: range | None = None) -> int:
    """The first of `n` consecutive TCP ports free on `host` a moment ago, below the kernel's
    ephemeral range (so no outgoing connection takes one of them meanwhile)."""
    import random

    for _ in range(200):
        base = random.randrange(20000, 32000 - n)
        if avoid is not None and (base in avoid or base + n - 1 in avoid or avoid.start in range(base, base + n)):
            continue
        socks = []
        try:
            for port in range(base, base + n):
                sock = socket.socket()
                socks.append(sock)
                sock.bind((host, port))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError(f"no block of {n} free ports on {host}")


def pick_local_ports() -> LocalPorts:
    from devenv.endpoints import DEFAULT_IPS, free_common_port
    from devenv.loadbalancer import DEFAULT_POOLS

    # The endpoints listen at 127.0.1.x (and at the first address of the azure/gcp pools, for a
    # stack on local clusters); one port free on all of them.
    ips = [*DEFAULT_IPS.values(), *(p.replace(".0/24", ".1") for p in DEFAULT_POOLS.values())]
    k8s_base = free_port_block(40)
    return LocalPorts(
        anvil=free_port(),
        pdns_api=free_port(),
        pdns_dns=free_udp_tcp_port(),
        endpoint=free_common_port(ips),
        etcd=free_port_block(2, avoid=range(k8s_base, k8s_base + 40)),
        k8s_base=k8s_base,
    )


# How long the copied stacks keep a registration alive without heartbeats (see copy_project).
TEST_SERVICE_TTL_S = 3600


def kept_service_ttl(cfg: dict[str, Any]) -> int:
    """The registry's serviceTtlS for a test stack: at least TEST_SERVICE_TTL_S."""
    return max(int(cfg["edgefabric:registry"].get("serviceTtlS", 300)), TEST_SERVICE_TTL_S)


def copy_project(dest: Path, ports: LocalPorts, stack_file: Path | None = None) -> Path:
    """A throwaway copy of the project whose `local` stack points at the test's ports.

    Code directories are symlinked (the program resolves its own files from their real paths);
    the stack file (`stack_file`, default the repo's Pulumi.local.yaml) is rewritten with the
    ports, keeping its secure values and encryption salt. The health-check port is also the
    api-gateway's port that serves it, where the stack has one.
    """
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("Pulumi.yaml", "__main__.py"):
        shutil.copy2(REPO / name, dest / name)
    for name in ("components", "providers", "contracts", "devenv", "policies", "venv"):
        if (REPO / name).exists():
            (dest / name).symlink_to(REPO / name)
    doc = yaml.safe_load((stack_file or REPO / "Pulumi.local.yaml").read_text())
    cfg = doc["config"]
    cfg["edgefabric:registry"]["rpcUrl"] = f"http://127.0.0.1:{ports.anvil}"
    # Nothing heartbeats here (kwok runs no containers, so the agents never start): a module of
    # engine tests outlives the shipped 300 s TTL, and an expired service is rightly shown as a
    # replacement by the next preview. An hour keeps the tests about what they test.
    cfg["edgefabric:registry"]["serviceTtlS"] = kept_service_ttl(cfg)
    cfg["edgefabric:dns"]["backends"]["powerdns"]["apiUrl"] = f"http://127.0.0.1:{ports.pdns_api}"
    check = cfg["edgefabric:healthCheck"]["check"]
    for svc in (cfg.get("edgefabric:core") or {}).get("services") or []:
        for port in svc["ports"] if svc.get("kind") == "api-gateway" else []:
            if port["port"] == check["port"]:
                port["port"] = ports.endpoint
    check["port"] = ports.endpoint
    (dest / "Pulumi.local.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return dest


def local_env_args(project: Path, data_dir: Path, ports: LocalPorts) -> list[str]:
    """devenv.cli's global options for the copied stack and the test's ports."""
    args = ["--dir", str(data_dir), "--stack-file", str(project / "Pulumi.local.yaml"),
            "--pdns-dns-port", str(ports.pdns_dns)]
    if ports.etcd:
        args += ["--etcd-port", str(ports.etcd)]
    if ports.k8s_base:
        args += ["--k8s-port-base", str(ports.k8s_base)]
    return args


def local_env(project: Path, data_dir: Path, ports: LocalPorts, *args: str) -> subprocess.CompletedProcess[str]:
    """Drive devenv.cli (what scripts/local-env runs) for the copied stack."""
    proc = subprocess.run(
        [str(VENV_PYTHON), "-m", "devenv.cli", *local_env_args(project, data_dir, ports), *args],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    if proc.returncode not in (0, 3):
        raise AssertionError(describe(proc))
    return proc


def local_program_env(project: Path, data_dir: Path, ports: LocalPorts) -> dict[str, str]:
    """What the program needs from the environment for the copied stack: the kubeconfigs its
    `env:` references name (read from the files local-env wrote, never passed as arguments)
    and EDGEFABRIC_RESOLVER (the local PowerDNS, which resolves the aws load balancers' names)."""
    from devenv.cli import LocalEnv

    env = LocalEnv.load(data_dir, project / "Pulumi.local.yaml", pdns_dns_port=ports.pdns_dns,
                        etcd_port=ports.etcd or None, k8s_port_base=ports.k8s_base or None)
    return env.program_env()


def install_k8s_provider(home: Path) -> None:
    """The Kubernetes provider plugin (built from Go modules, cached) installed into `home`'s
    plugin cache: what `PULUMI_HOME=<home> tools/pulumi-kubernetes/build.sh` does."""
    proc = subprocess.run(
        ["bash", str(REPO / "tools" / "pulumi-kubernetes" / "build.sh")],
        env={**os.environ, "PULUMI_HOME": str(home)}, capture_output=True, text=True, timeout=3600,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError("tools/pulumi-kubernetes/build.sh failed; the local stack needs the Kubernetes "
                           f"provider plugin.\n{describe(proc)}")


# ------------------------------------------------------------ one deployed local stack per session


LOCAL_STACK = "local"


@dataclass
class LocalStackRun:
    """A throwaway copy of the project, its stand-ins and local clusters (scripts/local-env),
    and an engine whose environment carries what the program reads from it."""

    engine: Engine
    ports: LocalPorts
    local_env_dir: Path
    timings: dict[str, float]

    def local_env(self, *args: str) -> str:
        return local_env(self.engine.project, self.local_env_dir, self.ports, *args).stdout

    def local_env_handle(self) -> Any:
        """The devenv.cli LocalEnv of this run (clusters, their APIs, kubeconfigs)."""
        from devenv.cli import LocalEnv

        return LocalEnv.load(self.local_env_dir, self.engine.project / "Pulumi.local.yaml",
                             pdns_dns_port=self.ports.pdns_dns, etcd_port=self.ports.etcd or None,
                             k8s_port_base=self.ports.k8s_base or None)

    def record(self, what: str, seconds: float) -> None:
        self.timings.setdefault(what, round(seconds, 1))
        (self.engine.root / "timings.json").write_text(json.dumps(self.timings, indent=2))


_RUNS: dict[str, LocalStackRun] = {}


def shared_local_stack(request: Any, engine_bin: Path) -> LocalStackRun:
    """One local stack for the whole test session, shared by the modules that deploy it (the
    tiers take minutes to deploy): the stand-ins and clusters are started once, the stack is
    initialised once, and everything is destroyed and stopped when the session ends
    (`config.add_cleanup`). Each module leaves the stack in a state the next can start from.
    `request` is a pytest FixtureRequest."""
    if "local" in _RUNS:
        return _RUNS["local"]
    import sys

    config = request.config
    root = request.getfixturevalue("tmp_path_factory").mktemp("engine-local")
    ports = pick_local_ports()
    project = copy_project(root / "project", ports)
    engine = Engine(project=project, root=root, bin_dir=engine_bin)
    run = LocalStackRun(engine, ports, root / "local-env", {})
    started = time.monotonic()
    run.local_env("up")
    run.record("local_env_up_s", time.monotonic() - started)

    def teardown() -> None:
        try:
            engine.run("cancel", "--yes", "--stack", LOCAL_STACK, check=False)
            engine.run("destroy", "--yes", "--stack", LOCAL_STACK, check=False, timeout=900)
        finally:
            run.local_env("down", "--purge")
            _RUNS.pop("local", None)
            print(f"\nlocal stack timings (s): {json.dumps(run.timings)}", file=sys.__stderr__)

    config.add_cleanup(teardown)
    install_k8s_provider(engine.home)
    # PYTHONPATH: the program and the dynamic-provider host import this tree's packages, whatever
    # checkout the shared venv's editable install points at.
    engine.extra_env = {**local_program_env(project, run.local_env_dir, ports), "PYTHONPATH": str(REPO)}
    # The copied stack file keeps its encryption salt and secure values: the published local
    # passphrase opens them, exactly as for `make demo`.
    engine.run("stack", "init", LOCAL_STACK)
    _RUNS["local"] = run
    return run
