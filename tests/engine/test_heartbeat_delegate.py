"""A cluster's heartbeat key (HeartbeatDelegate) through the real Pulumi CLI, against a real
anvil: generated and funded by `up`, its private key only ever ciphertext in state, a
rotation that replaces it (the new key first, the old one revoked and swept), a re-registration
after which it still beats, and a destroy that revokes it."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from devenv.anvil import AnvilProcess, start_anvil
from edgefabric.chain.client import ChainClient, TransactionReverted, connect, load_account
from edgefabric.chain.registry import Registry, load_artifact
from tests.kits.engine import REPO, Engine, resources_of_type, steps_by_op

PROGRAM = textwrap.dedent(
    '''
    import pulumi

    from edgefabric.dynamic.registry import HeartbeatDelegate, RegistryContract, ServiceRegistration

    cfg = pulumi.Config()
    key = cfg.require_secret("deployerKey")
    rpc = cfg.require("rpcUrl")
    common = dict(rpc_url=rpc, chain_id=31337, deployer_key=key, deployer_key_ref="config:deployerKey")
    contract = RegistryContract("registry", **common)
    svc = ServiceRegistration("api-gateway", contract_address=contract.id, name="api-gateway", version="1.0.0",
                              endpoints=["https://203.0.113.10"], metadata="{}", ttl=3600, **common)
    delegate = HeartbeatDelegate("aws-delegate", contract_address=contract.id, service_ids=[svc.service_id],
                                 funding_wei=10**16, rotation=cfg.get("rotation") or "1", marks=[svc.tx_hash],
                                 **common)
    pulumi.export("address", contract.address)
    pulumi.export("service_id", svc.service_id)
    pulumi.export("delegate", delegate.address)
    pulumi.export("delegate_key", delegate.private_key)
    '''
)
STACK = "delegate"
DELEGATE = "pulumi-python:dynamic/registry:HeartbeatDelegate"


@pytest.fixture(scope="module")
def chain() -> Iterator[AnvilProcess]:
    with start_anvil() as node:
        yield node


@pytest.fixture(scope="module")
def project(engine_bin: Path, tmp_path_factory: pytest.TempPathFactory, chain: AnvilProcess) -> Engine:
    root = tmp_path_factory.mktemp("engine-delegate")
    proj = root / "project"
    proj.mkdir()
    (proj / "Pulumi.yaml").write_text(
        "name: delegatetest\nruntime:\n  name: python\n  options:\n"
        f"    toolchain: pip\n    virtualenv: {REPO / 'venv'}\n"
    )
    (proj / "__main__.py").write_text(PROGRAM)
    eng = Engine(project=proj, root=root, bin_dir=engine_bin, passphrase="delegate-pass",
                 extra_env={"PYTHONPATH": str(REPO), "EDGEFABRIC_DEPLOYER_KEY": ""})
    eng.run("stack", "init", STACK)
    eng.run("config", "set", "rpcUrl", chain.rpc_url, "--stack", STACK)
    eng.run("config", "set", "--secret", "deployerKey", chain.private_keys[3], "--stack", STACK)
    return eng


def _registry(chain: AnvilProcess, key: str, address: str) -> Registry:
    return Registry(ChainClient(connect(chain.rpc_url), load_account(key), abi=load_artifact()["abi"]), address)


def test_delegate_lifecycle_through_the_engine(project: Engine, chain: AnvilProcess) -> None:
    owner_key = chain.private_keys[3]
    project.run("up", "--yes", "--stack", STACK)
    out = project.outputs(STACK, show_secrets=True)
    owner = _registry(chain, owner_key, out["address"])
    sid, first = out["service_id"], out["delegate"]
    assert owner.is_delegate(sid, first) and owner.client.balance(first) == 10**16
    cluster = _registry(chain, out["delegate_key"], out["address"])
    cluster.heartbeat(sid)

    # The delegate's key and the owner's: ciphertext only, in state and in the plain outputs.
    plain = json.dumps(project.export(STACK)) + json.dumps(project.outputs(STACK))
    for key in (owner_key, out["delegate_key"]):
        assert key[2:].lower() not in plain.lower()
    assert set(steps_by_op(project.preview_json(STACK))) == {"same"}

    # Rotation: a new key, made a delegate and funded; the old one revoked and swept back.
    project.run("config", "set", "rotation", "2", "--stack", STACK)
    ops = steps_by_op(project.preview_json(STACK))
    assert any("aws-delegate" in s for s in ops.get("replace", [])), ops
    project.run("up", "--yes", "--stack", STACK)
    out2 = project.outputs(STACK, show_secrets=True)
    assert out2["delegate"] != first and out2["delegate_key"] != out["delegate_key"]
    assert owner.is_delegate(sid, out2["delegate"]) and not owner.is_delegate(sid, first)
    assert owner.client.balance(first) < 10**15
    with pytest.raises(TransactionReverted, match="NotHeartbeatSender"):
        cluster.heartbeat(sid)
    _registry(chain, out2["delegate_key"], out["address"]).heartbeat(sid)
    assert len(resources_of_type(project.export(STACK), DELEGATE)) == 1

    # Destroy: the delegation is revoked with the owner key found through its reference.
    project.run("destroy", "--yes", "--stack", STACK)
    assert not owner.is_delegate(sid, out2["delegate"])
