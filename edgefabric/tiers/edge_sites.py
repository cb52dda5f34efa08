"""Tier 3, edge nodes: the edge services of one site, on the site's declared runtime.

This is the seed's node manager. A site declares its capabilities (cpu, memory, storage)
and one runtime, and every runtime deploys for real:

- `kubernetes`: a `kubernetes.Provider` from the site's kubeconfig secret; Deployments
  whose requests and limits are the services' requirements, pinned to edge nodes by a
  node selector and a toleration;
- `docker`: containers through `pulumi-docker`, with one Docker provider per site whose
  host is the site's `ssh://` or `tcp://` address;
- `native`: systemd units managed over SSH by `pulumi-command`'s `remote.Command`, with
  separate create, update and delete commands.

The placement check (every service fits the site) already ran in `edgefabric.config`
before any resource was registered. A site sees only its own config, the edge-wide
scheduling settings and the environment (`EdgeSiteArgs`).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import pulumi
import pulumi_command as command
import pulumi_docker as docker
import pulumi_kubernetes as k8s

from edgefabric.config import EdgeService, Workload
from edgefabric.config import EdgeSite as EdgeSiteConfig
from edgefabric.tiers import secret_output
from edgefabric.tiers.images import facts_for, runtime_for
from edgefabric.tiers.labels import cloud_tags, k8s_labels
from edgefabric.tiers.network_policies import Listener, listeners, namespace_policies, outside_ports
from edgefabric.tiers.workloads import config_volumes, container

TIER = "edge"
# Edge sites belong to no cloud; the label still says where they run.
CLOUD_LABEL = "edge"


def requests_of(svc: EdgeService) -> dict[str, str]:
    """Kubernetes requests from the declared requirements. Limits equal requests: edge
    nodes are small, and Guaranteed QoS keeps one service from starving the others."""
    req = svc.requirements
    out = {"cpu": f"{round(req.cpu * 1000)}m", "memory": f"{req.memory_mb}Mi"}
    if req.storage_mb:
        out["ephemeral-storage"] = f"{req.storage_mb}Mi"
    return out


@dataclass(frozen=True)
class EdgeSiteArgs:
    """One edge site's slice of the stack config."""

    site: EdgeSiteConfig  # `edge.sites[index]`
    index: int  # the site's position in `edge.sites`: errors name the key path
    environment: str
    node_selector: Mapping[str, str]  # `edge.nodeSelector`: pins kubernetes workloads to edge nodes
    toleration_key: str  # `edge.tolerationKey`: the taint edge nodes carry


class EdgeSite(pulumi.ComponentResource):
    """One edge site and its services. Output: `services` (names deployed), `runtime`."""

    services: pulumi.Output[list[str]]

    def __init__(self, name: str, args: EdgeSiteArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        site = args.site
        # The declared capabilities travel as the component's props and outputs so that the
        # `edge-placement-fits` stack policy can compare them with what is deployed.
        caps = site.capabilities
        declared = {"capabilities": {"cpu": caps.cpu, "memoryMb": caps.memory_mb,
                                     "storageMb": caps.storage_mb, "runtime": caps.runtime}}
        # The type token is the one the class had as EdgeSiteComponent: URNs stay as they were.
        super().__init__("edgefabric:edge:EdgeSite", name, declared, opts)
        self._site = site
        self._path = f"edge.sites[{args.index}]"
        self._env = args.environment
        runtime = site.capabilities.runtime
        if runtime == "kubernetes":
            self._kubernetes(args.node_selector, args.toleration_key)
        elif runtime == "docker":
            self._docker()
        else:
            self._native()
        self.runtime = pulumi.Output.from_input(runtime)
        self.services = pulumi.Output.from_input([s.name for s in site.services])
        self.register_outputs({"services": self.services, "runtime": self.runtime, **declared})

    def _kubernetes(self, node_selector: Mapping[str, str], toleration_key: str) -> None:
        site = self._site
        assert site.kubeconfig_ref is not None  # guaranteed by config validation
        provider = k8s.Provider(
            f"{site.name}-k8s", kubeconfig=secret_output(site.kubeconfig_ref, f"{self._path}.kubeconfigRef"),
            opts=pulumi.ResourceOptions(parent=self))
        opts = pulumi.ResourceOptions(parent=self, provider=provider)
        labels = {**k8s_labels(self._env, TIER, CLOUD_LABEL), "edgefabric.io/site": site.name}
        namespace = f"edge-{site.name}"
        ns = k8s.core.v1.Namespace(
            f"{site.name}-ns", metadata=k8s.meta.v1.ObjectMetaArgs(name=namespace, labels=labels), opts=opts)
        # Named statically and ordered by depends_on: cheaper than an Output input per object.
        in_ns = pulumi.ResourceOptions(parent=self, provider=provider, depends_on=[ns])
        tolerations = [k8s.core.v1.TolerationArgs(key=toleration_key, operator="Exists",
                                                  effect="NoSchedule")]
        for svc in site.services:
            req = requests_of(svc)
            selector = {"app.kubernetes.io/name": svc.name}
            meta = k8s.meta.v1.ObjectMetaArgs(name=svc.name, namespace=namespace,
                                              labels={**labels, **selector})
            # How the image serves its probed port (user, config files): image_facts.yaml.
            runtime = runtime_for(Workload(name=svc.name, image=svc.image, ports=svc.ports,
                                           health_path=svc.health_path, memory=req["memory"]))
            spec_container = container(
                svc.name, svc.image, svc.ports, svc.health_path, cpu=req["cpu"], memory=req["memory"],
                cpu_limit=req["cpu"], memory_limit=req["memory"], runtime=runtime)
            if "ephemeral-storage" in req:
                spec_container.resources = k8s.core.v1.ResourceRequirementsArgs(requests=req, limits=req)
            k8s.apps.v1.Deployment(
                f"{site.name}-{svc.name}", metadata=meta,
                spec=k8s.apps.v1.DeploymentSpecArgs(
                    replicas=svc.replicas,
                    selector=k8s.meta.v1.LabelSelectorArgs(match_labels=selector),
                    template=k8s.core.v1.PodTemplateSpecArgs(
                        metadata=k8s.meta.v1.ObjectMetaArgs(labels={**labels, **selector}),
                        spec=k8s.core.v1.PodSpecArgs(
                            containers=[spec_container], node_selector=dict(node_selector),
                            tolerations=tolerations,
                            volumes=config_volumes(f"{site.name}-{svc.name}", f"{svc.name}-config", namespace,
                                                   runtime, {**labels, **selector}, in_ns)),
                    )),
                opts=in_ns)
            k8s.core.v1.Service(
                f"{site.name}-{svc.name}", metadata=meta,
                spec=k8s.core.v1.ServiceSpecArgs(
                    selector=selector,
                    ports=[k8s.core.v1.ServicePortArgs(name=p.name, port=p.port, target_port=p.container_port)
                           for p in svc.ports]),
                opts=in_ns)
        # The edge gateway is the site's entry point (and MQTT listeners take devices); the rest
        # only in-site.
        namespace_policies(site.name, namespace, listeners(site.services, exposed=[
            s.name for s in site.services if s.kind == "edge-gateway"]),
            labels=labels, provider=provider, namespace_resource=ns, parent=self)

    def _docker(self) -> None:
        site = self._site
        tls = site.docker_tls
        provider = docker.Provider(
            f"{site.name}-docker", host=site.host,
            # Fail fast on an unknown host key rather than trusting it silently.
            ssh_opts=["-o", "BatchMode=yes"] if urlparse(site.host or "").scheme == "ssh" else None,
            # tcp://: TLS both ways (the config rules require it), the material as Pulumi secrets.
            ca_material=secret_output(tls.ca_ref, f"{self._path}.dockerTls.caRef") if tls else None,
            cert_material=secret_output(tls.cert_ref, f"{self._path}.dockerTls.certRef") if tls else None,
            key_material=secret_output(tls.key_ref, f"{self._path}.dockerTls.keyRef") if tls else None,
            opts=pulumi.ResourceOptions(parent=self))
        opts = pulumi.ResourceOptions(parent=self, provider=provider)
        labels = cloud_tags(self._env, TIER, CLOUD_LABEL, {"edgefabric.io/site": site.name})
        network = docker.Network(f"{site.name}-net", name=f"edgefabric-{site.name}",
                                 labels=[{"label": k, "value": v} for k, v in labels.items()], opts=opts)
        # What the host publishes is what a Kubernetes site's NetworkPolicies open to anywhere
        # (the gateway, MQTT listeners); the rest (redis, the processors) is reached only by
        # the site's own containers, on the site network by their aliases.
        outside = {site_listener.app: site_listener for site_listener in listeners(
            site.services, exposed=[s.name for s in site.services if s.kind == "edge-gateway"])}
        for svc in site.services:
            image = docker.RemoteImage(f"{site.name}-{svc.name}-image", name=svc.image,
                                       keep_locally=True, opts=opts)
            spec = docker_container_spec(svc, outside[svc.name], site.publish_address)
            docker.Container(
                f"{site.name}-{svc.name}",
                name=f"edgefabric-{svc.name}",
                image=image.image_id,
                restart="unless-stopped",
                memory=svc.requirements.memory_mb,
                cpus=f"{svc.requirements.cpu:g}",
                healthcheck=docker_health(svc),
                networks_advanced=[{"name": network.name, "aliases": [svc.name]}],
                labels=[{"label": k, "value": v} for k, v in {**labels, "app": svc.name}.items()],
                **spec,
                opts=opts)

    def _native(self) -> None:
        site = self._site
        url = urlparse(site.host or "")
        assert site.ssh_key_ref is not None  # guaranteed by config validation
        connection = command.remote.ConnectionArgs(
            host=url.hostname or "", port=url.port or 22, user=url.username or "root",
            private_key=secret_output(site.ssh_key_ref, f"{self._path}.sshKeyRef"))
        # The command provider has no settings, but an explicit one keeps every resource of
        # the stack on a provider the program chose.
        provider = command.Provider(f"{site.name}-command", opts=pulumi.ResourceOptions(parent=self))
        for svc in site.services:
            unit = unit_name(svc.name)
            body = systemd_unit(svc, self._env, site.name)
            # LoadCredential= fails the start when its source is missing: a service with no
            # secret files gets an empty, root-only directory.
            write = (f"sudo install -d -m 0700 {credentials_source(svc.name)} && "
                     f"printf %s {shlex.quote(body)} | sudo tee /etc/systemd/system/{unit} >/dev/null")
            command.remote.Command(
                f"{site.name}-{svc.name}",
                connection=connection,
                create=f"{write} && sudo systemctl daemon-reload && sudo systemctl enable --now {unit}",
                update=f"{write} && sudo systemctl daemon-reload && sudo systemctl restart {unit}",
                delete=(f"sudo systemctl disable --now {unit} || true; "
                        f"sudo rm -f /etc/systemd/system/{unit} && sudo rm -rf {credentials_source(svc.name)} "
                        "&& sudo systemctl daemon-reload"),
                # Re-run the update when the unit text changes.
                triggers=[body],
                opts=pulumi.ResourceOptions(parent=self, provider=provider))


def docker_container_spec(svc: EdgeService, listener: Listener, publish_address: str) -> dict[str, Any]:
    """How a Docker site runs `svc`'s image so that it serves its ports, from the same rows of
    image_facts.yaml as the Kubernetes runtime (`runtime_for`): the command, the environment
    and the config files (uploaded into the container before it starts), and the ports
    published on `publish_address`, only those open to anywhere (`listener`).

    The image's own entrypoint stays and gets the command as its arguments: envoy's, redis'
    and mosquitto's start as root and drop to the image's user themselves (su-exec, gosu,
    the broker's own drop) after taking ownership of their config and key files, which
    Docker uploads owned by root. Kubernetes has no such step, hence its numeric users."""
    runtime = runtime_for(Workload(name=svc.name, image=svc.image, ports=svc.ports,
                                   health_path=svc.health_path, memory=f"{svc.requirements.memory_mb}Mi"))
    published = set(outside_ports(listener))
    spec: dict[str, Any] = {
        "ports": [{"internal": p.container_port, "external": p.port, "ip": publish_address}
                  for p in svc.ports if p.container_port in published],
    }
    if runtime.command or runtime.args:
        spec["command"] = [*(runtime.command or []), *(runtime.args or [])]
    if runtime.env:
        spec["envs"] = [f"{k}={v}" for k, v in sorted(runtime.env.items())]
    if runtime.config_files and runtime.config_dir:
        spec["uploads"] = [{"file": f"{runtime.config_dir}/{name}", "content": text}
                           for name, text in sorted(runtime.config_files.items())]
    return spec


def unit_name(service: str) -> str:
    return f"edgefabric-{service}.service"


def credentials_source(service: str) -> str:
    """Where a native service's secret files (keys, certificates) are installed: root-only,
    mode 0600. The unit hands them over with LoadCredential=."""
    return f"/etc/edgefabric/credentials/{service}"


def credentials_dir(service: str) -> str:
    """Where the running service reads them: systemd's $CREDENTIALS_DIRECTORY of a system
    unit, a copy readable by that unit's user only, made at every start."""
    return f"/run/credentials/{unit_name(service)}"


def state_dir(service: str) -> str:
    """The one directory a native service may write, kept across restarts (StateDirectory=)."""
    return f"/var/lib/edgefabric/{service}"


def systemd_unit(svc: EdgeService, environment: str, site: str) -> str:
    """A systemd unit with the service's requirements as cgroup limits.

    It runs as a DynamicUser: a uid allocated at start that owns nothing on disk, so it can
    neither read root-only keys nor write anywhere by itself. Its secret files come as
    credentials (every file of `credentials_source`, copied to `credentials_dir` under the
    same name), and it writes to its StateDirectory, also its working directory, which
    systemd chowns to that uid (redis' snapshots with the default `dir ./`, mosquitto's
    persistence)."""
    req = svc.requirements
    return "\n".join([
        "[Unit]",
        f"Description=edgefabric {svc.kind} {svc.name} ({environment}, site {site})",
        "After=network-online.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        f"ExecStart={svc.exec_start}",
        "Restart=always",
        "RestartSec=5",
        "DynamicUser=yes",
        f"LoadCredential={svc.name}:{credentials_source(svc.name)}",
        f"StateDirectory={state_dir(svc.name).removeprefix('/var/lib/')}",
        "StateDirectoryMode=0700",
        f"WorkingDirectory={state_dir(svc.name)}",
        f"CPUQuota={round(req.cpu * 100)}%",
        f"MemoryMax={req.memory_mb}M",
        f"Environment=EDGEFABRIC_ENVIRONMENT={environment} EDGEFABRIC_SITE={site}",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ])


def docker_health(svc: EdgeService) -> docker.ContainerHealthcheckArgs | None:
    """The container's Docker health check, run with what its image ships (image_facts.yaml
    `tools`/`dockerHealth`: envoy has bash but no wget, redis has redis-cli, a distroless image
    has no shell). None when the image ships nothing to probe with."""
    facts = facts_for(svc.image)
    test = facts.docker_health_test(svc.ports[0].container_port, svc.health_path) if facts else None
    if test is None:
        return None
    return docker.ContainerHealthcheckArgs(tests=test, interval="30s", timeout="5s", retries=3, start_period="10s")
