"""`scripts/local-env`: start, stop and fail the local stand-ins of the `local` stack.

    python -m devenv.cli up              anvil + PowerDNS + three cloud endpoints (idempotent)
    python -m devenv.cli status [--json] what runs where
    python -m devenv.cli fail aws        aws's /health answers 503 from now on
    python -m devenv.cli heal aws        ... and 200 again
    python -m devenv.cli down [--purge]  stop everything (--purge also deletes chain and DNS data)

Where things run comes from the stack file (Pulumi.local.yaml by default), so the stand-ins and
the stack cannot drift apart: the anvil port from `edgefabric:registry.rpcUrl`, the PowerDNS API
port and zone from `edgefabric:dns.backends.powerdns`, the endpoint addresses from
`edgefabric:clouds.<cloud>.ingress.address` and their port from `edgefabric:healthCheck.check.port`.
The DNS (UDP/TCP) port of PowerDNS is not part of the stack; it defaults to 18053.

Pids, logs and data live in <repo>/.local-env/ (or --dir). The layout used by `up` is recorded
there (env.json), so `status`, `fail`, `heal` and `down` act on what actually runs.
Engine-free: never import pulumi here.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sys
import urllib.error
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from devenv import anvil, endpoints, powerdns
from devenv.processes import alive, terminate
from edgefabric.config.vocab import CLOUDS

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DIR = REPO_ROOT / ".local-env"
DEFAULT_STACK_FILE = REPO_ROOT / "Pulumi.local.yaml"

# The local PowerDNS API key. It guards a server bound to 127.0.0.1 only and is published on
# purpose, like the anvil dev key: Pulumi.local.yaml holds it as the secret `powerdnsApiKey`.
LOCAL_PDNS_API_KEY = "edgefabric-local-pdns-key"
DEFAULT_PDNS_DNS_PORT = 18053


class LocalEnvError(RuntimeError):
    """A user-facing problem: says what is wrong and what to do."""


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
    return layout


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
        )

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
    def up(self) -> list[str]:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.env_file.write_text(json.dumps(asdict(self.layout), indent=2) + "\n")
        return [
            f"anvil:     {self.start_anvil()}",
            f"powerdns:  {self.start_pdns()}",
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
            f"powerdns:  {self.stop_pdns()}",
            f"anvil:     {self.stop_anvil()}",
        ]
        if purge and self.dir.exists():
            shutil.rmtree(self.dir)
            lines.append(f"purged {self.dir} (chain state, DNS database, logs)")
        return lines

    def status(self) -> dict[str, Any]:
        return {
            "dir": str(self.dir),
            "anvil": self.anvil_status(),
            "powerdns": self.pdns_status(),
            "endpoints": self.endpoints_status(),
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
    lines.append(f"  query:     dig @127.0.0.1 -p {p['dns'].split(':')[1].split()[0]} {p['record']} A")
    return "\n".join(lines)


def all_running(st: dict[str, Any]) -> bool:
    return bool(
        st["anvil"]["running"] and st["powerdns"]["running"] and all(e["running"] for e in st["endpoints"].values())
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
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("up", help="start whatever is not running")
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
    )
    try:
        if args.cmd == "up":
            for line in env.up():
                print(line)
            print(format_status(env.status()))
        elif args.cmd == "down":
            for line in env.down(purge=args.purge):
                print(line)
        elif args.cmd == "status":
            st = env.status()
            print(json.dumps(st, indent=2) if args.json else format_status(st))
            return 0 if all_running(st) else 3
        elif args.cmd in ("fail", "heal"):
            print(env.set_health(args.cloud, healthy=args.cmd == "heal"))
    except (LocalEnvError, anvil.AnvilError, powerdns.PowerDnsStartError, endpoints.EndpointError) as exc:
        print(f"local-env {args.cmd}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
