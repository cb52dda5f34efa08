"""Helpers shared by the contract tests (a unique module name: conftest modules collide)."""

from __future__ import annotations

from dataclasses import dataclass

from web3 import Web3

from edgefabric.chain.registry import Registry


@dataclass
class Deployed:
    address: str
    owner: Registry      # dev account 0
    other: Registry      # dev account 1: never owns the services under test
    third: Registry      # dev account 2
    w3: Web3

    def rpc(self, method: str, *params: object) -> object:
        return self.w3.provider.make_request(method, list(params))["result"]  # type: ignore[arg-type]

    def set_next_timestamp(self, ts: int) -> None:
        self.rpc("evm_setNextBlockTimestamp", ts)

    def mine_at(self, ts: int) -> None:
        self.rpc("evm_mine", ts)

    def now(self) -> int:
        return int(self.w3.eth.get_block("latest")["timestamp"])
