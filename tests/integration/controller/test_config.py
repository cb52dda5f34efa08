"""The controller's configuration: the same typed FailoverSpec as `pulumi up`, addresses in a
fixed order of precedence, and every user mistake a ConfigError (exit 2) naming its key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgefabric.config import load_stack_file
from edgefabric.controller.daemon import failover_spec, ingress_addresses, main, notifiers_from_config
from edgefabric.errors import ConfigError
from edgefabric.traffic.spec import FailoverSpec

ROOT = Path(__file__).resolve().parents[3]


def write_stack(dirpath: Path, **over: Any) -> Path:
    cfg: dict[str, Any] = {
        "environment": "ctl",
        "clouds": {"aws": {"enabled": True, "ingress": {"address": "127.0.1.1"}},
                   "azure": {"enabled": True, "ingress": {"address": "127.0.1.2"}}},
        "strategies": {"api-gateway": {"primary": "aws", "secondary": "azure"}},
        "healthCheck": {"intervalS": 1, "timeoutS": 0.5},
        "failover": {"notifications": [{"type": "slack", "urlRef": "env:CTL_TEST_SLACK"}]},
        "dns": {"recordName": "ctl.edgefabric.test.", "backends": {"powerdns": {
            "apiUrl": "http://127.0.0.1:9", "apiKeyRef": "config:ctlKey", "zone": "edgefabric.test."}}},
        **over,
    }  # fmt: skip
    path = dirpath / "Pulumi.ctl.yaml"
    path.write_text(yaml.safe_dump({"config": {f"edgefabric:{k}": v for k, v in cfg.items()}}))
    return path


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("EDGEFABRIC_ENDPOINT_AWS", "EDGEFABRIC_ENDPOINT_AZURE", "EDGEFABRIC_SECRET_CTLKEY", "CTL_TEST_SLACK"):
        monkeypatch.delenv(name, raising=False)


def test_addresses_come_from_the_flag_then_the_environment_then_the_ingress(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = load_stack_file(write_stack(tmp_path))
    assert ingress_addresses(cfg) == {"aws": "127.0.1.1", "azure": "127.0.1.2"}
    monkeypatch.setenv("EDGEFABRIC_ENDPOINT_AWS", "127.0.2.1")
    assert ingress_addresses(cfg) == {"aws": "127.0.2.1", "azure": "127.0.1.2"}
    assert ingress_addresses(cfg, {"aws": "127.0.3.1"}) == {"aws": "127.0.3.1", "azure": "127.0.1.2"}


def test_the_controller_publishes_what_the_resource_publishes(tmp_path: Path) -> None:
    cfg = load_stack_file(write_stack(tmp_path))
    spec = failover_spec(cfg)
    assert spec == FailoverSpec.from_config(cfg, {"aws": "127.0.1.1", "azure": "127.0.1.2"})
    assert FailoverSpec.from_inputs(spec.to_inputs()) == spec


def test_a_cloud_without_an_address_names_its_ingress_key(tmp_path: Path) -> None:
    # aws's core is provisioned by the stack: its address is an output the controller cannot read.
    clouds = {"aws": {"enabled": True}, "azure": {"enabled": True, "ingress": {"address": "127.0.1.2"}}}
    cfg = load_stack_file(write_stack(tmp_path, clouds=clouds, core={"clusters": {"aws": {"machineType": "m7i.large", "apiAccess": "runner"}}}))
    with pytest.raises(ConfigError, match=r"edgefabric:clouds\.aws\.ingress = None: .*EDGEFABRIC_ENDPOINT_AWS"):
        ingress_addresses(cfg)


def test_notification_secrets_go_through_the_one_resolver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_stack_file(write_stack(tmp_path))
    with pytest.raises(ConfigError, match=r"edgefabric:failover\.notifications\[0\]\.urlRef = 'env:CTL_TEST_SLACK'"):
        notifiers_from_config(cfg)
    monkeypatch.setenv("CTL_TEST_SLACK", "http://127.0.0.1:9/hook")
    (slack,) = notifiers_from_config(cfg)
    assert slack.name == "slack" and "127.0.0.1:9/hook" not in repr(slack)


@pytest.mark.parametrize(("argv", "problem"), [
    (["--stack", "nope"], "--stack = 'nope': a stack with a file"),
    (["--stack", "ctl", "--endpoint", "aws"], "--endpoint = 'aws': cloud=IP"),
    (["--stack", "ctl", "--endpoint", "aws=not-an-ip"], "WeightedFailover:endpoints.aws.address = 'not-an-ip'"),
    (["--stack", "ctl"], "edgefabric:dns.backends.powerdns.apiKeyRef = 'config:ctlKey'"),
    (["--stack", "ctl", "--interval", "0.5"], "--interval = 0.5: > healthCheck.timeoutS (0.5)"),
])
def test_user_mistakes_exit_2_with_every_problem_by_key(
    argv: list[str], problem: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    write_stack(tmp_path)
    monkeypatch.setenv("CTL_TEST_SLACK", "http://127.0.0.1:9/hook")
    if "--interval" in argv:
        monkeypatch.setenv("EDGEFABRIC_SECRET_CTLKEY", "k")
    assert main([*argv, "--project-dir", str(tmp_path), "--once"]) == 2
    (line,) = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert line["event"] == "config_error"
    assert [p for p in line["problems"] if p.startswith(problem)], line["problems"]
