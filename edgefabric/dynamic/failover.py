"""WeightedFailover: a Pulumi dynamic resource publishing health-weighted answers.

Type token: `pulumi-python:dynamic/failover:WeightedFailover`.

Inputs: the typed `edgefabric.traffic.spec.FailoverSpec`, serialised (`to_inputs`:
record_name, ttl, endpoints, health_check, strategy, routing, backends with secret
*references*, health_check_ids, probe_round_gap_s, resolver), with what the program only
knows as Outputs laid over it (`WeightedFailoverArgs`: the endpoint addresses, the Route53
health-check ids, the GCP health check); plus secrets (ref -> value, a Pulumi secret;
optional) and provider_version. Every method restores the same type from its
properties (`FailoverSpec.from_inputs`).

An endpoint address is an IP or a DNS name (an AWS load balancer reports only a
hostname). A name stays a name in the inputs and the state; it is resolved inside each
method that probes or publishes (`FailoverSpec.targets`), so a load balancer whose
addresses move needs no new inputs, and `delete` never needs the name to resolve.

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
from collections.abc import Callable, Mapping
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

from edgefabric.dynamic._unknown import is_unknown
from edgefabric.errors import Problem
from edgefabric.traffic.dns import build_backends
from edgefabric.traffic.lease import quorum_lease_holder
from edgefabric.traffic.reconcile import (
    LeaseRecord,
    Reconciled,
    apply_plan,
    assess_health,
    expected_published,
    follow_lease_holder,
    live_lease_holder,
    normalise_published,
    plan_from_health,
    read_published,
)
from edgefabric.traffic.spec import PENDING_ADDRESS, FailoverSpec

# 2: inputs are the typed FailoverSpec's serialisation.
PROVIDER_VERSION = "2"
# Inputs that describe the world; everything else in the outputs is observed state.
INPUT_KEYS = (*FailoverSpec.model_fields, "provider_version")
REPLACE_KEYS = ("record_name",)
SECRET_OUTPUTS = ["secrets", "lease"]


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _failure(problem: Problem) -> CheckFailure:
    """A problem as a check failure on the input it names (`routing.rules[0].cloud` -> routing)."""
    key = problem.path.split(".", 1)[0].split("[", 1)[0]
    return CheckFailure(key if key in INPUT_KEYS else "record_name", str(problem))


def pulumi_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): pulumi_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [pulumi_safe(v) for v in value]
    return value


def _config_secrets(props: Mapping[str, Any]) -> Callable[[str], str | None]:
    """`config:KEY` -> its value from the resource's secret input, for the checks' references
    (a `caBundleRef`), as `build_backends` does for the backends'."""
    values = dict(props.get("secrets") or {})
    return lambda key: values.get(f"config:{key}")


class WeightedFailoverProvider(ResourceProvider):
    """Stateless: every method builds what it needs from its arguments."""

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        if is_unknown({k: news.get(k) for k in INPUT_KEYS}):
            return CheckResult(news, [])
        return CheckResult(news, [_failure(p) for p in FailoverSpec.input_problems(news)])

    # ---- helpers
    def _reconcile(self, props: dict[str, Any], evidence: Any) -> Reconciled:
        spec = FailoverSpec.from_inputs(props)
        # One writer: while a live controller holds the record's lease (the controllers' Leases
        # in the core clusters, or $EDGEFABRIC_LEASE_FILE on one machine), report its plan as
        # read back from the backends; never write over its verdict.
        holder = live_lease_holder(spec) or self._cluster_lease_holder(props, spec)
        if holder is not None:
            return follow_lease_holder(spec, holder, build_backends(spec.backends, props.get("secrets")))
        tracker = assess_health(spec, evidence, lookup=_config_secrets(props))
        backends = build_backends(spec.backends, props.get("secrets"))
        return apply_plan(spec, tracker, backends, [])

    @staticmethod
    def _cluster_lease_holder(props: dict[str, Any], spec: FailoverSpec) -> LeaseRecord | None:
        """The controllers' live holder, when the stack deploys them (`dns.controller.deploy`):
        the majority of the core clusters' Leases, read with the stack's kubeconfigs."""
        lease = props.get("lease") or {}
        kubeconfigs = lease.get("kubeconfigs") or {}
        if not kubeconfigs:
            return None
        return quorum_lease_holder(kubeconfigs, str(lease["namespace"]), spec.record_name)

    def _outputs(self, props: dict[str, Any], rec: Reconciled, last_change: str) -> dict[str, Any]:
        outs = {k: props.get(k) for k in INPUT_KEYS if k in props}
        for key in SECRET_OUTPUTS:  # listed in additional_secret_outputs: encrypted in state
            if props.get(key):
                outs[key] = props[key]
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
        if is_unknown(new_inputs):
            # Preview with values not known yet: it will change; only known differences replace.
            return DiffResult(changes=True, replaces=[k for k in replaces if not is_unknown(new_inputs[k])],
                              delete_before_replace=False)  # fmt: skip
        if changed_inputs:
            return DiffResult(changes=True, replaces=replaces, delete_before_replace=False)
        # Same inputs: has the world moved? Re-probe from the stored evidence.
        spec = FailoverSpec.from_inputs(news)
        tracker = assess_health(spec, olds.get("health"), lookup=_config_secrets(news))
        if plan_from_health(spec, tracker).to_dict() != olds.get("plan"):
            return DiffResult(changes=True, replaces=[], delete_before_replace=False)
        # Drift recorded by the last refresh (`read`): published != what we applied.
        published = olds.get("published")
        if isinstance(published, dict):
            backends = build_backends(spec.backends, news.get("secrets"))
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
            old_spec = FailoverSpec.from_inputs(olds)
            for backend in build_backends(old_spec.backends, olds.get("secrets"), only=removed):
                backend.delete(old_spec.record_spec(resolve_names=False))
        self._raise_failures(rec, "update")
        changed = rec.changed or bool(removed) or rec.plan.to_dict() != olds.get("plan")
        last = _now() if changed else str(olds.get("last_change_at") or _now())
        return UpdateResult(outs=self._outputs(news, rec, last))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        spec = FailoverSpec.from_inputs(props)
        backends = build_backends(spec.backends, props.get("secrets"))
        published = {k: normalise_published(v) for k, v in read_published(spec, backends).items()}
        outs = dict(props)
        outs["published"] = published
        return ReadResult(id_=id_, outs=pulumi_safe(outs))

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        spec = FailoverSpec.from_inputs(props)
        record = spec.record_spec(resolve_names=False)  # deleting needs no addresses: a dead name is fine
        errors = []
        for backend in build_backends(spec.backends, props.get("secrets")):
            try:
                backend.delete(record)
            except Exception as exc:
                errors.append(f"{backend.name}: {exc}")
        if errors:
            raise RuntimeError("WeightedFailover delete: " + "; ".join(errors))


@dataclass
class WeightedFailoverArgs:
    """The typed spec, plus what the program only knows as Outputs.

    - `addresses`: cloud -> ingress address (an IP, or a DNS name such as the hostname an
      AWS load balancer reports), laid over the spec's endpoints (required for every
      endpoint the spec left as `PENDING_ADDRESS`, see `FailoverSpec.from_config`);
    - `health_check_ids`: cloud -> Route53 health-check id;
    - `gcp_health_check`: the compute HealthCheck's self-link Cloud DNS steers with;
    - `secrets`: `config:` reference -> value, passed as a Pulumi secret;
    - `lease_kubeconfigs`: cloud -> kubeconfig (a secret) of each core cluster the failover
      controller runs in, with `lease_namespace` where its Leases are: while a controller
      holds the record's lease there, `up` follows it instead of writing.
    """

    spec: FailoverSpec
    addresses: Mapping[str, pulumi.Input[str]] | None = None
    health_check_ids: Mapping[str, pulumi.Input[str]] | None = None
    gcp_health_check: pulumi.Input[str] | None = None
    secrets: pulumi.Input[Mapping[str, pulumi.Input[str]]] | None = None
    lease_kubeconfigs: Mapping[str, pulumi.Input[str]] | None = None
    lease_namespace: str | None = None
    provider_version: str = PROVIDER_VERSION

    def inputs(self) -> dict[str, Any]:
        """The resource's spec inputs: the serialised spec with the Outputs laid over it."""
        inputs = self.spec.to_inputs()
        endpoints = inputs["endpoints"]
        for cloud, address in (self.addresses or {}).items():
            if cloud not in endpoints:
                raise ValueError(f"WeightedFailoverArgs.addresses: {cloud!r} has no endpoint in the spec "
                                 f"(endpoints: {', '.join(endpoints)})")
            endpoints[cloud]["address"] = address
        pending = [c for c, ep in endpoints.items() if ep["address"] == PENDING_ADDRESS]
        if pending:
            raise ValueError(f"WeightedFailoverArgs.addresses: no address for {', '.join(pending)}")
        if self.health_check_ids is not None:
            inputs["health_check_ids"] = dict(self.health_check_ids)
        if self.gcp_health_check is not None:
            if "gcp_dns" not in inputs["backends"]:
                raise ValueError("WeightedFailoverArgs.gcp_health_check: the spec has no gcp_dns backend")
            inputs["backends"]["gcp_dns"]["health_check"] = self.gcp_health_check
        return inputs


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
            **args.inputs(),
            "provider_version": args.provider_version,
            "secrets": pulumi.Output.secret(args.secrets) if args.secrets is not None else None,
            # Not a spec input (a rotated kubeconfig is no change to the record): read at apply.
            "lease": pulumi.Output.secret({"namespace": args.lease_namespace, "kubeconfigs": dict(args.lease_kubeconfigs)})
            if args.lease_kubeconfigs else None,
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
