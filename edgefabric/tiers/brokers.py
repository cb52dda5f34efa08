"""The MQTT data flows, deployed: the stack CA, every broker's certificates, configs and mounts.

`edgefabric.dataflow` decides what each broker runs (pure); this module puts it where the
brokers are:
- a core broker (Deployment + Service, namespace `edgefabric-dataflow`) on every cloud core
  that hosts a region. Regions on that same cluster bridge to it by its in-cluster name; when
  a region of that cloud runs on a cluster of its own (`regions[].cluster` or
  `regions[].kubeconfigRef`, far from the core), the Service is a LoadBalancer (MQTT over TLS, client certificates required) and
  that region bridges to its address, which the core's server certificate carries;
- the region's `device-management` Deployment and a Kubernetes edge site's `sensor-ingest`
  Deployment get a ConfigMap (`mqtt-config`: mosquitto.conf, acl) and a Secret (`mqtt-certs`)
  mounted where the eclipse-mosquitto image reads them. Those Deployments are declared by
  their tiers; `mount_broker` is a transformation their components take, so the tiers stay
  unaware of MQTT;
- a docker edge site's `sensor-ingest` container gets the same files as uploads (secret
  content for keys), through `upload_broker_files`;
- each region gets a LoadBalancer Service `mqtt-bridge` on `dataFlows.port`: the address its
  edge sites' bridges connect to, and a name its server certificate carries.

Every private key comes from `edgefabric.dynamic.pki` as a secret Output and goes only into
Secrets and uploads, never into a ConfigMap, a plain output or a log.
"""

from __future__ import annotations

import base64
import hashlib
import io
import itertools
import posixpath
import shlex
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlparse

import pulumi
import pulumi_kubernetes as k8s

from edgefabric.config import DataFlowsConfig, EdgeSite, Port, Region
from edgefabric.dataflow import Endpoint, Issued, Placement, Topology, config_files, topology_of
from edgefabric.dataflow.mosquitto import cert_files
from edgefabric.dynamic.pki import Certificate, CertificateAuthority
from edgefabric.tiers.edge_sites import credentials_dir, credentials_source, state_dir
from edgefabric.tiers.labels import k8s_labels
from edgefabric.tiers.network_policies import Listener, namespace_policies
from edgefabric.tiers.workloads import container, lb_address

CORE_NAMESPACE = "edgefabric-dataflow"
CORE_NAME = "mqtt-core"
BRIDGE_SERVICE = "mqtt-bridge"
CONFIG_MAP, SECRET = "mqtt-config", "mqtt-certs"
# The eclipse-mosquitto image's layout and user: it runs `mosquitto -c /mosquitto/config/mosquitto.conf`.
IMAGE_PLACE = Placement(port=0)
MOSQUITTO_UID = 1883
TIER = "dataflow"


def broker_port(ports: Sequence[Port]) -> int:
    """The container port a tier's broker listens on: its first `mqtt` port, else its first."""
    return next((p for p in ports if p.protocol == "mqtt"), ports[0]).container_port


def in_cluster_names(service: str, namespace: str) -> list[str]:
    return [f"{service}.{namespace}.svc", f"{service}.{namespace}.svc.cluster.local"]


class BrokerHooks:
    """What the data flows need from components that do not know about them, taken through
    transformations passed to those components (their call sites change by one option):

    - the broker Deployment of a region (`device-management`) or a Kubernetes site
      (`sensor-ingest`) gets the `mqtt-config` / `mqtt-certs` / data volumes mounted where
      the eclipse-mosquitto image reads them;
    - a docker site's `sensor-ingest` container gets the same files as uploads, and a native
      site's unit command installs them first (a tarball on stdin, never in the command line);
    - the component's Namespace and Kubernetes provider are remembered, so that the ConfigMap
      and Secret are created in that namespace, after it, through that provider.
    """

    def __init__(self) -> None:
        self.namespaces: dict[str, pulumi.Resource] = {}
        self.providers: dict[str, k8s.Provider] = {}

    def region(self, region: Region) -> pulumi.ResourceTransformation:
        svc = next(s for s in region.services if s.kind == "device-management")
        return self._hook(region.name, f"{region.name}-{svc.name}", None)

    def site(self, site: EdgeSite, files: pulumi.Output[dict[str, str]] | None) -> pulumi.ResourceTransformation:
        """`files` (path → content, secret) are the site's rendered broker files, for docker
        and native sites (`DataFlows.site_files`)."""
        svc = next(s for s in site.services if s.kind == "sensor-ingest")
        return self._hook(site.name, f"{site.name}-{svc.name}", files)

    def _hook(self, scope: str, broker: str, files: pulumi.Output[dict[str, str]] | None
              ) -> pulumi.ResourceTransformation:
        def transform(args: pulumi.ResourceTransformationArgs) -> pulumi.ResourceTransformationResult | None:
            props = cast(dict[str, Any], args.props)
            if args.type_ == "kubernetes:core/v1:Namespace" and args.name == f"{scope}-ns":
                self.namespaces[scope] = args.resource
            elif args.type_ == "pulumi:providers:kubernetes" and args.name == f"{scope}-k8s":
                assert isinstance(args.resource, k8s.Provider)
                self.providers[scope] = args.resource
            elif args.name != broker:
                return None
            elif args.type_ == "kubernetes:apps/v1:Deployment":
                _mount(props)
            elif args.type_ == "docker:index/container:Container" and files is not None:
                # `files` is a secret Output: what is derived from it stays secret.
                existing = list(props.get("uploads") or [])
                props["uploads"] = files.apply(lambda fs: [
                    *(u for u in existing if _upload_path(u) not in fs), *_uploads(fs)])
            elif args.type_ == "command:remote:Command" and files is not None:
                # The files arrive on stdin as a base64 tarball and are unpacked before the unit
                # starts; keys keep mode 0600 (root) and reach the unit as its credentials.
                unpack = "base64 -d | sudo tar -xzf - -C / --no-same-owner && "
                props["stdin"] = files.apply(_tarball)
                for step in ("create", "update"):
                    props[step] = pulumi.Output.concat(unpack, props[step])
                props["triggers"] = [*(props.get("triggers") or []), files.apply(_digest)]
            else:
                return None
            return pulumi.ResourceTransformationResult(props, args.opts)

        return transform


def _mount(props: dict[str, Any]) -> None:
    pod = props["spec"].template.spec
    first = pod.containers[0]
    ours = {m.mount_path for m in _mounts()}
    # The tier may mount a plain broker config of its own at the same path (the image's
    # runnable default, edgefabric/tiers/images.py): the data-flow config replaces it.
    replaced = {m.name for m in first.volume_mounts or [] if m.mount_path in ours}
    first.volume_mounts = [*(m for m in first.volume_mounts or [] if m.mount_path not in ours), *_mounts()]
    still_used = {m.name for c in pod.containers for m in c.volume_mounts or []}
    pod.volumes = [*(v for v in pod.volumes or [] if v.name not in replaced or v.name in still_used), *_volumes()]
    if pod.security_context is None:
        # The Secret's files are group-readable only; the image's user reads them by group.
        pod.security_context = k8s.core.v1.PodSecurityContextArgs(fs_group=MOSQUITTO_UID)


def _uploads(files: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"file": path, "content": text, "permissions": "0440" if path.endswith(".key") else "0444"}
            for path, text in sorted(files.items())]


def _upload_path(upload: Any) -> Any:
    return upload.get("file") if isinstance(upload, dict) else getattr(upload, "file", None)


def _tarball(files: Mapping[str, str]) -> str:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path, text in sorted(files.items()):
            data = text.encode()
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size, info.mode, info.mtime = len(data), 0o600 if path.endswith(".key") else 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return base64.b64encode(buffer.getvalue()).decode() + "\n"


def _digest(files: Mapping[str, str]) -> str:
    # Re-runs the unit's update when a file changes, without putting the files in triggers.
    return hashlib.sha256(repr(sorted(files.items())).encode()).hexdigest()


def _volumes() -> list[k8s.core.v1.VolumeArgs]:
    return [
        k8s.core.v1.VolumeArgs(name="mqtt-config", config_map=k8s.core.v1.ConfigMapVolumeSourceArgs(name=CONFIG_MAP)),
        k8s.core.v1.VolumeArgs(name="mqtt-certs", secret=k8s.core.v1.SecretVolumeSourceArgs(
            secret_name=SECRET, default_mode=0o440)),
        # Survives container restarts (what persistence is for between pod reschedules is
        # the upstream's queue: bridges keep persistent sessions upstream).
        k8s.core.v1.VolumeArgs(name="mqtt-data", empty_dir=k8s.core.v1.EmptyDirVolumeSourceArgs()),
    ]


def _mounts() -> list[k8s.core.v1.VolumeMountArgs]:
    return [
        k8s.core.v1.VolumeMountArgs(name="mqtt-config", mount_path=IMAGE_PLACE.config_dir, read_only=True),
        k8s.core.v1.VolumeMountArgs(name="mqtt-certs", mount_path=IMAGE_PLACE.certs_dir, read_only=True),
        k8s.core.v1.VolumeMountArgs(name="mqtt-data", mount_path=IMAGE_PLACE.data_dir),
    ]


@dataclass(frozen=True)
class DataFlowsArgs:
    """The topology, where each tier's broker runs, and the hooks its tiers were built with."""

    topology: Topology
    environment: str
    regions: Sequence[Region]
    sites: Sequence[EdgeSite]
    core_providers: Mapping[str, k8s.Provider]  # cloud -> its CloudCore.k8s_provider
    # region -> the provider of the cluster it runs on: its own (regions[].cluster or
    # regions[].kubeconfigRef) or its core's
    region_providers: Mapping[str, k8s.Provider]
    core_image: str
    hooks: BrokerHooks


def native_placement(site: EdgeSite) -> Placement:
    """Where a native site's broker reads its files: the unit runs as a DynamicUser
    (edgefabric.tiers.edge_sites.systemd_unit), so the certificates and keys are its
    credentials and its persistence goes to its state directory."""
    svc = next(s for s in site.services if s.kind == "sensor-ingest")
    config_file = native_config_file(svc.exec_start)
    config_dir = posixpath.dirname(config_file) if config_file else f"/etc/edgefabric/mqtt/{svc.name}/config"
    return Placement(port=broker_port(svc.ports), config_dir=config_dir,
                     certs_dir=credentials_dir(svc.name), data_dir=state_dir(svc.name), log_dest="syslog")


def native_config_file(exec_start: str | None) -> str | None:
    """The file a native broker's unit starts mosquitto with (`-c` / `--config-file`): the
    generated config is written there, and its acl next to it, so the unit runs it."""
    argv = shlex.split(exec_start or "")
    for flag, value in itertools.pairwise(argv):
        if flag in ("-c", "--config-file") and value.startswith("/"):
            return value
    return None


def certs_install_dir(site: EdgeSite, place: Placement) -> str:
    """Where a site's certificate files are written: where the broker reads them, except on
    a native site, whose unit loads them from a root-only directory as credentials."""
    if site.capabilities.runtime != "native":
        return place.certs_dir
    return credentials_source(next(s for s in site.services if s.kind == "sensor-ingest").name)


class DataFlows(pulumi.ComponentResource):
    """The stack CA, every broker's certificates and configs, the core brokers and the regions'
    bridge Services. Construct it after the regions (their namespaces hold its objects) and
    before the sites (docker and native sites take `site_files`); then `attach_sites` once
    the sites exist. Outputs: `ca_cert_pem` (public), `endpoints` (broker key → host:port)."""

    ca_cert_pem: pulumi.Output[str]
    endpoints: pulumi.Output[dict[str, str]]

    def __init__(self, name: str, args: DataFlowsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("edgefabric:dataflow:DataFlows", name, None, opts)
        self._args = args
        topo = args.topology
        self._ca = CertificateAuthority(f"{name}-ca", common_name=f"edgefabric {args.environment} data flows",
                                        opts=pulumi.ResourceOptions(parent=self))
        regions = {r.name: r for r in args.regions}
        endpoints: dict[str, pulumi.Output[str]] = {}
        # Upstream first: a region's bridge needs its core's name, a site's its region's address.
        public: dict[str, pulumi.Output[str]] = {}  # core broker key -> its load balancer's host:port
        for broker in topo.of_tier("core"):
            far = any(r.cloud == broker.name and _own_cluster(r, args) for r in args.regions)
            address = self._core(broker.key, broker.name, args.core_providers[broker.name], exposed=far)
            if address is not None:
                public[broker.key] = address
            endpoints[broker.key] = address if address is not None else pulumi.Output.from_input(self._core_endpoint())
        for broker in topo.of_tier("region"):
            region = regions[broker.name]
            assert broker.upstream is not None
            # A region on its own cluster reaches the core across the network, by its address.
            upstream = public[broker.upstream] if _own_cluster(region, args) else self._core_endpoint()
            endpoints[broker.key] = self._region(broker.key, region, args.region_providers[region.name], upstream)
        # Every site's files now: docker and native sites take them at construction.
        self.site_files: dict[str, pulumi.Output[dict[str, str]]] = {}
        self._site_k8s: dict[str, tuple[pulumi.Output[dict[str, str]], pulumi.Output[dict[str, str]]]] = {}
        for site in args.sites:
            self._edge(topo.broker(f"edge-{site.name}").key, site, endpoints)
        self.ca_cert_pem = self._ca.cert_pem
        self.endpoints = pulumi.Output.all(**endpoints).apply(dict)
        self.register_outputs({"ca_cert_pem": self.ca_cert_pem, "endpoints": self.endpoints})

    def attach_sites(self) -> None:
        """The ConfigMap and Secret of every Kubernetes site's broker, in the namespace its
        EdgeSite created, through that site's provider (both taken by `BrokerHooks.site`)."""
        hooks = self._args.hooks
        for site, (configs, certs) in self._site_k8s.items():
            labels = {**k8s_labels(self._args.environment, TIER, "edge"), "edgefabric.io/site": site}
            self._k8s_files(site, f"edge-{site}", configs, certs, labels, hooks.providers[site],
                            [hooks.namespaces[site]])

    # -- certificates and files

    def _core_endpoint(self) -> str:
        return f"{in_cluster_names(CORE_NAME, CORE_NAMESPACE)[1]}:{self._args.topology.flows.port}"

    def _cert(self, cn: str, usage: str, hosts: pulumi.Input[list[str]] | None = None) -> Certificate:
        return Certificate(f"{cn}-{usage}", ca=self._ca, common_name=cn, usage=usage, hosts=hosts,
                           opts=pulumi.ResourceOptions(parent=self))

    def _files(self, key: str, place: Placement, upstream: pulumi.Input[str] | None,
               hosts: pulumi.Input[list[str]]) -> tuple[pulumi.Output[dict[str, str]], pulumi.Output[dict[str, str]]]:
        """(config files, certificate files) of broker `key`; the second is a secret Output."""
        topo = self._args.topology
        broker = topo.broker(key)
        server = self._cert(key, "server", hosts)
        local = self._cert(broker.local_identity, "client")
        bridge = self._cert(broker.bridge_identity, "client") if broker.bridge_identity else None

        def conf(address: str | None) -> dict[str, str]:
            host, _, port = (address or "").rpartition(":")
            return config_files(topo, key, place, Endpoint(host, int(port)) if address else None)

        configs = pulumi.Output.from_input(upstream).apply(conf)
        pems = pulumi.Output.all(
            self._ca.cert_pem, server.cert_pem, server.key_pem, local.cert_pem, local.key_pem,
            bridge.cert_pem if bridge else "", bridge.key_pem if bridge else "")

        def certs(values: list[str]) -> dict[str, str]:
            ca, s_cert, s_key, l_cert, l_key, b_cert, b_key = values
            files = cert_files(ca, Issued(s_cert, s_key), Issued(b_cert, b_key) if b_cert else None)
            # The tier's own clients (devices, regional services, operators) mount these.
            return files | {"client.crt": l_cert, "client.key": l_key}

        return configs, pulumi.Output.secret(pems.apply(certs))

    def _k8s_files(self, prefix: str, namespace: str, configs: pulumi.Output[dict[str, str]],
                   certs: pulumi.Output[dict[str, str]], labels: dict[str, str], provider: k8s.Provider,
                   depends_on: Sequence[pulumi.Resource]) -> None:
        opts = pulumi.ResourceOptions(parent=self, provider=provider, depends_on=list(depends_on))
        k8s.core.v1.ConfigMap(f"{prefix}-{CONFIG_MAP}", metadata=k8s.meta.v1.ObjectMetaArgs(
            name=CONFIG_MAP, namespace=namespace, labels=labels), data=configs, opts=opts)
        k8s.core.v1.Secret(f"{prefix}-{SECRET}", metadata=k8s.meta.v1.ObjectMetaArgs(
            name=SECRET, namespace=namespace, labels=labels), string_data=certs, type="Opaque", opts=opts)

    # -- tiers

    def _core(self, key: str, cloud: str, provider: k8s.Provider, exposed: bool) -> pulumi.Output[str] | None:
        """The core broker of `cloud`; `exposed`: behind a load balancer, whose `host:port` it
        returns (regions on clusters of their own bridge to it), else in-cluster only (None)."""
        flows = self._args.topology.flows
        labels = {**k8s_labels(self._args.environment, TIER, cloud), "app.kubernetes.io/name": CORE_NAME}
        ns = k8s.core.v1.Namespace(f"{cloud}-dataflow-ns", metadata=k8s.meta.v1.ObjectMetaArgs(
            name=CORE_NAMESPACE, labels=labels), opts=pulumi.ResourceOptions(parent=self, provider=provider))
        selector = {"app.kubernetes.io/name": CORE_NAME}
        meta = k8s.meta.v1.ObjectMetaArgs(name=CORE_NAME, namespace=CORE_NAMESPACE, labels=labels)
        in_ns = pulumi.ResourceOptions(parent=self, provider=provider, depends_on=[ns])
        service = k8s.core.v1.Service(f"{cloud}-{CORE_NAME}", metadata=meta, spec=k8s.core.v1.ServiceSpecArgs(
            type="LoadBalancer" if exposed else None, selector=selector,
            ports=[k8s.core.v1.ServicePortArgs(name="mqtts", port=flows.port, target_port=flows.port)]), opts=in_ns)
        names = in_cluster_names(CORE_NAME, CORE_NAMESPACE)
        address = service.status.apply(lb_address) if exposed else None
        hosts = address.apply(lambda a: [*names, *([a] if a else [])]) if address is not None else names
        configs, certs = self._files(key, Placement(port=flows.port), None, hosts)
        self._k8s_files(f"{cloud}-core", CORE_NAMESPACE, configs, certs, labels, provider, [ns])
        port = Port(name="mqtts", port=flows.port, protocol="mqtt")
        spec_container = container(CORE_NAME, self._args.core_image, [port], "/", cpu="100m", memory="128Mi",
                                   cpu_limit="500m", memory_limit="256Mi")
        spec_container.volume_mounts = _mounts()
        k8s.apps.v1.Deployment(
            f"{cloud}-{CORE_NAME}", metadata=meta,
            spec=k8s.apps.v1.DeploymentSpecArgs(
                # One broker, replaced (not rolled): two would each hold half the sessions.
                replicas=1, strategy=k8s.apps.v1.DeploymentStrategyArgs(type="Recreate"),
                selector=k8s.meta.v1.LabelSelectorArgs(match_labels=selector),
                template=k8s.core.v1.PodTemplateSpecArgs(
                    metadata=k8s.meta.v1.ObjectMetaArgs(labels=labels),
                    spec=k8s.core.v1.PodSpecArgs(
                        containers=[spec_container], volumes=_volumes(),
                        security_context=k8s.core.v1.PodSecurityContextArgs(
                            run_as_user=MOSQUITTO_UID, run_as_group=MOSQUITTO_UID, fs_group=MOSQUITTO_UID)))),
            opts=in_ns)
        # The regions' brokers bridge in from their own namespaces (or clusters): the MQTT port is open to them.
        namespace_policies(f"{cloud}-dataflow", CORE_NAMESPACE, [Listener(CORE_NAME, (port,), exposed=exposed)],
                           labels=labels, provider=provider, namespace_resource=ns, parent=self)
        return address.apply(lambda a: f"{a}:{flows.port}") if address is not None else None

    def _region(self, key: str, region: Region, provider: k8s.Provider,
                upstream: pulumi.Input[str]) -> pulumi.Output[str]:
        flows = self._args.topology.flows
        svc = next(s for s in region.services if s.kind == "device-management")
        namespace = f"region-{region.name}"
        labels = {**k8s_labels(self._args.environment, TIER, region.cloud), "edgefabric.io/region": region.name}
        after_ns = [self._args.hooks.namespaces[region.name]]
        # Edge bridges (and devices) reach the broker from outside the cluster, over TLS.
        bridge = k8s.core.v1.Service(
            f"{region.name}-{BRIDGE_SERVICE}",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=BRIDGE_SERVICE, namespace=namespace, labels=labels),
            spec=k8s.core.v1.ServiceSpecArgs(
                type="LoadBalancer", selector={"app.kubernetes.io/name": svc.name},
                ports=[k8s.core.v1.ServicePortArgs(name="mqtts", port=flows.port,
                                                   target_port=broker_port(svc.ports))]),
            opts=pulumi.ResourceOptions(parent=self, provider=provider, depends_on=after_ns))
        address = bridge.status.apply(lb_address)
        hosts = address.apply(lambda a: [*in_cluster_names(svc.name, namespace), *([a] if a else [])])
        configs, certs = self._files(key, Placement(port=broker_port(svc.ports)), upstream, hosts)
        self._k8s_files(region.name, namespace, configs, certs, labels, provider, after_ns)
        return address.apply(lambda a: f"{a}:{flows.port}")

    def _edge(self, key: str, site: EdgeSite, endpoints: Mapping[str, pulumi.Output[str]]) -> None:
        broker = self._args.topology.broker(key)
        assert broker.upstream is not None
        svc = next(s for s in site.services if s.kind == "sensor-ingest")
        runtime = site.capabilities.runtime
        if runtime == "kubernetes":
            place, hosts = Placement(port=broker_port(svc.ports)), in_cluster_names(svc.name, f"edge-{site.name}")
        else:
            place = native_placement(site) if runtime == "native" else Placement(port=broker_port(svc.ports))
            hosts = [svc.name, urlparse(site.host or "").hostname or svc.name]
        configs, certs = self._files(key, place, endpoints[broker.upstream], hosts)
        if runtime == "kubernetes":
            self._site_k8s[site.name] = (configs, certs)
        certs_dir = certs_install_dir(site, place)
        # A native unit names its config file: mosquitto.conf is written under that name.
        conf_name = posixpath.basename(native_config_file(svc.exec_start) or "") if runtime == "native" else ""
        names = {"mosquitto.conf": conf_name} if conf_name else {}
        self.site_files[site.name] = pulumi.Output.secret(pulumi.Output.all(configs, certs).apply(
            lambda pair: {**{f"{place.config_dir}/{names.get(k, k)}": v for k, v in pair[0].items()},
                          **{f"{certs_dir}/{k}": v for k, v in pair[1].items()}}))


def _own_cluster(region: Region, args: DataFlowsArgs) -> bool:
    """Whether `region` runs on a cluster of its own rather than on its cloud's core."""
    return args.region_providers[region.name] is not args.core_providers[region.cloud]


@dataclass(frozen=True)
class DataFlowPlanArgs:
    """The plan's slice of the stack config."""

    data_flows: DataFlowsConfig | None  # the `dataFlows` section: None or disabled, no data flows
    environment: str
    regions: Sequence[Region]
    sites: Sequence[EdgeSite]


class DataFlowPlan:
    """The program's one handle on the data flows, so that its call sites change by one option
    each: transformations for the regions and the sites (none when `dataFlows` is off), the
    `DataFlows` component between them, and the sites' ConfigMaps after them."""

    def __init__(self, args: DataFlowPlanArgs) -> None:
        self._args = args
        flows = args.data_flows
        # As edgefabric.dataflow.topology(cfg), from the slice: the brokers, or None when off.
        self.topology = (topology_of(flows, {r.name: r.cloud for r in args.regions})
                         if flows is not None and flows.enabled else None)
        self.hooks = BrokerHooks()
        self.component: DataFlows | None = None

    def region(self, region: Region) -> list[pulumi.ResourceTransformation]:
        return [self.hooks.region(region)] if self.topology is not None else []

    def deploy(self, core_providers: Mapping[str, k8s.Provider],
               region_providers: Mapping[str, k8s.Provider]) -> DataFlows | None:
        """The DataFlows component: after the regions, before the sites. `region_providers`:
        each region's cluster (its own, or its cloud's core)."""
        if self.topology is None:
            return None
        flows = self._args.data_flows
        assert flows is not None
        self.component = DataFlows("dataflows", DataFlowsArgs(
            topology=self.topology, environment=self._args.environment, regions=self._args.regions,
            sites=self._args.sites, core_providers=core_providers, region_providers=region_providers,
            core_image=flows.core_image,
            hooks=self.hooks))
        return self.component

    def site(self, site: EdgeSite) -> list[pulumi.ResourceTransformation]:
        if self.component is None:
            return []
        return [self.hooks.site(site, self.component.site_files[site.name])]

    def attach_sites(self) -> None:
        if self.component is not None:
            self.component.attach_sites()
