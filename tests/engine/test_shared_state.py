"""State a team can share: the real CLI logged in to an S3-compatible backend.

moto's server on a free loopback port stands in for S3 (a bucket made with boto3); the engine
logs in to it with `pulumi login s3://...` and runs a small throwaway project's whole
lifecycle there, a second teammate (another PULUMI_HOME) sees the same state, and two
concurrent `up`s of one stack conflict on the backend's lock. Secrets use a passphrase, passed
in the environment only. Nothing leaves loopback: the bucket URL and AWS_ENDPOINT_URL both name
127.0.0.1, the credentials are dummies, and the instance-metadata lookup is disabled.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.kits.engine import (
    REPO,
    Engine,
    EngineCommandError,
    describe,
    free_port,
    resources_of_type,
    wait_for,
)

BUCKET = "edgefabric-state"
PROJECT = "shared"
PASSPHRASE = "shared-state-passphrase"
TOKEN = "shared-token-3b7d90c1"
NOTE = f"pulumi-python:dynamic/{PROJECT}:Note"
LOCKED_MESSAGE = "the stack is currently locked by 1 lock(s)"
# How long the gated resource waits for the test to open its gate before failing the update.
GATE_TIMEOUT = 120

PROGRAM = textwrap.dedent(
    f'''
    import os
    import time

    import pulumi
    from pulumi.dynamic import CreateResult, DiffResult, Resource, ResourceProvider, UpdateResult


    class NoteProvider(ResourceProvider):
        # A note kept in state only. With a `gate` input, create/update first mark that they
        # started (`<gate>.entered`) and then wait, bounded, until the gate file exists.
        def _wait(self, props):
            gate = props.get("gate")
            if not gate:
                return
            open(gate + ".entered", "w").close()
            deadline = time.monotonic() + {GATE_TIMEOUT}
            while not os.path.exists(gate):
                if time.monotonic() > deadline:
                    raise RuntimeError("the gate never opened: " + gate)
                time.sleep(0.1)

        def create(self, props):
            self._wait(props)
            return CreateResult(id_=props["text"], outs=dict(props))

        def diff(self, id, olds, news):
            changes = any(olds.get(k) != news.get(k) for k in ("text", "gate"))
            return DiffResult(changes=changes)

        def update(self, id, olds, news):
            self._wait(news)
            return UpdateResult(outs=dict(news))


    class Note(Resource, module="{PROJECT}", name="Note"):
        def __init__(self, name, props, opts=None):
            super().__init__(NoteProvider(), name, props, opts)


    cfg = pulumi.Config()
    generation = cfg.get("generation") or "1"
    gate = cfg.get("gate")
    alpha = Note("alpha", {{"text": "alpha-" + generation, "gate": gate}})
    beta = Note("beta", {{"text": "beta-" + generation, "gate": None}}, pulumi.ResourceOptions(depends_on=[alpha]))
    pulumi.export("notes", [alpha.text, beta.text])
    pulumi.export("token", cfg.require_secret("token"))
    '''
)


def s3_login_url(port: int) -> str:
    """The backend URL: AWS SDK v1-era parameters, which this CLI translates for gocloud.dev v0.46
    (a scheme-less endpoint plus disableSSL=true becomes endpoint=http://...; see the README)."""
    return f"s3://{BUCKET}?endpoint=127.0.0.1:{port}&disableSSL=true&s3ForcePathStyle=true&region=us-east-1"


def s3_login_url_v2(port: int) -> str:
    """The same backend in gocloud.dev v0.46's own parameters (what the v1 form is translated to)."""
    return (
        f"s3://{BUCKET}?endpoint=http://127.0.0.1:{port}&use_path_style=true&region=us-east-1"
        "&request_checksum_calculation=when_required&response_checksum_validation=when_required"
    )


@dataclass
class Moto:
    url: str
    port: int

    def s3(self) -> Any:
        import boto3

        return boto3.client(
            "s3", endpoint_url=self.url, region_name="us-east-1",
            aws_access_key_id="test", aws_secret_access_key="test",
        )  # fmt: skip

    def keys(self, prefix: str = "") -> list[str]:
        pages = self.s3().get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))

    def read(self, key: str) -> bytes:
        return bytes(self.s3().get_object(Bucket=BUCKET, Key=key)["Body"].read())


def _aws_env(moto_url: str, root: Path) -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_SESSION_TOKEN": "test",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        # Belt and braces: the bucket URL names the endpoint; these keep every AWS client local.
        "AWS_ENDPOINT_URL": moto_url,
        "AWS_ENDPOINT_URL_S3": moto_url,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(root / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(root / "no-aws-credentials"),
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }


_DROP = ("PULUMI_BACKEND_URL", "AWS_PROFILE", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")


@dataclass
class SharedEngine(Engine):
    """An Engine whose backend is whatever `pulumi login` chose (no PULUMI_BACKEND_URL override)."""

    def env(self) -> dict[str, str]:
        env = super().env()
        for key in _DROP:
            env.pop(key, None)
        return env


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Moto]:
    port = free_port()
    binary = Path(sys.executable).parent / "moto_server"
    if not binary.exists():
        pytest.fail(f"moto_server not found at {binary}; install requirements.txt (moto[server])")
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(binary), "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"moto_server did not start:\n{log.read_text(errors='replace')[-2000:]}")
                time.sleep(0.1)
        with pytest.MonkeyPatch.context() as mp:
            # boto3 in this process: loopback only, whatever proxy the shell had.
            for key in _DROP[2:]:
                mp.delenv(key, raising=False)
            mp.setenv("NO_PROXY", "127.0.0.1,localhost")
            server = Moto(url=f"http://127.0.0.1:{port}", port=port)
            server.s3().create_bucket(Bucket=BUCKET)
            yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The throwaway project, one checkout that both teammates use."""
    path = tmp_path_factory.mktemp("shared-project")
    (path / "Pulumi.yaml").write_text(
        f"name: {PROJECT}\nruntime:\n  name: python\n  options:\n"
        f"    toolchain: pip\n    virtualenv: {REPO / 'venv'}\n"
    )
    (path / "__main__.py").write_text(PROGRAM)
    return path


def teammate(
    name: str, project: Path, moto: Moto, engine_bin: Path, tmp_path_factory: pytest.TempPathFactory
) -> SharedEngine:
    """A teammate: their own PULUMI_HOME, logged in to the shared bucket."""
    root = tmp_path_factory.mktemp(f"teammate-{name}")
    eng = SharedEngine(
        project=project,
        root=root,
        bin_dir=engine_bin,
        passphrase=PASSPHRASE,
        extra_env=_aws_env(moto.url, root),
    )
    eng.run("login", s3_login_url(moto.port), timeout=60)
    return eng


@pytest.fixture(scope="module")
def alice(
    project: Path, moto: Moto, engine_bin: Path, tmp_path_factory: pytest.TempPathFactory
) -> SharedEngine:
    return teammate("alice", project, moto, engine_bin, tmp_path_factory)


@pytest.fixture(scope="module")
def bob(
    project: Path, moto: Moto, engine_bin: Path, tmp_path_factory: pytest.TempPathFactory
) -> SharedEngine:
    return teammate("bob", project, moto, engine_bin, tmp_path_factory)


def whoami_backend(eng: Engine) -> str:
    out = eng.run("whoami", "--verbose", timeout=60).stdout
    [line] = [ln for ln in out.splitlines() if ln.startswith("Backend URL:")]
    return line.split(":", 1)[1].strip()


def test_login_to_the_bucket(alice: SharedEngine, moto: Moto) -> None:
    assert whoami_backend(alice) == s3_login_url(moto.port)
    # The login itself put the backend's metadata in the bucket, and nothing on disk.
    assert ".pulumi/meta.yaml" in moto.keys(".pulumi/")
    assert list(alice.backend_dir.iterdir()) == []


def test_login_accepts_the_v2_parameters_and_refuses_unknown_ones(
    moto: Moto, engine_bin: Path, project: Path, tmp_path: Path
) -> None:
    eng = SharedEngine(
        project=project,
        root=tmp_path,
        bin_dir=engine_bin,
        passphrase=PASSPHRASE,
        extra_env=_aws_env(moto.url, tmp_path),
    )
    eng.run("login", s3_login_url_v2(moto.port), timeout=60)
    assert whoami_backend(eng) == s3_login_url_v2(moto.port)
    eng.run("stack", "ls", "--all", timeout=60)
    bad = eng.run("login", s3_login_url(moto.port) + "&bogus=1", check=False, timeout=60)
    assert bad.returncode != 0
    assert 'unknown query parameter "bogus"' in bad.stderr, describe(bad)


def test_lifecycle_in_the_bucket(alice: SharedEngine, bob: SharedEngine, moto: Moto) -> None:
    stack = "team"
    state_key = f".pulumi/stacks/{PROJECT}/{stack}.json"
    alice.run("stack", "init", stack, "--secrets-provider", "passphrase", timeout=60)
    alice.run("config", "set", "--secret", "token", TOKEN, "--stack", stack, timeout=60)
    assert state_key in moto.keys(f".pulumi/stacks/{PROJECT}/")

    alice.run("up", "--yes", "--stack", stack, timeout=300)
    alice.run("preview", "--expect-no-changes", "--stack", stack, timeout=300)
    state = alice.export(stack)
    notes = {r["urn"].rsplit("::", 1)[-1]: r["id"] for r in resources_of_type(state, NOTE)}
    assert notes == {"alpha": "alpha-1", "beta": "beta-1"}, notes
    assert alice.outputs(stack)["notes"] == ["alpha-1", "beta-1"]

    # The state is the bucket's object, and the secret is encrypted in it.
    raw = moto.read(state_key)
    assert json.loads(raw)["checkpoint"]["latest"]["resources"], raw[:500]
    assert b"alpha-1" in raw and TOKEN.encode() not in raw
    assert any(k.startswith(f".pulumi/history/{PROJECT}/{stack}/") for k in moto.keys(".pulumi/history/"))

    # A teammate with their own PULUMI_HOME sees the same stack and no changes to make.
    assert stack in bob.run("stack", "ls", timeout=60).stdout
    assert bob.outputs(stack, show_secrets=True) == {"notes": ["alpha-1", "beta-1"], "token": TOKEN}
    bob.run("preview", "--expect-no-changes", "--stack", stack, timeout=300)

    bob.run("destroy", "--yes", "--stack", stack, timeout=300)
    assert resources_of_type(alice.export(stack), NOTE) == []
    alice.run("stack", "rm", "--yes", "--stack", stack, timeout=60)
    assert state_key not in moto.keys(".pulumi/stacks/")
    with pytest.raises(EngineCommandError, match="no stack named"):
        bob.run("stack", "select", stack, timeout=60)
    assert moto.keys(".pulumi/locks/") == []


def test_concurrent_ups_conflict_on_the_lock(alice: SharedEngine, bob: SharedEngine, moto: Moto) -> None:
    stack = "locked"
    gate = alice.root / "gate"
    entered = Path(f"{gate}.entered")
    alice.run("stack", "init", stack, "--secrets-provider", "passphrase", timeout=60)
    alice.run("config", "set", "--secret", "token", TOKEN, "--stack", stack, timeout=60)
    alice.run("config", "set", "gate", str(gate), "--stack", stack, timeout=60)

    log = alice.root / "first-up.log"
    first = alice.start("up", "--yes", "--stack", stack, log=log)
    try:
        # The first `up` holds the lock while its gated resource is being created.
        wait_for(
            lambda: entered.exists() or first.poll() is not None,
            timeout=120,
            what="the first up to start creating",
        )
        assert first.poll() is None, log.read_text(errors="replace")
        [lock] = moto.keys(".pulumi/locks/")
        assert lock.startswith(f".pulumi/locks/organization/{PROJECT}/{stack}/"), lock

        started = time.monotonic()
        second = bob.run("up", "--yes", "--stack", stack, check=False, timeout=120)
        assert second.returncode != 0, describe(second)
        message = second.stdout + second.stderr
        assert LOCKED_MESSAGE in message, describe(second)
        assert f"(pid {first.pid})" in message, describe(second)
        assert time.monotonic() - started < 60, "the second up waited instead of failing on the lock"
        assert first.poll() is None, "the first up ended before the second one tried the lock"

        gate.touch()
        assert first.wait(timeout=180) == 0, log.read_text(errors="replace")
    finally:
        if first.poll() is None:
            alice.kill(first)
    assert moto.keys(".pulumi/locks/") == []
    assert alice.outputs(stack)["notes"] == ["alpha-1", "beta-1"]

    # The lock is gone: a third `up` (an update, by the other teammate) goes through.
    bob.run("config", "set", "generation", "2", "--stack", stack, timeout=60)
    bob.run("up", "--yes", "--stack", stack, timeout=300)
    assert alice.outputs(stack)["notes"] == ["alpha-2", "beta-2"]
    alice.run("destroy", "--yes", "--stack", stack, timeout=300)
    alice.run("stack", "rm", "--yes", "--stack", stack, timeout=60)
    assert f".pulumi/stacks/{PROJECT}/{stack}.json" not in moto.keys(".pulumi/stacks/")
