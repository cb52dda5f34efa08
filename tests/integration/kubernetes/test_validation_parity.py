"""Our validation is never weaker than the API server's.

The shipped stacks (Pulumi.<stack>.yaml, through the config loader) are mutated one key at a
time: duplicate names in each named list, names Kubernetes derives that grow too long or stop
being DNS labels, port names and numbers, quantities, env var names, label keys and values,
images. Each mutation goes through our config (`load_config`); what it accepts is rendered
under the mocks (`tooling.render`) and every Kubernetes object that changed is sent to a real
local API server as a server-side dry run (server-side apply, `dryRun=All`,
`fieldValidation=Strict`). The test fails when:

- the server rejects an object of a config our rules accepted (the property itself), for the
  shipped stacks as they are and for mutations that should stay valid (boundaries);
- our rules let a mutation through that this file says Kubernetes refuses, or refuse it
  without naming the key path the mutation changed;
- with our semantic rules switched off, the server accepts what a mutation marked "server"
  renders, or a mutation marked "engine" renders no two resources of one URN (which the
  engine refuses): the mutation list says what Kubernetes refuses, and this keeps it honest.

The API server is the local control plane of conftest.py (the azure-flavoured one; it needs no
nodes for a dry run). Namespaces the objects live in are created for real (a dry run of a
namespaced object needs its namespace) and deleted at the end.
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest

import edgefabric.config.loading as loading
from devenv.kubernetes import KubeApi, LocalCluster
from edgefabric.config import load_config, raw_from_stack_file
from edgefabric.errors import ConfigError
from tooling.render import Registered, provider_name, render

ROOT = Path(__file__).resolve().parents[3]
STACKS = ("local", "dev", "staging", "prod")
FIELD_MANAGER = "edgefabric-parity"
Raw = dict[str, Any]
# (provider name, type token, namespace, name): one object of one cluster
Key = tuple[str, str, str, str]
# Made for real, in this order, when their dry run passes: a namespaced object's dry run needs its
# namespace, and a Pod's the service account it names.
PREREQUISITES = ("Namespace", "ServiceAccount")
POD = "kubernetes:core/v1:Pod"  # not rendered: what the ReplicaSet of a rendered Deployment makes

# --------------------------------------------------------------------------- the API server


class DryRun:
    """Server-side apply with dryRun=All against one API server; namespaces made for real."""

    def __init__(self, api: KubeApi) -> None:
        self.api = api
        self._resources: dict[tuple[str, str], tuple[str, bool]] = {}
        self.created_namespaces: list[str] = []
        self.made: set[Key] = set()
        self.sent = 0

    def _resource(self, api_version: str, kind: str) -> tuple[str, bool]:
        """(collection path without namespace, namespaced?) from the server's discovery."""
        if (api_version, kind) not in self._resources:
            base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
            for res in self.api.get(base)["resources"]:
                if "/" not in res["name"]:
                    self._resources[(api_version, res["kind"])] = (f"{base}/{res['name']}", res["namespaced"])
        return self._resources[(api_version, kind)]

    def apply(self, obj: dict[str, Any], *, dry_run: bool = True) -> str | None:
        """Apply `obj`; None when the server accepts it, else its message."""
        collection, namespaced = self._resource(obj["apiVersion"], obj["kind"])
        meta = obj["metadata"]
        base, plural = collection.rsplit("/", 1)
        path = f"{base}/namespaces/{meta['namespace']}/{plural}" if namespaced else collection
        params: dict[str, Any] = {"fieldManager": FIELD_MANAGER, "force": "true", "fieldValidation": "Strict"}
        if dry_run:
            params["dryRun"] = "All"
        self.sent += 1
        status, body = self.api.request("PATCH", f"{path}/{meta['name']}", obj, ok=range(400, 600),
                                        content_type="application/apply-patch+yaml", **params)
        if status < 400:
            return None
        return body.get("message", str(body)) if isinstance(body, dict) else str(body)

    def make(self, obj: dict[str, Any]) -> None:
        """Create `obj` for real (it was accepted in a dry run); namespaces are remembered for
        the cleanup, and whatever lives in them goes with them."""
        assert self.apply(obj, dry_run=False) is None, obj["metadata"]
        if obj["kind"] == "Namespace":
            self.created_namespaces.append(obj["metadata"]["name"])

    def send(self, objects: dict[Key, dict[str, Any]]) -> dict[Key, str]:
        """Dry-run every object; the rejections by key. What others need to exist for their dry
        run (namespaces, then the service accounts Pods name) is made for real when accepted.
        An object whose namespace was rejected is not sent: that rejection is the finding."""
        rejected: dict[Key, str] = {}
        done: set[Key] = set()
        for kind in PREREQUISITES:
            for key, obj in objects.items():
                if obj["kind"] != kind:
                    continue
                done.add(key)
                if (message := self.apply(obj)) is not None:
                    rejected[key] = message
                elif key not in self.made:
                    self.make(obj)
                    self.made.add(key)
        bad_namespaces = {key[3] for key in rejected if key[1] == "kubernetes:core/v1:Namespace"}
        for key, obj in objects.items():
            if key in done or obj["metadata"].get("namespace") in bad_namespaces:
                continue
            if (message := self.apply(obj)) is not None:
                rejected[key] = message
        return rejected

    def cleanup(self) -> None:
        for name in self.created_namespaces:
            self.api.delete(f"/api/v1/namespaces/{name}")


@pytest.fixture(scope="module")
def server(azure_cluster: LocalCluster) -> Iterator[DryRun]:
    dry = DryRun(azure_cluster.api)
    yield dry
    dry.cleanup()


# ------------------------------------------------------------------------ rendering objects


def _wire(value: Any) -> Any:
    """Numbers as the provider sends them: the mocks see 2.0 for 2 (the engine's numbers are
    float64), the provider sends whole numbers as integers."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _wire(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_wire(v) for v in value]
    return value


def kubernetes_objects(resources: list[Registered]) -> dict[Key, dict[str, Any]]:
    """Every Kubernetes object rendered, plus the Pod each Deployment's template makes: some
    checks run on Pods only (an image with whitespace passes in a template, then the ReplicaSet
    cannot make a single Pod)."""
    out: dict[Key, dict[str, Any]] = {}
    for res in resources:
        if not res.type.startswith("kubernetes:") or not res.custom:
            continue
        obj = _wire(res.inputs)
        meta = obj["metadata"]
        cluster = provider_name(res.provider)
        out[(cluster, res.type, meta.get("namespace", ""), meta["name"])] = obj
        if obj["kind"] == "Deployment":
            template = obj["spec"]["template"]
            out[(cluster, POD, meta["namespace"], meta["name"])] = {
                "apiVersion": "v1", "kind": "Pod", "spec": template["spec"],
                "metadata": {"name": f"{meta['name']}-parity", "namespace": meta["namespace"],
                             "labels": template["metadata"].get("labels", {})}}
    return out


def base_raw(stack: str) -> Raw:
    return raw_from_stack_file(ROOT / f"Pulumi.{stack}.yaml")


_baselines: dict[str, dict[Key, dict[str, Any]]] = {}


def baseline(stack: str) -> dict[Key, dict[str, Any]]:
    if stack not in _baselines:
        _baselines[stack] = kubernetes_objects(render(base_raw(stack), stack=stack).resources)
    return _baselines[stack]


def changed(stack: str, objects: dict[Key, dict[str, Any]]) -> dict[Key, dict[str, Any]]:
    """The objects a mutation added or changed, and the namespaces they live in."""
    base = baseline(stack)
    out = {k: o for k, o in objects.items() if base.get(k) != o}
    needed = {k[2] for k in out if k[2]}
    out.update({k: o for k, o in objects.items() if o["kind"] == "Namespace" and k[3] in needed})
    return out


# ------------------------------------------------------------------------------ mutations

Expect = Literal["accepted", "server", "engine", "model", "stricter"]


@dataclass(frozen=True)
class Mutation:
    """One change to a stack's `edgefabric:` keys.

    `change` mutates the raw config in place and returns the key path it changed (the path our
    refusal must name), or None when the stack has nothing to change there. `expect`:
    - accepted: valid for us and for Kubernetes (a boundary);
    - server: our rules refuse it; with them off, the API server rejects what it renders;
    - engine: our rules refuse it; with them off, two resources share a URN (the engine refuses);
    - model: our models refuse it by type, so nothing renders either way;
    - stricter: our rules refuse it and the server would take it; `why` says why we refuse.
    """

    id: str
    change: Callable[[Raw], str | None]
    expect: Expect
    why: str = ""


def _at(raw: Raw, *keys: str | int) -> Any:
    node: Any = raw
    for key in keys:
        if isinstance(key, int):
            if not isinstance(node, list) or len(node) <= key:
                return None
        elif not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _k8s_site(raw: Raw) -> int | None:
    sites = _at(raw, "edge", "sites") or []
    return next((i for i, s in enumerate(sites) if (s.get("capabilities") or {}).get("runtime", "kubernetes")
                 == "kubernetes"), None)


def _set(*keys: str | int, value: Any, path: str) -> Callable[[Raw], str | None]:
    """Set raw[keys...] = value (the parent must exist): `path` is the key path reported."""
    def change(raw: Raw) -> str | None:
        parent = _at(raw, *keys[:-1])
        if parent is None:
            return None
        parent[keys[-1]] = copy.deepcopy(value)
        return path
    return change


def _dup(*keys: str | int, field: str = "name") -> Callable[[Raw], str | None]:
    """Append a copy of the list's first entry: its `field` repeats."""
    def change(raw: Raw) -> str | None:
        items = _at(raw, *keys)
        if not items:
            return None
        items.append(copy.deepcopy(items[0]))
        return _path(*keys) + f"[{len(items) - 1}].{field}"
    return change


def _path(*keys: str | int) -> str:
    out = ""
    for key in keys:
        out += f"[{key}]" if isinstance(key, int) else ("." if out else "") + key
    return out


def _rename_region(name: str) -> Callable[[Raw], str | None]:
    """regions[0].name, and what names it (`dataFlows.sites` values)."""
    def change(raw: Raw) -> str | None:
        region = _at(raw, "regions", 0)
        if region is None:
            return None
        old, region["name"] = region["name"], name
        sites = _at(raw, "dataFlows", "sites") or {}
        sites.update({site: name for site, target in sites.items() if target == old})
        return "regions[0].name"
    return change


def _rename_site(name: str) -> Callable[[Raw], str | None]:
    """The first Kubernetes site's name, and what names it (a `dataFlows.sites` key)."""
    def change(raw: Raw, i: int) -> str | None:
        site = raw["edge"]["sites"][i]
        old, site["name"] = site["name"], name
        sites = _at(raw, "dataFlows", "sites") or {}
        if old in sites:
            sites[name] = sites.pop(old)
        return f"edge.sites[{i}].name"
    return _site(change)


def _region_service(field: str, value: Any) -> Callable[[Raw], str | None]:
    return _set("regions", 0, "services", 1, field, value=value, path=f"regions[0].services[1].{field}")


def _site(mutate: Callable[[Raw, int], str | None]) -> Callable[[Raw], str | None]:
    def change(raw: Raw) -> str | None:
        i = _k8s_site(raw)
        return None if i is None else mutate(raw, i)
    return change


def _site_set(*keys: str | int, value: Any) -> Callable[[Raw], str | None]:
    return _site(lambda raw, i: _set("edge", "sites", i, *keys, value=value,
                                     path=_path("edge", "sites", i, *keys))(raw))


def _region_port(field: str, value: Any) -> Callable[[Raw], str | None]:
    return _set("regions", 0, "services", 0, "ports", 0, field, value=value,
                path=f"regions[0].services[0].ports[0].{field}")


def _second_port(raw: Raw) -> str | None:
    """A second port on a region's gateway with the first one's number."""
    ports = _at(raw, "regions", 0, "services", 0, "ports")
    if not ports:
        return None
    ports.append({**ports[0], "name": "again"})
    return f"regions[0].services[0].ports[{len(ports) - 1}].port"


def _env(name: str) -> Callable[[Raw], str | None]:
    return _set("regions", 0, "services", 1, "env", value={name: "x"}, path="regions[0].services[1].env")


def _edge_key(key: str, value: str, path: str) -> Callable[[Raw], str | None]:
    def change(raw: Raw) -> str | None:
        if _k8s_site(raw) is None:
            return None
        raw.setdefault("edge", {})[key] = value
        return path
    return change


def _selector(key: str, value: str, path: str) -> Callable[[Raw], str | None]:
    def change(raw: Raw) -> str | None:
        if _k8s_site(raw) is None:
            return None
        raw.setdefault("edge", {})["nodeSelector"] = {key: value}
        return path
    return change


# The local server (1.37) takes a Service name that starts with a digit (RelaxedServiceNameValidation);
# the clouds' clusters (`kubernetesVersion` 1.31 by default) refuse it: a DNS-1035 label.
_DNS1035 = "Service names are DNS-1035 labels on the clusters the cloud stacks create (1.31)"
LONG = "a" + "b" * 60  # 61 characters: a DNS label, but `region-`/`edge-` + it is not
MUTATIONS = (
    # Duplicate names in each named list.
    Mutation("dup-core-service", _dup("core", "services"), "engine"),
    Mutation("dup-region", _dup("regions"), "engine"),
    Mutation("dup-region-service", _dup("regions", 0, "services"), "engine"),
    Mutation("dup-site", _dup("edge", "sites"), "engine"),
    Mutation("dup-site-service", _site(lambda raw, i: _dup("edge", "sites", i, "services")(raw)), "engine"),
    Mutation("dup-port-name", _dup("regions", 0, "services", 0, "ports"), "server"),
    Mutation("dup-core-port-name", _dup("core", "services", 0, "ports"), "server"),
    Mutation("dup-edge-port-name", _site(lambda raw, i: _dup("edge", "sites", i, "services", 0, "ports")(raw)),
             "server"),
    Mutation("dup-port-number", _second_port, "server"),
    Mutation("dup-routing-rule", _dup("routing", "rules"), "stricter",
             why="not Kubernetes: two rules of one name are ambiguous in the planner"),
    # Names Kubernetes derives.
    Mutation("region-name-too-long-for-its-namespace", _rename_region(LONG), "server"),
    Mutation("site-name-too-long-for-its-namespace", _rename_site(LONG), "server"),
    Mutation("service-name-starts-with-a-digit", _region_service("name", "9cache"), "stricter", why=_DNS1035),
    Mutation("edge-service-name-starts-with-a-digit", _site_set("services", 1, "name", value="9ingest"), "stricter",
             why=_DNS1035),
    Mutation("service-name-upper-case", _region_service("name", "Cache"), "model"),
    Mutation("service-name-64-characters", _region_service("name", "c" * 64), "model"),
    # Port names and numbers.
    Mutation("port-name-16-characters", _region_port("name", "p" * 16), "server"),
    Mutation("port-name-only-digits", _region_port("name", "8080"), "server"),
    Mutation("port-name-double-hyphen", _region_port("name", "a--b"), "server"),
    Mutation("port-name-upper-case", _region_port("name", "HTTP"), "model"),
    Mutation("port-0", _region_port("port", 0), "model"),
    Mutation("port-65536", _region_port("port", 65536), "model"),
    Mutation("target-port-below-1024", _region_port("targetPort", 80), "model"),
    # Quantities.
    Mutation("memory-one-byte", _region_service("memory", "1"), "server"),
    Mutation("cpu-below-a-millicore", _region_service("cpu", "0.0001"), "server"),
    Mutation("cpu-unparsable", _region_service("cpu", "1.5.2"), "model"),
    Mutation("memory-unparsable", _region_service("memory", "12XB"), "model"),
    Mutation("memory-limit-below-request", _region_service("memoryLimit", "1Mi"), "server"),
    # Env var names.
    Mutation("env-name-with-equals", _env("A=B"), "server"),
    Mutation("env-name-empty", _env(""), "server"),
    Mutation("env-name-starts-with-a-digit", _env("1ST"), "stricter",
             why="Kubernetes >= 1.34 takes any printable name but '='; shells and most runtimes do not"),
    # Labels, selectors, tolerations.
    Mutation("node-selector-key", _selector("bad key!", "true", "edge.nodeSelector"), "server"),
    Mutation("node-selector-value", _selector("node-role.edgefabric.io/edge", "not valid!",
                                              "edge.nodeSelector.node-role.edgefabric.io/edge"), "server"),
    Mutation("node-selector-value-64-characters", _selector("edge", "v" * 64, "edge.nodeSelector.edge"), "server"),
    Mutation("toleration-key", _edge_key("tolerationKey", "bad key!", "edge.tolerationKey"), "server"),
    # Images.
    Mutation("image-trailing-space", _region_service("image", "varnish:7.6.1 "), "server"),
    Mutation("image-latest", _region_service("image", "varnish:latest"), "model"),
    # Boundaries: valid for both.
    Mutation("region-name-56-characters", _rename_region("r" * 56), "accepted"),
    Mutation("site-name-58-characters", _rename_site("s" * 58), "accepted"),
    Mutation("port-name-15-characters", _region_port("name", "a-b" + "c" * 12), "accepted"),
    Mutation("service-name-63-characters", _region_service("name", "c" * 63), "accepted"),
    Mutation("a-millicore-and-a-mebibyte", lambda raw: (_region_service("cpu", "1m")(raw)
                                                        and _region_service("memory", "1Mi")(raw)), "accepted"),
    Mutation("env-name-underscore", _env("_LOG_LEVEL_2"), "accepted"),
    Mutation("node-selector-prefixed", _selector("example.com/edge-node", "yes_1.a", "edge.nodeSelector"),
             "accepted"),
    Mutation("image-registry-port-and-digest",
             _region_service("image", "registry.example.com:5000/team/varnish@sha256:" + "0" * 64), "accepted"),
)


# ---------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("stack", STACKS)
def test_the_shipped_stacks_pass_the_api_server(server: DryRun, stack: str) -> None:
    objects = baseline(stack)
    assert objects, f"{stack} renders no Kubernetes object"
    assert server.send(objects) == {}


def _config_verdict(raw: Raw) -> str | None:
    """None when our config takes `raw`; else the ConfigError's text."""
    try:
        load_config(raw)
    except ConfigError as exc:
        return str(exc)
    return None


def _render_without_our_rules(raw: Raw, stack: str, monkeypatch: pytest.MonkeyPatch) -> list[Registered]:
    """Render with the semantic rules switched off (the models still parse): what would reach
    the engine and the API server if our rules did not stand in front of them."""
    with monkeypatch.context() as m:
        m.setattr(loading, "semantic_problems", lambda cfg: [])
        return render(raw, stack=stack).resources


@pytest.mark.parametrize("mutation", MUTATIONS, ids=[m.id for m in MUTATIONS])
def test_our_rules_refuse_first_what_the_api_server_refuses(
        server: DryRun, mutation: Mutation, monkeypatch: pytest.MonkeyPatch) -> None:
    applied = 0
    proved = False
    for stack in STACKS:
        raw = copy.deepcopy(base_raw(stack))
        path = mutation.change(raw)
        if path is None:
            continue
        applied += 1
        verdict = _config_verdict(raw)
        if verdict is None:
            # Accepted by us: every object it changes must pass the server (rendered for the
            # first stack it applies to; the shipped stacks themselves are all sent above).
            assert mutation.expect == "accepted", f"{stack}: our rules let {mutation.id} ({path}) through"
            if proved:
                continue
            proved = True
            rejected = server.send(changed(stack, kubernetes_objects(render(raw, stack=stack).resources)))
            assert rejected == {}, (f"{stack}: the API server rejects what our rules accepted "
                                    f"({mutation.id}, {path}):\n{json.dumps({str(k): v for k, v in rejected.items()}, indent=1)}")
            continue
        assert mutation.expect != "accepted", f"{stack}: our rules refuse a valid {mutation.id}:\n{verdict}"
        assert f"edgefabric:{path} = " in verdict, f"{stack}: {mutation.id}: no problem names {path}:\n{verdict}"
        if proved or mutation.expect in ("model", "accepted"):
            continue
        # Once per mutation: what our rules stand in front of, with them off.
        proved = True
        if mutation.expect == "engine":
            # Two resources of one URN: the engine refuses the program ("Duplicate resource URN").
            try:
                urns = Counter(r.urn for r in _render_without_our_rules(raw, stack, monkeypatch))
            except ConfigError as exc:
                # The program's own check (the registry's one-name-one-registration) refuses
                # it first: still ours, still before any resource is registered.
                assert "registers as" in str(exc), f"{stack}: {mutation.id}: refused past the rules: {exc}"
                continue
            assert any(n > 1 for n in urns.values()), f"{stack}: {mutation.id}: no two resources share a URN"
            continue
        try:
            objects = changed(stack, kubernetes_objects(_render_without_our_rules(raw, stack, monkeypatch)))
        except ConfigError:
            # Another of our checks (e.g. the traffic spec's) refuses it: nothing reaches Kubernetes.
            assert mutation.expect == "stricter", f"{stack}: {mutation.id}: refused past the rules"
            continue
        rejected = server.send(objects)
        if mutation.expect == "server":
            assert rejected, f"{stack}: {mutation.id}: the API server accepts it: not a Kubernetes refusal"
        else:
            assert mutation.why and rejected == {}, f"{stack}: {mutation.id} is refused by the server too: {rejected}"
    assert applied, f"{mutation.id} applies to no shipped stack"
