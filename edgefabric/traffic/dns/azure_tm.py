"""Azure Traffic Manager backend (azure-mgmt-trafficmanager, API 2022-04-01).

Published for a record (profile P, relative DNS name R):
- profile P: routing method `Weighted`, monitor config from the health
  settings, one external endpoint per cloud (target = the cloud's IPv4, or its
  DNS name as is: an external endpoint takes an FQDN natively, Traffic Manager
  answers it with a CNAME and monitors whatever it resolves to, so nothing is
  resolved here and the weight stays one per cloud).
  Traffic Manager weights are 1..1000, so weight 0 is expressed as a
  *disabled* endpoint (weight 1, endpointStatus Disabled);
- with region rules: one Weighted profile per rule (`P-<rule>`) and a
  `Geographic` profile `P-geo` whose nested endpoints map each rule's regions
  to its child profile and `WORLD` to P. Users then resolve `R-geo`.
Each profile is written with one PUT carrying its endpoints, so a profile is
never half-updated; unchanged profiles are not written (idempotent). A round reads the
resource group with one list call (whole profiles, endpoints included) for every name it
applies (`apply_profiles`), so a round where nothing changed is one request, not four a name.

Only our records: every profile we write carries the tags `edgefabric-record` (the record
it publishes) and `edgefabric-endpoints` (the endpoints we put in it). Apply and delete
touch only profiles so tagged (or, untagged from an earlier version, in the exact shape
that version wrote); endpoints someone else adds to one of our profiles are written back
with it, and when we delete it they keep the profile (tagged `edgefabric-released`, so no
later run takes it back).

The client is built per call from a credential object and the subscription id
(both passed in by the caller, from env/secrets). `base_url` may point at a
local fake over plain http on loopback only; then (and only then) the bearer
policy's https check is relaxed for that request.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from edgefabric.traffic.dns.base import (
    ApplyResult,
    DnsBackend,
    DnsBackendError,
    HealthSettings,
    Published,
    RecordSpec,
    TransientError,
    retry,
)
from edgefabric.traffic.dns.regions import AZURE_GEO, continent
from edgefabric.traffic.planner import DEFAULT_ANSWER, Plan

API_VERSION = "2022-04-01"
EXTERNAL = "Microsoft.Network/trafficManagerProfiles/externalEndpoints"
NESTED = "Microsoft.Network/trafficManagerProfiles/nestedEndpoints"
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}
# Our mark on every profile we write: the record it publishes, and the names of the endpoints
# we put in it (Traffic Manager endpoints carry no tags of their own).
OWNER_TAG = "edgefabric-record"
ENDPOINTS_TAG = "edgefabric-endpoints"
# Left on a profile we handed over to the endpoints someone else added to it (see `_remove`).
RELEASED_TAG = "edgefabric-released"
# An endpoint as it may be written back: the service adds `id` and `endpointMonitorStatus`.
_ENDPOINT_READ_ONLY = ("endpointMonitorStatus",)
# Names of one round written at once (`apply_profiles`): each write is its own PUT, and 100
# changed names should cost a few round trips' worth of waiting, not 100.
WRITE_CONCURRENCY = 16


class _Listed:
    """A resource group's profiles as one list call returned them, kept current with what
    the round writes: every name of a round reads it instead of the service. Profile names
    are case-insensitive in Azure, so it is keyed by the lowercased name."""

    def __init__(self, profiles: dict[str, dict[str, Any]]) -> None:
        self._profiles = profiles
        self._lock = threading.Lock()  # names are written from several threads (`apply_profiles`)

    def get(self, name: str) -> dict[str, Any] | None:
        with self._lock:
            return self._profiles.get(name.lower())

    def put(self, name: str, body: dict[str, Any] | None) -> None:
        with self._lock:
            if body is None:
                self._profiles.pop(name.lower(), None)
            else:
                self._profiles[name.lower()] = body

    def values(self) -> Iterator[dict[str, Any]]:
        with self._lock:
            return iter(list(self._profiles.values()))


def monitor_config(h: HealthSettings) -> dict[str, Any]:
    """Map our health settings onto Traffic Manager's allowed values.

    TM probes every 10 s or 30 s; timeout 5..10 s (and below the interval);
    it tolerates 0..9 failures before the next failure marks the endpoint
    degraded, i.e. tolerated = failure_threshold - 1.
    """
    interval = 10 if h.interval_s <= 10 else 30
    timeout = int(min(max(round(h.timeout_s), 5), 10 if interval == 30 else 9))
    cfg: dict[str, Any] = {
        "protocol": h.protocol.upper(),
        "port": int(h.port),
        "intervalInSeconds": interval,
        "timeoutInSeconds": timeout,
        "toleratedNumberOfFailures": int(min(max(h.thresholds.failure_threshold - 1, 0), 9)),
    }
    if cfg["protocol"] != "TCP":
        cfg["path"] = h.path
    return cfg


@dataclass
class AzureTmBackend:
    subscription_id: str
    resource_group: str
    profile_name: str
    relative_dns_name: str
    credential: Any = field(default=None, repr=False)
    base_url: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    name: str = "azure_tm"
    scale: int = 100
    supports_regions: bool = True
    # Seconds one HTTP request may take (connect and read); the client's default read timeout
    # is 300 s. The controller sets it to its deadline (`dns.applyTimeoutS`).
    call_timeout_s: float | None = None

    def _client(self) -> Any:
        from azure.mgmt.trafficmanager import TrafficManagerManagementClient

        credential = self.credential
        if credential is None:
            from azure.identity import DefaultAzureCredential

            credential = DefaultAzureCredential()
        kwargs: dict[str, Any] = {"api_version": API_VERSION, "retry_total": 3}
        if self.base_url:
            kwargs["base_url"] = self.base_url
        if self.call_timeout_s is not None:
            kwargs.update(connection_timeout=min(self.call_timeout_s, 10.0), read_timeout=self.call_timeout_s)
        return TrafficManagerManagementClient(credential, self.subscription_id, **kwargs)

    def _opts(self) -> dict[str, Any]:
        if self.base_url and self.base_url.startswith("http://"):
            if urlsplit(self.base_url).hostname not in _LOOPBACK:
                raise DnsBackendError(
                    f"azure_tm base_url {self.base_url!r}: plain http is allowed only on loopback"
                )
            return {"enforce_https": False}
        return {}

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from azure.core.exceptions import HttpResponseError, ServiceRequestError

        def once() -> Any:
            try:
                return fn(*args, **kwargs, **self._opts())
            except HttpResponseError as exc:
                if exc.status_code in (429, 500, 502, 503, 504):
                    raise TransientError(f"azure_tm {what}: HTTP {exc.status_code}") from exc
                raise DnsBackendError(f"azure_tm {what}: HTTP {exc.status_code}: {exc.message}") from exc
            except ServiceRequestError as exc:
                raise TransientError(f"azure_tm {what}: {exc}") from exc

        return retry(once, f"azure_tm {what}")

    # ---- naming
    def profile_for(self, answer: str) -> str:
        return self.profile_name if answer == DEFAULT_ANSWER else f"{self.profile_name}-{answer}"

    def relative_for(self, answer: str) -> str:
        return self.relative_dns_name if answer == DEFAULT_ANSWER else f"{self.relative_dns_name}-{answer}"

    def geo_profile(self) -> str:
        return f"{self.profile_name}-geo"

    def profile_id(self, profile: str) -> str:
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.Network/trafficManagerProfiles/{profile}"
        )

    # ---- desired bodies
    def _weighted_body(self, spec: RecordSpec, answer: str, weights: dict[str, int]) -> dict[str, Any]:
        endpoints = []
        for cloud in sorted(spec.endpoints):
            w = int(weights.get(cloud, 0))
            endpoints.append(
                {
                    "name": cloud,
                    "type": EXTERNAL,
                    "properties": {
                        "target": spec.endpoints[cloud],
                        "endpointStatus": "Enabled" if w > 0 else "Disabled",
                        "weight": max(w, 1),
                    },
                }
            )
        return {
            "location": "global",
            "tags": dict(self.tags),
            "properties": {
                "profileStatus": "Enabled",
                "trafficRoutingMethod": "Weighted",
                "dnsConfig": {"relativeName": self.relative_for(answer), "ttl": spec.ttl},
                "monitorConfig": monitor_config(spec.health),
                "endpoints": endpoints,
            },
        }

    def _geo_body(self, spec: RecordSpec, plan: Plan) -> dict[str, Any]:
        endpoints = []
        for answer_name, answer in plan.answers.items():
            codes = (
                ["WORLD"]
                if answer_name == DEFAULT_ANSWER
                else sorted({AZURE_GEO[continent(r)] for r in answer.regions})
            )
            endpoints.append(
                {
                    "name": answer_name,
                    "type": NESTED,
                    "properties": {
                        "targetResourceId": self.profile_id(self.profile_for(answer_name)),
                        "endpointStatus": "Enabled",
                        "minChildEndpoints": 1,
                        "geoMapping": codes,
                    },
                }
            )
        return {
            "location": "global",
            "tags": dict(self.tags),
            "properties": {
                "profileStatus": "Enabled",
                "trafficRoutingMethod": "Geographic",
                "dnsConfig": {"relativeName": f"{self.relative_dns_name}-geo", "ttl": spec.ttl},
                "monitorConfig": monitor_config(spec.health),
                "endpoints": endpoints,
            },
        }

    def desired(self, spec: RecordSpec, plan: Plan) -> dict[str, dict[str, Any]]:
        """profile name -> PUT body; children before the geo parent (it references them)."""
        out = {
            self.profile_for(a): self._weighted_body(spec, a, ans.weights) for a, ans in plan.answers.items()
        }
        if len(plan.answers) > 1:
            out[self.geo_profile()] = self._geo_body(spec, plan)
        for body in out.values():  # our mark (see OWNER_TAG)
            ours = ",".join(sorted(e["name"] for e in body["properties"]["endpoints"]))
            body["tags"] = {**body["tags"], OWNER_TAG: spec.fqdn(), ENDPOINTS_TAG: ours}
        return out

    # ---- ownership
    def _expected_relative(self, profile: str) -> str | None:
        """The relative DNS name we give `profile`, if it is a name we use at all."""
        if profile == self.profile_name:
            return self.relative_dns_name
        if profile.startswith(self.profile_name + "-"):
            return f"{self.relative_dns_name}-{profile[len(self.profile_name) + 1:]}"
        return None

    def _ours(self, profile: str, body: dict[str, Any], spec: RecordSpec, adopt: bool = False) -> bool:
        """A profile we wrote: it carries our tag for this record. Earlier versions wrote no
        tag; such a profile is ours only in the exact shape they wrote: one of our names with
        the relative DNS name we derive from it, and (for a rule's child) either about to be
        rewritten (`adopt`) or referenced by our geo profile (`_existing_profiles`)."""
        tags = body.get("tags") or {}
        if OWNER_TAG in tags:
            return tags[OWNER_TAG] == spec.fqdn()
        if RELEASED_TAG in tags:
            return False
        relative = body.get("properties", {}).get("dnsConfig", {}).get("relativeName")
        expected = self._expected_relative(profile)
        if expected is None or relative != expected:
            return False
        return adopt or profile in (self.profile_name, self.geo_profile())

    @staticmethod
    def _our_endpoints(body: dict[str, Any]) -> set[str] | None:
        """The endpoint names our tag lists; None when untagged (then every endpoint is ours)."""
        listed = (body.get("tags") or {}).get(ENDPOINTS_TAG)
        return None if listed is None else {n for n in listed.split(",") if n}

    def _foreign_endpoints(self, current: dict[str, Any] | None, ours: set[str]) -> list[dict[str, Any]]:
        """Endpoints someone else added to a profile of ours, as they can be written back."""
        if current is None:
            return []
        listed = self._our_endpoints(current)
        if listed is None:
            return []
        out = []
        for ep in current.get("properties", {}).get("endpoints", []):
            if ep.get("name") in listed or ep.get("name") in ours:
                continue
            props = {k: v for k, v in ep.get("properties", {}).items() if k not in _ENDPOINT_READ_ONLY}
            out.append({"name": ep["name"], "type": ep["type"], "properties": props})
        return out

    def _only_ours(self, body: dict[str, Any]) -> dict[str, Any]:
        """`body` with just the endpoints we wrote (for reading our weights)."""
        listed = self._our_endpoints(body)
        if listed is None:
            return body
        props = dict(body.get("properties", {}))
        props["endpoints"] = [e for e in props.get("endpoints", []) if e.get("name") in listed]
        return {**body, "properties": props}

    # ---- reading
    def _get(self, client: Any, profile: str) -> dict[str, Any] | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return self._call(
                "get profile", client.profiles.get, self.resource_group, profile,
                cls=lambda resp, _d, _h: resp.http_response.json(),
            )  # fmt: skip
        except DnsBackendError as exc:
            if isinstance(exc.__cause__, ResourceNotFoundError):
                return None
            raise

    def _list(self, client: Any) -> _Listed:
        """Every profile of the resource group, in one list call: the list answers whole
        profiles (tags, dnsConfig, endpoints), as a GET does, so nothing is re-read by name."""
        items: list[dict[str, Any]] = self._call(
            "list profiles",
            lambda **kw: list(client.profiles.list_by_resource_group(
                self.resource_group, cls=lambda page: [p.as_dict() for p in page], **kw)),
        )  # fmt: skip
        return _Listed({str(p["name"]).lower(): p for p in items})

    def _existing_profiles(
        self, client: Any, spec: RecordSpec, listed: _Listed | None = None
    ) -> dict[str, dict[str, Any]]:
        """Our profiles in the resource group (`_ours`), from `listed` (or one list call); a
        profile someone else keeps under a name like ours is left out, and so never deleted."""
        out: dict[str, dict[str, Any]] = {}
        found = {
            str(got["name"]): got
            for got in (listed if listed is not None else self._list(client)).values()
            if got["name"] == self.profile_name or str(got["name"]).startswith(self.profile_name + "-")
        }
        geo = found.get(self.geo_profile())
        children = set()
        if geo is not None and self._ours(self.geo_profile(), geo, spec):
            for ep in geo.get("properties", {}).get("endpoints", []):
                children.add(str(ep.get("properties", {}).get("targetResourceId", "")).rsplit("/", 1)[-1])
        for name, got in found.items():
            if self._ours(name, got, spec, adopt=name in children):
                out[name] = got
        return out

    @staticmethod
    def _weights_of(profile: dict[str, Any], by_ip: dict[str, str]) -> dict[str, int]:
        out: dict[str, int] = {}
        for ep in profile.get("properties", {}).get("endpoints", []):
            props = ep.get("properties", {})
            if props.get("endpointStatus") == "Enabled" and "target" in props:
                out[by_ip.get(props["target"], props["target"])] = int(props.get("weight", 1))
        return out

    def read(self, spec: RecordSpec) -> Published | None:
        client = self._client()
        default = self._get(client, self.profile_name)
        if default is None or not self._ours(self.profile_name, default, spec):
            return None
        by_ip = spec.cloud_for_ip()
        out: Published = {DEFAULT_ANSWER: self._weights_of(self._only_ours(default), by_ip)}
        geo = self._get(client, self.geo_profile())
        if geo is not None:
            for ep in geo.get("properties", {}).get("endpoints", []):
                answer = ep.get("name")
                if answer and answer != DEFAULT_ANSWER:
                    child = self._get(client, self.profile_for(answer))
                    if child is not None:
                        out[answer] = self._weights_of(self._only_ours(child), by_ip)
        return out

    # ---- writing
    @staticmethod
    def _same(current: dict[str, Any] | None, body: dict[str, Any]) -> bool:
        if current is None:
            return False
        props, want = current.get("properties", {}), body["properties"]
        if props.get("trafficRoutingMethod") != want["trafficRoutingMethod"]:
            return False
        if props.get("profileStatus") != want["profileStatus"]:
            return False
        dns = props.get("dnsConfig", {})
        if (dns.get("relativeName"), dns.get("ttl")) != (
            want["dnsConfig"]["relativeName"],
            want["dnsConfig"]["ttl"],
        ):
            return False
        mon = props.get("monitorConfig", {})
        if any(mon.get(k) != v for k, v in want["monitorConfig"].items()):
            return False
        if (current.get("tags") or {}) != body["tags"]:
            return False

        # Compare only what we set: the service fills defaults (weight, priority,
        # monitor status) that a re-PUT would not change.
        def norm(v: Any) -> Any:
            return sorted(v) if isinstance(v, list) else v

        have = {e.get("name"): e.get("properties", {}) for e in props.get("endpoints", [])}
        if set(have) != {e["name"] for e in want["endpoints"]}:
            return False
        for ep in want["endpoints"]:
            cur = have[ep["name"]]
            if any(norm(cur.get(k)) != norm(v) for k, v in ep["properties"].items()):
                return False
        return True

    def apply(self, spec: RecordSpec, plan: Plan) -> ApplyResult:
        return self.apply_many([(spec, plan)])

    def apply_many(self, items: Sequence[tuple[RecordSpec, Plan]]) -> ApplyResult:
        return apply_profiles([(self, spec, plan) for spec, plan in items])

    @staticmethod
    def apply_group(work: Sequence[tuple[DnsBackend, RecordSpec, Plan]]) -> ApplyResult:
        """Names with backends of their own settings together (`apply_records`'s `own`)."""
        return apply_profiles(work)

    def _apply_listed(self, client: Any, listed: _Listed, spec: RecordSpec, plan: Plan) -> ApplyResult:
        """One record against the round's listing: a PUT per profile that differs from its
        plan, a delete (or release) per profile of ours the plan no longer has; nothing else.
        What it writes goes back into `listed`, so later reads see it as a GET would."""
        changed = False
        wanted = self.desired(spec, plan)
        for profile, body in wanted.items():
            current = listed.get(profile)
            if current is not None and not self._ours(profile, current, spec, adopt=True):
                raise DnsBackendError(f"azure_tm: profile {profile!r} exists and is not edgefabric's for "
                                      f"{spec.fqdn()} (no {OWNER_TAG} tag): refusing to overwrite it")
            ours = {e["name"] for e in body["properties"]["endpoints"]}
            # Endpoints someone else added to our profile stay in it.
            body["properties"]["endpoints"] += self._foreign_endpoints(current, ours)
            if self._same(current, body):
                continue
            listed.put(profile, self._put(client, profile, body))
            changed = True
        # Drop what an older plan published and this one does not (rule removed, rules -> none).
        for profile, current in sorted(self._existing_profiles(client, spec, listed).items()):
            if profile not in wanted and profile != self.profile_name:
                listed.put(profile, self._remove(client, profile, current, spec))
                changed = True
        return ApplyResult(changed=changed, record_ids=[self.profile_id(p) for p in wanted])

    def _put(self, client: Any, profile: str, body: dict[str, Any]) -> dict[str, Any]:
        """PUT one profile; the profile as the service now holds it."""
        got: dict[str, Any] = self._call(
            "put profile", client.profiles.create_or_update, self.resource_group, profile, body,
            cls=lambda resp, _d, _h: resp.http_response.json(),
        )  # fmt: skip
        return got

    def _remove(
        self, client: Any, profile: str, current: dict[str, Any], spec: RecordSpec
    ) -> dict[str, Any] | None:
        """Take our part out of a profile of ours: delete it, or, when someone else added
        endpoints to it, write it back with just theirs, our tags replaced by RELEASED_TAG.
        What is left of it (None when deleted)."""
        foreign = self._foreign_endpoints(current, set())
        if not foreign:
            self._delete_profile(client, profile)
            return None
        props = {k: v for k, v in current.get("properties", {}).items()
                 if k in ("profileStatus", "trafficRoutingMethod", "dnsConfig", "monitorConfig")}  # fmt: skip
        props["dnsConfig"] = {k: v for k, v in props.get("dnsConfig", {}).items() if k in ("relativeName", "ttl")}
        props["monitorConfig"] = {k: v for k, v in props.get("monitorConfig", {}).items() if k != "profileMonitorStatus"}
        props["endpoints"] = foreign
        tags = {k: v for k, v in (current.get("tags") or {}).items() if k not in (OWNER_TAG, ENDPOINTS_TAG)}
        tags[RELEASED_TAG] = spec.fqdn()
        body = {"location": current.get("location", "global"), "tags": tags, "properties": props}
        return self._put(client, profile, body)

    def _delete_profile(self, client: Any, profile: str) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            self._call("delete profile", client.profiles.delete, self.resource_group, profile)
        except DnsBackendError as exc:
            if not isinstance(exc.__cause__, ResourceNotFoundError):
                raise

    def delete(self, spec: RecordSpec) -> None:
        client = self._client()
        existing = self._existing_profiles(client, spec)
        # Parent first: the geo profile references the children.
        for profile in sorted(existing, key=lambda n: (n != self.geo_profile(), n)):
            self._remove(client, profile, existing[profile], spec)


def apply_profiles(work: Sequence[tuple[DnsBackend, RecordSpec, Plan]]) -> ApplyResult:
    """Several names' plans, each with the backend built from its own settings (its own
    profile names), in one go: per resource group one list call for the whole round, then
    only the writes a name needs (`_apply_listed`), a few names at a time. A round where
    nothing changed is one request per resource group.

    The names of one group share one client, built from the first one's credential and
    per-request timeout: they come from one `dns.backends.azureTm` block, which only the
    profile and relative names differ by."""
    groups: dict[tuple[str, str, str | None, float | None], list[tuple[AzureTmBackend, RecordSpec, Plan]]] = {}
    for backend, spec, plan in work:
        if not isinstance(backend, AzureTmBackend):
            raise TypeError(f"azure_tm apply_profiles: {type(backend).__name__} is not a Traffic Manager backend")
        key = (backend.subscription_id, backend.resource_group.lower(), backend.base_url, backend.call_timeout_s)
        groups.setdefault(key, []).append((backend, spec, plan))
    changed, ids = False, list[str]()
    for members in groups.values():
        one = _apply_resource_group(members)
        changed, ids = changed or one.changed, ids + one.record_ids
    return ApplyResult(changed, ids)


def _apply_resource_group(members: Sequence[tuple[AzureTmBackend, RecordSpec, Plan]]) -> ApplyResult:
    first = members[0][0]
    client = first._client()
    listed = first._list(client)
    changed, ids = False, list[str]()
    with ThreadPoolExecutor(max_workers=min(WRITE_CONCURRENCY, len(members)),
                            thread_name_prefix="dns-azure_tm") as pool:  # fmt: skip
        for one in pool.map(lambda m: m[0]._apply_listed(client, listed, m[1], m[2]), members):
            changed, ids = changed or one.changed, ids + one.record_ids
    return ApplyResult(changed, ids)
