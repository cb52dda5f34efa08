"""The engine itself, on a tiny throwaway project: CLI + our Python language host + the
dynamic-provider shim + dill, end to end, independent of the edgefabric program."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from tests.kits.engine import REPO, Engine, EngineCommandError, resources_of_type, steps_by_op

PROGRAM = textwrap.dedent(
    '''
    import os

    import pulumi
    from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, ResourceProvider, UpdateResult


    class FileProvider(ResourceProvider):
        # Nothing captured on self: dill pickles the provider into the state.
        def create(self, props):
            with open(props["path"], "w") as fh:
                fh.write(props["content"])
            return CreateResult(id_=props["path"], outs=dict(props))

        def diff(self, id, olds, news):
            replaces = ["path"] if olds.get("path") != news.get("path") else []
            changes = bool(replaces) or olds.get("content") != news.get("content")
            return DiffResult(changes=changes, replaces=replaces, delete_before_replace=True)

        def update(self, id, olds, news):
            with open(id, "w") as fh:
                fh.write(news["content"])
            return UpdateResult(outs=dict(news))

        def read(self, id, props):
            try:
                with open(id) as fh:
                    return ReadResult(id_=id, outs={**props, "content": fh.read()})
            except FileNotFoundError:
                return ReadResult(id_=None, outs={})

        def delete(self, id, props):
            if os.path.exists(id):
                os.remove(id)


    class LocalFile(Resource, module="smoke", name="LocalFile"):
        def __init__(self, name, props, opts=None):
            super().__init__(FileProvider(), name, props, opts)


    cfg = pulumi.Config()
    if cfg.get_bool("explode"):
        raise ValueError("boom: asked to explode")
    f = LocalFile("greeting", {"path": cfg.require("path"), "content": cfg.get("message") or "hello"})
    pulumi.export("path", f.id)
    pulumi.export("token", cfg.require_secret("token"))
    '''
)

STACK = "smoke"
TOKEN = "smoke-token-6f1c2a9e"
LOCALFILE = "pulumi-python:dynamic/smoke:LocalFile::greeting"


@pytest.fixture(scope="module")
def smoke(engine_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Engine:
    root = tmp_path_factory.mktemp("engine-smoke")
    project = root / "project"
    project.mkdir()
    (project / "Pulumi.yaml").write_text(
        "name: smoke\nruntime:\n  name: python\n  options:\n"
        f"    toolchain: pip\n    virtualenv: {REPO / 'venv'}\n"
    )
    (project / "__main__.py").write_text(PROGRAM)
    eng = Engine(project=project, root=root, bin_dir=engine_bin, passphrase="smoke-passphrase")
    eng.run("stack", "init", STACK)
    eng.run("config", "set", "path", str(root / "a.txt"), "--stack", STACK)
    eng.run("config", "set", "--secret", "token", TOKEN, "--stack", STACK)
    return eng


def test_cli_is_the_pinned_release(smoke: Engine) -> None:
    pinned = re.search(r"github.com/pulumi/pulumi/pkg/v3 (v\S+)", (REPO / "tools/pulumi-engine/go.mod").read_text())
    assert pinned, "go.mod pins no pkg/v3"
    assert smoke.run("version").stdout.strip() == pinned.group(1)


def test_preview_then_up_creates_through_the_dynamic_provider(smoke: Engine) -> None:
    steps = steps_by_op(smoke.preview_json(STACK))
    assert steps.get("create") == ["pulumi:pulumi:Stack::smoke-smoke", LOCALFILE], steps
    smoke.run("up", "--yes", "--stack", STACK)
    path = Path(smoke.outputs(STACK)["path"])
    assert path.read_text() == "hello"
    smoke.run("preview", "--expect-no-changes", "--stack", STACK)


def test_refresh_sees_drift_and_up_repairs_it(smoke: Engine) -> None:
    path = Path(smoke.outputs(STACK)["path"])
    path.write_text("edited by hand")
    out = smoke.run("refresh", "--yes", "--stack", STACK, "--diff").stdout
    assert "edited by hand" in out, out
    smoke.run("up", "--yes", "--stack", STACK)
    assert path.read_text() == "hello"


def test_update_in_place_then_replace(smoke: Engine) -> None:
    smoke.run("config", "set", "message", "bonjour", "--stack", STACK)
    preview = steps_by_op(smoke.preview_json(STACK))
    assert preview.get("update") == [LOCALFILE], preview
    smoke.run("up", "--yes", "--stack", STACK)
    old = Path(smoke.outputs(STACK)["path"])
    assert old.read_text() == "bonjour"

    smoke.run("config", "set", "path", str(smoke.root / "b.txt"), "--stack", STACK)
    preview = steps_by_op(smoke.preview_json(STACK))
    assert LOCALFILE in preview.get("replace", []), preview
    smoke.run("up", "--yes", "--stack", STACK)
    assert not old.exists()
    assert (smoke.root / "b.txt").read_text() == "bonjour"


def test_secrets_are_encrypted_in_state(smoke: Engine) -> None:
    state = smoke.export(STACK)
    assert TOKEN not in str(state)
    [res] = resources_of_type(state, "pulumi-python:dynamic/smoke:LocalFile")
    # The pickled provider itself is stored as a secret, as the SDK does by default.
    assert "4dabf18193072939515e22adb298388d" in str(res["inputs"]["__provider"])
    assert smoke.outputs(STACK, show_secrets=True)["token"] == TOKEN


def test_program_error_fails_the_update_with_its_message(smoke: Engine) -> None:
    smoke.run("config", "set", "explode", "true", "--stack", STACK)
    try:
        with pytest.raises(EngineCommandError, match="boom: asked to explode"):
            smoke.run("preview", "--stack", STACK)
    finally:
        smoke.run("config", "rm", "explode", "--stack", STACK)


def test_destroy_removes_the_resource(smoke: Engine) -> None:
    path = Path(smoke.outputs(STACK)["path"])
    smoke.run("destroy", "--yes", "--stack", STACK)
    assert not path.exists()
    assert resources_of_type(smoke.export(STACK), "pulumi-python:dynamic/smoke:LocalFile") == []


def test_stack_without_any_config_runs(engine_bin: Path, tmp_path: Path) -> None:
    """The language host must hand the program `{}` (not null) when the stack has no config."""
    project = tmp_path / "bare"
    project.mkdir()
    (project / "Pulumi.yaml").write_text(
        f"name: bare\nruntime:\n  name: python\n  options:\n    virtualenv: {REPO / 'venv'}\n"
    )
    (project / "__main__.py").write_text("import pulumi\npulumi.export('answer', 42)\n")
    eng = Engine(project=project, root=tmp_path, bin_dir=engine_bin, passphrase="bare")
    eng.run("stack", "init", "bare")
    eng.run("up", "--yes", "--stack", "bare")
    assert eng.outputs("bare") == {"answer": 42}
