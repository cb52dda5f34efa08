"""A fake Cloud DNS v1 API validating every request against the `dns` v1
discovery document bundled with google-api-python-client (the same document
the client builds itself from with static_discovery=True).

Checked for every request: path matches a method's path template and its
httpMethod, path/query parameters are declared (method or global parameters)
with the declared types/enums, required ones are present, a Bearer token is
sent, and the body validates strictly against the method's `request` schema.
Responses carry `kind` like the real API and are validated against the
method's `response` schema.

Implemented methods: changes.create (atomic; deletions must match exactly),
changes.get, resourceRecordSets.list/get/delete, managedZones.get.
"""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from typing import Any

import googleapiclient

from tests.fakes.schema_check import SchemaValidator
from tests.fakes.server import FakeServer, Reply, Request

DISCOVERY = Path(googleapiclient.__file__).parent / "discovery_cache" / "documents" / "dns.v1.json"


def _walk_methods(resources: dict[str, Any], prefix: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = []
    for rname, res in resources.items():
        for mname, method in res.get("methods", {}).items():
            out.append((f"{prefix}{rname}.{mname}", method))
        out += _walk_methods(res.get("resources", {}), f"{prefix}{rname}.")
    return out


class FakeCloudDns(FakeServer):
    def __init__(self, zones: dict[tuple[str, str], str]) -> None:
        """zones: (project, managedZone) -> dnsName (with trailing dot)."""
        super().__init__()
        self.doc = json.loads(DISCOVERY.read_text())
        schemas = self.doc["schemas"]
        self.validator = SchemaValidator(lambda ref: schemas[ref])
        self.methods: list[tuple[re.Pattern[str], str, str, dict[str, Any]]] = []
        base = "/" + self.doc.get("servicePath", "")
        for mid, method in _walk_methods(self.doc["resources"]):
            template = re.escape(base + method["path"])
            regex = "^" + re.sub(r"\\\{\\?\+?(\w+)\\\}", r"(?P<\1>[^/]+)", template) + "$"
            self.methods.append((re.compile(regex), method["httpMethod"], mid, method))
        self.zones = dict(zones)
        self.rrsets: dict[tuple[str, str], dict[tuple[str, str], dict[str, Any]]] = {z: {} for z in zones}
        self.changes: dict[tuple[str, str], list[dict[str, Any]]] = {z: [] for z in zones}
        self._ids = 0
        self._id_lock = threading.Lock()

    # ---------------------------------------------------------------- validation
    def _check(self, req: Request, method: dict[str, Any], args: dict[str, str]) -> list[str]:
        problems: list[str] = []
        declared = {**self.doc.get("parameters", {}), **method.get("parameters", {})}
        for name, p in method.get("parameters", {}).items():
            if p.get("location") == "path" and p.get("required") and not args.get(name):
                problems.append(f"path parameter {name} missing")
            if p.get("location") == "query" and p.get("required") and name not in req.query:
                problems.append(f"query parameter {name} missing")
        for name, values in req.query.items():
            p = declared.get(name)
            if p is None or p.get("location") != "query":
                problems.append(f"unknown query parameter {name!r}")
                continue
            if len(values) > 1 and not p.get("repeated"):
                problems.append(f"query parameter {name} repeated")
            for v in values:
                if "enum" in p and v not in p["enum"]:
                    problems.append(f"query parameter {name}={v!r} not one of {p['enum']}")
                if p.get("type") == "integer" and not re.fullmatch(r"-?\d+", v):
                    problems.append(f"query parameter {name}={v!r} is not an integer")
                if p.get("type") == "boolean" and v not in ("true", "false"):
                    problems.append(f"query parameter {name}={v!r} is not a boolean")
        if "request" in method:
            if req.body is None:
                problems.append("request body missing")
            else:
                problems += self.validator.errors(method["request"], req.body, "$body", request=True)
        elif req.body is not None:
            problems.append("this method takes no request body")
        if not req.headers.get("authorization", "").startswith("Bearer "):
            problems.append("no Bearer token in Authorization header")
        return problems

    def _respond(self, method: dict[str, Any], status: int, body: Any) -> Reply:
        if status == 200 and "response" in method and body is not None:
            errs = self.validator.errors(method["response"], body, "$response", request=False)
            if errs:
                with self.lock:
                    self.violations += [f"fake response for {method['id']}: {e}" for e in errs]
        return Reply(status, body)

    def error_reply(self, status: int, message: str, reason: str = "invalid") -> Reply:
        return Reply(status, {"error": {"code": status, "message": message,
                                        "errors": [{"domain": "global", "reason": reason, "message": message}]}})  # fmt: skip

    def handle(self, req: Request) -> Reply:
        for regex, http_method, mid, method in self.methods:
            m = regex.match(req.path)
            if m and http_method == req.method:
                problems = self._check(req, method, m.groupdict())
                if problems:
                    return self.reject(req, problems)
                handler = getattr(self, "_m_" + mid.replace(".", "_"), None)
                if handler is None:
                    return self.error_reply(501, f"fake does not implement {mid}")
                zone = (
                    (m.group("project"), m.group("managedZone")) if "managedZone" in m.groupdict() else None
                )
                if zone is not None and zone not in self.zones:
                    return self.error_reply(
                        404,
                        f"The 'parameters.managedZone' resource named '{zone[1]}' does not exist.",
                        "notFound",
                    )
                return handler(req, method, m.groupdict(), zone)
        return self.reject(req, ["no method of the discovery document matches this path and verb"], 404)

    # ----------------------------------------------------------------- behaviour
    @staticmethod
    def _out(rr: dict[str, Any]) -> dict[str, Any]:
        out = json.loads(json.dumps(rr))
        out["kind"] = "dns#resourceRecordSet"
        if "routingPolicy" in out:
            out["routingPolicy"]["kind"] = "dns#rRSetRoutingPolicy"
            if "wrr" in out["routingPolicy"]:
                out["routingPolicy"]["wrr"]["kind"] = "dns#rRSetRoutingPolicyWrrPolicy"
                for item in out["routingPolicy"]["wrr"].get("items", []):
                    item["kind"] = "dns#rRSetRoutingPolicyWrrPolicyWrrPolicyItem"
        return out

    def _rrset_problems(self, rr: dict[str, Any], zone_name: str, where: str) -> list[str]:
        """Service rules the API reference states in prose."""
        problems = []
        name = rr.get("name", "")
        if not name.endswith(".") or not (name == zone_name or name.endswith("." + zone_name)):
            problems.append(f"{where}.name {name!r} is not a FQDN inside zone {zone_name!r}")
        if not rr.get("type"):
            problems.append(f"{where}.type missing")
        if ("rrdatas" in rr) == ("routingPolicy" in rr):
            problems.append(f"{where}: exactly one of rrdatas or routingPolicy is required")
        wrr = rr.get("routingPolicy", {}).get("wrr")
        if wrr is not None:
            for i, item in enumerate(wrr.get("items", [])):
                if item.get("weight", 0) < 0:
                    problems.append(f"{where}.routingPolicy.wrr.items[{i}].weight must be non-negative")
                if not item.get("rrdatas") and not item.get("healthCheckedTargets"):
                    problems.append(f"{where}.routingPolicy.wrr.items[{i}] needs rrdatas")
        return problems

    def _m_changes_create(
        self, req: Request, method: dict[str, Any], args: dict[str, str], zone: Any
    ) -> Reply:
        body = req.body
        zone_name = self.zones[zone]
        problems = []
        for kind in ("additions", "deletions"):
            for i, rr in enumerate(body.get(kind, [])):
                problems += self._rrset_problems(rr, zone_name, f"$body.{kind}[{i}]")
        if problems:
            return self.reject(req, problems)
        with self.lock:
            current = self.rrsets[zone]
            staged = dict(current)
            for rr in body.get("deletions", []):
                key = (rr["name"], rr["type"])
                if staged.get(key) != rr:
                    return self.error_reply(
                        412, f"deletion of {key} does not match existing data", "conditionNotMet"
                    )
                del staged[key]
            for rr in body.get("additions", []):
                key = (rr["name"], rr["type"])
                if key in staged:
                    return self.error_reply(409, f"The resource '{key}' already exists", "alreadyExists")
                staged[key] = json.loads(json.dumps(rr))
            self.rrsets[zone] = staged
            self._ids += 1
            change = {
                "kind": "dns#change",
                "id": str(self._ids),
                "status": "done",
                "startTime": "2026-01-01T00:00:00.000Z",
                "additions": [self._out(r) for r in body.get("additions", [])],
                "deletions": [self._out(r) for r in body.get("deletions", [])],
            }
            self.changes[zone].append(change)
        return self._respond(method, 200, change)

    def _m_changes_get(self, req: Request, method: dict[str, Any], args: dict[str, str], zone: Any) -> Reply:
        for change in self.changes[zone]:
            if change["id"] == args["changeId"]:
                return self._respond(method, 200, change)
        return self.error_reply(404, "change not found", "notFound")

    def _m_resourceRecordSets_list(
        self, req: Request, method: dict[str, Any], args: dict[str, str], zone: Any
    ) -> Reply:
        name = req.query.get("name", [None])[0]
        rtype = req.query.get("type", [None])[0]
        items = [
            self._out(rr)
            for (n, t), rr in sorted(self.rrsets[zone].items())
            if (name is None or n == name) and (rtype is None or t == rtype)
        ]
        return self._respond(method, 200, {"kind": "dns#resourceRecordSetsListResponse", "rrsets": items})

    def _m_resourceRecordSets_get(
        self, req: Request, method: dict[str, Any], args: dict[str, str], zone: Any
    ) -> Reply:
        rr = self.rrsets[zone].get((args["name"], args["type"]))
        return (
            self._respond(method, 200, self._out(rr))
            if rr
            else self.error_reply(404, "not found", "notFound")
        )

    def _m_resourceRecordSets_delete(
        self, req: Request, method: dict[str, Any], args: dict[str, str], zone: Any
    ) -> Reply:
        with self.lock:
            gone = self.rrsets[zone].pop((args["name"], args["type"]), None)
        return self._respond(method, 200, {}) if gone else self.error_reply(404, "not found", "notFound")

    def _m_managedZones_get(
        self, req: Request, method: dict[str, Any], args: dict[str, str], zone: Any
    ) -> Reply:
        return self._respond(
            method, 200, {"kind": "dns#managedZone", "name": zone[1], "dnsName": self.zones[zone]}
        )


def start(zones: dict[tuple[str, str], str]) -> FakeCloudDns:
    fake = FakeCloudDns(zones)
    fake.start()
    return fake
