"""The controller's evidence on disk, so that a restart continues where it stopped.

The writer saves its hysteresis evidence (per cloud: verdict, streaks, when the success
streak began) after every tick, atomically (a temporary file in the same directory,
fsync, rename), so a kill at any moment leaves the previous file or the new one whole:

    {"version": 1, "record": "api.example.com.", "saved_at": <epoch s>, "evidence": {cloud: {...}}}

On start the evidence is used when it is for the same record and fresh (saved within
`max_age_s`); a cloud inside its recovery hold-down then keeps its streak and returns when
the hold-down it already began has run, not at once. Stale or missing evidence is not
trusted, and the controller seeds itself from what the backends publish instead (see
`edgefabric.traffic.reconcile.absent_from_published`). A file in the older bare form
(`{cloud: {...}}`, from `--once --state-file`) is read too, its age taken from the file's
modification time.

Engine-free: never imports pulumi.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

VERSION = 1


@dataclass(frozen=True)
class Loaded:
    """What `load` found: the evidence (None when unusable) and why, for the log."""

    evidence: dict[str, dict[str, Any]] | None
    reason: str
    age_s: float | None = None


def save(path: Path, record: str, evidence: Mapping[str, Mapping[str, Any]], now: float) -> None:
    """Write the evidence to `path` atomically (never half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = json.dumps({"version": VERSION, "record": record, "saved_at": now, "evidence": evidence},
                      sort_keys=True, default=str)  # fmt: skip
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(body)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load(path: Path, record: str, max_age_s: float, now: float) -> Loaded:
    """The evidence saved in `path` for `record`, if fresh (saved at most `max_age_s` ago)."""
    try:
        text = path.read_text()
        mtime = path.stat().st_mtime
    except FileNotFoundError:
        return Loaded(None, "no state file")
    except OSError as exc:
        return Loaded(None, f"unreadable: {exc}")
    try:
        data = json.loads(text)
    except ValueError:
        return Loaded(None, "not JSON")
    if not isinstance(data, dict):
        return Loaded(None, "not a JSON object")
    if "version" in data:
        if data.get("record") != record:
            return Loaded(None, f"for another record ({data.get('record')!r})")
        saved_at, evidence = data.get("saved_at"), data.get("evidence")
    else:  # the bare form: {cloud: state}
        saved_at, evidence = mtime, data
    if not isinstance(evidence, dict) or not all(isinstance(v, dict) for v in evidence.values()):
        return Loaded(None, "no evidence in it")
    if not isinstance(saved_at, int | float):
        return Loaded(None, "no saved_at")
    age = now - float(saved_at)
    if age > max_age_s:
        return Loaded(None, f"stale: saved {age:.0f}s ago, more than {max_age_s:g}s", age)
    return Loaded({str(k): dict(v) for k, v in evidence.items()}, "fresh", age)
