"""The mock-rendering harness on small programs: what it records, and that renders in one
process do not leak into each other."""

from __future__ import annotations

import pulumi
import pytest

from tooling.render import (
    Registered,
    Rendered,
    last_registrations,
    mock_outputs,
    render_program,
    resolve,
)

PROVIDER_TYPE = "pulumi:providers:kubernetes"


class Box(pulumi.ComponentResource):
    def __init__(self, typ: str, name: str, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(typ, name, None, opts)


def small_program() -> None:
    box = Box("test:index:Box", "box")
    provider = pulumi.ProviderResource("kubernetes", "k8s", {"kubeconfig": pulumi.Output.secret("cfg")},
                                       opts=pulumi.ResourceOptions(parent=box))
    svc = pulumi.CustomResource(
        "kubernetes:core/v1:Service", "svc",
        {"spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}, "token": pulumi.Output.secret("t"),
         "nested": {"plain": 1, "hidden": pulumi.Output.secret("h")}},
        opts=pulumi.ResourceOptions(parent=box, provider=provider))
    # A resource declared inside an apply: registered after the program's body returned.
    svc.id.apply(lambda i: pulumi.CustomResource("test:index:Late", "late", {"of": i},
                                                 opts=pulumi.ResourceOptions(parent=box)))
    pulumi.export("plain", "p")
    pulumi.export("secret", pulumi.Output.secret({"k": "v"}))


def one(rendered: Rendered, typ: str) -> Registered:
    (res,) = rendered.of_type(typ)
    return res


def test_records_urn_parent_provider_inputs_and_secrets() -> None:
    rendered = render_program(small_program, stack="unit")
    stack = rendered.resources[0]
    assert (stack.type, stack.urn, stack.parent) == (
        "pulumi:pulumi:Stack", "urn:pulumi:unit::edgefabric::pulumi:pulumi:Stack::edgefabric-unit", "")
    box, provider = one(rendered, "test:index:Box"), one(rendered, PROVIDER_TYPE)
    svc, late = one(rendered, "kubernetes:core/v1:Service"), one(rendered, "test:index:Late")
    assert box.parent == stack.urn and not box.custom and box.provider == ""
    assert svc.urn == "urn:pulumi:unit::edgefabric::test:index:Box$kubernetes:core/v1:Service::svc"
    assert svc.parent == box.urn and provider.parent == box.urn and late.parent == box.urn
    assert svc.custom and svc.provider == f"{provider.urn}::k8s-id"
    # Inputs as the provider receives them, envelopes stripped; secret-ness kept apart, per top-level
    # input (a nested secret makes its whole input secret, as on the wire).
    assert svc.inputs == {"spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}, "token": "t",
                          "nested": {"plain": 1, "hidden": "h"}}
    assert svc.secret_inputs == {"token", "nested"}
    assert provider.secret_inputs == {"kubeconfig"}
    assert late.inputs == {"of": "svc-id"}
    assert rendered.outputs == {"plain": "p", "secret": {"k": "v"}}
    assert rendered.secret_outputs == {"secret"}
    assert len(rendered.resources) == 5 and len(rendered.by_urn()) == 5


def test_the_same_type_and_name_under_two_parents_stay_apart() -> None:
    def program() -> None:
        for kind in ("A", "B"):
            parent = Box(f"test:index:{kind}", kind.lower())
            pulumi.CustomResource("test:index:Thing", "thing", {"kind": kind},
                                  opts=pulumi.ResourceOptions(parent=parent))

    rendered = render_program(program, stack="unit")
    things = {r.parent.rsplit("::", 1)[-1]: r for r in rendered.of_type("test:index:Thing")}
    assert {k: r.inputs["kind"] for k, r in things.items()} == {"a": "A", "b": "B"}
    assert len({r.urn for r in things.values()}) == 2


def test_renders_in_one_process_do_not_leak() -> None:
    first = render_program(small_program, stack="one")
    second = render_program(lambda: Box("test:index:Box", "only"), stack="two")
    assert [r.urn for r in second.resources] == [
        "urn:pulumi:two::edgefabric::pulumi:pulumi:Stack::edgefabric-two",
        "urn:pulumi:two::edgefabric::pulumi:pulumi:Stack$test:index:Box::only"]
    assert second.outputs == {} and second.secret_outputs == set()
    assert len(first.resources) == 5
    again = render_program(small_program, stack="one")
    assert [(r.urn, r.inputs, r.secret_inputs) for r in again.resources] == [
        (r.urn, r.inputs, r.secret_inputs) for r in first.resources]


def test_a_failing_program_raises_and_reports_what_it_registered() -> None:
    def program() -> None:
        pulumi.CustomResource("test:index:Thing", "before", {})
        raise ValueError("bad config")

    with pytest.raises(ValueError, match="bad config"):
        render_program(program, stack="unit")
    assert [(r.type, r.name) for r in last_registrations()] == [("test:index:Thing", "before")]
    render_program(lambda: None, stack="unit")
    assert last_registrations() == []


def test_resolve_reports_value_and_secretness() -> None:
    rendered = render_program(lambda: None, stack="unit")
    assert rendered.resources[0].type == "pulumi:pulumi:Stack"
    assert resolve(pulumi.Output.secret("s")) == ("s", True)
    assert resolve(pulumi.Output.from_input({"a": 1})) == ({"a": 1}, False)


def test_load_balancer_mock_keeps_its_shape() -> None:
    out = mock_outputs("kubernetes:core/v1:Service", "gw", {"spec": {"type": "LoadBalancer"}})
    assert out["status"] == {"loadBalancer": {"ingress": [{"ip": "203.0.113.10"}]}}
    assert "status" not in mock_outputs("kubernetes:core/v1:Service", "gw", {"spec": {"type": "ClusterIP"}})


def test_a_read_resource_is_recorded_once() -> None:
    def program() -> None:
        pulumi.CustomResource("test:index:Thing", "existing", {"x": 1},
                              opts=pulumi.ResourceOptions(id="cloud-id-1"))

    rendered = render_program(program, stack="unit")
    (thing,) = rendered.of_type("test:index:Thing")
    assert thing.inputs == {"x": 1} and thing.custom
    assert thing.urn == "urn:pulumi:unit::edgefabric::pulumi:pulumi:Stack$test:index:Thing::existing"
