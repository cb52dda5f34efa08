"""Kubernetes objects for one containerised service, shared by the core and regional tiers.

A service becomes a Deployment (requests, limits, liveness and readiness probes, a
non-root security context with the image's numeric user, and the command and mounted config
that make the image serve its probed port: `edgefabric.tiers.images`), a Service, a
PodDisruptionBudget when it has more than one replica (unready pods stay evictable), and a
HorizontalPodAutoscaler when it asks for one. Edge sites build their own
objects (edgefabric/tiers/edge_sites.py) because they add node selectors and tolerations and
derive resources from the site's requirements.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from edgefabric.config import Autoscale, Port, Workload, cpu_cores, memory_mb
from edgefabric.tiers.images import ImageRuntime, KeycloakDatabase, facts_for, runtime_for

# The pod volume that carries an image's config files (envoy.yaml, default.vcl, ...).
CONFIG_VOLUME = "image-config"


@dataclass(frozen=True)
class PodShape:
    """What a Deployment needs beyond the workload itself."""

    labels: dict[str, str]
    cpu_limit: str
    memory_limit: str
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, str]] = field(default_factory=list)


def lb_annotations(cloud: str, *, internal: bool = False) -> dict[str, str]:
    """What makes a LoadBalancer Service internet-facing (or internal) and of the right kind
    on `cloud`. On EKS, without annotations the cloud controller makes a Classic ELB; `nlb`
    makes a Network Load Balancer, internet-facing in the public subnets tagged
    kubernetes.io/role/elb (internal ones in the private subnets). AKS and GKE make a public
    L4 load balancer unless told it is internal."""
    if cloud == "aws":
        return {"service.beta.kubernetes.io/aws-load-balancer-type": "nlb",
                "service.beta.kubernetes.io/aws-load-balancer-scheme": "internal" if internal else "internet-facing",
                "service.beta.kubernetes.io/aws-load-balancer-cross-zone-load-balancing-enabled": "true"}
    if not internal:
        return {}
    return {"azure": {"service.beta.kubernetes.io/azure-load-balancer-internal": "true"},
            "gcp": {"networking.gke.io/load-balancer-type": "Internal"}}.get(cloud, {})


def lb_address(status: object) -> str:
    """The load balancer's address from a Service's `status.loadBalancer.ingress`: the first
    entry's `ip`, or its `hostname` when it has no ip, which is all an AWS load balancer
    (an EKS NLB or ELB) ever reports. "" while nothing is reported yet. Reads the SDK's
    typed status and a plain dict (camelCase) alike."""

    def get(obj: object, key: str) -> Any:
        return obj.get(key) if isinstance(obj, Mapping) else getattr(obj, key, None)

    lb = get(status, "load_balancer") or get(status, "loadBalancer")
    for point in (get(lb, "ingress") if lb is not None else None) or []:
        address = get(point, "ip") or get(point, "hostname")
        if address:
            return str(address)
    return ""


def default_limits(workload: Workload) -> tuple[str, str]:
    """Limits default to twice the request: headroom for bursts without starving neighbours."""
    cpu = workload.cpu_limit or f"{round(cpu_cores(workload.cpu) * 2000)}m"
    memory = workload.memory_limit or f"{round(memory_mb(workload.memory) * 2)}Mi"
    return cpu, memory


def probe(port: Port, path: str, *, initial_delay: int, period: int) -> k8s.core.v1.ProbeArgs:
    # gRPC/TCP/MQTT listeners have no HTTP path to ask; a TCP connect is the honest check.
    if port.protocol in ("http", "http2", "websocket"):
        return k8s.core.v1.ProbeArgs(
            http_get=k8s.core.v1.HTTPGetActionArgs(path=path, port=port.container_port),
            initial_delay_seconds=initial_delay, period_seconds=period, timeout_seconds=2,
        )
    if port.protocol == "grpc":
        return k8s.core.v1.ProbeArgs(
            grpc=k8s.core.v1.GRPCActionArgs(port=port.container_port),
            initial_delay_seconds=initial_delay, period_seconds=period, timeout_seconds=2,
        )
    return k8s.core.v1.ProbeArgs(
        tcp_socket=k8s.core.v1.TCPSocketActionArgs(port=port.container_port),
        initial_delay_seconds=initial_delay, period_seconds=period, timeout_seconds=2,
    )


def container(name: str, image: str, ports: list[Port], health_path: str, *, cpu: str, memory: str,
              cpu_limit: str, memory_limit: str, env: dict[str, str] | None = None,
              run_as_non_root: bool = True, runtime: ImageRuntime | None = None) -> k8s.core.v1.ContainerArgs:
    """One container. `runtime` (from `images.runtime_for`) says how the image must be run to
    serve its probed port; without it, the image's numeric user from image_facts.yaml is
    still set, since runAsNonRoot cannot be verified against root or a named USER."""
    if runtime is None:
        facts = facts_for(image)
        runtime = ImageRuntime(run_as_user=facts.run_as_user, run_as_group=facts.run_as_group) if facts \
            else ImageRuntime()
    first = ports[0]
    if runtime.probe is not None:
        target = runtime.probe
        health_port = Port(name="health", port=target.port, protocol="http")
        liveness = probe(health_port, target.liveness_path, initial_delay=15, period=20)
        readiness = probe(health_port, target.readiness_path, initial_delay=5, period=10)
    else:
        liveness = probe(first, health_path, initial_delay=15, period=20)
        readiness = probe(first, health_path, initial_delay=5, period=10)
    all_env = {**(env or {}), **runtime.env}
    env_vars = [k8s.core.v1.EnvVarArgs(name=k, value=v) for k, v in sorted(all_env.items())]
    env_vars += [k8s.core.v1.EnvVarArgs(name=k, value_from=k8s.core.v1.EnvVarSourceArgs(
                     secret_key_ref=k8s.core.v1.SecretKeySelectorArgs(name=secret, key=key)))
                 for k, (secret, key) in sorted(runtime.secret_env.items())]
    return k8s.core.v1.ContainerArgs(
        name=name,
        image=image,
        command=runtime.command,
        args=runtime.args,
        ports=[k8s.core.v1.ContainerPortArgs(name=p.name, container_port=p.container_port)
               for p in [*ports, *runtime.extra_ports]],
        env=env_vars,
        resources=k8s.core.v1.ResourceRequirementsArgs(
            requests={"cpu": cpu, "memory": memory},
            limits={"cpu": cpu_limit, "memory": memory_limit},
        ),
        liveness_probe=liveness,
        readiness_probe=readiness,
        volume_mounts=[k8s.core.v1.VolumeMountArgs(name=CONFIG_VOLUME, mount_path=runtime.config_dir,
                                                   read_only=True)]
        if runtime.config_files and runtime.config_dir else None,
        security_context=k8s.core.v1.SecurityContextArgs(
            run_as_non_root=run_as_non_root,
            run_as_user=runtime.run_as_user,
            run_as_group=runtime.run_as_group,
            allow_privilege_escalation=False,
            privileged=False,
        ),
    )


def config_volumes(resource_name: str, config_name: str, namespace: str, runtime: ImageRuntime,
                   labels: dict[str, str], opts: pulumi.ResourceOptions) -> list[k8s.core.v1.VolumeArgs] | None:
    """The ConfigMap holding `runtime`'s config files and the pod volume that mounts it, or
    None when the image needs no file of ours."""
    if not runtime.config_files:
        return None
    k8s.core.v1.ConfigMap(
        resource_name,
        metadata=k8s.meta.v1.ObjectMetaArgs(name=config_name, namespace=namespace, labels=labels),
        data=dict(runtime.config_files), opts=opts)
    return [k8s.core.v1.VolumeArgs(name=CONFIG_VOLUME, config_map=k8s.core.v1.ConfigMapVolumeSourceArgs(
        name=config_name))]


@dataclass
class DeployedService:
    deployment: k8s.apps.v1.Deployment
    service: k8s.core.v1.Service


def deploy_service(
    resource_name: str,
    workload: Workload,
    *,
    namespace: str,
    namespace_resource: pulumi.Resource,
    shape: PodShape,
    provider: k8s.Provider,
    parent: pulumi.Resource,
    service_type: str = "ClusterIP",
    autoscale: Autoscale | None = None,
    run_as_non_root: bool = True,
    backend: str | None = None,
    database: KeycloakDatabase | None = None,
    runtime: ImageRuntime | None = None,
    service_annotations: dict[str, str] | None = None,
    source_ranges: list[str] | None = None,
) -> DeployedService:
    """Register the Kubernetes objects of one service under `parent`, through `provider`.

    The namespace is named statically and ordered with `depends_on`, rather than threaded
    through as an Output: the name is known up front, and every Output input costs the SDK
    a task per resource at registration.

    `backend` (`host:port`) is what a cache image fronts, `database` Keycloak's; `runtime`
    replaces what `images.runtime_for` derives from them (e.g. a broker config of its own).
    """
    if runtime is None:
        runtime = runtime_for(workload, backend=backend, database=database)
    opts = pulumi.ResourceOptions(parent=parent, provider=provider, depends_on=[namespace_resource])
    selector = {"app.kubernetes.io/name": workload.name}
    labels = {**shape.labels, **selector}
    meta = k8s.meta.v1.ObjectMetaArgs(name=workload.name, namespace=namespace, labels=labels)
    volumes = config_volumes(resource_name, f"{workload.name}-config", namespace, runtime, labels, opts)
    deployment = k8s.apps.v1.Deployment(
        resource_name,
        metadata=meta,
        spec=k8s.apps.v1.DeploymentSpecArgs(
            replicas=None if autoscale else workload.replicas,
            selector=k8s.meta.v1.LabelSelectorArgs(match_labels=selector),
            template=k8s.core.v1.PodTemplateSpecArgs(
                metadata=k8s.meta.v1.ObjectMetaArgs(labels=labels),
                spec=k8s.core.v1.PodSpecArgs(
                    containers=[container(
                        workload.name, workload.image, workload.ports, workload.health_path,
                        cpu=workload.cpu, memory=workload.memory, cpu_limit=shape.cpu_limit,
                        memory_limit=shape.memory_limit, env=workload.env,
                        run_as_non_root=run_as_non_root, runtime=runtime,
                    )],
                    volumes=volumes,
                    node_selector=shape.node_selector or None,
                    tolerations=[k8s.core.v1.TolerationArgs(key=t.get("key"), operator=t.get("operator"),
                                                             value=t.get("value"), effect=t.get("effect"))
                                 for t in shape.tolerations] or None,
                ),
            ),
        ),
        opts=opts,
    )
    service = k8s.core.v1.Service(
        resource_name,
        metadata=k8s.meta.v1.ObjectMetaArgs(name=workload.name, namespace=namespace, labels=labels,
                                            annotations=service_annotations or None),
        spec=k8s.core.v1.ServiceSpecArgs(
            type=service_type,
            selector=selector,
            load_balancer_source_ranges=source_ranges or None,
            ports=[k8s.core.v1.ServicePortArgs(name=p.name, port=p.port, target_port=p.container_port,
                                               app_protocol=_app_protocol(p))
                   for p in workload.ports],
        ),
        opts=opts,
    )
    if workload.replicas > 1 or autoscale:
        # Keep at least one pod through node drains and cluster upgrades. Pods that are not
        # Ready protect nothing: AlwaysAllow lets a drain evict them, where the default
        # (IfHealthyBudget) would block every drain and upgrade while one is crash-looping.
        k8s.policy.v1.PodDisruptionBudget(
            resource_name,
            metadata=meta,
            spec=k8s.policy.v1.PodDisruptionBudgetSpecArgs(
                min_available=1, selector=k8s.meta.v1.LabelSelectorArgs(match_labels=selector),
                unhealthy_pod_eviction_policy="AlwaysAllow",
            ),
            opts=opts,
        )
    if autoscale:
        k8s.autoscaling.v2.HorizontalPodAutoscaler(
            resource_name,
            metadata=meta,
            spec=k8s.autoscaling.v2.HorizontalPodAutoscalerSpecArgs(
                scale_target_ref=k8s.autoscaling.v2.CrossVersionObjectReferenceArgs(
                    api_version="apps/v1", kind="Deployment", name=workload.name,
                ),
                min_replicas=autoscale.min_replicas,
                max_replicas=autoscale.max_replicas,
                metrics=[k8s.autoscaling.v2.MetricSpecArgs(
                    type="Resource",
                    resource=k8s.autoscaling.v2.ResourceMetricSourceArgs(
                        name="cpu",
                        target=k8s.autoscaling.v2.MetricTargetArgs(
                            type="Utilization", average_utilization=autoscale.cpu_percent,
                        ),
                    ),
                )],
            ),
            opts=opts,
        )
    return DeployedService(deployment=deployment, service=service)


def _app_protocol(port: Port) -> str | None:
    # Tells the cloud load balancer to speak HTTP/2 or gRPC upstream instead of HTTP/1.1.
    # Plain HTTP says so too: what a port speaks is then on the Service, where load
    # balancers and policies (no-plain-public-l4) read it.
    return {"http": "http", "http2": "kubernetes.io/h2c", "grpc": "kubernetes.io/h2c",
            "websocket": "kubernetes.io/ws"}.get(port.protocol)
