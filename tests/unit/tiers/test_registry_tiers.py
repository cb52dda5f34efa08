"""Regional and edge services are registered too, under names of their own, kept alive by the
same delegates, and published by the same deployer (the discovery allowlist covers them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgefabric.config.loading import load_stack_file
from edgefabric.errors import ConfigError
from edgefabric.tiers.registry import check_unique_names, edge_services, regional_services
from tooling.render import render_stack_file

REPO = Path(__file__).resolve().parents[3]
SERVICE = "pulumi-python:dynamic/registry:ServiceRegistration"
DELEGATE = "pulumi-python:dynamic/registry:HeartbeatDelegate"


def test_every_regional_and_edge_service_is_registered_on_the_local_stack() -> None:
    cfg = load_stack_file(REPO / "Pulumi.local.yaml")
    assert cfg.regions and cfg.edge.sites  # the local stack has both tiers
    rendered = render_stack_file(REPO / "Pulumi.local.yaml")
    regs = {r.inputs["name"]: r for r in rendered.of_type(SERVICE)}
    expected = {f"{region.name}-{svc.name}" for region in cfg.regions for svc in region.services} | {
        f"{site.name}-{svc.name}" for site in cfg.edge.sites for svc in site.services}
    assert expected <= set(regs), sorted(expected - set(regs))
    assert {svc.name for svc in cfg.core.services} <= set(regs)  # core ones keep their names (URNs)
    region = cfg.regions[0]
    svc = region.services[0]
    reg = regs[f"{region.name}-{svc.name}"]
    assert reg.name == f"registry-{region.name}-{svc.name}"
    assert reg.inputs["endpoints"] == [
        f"{'mqtt' if svc.kind == 'device-management' else 'http'}://{svc.name}.region-{region.name}"
        f".svc.cluster.local:{svc.ports[0].port}"]
    # Every delegate beats for all of them: regional and edge entries do not expire.
    for delegate in rendered.of_type(DELEGATE):
        assert len(delegate.inputs["service_ids"]) == len(regs)
    assert "registryPublishers" in rendered.outputs


def test_names_fit_the_contract_and_docker_sites_publish_their_host() -> None:
    cfg = load_stack_file(REPO / "Pulumi.local.yaml")
    specs = regional_services(cfg.regions, "local") + edge_services(cfg.edge.sites, "local")
    assert all(1 <= len(s.name.encode()) <= 64 and 1 <= len(s.version) <= 32 for s in specs)
    assert len({s.name for s in specs}) == len(specs)
    site = cfg.edge.sites[0].model_copy(update={
        "capabilities": cfg.edge.sites[0].capabilities.model_copy(update={"runtime": "docker"}),
        "host": "ssh://edge@10.20.0.7"})
    [first, *_] = edge_services([site], "local")
    assert first.endpoints == [f"{'mqtt' if site.services[0].kind == 'sensor-ingest' else 'http'}://10.20.0.7:"
                               f"{site.services[0].ports[0].port}"]


def test_a_core_service_named_like_a_regional_one_is_a_config_error() -> None:
    cfg = load_stack_file(REPO / "Pulumi.local.yaml")
    [first, *_] = regional_services(cfg.regions, "local")
    with pytest.raises(ConfigError) as err:
        check_unique_names([first.name, "api-gateway", first.name])
    assert "core.services[].name" in str(err.value) and first.name in str(err.value)
