"""Tier 4, the blockchain registry: the ServiceRegistry contract, one registration per service,
and the heartbeat agent that keeps them alive.

The component never talks to the chain itself; the dynamic resources in edgefabric/dynamic/registry.py
do. It sees only the `registry` section of the stack config, the services to register and the
clusters to run agents on (`BlockchainRegistryArgs`). The deployer key reaches the dynamic
resources as a secret input (`config:` references, resolved here) or is read from the
environment inside the provider (`env:` references), and in both cases the reference string is
kept in state so that `delete` (which only sees saved outputs) can find the key again.

The heartbeat agent runs on every cloud-core cluster it is given (a Deployment of one replica per
cluster): if one cloud is down, the others keep the services alive. Each cluster holds only its
own heartbeat key (a HeartbeatDelegate: generated and funded by the stack, a Pulumi secret),
which the contract lets heartbeat and nothing else; the owner key never leaves the deployer, so
a compromised cluster cannot redirect any endpoint.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlparse

import pulumi
import pulumi_kubernetes as k8s

from edgefabric.config import EdgeSite, Port, Region, RegistryConfig
from edgefabric.dynamic.registry import HeartbeatDelegate, RegistryContract, ServiceRegistration
from edgefabric.errors import ConfigError
from edgefabric.secrets import env_name
from edgefabric.tiers import secret_output
from edgefabric.tiers.labels import k8s_labels
from edgefabric.tiers.network_policies import METRICS, Listener, namespace_policies

TIER = "registry"
AGENT_NAMESPACE = "edgefabric-registry"
AGENT_APP = "heartbeat-agent"
KEY_MOUNT = "/var/run/secrets/edgefabric"
KEY_FILE = "heartbeat-key"
RPC_URL_KEY = "rpc-url"
METRICS_PORT = 9464  # the agent's Prometheus metrics (the port OpenTelemetry's exporter uses too)


def _deployer_key(ref: str) -> pulumi.Output[str]:
    """The deployer key as a secret Output; at preview, an unknown one when it is not set.

    A preview sends nothing, and what a key would sign is unknown then anyway, so a preview
    needs no key: pull-request previews in CI never receive one. `up` still fails, before any
    transaction, with the ConfigError naming the reference.
    """
    return _secret_or_unknown(ref, "registry.deployerKeyRef", "the deployer key")


def _secret_or_unknown(ref: str, where: str, what: str) -> pulumi.Output[str]:
    try:
        return secret_output(ref, where)
    except ConfigError:
        if not pulumi.runtime.is_dry_run():
            raise
        pulumi.log.info(f"{where} {ref}: not set; previewing without {what}")
        return _unknown_secret()


def _unknown_secret() -> pulumi.Output[str]:
    """A secret Output whose value is unknown, as the engine shows a not-yet-computed value."""
    value: asyncio.Future[str | None] = asyncio.Future()
    value.set_result(None)
    known: asyncio.Future[bool] = asyncio.Future()
    known.set_result(False)
    secret: asyncio.Future[bool] = asyncio.Future()
    secret.set_result(True)
    return pulumi.Output(set(), value, known, secret)  # type: ignore[arg-type]  # value None: unknown


def image_version(image: str) -> str:
    """The registry version of a container image: its tag, or for a digest-only reference
    `sha256-` and the first 12 hex digits (a whole digest is 71 bytes; versions are <= 32)."""
    name, _, digest = image.partition("@")
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        return last.rsplit(":", 1)[1]
    algo, _, hexdigits = digest.partition(":")
    return f"{algo}-{hexdigits[:12]}" if hexdigits else "latest"


@dataclass(frozen=True)
class ServiceSpec:
    """A service to register: endpoints usually come from a tier's ingress outputs."""

    name: str
    version: str
    endpoints: pulumi.Input[Sequence[pulumi.Input[str]]]
    metadata: str = ""


def _metadata(kind: str, tier: str, where: str, environment: str) -> str:
    return json.dumps({"kind": kind, "tier": tier, "at": where, "environment": environment}, separators=(",", ":"))


def regional_services(regions: Sequence[Region], environment: str) -> list[ServiceSpec]:
    """Every regional service, named `<region>-<service>` (its logical name everywhere else, and
    unique: two regions run the same service at the same version, and the id is per name).
    The endpoint is the service's address in its region's namespace on its cloud's core cluster
    (regional-edge.py: namespace `region-<region>`), where the region's sites reach it."""
    return [
        ServiceSpec(
            name=f"{region.name}-{svc.name}",
            version=image_version(svc.image),
            endpoints=[f"{_scheme(svc.kind)}://{svc.name}.region-{region.name}.svc.cluster.local:{port.port}"
                       for port in svc.ports[:1]],
            metadata=_metadata(svc.kind, "regional", f"{region.cloud}/{region.name}", environment),
        )
        for region in regions for svc in region.services
    ]


def edge_services(sites: Sequence[EdgeSite], environment: str) -> list[ServiceSpec]:
    """Every edge site's service, named `<site>-<service>`. On a kubernetes site the endpoint is
    the service in the site's namespace (`edge-<site>`); on docker and native sites it is the
    site's host and the service's published port."""
    specs = []
    for site in sites:
        host = urlparse(site.host or "").hostname
        for svc in site.services:
            port = svc.ports[0].port
            where = host if site.capabilities.runtime != "kubernetes" and host else \
                f"{svc.name}.edge-{site.name}.svc.cluster.local"
            specs.append(ServiceSpec(
                name=f"{site.name}-{svc.name}",
                version=image_version(svc.image),
                endpoints=[f"{_scheme(svc.kind)}://{where}:{port}"],
                metadata=_metadata(svc.kind, "edge", site.name, environment),
            ))
    return specs


def check_unique_names(names: Sequence[str]) -> None:
    """One registry name per service: a core service named like `<region>-<service>` would give
    two services one id and one logical name. The program calls this before any resource."""
    clash = sorted({n for n in names if list(names).count(n) > 1})
    if clash:
        raise ConfigError.one("core.services[].name", clash[0],
                              "a name no region or edge site service registers as <region|site>-<service>")


def _scheme(kind: str) -> str:
    # The brokers speak MQTT; everything else is served over HTTP.
    return "mqtt" if kind in ("device-management", "sensor-ingest") else "http"


@dataclass(frozen=True)
class AgentLedger:
    """What a heartbeat agent checks against the deployment ledger: the ledger's address, this
    stack's name, and `config_hash(cfg)` of the typed config it is deployed with (the value the
    ledger entry of this `up` records). The agent reports a mismatch with the latest entry."""

    address: pulumi.Input[str]
    stack: str
    config_hash: str
    # The ledger's first block: the agent reads its events from there, not from genesis.
    from_block: pulumi.Input[int] = 0


@dataclass(frozen=True)
class BlockchainRegistryArgs:
    """The registry's slice of the stack config, what to register and where agents run."""

    registry: RegistryConfig  # the `registry` section
    services: Sequence[ServiceSpec]
    environment: str
    # Cloud -> the core cluster's provider: one heartbeat agent on each. None or empty: no agents.
    k8s_providers: Mapping[str, k8s.Provider] = field(default_factory=dict)
    # The deployment ledger the agents compare their config hash with (None: no check).
    ledger: AgentLedger | None = None


class BlockchainRegistry(pulumi.ComponentResource):
    """Deploys (or adopts) the ServiceRegistry, registers the services, runs heartbeat agents.

    Outputs: `contract_address`, `chain_id`, `service_ids` (service name -> 0x id).
    """

    contract_address: pulumi.Output[str]
    chain_id: pulumi.Output[int]
    service_ids: dict[str, pulumi.Output[str]]
    publishers: pulumi.Output[list[str]]

    def __init__(self, name: str, args: BlockchainRegistryArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("edgefabric:registry:BlockchainRegistry", name, None, opts)
        cfg, services, environment = args.registry, args.services, args.environment
        check_unique_names([svc.name for svc in services])
        child = pulumi.ResourceOptions(parent=self)
        # `env:` refs are read by the provider itself (the value never enters the program);
        # `config:` refs are resolved here, into a secret Output.
        key_ref = cfg.deployer_key_ref
        key_input = None if env_name(key_ref) else _deployer_key(key_ref)
        # A hosted node's URL carries its API key: from registry.rpcUrlRef it is a secret Output
        # (encrypted in state, masked in logs, a Secret in the agents' pods).
        rpc_url: pulumi.Input[str] = (cfg.rpc_url if cfg.rpc_url is not None else _secret_or_unknown(
            str(cfg.rpc_url_ref), "registry.rpcUrlRef", "the RPC URL"))
        confirmations = cfg.effective_confirmations()
        max_fee_wei = int(cfg.max_fee_gwei * 10**9) if cfg.max_fee_gwei else None

        contract = RegistryContract(
            f"{name}-contract",
            rpc_url=rpc_url,
            chain_id=cfg.chain_id,
            deployer_key=key_input,
            deployer_key_ref=key_ref,
            existing_address=cfg.contract_address or None,
            confirmations=confirmations,
            max_fee_wei=max_fee_wei,
            opts=child,
        )
        self.contract_address = contract.address
        self.chain_id = contract.chain_id

        registrations = {
            svc.name: ServiceRegistration(
                f"{name}-{svc.name}",
                rpc_url=rpc_url,
                chain_id=cfg.chain_id,
                # The contract's id is its address, and unlike the `address` output it stays known
                # in a preview that updates the contract in place: an unknown address would plan a
                # replacement of every registration.
                contract_address=contract.id,
                name=svc.name,
                version=svc.version,
                endpoints=svc.endpoints,
                metadata=svc.metadata,
                ttl=cfg.service_ttl_s,
                deployer_key=key_input,
                deployer_key_ref=key_ref,
                confirmations=confirmations,
                max_fee_wei=max_fee_wei,
                opts=child,
            )
            for svc in services
        }
        self.service_ids = {svc: reg.service_id for svc, reg in registrations.items()}
        # Discovery's allowlist (`Registry.discover(publishers=...)`): the owners of our
        # registrations, i.e. the deployer key. Delegates only heartbeat; they own nothing.
        self.publishers = pulumi.Output.all(*[r.owner for r in registrations.values()]).apply(
            lambda owners: sorted({str(o) for o in owners if o}))

        if args.k8s_providers and registrations:
            id_list = [r.service_id for r in registrations.values()]
            ids = pulumi.Output.all(*id_list).apply(lambda values: ",".join(str(v) for v in values))
            for cloud, provider in sorted(args.k8s_providers.items()):
                delegate = HeartbeatDelegate(
                    f"{name}-{cloud}-delegate",
                    rpc_url=rpc_url,
                    chain_id=cfg.chain_id,
                    contract_address=contract.id,
                    service_ids=id_list,
                    funding_wei=int(cfg.agent_funding_eth * 10**18),
                    rotation=cfg.agent_key_rotation,
                    marks=[r.tx_hash for r in registrations.values()],
                    deployer_key=key_input,
                    deployer_key_ref=key_ref,
                    confirmations=confirmations,
                    max_fee_wei=max_fee_wei,
                    opts=pulumi.ResourceOptions(parent=self, depends_on=list(registrations.values())),
                )
                self._agent(name, cloud, provider, cfg, environment, delegate.private_key, ids, contract.address,
                            rpc_url, args.ledger)

        self.register_outputs({
            "contract_address": self.contract_address,
            "chain_id": self.chain_id,
            "service_ids": self.service_ids,
            "publishers": self.publishers,
        })

    def _agent(self, name: str, cloud: str, provider: k8s.Provider, cfg: RegistryConfig, environment: str,
               key: pulumi.Output[str], ids: pulumi.Output[str], address: pulumi.Output[str],
               rpc_url: pulumi.Input[str], ledger: AgentLedger | None = None) -> None:
        """Namespace + Secret (the key, as a file) + one-replica Deployment on one cluster."""
        opts = pulumi.ResourceOptions(parent=self, provider=provider)
        labels = k8s_labels(environment, TIER, cloud, app=AGENT_APP)
        ns = k8s.core.v1.Namespace(
            f"{name}-{cloud}-ns",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=AGENT_NAMESPACE, labels=labels),
            opts=opts,
        )
        # The agent only calls out (the chain); nothing connects to it but metrics scrapers.
        namespace_policies(f"{name}-{cloud}", AGENT_NAMESPACE,
                           [Listener(AGENT_APP, (Port(name=METRICS, port=METRICS_PORT),))],
                           labels=labels, provider=provider, namespace_resource=ns, parent=self)
        in_ns = pulumi.ResourceOptions(parent=self, provider=provider, depends_on=[ns])
        secret = k8s.core.v1.Secret(
            f"{name}-{cloud}-key",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=f"{AGENT_APP}-key", namespace=AGENT_NAMESPACE, labels=labels),
            type="Opaque",
            string_data={KEY_FILE: pulumi.Output.secret(key),  # type: ignore[arg-type]  # SDK stub: Output.secret(Output[T])
                         **({RPC_URL_KEY: rpc_url} if isinstance(rpc_url, pulumi.Output) else {})},
            opts=in_ns,
        )
        # registry.heartbeatIntervalS (validated <= serviceTtlS / 3: two missed beats never expire one).
        interval = cfg.heartbeat_interval_s
        # The agent touches a file after every good round; stale after 3 intervals means stuck.
        alive_cmd = ["python", "-m", "agent.heartbeat", "--check-alive", str(3 * interval + 30)]
        env = [
            # From registry.rpcUrlRef the URL is read from the Secret, never a plain pod field.
            k8s.core.v1.EnvVarArgs(name="EDGEFABRIC_RPC_URL", value_from=k8s.core.v1.EnvVarSourceArgs(
                secret_key_ref=k8s.core.v1.SecretKeySelectorArgs(name=secret.metadata.name, key=RPC_URL_KEY)))
            if isinstance(rpc_url, pulumi.Output) else k8s.core.v1.EnvVarArgs(name="EDGEFABRIC_RPC_URL", value=rpc_url),
            k8s.core.v1.EnvVarArgs(name="EDGEFABRIC_CHAIN_ID", value=str(cfg.chain_id)),
            k8s.core.v1.EnvVarArgs(name="EDGEFABRIC_REGISTRY_ADDRESS", value=address),
            k8s.core.v1.EnvVarArgs(name="EDGEFABRIC_SERVICE_IDS", value=ids),
            k8s.core.v1.EnvVarArgs(name="EDGEFABRIC_HEARTBEAT_INTERVAL_S", value=str(interval)),
            k8s.core.v1.EnvVarArgs(name="EDGEFABRIC_DEPLOYER_KEY_FILE", value=f"{KEY_MOUNT}/{KEY_FILE}"),
            k8s.core.v1.EnvVarArgs(name="EDGEFABRIC_ALIVE_FILE", value="/tmp/heartbeat-alive"),
            k8s.core.v1.EnvVarArgs(name="EDGEFABRIC_METRICS_PORT", value=str(METRICS_PORT)),
        ]
        if ledger is not None:
            # The hash changes with the typed config, so a config change rolls the agent out with
            # the new hash; an agent left behind (or a config changed outside `up`) reports it.
            env += [
                k8s.core.v1.EnvVarArgs(name="EDGEFABRIC_LEDGER_ADDRESS", value=ledger.address),
                k8s.core.v1.EnvVarArgs(name="EDGEFABRIC_STACK", value=ledger.stack),
                k8s.core.v1.EnvVarArgs(name="EDGEFABRIC_CONFIG_HASH", value=ledger.config_hash),
                k8s.core.v1.EnvVarArgs(name="EDGEFABRIC_LEDGER_FROM_BLOCK",
                                       value=pulumi.Output.from_input(ledger.from_block).apply(lambda b: str(b or 0))),
            ]
        container = k8s.core.v1.ContainerArgs(
            name=AGENT_APP,
            image=cfg.agent_image,
            env=env,
            ports=[k8s.core.v1.ContainerPortArgs(name="metrics", container_port=METRICS_PORT)],
            resources=k8s.core.v1.ResourceRequirementsArgs(
                requests={"cpu": "10m", "memory": "64Mi"}, limits={"cpu": "200m", "memory": "128Mi"}),
            liveness_probe=k8s.core.v1.ProbeArgs(
                exec_=k8s.core.v1.ExecActionArgs(command=alive_cmd),
                initial_delay_seconds=60, period_seconds=60, timeout_seconds=10, failure_threshold=3),
            readiness_probe=k8s.core.v1.ProbeArgs(
                exec_=k8s.core.v1.ExecActionArgs(command=alive_cmd),
                initial_delay_seconds=10, period_seconds=30, timeout_seconds=10),
            volume_mounts=[
                k8s.core.v1.VolumeMountArgs(name="key", mount_path=KEY_MOUNT, read_only=True),
                k8s.core.v1.VolumeMountArgs(name="tmp", mount_path="/tmp"),
            ],
            security_context=k8s.core.v1.SecurityContextArgs(
                privileged=False, allow_privilege_escalation=False, read_only_root_filesystem=True,
                run_as_non_root=True, run_as_user=65532,
                capabilities=k8s.core.v1.CapabilitiesArgs(drop=["ALL"])),
        )
        k8s.apps.v1.Deployment(
            f"{name}-{cloud}-agent",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=AGENT_APP, namespace=AGENT_NAMESPACE, labels=labels),
            spec=k8s.apps.v1.DeploymentSpecArgs(
                replicas=1,
                # Recreate: two agents of one cluster would only race for nonces during a rollout.
                strategy=k8s.apps.v1.DeploymentStrategyArgs(type="Recreate"),
                selector=k8s.meta.v1.LabelSelectorArgs(match_labels={"app.kubernetes.io/name": AGENT_APP}),
                template=k8s.core.v1.PodTemplateSpecArgs(
                    metadata=k8s.meta.v1.ObjectMetaArgs(labels=labels),
                    spec=k8s.core.v1.PodSpecArgs(
                        containers=[container],
                        automount_service_account_token=False,
                        volumes=[
                            k8s.core.v1.VolumeArgs(name="key", secret=k8s.core.v1.SecretVolumeSourceArgs(
                                secret_name=secret.metadata.name, default_mode=0o400)),
                            k8s.core.v1.VolumeArgs(name="tmp", empty_dir=k8s.core.v1.EmptyDirVolumeSourceArgs()),
                        ],
                    ),
                ),
            ),
            opts=in_ns,
        )
