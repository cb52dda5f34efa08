"""A controller killed and restarted while a cloud is down never puts it back in DNS.

Real PowerDNS, real loopback endpoints, the controller CLI killed with SIGKILL (no clean
stop, its lease left to expire). The restarted controller continues from its state file,
or, without one, starts from what PowerDNS publishes: the cloud that is absent there starts
down and serves its whole recovery (successThreshold + recoveryHoldDownS) before it returns.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from devenv.endpoints import LocalEndpoints
from devenv.powerdns import PowerDnsServer
from tests.integration.conftest import ZONE
from tests.integration.controller.kit import Ctl, Sampler, pdns_backend, seen, wait_for, write_stack

HOLD_DOWN_S = 4.0
INTERVAL_S = 0.5


@pytest.mark.parametrize("evidence", ["state-file", "published"])
def test_a_down_cloud_never_reappears_across_restarts(
    evidence: str, tmp_path: Path, pdns: PowerDnsServer, endpoints: LocalEndpoints
) -> None:
    record = f"restart-{evidence}.{ZONE}"
    write_stack(tmp_path, "restart", endpoints, record, pdns_backend(pdns, ZONE), HOLD_DOWN_S, INTERVAL_S)
    state = tmp_path / "ctl.state.json"
    args = ["--state-file", str(state), "--lease-file", str(tmp_path / "ctl.lease")]
    env = {"EDGEFABRIC_SECRET_POWERDNSAPIKEY": pdns.api_key}
    azure = endpoints.address("azure")

    def restart(old: Ctl, tag: str) -> Ctl:
        old.kill()
        if evidence == "published":
            state.unlink()  # nothing saved: the published answers are all it has
        return Ctl(tmp_path, "restart", args, env, tag)

    ctl = Ctl(tmp_path, "restart", args, env, "first")
    try:
        wait_for("all three clouds answered", lambda: len(seen(pdns, record)) == 3, 20)
        endpoints.stop("azure")
        wait_for("azure out of the answers", lambda: seen(pdns, record, 40)[azure] == 0, 10)
        with Sampler(pdns, record) as down:
            # 1. Killed and restarted while azure is down; azure then answers again.
            ctl = restart(ctl, "second")
            wait_for("the restarted controller applying", lambda: bool(ctl.events("lease_acquired")), 10)
            time.sleep(3 * INTERVAL_S)
            healed = time.monotonic()
            endpoints.start("azure")
            # 2. Killed again inside azure's recovery hold-down, and restarted.
            time.sleep(1.5)
            ctl = restart(ctl, "third")
            restarted = time.monotonic()
            wait_for("azure back after its recovery", lambda: bool(down.hits[azure]), 20)
        assert down.rounds > 100
        back = down.hits[azure][0]
        # Never served before its whole recovery: the hold-down counted from the first success
        # after healing (continued from the state file), or from the restart (seeded from DNS).
        floor = healed + HOLD_DOWN_S if evidence == "state-file" else restarted + HOLD_DOWN_S
        assert back >= floor - 0.1, f"azure answered {floor - back:.2f}s before its recovery was served"
        assert back <= floor + 3, f"azure came back {back - floor:.2f}s late"
        if evidence == "published":
            assert any(x["target"] == "azure" for x in ctl.events("seeded"))
        else:
            assert [x["used"] for x in ctl.events("restore")] == [True]
        other = [a for a in down.hits if a != azure]
        assert len(other) == 2 and all(down.hits[a] for a in other)  # never an empty answer either
    finally:
        endpoints.start("azure")
        ctl.stop()
