"""Three small HTTP endpoints standing in for the aws/azure/gcp ingress.

Each cloud's endpoint is its own process listening on a distinct loopback IP
(127.0.1.1 aws, 127.0.1.2 azure, 127.0.1.3 gcp) on one shared port, so a DNS
answer's IP tells which cloud it points at. Per endpoint:
- `GET /health` -> 200 "ok" or 503 "unhealthy", read from a control file at
  every request, so another process can flip it (`fail aws` / `heal aws`);
- `POST /admin/healthy` and `POST /admin/unhealthy` flip it over HTTP;
- `GET /` -> 200 with the cloud name;
- `stop(cloud)` kills the process (connection refused), `start(cloud)` brings
  it back. Pid files in `data_dir` let any process stop them.

With `tls_cert` and `tls_key` (PEM files) every endpoint speaks https instead, with that
certificate, so probes can check TLS the way they do against the clouds.

    eps = LocalEndpoints(data_dir, port=free_port())
    eps.start_all(); eps.set_healthy("aws", False); eps.stop("gcp"); eps.stop_all()

Run one directly: python -m devenv.endpoints serve --cloud aws --ip 127.0.1.1 --port 8080 --control FILE
[--tls-cert CERT.pem --tls-key KEY.pem]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from devenv.processes import terminate

DEFAULT_IPS: dict[str, str] = {"aws": "127.0.1.1", "azure": "127.0.1.2", "gcp": "127.0.1.3"}
REPO_ROOT = Path(__file__).resolve().parent.parent


class EndpointError(RuntimeError):
    pass


def free_common_port(ips: Iterable[str]) -> int:
    """A TCP port free on every one of `ips` (the endpoints share one port)."""
    ips = list(ips)
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind((ips[0], 0))
            port = int(probe.getsockname()[1])
        ok = True
        for ip in ips[1:]:
            with socket.socket() as s:
                try:
                    s.bind((ip, port))
                except OSError:
                    ok = False
                    break
        if ok:
            return port
    raise EndpointError(f"no common free port on {ips}")


@dataclass
class LocalEndpoints:
    data_dir: Path
    port: int
    ips: dict[str, str] | None = None
    # https: the certificate chain and key every endpoint serves (PEM files).
    tls_cert: Path | None = None
    tls_key: Path | None = None

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.ips is None:
            self.ips = dict(DEFAULT_IPS)

    # ---- paths
    def control_file(self, cloud: str) -> Path:
        return self.data_dir / f"endpoint-{cloud}.state"

    def pid_file(self, cloud: str) -> Path:
        return self.data_dir / f"endpoint-{cloud}.pid"

    def _ip(self, cloud: str) -> str:
        assert self.ips is not None
        if cloud not in self.ips:
            raise EndpointError(f"cloud: {cloud!r} is unknown; allowed: {sorted(self.ips)}")
        return self.ips[cloud]

    def address(self, cloud: str) -> str:
        return self._ip(cloud)

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert else "http"

    def health_url(self, cloud: str) -> str:
        return f"{self.scheme}://{self._ip(cloud)}:{self.port}/health"

    def clouds(self) -> list[str]:
        assert self.ips is not None
        return sorted(self.ips)

    # ---- control
    def set_healthy(self, cloud: str, healthy: bool) -> None:
        """Flip /health (works from any process, running or not)."""
        self._ip(cloud)
        tmp = self.control_file(cloud).with_suffix(".tmp")
        tmp.write_text("healthy" if healthy else "unhealthy")
        tmp.replace(self.control_file(cloud))  # atomic: a probe never reads half a file

    def is_running(self, cloud: str) -> bool:
        pid = self._pid(cloud)
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    def _pid(self, cloud: str) -> int | None:
        try:
            return int(self.pid_file(cloud).read_text())
        except (FileNotFoundError, ValueError):
            return None

    def start(self, cloud: str, ready_timeout_s: float = 10.0) -> None:
        ip = self._ip(cloud)
        if self.is_running(cloud):
            return
        if not self.control_file(cloud).exists():
            self.set_healthy(cloud, True)
        log = open(self.data_dir / f"endpoint-{cloud}.log", "ab")  # noqa: SIM115 - handed to the child
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        proc = subprocess.Popen(
            [sys.executable, "-m", "devenv.endpoints", "serve", "--cloud", cloud, "--ip", ip,
             "--port", str(self.port), "--control", str(self.control_file(cloud)),
             *(["--tls-cert", str(self.tls_cert), "--tls-key", str(self.tls_key)] if self.tls_cert else [])],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True,
        )  # fmt: skip
        log.close()
        self.pid_file(cloud).write_text(str(proc.pid))
        deadline = time.monotonic() + ready_timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise EndpointError(f"endpoint {cloud} exited with {proc.returncode}; see {log.name}")
            try:
                with socket.create_connection((ip, self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop(cloud)
        raise EndpointError(f"endpoint {cloud} did not listen on {ip}:{self.port} within {ready_timeout_s}s")

    def stop(self, cloud: str, timeout_s: float = 5.0) -> None:
        pid = self._pid(cloud)
        self.pid_file(cloud).unlink(missing_ok=True)
        if pid is None:
            return
        terminate(pid, timeout_s)

    def start_all(self) -> None:
        for cloud in self.clouds():
            self.start(cloud)

    def stop_all(self) -> None:
        for cloud in self.clouds():
            self.stop(cloud)

    def status(self) -> dict[str, dict[str, object]]:
        out: dict[str, dict[str, object]] = {}
        for cloud in self.clouds():
            try:
                state = self.control_file(cloud).read_text().strip()
            except FileNotFoundError:
                state = "healthy"
            out[cloud] = {
                "ip": self._ip(cloud),
                "port": self.port,
                "running": self.is_running(cloud),
                "health": state,
            }
        return out


# --------------------------------------------------------------------- server side


def _handler(cloud: str, control: Path) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _send(self, code: int, text: str) -> None:
            body = text.encode()
            self.send_response(code)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _healthy(self) -> bool:
            try:
                return control.read_text().strip() != "unhealthy"
            except FileNotFoundError:
                return True

        def do_GET(self) -> None:
            if self.path.split("?")[0] == "/health":
                ok = self._healthy()
                self._send(200 if ok else 503, "ok\n" if ok else "unhealthy\n")
            else:
                self._send(200, json.dumps({"cloud": cloud}) + "\n")

        def do_HEAD(self) -> None:
            self.do_GET()

        def do_POST(self) -> None:
            if self.path in ("/admin/healthy", "/admin/unhealthy"):
                tmp = control.with_suffix(".tmp")
                tmp.write_text(self.path.rsplit("/", 1)[1])
                tmp.replace(control)
                self._send(200, self.path.rsplit("/", 1)[1] + "\n")
            else:
                self._send(404, "not found\n")

        def log_message(self, format: str, *args: object) -> None:
            return

    return Handler


class _TlsServer(ThreadingHTTPServer):
    """https: the handshake runs in the request's own thread, so a slow or failing client
    never holds up the accept loop."""

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], tls: ssl.SSLContext) -> None:
        super().__init__(address, handler)
        self.tls = tls

    def finish_request(self, request, client_address) -> None:
        try:
            tls_request = self.tls.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return  # the client rejected our certificate, or went away: its probe says why
        try:
            super().finish_request(tls_request, client_address)
        finally:
            self.shutdown_request(tls_request)  # the TLS socket owns the connection now

    def handle_error(self, request, client_address) -> None:
        return


def serve(cloud: str, ip: str, port: int, control: Path,
          tls_cert: Path | None = None, tls_key: Path | None = None) -> None:
    if tls_cert is not None:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(tls_cert, tls_key)
        server: ThreadingHTTPServer = _TlsServer((ip, port), _handler(cloud, control), tls)
    else:
        server = ThreadingHTTPServer((ip, port), _handler(cloud, control))
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        server.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devenv.endpoints")
    sub = parser.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="run one endpoint in the foreground")
    s.add_argument("--cloud", required=True)
    s.add_argument("--ip", required=True)
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--control", type=Path, required=True)
    s.add_argument("--tls-cert", type=Path, help="serve https with this certificate chain (PEM)")
    s.add_argument("--tls-key", type=Path, help="the certificate's private key (PEM)")
    args = parser.parse_args(argv)
    serve(args.cloud, args.ip, args.port, args.control, args.tls_cert, args.tls_key)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
