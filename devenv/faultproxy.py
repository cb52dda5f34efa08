"""A JSON-RPC fault proxy on loopback: forwards POSTs to a node, or fails them on purpose.

Sits between a chain client and anvil in the fault tests and in bench/registry.py. Modes:

  pass    forward the request and relay the answer
  refuse  nothing listens on the port: connections are refused
  429     answer HTTP 429 Too Many Requests (a hosted node's rate limit)
  5xx     answer HTTP 502 Bad Gateway
  stall   read the request and answer nothing until the mode changes (the client times out)
  drop    read the request and close the connection without an answer

Each request is one connection (HTTP/1.0), so a mode change applies to the very next request.
Engine-free and standard library only.
"""

from __future__ import annotations

import http.client
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal
from urllib.parse import urlsplit

Mode = Literal["pass", "refuse", "429", "5xx", "stall", "drop"]
MODES: tuple[Mode, ...] = ("pass", "refuse", "429", "5xx", "stall", "drop")
LOOPBACK = "127.0.0.1"


class FaultProxy:
    """`start()` listens on a free loopback port; `url` is what the client uses; `set(mode)`."""

    def __init__(self, upstream: str, port: int = 0) -> None:
        parsed = urlsplit(upstream)
        if parsed.hostname not in (LOOPBACK, "localhost"):
            raise ValueError(f"the fault proxy only forwards to loopback, not {parsed.hostname}")
        self._upstream = (parsed.hostname or LOOPBACK, parsed.port or 80)
        self._port = port
        self._mode: Mode = "pass"
        self._changed = threading.Condition()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.requests: dict[Mode, int] = dict.fromkeys(MODES, 0)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self._port}"

    @property
    def mode(self) -> Mode:
        return self._mode

    def start(self) -> FaultProxy:
        self._listen()
        return self

    def stop(self) -> None:
        self.set("pass")  # releases stalled handlers
        self._close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def set(self, mode: Mode) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown fault mode {mode!r}; one of {MODES}")
        with self._changed:
            previous, self._mode = self._mode, mode
            self._changed.notify_all()
        if mode == "refuse" and previous != "refuse":
            self._close()
        elif previous == "refuse" and mode != "refuse":
            self._listen()

    # -- internals

    def _listen(self) -> None:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *_: object) -> None:  # quiet: tests read their own logs
                return None

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                proxy._serve(self, body)

        server = ThreadingHTTPServer((LOOPBACK, self._port), Handler)
        server.daemon_threads = True
        self._port = int(server.server_address[1])
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def _close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _serve(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        mode = self._mode
        self.requests[mode] += 1
        if mode == "stall":
            with self._changed:  # hold the request until the mode changes (or 60 s)
                self._changed.wait_for(lambda: self._mode != "stall", timeout=60)
            handler.close_connection = True
            return  # no answer at all: the client has timed out by now
        if mode == "drop":
            handler.close_connection = True
            return
        if mode in ("429", "5xx"):
            status = 429 if mode == "429" else 502
            text = b"rate limited" if mode == "429" else b"bad gateway"
            handler.send_response(status)
            handler.send_header("Content-Type", "text/plain")
            handler.send_header("Content-Length", str(len(text)))
            handler.end_headers()
            handler.wfile.write(text)
            return
        conn = http.client.HTTPConnection(*self._upstream, timeout=30)
        try:
            conn.request("POST", "/", body, {"Content-Type": "application/json"})
            reply = conn.getresponse()
            data = reply.read()
            handler.send_response(reply.status)
            handler.send_header("Content-Type", reply.getheader("Content-Type") or "application/json")
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
        finally:
            conn.close()


def wait_for_mode_requests(proxy: FaultProxy, mode: Mode, count: int, timeout: float = 30.0) -> None:
    """Block until `count` requests met `mode` (a test's "the fault was really hit")."""
    deadline = time.monotonic() + timeout
    while proxy.requests[mode] < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {proxy.requests[mode]} of {count} requests met mode {mode!r}")
        time.sleep(0.01)
