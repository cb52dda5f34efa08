"""Typed access to a deployed ServiceRegistry contract (engine-free: no pulumi imports).

Shared by the dynamic providers, the heartbeat agent, the benchmark and the tests, so every
caller gets the same revert messages ("registerService(api@1.0): reverted: AlreadyRegistered(...)").
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from eth_abi import encode as abi_encode
from eth_utils import keccak, to_checksum_address
from hexbytes import HexBytes

from edgefabric.chain.client import Call, ChainClient, ChainError, PendingTx, TransactionReverted, TxResult

ARTIFACT_PATH = Path(__file__).resolve().parents[2] / "contracts" / "build" / "ServiceRegistry.json"


@lru_cache(maxsize=4)
def _load(path: str) -> dict[str, Any]:
    return dict(json.loads(Path(path).read_text(encoding="utf-8")))


def load_artifact(path: Path = ARTIFACT_PATH) -> dict[str, Any]:
    """The compiled contract (abi, bytecode, deployedBytecode, compiler, sourceSha256)."""
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `make contracts`")
    return _load(str(path))


def service_id(name: str, version: str, owner: str) -> str:
    """The contract's id for (name, version, owner): keccak256(abi.encode(name, version, owner))."""
    encoded = abi_encode(["string", "string", "address"], [name, version, to_checksum_address(owner)])
    return "0x" + keccak(encoded).hex()


def code_hash(code: bytes | str) -> str:
    return "0x" + keccak(HexBytes(code)).hex()


@dataclass(frozen=True)
class ServiceRecord:
    service_id: str
    name: str
    version: str
    endpoints: list[str]
    metadata: str
    owner: str
    registration_time: int
    last_heartbeat: int
    ttl: int
    is_active: bool  # registered, not deregistered and within its TTL (evaluated by the contract)


class Registry:
    """One ServiceRegistry at `address`, used through `client` (which holds the signer)."""

    def __init__(self, client: ChainClient, address: str) -> None:
        self.client = client
        self.address = to_checksum_address(address)
        self.contract = client.w3.eth.contract(address=self.address, abi=load_artifact()["abi"])

    # -- reads

    def get_service(self, sid: str) -> ServiceRecord | None:
        """The record, or None if the id was never registered."""
        try:
            r = self.client.call(self.contract.functions.getService(HexBytes(sid)), f"getService({sid})")
        except TransactionReverted as exc:
            if exc.error_name == "ServiceNotFound":
                return None
            raise
        return ServiceRecord(sid, r[0], r[1], list(r[2]), r[3], r[4], int(r[5]), int(r[6]), int(r[7]), bool(r[8]))

    def is_alive(self, sid: str) -> bool:
        return bool(self.client.call(self.contract.functions.isAlive(HexBytes(sid)), f"isAlive({sid})"))

    def service_versions(self, name: str) -> list[str]:
        ids = self.client.call(self.contract.functions.getServiceVersions(name), f"getServiceVersions({name})")
        return [HexBytes(x).to_0x_hex() for x in ids]

    def owner_services(self, owner: str) -> list[str]:
        fn = self.contract.functions.getOwnerServices(to_checksum_address(owner))
        return [HexBytes(x).to_0x_hex() for x in self.client.call(fn, f"getOwnerServices({owner})")]

    def discover(self, name: str, page: int = 100, limit: int = 1000, max_pages: int = 50,
                 publishers: Collection[str] | None = None) -> list[str]:
        """Live ids under `name`, at most `limit` of them from at most `max_pages` pages.

        Bounded both ways: anyone can register under any name, so a spammer could otherwise
        make a discovery read an unbounded index (expired entries count until cleaned up).
        `publishers`: only ids owned by these addresses (the stack's deployer keys); anyone can
        register under our names, and a consumer must not route to a spammer's endpoints.
        The node's `nextOffset` is not trusted: it must move forward and stay within the total,
        or a faulty (or hostile) node could keep us paging forever.
        """
        out: list[str] = []
        offset = 0
        for _ in range(max_pages):
            if len(out) >= limit:
                break
            fn = self.contract.functions.discoverServices(name, offset, min(page, limit - len(out)))
            ids, next_offset, total = self.client.call(fn, f"discoverServices({name})")
            found = [HexBytes(x).to_0x_hex() for x in ids]
            if publishers is not None:
                allowed = {to_checksum_address(a) for a in publishers}
                found = [sid for sid in found if (r := self.get_service(sid)) is not None
                         and to_checksum_address(r.owner) in allowed]
            out += found
            if next_offset >= total:
                break
            if next_offset <= offset:
                raise ChainError(f"discoverServices({name}): the node returned nextOffset {next_offset} "
                                 f"after offset {offset}; refusing to page further")
            offset = next_offset
        return out[:limit]

    # -- writes (send_* return at once for pipelining; the others wait for the receipt)

    def send_register(self, name: str, version: str, endpoints: list[str], metadata: str, ttl: int,
                      gas: int | None = None) -> PendingTx:
        """Broadcast a registration. `gas=None` estimates first (and raises on a would-be revert)."""
        fn = self.contract.functions.registerService(name, version, endpoints, metadata, ttl)
        return self.client.send(fn, f"registerService({name}@{version})", gas=gas)

    def send_register_many(self, registrations: Sequence[tuple[str, str, list[str], str, int]],
                           gas: int | None = None) -> list[PendingTx]:
        """Broadcast many registrations, (name, version, endpoints, metadata, ttl) each, in two round
        trips (`ChainClient.send_many`); await them with `client.wait_many`. A would-be revert
        raises before anything is sent, naming the registration."""
        calls = [Call(self.contract.functions.registerService(name, version, endpoints, metadata, ttl),
                      f"registerService({name}@{version})", gas)
                 for name, version, endpoints, metadata, ttl in registrations]
        return self.client.send_many(calls)

    def register(self, name: str, version: str, endpoints: list[str], metadata: str, ttl: int) -> TxResult:
        return self.client.wait(self.send_register(name, version, endpoints, metadata, ttl))

    def send_heartbeat(self, sid: str, label: str = "") -> PendingTx:
        fn = self.contract.functions.updateHeartbeat(HexBytes(sid))
        return self.client.send(fn, f"updateHeartbeat({label or sid})")

    def heartbeat(self, sid: str, label: str = "") -> TxResult:
        return self.client.wait(self.send_heartbeat(sid, label))

    def set_delegate(self, sid: str, delegate: str, label: str = "") -> TxResult:
        """Allow `delegate` to heartbeat the service (and nothing else). Owner only."""
        fn = self.contract.functions.setHeartbeatDelegate(HexBytes(sid), to_checksum_address(delegate))
        return self.client.transact(fn, f"setHeartbeatDelegate({label or sid})")

    def revoke_delegate(self, sid: str, delegate: str, label: str = "") -> TxResult:
        fn = self.contract.functions.revokeHeartbeatDelegate(HexBytes(sid), to_checksum_address(delegate))
        return self.client.transact(fn, f"revokeHeartbeatDelegate({label or sid})")

    def is_delegate(self, sid: str, account: str) -> bool:
        fn = self.contract.functions.isHeartbeatDelegate(HexBytes(sid), to_checksum_address(account))
        return bool(self.client.call(fn, f"isHeartbeatDelegate({sid})"))

    def update(self, sid: str, endpoints: list[str], metadata: str, label: str = "") -> TxResult:
        fn = self.contract.functions.updateService(HexBytes(sid), endpoints, metadata)
        return self.client.transact(fn, f"updateService({label or sid})")

    def deregister(self, sid: str, label: str = "") -> TxResult:
        fn = self.contract.functions.deregisterService(HexBytes(sid))
        return self.client.transact(fn, f"deregisterService({label or sid})")

    def cleanup(self, max_items: int) -> TxResult:
        fn = self.contract.functions.cleanupExpiredServices(max_items)
        return self.client.transact(fn, f"cleanupExpiredServices({max_items})")
