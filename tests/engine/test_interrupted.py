"""A killed `pulumi up` or `pulumi destroy` recovers (issue 10): the real CLI, SIGKILLed with its
whole process group (what a laptop crash or a CI timeout does) while it creates or deletes
Kubernetes objects, service registrations and the DNS record, then the recovery the README
documents ("Recovering a killed `pulumi up` or `destroy`"): `pulumi cancel`, `pulumi refresh
--clear-pending-creates`, then the killed command again.

Afterwards the state and the world agree, checked directly: every resource in state exists as
recorded (Kubernetes objects by uid through the API server, registrations through the registry
contract, the DNS record through PowerDNS' API), nothing exists twice, and nothing of ours
exists outside the state (objects labelled managed-by edgefabric, live registrations of the
deployer on any contract it ever deployed, answers at the record name).

The stack is a reduced copy of `local` (aws only, two core services, one region service, one
edge site on the same cluster: one control plane, ~40 resources), so each `up` takes seconds
(tens of them on a busy machine).
Kill points are chosen from the engine's event log (`--event-log`): an operation whose
resourcePreEvent is written and whose outputs are not, and which the state records as pending
(plus, per point, what the world shows: the Deployment in the cluster, the transaction sent).
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from web3.exceptions import BadFunctionCallOutput, ContractLogicError

from devenv.anvil import rpc_call
from devenv.cli import LOCAL_PDNS_API_KEY, LocalEnv
from devenv.kubernetes import KubeApi
from devenv.powerdns import _api as pdns_api
from edgefabric.chain.client import ChainClient, TransactionReverted, connect, load_account
from edgefabric.chain.registry import Registry
from edgefabric.traffic.dns.resolver import resolve_a
from tests.kits.engine import (
    ANVIL_DEV_KEY,
    REPO,
    Engine,
    LocalPorts,
    copy_project,
    install_k8s_provider,
    local_env,
    local_program_env,
    pick_local_ports,
    resources_of_type,
    wait_for,
)

STACK = "local"
CONTRACT = "pulumi-python:dynamic/registry:RegistryContract"
SERVICE = "pulumi-python:dynamic/registry:ServiceRegistration"
FAILOVER = "pulumi-python:dynamic/failover:WeightedFailover"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
MANAGED = "app.kubernetes.io/managed-by=edgefabric"
# Every kind the program creates, looked for in the cluster whether in state or not.
LIST_PATHS = {
    "kubernetes:core/v1:Namespace": "/api/v1/namespaces",
    "kubernetes:apps/v1:Deployment": "/apis/apps/v1/deployments",
    "kubernetes:core/v1:Service": "/api/v1/services",
    "kubernetes:core/v1:Secret": "/api/v1/secrets",
    "kubernetes:core/v1:ConfigMap": "/api/v1/configmaps",
    "kubernetes:policy/v1:PodDisruptionBudget": "/apis/policy/v1/poddisruptionbudgets",
    "kubernetes:autoscaling/v2:HorizontalPodAutoscaler": "/apis/autoscaling/v2/horizontalpodautoscalers",
    "kubernetes:networking.k8s.io/v1:NetworkPolicy": "/apis/networking.k8s.io/v1/networkpolicies",
}
ZONE = "edgefabric.local."


def reduced_stack_file(dest: Path) -> Path:
    """The shipped local stack, cut down to one cluster: aws only (azure and gcp disabled), the
    api-gateway and data-analytics core services, one region with one service, one edge site
    with one service whose node joins the aws cluster (same kubeconfig reference)."""
    doc = yaml.safe_load((REPO / "Pulumi.local.yaml").read_text())
    cfg = doc["config"]
    for cloud in ("azure", "gcp"):
        cfg["edgefabric:clouds"][cloud] = {"enabled": False}
    keep = ("api-gateway", "data-analytics")
    cfg["edgefabric:core"]["services"] = [s for s in cfg["edgefabric:core"]["services"] if s["name"] in keep]
    region = cfg["edgefabric:regions"][0]
    cfg["edgefabric:regions"] = [{**region, "services": region["services"][:1]}]
    site = cfg["edgefabric:edge"]["sites"][0]
    cfg["edgefabric:edge"]["sites"] = [{**site, "services": site["services"][:1],
                                        "kubeconfigRef": "env:EDGEFABRIC_KUBECONFIG_AWS"}]  # fmt: skip
    cfg["edgefabric:strategies"] = {
        name: {**{k: v for k, v in strategy.items() if k not in ("secondary", "tertiary")}, "primary": "aws"}
        for name, strategy in cfg["edgefabric:strategies"].items() if name in keep
    }  # fmt: skip
    routing = cfg["edgefabric:routing"]
    cfg["edgefabric:routing"] = {**routing, "rules": [r for r in routing["rules"] if r["cloud"] == "aws"]}
    # One DNS record, no failover controller, no MQTT bridges: what is killed here is the
    # engine's run, and those only add objects of the same kinds.
    cfg.pop("edgefabric:dataFlows", None)
    for key in ("records", "controller"):
        cfg["edgefabric:dns"].pop(key, None)
    dest.write_text(yaml.safe_dump(doc, sort_keys=False))
    return dest


# ----------------------------------------------------------------------------- event log


def in_flight(event_log: Path) -> dict[str, tuple[str, str]]:
    """{urn: (op, type)} of the steps the engine has begun (resourcePreEvent) and not finished
    (no resOutputsEvent / resOpFailedEvent yet), from the JSON lines of `--event-log`."""
    started: dict[str, tuple[str, str]] = {}
    try:
        lines = event_log.read_text().splitlines()
    except FileNotFoundError:
        return {}
    for line in lines:
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue  # the line being written
        for key in ("resourcePreEvent", "resOutputsEvent", "resOpFailedEvent"):
            meta = (event.get(key) or {}).get("metadata")
            if not meta:
                continue
            if key == "resourcePreEvent":
                started[meta["urn"]] = (meta["op"], meta["type"])
            else:
                started.pop(meta["urn"], None)
    return started


# --------------------------------------------------------------------------------- the world


@dataclass
class World:
    engine: Engine
    ports: LocalPorts
    local_env_dir: Path
    api: KubeApi
    contracts_seen: set[str] = field(default_factory=set)
    runs: int = 0

    @property
    def rpc_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.anvil}"

    @property
    def pdns_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.pdns_api}"

    def state(self) -> dict[str, Any]:
        return self.engine.export(STACK)

    def registry(self, address: str) -> Registry:
        w3 = connect(self.rpc_url, expected_chain_id=31337)
        return Registry(ChainClient(w3, load_account(ANVIL_DEV_KEY)), address)

    def record_rrsets(self) -> list[dict[str, Any]]:
        status, zone = pdns_api("GET", f"{self.pdns_url}/api/v1/servers/localhost/zones/{ZONE}", LOCAL_PDNS_API_KEY)
        assert status == 200 and isinstance(zone, dict), zone
        name = yaml.safe_load((self.engine.project / "Pulumi.local.yaml").read_text())["config"]["edgefabric:dns"]["recordName"]
        return [r for r in zone["rrsets"] if r["name"] == name]

    def rpc(self, method: str, *params: Any) -> Any:
        return rpc_call(self.rpc_url, method, list(params))

    def deployed_contracts(self) -> set[str]:
        """Every contract the deployer's key ever created on this chain (from the blocks), so a
        contract a killed run deployed and the state never learnt of is found too."""
        deployer = load_account(ANVIL_DEV_KEY).address.lower()
        head = int(self.rpc("eth_blockNumber"), 16)
        found = set()
        for number in range(head + 1):
            block = self.rpc("eth_getBlockByNumber", hex(number), True)
            for tx in block["transactions"]:
                if tx["from"].lower() == deployer and tx.get("to") is None:
                    receipt = self.rpc("eth_getTransactionReceipt", tx["hash"])
                    if receipt.get("contractAddress") and int(receipt["status"], 16) == 1:
                        found.add(receipt["contractAddress"].lower())
        return found

    def kill_when(self, command: str, point: Callable[[dict[str, tuple[str, str]]], bool], what: str,
                  attempts: int = 3) -> None:
        """Start `pulumi <command>`, SIGKILL it (process group and every plugin it started) at the
        first moment `point(in_flight)` holds, and check that the run was really cut short.

        Some steps are in flight for well under a second (a DNS publication on loopback): a run
        can finish before the watcher sees the point. Then the world is put back (the opposite
        command) and the run is tried again, at most `attempts` times in all."""
        undo = {"up": "destroy", "destroy": "up"}[command]
        for attempt in range(1, attempts + 1):
            self.runs += 1
            event_log = self.engine.root / f"events-{self.runs}.jsonl"
            proc = self.engine.start(command, "--yes", "--stack", STACK, "--event-log", str(event_log),
                                     log=self.engine.root / f"killed-{self.runs}.log")  # fmt: skip

            def at_point(log: Path = event_log) -> bool:
                # The event log first (cheap), then the state: a step counts once it is in flight
                # and recorded as pending (the engine emits a step's event a moment before it
                # writes the pending operation).
                flight = in_flight(log)
                if not flight or not point(flight):
                    return False
                recorded = self.recorded_pending()
                return point({urn: step for urn, step in flight.items() if urn in recorded})

            try:
                wait_for(lambda run=proc: run.poll() is not None or at_point(), timeout=600, interval=0.02,
                         what=f"`pulumi {command}` {what}")  # fmt: skip
            finally:
                self.engine.kill(proc)
            if proc.returncode == -9 or attempt == attempts:
                break
            assert proc.returncode == 0, f"`pulumi {command}` failed before the kill point ({what})"
            self.engine.run(undo, "--yes", "--stack", STACK, timeout=900)
        assert proc.returncode == -9, f"`pulumi {command}` ended before the kill point ({what}), {attempts} times"
        checkpoint = self.checkpoint()
        assert checkpoint.get("pending_operations"), f"killed {what}, but the state records nothing in flight"

    def recorded_pending(self) -> set[str]:
        """URNs of the operations the state records as pending (the checkpoint is written to a
        temporary file and renamed: a read sees a whole one)."""
        try:
            return {op["resource"]["urn"] for op in self.checkpoint().get("pending_operations") or []}
        except (FileNotFoundError, json.JSONDecodeError, KeyError, TypeError):
            return set()

    def checkpoint(self) -> dict[str, Any]:
        path = self.engine.backend_dir / ".pulumi" / "stacks" / "edgefabric" / f"{STACK}.json"
        return dict(json.loads(path.read_text())["checkpoint"]["latest"] or {})

    def recover(self, command: str) -> str:
        """The README's procedure: the dead run's lock goes; a refresh drops the creates it left
        pending (this engine keeps them in the state through any number of later `up`s) and
        reads back everything else; then the same command runs again and re-creates what was
        dropped: the providers adopt what the dead run had already made."""
        self.engine.run("cancel", "--yes", "--stack", STACK)
        self.engine.run("refresh", "--clear-pending-creates", "--yes", "--stack", STACK, timeout=900)
        return self.engine.run(command, "--yes", "--stack", STACK, timeout=900).stdout

    # -------------------------------------------------------------- the invariants
    def assert_state_matches_world(self) -> None:
        deployment = self.state()["deployment"]
        assert not deployment.get("pending_operations"), deployment["pending_operations"]
        resources = deployment.get("resources", [])
        self._kubernetes(resources)
        self._chain(resources)
        self._dns(resources)

    def _kubernetes(self, resources: list[dict[str, Any]]) -> None:
        recorded: dict[tuple[str, str, str], str] = {}
        for res in resources:
            if res["type"] not in LIST_PATHS:
                continue
            meta = res["outputs"]["metadata"]
            key = (res["type"], meta.get("namespace", ""), meta["name"])
            assert key not in recorded, f"{key} twice in state"
            recorded[key] = meta["uid"]
        live: dict[tuple[str, str, str], str] = {}
        for token, path in LIST_PATHS.items():
            for obj in self.api.get(path, labelSelector=MANAGED).get("items", []):
                meta = obj["metadata"]
                if meta.get("deletionTimestamp"):
                    continue  # being deleted (a namespace finalising): gone for the engine too
                live[(token, meta.get("namespace", ""), meta["name"])] = meta["uid"]
        assert sorted(set(recorded) - set(live)) == [], "in state, not in the cluster"
        assert sorted(set(live) - set(recorded)) == [], "in the cluster, not in state (orphaned)"
        stale = {k: (recorded[k], live[k]) for k in recorded if recorded[k] != live[k]}
        assert stale == {}, "state records another object (uid) than the one in the cluster"

    def _chain(self, resources: list[dict[str, Any]]) -> None:
        contracts = [r for r in resources if r["type"] == CONTRACT]
        assert len(contracts) <= 1, contracts
        deployer = load_account(ANVIL_DEV_KEY).address
        every = self.deployed_contracts() | self.contracts_seen
        services = [r for r in resources if r["type"] == SERVICE]
        sids = [r["outputs"]["service_id"].lower() for r in services]
        assert len(sids) == len(set(sids)), f"a registration twice in state: {sids}"
        if contracts:
            address = contracts[0]["outputs"]["address"].lower()
            self.contracts_seen.add(address)
            assert rpc_call(self.rpc_url, "eth_getCode", [address, "latest"]) not in ("0x", "", None), address
            registry = self.registry(address)
            for res in services:
                record = registry.get_service(res["outputs"]["service_id"])
                assert record is not None and record.is_active, res["urn"]
                outs = res["outputs"]
                assert (record.name, record.version, record.endpoints) == (
                    outs["name"], outs["version"], list(outs["endpoints"])), res["urn"]
        else:
            assert services == [], "registrations in state without their contract"
            address = ""
        for contract in every:
            registry = self.registry(contract)
            try:
                owned = registry.owner_services(deployer)
            except (ContractLogicError, BadFunctionCallOutput, TransactionReverted):
                continue  # not a ServiceRegistry (the key deploys other contracts too)
            alive = sorted(s.lower() for s in owned if registry.is_alive(s))
            want = sorted(sids) if contract == address else []
            assert alive == want, f"live registrations on {contract} != state's (orphaned or missing)"

    def _dns(self, resources: list[dict[str, Any]]) -> None:
        failovers = [r for r in resources if r["type"] == FAILOVER]
        rrsets = self.record_rrsets()
        if not failovers:
            assert rrsets == [], f"answers published with no record in state: {rrsets}"
            return
        [failover] = failovers
        [rrset] = rrsets
        assert rrset["type"] == "LUA" and len(rrset["records"]) == 1, rrset
        content = rrset["records"][0]["content"]
        outs = failover["outputs"]
        # What the record answers is what the state says was applied: the addresses of the
        # clouds the recorded plan weighs above 0 (an aws load balancer's name resolved by the
        # local PowerDNS, as the provider resolves it), and no other.
        weights = outs["plan"]["answers"]["default"]["weights"]
        want = set()
        for cloud, weight in weights.items():
            if weight > 0:
                address = outs["endpoints"][cloud]["address"]
                want |= set(resolve_a(address, f"127.0.0.1:{self.ports.pdns_dns}") if address[-1].isalpha() else [address])
        published = {ip for _, ip in re.findall(r"\{(\d+),'([0-9.]+)'\}", content)}
        assert published == want, (content, weights)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, engine_bin: Path) -> Iterator[World]:
    root = tmp_path_factory.mktemp("engine-interrupted")
    ports = pick_local_ports()
    stack_file = reduced_stack_file(root / "Pulumi.reduced.yaml")
    project = copy_project(root / "project", ports, stack_file=stack_file)
    engine = Engine(project=project, root=root, bin_dir=engine_bin)
    env_dir = root / "local-env"
    local_env(project, env_dir, ports, "up")
    try:
        install_k8s_provider(engine.home)
        # PULUMI_DEBUG_COMMANDS: this CLI offers `--event-log` only with it.
        engine.extra_env = {**local_program_env(project, env_dir, ports), "PYTHONPATH": str(REPO),
                            "PULUMI_DEBUG_COMMANDS": "true"}
        engine.run("stack", "init", STACK)
        handle = LocalEnv.load(env_dir, project / "Pulumi.local.yaml", pdns_dns_port=ports.pdns_dns,
                               etcd_port=ports.etcd or None, k8s_port_base=ports.k8s_base or None)
        [plan] = handle.layout.cluster_plans  # the reduced stack: one cluster
        api = handle.cluster(plan).api
        yield World(engine, ports, env_dir, api)
    finally:
        with contextlib.suppress(Exception):
            engine.run("cancel", "--yes", "--stack", STACK, check=False)
            engine.run("destroy", "--yes", "--stack", STACK, check=False, timeout=900)
        local_env(project, env_dir, ports, "down", "--purge")


# ------------------------------------------------------------------------------- kill points


def creating(token: str) -> Callable[[dict[str, tuple[str, str]]], bool]:
    return lambda flight: any(op == "create" and typ == token for op, typ in flight.values())


def deleting(token: str) -> Callable[[dict[str, tuple[str, str]]], bool]:
    return lambda flight: any(op == "delete" and typ == token for op, typ in flight.values())


def deployment_created_not_recorded(world: World) -> Callable[[dict[str, tuple[str, str]]], bool]:
    """A Deployment's create is in flight and the object is already in the cluster: the
    provider awaits its rollout; the state does not know the object yet."""

    def point(flight: dict[str, tuple[str, str]]) -> bool:
        names = [urn.rsplit("::", 1)[-1] for urn, (op, typ) in flight.items() if op == "create" and typ == DEPLOYMENT]
        if not names:
            return False
        live = world.api.get("/apis/apps/v1/deployments", labelSelector=MANAGED).get("items", [])
        return any(obj["metadata"]["name"] in names or any(n.endswith(obj["metadata"]["name"]) for n in names)
                   for obj in live)  # fmt: skip

    return point


def transactions_pending(world: World, token: str, op: str) -> Callable[[dict[str, tuple[str, str]]], bool]:
    """A registration step is in flight and its transaction is sent, not mined (mining is on a
    2 s interval meanwhile): the crash between "transaction sent" and "state saved"."""

    def point(flight: dict[str, tuple[str, str]]) -> bool:
        if not any(o == op and typ == token for o, typ in flight.values()):
            return False
        block = rpc_call(world.rpc_url, "eth_getBlockByNumber", ["pending", False])
        return bool(isinstance(block, dict) and block.get("transactions"))

    return point


@contextlib.contextmanager
def slow_mining(world: World) -> Iterator[None]:
    rpc_call(world.rpc_url, "evm_setAutomine", [False])
    rpc_call(world.rpc_url, "evm_setIntervalMining", [2])
    try:
        yield
    finally:
        rpc_call(world.rpc_url, "evm_setIntervalMining", [0])
        rpc_call(world.rpc_url, "evm_setAutomine", [True])
        rpc_call(world.rpc_url, "evm_mine")  # what the dead run sent lands on chain now


def destroyed(world: World) -> None:
    assert world.state()["deployment"].get("resources", []) == [] or all(
        r["type"] in ("pulumi:pulumi:Stack",) for r in world.state()["deployment"]["resources"]
    )
    world.assert_state_matches_world()


def deployed(world: World) -> None:
    world.assert_state_matches_world()
    world.engine.run("preview", "--expect-no-changes", "--stack", STACK, timeout=600)
    state = world.state()
    assert resources_of_type(state, FAILOVER) and resources_of_type(state, SERVICE), "not every tier deployed"


# ------------------------------------------------------------------------------------ tests
# In order: each starts from what the previous left (deployed or destroyed).


def test_up_killed_while_a_deployment_rolls_out(world: World) -> None:
    world.kill_when("up", deployment_created_not_recorded(world), "with a Deployment created, not recorded")
    world.recover("up")
    deployed(world)


def test_destroy_killed_while_deleting_kubernetes_objects(world: World) -> None:
    world.kill_when("destroy", deleting(DEPLOYMENT), "while deleting a Deployment")
    world.recover("destroy")
    destroyed(world)


def test_up_killed_while_registrations_are_sent(world: World) -> None:
    with slow_mining(world):
        world.kill_when("up", transactions_pending(world, SERVICE, "create"), "with registrations sent, not mined")
    world.recover("up")
    deployed(world)


def test_destroy_killed_while_deregistering(world: World) -> None:
    with slow_mining(world):
        world.kill_when("destroy", transactions_pending(world, SERVICE, "delete"), "with deregistrations sent")
    world.recover("destroy")
    destroyed(world)


def test_up_killed_while_publishing_the_dns_record(world: World) -> None:
    world.kill_when("up", creating(FAILOVER), "while publishing the DNS record")
    world.recover("up")
    deployed(world)


def test_destroy_killed_while_removing_the_dns_record(world: World) -> None:
    world.kill_when("destroy", deleting(FAILOVER), "while removing the DNS record")
    world.recover("destroy")
    destroyed(world)
