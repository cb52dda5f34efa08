"""The systemd unit of a native edge service: a DynamicUser that gets its secret files as
credentials and writes only to its state directory; and systemd itself (`systemd-analyze
verify`) reads every directive of it without a warning."""

from __future__ import annotations

import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

from edgefabric.config import EdgeService
from edgefabric.tiers.edge_sites import credentials_dir, systemd_unit, unit_name

BROKER = EdgeService.model_validate({
    "name": "sensor-ingest", "kind": "sensor-ingest", "image": "eclipse-mosquitto:2.0.20",
    "requirements": {"cpu": 0.25, "memoryMb": 128, "storageMb": 256},
    "ports": [{"name": "mqtt", "port": 1883, "protocol": "mqtt"}],
    # Debian's mosquitto (scripts/bootstrap.sh mqtt): verify checks that ExecStart exists.
    "execStart": "/usr/sbin/mosquitto -c /etc/edgefabric/mqtt/sensor-ingest/config/mosquitto.conf",
})  # fmt: skip
# A stand-in command: what matters here is the unit around it.
CACHE = BROKER.model_copy(update={"name": "local-cache", "kind": "local-cache", "exec_start": "/bin/sleep infinity"})


def directives(unit: str) -> dict[str, list[str]]:
    """`Section.Key` -> its values in order (a key may repeat)."""
    out: dict[str, list[str]] = defaultdict(list)
    section = ""
    for line in unit.splitlines():
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            out[f"{section}.{key}"].append(value)
    return dict(out)


def test_a_dynamic_user_gets_its_keys_as_credentials_and_writes_to_its_state_directory() -> None:
    unit = directives(systemd_unit(BROKER, "staging", "wind-farm-north-sea"))
    assert unit["Service.DynamicUser"] == ["yes"]
    # Every file of the root-only directory (the broker's keys and certificates) is copied to
    # the unit's own credentials directory at each start, under its own name.
    assert unit["Service.LoadCredential"] == ["sensor-ingest:/etc/edgefabric/credentials/sensor-ingest"]
    assert credentials_dir("sensor-ingest") == f"/run/credentials/{unit_name('sensor-ingest')}"
    # /var/lib/edgefabric/sensor-ingest, chowned to the dynamic uid; persistence and relative
    # writes (redis' `dir ./`) land there.
    assert unit["Service.StateDirectory"] == ["edgefabric/sensor-ingest"]
    assert unit["Service.StateDirectoryMode"] == ["0700"]
    assert unit["Service.WorkingDirectory"] == ["/var/lib/edgefabric/sensor-ingest"]


def test_two_services_of_a_site_share_neither_credentials_nor_state() -> None:
    broker = directives(systemd_unit(BROKER, "staging", "wind-farm-north-sea"))
    cache = directives(systemd_unit(CACHE, "staging", "wind-farm-north-sea"))
    for key in ("Service.LoadCredential", "Service.StateDirectory", "Service.WorkingDirectory"):
        assert broker[key] != cache[key], key
    assert cache["Service.StateDirectory"] == ["edgefabric/local-cache"]


def test_systemd_reads_every_directive(tmp_path: Path) -> None:
    exe = shutil.which("systemd-analyze")
    assert exe, "systemd-analyze is missing: scripts/bootstrap.sh mqtt installs it"
    for svc in (BROKER, CACHE):
        path = tmp_path / unit_name(svc.name)
        path.write_text(systemd_unit(svc, "staging", "wind-farm-north-sea"))
        proc = subprocess.run([exe, "verify", str(path)], capture_output=True, text=True, timeout=60)
        # verify warns (and still exits 0) on an unknown key or an invalid value: no output at all.
        assert proc.returncode == 0 and not proc.stderr.strip() and not proc.stdout.strip(), proc.stderr


def test_verify_does_catch_a_bad_credential_source(tmp_path: Path) -> None:
    """The check above can fail: a relative LoadCredential source is reported."""
    exe = shutil.which("systemd-analyze")
    assert exe
    bad = systemd_unit(BROKER, "staging", "wind-farm-north-sea").replace(
        "LoadCredential=sensor-ingest:/etc", "LoadCredential=sensor-ingest:etc")
    path = tmp_path / unit_name(BROKER.name)
    path.write_text(bad)
    proc = subprocess.run([exe, "verify", str(path)], capture_output=True, text=True, timeout=60)
    assert "Credential source" in proc.stderr, proc.stderr
