"""RegistryContract and ServiceRegistration providers against a real anvil (started here)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import dill
import pytest
from pulumi.dynamic import ConfigureRequest
from pulumi.dynamic.config import Config

from devenv.anvil import AnvilProcess, start_anvil
from edgefabric.chain.client import ChainClient, ChainError, TransactionReverted, connect, load_account
from edgefabric.chain.registry import Registry, load_artifact, service_id
from edgefabric.dynamic.registry import (
    PROVIDER_VERSION,
    UNKNOWN,
    RegistryContractProvider,
    ServiceRegistrationProvider,
)
from edgefabric.errors import ConfigError

# Where the provider classes lived at each PROVIDER_VERSION. Append a version when they move:
# the state keeps each provider pickled by module path, and refresh and delete load the one in a
# resource's outputs, which only an update (a new provider_version) rewrites.
PROVIDER_HOMES = {"1": "providers.registry", "2": "edgefabric.dynamic.registry"}


@pytest.fixture(scope="module")
def anvil() -> Iterator[AnvilProcess]:
    with start_anvil() as node:
        yield node


@pytest.fixture(scope="module")
def key(anvil: AnvilProcess) -> str:
    return anvil.private_keys[3]


@pytest.fixture(scope="module")
def contract(anvil: AnvilProcess, key: str) -> dict[str, Any]:
    outs = RegistryContractProvider().create(
        {"rpc_url": anvil.rpc_url, "chain_id": 31337, "deployer_key": key, "existing_address": ""}
    ).outs
    assert outs is not None
    return outs


def configured(cls: type[Any], key: str) -> Any:
    """A provider as the engine hands it over: configured with the stack config (the secret key)."""
    provider = cls()
    provider.configure(ConfigureRequest(Config({"edgefabric:deployerKey": key}, "edgefabric")))
    return provider


def props(anvil: AnvilProcess, key: str, contract: dict[str, Any], name: str, **over: Any) -> dict[str, Any]:
    return {
        "rpc_url": anvil.rpc_url, "chain_id": 31337, "contract_address": contract["address"],
        "name": name, "version": "1.0.0", "endpoints": ["https://a.local/x", "https://b.local/y"],
        "metadata": '{"tier":"core"}', "ttl": 300, "deployer_key": key, "deployer_key_ref": "config:deployerKey",
        "provider_version": "1",
    } | over


def registry(anvil: AnvilProcess, key: str, address: str) -> Registry:
    w3 = connect(anvil.rpc_url)
    return Registry(ChainClient(w3, load_account(key), abi=load_artifact()["abi"]), address)


def assert_no_key(value: Any, key: str) -> None:
    text = repr(value).lower()
    assert key.lower() not in text and key.lower().removeprefix("0x") not in text


# ----------------------------------------------------------------------------- contract


def test_contract_deploy_read_adopt_and_delete(anvil: AnvilProcess, key: str, contract: dict[str, Any]) -> None:
    p = configured(RegistryContractProvider, key)
    assert contract["deploy_tx_hash"].startswith("0x") and contract["block_number"] > 0
    assert contract["adopted"] is False and contract["chain_id"] == 31337
    assert_no_key(contract, key)
    read = p.read(contract["address"], contract)
    assert read.id == contract["address"] and read.outs["code_hash"] == contract["code_hash"]

    adopted = p.create({"rpc_url": anvil.rpc_url, "chain_id": 31337, "deployer_key": key,
                        "existing_address": contract["address"]}).outs
    assert adopted is not None and adopted["adopted"] is True and adopted["address"] == contract["address"]

    # An address without our code: a clear error naming the key and the mismatch.
    eoa = load_account(anvil.private_keys[5]).address
    with pytest.raises(ChainError, match=r"registry contractAddress 0x[0-9a-fA-F]{40}: the code there"):
        p.create({"rpc_url": anvil.rpc_url, "chain_id": 31337, "deployer_key": key, "existing_address": eoa})
    assert p.read(eoa, contract | {"address": eoa}).id == ""  # no code: gone
    p.delete(contract["address"], contract)  # leaves the contract on chain
    assert len(connect(anvil.rpc_url).eth.get_code(contract["address"])) > 0


def test_contract_diff_replaces_on_chain_or_bytecode_change() -> None:
    p = RegistryContractProvider()
    olds = {"rpc_url": "http://127.0.0.1:1", "chain_id": 31337, "bytecode_hash": "0xaa", "existing_address": "",
            "provider_version": "1"}
    assert p.diff("x", olds, dict(olds)).changes is False
    assert p.diff("x", olds, olds | {"chain_id": 1}).replaces == ["chain_id"]
    assert p.diff("x", olds, olds | {"bytecode_hash": "0xbb"}).replaces == ["bytecode_hash"]
    rpc = p.diff("x", olds, olds | {"rpc_url": "http://127.0.0.1:2"})
    assert rpc.changes and not rpc.replaces
    assert p.diff("x", olds, olds | {"rpc_url": UNKNOWN}).changes  # preview with an unknown URL


def test_contract_check_and_wrong_chain_id(anvil: AnvilProcess, key: str) -> None:
    failures = RegistryContractProvider().check({}, {"chain_id": 0, "existing_address": "0x12"}).failures
    assert {f.property for f in failures} == {"chain_id", "existing_address"}
    with pytest.raises(ChainError, match=r"registry chainId is 5 but the node at .* reports 31337"):
        RegistryContractProvider().create({"rpc_url": anvil.rpc_url, "chain_id": 5, "deployer_key": key,
                                           "existing_address": ""})


# ----------------------------------------------------------------------------- registration lifecycle


def test_create_update_read_delete(anvil: AnvilProcess, key: str, contract: dict[str, Any]) -> None:
    p = configured(ServiceRegistrationProvider, key)
    inputs = props(anvil, key, contract, "lifecycle")
    created = p.create(inputs)
    outs = created.outs
    owner = load_account(key).address
    assert created.id == outs["service_id"] == service_id("lifecycle", "1.0.0", owner)
    assert outs["owner"] == owner and outs["tx_hash"].startswith("0x") and outs["adopted"] is False
    reg = registry(anvil, key, contract["address"])
    rec = reg.get_service(created.id)
    assert rec is not None and rec.is_active and rec.endpoints == inputs["endpoints"]

    news = inputs | {"endpoints": ["https://c.local/z"], "metadata": "{}"}
    diff = p.diff(created.id, outs, news)
    assert diff.changes and not diff.replaces
    updated = p.update(created.id, outs, news).outs
    assert updated["service_id"] == created.id and updated["tx_hash"] != outs["tx_hash"]
    assert reg.get_service(created.id).endpoints == ["https://c.local/z"]  # type: ignore[union-attr]
    # provider_version alone: an update that sends nothing
    same = p.update(created.id, updated, news | {"provider_version": "2"}).outs
    assert same["tx_hash"] == updated["tx_hash"]

    read = p.read(created.id, updated)
    assert read.id == created.id and read.outs["endpoints"] == ["https://c.local/z"]
    assert p.diff(created.id, read.outs, news).changes is False

    p.delete(created.id, updated)
    assert not reg.is_alive(created.id)
    p.delete(created.id, updated)  # twice: already gone, still fine
    assert p.read(created.id, updated).id == ""


def test_create_adopts_after_a_crash(anvil: AnvilProcess, key: str, contract: dict[str, Any]) -> None:
    # The transaction went out but the engine died before saving state: the service is on chain.
    reg = registry(anvil, key, contract["address"])
    reg.register("crashy", "1.0.0", ["https://old"], "", 300)
    before = connect(anvil.rpc_url).eth.get_transaction_count(load_account(key).address)
    created = configured(ServiceRegistrationProvider, key).create(props(anvil, key, contract, "crashy"))
    assert created.outs["adopted"] is True
    assert reg.get_service(created.id).endpoints == ["https://a.local/x", "https://b.local/y"]  # type: ignore[union-attr]
    # exactly one transaction (the updateService that aligned the endpoints), no second register
    assert connect(anvil.rpc_url).eth.get_transaction_count(load_account(key).address) == before + 1
    again = configured(ServiceRegistrationProvider, key).create(props(anvil, key, contract, "crashy"))
    assert again.outs["adopted"] is True and again.outs["tx_hash"] == ""


def test_read_shows_out_of_band_drift(anvil: AnvilProcess, key: str, contract: dict[str, Any]) -> None:
    p = configured(ServiceRegistrationProvider, key)
    inputs = props(anvil, key, contract, "drifty")
    outs = p.create(inputs).outs
    reg = registry(anvil, key, contract["address"])
    reg.update(outs["service_id"], ["https://changed"], "by hand")
    read = p.read(outs["service_id"], outs)
    assert read.outs["endpoints"] == ["https://changed"] and read.outs["metadata"] == "by hand"
    diff = p.diff(outs["service_id"], read.outs, inputs)
    assert diff.changes and not diff.replaces  # the next `up` puts the endpoints back
    reg.deregister(outs["service_id"])
    assert p.read(outs["service_id"], outs).id == ""  # deregistered out of band: refresh drops it


def test_read_and_delete_when_the_registry_contract_is_gone(
        anvil: AnvilProcess, key: str, contract: dict[str, Any]) -> None:
    """A reset dev chain: the contract address holds no code. Refresh drops the registration and
    destroy succeeds, instead of failing on an undecodable call."""
    p = configured(ServiceRegistrationProvider, key)
    outs = p.create(props(anvil, key, contract, "orphan")).outs
    gone = outs | {"contract_address": "0x" + "de" * 20}  # an address with no code
    assert p.read(outs["service_id"], gone).id == ""
    before = connect(anvil.rpc_url).eth.get_transaction_count(load_account(key).address)
    p.delete(outs["service_id"], gone)
    assert connect(anvil.rpc_url).eth.get_transaction_count(load_account(key).address) == before


def test_diff_lists_exactly_the_replacing_inputs(anvil: AnvilProcess, key: str, contract: dict[str, Any]) -> None:
    p = configured(ServiceRegistrationProvider, key)
    olds = props(anvil, key, contract, "d") | {"owner": load_account(key).address, "service_id": "0x1"}
    news = props(anvil, key, contract, "d")
    assert p.diff("0x1", olds, news).changes is False
    for k, v in [("name", "e"), ("version", "2"), ("contract_address", "0x" + "22" * 20)]:
        d = p.diff("0x1", olds, news | {k: v})
        assert d.replaces == [k] and d.delete_before_replace is False, k
    ttl = p.diff("0x1", olds, news | {"ttl": 600})
    assert ttl.replaces == ["ttl"] and ttl.delete_before_replace is True  # same id: deregister first
    owner = p.diff("0x1", olds, news | {"deployer_key": anvil.private_keys[6]})
    assert owner.replaces == ["deployer_key"] and owner.delete_before_replace is False
    eps = p.diff("0x1", olds, news | {"endpoints": ["https://new"]})
    assert eps.changes and eps.replaces == []
    # preview: unknown values must not crash diff or check
    unknown = p.diff("0x1", olds, news | {"endpoints": UNKNOWN, "deployer_key": UNKNOWN})
    assert unknown.changes and unknown.replaces == []
    assert p.check({}, news | {"endpoints": [UNKNOWN], "name": UNKNOWN}).failures == []


def test_check_names_the_bad_input() -> None:
    failures = ServiceRegistrationProvider().check({}, {
        "name": "n" * 65, "version": "1", "endpoints": [], "metadata": "", "ttl": 1}).failures
    by_key = {f.property: f.reason for f in failures}
    assert set(by_key) == {"name", "endpoints", "ttl"}
    assert "name must be 1..64 bytes, got 65" in by_key["name"]
    assert "ttl must be 3..2592000 seconds, got 1" in by_key["ttl"]


def test_reverted_transaction_gives_a_clear_message(anvil: AnvilProcess, key: str, contract: dict[str, Any]) -> None:
    p = configured(ServiceRegistrationProvider, key)
    outs = p.create(props(anvil, key, contract, "reverts")).outs
    registry(anvil, key, contract["address"]).deregister(outs["service_id"])
    with pytest.raises(TransactionReverted) as info:
        p.update(outs["service_id"], outs, props(anvil, key, contract, "reverts", endpoints=["https://x"]))
    message = str(info.value)
    assert message.startswith("updateService(reverts@1.0.0): reverted: ServiceNotActive(serviceId=0x"), message
    assert outs["service_id"][2:] in message


def test_50_registrations_from_8_threads(anvil: AnvilProcess, contract: dict[str, Any]) -> None:
    key = anvil.private_keys[4]  # an account no other test uses: its nonces are all ours
    p = configured(ServiceRegistrationProvider, key)

    def create(i: int) -> str:
        return p.create(props(anvil, key, contract, f"parallel-{i:02d}")).id

    with ThreadPoolExecutor(max_workers=8) as pool:
        ids = list(pool.map(create, range(50)))
    reg = registry(anvil, key, contract["address"])
    assert len(set(ids)) == 50
    assert all(reg.is_alive(i) for i in ids)
    assert len(reg.owner_services(load_account(key).address)) == 50


# ----------------------------------------------------------------------------- the key


def test_key_is_nowhere_in_outputs_or_the_pickled_provider(
    anvil: AnvilProcess, key: str, contract: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from pulumi.dynamic.dynamic import serialize_provider

    # As the program builds it (never configured there), driven through a full cycle with the key
    # as an input: the methods must not leave the key (or a client holding it) on the object.
    p = ServiceRegistrationProvider()
    created = p.create(props(anvil, key, contract, "secretive"))
    updated = p.update(created.id, created.outs, props(anvil, key, contract, "secretive", metadata="x")).outs
    read = p.read(created.id, updated).outs
    for outs in (contract, created.outs, updated, read):
        assert "deployer_key" not in outs
        assert_no_key(outs, key)
    for provider in (p, RegistryContractProvider()):
        assert_no_key(dill.dumps(provider, recurse=True), key)
        assert_no_key(serialize_provider(provider), key)

    # delete sees only the saved outputs: the key comes from the reference, here the environment.
    monkeypatch.setenv("EDGEFABRIC_DEPLOYER_KEY", key)
    env_props = props(anvil, key, contract, "from-env", deployer_key=None,
                      deployer_key_ref="env:EDGEFABRIC_DEPLOYER_KEY")
    env_outs = p.create(env_props).outs
    assert env_outs["owner"] == load_account(key).address
    assert_no_key(env_outs, key)
    p.delete(env_outs["service_id"], env_outs)
    assert not registry(anvil, key, contract["address"]).is_alive(env_outs["service_id"])

    # A bad key is reported without echoing it; a missing one names where it was looked for.
    monkeypatch.setenv("EDGEFABRIC_DEPLOYER_KEY", "0x" + "zz" * 32)
    with pytest.raises(ChainError) as info:
        p.create(env_props | {"name": "bad"})
    assert "is not a 32-byte hex private key" in str(info.value)
    assert "zz" * 8 not in str(info.value)
    with pytest.raises(ConfigError, match=r"registry\.deployerKeyRef = 'config:deployerKey': secret config key "
                                          r"edgefabric:deployerKey is not set"):
        ServiceRegistrationProvider().delete(created.id, updated)


@pytest.mark.parametrize("cls", [RegistryContractProvider, ServiceRegistrationProvider])
def test_a_provider_class_that_moves_gets_a_new_provider_version(cls: type) -> None:
    assert PROVIDER_HOMES[PROVIDER_VERSION] == cls.__module__, (
        f"{cls.__qualname__} now lives in {cls.__module__}: stacks deployed before hold pickles naming "
        f"{PROVIDER_HOMES[PROVIDER_VERSION]}; bump PROVIDER_VERSION and record the new home here")
    assert len(set(PROVIDER_HOMES.values())) == len(PROVIDER_HOMES)
    # What the state holds is a reference by module path, not the code itself.
    assert cls.__module__.encode() in dill.dumps(cls(), recurse=True)


def test_an_expired_registration_is_registered_again_by_a_plain_up(
    anvil: AnvilProcess, key: str, contract: dict[str, Any]
) -> None:
    """An RPC outage longer than the TTL expires the service; diff sees it on chain (no refresh),
    plans a delete-then-create of the same id, and the create registers it again."""
    p = configured(ServiceRegistrationProvider, key)
    news = props(anvil, key, contract, "expires", ttl=3)
    outs = p.create(news).outs
    assert outs is not None
    sid = outs["service_id"]
    assert p.diff(sid, outs, news).changes is False  # alive: nothing to do
    w3 = connect(anvil.rpc_url)
    w3.provider.make_request("evm_mine", [int(w3.eth.get_block("latest")["timestamp"]) + 10])  # type: ignore[arg-type]
    diff = p.diff(sid, outs, news)
    assert diff.replaces == ["service_id"] and diff.delete_before_replace is True
    p.delete(sid, outs)  # expired: nothing to deregister
    assert p.create(news).outs["service_id"] == sid
    assert registry(anvil, key, contract["address"]).is_alive(sid)
    unreachable = outs | {"rpc_url": "http://127.0.0.1:9"}
    assert p.diff(sid, unreachable, news | {"rpc_url": "http://127.0.0.1:9"}).replaces == []  # unsure: no replace


def test_heartbeat_delegate_is_funded_beats_only_and_rotates(
    anvil: AnvilProcess, key: str, contract: dict[str, Any]
) -> None:
    """A cluster's key: generated, funded, a delegate of each service; it can heartbeat but not
    change endpoints. Rotation (a new `rotation` value) makes a new key a delegate, then the old
    one's delete revokes it and sweeps its funds back to the owner."""
    from edgefabric.dynamic.registry import HeartbeatDelegateProvider

    services = configured(ServiceRegistrationProvider, key)
    ids = [services.create(props(anvil, key, contract, f"delegated-{i}")).outs["service_id"]  # type: ignore[index]
           for i in range(2)]
    p = configured(HeartbeatDelegateProvider, key)
    base = {"rpc_url": anvil.rpc_url, "chain_id": 31337, "contract_address": contract["address"],
            "service_ids": ids, "funding_wei": 10**16, "rotation": "1", "marks": [],
            "deployer_key": key, "deployer_key_ref": "config:deployerKey", "provider_version": PROVIDER_VERSION}
    assert p.check({}, base | {"service_ids": ["0x12"]}).failures[0].property == "service_ids"
    created = p.create(base)
    outs = created.outs
    assert outs is not None and created.id == outs["address"] != load_account(key).address
    assert "deployer_key" not in outs and outs["funded_wei"] == 10**16
    owner = registry(anvil, key, contract["address"])
    cluster = registry(anvil, outs["private_key"], contract["address"])
    assert cluster.client.balance(outs["address"]) == 10**16
    assert all(owner.is_delegate(i, outs["address"]) for i in ids)
    cluster.heartbeat(ids[0])  # the cluster's key keeps the service alive ...
    with pytest.raises(TransactionReverted) as info:  # ... and cannot redirect it
        cluster.update(ids[0], ["https://evil"], "")
    assert info.value.error_name == "NotServiceOwner"

    # One service dropped: its delegation is revoked; the other stays.
    updated = p.update(outs["address"], outs, base | {"service_ids": ids[1:]}).outs
    assert updated["private_key"] == outs["private_key"]
    assert not owner.is_delegate(ids[0], outs["address"]) and owner.is_delegate(ids[1], outs["address"])

    # Rotation: replace (create the new key first), then delete the old one.
    news = base | {"service_ids": ids[1:], "rotation": "2"}
    assert p.diff(outs["address"], updated, news).replaces == ["rotation"]
    fresh = p.create(news).outs
    assert fresh is not None and fresh["address"] != outs["address"]
    before = owner.client.balance(owner.client.address)
    p.delete(outs["address"], updated)
    assert not owner.is_delegate(ids[1], outs["address"]) and owner.is_delegate(ids[1], fresh["address"])
    assert cluster.client.balance(outs["address"]) < 10**15  # swept back, less the fee
    assert owner.client.balance(owner.client.address) > before
    with pytest.raises(TransactionReverted) as info:
        cluster.heartbeat(ids[1])
    assert info.value.error_name == "NotHeartbeatSender"


def test_deployer_key_rotation_registers_under_the_new_key_and_leaves_the_old_to_expire(
    anvil: AnvilProcess, contract: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A new deployer key gives new service ids (the owner is part of the id): diff replaces,
    create registers under the new key, and the old entry's delete, run with the new key, says
    it is left to expire instead of failing on NotServiceOwner."""
    old_key, new_key = anvil.private_keys[5], anvil.private_keys[6]
    before = props(anvil, old_key, contract, "rotated", ttl=30)
    old_outs = configured(ServiceRegistrationProvider, old_key).create(before).outs
    assert old_outs is not None
    rotated = configured(ServiceRegistrationProvider, new_key)
    after = props(anvil, new_key, contract, "rotated", ttl=30)
    assert rotated.diff(old_outs["service_id"], old_outs, after).replaces == ["deployer_key"]
    new_outs = rotated.create(after).outs
    assert new_outs is not None and new_outs["service_id"] != old_outs["service_id"]
    with caplog.at_level("WARNING", logger="edgefabric.dynamic.registry"):
        rotated.delete(old_outs["service_id"], old_outs | {"deployer_key_ref": "config:deployerKey"})
    assert "a rotated key" in caplog.text and "left to expire within its ttl of 30s" in caplog.text
    reader = registry(anvil, new_key, contract["address"])
    assert reader.is_alive(new_outs["service_id"]) and reader.is_alive(old_outs["service_id"])
    # With the old key the old entry can still be removed at once.
    configured(ServiceRegistrationProvider, old_key).delete(old_outs["service_id"], old_outs)
    assert not reader.is_alive(old_outs["service_id"])
