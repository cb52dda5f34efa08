"""A stack deployed before the move into the `edgefabric` package upgrades in place.

The `local` stack (anvil + PowerDNS + three endpoints) is deployed by the commit before the
move (OLD_REV: the flat `components/` and `providers/` layout, exported with `git archive`),
then the same backend and stack are pointed at a copy of this tree:

1. preview: every type token, logical name and parent is what it was, so every URN matches:
   nothing is created, deleted or replaced. The only steps besides `same` are in-place
   updates of the dynamic resources whose diff is exactly `provider_version`;
2. `up` applies those (no transaction, no DNS write), keeps every URN, the contract and the
   on-chain service ids, and a second preview expects no changes;
3. `destroy` on the new layout, checked against the chain and PowerDNS.

Why step 1 is not a no-change preview: dynamic providers are pickled into the state by module
path, and the pickles the old run wrote name `providers.*`, which no longer exists. Refresh
and delete load the provider stored with a resource's *outputs*, and the engine rewrites those
only on an update (a `same` step keeps the old outputs). So the move bumps each provider's
`provider_version`: without that one update, the upgraded stack could neither refresh nor
delete its registrations (the test never adds stand-in modules for the old paths).
"""

from __future__ import annotations

import base64
import json
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
from edgefabric.chain.registry import Registry
from tests.kits.engine import (
    ANVIL_DEV_KEY,
    REPO,
    Engine,
    LocalPorts,
    copy_project,
    local_env,
    pick_local_ports,
    resources_of_type,
    steps_by_op,
)

# The last commit of the flat layout (components/, providers/), just before the move.
OLD_REV = "20bb0b3"
STACK = "local"
CONTRACT = "pulumi-python:dynamic/registry:RegistryContract"
SERVICE = "pulumi-python:dynamic/registry:ServiceRegistration"
FAILOVER = "pulumi-python:dynamic/failover:WeightedFailover"
DYNAMIC = (CONTRACT, SERVICE, FAILOVER)
SECRET_SIG = "4dabf18193072939515e22adb298388d"


@dataclass
class Upgrade:
    old: Engine  # the old tree, deployed first
    new: Engine  # a copy of this tree, on the same backend, home and stack
    ports: LocalPorts
    local_env_dir: Path
    deployed: dict[str, Any] = field(default_factory=dict)  # the state right after the old `up`

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
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
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
    # The same stack file on both sides (the old one, with its stand-in ingress addresses): what
    # changes is the code, not the stack.
    new_tree = copy_project(root / "new", ports, stack_file=old_tree / "Pulumi.local.yaml")
    # One PULUMI_HOME and one file backend (`root`): the same stack, first run by the old code,
    # then by the new. The old program and its provider host import components/ and providers/
    # from the old tree; the new ones import the installed edgefabric package, nothing else.
    up = Upgrade(
        old=Engine(project=old_tree, root=root, bin_dir=engine_bin, extra_env={"PYTHONPATH": str(old_tree)}),
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
            # The test destroys on the new layout; if it did not get that far (or failed), the old
            # tree, whose provider host can load every pickle in the state, cleans up.
            leftover = [r for r in up.old.export(STACK).get("deployment", {}).get("resources", [])
                        if r["type"] in DYNAMIC]
            if leftover:
                up.old.run("cancel", "--yes", "--stack", STACK, check=False)
                up.old.run("destroy", "--yes", "--stack", STACK, check=False, timeout=600)
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


def test_the_new_layout_plans_only_provider_version_updates(upgrade: Upgrade) -> None:
    preview = upgrade.new.preview_json(STACK)
    ops = steps_by_op(preview)
    assert set(ops) <= {"same", "update"}, ops  # no create, delete or replace: the URNs all match
    steps = {step["urn"]: step for step in preview["steps"]}
    # Every step is for a resource that was deployed, under the same URN (the JSON lists no step
    # for components and default providers; `up` below compares the whole state).
    assert set(steps) <= set(urns(upgrade.deployed)), sorted(set(steps) - set(urns(upgrade.deployed)))
    dynamic = {r["urn"] for typ in DYNAMIC for r in resources_of_type(upgrade.deployed, typ)}
    updated = {urn for urn, step in steps.items() if step["op"] == "update"}
    # Every dynamic resource is updated (its stored pickle names a module that is gone) and
    # nothing else is; each for its provider version alone.
    assert updated == dynamic, ops
    for urn in updated:
        assert changed_inputs(steps[urn]) == ["provider_version"], (urn, changed_inputs(steps[urn]))


def test_up_on_the_new_layout_keeps_every_urn_and_id(upgrade: Upgrade) -> None:
    upgrade.new.run("up", "--yes", "--stack", STACK, timeout=900)
    state = upgrade.new.export(STACK, show_secrets=True)
    assert urns(state) == urns(upgrade.deployed)
    for typ in DYNAMIC:
        before = {r["urn"]: r["id"] for r in resources_of_type(upgrade.deployed, typ)}
        after = {r["urn"]: r["id"] for r in resources_of_type(state, typ)}
        assert after == before, typ
    # Inputs and outputs (what refresh and delete load) now carry the new providers.
    for res in (r for typ in DYNAMIC for r in resources_of_type(state, typ)):
        for where in ("inputs", "outputs"):
            pickled = pickled_provider(res[where]["__provider"])
            assert b"edgefabric.dynamic." in pickled and b"providers." not in pickled, (res["urn"], where)
    upgrade.new.run("preview", "--expect-no-changes", "--stack", STACK)


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
