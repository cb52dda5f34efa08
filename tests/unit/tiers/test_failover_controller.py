"""The failover controller in the core clusters (`dns.controller.deploy`), rendered under mocks
from the shipped stacks: one Deployment per core cluster, what it is given, what it may do, and
that the stack file it reads is the stack's own record with no secret in it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from edgefabric.config import load_stack_file
from edgefabric.config.loading import load_config, raw_from_stack_file
from edgefabric.controller.daemon import failover_spec
from edgefabric.errors import ConfigError
from edgefabric.tiers import failover_controller as fc
from edgefabric.tiers.labels import K8S_LABEL_KEYS
from edgefabric.traffic.lease import IN_CLUSTER
from tests.unit.tiers.conftest import ROOT, rendered_stack
from tooling.render import Registered

CLOUDS = ("aws", "azure", "gcp")


def _mine(stack: str) -> list[Registered]:
    return [r for r in rendered_stack(stack).resources if r.name.startswith("global-ctl-")]


def _one(stack: str, cloud: str, suffix: str) -> Registered:
    (found,) = [r for r in _mine(stack) if r.name == f"global-ctl-{cloud}-{suffix}"]
    return found


def test_local_runs_one_controller_per_core_cluster() -> None:
    deployments = [r for r in _mine("local") if r.type == "kubernetes:apps/v1:Deployment"]
    assert sorted(d.name for d in deployments) == [f"global-ctl-{c}-deployment" for c in CLOUDS]
    for r in _mine("local"):
        labels = r.inputs["metadata"]["labels"]
        assert set(K8S_LABEL_KEYS) <= set(labels), (r.name, labels)
        assert r.provider.split("::")[-2].endswith(f"{r.name.split('-')[2]}-k8s"), (r.name, r.provider)
    # Off unless asked for: the cloud stacks keep it off.
    for stack in ("dev", "staging", "prod"):
        assert not _mine(stack), stack


@pytest.mark.parametrize("cloud", CLOUDS)
def test_the_deployment_is_pinned_non_root_probed_and_holds_the_quorum(cloud: str) -> None:
    cfg = load_stack_file(ROOT / "Pulumi.local.yaml")
    assert cfg.dns is not None
    ctl = cfg.dns.controller
    spec = _one("local", cloud, "deployment").inputs["spec"]
    pod = spec["template"]["spec"]
    (c,) = pod["containers"]
    assert spec["replicas"] == 1 and c["image"] == ctl.image and ":" in c["image"] and "latest" not in c["image"]
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 65532 and sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": ctl.metrics_port}
    assert c["ports"] == [{"name": "metrics", "containerPort": ctl.metrics_port}]
    assert c["command"] == ["python", "-m", "edgefabric.controller.daemon"]
    args = c["args"]
    pairs = [args[i + 1] for i, a in enumerate(args) if a == "--lease-kubeconfig"]
    peers = [p for p in CLOUDS if p != cloud]
    assert pairs == [f"{cloud}={IN_CLUSTER}", *(f"{p}={fc.KUBECONFIG_DIR}/{p}" for p in peers)]
    assert args[args.index("--lease-duration") + 1] == str(ctl.lease_duration_s)
    assert args[args.index("--stack") + 1] == "local" and args[args.index("--identity") + 1] == "$(POD_NAME)"
    # Secrets by reference: an env Secret and the peers' kubeconfigs, never a value in the pod spec.
    assert c["envFrom"] == [{"secretRef": {"name": "failover-controller-env"}}]
    assert pod["serviceAccountName"] == "failover-controller"
    kubeconfigs = _one("local", cloud, "kubeconfigs")
    assert sorted(kubeconfigs.inputs["stringData"]) == peers
    assert "stringData" in kubeconfigs.secret_inputs
    env = _one("local", cloud, "env")
    assert env.inputs["stringData"] == {"EDGEFABRIC_SECRET_POWERDNSAPIKEY": "mock-secret-powerdnsApiKey"}
    assert "stringData" in env.secret_inputs


@pytest.mark.parametrize("cloud", CLOUDS)
def test_peers_hold_the_lease_with_the_other_clusters_tokens_not_the_deployers_identity(cloud: str) -> None:
    """Each cluster gets a service-account-token Secret of the controller's account; a replica's
    kubeconfigs for its peers carry their tokens (no exec plugin, nothing but Leases there)."""
    rendered = rendered_stack("local")
    token = _one("local", cloud, "token")
    assert token.inputs["type"] == "kubernetes.io/service-account-token"
    assert token.inputs["metadata"]["annotations"] == {"kubernetes.io/service-account.name": fc.APP}
    assert token.inputs["metadata"]["namespace"] == fc.CONTROLLER_NAMESPACE
    stack_kubeconfigs = {c: yaml.safe_load(k) for c, k in rendered.outputs["kubeconfigs"].items()}
    peers = sorted(c for c in CLOUDS if c != cloud)
    for peer, text in _one("local", cloud, "kubeconfigs").inputs["stringData"].items():
        kubeconfig = yaml.safe_load(text)
        (user,) = kubeconfig["users"]
        assert set(user["user"]) == {"token"} and "exec" not in text, user  # no exec plugin, no client key
        (cluster,) = kubeconfig["clusters"]
        assert cluster["cluster"]["server"] == stack_kubeconfigs[peer]["clusters"][0]["cluster"]["server"]
        assert kubeconfig["contexts"][0]["context"]["namespace"] == fc.CONTROLLER_NAMESPACE
        assert text != rendered.outputs["kubeconfigs"][peer]  # not the deployer's credentials
    assert sorted(_one("local", cloud, "kubeconfigs").inputs["stringData"]) == peers


def test_pulumi_up_reads_the_controllers_leases_only_where_they_run() -> None:
    """With `dns.controller.deploy`, WeightedFailover gets every core cluster's kubeconfig (a
    secret) and the Leases' namespace, so `up` follows a live controller; without, nothing."""
    (failover,) = [r for r in rendered_stack("local").resources if r.name == "global-failover"]
    lease = failover.inputs["lease"]
    assert lease["namespace"] == fc.CONTROLLER_NAMESPACE and sorted(lease["kubeconfigs"]) == list(CLOUDS)
    assert "lease" in failover.secret_inputs
    for stack in ("dev", "staging", "prod"):
        (failover,) = [r for r in rendered_stack(stack).resources if r.name == "global-failover"]
        assert failover.inputs.get("lease") is None, stack


def test_rbac_is_leases_in_its_namespace_only() -> None:
    role = _one("local", "aws", "role").inputs
    assert role["metadata"]["namespace"] == fc.CONTROLLER_NAMESPACE
    assert role["rules"] == [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                              "verbs": ["get", "create", "update"]}]  # fmt: skip
    binding = _one("local", "aws", "rolebinding").inputs
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "failover-controller",
                                    "namespace": fc.CONTROLLER_NAMESPACE}]  # fmt: skip


def test_the_stack_file_it_reads_is_the_stacks_record_without_secrets(tmp_path: Path) -> None:
    text = _one("local", "gcp", "config").inputs["data"]["Pulumi.local.yaml"]
    shipped = yaml.safe_load((ROOT / "Pulumi.local.yaml").read_text())["config"]
    secure = [v["secure"] for v in shipped.values() if isinstance(v, dict) and "secure" in v]
    assert secure and not any(s in text for s in secure) and "mock-secret" not in text
    (tmp_path / "Pulumi.local.yaml").write_text(text)
    mine, theirs = load_stack_file(tmp_path / "Pulumi.local.yaml"), load_stack_file(ROOT / "Pulumi.local.yaml")
    assert mine.dns is not None and theirs.dns is not None
    assert mine.dns.controller.deploy is False  # a controller deploys nothing
    assert mine.dns.model_dump(exclude={"controller"}) == theirs.dns.model_dump(exclude={"controller"})
    assert mine.health_check == theirs.health_check and mine.routing == theirs.routing
    spec = failover_spec(mine)
    assert spec.record_name == theirs.dns.record_name
    # Each cloud at the address the stack deployed (the mocks' load balancers: aws a hostname).
    assert spec.endpoints["aws"].is_name and not spec.endpoints["azure"].is_name


def _local_raw(**controller: Any) -> dict[str, Any]:
    raw = raw_from_stack_file(ROOT / "Pulumi.local.yaml")
    raw["dns"] = {**raw["dns"], "controller": {"deploy": True, **controller}}
    return raw


def test_config_rules_name_the_keys() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(_local_raw(leaseDurationS=20))
    text = str(err.value)
    assert "edgefabric:dns.controller.leaseDurationS = 20" in text and "dns.applyTimeoutS (20)" in text
    raw = _local_raw(leaseDurationS=1, image="ghcr.io/edgefabric/failover-controller:latest")
    with pytest.raises(ConfigError) as err:
        load_config(raw)
    text = str(err.value)
    assert "dns.controller.leaseDurationS" in text and "dns.controller.image" in text and "latest" in text
    # Nowhere to run: every cloud answers at an ingress the stack names.
    raw = _local_raw()
    raw["clouds"] = {c: {"enabled": True, "ingress": {"address": f"203.0.113.{i + 1}"}} for i, c in enumerate(CLOUDS)}
    with pytest.raises(ConfigError) as err:
        load_config(raw)
    assert "edgefabric:dns.controller.deploy = True: a core cluster to run in" in str(err.value)


def test_secret_refs_cover_every_reference_the_controller_resolves() -> None:
    raw = _local_raw()
    raw["failover"] = {"notifications": [{"type": "slack", "urlRef": "env:SLACK_URL"},
                                         {"type": "pagerduty", "routingKeyRef": "config:pdKey"}]}  # fmt: skip
    raw["healthCheck"] = {**raw["healthCheck"], "check": {**raw["healthCheck"]["check"], "scheme": "https",
                                                          "caBundleRef": "config:probeCa"}}  # fmt: skip
    cfg = load_config(raw)
    assert cfg.dns is not None
    refs = fc.secret_refs(cfg.dns, cfg.health_check, cfg.failover)
    assert refs == {"config:powerdnsApiKey": "dns.backends.powerdns.apiKeyRef",
                    "config:probeCa": "healthCheck.check.caBundleRef",
                    "env:SLACK_URL": "failover.notifications[0].urlRef",
                    "config:pdKey": "failover.notifications[1].routingKeyRef"}  # fmt: skip
    assert {fc.env_var(r) for r in refs} == {"EDGEFABRIC_SECRET_POWERDNSAPIKEY", "EDGEFABRIC_SECRET_PROBECA",
                                             "SLACK_URL", "EDGEFABRIC_SECRET_PDKEY"}  # fmt: skip


def test_replicas_need_api_servers_they_can_reach_across_clouds() -> None:
    # prod's clusters have private endpoints (apiAccess: runner): a replica in aws could never
    # take the lease in azure's or gcp's cluster, so the quorum could never form.
    raw = raw_from_stack_file(ROOT / "Pulumi.prod.yaml")
    raw["dns"] = {**raw["dns"], "controller": {"deploy": True, "leaseDurationS": 90}}
    with pytest.raises(ConfigError) as err:
        load_config(raw)
    assert ("edgefabric:dns.controller.deploy = True: API servers the replicas can reach across clouds: "
            "aws, azure, gcp have private endpoints") in str(err.value)
    # Public endpoints restricted to the other clouds' NAT addresses: accepted.
    for size in raw["core"]["clusters"].values():
        size["apiAccess"], size["apiAllowedCidrs"] = "public", ["198.18.10.0/28"]
    assert load_config(raw).dns.controller.deploy is True  # type: ignore[union-attr]
