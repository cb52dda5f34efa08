"""Tier 1, the cloud core: one Kubernetes cluster per cloud, running the core services.

One `CloudCore` per provisioned cloud. Each makes its cloud's explicit provider, builds its
cluster (EKS in `aws`, AKS in `azure`, GKE in `gcp`), turns the cluster's outputs into a
kubeconfig (a secret), makes its own `kubernetes.Provider` from it, and deploys the core
services through that provider: the global API gateway behind a LoadBalancer Service, data
analytics, user management and business logic.

A cloud may bring a cluster it already runs instead (`clouds.<cloud>.cluster.kubeconfigRef`):
then the core creates no cloud provider and no cloud resource at all, reads the kubeconfig
through the secret reference (a secret Output from the start), and deploys the same core
services through a `kubernetes.Provider` of the same name. The local stack runs this way,
on local control planes (scripts/local-env).

A core sees only its slice of the stack config (`CloudCoreArgs`): its cloud's settings, its
cluster size (none for an existing cluster), the core services, the environment and the
extra tags.

Logical names are stable (`<cloud>-vpc`, `<cloud>-cluster`, `<cloud>-<service>`). Renaming
one, or moving it to another parent, needs an `aliases=` entry or the engine replaces it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import pulumi
import pulumi_kubernetes as k8s

from edgefabric.config import AwsCloud, AzureCloud, Cloud, ClusterSize, CoreService, ExistingCluster, GcpCloud
from edgefabric.tiers import secret_output
from edgefabric.tiers.cloud_providers import CloudSettings, cloud_provider
from edgefabric.tiers.images import KeycloakDatabase
from edgefabric.tiers.labels import cloud_tags, k8s_labels
from edgefabric.tiers.network_policies import listeners, namespace_policies
from edgefabric.tiers.workloads import PodShape, default_limits, deploy_service, lb_address, lb_annotations

TIER = "core"
CORE_NAMESPACE = "edgefabric-core"
SETTINGS_TYPE: dict[str, type[CloudSettings]] = {"aws": AwsCloud, "azure": AzureCloud, "gcp": GcpCloud}


@dataclass(frozen=True)
class CloudCoreArgs:
    """One cloud core's slice of the stack config."""

    cloud: Cloud
    size: ClusterSize | None  # `core.clusters.<cloud>`; None when the cloud brings its cluster
    services: Sequence[CoreService]  # `core.services`
    # `clouds.<cloud>`: region/location/project, credential references, an existing `cluster`
    settings: CloudSettings
    environment: str
    tags: Mapping[str, str] = field(default_factory=dict)  # the stack's extra tags
    # A region's own cluster (`regions[].cluster`): the region's name. It prefixes the logical
    # names and suffixes the cloud-side ones; None for the cloud's core (names as they were).
    region: str | None = None
    # The cluster's number among its cloud's clusters in this stack (0: the core; a far region
    # 1, 2, ...): which private address ranges it gets (`addresses`), distinct per cluster.
    network_index: int = 0

    def __post_init__(self) -> None:
        expected = SETTINGS_TYPE.get(self.cloud)
        if expected is None:
            raise ValueError(f"CloudCoreArgs.cloud: unknown cloud {self.cloud!r}; allowed: {sorted(SETTINGS_TYPE)}")
        if not isinstance(self.settings, expected):
            raise TypeError(f"CloudCoreArgs.settings: {self.cloud} needs {expected.__name__}, "
                            f"got {type(self.settings).__name__}")
        if (self.size is None) == (self.existing is None):
            raise ValueError(f"CloudCoreArgs: {self.cloud} needs exactly one of a cluster size "
                             f"(core.clusters.{self.cloud}) and an existing cluster (clouds.{self.cloud}.cluster)")

    @property
    def existing(self) -> ExistingCluster | None:
        """The cluster the cloud brings (`clouds.<cloud>.cluster`), or None: this core creates one."""
        return self.settings.cluster

    @property
    def cluster(self) -> ClusterSize:
        """The size of the cluster this core creates (`core.clusters.<cloud>`)."""
        if self.size is None:
            raise ValueError(f"CloudCoreArgs: {self.cloud} deploys onto an existing cluster: it has no size")
        return self.size

    @property
    def cluster_name(self) -> str:
        """The cloud-side name of the cluster (and of the resource group on Azure)."""
        return f"edgefabric-{self.environment}" + (f"-{self.region}" if self.region else "")

    @property
    def prefix(self) -> str:
        """What the logical names start with: the cloud (`aws-vpc`), or the region (`us-west-vpc`)."""
        return self.region or self.cloud


def in_location(settings: CloudSettings, location: str, kubeconfig_ref: str | None = None) -> CloudSettings:
    """The cloud's settings moved to `location` (a region's own cluster): the AWS or GCP
    region, or the Azure location; credentials, project and roles stay as they are. With
    `kubeconfig_ref` (`regions[].kubeconfigRef`) the cluster is that existing one, else none:
    the region's cluster is created."""
    key = "location" if isinstance(settings, AzureCloud) else "region"
    cluster = ExistingCluster(kubeconfig_ref=kubeconfig_ref) if kubeconfig_ref else None
    return settings.model_copy(update={key: location, "cluster": cluster})


class Cluster(NamedTuple):
    """What a cluster builder hands back: the cluster's name and a kubeconfig for it, and what
    the cloud needs running inside the cluster (given the cluster's Kubernetes provider and
    the tier's labels; EKS: its node autoscaler)."""

    name: pulumi.Output[str]
    kubeconfig: pulumi.Output[str]
    in_cluster: Callable[[k8s.Provider, dict[str, str]], None] | None = None


class CloudCore(pulumi.ComponentResource):
    """A managed cluster in one cloud and the core services on it.

    Outputs: `cluster_name`, `kubeconfig` (secret), `ingress_address` (the API gateway's
    load-balancer address); `provider` (the cloud's; None on an existing cluster, where the
    core makes no cloud resource) and `k8s_provider` (the cluster's) for other tiers that
    deploy into this cloud or onto this cluster.
    """

    provider: pulumi.ProviderResource | None

    cluster_name: pulumi.Output[str]
    kubeconfig: pulumi.Output[str]
    ingress_address: pulumi.Output[str]

    def __init__(self, name: str, args: CloudCoreArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("edgefabric:core:CloudCore", name, None, opts)
        self.cloud = args.cloud
        self._env = args.environment
        tags = cloud_tags(args.environment, TIER, args.cloud, args.tags)
        if args.existing is None:
            # The cloud's provider belongs to this component, like the cluster it creates.
            self.provider = cloud_provider(args.settings, tags, self, args.region)
            cluster = _build_cluster(args, tags, self, self.provider)
        else:
            self.provider = None
            key = f"regions[{args.region}].kubeconfigRef" if args.region else f"clouds.{args.cloud}.cluster.kubeconfigRef"
            cluster = _existing_cluster(args.existing, key)
        self.cluster_name = cluster.name
        self.kubeconfig = pulumi.Output.secret(cluster.kubeconfig)
        self.k8s_provider = k8s.Provider(
            f"{args.prefix}-k8s", kubeconfig=self.kubeconfig, opts=pulumi.ResourceOptions(parent=self),
        )
        if cluster.in_cluster is not None:
            cluster.in_cluster(self.k8s_provider, k8s_labels(args.environment, TIER, args.cloud))
        # A region's own cluster runs the region's services (RegionalEdge), no core services.
        self.ingress_address = self._core_services(args.services) if args.services else pulumi.Output.from_input("")
        self.register_outputs({
            "cluster_name": self.cluster_name,
            "kubeconfig": self.kubeconfig,
            "ingress_address": self.ingress_address,
        })

    def _core_services(self, services: Sequence[CoreService]) -> pulumi.Output[str]:
        labels = k8s_labels(self._env, TIER, self.cloud)
        ns = k8s.core.v1.Namespace(
            f"{self.cloud}-core-ns",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=CORE_NAMESPACE, labels=labels),
            opts=pulumi.ResourceOptions(parent=self, provider=self.k8s_provider))
        ingress: pulumi.Output[str] | None = None
        for svc in services:
            cpu_limit, memory_limit = default_limits(svc)
            env = dict(svc.env)
            if svc.oauth2_issuer:
                env["OAUTH2_ISSUER"] = svc.oauth2_issuer
            deployed = deploy_service(
                f"{self.cloud}-{svc.name}", svc.model_copy(update={"env": env}),
                namespace=CORE_NAMESPACE, namespace_resource=ns,
                shape=PodShape(labels=labels, cpu_limit=cpu_limit, memory_limit=memory_limit),
                provider=self.k8s_provider, parent=self,
                service_type="LoadBalancer" if svc.kind == "api-gateway" else "ClusterIP",
                autoscale=svc.autoscale,
                database=self._database(svc, ns, labels) if svc.database else None,
                service_annotations=lb_annotations(self.cloud) if svc.kind == "api-gateway" else None,
            )
            if svc.kind == "api-gateway" and ingress is None:
                # Clouds answer with an IP (Azure, GCP) or a hostname (AWS NLB).
                ingress = deployed.service.status.apply(lb_address)
        # Clients reach the gateway through its load balancer; the other services only in-tier.
        namespace_policies(self.cloud, CORE_NAMESPACE,
                           listeners(services, exposed=[s.name for s in services if s.kind == "api-gateway"]),
                           labels=labels, provider=self.k8s_provider, namespace_resource=ns, parent=self)
        return ingress if ingress is not None else pulumi.Output.from_input("")


    def _database(self, svc: CoreService, ns: pulumi.Resource, labels: dict[str, str]) -> KeycloakDatabase:
        """The service's database password as a Kubernetes Secret (a secret Output from its
        reference, never plain in state), and how the image reaches the database."""
        db = svc.database
        assert db is not None
        where = f"core.services[{svc.name}].database.passwordRef"
        secret_name = f"{svc.name}-db"
        k8s.core.v1.Secret(
            f"{self.cloud}-{svc.name}-db",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=secret_name, namespace=CORE_NAMESPACE, labels=labels),
            string_data={"password": secret_output(db.password_ref, where)},
            opts=pulumi.ResourceOptions(parent=self, provider=self.k8s_provider, depends_on=[ns]))
        return KeycloakDatabase(jdbc_url=f"jdbc:postgresql://{db.host}:{db.port}/{db.name}?sslmode=require",
                                username=db.username, password_secret=secret_name)


def _build_cluster(args: CloudCoreArgs, tags: dict[str, str], parent: pulumi.Resource,
                   provider: pulumi.ProviderResource) -> Cluster:
    # The builders import this module's shared bits (CloudCoreArgs, Cluster, exec_kubeconfig),
    # so they are imported when first used rather than at the top.
    from edgefabric.tiers.cloud_core import aws, azure, gcp

    build = {"aws": aws.eks, "azure": azure.aks, "gcp": gcp.gke}[args.cloud]
    return build(args, tags, parent, provider)


def _existing_cluster(existing: ExistingCluster, key: str) -> Cluster:
    """A cluster the cloud (or a far region) brings: its kubeconfig comes from the secret
    reference at config key `key` (a secret Output, never plain in state or logs); its name is
    the reference, which says where the kubeconfig is read from and is no secret."""
    ref = existing.kubeconfig_ref
    return Cluster(name=pulumi.Output.from_input(ref), kubeconfig=secret_output(ref, key))


def kubeconfig(server: str, ca_data: str, name: str, user: Mapping[str, Any], namespace: str | None = None) -> str:
    """A kubeconfig of one context `name` (JSON, which every kubeconfig reader takes as YAML):
    the server, its CA (base64 PEM), how the user authenticates, and a default namespace."""
    context: dict[str, str] = {"cluster": name, "user": name}
    if namespace:
        context["namespace"] = namespace
    return json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": name,
        "clusters": [{"name": name, "cluster": {"server": server, "certificate-authority-data": ca_data}}],
        "contexts": [{"name": name, "context": context}],
        "users": [{"name": name, "user": dict(user)}],
    })


def kubeconfig_server(text: str) -> str:
    """The API server a kubeconfig's current context points at."""
    import yaml  # a kubeconfig may be YAML or JSON

    cfg = yaml.safe_load(text)
    context = next(c["context"] for c in cfg["contexts"] if c["name"] == cfg.get("current-context"))
    return str(next(c["cluster"]["server"] for c in cfg["clusters"] if c["name"] == context["cluster"]))


def exec_kubeconfig(server: str, ca_data: str, name: str, exec_spec: Mapping[str, Any]) -> str:
    """A kubeconfig that authenticates with the cloud's exec plugin: no static token in state."""
    return kubeconfig(server, ca_data, name, {"exec": dict(exec_spec)})
