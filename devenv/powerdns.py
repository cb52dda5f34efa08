"""A real pdns_server on loopback, for tests, the benchmark and scripts/local-env.

Debian packages: pdns-server pdns-backend-sqlite3. The server runs in the
foreground (no guardian, no daemon) with a sqlite3 database in `data_dir`,
the REST API on `api_port` guarded by an api key, and LUA records enabled.

    server = start_powerdns(PowerDnsSettings(data_dir=..., zone="edgefabric.local."))
    ... server.api_url, server.dns_port, server.api_key ...
    server.stop()
"""

from __future__ import annotations

import json
import secrets
import shutil
import socket
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import dns.resolver

from devenv.processes import terminate

SCHEMA_PATHS = (
    Path("/usr/share/pdns-backend-sqlite3/schema/schema.sqlite3.sql"),
    Path("/usr/share/doc/pdns-backend-sqlite3/schema.sqlite3.sql"),
)
INSTALL_HINT = "apt-get update && apt-get install -y pdns-server pdns-backend-sqlite3"


class PowerDnsStartError(RuntimeError):
    pass


def free_port(host: str = "127.0.0.1", kind: int = socket.SOCK_STREAM) -> int:
    """A port currently free on host (TCP, or UDP with kind=SOCK_DGRAM)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def free_dns_port(host: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP (DNS listens on both)."""
    for _ in range(50):
        port = free_port(host, socket.SOCK_DGRAM)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind((host, port))
            return port
        except OSError:
            continue
    raise PowerDnsStartError("no free DNS port found on loopback")


@dataclass(frozen=True)
class PowerDnsSettings:
    data_dir: Path
    zone: str = "edgefabric.local."
    host: str = "127.0.0.1"
    dns_port: int = 0  # 0: pick a free one
    api_port: int = 0
    api_key: str = ""  # "": generate one
    extra_config: dict[str, str] = field(default_factory=dict)


@dataclass
class PowerDnsServer:
    settings: PowerDnsSettings
    dns_port: int
    api_port: int
    api_key: str
    pid: int
    _proc: subprocess.Popen | None = None

    @property
    def api_url(self) -> str:
        return f"http://{self.settings.host}:{self.api_port}"

    @property
    def zone(self) -> str:
        return self.settings.zone

    def stop(self, timeout_s: float = 10.0) -> None:
        terminate(self.pid, timeout_s)
        if self._proc is not None:
            try:
                self._proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        pidfile = self.settings.data_dir / "pdns.pid.json"
        pidfile.unlink(missing_ok=True)

    def resolver(self, lifetime: float = 2.0) -> dns.resolver.Resolver:
        """A dnspython resolver that asks this server only, with no cache: every query is a
        fresh pick of the LUA record."""
        r = dns.resolver.Resolver(configure=False)
        r.nameservers = ["127.0.0.1"]
        r.port = self.dns_port
        r.lifetime = lifetime
        r.cache = None
        return r

    def describe(self) -> dict[str, object]:
        return {"pid": self.pid, "dns_port": self.dns_port, "api_url": self.api_url, "zone": self.zone}


def _binary() -> str:
    path = shutil.which("pdns_server") or (
        "/usr/sbin/pdns_server" if Path("/usr/sbin/pdns_server").exists() else None
    )
    if not path:
        raise PowerDnsStartError(f"pdns_server not found; install it: {INSTALL_HINT}")
    return path


def _init_db(db: Path) -> None:
    if db.exists():
        return
    schema = next((p for p in SCHEMA_PATHS if p.exists()), None)
    if schema is None:
        raise PowerDnsStartError(f"sqlite3 schema for PowerDNS not found; install it: {INSTALL_HINT}")
    with sqlite3.connect(db) as conn:
        conn.executescript(schema.read_text())


def _write_config(s: PowerDnsSettings, dns_port: int, api_port: int, api_key: str) -> None:
    conf = {
        "launch": "gsqlite3",
        "gsqlite3-database": str(s.data_dir / "pdns.sqlite3"),
        "local-address": s.host,
        "local-port": str(dns_port),
        "api": "yes",
        "api-key": api_key,
        "webserver": "yes",
        "webserver-address": s.host,
        "webserver-port": str(api_port),
        "webserver-allow-from": "127.0.0.0/8",
        "enable-lua-records": "yes",
        "daemon": "no",
        "guardian": "no",
        "disable-syslog": "yes",
        "socket-dir": str(s.data_dir),
        "loglevel": "4",
        # LUA answers must not be cached, or weight changes would lag and the
        # 2,000-resolution share test would see one frozen pick.
        "cache-ttl": "0",
        "query-cache-ttl": "0",
        "negquery-cache-ttl": "0",
        "zone-cache-refresh-interval": "0",
        "distributor-threads": "1",
        "receiver-threads": "1",
    }
    conf.update(s.extra_config)
    (s.data_dir / "pdns.conf").write_text("".join(f"{k}={v}\n" for k, v in conf.items()))


def _api(method: str, url: str, api_key: str, body: object | None = None) -> tuple[int, object]:
    req = urllib.request.Request(url, method=method, data=None if body is None else json.dumps(body).encode())
    req.add_header("X-API-Key", api_key)
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")


def ensure_zone(api_url: str, api_key: str, zone: str) -> None:
    """Create the zone (Native, with an NS) unless it exists."""
    status, _ = _api("GET", f"{api_url}/api/v1/servers/localhost/zones/{zone}", api_key)
    if status == 200:
        return
    body = {"name": zone, "kind": "Native", "nameservers": [f"ns1.{zone}"]}
    status, detail = _api("POST", f"{api_url}/api/v1/servers/localhost/zones", api_key, body)
    if status not in (201, 204):
        raise PowerDnsStartError(f"creating zone {zone!r} failed: HTTP {status}: {detail}")


def start_powerdns(settings: PowerDnsSettings, ready_timeout_s: float = 20.0) -> PowerDnsServer:
    """Start pdns_server, wait for its API, create the zone. Raises with a hint."""
    data_dir = settings.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    zone = settings.zone if settings.zone.endswith(".") else settings.zone + "."
    settings = PowerDnsSettings(
        data_dir=data_dir,
        zone=zone,
        host=settings.host,
        dns_port=settings.dns_port or free_dns_port(settings.host),
        api_port=settings.api_port or free_port(settings.host),
        api_key=settings.api_key or secrets.token_hex(16),
        extra_config=settings.extra_config,
    )
    _init_db(data_dir / "pdns.sqlite3")
    _write_config(settings, settings.dns_port, settings.api_port, settings.api_key)
    log = open(data_dir / "pdns.log", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        [_binary(), f"--config-dir={data_dir}", "--config-name="],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # Ctrl-C in a test run must not hit it twice
    )
    log.close()
    server = PowerDnsServer(settings, settings.dns_port, settings.api_port, settings.api_key, proc.pid, proc)
    api = server.api_url
    deadline = time.monotonic() + ready_timeout_s
    while True:
        if proc.poll() is not None:
            tail = (data_dir / "pdns.log").read_text(errors="replace")[-2000:]
            raise PowerDnsStartError(f"pdns_server exited with {proc.returncode}:\n{tail}")
        try:
            status, _ = _api("GET", f"{api}/api/v1/servers/localhost", settings.api_key)
            if status == 200:
                break
        except OSError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise PowerDnsStartError(f"pdns_server API not ready on {api} after {ready_timeout_s}s")
        time.sleep(0.1)
    ensure_zone(api, settings.api_key, zone)
    # A pid file lets another process (scripts/local-env stop) find and stop it.
    (data_dir / "pdns.pid.json").write_text(
        json.dumps({"pid": proc.pid, **server.describe(), "api_key_file": str(data_dir / "api-key")})
    )
    key_file = data_dir / "api-key"
    key_file.write_text(settings.api_key)
    key_file.chmod(0o600)
    return server


def stop_from_data_dir(data_dir: Path) -> bool:
    """Stop a server started by another process; False if none was recorded."""
    pidfile = data_dir / "pdns.pid.json"
    if not pidfile.exists():
        return False
    info = json.loads(pidfile.read_text())
    terminate(int(info["pid"]))
    pidfile.unlink(missing_ok=True)
    return True
