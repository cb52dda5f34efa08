"""Kubernetes objects for one containerised service, shared by the core and regional tiers.

A service becomes a Deployment (requests, limits, liveness and readiness probes, a
non-root security context), a Service, a PodDisruptionBudget when it has more than one
replica, and a HorizontalPodAutoscaler when it asks for one. Edge sites build their own
objects (edgefabric/tiers/edge_sites.py) because they add node selectors and tolerations and
derive resources from the site's requirements.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s

from edgefabric.config import Autoscale, Port, Workload, cpu_cores, memory_mb


@dataclass(frozen=True)
class PodShape:
    """What a Deployment needs beyond the workload itself."""

    labels: dict[str, str]
    cpu_limit: str
    memory_limit: str
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, str]] = field(default_factory=list)


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
              run_as_non_root: bool = True) -> k8s.core.v1.ContainerArgs:
    first = ports[0]
    return k8s.core.v1.ContainerArgs(
        name=name,
        image=image,
        ports=[k8s.core.v1.ContainerPortArgs(name=p.name, container_port=p.container_port) for p in ports],
        env=[k8s.core.v1.EnvVarArgs(name=k, value=v) for k, v in sorted((env or {}).items())],
        resources=k8s.core.v1.ResourceRequirementsArgs(
            requests={"cpu": cpu, "memory": memory},
            limits={"cpu": cpu_limit, "memory": memory_limit},
        ),
        liveness_probe=probe(first, health_path, initial_delay=15, period=20),
        readiness_probe=probe(first, health_path, initial_delay=5, period=10),
        security_context=k8s.core.v1.SecurityContextArgs(
            run_as_non_root=run_as_non_root,
            allow_privilege_escalation=False,
            privileged=False,
        ),
    )


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
) -> DeployedService:
    """Register the Kubernetes objects of one service under `parent`, through `provider`.

    The namespace is named statically and ordered with `depends_on`, rather than threaded
    through as an Output: the name is known up front, and every Output input costs the SDK
    a task per resource at registration.
    """
    opts = pulumi.ResourceOptions(parent=parent, provider=provider, depends_on=[namespace_resource])
    selector = {"app.kubernetes.io/name": workload.name}
    labels = {**shape.labels, **selector}
    meta = k8s.meta.v1.ObjectMetaArgs(name=workload.name, namespace=namespace, labels=labels)
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
                        run_as_non_root=run_as_non_root,
                    )],
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
        metadata=meta,
        spec=k8s.core.v1.ServiceSpecArgs(
            type=service_type,
            selector=selector,
            ports=[k8s.core.v1.ServicePortArgs(name=p.name, port=p.port, target_port=p.container_port,
                                               app_protocol=_app_protocol(p))
                   for p in workload.ports],
        ),
        opts=opts,
    )
    if workload.replicas > 1 or autoscale:
        # Keep at least one pod through node drains and cluster upgrades.
        k8s.policy.v1.PodDisruptionBudget(
            resource_name,
            metadata=meta,
            spec=k8s.policy.v1.PodDisruptionBudgetSpecArgs(
                min_available=1, selector=k8s.meta.v1.LabelSelectorArgs(match_labels=selector),
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
    return {"http2": "kubernetes.io/h2c", "grpc": "kubernetes.io/h2c",
            "websocket": "kubernetes.io/ws"}.get(port.protocol)
