"""Decode a ServiceRegistry record: the code account holding a registration's payload.

The contract keeps each registration's immutable payload (owner, name, version, endpoints,
metadata) in the code of a small account it creates, not in storage (contract code costs 200 gas
a byte once; storage 22,100 per 32-byte slot). `ServiceRegistered` carries that account's address
(`record`), so an indexer rebuilds a registration from the log plus `eth_getCode(record)`: the
code never changes and cannot be removed, so any block at or after the log's returns it.
`ServiceUpdated` still carries the new endpoints and metadata in the log itself.

Layout (all lengths big-endian, each bounded by the contract's MAX_* constants):
    0x00 (STOP) | owner (20) | name length (1) | name | version length (1) | version
    | endpoint count (1) | per endpoint: (length - 1) (1) | endpoint | metadata length (2) | metadata
"""

from __future__ import annotations

from dataclasses import dataclass

from eth_utils import to_checksum_address
from hexbytes import HexBytes


class RecordFormatError(ValueError):
    """The code is not a ServiceRegistry record (wrong account, or truncated)."""


@dataclass(frozen=True)
class RecordPayload:
    owner: str
    name: str
    version: str
    endpoints: list[str]
    metadata: str


def decode_record(code: bytes | str) -> RecordPayload:
    """The payload stored in a record's code (as returned by eth_getCode)."""
    raw = bytes(HexBytes(code))
    if not raw or raw[0] != 0:
        raise RecordFormatError("a record's code starts with STOP (0x00)")
    at = 1

    def take(n: int) -> bytes:
        nonlocal at
        if at + n > len(raw):
            raise RecordFormatError(f"record truncated: {n} bytes wanted at {at}, {len(raw)} in all")
        out = raw[at:at + n]
        at += n
        return out

    owner = to_checksum_address(take(20))
    name = take(take(1)[0]).decode()
    version = take(take(1)[0]).decode()
    endpoints = [take(take(1)[0] + 1).decode() for _ in range(take(1)[0])]
    metadata = take(int.from_bytes(take(2), "big")).decode()
    if at != len(raw):
        raise RecordFormatError(f"{len(raw) - at} trailing bytes after the metadata")
    return RecordPayload(owner, name, version, endpoints, metadata)
