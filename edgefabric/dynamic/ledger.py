"""Dynamic resources for the deployment ledger: LedgerContract and DeploymentRecord.

Same rules as dynamic/registry.py: stateless providers (only the class is pickled), the deployer
key as a secret input or a reference resolved in the provider process, never in outputs.

A DeploymentRecord appends one ledger entry whenever what it records changes: the stack, the
git commit, the typed config's hash, the resource graph's hash or the deployer. An `up` that
changes none of them records nothing, so a converged stack previews with no changes.
"""

from __future__ import annotations

from typing import Any

import pulumi
from pulumi.dynamic import (
    CheckFailure,
    CheckResult,
    CreateResult,
    DiffResult,
    ReadResult,
    Resource,
    UpdateResult,
)

from edgefabric.chain.client import (
    DEPLOYER_KEY_ENV,
    ChainClient,
    ChainError,
    FeePolicy,
    connect,
    load_account,
)

# The hashes an entry records, re-exported for the tier (tiers never import the chain client).
from edgefabric.chain.ledger import Ledger, config_hash, git_commit, graph_hash, load_ledger_artifact
from edgefabric.chain.registry import code_hash
from edgefabric.dynamic.registry import (
    SECRET_INPUTS,
    KeySource,
    _KeyedProvider,
    _known,
    _public,
    _secret_outs,
)
from edgefabric.errors import ConfigError

__all__ = ["DeploymentRecord", "LedgerContract", "config_hash", "git_commit", "graph_hash"]

PROVIDER_VERSION = "1"
_HASH_LEN = {"commit": 42, "config_hash": 66, "graph_hash": 66}
# What an entry records: a change to any of these appends a new entry.
RECORDED = ("ledger_address", "chain_id", "stack", "commit", "config_hash", "graph_hash")
# Reads need no real key: a fixed throwaway signer (never funded, never sends).
_READ_ONLY_KEY = "0x" + "11" * 32
_ENTRY_OUTS = ("seq", "deployer", "tx_hash", "block_number", "entry_hash")


def _client(props: dict[str, Any], keys: KeySource) -> ChainClient:
    w3 = connect(str(props["rpc_url"]), expected_chain_id=int(props["chain_id"]))
    max_fee = props.get("max_fee_wei")
    return ChainClient(w3, load_account(keys.resolve(props)), abi=load_ledger_artifact()["abi"],
                       fee_policy=FeePolicy(max_fee_wei=int(max_fee) if max_fee else None),
                       confirmations=int(props.get("confirmations") or 1))


class LedgerContractProvider(_KeyedProvider):
    """Deploys DeploymentLedger, or adopts `existing_address` after checking its code."""

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        replaces = [k for k in ("chain_id", "bytecode_hash", "existing_address")
                    if news.get(k) != olds.get(k) and (news.get(k) or olds.get(k))]
        changed = any(news.get(k) != olds.get(k) for k in ("rpc_url", "provider_version"))
        return DiffResult(changes=changed or bool(replaces), replaces=replaces, delete_before_replace=False)

    def create(self, props: dict[str, Any]) -> CreateResult:
        client = _client(props, self.keys())
        artifact = load_ledger_artifact()
        expected = code_hash(artifact["deployedBytecode"])
        existing = props.get("existing_address")
        if existing:
            address = client.w3.to_checksum_address(existing)
            found = code_hash(client.w3.eth.get_code(address))
            if found != expected:
                raise ChainError(f"ledger address {existing}: the code there (hash {found}) is not the compiled "
                                 f"DeploymentLedger (hash {expected}); leave ledgerAddress empty to deploy")
            outs: dict[str, Any] = {"address": address, "block_number": 0, "adopted": True}
        else:
            result = client.deploy(artifact["abi"], artifact["bytecode"], "deploy DeploymentLedger")
            outs = {"address": result.contract_address, "block_number": result.block_number, "adopted": False}
        return CreateResult(id_=str(outs["address"]), outs=_public(props) | outs)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        w3 = connect(str(props["rpc_url"]), expected_chain_id=int(props["chain_id"]))
        if len(w3.eth.get_code(w3.to_checksum_address(id_))) == 0:
            return ReadResult(id_="", outs={})  # a reset dev chain: refresh drops it
        return ReadResult(id_=id_, outs=props)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs=_public(news) | {k: olds.get(k) for k in ("address", "block_number", "adopted")})

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        """Contracts cannot be deleted, and a ledger's history must outlive the stack anyway."""
        return None


class LedgerContract(Resource, module="ledger", name="LedgerContract"):
    """The DeploymentLedger contract. Outputs: address, block_number (its first block), adopted."""

    address: pulumi.Output[str]
    block_number: pulumi.Output[int]
    adopted: pulumi.Output[bool]

    def __init__(self, resource_name: str, *, rpc_url: pulumi.Input[str], chain_id: pulumi.Input[int],
                 deployer_key: pulumi.Input[str] | None = None,
                 deployer_key_ref: str = f"env:{DEPLOYER_KEY_ENV}", existing_address: str | None = None,
                 confirmations: int = 1, max_fee_wei: int | None = None,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        props = {
            "rpc_url": rpc_url, "chain_id": chain_id, "confirmations": confirmations, "max_fee_wei": max_fee_wei,
            "deployer_key": pulumi.Output.secret(deployer_key) if deployer_key is not None else None,
            "deployer_key_ref": deployer_key_ref, "existing_address": existing_address or "",
            "bytecode_hash": code_hash(load_ledger_artifact()["deployedBytecode"]),
            "provider_version": PROVIDER_VERSION, "address": None, "block_number": None, "adopted": None,
        }
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(
            additional_secret_outputs=_secret_outs(SECRET_INPUTS, rpc_url)))
        super().__init__(LedgerContractProvider(), resource_name, props, opts)


class DeploymentRecordProvider(_KeyedProvider):
    """Appends a ledger entry on create, and on every update that changes what it records."""

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        failures = []
        for key, size in _HASH_LEN.items():
            value = news.get(key)
            if _known(value) and not (isinstance(value, str) and value.startswith("0x") and len(value) == size):
                failures.append(CheckFailure(key, f"{key} must be 0x + {size - 2} hex digits, got {value!r}"))
        stack = news.get("stack")
        if _known(stack) and not stack:
            failures.append(CheckFailure("stack", "stack must not be empty"))
        return CheckResult(news, failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = [k for k in (*RECORDED, "rpc_url", "provider_version") if news.get(k) != olds.get(k)]
        if _known(news.get("deployer_key")):
            try:
                deployer = str(load_account(self.keys().resolve(news)).address)
                if deployer != olds.get("deployer"):
                    changed.append("deployer")  # a rotated deployer key is recorded too
            except (ChainError, ConfigError):
                pass  # no key at preview: the update will tell
        return DiffResult(changes=bool(changed), replaces=[], delete_before_replace=False)

    def _record(self, props: dict[str, Any]) -> dict[str, Any]:
        client = _client(props, self.keys())
        ledger = Ledger(client, str(props["ledger_address"]))
        result = ledger.record(str(props["stack"]), str(props["commit"]), str(props["config_hash"]),
                               str(props["graph_hash"]))
        event = ledger.contract.events.Recorded().process_receipt({"logs": list(result.logs)})[0]["args"]
        latest = ledger.latest(str(props["stack"]))
        return {"seq": int(event["seq"]), "deployer": client.address, "tx_hash": result.tx_hash,
                "block_number": result.block_number, "entry_hash": latest.entry_hash}

    def create(self, props: dict[str, Any]) -> CreateResult:
        outs = self._record(props)
        return CreateResult(id_=f"{props['stack']}#{outs['seq']}", outs=_public(props) | outs)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        deployer = str(load_account(self.keys().resolve(news)).address)
        if any(news.get(k) != olds.get(k) for k in RECORDED) or deployer != olds.get("deployer"):
            return UpdateResult(outs=_public(news) | self._record(news))
        return UpdateResult(outs=_public(news) | {k: olds.get(k) for k in _ENTRY_OUTS})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        """Refresh shows an entry appended outside this state as drift of `entry_hash`/`seq`."""
        w3 = connect(str(props["rpc_url"]), expected_chain_id=int(props["chain_id"]), retries=1)
        address = w3.to_checksum_address(str(props["ledger_address"]))
        if len(w3.eth.get_code(address)) == 0:
            return ReadResult(id_="", outs={})  # a reset dev chain: refresh drops it
        ledger = Ledger(ChainClient(w3, load_account(_READ_ONLY_KEY), abi=load_ledger_artifact()["abi"]), address)
        latest = ledger.latest(str(props["stack"]))
        return ReadResult(id_=id_, outs={**props, "entry_hash": latest.entry_hash, "seq": latest.count - 1})

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        """The ledger is append-only: forgetting the resource leaves the history on chain."""
        return None


class DeploymentRecord(Resource, module="ledger", name="DeploymentRecord"):
    """This deployment's ledger entry. Outputs: seq, deployer, tx_hash, block_number, entry_hash."""

    seq: pulumi.Output[int]
    deployer: pulumi.Output[str]
    tx_hash: pulumi.Output[str]
    block_number: pulumi.Output[int]
    entry_hash: pulumi.Output[str]

    def __init__(self, resource_name: str, *, rpc_url: pulumi.Input[str], chain_id: pulumi.Input[int],
                 ledger_address: pulumi.Input[str], stack: str, commit: str, config_hash: str, graph_hash: str,
                 deployer_key: pulumi.Input[str] | None = None,
                 deployer_key_ref: str = f"env:{DEPLOYER_KEY_ENV}", confirmations: int = 1,
                 max_fee_wei: int | None = None, opts: pulumi.ResourceOptions | None = None) -> None:
        props = {
            "rpc_url": rpc_url, "chain_id": chain_id, "ledger_address": ledger_address, "stack": stack,
            "commit": commit, "config_hash": config_hash, "graph_hash": graph_hash,
            "confirmations": confirmations, "max_fee_wei": max_fee_wei,
            "deployer_key": pulumi.Output.secret(deployer_key) if deployer_key is not None else None,
            "deployer_key_ref": deployer_key_ref, "provider_version": PROVIDER_VERSION,
            **{k: None for k in _ENTRY_OUTS},
        }
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(
            additional_secret_outputs=_secret_outs(SECRET_INPUTS, rpc_url)))
        super().__init__(DeploymentRecordProvider(), resource_name, props, opts)
