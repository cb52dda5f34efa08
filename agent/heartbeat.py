"""Heartbeat agent: calls updateHeartbeat for each configured service every ttl/3.

Runs as a container (`python -m agent.heartbeat`, see agent/Dockerfile) deployed by the
BlockchainRegistry component next to the cloud-core workloads. Configuration is environment only:

  EDGEFABRIC_RPC_URL             http(s) JSON-RPC URL of the chain
  EDGEFABRIC_CHAIN_ID            expected chain id (the agent refuses another chain)
  EDGEFABRIC_REGISTRY_ADDRESS    ServiceRegistry address
  EDGEFABRIC_SERVICE_IDS         comma-separated 0x service ids to keep alive
  EDGEFABRIC_HEARTBEAT_INTERVAL_S  seconds between rounds; default: the smallest on-chain ttl / 3
  EDGEFABRIC_DEPLOYER_KEY        the owner's private key, or
  EDGEFABRIC_DEPLOYER_KEY_FILE   a file holding it (a mounted Kubernetes Secret)
  EDGEFABRIC_ALIVE_FILE          touched after every successful round (liveness probe), default /tmp/heartbeat-alive

The key is only ever handed to the signer; it is never logged.
A service that is deregistered or already expired cannot be revived by a heartbeat (the contract
refuses): the agent logs it as an error every round and exits non-zero with --once; the next
`pulumi up` registers it again.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from edgefabric.chain.client import ChainClient, ChainError, connect, load_account
from edgefabric.chain.registry import Registry, load_artifact

log = logging.getLogger("agent.heartbeat")


class AgentConfigError(ValueError):
    """A missing or malformed environment variable; the message names it."""


@dataclass(frozen=True)
class AgentConfig:
    rpc_url: str
    chain_id: int
    registry_address: str
    service_ids: tuple[str, ...]
    interval_s: float | None
    alive_file: Path

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> AgentConfig:
        def need(name: str) -> str:
            value = env.get(name, "").strip()
            if not value:
                raise AgentConfigError(f"{name} is required")
            return value

        chain = need("EDGEFABRIC_CHAIN_ID")
        if not chain.isdigit() or int(chain) <= 0:
            raise AgentConfigError(f"EDGEFABRIC_CHAIN_ID must be a positive integer, got {chain!r}")
        ids = tuple(s.strip() for s in need("EDGEFABRIC_SERVICE_IDS").split(",") if s.strip())
        bad = [s for s in ids if not (s.startswith("0x") and len(s) == 66)]
        if bad:
            raise AgentConfigError(f"EDGEFABRIC_SERVICE_IDS: not 32-byte 0x ids: {bad}")
        interval = env.get("EDGEFABRIC_HEARTBEAT_INTERVAL_S", "").strip()
        try:
            interval_s = float(interval) if interval else None
        except ValueError:
            raise AgentConfigError(f"EDGEFABRIC_HEARTBEAT_INTERVAL_S must be a number, got {interval!r}") from None
        if interval_s is not None and interval_s <= 0:
            raise AgentConfigError(f"EDGEFABRIC_HEARTBEAT_INTERVAL_S must be > 0, got {interval_s}")
        return cls(
            rpc_url=need("EDGEFABRIC_RPC_URL"),
            chain_id=int(chain),
            registry_address=need("EDGEFABRIC_REGISTRY_ADDRESS"),
            service_ids=ids,
            interval_s=interval_s,
            alive_file=Path(env.get("EDGEFABRIC_ALIVE_FILE", "/tmp/heartbeat-alive")),
        )


def read_key(env: Mapping[str, str]) -> str:
    """The key from EDGEFABRIC_DEPLOYER_KEY or the file named by EDGEFABRIC_DEPLOYER_KEY_FILE."""
    path = env.get("EDGEFABRIC_DEPLOYER_KEY_FILE", "").strip()
    if path:
        try:
            return Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise AgentConfigError(f"EDGEFABRIC_DEPLOYER_KEY_FILE={path!r} cannot be read: {exc.strerror}") from None
    key = env.get("EDGEFABRIC_DEPLOYER_KEY", "").strip()
    if not key:
        raise AgentConfigError("set EDGEFABRIC_DEPLOYER_KEY or EDGEFABRIC_DEPLOYER_KEY_FILE")
    return key


@dataclass(frozen=True)
class RoundResult:
    sent: tuple[str, ...]
    failed: tuple[str, ...]


class HeartbeatAgent:
    def __init__(self, config: AgentConfig, key: str) -> None:
        self.config = config
        w3 = connect(config.rpc_url, expected_chain_id=config.chain_id)
        client = ChainClient(w3, load_account(key), abi=load_artifact()["abi"])
        self.registry = Registry(client, config.registry_address)

    def interval(self) -> float:
        """The configured interval, or a third of the smallest TTL among the services."""
        if self.config.interval_s is not None:
            return self.config.interval_s
        ttls = [r.ttl for sid in self.config.service_ids if (r := self.registry.get_service(sid)) is not None]
        if not ttls:
            raise ChainError(f"none of the services {list(self.config.service_ids)} exists on the registry")
        return max(min(ttls) / 3.0, 1.0)

    def beat_once(self) -> RoundResult:
        """One heartbeat per live service, sent pipelined, then every receipt awaited."""
        pending, failed = [], []
        for sid in self.config.service_ids:
            try:
                pending.append((sid, self.registry.send_heartbeat(sid)))
            except ChainError as exc:  # includes reverts: deregistered, expired, not ours
                log.error("heartbeat for %s not sent: %s", sid, exc)
                failed.append(sid)
        sent = []
        for sid, p in pending:
            try:
                self.registry.client.wait(p)
                sent.append(sid)
            except ChainError as exc:
                log.error("heartbeat for %s failed: %s", sid, exc)
                failed.append(sid)
        if sent and not failed:
            self.config.alive_file.parent.mkdir(parents=True, exist_ok=True)
            self.config.alive_file.touch()
        log.info("heartbeat round: %d sent, %d failed", len(sent), len(failed))
        return RoundResult(tuple(sent), tuple(failed))

    def run(self, stop: threading.Event, max_rounds: int | None = None) -> int:
        """Beat every interval until `stop` is set (SIGTERM) or `max_rounds` ran. Returns rounds run."""
        rounds = 0
        while not stop.is_set() and (max_rounds is None or rounds < max_rounds):
            started = time.monotonic()
            try:
                self.beat_once()
            except ChainError as exc:  # node unreachable: keep trying, the probe will notice
                log.error("heartbeat round failed: %s", exc)
            rounds += 1
            stop.wait(max(self.interval() - (time.monotonic() - started), 0.0))
        return rounds


def check_alive(path: Path, max_age_s: float) -> bool:
    """Liveness: the alive file was touched within `max_age_s`."""
    try:
        return time.time() - path.stat().st_mtime <= max_age_s
    except FileNotFoundError:
        return False


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agent.heartbeat", description="ServiceRegistry heartbeat agent")
    parser.add_argument("--once", action="store_true", help="one round, exit 1 if any heartbeat failed (CronJob)")
    parser.add_argument("--max-rounds", type=int, default=None, help="stop after N rounds")
    parser.add_argument("--check-alive", type=float, metavar="MAX_AGE_S",
                        help="exit 0 if the alive file is younger than MAX_AGE_S (liveness probe)")
    args = parser.parse_args(argv)
    env = os.environ if env is None else env
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        config = AgentConfig.from_env(env)
        if args.check_alive is not None:
            return 0 if check_alive(config.alive_file, args.check_alive) else 1
        agent = HeartbeatAgent(config, read_key(env))
        if args.once:
            return 1 if agent.beat_once().failed else 0
        stop = threading.Event()
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
        agent.run(stop, args.max_rounds)
        return 0
    except (AgentConfigError, ChainError) as exc:
        log.error("%s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
