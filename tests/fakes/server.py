"""A threaded loopback HTTP server base for the fakes, with a violation log."""

from __future__ import annotations

import json
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit


@dataclass
class Reply:
    status: int
    body: Any = None


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any
    raw_body: bytes


@dataclass
class FakeServer:
    """Subclasses implement handle(); every schema violation goes to `violations`."""

    host: str = "127.0.0.1"
    violations: list[str] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, req: Request) -> Reply:  # pragma: no cover - abstract
        raise NotImplementedError

    def reject(self, req: Request, problems: list[str], status: int = 400) -> Reply:
        with self.lock:
            self.violations += [f"{req.method} {req.path}: {p}" for p in problems]
        return self.error_reply(status, "; ".join(problems))

    def error_reply(self, status: int, message: str) -> Reply:
        return Reply(status, {"error": {"code": str(status), "message": message}})

    def start(self) -> FakeServer:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                query: dict[str, list[str]] = {}
                for k, v in parse_qsl(parts.query, keep_blank_values=True):
                    query.setdefault(k, []).append(v)
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw
                req = Request(
                    self.command,
                    parts.path,
                    query,
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                    raw,
                )
                with fake.lock:
                    fake.requests.append(req)
                if isinstance(body, bytes):
                    reply = fake.reject(req, ["request body is not JSON"])
                else:
                    try:
                        reply = fake.handle(req)
                    except Exception as exc:
                        with fake.lock:
                            fake.violations.append(f"fake crashed on {req.method} {req.path}: {exc!r}")
                        reply = fake.error_reply(500, f"fake error: {exc!r}")
                data = b"" if reply.body is None else json.dumps(reply.body).encode()
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_PATCH = do_DELETE = _any

            def log_message(self, format: str, *args: object) -> None:
                return

        with socket.socket() as s:
            s.bind((self.host, 0))
            port = s.getsockname()[1]
        self._server = ThreadingHTTPServer((self.host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        self.port = port
        return self

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
