"""Stateful test: the contract against a Python model over random operation sequences.

The model mirrors the contract exactly, including the order of the index sets after swap-and-pop
and the cleanup cursor, so any drift in the indexes shows up as a list mismatch.

Timing: every transaction is mined at an exact timestamp (evm_setNextBlockTimestamp), one second
after the previous one, so the model can decide expiry exactly. Gas estimation runs against the
latest block (one second earlier); expiry is monotonic, so an estimate that reverts means the
mined transaction would revert the same way, and one that passes but reverts when mined is
decoded from the receipt by replaying it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import hypothesis.strategies as st
import pytest
from hexbytes import HexBytes
from hypothesis import HealthCheck, Phase, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from devenv.anvil import AnvilProcess
from edgefabric.chain.client import ChainClient, TransactionReverted, connect, load_account
from edgefabric.chain.registry import Registry, load_artifact, service_id

NAMES = ["a", "b"]
VERSIONS = ["1", "2"]
OWNERS = 3


@dataclass
class Rec:
    name: str
    version: str
    owner: int
    endpoints: list[str]
    metadata: str
    last_heartbeat: int
    ttl: int
    active: bool
    positions: dict[str, int] = field(default_factory=dict)

    def alive(self, t: int) -> bool:
        return self.last_heartbeat + self.ttl >= t


class Model:
    def __init__(self) -> None:
        self.recs: dict[str, Rec] = {}
        self.all_ids: list[str] = []
        self.by_name: dict[str, list[str]] = {n: [] for n in NAMES}
        self.by_owner: dict[int, list[str]] = {o: [] for o in range(OWNERS)}
        self.cursor = 0

    def _sets(self, rec: Rec) -> list[tuple[str, list[str]]]:
        return [("all", self.all_ids), ("name", self.by_name[rec.name]), ("owner", self.by_owner[rec.owner])]

    def add(self, sid: str, rec: Rec) -> None:
        for key, ids in self._sets(rec):
            rec.positions[key] = len(ids)
            ids.append(sid)

    def remove(self, sid: str) -> None:
        rec = self.recs[sid]
        rec.active = False
        for key, ids in self._sets(rec):
            i = rec.positions[key]
            last = ids[-1]
            if last != sid:
                ids[i] = last
                self.recs[last].positions[key] = i
            ids.pop()

    def check_owned_alive(self, sid: str, caller: int, t: int) -> str | None:
        rec = self.recs.get(sid)
        if rec is None:
            return "ServiceNotFound"
        if rec.owner != caller:
            return "NotServiceOwner"
        if not rec.active:
            return "ServiceNotActive"
        if not rec.alive(t):
            return "ServiceTtlExpired"
        return None


class RegistryMachine(RuleBasedStateMachine):
    anvil: AnvilProcess  # set by the test below

    def __init__(self) -> None:
        super().__init__()
        self.w3 = connect(self.anvil.rpc_url)
        artifact = load_artifact()
        clients = [ChainClient(self.w3, load_account(k), abi=artifact["abi"]) for k in self.anvil.private_keys[:OWNERS]]
        address = clients[0].deploy(artifact["abi"], artifact["bytecode"], "deploy").contract_address
        assert address is not None
        self.regs = [Registry(c, address) for c in clients]
        self.addresses = [c.address for c in clients]
        self.ids = {(o, n, v): service_id(n, v, self.addresses[o]) for o in range(OWNERS) for n in NAMES for v in VERSIONS}
        self.owner_of = {sid: o for (o, _, _), sid in self.ids.items()}
        self.model = Model()
        self.t = int(self.w3.eth.get_block("latest")["timestamp"])

    # -- helpers

    def _next_tx_time(self) -> int:
        self.t += 1
        self.w3.provider.make_request("evm_setNextBlockTimestamp", [self.t])  # type: ignore[arg-type]
        return self.t

    def _expect(self, expected_error: str | None, fn: object) -> None:
        try:
            fn()  # type: ignore[operator]
        except TransactionReverted as exc:
            assert expected_error is not None, f"unexpected revert: {exc}"
            assert exc.error_name == expected_error, f"expected {expected_error}, got {exc}"
            return
        assert expected_error is None, f"expected {expected_error}, but the call succeeded"

    # -- rules

    @rule(owner=st.integers(0, OWNERS - 1), name=st.sampled_from(NAMES), version=st.sampled_from(VERSIONS),
          ttl=st.sampled_from([3, 10, 40]), endpoints=st.lists(st.sampled_from(["e1", "e2", "e3"]), min_size=1,
                                                                 max_size=3))
    def register(self, owner: int, name: str, version: str, ttl: int, endpoints: list[str]) -> None:
        t = self._next_tx_time()
        sid = self.ids[(owner, name, version)]
        rec = self.model.recs.get(sid)
        error = "AlreadyRegistered" if rec and rec.active and rec.alive(t) else None
        self._expect(error, lambda: self.regs[owner].register(name, version, endpoints, "m", ttl))
        if error:
            return
        fresh = Rec(name, version, owner, endpoints, "m", t, ttl, True)
        if rec is not None and rec.active:  # expired, still indexed: keep its positions
            fresh.positions = rec.positions
            self.model.recs[sid] = fresh
        else:
            self.model.recs[sid] = fresh
            self.model.add(sid, fresh)

    @rule(caller=st.integers(0, OWNERS - 1), key=st.sampled_from(sorted(
        (o, n, v) for o in range(OWNERS) for n in NAMES for v in VERSIONS)))
    def heartbeat(self, caller: int, key: tuple[int, str, str]) -> None:
        t = self._next_tx_time()
        sid = self.ids[key]
        error = self.model.check_owned_alive(sid, caller, t)
        if error == "NotServiceOwner":  # no delegates in the model: only the owner may beat
            error = "NotHeartbeatSender"
        self._expect(error, lambda: self.regs[caller].heartbeat(sid))
        if error is None:
            self.model.recs[sid].last_heartbeat = t

    @rule(caller=st.integers(0, OWNERS - 1), key=st.sampled_from(sorted(
        (o, n, v) for o in range(OWNERS) for n in NAMES for v in VERSIONS)),
          endpoints=st.lists(st.sampled_from(["u1", "u2"]), min_size=1, max_size=2))
    def update(self, caller: int, key: tuple[int, str, str], endpoints: list[str]) -> None:
        t = self._next_tx_time()
        sid = self.ids[key]
        error = self.model.check_owned_alive(sid, caller, t)
        self._expect(error, lambda: self.regs[caller].update(sid, endpoints, "m2"))
        if error is None:
            self.model.recs[sid].endpoints = endpoints
            self.model.recs[sid].metadata = "m2"

    @rule(caller=st.integers(0, OWNERS - 1), key=st.sampled_from(sorted(
        (o, n, v) for o in range(OWNERS) for n in NAMES for v in VERSIONS)))
    def deregister(self, caller: int, key: tuple[int, str, str]) -> None:
        self._next_tx_time()
        sid = self.ids[key]
        rec = self.model.recs.get(sid)
        error = ("ServiceNotFound" if rec is None else "NotServiceOwner" if rec.owner != caller
                 else "ServiceNotActive" if not rec.active else None)
        self._expect(error, lambda: self.regs[caller].deregister(sid))
        if error is None:
            self.model.remove(sid)

    @rule(seconds=st.integers(1, 30))
    def time_jump(self, seconds: int) -> None:
        self.t += seconds
        self.w3.provider.make_request("evm_mine", [self.t])  # type: ignore[arg-type]

    @rule(caller=st.integers(0, OWNERS - 1), max_items=st.integers(1, 5))
    def cleanup(self, caller: int, max_items: int) -> None:
        t = self._next_tx_time()
        m = self.model
        cursor, cleaned = m.cursor, 0
        for _ in range(max_items):
            if not m.all_ids:
                break
            if cursor >= len(m.all_ids):
                cursor = 0
            sid = m.all_ids[cursor]
            if m.recs[sid].alive(t):
                cursor += 1
            else:
                m.remove(sid)
                cleaned += 1
        m.cursor = cursor
        result = self.regs[caller].cleanup(max_items)
        topic = HexBytes(self.regs[0].contract.events.ServiceExpired().topic)
        expired = [e for e in result.logs if e["topics"][0] == topic]
        assert len(expired) == cleaned

    # -- invariants

    @invariant()
    def indexes_match(self) -> None:
        reg = self.regs[0]
        t_view = int(self.w3.eth.get_block("latest")["timestamp"])
        assert reg.contract.functions.indexedServiceCount().call() == len(self.model.all_ids)
        for name in NAMES:
            assert reg.service_versions(name) == self.model.by_name[name]
            live = [s for s in self.model.by_name[name] if self.model.recs[s].alive(t_view)]
            assert reg.discover(name, page=2) == live
        for o in range(OWNERS):
            assert reg.owner_services(self.addresses[o]) == self.model.by_owner[o]

    @invariant()
    def records_match(self) -> None:
        reg = self.regs[0]
        t_view = int(self.w3.eth.get_block("latest")["timestamp"])
        for sid, rec in self.model.recs.items():
            got = reg.get_service(sid)
            assert got is not None
            assert (got.endpoints, got.metadata, got.last_heartbeat, got.ttl) == (
                rec.endpoints, rec.metadata, rec.last_heartbeat, rec.ttl)
            assert got.is_active == (rec.active and rec.alive(t_view))


@pytest.mark.timeout(240)
def test_contract_matches_model(anvil: AnvilProcess) -> None:
    RegistryMachine.anvil = anvil
    # Modest counts: the machine has 2 cores and each step is a few RPC round trips.
    RegistryMachine.TestCase.settings = settings(
        max_examples=15, stateful_step_count=25, deadline=None,
        suppress_health_check=[HealthCheck.too_slow], derandomize=False,
        phases=[Phase.explicit, Phase.reuse, Phase.generate],  # shrinking re-runs whole chains: too slow here
    )
    RegistryMachine.TestCase().runTest()
