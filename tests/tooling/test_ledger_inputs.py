"""What the program records in the deployment ledger is what `edgefabric audit` recomputes.

The program under mocks (tooling.render) registers the local stack; its DeploymentRecord must
carry the hash of every resource registered (none after it, or the audit of a deployed stack
would always fail) and the hash `audit` computes from the stack file, in preview and in up.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edgefabric.chain.ledger import config_hash, graph_hash
from edgefabric.config.loading import load_config, raw_from_stack_file
from tooling.audit import RECORD
from tooling.render import render_stack_file

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("preview", [False, True], ids=["up", "preview"])
def test_the_record_hashes_the_whole_graph_and_the_audited_config(preview: bool) -> None:
    path = REPO / "Pulumi.local.yaml"
    rendered = render_stack_file(path, preview=preview)
    [record] = rendered.of_type(RECORD)
    pairs = [(r.type, r.name) for r in rendered.resources]
    assert record.inputs["graph_hash"] == graph_hash(pairs, exclude_types=(RECORD,))
    # Not a constant: the graph hash sees the resources (one fewer, another hash).
    ledger_contract = ("pulumi-python:dynamic/ledger:LedgerContract", "ledger-contract")
    assert ledger_contract in pairs
    assert record.inputs["graph_hash"] != graph_hash([p for p in pairs if p != ledger_contract],
                                                     exclude_types=(RECORD,))
    raw = raw_from_stack_file(path)
    raw.setdefault("environment", rendered.stack)
    assert record.inputs["config_hash"] == config_hash(load_config(raw))
    assert record.inputs["stack"] == rendered.stack
    assert len(record.inputs["commit"]) == 42
