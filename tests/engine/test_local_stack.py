"""The real Pulumi CLI on a throwaway copy of the `local` stack (local clusters, anvil, PowerDNS,
one endpoint per cloud), shared with test_tiers.py (`shared_local_stack`).

One scenario, in order (each test builds on the state the previous one left):
preview lists the creates -> up (outputs checked against the chain and PowerDNS) -> no-change
preview -> drift made behind the engine's back, seen by refresh, repaired by up -> a health change
shows as a weight change -> the state export holds no plaintext key -> destroy, checked against
PowerDNS and the chain -> crash consistency: `pulumi up` killed mid-registration, then recovered.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from devenv.anvil import rpc_call
from devenv.cli import LOCAL_PDNS_API_KEY
from devenv.powerdns import _api as pdns_api
from edgefabric.chain.client import ChainClient, connect, load_account
from edgefabric.chain.registry import Registry
from tests.kits.engine import (
    ANVIL_DEV_KEY,
    Engine,
    LocalPorts,
    LocalStackRun,
    describe,
    diff_ops,
    local_env,
    resources_of_type,
    shared_local_stack,
    steps_by_op,
    wait_for,
)

STACK = "local"
CONTRACT = "pulumi-python:dynamic/registry:RegistryContract"
SERVICE = "pulumi-python:dynamic/registry:ServiceRegistration"
FAILOVER = "pulumi-python:dynamic/failover:WeightedFailover"
# Every public name the local stack publishes: `dns.recordName`, then `dns.records`.
_DNS = yaml.safe_load((Path(__file__).resolve().parents[2] / "Pulumi.local.yaml").read_text())["config"]["edgefabric:dns"]
LOCAL_RECORDS = [_DNS["recordName"], *(r["name"] for r in _DNS.get("records") or [])]
ADDRESS_RE = re.compile(r"^0x[0-9a-fA-F]{40}$")


@dataclass
class LocalStack:
    engine: Engine
    ports: LocalPorts
    local_env_dir: Path
    run: LocalStackRun

    @property
    def rpc_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.anvil}"

    @property
    def pdns_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.pdns_api}"

    def local_env(self, *args: str) -> str:
        return local_env(self.engine.project, self.local_env_dir, self.ports, *args).stdout

    def state(self) -> dict[str, Any]:
        return self.engine.export(STACK)

    def registry(self, address: str) -> Registry:
        w3 = connect(self.rpc_url, expected_chain_id=31337)
        return Registry(ChainClient(w3, load_account(ANVIL_DEV_KEY)), address)

    def lua_rrsets(self) -> list[dict[str, Any]]:
        status, zone = pdns_api("GET", f"{self.pdns_url}/api/v1/servers/localhost/zones/edgefabric.local.",
                                LOCAL_PDNS_API_KEY)  # fmt: skip
        assert status == 200, zone
        assert isinstance(zone, dict)
        return [r for r in zone["rrsets"] if r["type"] == "LUA"]

    def api_rrsets(self) -> list[dict[str, Any]]:
        """The LUA answers of the stack's first record (`dns.recordName`); the others follow other strategies."""
        return [r for r in self.lua_rrsets() if r["name"] == LOCAL_RECORDS[0]]


@pytest.fixture(scope="module")
def stack(request: pytest.FixtureRequest, engine_bin: Path) -> Iterator[LocalStack]:
    # One copy of the stack, its stand-ins and clusters for the session (initialised, not
    # deployed; destroyed and stopped when the session ends).
    run = shared_local_stack(request, engine_bin)
    yield LocalStack(run.engine, run.ports, run.local_env_dir, run)


def test_shipped_stack_file_carries_its_secrets_encrypted() -> None:
    """`make demo` runs on the committed Pulumi.local.yaml: without an encryptionsalt and both
    secure values there, `pulumi stack init` would rewrite the file and the program lacks keys."""
    text = (Path(__file__).resolve().parents[2] / "Pulumi.local.yaml").read_text()
    assert "encryptionsalt: v1:" in text
    for key in ("deployerKey", "powerdnsApiKey"):
        assert re.search(rf"edgefabric:{key}:\n\s+secure: v1:", text), f"edgefabric:{key} is not a secure value"
    assert ANVIL_DEV_KEY[2:] not in text and LOCAL_PDNS_API_KEY not in text


def test_preview_lists_the_expected_creates(stack: LocalStack) -> None:
    steps = steps_by_op(stack.engine.preview_json(STACK))
    assert set(steps) == {"create"}, steps
    creates = steps["create"]
    kinds = [label.split("::")[0] for label in creates]
    assert kinds.count(CONTRACT) == 1, creates
    assert kinds.count(FAILOVER) == len(LOCAL_RECORDS), creates
    config = yaml.safe_load((stack.engine.project / "Pulumi.local.yaml").read_text())["config"]
    # Core services under their names; regional and edge ones under `<region|site>-<service>`.
    names = [svc["name"] for svc in config["edgefabric:core"]["services"]]
    names += [f"{r['name']}-{svc['name']}" for r in config.get("edgefabric:regions") or [] for svc in r["services"]]
    names += [f"{site['name']}-{svc['name']}" for site in (config.get("edgefabric:edge") or {}).get("sites") or []
              for svc in site["services"]]
    assert sorted(label.split("::")[1] for label in creates if label.startswith(SERVICE)) == sorted(
        f"registry-{name}" for name in names
    ), creates


def test_up_deploys_contract_services_and_weights(stack: LocalStack) -> None:
    started = time.monotonic()
    stack.engine.run("up", "--yes", "--stack", STACK, timeout=1800)
    stack.run.record("first_up_s", time.monotonic() - started)
    state = stack.state()
    [contract] = resources_of_type(state, CONTRACT)
    address = contract["outputs"]["address"]
    assert ADDRESS_RE.match(address), address
    registry = stack.registry(address)
    services = resources_of_type(state, SERVICE)
    assert services
    for svc in services:
        record = registry.get_service(svc["outputs"]["service_id"])
        assert record is not None and record.is_active, svc["urn"]
    failovers = resources_of_type(state, FAILOVER)
    assert len(failovers) == len(LOCAL_RECORDS), failovers
    for failover in failovers:
        default = failover["outputs"]["plan"]["answers"]["default"]["weights"]
        assert sum(default.values()) == failover["outputs"]["plan"]["scale"], default
    rrsets = stack.lua_rrsets()
    assert sorted(r["name"] for r in rrsets) == sorted(LOCAL_RECORDS), rrsets
    for rrset in rrsets:
        assert "pickwrandom" in rrset["records"][0]["content"], rrset

    # The outputs a user sees carry the same facts.
    text = json.dumps(stack.engine.outputs(STACK))
    assert address.lower() in text.lower(), text
    for svc in services:
        assert svc["outputs"]["service_id"] in text, (svc["urn"], text)


def test_second_preview_has_no_changes(stack: LocalStack) -> None:
    stack.engine.run("preview", "--expect-no-changes", "--stack", STACK)


def test_refresh_sees_drift_and_up_repairs_it(stack: LocalStack) -> None:
    state = stack.state()
    [contract] = resources_of_type(state, CONTRACT)
    registry = stack.registry(contract["outputs"]["address"])
    victim = resources_of_type(state, SERVICE)[0]
    sid = victim["outputs"]["service_id"]
    [rrset] = stack.api_rrsets()
    original = rrset["records"][0]["content"]

    # Behind the engine's back: new weights in PowerDNS, one service deregistered on chain.
    tampered = 'A "pickwrandom({{1,\'127.0.1.3\'}})"'
    status, body = pdns_api(
        "PATCH", f"{stack.pdns_url}/api/v1/servers/localhost/zones/edgefabric.local.", LOCAL_PDNS_API_KEY,
        {"rrsets": [{**{k: rrset[k] for k in ("name", "type", "ttl")}, "changetype": "REPLACE",
                     "records": [{"content": tampered, "disabled": False}]}]},
    )  # fmt: skip
    assert status == 204, body
    registry.deregister(sid)
    gone = registry.get_service(sid)
    assert gone is None or not gone.is_active

    # Refresh shows both: the record's published weights changed, the registration is gone.
    shown = diff_ops(stack.engine.run("refresh", "--preview-only", "--diff", "--stack", STACK).stdout)
    [failover_name] = [r["urn"].rsplit("::", 1)[-1] for r in resources_of_type(state, FAILOVER)
                       if r["outputs"].get("record_name", r["inputs"].get("record_name")) == LOCAL_RECORDS[0]]
    victim_name = victim["urn"].rsplit("::", 1)[-1]
    assert shown.get(failover_name) == "update", shown
    assert shown.get(victim_name) in ("update", "delete"), shown
    assert set(shown) == {failover_name, victim_name}, shown
    stack.engine.run("refresh", "--yes", "--stack", STACK)

    stack.engine.run("up", "--yes", "--stack", STACK, timeout=900)
    [rrset] = stack.api_rrsets()
    assert rrset["records"][0]["content"] == original
    repaired = resources_of_type(stack.state(), SERVICE)
    by_name = {r["urn"]: r["outputs"]["service_id"] for r in repaired}
    record = registry.get_service(by_name[victim["urn"]])
    assert record is not None and record.is_active
    stack.engine.run("preview", "--expect-no-changes", "--stack", STACK)


LEDGER = "pulumi-python:dynamic/ledger:DeploymentRecord"
DELEGATE = "pulumi-python:dynamic/registry:HeartbeatDelegate"


def registry_steps(steps: dict[str, list[str]]) -> dict[str, list[str]]:
    """The registrations' steps. The Kubernetes objects of the edited service change with it;
    the ledger records every config change (a new entry); the clusters' heartbeat delegates
    take the services' ids as inputs, so they show an update whenever a registration changes,
    and must never be replaced (a new key per edit would defeat rotation)."""
    for op, labels in steps.items():
        assert op != "replace" or not any(x.startswith(DELEGATE) for x in labels), steps
    assert any(x.startswith(LEDGER) for x in steps.get("update", []) + steps.get("create", [])), steps
    return {op: kept for op, labels in steps.items() if (kept := [x for x in labels if x.startswith(SERVICE)])}


def _edit_service(stack: LocalStack, name: str, edit: Any) -> None:
    path = stack.engine.project / "Pulumi.local.yaml"
    doc = yaml.safe_load(path.read_text())
    [svc] = [s for s in doc["config"]["edgefabric:core"]["services"] if s["name"] == name]
    edit(svc)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def test_endpoint_change_updates_in_place_and_version_change_replaces(stack: LocalStack) -> None:
    label = f"{SERVICE}::registry-business-logic"
    by_urn = {r["urn"]: r for r in resources_of_type(stack.state(), SERVICE)}
    [before] = [r for urn, r in by_urn.items() if urn.endswith("::registry-business-logic")]
    registry = stack.registry(resources_of_type(stack.state(), CONTRACT)[0]["outputs"]["address"])

    # Endpoints (from the service's first port) change: the same registration is updated.
    _edit_service(stack, "business-logic", lambda svc: svc["ports"][0].update(port=8090))
    steps = registry_steps(steps_by_op(stack.engine.preview_json(STACK)))
    assert steps.get("update") == [label], steps
    assert not steps.get("replace") and not steps.get("create"), steps
    stack.engine.run("up", "--yes", "--stack", STACK, timeout=900)
    sid = before["outputs"]["service_id"]
    record = registry.get_service(sid)
    assert record is not None and record.is_active
    assert record.endpoints and all(":8090/" in e for e in record.endpoints), record.endpoints

    # The version (the image tag) is part of the on-chain id: a new registration replaces it.
    _edit_service(stack, "business-logic", lambda svc: svc.update(image="ghcr.io/edgefabric/business-logic:2.2.0"))
    steps = registry_steps(steps_by_op(stack.engine.preview_json(STACK)))
    assert steps.get("replace") == [label], steps
    stack.engine.run("up", "--yes", "--stack", STACK, timeout=900)
    [after] = [r for r in resources_of_type(stack.state(), SERVICE) if r["urn"] == before["urn"]]
    new_sid = after["outputs"]["service_id"]
    assert new_sid != sid
    old, new = registry.get_service(sid), registry.get_service(new_sid)
    assert old is None or not old.is_active
    assert new is not None and new.is_active and new.version == "2.2.0"
    stack.engine.run("preview", "--expect-no-changes", "--stack", STACK)


def test_health_change_shows_as_a_weight_change(stack: LocalStack) -> None:
    stack.local_env("fail", "aws")
    try:
        preview = stack.engine.preview_json(STACK, "--diff")
        steps = steps_by_op(preview)
        assert any(label.startswith(FAILOVER) for label in steps.get("update", [])), steps
        assert "aws" in json.dumps(preview), "the weight change does not name aws"
    finally:
        stack.local_env("heal", "aws")


def test_state_export_has_no_plaintext_keys(stack: LocalStack) -> None:
    text = json.dumps(stack.state())
    assert ANVIL_DEV_KEY[2:].lower() not in text.lower()
    assert LOCAL_PDNS_API_KEY not in text
    out = stack.engine.run("stack", "output", "--json", "--stack", STACK).stdout
    assert ANVIL_DEV_KEY[2:].lower() not in out.lower() and LOCAL_PDNS_API_KEY not in out


def test_destroy_removes_records_and_deregisters(stack: LocalStack) -> None:
    state = stack.state()
    [contract] = resources_of_type(state, CONTRACT)
    registry = stack.registry(contract["outputs"]["address"])
    sids = [r["outputs"]["service_id"] for r in resources_of_type(state, SERVICE)]
    stack.engine.run("destroy", "--yes", "--stack", STACK, timeout=900)
    assert stack.lua_rrsets() == []
    for sid in sids:
        record = registry.get_service(sid)
        assert record is None or not record.is_active, sid


def _checkpoint(stack: LocalStack) -> dict[str, Any] | None:
    path = stack.engine.backend_dir / ".pulumi" / "stacks" / "edgefabric" / f"{STACK}.json"
    try:
        return dict(json.loads(path.read_text()))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def test_killed_up_recovers_without_duplicate_registrations(stack: LocalStack) -> None:
    """Kill `pulumi up` while registrations are in flight; cancel + up converges, once each.

    Automine is off while `up` runs (a block every 2 s instead), so the kill lands when the
    registration transactions have been sent but not yet mined or saved: the crash between
    "transaction sent" and "state saved" that create must survive by adopting."""
    log = stack.engine.root / "killed-up.log"
    rpc_call(stack.rpc_url, "evm_setAutomine", [False])
    rpc_call(stack.rpc_url, "evm_setIntervalMining", [2])
    proc = stack.engine.start("up", "--yes", "--stack", STACK, log=log)

    def registrations_sent() -> bool:
        cp = _checkpoint(stack)
        pending = ((cp or {}).get("checkpoint", {}).get("latest") or {}).get("pending_operations") or []
        in_flight = any(op.get("resource", {}).get("type") == SERVICE for op in pending)
        block = rpc_call(stack.rpc_url, "eth_getBlockByNumber", ["pending", False])
        return in_flight and bool(isinstance(block, dict) and block.get("transactions"))

    try:
        wait_for(registrations_sent, timeout=300, interval=0.05, what="registrations sent but not mined")
    finally:
        stack.engine.kill(proc)
        rpc_call(stack.rpc_url, "evm_setIntervalMining", [0])
        rpc_call(stack.rpc_url, "evm_setAutomine", [True])
    rpc_call(stack.rpc_url, "evm_mine")  # what the dead run sent lands on chain now

    # The run really was cut short: its lock and its in-flight creates are still recorded.
    cp = _checkpoint(stack)
    assert cp is not None and cp["checkpoint"]["latest"].get("pending_operations"), "nothing was in flight"
    locked = stack.engine.run("up", "--yes", "--stack", STACK, check=False)
    assert locked.returncode != 0 and "locked" in locked.stderr + locked.stdout, describe(locked)

    # Recovery, as documented: remove the dead run's lock, then run up again. The interrupted
    # creates run again and the provider adopts the registrations that reached the chain.
    stack.engine.run("cancel", "--yes", "--stack", STACK)
    out = stack.engine.run("up", "--yes", "--stack", STACK, timeout=900).stdout
    assert "pending operations from previous deployment" in out, out
    stack.engine.run("preview", "--expect-no-changes", "--stack", STACK)

    state = stack.state()
    [contract] = resources_of_type(state, CONTRACT)
    registry = stack.registry(contract["outputs"]["address"])
    services = resources_of_type(state, SERVICE)
    sids = [r["outputs"]["service_id"] for r in services]
    assert len(sids) == len(set(sids))
    # At least one registration the dead run had sent was found on chain and adopted.
    assert any(r["outputs"].get("adopted") for r in services), [r["outputs"].get("adopted") for r in services]
    owned = [s for s in registry.owner_services(registry.client.address) if registry.is_alive(s)]
    assert sorted(s.lower() for s in owned) == sorted(s.lower() for s in sids), (owned, sids)
