"""One writer across clouds: controller processes on loopback share a quorum of Kubernetes
Leases, one per core cluster (three real kube-apiservers over one etcd, each under its own
prefix: no controllers or nodes, a Lease needs only the API).

- one controller per cloud; the first leads, holding the Lease in all three clusters; the
  others stand by and write nothing;
- the leader is killed (SIGKILL: no release): another takes over within two lease periods;
- the new leader's cloud is lost (its API server stops): it keeps leading on the two
  clusters left (a majority); then it dies with its cloud and the last controller takes
  over on those two, again within two lease periods.

Besides the unit-free checks of the lease objects themselves: a minority never leads, and
a stale resourceVersion loses the race (optimistic concurrency).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client import CoreV1Api
from kubernetes.client.exceptions import ApiException

from devenv.endpoints import LocalEndpoints
from devenv.kubernetes import ClusterSpec, KubeApi, KubeBinaries, LocalCluster, LocalEtcd
from devenv.powerdns import PowerDnsServer
from edgefabric.config import load_stack_file
from edgefabric.controller.daemon import failover_spec
from edgefabric.dynamic.failover import PROVIDER_VERSION, SECRET_OUTPUTS, WeightedFailoverProvider
from edgefabric.traffic.lease import (
    KubernetesLease,
    QuorumLease,
    api_client,
    lease_object_name,
    quorum_lease_holder,
)
from tests.integration.conftest import ZONE
from tests.integration.controller.kit import (
    Ctl,
    lua_records,
    pdns_backend,
    scrape,
    seen,
    value,
    wait_for,
    write_stack,
)
from tests.integration.kubernetes.conftest import k8s_binaries, shared_etcd  # noqa: F401 - fixtures

CLOUDS = ("aws", "azure", "gcp")
NAMESPACE = "edgefabric-core"
PERIOD_S = 3.0  # leaseDurationSeconds is whole seconds
INTERVAL_S = 0.5


@pytest.fixture(scope="module")
def lease_clusters(
    k8s_binaries: KubeBinaries,  # noqa: F811
    shared_etcd: LocalEtcd,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, LocalCluster]]:
    started = {
        cloud: LocalCluster(ClusterSpec(cloud, flavor=cloud), tmp_path_factory.mktemp(f"lease-{cloud}"),
                            etcd_url=shared_etcd.url, binaries=k8s_binaries, loadbalancer=False,
                            apiserver_only=True)
        for cloud in CLOUDS
    }
    with ThreadPoolExecutor(len(started)) as pool:
        list(pool.map(lambda c: c.start(), started.values()))
    for c in started.values():
        c.api.request("POST", "/api/v1/namespaces",
                      {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}, ok=(409,))  # fmt: skip
    yield started
    for c in started.values():
        c.stop()


def _lease(api: KubeApi, record: str) -> dict[str, Any] | None:
    status, obj = api.request("GET", f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases/"
                                     f"{lease_object_name(record)}", ok=(404,))  # fmt: skip
    return None if status == 404 else obj


def _applies(ctl: Ctl) -> float:
    return value(scrape(ctl.metrics_url()), "edgefabric_apply_duration_seconds_count", backend="powerdns")


def test_lease_objects_optimistic_concurrency_and_minority(lease_clusters: dict[str, LocalCluster]) -> None:
    record = "objects." + ZONE
    aws = lease_clusters["aws"]
    a = KubernetesLease(api_client(aws.kubeconfig), NAMESPACE, record, 1.5, "a", cluster="aws")
    b = KubernetesLease(api_client(aws.kubeconfig), NAMESPACE, record, 1.5, "b", cluster="aws")
    st = a.acquire()
    assert st.held and st.acquired and a.may_write() and a.duration_s == 2.0
    assert not b.acquire().held and not b.may_write()
    obj = _lease(aws.api, record)
    assert obj is not None
    spec = obj["spec"]
    assert spec["holderIdentity"] == "a" and spec["leaseDurationSeconds"] == 2 and spec["leaseTransitions"] == 0
    assert spec["acquireTime"].endswith("Z") and spec["renewTime"] >= spec["acquireTime"]
    # A write carrying a resourceVersion that is no longer current is refused: the race's loser.
    stale = dict(obj, spec={**spec, "holderIdentity": "b"})
    a.acquire()  # renews: the resourceVersion moves on
    status, _ = aws.api.request("PUT", f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases/"
                                       f"{lease_object_name(record)}", stale, ok=(409,))  # fmt: skip
    assert status == 409
    assert a.current() is not None and a.current().holder == "a"  # type: ignore[union-attr]
    # Renewals keep it; b sees the record change and never judges it expired.
    for _ in range(6):
        time.sleep(0.5)
        assert a.acquire().held and not b.acquire().held
    # a stops renewing: b takes it once it has seen it unchanged for a whole period.
    t0 = time.monotonic()
    wait_for("b takes the lapsed lease", lambda: b.acquire().held, 3 * a.duration_s, step_s=0.2)
    assert a.duration_s <= time.monotonic() - t0 + 0.3
    assert not a.may_write()
    spec = _lease(aws.api, record)["spec"]  # type: ignore[index]
    assert spec["holderIdentity"] == "b" and spec["leaseTransitions"] == 1
    b.release()
    assert _lease(aws.api, record)["spec"].get("holderIdentity") is None  # type: ignore[index]

    # A quorum: whoever holds two of three leads; the one with one gives it back.
    qrecord = "quorum." + ZONE
    members = {c: KubernetesLease(api_client(lease_clusters[c].kubeconfig), NAMESPACE, qrecord, 2, "x", cluster=c)
               for c in CLOUDS}  # fmt: skip
    y_gcp = KubernetesLease(api_client(lease_clusters["gcp"].kubeconfig), NAMESPACE, qrecord, 2, "y", cluster="gcp")
    assert y_gcp.acquire().held  # y got to gcp first
    x = QuorumLease(members, "x", 2)
    st = x.acquire()
    assert st.held and st.acquired and x.may_write()  # aws + azure: a majority
    y = QuorumLease({c: KubernetesLease(api_client(lease_clusters[c].kubeconfig), NAMESPACE, qrecord, 2, "y",
                                        cluster=c) for c in CLOUDS}, "y", 2)  # fmt: skip
    st = y.acquire()
    assert not st.held and st.holder == "x" and not y.may_write()
    # y's minority (gcp) was given back: x takes it on its next round.
    assert _lease(lease_clusters["gcp"].api, qrecord)["spec"].get("holderIdentity") is None  # type: ignore[index]
    assert x.acquire().held
    assert {_lease(lease_clusters[c].api, qrecord)["spec"]["holderIdentity"] for c in CLOUDS} == {"x"}  # type: ignore[index]
    x.release()
    assert x.current() is None


def test_takeover_across_clouds_and_a_lost_cloud(
    tmp_path: Path, pdns: PowerDnsServer, endpoints: LocalEndpoints, lease_clusters: dict[str, LocalCluster]
) -> None:
    record = "quorum-lease." + ZONE
    write_stack(tmp_path, "ql", endpoints, record, pdns_backend(pdns, ZONE), 4.0, INTERVAL_S)
    kubeconfigs = [f"--lease-kubeconfig={c}={lease_clusters[c].kubeconfig}" for c in CLOUDS]
    env = {"EDGEFABRIC_SECRET_POWERDNSAPIKEY": pdns.api_key}

    def start(cloud: str) -> Ctl:
        return Ctl(tmp_path, "ql", [*kubeconfigs, "--lease-namespace", NAMESPACE, "--lease-duration", str(PERIOD_S),
                                    "--metrics-port", "0", "--identity", f"ctl-{cloud}",
                                    "--state-file", str(tmp_path / f"{cloud}.state.json")], env, cloud)  # fmt: skip

    def holders() -> set[str | None]:
        out = set()
        for cloud, c in lease_clusters.items():
            if cloud in lost:
                continue
            obj = _lease(c.api, record)
            out.add(obj["spec"].get("holderIdentity") if obj else None)
        return out

    lost: set[str] = set()
    ctls = {"aws": start("aws")}
    try:
        wait_for("aws leads", lambda: bool(ctls["aws"].events("lease_acquired")), 60)
        ctls["azure"], ctls["gcp"] = start("azure"), start("gcp")
        for cloud in ("azure", "gcp"):
            wait_for(f"{cloud} stands by", lambda c=cloud: bool(ctls[c].events("standby")), 60)  # type: ignore[misc]
        wait_for("all three clouds answered", lambda: len(seen(pdns, record)) == 3, 15)
        time.sleep(4 * INTERVAL_S)
        assert holders() == {"ctl-aws"}
        assert _applies(ctls["aws"]) >= 3 and _applies(ctls["azure"]) == _applies(ctls["gcp"]) == 0

        # 1. The leader is killed: no release. Another takes over within two lease periods.
        ctls["aws"].kill()
        died = time.monotonic()
        wait_for("a standby takes over",
                 lambda: any(ctls[c].events("lease_acquired") for c in ("azure", "gcp")), 3 * PERIOD_S)  # fmt: skip
        took = time.monotonic() - died
        print(f"takeover_after_kill_s={took:.2f} (bound {2 * PERIOD_S:g})")
        assert took <= 2 * PERIOD_S, f"takeover after {took:.2f}s > two lease periods ({2 * PERIOD_S}s)"
        leader = next(c for c in ("azure", "gcp") if ctls[c].events("lease_acquired"))
        other = "gcp" if leader == "azure" else "azure"
        wait_for(f"{leader} applies", lambda: _applies(ctls[leader]) > 0, 5)
        time.sleep(4 * INTERVAL_S)
        assert holders() == {f"ctl-{leader}"}
        assert _applies(ctls[other]) == 0, "two writers"
        assert not ctls[other].events("lease_acquired")
        _pulumi_up_follows(pdns, endpoints, lease_clusters, tmp_path, record, f"ctl-{leader}")

        # 2. The leader's cloud is lost: its API server stops. It still holds two of three.
        lease_clusters[leader].stop()
        lost.add(leader)
        before = _applies(ctls[leader])
        time.sleep(3 * PERIOD_S)
        assert not ctls[leader].events("lease_lost"), ctls[leader].events("lease_lost")
        assert _applies(ctls[leader]) > before + 3, "the majority's leader stopped writing"
        assert _applies(ctls[other]) == 0 and holders() == {f"ctl-{leader}"}

        # 3. ... and it dies with its cloud: the last controller takes over on the two left.
        ctls[leader].kill()
        died = time.monotonic()
        wait_for(f"{other} takes over", lambda: bool(ctls[other].events("lease_acquired")), 3 * PERIOD_S)
        took = time.monotonic() - died
        print(f"takeover_on_majority_s={took:.2f} (bound {2 * PERIOD_S:g})")
        assert took <= 2 * PERIOD_S, f"takeover on a majority after {took:.2f}s > {2 * PERIOD_S}s"
        wait_for(f"{other} applies", lambda: _applies(ctls[other]) > 0, 5)
        endpoints.stop("azure")  # the survivor acts: the down cloud leaves the answers
        wait_for("azure out of the answers", lambda: seen(pdns, record, 40)[endpoints.address("azure")] == 0, 10)
        assert holders() == {f"ctl-{other}"}
    finally:
        endpoints.start("azure")
        for ctl in ctls.values():
            ctl.kill()


def _pulumi_up_follows(pdns: PowerDnsServer, endpoints: LocalEndpoints, clusters: dict[str, LocalCluster],
                       stack_dir: Path, record: str, leader: str) -> None:
    """`pulumi up` (WeightedFailover, given the core clusters' kubeconfigs as GlobalTraffic
    gives them with `dns.controller.deploy`) while a controller leads through the Leases:
    azure answers again, so an `up` of its own would put it back at once; it follows the
    holder's verdict (azure out, within its hold-down) and writes nothing."""
    kubeconfigs = {c: clusters[c].kubeconfig.read_text() for c in CLOUDS}
    held = quorum_lease_holder(kubeconfigs, NAMESPACE, record)
    assert held is not None and held.holder == leader and held.live()
    assert quorum_lease_holder(kubeconfigs, NAMESPACE, "unheld." + ZONE) is None
    assert quorum_lease_holder(kubeconfigs, "no-such-namespace", record) is None

    azure = endpoints.address("azure")
    endpoints.stop("azure")
    try:
        wait_for("azure out of the answers", lambda: seen(pdns, record, 40)[azure] == 0, 10)
    finally:
        endpoints.start("azure")
    spec = failover_spec(load_stack_file(stack_dir / "Pulumi.ql.yaml"))
    props = {**spec.to_inputs(), "provider_version": PROVIDER_VERSION,
             "secrets": {"config:powerdnsApiKey": pdns.api_key},
             "lease": {"namespace": NAMESPACE, "kubeconfigs": kubeconfigs}}  # fmt: skip
    before = lua_records(pdns, record)
    outs = WeightedFailoverProvider().create(props).outs
    weights = outs["plan"]["answers"]["default"]["weights"]
    assert weights["azure"] == 0 and outs["health"]["azure"]["healthy"] is False, outs["plan"]
    assert outs["backend_status"] == {"powerdns": "ok"}
    assert lua_records(pdns, record) == before
    # The lease's kubeconfigs are secret outputs, like the backends' keys.
    assert "lease" in SECRET_OUTPUTS and outs["lease"]["kubeconfigs"] == kubeconfigs


def test_the_deployed_role_is_enough_for_the_lease_and_no_more(
    lease_clusters: dict[str, LocalCluster], tmp_path: Path
) -> None:
    """The ServiceAccount, Role and RoleBinding GlobalTraffic renders for the local stack,
    applied to a real API server (RBAC on): a token of that account holds the Lease, and is
    refused anything else (secrets, another namespace's leases)."""
    from edgefabric.tiers import failover_controller as fc
    from tests.unit.tiers.conftest import rendered_stack

    cluster = lease_clusters["aws"]  # the takeover test above may have lost azure or gcp
    api = cluster.api
    ns = fc.CONTROLLER_NAMESPACE
    api.request("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
                ok=(409,))  # fmt: skip
    paths = {"ServiceAccount": f"/api/v1/namespaces/{ns}/serviceaccounts",
             "Role": f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles",
             "RoleBinding": f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings"}  # fmt: skip
    applied = []
    for r in rendered_stack("local").resources:
        if r.name.startswith("global-ctl-aws-") and r.inputs.get("kind") in paths:
            api.request("POST", paths[r.inputs["kind"]], r.inputs, ok=(409,))
            applied.append(r.inputs["kind"])
    assert sorted(applied) == ["Role", "RoleBinding", "ServiceAccount"]
    _, issued = api.request("POST", f"/api/v1/namespaces/{ns}/serviceaccounts/{fc.APP}/token",
                            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                             "spec": {"expirationSeconds": 600}})  # fmt: skip
    ca = base64.b64encode(cluster.pki.ca_cert.read_bytes()).decode()
    kubeconfig = tmp_path / "sa.kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [{"name": "c", "cluster": {"server": cluster.server, "certificate-authority-data": ca}}],
        "users": [{"name": "sa", "user": {"token": issued["status"]["token"]}}],
        "contexts": [{"name": "sa", "context": {"cluster": "c", "user": "sa"}}],
    }))  # fmt: skip
    kubeconfig.chmod(0o600)
    record = "rbac." + ZONE
    lease = KubernetesLease(api_client(kubeconfig), ns, record, 2, "pod-a", cluster="aws")
    assert lease.acquire().held and lease.acquire().held  # create, then update
    assert lease.current() is not None
    lease.release()
    elsewhere = KubernetesLease(api_client(kubeconfig), NAMESPACE, record, 2, "pod-a", cluster="aws")
    with pytest.raises(ApiException) as err:
        elsewhere.acquire()
    assert err.value.status == 403
    with pytest.raises(ApiException) as err:
        CoreV1Api(api_client(kubeconfig)).list_namespaced_secret(ns)
    assert err.value.status == 403
