"""The rules that refuse what the Kubernetes API server would (edgefabric.config.kubernetes_rules):
each names the key path. tests/integration/kubernetes/test_validation_parity.py checks them
against a real API server; these are the fast, pure cases."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from edgefabric.config import load_config, raw_from_stack_file
from edgefabric.config.kubernetes_rules import is_label_value, is_port_name, is_qualified_name
from edgefabric.errors import ConfigError

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def raw() -> dict[str, Any]:
    return copy.deepcopy(raw_from_stack_file(ROOT / "Pulumi.local.yaml"))


def refused(raw: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as err:
        load_config(raw)
    return str(err.value)


@pytest.mark.parametrize(("name", "ok"), [
    ("http", True), ("a-b" + "c" * 12, True), ("h2c", True),
    ("p" * 16, False), ("8080", False), ("a--b", False), ("-http", False), ("HTTP", False),
])
def test_port_names_are_iana_service_names(name: str, ok: bool) -> None:
    assert is_port_name(name) is ok


@pytest.mark.parametrize(("key", "ok"), [
    ("edge", True), ("node-role.edgefabric.io/edge", True), ("example.com/A_b.c", True),
    ("bad key", False), ("/edge", False), ("Example.com/edge", False), ("e" * 64, False), ("a/b/c", False),
])
def test_keys_are_qualified_names(key: str, ok: bool) -> None:
    assert is_qualified_name(key) is ok


@pytest.mark.parametrize(("value", "ok"), [("", True), ("true", True), ("a.b_c-D", True),
                                            ("v" * 64, False), ("-a", False), ("a b", False)])
def test_label_values(value: str, ok: bool) -> None:
    assert is_label_value(value) is ok


def test_a_region_name_too_long_for_its_namespace_is_refused_at_its_key(raw: dict[str, Any]) -> None:
    def rename(name: str) -> None:
        old, raw["regions"][0]["name"] = raw["regions"][0]["name"], name
        sites = (raw.get("dataFlows") or {}).get("sites") or {}
        sites.update({site: name for site, region in sites.items() if region == old})

    rename("r" * 57)  # region-<57> is 64 characters
    assert "edgefabric:regions[0].name = 'rrrr" in refused(raw)
    rename("r" * 56)
    load_config(raw)


def test_ports_env_quantities_and_images(raw: dict[str, Any]) -> None:
    svc = raw["regions"][0]["services"][1]
    svc["ports"][0]["name"] = "longer-than-15ch"
    svc["env"] = {"A=B": "x"}
    svc["cpu"] = "0.0001"
    svc["memory"] = "1"
    svc["image"] = "varnish:7.6.1 "
    text = refused(raw)
    for path in ("ports[0].name = 'longer-than-15ch'", "env = 'A=B'", "cpu = '0.0001'", "memory = '1'",
                 "image = 'varnish:7.6.1 '"):
        assert f"edgefabric:regions[0].services[1].{path}" in text, (path, text)


def test_a_port_number_twice_and_an_edge_port_name_twice(raw: dict[str, Any]) -> None:
    raw["regions"][0]["services"][0]["ports"].append({"name": "again", "port": 8080})
    raw["edge"]["sites"][0]["services"] = copy.deepcopy(raw["edge"]["sites"][0]["services"])
    raw["edge"]["sites"][0]["services"][0]["ports"].append({"name": "http", "port": 8081})
    text = refused(raw)
    assert "edgefabric:regions[0].services[0].ports[1].port = 8080: each port number once" in text
    assert "edgefabric:edge.sites[0].services[0].ports[1].name = 'http': port names must be unique" in text


def test_node_selector_and_toleration_key(raw: dict[str, Any]) -> None:
    raw["edge"]["nodeSelector"] = {"bad key": "not valid!"}
    raw["edge"]["tolerationKey"] = "bad key"
    text = refused(raw)
    assert "edgefabric:edge.nodeSelector = 'bad key'" in text
    assert "edgefabric:edge.nodeSelector.bad key = 'not valid!'" in text
    assert "edgefabric:edge.tolerationKey = 'bad key'" in text


def test_service_names_start_with_a_letter(raw: dict[str, Any]) -> None:
    raw["regions"][0]["services"][1]["name"] = "9cache"
    assert "edgefabric:regions[0].services[1].name = '9cache'" in refused(raw)
