"""EVM chain client: connection, signing, a shared nonce manager, receipts and revert decoding.

Engine-free (never imports pulumi): used by the registry dynamic providers, the heartbeat agent,
the benchmark and the tests.

Why a process-wide nonce manager: the Pulumi engine runs resource operations in parallel threads,
and each would otherwise read the same `pending` nonce and collide. Every transaction from one key
on one chain takes its nonce from one `NonceManager`, keyed by (chain id, genesis hash, address).
The genesis hash is part of the key because dev chains (anvil: 31337) reuse chain ids, and a
manager left over from a previous anvil would hand out nonces the new chain has never seen.

Faults: every transport or RPC failure surfaces as a ChainError. `RetryingHTTPProvider` retries
what a node or a gateway in front of it reports as passing (refused, reset, timeout, HTTP 429 and
5xx, JSON-RPC "rate limited") with exponential backoff, for every method: re-sending
`eth_sendRawTransaction` is safe, a node answers "already known" for the same signed bytes.
`ChainClient.wait` replaces a transaction that is not mined after `FeePolicy.bump_after_blocks`
blocks (same nonce, bumped fee, never above `FeePolicy.max_fee_wei`), re-sends one a reorg
dropped, waits for `confirmations`, and resyncs the nonce on a receipt timeout.

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
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests
from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import function_abi_to_4byte_selector, to_checksum_address
from eth_utils.abi import collapse_if_tuple
from hexbytes import HexBytes
from tenacity import Retrying, retry_if_exception, stop_after_attempt, stop_after_delay, wait_exponential
from web3 import HTTPProvider, Web3
from web3._utils.method_formatters import log_entry_formatter
from web3.contract.contract import ContractFunction
from web3.exceptions import ContractCustomError, ContractLogicError, TransactionNotFound, Web3RPCError
from web3.types import RPCEndpoint, RPCResponse

log = logging.getLogger(__name__)

DEPLOYER_KEY_ENV = "EDGEFABRIC_DEPLOYER_KEY"
_KEY_RE = re.compile(r"^(0x)?[0-9a-fA-F]{64}$")
# Node error texts (geth, anvil, reth, nethermind) meaning "our idea of the next nonce is wrong".
_NONCE_ERRORS = ("nonce too low", "replacement transaction underpriced", "nonce too high", "invalid nonce",
                 "nonce has already been used")
# "Our fee is below the base fee": the base fee rose since we priced the transaction.
_FEE_ERRORS = ("less than block base fee", "fee cap less than", "max fee per gas less than", "underpriced")
# JSON-RPC error codes hosted nodes use for "slow down" (EIP-1474 -32005) and some gateways' 429.
_RATE_LIMIT_CODES = (-32005, 429)


class ChainError(RuntimeError):
    """A chain operation failed in a way a user can act on (bad URL, key, revert, timeout)."""


class RetryableRPCError(ChainError):
    """A failure worth retrying: the node or a gateway is unreachable, slow, or rate limiting."""


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


def redact_url(url: str) -> str:
    """`scheme://host:port` of a URL: hosted RPC URLs carry API keys in the path, query or userinfo."""
    parsed = urlsplit(url)
    host = parsed.hostname or "?"
    port = f":{parsed.port}" if parsed.port else ""
    return f"{parsed.scheme}://{host}{port}"


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, RetryableRPCError | requests.ConnectionError | requests.Timeout):
        return True
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return exc.response.status_code == 429 or exc.response.status_code >= 500
    return False


@dataclass(frozen=True)
class RetryPolicy:
    """How long one RPC request keeps trying: `attempts` tries within `max_s` seconds, with
    exponential backoff from `backoff_s` (capped at 2 s, so a node that comes back is used soon)."""

    attempts: int = 5
    backoff_s: float = 0.1
    max_s: float = 30.0


class RetryingHTTPProvider(HTTPProvider):
    """HTTPProvider whose every request is retried on passing faults and fails as ChainError.

    web3's own retry covers only some methods and Python's `ConnectionError`, which is not a parent
    of `requests.ConnectionError`; errors also escaped as raw `requests` exceptions, naming the URL.
    """

    def __init__(self, rpc_url: str, *, timeout: float, policy: RetryPolicy) -> None:
        super().__init__(rpc_url, request_kwargs={"timeout": timeout}, exception_retry_configuration=None)
        self._shown = redact_url(rpc_url)
        self._policy = policy

    def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        retrying = Retrying(
            stop=stop_after_attempt(self._policy.attempts) | stop_after_delay(self._policy.max_s),
            wait=wait_exponential(multiplier=self._policy.backoff_s, max=2.0),
            retry=retry_if_exception(_retryable),
            reraise=True,
        )
        try:
            return retrying(self._once, method, params)
        except ChainError:
            raise
        except Exception as exc:  # requests/json errors: one type, no URL (it may carry a key)
            raise RetryableRPCError(f"{method} to {self._shown} failed: {_describe(exc)}") from None

    def _once(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        response = super().make_request(method, params)
        error = response.get("error") if isinstance(response, dict) else None
        if isinstance(error, dict) and (error.get("code") in _RATE_LIMIT_CODES
                                        or "rate limit" in str(error.get("message", "")).lower()):
            raise RetryableRPCError(f"{method} to {self._shown}: rate limited: {error.get('message')}")
        return response

    def batch(self, requests_: Sequence[tuple[str, Any]]) -> list[RPCResponse]:
        """One JSON-RPC batch (one HTTP request), retried like `make_request`; answers in order.

        Each answer is the raw response: `result` (undecoded hex) or a per-request `error`. web3's
        own `batch_requests()` is not used: it refuses `eth_sendRawTransaction` in a batch and
        raises on the first per-request error, losing what the other requests did.
        """
        if not requests_:
            return []
        retrying = Retrying(
            stop=stop_after_attempt(self._policy.attempts) | stop_after_delay(self._policy.max_s),
            wait=wait_exponential(multiplier=self._policy.backoff_s, max=2.0),
            retry=retry_if_exception(_retryable),
            reraise=True,
        )
        label = f"batch of {len(requests_)} ({requests_[0][0]})"
        try:
            return retrying(self._batch_once, list(requests_), label)
        except ChainError:
            raise
        except Exception as exc:
            raise RetryableRPCError(f"{label} to {self._shown} failed: {_describe(exc)}") from None

    def _batch_once(self, requests_: list[tuple[str, Any]], label: str) -> list[RPCResponse]:
        answer = self.make_batch_request([(RPCEndpoint(m), p) for m, p in requests_])
        if not isinstance(answer, list):  # the node answered the whole batch with one error
            error = answer.get("error") if isinstance(answer, dict) else None
            text = str(error.get("message", "")) if isinstance(error, dict) else str(answer)
            if isinstance(error, dict) and (error.get("code") in _RATE_LIMIT_CODES or "rate limit" in text.lower()):
                raise RetryableRPCError(f"{label} to {self._shown}: rate limited: {text}")
            raise ChainError(f"{label} to {self._shown} refused: {text[:200]}")
        if len(answer) != len(requests_):
            raise ChainError(f"{label} to {self._shown}: {len(answer)} answers for {len(requests_)} requests")
        # Sorted by id by web3; ids are consecutive in request order.
        return answer


def _describe(exc: BaseException) -> str:
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return f"HTTP {exc.response.status_code}"
    if isinstance(exc, requests.Timeout):
        return "timed out"
    if isinstance(exc, requests.ConnectionError):
        return "connection refused or dropped"
    return type(exc).__name__


def connect(
    rpc_url: str,
    *,
    expected_chain_id: int | None = None,
    timeout: float = 10.0,
    retries: int = 5,
    backoff: float = 0.5,
    policy: RetryPolicy | None = None,
) -> Web3:
    """A connected Web3 for an http(s) JSON-RPC URL.

    Retries the first contact `retries` times with exponential backoff (a node that is still
    starting is normal in local-env and CI); each request times out after `timeout` seconds and
    is retried per `policy`. Raises ChainError if the node stays unreachable or reports a chain
    id other than `expected_chain_id`. Messages show the URL without path, query or userinfo.
    """
    if not rpc_url.startswith(("http://", "https://")):
        raise ChainError(
            f"registry rpcUrl {redact_url(rpc_url)!r}: only http(s) JSON-RPC endpoints are supported by the "
            "synchronous client (web3 8 has no synchronous websocket provider); use the node's http URL"
        )
    provider = RetryingHTTPProvider(rpc_url, timeout=timeout, policy=policy or RetryPolicy())
    w3 = Web3(provider)
    # Waits backoff, 2 x backoff, 4 x backoff ... between attempts.
    first_contact = Retrying(stop=stop_after_attempt(retries + 1),
                             wait=wait_exponential(multiplier=backoff), reraise=True)
    shown = redact_url(rpc_url)
    try:
        chain_id = first_contact(lambda: int(w3.eth.chain_id))
    except Exception as exc:  # connection refused, timeout, bad gateway ...
        raise ChainError(f"cannot reach the chain at {shown} after {retries + 1} attempts: {exc}") from None
    if expected_chain_id is not None and chain_id != expected_chain_id:
        raise ChainError(f"registry chainId is {expected_chain_id} but the node at {shown} reports {chain_id}")
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
    # The unsigned transaction and the block it was sent at: what a fee bump or a re-send after a
    # reorg signs again with the same nonce.
    tx: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    sent_block: int = 0


@dataclass(frozen=True)
class Call:
    """One contract call for `ChainClient.send_many`; `gas=None` estimates it."""

    fn: ContractFunction
    description: str
    gas: int | None = None


class BatchSendError(ChainError):
    """Some calls of a `send_many` were refused; `sent` are in flight, `failed` the refused indexes."""

    def __init__(self, message: str, sent: list[PendingTx], failed: list[int]) -> None:
        super().__init__(message)
        self.sent = sent
        self.failed = failed


def _calldata(fn: ContractFunction) -> str:
    """`fn`'s calldata. eth_abi directly (0.05 ms) rather than web3's normalising encoder (0.7 ms,
    most of a 100-call batch's client time); arguments eth_abi does not take as given (ENS names,
    hex strings for bytes, addresses) fall back to web3, so the encoding and checks are web3's."""
    try:
        if fn.kwargs:
            raise TypeError("keyword arguments")
        types = [collapse_if_tuple(dict(i)) for i in fn.abi["inputs"]]
        if any("address" in t for t in types):  # web3 also checks checksums: keep its rules
            raise TypeError("address argument")
        return str(fn.selector) + abi_encode(types, list(fn.args)).hex()
    except Exception:
        return fn._encode_transaction_data()


_DEFAULT_TIP = 10**9  # 1 gwei: the tip for nodes without eth_maxPriorityFeePerGas


def _receipt_fields(raw: Mapping[str, Any]) -> dict[str, Any]:
    """What `ChainClient._result` reads of a raw JSON-RPC receipt (web3's full receipt formatter
    took 0.4 ms each, a tenth of a 100-receipt wait); logs formatted as web3 does, for events."""
    address = raw.get("contractAddress")
    return {"status": int(str(raw["status"]), 16), "blockNumber": int(str(raw["blockNumber"]), 16),
            "blockHash": HexBytes(raw["blockHash"]), "transactionHash": HexBytes(raw["transactionHash"]),
            "gasUsed": int(str(raw["gasUsed"]), 16), "contractAddress": to_checksum_address(address) if address else None,
            "logs": [log_entry_formatter(entry) for entry in raw.get("logs") or []]}


def _rpc_tx(tx: Mapping[str, Any]) -> dict[str, Any]:
    """A transaction dict as JSON-RPC params (hex quantities), for raw batch requests."""
    out: dict[str, Any] = {"from": tx["from"], "data": tx["data"], "value": hex(int(tx.get("value", 0)))}
    if tx.get("to"):
        out["to"] = tx["to"]
    return out


@dataclass(frozen=True)
class TxResult:
    tx_hash: str
    block_number: int
    gas_used: int
    contract_address: str | None
    logs: tuple[Any, ...]


@dataclass(frozen=True)
class FeePolicy:
    """EIP-1559 pricing. `max_fee_wei` caps maxFeePerGas (None: no cap); a transaction not mined
    after `bump_after_blocks` blocks is replaced, same nonce, by one paying `bump_percent` more
    (nodes accept a replacement only from +10 %), or the current market price if that is higher."""

    max_fee_wei: int | None = None
    bump_after_blocks: int = 3
    bump_percent: int = 25


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
        fee_policy: FeePolicy | None = None,
        confirmations: int = 1,
    ) -> None:
        if confirmations < 1:
            raise ChainError(f"confirmations must be >= 1, got {confirmations}")
        self.w3 = w3
        self._account = account
        self.address: str = account.address
        self.chain_id = int(w3.eth.chain_id)
        genesis = w3.eth.get_block(0)["hash"]
        self._nonces = nonce_manager(self.chain_id, HexBytes(genesis).hex(), self.address)
        self.decoder = ErrorDecoder(abi)
        self.receipt_timeout = receipt_timeout
        self.poll_interval = poll_interval
        self.fee_policy = fee_policy or FeePolicy()
        self.confirmations = confirmations
        self._fees: tuple[float, dict[str, int]] | None = None

    def __repr__(self) -> str:  # never show the account (it holds the key)
        return f"ChainClient(chain_id={self.chain_id}, address={self.address})"

    # -- fees

    def fees(self, *, fresh: bool = False) -> dict[str, int]:
        """EIP-1559 fee fields: maxFee = 2 x base fee + tip (survives a few full blocks), capped.

        Cached for 2 s so a burst of pipelined transactions does not ask the node each time.
        """
        now = time.monotonic()
        if self._fees and not fresh and now - self._fees[0] < 2.0:
            return self._fees[1]
        base = int(self.w3.eth.get_block("latest").get("baseFeePerGas") or 0)
        try:
            tip = int(self.w3.eth.max_priority_fee)
        except ChainError:
            raise
        except Exception:  # nodes without eth_maxPriorityFeePerGas
            tip = _DEFAULT_TIP
        return self._priced(base, tip, now)

    def _priced(self, base: int, tip: int, now: float) -> dict[str, int]:
        fees = self._capped({"maxFeePerGas": 2 * base + tip, "maxPriorityFeePerGas": tip})
        self._fees = (now, fees)
        return fees

    def _capped(self, fees: dict[str, int]) -> dict[str, int]:
        cap = self.fee_policy.max_fee_wei
        if cap is None:
            return fees
        return {"maxFeePerGas": min(fees["maxFeePerGas"], cap),
                "maxPriorityFeePerGas": min(fees["maxPriorityFeePerGas"], cap)}

    def _bumped(self, tx: Mapping[str, Any]) -> dict[str, int] | None:
        """Fees for a replacement of `tx`, or None when the cap leaves no room for one."""
        pct = 100 + max(self.fee_policy.bump_percent, 11)
        market = self.fees(fresh=True)
        wanted = {
            "maxFeePerGas": max(int(tx["maxFeePerGas"]) * pct // 100 + 1, market["maxFeePerGas"]),
            "maxPriorityFeePerGas": max(int(tx["maxPriorityFeePerGas"]) * pct // 100 + 1,
                                        market["maxPriorityFeePerGas"]),
        }
        capped = self._capped(wanted)
        # Below +10 % on both fields a node refuses the replacement: no point in sending it.
        if (capped["maxFeePerGas"] * 10 < int(tx["maxFeePerGas"]) * 11
                or capped["maxPriorityFeePerGas"] * 10 < int(tx["maxPriorityFeePerGas"]) * 11):
            return None
        return capped

    # -- calls

    def call(self, fn: ContractFunction, description: str) -> Any:
        """eth_call `fn`; a revert raises TransactionReverted naming `description`."""
        try:
            return fn.call({"from": self.address})
        except (ContractCustomError, ContractLogicError) as exc:
            raise self._reverted(description, exc) from None
        except Web3RPCError as exc:
            raise ChainError(f"{description}: the node refused the call: {_rpc_message(exc)}") from None

    def _reverted(self, description: str, exc: Exception) -> TransactionReverted:
        data = _revert_data(exc)
        if data:
            name, args, text = self.decoder.decode(data)
        else:
            name, args, text = None, (), str(getattr(exc, "message", None) or exc)
        return TransactionReverted(f"{description}: reverted: {text}", name, args)

    # -- sending

    def send(self, fn: ContractFunction | None, description: str, *, data: str | None = None,
             gas: int | None = None, to: str | None = None, value: int = 0) -> PendingTx:
        """Sign and broadcast; returns at once (pipelining). `fn=None` with `data` deploys.

        Gas is estimated first, so a call that would revert raises TransactionReverted before a
        nonce is taken (a taken nonce that never reaches the node would stall later transactions).
        """
        tx: dict[str, Any] = {"from": self.address, "chainId": self.chain_id, "value": value}
        if fn is not None:
            tx["to"] = fn.address
            tx["data"] = fn._encode_transaction_data()
        elif to is not None:  # a plain transfer
            tx["to"] = to_checksum_address(to)
            tx["data"] = "0x"
        else:
            tx["data"] = data
        if gas is None:
            try:
                estimate = int(self.w3.eth.estimate_gas(tx, "pending"))  # type: ignore[arg-type]
            except (ContractCustomError, ContractLogicError) as exc:
                raise self._reverted(description, exc) from None
            except Web3RPCError as exc:
                raise ChainError(f"{description}: gas estimate refused: {_rpc_message(exc)}") from None
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
                ours = HexBytes(signed.hash).to_0x_hex()
                try:
                    self.w3.eth.send_raw_transaction(signed.raw_transaction)
                    return PendingTx(ours, tx["nonce"], description, dict(tx))
                except Web3RPCError as exc:
                    text = _rpc_message(exc).lower()
                    if "already known" in text or ("nonce too low" in text and self._known(ours)):
                        # This very transaction reached the node already: a retried request
                        # whose first answer was lost.
                        return PendingTx(ours, tx["nonce"], description, dict(tx))
                    # The nonce was taken but not used: the node's pending count is the truth now.
                    self._nonces.resync(self.w3, self.address)
                    if attempt < 3 and any(marker in text for marker in _FEE_ERRORS) and "replacement" not in text:
                        log.info("%s: fee below the base fee (%s); repricing", description, text[:120])
                        tx.update(self.fees(fresh=True))
                        continue
                    if any(marker in text for marker in _NONCE_ERRORS) and attempt < 3:
                        log.info("%s: nonce %s rejected (%s); resyncing", description, tx["nonce"], text[:120])
                        continue
                    raise ChainError(f"{description}: the node rejected the transaction: {text}") from None
                except Exception:
                    # Anything else (retries exhausted on a timeout or a dropped connection) may
                    # or may not have reached the node: re-read `pending` rather than leave a gap.
                    self._nonces.resync(self.w3, self.address)
                    raise
        raise ChainError(f"{description}: nonce kept colliding after 4 attempts")


    # -- batched sending (many independent calls: one estimate batch, one broadcast batch)

    def _batch(self, requests_: Sequence[tuple[str, Any]]) -> list[RPCResponse]:
        provider = self.w3.provider
        if isinstance(provider, RetryingHTTPProvider):
            return provider.batch(requests_)
        # Any other provider (a test's): one request each, same answer shape.
        return [provider.make_request(RPCEndpoint(m), p) for m, p in requests_]

    def send_many(self, calls: Sequence[Call]) -> list[PendingTx]:
        """Sign and broadcast independent calls; returns at once, one PendingTx per call, in order.

        Two round trips for any number of calls: every gas estimate in one JSON-RPC batch (with
        the fee inputs, when the 2 s price cache is stale), then
        consecutive nonces from the shared manager, local signing, and every raw transaction in one
        batch. Each call is estimated against the current state, not after the calls before it,
        so the calls must not depend on each other. (Broadcasting in parts, so a block closing
        meanwhile takes the first ones, was measured slower: more blocks, more round trips.)

        Guarantees as `send`: a call that would revert raises TransactionReverted naming it (and
        counting the others that would too) before any nonce is taken; fees follow the fee policy.
        If the node refuses some broadcasts, what it took stays usable: a refused transaction
        whose nonce sits below an accepted one is re-sent at that nonce (repriced), or, if it is
        refused again, the nonce is filled with a 0-value transfer to ourselves so the later ones
        are not stuck behind a gap; refused ones with no accepted nonce above are re-sent through
        `send`. Calls that still fail raise BatchSendError, which carries what was sent. A
        transport failure of the broadcast (retries exhausted) resyncs the nonce, as `send` does.
        """
        if not calls:
            return []
        txs: list[dict[str, Any]] = []
        for c in calls:
            txs.append({"from": self.address, "chainId": self.chain_id, "value": 0,
                        "to": c.fn.address, "data": _calldata(c.fn)})
        to_estimate = [i for i, c in enumerate(calls) if c.gas is None]
        # The fee inputs ride in the same batch when the cached price is stale.
        now = time.monotonic()
        stale = not self._fees or now - self._fees[0] >= 2.0
        pricing: list[tuple[str, Any]] = ([("eth_getBlockByNumber", ["latest", False]), ("eth_maxPriorityFeePerGas", [])]
                                          if stale else [])
        answers = self._batch(pricing + [("eth_estimateGas", [_rpc_tx(txs[i]), "pending"]) for i in to_estimate])
        if stale:
            block, tip_answer = answers[0].get("result"), answers[1].get("result")
            if not isinstance(block, dict):
                raise ChainError(f"{calls[0].description}: the node returned no latest block: {answers[0].get('error')}")
            # Nodes without eth_maxPriorityFeePerGas answer it with an error: 1 gwei, as `fees`.
            tip = int(str(tip_answer), 16) if isinstance(tip_answer, str) else _DEFAULT_TIP
            self._priced(int(str(block.get("baseFeePerGas") or "0x0"), 16), tip, now)
            answers = answers[2:]
        failures: list[tuple[int, dict[str, Any]]] = []
        for i, answer in zip(to_estimate, answers, strict=True):
            error = answer.get("error")
            if isinstance(error, dict):
                failures.append((i, dict(error)))
                continue
            # Same headroom as `send`: state can change between estimate and inclusion.
            txs[i]["gas"] = int(str(answer["result"]), 16) * 3 // 2 + 20_000
        if failures:
            raise self._estimate_failed(calls, failures)
        for c, tx in zip(calls, txs, strict=True):
            if c.gas is not None:
                tx["gas"] = c.gas
        fees = self.fees()
        for tx in txs:
            tx.update(fees)
            tx["type"] = 2
        sent: dict[int, PendingTx] = {}
        refused: dict[int, str] = {}
        with self._nonces.sending():
            hashes: list[str] = []
            raws: list[str] = []
            for tx in txs:
                tx["nonce"] = self._nonces.allocate(self.w3, self.address)
                raw, tx_hash = self._sign(tx)
                hashes.append(tx_hash)
                raws.append(raw)
            try:
                answers = self._batch([("eth_blockNumber", [])] + [("eth_sendRawTransaction", [r]) for r in raws])
            except Exception:
                # Some, all or none reached the node: `pending` is the truth now.
                self._nonces.resync(self.w3, self.address)
                raise
            head_answer = answers[0].get("result")
            head = int(str(head_answer), 16) if head_answer else 0
            for i, answer in enumerate(answers[1:]):
                error = answer.get("error")
                text = str(error.get("message", "")).lower() if isinstance(error, dict) else ""
                if not error or "already known" in text or ("nonce too low" in text and self._known(hashes[i])):
                    sent[i] = PendingTx(hashes[i], txs[i]["nonce"], calls[i].description, dict(txs[i]), head)
                else:
                    refused[i] = text or str(error)
            if refused:
                self._nonces.resync(self.w3, self.address)
                failed = self._repair(calls, txs, sent, refused)
                if failed:
                    shown = "; ".join(f"{calls[i].description}: {t[:120]}" for i, t in sorted(failed.items()))
                    raise BatchSendError(f"{len(failed)} of {len(calls)} transactions refused by the node: {shown}",
                                         [sent[i] for i in sorted(sent)], sorted(failed))
        return [sent[i] for i in range(len(calls))]

    def _sign(self, tx: Mapping[str, Any]) -> tuple[str, str]:
        """(raw transaction, hash), signed by eth-account (libsecp256k1 through coincurve: about
        0.5 ms a transaction, so a 100-call batch signs in ~50 ms)."""
        signed = self._account.sign_transaction(dict(tx))
        return HexBytes(signed.raw_transaction).to_0x_hex(), HexBytes(signed.hash).to_0x_hex()

    def _estimate_failed(self, calls: Sequence[Call], failures: list[tuple[int, dict[str, Any]]]) -> ChainError:
        i, error = failures[0]
        more = f" (and {len(failures) - 1} more of the {len(calls)} calls would fail too)" if len(failures) > 1 else ""
        data = error.get("data")
        if isinstance(data, dict):
            data = data.get("data")
        message = str(error.get("message", ""))
        if (isinstance(data, str) and data.startswith("0x")) or "revert" in message.lower():
            name, args, text = self.decoder.decode(data) if isinstance(data, str) and len(data) > 2 else (None, (), message)
            return TransactionReverted(f"{calls[i].description}: reverted: {text}{more}", name, args)
        return ChainError(f"{calls[i].description}: gas estimate refused: {message}{more}")

    def _repair(self, calls: Sequence[Call], txs: list[dict[str, Any]], sent: dict[int, PendingTx],
                refused: dict[int, str]) -> dict[int, str]:
        """Deal with refused broadcasts of a batch (called holding the nonce manager): the refused
        calls that still failed, with the node's text. Updates `sent`."""
        highest_sent = max((p.nonce for p in sent.values()), default=-1)
        failed: dict[int, str] = {}
        for i in sorted(refused):
            text = refused[i]
            tx = txs[i]
            if any(m in text for m in _NONCE_ERRORS) or tx["nonce"] > highest_sent:
                # The nonce is someone else's, or nothing of ours waits behind it: an ordinary send
                # (own nonce, repricing and nonce retries) is the rerun.
                try:
                    sent[i] = self.send(calls[i].fn, calls[i].description, gas=tx["gas"])
                except ChainError as exc:
                    failed[i] = str(exc)
                continue
            # A gap below accepted transactions: fill it at this very nonce.
            tx.update(self.fees(fresh=True))
            resent = self._send_at_nonce(tx)
            if resent is not None:
                sent[i] = PendingTx(resent, tx["nonce"], calls[i].description, dict(tx))
                continue
            failed[i] = text
            filler = {"from": self.address, "to": self.address, "value": 0, "data": "0x", "gas": 21_000,
                      "chainId": self.chain_id, "type": 2, "nonce": tx["nonce"], **self.fees(fresh=True)}
            if self._send_at_nonce(filler) is not None:
                log.warning("%s: refused by the node (%s); nonce %s filled with a 0-value transfer so the "
                            "later transactions of the batch are mined", calls[i].description, text[:120], tx["nonce"])
            else:
                log.error("%s: refused, and nonce %s could not be filled: later transactions wait for it",
                          calls[i].description, tx["nonce"])
        self._nonces.resync(self.w3, self.address)
        return failed

    def _send_at_nonce(self, tx: dict[str, Any]) -> str | None:
        """Broadcast `tx` as is (its nonce included); its hash, or None if the node refused it."""
        signed = self._account.sign_transaction(tx)
        tx_hash = HexBytes(signed.hash).to_0x_hex()
        try:
            self.w3.eth.send_raw_transaction(signed.raw_transaction)
        except Web3RPCError as exc:
            return tx_hash if "already known" in _rpc_message(exc).lower() else None
        return tx_hash

    def wait_many(self, pending: Sequence[PendingTx]) -> list[TxResult]:
        """`wait` for many: each poll reads the head; when a block arrived (and at the first poll),
        every missing receipt in one JSON-RPC batch.

        Mined and successful at depth 1 resolves in the batch; anything else (a failure to decode,
        deeper confirmations, a transaction to re-send after `bump_after_blocks` blocks) goes
        through `wait`, one at a time. Raises the first failure in order once all are settled.
        """
        results: dict[int, TxResult] = {}
        slow: list[int] = []
        remaining = list(range(len(pending)))
        deadline = time.monotonic() + self.receipt_timeout
        depth = max(self.confirmations, 1)
        first_head: dict[int, int] = {}  # for a transaction sent without its block known
        checked: int | None = None  # the head the receipts were last read at
        while remaining:
            # Receipts only appear with a new block: between blocks, a poll is the head alone.
            head = self._head() if checked is not None else -1
            if head == checked:
                if time.monotonic() > deadline:
                    break
                time.sleep(self.poll_interval)
                continue
            answers = self._batch([("eth_blockNumber", [])]
                                  + [("eth_getTransactionReceipt", [pending[i].tx_hash]) for i in remaining])
            head = checked = int(str(answers[0]["result"]), 16)
            still: list[int] = []
            for i, answer in zip(remaining, answers[1:], strict=True):
                raw = answer.get("result")
                if isinstance(raw, dict):
                    receipt = _receipt_fields(raw)
                    if receipt["status"] == 1 and depth == 1:
                        results[i] = self._result(receipt)
                    else:
                        slow.append(i)
                elif head - (pending[i].sent_block or first_head.setdefault(i, head)) >= self.fee_policy.bump_after_blocks:
                    slow.append(i)  # not mined for a while: `wait` re-sends it with a bumped fee
                else:
                    still.append(i)
            remaining = still
            if remaining and time.monotonic() <= deadline:
                time.sleep(self.poll_interval)
            elif remaining:
                break
        if remaining:
            self._nonces.resync(self.w3, self.address)
            raise ChainError(f"{len(remaining)} of {len(pending)} transactions (first: "
                             f"{pending[remaining[0]].description}) have no receipt after {self.receipt_timeout}s; "
                             "the nonce will be re-read from the node")
        errors: list[ChainError] = []
        for i in sorted(slow):
            try:
                results[i] = self.wait(pending[i])
            except TransactionReverted as exc:
                errors.append(exc)
        if errors:
            raise errors[0]
        return [results[i] for i in range(len(pending))]

    def _head(self) -> int:
        return int(self.w3.eth.block_number)

    def _known(self, tx_hash: str) -> bool:
        try:
            self.w3.eth.get_transaction(HexBytes(tx_hash))
            return True
        except TransactionNotFound:
            return False

    def _receipt(self, tx_hash: str) -> Any | None:
        try:
            return self.w3.eth.get_transaction_receipt(HexBytes(tx_hash))
        except TransactionNotFound:
            return None

    def wait(self, pending: PendingTx, *, confirmations: int | None = None) -> TxResult:
        """Wait until the transaction is `confirmations` blocks deep on the canonical chain.

        Raises TransactionReverted (decoded) if it failed. Meanwhile: one not mined after
        `bump_after_blocks` blocks, or gone from the node (a reorg dropped it, the pool evicted
        it), is signed again with the same nonce and a bumped fee; every hash sent is watched. A
        receipt timeout resyncs the nonce manager, since the nonce may or may not be used.
        """
        depth = max(confirmations or self.confirmations, 1)
        hashes = [pending.tx_hash]
        tx = dict(pending.tx)
        last_sent: int | None = pending.sent_block or None  # the head at the first poll otherwise
        deadline = time.monotonic() + self.receipt_timeout
        while True:
            receipt = next((r for h in reversed(hashes) if (r := self._receipt(h)) is not None), None)
            if receipt is not None:
                if receipt["status"] != 1:
                    raise self._explain_failure(pending, receipt)
                if depth == 1:  # a receipt the node serves is on its canonical chain
                    return self._result(receipt)
                mined = int(receipt["blockNumber"])
                if self._head() - mined + 1 >= depth:
                    canonical = self.w3.eth.get_block(mined)["hash"]
                    if HexBytes(canonical) == HexBytes(receipt["blockHash"]):
                        return self._result(receipt)
                    continue  # reorged out between the two reads: look again
            elif time.monotonic() > deadline:
                self._nonces.resync(self.w3, self.address)
                raise ChainError(
                    f"{pending.description}: no receipt for {', '.join(hashes)} after {self.receipt_timeout}s "
                    f"(nonce {pending.nonce}); the nonce will be re-read from the node"
                )
            elif tx:
                head = self._head()
                if last_sent is None:
                    last_sent = head
                if head - last_sent >= self.fee_policy.bump_after_blocks or not any(self._known(h) for h in hashes):
                    sent = self._replace(pending, tx)
                    if sent is not None:
                        hashes.append(sent)
                    last_sent = head
            time.sleep(self.poll_interval)

    def _replace(self, pending: PendingTx, tx: dict[str, Any]) -> str | None:
        """Sign `tx` again with its nonce and a bumped fee; the new hash, or None if not sent."""
        fees = self._bumped(tx)
        if fees is None:
            log.warning("%s: nonce %s still pending and the fee cap (%s wei) leaves no room for a bump; waiting",
                        pending.description, pending.nonce, self.fee_policy.max_fee_wei)
            return None
        tx.update(fees)
        signed = self._account.sign_transaction(tx)
        new_hash = HexBytes(signed.hash).to_0x_hex()
        try:
            self.w3.eth.send_raw_transaction(signed.raw_transaction)
        except Web3RPCError as exc:
            text = _rpc_message(exc).lower()
            if "already known" in text:
                return new_hash
            # "nonce too low": one of our versions was mined meanwhile; the loop finds its receipt.
            log.info("%s: replacement of nonce %s not accepted (%s)", pending.description, pending.nonce, text[:120])
            return None
        log.warning("%s: nonce %s not mined; re-sent as %s with maxFeePerGas %s", pending.description,
                    pending.nonce, new_hash, fees["maxFeePerGas"])
        return new_hash

    def _result(self, receipt: Any) -> TxResult:
        address = receipt.get("contractAddress")
        return TxResult(
            tx_hash=HexBytes(receipt["transactionHash"]).to_0x_hex(),
            block_number=int(receipt["blockNumber"]),
            gas_used=int(receipt["gasUsed"]),
            contract_address=to_checksum_address(address) if address else None,
            logs=tuple(receipt["logs"]),
        )

    def transact(self, fn: ContractFunction, description: str, *, gas: int | None = None) -> TxResult:
        """send + wait."""
        return self.wait(self.send(fn, description, gas=gas))

    def transfer(self, to: str, value_wei: int, description: str) -> TxResult:
        """Send `value_wei` to `to` (funding a delegate key) and wait for it."""
        return self.wait(self.send(None, description, to=to, value=value_wei))

    def balance(self, address: str) -> int:
        return int(self.w3.eth.get_balance(to_checksum_address(address)))

    def deploy(self, abi: Sequence[dict[str, Any]], bytecode: str, description: str) -> TxResult:
        """Deploy a contract whose constructor takes no arguments (its creation code is the data)."""
        del abi  # kept in the signature so callers state which contract they deploy
        return self.wait(self.send(None, description, data=bytecode))

    def _explain_failure(self, pending: PendingTx, receipt: Any) -> TransactionReverted:
        # Receipts carry no revert data: replay the transaction as a call to recover it. First on
        # the block that included it (same timestamp, and a reverted tx changed no contract state),
        # then on the block before (in case a later tx in the same block changed the state).
        tx_hash = HexBytes(receipt["transactionHash"]).to_0x_hex()  # a replacement may be the one mined
        tx = self.w3.eth.get_transaction(HexBytes(tx_hash))
        replay = {"from": tx["from"], "to": tx.get("to"), "data": tx["input"], "gas": tx["gas"]}
        for block in (receipt["blockNumber"], receipt["blockNumber"] - 1):
            try:
                self.w3.eth.call(replay, block)  # type: ignore[arg-type]
            except (ContractCustomError, ContractLogicError) as exc:
                return self._reverted(pending.description, exc)
            except Exception:
                continue
        if receipt["gasUsed"] >= tx["gas"]:
            return TransactionReverted(f"{pending.description}: ran out of gas ({tx['gas']}) in {tx_hash}")
        return TransactionReverted(f"{pending.description}: transaction {tx_hash} reverted")



def _rpc_message(exc: Web3RPCError) -> str:
    """The node's error text (web3 puts the whole response dict into str(exc))."""
    message = getattr(exc, "rpc_response", None)
    if isinstance(message, dict) and isinstance(message.get("error"), dict):
        return str(message["error"].get("message", ""))
    return str(exc)
