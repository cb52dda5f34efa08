"""ServiceRegistry behaviour against a real anvil: every function, access control, expiry, events."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
from eth_abi import encode
from eth_utils import keccak
from hexbytes import HexBytes

from edgefabric.chain.client import TransactionReverted, TxResult
from edgefabric.chain.record import RecordFormatError, RecordPayload, decode_record
from edgefabric.chain.registry import Registry, service_id
from tests.kits.registry import Deployed

REPO = Path(__file__).resolve().parents[3]
EPS = ["https://a.example.com/x", "https://b.example.com/y"]
TTL = 60


def events(r: Registry, result: TxResult, name: str) -> list[Any]:
    event = getattr(r.contract.events, name)()
    out = []
    for entry in result.logs:
        if entry["topics"][0] == HexBytes(keccak(text=_signature(r, name))):
            out.append(event.process_log(entry))
    return out


def _signature(r: Registry, name: str) -> str:
    abi = next(e for e in r.contract.abi if e.get("type") == "event" and e["name"] == name)
    return f"{name}({','.join(_type(i) for i in abi['inputs'])})"


def _type(inp: dict[str, Any]) -> str:
    return str(inp["type"])


def reverts(error_name: str, fn: Any, *args: Any) -> TransactionReverted:
    with pytest.raises(TransactionReverted) as info:
        fn(*args)
    assert info.value.error_name == error_name, str(info.value)
    return info.value


def register(r: Registry, name: str = "api", version: str = "1.0.0", ttl: int = TTL,
             endpoints: list[str] | None = None, metadata: str = "{}") -> str:
    r.register(name, version, endpoints or EPS, metadata, ttl)
    return service_id(name, version, r.client.address)


# ----------------------------------------------------------------------------- artifact


def test_committed_artifact_matches_a_fresh_compile() -> None:
    # contracts/compile.py is a script beside the Solidity source, not a package module.
    loader = importlib.util.spec_from_file_location("contracts_compile", REPO / "contracts" / "compile.py")
    assert loader is not None and loader.loader is not None
    compiler = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(compiler)
    fresh = compiler.render(compiler.compile_registry())
    committed = compiler.ARTIFACT_PATH.read_text(encoding="utf-8")
    assert fresh == committed, "contracts/build/ServiceRegistry.json is stale: run `make contracts` and commit it"


# ----------------------------------------------------------------------------- register / read


def test_register_then_get_service_returns_every_field(reg: Deployed) -> None:
    result = reg.owner.register("api", "1.0.0", EPS, '{"tier":"core"}', TTL)
    sid = service_id("api", "1.0.0", reg.owner.client.address)
    rec = reg.owner.get_service(sid)
    assert rec is not None
    block_ts = int(reg.w3.eth.get_block(result.block_number)["timestamp"])
    assert (rec.name, rec.version, rec.endpoints, rec.metadata) == ("api", "1.0.0", EPS, '{"tier":"core"}')
    assert rec.owner == reg.owner.client.address
    assert rec.registration_time == rec.last_heartbeat == block_ts
    assert rec.ttl == TTL and rec.is_active
    assert reg.owner.is_alive(sid)
    assert reg.owner.service_versions("api") == [sid]
    assert reg.owner.owner_services(reg.owner.client.address) == [sid]
    assert reg.owner.discover("api") == [sid]

    (ev,) = events(reg.owner, result, "ServiceRegistered")
    assert ev["args"]["serviceId"] == HexBytes(sid)
    assert ev["args"]["owner"] == reg.owner.client.address
    assert ev["args"]["nameHash"] == keccak(text="api")
    assert ev["args"]["ttl"] == TTL
    # The log names the record; its code holds the payload, so logs + getCode rebuild the registry.
    assert record_payload(reg, ev["args"]["record"]) == RecordPayload(
        reg.owner.client.address, "api", "1.0.0", EPS, '{"tier":"core"}')


def record_payload(reg: Deployed, record: str) -> RecordPayload:
    return decode_record(reg.w3.eth.get_code(record))  # type: ignore[arg-type]


def registered_record(reg: Deployed, result: TxResult) -> str:
    (ev,) = events(reg.owner, result, "ServiceRegistered")
    return str(ev["args"]["record"])


def test_service_id_is_abi_encoded_and_owner_specific(reg: Deployed) -> None:
    owner = reg.owner.client.address
    on_chain = HexBytes(reg.owner.contract.functions.getServiceId("svc", "1.0", owner).call()).to_0x_hex()
    assert on_chain == "0x" + keccak(encode(["string", "string", "address"], ["svc", "1.0", owner])).hex()
    assert on_chain == service_id("svc", "1.0", owner)
    # The same name and version from another owner is another service: a view must not use msg.sender.
    other_id = reg.other.contract.functions.getServiceId("svc", "1.0", owner).call({"from": reg.other.client.address})
    assert HexBytes(other_id).to_0x_hex() == on_chain
    assert service_id("svc", "1.0", reg.other.client.address) != on_chain


def test_packed_encoding_collision_is_gone(reg: Deployed) -> None:
    # abi.encodePacked("svc", "1.0") == abi.encodePacked("svc1", ".0"): the seed gave them one id.
    a = register(reg.owner, "svc", "1.0")
    b = register(reg.owner, "svc1", ".0")
    assert a != b
    assert reg.owner.get_service(a).name == "svc"  # type: ignore[union-attr]
    assert reg.owner.get_service(b).name == "svc1"  # type: ignore[union-attr]


def test_same_name_and_version_by_two_owners_are_two_services(reg: Deployed) -> None:
    a = register(reg.owner)
    b = register(reg.other)
    assert a != b
    assert sorted(reg.owner.discover("api")) == sorted([a, b])
    assert reg.owner.owner_services(reg.other.client.address) == [b]


def test_register_twice_while_alive_reverts(reg: Deployed) -> None:
    sid = register(reg.owner)
    err = reverts("AlreadyRegistered", reg.owner.register, "api", "1.0.0", EPS, "", TTL)
    assert sid[2:] in str(err) and "registerService(api@1.0.0)" in str(err)


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        ({"name": ""}, "EmptyInput", "field='name'"),
        ({"name": "n" * 65}, "InputTooLarge", "field='name', size=65, max=64"),
        ({"version": ""}, "EmptyInput", "field='version'"),
        ({"version": "v" * 33}, "InputTooLarge", "size=33, max=32"),
        ({"endpoints": []}, "EmptyInput", "field='endpoints'"),
        ({"endpoints": ["e"] * 9}, "InputTooLarge", "field='endpoints', size=9, max=8"),
        ({"endpoints": ["ok", ""]}, "EmptyInput", "field='endpoint'"),
        ({"endpoints": ["e" * 257]}, "InputTooLarge", "field='endpoint', size=257, max=256"),
        ({"metadata": "m" * 1025}, "InputTooLarge", "field='metadata', size=1025, max=1024"),
        ({"ttl": 2}, "InvalidTtl", "ttl=2, min=3"),
        ({"ttl": 30 * 86400 + 1}, "InvalidTtl", "max=2592000"),
    ],
)
def test_input_bounds(reg: Deployed, kwargs: dict[str, Any], error: str, fragment: str) -> None:
    args: dict[str, Any] = {"name": "api", "version": "1", "endpoints": EPS, "metadata": "", "ttl": TTL} | kwargs
    err = reverts(error, reg.owner.register, args["name"], args["version"], args["endpoints"], args["metadata"],
                  args["ttl"])
    assert fragment in str(err)


def test_largest_allowed_inputs_register_and_read_back(reg: Deployed) -> None:
    # Distinct bytes everywhere, so a field read from a wrong offset cannot pass by accident.
    name, version = "".join(chr(48 + i % 40) for i in range(64)), "".join(chr(97 + i % 26) for i in range(32))
    eps = [f"{i}" + "".join(chr(65 + (i * 7 + j) % 26) for j in range(255)) for i in range(8)]
    metadata = "".join(chr(33 + i % 90) for i in range(1024))
    sid = register(reg.owner, name, version, ttl=30 * 86400, endpoints=eps, metadata=metadata)
    rec = reg.owner.get_service(sid)
    assert rec is not None
    assert (rec.name, rec.version, rec.endpoints, rec.metadata) == (name, version, eps, metadata)
    assert rec.owner == reg.owner.client.address and rec.ttl == 30 * 86400 and rec.is_active
    # Every length field at its bound: a 1-byte endpoint, empty metadata, 1-byte name and version.
    small = register(reg.owner, "n", "v", endpoints=["e"], metadata="")
    rec = reg.owner.get_service(small)
    assert rec is not None and (rec.name, rec.version, rec.endpoints, rec.metadata) == ("n", "v", ["e"], "")
    # Owner-only paths read the owner and the name back from the largest record too.
    reg.owner.update(sid, eps[::-1], metadata[::-1])
    rec = reg.owner.get_service(sid)
    assert rec is not None and (rec.name, rec.version, rec.endpoints, rec.metadata) == (
        name, version, eps[::-1], metadata[::-1])
    reg.owner.deregister(sid)
    assert reg.owner.service_versions(name) == []


def test_unknown_service(reg: Deployed) -> None:
    unknown = "0x" + "ab" * 32
    assert reg.owner.get_service(unknown) is None
    assert not reg.owner.is_alive(unknown)
    reverts("ServiceNotFound", reg.owner.heartbeat, unknown)
    reverts("ServiceNotFound", reg.owner.update, unknown, EPS, "")
    reverts("ServiceNotFound", reg.owner.deregister, unknown)


# ----------------------------------------------------------------------------- access control


def test_only_the_owner_can_heartbeat_update_or_deregister(reg: Deployed) -> None:
    sid = register(reg.owner)
    for error, call in (("NotHeartbeatSender", lambda: reg.other.heartbeat(sid, "api@1.0.0")),
                        ("NotServiceOwner", lambda: reg.other.update(sid, ["https://evil"], "", "api@1.0.0")),
                        ("NotServiceOwner", lambda: reg.other.deregister(sid, "api@1.0.0")),
                        ("NotServiceOwner", lambda: reg.other.set_delegate(sid, reg.other.client.address))):
        err = reverts(error, call)
        assert "api@1.0.0" in str(err) or sid[2:] in str(err)
        assert reg.other.client.address.lower() in str(err).lower()
    rec = reg.owner.get_service(sid)
    assert rec is not None and rec.endpoints == EPS and rec.is_active


def test_a_delegate_can_heartbeat_and_nothing_else(reg: Deployed) -> None:
    """Clusters' keys (delegates) keep the service alive but cannot redirect its endpoints,
    deregister it, or pass the right on; the owner can still beat, and can revoke them."""
    sid = register(reg.owner, name="delegated")
    cluster, second = reg.other, reg.third
    result = reg.owner.set_delegate(sid, cluster.client.address, "delegated@1.0.0")
    (ev,) = events(reg.owner, result, "HeartbeatDelegateSet")
    assert ev["args"]["delegate"] == cluster.client.address and ev["args"]["allowed"] is True
    reg.owner.set_delegate(sid, second.client.address)  # a second cluster: the mapping path
    assert reg.owner.is_delegate(sid, cluster.client.address) and reg.owner.is_delegate(sid, second.client.address)
    assert not reg.owner.is_delegate(sid, reg.owner.client.address)
    start = reg.owner.get_service(sid).last_heartbeat  # type: ignore[union-attr]
    reg.set_next_timestamp(start + 10)
    (beat,) = events(reg.owner, cluster.heartbeat(sid), "ServiceHeartbeat")
    assert beat["args"]["sender"] == cluster.client.address
    assert reg.owner.get_service(sid).last_heartbeat == start + 10  # type: ignore[union-attr]
    second.heartbeat(sid)
    for who in (cluster, second):
        reverts("NotServiceOwner", who.update, sid, ["https://evil"], "", "delegated")
        reverts("NotServiceOwner", who.deregister, sid, "delegated")
        reverts("NotServiceOwner", who.set_delegate, sid, who.client.address, "delegated")
        reverts("NotServiceOwner", who.revoke_delegate, sid, reg.owner.client.address, "delegated")
    reg.owner.heartbeat(sid)  # the owner keeps the right
    assert reg.owner.get_service(sid).endpoints == EPS  # type: ignore[union-attr]
    for who in (cluster, second):  # revoked: a rotated or lost key
        reg.owner.revoke_delegate(sid, who.client.address, "delegated")
        assert not reg.owner.is_delegate(sid, who.client.address)
        reverts("NotHeartbeatSender", who.heartbeat, sid)
    reg.owner.heartbeat(sid)


# ----------------------------------------------------------------------------- heartbeat, update, expiry


def test_heartbeat_restarts_the_ttl_and_emits(reg: Deployed) -> None:
    sid = register(reg.owner)
    start = reg.owner.get_service(sid).last_heartbeat  # type: ignore[union-attr]
    reg.set_next_timestamp(start + 50)
    result = reg.owner.heartbeat(sid)
    assert reg.owner.get_service(sid).last_heartbeat == start + 50  # type: ignore[union-attr]
    (ev,) = events(reg.owner, result, "ServiceHeartbeat")
    assert ev["args"]["timestamp"] == start + 50 and ev["args"]["serviceId"] == HexBytes(sid)
    reg.mine_at(start + 50 + TTL)  # exactly at the end of the renewed TTL: still alive
    assert reg.owner.is_alive(sid)
    reg.mine_at(start + 51 + TTL)
    assert not reg.owner.is_alive(sid)


def test_expiry_is_lazy_and_hides_the_service_from_discovery(reg: Deployed) -> None:
    live = register(reg.owner, version="2.0.0", ttl=600)
    sid = register(reg.owner, version="1.0.0", ttl=TTL)
    t0 = reg.owner.get_service(sid).last_heartbeat  # type: ignore[union-attr]
    reg.w3.provider.make_request("evm_increaseTime", [TTL + 1])  # type: ignore[arg-type]
    reg.rpc("evm_mine")
    assert reg.now() > t0 + TTL
    rec = reg.owner.get_service(sid)
    assert rec is not None and not rec.is_active and rec.name == "api"
    assert not reg.owner.is_alive(sid)
    assert reg.owner.discover("api") == [live]
    # Not cleaned up yet: still indexed, which the index views say plainly.
    assert set(reg.owner.service_versions("api")) == {sid, live}
    reverts("ServiceTtlExpired", reg.owner.heartbeat, sid)
    reverts("ServiceTtlExpired", reg.owner.update, sid, EPS, "")


def test_register_again_after_expiry_reuses_the_index_slot(reg: Deployed) -> None:
    sid = register(reg.owner, ttl=TTL, metadata="old")
    delegate = reg.third.client.address
    reg.owner.set_delegate(sid, delegate)
    reg.mine_at(reg.now() + TTL + 5)
    result = reg.owner.register("api", "1.0.0", ["https://new", "https://new2"], "new", 2 * TTL)
    assert reg.owner.service_versions("api") == [sid]
    assert reg.owner.owner_services(reg.owner.client.address) == [sid]
    assert reg.owner.contract.functions.indexedServiceCount().call() == 1
    rec = reg.owner.get_service(sid)
    block_ts = int(reg.w3.eth.get_block(result.block_number)["timestamp"])
    assert rec is not None and (rec.endpoints, rec.metadata, rec.ttl) == (["https://new", "https://new2"], "new", 2 * TTL)
    assert rec.registration_time == rec.last_heartbeat == block_ts and rec.is_active
    # The delegate survives a re-registration of the same id, and its heartbeat still works.
    assert reg.owner.is_delegate(sid, delegate)
    reg.third.heartbeat(sid)


def test_update_service_replaces_endpoints_and_metadata(reg: Deployed) -> None:
    sid = register(reg.owner, endpoints=["https://1", "https://2", "https://3"])
    before = reg.owner.get_service(sid)
    result = reg.owner.update(sid, ["https://9"], '{"v":2}')
    rec = reg.owner.get_service(sid)
    assert rec is not None and before is not None
    assert rec.endpoints == ["https://9"] and rec.metadata == '{"v":2}'
    assert rec.last_heartbeat == before.last_heartbeat  # an update is not a heartbeat
    assert (rec.name, rec.version, rec.owner, rec.registration_time) == (
        before.name, before.version, before.owner, before.registration_time)
    (ev,) = events(reg.owner, result, "ServiceUpdated")
    assert ev["args"]["endpoints"] == ["https://9"] and ev["args"]["metadata"] == '{"v":2}'
    reverts("EmptyInput", reg.owner.update, sid, [], "")


def test_update_writes_a_new_record_and_leaves_the_old_one(reg: Deployed) -> None:
    """A record is immutable: an update points the service at a new one carrying the same owner,
    name and version, and the old one still decodes to what the registration log promised."""
    first = registered_record(reg, reg.owner.register("api", "1.0.0", EPS, "m1", TTL))
    sid = service_id("api", "1.0.0", reg.owner.client.address)
    reg.owner.update(sid, ["https://u1"], "m2")
    reg.owner.update(sid, ["https://u2", "https://u3"], "")
    rec = reg.owner.get_service(sid)
    assert rec is not None and (rec.endpoints, rec.metadata) == (["https://u2", "https://u3"], "")
    assert record_payload(reg, first) == RecordPayload(reg.owner.client.address, "api", "1.0.0", EPS, "m1")
    # Owner checks read the owner from the current record: still the owner, nobody else.
    reverts("NotServiceOwner", reg.other.update, sid, EPS, "")
    reg.owner.heartbeat(sid)
    reg.owner.deregister(sid)
    assert reg.owner.service_versions("api") == []


def test_decode_record_refuses_code_that_is_not_a_whole_record(reg: Deployed) -> None:
    record = registered_record(reg, reg.owner.register("api", "1.0.0", EPS, "meta", TTL))
    code = bytes(reg.w3.eth.get_code(record))  # type: ignore[arg-type]
    assert decode_record(code).metadata == "meta"
    for bad, why in ((bytes(reg.w3.eth.get_code(reg.address)), "starts with STOP"),  # type: ignore[arg-type]
                     (code[:-1], "truncated"), (code + b"\x00", "trailing"), (b"", "starts with STOP")):
        with pytest.raises(RecordFormatError, match=why):
            decode_record(bad)


def test_a_record_is_inert_code(reg: Deployed) -> None:
    # Its code starts with STOP: a call (or a transfer) to it does nothing and cannot revert.
    record = registered_record(reg, reg.owner.register("api", "1.0.0", EPS, "", TTL))
    assert bytes(reg.w3.eth.get_code(record))[:1] == b"\x00"  # type: ignore[arg-type]
    assert reg.w3.eth.call({"to": record, "data": "0x12345678"}) == b""  # type: ignore[typeddict-item]


# ----------------------------------------------------------------------------- deregister


def test_deregister_removes_from_every_index_and_can_register_again(reg: Deployed) -> None:
    a = register(reg.owner, version="1")
    b = register(reg.owner, version="2")
    c = register(reg.owner, version="3")
    result = reg.owner.deregister(a)
    (ev,) = events(reg.owner, result, "ServiceDeregistered")
    assert ev["args"]["serviceId"] == HexBytes(a) and ev["args"]["owner"] == reg.owner.client.address
    # swap-and-pop: the last id moved into the freed slot
    assert reg.owner.service_versions("api") == [c, b]
    assert reg.owner.owner_services(reg.owner.client.address) == [c, b]
    rec = reg.owner.get_service(a)
    assert rec is not None and not rec.is_active and rec.name == "api"  # record stays readable
    reverts("ServiceNotActive", reg.owner.deregister, a)
    reverts("ServiceNotActive", reg.owner.heartbeat, a)
    reverts("ServiceNotActive", reg.owner.update, a, EPS, "")

    assert register(reg.owner, version="1", endpoints=["https://again"], metadata="again") == a
    rec = reg.owner.get_service(a)
    assert rec is not None and rec.is_active and (rec.name, rec.version, rec.endpoints, rec.metadata) == (
        "api", "1", ["https://again"], "again")
    assert reg.owner.service_versions("api") == [c, b, a]
    assert reg.owner.owner_services(reg.owner.client.address) == [c, b, a]
    assert reg.owner.contract.functions.indexedServiceCount().call() == 3
    assert reg.owner.discover("api") == [c, b, a]
    # Positions stored in the records stayed exact: removing the moved id works too.
    reg.owner.deregister(c)
    reg.owner.deregister(a)
    assert reg.owner.service_versions("api") == [b]


def test_deregister_of_an_expired_service_is_allowed(reg: Deployed) -> None:
    sid = register(reg.owner, ttl=TTL)
    reg.mine_at(reg.now() + TTL + 1)
    reg.owner.deregister(sid)
    assert reg.owner.service_versions("api") == []


# ----------------------------------------------------------------------------- discovery


def test_discover_services_pages_and_skips_expired(reg: Deployed) -> None:
    ids = [register(reg.owner, version=f"{i}.0", ttl=600 if i != 2 else TTL) for i in range(5)]
    reg.mine_at(reg.now() + TTL + 1)
    fn = reg.owner.contract.functions.discoverServices
    page1, next1, total = fn("api", 0, 2).call()
    assert [HexBytes(x).to_0x_hex() for x in page1] == ids[:2] and (next1, total) == (2, 5)
    page2, next2, _ = fn("api", next1, 2).call()
    assert [HexBytes(x).to_0x_hex() for x in page2] == [ids[3]] and next2 == 4  # ids[2] expired
    page3, next3, _ = fn("api", next2, 2).call()
    assert [HexBytes(x).to_0x_hex() for x in page3] == [ids[4]] and next3 == 5
    assert fn("api", 99, 2).call() == [[], 5, 5]
    assert fn("nothing", 0, 10).call() == [[], 0, 0]
    assert reg.owner.discover("api", page=3) == [ids[0], ids[1], ids[3], ids[4]]
    reverts("EmptyInput", lambda: reg.owner.client.call(fn("api", 0, 0), "discoverServices"))
    reverts("InputTooLarge", lambda: reg.owner.client.call(fn("api", 0, 201), "discoverServices"))


# ----------------------------------------------------------------------------- cleanup


def test_cleanup_removes_only_expired_and_emits(reg: Deployed) -> None:
    keep = register(reg.owner, version="keep", ttl=600)
    gone = [register(reg.owner, version=f"gone{i}", ttl=TTL) for i in range(3)]
    reg.mine_at(reg.now() + TTL + 1)
    result = reg.third.cleanup(10)
    expired = events(reg.owner, result, "ServiceExpired")
    assert sorted(HexBytes(e["args"]["serviceId"]).to_0x_hex() for e in expired) == sorted(gone)
    assert all(e["args"]["cleanedBy"] == reg.third.client.address for e in expired)
    assert reg.owner.service_versions("api") == [keep]
    assert reg.owner.contract.functions.indexedServiceCount().call() == 1
    assert not reg.owner.get_service(gone[0]).is_active  # type: ignore[union-attr]
    reverts("ServiceNotActive", reg.owner.deregister, gone[0])
    register(reg.owner, version="gone0", ttl=TTL)  # and it can come back
    reverts("EmptyInput", reg.owner.cleanup, 0)
    reverts("InputTooLarge", reg.owner.cleanup, 201)


def test_cleanup_of_1000_services_is_bounded_per_call(reg: Deployed) -> None:
    client = reg.owner.client
    # A fixed gas limit skips 1,000 estimates; the registrations cannot revert (distinct names).
    pending = [reg.owner.send_register(f"bulk-{i}", "1", ["https://e"], "", TTL, gas=400_000) for i in range(1000)]
    for p in pending:
        client.wait(p)
    assert reg.owner.contract.functions.indexedServiceCount().call() == 1000
    reg.mine_at(reg.now() + TTL + 1)
    gas_per_call = []
    total = 0
    for _ in range(20):  # bounded: 1000 / 100 = 10 calls are enough
        result = reg.third.cleanup(100)
        cleaned = len(events(reg.owner, result, "ServiceExpired"))
        if cleaned == 0:
            break
        gas_per_call.append(result.gas_used)
        total += cleaned
    assert total == 1000
    assert reg.owner.contract.functions.indexedServiceCount().call() == 0
    assert len(gas_per_call) == 10
    # Bounded by maxItems, not by the registry size: the first and the last call cost the same order.
    assert max(gas_per_call) < 8_000_000, gas_per_call
    assert max(gas_per_call) < 1.5 * min(gas_per_call), gas_per_call
