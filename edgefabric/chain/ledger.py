"""Typed access to a DeploymentLedger contract, and the hashes an entry records (engine-free).

An entry says what one `pulumi up` deployed: the stack, the git commit of the code, a hash of
the typed config and a hash of the resource graph, by whom and when. The history comes from
the contract's `Recorded` events; storage keeps only the latest entry's hash per stack.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from eth_abi import encode as abi_encode
from eth_utils import keccak, to_checksum_address
from hexbytes import HexBytes
from web3.exceptions import Web3Exception

from edgefabric.chain.client import ChainClient, ChainError, TxResult

LEDGER_ARTIFACT = Path(__file__).resolve().parents[2] / "contracts" / "build" / "DeploymentLedger.json"
ZERO_COMMIT = "0x" + "00" * 20
# Resources that are not part of the graph a program declares: the stack itself and the
# engine's providers (default ones appear by themselves; explicit ones follow their clusters).
_NOT_GRAPH_PREFIXES = ("pulumi:pulumi:Stack", "pulumi:providers:")


@lru_cache(maxsize=2)
def load_ledger_artifact(path: str = str(LEDGER_ARTIFACT)) -> dict[str, Any]:
    return dict(json.loads(Path(path).read_text(encoding="utf-8")))


def _b32(data: bytes) -> str:
    return "0x" + data.hex()


def config_hash(config: Any) -> str:
    """sha256 of the typed config as canonical JSON (a pydantic model or a plain mapping).

    The typed config holds secret *references* (env:/config:/file:), never their values."""
    data = config.model_dump(mode="json", by_alias=True) if hasattr(config, "model_dump") else config
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return _b32(hashlib.sha256(text.encode()).digest())


def graph_hash(resources: Iterable[tuple[str, str]], *, exclude_types: Iterable[str] = ()) -> str:
    """sha256 of the sorted, de-duplicated (type, logical name) pairs of a resource graph.

    The program computes it from what it registers, `audit` from a state export: both leave
    out the stack, providers and the types in `exclude_types` (the ledger entry itself)."""
    skip = set(exclude_types)
    pairs = sorted({(t, n) for t, n in resources
                    if t not in skip and not t.startswith(_NOT_GRAPH_PREFIXES)})
    text = "\n".join(f"{t}::{n}" for t, n in pairs)
    return _b32(hashlib.sha256(text.encode()).digest())


def graph_of_state(export: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(type, logical name) of every resource in a `pulumi stack export`."""
    return [(str(r["type"]), str(r["urn"]).rsplit("::", 1)[-1])
            for r in export.get("deployment", {}).get("resources", []) or []]


def git_commit(where: Path) -> str:
    """The commit checked out at `where` (0x + 40 hex), or all zeros outside a git work tree."""
    proc = subprocess.run(["git", "-C", str(where), "rev-parse", "--verify", "--quiet", "HEAD"],
                          capture_output=True, text=True, check=False, timeout=30)
    sha = proc.stdout.strip()
    return "0x" + sha if proc.returncode == 0 and len(sha) == 40 else ZERO_COMMIT


def entry_hash(commit: str, config_h: str, graph_h: str, deployer: str, time: int) -> str:
    """The contract's latest-entry hash: keccak256(abi.encode(commit, config, graph, deployer, time))."""
    encoded = abi_encode(["bytes20", "bytes32", "bytes32", "address", "uint64"],
                         [HexBytes(commit), HexBytes(config_h), HexBytes(graph_h), to_checksum_address(deployer),
                          time])
    return _b32(keccak(encoded))


@dataclass(frozen=True)
class LedgerEntry:
    seq: int
    stack: str
    commit: str
    config_hash: str
    graph_hash: str
    deployer: str
    time: int
    block_number: int
    tx_hash: str

    @property
    def hash(self) -> str:
        return entry_hash(self.commit, self.config_hash, self.graph_hash, self.deployer, self.time)


@dataclass(frozen=True)
class LatestEntry:
    entry_hash: str
    owner: str
    time: int
    count: int


class Ledger:
    """One DeploymentLedger at `address`, used through `client` (which holds the signer)."""

    def __init__(self, client: ChainClient, address: str) -> None:
        self.client = client
        self.address = to_checksum_address(address)
        self.contract = client.w3.eth.contract(address=self.address, abi=load_ledger_artifact()["abi"])

    @staticmethod
    def stack_key(stack: str) -> str:
        return _b32(keccak(stack.encode()))

    def record(self, stack: str, commit: str, config_h: str, graph_h: str) -> TxResult:
        fn = self.contract.functions.record(stack, HexBytes(commit), HexBytes(config_h), HexBytes(graph_h))
        return self.client.transact(fn, f"ledger record({stack})")

    def latest(self, stack: str) -> LatestEntry:
        raw = self.client.call(self.contract.functions.latest(HexBytes(self.stack_key(stack))), f"ledger latest({stack})")
        return LatestEntry(entry_hash=_b32(bytes(raw[0])), owner=str(raw[1]), time=int(raw[2]), count=int(raw[3]))

    def history(self, stack: str, from_block: int = 0) -> list[LedgerEntry]:
        """Every entry of `stack`, oldest first, from the `Recorded` events."""
        event = self.contract.events.Recorded
        try:
            logs = event.get_logs(from_block=from_block, argument_filters={"stackKey": self.stack_key(stack)})
        except (Web3Exception, OSError, ValueError) as exc:
            raise ChainError(f"ledger history({stack}): the node could not return the logs: {exc}") from None
        entries = [
            LedgerEntry(seq=int(log["args"]["seq"]), stack=str(log["args"]["stack"]),
                        commit="0x" + bytes(log["args"]["commit"]).hex(),
                        config_hash=_b32(bytes(log["args"]["configHash"])),
                        graph_hash=_b32(bytes(log["args"]["graphHash"])),
                        deployer=str(log["args"]["deployer"]), time=int(log["args"]["time"]),
                        block_number=int(log["blockNumber"]), tx_hash=HexBytes(log["transactionHash"]).to_0x_hex())
            for log in logs
        ]
        return sorted(entries, key=lambda e: e.seq)
