"""EVM chain client: connection, signing, a shared nonce manager, receipts and revert decoding.

Engine-free (never imports pulumi): used by the registry dynamic providers, the heartbeat agent,
the benchmark and the tests.

Why a process-wide nonce manager: the Pulumi engine runs resource operations in parallel threads,
and each would otherwise read the same `pending` nonce and collide. Every transaction from one key
on one chain takes its nonce from one `NonceManager`, keyed by (chain id, genesis hash, address).
The genesis hash is part of the key because dev chains (anvil: 31337) reuse chain ids, and a
manager left over from a previous anvil would hand out nonces the new chain has never seen.

The private key is taken from an argument or from `EDGEFABRIC_DEPLOYER_KEY`; it is never logged,
never put into an exception message and never kept anywhere but the eth_account signer.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import requests
from eth_abi import decode as abi_decode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import function_abi_to_4byte_selector, to_checksum_address
from hexbytes import HexBytes
from tenacity import Retrying, stop_after_attempt, wait_exponential
from web3 import HTTPProvider, Web3
from web3.contract.contract import ContractFunction
from web3.exceptions import ContractCustomError, ContractLogicError, TimeExhausted, Web3RPCError
from web3.providers.rpc.utils import ExceptionRetryConfiguration

log = logging.getLogger(__name__)

DEPLOYER_KEY_ENV = "EDGEFABRIC_DEPLOYER_KEY"
_KEY_RE = re.compile(r"^(0x)?[0-9a-fA-F]{64}$")
# Node error texts (geth, anvil, reth, nethermind) meaning "our idea of the next nonce is wrong".
_NONCE_ERRORS = ("nonce too low", "replacement transaction underpriced", "nonce too high", "invalid nonce",
                 "nonce has already been used")


class ChainError(RuntimeError):
    """A chain operation failed in a way a user can act on (bad URL, key, revert, timeout)."""


class TransactionReverted(ChainError):
    """A call or transaction reverted. `error_name` is the custom error (or "Error"/"Panic")."""

    def __init__(self, message: str, error_name: str | None = None, args: tuple[Any, ...] = ()) -> None:
        super().__init__(message)
        self.error_name = error_name
        self.error_args = args


# ----------------------------------------------------------------------------- keys


def load_account(key: str | None = None, *, env_var: str = DEPLOYER_KEY_ENV) -> LocalAccount:
    """The signer for `key`, or for the key in `env_var` when `key` is None.

    Raises ChainError naming where the key came from; the message never contains the key.
    """
    source = "the key passed in" if key is not None else f"environment variable {env_var}"
    value = key if key is not None else os.environ.get(env_var)
    if not value:
        raise ChainError(f"no deployer key: set {env_var} or pass the key as a secret")
    value = value.strip()
    if not _KEY_RE.match(value):
        raise ChainError(f"{source} is not a 32-byte hex private key (64 hex digits, optional 0x)")
    try:
        return Account.from_key(value)
    except Exception:  # the library message could echo the key: replace it
        raise ChainError(f"{source} is not a valid secp256k1 private key") from None


# ----------------------------------------------------------------------------- connection


def connect(
    rpc_url: str,
    *,
    expected_chain_id: int | None = None,
    timeout: float = 10.0,
    retries: int = 5,
    backoff: float = 0.5,
) -> Web3:
    """A connected Web3 for an http(s) JSON-RPC URL.

    Retries the first contact `retries` times with exponential backoff (a node that is still
    starting is normal in local-env and CI); each request times out after `timeout` seconds and
    transient HTTP errors are retried by web3 itself. Raises ChainError if the node stays
    unreachable or reports a chain id other than `expected_chain_id`.
    """
    if not rpc_url.startswith(("http://", "https://")):
        raise ChainError(
            f"registry rpcUrl {rpc_url!r}: only http(s) JSON-RPC endpoints are supported by the "
            "synchronous client (web3 8 has no synchronous websocket provider); use the node's http URL"
        )
    provider = HTTPProvider(
        rpc_url,
        request_kwargs={"timeout": timeout},
        exception_retry_configuration=ExceptionRetryConfiguration(
            errors=(ConnectionError, requests.HTTPError, requests.Timeout), retries=3, backoff_factor=0.2
        ),
    )
    w3 = Web3(provider)
    # Waits backoff, 2 x backoff, 4 x backoff ... between attempts.
    first_contact = Retrying(stop=stop_after_attempt(retries + 1),
                             wait=wait_exponential(multiplier=backoff), reraise=True)
    try:
        chain_id = first_contact(lambda: int(w3.eth.chain_id))
    except Exception as exc:  # connection refused, timeout, bad gateway ...
        raise ChainError(f"cannot reach the chain at {rpc_url} after {retries + 1} attempts: {exc}") from None
    if expected_chain_id is not None and chain_id != expected_chain_id:
        raise ChainError(f"registry chainId is {expected_chain_id} but the node at {rpc_url} reports {chain_id}")
    return w3


# ----------------------------------------------------------------------------- nonces


class NonceManager:
    """Hands out consecutive nonces for one (chain, address); safe under threads.

    `sending()` holds the manager from allocation until the node has the transaction, so
    transactions reach the node in nonce order. Out of order, a node queues the later nonce
    behind the gap, and a node that mines on demand (anvil's automine) may never come back
    for it once the gap is filled. Only the broadcast is serialised: receipts are still
    awaited in parallel, so pipelining keeps its speed.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._next: int | None = None

    def allocate(self, w3: Web3, address: str) -> int:
        with self._lock:
            if self._next is None:
                # `pending` counts transactions already in the pool, e.g. from a crashed run.
                self._next = int(w3.eth.get_transaction_count(to_checksum_address(address), "pending"))
            nonce = self._next
            self._next += 1
            return nonce

    @contextlib.contextmanager
    def sending(self) -> Iterator[None]:
        """Hold the manager while one transaction is signed and broadcast."""
        with self._lock:
            yield

    def resync(self, w3: Web3, address: str) -> None:
        """Forget our counter; the next allocation re-reads `pending` from the node."""
        with self._lock:
            self._next = None


_MANAGERS: dict[tuple[int, str, str], NonceManager] = {}
_MANAGERS_LOCK = threading.Lock()


def nonce_manager(chain_id: int, genesis_hash: str, address: str) -> NonceManager:
    """The process-wide manager for this chain and address."""
    key = (chain_id, genesis_hash, address.lower())
    with _MANAGERS_LOCK:
        if key not in _MANAGERS:
            _MANAGERS[key] = NonceManager()
        return _MANAGERS[key]


# ----------------------------------------------------------------------------- revert decoding


class ErrorDecoder:
    """Turns revert data into `Name(arg=value, ...)` using the custom errors of an ABI."""

    def __init__(self, abi: Sequence[dict[str, Any]]) -> None:
        self._errors: dict[bytes, dict[str, Any]] = {}
        for entry in abi:
            if entry.get("type") == "error":
                self._errors[bytes(function_abi_to_4byte_selector(entry))] = entry  # type: ignore[arg-type]  # a plain ABI dict
        # The two built-in errors every revert may carry.
        self._errors[bytes.fromhex("08c379a0")] = {"name": "Error", "inputs": [{"name": "reason", "type": "string"}]}
        self._errors[bytes.fromhex("4e487b71")] = {"name": "Panic", "inputs": [{"name": "code", "type": "uint256"}]}

    def decode(self, data: bytes | str | None) -> tuple[str | None, tuple[Any, ...], str]:
        """(error name, args, human text). Unknown data gives (None, (), a hex excerpt)."""
        raw = HexBytes(data) if data else HexBytes(b"")
        if len(raw) < 4:
            return None, (), "reverted without a reason"
        entry = self._errors.get(bytes(raw[:4]))
        if entry is None:
            return None, (), f"reverted with unknown error data {raw.to_0x_hex()[:74]}"
        types = [i["type"] for i in entry["inputs"]]
        try:
            values = tuple(abi_decode(types, bytes(raw[4:])))
        except Exception:
            return entry["name"], (), f"reverted with {entry['name']} (undecodable arguments)"
        parts = [f"{i['name'] or f'arg{n}'}={_show(v)}" for n, (i, v) in enumerate(zip(entry["inputs"], values, strict=True))]
        return entry["name"], values, f"{entry['name']}({', '.join(parts)})"


def _show(value: Any) -> str:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, str):
        return repr(value)
    return str(value)


def _revert_data(exc: Exception) -> str | None:
    data = getattr(exc, "data", None)
    if isinstance(data, dict):
        data = data.get("data")
    if isinstance(data, str) and data.startswith("0x"):
        return data
    # ContractLogicError for require(string) carries the text in the message, data in .data
    return None


# ----------------------------------------------------------------------------- transactions


@dataclass(frozen=True)
class PendingTx:
    tx_hash: str
    nonce: int
    description: str


@dataclass(frozen=True)
class TxResult:
    tx_hash: str
    block_number: int
    gas_used: int
    contract_address: str | None
    logs: tuple[Any, ...]


class ChainClient:
    """Signs and sends transactions for one account on one chain.

    Build one per operation (cheap); the nonce manager behind it is shared process-wide.
    """

    def __init__(
        self,
        w3: Web3,
        account: LocalAccount,
        *,
        abi: Sequence[dict[str, Any]] = (),
        receipt_timeout: float = 120.0,
        poll_interval: float = 0.05,
    ) -> None:
        self.w3 = w3
        self._account = account
        self.address: str = account.address
        self.chain_id = int(w3.eth.chain_id)
        genesis = w3.eth.get_block(0)["hash"]
        self._nonces = nonce_manager(self.chain_id, HexBytes(genesis).hex(), self.address)
        self.decoder = ErrorDecoder(abi)
        self.receipt_timeout = receipt_timeout
        self.poll_interval = poll_interval
        self._fees: tuple[float, dict[str, int]] | None = None

    def __repr__(self) -> str:  # never show the account (it holds the key)
        return f"ChainClient(chain_id={self.chain_id}, address={self.address})"

    # -- fees

    def fees(self) -> dict[str, int]:
        """EIP-1559 fee fields: maxFee = 2 x base fee + tip, so a tx survives a few full blocks.

        Cached for 2 s so a burst of pipelined transactions does not ask the node each time.
        """
        now = time.monotonic()
        if self._fees and now - self._fees[0] < 2.0:
            return self._fees[1]
        base = int(self.w3.eth.get_block("latest").get("baseFeePerGas") or 0)
        try:
            tip = int(self.w3.eth.max_priority_fee)
        except Exception:  # nodes without eth_maxPriorityFeePerGas
            tip = Web3.to_wei(1, "gwei")
        fees = {"maxFeePerGas": 2 * base + tip, "maxPriorityFeePerGas": tip}
        self._fees = (now, fees)
        return fees

    # -- calls

    def call(self, fn: ContractFunction, description: str) -> Any:
        """eth_call `fn`; a revert raises TransactionReverted naming `description`."""
        try:
            return fn.call({"from": self.address})
        except (ContractCustomError, ContractLogicError) as exc:
            raise self._reverted(description, exc) from None

    def _reverted(self, description: str, exc: Exception) -> TransactionReverted:
        data = _revert_data(exc)
        if data:
            name, args, text = self.decoder.decode(data)
        else:
            name, args, text = None, (), str(getattr(exc, "message", None) or exc)
        return TransactionReverted(f"{description}: reverted: {text}", name, args)

    # -- sending

    def send(self, fn: ContractFunction | None, description: str, *, data: str | None = None,
             gas: int | None = None) -> PendingTx:
        """Sign and broadcast; returns at once (pipelining). `fn=None` with `data` deploys.

        Gas is estimated first, so a call that would revert raises TransactionReverted before a
        nonce is taken (a taken nonce that never reaches the node would stall later transactions).
        """
        tx: dict[str, Any] = {"from": self.address, "chainId": self.chain_id}
        if fn is not None:
            tx["to"] = fn.address
            tx["data"] = fn._encode_transaction_data()
        else:
            tx["data"] = data
        if gas is None:
            try:
                estimate = int(self.w3.eth.estimate_gas(tx, "pending"))  # type: ignore[arg-type]
            except (ContractCustomError, ContractLogicError) as exc:
                raise self._reverted(description, exc) from None
            # Headroom: state can change between estimate and inclusion. Parallel deregistrations
            # (swap-and-pop on shared index arrays) ran out of gas with 20 %; unused gas is not
            # charged, so a generous limit costs nothing.
            gas = estimate * 3 // 2 + 20_000
        tx.update(self.fees())
        tx["gas"] = gas
        tx["type"] = 2
        for attempt in range(4):
            with self._nonces.sending():
                tx["nonce"] = self._nonces.allocate(self.w3, self.address)
                signed = self._account.sign_transaction(tx)
                try:
                    tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
                    return PendingTx(HexBytes(tx_hash).to_0x_hex(), tx["nonce"], description)
                except (Web3RPCError, ValueError) as exc:
                    text = str(exc).lower()
                    if "already known" in text:  # this very transaction is in the pool already
                        return PendingTx(HexBytes(signed.hash).to_0x_hex(), tx["nonce"], description)
                    # The nonce was taken but not used: the node's pending count is the truth now.
                    self._nonces.resync(self.w3, self.address)
                    if any(marker in text for marker in _NONCE_ERRORS) and attempt < 3:
                        log.info("%s: nonce %s rejected (%s); resyncing", description, tx["nonce"], text[:120])
                        continue
                    raise ChainError(f"{description}: the node rejected the transaction: {exc}") from None
                except Exception:
                    # Anything else (a timeout, a dropped connection) may or may not have reached
                    # the node: re-read `pending` rather than leave a possible gap behind.
                    self._nonces.resync(self.w3, self.address)
                    raise
        raise ChainError(f"{description}: nonce kept colliding after 4 attempts")

    def wait(self, pending: PendingTx) -> TxResult:
        """Wait for the receipt; raise TransactionReverted (decoded) if status is 0."""
        try:
            receipt = self.w3.eth.wait_for_transaction_receipt(
                HexBytes(pending.tx_hash), timeout=self.receipt_timeout, poll_latency=self.poll_interval
            )
        except TimeExhausted:
            raise ChainError(
                f"{pending.description}: no receipt for {pending.tx_hash} after {self.receipt_timeout}s"
            ) from None
        if receipt["status"] != 1:
            raise self._explain_failure(pending, receipt)
        address = receipt.get("contractAddress")
        return TxResult(
            tx_hash=pending.tx_hash,
            block_number=int(receipt["blockNumber"]),
            gas_used=int(receipt["gasUsed"]),
            contract_address=to_checksum_address(address) if address else None,
            logs=tuple(receipt["logs"]),
        )

    def transact(self, fn: ContractFunction, description: str, *, gas: int | None = None) -> TxResult:
        """send + wait."""
        return self.wait(self.send(fn, description, gas=gas))

    def deploy(self, abi: Sequence[dict[str, Any]], bytecode: str, description: str) -> TxResult:
        """Deploy a contract whose constructor takes no arguments (its creation code is the data)."""
        del abi  # kept in the signature so callers state which contract they deploy
        return self.wait(self.send(None, description, data=bytecode))

    def _explain_failure(self, pending: PendingTx, receipt: Any) -> TransactionReverted:
        # Receipts carry no revert data: replay the transaction as a call to recover it. First on
        # the block that included it (same timestamp, and a reverted tx changed no contract state),
        # then on the block before (in case a later tx in the same block changed the state).
        tx = self.w3.eth.get_transaction(HexBytes(pending.tx_hash))
        replay = {"from": tx["from"], "to": tx.get("to"), "data": tx["input"], "gas": tx["gas"]}
        for block in (receipt["blockNumber"], receipt["blockNumber"] - 1):
            try:
                self.w3.eth.call(replay, block)  # type: ignore[arg-type]
            except (ContractCustomError, ContractLogicError) as exc:
                return self._reverted(pending.description, exc)
            except Exception:
                continue
        if receipt["gasUsed"] >= tx["gas"]:
            return TransactionReverted(f"{pending.description}: ran out of gas ({tx['gas']}) in {pending.tx_hash}")
        return TransactionReverted(f"{pending.description}: transaction {pending.tx_hash} reverted")

