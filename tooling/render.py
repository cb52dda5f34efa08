"""Render the edgefabric program under Pulumi mocks: what a stack would register.

`render(raw_config)` runs `__main__.py` fresh in this process under `pulumi.runtime.set_mocks`
and returns every registered resource with its URN, type, logical name, inputs, parent,
provider and which inputs are secret. The unit tests, `python -m tooling.report` (`make
render`), the policy run over rendered stacks and `bench/render.py` all use it, so there is
one way to render a stack without cloud credentials.

Built on the SDK's public API only:
- `pulumi.runtime.reset_options` + `set_mocks` give each render a fresh root stack, settings
  and RPC bookkeeping, so rendering many times in one process stays correct;
- a `pulumi.runtime.Mocks` subclass answers each registration like the cloud would (outputs
  by type, see `mock_outputs`) and sees the inputs as the provider would receive them: wire
  names, secrets still in their envelope, plus the provider reference and custom flag;
- `pulumi.runtime.register_stack_transformation` sees every resource as it is constructed,
  with its parent: that is what mocks do not report. (The newer `register_resource_transform`
  runs in the engine, and the mock monitor never calls it.)
- `pulumi.runtime.test` runs the program to quiescence and settles the URNs and exports.
The two views are joined on (type, name), and where a program reuses a type and name under
different parents, on the id, which the mocks hand out unique per type. Null inputs do not
appear: the SDK drops them before the mocks see them, as the engine would.

Mocked outputs are chosen by resource type so that the program's `apply`s see realistic
shapes (a cluster endpoint, a load-balancer IP on Azure and GCP but only a hostname on AWS,
an Azure kubeconfig list, ...).
"""

from __future__ import annotations

import base64
import functools
import gc
import hashlib
import ipaddress
import json
import os
import re
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from types import CodeType
from typing import Any, NamedTuple

import pulumi
import pulumi.runtime

from edgefabric.config import NAMESPACE, raw_from_stack_file
from edgefabric.tiers.cloud_core import kubeconfig

ROOT = Path(__file__).resolve().parent.parent
MAIN = ROOT / "__main__.py"
PROJECT = "edgefabric"
STACK_TYPE = "pulumi:pulumi:Stack"

# Pulumi's property-value wire format: a secret travels as {SIG_KEY: SECRET_SIG, "value": ...}.
# These two strings are part of the engine protocol (the same in every language SDK), which is
# how mocked inputs arrive; they are not SDK internals.
SIG_KEY = "4dabf18193072939515e22adb298388d"
SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"


@dataclass
class Registered:
    urn: str
    type: str
    name: str
    inputs: dict[str, Any]
    parent: str
    provider: str
    custom: bool
    secret_inputs: set[str] = field(default_factory=set)
    # URNs this resource depends on, as the engine hands them to a policy pack: all of them
    # (explicit `depends_on` and through inputs), and per input (wire name).
    dependencies: list[str] = field(default_factory=list)
    property_dependencies: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class Rendered:
    stack: str
    resources: list[Registered]
    outputs: dict[str, Any]
    secret_outputs: set[str]
    namespace: dict[str, Any]

    def of_type(self, typ: str) -> list[Registered]:
        return [r for r in self.resources if r.type == typ]

    def by_urn(self) -> dict[str, Registered]:
        return {r.urn: r for r in self.resources}


def provider_name(reference: str) -> str:
    """The logical name in a provider reference (`<provider urn>::<id>`): `aws-k8s`."""
    urn = reference.rsplit("::", 1)[0]
    return urn.rsplit("::", 1)[-1] if urn.count("::") >= 3 else ""


def on_aws(name: str, provider: str) -> bool:
    """A resource on an aws cluster: through the `aws-k8s` provider of the aws core (regional
    services on that cluster too), or, with no provider to go by, named `aws-...`."""
    return (provider_name(provider) or name).startswith("aws-")


def elb_hostname(name: str, region: str) -> str:
    """What an AWS load balancer reports: `<name>-<hash>.elb.<region>.amazonaws.com`, no IP."""
    return f"{name[:32]}-{hashlib.sha256(name.encode()).hexdigest()[:16]}.elb.{region}.amazonaws.com"


def mock_outputs(typ: str, name: str, inputs: dict[str, Any], provider: str = "",
                 aws_region: str = "us-east-1", aws_cluster: bool | None = None) -> dict[str, Any]:
    """Plausible provider outputs per type, merged over the inputs. `provider` is the
    registration's provider reference; `aws_region` the aws provider's region; `aws_cluster`
    whether that provider reaches an EKS cluster (None: judged by name, `on_aws`)."""
    out = dict(inputs)
    if typ == "aws:eks/cluster:Cluster":
        # As EKS answers: `https://<32 hex>.<cell>.<region>.eks.amazonaws.com`, and the CA as
        # base64 of a PEM bundle (what a kubeconfig's certificate-authority-data takes as is).
        cluster = inputs.get("name", name)
        digest = hashlib.sha256(cluster.encode()).hexdigest()[:32].upper()
        out.update(endpoint=f"https://{digest}.gr7.{aws_region}.eks.amazonaws.com",
                   certificateAuthority={"data": base64.b64encode(mock_pem(cluster)).decode()},
                   arn=f"arn:aws:eks:{aws_region}:123456789012:cluster/{cluster}",
                   status="ACTIVE", platformVersion="eks.1",
                   identities=[{"oidcs": [{"issuer": f"https://oidc.eks.{aws_region}.amazonaws.com/id/{digest}"}]}])
    elif typ == "aws:iam/role:Role":
        out.update(arn=f"arn:aws:iam::123456789012:role/{name}", name=name)
    elif typ == "gcp:container/cluster:Cluster":
        # A private endpoint answers on a private IP inside the master range; a public one on
        # a public IP. GKE reports the full version it runs, e.g. 1.34.1-gke.1200000.
        private_config = inputs.get("privateClusterConfig") or {}
        master = ipaddress.ip_network(private_config.get("masterIpv4CidrBlock") or "172.16.0.32/28")
        private_ip, public_ip = str(master[2]), "34.87.0.10"
        version = inputs.get("minMasterVersion") or "1.34"
        out.update(endpoint=private_ip if private_config.get("enablePrivateEndpoint") else public_ip,
                   privateClusterConfig={**private_config, "privateEndpoint": private_ip,
                                         "publicEndpoint": public_ip},
                   masterVersion=f"{version}.1-gke.1200000",
                   masterAuth={"clusterCaCertificate": base64.b64encode(mock_pem(name)).decode()})
    elif typ == "gcp:serviceaccount/account:Account":
        out["email"] = f"{inputs.get('accountId', name)}@mock-project.iam.gserviceaccount.com"
    elif typ == "azure-native:resources:ResourceGroup":
        out.setdefault("name", inputs.get("resourceGroupName", name))
    elif typ == "azure-native:containerservice:ManagedCluster":
        out.setdefault("name", name)
    elif typ == "kubernetes:core/v1:Service":
        spec = inputs.get("spec") or {}
        if spec.get("type") == "LoadBalancer":
            # As the clouds answer: an AWS load balancer reports a hostname only (the program
            # must cope with that), Azure and GCP an IP.
            eks = on_aws(name, provider) if aws_cluster is None else aws_cluster
            point = {"hostname": elb_hostname(name, aws_region)} if eks else {"ip": "203.0.113.10"}
            out["status"] = {"loadBalancer": {"ingress": [point]}}
    elif typ == "kubernetes:core/v1:Secret" and inputs.get("type") == "kubernetes.io/service-account-token":
        # As the token controller fills it (and the provider waits for): the account's token,
        # the cluster's CA and the namespace, base64 in `data`.
        meta = inputs.get("metadata") or {}
        token = "eyJhbGciOiJSUzI1NiJ9." + hashlib.sha256(name.encode()).hexdigest()
        out["data"] = {"token": base64.b64encode(token.encode()).decode(),
                       "ca.crt": base64.b64encode(mock_pem(name)).decode(),
                       "namespace": base64.b64encode(str(meta.get("namespace", "default")).encode()).decode()}
    elif typ == "pulumi-python:dynamic/registry:RegistryContract":
        out.update(address="0x5FbDB2315678afecb367f032d93F642f64180aa3", code_hash="0x" + "ab" * 32)
    elif typ == "pulumi-python:dynamic/registry:ServiceRegistration":
        out["service_id"] = "0x" + hashlib.sha256(name.encode()).hexdigest()
    elif typ == "pulumi-python:dynamic/registry:HeartbeatDelegate":
        # As the provider answers: a fresh key (secret output) and its address.
        digest = hashlib.sha256(name.encode()).hexdigest()
        out.update(address="0x" + digest[:40], private_key="0x" + digest, funded_wei=inputs.get("funding_wei", 0))
    elif typ == "aws:route53/zone:Zone":
        out.update(mock_route53_zone(inputs.get("name", name)))
    elif typ == "gcp:dns/managedZone:ManagedZone":
        out.update(nameServers=mock_gcp_name_servers(inputs.get("name", name)),
                   managedZoneId=int(hashlib.sha256(name.encode()).hexdigest()[:12], 16))
    elif typ == "gcp:compute/healthCheck:HealthCheck":
        out["selfLink"] = f"https://www.googleapis.com/compute/v1/projects/mock/global/healthChecks/{name}"
    elif typ == "docker:index/remoteImage:RemoteImage":
        out["imageId"] = f"sha256:{'0' * 64}"
    elif typ in ("pulumi-python:dynamic/pki:CertificateAuthority", "pulumi-python:dynamic/pki:Certificate"):
        # PEM-framed like the real provider's answer, so that a key that leaks into a
        # ConfigMap or an output is visible by its "PRIVATE KEY" frame.
        digest = hashlib.sha256(name.encode()).hexdigest()
        out.update(cert_pem=mock_pem(name).decode(), serial=digest[:16], not_after="2028-12-31T00:00:00+00:00",
                   key_pem=f"-----BEGIN PRIVATE KEY-----\n{digest}\n-----END PRIVATE KEY-----\n")
    return out


def mock_route53_zone(zone: str) -> dict[str, Any]:
    """As Route53 answers for a public hosted zone: an id `Z` + 13-32 upper-case letters and
    digits, the name without its trailing dot, and four name servers of its delegation set,
    also without a trailing dot (one per TLD, as AWS spreads them)."""
    digest = hashlib.sha256(zone.encode()).hexdigest()
    n = int(digest[:8], 16)
    servers = [f"ns-{(n + i * 509) % 2048}.awsdns-{(n >> 4) % 64 + i:02d}.{tld}"
               for i, tld in enumerate(("com", "net", "org", "co.uk"))]
    return {"zoneId": "Z" + digest[:20].upper(), "name": zone.rstrip("."), "nameServers": servers,
            "primaryNameServer": servers[0]}


def mock_gcp_name_servers(zone: str) -> list[str]:
    """As Cloud DNS answers: four `ns-cloud-<letter><1-4>.googledomains.com.`, with the dot."""
    letter = "abcde"[int(hashlib.sha256(zone.encode()).hexdigest()[:2], 16) % 5]
    return [f"ns-cloud-{letter}{i}.googledomains.com." for i in range(1, 5)]


def mock_pem(subject: str) -> bytes:
    """A PEM-framed certificate body (not a valid certificate: nothing here verifies TLS)."""
    body = base64.b64encode(hashlib.sha256(subject.encode()).digest() * 8).decode()
    return f"-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n".encode()


def mock_call(token: str, args: Mapping[str, Any]) -> dict[str, Any]:
    """Plausible results of provider functions (invokes) the program calls."""
    if token == "azure-native:containerservice:listManagedClusterUserCredentials":
        # As AKS answers for an Entra ID cluster: the API server's FQDN, and with format=exec
        # a kubelogin exec user rather than a credential.
        name = str(args.get("resourceName", "aks"))
        server = f"https://{name}-{hashlib.sha256(name.encode()).hexdigest()[:8]}.hcp.westeurope.azmk8s.io:443"
        user: dict[str, Any] = ({"exec": {
            "apiVersion": "client.authentication.k8s.io/v1beta1", "command": "kubelogin",
            "args": ["get-token", "--login", "devicecode", "--server-id", "6dae42f8-4368-4678-94ff-3960e28e3630"]}}
            if args.get("format") == "exec" else {"token": "mock-static-token"})
        kubeconfig = json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": name,
            "clusters": [{"name": name, "cluster": {"server": server,
                                                    "certificate-authority-data": base64.b64encode(
                                                        mock_pem(name)).decode()}}],
            "contexts": [{"name": name, "context": {"cluster": name, "user": f"clusterUser_{name}"}}],
            "users": [{"name": f"clusterUser_{name}", "user": user}]})
        return {"kubeconfigs": [{"name": "clusterUser",
                                 "value": base64.b64encode(kubeconfig.encode()).decode()}]}
    if token == "aws:route53/getZone:getZone":
        # An adopted zone, by id or by name: what Route53 reports for it.
        zone = str(args.get("name") or f"{args.get('zoneId')}.example.com")
        found = mock_route53_zone(zone)
        if args.get("zoneId"):
            found["zoneId"] = args["zoneId"]
        return {**found, "id": found["zoneId"], "privateZone": False, "resourceRecordSetCount": 2}
    if token == "gcp:dns/getManagedZone:getManagedZone":
        zone = str(args.get("name"))
        return {"name": zone, "project": args.get("project"), "nameServers": mock_gcp_name_servers(zone),
                "visibility": "public", "id": f"projects/{args.get('project')}/managedZones/{zone}"}
    return {}


class Registration(NamedTuple):
    """What the mocks saw of one registration: the provider's view of it."""

    id: str
    type: str
    name: str
    inputs: dict[str, Any]
    provider: str
    custom: bool


class CloudMocks(pulumi.runtime.Mocks):
    """Answers registrations with `mock_outputs` and invokes with `mock_call`; keeps what it saw.

    Ids are `<name>-id`, with a counter added when a type and name come back (under another
    parent), so that ids are unique per type, as a cloud's would be."""

    def __init__(self) -> None:
        self.registrations: list[Registration] = []
        self._seen: dict[tuple[str, str], int] = defaultdict(int)
        self._aws_region = "us-east-1"
        # Each aws provider's region, by name: a resource answers in its own provider's region;
        # each Kubernetes provider whose kubeconfig reaches EKS, with that cluster's region.
        self._aws_regions: dict[str, str] = {}

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict]:
        self._seen[(args.typ, args.name)] += 1
        seen = self._seen[(args.typ, args.name)]
        rid = f"{args.name}-id" if seen == 1 else f"{args.name}-id-{seen}"
        self.registrations.append(Registration(rid, args.typ, args.name, args.inputs,
                                               args.provider or "", bool(args.custom)))
        if args.typ == "pulumi:providers:aws" and isinstance(args.inputs.get("region"), str):
            self._aws_region = args.inputs["region"]  # the aws core's region, for ELB hostnames
            self._aws_regions[args.name] = args.inputs["region"]
        # An aws resource answers in its provider's region; a Service on an aws cluster in the
        # region of the cluster's own provider (`<prefix>-k8s` made from `<prefix>-cluster`).
        if args.typ == "pulumi:providers:kubernetes":
            server = re.search(r"\.gr7\.([a-z0-9-]+)\.eks\.amazonaws\.com", str(args.inputs.get("kubeconfig", "")))
            if server:
                self._aws_regions[args.name] = server.group(1)
        via = provider_name(args.provider or "")
        region = self._aws_regions.get(via, self._aws_region)
        eks = True if via in self._aws_regions and args.typ.startswith("kubernetes:") else None
        return rid, mock_outputs(args.typ, args.name, args.inputs, args.provider or "", region, eks)

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict, list[tuple[str, str]]]:
        return mock_call(args.token, args.args), []  # (result, check failures)


def is_secret_value(value: Any) -> bool:
    """A value in the secret envelope of the wire format (how mocks receive secret inputs)."""
    return isinstance(value, dict) and value.get(SIG_KEY) == SECRET_SIG


def unwrap(value: Any) -> Any:
    """Strip secret envelopes so assertions see plain values (secret-ness is kept apart)."""
    if is_secret_value(value):
        return unwrap(value.get("value"))
    if isinstance(value, dict):
        return {k: unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap(v) for v in value]
    return value


class Construction(NamedTuple):
    resource: pulumi.Resource
    type: str
    name: str
    parent: pulumi.Resource | None  # None: the root stack
    props: Mapping[str, Any] | None = None  # the inputs as the program gave them (Outputs and all)
    depends_on: Any = None


class _Constructions:
    """A stack transformation that records each resource as it is constructed, with its parent."""

    def __init__(self) -> None:
        self.seen: list[Construction] = []

    def __call__(self, args: pulumi.ResourceTransformationArgs) -> None:
        self.seen.append(Construction(args.resource, args.type_, args.name,
                                      args.opts.parent if args.opts else None, args.props,
                                      args.opts.depends_on if args.opts else None))
        return None  # nothing changed: the resource registers exactly as the program wrote it


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic-GC passes while a program registers resources.

    A render allocates millions of short-lived Output and future objects; with the default
    thresholds every gen-2 pass rescans all live objects, and a 10,000-resource stack spends
    more time in the collector than in the program. On the way out the render's objects are
    parked (frozen) rather than collected on the spot: freeing a finished program is
    cleanup, not rendering (under `pulumi up` the process simply exits).
    `release_garbage()` frees them; every render calls it before it starts.
    """
    global _parked
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()
        _parked = True


_parked = False


def release_garbage() -> None:
    """Collect what earlier renders parked; a no-op when nothing is parked (a full collection
    walks every live object, which costs a few hundred ms with the cloud SDKs loaded)."""
    global _parked
    if _parked:
        gc.unfreeze()
        gc.collect()
        _parked = False


class Resolved(NamedTuple):
    value: Any
    secret: bool


def resolve(value: Any) -> Resolved:
    """Settle an Output (or any input) after a render: its plain value and whether it is secret."""
    box: list[Resolved] = []

    def settle() -> pulumi.Output[Any]:
        out = pulumi.Output.from_input(value)
        flag: pulumi.Output[bool] = pulumi.Output.from_input(out.is_secret())
        return pulumi.Output.all(out, flag).apply(
            lambda pair: box.append(Resolved(pair[0], bool(pair[1]))), run_with_unknowns=True)

    pulumi.runtime.test(settle)()
    return box[0]


def render_program(program: Callable[[], object], *, stack: str = "test", preview: bool = False,
                   namespace: dict[str, Any] | None = None) -> Rendered:
    """Run `program` (any callable that declares resources) under the mocks; what it registered.

    The first resource is the root stack; exports are resolved, with which ones are secret.
    Raises what the program raises. `namespace` is handed back in the result as is.
    """
    global _last_mocks
    release_garbage()
    # A fresh root stack, settings and RPC bookkeeping: nothing leaks from an earlier render.
    pulumi.runtime.reset_options(project=PROJECT, stack=stack, preview=preview)
    mocks = _last_mocks = CloudMocks()
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=preview)
    root = pulumi.runtime.get_root_resource()
    assert root is not None, "set_mocks did not create the root stack"
    constructions = _Constructions()
    pulumi.runtime.register_stack_transformation(constructions)
    with gc_paused():
        # Returns once every registration, apply and export has settled.
        pulumi.runtime.test(program)()
        resources = _join(root, constructions.seen, mocks.registrations)
        # Under mocks the root stack finished before the program ran, so exports were never
        # registered as stack outputs; settle them here, keeping which ones are secret.
        outputs, secret_outputs = _settle_exports(getattr(root, "outputs", {}))
    return Rendered(stack=stack, resources=resources, outputs=outputs, secret_outputs=secret_outputs,
                    namespace=namespace if namespace is not None else {})


_last_mocks: CloudMocks | None = None


def last_registrations() -> list[Registration]:
    """What the mocks saw in the latest render, also when it raised: e.g. that a bad config
    failed before the first resource was registered. (The root stack is not among them.)"""
    return list(_last_mocks.registrations) if _last_mocks is not None else []


def _join(root: pulumi.Resource, seen: list[Construction], registrations: list[Registration]) -> list[Registered]:
    """Constructed resources (URN, parent) joined with what the mocks saw (inputs, provider).

    The join is on (type, name); where a type and name were registered more than once (under
    different parents), on the id the mocks handed out, which is unique per type."""
    by_name: dict[tuple[str, str], list[Registration]] = defaultdict(list)
    for r in registrations:
        by_name[(r.type, r.name)].append(r)
    # Keyed by id(): a program's resource classes may define __eq__ (and so lose __hash__).
    named = {id(c.resource) for c in seen}
    every = [root, *(c.resource for c in seen),
             *(c.parent for c in seen if c.parent is not None and id(c.parent) not in named)]
    urns: dict[int, str] = {}
    ids: dict[int, Any] = {}

    def settle() -> None:
        # Each apply is an output the runtime waits for before the program counts as done.
        for res in every:
            res.urn.apply(functools.partial(urns.__setitem__, id(res)), True)
        for c in seen:
            if len(by_name[(c.type, c.name)]) > 1 and isinstance(c.resource, pulumi.CustomResource):
                c.resource.id.apply(functools.partial(ids.__setitem__, id(c.resource)), True)

        for c in seen:
            dependencies: Awaitable[Any] = _dependencies(c)
            pulumi.Output.from_input(dependencies).apply(
                functools.partial(deps.__setitem__, id(c.resource)), True)

    deps: dict[int, tuple[dict[str, set[int]], set[int]]] = {}
    pulumi.runtime.test(settle)()
    missing = [res for res in every if id(res) not in urns]
    if missing:
        raise RuntimeError(f"{len(missing)} resource URN(s) never resolved under the mocks")
    out = [Registered(urn=urns[id(root)], type=STACK_TYPE, name=f"{PROJECT}-{pulumi.get_stack()}", inputs={},
                      parent="", provider="", custom=False)]
    for res, typ, name, parent, *_ in seen:
        candidates = by_name[(typ, name)]
        reg = next((r for r in candidates if r.id == ids[id(res)]), None) if id(res) in ids else None
        if reg is None and candidates:
            # Unique (the rule), or a component or read resource, which has no id of ours:
            # first come, first served.
            reg = candidates[0]
        if reg is None:  # looked up by URN (`opts.urn`): nothing was registered with the mocks
            out.append(Registered(urn=urns[id(res)], type=typ, name=name, inputs={}, parent=urns[id(parent or root)],
                                  provider="", custom=isinstance(res, pulumi.CustomResource)))
            continue
        candidates.remove(reg)
        per_prop, explicit = deps.get(id(res), ({}, set()))
        by_prop = {key: sorted(urns[r] for r in found if r in urns) for key, found in per_prop.items()}
        every_dep = sorted({urns[r] for r in explicit | set().union(*per_prop.values()) if r in urns})
        out.append(Registered(
            urn=urns[id(res)], type=reg.type, name=reg.name, inputs=unwrap(reg.inputs),
            parent=urns[id(parent or root)],
            # A read's registration does not say it is custom: the class does.
            provider=reg.provider, custom=reg.custom or isinstance(res, pulumi.CustomResource),
            secret_inputs={k for k, v in reg.inputs.items() if is_secret_value(v)},
            dependencies=every_dep, property_dependencies=by_prop,
        ))
    return out


def _wire_name(key: str) -> str:
    """`subnet_ids` -> `subnetIds`: the Python SDK's input names as the engine carries them."""
    head, *rest = key.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _outputs(value: Any, depth: int = 0) -> Iterator[pulumi.Output[Any]]:
    """Every Output inside an input value (dicts, lists and the SDKs' `...Args` classes)."""
    if depth > 20 or value is None or isinstance(value, str | int | float | bool | pulumi.Resource):
        return
    if isinstance(value, pulumi.Output):
        yield value
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from _outputs(v, depth + 1)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _outputs(v, depth + 1)
    elif hasattr(value, "__dict__") and type(value).__module__.startswith("pulumi"):
        yield from _outputs(vars(value), depth + 1)


async def _dependencies(c: Construction) -> tuple[dict[str, set[int]], set[int]]:
    """(resources per input, resources named in depends_on), as ids of the resource objects."""
    per_prop: dict[str, set[int]] = {}
    for key, value in (c.props or {}).items():
        found: set[int] = set()
        for out in _outputs(value):
            found |= {id(r) for r in await out.resources()}
        found.discard(id(c.resource))
        if found:
            per_prop[_wire_name(key)] = found
    explicit = c.depends_on if isinstance(c.depends_on, list | tuple) else [c.depends_on]
    return per_prop, {id(d) for d in explicit if isinstance(d, pulumi.Resource)}


def _settle_exports(exports: Mapping[str, Any]) -> tuple[dict[str, Any], set[str]]:
    values: dict[str, Any] = {}
    secret: set[str] = set()
    if not exports:
        return values, secret

    def settle() -> pulumi.Output[Any]:
        outs = {name: pulumi.Output.from_input(v) for name, v in exports.items()}
        flags: dict[str, pulumi.Output[bool]] = {name: pulumi.Output.from_input(o.is_secret())
                                                 for name, o in outs.items()}
        return pulumi.Output.all(
            pulumi.Output.all(**outs).apply(values.update, run_with_unknowns=True),
            pulumi.Output.all(**flags).apply(lambda f: secret.update(k for k, s in f.items() if s)),
        )

    pulumi.runtime.test(settle)()
    return values, secret


def mock_secret_values(raw: Mapping[str, Any]) -> dict[str, str]:
    """Secret config keys that `config:` references in a stack need, with fake values."""
    text = json.dumps(raw)
    keys = {part.split('"')[0] for part in text.split('"config:')[1:]}
    return {key: f"mock-secret-{key}" for key in keys}


def _kubeconfig_refs(value: Any) -> set[str]:
    """Every `kubeconfigRef` in the config (clusters, edge sites)."""
    if isinstance(value, dict):
        out = {v for k, v in value.items() if k == "kubeconfigRef" and isinstance(v, str)}
        for v in value.values():
            out |= _kubeconfig_refs(v)
        return out
    if isinstance(value, list):
        return set().union(*(_kubeconfig_refs(v) for v in value)) if value else set()
    return set()


def mock_kubeconfig(name: str) -> str:
    """A kubeconfig shaped like a cluster's: a server, its CA, a client token."""
    host = re.sub(r"[^a-z0-9-]", "-", name.lower()).strip("-") or "cluster"
    return kubeconfig(f"https://{host}.k8s.mock:6443", base64.b64encode(mock_pem(host)).decode(), host,
                      {"token": "mock-token-" + host})


def render(raw: Mapping[str, Any], *, stack: str = "test", preview: bool = False,
           env: Mapping[str, str] | None = None) -> Rendered:
    """Run the program under mocks with `raw` as the `edgefabric:` config.

    `raw` maps top-level keys to values (as `raw_from_stack_file` returns). Secure values
    and the secrets that `config:` references name are replaced with fake ones.
    Raises what the program raises (e.g. `ConfigError`).
    """
    plain = {k: v for k, v in raw.items() if not (isinstance(v, dict) and "secure" in v)}
    config = {f"{NAMESPACE}:{k}": v if isinstance(v, str) else json.dumps(v) for k, v in plain.items()}
    secrets = mock_secret_values(plain)
    # A kubeconfig reference resolves to a kubeconfig, as it does for real (the program reads
    # the server address from it).
    kubeconfigs = {ref: mock_kubeconfig(ref.split(":", 1)[1]) for ref in _kubeconfig_refs(plain)}
    secrets.update({ref.split(":", 1)[1]: text for ref, text in kubeconfigs.items() if ref.startswith("config:")})
    config.update({f"{NAMESPACE}:{k}": v for k, v in secrets.items()})
    pulumi.runtime.set_all_config(config, secret_keys=[f"{NAMESPACE}:{k}" for k in secrets])

    saved_env = dict(os.environ)
    # `env:` references resolve from the environment; give each a fake value unless set.
    for name in {part.split('"')[0] for part in json.dumps(plain).split('"env:')[1:]}:
        os.environ.setdefault(name, f"mock-env-{name}")
    for ref, text in kubeconfigs.items():
        if ref.startswith("env:") and os.environ.get(ref[4:], "").startswith("mock-env-"):
            os.environ[ref[4:]] = text
    os.environ.update(env or {})
    namespace: dict[str, Any] = {}

    def program() -> None:
        # exec of the cached code object rather than runpy: the SDK records a stack trace
        # per resource, and runpy's frames would add to every one of them.
        namespace.update({"__name__": "__main__", "__file__": str(MAIN)})
        exec(_main_code(), namespace)

    try:
        return render_program(program, stack=stack, preview=preview, namespace=namespace)
    finally:
        os.environ.clear()
        os.environ.update(saved_env)


@lru_cache(maxsize=1)
def _main_code() -> CodeType:
    return compile(MAIN.read_text(), str(MAIN), "exec")


def render_stack_file(path: Path | str, **kwargs: Any) -> Rendered:
    path = Path(path)
    stack = path.name.removeprefix("Pulumi.").removesuffix(".yaml")
    return render(raw_from_stack_file(path), stack=stack, **kwargs)
