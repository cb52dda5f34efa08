"""End to end: three local endpoints behind a real PowerDNS, the controller CLI
running at a 1 s interval with threshold 3, notifications to local receivers.

stop one  -> its share drops to 0 in DNS answers;
restart   -> the share returns, but only after the recovery hold-down;
stop all  -> answers keep the configured weights (fail open) and an alert is sent.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import dns.resolver
import pytest
import yaml

from devenv.endpoints import LocalEndpoints
from devenv.powerdns import PowerDnsServer
from tests.integration.conftest import ZONE, resolver_for
from tests.kits.receivers import SmtpReceiver, WebhookReceiver

REPO = Path(__file__).resolve().parents[3]
RECORD = "scenario." + ZONE
HOLD_DOWN_S = 4.0


def stack_file(dirpath: Path, eps: LocalEndpoints, pdns: PowerDnsServer, hooks: str, smtp_port: int) -> None:
    cfg = {
        "environment": "scenario",
        "clouds": {c: {"enabled": True, "ingress": {"address": eps.address(c)}} for c in ("aws", "azure", "gcp")},
        "strategies": {
            "api-gateway": {"primary": "aws", "secondary": "azure", "tertiary": "gcp",
                            "replication": "active-active", "failover": "automatic"},
        },
        "routing": {"rules": [], "defaultWeight": 50},
        "healthCheck": {"intervalS": 1, "timeoutS": 0.5, "failureThreshold": 3, "successThreshold": 2,
                        "recoveryHoldDownS": HOLD_DOWN_S,
                        "check": {"type": "http", "path": "/health", "expectedStatus": 200, "port": eps.port}},
        "failover": {"notifications": [
            {"type": "slack", "urlRef": "env:SCENARIO_SLACK_URL"},
            {"type": "pagerduty", "routingKeyRef": "env:SCENARIO_PD_KEY", "eventsUrl": hooks + "/pd"},
            {"type": "email", "smtpHost": "127.0.0.1", "smtpPort": smtp_port, "starttls": False,
             "sender": "failover@edgefabric.test", "recipients": ["oncall@edgefabric.test"]},
        ]},
        "dns": {"recordName": RECORD, "ttl": 1, "strategy": "api-gateway",
                "backends": {"powerdns": {"apiUrl": pdns.api_url, "apiKeyRef": "config:powerdnsApiKey",
                                          "zone": ZONE}}},
    }  # fmt: skip
    doc = {"config": {f"edgefabric:{k}": v for k, v in cfg.items()}}
    (dirpath / "Pulumi.scenario.yaml").write_text(yaml.safe_dump(doc))


@pytest.fixture
def receivers() -> Iterator[tuple[WebhookReceiver, SmtpReceiver]]:
    hooks, smtp = WebhookReceiver(), SmtpReceiver()
    yield hooks, smtp
    hooks.stop()
    smtp.stop()


def sample(pdns: PowerDnsServer, n: int = 60) -> collections.Counter[str]:
    r = resolver_for(pdns)
    counts: collections.Counter[str] = collections.Counter()
    for _ in range(n):
        answer = r.resolve(RECORD, "A")
        assert len(answer) > 0, "empty answer set published"
        counts.update(a.address for a in answer)
    return counts


def wait_for(what: str, cond: Callable[[], bool], timeout_s: float, step_s: float = 0.2) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if cond():
            return time.monotonic() - started
        time.sleep(step_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for: {what}")


def test_failover_scenario(
    tmp_path: Path, pdns: PowerDnsServer, endpoints: LocalEndpoints, receivers: tuple[WebhookReceiver, SmtpReceiver]
) -> None:
    hooks, smtp = receivers
    stack_file(tmp_path, endpoints, pdns, hooks.url, smtp.port)
    env = dict(os.environ, PYTHONPATH=str(REPO), SCENARIO_SLACK_URL=hooks.url + "/slack",
               SCENARIO_PD_KEY="pd-routing-key", EDGEFABRIC_SECRET_POWERDNSAPIKEY=pdns.api_key)  # fmt: skip
    log_path = tmp_path / "controller.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edgefabric.controller.daemon", "--stack", "scenario", "--project-dir", str(tmp_path),
             "--interval", "1"],
            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,  # its state and lease under tmp_path
        )  # fmt: skip
    ip = {c: endpoints.address(c) for c in endpoints.clouds()}
    try:
        # 1. Everyone healthy: the configured 50/25/25.
        def published() -> bool:
            try:
                return all(sample(pdns, 40)[ip[c]] > 0 for c in ip)
            except dns.resolver.NXDOMAIN:  # the controller has not written the record yet
                return False

        wait_for("initial answer with all clouds", published, 15)

        # 2. Stop azure: its share drops to 0 (3 failures at 1 s + apply).
        endpoints.stop("azure")
        wait_for("azure gone from answers", lambda: sample(pdns, 60)[ip["azure"]] == 0, 15)
        # route-to-secondary (the default action) hands azure's 25 to the next healthy cloud in
        # priority order, gcp: aws and gcp now share 50/50 (a 300-answer sample of a fair split
        # stays within 35-65 % by more than 5 standard deviations).
        counts = sample(pdns, 300)
        assert counts[ip["azure"]] == 0, counts
        assert all(105 <= counts[ip[c]] <= 195 for c in ("aws", "gcp")), counts

        # 3. Restart azure: back only after the hold-down (and 2 successes).
        restarted = time.monotonic()
        endpoints.start("azure")
        wait_for("azure back in answers", lambda: sample(pdns, 40)[ip["azure"]] > 0, 20)
        back_after = time.monotonic() - restarted
        assert back_after >= HOLD_DOWN_S, f"azure returned after {back_after:.1f}s < hold-down {HOLD_DOWN_S}s"

        # 4. Stop all: fail open (configured weights, never empty) + alert to the webhook receiver.
        for cloud in ip:
            endpoints.stop(cloud)
        wait_for("fail-open alert", lambda: any(
            b.get("edgefabric", {}).get("kind") == "fail-open" for b in hooks.bodies("/slack")), 15)  # fmt: skip
        counts = sample(pdns, 200)
        assert all(counts[ip[c]] > 0 for c in ip), counts
        assert counts[ip["aws"]] > counts[ip["azure"]] and counts[ip["aws"]] > counts[ip["gcp"]]
    finally:
        proc.terminate()
        rc = proc.wait(timeout=15)
    lines = [json.loads(x) for x in log_path.read_text().splitlines() if x.startswith("{")]
    assert rc == 0, log_path.read_text()[-2000:]
    transitions = [(x["target"], x["to"]) for x in lines if x["event"] == "transition"]
    assert transitions[:2] == [("azure", "unhealthy"), ("azure", "healthy")]
    assert {("aws", "unhealthy"), ("gcp", "unhealthy")} <= set(transitions)
    slack = [b["edgefabric"]["kind"] for b in hooks.bodies("/slack")]
    assert slack[:2] == ["failure", "recovery"] and "fail-open" in slack
    pd = hooks.bodies("/pd")
    assert pd[0]["event_action"] == "trigger" and pd[0]["routing_key"] == "pd-routing-key"
    assert pd[0]["payload"]["severity"] == "critical" and pd[0]["payload"]["component"] == "azure"
    assert pd[1]["event_action"] == "resolve" and pd[1]["dedup_key"] == pd[0]["dedup_key"]
    assert any("Subject: [edgefabric]" in m and "azure is DOWN" in m for m in smtp.messages)
    # The api key never shows up in the controller's logs.
    assert pdns.api_key not in log_path.read_text()


def test_controller_once_exit_codes(tmp_path: Path, pdns: PowerDnsServer, endpoints: LocalEndpoints) -> None:
    hooks, smtp = WebhookReceiver(), SmtpReceiver()
    try:
        stack_file(tmp_path, endpoints, pdns, hooks.url, smtp.port)
        base = [sys.executable, "-m", "edgefabric.controller.daemon", "--stack", "scenario", "--project-dir", str(tmp_path),
                "--once"]  # fmt: skip
        env = dict(os.environ, PYTHONPATH=str(REPO), SCENARIO_SLACK_URL=hooks.url + "/slack", SCENARIO_PD_KEY="k")
        # Secret missing: configuration error naming the reference, exit 2.
        res = subprocess.run(base, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
        assert res.returncode == 2 and "config:powerdnsApiKey" in res.stdout and "EDGEFABRIC_SECRET_POWERDNSAPIKEY" in res.stdout
        env["EDGEFABRIC_SECRET_POWERDNSAPIKEY"] = pdns.api_key
        state = tmp_path / "state.json"
        res = subprocess.run([*base, "--state-file", str(state)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stdout + res.stderr
        saved = json.loads(state.read_text())
        assert saved["record"] == RECORD and saved["evidence"]["aws"]["healthy"] is True
        # A backend that cannot be reached: exit 1 with a per-backend error line.
        env["EDGEFABRIC_SECRET_POWERDNSAPIKEY"] = "wrong-key"
        res = subprocess.run(base, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
        assert res.returncode == 1
        assert any(json.loads(x)["event"] == "apply_error" for x in res.stdout.splitlines() if x.startswith("{"))
    finally:
        hooks.stop()
        smtp.stop()
