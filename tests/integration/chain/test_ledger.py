"""The deployment ledger against a real anvil: the contract's gas and access, the dynamic
resource's entries as the engine drives it (create, then updates), and `edgefabric audit`."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from web3 import Web3

from devenv.anvil import AnvilProcess
from edgefabric.chain.client import ChainClient, TransactionReverted, load_account
from edgefabric.chain.ledger import Ledger, config_hash, graph_hash, load_ledger_artifact
from edgefabric.config.loading import from_raw_values, load_config, raw_from_stack_file
from edgefabric.dynamic.ledger import DeploymentRecordProvider, LedgerContractProvider
from tooling import audit

REPO = Path(__file__).resolve().parents[3]
STACK = "ledger-test"
RECORD = audit.RECORD
CONTRACT = audit.LEDGER_CONTRACT
# A resource graph as a state export lists it (the record itself is not part of it).
GRAPH = [("pulumi:pulumi:Stack", f"edgefabric-{STACK}"), ("pulumi:providers:pulumi-python", "default"),
         ("edgefabric:registry:BlockchainRegistry", "registry"),
         ("pulumi-python:dynamic/registry:RegistryContract", "registry-contract"),
         (CONTRACT, "ledger-contract")]


def _ledger(w3: Web3, key: str, address: str) -> Ledger:
    return Ledger(ChainClient(w3, load_account(key), abi=load_ledger_artifact()["abi"]), address)


@pytest.fixture
def ledger_address(anvil: AnvilProcess) -> tuple[str, int]:
    props = {"rpc_url": anvil.rpc_url, "chain_id": anvil.chain_id, "deployer_key": anvil.private_keys[0]}
    outs = _outs(LedgerContractProvider().create(props).outs)
    return str(outs["address"]), int(outs["block_number"])


def _outs(outs: dict[str, Any] | None) -> dict[str, Any]:
    assert outs is not None
    return outs


def test_record_gas_and_who_may_append(anvil: AnvilProcess, w3: Web3, ledger_address: tuple[str, int]) -> None:
    address, _ = ledger_address
    owner, other = _ledger(w3, anvil.private_keys[0], address), _ledger(w3, anvil.private_keys[1], address)
    h = "0x" + "ab" * 32
    first = owner.record(STACK, "0x" + "01" * 20, h, h)
    second = owner.record(STACK, "0x" + "02" * 20, h, "0x" + "cd" * 32)
    # Two slots written: the first entry of a stack pays two fresh slots, later ones rewrite them.
    assert first.gas_used <= 80_000 and second.gas_used <= 80_000, (first.gas_used, second.gas_used)
    assert second.gas_used < first.gas_used
    with pytest.raises(TransactionReverted) as err:
        other.record(STACK, "0x" + "03" * 20, h, h)  # nobody else writes this stack's history
    assert err.value.error_name == "NotStackOwner"
    owner.client.transact(owner.contract.functions.handOver(STACK, other.client.address), "handOver")
    other.record(STACK, "0x" + "03" * 20, h, h)  # a rotated deployer key, handed the stack
    history = owner.history(STACK)
    assert [e.seq for e in history] == [0, 1, 2]
    assert [e.deployer for e in history] == [owner.client.address] * 2 + [other.client.address]
    latest = owner.latest(STACK)
    assert latest.count == 3 and latest.entry_hash == history[-1].hash and latest.owner == other.client.address


def _stack_file(tmp_path: Path, anvil: AnvilProcess) -> Path:
    doc = yaml.safe_load((REPO / "Pulumi.local.yaml").read_text())
    doc["config"]["edgefabric:registry"]["rpcUrl"] = anvil.rpc_url
    doc["config"]["edgefabric:registry"]["chainId"] = anvil.chain_id
    path = tmp_path / f"Pulumi.{STACK}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _typed(stack_file: Path) -> Any:
    raw = raw_from_stack_file(stack_file)
    raw.setdefault("environment", STACK)
    return load_config(raw)


def test_the_program_and_audit_hash_the_same_config(tmp_path: Path, anvil: AnvilProcess) -> None:
    # The program reads each top-level key through pulumi.Config (JSON text); audit reads the
    # stack file. Both must give one hash, or every audit would fail.
    stack_file = _stack_file(tmp_path, anvil)
    raw = raw_from_stack_file(stack_file)
    values: dict[str, str | None] = {k: v if isinstance(v, str) else json.dumps(v) for k, v in raw.items()}
    assert config_hash(from_raw_values(values, STACK)) == config_hash(_typed(stack_file))


def _export(contract_outs: dict[str, Any], record_outs: dict[str, Any], graph: list[tuple[str, str]]) -> dict[str, Any]:
    """A `pulumi stack export` of the stack, as the engine writes one."""
    resources: list[dict[str, Any]] = [{"urn": f"urn:pulumi:{STACK}::edgefabric::{t}::{n}", "type": t} for t, n in graph]
    for res in resources:
        if res["type"] == CONTRACT:
            res["outputs"] = contract_outs
    resources.append({"urn": f"urn:pulumi:{STACK}::edgefabric::{RECORD}::ledger-entry", "type": RECORD,
                      "outputs": record_outs})
    return {"version": 3, "deployment": {"resources": resources}}


def _audit(stack_file: Path, export: dict[str, Any]) -> tuple[list[audit.Finding], str]:
    out = io.StringIO()
    findings = audit.audit(STACK, stack_file, export, out=out)
    return findings, out.getvalue()


def test_three_ups_make_three_entries_and_a_config_changed_outside_up_fails_the_audit(
        tmp_path: Path, anvil: AnvilProcess, w3: Web3, ledger_address: tuple[str, int]) -> None:
    address, block = ledger_address
    stack_file = _stack_file(tmp_path, anvil)
    provider = DeploymentRecordProvider()
    base = {"rpc_url": anvil.rpc_url, "chain_id": anvil.chain_id, "ledger_address": address, "stack": STACK,
            "deployer_key": anvil.private_keys[0], "provider_version": "1"}
    graph = list(GRAPH)
    # up 1: everything new.
    props = base | {"commit": "0x" + "aa" * 20, "config_hash": "0x" + "00" * 32,
                    "graph_hash": graph_hash(graph[:2])}
    outs = _outs(provider.create(props).outs)
    # up 2: the code moved on; up 3: the config and the graph changed (this file, these resources).
    for change in ({"commit": "0x" + "bb" * 20},
                   {"config_hash": config_hash(_typed(stack_file)), "graph_hash": graph_hash(graph)}):
        news = props | change
        assert provider.diff("", outs, news).changes
        outs = _outs(provider.update("", outs, news).outs)
        props = news
    # An up that changes nothing records nothing (a converged stack previews no changes).
    assert not provider.diff("", outs, props).changes
    assert _outs(provider.update("", outs, props | {"provider_version": "2"}).outs)["seq"] == outs["seq"]
    # Refresh reads the latest entry back: this state's own.
    read = _outs(provider.read(f"{STACK}#2", outs).outs)
    assert (read["entry_hash"], read["seq"]) == (outs["entry_hash"], 2)
    contract_outs = {"address": address, "block_number": block}
    export = _export(contract_outs, outs, graph)

    findings, printed = _audit(stack_file, export)
    assert all(f.ok for f in findings), findings
    assert f"3 entries for {STACK}" in printed and "#2 " in printed and "commit bbbbbbbbbbbb" in printed
    code = audit.main(["--stack", STACK, "--stack-file", str(stack_file), "--state", str(_write(tmp_path, export))])
    assert code == 0

    # Someone edits the stack's config and never runs `up`: the audit says so, and fails.
    doc = yaml.safe_load(stack_file.read_text())
    doc["config"]["edgefabric:registry"]["serviceTtlS"] = 600
    stack_file.write_text(yaml.safe_dump(doc, sort_keys=False))
    findings, _ = _audit(stack_file, export)
    assert [f.what.split(" hashes")[0] for f in findings if not f.ok] == [f"the config in {stack_file.name}"]
    assert audit.main(["--stack", STACK, "--stack-file", str(stack_file),
                       "--state", str(_write(tmp_path, export))]) == 1

    # A resource deployed without an `up` recording it (or a state that lost one) fails too.
    doc["config"]["edgefabric:registry"]["serviceTtlS"] = 300
    stack_file.write_text(yaml.safe_dump(doc, sort_keys=False))
    drifted = _export(contract_outs, outs, [*graph, ("kubernetes:core/v1:Namespace", "stray")])
    findings, _ = _audit(stack_file, drifted)
    assert [f.what.split(" hashes")[0] for f in findings if not f.ok] == ["the deployed resource graph"]

    # An entry appended outside this state (another checkout's `up`): refresh sees it, audit fails.
    _ledger(w3, anvil.private_keys[0], address).record(STACK, "0x" + "cc" * 20, "0x" + "01" * 32, "0x" + "02" * 32)
    assert _outs(provider.read(f"{STACK}#2", outs).outs)["seq"] == 3
    findings, _ = _audit(stack_file, export)
    assert "the state's DeploymentRecord is entry #2, the last one is #3" in [f.what for f in findings if not f.ok]


def _write(tmp_path: Path, export: dict[str, Any]) -> Path:
    path = tmp_path / "export.json"
    path.write_text(json.dumps(export))
    return path


def test_committed_ledger_artifact_matches_a_fresh_compile() -> None:
    # contracts/compile.py is a script beside the Solidity source, not a package module.
    import importlib.util

    spec = importlib.util.spec_from_file_location("contracts_compile", REPO / "contracts" / "compile.py")
    assert spec is not None and spec.loader is not None
    compiler = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compiler)
    fresh = compiler.render(compiler.compile_contract("DeploymentLedger.sol", "DeploymentLedger"))
    assert compiler.artifact_path("DeploymentLedger").read_text(encoding="utf-8") == fresh, \
        "contracts/build/DeploymentLedger.json is stale: run `make contracts`"
