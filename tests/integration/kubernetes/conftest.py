"""Two local Kubernetes control planes sharing one etcd, started once per session:

- `aws_cluster`: aws-flavoured (LoadBalancers answer with NLB-shaped hostnames), two kwok nodes
  of 2 cpu / 4Gi / 20 pods each;
- `azure_cluster`: azure-flavoured (LoadBalancers answer with IPs from 127.0.2.0/24), no nodes.

The binaries come from tools/kubernetes/build.sh: it is run here when they are missing (cached in
~/.cache/edgefabric/k8s; a cold build takes ~12 min), and a failed build or a missing etcd fails
the tests with the reason; nothing is skipped.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from devenv.kubernetes import (
    ClusterSpec,
    KubeApi,
    KubeBinaries,
    KubernetesError,
    LocalCluster,
    LocalEtcd,
    NodeSpec,
    ensure_binaries,
    start_etcd,
)

AWS_NODES = (
    NodeSpec("aws-node-a", cpu="2", memory="4Gi", ephemeral_storage="20Gi", pods=20,
             labels={"topology.kubernetes.io/zone": "eu-central-1a"}),
    NodeSpec("aws-node-b", cpu="2", memory="4Gi", ephemeral_storage="20Gi", pods=20,
             labels={"topology.kubernetes.io/zone": "eu-central-1b"}),
)  # fmt: skip


@pytest.fixture(scope="session")
def k8s_binaries(tmp_path_factory: pytest.TempPathFactory) -> KubeBinaries:
    build_log = tmp_path_factory.mktemp("k8s-build") / "build.log"
    try:
        with open(os.devnull, "w") as quiet:
            return ensure_binaries(build=False, log=quiet)
    except KubernetesError as exc:
        # Past pytest's capture: a cold build is long, say why the run waits and where to look.
        print(f"\n{exc}\nrunning it now; its output: {build_log}", file=sys.__stderr__, flush=True)
    try:
        with open(build_log, "w") as log:
            return ensure_binaries(build=True, log=log)
    except KubernetesError as exc:
        problem = str(exc)
    tail = build_log.read_text(errors="replace")[-3000:] if build_log.exists() else ""
    pytest.fail(f"local Kubernetes is not available: {problem}\n{tail}", pytrace=False)


@pytest.fixture(scope="session")
def shared_etcd(k8s_binaries: KubeBinaries, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalEtcd]:
    etcd = start_etcd(tmp_path_factory.mktemp("etcd"), etcd_binary=k8s_binaries.etcd)
    yield etcd
    etcd.stop()


@pytest.fixture(scope="session")
def clusters(
    k8s_binaries: KubeBinaries, shared_etcd: LocalEtcd, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, LocalCluster]]:
    specs = {
        "aws": ClusterSpec("aws", nodes=AWS_NODES, flavor="aws", region="eu-central-1"),
        "azure": ClusterSpec("azure", flavor="azure"),
    }
    started = {
        name: LocalCluster(
            spec, tmp_path_factory.mktemp(f"k8s-{name}"), etcd_url=shared_etcd.url, binaries=k8s_binaries
        )
        for name, spec in specs.items()
    }
    # Both at once: on 2 cores this is ~1.5x one cluster's start, not 2x.
    with ThreadPoolExecutor(len(started)) as pool:
        futures = {name: pool.submit(c.start) for name, c in started.items()}
        errors = []
        for name, fut in futures.items():
            try:
                fut.result()
            except KubernetesError as exc:
                errors.append(f"{name}: {exc}")
    if errors:
        for c in started.values():
            c.stop()
        pytest.fail("local Kubernetes did not start:\n" + "\n".join(errors), pytrace=False)
    yield started
    for c in started.values():
        c.stop()


@pytest.fixture(scope="session")
def aws_cluster(clusters: dict[str, LocalCluster]) -> LocalCluster:
    return clusters["aws"]


@pytest.fixture(scope="session")
def azure_cluster(clusters: dict[str, LocalCluster]) -> LocalCluster:
    return clusters["azure"]


def make_namespace(api: KubeApi) -> str:
    name = f"t-{uuid.uuid4().hex[:8]}"
    api.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    # Pods need the namespace's default service account, made by the controller manager.
    api.wait_for(
        f"service account {name}/default",
        lambda: api.request("GET", f"/api/v1/namespaces/{name}/serviceaccounts/default", ok=(404,))[0] == 200,
        timeout=30,
    )
    return name


@pytest.fixture
def aws_ns(aws_cluster: LocalCluster) -> Iterator[str]:
    api = aws_cluster.api
    ns = make_namespace(api)
    yield ns
    api.delete(f"/api/v1/namespaces/{ns}")


@pytest.fixture
def azure_ns(azure_cluster: LocalCluster) -> Iterator[str]:
    api = azure_cluster.api
    ns = make_namespace(api)
    yield ns
    api.delete(f"/api/v1/namespaces/{ns}")


def wait_for(what: str, check: Any, timeout: float = 30.0, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what}: not within {timeout} s (last: {last!r})")
