"""Fixtures of the chain tests: one anvil per test module, and a ServiceRegistry deployed on it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devenv.anvil import AnvilProcess, start_anvil
from edgefabric.chain.client import ChainClient, connect, load_account
from edgefabric.chain.registry import load_artifact


@pytest.fixture(scope="module")
def anvil() -> Iterator[AnvilProcess]:
    with start_anvil() as node:
        yield node


@pytest.fixture(scope="module")
def contract(anvil: AnvilProcess) -> str:
    """The registry's address, deployed by anvil's first account."""
    art = load_artifact()
    client = ChainClient(connect(anvil.rpc_url), load_account(anvil.private_keys[0]), abi=art["abi"])
    address = client.deploy(art["abi"], art["bytecode"], "deploy").contract_address
    assert address is not None
    return address
