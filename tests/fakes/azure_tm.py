"""A fake Azure Traffic Manager (ARM) API, validating every request against
Microsoft's published spec: `../shared/fixtures/azure-trafficmanager-2022-04-01/`
(relative to the repo root; CI keeps a copy of shared/ beside the clone).

Checked for every request: the path matches a path template of the spec, the
method exists on it, path/query parameters (api-version must be the spec's
version; the common-types parameters the spec references by relative $ref are
checked by their published rules), a Bearer token is present, and the body
validates strictly against the operation's body schema. Responses are built in
the shape of the published examples and are themselves validated against the
response schema (a mismatch is a fake bug and is logged as a violation too).

`hang()` turns the fake into a black hole: it accepts every connection and reads the
request, then never answers until `hang(False)` or `stop()`; a test of deadlines uses it.
"""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from typing import Any

from tests.fakes.schema_check import SchemaValidator
from tests.fakes.server import FakeServer, Reply, Request

REPO_ROOT = Path(__file__).resolve().parents[2]
SPEC_DIR = REPO_ROOT.parent / "shared" / "fixtures" / "azure-trafficmanager-2022-04-01"
COMMON = "../../../../../common-types/resource-management/v3/types.json#/parameters/"
RG_PATTERN = re.compile(r"^[-\w\._\(\)]+$")


def load_spec() -> dict[str, Any]:
    path = SPEC_DIR / "trafficmanager.json"
    if not path.exists():
        raise FileNotFoundError(
            f"Traffic Manager spec not found at {path} (expected ../shared beside the repo root)"
        )
    return json.loads(path.read_text())


def load_example(name: str) -> dict[str, Any]:
    return json.loads((SPEC_DIR / "examples" / name).read_text())


class FakeTrafficManager(FakeServer):
    def __init__(self) -> None:
        super().__init__()
        self.spec = load_spec()
        self.api_version = self.spec["info"]["version"]
        defs = self.spec["definitions"]
        self.validator = SchemaValidator(lambda ref: defs[ref.split("/")[-1]])
        self.routes: list[tuple[re.Pattern[str], str, dict[str, Any]]] = []
        for template, ops in self.spec["paths"].items():
            regex = "^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template)) + "$"
            self.routes.append((re.compile(regex, re.IGNORECASE), template, ops))
        # (subscription, resource group lowercased, profile lowercased) -> profile JSON
        self.profiles: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._answering = threading.Event()
        self._answering.set()
        self.hung_requests = 0

    # ---------------------------------------------------------------- black hole
    def hang(self, on: bool = True) -> None:
        """Black-hole mode on (every request is held unanswered) or off (held ones answer now)."""
        if on:
            self._answering.clear()
        else:
            self._answering.set()

    def stop(self) -> None:
        self.hang(False)
        super().stop()

    # ---------------------------------------------------------------- validation
    def _match(self, req: Request) -> tuple[dict[str, Any], dict[str, str]] | None:
        for regex, _template, ops in self.routes:
            m = regex.match(req.path)
            if m:
                op = ops.get(req.method.lower())
                if op is None:
                    return None
                return op, m.groupdict()
        return None

    def _check_params(self, req: Request, op: dict[str, Any], path_args: dict[str, str]) -> list[str]:
        problems: list[str] = []
        allowed_query = set()
        for param in op.get("parameters", []):
            ref = param.get("$ref", "")
            if ref == COMMON + "ApiVersionParameter":
                allowed_query.add("api-version")
                got = req.query.get("api-version", [None])[0]
                if got != self.api_version:
                    problems.append(f"api-version {got!r} != published {self.api_version!r}")
            elif ref == COMMON + "SubscriptionIdParameter":
                if not path_args.get("subscriptionId"):
                    problems.append("subscriptionId missing")
            elif ref == COMMON + "ResourceGroupNameParameter":
                rg = path_args.get("resourceGroupName", "")
                if not (1 <= len(rg) <= 90 and RG_PATTERN.match(rg)):
                    problems.append(f"resourceGroupName {rg!r} violates ^[-\\w\\._\\(\\)]+$ (1..90)")
            elif ref:
                problems.append(f"unhandled parameter reference {ref}")
            elif param["in"] == "path":
                value = path_args.get(param["name"], "")
                if "enum" in param and value not in param["enum"]:
                    problems.append(f"path parameter {param['name']}={value!r} not one of {param['enum']}")
            elif param["in"] == "query":
                allowed_query.add(param["name"])
                if param.get("required") and param["name"] not in req.query:
                    problems.append(f"query parameter {param['name']} missing")
            elif param["in"] == "body":
                if req.body is None:
                    if param.get("required"):
                        problems.append("request body missing")
                else:
                    problems += self.validator.errors(param["schema"], req.body, "$body", request=True)
        for key in req.query:
            if key not in allowed_query:
                problems.append(f"unknown query parameter {key!r}")
        if not req.headers.get("authorization", "").startswith("Bearer "):
            problems.append("no Bearer token in Authorization header")
        return problems

    def _respond(self, op: dict[str, Any], status: int, body: Any) -> Reply:
        published = op["responses"].get(str(status)) or (
            op["responses"].get("default") if status >= 400 else None
        )
        schema = (published or {}).get("schema")
        if schema is not None and body is not None:
            errs = self.validator.errors(schema, body, "$response", request=False)
            if errs:
                with self.lock:
                    self.violations += [f"fake response for {op['operationId']}: {e}" for e in errs]
        elif published is None:
            with self.lock:
                self.violations.append(f"fake answered {op['operationId']} with unpublished status {status}")
        return Reply(status, body)

    def error_reply(self, status: int, message: str) -> Reply:
        return Reply(
            status, {"error": {"code": "BadRequest" if status == 400 else str(status), "message": message}}
        )

    # ----------------------------------------------------------------- dispatch
    def handle(self, req: Request) -> Reply:
        if not self._answering.is_set():
            with self.lock:
                self.hung_requests += 1
            self._answering.wait()
        matched = self._match(req)
        if matched is None:
            return self.reject(req, ["no such path/method in the published spec"], 404)
        op, args = matched
        problems = self._check_params(req, op, args)
        if problems:
            return self.reject(req, problems)
        handler = getattr(self, "_op_" + op["operationId"], None)
        if handler is None:
            return self.error_reply(501, f"fake does not implement {op['operationId']}")
        return handler(req, op, args)

    def _key(self, args: dict[str, str]) -> tuple[str, str, str]:
        return (args["subscriptionId"], args["resourceGroupName"].lower(), args["profileName"].lower())

    def _id(self, args: dict[str, str], name: str) -> str:
        return (
            f"/subscriptions/{args['subscriptionId']}/resourceGroups/{args['resourceGroupName']}"
            f"/providers/Microsoft.Network/trafficManagerProfiles/{name}"
        )

    def _not_found(self, op: dict[str, Any], what: str) -> Reply:
        return self._respond(op, 404, {"error": {"code": "NotFound", "message": f"{what} was not found"}})

    def _endpoint_out(self, profile_id: str, ep: dict[str, Any], index: int) -> dict[str, Any]:
        kind = ep.get("type", "Microsoft.Network/trafficManagerProfiles/externalEndpoints").split("/")[-1]
        kind = kind[0].lower() + kind[1:]  # the examples answer "externalEndpoints"
        props = dict(ep.get("properties", {}))
        props.setdefault("weight", 1)
        props.setdefault("priority", index + 1)
        props["endpointMonitorStatus"] = (
            "CheckingEndpoint" if props.get("endpointStatus", "Enabled") == "Enabled" else "Disabled"
        )
        return {
            "id": f"{profile_id}/{kind}/{ep['name']}",
            "name": ep["name"],
            "type": f"Microsoft.Network/trafficManagerProfiles/{kind}",
            "properties": props,
        }

    def _business_rules(self, body: dict[str, Any], args: dict[str, str]) -> list[str]:
        """Service-side rules the spec states in prose (descriptions)."""
        problems = []
        props = body.get("properties", {})
        method = props.get("trafficRoutingMethod")
        for i, ep in enumerate(props.get("endpoints", [])):
            p = ep.get("properties", {})
            if "weight" in p and not 1 <= p["weight"] <= 1000:
                problems.append(f"endpoints[{i}].weight {p['weight']} outside 1..1000")
            if ep.get("type", "").lower().endswith("nestedendpoints"):
                target = p.get("targetResourceId", "")
                child = target.rsplit("/", 1)[-1].lower()
                if (args["subscriptionId"], args["resourceGroupName"].lower(), child) not in self.profiles:
                    problems.append(f"endpoints[{i}].targetResourceId {target!r} does not exist")
            if method == "Geographic" and not p.get("geoMapping"):
                problems.append(f"endpoints[{i}].geoMapping required for Geographic routing")
        mon = props.get("monitorConfig", {})
        if mon.get("intervalInSeconds") not in (None, 10, 30):
            problems.append(f"monitorConfig.intervalInSeconds {mon['intervalInSeconds']} not 10 or 30")
        if "toleratedNumberOfFailures" in mon and not 0 <= mon["toleratedNumberOfFailures"] <= 9:
            problems.append("monitorConfig.toleratedNumberOfFailures outside 0..9")
        return problems

    def _op_Profiles_CreateOrUpdate(self, req: Request, op: dict[str, Any], args: dict[str, str]) -> Reply:
        body = req.body
        problems = self._business_rules(body, args)
        if problems:
            return self.reject(req, problems)
        key = self._key(args)
        name = args["profileName"]
        pid = self._id(args, name)
        props = json.loads(json.dumps(body.get("properties", {})))
        dns = props.setdefault("dnsConfig", {})
        dns["fqdn"] = f"{dns.get('relativeName', name)}.trafficmanager.net"
        props.setdefault("monitorConfig", {})["profileMonitorStatus"] = "CheckingEndpoints"
        props["endpoints"] = [
            self._endpoint_out(pid, ep, i) for i, ep in enumerate(props.get("endpoints", []))
        ]
        out = {
            "id": pid,
            "name": name,
            "type": "Microsoft.Network/trafficManagerProfiles",
            "location": body.get("location", "global"),
            "tags": body.get("tags", {}),
            "properties": props,
        }
        created = key not in self.profiles
        with self.lock:
            self.profiles[key] = out
        return self._respond(op, 201 if created else 200, out)

    def _op_Profiles_Get(self, req: Request, op: dict[str, Any], args: dict[str, str]) -> Reply:
        prof = self.profiles.get(self._key(args))
        return self._respond(op, 200, prof) if prof else self._not_found(op, f"profile {args['profileName']}")

    def _op_Profiles_Delete(self, req: Request, op: dict[str, Any], args: dict[str, str]) -> Reply:
        with self.lock:
            gone = self.profiles.pop(self._key(args), None)
        return self._respond(op, 200, {}) if gone else self._respond(op, 204, None)

    def _op_Profiles_ListByResourceGroup(
        self, req: Request, op: dict[str, Any], args: dict[str, str]
    ) -> Reply:
        sub, rg = args["subscriptionId"], args["resourceGroupName"].lower()
        items = [p for (s, r, _n), p in sorted(self.profiles.items()) if (s, r) == (sub, rg)]
        return self._respond(op, 200, {"value": items})


def start() -> FakeTrafficManager:
    fake = FakeTrafficManager()
    fake.start()
    return fake
