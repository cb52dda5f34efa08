"""The pack as the engine runs it: its entry point serving gRPC, its configs, its metadata."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import jsonschema
import pytest
import yaml
from google.protobuf import empty_pb2, json_format, struct_pb2
from pulumi.runtime import proto
from pulumi.runtime.proto import analyzer_pb2_grpc

from policies.rules import ALL_POLICIES
from policies.rules.runtime import secret

ROOT = Path(__file__).resolve().parents[2]
PACK = ROOT / "policies"
CONFIGS = {p.stem: json.loads(p.read_text()) for p in (PACK / "config").glob("*.json")}


@pytest.fixture(scope="module")
def analyzer() -> Iterator[analyzer_pb2_grpc.AnalyzerStub]:
    """policies/__main__.py started the way the language host starts it: it prints its port."""
    proc = subprocess.Popen([sys.executable, "__main__.py"], cwd=PACK, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        if not line.strip().isdigit():
            proc.kill()
            raise AssertionError(f"policy pack did not start: {line!r} {proc.communicate()[1]}")
        channel = grpc.insecure_channel(f"127.0.0.1:{line.strip()}")
        grpc.channel_ready_future(channel).result(timeout=20)
        yield analyzer_pb2_grpc.AnalyzerStub(channel)
        channel.close()
    finally:
        proc.kill()
        proc.wait(timeout=10)


def _struct(props: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    json_format.ParseDict(props, s)
    return s


def _analyze(stub: analyzer_pb2_grpc.AnalyzerStub, typ: str, props: dict[str, Any]) -> list[Any]:
    req = proto.AnalyzeRequest(type=typ, properties=_struct(props), urn=f"urn:pulumi:t::edgefabric::{typ}::r",
                               name="r")
    return list(stub.Analyze(req).diagnostics)


def test_pack_serves_every_policy(analyzer: analyzer_pb2_grpc.AnalyzerStub) -> None:
    info = analyzer.GetAnalyzerInfo(empty_pb2.Empty())
    assert info.name == "edgefabric"
    assert {p.name for p in info.policies} == {p.name for p in ALL_POLICIES}
    assert all(p.remediation_steps for p in info.policies)


def test_pack_keeps_secretness_for_the_secrets_policy(analyzer: analyzer_pb2_grpc.AnalyzerStub) -> None:
    typ = "command:remote:Command"
    plain = _analyze(analyzer, typ, {"connection": {"host": "h", "password": "hunter2"}})
    assert [d.policyName for d in plain] == ["no-plaintext-secrets"]
    assert "connection.password looks like a credential and is a plain value" in plain[0].message
    wrapped = _analyze(analyzer, typ, {"connection": {"host": "h", "password": secret("hunter2")}})
    assert wrapped == []


def test_pack_reports_at_configured_level(analyzer: analyzer_pb2_grpc.AnalyzerStub) -> None:
    """The levels in a config file reach the diagnostics (Configure is what the CLI calls)."""
    config = CONFIGS["prod"]
    request = proto.ConfigureAnalyzerRequest()
    for policy in ALL_POLICIES:
        entry = config.get(policy.name, config["all"])
        level = entry if isinstance(entry, str) else entry.get("enforcementLevel", config["all"])
        pc = request.policyConfig[policy.name]
        pc.enforcementLevel = {"advisory": proto.ADVISORY, "mandatory": proto.MANDATORY,
                               "disabled": proto.DISABLED}[level]
        if isinstance(entry, dict):
            pc.properties.update({k: v for k, v in entry.items() if k != "enforcementLevel"})
    analyzer.Configure(request)
    diags = _analyze(analyzer, "aws:ec2/vpc:Vpc", {"tags": {"environment": "prod"}})
    assert [(d.policyName, d.enforcementLevel) for d in diags] == [("required-labels", proto.MANDATORY)]


def test_policy_metadata() -> None:
    names = [p.name for p in ALL_POLICIES]
    assert len(names) == len(set(names))
    for p in ALL_POLICIES:
        assert p.description.endswith("."), p.name
        assert p.remediation_steps and len(p.remediation_steps) > 20, p.name


def test_policy_pack_yaml() -> None:
    doc = yaml.safe_load((PACK / "PulumiPolicy.yaml").read_text())
    assert doc["runtime"]["name"] == "python"
    assert (PACK / doc["runtime"]["options"]["virtualenv"] / "bin" / "python").exists()


@pytest.mark.parametrize("env", ["local", "dev", "staging", "prod"])
def test_policy_config_files(env: str) -> None:
    config = CONFIGS[env]
    by_name = {p.name: p for p in ALL_POLICIES}
    assert config["all"] == ("advisory" if env in ("local", "dev") else "mandatory")
    for key, entry in config.items():
        if key == "all":
            continue
        assert key in by_name, f"{env}.json names unknown policy {key!r}"
        if isinstance(entry, dict):
            props = {k: v for k, v in entry.items() if k != "enforcementLevel"}
            schema = by_name[key].config_schema
            assert schema is not None or not props, f"{key} takes no properties"
            if props:
                jsonschema.validate(props, {"type": "object", "properties": schema.properties,
                                            "additionalProperties": False})


def test_mandatory_outside_dev_only() -> None:
    def level(env: str, name: str) -> str:
        entry = CONFIGS[env].get(name, CONFIGS[env]["all"])
        return entry if isinstance(entry, str) else entry.get("enforcementLevel", CONFIGS[env]["all"])

    for p in ALL_POLICIES:
        assert level("dev", p.name) in ("advisory", "disabled")
        assert level("local", p.name) in ("advisory", "disabled")
        assert level("prod", p.name) == "mandatory", p.name
    # Prod-only requirement: staging is told, not blocked.
    assert level("staging", "cluster-endpoint-restricted") == "advisory"
