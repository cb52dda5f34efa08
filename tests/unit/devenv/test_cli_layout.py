"""What `scripts/local-env` plans from a stack file (no process started): the clusters, their
nodes and ports, where the endpoints listen, and the environment it hands the program."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from devenv.cli import LocalEnv, LocalEnvError, layout_from_stack_file

ROOT = Path(__file__).resolve().parents[3]
LOCAL = ROOT / "Pulumi.local.yaml"


def test_the_local_stack_asks_for_a_cluster_per_cloud_and_one_for_the_edge() -> None:
    layout = layout_from_stack_file(LOCAL, k8s_port_base=30000)
    plans = {p.name: p for p in layout.cluster_plans}
    assert list(plans) == ["aws", "azure", "gcp", "edge"]
    assert [p.flavor for p in plans.values()] == ["aws", "azure", "gcp", "generic"]
    assert plans["aws"].region == "us-east-1"
    assert [p.ports["apiserver"] for p in plans.values()] == [30000, 30010, 30020, 30030]
    assert plans["aws"].kubeconfig_ref == "env:EDGEFABRIC_KUBECONFIG_AWS" and plans["aws"].env_name == "EDGEFABRIC_KUBECONFIG_AWS"
    # The endpoints listen where the api-gateways' load balancers answer.
    assert layout.endpoint_ips == {"aws": "127.0.1.1", "azure": "127.0.2.1", "gcp": "127.0.3.1"}
    # aws: hostnames published in the local PowerDNS, pointing at the aws endpoint; the key in
    # the controller's environment, not on its command line.
    spec = plans["aws"].spec(layout)
    assert spec.lb_args == ("--dns-api", layout.pdns_api_url, "--dns-address", "127.0.1.1")
    assert layout.pdns_api_key not in spec.lb_args and spec.lb_env


def test_each_edge_site_gets_a_node_of_its_declared_size_labelled_and_tainted_for_it() -> None:
    edge = {p.name: p for p in layout_from_stack_file(LOCAL).cluster_plans}["edge"]
    sites = yaml.safe_load(LOCAL.read_text())["config"]["edgefabric:edge"]["sites"]
    assert edge.sites == [s["name"] for s in sites]
    for site, node in zip(sites, edge.spec(layout_from_stack_file(LOCAL)).nodes[:len(sites)], strict=True):
        caps = site["capabilities"]
        assert (node.cpu, node.memory, node.ephemeral_storage) == (
            f"{caps['cpu']:g}", f"{caps['memoryMb']}Mi", f"{caps['storageMb']}Mi")
        assert node.labels["node-role.edgefabric.io/edge"] == "true" and node.labels["edgefabric.io/site"] == site["name"]
        assert [(t.key, t.value, t.effect) for t in node.taints] == [("edgefabric.io/edge", site["name"], "NoSchedule")]


def test_a_far_region_that_brings_its_cluster_gets_untainted_nodes_of_its_cloud_there() -> None:
    """us-west (aws, us-west-2) names the edge cluster's kubeconfig: two nodes of an aws machine
    in its location, untainted (the sites' nodes are tainted, so its pods land on these)."""
    edge = {p.name: p for p in layout_from_stack_file(LOCAL).cluster_plans}["edge"]
    nodes = [n for n in edge.spec(layout_from_stack_file(LOCAL)).nodes if n.name.startswith("us-west-")]
    assert [n.name for n in nodes] == ["us-west-node-a", "us-west-node-b"] and edge.regions == ["us-west"]
    for node in nodes:
        assert node.taints == () and node.labels["node.kubernetes.io/instance-type"] == "m5.xlarge"
        assert node.labels["topology.kubernetes.io/region"] == "us-west-2"


def test_a_stack_of_stand_in_ingresses_asks_for_no_cluster(tmp_path: Path) -> None:
    doc = yaml.safe_load(LOCAL.read_text())
    doc["config"]["edgefabric:clouds"] = {c: {"enabled": True, "ingress": {"address": f"127.0.1.{i + 1}"}}
                                          for i, c in enumerate(("aws", "azure", "gcp"))}
    doc["config"].pop("edgefabric:edge")
    doc["config"]["edgefabric:regions"] = [r for r in doc["config"]["edgefabric:regions"] if "kubeconfigRef" not in r]
    path = tmp_path / "Pulumi.old.yaml"
    path.write_text(yaml.safe_dump(doc))
    layout = layout_from_stack_file(path)
    assert layout.clusters == [] and layout.endpoint_ips == {"aws": "127.0.1.1", "azure": "127.0.1.2", "gcp": "127.0.1.3"}


def test_a_reference_that_names_no_cluster_is_refused(tmp_path: Path) -> None:
    doc = yaml.safe_load(LOCAL.read_text())
    doc["config"]["edgefabric:edge"]["sites"][0]["kubeconfigRef"] = "env:EDGEFABRIC_KUBECONFIG_ANVIL"
    path = tmp_path / "Pulumi.bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(LocalEnvError, match="no cluster name can be made of it"):
        layout_from_stack_file(path)


def test_the_program_gets_file_contents_and_the_shell_gets_only_paths(tmp_path: Path) -> None:
    env = LocalEnv(tmp_path, layout_from_stack_file(LOCAL, pdns_dns_port=25353))
    (tmp_path / "aws").mkdir()
    env.kubeconfig_path("aws").write_text("apiVersion: v1\nclient-key-data: c2VjcmV0\n")
    program = env.program_env()
    assert program["EDGEFABRIC_KUBECONFIG_AWS"].endswith("client-key-data: c2VjcmV0\n")
    assert program["EDGEFABRIC_RESOLVER"] == "127.0.0.1:25353"
    assert program["PULUMI_K8S_ENABLE_PATCH_FORCE"] == "true"
    exports = "\n".join(env.env_exports())
    assert f'export EDGEFABRIC_KUBECONFIG_AWS="$(cat {tmp_path}/aws/kubeconfig)"' in exports
    assert "c2VjcmV0" not in exports


class RecordingRecords:
    """Stands in for HostnameRecords (the local PowerDNS): records what is published, in order
    with the status patches."""

    def __init__(self, log: list[str]) -> None:
        self.log = log

    def publish(self, hostname: str) -> None:
        self.log.append(f"publish {hostname}")

    def withdraw(self, hostname: str) -> None:
        self.log.append(f"withdraw {hostname}")


def test_an_aws_hostname_resolves_before_the_service_reports_it_and_stops_when_it_goes() -> None:
    from devenv.loadbalancer import LoadBalancerController, scheme_for
    from tests.unit.devenv.test_loadbalancer import FakeApi, svc

    log: list[str] = []
    api = FakeApi([])
    api.merge_patch = lambda path, body: log.append(f"patch {path}") or body  # type: ignore[method-assign]
    ctl = LoadBalancerController(api, scheme_for("aws", "aws"), records=RecordingRecords(log))  # type: ignore[arg-type]
    assert ctl.sync(svc("gw"))
    [published, patched] = log
    hostname = published.removeprefix("publish ")
    assert hostname.endswith(".elb.us-east-1.amazonaws.com") and patched.endswith("/services/gw/status")
    # Answered already: nothing is published again until the next re-list.
    assert not ctl.sync(svc("gw", ingress=[{"hostname": hostname}])) and len(log) == 2
    ctl.forget(svc("gw", ingress=[{"hostname": hostname}]))
    assert log[-1] == f"withdraw {hostname}"
