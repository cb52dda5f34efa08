"""The data flows' PKI through the real engine, on a reduced stack: the stack CA and the
certificates `edgefabric.dynamic.pki` issues, used the way `edgefabric.tiers.brokers` uses
them (a broker's certificate files as one secret Output). After `up`, `pulumi stack export`
holds no private key in plain text, and every key output is a secret. The full local stack
gets the same check in test_tiers.py."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from cryptography import x509

from tests.kits.engine import REPO, Engine, resources_of_type

PROGRAM = textwrap.dedent(
    '''
    import pulumi

    from edgefabric.dynamic.pki import Certificate, CertificateAuthority

    ca = CertificateAuthority("dataflows-ca", common_name="edgefabric engine-test data flows")
    server = Certificate("core-aws-server", ca=ca, common_name="core-aws", usage="server",
                         hosts=["mqtt-core.edgefabric-dataflow.svc"])
    bridge = Certificate("bridge-region-eu-west-client", ca=ca, common_name="bridge-region-eu-west",
                         usage="client")
    # As DataFlows._files does: the files of a broker, keys included, as one secret Output.
    files = pulumi.Output.secret(pulumi.Output.all(ca.cert_pem, server.cert_pem, server.key_pem).apply(
        lambda v: {"ca.crt": v[0], "server.crt": v[1], "server.key": v[2]}))
    pulumi.export("caCert", ca.cert_pem)
    pulumi.export("serverCert", server.cert_pem)
    pulumi.export("certFiles", files)
    # Exported as plain as a program can: what derives from a key is still a secret.
    pulumi.export("bridgeKey", bridge.key_pem)
    pulumi.export("caKeyLength", ca.key_pem.apply(len))
    '''
)

STACK = "pki"
PKI = "pulumi-python:dynamic/pki:"
# The engine's secret envelope in a state file (the `sig` key and its value).
SECRET_SIG = ("4dabf18193072939515e22adb298388d", "1b47061264138c4ac30d75fd1eb44270")
KEY_OUTPUTS = ("bridgeKey", "caKeyLength", "certFiles")


def is_secret(value: object) -> bool:
    return isinstance(value, dict) and value.get(SECRET_SIG[0]) == SECRET_SIG[1] and "ciphertext" in value


@pytest.fixture(scope="module")
def deployed(engine_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Engine, str]:
    root = tmp_path_factory.mktemp("engine-pki")
    project = root / "project"
    project.mkdir()
    (project / "Pulumi.yaml").write_text(
        "name: edgefabric-pki\nruntime:\n  name: python\n  options:\n"
        f"    toolchain: pip\n    virtualenv: {REPO / 'venv'}\n"
    )
    (project / "__main__.py").write_text(PROGRAM)
    # The program and the dynamic-provider host import this tree's packages.
    eng = Engine(project=project, root=root, bin_dir=engine_bin, passphrase="pki-test-passphrase",
                 extra_env={"PYTHONPATH": str(REPO)})
    eng.run("stack", "init", STACK)
    up = eng.run("up", "--yes", "--stack", STACK, "--skip-preview")
    return eng, up.stdout + up.stderr


def test_up_issues_the_keys_and_prints_none(deployed: tuple[Engine, str]) -> None:
    eng, log = deployed
    assert "PRIVATE KEY" not in log, "a private key was printed by `up`"
    revealed = eng.outputs(STACK, show_secrets=True)
    # The keys exist (the checks below have something to find)...
    assert revealed["bridgeKey"].startswith("-----BEGIN ") and "PRIVATE KEY-----" in revealed["bridgeKey"]
    assert "PRIVATE KEY-----" in revealed["certFiles"]["server.key"]
    assert revealed["caKeyLength"] > 100
    # ...and the certificates chain to the stack CA.
    ca = x509.load_pem_x509_certificate(revealed["caCert"].encode())
    server = x509.load_pem_x509_certificate(revealed["serverCert"].encode())
    server.verify_directly_issued_by(ca)


def test_state_holds_no_private_key_in_plain_text(deployed: tuple[Engine, str]) -> None:
    eng, _ = deployed
    state = eng.export(STACK)
    assert "PRIVATE KEY" not in json.dumps(state)
    resources = [r for r in state["deployment"]["resources"] if r["type"].startswith(PKI)]
    assert sorted(r["type"].removeprefix(PKI) for r in resources) == [
        "Certificate", "Certificate", "CertificateAuthority"]
    for res in resources:
        assert is_secret(res["outputs"]["key_pem"]), f"{res['urn']}: key_pem is not a secret in state"
        assert "key_pem" in res.get("additionalSecretOutputs", []), res["urn"]
    for cert in resources_of_type(state, f"{PKI}Certificate"):
        # The CA key each certificate is signed with: a secret input, and no output at all.
        assert is_secret(cert["inputs"]["ca_key_pem"]), cert["urn"]
        assert "ca_key_pem" not in cert["outputs"], cert["urn"]
    # The export with secrets shown proves the envelopes hold the keys.
    assert "PRIVATE KEY" in json.dumps(eng.export(STACK, show_secrets=True))


def test_key_outputs_are_secrets(deployed: tuple[Engine, str]) -> None:
    eng, _ = deployed
    shown = eng.outputs(STACK)
    for name in KEY_OUTPUTS:
        assert shown[name] == "[secret]", f"output {name} is not a secret: {str(shown[name])[:40]}"
    # The public parts stay readable.
    assert shown["caCert"].startswith("-----BEGIN CERTIFICATE-----")
    stack = next(r for r in eng.export(STACK)["deployment"]["resources"] if r["type"] == "pulumi:pulumi:Stack")
    for name in KEY_OUTPUTS:
        assert is_secret(stack["outputs"][name]), f"stack output {name} is plain in state"
