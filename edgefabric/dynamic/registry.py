"""Dynamic resources for the on-chain registry: RegistryContract and ServiceRegistration.

Rules these follow (see shared/DESIGN.md):
- Providers hold no state: every method builds its web3 client from the inputs it is given, so
  dill pickles nothing but the class reference into the Pulumi state.
- The deployer key arrives as a Pulumi secret input (`deployer_key`) or, when that is None, from
  EDGEFABRIC_DEPLOYER_KEY in the provider process. It is never copied into outputs, and the
  resources also list it in additional_secret_outputs as a second guard.
- check/diff tolerate unknown values (preview); create adopts what already exists; delete of a
  missing thing succeeds; read reports on-chain drift; diff lists exactly the replacing inputs.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

import pulumi
from eth_account import Account
from pulumi.dynamic import (
    CheckFailure,
    CheckResult,
    ConfigureRequest,
    CreateResult,
    DiffResult,
    ReadResult,
    Resource,
    ResourceProvider,
    UpdateResult,
)

from edgefabric.chain.client import (
    DEPLOYER_KEY_ENV,
    ChainClient,
    ChainError,
    FeePolicy,
    TransactionReverted,
    connect,
    load_account,
)
from edgefabric.chain.registry import Registry, code_hash, load_artifact, service_id
from edgefabric.dynamic._unknown import UNKNOWN, is_unknown  # noqa: F401 - UNKNOWN re-exported
from edgefabric.errors import ConfigError
from edgefabric.secrets import resolve

log = logging.getLogger(__name__)

# Bump when the provider's behaviour changes, or when a provider class moves or is renamed, so
# existing resources get an update. The state keeps each resource's provider pickled by module
# path, and refresh and delete load the one stored with the resource's *outputs*, which only an
# update rewrites: a stack whose outputs still name a module that is gone can neither refresh
# nor delete (tests/engine/test_upgrade.py).
# 2: the classes moved from `providers.registry` to `edgefabric.dynamic.registry`.
PROVIDER_VERSION = "2"
SECRET_INPUTS = ["deployer_key"]

# Bounds mirrored from the contract, so `pulumi preview` fails before a transaction would revert.
MAX_NAME, MAX_VERSION, MAX_ENDPOINTS, MAX_ENDPOINT, MAX_METADATA = 64, 32, 8, 256, 1024
MIN_TTL, MAX_TTL = 3, 30 * 86400


def _known(value: Any) -> bool:
    return not is_unknown(value)


class KeySource:
    """Where a provider method finds the deployer key.

    Inputs carry the key itself (`deployer_key`, a secret) only in check/diff/create/update; delete
    and read see the saved outputs, which never hold it. So the outputs keep the *reference*
    (`deployer_key_ref`, e.g. `config:deployerKey` or `env:EDGEFABRIC_DEPLOYER_KEY`), resolved here
    from the stack config handed to `configure` or from the environment.
    """

    def __init__(self, stack_config: Any | None) -> None:
        self._config = stack_config

    def resolve(self, props: Mapping[str, Any]) -> str | None:
        key = props.get("deployer_key")
        if key and _known(key):
            return str(key)
        ref = str(props.get("deployer_key_ref") or f"env:{DEPLOYER_KEY_ENV}")
        lookup = self._config.get if self._config is not None else None
        return str(resolve(ref, "registry.deployerKeyRef", lookup=lookup))


def _client(props: Mapping[str, Any], keys: KeySource) -> ChainClient:
    w3 = connect(str(props["rpc_url"]), expected_chain_id=int(props["chain_id"]))
    # Older states lack these inputs: one confirmation and no fee cap, as before.
    max_fee = props.get("max_fee_wei")
    fees = FeePolicy(max_fee_wei=int(max_fee) if max_fee else None)
    return ChainClient(w3, load_account(keys.resolve(props)), abi=load_artifact()["abi"], fee_policy=fees,
                       confirmations=int(props.get("confirmations") or 1))


_SERVICE_ID = re.compile(r"^0x[0-9a-fA-F]{64}$")
# Reads need no real key: a fixed throwaway signer (never funded, never sends).
_READ_ONLY_KEY = "0x" + "11" * 32


def _reader(props: Mapping[str, Any]) -> Registry | None:
    """A read-only view of the registry in `props`, or None if no contract is at the address."""
    w3 = connect(str(props["rpc_url"]), expected_chain_id=int(props["chain_id"]), retries=1)
    address = w3.to_checksum_address(str(props["contract_address"]))
    if len(w3.eth.get_code(address)) == 0:
        return None
    return Registry(ChainClient(w3, load_account(_READ_ONLY_KEY), abi=load_artifact()["abi"]), address)


def _secret_outs(names: list[str], rpc_url: Any) -> list[str]:
    """The outputs kept secret: the keys always, the RPC URL when it came from a secret
    reference (registry.rpcUrlRef: a hosted node's URL carries its API key)."""
    return [*names, "rpc_url"] if isinstance(rpc_url, pulumi.Output) else list(names)


def _warn(message: str) -> None:
    """A warning on the engine's diagnostics (the provider process has a log connection then)."""
    with contextlib.suppress(Exception):  # outside the engine (tests calling the provider directly)
        pulumi.log.warn(message)
    log.warning("%s", message)


def _owner(props: Mapping[str, Any], keys: KeySource) -> str:
    return str(load_account(keys.resolve(props)).address)


class _KeyedProvider(ResourceProvider):
    # The stack config arrives through `configure` in the provider process, after unpickling, so
    # nothing secret is on the object when the program pickles it.
    _stack_config: Any = None

    def configure(self, req: ConfigureRequest) -> None:
        self._stack_config = req.config

    def keys(self) -> KeySource:
        return KeySource(self._stack_config)


def _public(props: Mapping[str, Any]) -> dict[str, Any]:
    """Inputs that may appear in outputs: everything but the key."""
    return {k: v for k, v in props.items() if k not in SECRET_INPUTS and not k.startswith("__")}


# ----------------------------------------------------------------------------- contract


class RegistryContractProvider(_KeyedProvider):
    """Deploys ServiceRegistry, or adopts `existing_address` after checking its code."""

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        failures = []
        chain_id = news.get("chain_id")
        if _known(chain_id) and (not isinstance(chain_id, int | float) or int(chain_id) <= 0):
            failures.append(CheckFailure("chain_id", f"chain_id must be a positive integer, got {chain_id!r}"))
        address = news.get("existing_address")
        if address and _known(address) and not (str(address).startswith("0x") and len(str(address)) == 42):
            failures.append(CheckFailure("existing_address", f"not a 0x-prefixed 20-byte address: {address!r}"))
        return CheckResult(news, failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        replaces = [k for k in ("chain_id", "bytecode_hash", "existing_address")
                    if news.get(k) != olds.get(k) and (news.get(k) or olds.get(k))]
        keys = ("rpc_url", "provider_version", "chain_id", "bytecode_hash", "existing_address")
        changed = any(news.get(k) != olds.get(k) for k in keys) or not all(_known(news.get(k)) for k in keys)
        return DiffResult(changes=changed or bool(replaces), replaces=replaces, delete_before_replace=False)

    def create(self, props: dict[str, Any]) -> CreateResult:
        client = _client(props, self.keys())
        artifact = load_artifact()
        expected = code_hash(artifact["deployedBytecode"])
        existing = props.get("existing_address")
        if existing:
            found = code_hash(client.w3.eth.get_code(client.w3.to_checksum_address(existing)))
            if found != expected:
                raise ChainError(
                    f"registry contractAddress {existing}: the code there (hash {found}) is not the "
                    f"compiled ServiceRegistry (hash {expected}); leave contractAddress empty to deploy"
                )
            outs = {"address": client.w3.to_checksum_address(existing), "deploy_tx_hash": "",
                    "block_number": 0, "adopted": True}
        else:
            result = client.deploy(artifact["abi"], artifact["bytecode"], "deploy ServiceRegistry")
            outs = {"address": result.contract_address, "deploy_tx_hash": result.tx_hash,
                    "block_number": result.block_number, "adopted": False}
        outs |= _public(props) | {"code_hash": expected, "chain_id": client.chain_id}
        return CreateResult(id_=str(outs["address"]), outs=outs)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        w3 = connect(str(props["rpc_url"]), expected_chain_id=int(props["chain_id"]))
        code = w3.eth.get_code(w3.to_checksum_address(id_))
        if len(code) == 0:
            return ReadResult(id_="", outs={})  # gone (e.g. a reset dev chain): refresh drops it
        # A different code hash shows up as drift; the next `up` replaces the contract.
        return ReadResult(id_=id_, outs={**props, "code_hash": code_hash(code)})

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        # Only rpc_url / provider_version changed: nothing to do on chain.
        keep = {k: olds[k] for k in ("address", "deploy_tx_hash", "block_number", "adopted", "code_hash") if k in olds}
        return UpdateResult(outs=_public(news) | keep)

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        """Contracts cannot be deleted: the code stays on chain and is only forgotten by the stack."""
        return None


class RegistryContract(Resource, module="registry", name="RegistryContract"):
    """The ServiceRegistry contract: deployed, or adopted at `existing_address`.

    Outputs: address, chain_id, deploy_tx_hash, block_number, code_hash, adopted.
    """

    address: pulumi.Output[str]
    chain_id: pulumi.Output[int]
    deploy_tx_hash: pulumi.Output[str]
    block_number: pulumi.Output[int]
    code_hash: pulumi.Output[str]
    adopted: pulumi.Output[bool]

    def __init__(
        self,
        resource_name: str,
        *,
        rpc_url: pulumi.Input[str],
        chain_id: pulumi.Input[int],
        deployer_key: pulumi.Input[str] | None = None,
        deployer_key_ref: str = f"env:{DEPLOYER_KEY_ENV}",
        existing_address: pulumi.Input[str] | None = None,
        confirmations: int = 1,
        max_fee_wei: int | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        artifact = load_artifact()
        props = {
            "rpc_url": rpc_url,
            "chain_id": chain_id,
            "confirmations": confirmations,
            "max_fee_wei": max_fee_wei,
            "deployer_key": pulumi.Output.secret(deployer_key) if deployer_key is not None else None,
            "deployer_key_ref": deployer_key_ref,
            "existing_address": existing_address or "",
            "bytecode_hash": code_hash(artifact["deployedBytecode"]),
            "provider_version": PROVIDER_VERSION,
            "address": None, "deploy_tx_hash": None, "block_number": None, "code_hash": None, "adopted": None,
        }
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(additional_secret_outputs=_secret_outs(
            SECRET_INPUTS, rpc_url)))
        super().__init__(RegistryContractProvider(), resource_name, props, opts)


# ----------------------------------------------------------------------------- service registration

_REG_OUTS = ("service_id", "owner", "tx_hash", "block_number", "adopted")


def _validate_service(news: Mapping[str, Any]) -> list[CheckFailure]:
    failures: list[CheckFailure] = []

    def bound(key: str, value: Any, low: int, high: int, unit: str = "bytes") -> None:
        if not _known(value):
            return
        size = len(str(value).encode()) if unit == "bytes" else int(value)
        if not low <= size <= high:
            failures.append(CheckFailure(key, f"{key} must be {low}..{high} {unit}, got {size}: {value!r}"))

    bound("name", news.get("name", ""), 1, MAX_NAME)
    bound("version", news.get("version", ""), 1, MAX_VERSION)
    bound("metadata", news.get("metadata", ""), 0, MAX_METADATA)
    bound("ttl", news.get("ttl", 0), MIN_TTL, MAX_TTL, "seconds")
    endpoints = news.get("endpoints")
    if _known(endpoints):
        if not isinstance(endpoints, list | tuple) or not 1 <= len(endpoints) <= MAX_ENDPOINTS:
            failures.append(CheckFailure("endpoints", f"endpoints must be a list of 1..{MAX_ENDPOINTS}, got {endpoints!r}"))
        else:
            for i, ep in enumerate(endpoints):
                bound(f"endpoints[{i}]", ep, 1, MAX_ENDPOINT)
    return failures


class ServiceRegistrationProvider(_KeyedProvider):
    """One service on the registry, owned by the deployer key's address. The id is the service id."""

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        return CheckResult(news, _validate_service(news))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        replaces = [k for k in ("name", "version", "contract_address", "chain_id", "ttl")
                    if news.get(k) != olds.get(k)]
        # The owner is the key's address; the key itself is secret, so compare addresses.
        if _known(news.get("deployer_key")) and _known(news.get("deployer_key_ref")):
            try:
                if _owner(news, self.keys()) != olds.get("owner"):
                    replaces.append("deployer_key")
            except (ChainError, ConfigError):
                pass  # no key reachable here (preview without it): create/update will say so clearly
        if not replaces and self._expired_on_chain(_id, olds):
            # Expired (an RPC outage longer than the TTL) or deregistered out of band: a heartbeat
            # cannot revive it, so a plain `pulumi up` registers it again, no refresh needed.
            replaces.append("service_id")
        updates = [k for k in ("endpoints", "metadata", "rpc_url", "provider_version")
                   if news.get(k) != olds.get(k)]
        # Same name, version, owner and contract means the same service id: a TTL change must
        # deregister first or the new create would adopt the old entry and delete would remove it.
        same_id = not {"name", "version", "contract_address", "chain_id", "deployer_key"} & set(replaces)
        return DiffResult(
            changes=bool(replaces or updates),
            replaces=replaces,
            delete_before_replace=bool(replaces) and same_id,
        )

    @staticmethod
    def _expired_on_chain(id_: str, olds: Mapping[str, Any]) -> bool:
        """True if the registration in `olds` is no longer alive on chain; False when unsure."""
        sid = str(olds.get("service_id") or id_)
        if not _SERVICE_ID.fullmatch(sid) or not all(_known(olds.get(k)) and olds.get(k)
                                                      for k in ("rpc_url", "chain_id", "contract_address")):
            return False
        try:
            registry = _reader(olds)
            return registry is not None and not registry.is_alive(sid)
        except ChainError:
            return False  # node unreachable at preview: the update itself will say so

    def create(self, props: dict[str, Any]) -> CreateResult:
        registry = Registry(_client(props, self.keys()), str(props["contract_address"]))
        name, version = str(props["name"]), str(props["version"])
        endpoints, metadata = [str(e) for e in props["endpoints"]], str(props.get("metadata") or "")
        owner = registry.client.address
        sid = service_id(name, version, owner)
        label = f"{name}@{version}"
        existing = registry.get_service(sid)
        outs: dict[str, Any]
        if existing is not None and existing.is_active and existing.ttl == int(props["ttl"]):
            # Registered already (a crash after sending the transaction, or an earlier stack):
            # adopt it, and bring endpoints/metadata in line.
            tx_hash, block = "", 0
            if existing.endpoints != endpoints or existing.metadata != metadata:
                result = registry.update(sid, endpoints, metadata, label)
                tx_hash, block = result.tx_hash, result.block_number
            outs = {"tx_hash": tx_hash, "block_number": block, "adopted": True}
        else:
            if existing is not None and existing.is_active:
                registry.deregister(sid, label)  # alive with another TTL: the TTL cannot be updated
            try:
                result = registry.register(name, version, endpoints, metadata, int(props["ttl"]))
            except TransactionReverted as exc:
                if exc.error_name != "AlreadyRegistered":
                    raise
                return self.create(props)  # a concurrent create won the race: adopt it
            outs = {"tx_hash": result.tx_hash, "block_number": result.block_number, "adopted": False}
        outs |= _public(props) | {"service_id": sid, "owner": owner}
        return CreateResult(id_=sid, outs=outs)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        registry = _reader(props)
        if registry is None:
            return ReadResult(id_="", outs={})  # the registry itself is gone (a reset dev chain)
        record = registry.get_service(id_)
        if record is None or not record.is_active:
            return ReadResult(id_="", outs={})  # deregistered or expired out of band: gone
        observed = {"name": record.name, "version": record.version, "endpoints": record.endpoints,
                    "metadata": record.metadata, "ttl": record.ttl, "owner": record.owner, "service_id": id_}
        return ReadResult(id_=id_, outs={**props, **observed})

    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        endpoints, metadata = [str(e) for e in news["endpoints"]], str(news.get("metadata") or "")
        keep = {k: olds.get(k) for k in _REG_OUTS}
        if list(olds.get("endpoints") or []) != endpoints or (olds.get("metadata") or "") != metadata:
            registry = Registry(_client(news, self.keys()), str(news["contract_address"]))
            result = registry.update(id_, endpoints, metadata, f"{news['name']}@{news['version']}")
            keep |= {"tx_hash": result.tx_hash, "block_number": result.block_number}
        return UpdateResult(outs=_public(news) | keep)

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        client = _client(props, self.keys())
        address = client.w3.to_checksum_address(str(props["contract_address"]))
        if len(client.w3.eth.get_code(address)) == 0:
            return  # the registry itself is gone (a reset dev chain): nothing left to deregister
        registry = Registry(client, address)
        if not registry.is_alive(id_):
            return  # already deregistered, cleaned up or expired
        record = registry.get_service(id_)
        if record is not None and record.owner.lower() != client.address.lower():
            # The deployer key was rotated: the old owner's entry cannot be deregistered with the
            # new key. It stops being discoverable once its TTL runs out (nothing beats it: its
            # delegates are revoked), so leave it rather than fail the whole update.
            _warn(f"{props.get('name')}@{props.get('version')} ({id_}) is owned by {record.owner}, not by the "
                  f"current deployer key {client.address} (a rotated key): it is left to expire within "
                  f"its ttl of {record.ttl}s; deregister it with the old key to remove it sooner")
            return
        try:
            registry.deregister(id_, f"{props.get('name')}@{props.get('version')}")
        except TransactionReverted as exc:
            if exc.error_name not in ("ServiceNotActive", "ServiceNotFound"):
                raise


class ServiceRegistration(Resource, module="registry", name="ServiceRegistration"):
    """A service registered on a ServiceRegistry. Outputs: service_id, owner, tx_hash, block_number."""

    service_id: pulumi.Output[str]
    owner: pulumi.Output[str]
    tx_hash: pulumi.Output[str]
    block_number: pulumi.Output[int]
    adopted: pulumi.Output[bool]

    def __init__(
        self,
        resource_name: str,
        *,
        rpc_url: pulumi.Input[str],
        chain_id: pulumi.Input[int],
        contract_address: pulumi.Input[str],
        name: pulumi.Input[str],
        version: pulumi.Input[str],
        endpoints: pulumi.Input[Sequence[pulumi.Input[str]]],
        ttl: pulumi.Input[int],
        metadata: pulumi.Input[str] = "",
        deployer_key: pulumi.Input[str] | None = None,
        deployer_key_ref: str = f"env:{DEPLOYER_KEY_ENV}",
        confirmations: int = 1,
        max_fee_wei: int | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        props = {
            "rpc_url": rpc_url,
            "chain_id": chain_id,
            "confirmations": confirmations,
            "max_fee_wei": max_fee_wei,
            "contract_address": contract_address,
            "name": name,
            "version": version,
            "endpoints": endpoints,
            "metadata": metadata,
            "ttl": ttl,
            "deployer_key": pulumi.Output.secret(deployer_key) if deployer_key is not None else None,
            "deployer_key_ref": deployer_key_ref,
            "provider_version": PROVIDER_VERSION,
            **{k: None for k in _REG_OUTS},
        }
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(additional_secret_outputs=_secret_outs(
            SECRET_INPUTS, rpc_url)))
        super().__init__(ServiceRegistrationProvider(), resource_name, props, opts)


# ----------------------------------------------------------------------------- heartbeat delegate

_DELEGATE_OUTS = ("address", "private_key", "funded_wei")
DELEGATE_SECRETS = ["deployer_key", "private_key"]


def _delegate_account(outs: Mapping[str, Any]) -> Any:
    return load_account(str(outs["private_key"]))


class HeartbeatDelegateProvider(_KeyedProvider):
    """A cluster's own heartbeat key: generated here, funded by the owner, and named a delegate
    of every service it keeps alive. It can heartbeat and nothing else (the contract says so),
    so a compromised cluster cannot redirect endpoints. A new `rotation` value replaces it: the
    new key is made a delegate first, then the old one is revoked and its funds swept back."""

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        failures = []
        funding = news.get("funding_wei")
        if _known(funding) and (not isinstance(funding, int | float) or int(funding) < 0):
            failures.append(CheckFailure("funding_wei", f"funding_wei must be an integer >= 0, got {funding!r}"))
        ids = news.get("service_ids")
        if _known(ids):
            bad = [i for i in ids or [] if _known(i) and not _SERVICE_ID.fullmatch(str(i))]
            if bad:
                failures.append(CheckFailure("service_ids", f"not 32-byte 0x service ids: {bad}"))
        return CheckResult(news, failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        replaces = [k for k in ("rotation", "contract_address", "chain_id") if news.get(k) != olds.get(k)]
        updates = [k for k in ("service_ids", "funding_wei", "rpc_url", "provider_version", "marks")
                   if news.get(k) != olds.get(k)]
        return DiffResult(changes=bool(replaces or updates), replaces=replaces, delete_before_replace=False)

    def create(self, props: dict[str, Any]) -> CreateResult:
        account = Account.create()  # os.urandom entropy; the key only ever leaves as a secret output
        outs = {"address": account.address, "private_key": account.key.to_0x_hex(), "funded_wei": 0}
        return CreateResult(id_=account.address, outs=_public(props) | self._converge(props, outs, []))

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        outs = {k: olds[k] for k in _DELEGATE_OUTS}
        dropped = [i for i in olds.get("service_ids") or [] if i not in (news.get("service_ids") or [])]
        return UpdateResult(outs=_public(news) | self._converge(news, outs, dropped))

    def _converge(self, props: Mapping[str, Any], outs: dict[str, Any], dropped: list[str]) -> dict[str, Any]:
        """Make the key a delegate of every id, revoke `dropped`, top it up to `funding_wei`.

        Funding comes last: if a step before fails in a create, the key that is never saved
        holds no funds; a lost key that holds a delegation can only heartbeat (revoke it by hand).
        """
        client = _client(props, self.keys())
        registry = Registry(client, str(props["contract_address"]))
        address = str(outs["address"])
        for sid in props.get("service_ids") or []:
            if not registry.is_delegate(str(sid), address):
                registry.set_delegate(str(sid), address)
        for sid in dropped:
            self._revoke(registry, str(sid), address)
        want = int(props.get("funding_wei") or 0)
        have = client.balance(address)
        if have < want // 2:  # top up below half: not a transfer on every update
            client.transfer(address, want - have, f"fund heartbeat delegate {address}")
            outs["funded_wei"] = int(outs.get("funded_wei") or 0) + want - have
        return outs

    @staticmethod
    def _revoke(registry: Registry, sid: str, address: str) -> None:
        try:
            if registry.is_delegate(sid, address):
                registry.revoke_delegate(sid, address)
        except TransactionReverted as exc:
            if exc.error_name == "NotServiceOwner":  # the old owner's entry after a key rotation
                _warn(f"heartbeat delegate {address} stays on {sid}: that entry belongs to a rotated "
                      "deployer key; it expires within its ttl")
            elif exc.error_name != "ServiceNotFound":
                raise

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        registry = _reader(props)
        if registry is None:
            return ReadResult(id_="", outs={})
        # Drift: an id the key no longer beats for shows up as a change to service_ids.
        still = [sid for sid in props.get("service_ids") or [] if registry.is_delegate(str(sid), id_)]
        return ReadResult(id_=id_, outs={**props, "service_ids": still})

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        client = _client(props, self.keys())
        address = client.w3.to_checksum_address(str(props["contract_address"]))
        if len(client.w3.eth.get_code(address)) == 0:
            return  # the registry is gone (a reset dev chain)
        registry = Registry(client, address)
        for sid in props.get("service_ids") or []:
            self._revoke(registry, str(sid), id_)
        if props.get("private_key"):
            _sweep(client, _delegate_account(props), client.address)


def _sweep(owner_client: ChainClient, delegate: Any, to: str) -> None:
    """Send what is left on a retired delegate key back to the owner (less the transfer's fee)."""
    w3 = owner_client.w3
    balance = int(w3.eth.get_balance(delegate.address))
    fees = owner_client.fees(fresh=True)
    cost = 21_000 * fees["maxFeePerGas"]
    if balance <= cost:
        return
    sweeper = ChainClient(w3, delegate, fee_policy=owner_client.fee_policy, confirmations=owner_client.confirmations)
    sweeper.wait(sweeper.send(None, f"sweep retired heartbeat delegate {delegate.address}", to=to,
                              value=balance - cost, gas=21_000))


class HeartbeatDelegate(Resource, module="registry", name="HeartbeatDelegate"):
    """One cluster's heartbeat key. Outputs: address, private_key (secret), funded_wei."""

    address: pulumi.Output[str]
    private_key: pulumi.Output[str]
    funded_wei: pulumi.Output[int]

    def __init__(
        self,
        resource_name: str,
        *,
        rpc_url: pulumi.Input[str],
        chain_id: pulumi.Input[int],
        contract_address: pulumi.Input[str],
        service_ids: pulumi.Input[Sequence[pulumi.Input[str]]],
        funding_wei: int,
        rotation: str = "1",
        marks: pulumi.Input[Sequence[pulumi.Input[str]]] | None = None,
        deployer_key: pulumi.Input[str] | None = None,
        deployer_key_ref: str = f"env:{DEPLOYER_KEY_ENV}",
        confirmations: int = 1,
        max_fee_wei: int | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        props = {
            "rpc_url": rpc_url,
            "chain_id": chain_id,
            "contract_address": contract_address,
            "service_ids": service_ids,
            "funding_wei": funding_wei,
            "rotation": rotation,
            # Registration tx hashes: a re-registration changes them, so the delegate is checked again.
            "marks": marks or [],
            "deployer_key": pulumi.Output.secret(deployer_key) if deployer_key is not None else None,
            "deployer_key_ref": deployer_key_ref,
            "confirmations": confirmations,
            "max_fee_wei": max_fee_wei,
            "provider_version": PROVIDER_VERSION,
            **{k: None for k in _DELEGATE_OUTS},
        }
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(additional_secret_outputs=_secret_outs(
            DELEGATE_SECRETS, rpc_url)))
        super().__init__(HeartbeatDelegateProvider(), resource_name, props, opts)
