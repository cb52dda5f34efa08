"""GCP Cloud DNS backend (google-api-python-client, dns v1, static discovery).

Published for record name N:
- N: an A record set with `routingPolicy.wrr`, one item per serving cloud
  (weight > 0), the default answer; a cloud whose endpoint is a DNS name has one
  item per address it resolved to, its weight split evenly (wrr items carry
  rrdatas of the record's own type: A, never a name);
- with region rules: `<rule>.N` with the rule's weighted answer. Cloud DNS
  `geo` items carry plain rrdatas, not weights, so a geo policy cannot express
  "70/15/15 for Europe"; the per-rule weighted names are what a geo-steered
  CNAME (or a client) uses. The geo layer is left out rather than faked.
All additions/deletions go in one `changes.create`, which Cloud DNS applies
atomically. Unchanged record sets are not touched (idempotent).

Only our records: record sets carry no labels, so ours are known by their names and
policy: the weighted set at N, the names this plan writes, and weighted sets one label
below N whose every address is one of our clouds' (a rule's answer, from an earlier plan).
A weighted set under N that serves other addresses is someone else's and survives apply
and delete. (On delete, a cloud given as a DNS name that no longer resolves has no
addresses to match: its rules' sets stay behind rather than risk someone else's.)

Credentials: google.auth.default() unless the caller passes credentials; the
API root can point at a loopback fake via `api_endpoint`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from edgefabric.traffic.dns.base import (
    ApplyResult,
    DnsBackendError,
    Published,
    RecordSpec,
    TransientError,
    retry,
)
from edgefabric.traffic.planner import DEFAULT_ANSWER, Plan


@dataclass
class GcpDnsBackend:
    project: str
    managed_zone: str
    credentials: Any = field(default=None, repr=False)
    api_endpoint: str | None = None
    # Self-link of a compute HealthCheck: Cloud DNS then probes each item's address itself
    # and skips an unhealthy one between reconciles.
    health_check: str | None = None
    name: str = "gcp_dns"
    scale: int = 100
    supports_regions: bool = True
    # Seconds one HTTP request may take (the client's default is 60 s). The controller sets
    # it to its deadline (`dns.applyTimeoutS`).
    call_timeout_s: float | None = None

    def _service(self) -> Any:
        from googleapiclient.discovery import build

        credentials = self.credentials
        if credentials is None:
            import google.auth

            credentials, _ = google.auth.default(
                scopes=["https://www.googleapis.com/auth/ndev.clouddns.readwrite"]
            )
        options = {"api_endpoint": self.api_endpoint} if self.api_endpoint else None
        auth: dict[str, Any] = {"credentials": credentials}
        if self.call_timeout_s is not None:
            import google_auth_httplib2  # type: ignore[import-untyped]
            import httplib2  # type: ignore[import-untyped]

            auth = {"http": google_auth_httplib2.AuthorizedHttp(credentials, http=httplib2.Http(timeout=self.call_timeout_s))}
        return build(
            "dns",
            "v1",
            static_discovery=True,
            client_options=options,
            cache_discovery=False,
            **auth,
        )

    def _exec(self, what: str, request: Any) -> Any:
        from googleapiclient.errors import HttpError

        def once() -> Any:
            try:
                return request.execute(num_retries=2)
            except HttpError as exc:
                if exc.resp.status in (429, 500, 502, 503, 504):
                    raise TransientError(f"gcp_dns {what}: HTTP {exc.resp.status}") from exc
                raise DnsBackendError(f"gcp_dns {what}: HTTP {exc.resp.status}: {exc._get_reason()}") from exc
            except OSError as exc:
                raise TransientError(f"gcp_dns {what}: {exc}") from exc

        return retry(once, f"gcp_dns {what}")

    @staticmethod
    def name_for(spec: RecordSpec, answer: str) -> str:
        return spec.fqdn() if answer == DEFAULT_ANSWER else f"{answer}.{spec.fqdn()}"

    def _rrset(self, spec: RecordSpec, name: str, weights: dict[str, int]) -> dict[str, Any]:
        # One item per address; a cloud whose endpoint resolved to several splits its weight.
        items: list[dict[str, Any]] = [
            {"weight": float(w), "rrdatas": [address]} for _c, address, w in spec.split(weights) if w > 0
        ]
        if not items:
            raise DnsBackendError("refusing to publish an empty answer set")
        policy: dict[str, Any] = {"wrr": {"items": items}}
        if self.health_check:
            policy["healthCheck"] = self.health_check
            for item in items:
                item["healthCheckedTargets"] = {"externalEndpoints": list(item["rrdatas"])}
        return {"name": name, "type": "A", "ttl": spec.ttl, "routingPolicy": policy}

    def desired(self, spec: RecordSpec, plan: Plan) -> dict[str, dict[str, Any]]:
        return {
            self.name_for(spec, a): self._rrset(spec, self.name_for(spec, a), ans.weights)
            for a, ans in plan.answers.items()
        }

    def _existing(
        self, svc: Any, spec: RecordSpec, names: Iterable[str] = (), listed: list[dict[str, Any]] | None = None
    ) -> dict[str, dict[str, Any]]:
        """Our A record sets: those with a wrr policy at N, at the exact `names` we are about to
        write, or one label below N with every address one of ours; anything else under N
        (another team's weighted set at `legacy.N`) is not ours and never touched. `listed`:
        the zone's rrsets already read (`_zone_rrsets`), for several records at once."""
        exact = set(names)
        fqdn = spec.fqdn()
        out: dict[str, dict[str, Any]] = {}
        for rr in listed if listed is not None else self._zone_rrsets(svc):
            name = rr.get("name", "")
            if (
                rr.get("type") == "A"
                and (name == fqdn or name.endswith("." + fqdn))
                and "wrr" in rr.get("routingPolicy", {})
                and (name == fqdn or name in exact or self._our_policy(rr, name, spec))
            ):
                out[name] = rr
        return out

    def _zone_rrsets(self, svc: Any) -> list[dict[str, Any]]:
        """Every rrset of the managed zone, page after page."""
        out: list[dict[str, Any]] = []
        token = None
        while True:
            kwargs: dict[str, Any] = {"project": self.project, "managedZone": self.managed_zone}
            if token:
                kwargs["pageToken"] = token
            resp = self._exec("rrsets.list", svc.resourceRecordSets().list(**kwargs))
            out += resp.get("rrsets", [])
            token = resp.get("nextPageToken")
            if not token:
                return out

    @staticmethod
    def _our_policy(rr: dict[str, Any], name: str, spec: RecordSpec) -> bool:
        """A weighted set one label below N whose every address is one of our clouds'."""
        label = name[: -len(spec.fqdn()) - 1]
        ours = spec.cloud_for_ip()
        addresses = [a for i in rr["routingPolicy"]["wrr"].get("items", []) for a in i.get("rrdatas", [])]
        return "." not in label and bool(addresses) and all(a in ours for a in addresses)

    @staticmethod
    def _comparable(rr: dict[str, Any]) -> tuple[Any, ...]:
        policy = rr.get("routingPolicy", {})
        items = policy.get("wrr", {}).get("items", [])
        return (
            rr["name"],
            rr["type"],
            rr.get("ttl"),
            policy.get("healthCheck"),
            sorted((float(i["weight"]), tuple(i.get("rrdatas", [])),
                    tuple(i.get("healthCheckedTargets", {}).get("externalEndpoints", []))) for i in items),
        )

    @staticmethod
    def _as_request(rr: dict[str, Any]) -> dict[str, Any]:
        """Strip server-set fields (kind) so a deletion echoes only writable data."""
        items = []
        for i in rr["routingPolicy"]["wrr"]["items"]:
            item: dict[str, Any] = {"weight": float(i["weight"]), "rrdatas": list(i.get("rrdatas", []))}
            if "healthCheckedTargets" in i:
                item["healthCheckedTargets"] = {
                    "externalEndpoints": list(i["healthCheckedTargets"].get("externalEndpoints", []))}
            items.append(item)
        policy: dict[str, Any] = {"wrr": {"items": items}}
        if rr["routingPolicy"].get("healthCheck"):
            policy["healthCheck"] = rr["routingPolicy"]["healthCheck"]
        return {"name": rr["name"], "type": rr["type"], "ttl": rr.get("ttl"), "routingPolicy": policy}

    def read(self, spec: RecordSpec) -> Published | None:
        existing = self._existing(self._service(), spec)
        if not existing:
            return None
        by_ip = spec.cloud_for_ip()
        fqdn = spec.fqdn()
        out: Published = {}
        for name, rr in existing.items():
            answer = DEFAULT_ANSWER if name == fqdn else name[: -len(fqdn) - 1]
            weights: dict[str, int] = {}
            for item in rr["routingPolicy"]["wrr"]["items"]:
                for ip in item.get("rrdatas", []):
                    key = by_ip.get(ip, ip)  # a cloud's addresses add up
                    weights[key] = weights.get(key, 0) + round(float(item["weight"]))
            out[answer] = weights
        return out

    def _change(self, svc: Any, additions: list[dict[str, Any]], deletions: list[dict[str, Any]]) -> None:
        body: dict[str, Any] = {}
        if additions:
            body["additions"] = additions
        if deletions:
            body["deletions"] = deletions
        self._exec(
            "changes.create",
            svc.changes().create(project=self.project, managedZone=self.managed_zone, body=body),
        )

    def apply(self, spec: RecordSpec, plan: Plan) -> ApplyResult:
        return self.apply_many([(spec, plan)])

    def apply_many(self, items: Sequence[tuple[RecordSpec, Plan]]) -> ApplyResult:
        """Every record's plan in one change of the zone (Cloud DNS applies a change's
        additions and deletions atomically), or none when nothing differs."""
        svc = self._service()
        additions: list[dict[str, Any]] = []
        deletions: list[dict[str, Any]] = []
        ids: list[str] = []
        listed = self._zone_rrsets(svc)  # once for every record
        for spec, plan in items:
            adds, dels, record_ids = self._diff(svc, spec, plan, listed)
            additions += adds
            deletions += dels
            ids += record_ids
        if not additions and not deletions:
            return ApplyResult(changed=False, record_ids=ids)
        self._change(svc, additions, deletions)
        return ApplyResult(changed=True, record_ids=ids)

    def _diff(
        self, svc: Any, spec: RecordSpec, plan: Plan, listed: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
        """The additions and deletions that make the record answer `plan`, and its ids."""
        want = self.desired(spec, plan)
        have = self._existing(svc, spec, names=want, listed=listed)
        additions, deletions = [], []
        for name, rr in want.items():
            cur = have.get(name)
            if cur is not None and self._comparable(cur) == self._comparable(rr):
                continue
            if cur is not None:
                deletions.append(self._as_request(cur))
            additions.append(rr)
        for name, cur in have.items():
            if name not in want:
                deletions.append(self._as_request(cur))
        ids = [f"gcp_dns:{self.project}/{self.managed_zone}/{name}A" for name in want]
        return additions, deletions, ids

    def delete(self, spec: RecordSpec) -> None:
        svc = self._service()
        have = self._existing(svc, spec)
        if have:
            self._change(svc, [], [self._as_request(rr) for rr in have.values()])
