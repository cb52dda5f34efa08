"""Tier 4, the blockchain registry: the ServiceRegistry contract, one registration per service,
and the heartbeat agent that keeps them alive.

The component never talks to the chain itself; the dynamic resources in edgefabric/dynamic/registry.py
do. It sees only the `registry` section of the stack config, the services to register and the
clusters to run agents on (`BlockchainRegistryArgs`). The deployer key reaches the dynamic
resources as a secret input (`config:` references, resolved here) or is read from the
environment inside the provider (`env:` references), and in both cases the reference string is
kept in state so that `delete` (which only sees saved outputs) can find the key again.

The heartbeat agent runs on every cloud-core cluster it is given (a Deployment of one replica per
cluster): if one cloud is down, the others keep the services alive. Agents share the owner key,
so their transactions share one nonce sequence; the chain client resynchronises on a collision.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s

from edgefabric.config import RegistryConfig
from edgefabric.dynamic.registry import RegistryContract, ServiceRegistration
from edgefabric.secrets import env_name
from edgefabric.tiers import secret_output
from edgefabric.tiers.labels import k8s_labels

TIER = "registry"
AGENT_NAMESPACE = "edgefabric-registry"
AGENT_APP = "heartbeat-agent"
KEY_MOUNT = "/var/run/secrets/edgefabric"
KEY_FILE = "deployer-key"


@dataclass(frozen=True)
class ServiceSpec:
    """A service to register: endpoints usually come from a tier's ingress outputs."""

    name: str
    version: str
    endpoints: pulumi.Input[Sequence[pulumi.Input[str]]]
    metadata: str = ""


@dataclass(frozen=True)
class BlockchainRegistryArgs:
    """The registry's slice of the stack config, what to register and where agents run."""

    registry: RegistryConfig  # the `registry` section
    services: Sequence[ServiceSpec]
    environment: str
    # Cloud -> the core cluster's provider: one heartbeat agent on each. None or empty: no agents.
    k8s_providers: Mapping[str, k8s.Provider] = field(default_factory=dict)


class BlockchainRegistry(pulumi.ComponentResource):
    """Deploys (or adopts) the ServiceRegistry, registers the services, runs heartbeat agents.

    Outputs: `contract_address`, `chain_id`, `service_ids` (service name -> 0x id).
    """

    contract_address: pulumi.Output[str]
    chain_id: pulumi.Output[int]
    service_ids: dict[str, pulumi.Output[str]]

    def __init__(self, name: str, args: BlockchainRegistryArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("edgefabric:registry:BlockchainRegistry", name, None, opts)
        cfg, services, environment = args.registry, args.services, args.environment
        child = pulumi.ResourceOptions(parent=self)
        # `env:` refs are read by the provider itself (the value never enters the program);
        # `config:` refs are resolved here, into a secret Output.
        key_ref = cfg.deployer_key_ref
        key_input = None if env_name(key_ref) else secret_output(key_ref, "registry.deployerKeyRef")

        contract = RegistryContract(
            f"{name}-contract",
            rpc_url=cfg.rpc_url,
            chain_id=cfg.chain_id,
            deployer_key=key_input,
            deployer_key_ref=key_ref,
            existing_address=cfg.contract_address or None,
            opts=child,
        )
        self.contract_address = contract.address
        self.chain_id = contract.chain_id

        registrations = {
            svc.name: ServiceRegistration(
                f"{name}-{svc.name}",
                rpc_url=cfg.rpc_url,
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
                opts=child,
            )
            for svc in services
        }
        self.service_ids = {svc: reg.service_id for svc, reg in registrations.items()}

        if args.k8s_providers and registrations:
            # The agent needs the key's value in its cluster; for an `env:` ref that means reading
            # the variable here, as a secret (encrypted in state, masked in logs).
            agent_key = key_input if key_input is not None else secret_output(key_ref, "registry.deployerKeyRef")
            ids = pulumi.Output.all(*[r.service_id for r in registrations.values()]).apply(
                lambda values: ",".join(str(v) for v in values))
            for cloud, provider in sorted(args.k8s_providers.items()):
                self._agent(name, cloud, provider, cfg, environment, agent_key, ids, contract.address)

        self.register_outputs({
            "contract_address": self.contract_address,
            "chain_id": self.chain_id,
            "service_ids": self.service_ids,
        })

    def _agent(self, name: str, cloud: str, provider: k8s.Provider, cfg: RegistryConfig, environment: str,
               key: pulumi.Output[str], ids: pulumi.Output[str], address: pulumi.Output[str]) -> None:
        """Namespace + Secret (the key, as a file) + one-replica Deployment on one cluster."""
        opts = pulumi.ResourceOptions(parent=self, provider=provider)
        labels = k8s_labels(environment, TIER, cloud, app=AGENT_APP)
        ns = k8s.core.v1.Namespace(
            f"{name}-{cloud}-ns",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=AGENT_NAMESPACE, labels=labels),
            opts=opts,
        )
        in_ns = pulumi.ResourceOptions(parent=self, provider=provider, depends_on=[ns])
        secret = k8s.core.v1.Secret(
            f"{name}-{cloud}-key",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=f"{AGENT_APP}-key", namespace=AGENT_NAMESPACE, labels=labels),
            type="Opaque",
            string_data={KEY_FILE: pulumi.Output.secret(key)},  # type: ignore[arg-type]  # SDK stub: Output.secret(Output[T])
            opts=in_ns,
        )
        interval = max(cfg.service_ttl_s // 3, 1)
        # The agent touches a file after every good round; stale after 3 intervals means stuck.
        alive_cmd = ["python", "-m", "agent.heartbeat", "--check-alive", str(3 * interval + 30)]
        env = [
            k8s.core.v1.EnvVarArgs(name="EDGEFABRIC_RPC_URL", value=cfg.rpc_url),
            k8s.core.v1.EnvVarArgs(name="EDGEFABRIC_CHAIN_ID", value=str(cfg.chain_id)),
            k8s.core.v1.EnvVarArgs(name="EDGEFABRIC_REGISTRY_ADDRESS", value=address),
            k8s.core.v1.EnvVarArgs(name="EDGEFABRIC_SERVICE_IDS", value=ids),
            k8s.core.v1.EnvVarArgs(name="EDGEFABRIC_HEARTBEAT_INTERVAL_S", value=str(interval)),
            k8s.core.v1.EnvVarArgs(name="EDGEFABRIC_DEPLOYER_KEY_FILE", value=f"{KEY_MOUNT}/{KEY_FILE}"),
            k8s.core.v1.EnvVarArgs(name="EDGEFABRIC_ALIVE_FILE", value="/tmp/heartbeat-alive"),
        ]
        container = k8s.core.v1.ContainerArgs(
            name=AGENT_APP,
            image=cfg.agent_image,
            env=env,
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
