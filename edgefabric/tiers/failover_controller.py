"""The failover controller, deployed where failover must happen: one replica in each core cluster.

`pulumi up` sets the weights once; between deployments the controller
(`edgefabric.controller.daemon`) keeps probing and re-weighting. Run by a person somewhere it
dies with that somewhere, so `dns.controller.deploy` runs it in every core cluster (aws, azure,
gcp), as a Deployment of one replica each. The replicas share one lease: `QuorumLease` holds
a `coordination.k8s.io/v1` Lease in every core cluster and leads only with a majority of them,
so one replica writes at a time, and when a cloud is lost with its replica and its Lease, a
replica in another cloud takes over on the majority left (README "Where the controller runs").

Per cloud with a cluster, in the namespace `edgefabric-failover`:
- Namespace, its NetworkPolicies (deny ingress; the metrics port open to scrapes);
- ServiceAccount, and a Role + RoleBinding for Lease objects in that namespace only;
- ConfigMap: the controller's stack file (`Pulumi.<environment>.yaml`) rendered from the
  stack's typed config (`render_stack_file`): the record, health checks, strategies, routing,
  backends, notifications and each cloud's ingress address. References only: no secret;
- Secret `failover-controller-env`: the values of every secret reference the controller
  resolves (backends' keys, notification URLs, CA bundles), as the environment it reads them
  from (`config:KEY` -> EDGEFABRIC_SECRET_<KEY>, `env:NAME` -> NAME), from Pulumi secrets;
- Secret `failover-controller-token` (service-account-token): the ServiceAccount's token,
  which the replicas in the *other* clouds use to hold this cluster's Lease;
- Secret `failover-controller-kubeconfigs`: for each other core cluster, a kubeconfig with
  that cluster's token (no exec plugin needed in the image, and nothing there but its Leases),
  so the replica can hold the Lease there too; its own cluster it reaches in-cluster;
- Deployment: the controller image (pinned), non-root numeric user, read-only root file
  system, liveness and readiness on /healthz, Prometheus metrics on `dns.controller.metricsPort`.

Logical names: `<name>-ctl-<cloud>-<what>`. Engine use only through the resources: the
rendering functions are pure and tested without it.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pulumi
import pulumi_kubernetes as k8s
import yaml

from edgefabric.config import CLOUDS, NAMESPACE, Port
from edgefabric.config.models import (
    DnsConfig,
    EmailNotification,
    FailoverConfig,
    HealthCheckConfig,
    HttpCheck,
    PagerDutyNotification,
    RoutingConfig,
    SlackNotification,
    StrategyConfig,
)
from edgefabric.secrets import config_env_name, parse
from edgefabric.tiers import secret_output
from edgefabric.tiers.cloud_core import kubeconfig, kubeconfig_server
from edgefabric.tiers.labels import k8s_labels
from edgefabric.tiers.network_policies import Listener, namespace_policies

if TYPE_CHECKING:
    from edgefabric.tiers.traffic import GlobalTrafficArgs

TIER = "traffic"
APP = "failover-controller"
CONTROLLER_NAMESPACE = "edgefabric-failover"
STACK_DIR = "/etc/edgefabric"
KUBECONFIG_DIR = "/var/run/edgefabric/kubeconfigs"
STATE_DIR = "/var/lib/edgefabric"
RUN_AS = 65532  # the image's numeric non-root user
IN_CLUSTER = "in-cluster"  # as `edgefabric.traffic.lease.IN_CLUSTER` (tiers import only traffic.spec of traffic)


@dataclass(frozen=True)
class ControllerCluster:
    """A core cluster the controller runs in: its Kubernetes provider, and the stack's kubeconfig
    for it (a secret), with which the replicas in the other clusters hold its Lease."""

    provider: pulumi.ProviderResource
    kubeconfig: pulumi.Input[str]


# ------------------------------------------------------------------ pure rendering


def render_stack_file(
    environment: str,
    dns: DnsConfig,
    strategies: Mapping[str, StrategyConfig],
    routing: RoutingConfig,
    health_check: HealthCheckConfig,
    failover: FailoverConfig,
    addresses: Mapping[str, str],
    health_urls: Mapping[str, str] | None = None,
) -> str:
    """The stack file the controller reads (`load_stack_file`): what it needs of the stack, with
    each enabled cloud's ingress at the address the stack deployed. References stay references;
    `dns.controller` is left out (a controller deploys nothing)."""

    def dump(model: Any) -> Any:
        return model.model_dump(mode="json", by_alias=True, exclude_none=True)

    clouds: dict[str, Any] = {}
    for cloud in CLOUDS:
        if cloud not in addresses:
            clouds[cloud] = {"enabled": False}
            continue
        ingress = {"address": addresses[cloud]}
        if health_urls and cloud in health_urls:
            ingress["healthUrl"] = health_urls[cloud]
        clouds[cloud] = {"enabled": True, "ingress": ingress}
    dns_raw = dump(dns)
    dns_raw.pop("controller", None)
    config = {
        "environment": environment,
        "clouds": clouds,
        "strategies": {k: dump(v) for k, v in strategies.items()},
        "routing": dump(routing),
        "healthCheck": dump(health_check),
        "failover": dump(failover),
        "dns": dns_raw,
    }
    header = ("# Rendered by `pulumi up` (edgefabric.tiers.failover_controller) for the failover controller.\n"
              "# References only: the secrets are the Secret failover-controller-env.\n")  # fmt: skip
    return header + yaml.safe_dump({"config": {f"{NAMESPACE}:{k}": v for k, v in config.items()}}, sort_keys=True)


def secret_refs(dns: DnsConfig, health_check: HealthCheckConfig, failover: FailoverConfig) -> dict[str, str]:
    """Every secret reference the controller resolves -> the key path that holds it."""
    refs: dict[str, str] = {}
    b = dns.backends
    if b.powerdns is not None:
        refs[b.powerdns.api_key_ref] = "dns.backends.powerdns.apiKeyRef"
    if b.azure_tm is not None:
        refs[b.azure_tm.subscription_id_ref] = "dns.backends.azureTm.subscriptionIdRef"
    for i, check in enumerate(health_check.all_checks):
        if isinstance(check, HttpCheck) and check.ca_bundle_ref:
            refs[check.ca_bundle_ref] = f"{health_check.check_path(i)}.caBundleRef"
    for i, n in enumerate(failover.notifications):
        where = f"failover.notifications[{i}]"
        if isinstance(n, SlackNotification):
            refs[n.url_ref] = where + ".urlRef"
        elif isinstance(n, PagerDutyNotification):
            refs[n.routing_key_ref] = where + ".routingKeyRef"
        elif isinstance(n, EmailNotification) and n.password_ref:
            refs[n.password_ref] = where + ".passwordRef"
    return refs


def env_var(ref: str) -> str:
    """Where the controller reads a reference's value (`edgefabric.secrets.resolve`)."""
    kind, name = parse(ref, "ref")
    return name if kind == "env" else config_env_name(name)


def controller_args(environment: str, cloud: str, peers: list[str], lease_duration_s: int,
                    metrics_port: int) -> list[str]:  # fmt: skip
    """The daemon's arguments in `cloud`'s replica: its own cluster in-cluster, the others
    through their kubeconfigs. `$(POD_NAME)` is expanded by the kubelet."""
    args = [
        "--stack", environment, "--project-dir", STACK_DIR,
        "--state-file", f"{STATE_DIR}/state.json",
        "--identity", "$(POD_NAME)",
        "--lease-namespace", CONTROLLER_NAMESPACE,
        "--lease-duration", str(lease_duration_s),
        "--lease-kubeconfig", f"{cloud}={IN_CLUSTER}",
        *[a for peer in peers for a in ("--lease-kubeconfig", f"{peer}={KUBECONFIG_DIR}/{peer}")],
        # The pod's address, so Prometheus and the kubelet's probes reach it.
        "--metrics-host", "0.0.0.0", "--metrics-port", str(metrics_port),
    ]  # fmt: skip
    return args


# ------------------------------------------------------------------ resources


def deploy_controller(parent: pulumi.Resource, name: str, args: GlobalTrafficArgs) -> list[k8s.apps.v1.Deployment]:
    """The controller in every core cluster of `args.clusters`, when `dns.controller.deploy`
    (see the module doc). Returns the Deployments (none when not deployed)."""
    ctl = args.dns.controller
    if not ctl.deploy or not args.clusters:
        return []
    failover = args.failover if args.failover is not None else FailoverConfig(action=args.action)
    known = dict(args.strategies) or ({args.dns.strategy: args.strategy} if args.strategy else {})
    # The strategies the records follow: the file describes the records, not the services.
    strategies = {r.strategy: known[r.strategy] for r in args.dns.all_records if r.strategy in known}
    # Every value first: a reference that names nothing fails before any controller resource.
    values = {env_var(ref): secret_output(ref, where)
              for ref, where in secret_refs(args.dns, args.health_check, failover).items()}  # fmt: skip
    stack_file = pulumi.Output.all(**{c: pulumi.Output.from_input(a) for c, a in args.addresses.items()}).apply(
        lambda resolved: render_stack_file(args.environment, args.dns, strategies, args.routing, args.health_check,
                                           failover, resolved, args.health_urls))  # fmt: skip
    # Every cluster's namespace, account and Lease role first: each replica's peers' kubeconfigs
    # are the other clusters' account tokens.
    bases = {cloud: _cluster_base(parent, name, cloud, args) for cloud in sorted(args.clusters)}
    tokens = {cloud: base.token_kubeconfig for cloud, base in bases.items()}
    return [
        _one_cluster(parent, name, cloud, args, stack_file, values, bases[cloud], tokens)
        for cloud in sorted(args.clusters)
    ]


def token_kubeconfig(cluster: str, server: str, ca_b64: str, token_b64: str) -> str:
    """A kubeconfig that authenticates with a ServiceAccount token (the `data` of a
    service-account-token Secret: base64). No exec plugin (aws, gke-gcloud-auth-plugin,
    kubelogin) is needed in the controller's image, and it holds only that account's rights."""
    return kubeconfig(server, ca_b64, cluster, {"token": base64.b64decode(token_b64).decode()},
                      namespace=CONTROLLER_NAMESPACE)


def _meta(obj_name: str, labels: Mapping[str, str]) -> k8s.meta.v1.ObjectMetaArgs:
    return k8s.meta.v1.ObjectMetaArgs(name=obj_name, namespace=CONTROLLER_NAMESPACE, labels=dict(labels))


@dataclass(frozen=True)
class _ClusterBase:
    in_ns: pulumi.ResourceOptions  # the cluster's provider, after the namespace
    labels: dict[str, str]
    account: k8s.core.v1.ServiceAccount
    token_kubeconfig: pulumi.Output[str]  # the account's token, for the replicas in the other clouds


def _cluster_base(parent: pulumi.Resource, name: str, cloud: str, args: GlobalTrafficArgs) -> _ClusterBase:
    """Namespace, its policies, the ServiceAccount with its Lease-only Role, and a token of that
    account (a service-account-token Secret, which the token controller fills and the provider
    waits for) as a kubeconfig. The replicas in the other clouds hold this cluster's Lease with
    it: no exec plugin in the image, and nothing but Leases in this namespace."""
    ctl = args.dns.controller
    cluster = args.clusters[cloud]
    prefix = f"{name}-ctl-{cloud}"
    labels = k8s_labels(args.environment, TIER, cloud, app=APP)
    opts = pulumi.ResourceOptions(parent=parent, provider=cluster.provider)

    ns = k8s.core.v1.Namespace(f"{prefix}-ns", metadata=k8s.meta.v1.ObjectMetaArgs(
        name=CONTROLLER_NAMESPACE, labels=k8s_labels(args.environment, TIER, cloud)), opts=opts)
    # Nothing connects to the controller but Prometheus (and the kubelet's probes, always let through).
    namespace_policies(prefix, CONTROLLER_NAMESPACE,
                       [Listener(APP, (Port(name="metrics", port=ctl.metrics_port, protocol="http"),))],
                       labels=k8s_labels(args.environment, TIER, cloud), provider=cluster.provider,
                       namespace_resource=ns, parent=parent)  # fmt: skip
    in_ns = pulumi.ResourceOptions(parent=parent, provider=cluster.provider, depends_on=[ns])
    account = k8s.core.v1.ServiceAccount(f"{prefix}-sa", metadata=_meta(APP, labels), opts=in_ns)
    # Leases in this namespace only: `create` cannot be narrowed by name, get/update can.
    role = k8s.rbac.v1.Role(f"{prefix}-role", metadata=_meta(f"{APP}-leases", labels), rules=[
        k8s.rbac.v1.PolicyRuleArgs(api_groups=["coordination.k8s.io"], resources=["leases"],
                                   verbs=["get", "create", "update"]),
    ], opts=in_ns)  # fmt: skip
    k8s.rbac.v1.RoleBinding(
        f"{prefix}-rolebinding", metadata=_meta(f"{APP}-leases", labels),
        role_ref=k8s.rbac.v1.RoleRefArgs(api_group="rbac.authorization.k8s.io", kind="Role", name=role.metadata.name),
        subjects=[k8s.rbac.v1.SubjectArgs(kind="ServiceAccount", name=account.metadata.name,
                                          namespace=CONTROLLER_NAMESPACE)],
        opts=in_ns,
    )  # fmt: skip
    token = k8s.core.v1.Secret(
        f"{prefix}-token",
        metadata=k8s.meta.v1.ObjectMetaArgs(name=f"{APP}-token", namespace=CONTROLLER_NAMESPACE, labels=labels,
                                            annotations={"kubernetes.io/service-account.name": APP}),
        type="kubernetes.io/service-account-token",
        opts=pulumi.ResourceOptions(parent=parent, provider=cluster.provider, depends_on=[ns, account]),
    )  # fmt: skip
    kubeconfig = pulumi.Output.all(pulumi.Output.from_input(cluster.kubeconfig), token.data).apply(
        lambda a: token_kubeconfig(cloud, kubeconfig_server(a[0]), a[1]["ca.crt"], a[1]["token"]))
    return _ClusterBase(in_ns, labels, account, pulumi.Output.secret(kubeconfig))


def _one_cluster(parent: pulumi.Resource, name: str, cloud: str, args: GlobalTrafficArgs,
                 stack_file: pulumi.Output[str], values: Mapping[str, pulumi.Output[str]],
                 base: _ClusterBase, peer_kubeconfigs: Mapping[str, pulumi.Output[str]],
                 ) -> k8s.apps.v1.Deployment:  # fmt: skip
    ctl = args.dns.controller
    peers = sorted(c for c in args.clusters if c != cloud)
    prefix = f"{name}-ctl-{cloud}"
    labels, in_ns, account = base.labels, base.in_ns, base.account

    config = k8s.core.v1.ConfigMap(f"{prefix}-config", metadata=_meta(f"{APP}-stack", labels),
                                   data={f"Pulumi.{args.environment}.yaml": stack_file}, opts=in_ns)  # fmt: skip
    env_secret = k8s.core.v1.Secret(f"{prefix}-env", metadata=_meta(f"{APP}-env", labels), type="Opaque",
                                    string_data=pulumi.Output.secret(dict(values)), opts=in_ns)  # fmt: skip
    volumes = [
        k8s.core.v1.VolumeArgs(name="stack", config_map=k8s.core.v1.ConfigMapVolumeSourceArgs(
            name=config.metadata.name, default_mode=0o444)),
        k8s.core.v1.VolumeArgs(name="state", empty_dir=k8s.core.v1.EmptyDirVolumeSourceArgs()),
    ]  # fmt: skip
    mounts = [
        k8s.core.v1.VolumeMountArgs(name="stack", mount_path=STACK_DIR, read_only=True),
        k8s.core.v1.VolumeMountArgs(name="state", mount_path=STATE_DIR),
    ]
    kubeconfigs = None
    if peers:
        kubeconfigs = k8s.core.v1.Secret(
            f"{prefix}-kubeconfigs", metadata=_meta(f"{APP}-kubeconfigs", labels), type="Opaque",
            string_data=pulumi.Output.secret({p: peer_kubeconfigs[p] for p in peers}), opts=in_ns)  # fmt: skip
        volumes.append(k8s.core.v1.VolumeArgs(name="kubeconfigs", secret=k8s.core.v1.SecretVolumeSourceArgs(
            secret_name=kubeconfigs.metadata.name, default_mode=0o400)))  # fmt: skip
        mounts.append(k8s.core.v1.VolumeMountArgs(name="kubeconfigs", mount_path=KUBECONFIG_DIR, read_only=True))
    healthz = k8s.core.v1.HTTPGetActionArgs(path="/healthz", port=ctl.metrics_port)
    container = k8s.core.v1.ContainerArgs(
        name=APP,
        image=ctl.image,
        command=["python", "-m", "edgefabric.controller.daemon"],
        args=controller_args(args.environment, cloud, peers, ctl.lease_duration_s, ctl.metrics_port),
        env=[k8s.core.v1.EnvVarArgs(name="POD_NAME", value_from=k8s.core.v1.EnvVarSourceArgs(
            field_ref=k8s.core.v1.ObjectFieldSelectorArgs(field_path="metadata.name")))],
        env_from=[k8s.core.v1.EnvFromSourceArgs(secret_ref=k8s.core.v1.SecretEnvSourceArgs(
            name=env_secret.metadata.name))],
        ports=[k8s.core.v1.ContainerPortArgs(name="metrics", container_port=ctl.metrics_port)],
        resources=k8s.core.v1.ResourceRequirementsArgs(
            requests={"cpu": ctl.cpu, "memory": ctl.memory}, limits={"cpu": ctl.cpu, "memory": ctl.memory}),
        # /healthz answers 200 while the loop ticks (leader or standby): a stuck loop is restarted.
        liveness_probe=k8s.core.v1.ProbeArgs(http_get=healthz, initial_delay_seconds=10, period_seconds=10,
                                             timeout_seconds=3, failure_threshold=3),
        readiness_probe=k8s.core.v1.ProbeArgs(http_get=healthz, period_seconds=5, timeout_seconds=3),
        volume_mounts=mounts,
        security_context=k8s.core.v1.SecurityContextArgs(
            privileged=False, allow_privilege_escalation=False, read_only_root_filesystem=True,
            run_as_non_root=True, run_as_user=RUN_AS, run_as_group=RUN_AS,
            capabilities=k8s.core.v1.CapabilitiesArgs(drop=["ALL"])),
    )  # fmt: skip
    return k8s.apps.v1.Deployment(
        f"{prefix}-deployment",
        metadata=_meta(APP, labels),
        spec=k8s.apps.v1.DeploymentSpecArgs(
            replicas=1,
            selector=k8s.meta.v1.LabelSelectorArgs(match_labels={"app.kubernetes.io/name": APP}),
            template=k8s.core.v1.PodTemplateSpecArgs(
                # A new stack file rolls the pod: the daemon reads it at start.
                metadata=k8s.meta.v1.ObjectMetaArgs(labels=labels, annotations={
                    "edgefabric.io/stack-sha256": stack_file.apply(
                        lambda text: hashlib.sha256(text.encode()).hexdigest())}),
                spec=k8s.core.v1.PodSpecArgs(
                    service_account_name=account.metadata.name,
                    containers=[container],
                    volumes=volumes,
                    security_context=k8s.core.v1.PodSecurityContextArgs(
                        run_as_non_root=True, run_as_user=RUN_AS, fs_group=RUN_AS,
                        seccomp_profile=k8s.core.v1.SeccompProfileArgs(type="RuntimeDefault")),
                ),
            ),
        ),
        opts=in_ns,
    )  # fmt: skip
