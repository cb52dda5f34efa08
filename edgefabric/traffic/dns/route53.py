"""Route53 backend (boto3).

Layout of what is published for record name N:
- no region rules: one weighted A set per cloud at N (`SetIdentifier` = cloud); a
  cloud whose endpoint is a DNS name gets a set per address it resolved to
  (`<cloud>/<address>` when there are several), its weight split evenly. (Alias
  records could point at an ELB name natively, but only at AWS resources, and a
  CNAME cannot share a name with A sets: resolving works for every name.)
- with region rules: weighted sets per answer at `<answer>.N` (`default.N`,
  `americas.N`, ...) and geolocation alias records at N, one per continent of
  each rule plus the `*` default, pointing at those weighted names.
Weights use Route53's 0..255 scale. Every cloud keeps its weighted set even at
weight 0, so the attached Route53 health check keeps evaluating it (a weight-0
set is only served when every set is 0, which the planner never produces).
All changes go in one ChangeResourceRecordSets batch, so a failure leaves the
previous answer set intact.

Only our records: every set we create has a `SetIdentifier` starting `edgefabric-`
(`edgefabric-aws`, `edgefabric-default`, `edgefabric-americas-NA`); apply and delete
touch no other set at the name, so a weighted set someone else keeps there survives both.

Credentials and endpoint come from boto3's usual sources (environment:
AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_ENDPOINT_URL_ROUTE_53), read
when the backend builds its client inside a call.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
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
# Every record set we create carries a SetIdentifier with this prefix; apply and delete touch
# no other set (see `Route53Backend._ours`).
OWN_PREFIX = "edgefabric-"
# Route53 takes at most 1,000 ResourceRecord elements in one ChangeBatch, an UPSERT's
# counted twice (`batch_cost`).
MAX_CHANGES = 1000


def batch_cost(change: dict[str, Any]) -> int:
    """What one change counts against MAX_CHANGES: its ResourceRecord elements (an alias
    has none; count it as one), twice for an UPSERT."""
    rrset = change["ResourceRecordSet"]
    records = max(1, len(rrset.get("ResourceRecords") or []))
    return records * (2 if change["Action"] == "UPSERT" else 1)


_CLIENT_LOCK = threading.Lock()


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
    # Seconds one HTTP request may take (connect 5 s and read 15 s by default). The controller
    # sets it to its deadline (`dns.applyTimeoutS`).
    call_timeout_s: float | None = None

    # ---- plumbing
    def _client(self) -> Any:
        import boto3
        from botocore.config import Config

        kwargs: dict[str, Any] = {
            "region_name": self.region,
            "config": Config(
                retries={"max_attempts": 5, "mode": "standard"},
                connect_timeout=min(5.0, self.call_timeout_s or 5.0),
                read_timeout=min(15.0, self.call_timeout_s or 15.0),
            ),
        }
        if self.endpoint_url:
            kwargs["endpoint_url"] = self.endpoint_url
        kwargs.update(self.credentials)  # aws_access_key_id / aws_secret_access_key when passed as secrets
        # boto3.client builds on the shared default session, which is not thread-safe; the
        # controller reads several names at once (`Controller._read_names`). Clients are.
        with _CLIENT_LOCK:
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

    @staticmethod
    def _ours(rr: dict[str, Any], name: str, spec: RecordSpec) -> bool:
        """A set we created: its SetIdentifier has our prefix. Earlier versions wrote no
        prefix; their sets are still recognised, by the exact shape they had (at N or one
        label below it: a weighted set named after one of our clouds, or a geolocation alias
        `default` / `<answer>-<code>` to `<answer>.N`), and are renamed on the next apply."""
        ident = str(rr.get("SetIdentifier", ""))
        if rr["Type"] != "A" or not ident:
            return False
        if ident.startswith(OWN_PREFIX):
            return True
        fqdn = spec.fqdn()
        label = name[: -len(fqdn) - 1] if name != fqdn else ""
        if "." in label:
            return False
        if "Weight" in rr and "AliasTarget" not in rr:
            return ident in spec.endpoints
        target = str(rr.get("AliasTarget", {}).get("DNSName", "")).rstrip(".") + "."
        answer = target[: -len(fqdn) - 1] if target.endswith("." + fqdn) else None
        return (name == fqdn and "GeoLocation" in rr and answer is not None
                and (ident == answer == DEFAULT_ANSWER or ident.startswith(f"{answer}-")))  # fmt: skip

    def _existing(
        self, client: Any, zone_id: str, spec: RecordSpec, listed: list[dict[str, Any]] | None = None
    ) -> list[dict[str, Any]]:
        """Our A record sets at N and below it (`_ours`); everything else there is left alone.
        `listed`: the zone's sets already read (`_zone_sets`), for several records at once."""
        fqdn = spec.fqdn()
        sets = listed if listed is not None else self._zone_sets(client, zone_id)
        return [rr for rr in sets
                if (rr["Name"] == fqdn or rr["Name"].endswith("." + fqdn)) and self._ours(rr, rr["Name"], spec)]

    def _zone_sets(self, client: Any, zone_id: str) -> list[dict[str, Any]]:
        """Every A set with a SetIdentifier in the zone, names unescaped."""
        out: list[dict[str, Any]] = []
        # Scan the whole zone: servers differ in how StartRecordName orders sub-names
        # (Route53 sorts by reversed labels), and our names are few.
        kwargs: dict[str, Any] = {"HostedZoneId": zone_id}
        while True:
            resp = self._call("ListResourceRecordSets", client.list_resource_record_sets, **kwargs)
            for rr in resp.get("ResourceRecordSets", []):
                if rr["Type"] == "A" and "SetIdentifier" in rr:
                    rr = dict(rr, Name=_unescape(rr["Name"]))
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
        """One weighted set per address: `SetIdentifier` = the cloud, or `<cloud>/<address>`
        when its endpoint resolved to several (the cloud's weight split evenly between them,
        each set carrying the cloud's health check). A cloud whose name did not resolve has
        no set; an answer left with no positive weight is refused, never published."""
        sets = []
        parts = spec.split({c: int(weights.get(c, 0)) for c in spec.endpoints})
        several = {c for c, _a, _w in parts if len(spec.answers_for(c)) > 1}
        for cloud, address, weight in parts:
            rr: dict[str, Any] = {
                "Name": name,
                "Type": "A",
                "SetIdentifier": f"{cloud}/{address}" if cloud in several else cloud,
                "Weight": weight,
                "TTL": spec.ttl,
                "ResourceRecords": [{"Value": address}],
            }
            hc = spec.health_check_ids.get(cloud)
            if self.use_health_check_ids and hc:
                rr["HealthCheckId"] = hc
            sets.append(rr)
        if not any(rr["Weight"] > 0 for rr in sets):
            # All-zero sets would make Route53 serve every one of them, the down clouds too.
            raise DnsBackendError(f"refusing to publish an empty answer set at {name}: "
                                  f"no cloud with weight has an address")
        return sets

    def desired(self, spec: RecordSpec, plan: Plan, zone_id: str) -> list[dict[str, Any]]:
        fqdn = spec.fqdn()
        if len(plan.answers) == 1:
            return _owned(self._weighted(spec, fqdn, plan.default))
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
        return _owned(sets)

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
            weights = out.setdefault(answer, {})
            if int(rr["Weight"]) > 0:
                # A cloud with several addresses has a set per address: add its parts up.
                key = by_ip.get(ip, ip)
                weights[key] = weights.get(key, 0) + int(rr["Weight"])
        return out

    def apply(self, spec: RecordSpec, plan: Plan) -> ApplyResult:
        client = self._client()
        zone_id = self._zone_id(client)
        changes, ids = self._changes(spec, plan, zone_id, self._existing(client, zone_id, spec))
        if not changes:
            return ApplyResult(changed=False, record_ids=ids)
        self._send(client, zone_id, changes)
        return ApplyResult(changed=True, record_ids=ids)

    def apply_many(self, items: Sequence[tuple[RecordSpec, Plan]]) -> ApplyResult:
        """Every record's plan with one listing of the zone and as few ChangeBatches as
        Route53 allows (`MAX_CHANGES` ResourceRecord elements each, see `batch_cost`); a
        record's changes never straddle two batches, so each record still moves all at once."""
        client = self._client()
        zone_id = self._zone_id(client)
        listed = self._zone_sets(client, zone_id)
        batches: list[list[dict[str, Any]]] = [[]]
        cost = 0
        ids: list[str] = []
        for spec, plan in items:
            changes, record_ids = self._changes(spec, plan, zone_id, self._existing(client, zone_id, spec, listed))
            ids += record_ids
            more = sum(batch_cost(c) for c in changes)
            if batches[-1] and cost + more > MAX_CHANGES:
                batches.append([])
                cost = 0
            batches[-1] += changes
            cost += more
        for batch in batches:
            if batch:
                self._send(client, zone_id, batch)
        return ApplyResult(changed=any(batches), record_ids=ids)

    def _send(self, client: Any, zone_id: str, changes: list[dict[str, Any]]) -> None:
        self._call(
            "ChangeResourceRecordSets",
            client.change_resource_record_sets,
            HostedZoneId=zone_id,
            ChangeBatch={"Comment": "edgefabric weighted failover", "Changes": changes},
        )

    def _changes(
        self, spec: RecordSpec, plan: Plan, zone_id: str, have: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], list[str]]:
        """The changes that make the record answer `plan`, and its record ids."""
        want = self.desired(spec, plan, zone_id)
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
        ids = [f"route53:{zone_id}/{rr['Name']}A/{rr['SetIdentifier'].removeprefix(OWN_PREFIX)}" for rr in want]
        return changes, ids

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


def _owned(sets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The sets with our mark: `SetIdentifier` prefixed with OWN_PREFIX."""
    return [dict(rr, SetIdentifier=OWN_PREFIX + rr["SetIdentifier"]) for rr in sets]


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
