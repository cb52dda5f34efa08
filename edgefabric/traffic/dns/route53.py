"""Route53 backend (boto3).

Layout of what is published for record name N:
- no region rules: one weighted A set per cloud at N (`SetIdentifier` = cloud);
- with region rules: weighted sets per answer at `<answer>.N` (`default.N`,
  `americas.N`, ...) and geolocation alias records at N, one per continent of
  each rule plus the `*` default, pointing at those weighted names.
Weights use Route53's 0..255 scale. Every cloud keeps its weighted set even at
weight 0, so the attached Route53 health check keeps evaluating it (a weight-0
set is only served when every set is 0, which the planner never produces).
All changes go in one ChangeResourceRecordSets batch, so a failure leaves the
previous answer set intact.

Credentials and endpoint come from boto3's usual sources (environment:
AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_ENDPOINT_URL_ROUTE_53), read
when the backend builds its client inside a call.
"""

from __future__ import annotations

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
from edgefabric.traffic.dns.regions import continent
from edgefabric.traffic.planner import DEFAULT_ANSWER, Plan

_THROTTLE_CODES = {"Throttling", "ThrottlingException", "PriorRequestNotComplete", "ServiceUnavailable"}


@dataclass
class Route53Backend:
    zone_name: str
    hosted_zone_id: str | None = None
    use_health_check_ids: bool = True
    endpoint_url: str | None = None
    region: str = "us-east-1"
    credentials: dict[str, str] = field(default_factory=dict, repr=False)
    name: str = "route53"
    scale: int = 255
    supports_regions: bool = True

    # ---- plumbing
    def _client(self) -> Any:
        import boto3
        from botocore.config import Config

        kwargs: dict[str, Any] = {
            "region_name": self.region,
            "config": Config(
                retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=5, read_timeout=15
            ),
        }
        if self.endpoint_url:
            kwargs["endpoint_url"] = self.endpoint_url
        kwargs.update(self.credentials)  # aws_access_key_id / aws_secret_access_key when passed as secrets
        return boto3.client("route53", **kwargs)

    def _call(self, what: str, fn: Any, **kwargs: Any) -> Any:
        from botocore.exceptions import ClientError, EndpointConnectionError

        def once() -> Any:
            try:
                return fn(**kwargs)
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "")
                if code in _THROTTLE_CODES:
                    raise TransientError(f"route53 {what}: {code}") from exc
                raise DnsBackendError(f"route53 {what}: {code}: {exc}") from exc
            except EndpointConnectionError as exc:
                raise TransientError(f"route53 {what}: {exc}") from exc

        return retry(once, f"route53 {what}")

    def _zone_id(self, client: Any) -> str:
        if self.hosted_zone_id:
            return self.hosted_zone_id
        zone = self.zone_name if self.zone_name.endswith(".") else self.zone_name + "."
        resp = self._call(
            "ListHostedZonesByName", client.list_hosted_zones_by_name, DNSName=zone, MaxItems="1"
        )
        for hz in resp.get("HostedZones", []):
            if hz["Name"] == zone:
                return str(hz["Id"]).rsplit("/", 1)[-1]
        raise DnsBackendError(f"dns.backends.route53.zoneName: hosted zone {zone!r} not found")

    @staticmethod
    def _answer_name(spec: RecordSpec, answer: str) -> str:
        return f"{answer}.{spec.fqdn()}"

    def _names(self, spec: RecordSpec, answers: list[str]) -> set[str]:
        return {spec.fqdn()} | {self._answer_name(spec, a) for a in answers}

    def _existing(self, client: Any, zone_id: str, spec: RecordSpec) -> list[dict[str, Any]]:
        """Every A record set at N or at <answer>.N that carries a SetIdentifier (ours)."""
        fqdn = spec.fqdn()
        out: list[dict[str, Any]] = []
        # Scan the whole zone: servers differ in how StartRecordName orders sub-names
        # (Route53 sorts by reversed labels), and our names are few.
        kwargs: dict[str, Any] = {"HostedZoneId": zone_id}
        while True:
            resp = self._call("ListResourceRecordSets", client.list_resource_record_sets, **kwargs)
            for rr in resp.get("ResourceRecordSets", []):
                name = _unescape(rr["Name"])
                if name != fqdn and not name.endswith("." + fqdn):
                    continue
                if rr["Type"] == "A" and "SetIdentifier" in rr:
                    rr = dict(rr, Name=name)
                    if "AliasTarget" in rr:
                        rr["AliasTarget"] = dict(
                            rr["AliasTarget"], DNSName=_unescape(rr["AliasTarget"]["DNSName"])
                        )
                    out.append(rr)
            if not resp.get("IsTruncated"):
                return out
            kwargs = {
                "HostedZoneId": zone_id,
                "StartRecordName": resp["NextRecordName"],
                "StartRecordType": resp["NextRecordType"],
            }
            if "NextRecordIdentifier" in resp:
                kwargs["StartRecordIdentifier"] = resp["NextRecordIdentifier"]

    # ---- desired state
    def _weighted(self, spec: RecordSpec, name: str, weights: dict[str, int]) -> list[dict[str, Any]]:
        sets = []
        for cloud in sorted(spec.endpoints):
            rr: dict[str, Any] = {
                "Name": name,
                "Type": "A",
                "SetIdentifier": cloud,
                "Weight": int(weights.get(cloud, 0)),
                "TTL": spec.ttl,
                "ResourceRecords": [{"Value": spec.endpoints[cloud]}],
            }
            hc = spec.health_check_ids.get(cloud)
            if self.use_health_check_ids and hc:
                rr["HealthCheckId"] = hc
            sets.append(rr)
        return sets

    def desired(self, spec: RecordSpec, plan: Plan, zone_id: str) -> list[dict[str, Any]]:
        fqdn = spec.fqdn()
        if len(plan.answers) == 1:
            return self._weighted(spec, fqdn, plan.default)
        sets: list[dict[str, Any]] = []
        for answer_name, answer in plan.answers.items():
            target = self._answer_name(spec, answer_name)
            sets += self._weighted(spec, target, answer.weights)
            alias = {"HostedZoneId": zone_id, "DNSName": target, "EvaluateTargetHealth": True}
            if answer_name == DEFAULT_ANSWER:
                sets.append({"Name": fqdn, "Type": "A", "SetIdentifier": DEFAULT_ANSWER,
                             "GeoLocation": {"CountryCode": "*"}, "AliasTarget": alias})  # fmt: skip
                continue
            for code in sorted({continent(r) for r in answer.regions}):
                sets.append({"Name": fqdn, "Type": "A", "SetIdentifier": f"{answer_name}-{code}",
                             "GeoLocation": {"ContinentCode": code}, "AliasTarget": alias})  # fmt: skip
        return sets

    # ---- interface
    def read(self, spec: RecordSpec) -> Published | None:
        client = self._client()
        existing = self._existing(client, self._zone_id(client), spec)
        if not existing:
            return None
        by_ip = spec.cloud_for_ip()
        fqdn = spec.fqdn()
        out: Published = {}
        for rr in existing:
            if "Weight" not in rr:
                continue
            name = rr["Name"]
            answer = DEFAULT_ANSWER if name == fqdn else name[: -len(fqdn) - 1]
            ip = rr["ResourceRecords"][0]["Value"]
            if int(rr["Weight"]) > 0:
                out.setdefault(answer, {})[by_ip.get(ip, ip)] = int(rr["Weight"])
            else:
                out.setdefault(answer, {})
        return out

    def apply(self, spec: RecordSpec, plan: Plan) -> ApplyResult:
        client = self._client()
        zone_id = self._zone_id(client)
        want = self.desired(spec, plan, zone_id)
        have = self._existing(client, zone_id, spec)
        key = lambda rr: (rr["Name"], rr["SetIdentifier"])  # noqa: E731
        have_by = {key(rr): _normal(rr) for rr in have}
        want_by = {key(rr): _normal(rr) for rr in want}
        changes: list[dict[str, Any]] = []
        # Deletes first in the batch: switching N between weighted and geolocation
        # must remove the old kind before the new one exists.
        for k, rr in have_by.items():
            if k not in want_by or _kind(rr) != _kind(want_by[k]):
                changes.append({"Action": "DELETE", "ResourceRecordSet": _raw(have, k)})
        for k, rr in want_by.items():
            if have_by.get(k) != rr:
                changes.append({"Action": "UPSERT", "ResourceRecordSet": rr})
        ids = [f"route53:{zone_id}/{rr['Name']}A/{rr['SetIdentifier']}" for rr in want]
        if not changes:
            return ApplyResult(changed=False, record_ids=ids)
        self._call(
            "ChangeResourceRecordSets",
            client.change_resource_record_sets,
            HostedZoneId=zone_id,
            ChangeBatch={"Comment": "edgefabric weighted failover", "Changes": changes},
        )
        return ApplyResult(changed=True, record_ids=ids)

    def delete(self, spec: RecordSpec) -> None:
        client = self._client()
        try:
            zone_id = self._zone_id(client)
        except DnsBackendError:
            return  # zone gone: nothing of ours can remain
        have = self._existing(client, zone_id, spec)
        if not have:
            return
        # Aliases (at N) must go before or with their targets; one batch handles both.
        changes = [{"Action": "DELETE", "ResourceRecordSet": rr} for rr in have]
        self._call(
            "ChangeResourceRecordSets",
            client.change_resource_record_sets,
            HostedZoneId=zone_id,
            ChangeBatch={"Comment": "edgefabric weighted failover delete", "Changes": changes},
        )


def _unescape(name: str) -> str:
    # Route53 returns "*" and some characters octal-escaped (\052).
    return name.replace("\\052", "*")


def _kind(rr: dict[str, Any]) -> str:
    return "geo" if "GeoLocation" in rr else "weighted"


def _normal(rr: dict[str, Any]) -> dict[str, Any]:
    """A record set reduced to the fields we manage, for comparison."""
    keep = ("Name", "Type", "SetIdentifier", "Weight", "TTL", "ResourceRecords", "HealthCheckId",
            "GeoLocation", "AliasTarget")  # fmt: skip
    out = {k: rr[k] for k in keep if k in rr}
    if "Weight" in out:
        out["Weight"] = int(out["Weight"])
    if "GeoLocation" in out:
        out["GeoLocation"] = {
            k: v for k, v in out["GeoLocation"].items() if k in ("ContinentCode", "CountryCode")
        }
    if "AliasTarget" in out:
        at = out["AliasTarget"]
        out["AliasTarget"] = {"HostedZoneId": str(at["HostedZoneId"]).rsplit("/", 1)[-1],
                              "DNSName": at["DNSName"], "EvaluateTargetHealth": bool(at["EvaluateTargetHealth"])}  # fmt: skip
    return out


def _raw(have: list[dict[str, Any]], k: tuple[str, str]) -> dict[str, Any]:
    for rr in have:
        if (rr["Name"], rr["SetIdentifier"]) == k:
            return _normal(rr)
    raise KeyError(k)
