"""BlockchainRegistry under Pulumi mocks: children, outputs, the key's secrecy, the agent shape."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pytest
from pulumi.runtime import mocks as pmocks

from edgefabric.config import RegistryConfig
from edgefabric.tiers.labels import K8S_LABEL_KEYS

KEY = "0x" + "ab" * 32
DELEGATE_KEY = "0x" + "cd" * 32
SECRET_SIG_KEY, SECRET_SIG = "4dabf18193072939515e22adb298388d", "1b47061264138c4ac30d75fd1eb44270"


class Mocks(pmocks.Mocks):
    def __init__(self) -> None:
        self.created: list[pmocks.MockResourceArgs] = []

    def new_resource(self, args: pmocks.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        self.created.append(args)
        out = dict(args.inputs)
        if args.typ.endswith("registry:RegistryContract"):
            out |= {"address": "0x" + "12" * 20, "chain_id": args.inputs["chain_id"]}
        if args.typ.endswith("registry:ServiceRegistration"):
            out |= {"service_id": "0x" + format(len(self.created), "064x")}
        if args.typ.endswith("registry:HeartbeatDelegate"):  # what the provider's create returns
            out |= {"address": "0x" + "de" * 20, "private_key": DELEGATE_KEY}
        return f"{args.name}-id", out

    def call(self, args: pmocks.MockCallArgs) -> dict[str, Any]:
        return {}


@pytest.fixture
def mocks() -> Iterator[Mocks]:
    m = Mocks()
    pulumi.runtime.set_mocks(m, project="edgefabric", stack="unit", preview=False)
    # What `config:deployerKey` names: the Pulumi secret edgefabric:deployerKey.
    pulumi.runtime.set_all_config({"edgefabric:deployerKey": KEY}, secret_keys=["edgefabric:deployerKey"])
    yield m
    pulumi.runtime.set_all_config({})


def _cfg(**over: Any) -> RegistryConfig:
    return RegistryConfig.model_validate({
        "rpcUrl": "http://127.0.0.1:8545", "chainId": 31337, "deployerKeyRef": "config:deployerKey",
        "serviceTtlS": 300, "heartbeatIntervalS": 60, "agentImage": "ghcr.io/edgefabric/heartbeat-agent:0.1.0",
    } | over)


def test_registry_children_outputs_and_agent(mocks: Mocks) -> None:
    from edgefabric.tiers.registry import BlockchainRegistry, BlockchainRegistryArgs, ServiceSpec

    outputs: list[Any] = []

    @pulumi.runtime.test
    def build() -> Any:
        return _build_and_collect(outputs)

    def _build_and_collect(sink: list[Any]) -> Any:
        provider = k8s.Provider("aws-k8s", kubeconfig="{}")
        # The `config:` reference is resolved by the component itself, as a secret.
        reg = BlockchainRegistry("registry", BlockchainRegistryArgs(
            registry=_cfg(),
            services=[ServiceSpec("api-gateway", "1.0.0", pulumi.Output.from_input(["https://203.0.113.10"]), "{}"),
                      ServiceSpec("analytics", "1.0.0", ["https://203.0.113.11"])],
            environment="dev", k8s_providers={"aws": provider},
        ))

        return pulumi.Output.all(reg.contract_address, *reg.service_ids.values()).apply(sink.extend)

    def check(values: list[Any]) -> None:
        address, ids = values[0], values[1:]
        assert address == "0x" + "12" * 20
        assert all(i.startswith("0x") and len(i) == 66 for i in ids)
        by_type: dict[str, list[pmocks.MockResourceArgs]] = {}
        for r in mocks.created:
            by_type.setdefault(r.typ, []).append(r)
        assert len(by_type["pulumi-python:dynamic/registry:RegistryContract"]) == 1
        regs = by_type["pulumi-python:dynamic/registry:ServiceRegistration"]
        assert sorted(r.inputs["name"] for r in regs) == ["analytics", "api-gateway"]
        assert all(r.inputs["ttl"] == 300 and r.inputs["deployer_key_ref"] == "config:deployerKey" for r in regs)
        dep = by_type["kubernetes:apps/v1:Deployment"][0].inputs
        c = dep["spec"]["template"]["spec"]["containers"][0]
        assert c["image"] == "ghcr.io/edgefabric/heartbeat-agent:0.1.0"
        assert c["resources"]["requests"].keys() >= {"cpu", "memory"} and c["resources"]["limits"]
        assert "livenessProbe" in c and "readinessProbe" in c
        assert c["securityContext"]["privileged"] is False
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert env["EDGEFABRIC_HEARTBEAT_INTERVAL_S"] == "60"  # registry.heartbeatIntervalS, not ttl / 3
        assert env["EDGEFABRIC_METRICS_PORT"] == "9464"
        assert env["EDGEFABRIC_SERVICE_IDS"] == ",".join(sorted(ids, key=ids.index))
        assert "EDGEFABRIC_DEPLOYER_KEY" not in env  # the key comes from the Secret file
        assert "EDGEFABRIC_CONFIG_HASH" not in env  # no ledger given: no config check
        assert set(K8S_LABEL_KEYS) <= dep["metadata"]["labels"].keys()
        assert dep["metadata"]["labels"]["edgefabric.io/tier"] == "registry"
        secret = by_type["kubernetes:core/v1:Secret"][0].inputs
        # stringData travels as a secret (the engine encrypts it in state)
        assert secret["stringData"][SECRET_SIG_KEY] == SECRET_SIG
        # The cluster gets its own heartbeat key, never the owner's.
        assert secret["stringData"]["value"] == {"heartbeat-key": DELEGATE_KEY}
        assert KEY not in repr(secret) and KEY not in repr(dep)
        [delegate] = by_type["pulumi-python:dynamic/registry:HeartbeatDelegate"]
        assert delegate.inputs["funding_wei"] == 10**16 and delegate.inputs["rotation"] == "1"
        assert delegate.inputs["service_ids"] == ids and delegate.inputs["deployer_key_ref"] == "config:deployerKey"

    build()  # returns once every registration (including those waiting on outputs) is done
    check(outputs)



def test_env_reference_keeps_the_key_out_of_the_program(mocks: Mocks) -> None:
    from edgefabric.tiers.registry import BlockchainRegistry, BlockchainRegistryArgs, ServiceSpec

    @pulumi.runtime.test
    def build() -> Any:
        reg = BlockchainRegistry("registry", BlockchainRegistryArgs(
            registry=_cfg(deployerKeyRef="env:EDGEFABRIC_DEPLOYER_KEY"),
            services=[ServiceSpec("api-gateway", "1.0.0", ["https://e"])], environment="local"))
        return reg.service_ids["api-gateway"]

    build()
    dynamic = [r for r in mocks.created if r.typ.startswith("pulumi-python:dynamic/registry:")]
    assert len(dynamic) == 2
    for r in dynamic:
        assert r.inputs.get("deployer_key") is None
        assert r.inputs["deployer_key_ref"] == "env:EDGEFABRIC_DEPLOYER_KEY"
    assert not any(r.typ.startswith("kubernetes:") for r in mocks.created)  # no clusters given


@pytest.mark.parametrize("ref", ["config:deployerKey", "env:EDGEFABRIC_DEPLOYER_KEY"])
def test_a_preview_needs_no_deployer_key_and_an_up_names_it(ref: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Preview: the key is unknown (nothing is signed at preview), the agent still renders.
    Up with a `config:` key: the ConfigError names registry.deployerKeyRef before anything is
    registered."""
    from edgefabric.errors import ConfigError
    from edgefabric.tiers.registry import BlockchainRegistry, BlockchainRegistryArgs, ServiceSpec

    monkeypatch.delenv("EDGEFABRIC_DEPLOYER_KEY", raising=False)
    monkeypatch.delenv("EDGEFABRIC_SECRET_DEPLOYERKEY", raising=False)
    provider = k8s.Provider("aws", kubeconfig="{}")  # registered under the mocks set below

    def args() -> Any:
        return BlockchainRegistryArgs(registry=_cfg(deployerKeyRef=ref), environment="local",
                                      services=[ServiceSpec("api-gateway", "1.0.0", ["https://e"])],
                                      k8s_providers={"aws": provider})

    for preview in (True, False):
        m = Mocks()
        pulumi.runtime.set_mocks(m, project="edgefabric", stack="unit", preview=preview)
        pulumi.runtime.set_all_config({})

        @pulumi.runtime.test
        def build() -> Any:
            return BlockchainRegistry("registry", args()).service_ids["api-gateway"]

        if preview or ref.startswith("env:"):
            # An `env:` key never enters the program at all (the agents get their own delegate
            # keys); at up, the provider reads it and stops at the first create without it.
            build()
            assert any(r.typ == "kubernetes:apps/v1:Deployment" for r in m.created)
            secret = next(r for r in m.created if r.typ == "kubernetes:core/v1:Secret")
            assert KEY not in repr(secret.inputs)
        else:
            with pytest.raises(ConfigError, match=r"registry\.deployerKeyRef"):
                build()
            assert not any(r.typ.startswith("pulumi-python:dynamic/registry:") for r in m.created)


def test_rpc_url_ref_keeps_a_keyed_url_secret(mocks: Mocks) -> None:
    """registry.rpcUrlRef: the URL (a hosted node's, with its API key) reaches the dynamic
    resources as a secret and the agent through its Secret, never a plain pod field."""
    from edgefabric.tiers.registry import BlockchainRegistry, BlockchainRegistryArgs, ServiceSpec

    url = "https://polygon-mainnet.example.io/v3/0123456789abcdef0123456789abcdef"
    pulumi.runtime.set_all_config({"edgefabric:deployerKey": KEY, "edgefabric:rpcUrl": url},
                                  secret_keys=["edgefabric:deployerKey", "edgefabric:rpcUrl"])

    @pulumi.runtime.test
    def build() -> Any:
        reg = BlockchainRegistry("registry", BlockchainRegistryArgs(
            registry=_cfg(rpcUrl=None, rpcUrlRef="config:rpcUrl"), environment="dev",
            services=[ServiceSpec("api-gateway", "1.0.0", ["https://e"])],
            k8s_providers={"aws": k8s.Provider("aws-k8s", kubeconfig="{}")}))
        return reg.service_ids["api-gateway"]

    build()
    dynamic = [r for r in mocks.created if r.typ.startswith("pulumi-python:dynamic/registry:")]
    assert len(dynamic) == 3
    for r in dynamic:
        assert r.inputs["rpc_url"] == {SECRET_SIG_KEY: SECRET_SIG, "value": url}, r.typ
    secret = next(r for r in mocks.created if r.typ == "kubernetes:core/v1:Secret").inputs
    assert secret["stringData"]["value"]["rpc-url"] == url
    dep = next(r for r in mocks.created if r.typ == "kubernetes:apps/v1:Deployment").inputs
    env = {e["name"]: e for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "value" not in env["EDGEFABRIC_RPC_URL"]
    assert env["EDGEFABRIC_RPC_URL"]["valueFrom"]["secretKeyRef"]["key"] == "rpc-url"
    assert url not in repr(dep)


@pytest.mark.parametrize(("image", "version"), [
    ("ghcr.io/edgefabric/api:1.4.2", "1.4.2"),
    ("registry.local:5000/team/api:2.0", "2.0"),
    ("ghcr.io/edgefabric/api:1.4.2@sha256:" + "ab" * 32, "1.4.2"),
    ("ghcr.io/edgefabric/api@sha256:" + "cd" * 32, "sha256-cdcdcdcdcdcd"),
    ("registry.local:5000/api", "latest"),
])
def test_image_version_fits_the_contract(image: str, version: str) -> None:
    from edgefabric.tiers.registry import image_version

    assert image_version(image) == version and len(version.encode()) <= 32


def test_the_agent_carries_the_ledger_and_the_config_hash(mocks: Mocks) -> None:
    from edgefabric.tiers.registry import AgentLedger, BlockchainRegistry, BlockchainRegistryArgs, ServiceSpec

    digest = "0x" + "5a" * 32

    @pulumi.runtime.test
    def build() -> Any:
        provider = k8s.Provider("aws-k8s", kubeconfig="{}")
        BlockchainRegistry("registry", BlockchainRegistryArgs(
            registry=_cfg(), services=[ServiceSpec("api-gateway", "1.0.0", ["https://203.0.113.10"], "{}")],
            environment="dev", k8s_providers={"aws": provider},
            ledger=AgentLedger(address=pulumi.Output.from_input("0x" + "77" * 20), stack="unit",
                               config_hash=digest, from_block=pulumi.Output.from_input(12)),
        ))

    build()
    [dep] = [r for r in mocks.created if r.typ == "kubernetes:apps/v1:Deployment"]
    env = {e["name"]: e.get("value") for e in dep.inputs["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["EDGEFABRIC_CONFIG_HASH"] == digest
    assert env["EDGEFABRIC_LEDGER_ADDRESS"] == "0x" + "77" * 20
    assert env["EDGEFABRIC_STACK"] == "unit"
    assert env["EDGEFABRIC_LEDGER_FROM_BLOCK"] == "12"
