"""Pin our own images by digest in the stack files, as the images workflow does after a push.

    venv/bin/python -m tooling.pin_images --stack dev --stack staging \\
        --image ghcr.io/edgefabric/heartbeat-agent:0.1.0@sha256:<64 hex> \\
        --image ghcr.io/edgefabric/failover-controller:0.1.0@sha256:<64 hex>

Each `--image` names a repository of ours and the reference to run. It lands where the stack
names that image: `registry.agentImage` (heartbeat agent) and, in a stack that deploys the
failover controller, `dns.controller.image`. Only those values change: the file is edited at
the values' positions (PyYAML's node marks), so comments, order and quoting elsewhere stay as
they were, and the result is validated with the stack's own config models before it is
written. A repository no stack key takes is an error, as is a reference without a digest.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from edgefabric.config import NAMESPACE, ConfigError, load_config
from edgefabric.config.loading import raw_from_stack_text
from edgefabric.tiers.images import repository

ROOT = Path(__file__).resolve().parents[1]
DIGEST_REF = re.compile(r"^[a-z0-9./-]+(:[\w.-]+)?@sha256:[0-9a-f]{64}$")
# Repository -> the stack key that names it: (`edgefabric:<top>`, the dotted path below it).
KEYS: dict[str, tuple[str, str]] = {
    "ghcr.io/edgefabric/heartbeat-agent": ("registry", "agentImage"),
    "ghcr.io/edgefabric/failover-controller": ("dns", "controller.image"),
}


class PinError(ValueError):
    """A bad reference, or a stack file the pins cannot be written into."""


@dataclass(frozen=True)
class Pin:
    top: str  # the `edgefabric:<top>` key
    path: tuple[str, ...]  # keys below it
    ref: str


def pins_for(refs: Sequence[str]) -> list[Pin]:
    out = []
    for ref in refs:
        if not DIGEST_REF.match(ref):
            raise PinError(f"--image {ref!r}: a reference pinned by digest, <repository>[:tag]@sha256:<64 hex>")
        repo = repository(ref)
        if repo not in KEYS:
            raise PinError(f"--image {ref!r}: {repo} is not an image of ours a stack key names; known: "
                           f"{', '.join(KEYS)}")
        top, path = KEYS[repo]
        out.append(Pin(top, tuple(path.split(".")), ref))
    return out


def _child(node: yaml.Node, key: str) -> tuple[yaml.ScalarNode, yaml.Node] | None:
    if not isinstance(node, yaml.MappingNode):
        return None
    for k, v in node.value:
        if isinstance(k, yaml.ScalarNode) and k.value == key:
            return k, v
    return None


def _offset(text: str, line: int, column: int) -> int:
    lines = text.splitlines(keepends=True)
    return sum(len(x) for x in lines[:line]) + column


def apply(text: str, pin: Pin) -> str:
    """`text` with the pin's value set; unchanged when the stack does not use that image
    (`dns.controller` absent). A key absent under a present block is added to it."""
    root = yaml.compose(text)
    found = _child(root, "config") if root is not None else None
    block = _child(found[1], f"{NAMESPACE}:{pin.top}") if found else None
    if block is None:
        if pin.top == "registry":
            raise PinError(f"no {NAMESPACE}:registry block to pin {pin.ref} into")
        return text
    node = block[1]
    for key in pin.path[:-1]:
        nxt = _child(node, key)
        if nxt is None:
            return text  # the block that would run the image is off in this stack
        node = nxt[1]
    leaf = _child(node, pin.path[-1])
    if leaf is not None:
        value = leaf[1]
        if not isinstance(value, yaml.ScalarNode):
            raise PinError(f"{NAMESPACE}:{pin.top}.{'.'.join(pin.path)} is not a scalar")
        start = _offset(text, value.start_mark.line, value.start_mark.column)
        end = _offset(text, value.end_mark.line, value.end_mark.column)
        return text[:start] + pin.ref + text[end:]
    if not isinstance(node, yaml.MappingNode) or not node.value or node.flow_style:
        raise PinError(f"cannot add {pin.path[-1]} to {NAMESPACE}:{pin.top} (not a block mapping)")
    first_key = node.value[0][0]
    indent = " " * first_key.start_mark.column
    at = _offset(text, first_key.start_mark.line, 0)
    return text[:at] + f"{indent}{pin.path[-1]}: {pin.ref}\n" + text[at:]


def pin_stack(path: Path, pins: Sequence[Pin]) -> bool:
    """Write the pins into one stack file after validating the result; True when it changed."""
    before = path.read_text()
    after = before
    for pin in pins:
        after = apply(after, pin)
    if after == before:
        return False
    try:
        load_config(raw_from_stack_text(after))
    except ConfigError as exc:
        raise PinError(f"{path.name} would no longer validate:\n{exc}") from None
    path.write_text(after)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", action="append", required=True, help="a stack whose file to edit (repeat)")
    parser.add_argument("--image", action="append", required=True, help="<repository>[:tag]@sha256:<digest> (repeat)")
    parser.add_argument("--project-dir", type=Path, default=ROOT)
    args = parser.parse_args(argv)
    try:
        pins = pins_for(args.image)
        for stack in args.stack:
            path = args.project_dir / f"Pulumi.{stack}.yaml"
            if not path.is_file():
                raise PinError(f"--stack {stack}: no {path}")
            print(f"{path.name}: {'pinned' if pin_stack(path, pins) else 'unchanged'}")
    except PinError as exc:
        print(f"pin_images: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
