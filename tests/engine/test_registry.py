"""The registry dynamic resources through the real Pulumi CLI, against a real anvil.

A throwaway project (not the edgefabric program) so the lifecycle is exercised in isolation:
up, no-change preview, refresh after out-of-band drift, update, replace plan, the key's absence
from state and outputs, and destroy (which finds the key through the `config:` reference,
because delete only sees saved outputs).
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from devenv.anvil import AnvilProcess, start_anvil
from edgefabric.chain.client import ChainClient, connect, load_account
from edgefabric.chain.registry import Registry, load_artifact
from tests.kits.engine import REPO, Engine, resources_of_type, steps_by_op

PROGRAM = textwrap.dedent(
    '''
    import pulumi

    from edgefabric.dynamic.registry import RegistryContract, ServiceRegistration

    cfg = pulumi.Config()
    key = cfg.require_secret("deployerKey")
    rpc = cfg.require("rpcUrl")
    contract = RegistryContract("registry", rpc_url=rpc, chain_id=31337, deployer_key=key,
                                deployer_key_ref="config:deployerKey")
    svc = ServiceRegistration("api-gateway", rpc_url=rpc, chain_id=31337, contract_address=contract.address,
                              name="api-gateway", version=cfg.get("version") or "1.0.0",
                              endpoints=cfg.get_object("endpoints") or ["https://203.0.113.10"],
                              metadata="{}", ttl=3600, deployer_key=key, deployer_key_ref="config:deployerKey")
    pulumi.export("address", contract.address)
    pulumi.export("service_id", svc.service_id)
    '''
)
STACK = "registry"
REG = "pulumi-python:dynamic/registry:ServiceRegistration"


@pytest.fixture(scope="module")
def chain() -> Iterator[AnvilProcess]:
    with start_anvil() as node:
        yield node


@pytest.fixture(scope="module")
def project(engine_bin: Path, tmp_path_factory: pytest.TempPathFactory, chain: AnvilProcess) -> Engine:
    root = tmp_path_factory.mktemp("engine-registry")
    proj = root / "project"
    proj.mkdir()
    (proj / "Pulumi.yaml").write_text(
        "name: registrytest\nruntime:\n  name: python\n  options:\n"
        f"    toolchain: pip\n    virtualenv: {REPO / 'venv'}\n"
    )
    (proj / "__main__.py").write_text(PROGRAM)
    # PYTHONPATH: the program and the dynamic-provider host both import providers.* from the repo.
    eng = Engine(project=proj, root=root, bin_dir=engine_bin, passphrase="registry-pass",
                 extra_env={"PYTHONPATH": str(REPO), "EDGEFABRIC_DEPLOYER_KEY": ""})
    eng.run("stack", "init", STACK)
    eng.run("config", "set", "rpcUrl", chain.rpc_url, "--stack", STACK)
    eng.run("config", "set", "--secret", "deployerKey", chain.private_keys[2], "--stack", STACK)
    return eng


def _registry(chain: AnvilProcess, address: str) -> Registry:
    client = ChainClient(connect(chain.rpc_url), load_account(chain.private_keys[2]), abi=load_artifact()["abi"])
    return Registry(client, address)


def test_lifecycle_through_the_engine(project: Engine, chain: AnvilProcess) -> None:
    key = chain.private_keys[2]
    project.run("up", "--yes", "--stack", STACK)
    out = project.outputs(STACK)
    reg = _registry(chain, out["address"])
    record = reg.get_service(out["service_id"])
    assert record is not None and record.is_active and record.endpoints == ["https://203.0.113.10"]

    # No change: every step is `same`.
    assert set(steps_by_op(project.preview_json(STACK))) == {"same"}

    # The key: ciphertext in state, never in any resource's outputs, never in plain text.
    plain = json.dumps(project.export(STACK))
    assert key not in plain and key[2:] not in plain
    # Decrypted, it is only in the secret inputs (and in the engine's own record of the stack
    # config for the dynamic-provider plugin), never in our resources' outputs.
    revealed = project.export(STACK, show_secrets=True)
    ours = [r for r in revealed["deployment"]["resources"] if r["type"].startswith("pulumi-python:dynamic/registry:")]
    assert len(ours) == 2
    for res in ours:
        assert key[2:] not in json.dumps(res.get("outputs", {})), res["urn"]

    # Drift: endpoints changed by hand; refresh records it, up puts the configured ones back.
    reg.update(out["service_id"], ["https://changed-by-hand"], "{}")
    project.run("refresh", "--yes", "--stack", STACK)
    (state,) = resources_of_type(project.export(STACK), REG)
    assert state["outputs"]["endpoints"] == ["https://changed-by-hand"]
    project.run("up", "--yes", "--stack", STACK)
    assert reg.get_service(out["service_id"]).endpoints == ["https://203.0.113.10"]  # type: ignore[union-attr]

    # An endpoint change is an in-place update; a version change plans a replacement.
    project.run("config", "set", "--path", "endpoints[0]", "https://203.0.113.20", "--stack", STACK)
    project.run("up", "--yes", "--stack", STACK)
    assert reg.get_service(out["service_id"]).endpoints == ["https://203.0.113.20"]  # type: ignore[union-attr]
    project.run("config", "set", "version", "2.0.0", "--stack", STACK)
    ops = steps_by_op(project.preview_json(STACK))
    assert any("api-gateway" in s for s in ops.get("replace", [])), ops
    project.run("config", "rm", "version", "--stack", STACK)

    # Destroy: delete sees only outputs; the key comes from the config reference.
    project.run("destroy", "--yes", "--stack", STACK)
    assert not reg.is_alive(out["service_id"])
    assert len(connect(chain.rpc_url).eth.get_code(out["address"])) > 0  # contracts stay on chain
