"""Start and stop a local anvil chain on a loopback port.

Used by the test fixtures and by scripts/local-env. The binary comes from the pinned npm
package in contracts/ (`npm ci` there, or `make contracts`); nothing is downloaded at run time.
Engine-free: never import pulumi here.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

REPO_ROOT = Path(__file__).resolve().parent.parent
CONTRACTS_DIR = REPO_ROOT / "contracts"
DEFAULT_CHAIN_ID = 31337
LOOPBACK = "127.0.0.1"


class AnvilError(RuntimeError):
    """anvil is missing, failed to start, or did not become ready."""


def find_anvil_binary(contracts_dir: Path = CONTRACTS_DIR) -> Path:
    """Path of the native anvil binary shipped by the pinned @foundry-rs/anvil npm package.

    We run the platform binary directly (not the node `bin.mjs` shim) so that stopping the
    process stops anvil itself. `EDGEFABRIC_ANVIL` overrides the lookup.
    """
    override = os.environ.get("EDGEFABRIC_ANVIL")
    if override:
        path = Path(override)
        if not path.is_file():
            raise AnvilError(f"EDGEFABRIC_ANVIL={override!r} is not a file")
        return path
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(os.uname().machine)
    system = os.uname().sysname.lower()
    modules = contracts_dir / "node_modules" / "@foundry-rs"
    candidates = [modules / f"anvil-{system}-{arch}" / "bin" / "anvil"]
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    raise AnvilError(
        f"anvil binary not found at {candidates[0]}: run `npm ci` in {contracts_dir} (or `make contracts`)"
    )


def free_loopback_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def rpc_call(rpc_url: str, method: str, params: list[object] | None = None, timeout: float = 5.0) -> object:
    """One JSON-RPC call with the standard library (devenv must not need web3)."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}).encode()
    request = urllib.request.Request(rpc_url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        reply = json.loads(response.read())
    if "error" in reply:
        raise AnvilError(f"{method} failed: {reply['error']}")
    return reply["result"]


def wait_ready(rpc_url: str, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None) -> int:
    """Poll eth_chainId until anvil answers; return the chain id. Raises AnvilError on timeout/exit."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AnvilError(f"anvil exited with code {proc.returncode} before becoming ready")
        try:
            return int(str(rpc_call(rpc_url, "eth_chainId", timeout=1.0)), 16)
        except (urllib.error.URLError, ConnectionError, OSError, AnvilError) as exc:
            last_error = exc
            time.sleep(0.05)
    raise AnvilError(f"anvil at {rpc_url} not ready after {timeout}s: {last_error}")


@dataclass
class AnvilProcess:
    """A running anvil. `stop()` ends it (and dumps state to `state_file` if one was given)."""

    proc: subprocess.Popen[bytes]
    port: int
    chain_id: int
    state_file: Path | None
    log_path: Path | None
    private_keys: list[str] = field(repr=False, default_factory=list)
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def rpc_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after `timeout`. SIGTERM lets anvil write its --state file."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=timeout)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> AnvilProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_anvil(
    port: int | None = None,
    *,
    data_dir: Path | None = None,
    state_file: Path | None = None,
    chain_id: int = DEFAULT_CHAIN_ID,
    block_time: float | None = None,
    accounts: int = 10,
    startup_timeout: float = 30.0,
    detach: bool = False,
) -> AnvilProcess:
    """Start anvil on 127.0.0.1:`port` (a free port if None) and wait until it answers.

    data_dir: where the log (`anvil.log`) and the dev-account file (`anvil-accounts.json`) go;
              without it the log is discarded and accounts are read from a temporary file.
    state_file: persist the chain here (`--state`): loaded at start, written at stop.
    block_time: seconds per block; None means automine (a block per transaction).
    detach: start in its own session so it outlives the caller (scripts/local-env).
    """
    binary = find_anvil_binary()
    port = port or free_loopback_port()
    if data_dir is None:
        import tempfile

        data_dir = Path(tempfile.mkdtemp(prefix="anvil-"))
        log_path = None
    else:
        data_dir.mkdir(parents=True, exist_ok=True)
        log_path = data_dir / "anvil.log"
    accounts_file = data_dir / "anvil-accounts.json"
    accounts_file.unlink(missing_ok=True)
    cmd = [
        str(binary),
        "--host", LOOPBACK,
        "--port", str(port),
        "--chain-id", str(chain_id),
        "--accounts", str(accounts),
        "--config-out", str(accounts_file),
    ]
    if state_file is not None:
        state_file.parent.mkdir(parents=True, exist_ok=True)
        cmd += ["--state", str(state_file)]
    if block_time is not None:
        cmd += ["--block-time", str(block_time)]
    log: IO[bytes] | None = open(log_path, "ab") if log_path else None  # noqa: SIM115 (closed in stop)
    proc = subprocess.Popen(
        cmd,
        stdout=log if log else subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=detach,
    )
    handle = AnvilProcess(proc=proc, port=port, chain_id=chain_id, state_file=state_file, log_path=log_path, _log=log)
    try:
        got = wait_ready(handle.rpc_url, timeout=startup_timeout, proc=proc)
        if got != chain_id:
            raise AnvilError(f"anvil on port {port} reports chain id {got}, expected {chain_id}")
        handle.private_keys = _read_dev_keys(accounts_file)
    except BaseException:
        handle.stop()
        raise
    return handle


def _read_dev_keys(accounts_file: Path) -> list[str]:
    # anvil writes the file just before it starts serving; it is there once RPC answers.
    for _ in range(100):
        if accounts_file.exists():
            try:
                return list(json.loads(accounts_file.read_text())["private_keys"])
            except (json.JSONDecodeError, KeyError):
                pass
        time.sleep(0.02)
    raise AnvilError(f"anvil did not write its account file {accounts_file}")

