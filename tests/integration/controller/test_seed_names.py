"""Without evidence, a restarted controller reads every published name, not only the first.

Real PowerDNS and loopback endpoints; the controller CLI with `--once`. The first name fails
over by hand (`failover: manual`), so its answer serves every cloud whatever their health;
the second is automatic. A run with azure down takes azure out of the second name only;
azure answers again; a run with no state file must then start azure down from the second
name's answer and keep it out for its whole recovery.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from devenv.endpoints import LocalEndpoints
from devenv.powerdns import PowerDnsServer
from tests.integration.conftest import ZONE
from tests.integration.controller.kit import Ctl, pdns_backend, seen, write_stack

MANUAL, AUTO = f"seed-manual.{ZONE}", f"seed-auto.{ZONE}"


def _two_names(workdir: Path, stack: str) -> None:
    """The kit's one-name stack, turned into two names: MANUAL first, then AUTO."""
    path = workdir / f"Pulumi.{stack}.yaml"
    doc = yaml.safe_load(path.read_text())
    cfg = doc["config"]
    cfg["edgefabric:strategies"]["by-hand"] = {**cfg["edgefabric:strategies"]["api-gateway"], "failover": "manual"}
    dns = cfg["edgefabric:dns"]
    dns.pop("recordName")
    dns["records"] = [{"name": MANUAL, "strategy": "by-hand"}, {"name": AUTO, "strategy": "api-gateway"}]
    path.write_text(yaml.safe_dump(doc))


def _once(workdir: Path, stack: str, args: list[str], env: dict[str, str], tag: str) -> Ctl:
    ctl = Ctl(workdir, stack, ["--once", "--lease-file", str(workdir / "ctl.lease"), *args], env, tag)
    assert ctl.proc.wait(timeout=60) == 0, ctl.log_path.read_text()
    return ctl


def test_a_restart_without_evidence_reads_the_second_name(
    tmp_path: Path, pdns: PowerDnsServer, endpoints: LocalEndpoints
) -> None:
    # A long hold-down: the seeded cloud cannot serve its recovery within the run.
    write_stack(tmp_path, "seed", endpoints, MANUAL, pdns_backend(pdns, ZONE), hold_down_s=60, interval_s=0.5)
    _two_names(tmp_path, "seed")
    env = {"EDGEFABRIC_SECRET_POWERDNSAPIKEY": pdns.api_key}
    azure = endpoints.address("azure")
    try:
        endpoints.stop("azure")
        _once(tmp_path, "seed", [], env, "down")
        assert seen(pdns, AUTO, 30)[azure] == 0  # the automatic name dropped azure
        assert seen(pdns, MANUAL, 30)[azure] > 0  # the manual one never does
        endpoints.start("azure")
        # No state file: the published answers are the only evidence.
        ctl = _once(tmp_path, "seed", ["--state-file", str(tmp_path / "none.state.json")], env, "restarted")
        seeded = ctl.events("seeded")
        assert [(x["target"], x["reason"]) for x in seeded] == [
            ("azure", f"absent from powerdns's default answer for {AUTO}")]
        assert seen(pdns, AUTO, 30)[azure] == 0  # still inside its recovery: not served again
        assert seen(pdns, MANUAL, 30)[azure] > 0
    finally:
        endpoints.start("azure")
