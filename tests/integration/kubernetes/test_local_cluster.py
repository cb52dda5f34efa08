"""The local Kubernetes API for real: kube-apiserver, controller-manager and scheduler built from
Go modules, kwok nodes of a declared size, Debian's etcd shared by two clusters, and the local
LoadBalancer controller answering like AWS (a hostname) and Azure (an IP)."""

from __future__ import annotations

import re
from typing import Any

from devenv.kubernetes import KubeApi, LocalCluster, cluster_status
from tests.integration.kubernetes.conftest import AWS_NODES, wait_for


def deployment(name: str, replicas: int, cpu: str = "500m", memory: str = "256Mi") -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [{
                        "name": name,
                        "image": "registry.edgefabric.local/gateway:1.0.0",
                        "resources": {"requests": {"cpu": cpu, "memory": memory}},
                    }],
                    # One per node: only a real scheduler honours this.
                    "topologySpreadConstraints": [{
                        "maxSkew": 1,
                        "topologyKey": "kubernetes.io/hostname",
                        "whenUnsatisfiable": "DoNotSchedule",
                        "labelSelector": {"matchLabels": labels},
                    }],
                },
            },
        },
    }  # fmt: skip


def lb_service(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {
            "type": "LoadBalancer",
            "selector": {"app": name},
            "ports": [{"port": 443, "targetPort": 8443}],
        },
    }


def ingress_of(api: KubeApi, ns: str, name: str) -> list[dict[str, Any]]:
    svc = api.get(f"/api/v1/namespaces/{ns}/services/{name}")
    return list(((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or [])


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in obj.get("status", {}).get("conditions") or [] if c["type"] == kind), {})


def test_kwok_nodes_are_ready_with_the_declared_capacity(aws_cluster: LocalCluster) -> None:
    nodes = {n["metadata"]["name"]: n for n in aws_cluster.api.get("/api/v1/nodes")["items"]}
    assert set(nodes) == {n.name for n in AWS_NODES}
    for spec in AWS_NODES:
        node = nodes[spec.name]
        assert condition(node, "Ready")["status"] == "True"
        assert not node["spec"].get("taints"), (
            "node-lifecycle lifts the not-ready taint once kwok reports Ready"
        )
        alloc = node["status"]["allocatable"]
        assert (alloc["cpu"], alloc["memory"], alloc["pods"]) == ("2", "4Gi", "20")
        assert (
            node["metadata"]["labels"]["topology.kubernetes.io/zone"]
            == spec.labels["topology.kubernetes.io/zone"]
        )
    version = aws_cluster.api.get("/version")
    assert version["gitVersion"] == "v1.37.2"


def test_deployment_becomes_available_spread_over_the_kwok_nodes(
    aws_cluster: LocalCluster, aws_ns: str
) -> None:
    api = aws_cluster.api
    api.create(f"/apis/apps/v1/namespaces/{aws_ns}/deployments", deployment("gateway", 2))

    def available() -> bool:
        d = api.get(f"/apis/apps/v1/namespaces/{aws_ns}/deployments/gateway")
        return condition(d, "Available").get("status") == "True" and d["status"].get("readyReplicas") == 2

    wait_for("deployment gateway Available with 2 ready replicas", available, timeout=40)
    pods = api.get(f"/api/v1/namespaces/{aws_ns}/pods", labelSelector="app=gateway")["items"]
    assert len(pods) == 2
    # Bound by kube-scheduler (not by kwok or us), one per node as the spread constraint asks.
    assert sorted(p["spec"]["nodeName"] for p in pods) == sorted(n.name for n in AWS_NODES)
    for pod in pods:
        assert pod["spec"]["schedulerName"] == "default-scheduler"
        assert condition(pod, "PodScheduled")["status"] == "True"
        assert pod["status"]["phase"] == "Running" and condition(pod, "Ready")["status"] == "True"
    events = api.get(f"/api/v1/namespaces/{aws_ns}/events", fieldSelector="reason=Scheduled")["items"]
    assert {(e.get("reportingComponent") or e["source"].get("component")) for e in events} == {
        "default-scheduler"
    }


def test_pod_larger_than_any_node_stays_pending(aws_cluster: LocalCluster, aws_ns: str) -> None:
    api = aws_cluster.api
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "too-big"},
        "spec": {"containers": [{
            "name": "c", "image": "registry.edgefabric.local/analytics:1.0.0",
            "resources": {"requests": {"cpu": "3", "memory": "1Gi"}},  # nodes have 2 cpu
        }]},
    }  # fmt: skip
    api.create(f"/api/v1/namespaces/{aws_ns}/pods", pod)

    def unschedulable() -> dict[str, Any]:
        p = api.get(f"/api/v1/namespaces/{aws_ns}/pods/too-big")
        c = condition(p, "PodScheduled")
        return p if c.get("reason") == "Unschedulable" else {}

    p = wait_for("pod too-big marked Unschedulable by the scheduler", unschedulable, timeout=30)
    assert p["status"]["phase"] == "Pending" and not p["spec"].get("nodeName")
    assert "Insufficient cpu" in condition(p, "PodScheduled")["message"]


def test_aws_load_balancer_answers_with_a_hostname_only(aws_cluster: LocalCluster, aws_ns: str) -> None:
    api = aws_cluster.api
    api.create(f"/api/v1/namespaces/{aws_ns}/services", lb_service("gateway"))
    (entry,) = wait_for("aws LoadBalancer ingress", lambda: ingress_of(api, aws_ns, "gateway"), timeout=20)
    assert set(entry) == {"hostname"}
    assert re.fullmatch(r"k8s-[a-z0-9]+-gateway-[0-9a-f]{10}-[0-9a-f]{16}\.elb\.eu-central-1\.amazonaws\.com",
                        entry["hostname"]), entry  # fmt: skip


def test_azure_load_balancer_answers_with_a_pool_ip(azure_cluster: LocalCluster, azure_ns: str) -> None:
    api = azure_cluster.api
    for name in ("gateway", "mqtt"):
        api.create(f"/api/v1/namespaces/{azure_ns}/services", lb_service(name))
    ips = set()
    for name in ("gateway", "mqtt"):
        (entry,) = wait_for(
            f"azure LoadBalancer ingress of {name}", lambda n=name: ingress_of(api, azure_ns, n), timeout=20
        )
        assert "hostname" not in entry
        assert entry["ip"].startswith("127.0.2.")
        ips.add(entry["ip"])
    assert len(ips) == 2, "each Service gets its own address"


def test_clusters_sharing_an_etcd_are_isolated(
    aws_cluster: LocalCluster, azure_cluster: LocalCluster
) -> None:
    assert aws_cluster.etcd_url == azure_cluster.etcd_url
    assert azure_cluster.api.get("/api/v1/nodes")["items"] == []
    assert len(aws_cluster.api.get("/api/v1/nodes")["items"]) == 2
    status = cluster_status(aws_cluster.dir)
    assert status is not None and all(status["running"].values()), status
    assert set(status["running"]) == {
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kwok",
        "loadbalancer",
    }
