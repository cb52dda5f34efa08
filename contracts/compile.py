"""Compile the contracts with the pinned solc-js and write contracts/build/<Name>.json.

Usage: python contracts/compile.py [--check]
  --check  recompile and exit 1 if the committed artifact differs (used by CI and the tests).

The compiler is the exact solc-js version pinned in contracts/package.json (installed by
`npm ci` in contracts/), driven through its standard-JSON interface so every setting that
affects the bytecode is explicit and recorded in the artifact.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

CONTRACTS_DIR = Path(__file__).resolve().parent
SOURCE_NAME = "ServiceRegistry.sol"
CONTRACT_NAME = "ServiceRegistry"
ARTIFACT_PATH = CONTRACTS_DIR / "build" / f"{CONTRACT_NAME}.json"
# Every contract built here: (source file, contract name). Each gets its own artifact.
CONTRACTS = ((SOURCE_NAME, CONTRACT_NAME), ("DeploymentLedger.sol", "DeploymentLedger"))
SOLCJS = CONTRACTS_DIR / "node_modules" / ".bin" / "solcjs"

# Every setting that changes the bytecode lives here and is copied into the artifact.
# cancun: supported by every chain we target (anvil, mainnet-like L1/L2s); no need for newer opcodes.
SETTINGS: dict[str, Any] = {
    "optimizer": {"enabled": True, "runs": 200},
    "evmVersion": "cancun",
    "viaIR": False,
    "outputSelection": {"*": {"*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"]}},
}


class CompileError(RuntimeError):
    """solc reported errors, or the toolchain is missing."""


def _parse_solcjs_output(raw: str) -> dict[str, Any]:
    # solcjs prints a non-JSON banner line (e.g. ">>> Cannot retry compilation ...") before
    # the JSON document on some versions; the document starts at the first '{' of a line.
    for i, line in enumerate(raw.splitlines()):
        if line.lstrip().startswith("{"):
            return json.loads("\n".join(raw.splitlines()[i:]))
    raise CompileError(f"solcjs produced no JSON output: {raw[:500]!r}")


def compile_registry() -> dict[str, Any]:
    """Compile ServiceRegistry and return the artifact dict (not written to disk)."""
    return compile_contract(SOURCE_NAME, CONTRACT_NAME)


def artifact_path(contract_name: str) -> Path:
    return CONTRACTS_DIR / "build" / f"{contract_name}.json"


def compile_contract(source_name: str, contract_name: str) -> dict[str, Any]:
    """Compile one contract and return its artifact dict (not written to disk)."""
    if not SOLCJS.exists():
        raise CompileError(f"{SOLCJS} not found: run `npm ci` in {CONTRACTS_DIR} (or `make contracts`)")
    source = (CONTRACTS_DIR / source_name).read_text(encoding="utf-8")
    request = {"language": "Solidity", "sources": {source_name: {"content": source}}, "settings": SETTINGS}
    proc = subprocess.run(
        [str(SOLCJS), "--standard-json"],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        cwd=CONTRACTS_DIR,
        timeout=300,
        check=False,
    )
    if proc.returncode != 0:
        raise CompileError(f"solcjs exited {proc.returncode}: {proc.stderr.strip()[:2000]}")
    output = _parse_solcjs_output(proc.stdout)
    errors = [e for e in output.get("errors", []) if e.get("severity") == "error"]
    if errors:
        raise CompileError("\n".join(e.get("formattedMessage", e.get("message", "")) for e in errors))
    contract = output["contracts"][source_name][contract_name]
    version = subprocess.run(
        [str(SOLCJS), "--version"], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()
    return {
        "contractName": contract_name,
        "sourceName": source_name,
        "sourceSha256": hashlib.sha256(source.encode("utf-8")).hexdigest(),
        "compiler": {"name": "solc-js", "version": version},
        "settings": {k: v for k, v in SETTINGS.items() if k != "outputSelection"},
        "abi": contract["abi"],
        "bytecode": "0x" + contract["evm"]["bytecode"]["object"],
        "deployedBytecode": "0x" + contract["evm"]["deployedBytecode"]["object"],
    }


def render(artifact: dict[str, Any]) -> str:
    """Deterministic text of an artifact, so the staleness check is a plain string compare."""
    return json.dumps(artifact, indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the committed artifact is stale")
    args = parser.parse_args(argv)
    stale = 0
    for source_name, contract_name in CONTRACTS:
        text = render(compile_contract(source_name, contract_name))
        path = artifact_path(contract_name)
        if args.check:
            current = path.read_text(encoding="utf-8") if path.exists() else ""
            if current != text:
                print(f"{path} is stale: run `make contracts` and commit it", file=sys.stderr)
                stale += 1
            else:
                print(f"{path} is up to date")
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
