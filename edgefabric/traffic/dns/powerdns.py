"""PowerDNS backend: one LUA record answering with weighted random choice.

The record is `LUA A "pickwrandom({{w1,'ip1'},{w2,'ip2'}})"`; pdns_server must
run with `enable-lua-records=yes`. Weight-0 clouds are left out of the list
(pickwrandom would never pick them anyway, and an explicit list of only the
serving IPs makes `read` unambiguous). PowerDNS has no GeoIP backend here, so
only the default answer is published (`supports_regions = False`).
"""

from __future__ import annotations

import re
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


def lua_content(weights: dict[str, int], endpoints: dict[str, str]) -> str:
    """The LUA record content for cloud weights (order: by cloud name, stable)."""
    items = [f"{{{w},'{endpoints[c]}'}}" for c, w in sorted(weights.items()) if w > 0]
    if not items:
        raise DnsBackendError("refusing to publish an empty answer set")
    return 'A "pickwrandom({' + ",".join(items) + '})"'


def parse_lua(content: str, cloud_for_ip: dict[str, str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for weight, ip in _ENTRY.findall(content):
        out[cloud_for_ip.get(ip, ip)] = int(weight)
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

    def _zone_url(self) -> str:
        zone = self.zone if self.zone.endswith(".") else self.zone + "."
        return f"{self.api_url.rstrip('/')}/api/v1/servers/{quote(self.server_id)}/zones/{quote(zone)}"

    def _headers(self) -> dict[str, str]:
        return {"X-API-Key": self.api_key, "Accept": "application/json"}

    def _rrset(self, spec: RecordSpec) -> dict | None:
        url = self._zone_url() + f"?rrset_name={quote(spec.fqdn())}&rrset_type=LUA"
        status, zone = retry(
            lambda: json_request("GET", url, self._headers(), ok_missing=True), "powerdns read"
        )
        if status == 404 or zone is None:
            raise DnsBackendError(f"powerdns: zone {self.zone!r} does not exist on {self.api_url}")
        for rrset in zone.get("rrsets", []):
            if rrset["name"] == spec.fqdn() and rrset["type"] == "LUA":
                return rrset
        return None

    def read(self, spec: RecordSpec) -> Published | None:
        rrset = self._rrset(spec)
        if rrset is None or not rrset.get("records"):
            return None
        return {"default": parse_lua(rrset["records"][0]["content"], spec.cloud_for_ip())}

    def record_id(self, spec: RecordSpec) -> str:
        return f"powerdns:{self.server_id}/{self.zone}/{spec.fqdn()}/LUA"

    def apply(self, spec: RecordSpec, plan: Plan) -> ApplyResult:
        wanted = published_view(plan, self.supports_regions)["default"]
        content = lua_content(wanted, dict(spec.endpoints))
        current = self._rrset(spec)
        if (
            current is not None
            and current.get("ttl") == spec.ttl
            and [r["content"] for r in current.get("records", [])] == [content]
        ):
            return ApplyResult(changed=False, record_ids=[self.record_id(spec)])
        body = {
            "rrsets": [
                {
                    "name": spec.fqdn(),
                    "type": "LUA",
                    "ttl": spec.ttl,
                    "changetype": "REPLACE",
                    "records": [{"content": content, "disabled": False}],
                }
            ]
        }
        retry(lambda: json_request("PATCH", self._zone_url(), self._headers(), body), "powerdns apply")
        return ApplyResult(changed=True, record_ids=[self.record_id(spec)])

    def delete(self, spec: RecordSpec) -> None:
        body = {"rrsets": [{"name": spec.fqdn(), "type": "LUA", "changetype": "DELETE"}]}
        status, _ = retry(
            lambda: json_request("PATCH", self._zone_url(), self._headers(), body, ok_missing=True),
            "powerdns delete",
        )
        # 404 here means the zone itself is gone: nothing left to delete.
        del status

    def __repr__(self) -> str:  # never print the key
        return f"PowerDnsBackend(api_url={self.api_url!r}, zone={self.zone!r})"
