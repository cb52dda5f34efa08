"""Heartbeat agent: calls updateHeartbeat for each configured service every interval.

Runs as a container (`python -m agent.heartbeat`, see agent/Dockerfile) deployed by the
BlockchainRegistry component next to the cloud-core workloads. Configuration is environment only:

  EDGEFABRIC_RPC_URL             http(s) JSON-RPC URL of the chain
  EDGEFABRIC_CHAIN_ID            expected chain id (the agent refuses another chain)
  EDGEFABRIC_REGISTRY_ADDRESS    ServiceRegistry address
  EDGEFABRIC_SERVICE_IDS         comma-separated 0x service ids to keep alive
  EDGEFABRIC_HEARTBEAT_INTERVAL_S  seconds between rounds (`registry.heartbeatIntervalS`);
                                 default: the smallest on-chain ttl / 3
  EDGEFABRIC_DEPLOYER_KEY        the signing key, or
  EDGEFABRIC_DEPLOYER_KEY_FILE   a file holding it (a mounted Kubernetes Secret). Deployed by the
                                 stack, this is the cluster's own heartbeat delegate key, which
                                 the contract lets heartbeat and nothing else, never the owner key
  EDGEFABRIC_ALIVE_FILE          touched after every round in which every service is alive
                                 (liveness probe), default /tmp/heartbeat-alive
  EDGEFABRIC_METRICS_PORT        serve Prometheus metrics on this port (unset: no server)
  EDGEFABRIC_METRICS_ADDR        address to bind the metrics server to, default 0.0.0.0
  EDGEFABRIC_LEDGER_ADDRESS      DeploymentLedger address, with
  EDGEFABRIC_STACK               the stack whose entries to read, and
  EDGEFABRIC_CONFIG_HASH         config_hash() of the typed config this agent was deployed with
                                 (the three together, or none: no config check)
  EDGEFABRIC_LEDGER_FROM_BLOCK   the ledger's first block (its events are read from there), default 0
  EDGEFABRIC_LEDGER_CHECK_EVERY  compare with the ledger every N rounds, default 10

Config check: every N rounds the agent reads the ledger's latest entry for its stack (one
eth_call; the entry's events only when the entry changed) and compares its config hash with
the one it was deployed with. A mismatch (a newer `up` did not reach this cluster, or the
agent runs a config the ledger never recorded) logs one warning per change and sets
`edgefabric_agent_config_mismatch{stack}` to 1. No ledger at the address, no entry yet, or an
entry whose event the node does not serve is "unknown" (`edgefabric_agent_config_known` 0),
never a mismatch. The state is in the alive file's report too.

The key is only ever handed to the signer; it is never logged.

Faults: the agent never exits on a chain error. A round that fails (node unreachable, rate
limited, a receipt that never came) is retried after a short backoff (0.25 s doubling up to
1 s, never beyond the interval), so heartbeats resume within about a second of the node
coming back. A service that has expired or was deregistered cannot be revived by a heartbeat
(the contract refuses, and the agent holds no key that may register): the agent alerts on it
(an error log naming `pulumi up`, `edgefabric_agent_service_alive` 0), keeps beating the
others, and the next `pulumi up` registers it again (ServiceRegistration.diff checks liveness).
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
from typing import Literal

from eth_utils import to_checksum_address
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server
from web3.exceptions import Web3Exception

from edgefabric.chain.client import (
    ChainClient,
    ChainError,
    FeePolicy,
    RetryPolicy,
    TransactionReverted,
    connect,
    load_account,
)
from edgefabric.chain.ledger import Ledger
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
    metrics_port: int | None = None
    metrics_addr: str = "0.0.0.0"  # all interfaces of its pod: Prometheus scrapes it there
    ledger: LedgerCheck | None = None

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
        port = env.get("EDGEFABRIC_METRICS_PORT", "").strip()
        if port and (not port.isdigit() or not 0 < int(port) < 65536):
            raise AgentConfigError(f"EDGEFABRIC_METRICS_PORT must be a port number 1..65535, got {port!r}")
        return cls(
            ledger=LedgerCheck.from_env(env),
            metrics_port=int(port) if port else None,
            metrics_addr=env.get("EDGEFABRIC_METRICS_ADDR", "").strip() or "0.0.0.0",
            rpc_url=need("EDGEFABRIC_RPC_URL"),
            chain_id=int(chain),
            registry_address=need("EDGEFABRIC_REGISTRY_ADDRESS"),
            service_ids=ids,
            interval_s=interval_s,
            alive_file=Path(env.get("EDGEFABRIC_ALIVE_FILE", "/tmp/heartbeat-alive")),
        )


@dataclass(frozen=True)
class LedgerCheck:
    """Where the agent reads the deployment ledger, and the config hash it was deployed with."""

    address: str
    stack: str
    config_hash: str
    from_block: int = 0
    every_rounds: int = 10

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> LedgerCheck | None:
        names = ("EDGEFABRIC_LEDGER_ADDRESS", "EDGEFABRIC_STACK", "EDGEFABRIC_CONFIG_HASH")
        values = {n: env.get(n, "").strip() for n in names}
        if not any(values.values()):
            return None
        missing = [n for n, v in values.items() if not v]
        if missing:
            raise AgentConfigError(f"{', '.join(missing)} required with {', '.join(n for n in names if n not in missing)}")
        address, digest = values["EDGEFABRIC_LEDGER_ADDRESS"], values["EDGEFABRIC_CONFIG_HASH"]
        if not (address.startswith("0x") and len(address) == 42):
            raise AgentConfigError(f"EDGEFABRIC_LEDGER_ADDRESS must be a 0x address, got {address!r}")
        if not (digest.startswith("0x") and len(digest) == 66):
            raise AgentConfigError(f"EDGEFABRIC_CONFIG_HASH must be a 32-byte 0x hash, got {digest!r}")
        numbers = {}
        for name, default in (("EDGEFABRIC_LEDGER_FROM_BLOCK", 0), ("EDGEFABRIC_LEDGER_CHECK_EVERY", 10)):
            text = env.get(name, "").strip() or str(default)
            if not text.isdigit():
                raise AgentConfigError(f"{name} must be a non-negative integer, got {text!r}")
            numbers[name] = int(text)
        if numbers["EDGEFABRIC_LEDGER_CHECK_EVERY"] < 1:
            raise AgentConfigError("EDGEFABRIC_LEDGER_CHECK_EVERY must be >= 1")
        return cls(address=address, stack=values["EDGEFABRIC_STACK"], config_hash=digest.lower(),
                   from_block=numbers["EDGEFABRIC_LEDGER_FROM_BLOCK"],
                   every_rounds=numbers["EDGEFABRIC_LEDGER_CHECK_EVERY"])


ConfigState = Literal["match", "mismatch", "unknown"]


def config_verdict(deployed: str, ledger_hash: str | None) -> ConfigState:
    """The agent's config against the ledger's latest entry; None (no ledger, no entry, the
    entry unreadable) is unknown, never a mismatch."""
    if ledger_hash is None:
        return "unknown"
    return "match" if deployed.lower() == ledger_hash.lower() else "mismatch"


class ConfigWatch:
    """What the agent reports about its config, and when it warns (pure: no I/O)."""

    def __init__(self, deployed: str) -> None:
        self.deployed = deployed.lower()
        self.state: ConfigState = "unknown"
        self.ledger_hash: str | None = None

    def observe(self, ledger_hash: str | None) -> bool:
        """Take one reading of the ledger; True when a warning is due: a mismatch not warned of
        yet (the first one, or the ledger moved on to another hash while still mismatched)."""
        ledger_hash = ledger_hash.lower() if ledger_hash else None
        state = config_verdict(self.deployed, ledger_hash)
        warn = state == "mismatch" and (self.state != "mismatch" or ledger_hash != self.ledger_hash)
        self.state, self.ledger_hash = state, ledger_hash
        return warn


class LedgerReader:
    """The config hash of a stack's latest ledger entry, read at a bounded cost: one eth_call of
    `latest(stack)` each time, and the `Recorded` events (from the last entry seen on) only
    when the latest entry changed. An event counts only if it hashes to the stored entry."""

    def __init__(self, check: LedgerCheck) -> None:
        self.check = check
        self._ledger: Ledger | None = None
        self._seen: tuple[str, str] | None = None  # (entry hash, its config hash)
        self._from_block = check.from_block

    def latest_config_hash(self, client: ChainClient) -> str | None:
        """None: no ledger at the address, no entry for the stack, or its event not served."""
        if self._ledger is None or self._ledger.client is not client:
            if not bytes(client.w3.eth.get_code(to_checksum_address(self.check.address))):
                return None
            self._ledger = Ledger(client, self.check.address)
        latest = self._ledger.latest(self.check.stack)
        if latest.count == 0:
            return None
        if self._seen is not None and self._seen[0] == latest.entry_hash:
            return self._seen[1]
        for entry in reversed(self._ledger.history(self.check.stack, from_block=self._from_block)):
            if entry.hash == latest.entry_hash:
                self._seen = (entry.hash, entry.config_hash)
                self._from_block = entry.block_number
                return entry.config_hash
        return None


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
    expired: tuple[str, ...] = ()  # deregistered or past their TTL: only `pulumi up` brings them back


# Reverts meaning "this service is not alive on chain": no heartbeat can help.
_GONE = ("ServiceNotActive", "ServiceTtlExpired", "ServiceNotFound")
RETRY_FIRST_S, RETRY_MAX_S = 0.25, 1.0


class AgentMetrics:
    """Prometheus metrics, per service id (one registry per agent, so tests can run several)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.sent = Counter("edgefabric_agent_heartbeats_sent", "Heartbeats mined", ["service"],
                            registry=self.registry)
        self.failures = Counter("edgefabric_agent_heartbeat_failures", "Heartbeats not mined, by reason",
                                ["service", "reason"], registry=self.registry)
        self.last_success = Gauge("edgefabric_agent_last_success_timestamp_seconds",
                                  "Unix time of the last mined heartbeat", ["service"], registry=self.registry)
        self.alive = Gauge("edgefabric_agent_service_alive",
                           "1 if the service is alive on chain after the last round, 0 if expired or gone",
                           ["service"], registry=self.registry)
        self.rounds_failed = Counter("edgefabric_agent_rounds_failed", "Rounds that reached no node",
                                     registry=self.registry)
        self.config_mismatch = Gauge(
            "edgefabric_agent_config_mismatch",
            "1 if the config hash this agent was deployed with differs from the deployment ledger's latest "
            "entry for its stack, 0 if it matches or is unknown", ["stack"], registry=self.registry)
        self.config_known = Gauge(
            "edgefabric_agent_config_known",
            "1 if the ledger's latest entry for the stack could be read, 0 if unknown (no ledger, no entry)",
            ["stack"], registry=self.registry)

    def value(self, name: str, labels: Mapping[str, str] | None = None) -> float | None:
        return self.registry.get_sample_value(name, dict(labels or {}))


class HeartbeatAgent:
    def __init__(self, config: AgentConfig, key: str, *, timeout: float = 5.0,
                 retry: RetryPolicy | None = None) -> None:
        self.config = config
        self._account = load_account(key)  # a bad key is a configuration error: fail at once
        self._timeout = timeout
        # Short retries inside a round: the loop itself retries the round within a second.
        self._retry = retry or RetryPolicy(attempts=3, backoff_s=0.1, max_s=timeout)
        self._registry: Registry | None = None
        self.metrics = AgentMetrics()
        self.last_round: RoundResult | None = None
        ledger = config.ledger
        self.config_watch = ConfigWatch(ledger.config_hash) if ledger is not None else None
        self._ledger_reader = LedgerReader(ledger) if ledger is not None else None
        if ledger is not None:
            self.metrics.config_mismatch.labels(ledger.stack).set(0)
            self.metrics.config_known.labels(ledger.stack).set(0)

    @property
    def registry(self) -> Registry:
        """Connected on first use, and again after a failure to connect (never fatal)."""
        if self._registry is None:
            w3 = connect(self.config.rpc_url, expected_chain_id=self.config.chain_id, timeout=self._timeout,
                         retries=0, policy=self._retry)
            client = ChainClient(w3, self._account, abi=load_artifact()["abi"], receipt_timeout=max(
                3 * self._timeout, 30.0), fee_policy=FeePolicy(bump_after_blocks=3))
            self._registry = Registry(client, self.config.registry_address)
        return self._registry

    def interval(self) -> float:
        """The configured interval, or a third of the smallest TTL among the services."""
        if self.config.interval_s is not None:
            return self.config.interval_s
        ttls = [r.ttl for sid in self.config.service_ids if (r := self.registry.get_service(sid)) is not None]
        if not ttls:
            raise ChainError(f"none of the services {list(self.config.service_ids)} exists on the registry")
        return max(min(ttls) / 3.0, 1.0)

    def beat_once(self) -> RoundResult:
        """One heartbeat per service, sent pipelined, then every receipt awaited.

        Raises ChainError only when no node can be reached at all (the caller retries).
        """
        registry = self.registry
        pending, failed, expired = [], [], []
        for sid in self.config.service_ids:
            try:
                pending.append((sid, registry.send_heartbeat(sid)))
            except TransactionReverted as exc:
                if exc.error_name in _GONE:
                    expired.append(sid)
                    self._gone(sid, str(exc))
                else:
                    failed.append(sid)
                    self._failed(sid, "revert", str(exc))
            except ChainError as exc:
                failed.append(sid)
                self._failed(sid, "rpc", str(exc))
        sent = []
        for sid, p in pending:
            try:
                registry.client.wait(p)
            except TransactionReverted as exc:  # expired between the estimate and the block
                if exc.error_name in _GONE:
                    expired.append(sid)
                    self._gone(sid, str(exc))
                else:
                    failed.append(sid)
                    self._failed(sid, "revert", str(exc))
                continue
            except ChainError as exc:
                failed.append(sid)
                self._failed(sid, "rpc", str(exc))
                continue
            sent.append(sid)
            self.metrics.sent.labels(sid).inc()
            self.metrics.last_success.labels(sid).set(time.time())
            self.metrics.alive.labels(sid).set(1)
        if sent and not failed and not expired:
            self.config.alive_file.parent.mkdir(parents=True, exist_ok=True)
            # The probe reads the file's age; the text is the report a human reads in the pod.
            self.config.alive_file.write_text(self.report() + "\n", encoding="utf-8")
        log.info("heartbeat round: %d sent, %d failed, %d expired", len(sent), len(failed), len(expired))
        self.last_round = RoundResult(tuple(sent), tuple(failed), tuple(expired))
        return self.last_round

    def report(self) -> str:
        """One line: the services alive after the last round, and the config check's state."""
        alive = sum(1 for sid in self.config.service_ids if self.metrics.value(
            "edgefabric_agent_service_alive", {"service": sid}) == 1)
        text = f"services alive {alive}/{len(self.config.service_ids)}"
        if self.config_watch is not None:
            text += f"; config {self.config_watch.state} (deployed {self.config_watch.deployed}"
            text += f", ledger {self.config_watch.ledger_hash or 'none'})"
        return text

    def check_config(self) -> ConfigState | None:
        """Compare the deployed config hash with the ledger (None: no check configured).

        A read that fails keeps the previous state (a node hiccup says nothing about the config)."""
        if self.config_watch is None or self._ledger_reader is None or self.config.ledger is None:
            return None
        stack = self.config.ledger.stack
        try:
            ledger_hash = self._ledger_reader.latest_config_hash(self.registry.client)
        except (ChainError, Web3Exception) as exc:  # Web3Exception: not a ledger at that address
            log.warning("deployment ledger not readable, config state stays %s: %s", self.config_watch.state, exc)
            return self.config_watch.state
        before = self.config_watch.state
        if self.config_watch.observe(ledger_hash):
            log.warning("config mismatch for stack %s: this agent was deployed with config %s but the "
                        "deployment ledger's latest entry records %s; run `pulumi up` (and `edgefabric audit "
                        "--stack %s`)", stack, self.config_watch.deployed, ledger_hash, stack)
        elif self.config_watch.state != before:
            log.info("config check for stack %s: %s (ledger %s)", stack, self.config_watch.state, ledger_hash)
        self.metrics.config_mismatch.labels(stack).set(1 if self.config_watch.state == "mismatch" else 0)
        self.metrics.config_known.labels(stack).set(0 if self.config_watch.state == "unknown" else 1)
        return self.config_watch.state

    def _failed(self, sid: str, reason: str, text: str) -> None:
        log.error("heartbeat for %s failed: %s", sid, text)
        self.metrics.failures.labels(sid, reason).inc()

    def _gone(self, sid: str, text: str) -> None:
        log.error("service %s is not alive on chain (%s): a heartbeat cannot revive it; run `pulumi up` "
                  "to register it again", sid, text)
        self.metrics.failures.labels(sid, "expired").inc()
        self.metrics.alive.labels(sid).set(0)

    def run(self, stop: threading.Event, max_rounds: int | None = None) -> int:
        """Beat every interval until `stop` is set (SIGTERM) or `max_rounds` ran. Returns rounds run.

        Never returns on a chain error: a round that failed anywhere is retried after a backoff
        of 0.25 s doubling to 1 s (never beyond the interval); a good round resets it.
        """
        rounds, retry = 0, RETRY_FIRST_S
        while not stop.is_set() and (max_rounds is None or rounds < max_rounds):
            started = time.monotonic()
            ok = False
            try:
                result = self.beat_once()
                ok = not result.failed
                if self.config.ledger is not None and rounds % self.config.ledger.every_rounds == 0:
                    self.check_config()  # round 0, N, 2N ...: bounded cost, and a state at once
                interval = self.interval()
            except ChainError as exc:  # no node reachable: keep trying, the probe will notice
                log.error("heartbeat round failed: %s", exc)
                self.metrics.rounds_failed.inc()
                interval = self.config.interval_s or RETRY_MAX_S
            rounds += 1
            if ok:
                retry = RETRY_FIRST_S
                stop.wait(max(interval - (time.monotonic() - started), 0.0))
            else:
                stop.wait(min(retry, interval))
                retry = min(retry * 2, RETRY_MAX_S)
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
            result = agent.beat_once()
            return 1 if result.failed or result.expired else 0
        if config.metrics_port is not None:
            start_http_server(config.metrics_port, config.metrics_addr, registry=agent.metrics.registry)
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
