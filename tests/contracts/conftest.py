"""Fixtures for the contract tests: one anvil per session, a fresh registry per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from registry_testkit import Deployed
from web3 import Web3

from devenv.anvil import AnvilProcess, start_anvil
from providers.chain import ChainClient, connect, load_account
from providers.registry_client import Registry, load_artifact


@pytest.fixture(scope="session")
def anvil() -> Iterator[AnvilProcess]:
    with start_anvil() as node:
        yield node


@pytest.fixture(scope="session")
def w3(anvil: AnvilProcess) -> Web3:
    return connect(anvil.rpc_url, expected_chain_id=anvil.chain_id)


def _registry(w3: Web3, key: str, address: str) -> Registry:
    return Registry(ChainClient(w3, load_account(key), abi=load_artifact()["abi"]), address)


@pytest.fixture
def reg(anvil: AnvilProcess, w3: Web3) -> Deployed:
    artifact = load_artifact()
    client = ChainClient(w3, load_account(anvil.private_keys[0]), abi=artifact["abi"])
    address = client.deploy(artifact["abi"], artifact["bytecode"], "deploy ServiceRegistry").contract_address
    assert address is not None
    return Deployed(
        address=address,
        owner=Registry(client, address),
        other=_registry(w3, anvil.private_keys[1], address),
        third=_registry(w3, anvil.private_keys[2], address),
        w3=w3,
    )
