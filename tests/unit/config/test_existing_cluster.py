"""`clouds.<cloud>.cluster.kubeconfigRef`: a cloud that brings a cluster it already runs. Its core
deploys onto that cluster (no size, no cloud resources); regions may target it; bad config names
the key path, the value and what is allowed."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edgefabric.config import ConfigError, ExistingCluster, load_config, load_stack_file, raw_from_stack_file

ROOT = Path(__file__).resolve().parents[3]
DEV = raw_from_stack_file(ROOT / "Pulumi.dev.yaml")
REF = "env:EDGEFABRIC_KUBECONFIG_AWS"


def brings(cloud: str, ref: str = REF) -> Callable[[dict], None]:
    """The cloud brings its cluster and has no cluster size."""
    def mutate(raw: dict) -> None:
        raw["clouds"][cloud]["cluster"] = {"kubeconfigRef": ref}
        raw["core"]["clusters"].pop(cloud, None)
    return mutate


def also(*mutations: Callable[[dict], None]) -> Callable[[dict], None]:
    def mutate(raw: dict) -> None:
        for m in mutations:
            m(raw)
    return mutate


def _set(path: list[Any], value: Any) -> Callable[[dict], None]:
    def mutate(raw: dict) -> None:
        node = raw
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return mutate


def loaded(mutate: Callable[[dict], None]) -> Any:
    raw = copy.deepcopy(DEV)
    mutate(raw)
    return load_config(raw)


def test_a_cloud_with_a_cluster_needs_no_size_and_keeps_its_core_and_region() -> None:
    cfg = loaded(brings("aws"))
    assert cfg.clouds.aws.cluster == ExistingCluster(kubeconfig_ref=REF)
    assert "aws" not in cfg.core.clusters
    assert cfg.clouds.provisioned == ["aws", "azure", "gcp"]  # a core on every cloud
    assert cfg.clouds.existing == ["aws"] and cfg.clouds.created == ["azure", "gcp"]
    assert [r.cloud for r in cfg.regions] == ["aws"]  # dev's region targets the brought cluster


def test_config_references_work_too() -> None:
    cfg = loaded(brings("gcp", "config:gcpKubeconfig"))
    assert cfg.clouds.gcp.cluster is not None and cfg.clouds.gcp.cluster.kubeconfig_ref == "config:gcpKubeconfig"


def test_the_local_stack_runs_every_cloud_on_a_cluster_it_brings() -> None:
    cfg = load_stack_file(ROOT / "Pulumi.local.yaml")
    assert cfg.clouds.existing == ["aws", "azure", "gcp"] and cfg.clouds.created == []
    assert not cfg.core.clusters and all(cfg.clouds.get(c).ingress is None for c in cfg.clouds.enabled)
    assert {r.cloud for r in cfg.regions} == {"aws", "azure", "gcp"}
    k8s_sites = [s for s in cfg.edge.sites if s.capabilities.runtime == "kubernetes"]
    assert len(k8s_sites) >= 2 and all(s.kubeconfig_ref == "env:EDGEFABRIC_KUBECONFIG_EDGE" for s in k8s_sites)


# (id, mutation, expected key path, expected bad value text, expected "allowed" text)
CASES: list[tuple[str, Callable[[dict], None], str, str, str]] = [
    ("cluster-and-ingress", also(brings("aws"), _set(["clouds", "aws", "ingress"], {"address": "203.0.113.10"})),
     "edgefabric:clouds.aws.cluster", "{'kubeconfigRef': 'env:EDGEFABRIC_KUBECONFIG_AWS'}", "not both"),
    ("cluster-and-a-size", _set(["clouds", "azure", "cluster"], {"kubeconfigRef": "env:AKS_KUBECONFIG"}),
     "edgefabric:core.clusters.azure", "{'nodeCount': 2", "no cluster size: clouds.azure.cluster deploys onto an "
                                                          "existing cluster"),
    ("kubeconfig-ref-not-a-reference", brings("gcp", "/home/me/.kube/config"),
     "edgefabric:clouds.gcp.cluster.kubeconfigRef", "'/home/me/.kube/config'", "must match"),
    ("kubeconfig-inline", also(brings("aws"), _set(["clouds", "aws", "cluster"], {"kubeconfig": "apiVersion: v1"})),
     "edgefabric:clouds.aws.cluster.kubeconfig", "'apiVersion: v1'", "unknown key"),
    ("kubeconfig-ref-missing", also(brings("aws"), _set(["clouds", "aws", "cluster"], {})),
     "edgefabric:clouds.aws.cluster.kubeconfigRef", "None", "Field required"),
    ("created-cloud-still-needs-a-size", also(brings("aws"), lambda raw: raw["core"]["clusters"].pop("gcp")),
     "edgefabric:core.clusters.gcp", "None", "without an ingress or an existing cluster (clouds.gcp.cluster)"),
    ("region-on-an-ingress-cloud", also(_set(["clouds", "aws", "ingress"], {"address": "203.0.113.10"}),
                                        lambda raw: raw["core"]["clusters"].pop("aws")),
     "edgefabric:regions[0].cloud", "'aws'", "a cloud whose core this stack deploys"),
]


@pytest.mark.parametrize(("mutate", "path", "value", "allowed"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_existing_cluster_config_names_key_value_and_allowed(mutate: Callable[[dict], None], path: str,
                                                                 value: str, allowed: str) -> None:
    with pytest.raises(ConfigError) as err:
        loaded(mutate)
    lines = [p for p in err.value.problems if p.startswith(f"{path} = ")]
    assert lines, f"no problem names {path}; got:\n{err.value}"
    assert any(f"= {value}" in line and allowed in line for line in lines), f"got:\n{err.value}"
