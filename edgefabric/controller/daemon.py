"""The continuous failover controller: probe -> plan -> apply, every interval.

    python -m edgefabric.controller.daemon --stack local [--once] [--interval 1] [--project-dir .]

Reads `Pulumi.<stack>.yaml` through the same typed models as `pulumi up`
(edgefabric.config.load_stack_file), so the record, thresholds, strategy,
routing rules and backends are exactly the deployed ones. Between deployments
this keeps failover working.

- Every tick probes each cloud once and feeds the hysteresis state machine;
  the plan is applied to every backend (idempotent: unchanged answers are not
  rewritten). One JSON object per line on stdout for each transition, each
  plan change, each backend error and each notification failure.
- Every failover, recovery and fail-open sends a notification to each
  configured channel (Slack webhook, PagerDuty Events v2, SMTP), off the loop.
- Never publishes an empty answer set: the planner always returns weights that
  sum to the scale, failing open to the configured weights when all are down.
- `--once`: one reconcile (probing up to failure_threshold rounds to reach a
  verdict, continuing from `--state-file` if given), then exit 0 if every
  backend applied, 1 if any failed, 2 on a configuration error (a
  `config_error` line listing every problem by key path).

The record is the one typed `FailoverSpec` the WeightedFailover resource
publishes (`FailoverSpec.from_config`). Secrets come from the environment only,
through the one resolver (`edgefabric.secrets`): `env:NAME` refs read NAME;
`config:KEY` refs read EDGEFABRIC_SECRET_<KEY>. Cloud ingress addresses come
from `--endpoint cloud=IP`, EDGEFABRIC_ENDPOINT_<CLOUD>, or the stack's
`clouds.<cloud>.ingress`, in that order.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TextIO

from edgefabric.config import StackConfig, load_stack_file
from edgefabric.controller.notify import EmailNotifier, Event, Notifier, PagerDutyNotifier, SlackNotifier
from edgefabric.errors import ConfigError
from edgefabric.secrets import resolve
from edgefabric.traffic.dns import build_backends
from edgefabric.traffic.health import HealthTracker, Transition
from edgefabric.traffic.reconcile import Reconciled, apply_plan, assess_health, probe_round
from edgefabric.traffic.spec import FailoverSpec

REPO_ROOT = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------ config


def ingress_addresses(cfg: StackConfig, overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """Each enabled cloud's ingress address: `--endpoint`, EDGEFABRIC_ENDPOINT_<CLOUD>, or
    `clouds.<cloud>.ingress.address`, first found."""
    addresses: dict[str, str] = {}
    for cloud in cfg.traffic_clouds:
        ingress = cfg.clouds.get(cloud).ingress
        variable = f"EDGEFABRIC_ENDPOINT_{cloud.upper()}"
        address = (overrides or {}).get(cloud) or os.environ.get(variable) or (ingress.address if ingress else None)
        if not address:
            raise ConfigError.one(f"clouds.{cloud}.ingress", None,
                                  f"an address for enabled cloud {cloud!r}: set the ingress, "
                                  f"--endpoint {cloud}=IP, or {variable}")
        addresses[cloud] = address
    return addresses


def failover_spec(cfg: StackConfig, overrides: Mapping[str, str] | None = None) -> FailoverSpec:
    """The record the stack's WeightedFailover publishes, with the addresses found here."""
    return FailoverSpec.from_config(cfg, ingress_addresses(cfg, overrides))


def notifiers_from_config(cfg: StackConfig) -> list[Notifier]:
    out: list[Notifier] = []
    for i, n in enumerate(cfg.failover.notifications):
        where = f"failover.notifications[{i}]"
        if n.type == "slack":
            out.append(SlackNotifier(resolve(n.url_ref, where + ".urlRef")))
        elif n.type == "pagerduty":
            out.append(PagerDutyNotifier(resolve(n.routing_key_ref, where + ".routingKeyRef"), n.events_url))
        elif n.type == "email":
            password = resolve(n.password_ref, where + ".passwordRef") if n.password_ref else None
            out.append(
                EmailNotifier(n.smtp_host, n.smtp_port, n.sender, list(n.recipients), n.starttls, n.username, password)
            )
    return out


# ------------------------------------------------------------------ logging


class JsonLog:
    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream if stream is not None else sys.stdout  # this moment's stdout, not import time's
        self._lock = threading.Lock()

    def __call__(self, event: str, **fields: Any) -> None:
        line = json.dumps({"ts": round(time.time(), 3), "event": event, **fields}, default=str, sort_keys=True)
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()


# ------------------------------------------------------------------ the loop


class Controller:
    def __init__(
        self,
        spec: FailoverSpec,
        notifiers: list[Notifier],
        log: Callable[..., None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.spec = spec
        self.notifiers = notifiers
        self.log = log
        self.tracker = HealthTracker(spec.thresholds, clock=clock)
        self.last_weights: dict[str, Any] | None = None
        self.fail_open = False
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="notify")

    # ---- notifications
    def _notify(self, event: Event) -> None:
        self.log("notify", kind=event.kind, target=event.target, summary=event.summary,
                 channels=[n.name for n in self.notifiers])  # fmt: skip
        for notifier in self.notifiers:
            self._pool.submit(self._send, notifier, event)

    def _send(self, notifier: Notifier, event: Event) -> None:
        try:
            notifier.send(event)
        except Exception as exc:
            self.log("notify_error", channel=notifier.name, kind=event.kind, error=str(exc))

    def _events(self, transitions: list[Transition], rec: Reconciled) -> None:
        weights = rec.plan.default
        for t in transitions:
            if t.to_healthy:
                summary = f"{self.spec.record_name} {t.target} recovered; weights now {weights}"
                self._notify(Event("recovery", self.spec.record_name, t.target, summary, "info",
                                   {"detail": t.detail, "weights": weights}))  # fmt: skip
            else:
                summary = f"{self.spec.record_name} {t.target} is DOWN; failover: weights now {weights}"
                self._notify(Event("failure", self.spec.record_name, t.target, summary, "critical",
                                   {"detail": t.detail, "weights": weights,
                                    "failover": self.spec.strategy.failover}))  # fmt: skip
        if rec.plan.fail_open and not self.fail_open:
            summary = f"{self.spec.record_name}: every cloud is unhealthy; failing open with configured weights {weights}"
            self._notify(Event("fail-open", self.spec.record_name, "*", summary, "critical",
                               {"weights": weights, "alerts": list(rec.plan.alerts)}))  # fmt: skip
        elif self.fail_open and not rec.plan.fail_open:
            self._notify(Event("fail-open-cleared", self.spec.record_name, "*",
                               f"{self.spec.record_name}: a cloud is healthy again; fail-open ended", "info",
                               {"weights": weights}))  # fmt: skip
        self.fail_open = rec.plan.fail_open

    # ---- one tick
    def _apply(self, transitions: list[Transition]) -> Reconciled:
        backends = build_backends(self.spec.backends)  # fresh clients per tick; secrets from env
        rec = apply_plan(self.spec, self.tracker, backends, transitions)
        for t in transitions:
            self.log("transition", target=t.target, to="healthy" if t.to_healthy else "unhealthy",
                     at=t.at, detail=t.detail)  # fmt: skip
        weights = rec.plan.weights()
        if weights != self.last_weights:
            self.log("plan", weights=weights, fail_open=rec.plan.fail_open, alerts=list(rec.plan.alerts),
                     health={c: s["healthy"] for c, s in rec.health.items()})  # fmt: skip
            self.last_weights = weights
        for o in rec.outcomes:
            if not o.ok:
                self.log("apply_error", backend=o.backend, error=o.error)
            elif o.changed:
                self.log("applied", backend=o.backend, record_ids=o.record_ids)
        self._events(transitions, rec)
        return rec

    def tick(self) -> Reconciled:
        return self._apply(probe_round(self.spec, self.tracker))

    def once(self, evidence: Mapping[str, Any] | None) -> Reconciled:
        before = {k: bool(v.get("healthy", True)) for k, v in (evidence or {}).items()}
        self.tracker = assess_health(self.spec, evidence)
        transitions = [
            Transition(c, st.healthy, st.last_transition_at or time.time(), st.last_detail)
            for c, st in self.tracker.states.items()
            if before.get(c, True) != st.healthy
        ]
        return self._apply(transitions)

    def run(self, interval_s: float, stop: threading.Event, max_ticks: int | None = None) -> None:
        """Tick every interval_s (fixed cadence, not sleep-after-work) until stop is set."""
        self.log("start", record=self.spec.record_name, interval_s=interval_s,
                 backends=self.spec.backends.names, clouds=sorted(self.spec.endpoints))  # fmt: skip
        started = time.monotonic()
        n = 0
        while not stop.is_set() and (max_ticks is None or n < max_ticks):
            try:
                self.tick()
            except Exception as exc:
                self.log("tick_error", error=f"{type(exc).__name__}: {exc}")
            n += 1
            next_at = started + n * interval_s
            stop.wait(max(0.0, next_at - time.monotonic()))
        self.close()

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.log("stop")


# ------------------------------------------------------------------ CLI


def _endpoint_args(values: list[str]) -> dict[str, str]:
    out = {}
    for v in values:
        cloud, _, address = v.partition("=")
        if not address:
            raise ConfigError.one("--endpoint", v, "cloud=IP, e.g. aws=203.0.113.10", namespace="")
        out[cloud] = address
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgefabric.controller.daemon", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", required=True, help="stack name: reads Pulumi.<stack>.yaml")
    parser.add_argument("--project-dir", type=Path, default=REPO_ROOT, help="directory holding the stack files")
    parser.add_argument("--once", action="store_true", help="one reconcile, then exit")
    parser.add_argument("--interval", type=float, default=None, help="seconds between ticks (default: healthCheck.intervalS)")
    parser.add_argument("--endpoint", action="append", default=[], help="cloud=IPv4 override, repeatable")
    parser.add_argument("--state-file", type=Path, default=None, help="persist hysteresis evidence (--once)")
    args = parser.parse_args(argv)
    log = JsonLog()
    try:
        stack_file = args.project_dir / f"Pulumi.{args.stack}.yaml"
        if not stack_file.exists():
            raise ConfigError.one("--stack", args.stack, f"a stack with a file; {stack_file} does not exist",
                                  namespace="")
        cfg = load_stack_file(stack_file)
        spec = failover_spec(cfg, _endpoint_args(args.endpoint))
        notifiers = notifiers_from_config(cfg)
        build_backends(spec.backends)  # resolve every secret now: fail fast with the ref's name
        if args.interval is not None and args.interval <= spec.timeout_s:
            raise ConfigError.one("--interval", args.interval, f"> healthCheck.timeoutS ({spec.timeout_s:g})",
                                  namespace="")
    except ConfigError as exc:
        log("config_error", error=str(exc), problems=exc.problems)
        return 2
    controller = Controller(spec, notifiers, log)
    if args.once:
        evidence = None
        if args.state_file and args.state_file.exists():
            evidence = json.loads(args.state_file.read_text())
        rec = controller.once(evidence)
        controller.close()
        if args.state_file:
            args.state_file.parent.mkdir(parents=True, exist_ok=True)
            args.state_file.write_text(json.dumps(rec.health))
        return 1 if rec.failed else 0
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    controller.run(args.interval or spec.interval_s, stop)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
