"""PowerDNS backend: one LUA record answering with weighted random choice.

The record is `LUA A "pickwrandom({{w1,'ip1'},{w2,'ip2'}})"`; pdns_server must
run with `enable-lua-records=yes`. A cloud whose endpoint is a DNS name has one
entry per address the name resolved to, its weight split evenly between them
(a LUA A record cannot answer with a name). Weight-0 clouds are left out of the list
(pickwrandom would never pick them anyway, and an explicit list of only the
serving IPs makes `read` unambiguous). PowerDNS has no GeoIP backend here, so
only the default answer is published (`supports_regions = False`).

Only our records: the LUA rrset carries a comment with account `edgefabric`. Apply and
delete touch that one rrset (name, type LUA) and nothing else at the name; a LUA record
there that we did not write is refused, never overwritten or deleted (see `is_ours`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote

from edgefabric.traffic.dns.base import (
    ApplyResult,
    DnsBackendError,
    Published,
    RecordSpec,
    published_view,
    retry,
)
from edgefabric.traffic.dns.http import json_request
from edgefabric.traffic.planner import Plan

_ENTRY = re.compile(r"\{\s*(\d+)\s*,\s*'([^']+)'\s*\}")
# What we write: marked by a comment on the rrset (account OWNER). A LUA rrset at the name
# without it is ours only in the shape this backend always wrote (the records of earlier
# versions carry no comment); anything else at the name is someone else's, never touched.
OWNER = "edgefabric"
_OUR_SHAPE = re.compile(r'^A "pickwrandom\(\{.*\}\)"$')


def is_ours(rrset: dict) -> bool:
    """An rrset this backend wrote: our comment on it, or (unmarked, from an earlier version)
    nothing but our pickwrandom records."""
    if any(c.get("account") == OWNER for c in rrset.get("comments") or []):
        return True
    records = rrset.get("records") or []
    return bool(records) and all(_OUR_SHAPE.match(r.get("content", "")) for r in records)


def _marked(rrset: dict) -> bool:
    return any(c.get("account") == OWNER for c in rrset.get("comments") or [])


def lua_content(weights: dict[str, int], spec: RecordSpec) -> str:
    """The LUA record content for cloud weights: one entry per address of each serving cloud,
    its weight split evenly (`RecordSpec.split`); order by cloud, then address: stable."""
    items = [f"{{{w},'{address}'}}" for _c, address, w in spec.split(weights) if w > 0]
    if not items:
        raise DnsBackendError("refusing to publish an empty answer set")
    return 'A "pickwrandom({' + ",".join(items) + '})"'


def parse_lua(content: str, cloud_for_ip: dict[str, str]) -> dict[str, int]:
    """Cloud -> weight: the entries of a cloud's addresses added up (an unknown address stands
    for itself)."""
    out: dict[str, int] = {}
    for weight, ip in _ENTRY.findall(content):
        key = cloud_for_ip.get(ip, ip)
        out[key] = out.get(key, 0) + int(weight)
    return out


@dataclass
class PowerDnsBackend:
    api_url: str
    api_key: str
    zone: str
    server_id: str = "localhost"
    name: str = "powerdns"
    scale: int = 100
    supports_regions: bool = False
    # Seconds one HTTP request may take (default 10 s). The controller sets it to its deadline
    # (`dns.applyTimeoutS`) when that is shorter.
    call_timeout_s: float | None = None

    def _timeout(self) -> float:
        return min(10.0, self.call_timeout_s or 10.0)

    def _zone_url(self) -> str:
        zone = self.zone if self.zone.endswith(".") else self.zone + "."
        return f"{self.api_url.rstrip('/')}/api/v1/servers/{quote(self.server_id)}/zones/{quote(zone)}"

    def _headers(self) -> dict[str, str]:
        return {"X-API-Key": self.api_key, "Accept": "application/json"}

    def _rrset(self, spec: RecordSpec, zone_missing_ok: bool = False) -> dict | None:
        url = self._zone_url() + f"?rrset_name={quote(spec.fqdn())}&rrset_type=LUA"
        status, zone = retry(
            lambda: json_request("GET", url, self._headers(), timeout_s=self._timeout(), ok_missing=True),
            "powerdns read",
        )
        if status == 404 or zone is None:
            if zone_missing_ok:
                return None
            raise DnsBackendError(f"powerdns: zone {self.zone!r} does not exist on {self.api_url}")
        for rrset in zone.get("rrsets", []):
            if rrset["name"] == spec.fqdn() and rrset["type"] == "LUA":
                return rrset
        return None

    def read(self, spec: RecordSpec) -> Published | None:
        rrset = self._rrset(spec)
        if rrset is None or not rrset.get("records") or not is_ours(rrset):
            return None
        return {"default": parse_lua(rrset["records"][0]["content"], spec.cloud_for_ip())}

    def record_id(self, spec: RecordSpec) -> str:
        return f"powerdns:{self.server_id}/{self.zone}/{spec.fqdn()}/LUA"

    def _change(self, spec: RecordSpec, plan: Plan, current: dict | None) -> dict | None:
        """The rrset REPLACE that makes the name answer `plan`; None when it already does."""
        wanted = published_view(plan, self.supports_regions)["default"]
        content = lua_content(wanted, spec)
        if current is not None and not is_ours(current):
            raise DnsBackendError(f"powerdns: a LUA record at {spec.fqdn()} that edgefabric did not write "
                                  f"(no {OWNER!r} comment): refusing to overwrite it")
        if (
            current is not None
            and current.get("ttl") == spec.ttl
            and [r["content"] for r in current.get("records", [])] == [content]
            and _marked(current)
        ):
            return None
        return {
            "name": spec.fqdn(),
            "type": "LUA",
            "ttl": spec.ttl,
            "changetype": "REPLACE",
            "records": [{"content": content, "disabled": False}],
            "comments": [{"account": OWNER, "content": f"edgefabric weighted failover for {spec.fqdn()}"}],
        }

    def _patch(self, rrsets: list[dict]) -> None:
        retry(lambda: json_request("PATCH", self._zone_url(), self._headers(), {"rrsets": rrsets},
                                   timeout_s=self._timeout()),
              "powerdns apply")  # fmt: skip

    def apply(self, spec: RecordSpec, plan: Plan) -> ApplyResult:
        change = self._change(spec, plan, self._rrset(spec))
        if change is not None:
            self._patch([change])
        return ApplyResult(changed=change is not None, record_ids=[self.record_id(spec)])

    def apply_many(self, items: Sequence[tuple[RecordSpec, Plan]]) -> ApplyResult:
        """Every record's plan in one PATCH of the zone (PowerDNS applies an rrset list
        atomically): one GET of the zone's LUA rrsets, then nothing, or one PATCH."""
        url = self._zone_url()
        status, zone = retry(
            lambda: json_request("GET", url, self._headers(), timeout_s=self._timeout(), ok_missing=True),
            "powerdns read",
        )
        if status == 404 or zone is None:
            raise DnsBackendError(f"powerdns: zone {self.zone!r} does not exist on {self.api_url}")
        current = {r["name"]: r for r in zone.get("rrsets", []) if r["type"] == "LUA"}
        changes = [c for spec, plan in items if (c := self._change(spec, plan, current.get(spec.fqdn()))) is not None]
        if changes:
            self._patch(changes)
        return ApplyResult(changed=bool(changes), record_ids=[self.record_id(spec) for spec, _ in items])

    def delete(self, spec: RecordSpec) -> None:
        """Delete our LUA rrset at the name; anything else there (another type, or a LUA
        record we did not write) stays."""
        current = self._rrset(spec, zone_missing_ok=True)  # the zone gone: nothing of ours is left
        if current is None or not is_ours(current):
            return
        body = {"rrsets": [{"name": spec.fqdn(), "type": "LUA", "changetype": "DELETE"}]}
        status, _ = retry(
            lambda: json_request("PATCH", self._zone_url(), self._headers(), body, timeout_s=self._timeout(),
                                 ok_missing=True),
            "powerdns delete",
        )
        # 404 here means the zone itself is gone: nothing left to delete.
        del status

    def __repr__(self) -> str:  # never print the key
        return f"PowerDnsBackend(api_url={self.api_url!r}, zone={self.zone!r})"
