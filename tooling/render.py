"""Render the edgefabric program under Pulumi mocks: what a stack would register.

`render(raw_config)` runs `__main__.py` fresh in this process against an in-memory
monitor and returns every registered resource with its type, logical name, inputs,
parent and provider. The unit tests, `make render`, the policy run over rendered stacks
and `bench/render.py` all use it, so there is one way to render a stack without cloud
credentials.

Mocked outputs are chosen by resource type so that the program's `apply`s see realistic
shapes (a cluster endpoint, a load-balancer IP, an Azure kubeconfig list, ...).
"""

from __future__ import annotations

import base64
import gc
import hashlib
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from types import CodeType
from typing import Any

import pulumi
from pulumi.runtime import mocks as pmocks
from pulumi.runtime import settings as psettings
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from edgefabric.config import NAMESPACE, raw_from_stack_file

ROOT = Path(__file__).resolve().parent.parent
MAIN = ROOT / "__main__.py"


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


def mock_outputs(typ: str, name: str, inputs: dict[str, Any]) -> dict[str, Any]:
    """Plausible provider outputs per type, merged over the inputs."""
    out = dict(inputs)
    if typ == "aws:eks/cluster:Cluster":
        out.update(endpoint=f"https://{name}.eks.example.com",
                   certificateAuthority={"data": base64.b64encode(b"mock-ca").decode()},
                   arn=f"arn:aws:eks:us-east-1:123456789012:cluster/{inputs.get('name', name)}")
    elif typ == "aws:iam/role:Role":
        out.update(arn=f"arn:aws:iam::123456789012:role/{name}", name=name)
    elif typ == "gcp:container/cluster:Cluster":
        out.update(endpoint="34.87.0.10", masterAuth={"clusterCaCertificate": "bW9jay1jYQ=="})
    elif typ == "azure-native:resources:ResourceGroup":
        out.setdefault("name", inputs.get("resourceGroupName", name))
    elif typ == "azure-native:containerservice:ManagedCluster":
        out.setdefault("name", name)
    elif typ == "kubernetes:core/v1:Service":
        spec = inputs.get("spec") or {}
        if spec.get("type") == "LoadBalancer":
            out["status"] = {"loadBalancer": {"ingress": [{"ip": "203.0.113.10"}]}}
    elif typ == "pulumi-python:dynamic/registry:RegistryContract":
        out.update(address="0x5FbDB2315678afecb367f032d93F642f64180aa3", code_hash="0x" + "ab" * 32)
    elif typ == "pulumi-python:dynamic/registry:ServiceRegistration":
        out["service_id"] = "0x" + hashlib.sha256(name.encode()).hexdigest()
    elif typ == "gcp:compute/healthCheck:HealthCheck":
        out["selfLink"] = f"https://www.googleapis.com/compute/v1/projects/mock/global/healthChecks/{name}"
    elif typ == "docker:index/remoteImage:RemoteImage":
        out["imageId"] = f"sha256:{'0' * 64}"
    return out


class _Mocks(pmocks.Mocks):
    def new_resource(self, args: pmocks.MockResourceArgs) -> tuple[str, dict]:
        return f"{args.name}-id", mock_outputs(args.typ, args.name, args.inputs)

    def call(self, args: pmocks.MockCallArgs) -> dict:
        if args.token == "azure-native:containerservice:listManagedClusterUserCredentials":
            kubeconfig = json.dumps({"apiVersion": "v1", "kind": "Config", "clusters": []})
            return {"kubeconfigs": [{"name": "clusterUser",
                                     "value": base64.b64encode(kubeconfig.encode()).decode()}]}
        return {}


class _Monitor(pmocks.MockMonitor):
    """Records parent and provider of each registration, which MockResourceArgs omits."""

    def __init__(self, mocks: pmocks.Mocks) -> None:
        super().__init__(mocks)
        self.registered: list[Registered] = []

    def RegisterResource(self, request):
        response = super().RegisterResource(request)
        from google.protobuf import json_format

        inputs = json_format.MessageToDict(request.object)
        self.registered.append(Registered(
            urn=response.urn, type=request.type, name=request.name, inputs=_unwrap(inputs),
            parent=request.parent, provider=request.provider, custom=request.custom,
            secret_inputs={k for k, v in inputs.items() if _is_secret(v)},
        ))
        return response



_SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"


def _is_secret(value: Any) -> bool:
    return isinstance(value, dict) and value.get("4dabf18193072939515e22adb298388d") == _SECRET_SIG


def _unwrap(value: Any) -> Any:
    """Strip secret envelopes so assertions see plain values (secret-ness is kept apart)."""
    if _is_secret(value):
        return _unwrap(value.get("value"))
    if isinstance(value, dict):
        return {k: _unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unwrap(v) for v in value]
    return value


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic-GC passes while a program registers resources.

    A render allocates millions of short-lived Output and future objects; with the default
    thresholds every gen-2 pass rescans all live objects, and a 10,000-resource stack spends
    more time in the collector than in the program. On the way out the render's objects are
    parked (frozen) rather than collected on the spot: freeing a finished program is
    cleanup, not rendering (under `pulumi up` the process simply exits).
    `release_garbage()` frees them; `render()` calls it before it starts.
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


def mock_secret_values(raw: Mapping[str, Any]) -> dict[str, str]:
    """Secret config keys that `config:` references in a stack need, with fake values."""
    text = json.dumps(raw)
    keys = {part.split('"')[0] for part in text.split('"config:')[1:]}
    return {key: f"mock-secret-{key}" for key in keys}


def render(raw: Mapping[str, Any], *, stack: str = "test", preview: bool = False,
           env: Mapping[str, str] | None = None) -> Rendered:
    """Run the program under mocks with `raw` as the `edgefabric:` config.

    `raw` maps top-level keys to values (as `raw_from_stack_file` returns). Secure values
    and the secrets that `config:` references name are replaced with fake ones.
    Raises what the program raises (e.g. `ConfigError`).
    """
    import os

    release_garbage()
    plain = {k: v for k, v in raw.items() if not (isinstance(v, dict) and "secure" in v)}
    config = {f"{NAMESPACE}:{k}": v if isinstance(v, str) else json.dumps(v) for k, v in plain.items()}
    secrets = mock_secret_values(plain)
    config.update({f"{NAMESPACE}:{k}": v for k, v in secrets.items()})
    pulumi.runtime.set_all_config(config, secret_keys=[f"{NAMESPACE}:{k}" for k in secrets])

    saved_env = dict(os.environ)
    # `env:` references resolve from the environment; give each a fake value unless set.
    for name in {part.split('"')[0] for part in json.dumps(plain).split('"env:')[1:]}:
        os.environ.setdefault(name, f"mock-env-{name}")
    os.environ.update(env or {})
    psettings.set_root_resource(None)  # type: ignore[arg-type]
    monitor = _Monitor(_Mocks())
    pmocks.set_mocks(_Mocks(), project="edgefabric", stack=stack, preview=preview, monitor=monitor)
    namespace: dict[str, Any] = {}
    try:
        def run() -> None:
            # exec of the cached code object rather than runpy: the SDK records a stack trace
            # per resource, and runpy's frames would add to every one of them.
            namespace.update({"__name__": "__main__", "__file__": str(MAIN)})
            exec(_main_code(), namespace)

        with gc_paused():
            _sync_await(run_pulumi_func(run))
        # Under mocks the root stack finished before the program ran, so exports were never
        # registered; resolve them here, keeping which ones are secret.
        outputs, secret_outputs = _sync_await(_resolve_exports(psettings.get_root_resource().outputs))
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
    return Rendered(stack=stack, resources=monitor.registered, outputs=outputs,
                    secret_outputs=secret_outputs, namespace=namespace)


async def _resolve_exports(exports: Mapping[str, Any]) -> tuple[dict[str, Any], set[str]]:
    values: dict[str, Any] = {}
    secret: set[str] = set()
    for name, value in exports.items():
        out = pulumi.Output.from_input(value)
        values[name] = await out.future()
        if await out.is_secret():
            secret.add(name)
    return values, secret


@lru_cache(maxsize=1)
def _main_code() -> CodeType:
    return compile(MAIN.read_text(), str(MAIN), "exec")


def render_stack_file(path: Path | str, **kwargs: Any) -> Rendered:
    path = Path(path)
    stack = path.name.removeprefix("Pulumi.").removesuffix(".yaml")
    return render(raw_from_stack_file(path), stack=stack, **kwargs)
