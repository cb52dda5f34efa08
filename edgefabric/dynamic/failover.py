"""WeightedFailover: a Pulumi dynamic resource publishing health-weighted answers.

Type token: `pulumi-python:dynamic/failover:WeightedFailover`.

Inputs (snake_case keys; see `WeightedFailoverArgs`): record_name, ttl,
endpoints (cloud -> {address, health_url?}), health_check, strategy
({order, replication, failover}), routing ({rules, default_weight}), backends
(name -> settings with secret *references*), health_check_ids (cloud -> Route53
id), secrets (ref -> value, a Pulumi secret; optional), provider_version.

Lifecycle
- create/update: probe (continuing the stored hysteresis evidence), plan,
  apply to every backend. A backend failure fails the operation with a
  per-backend report; backends that succeeded keep their new answer and the
  next `up` converges the rest (apply is idempotent).
- diff: re-probes, so a health change is a weight change in `pulumi preview`;
  an unchanged world and unchanged inputs give no diff. Only `record_name`
  forces a replacement (the answer set moves to another name).
- read: reads what each backend actually publishes into `published`, so
  `pulumi refresh` shows out-of-band edits and backends that disagree; the
  next diff then reports a change and `up` re-applies.
- delete: removes the records from every backend; already gone is fine.

Nothing is captured on the provider object: clients and credentials are built
inside each method (the object is pickled into state with dill).
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from typing import Any

import pulumi
from pulumi.dynamic import (
    CheckFailure,
    CheckResult,
    CreateResult,
    DiffResult,
    ReadResult,
    ResourceProvider,
    UpdateResult,
)
from pulumi.runtime.rpc import UNKNOWN as _UNKNOWN  # preview sentinel for unknown values

from edgefabric.traffic.reconcile import (
    FailoverSpec,
    Reconciled,
    apply_plan,
    assess_health,
    build_backends,
    expected_published,
    normalise_published,
    plan_from_health,
    read_published,
)

PROVIDER_VERSION = "1"
# Inputs that describe the world; everything else in the outputs is observed state.
INPUT_KEYS = (
    "record_name",
    "ttl",
    "endpoints",
    "health_check",
    "strategy",
    "routing",
    "backends",
    "health_check_ids",
    "probe_round_gap_s",
    "provider_version",
)
REPLACE_KEYS = ("record_name",)
SECRET_OUTPUTS = ["secrets"]


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _unknown(value: Any) -> bool:
    if isinstance(value, dict):
        return any(_unknown(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_unknown(v) for v in value)
    return value == _UNKNOWN


def pulumi_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): pulumi_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [pulumi_safe(v) for v in value]
    return value


class WeightedFailoverProvider(ResourceProvider):
    """Stateless: every method builds what it needs from its arguments."""

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        if _unknown({k: news.get(k) for k in INPUT_KEYS}):
            return CheckResult(news, [])
        try:
            FailoverSpec.from_props(news)
        except ValueError as exc:
            key = str(exc).split(":", 1)[0].split(".", 1)[0]
            return CheckResult(news, [CheckFailure(key if key in INPUT_KEYS else "record_name", str(exc))])
        return CheckResult(news, [])

    # ---- helpers
    def _reconcile(self, props: dict[str, Any], evidence: Any) -> Reconciled:
        spec = FailoverSpec.from_props(props)
        tracker = assess_health(spec, evidence)
        backends = build_backends(spec, props.get("secrets"))
        return apply_plan(spec, tracker, backends, [])

    def _outputs(self, props: dict[str, Any], rec: Reconciled, last_change: str) -> dict[str, Any]:
        outs = {k: props.get(k) for k in INPUT_KEYS if k in props}
        if props.get("secrets"):
            outs["secrets"] = props["secrets"]  # listed in additional_secret_outputs: encrypted in state
        outs.update(
            plan=rec.plan.to_dict(),
            health=rec.health,
            record_ids={o.backend: o.record_ids for o in rec.outcomes},
            backend_status={o.backend: ("ok" if o.ok else o.error) for o in rec.outcomes},
            last_change_at=last_change,
            fail_open=rec.plan.fail_open,
            alerts=list(rec.plan.alerts),
        )
        return pulumi_safe(outs)

    @staticmethod
    def _raise_failures(rec: Reconciled, what: str) -> None:
        if rec.failed:
            report = "; ".join(f"{o.backend}: {o.error}" for o in rec.failed)
            ok = [o.backend for o in rec.outcomes if o.ok]
            raise RuntimeError(
                f"WeightedFailover {what}: backends failed ({report}); applied: {ok or 'none'}"
            )

    # ---- CRUD
    def create(self, props: dict[str, Any]) -> CreateResult:
        rec = self._reconcile(props, None)
        self._raise_failures(rec, "create")
        return CreateResult(id_=str(props["record_name"]), outs=self._outputs(props, rec, _now()))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        old_inputs = {k: olds.get(k) for k in INPUT_KEYS}
        new_inputs = {k: news.get(k) for k in INPUT_KEYS}
        replaces = [k for k in REPLACE_KEYS if old_inputs[k] != new_inputs[k]]
        changed_inputs = [k for k in INPUT_KEYS if old_inputs[k] != new_inputs[k]]
        if _unknown(new_inputs):
            # Preview with values not known yet: it will change; only known differences replace.
            return DiffResult(changes=True, replaces=[k for k in replaces if not _unknown(new_inputs[k])],
                              delete_before_replace=False)  # fmt: skip
        if changed_inputs:
            return DiffResult(changes=True, replaces=replaces, delete_before_replace=False)
        # Same inputs: has the world moved? Re-probe from the stored evidence.
        spec = FailoverSpec.from_props(news)
        tracker = assess_health(spec, olds.get("health"))
        if plan_from_health(spec, tracker).to_dict() != olds.get("plan"):
            return DiffResult(changes=True, replaces=[], delete_before_replace=False)
        # Drift recorded by the last refresh (`read`): published != what we applied.
        published = olds.get("published")
        if isinstance(published, dict):
            backends = build_backends(spec, news.get("secrets"))
            want = expected_published(spec, lambda s: plan_from_health(spec, tracker, s), backends)
            for name, got in published.items():
                if normalise_published(got) != normalise_published(want.get(name)):
                    return DiffResult(changes=True, replaces=[], delete_before_replace=False)
        return DiffResult(changes=False, replaces=[], delete_before_replace=False)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        rec = self._reconcile(news, olds.get("health"))
        # Backends dropped from the inputs: remove what we published there (old settings/secrets).
        removed = [b for b in (olds.get("backends") or {}) if b not in (news.get("backends") or {})]
        if removed:
            old_spec = FailoverSpec.from_props(olds)
            for backend in build_backends(old_spec, olds.get("secrets"), only=removed):
                backend.delete(old_spec.record_spec())
        self._raise_failures(rec, "update")
        changed = rec.changed or bool(removed) or rec.plan.to_dict() != olds.get("plan")
        last = _now() if changed else str(olds.get("last_change_at") or _now())
        return UpdateResult(outs=self._outputs(news, rec, last))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        spec = FailoverSpec.from_props(props)
        backends = build_backends(spec, props.get("secrets"))
        published = {k: normalise_published(v) for k, v in read_published(spec, backends).items()}
        outs = dict(props)
        outs["published"] = published
        return ReadResult(id_=id_, outs=pulumi_safe(outs))

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        spec = FailoverSpec.from_props(props)
        errors = []
        for backend in build_backends(spec, props.get("secrets")):
            try:
                backend.delete(spec.record_spec())
            except Exception as exc:
                errors.append(f"{backend.name}: {exc}")
        if errors:
            raise RuntimeError("WeightedFailover delete: " + "; ".join(errors))


@dataclass
class WeightedFailoverArgs:
    """Inputs of WeightedFailover (all accept pulumi Inputs)."""

    record_name: pulumi.Input[str]
    ttl: pulumi.Input[int]
    endpoints: pulumi.Input[dict[str, Any]]
    health_check: pulumi.Input[dict[str, Any]]
    strategy: pulumi.Input[dict[str, Any]]
    routing: pulumi.Input[dict[str, Any]]
    backends: pulumi.Input[dict[str, Any]]
    health_check_ids: pulumi.Input[dict[str, str]] | None = None
    secrets: pulumi.Input[dict[str, str]] | None = None
    probe_round_gap_s: pulumi.Input[float] | None = None
    provider_version: str = PROVIDER_VERSION


class WeightedFailover(pulumi.dynamic.Resource, module="failover", name="WeightedFailover"):
    """Health-weighted DNS answers across clouds, written to every backend."""

    plan: pulumi.Output[dict[str, Any]]
    health: pulumi.Output[dict[str, Any]]
    record_ids: pulumi.Output[dict[str, list[str]]]
    backend_status: pulumi.Output[dict[str, str]]
    last_change_at: pulumi.Output[str]
    published: pulumi.Output[dict[str, Any]]
    fail_open: pulumi.Output[bool]
    alerts: pulumi.Output[list[str]]

    def __init__(
        self, name: str, args: WeightedFailoverArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        props: dict[str, Any] = {
            "record_name": args.record_name,
            "ttl": args.ttl,
            "endpoints": args.endpoints,
            "health_check": args.health_check,
            "strategy": args.strategy,
            "routing": args.routing,
            "backends": args.backends,
            "health_check_ids": args.health_check_ids or {},
            "probe_round_gap_s": args.probe_round_gap_s,
            "provider_version": args.provider_version,
            "secrets": pulumi.Output.secret(args.secrets) if args.secrets is not None else None,
            # Declared so the engine knows these outputs exist before create.
            "plan": None,
            "health": None,
            "record_ids": None,
            "backend_status": None,
            "last_change_at": None,
            "published": None,
            "fail_open": None,
            "alerts": None,
        }
        opts = pulumi.ResourceOptions.merge(
            opts, pulumi.ResourceOptions(additional_secret_outputs=SECRET_OUTPUTS)
        )
        super().__init__(WeightedFailoverProvider(), name, props, opts)
