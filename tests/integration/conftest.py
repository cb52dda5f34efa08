"""Real local services for the failover tests, started here and stopped after.

- pdns: a real pdns_server (sqlite3, LUA records) on free loopback ports;
- elb_names: A records in pdns's zone standing in for AWS load balancers' hostnames;
- endpoints: the three loopback ingress stand-ins (127.0.1.1-3, one port);
- moto: `moto_server` on a free loopback port, for Route53 over HTTP;
- azure_fake / gcp_fake: schema-validating fakes; any violation a test did not
  expect fails it at teardown.
"""

from __future__ import annotations

import collections
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dns.resolver
import pytest
from web3 import Web3

from devenv.anvil import AnvilProcess, start_anvil
from devenv.endpoints import DEFAULT_IPS, LocalEndpoints, free_common_port
from devenv.powerdns import PowerDnsServer, PowerDnsSettings, free_port, start_powerdns
from edgefabric.chain.client import ChainClient, connect, load_account
from edgefabric.chain.registry import Registry, load_artifact
from edgefabric.traffic.dns.http import json_request
from tests.fakes import azure_tm, gcp_dns
from tests.kits.registry import Deployed

ZONE = "edgefabric.test."
RECORD = "api.edgefabric.test."
GCP_PROJECT = "edgefabric-test"
GCP_ZONE = "edge-zone"
AZ_SUB = "00000000-0000-0000-0000-000000000000"


@pytest.fixture(scope="session")
def pdns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PowerDnsServer]:
    server = start_powerdns(PowerDnsSettings(data_dir=tmp_path_factory.mktemp("pdns"), zone=ZONE))
    yield server
    server.stop()


@pytest.fixture
def endpoints(tmp_path: Path) -> Iterator[LocalEndpoints]:
    eps = LocalEndpoints(tmp_path / "endpoints", free_common_port(DEFAULT_IPS.values()))
    eps.start_all()
    yield eps
    eps.stop_all()


def resolver_for(server: PowerDnsServer) -> dns.resolver.Resolver:
    return server.resolver()


class ElbNames:
    """A-record names in the PowerDNS zone standing in for the hostnames AWS load balancers
    report (`<name>.elb.<zone>`): `add` publishes one, `set` changes its addresses, `drop`
    makes it stop resolving. `resolver` is what FailoverSpec.resolver takes."""

    def __init__(self, server: PowerDnsServer) -> None:
        self.server = server
        self.resolver = f"127.0.0.1:{server.dns_port}"
        self.names: list[str] = []

    def _patch(self, rrset: dict[str, object]) -> None:
        zone_url = f"{self.server.api_url}/api/v1/servers/localhost/zones/{ZONE}"
        json_request("PATCH", zone_url, {"X-API-Key": self.server.api_key}, {"rrsets": [rrset]})

    def add(self, label: str, addresses: list[str]) -> str:
        name = f"{label}-{time.monotonic_ns():x}.elb.{ZONE}".rstrip(".")
        self.names.append(name)
        self.set(name, addresses)
        return name

    def set(self, name: str, addresses: list[str]) -> None:
        self._patch({"name": name + ".", "type": "A", "ttl": 1, "changetype": "REPLACE",
                     "records": [{"content": a, "disabled": False} for a in addresses]})  # fmt: skip

    def drop(self, name: str) -> None:
        self._patch({"name": name + ".", "type": "A", "changetype": "DELETE"})


@pytest.fixture
def elb_names(pdns: PowerDnsServer) -> Iterator[ElbNames]:
    names = ElbNames(pdns)
    yield names
    for name in names.names:
        names.drop(name)


def answer_counts(server: PowerDnsServer, name: str, n: int) -> collections.Counter[str]:
    r = resolver_for(server)
    counts: collections.Counter[str] = collections.Counter()
    for _ in range(n):
        answer = r.resolve(name, "A")
        assert len(answer) >= 1, "empty answer set"
        for rdata in answer:
            counts[rdata.address] += 1
    return counts


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    port = free_port()
    binary = Path(sys.executable).parent / "moto_server"
    if not binary.exists():
        pytest.fail(f"moto_server not found at {binary}; install requirements.txt (moto[server])")
    proc = subprocess.Popen([str(binary), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail("moto_server did not start")
            time.sleep(0.1)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def aws_env(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing-key-id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret-key")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    # boto3 reads the service-specific variable (service id "Route 53") and the global one.
    monkeypatch.setenv("AWS_ENDPOINT_URL_ROUTE_53", moto_url)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    return moto_url


@pytest.fixture
def hosted_zone(aws_env: str) -> str:
    import boto3

    client = boto3.client("route53", endpoint_url=aws_env)
    # A fresh zone per test keeps tests independent on the shared moto server.
    zone = client.create_hosted_zone(Name=ZONE, CallerReference=f"t-{time.monotonic_ns()}")
    return zone["HostedZone"]["Id"].rsplit("/", 1)[-1]


@pytest.fixture
def azure_fake() -> Iterator[azure_tm.FakeTrafficManager]:
    fake = azure_tm.start()
    yield fake
    fake.stop()
    assert fake.violations == [], f"Traffic Manager schema violations: {fake.violations}"


@pytest.fixture
def gcp_fake() -> Iterator[gcp_dns.FakeCloudDns]:
    fake = gcp_dns.start({(GCP_PROJECT, GCP_ZONE): ZONE})
    yield fake
    fake.stop()
    assert fake.violations == [], f"Cloud DNS schema violations: {fake.violations}"


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # Loopback only: never let a proxy setting route test traffic elsewhere.
    for key in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")


# ---- the chain: one anvil per session, a fresh registry per test


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
