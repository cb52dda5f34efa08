"""The deployment ledger: every `up` that changes what is deployed appends one entry on chain.

An entry (edgefabric/dynamic/ledger.py, contract contracts/DeploymentLedger.sol) holds the
stack, the git commit of the code that ran, a hash of the typed config and a hash of the
resource graph, with the deployer and the block time. `edgefabric audit` (tooling/audit.py)
prints the history and checks the deployed state against the last entry.

The graph is what the program registers: `GraphRecorder.start()` installs a stack
transformation before the first resource, and `record_deployment` runs last, hashing the
(type, logical name) of everything registered before it. `audit` hashes the same pairs from a
state export. The ledger is its own contract, not a registry extension: its gas and its
upgrades stay apart from the registry's, and a registry replacement never cuts the history.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pulumi

from edgefabric.config import RegistryConfig
from edgefabric.dynamic.ledger import DeploymentRecord, LedgerContract, config_hash, git_commit, graph_hash
from edgefabric.secrets import env_name
from edgefabric.tiers.registry import _deployer_key, _secret_or_unknown

# `config_hash` is re-exported: the program hashes its typed config and hands the ledger the hash.
__all__ = ["DeploymentLedger", "DeploymentLedgerArgs", "GraphRecorder", "config_hash", "record_deployment",
           "start_ledger"]

RECORD_TYPE = "pulumi-python:dynamic/ledger:DeploymentRecord"
# The code that runs is the installed edgefabric package; its checkout names the commit.
CODE_DIR = Path(__file__).resolve().parents[2]


class GraphRecorder:
    """Collects (type, logical name) of every resource the program registers."""

    def __init__(self) -> None:
        self.pairs: list[tuple[str, str]] = []

    def start(self) -> GraphRecorder:
        def seen(args: pulumi.ResourceTransformationArgs) -> None:
            self.pairs.append((args.type_, args.name))
            return None  # observe only: nothing is changed

        pulumi.runtime.register_stack_transformation(seen)
        return self

    def hash(self) -> str:
        return graph_hash(self.pairs, exclude_types=(RECORD_TYPE,))


@dataclass(frozen=True)
class DeploymentLedgerArgs:
    """The chain to record on, the typed config's hash and the graph recorded so far."""

    registry: RegistryConfig  # the `registry` section: the ledger shares its chain and deployer
    config_hash: str  # config_hash() of the whole typed config, recorded as is (`audit` recomputes it)
    # Hashed when the component registers its entry, after the contract: the graph is complete then.
    # None: the program calls `record(graph)` itself, last (the contract exists early, so the
    # heartbeat agents can be given its address).
    graph: GraphRecorder | None = None


class DeploymentLedger(pulumi.ComponentResource):
    """The ledger contract and this deployment's entry. Outputs: `address` (the contract's) and,
    once recorded, `entry` (the DeploymentRecord)."""

    entry: DeploymentRecord | None

    def __init__(self, name: str, args: DeploymentLedgerArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("edgefabric:ledger:DeploymentLedger", name, None, opts)
        self._name, self._config_hash = name, args.config_hash
        reg = args.registry
        key_ref = reg.deployer_key_ref
        key_input = None if env_name(key_ref) else _deployer_key(key_ref)
        rpc_url: pulumi.Input[str] = (reg.rpc_url if reg.rpc_url is not None else _secret_or_unknown(
            str(reg.rpc_url_ref), "registry.rpcUrlRef", "the RPC URL"))
        chain = {"rpc_url": rpc_url, "chain_id": reg.chain_id, "deployer_key": key_input,
                 "deployer_key_ref": key_ref, "confirmations": reg.effective_confirmations(),
                 "max_fee_wei": int(reg.max_fee_gwei * 10**9) if reg.max_fee_gwei else None}
        self._chain = chain
        contract = LedgerContract(f"{name}-contract", **chain, opts=pulumi.ResourceOptions(parent=self))  # type: ignore[arg-type]
        self._contract = contract
        self.address: pulumi.Output[str] = contract.address
        self.block_number: pulumi.Output[int] = contract.block_number  # where its history starts
        self.entry = None
        if args.graph is not None:
            self.record(args.graph)

    def record(self, graph: GraphRecorder) -> DeploymentRecord:
        """This deployment's entry. Call it after every other resource is registered: the graph
        is hashed here. Same logical name and parent as always, so URNs do not change."""
        # Hashed here, after everything else: everything the program registered is in the graph.
        self.entry = DeploymentRecord(
            f"{self._name}-entry", ledger_address=self._contract.id, stack=pulumi.get_stack(),
            commit=git_commit(CODE_DIR), config_hash=self._config_hash, graph_hash=graph.hash(),
            **self._chain, opts=pulumi.ResourceOptions(parent=self))  # type: ignore[arg-type]
        self.register_outputs({"address": self._contract.address, "seq": self.entry.seq})
        return self.entry


def record_deployment(name: str, registry: RegistryConfig | None, config_digest: str,
                      graph: GraphRecorder) -> DeploymentRecord | None:
    """This deployment's ledger entry (None when the registry, and so the chain, is disabled).

    `config_digest` is `config_hash(cfg)` of the whole typed config (what `audit` recomputes).
    Call it after every other resource is registered: the graph hash covers what came before."""
    if registry is None or not registry.enabled:
        return None
    return DeploymentLedger(name, DeploymentLedgerArgs(registry=registry, config_hash=config_digest, graph=graph)).entry


def start_ledger(name: str, registry: RegistryConfig | None, config_digest: str) -> DeploymentLedger | None:
    """The ledger contract, before the other resources (None when the registry is disabled):
    its `address` goes to the heartbeat agents, which compare the config hash they were
    deployed with against the ledger's latest entry. Call `record(graph)` on it last."""
    if registry is None or not registry.enabled:
        return None
    return DeploymentLedger(name, DeploymentLedgerArgs(registry=registry, config_hash=config_digest))
