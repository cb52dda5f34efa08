"""agent/Dockerfile and edgefabric/controller/Dockerfile ship everything their entry modules import.

The image is built by hand-listed COPY lines; a new module under edgefabric.chain, or a new
import in the agent, would otherwise only show up as an ImportError in a running pod. The
imports are walked with `ast` from the entrypoint, transitively, through every module of ours
(including the parent packages' `__init__.py`, which Python runs first); each must be copied
to the same path under WORKDIR. Third-party imports must come with the image's pip install.
"""

from __future__ import annotations

import ast
import importlib.metadata as metadata
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "agent" / "Dockerfile"
ENTRYPOINT = "agent.heartbeat"
CONTROLLER_DOCKERFILE = ROOT / "edgefabric" / "controller" / "Dockerfile"
CONTROLLER_ENTRYPOINT = "edgefabric.controller.daemon"
OURS = ("edgefabric", "agent")
# Data files the shipped modules open at run time (chain/registry.py: ARTIFACT_PATH; chain/ledger.py:
# LEDGER_ARTIFACT, for the agent's config check).
DATA_FILES = ("contracts/build/ServiceRegistry.json", "contracts/build/DeploymentLedger.json")
# What of the package the agent may use: the engine-free chain client (and the error type).
AGENT_MAY_IMPORT = ("edgefabric", "edgefabric.chain", "edgefabric.errors")


# ----------------------------------------------------------------------------- the Dockerfile


@dataclass
class Image:
    workdir: PurePosixPath = field(default_factory=lambda: PurePosixPath("/"))
    files: set[str] = field(default_factory=set)  # repository paths, as copied under workdir
    misplaced: list[str] = field(default_factory=list)  # copied, but not to their repo path
    pip: list[str] = field(default_factory=list)  # `name==version` from RUN pip install
    entrypoint: list[str] = field(default_factory=list)


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, rest = line.partition(" ")
        out.append((keyword.upper(), rest.strip()))
    return out


def _sources(src: str, root: Path) -> list[Path]:
    path = root / src.rstrip("/")
    if path.is_dir():
        return sorted(p for p in path.rglob("*")
                      if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")
    if path.is_file():
        return [path]
    raise AssertionError(f"Dockerfile COPY source {src!r} does not exist in the repository")


def parse_dockerfile(text: str, root: Path = ROOT) -> Image:
    image = Image()
    for keyword, args in _instructions(text):
        if keyword == "WORKDIR":
            image.workdir = image.workdir / args
        elif keyword == "RUN" and "pip install" in args:
            image.pip += [tok for tok in shlex.split(args) if "==" in tok]
        elif keyword == "ENTRYPOINT":
            image.entrypoint = list(ast.literal_eval(args))
        elif keyword in ("COPY", "ADD"):
            tokens = [t for t in shlex.split(args) if not t.startswith("--")]
            if any(t.startswith("--from") for t in shlex.split(args)):
                continue  # from another stage, not from the repository
            *srcs, dest = tokens
            target = image.workdir / dest
            for src in srcs:
                for path in _sources(src, root):
                    rel = path.relative_to(root).as_posix()
                    base = root / src.rstrip("/")
                    if base.is_dir():
                        landed = target / path.relative_to(base).as_posix()
                    elif dest.endswith("/") or len(srcs) > 1:
                        landed = target / path.name
                    else:
                        landed = target
                    if landed == image.workdir / rel:
                        image.files.add(rel)
                    else:
                        image.misplaced.append(f"{rel} -> {landed}")
    return image


# ----------------------------------------------------------------------------- the imports


def module_file(module: str, root: Path = ROOT) -> Path | None:
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported(path: Path, module: str) -> set[str]:
    """Every module `path` imports, anywhere in the file (function-level imports run too)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                name = f"{base}.{node.module}" if node.module else base
            else:
                name = node.module or ""
            found.add(name)
            # `from pkg import sub` may import the submodule pkg.sub
            found |= {f"{name}.{alias.name}" for alias in node.names if module_file(f"{name}.{alias.name}")}
    return found


@dataclass
class Closure:
    ours: set[str] = field(default_factory=set)  # our modules, parent packages included
    third_party: set[str] = field(default_factory=set)  # top-level names outside the stdlib


def import_closure(entry: str, root: Path = ROOT) -> Closure:
    closure = Closure()
    todo = [entry]
    while todo:
        module = todo.pop()
        # Importing a.b.c runs a/__init__.py and a/b/__init__.py first.
        parts = module.split(".")
        for i in range(1, len(parts) + 1):
            name = ".".join(parts[:i])
            if name in closure.ours or module_file(name, root) is None:
                continue
            closure.ours.add(name)
            path = module_file(name, root)
            assert path is not None
            for imported in _imported(path, name):
                top = imported.split(".")[0]
                if top in OURS:
                    if module_file(imported, root) is not None:
                        todo.append(imported)
                    else:  # `from pkg import name` where name is not a submodule
                        todo.append(imported.rpartition(".")[0])
                elif top and top not in sys.stdlib_module_names and top != "__future__":
                    closure.third_party.add(top)
    return closure


# ----------------------------------------------------------------------------- third-party packages


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_closure(pins: list[str]) -> set[str]:
    """Distributions the image's pip install brings, with their dependencies (per this venv's
    metadata, which resolved the same pins)."""
    seen: set[str] = set()
    todo = [Requirement(pin) for pin in pins]
    while todo:
        req = todo.pop()
        name = _normal(req.name)
        if name in seen:
            continue
        seen.add(name)
        for extra in req.extras or {""}:
            env = {"extra": extra, "python_version": "3.11", "python_full_version": "3.11.11",
                   "sys_platform": "linux", "platform_system": "Linux", "os_name": "posix"}
            for spec in metadata.requires(req.name) or []:
                dep = Requirement(spec)
                if dep.marker is None or dep.marker.evaluate(env):
                    todo.append(dep)
    return seen


def distributions_of(top_level: str) -> set[str]:
    return {_normal(d) for d in metadata.packages_distributions().get(top_level, [])}


def problems(dockerfile_text: str, root: Path = ROOT, entrypoint: str = ENTRYPOINT,
             data_files: tuple[str, ...] = DATA_FILES) -> list[str]:
    """What the image would lack or get wrong; empty when it is complete."""
    image = parse_dockerfile(dockerfile_text, root)
    found = [f"copied to another path than in the repository: {m}" for m in image.misplaced]
    if image.entrypoint[-2:] != ["-m", entrypoint]:
        found.append(f"ENTRYPOINT {image.entrypoint} does not run `-m {entrypoint}`")
    closure = import_closure(entrypoint, root)
    for module in sorted(closure.ours):
        path = module_file(module, root)
        assert path is not None
        rel = path.relative_to(root).as_posix()
        if rel not in image.files:
            found.append(f"{entrypoint} imports {module}, but {rel} is not copied into the image")
    found += [f"{rel} is read at run time but not copied" for rel in data_files if rel not in image.files]
    installed = installed_closure(image.pip)
    for top in sorted(closure.third_party):
        dists = distributions_of(top)
        if not dists & installed:
            found.append(f"{entrypoint} imports {top} ({', '.join(sorted(dists)) or 'unknown distribution'}), "
                         "which the image's pip install does not bring")
    return found


# ----------------------------------------------------------------------------- the tests


def test_the_image_ships_every_module_the_agent_imports() -> None:
    assert problems(DOCKERFILE.read_text()) == []


def test_the_agent_imports_only_the_chain_client_of_the_package() -> None:
    closure = import_closure(ENTRYPOINT)
    package = sorted(m for m in closure.ours if m.split(".")[0] == "edgefabric")
    assert "edgefabric.chain.client" in package and "edgefabric.chain.registry" in package
    stray = [m for m in package if not any(m == a or m.startswith(a + ".") for a in AGENT_MAY_IMPORT[1:])
             and m != "edgefabric"]
    assert stray == [], f"the agent image would need {stray}: keep the agent on edgefabric.chain"
    assert not any(t.startswith("pulumi") for t in closure.third_party), closure.third_party


def test_the_controller_image_ships_every_module_the_daemon_imports() -> None:
    """The failover controller's image (dns.controller.deploy) by the same walk: a module or
    package the daemon reaches (uvloop, under the probes) missing from it is an ImportError
    in every core cluster."""
    text = CONTROLLER_DOCKERFILE.read_text()
    assert problems(text, entrypoint=CONTROLLER_ENTRYPOINT, data_files=()) == []
    assert problems(re.sub(r" uvloop==\S+", "", text), entrypoint=CONTROLLER_ENTRYPOINT, data_files=())


@pytest.mark.parametrize("dockerfile", [DOCKERFILE, CONTROLLER_DOCKERFILE], ids=["agent", "controller"])
def test_the_image_pins_what_requirements_pin(dockerfile: Path) -> None:
    pinned = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            req = Requirement(line)
            pinned[_normal(req.name)] = str(req.specifier)
    for pin in parse_dockerfile(dockerfile.read_text()).pip:
        req = Requirement(pin)
        assert pinned.get(_normal(req.name)) == str(req.specifier), f"{dockerfile} {pin} vs requirements.txt"


@pytest.mark.parametrize(("line", "missing"), [
    ("COPY edgefabric/chain/ edgefabric/chain/",
     "COPY edgefabric/chain/__init__.py edgefabric/chain/client.py edgefabric/chain/registry.py edgefabric/chain/"),
    ("COPY edgefabric/__init__.py edgefabric/", ""),
    ("COPY contracts/build/ServiceRegistry.json contracts/build/", ""),
    ("COPY contracts/build/DeploymentLedger.json contracts/build/", ""),
])
def test_a_missing_file_is_named(line: str, missing: str) -> None:
    text = DOCKERFILE.read_text()
    assert line in text
    found = problems(text.replace(line, missing))
    assert len(found) == 1, found


def test_a_missing_package_is_named() -> None:
    text = DOCKERFILE.read_text()
    assert " tenacity==" in text
    found = problems(re.sub(r" tenacity==\S+", "", text))
    assert found and all("tenacity" in f for f in found), found
