"""A stack deployed before the move into the `edgefabric` package upgrades to this tree.

The `local` stack (anvil + PowerDNS + three endpoints) is deployed by the commit before the
move (OLD_REV: the flat `components/` and `providers/` layout, exported with `git archive`),
then the same backend and stack are run by two later trees:

1. **The move** (MOVE_REV, the last commit before the registry's bytecode changed): every type
   token, logical name and parent is what it was, so every URN matches. The only steps besides
   `same` are in-place updates of the dynamic resources whose diff is exactly
   `provider_version`; `up` applies them and stores pickles that name `edgefabric.dynamic.*`.
2. **The registry change** (this tree: heartbeat delegates changed the contract's bytecode,
   and other work adds resources such as the MQTT CA and certificates, a controller, network
   policies). What an upgrade must guarantee, whatever gets added:
   - nothing deployed is deleted, and nothing is replaced except the documented replacements
     (README "Upgrades"): the RegistryContract for its `bytecode_hash`, and each
     ServiceRegistration for its `contract_address` (re-registered on the new contract);
   - no replacement deletes first: the new registration exists before the old one goes;
   - the DNS failover (the records consumers resolve) is updated in place, never replaced;
   - after `up`, every URN deployed before is still there, every kept resource keeps its id,
     every service keeps its id (it does not depend on the contract) and is alive on the new
     contract, the old contract's entries are deregistered, and a second preview is converged.
3. `edgefabric audit` on the upgraded stack: the upgrade's `up` is the ledger's first entry and
   the audit passes; with the stack file edited and not deployed, it fails.
4. `destroy` on this tree, checked against the chain and PowerDNS.

Why two hops: dynamic providers are pickled into the state by module path, and refresh and
delete load the pickle stored with a resource's *outputs*. A replacement deletes the old
resource with *its* pickle, so a state whose pickles still name `providers.*` cannot be
replaced by code without that module. The move's release rewrites every pickle (one update per
dynamic resource, `provider_version`); a stack from before the move must `up` once with it
before taking a release that replaces dynamic resources. The test adds no stand-in modules.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from devenv.cli import LOCAL_PDNS_API_KEY
from devenv.powerdns import _api as pdns_api
from edgefabric.chain.client import ChainClient, connect, load_account
from edgefabric.chain.registry import Registry, code_hash, load_artifact
from tests.kits.engine import (
    ANVIL_DEV_KEY,
    REPO,
    Engine,
    LocalPorts,
    copy_project,
    kept_service_ttl,
    local_env,
    pick_local_ports,
    resources_of_type,
    steps_by_op,
)

# The last commit of the flat layout (components/, providers/), just before the move.
OLD_REV = "20bb0b3"
# The last commit before the ServiceRegistry bytecode changed (heartbeat delegates): the layout
# of this tree, the registry of the old one.
MOVE_REV = "e84ad55"
STACK = "local"
CONTRACT = "pulumi-python:dynamic/registry:RegistryContract"
SERVICE = "pulumi-python:dynamic/registry:ServiceRegistration"
FAILOVER = "pulumi-python:dynamic/failover:WeightedFailover"
DYNAMIC = (CONTRACT, SERVICE, FAILOVER)
LEDGER_ENTRY = "pulumi-python:dynamic/ledger:DeploymentRecord"
SECRET_SIG = "4dabf18193072939515e22adb298388d"
# The replacements the README documents for the registry change, and the one input each is for.
DOCUMENTED_REPLACES = {CONTRACT: {"bytecode_hash"}, SERVICE: {"contract_address"}}
# How `preview --json` spells the steps of a replacement (create-before-delete by default).
REPLACE_OPS = {"replace", "create-replacement", "delete-replaced"}


@dataclass
class Upgrade:
    old: Engine  # the old tree, deployed first
    moved: Engine  # the tree of MOVE_REV, on the same backend, home and stack
    new: Engine  # a copy of this tree, on the same backend, home and stack
    ports: LocalPorts
    local_env_dir: Path
    deployed: dict[str, Any] = field(default_factory=dict)  # the state right after the old `up`
    moved_state: dict[str, Any] = field(default_factory=dict)  # ... and after the move's `up`

    def state(self) -> dict[str, Any]:
        return self.new.export(STACK)

    def registry(self, address: str) -> Registry:
        w3 = connect(f"http://127.0.0.1:{self.ports.anvil}", expected_chain_id=31337)
        return Registry(ChainClient(w3, load_account(ANVIL_DEV_KEY)), address)

    def lua_rrsets(self) -> list[dict[str, Any]]:
        url = f"http://127.0.0.1:{self.ports.pdns_api}/api/v1/servers/localhost/zones/edgefabric.local."
        status, zone = pdns_api("GET", url, LOCAL_PDNS_API_KEY)
        assert status == 200, zone
        assert isinstance(zone, dict)
        return [r for r in zone["rrsets"] if r["type"] == "LUA"]


def export_rev(rev: str, dest: Path) -> Path:
    """The tree of `rev`, as files (git archive: nothing is registered in the shared .git)."""
    check = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"],
                           capture_output=True, text=True, check=False)
    if check.returncode != 0:
        pytest.skip(f"commit {rev} is not in this clone (shallow?): nothing to upgrade from")
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", check.stdout.strip()],
                             capture_output=True, check=True)
    dest.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return dest


def old_project(tree: Path, ports: LocalPorts) -> Path:
    """The old tree as a runnable project: this venv, and its own stack file pointed at the
    test's ports (the same edits `copy_project` makes; secure values and salt are kept)."""
    (tree / "venv").symlink_to(REPO / "venv")
    path = tree / "Pulumi.local.yaml"
    doc = yaml.safe_load(path.read_text())
    cfg = doc["config"]
    cfg["edgefabric:registry"]["rpcUrl"] = f"http://127.0.0.1:{ports.anvil}"
    cfg["edgefabric:dns"]["backends"]["powerdns"]["apiUrl"] = f"http://127.0.0.1:{ports.pdns_api}"
    cfg["edgefabric:healthCheck"]["check"]["port"] = ports.endpoint
    # The TTL copy_project gives every test stack, from the first deploy on: otherwise the new
    # tree's longer TTL would show up as a replacement that is the test's, not the upgrade's.
    cfg["edgefabric:registry"]["serviceTtlS"] = kept_service_ttl(cfg)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return tree


def moved_project(tree: Path, stack_file: Path) -> Path:
    """MOVE_REV's tree as a runnable project, with the old tree's stack file (the code changes,
    not the stack). Its program and provider host import its own `edgefabric` (PYTHONPATH)."""
    (tree / "venv").symlink_to(REPO / "venv")
    shutil.copy2(stack_file, tree / "Pulumi.local.yaml")
    return tree


def urns(state: dict[str, Any]) -> list[str]:
    return sorted(r["urn"] for r in state["deployment"].get("resources", []))


def pickled_provider(value: Any) -> bytes:
    """The dill pickle of a dynamic provider, from an `export --show-secrets` value."""
    if isinstance(value, dict) and value.get(SECRET_SIG):
        plain = value.get("plaintext", value.get("value"))
        value = json.loads(plain) if isinstance(plain, str) and plain.startswith('"') else plain
    assert isinstance(value, str), value
    return base64.b64decode(value)


@pytest.fixture(scope="module")
def upgrade(engine_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upgrade]:
    root = tmp_path_factory.mktemp("engine-upgrade")
    ports = pick_local_ports()
    old_tree = old_project(export_rev(OLD_REV, root / "old"), ports)
    moved_tree = moved_project(export_rev(MOVE_REV, root / "moved"), old_tree / "Pulumi.local.yaml")
    # The same stack file on every side (the old one, with its stand-in ingress addresses): what
    # changes is the code, not the stack.
    new_tree = copy_project(root / "new", ports, stack_file=old_tree / "Pulumi.local.yaml")
    # One PULUMI_HOME and one file backend (`root`): the same stack, run by each tree in turn.
    # The old and moved programs (and their provider hosts) import from their own trees; the new
    # ones import the installed edgefabric package, nothing else.
    up = Upgrade(
        old=Engine(project=old_tree, root=root, bin_dir=engine_bin, extra_env={"PYTHONPATH": str(old_tree)}),
        moved=Engine(project=moved_tree, root=root, bin_dir=engine_bin,
                     extra_env={"PYTHONPATH": str(moved_tree)}),
        new=Engine(project=new_tree, root=root, bin_dir=engine_bin, extra_env={"PYTHONPATH": ""}),
        ports=ports, local_env_dir=root / "local-env",
    )
    local_env(new_tree, up.local_env_dir, ports, "up")
    try:
        up.old.run("stack", "init", STACK)
        up.old.run("up", "--yes", "--stack", STACK, timeout=900)
        up.deployed = up.old.export(STACK, show_secrets=True)
        yield up
    finally:
        try:
            # The test destroys on the new tree; if it did not get that far, a tree whose provider
            # host can load every pickle in the state cleans up: the old one before the move's
            # `up`, this one after it.
            leftover = [r for r in up.old.export(STACK).get("deployment", {}).get("resources", [])
                        if r["type"] in DYNAMIC]
            if leftover:
                cleaner = up.new if up.moved_state else up.old
                cleaner.run("cancel", "--yes", "--stack", STACK, check=False)
                cleaner.run("destroy", "--yes", "--stack", STACK, check=False, timeout=600)
        finally:
            local_env(new_tree, up.local_env_dir, ports, "down", "--purge")


def test_the_old_layout_deployed_the_stack(upgrade: Upgrade) -> None:
    state = upgrade.deployed
    assert len(resources_of_type(state, CONTRACT)) == 1
    assert len(resources_of_type(state, FAILOVER)) == 1
    assert len(resources_of_type(state, SERVICE)) == 4
    # The state really is the old layout's: its pickled providers name the old modules.
    [contract] = resources_of_type(state, CONTRACT)
    assert b"providers.registry" in pickled_provider(contract["inputs"]["__provider"])


def changed_inputs(step: dict[str, Any]) -> list[str]:
    """The inputs a preview step changes (secrets show as `[secret]` on both sides: the provider
    pickle and the key are not compared)."""
    old, new = step["oldState"].get("inputs", {}), step["newState"].get("inputs", {})
    return sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))


def test_the_move_plans_and_applies_only_provider_version_updates(upgrade: Upgrade) -> None:
    preview = upgrade.moved.preview_json(STACK)
    ops = steps_by_op(preview)
    assert set(ops) <= {"same", "update"}, ops  # no create, delete or replace: the URNs all match
    steps = {step["urn"]: step for step in preview["steps"]}
    assert set(steps) <= set(urns(upgrade.deployed)), sorted(set(steps) - set(urns(upgrade.deployed)))
    dynamic = {r["urn"] for typ in DYNAMIC for r in resources_of_type(upgrade.deployed, typ)}
    updated = {urn for urn, step in steps.items() if step["op"] == "update"}
    # Every dynamic resource is updated (its stored pickle names a module that is gone) and
    # nothing else is; each for its provider version alone.
    assert updated == dynamic, ops
    for urn in updated:
        assert changed_inputs(steps[urn]) == ["provider_version"], (urn, changed_inputs(steps[urn]))

    upgrade.moved.run("up", "--yes", "--stack", STACK, timeout=900)
    state = upgrade.moved.export(STACK, show_secrets=True)
    assert urns(state) == urns(upgrade.deployed)
    for typ in DYNAMIC:
        before = {r["urn"]: r["id"] for r in resources_of_type(upgrade.deployed, typ)}
        assert {r["urn"]: r["id"] for r in resources_of_type(state, typ)} == before, typ
    # Inputs and outputs (what refresh, delete and a replacement load) now carry the new providers.
    for res in (r for typ in DYNAMIC for r in resources_of_type(state, typ)):
        for where in ("inputs", "outputs"):
            pickled = pickled_provider(res[where]["__provider"])
            assert b"edgefabric.dynamic." in pickled and b"providers." not in pickled, (res["urn"], where)
    upgrade.moved_state = state


def test_the_registry_change_plans_only_documented_replacements(upgrade: Upgrade) -> None:
    assert upgrade.moved_state, "the move's up did not run"
    preview = upgrade.new.preview_json(STACK)
    ops = steps_by_op(preview)
    assert set(ops) <= {"same", "update", "create"} | REPLACE_OPS, ops  # nothing deployed is deleted
    deployed = {r["urn"]: r for r in upgrade.moved_state["deployment"]["resources"]}
    replaced: dict[str, set[str]] = {}
    for step in preview["steps"]:
        urn, op = step["urn"], step["op"]
        if op == "create":
            assert urn not in deployed, urn  # a create under a deployed URN would be a lost resource
        elif op in REPLACE_OPS:
            assert urn in deployed, urn
            typ = deployed[urn]["type"]
            reasons = set(step.get("replaceReasons") or [])
            assert typ in DOCUMENTED_REPLACES, f"{urn} is replaced ({sorted(reasons)}): not a documented replacement"
            if op != "delete-replaced":
                assert reasons and reasons <= DOCUMENTED_REPLACES[typ], (urn, sorted(reasons))
            replaced.setdefault(urn, set()).add(op)
    # The contract and every registration move to the new bytecode, and nothing else does.
    expected = {urn for urn, r in deployed.items() if r["type"] in DOCUMENTED_REPLACES}
    assert set(replaced) == expected, sorted(set(replaced) ^ expected)
    # Create before delete: the replacement exists before the old resource goes (a
    # delete-before-replace would show its delete first, and leave the service unregistered).
    order = [(s["urn"], s["op"]) for s in preview["steps"] if s["op"] in REPLACE_OPS]
    for urn in replaced:
        mine = [op for u, op in order if u == urn]
        assert "delete-replaced" not in mine or mine.index("delete-replaced") > mine.index("create-replacement"), \
            (urn, mine)
    # The DNS failover is kept: updated in place at most.
    for res in resources_of_type(upgrade.moved_state, FAILOVER):
        assert next(s["op"] for s in preview["steps"] if s["urn"] == res["urn"]) in {"same", "update"}


def test_up_keeps_every_urn_and_id_and_moves_the_services(upgrade: Upgrade) -> None:
    before = upgrade.moved_state
    [old_contract] = resources_of_type(before, CONTRACT)
    upgrade.new.run("up", "--yes", "--stack", STACK, timeout=900)
    state = upgrade.new.export(STACK, show_secrets=True)
    assert set(urns(before)) <= set(urns(state)), sorted(set(urns(before)) - set(urns(state)))
    # Kept resources keep their ids; the services keep theirs too (the id is keccak(name,
    # version, owner), not the contract's address).
    for typ in (SERVICE, FAILOVER):
        kept = {r["urn"]: r["id"] for r in resources_of_type(before, typ)}
        after = {r["urn"]: r["id"] for r in resources_of_type(state, typ)}
        assert {urn: after.get(urn) for urn in kept} == kept, typ
    [contract] = resources_of_type(state, CONTRACT)
    new_address = contract["outputs"]["address"]
    assert new_address != old_contract["outputs"]["address"]
    registry = upgrade.registry(new_address)
    assert code_hash(registry.client.w3.eth.get_code(new_address)) == code_hash(load_artifact()["deployedBytecode"])
    sids = [r["outputs"]["service_id"] for r in resources_of_type(state, SERVICE)]
    assert len(sids) >= 4 and all(registry.is_alive(sid) for sid in sids)
    # The replaced registrations were deregistered from the old contract, not left to expire.
    old_registry = upgrade.registry(old_contract["outputs"]["address"])
    moved_sids = [r["outputs"]["service_id"] for r in resources_of_type(before, SERVICE)]
    assert not any(old_registry.is_alive(sid) for sid in moved_sids)
    # The upgrade's `up` is in the deployment ledger (a new resource: created, not replacing).
    [entry] = resources_of_type(state, LEDGER_ENTRY)
    assert entry["outputs"]["seq"] == 0 and entry["outputs"]["config_hash"].startswith("0x")
    for res in (r for typ in DYNAMIC for r in resources_of_type(state, typ)):
        assert b"edgefabric.dynamic." in pickled_provider(res["outputs"]["__provider"]), res["urn"]
    upgrade.new.run("preview", "--expect-no-changes", "--stack", STACK)


def audit_cli(upgrade: Upgrade) -> subprocess.CompletedProcess[str]:
    """`edgefabric audit` (the console script) on the deployed stack's export and stack file."""
    export = upgrade.local_env_dir.parent / "audit-export.json"
    export.write_text(json.dumps(upgrade.new.export(STACK)))
    return subprocess.run([str(REPO / "venv" / "bin" / "edgefabric"), "audit", "--stack", STACK, "--stack-file",
                           str(upgrade.new.project / "Pulumi.local.yaml"), "--state", str(export)],
                          capture_output=True, text=True, timeout=120, check=False)


def test_audit_agrees_with_the_upgraded_stack_and_catches_a_config_edit(upgrade: Upgrade) -> None:
    passed = audit_cli(upgrade)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert f"1 entries for {STACK}" in passed.stdout and "audit passed" in passed.stdout, passed.stdout
    stack_file = upgrade.new.project / "Pulumi.local.yaml"
    original = stack_file.read_text()
    doc = yaml.safe_load(original)
    doc["config"]["edgefabric:registry"]["serviceTtlS"] = int(doc["config"]["edgefabric:registry"]
                                                              .get("serviceTtlS", 300)) + 60
    stack_file.write_text(yaml.safe_dump(doc, sort_keys=False))
    try:
        failed = audit_cli(upgrade)  # edited, never deployed
    finally:
        stack_file.write_text(original)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "FAIL the config in Pulumi.local.yaml" in failed.stdout, failed.stdout


def test_destroy_on_the_new_layout(upgrade: Upgrade) -> None:
    state = upgrade.state()
    [contract] = resources_of_type(state, CONTRACT)
    registry = upgrade.registry(contract["outputs"]["address"])
    sids = [r["outputs"]["service_id"] for r in resources_of_type(state, SERVICE)]
    assert sids and all(registry.is_alive(sid) for sid in sids)

    upgrade.new.run("destroy", "--yes", "--stack", STACK, timeout=900)
    assert urns(upgrade.state()) == []
    assert upgrade.lua_rrsets() == []
    for sid in sids:
        assert not registry.is_alive(sid), sid
