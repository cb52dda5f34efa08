"""Audit a stack against its deployment ledger: print the history, check the last entry.

    edgefabric audit --stack local [--stack-file Pulumi.local.yaml] [--state export.json]

The history comes from the ledger's `Recorded` events (never from the Pulumi state). The
deployed state is then checked against the last entry; the exit code is 1 on any mismatch:
- the contract's latest-entry slot matches the last event (the history is complete);
- the state's DeploymentRecord is that last entry (nothing recorded outside this state);
- the typed config in the stack file hashes to the entry's config hash (no config change
  since the last `up`);
- the resource graph of the state hashes to the entry's graph hash.
The git commit is reported, not checked: auditing from another checkout is normal.
The state is `pulumi stack export --stack S` (run in the project) unless `--state` names an
export; the RPC URL is the stack's `registry.rpcUrl`/`rpcUrlRef` unless `--rpc-url` is given.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edgefabric.chain.client import ChainClient, ChainError, connect, load_account
from edgefabric.chain.ledger import (
    Ledger,
    config_hash,
    git_commit,
    graph_hash,
    graph_of_state,
    load_ledger_artifact,
)
from edgefabric.config.loading import load_config, raw_from_stack_file
from edgefabric.errors import ConfigError
from edgefabric.secrets import resolve

LEDGER_CONTRACT = "pulumi-python:dynamic/ledger:LedgerContract"
RECORD = "pulumi-python:dynamic/ledger:DeploymentRecord"
# Reads need no real key: a fixed throwaway signer (never funded, never sends).
_READ_ONLY_KEY = "0x" + "11" * 32


@dataclass(frozen=True)
class Finding:
    ok: bool
    what: str


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stack", required=True, help="the stack to audit")
    parser.add_argument("--stack-file", type=Path, help="its stack file (default: Pulumi.<stack>.yaml here)")
    parser.add_argument("--state", type=Path, help="a `pulumi stack export` JSON (default: run the export)")
    parser.add_argument("--rpc-url", help="the chain's RPC URL (default: from the stack file)")


def _export(stack: str, state: Path | None) -> dict[str, Any]:
    if state is not None:
        return dict(json.loads(state.read_text()))
    proc = subprocess.run(["pulumi", "stack", "export", "--stack", stack], capture_output=True, text=True,
                          check=False, timeout=300)
    if proc.returncode != 0:
        raise ChainError(f"pulumi stack export --stack {stack} failed: {proc.stderr.strip()[-2000:]}")
    return dict(json.loads(proc.stdout))


def _one(export: Mapping[str, Any], type_token: str) -> dict[str, Any] | None:
    found = [r for r in export.get("deployment", {}).get("resources", []) or [] if r.get("type") == type_token]
    return dict(found[0]) if len(found) == 1 else None


def audit(stack: str, stack_file: Path, export: Mapping[str, Any], rpc_url: str | None = None,
          out: Any = sys.stdout) -> list[Finding]:
    """Print the history and return the checks (all `ok` when the state matches the last entry)."""
    raw = raw_from_stack_file(stack_file)
    raw.setdefault("environment", stack)  # what the program does for an unset environment
    cfg = load_config(raw)
    if cfg.registry is None or not cfg.registry.enabled:
        return [Finding(False, f"{stack_file}: the registry is disabled, so the stack has no ledger")]
    contract, record = _one(export, LEDGER_CONTRACT), _one(export, RECORD)
    if contract is None or record is None:
        return [Finding(False, "the state holds no LedgerContract and DeploymentRecord: never deployed with a ledger")]
    url = rpc_url or (str(resolve(cfg.registry.rpc_url_ref, "registry.rpcUrlRef"))
                      if cfg.registry.rpc_url_ref else str(cfg.registry.rpc_url))
    w3 = connect(url, expected_chain_id=cfg.registry.chain_id)
    ledger = Ledger(ChainClient(w3, load_account(_READ_ONLY_KEY), abi=load_ledger_artifact()["abi"]),
                    str(contract["outputs"]["address"]))
    history = ledger.history(stack, from_block=int(contract["outputs"].get("block_number") or 0))
    print(f"ledger {ledger.address} on chain {cfg.registry.chain_id}: {len(history)} entries for {stack}", file=out)
    for e in history:
        when = datetime.fromtimestamp(e.time, UTC).isoformat(timespec="seconds")
        print(f"  #{e.seq} {when} block {e.block_number} by {e.deployer} commit {e.commit[2:14]} "
              f"config {e.config_hash[2:14]} graph {e.graph_hash[2:14]} tx {e.tx_hash}", file=out)
    if not history:
        return [Finding(False, f"no ledger entry for {stack}")]
    last = history[-1]
    latest = ledger.latest(stack)
    outs = record["outputs"]
    here = git_commit(stack_file.resolve().parent)
    findings = [
        Finding(latest.count == len(history) and latest.entry_hash == last.hash,
                f"the contract's latest entry (#{latest.count - 1}) is the last event (#{last.seq})"),
        Finding(outs.get("entry_hash") == last.hash and int(outs.get("seq", -1)) == last.seq,
                f"the state's DeploymentRecord is entry #{outs.get('seq')}, the last one is #{last.seq}"),
        Finding(config_hash(cfg) == last.config_hash,
                f"the config in {stack_file.name} hashes to {config_hash(cfg)[:14]}, "
                f"entry #{last.seq} recorded {last.config_hash[:14]}"),
        Finding(graph_hash(graph_of_state(export), exclude_types=(RECORD,)) == last.graph_hash,
                f"the deployed resource graph hashes to "
                f"{graph_hash(graph_of_state(export), exclude_types=(RECORD,))[:14]}, "
                f"entry #{last.seq} recorded {last.graph_hash[:14]}"),
    ]
    print(f"  (this checkout is at {here[2:14]}; entry #{last.seq} was deployed from {last.commit[2:14]})", file=out)
    return findings


def run(args: argparse.Namespace) -> int:
    stack_file = args.stack_file or Path(f"Pulumi.{args.stack}.yaml")
    try:
        findings = audit(args.stack, stack_file, _export(args.stack, args.state), args.rpc_url)
    except (ChainError, ConfigError, OSError, ValueError) as exc:
        print(f"audit failed: {exc}", file=sys.stderr)
        return 2
    for f in findings:
        print(f"{'ok  ' if f.ok else 'FAIL'} {f.what}")
    bad = [f for f in findings if not f.ok]
    print("audit passed" if not bad else f"audit failed: {len(bad)} mismatch(es) with the ledger")
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edgefabric audit", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
