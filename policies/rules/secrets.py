"""Secrets: no input that looks like a key, password or token is a plain value.

An input is credential-like when its key says so (password, token, apiKey, privateKey,
secret, ...) or when its value is key material (a PEM private key, a well-known dev key).
Such an input must be a Pulumi secret, or a reference (`env:NAME` / `config:KEY`) that the
provider resolves inside its own method. Secretness is visible because the pack marks
secret strings (runtime.py); without that mark every secret would look plain.
"""

from __future__ import annotations

import re
from typing import Any

from pulumi_policy import ReportViolation, ResourceValidationArgs

from .common import SecretStr, is_unknown, leaves, plain, resource_policy, schema
from .devkeys import DEV_PRIVATE_KEYS

_CREDENTIAL_KEY = re.compile(
    r"(pass(word|wd|phrase)?|secret|token|api[-_]?key|private[-_]?key|access[-_]?key|"
    r"signing[-_]?key|routing[-_]?key|credential|auth[-_]?key|kubeconfig|mnemonic)",
    re.IGNORECASE,
)
# Keys that name, point at or describe a credential rather than hold it.
_NOT_A_VALUE = re.compile(
    r"(ref|refs|name|names|id|ids|arn|path|file|url|uri|ttl|type|length|seconds|version|enabled|"
    r"header|env|kind|mode|source|key[-_]?vault|count|validation)$",
    re.IGNORECASE,
)
_REFERENCE = re.compile(r"^(env:[A-Za-z_][A-Za-z0-9_]*|config:[A-Za-z][A-Za-z0-9_.-]*)$")
_SCALAR_TEXT = re.compile(r"^(true|false|-?[0-9]{1,5}(\.[0-9]+)?)$", re.IGNORECASE)
_PEM_PRIVATE = re.compile(r"-----BEGIN ([A-Z0-9 ]+ )?PRIVATE KEY-----")


def _credential_key(path: str, parent: Any) -> bool:
    key = re.split(r"[.\[]", path)[-1]
    # Kubernetes env entries and docker envs: {name: DB_PASSWORD, value: ...}.
    if key == "value" and isinstance(parent, dict) and isinstance(parent.get("name"), str):
        key = parent["name"]
    return bool(_CREDENTIAL_KEY.search(key)) and not _NOT_A_VALUE.search(key)


def _is_key_material(value: str) -> bool:
    return bool(_PEM_PRIVATE.search(value)) or value.lower().removeprefix("0x") in DEV_PRIVATE_KEYS


def _validate(args: ResourceValidationArgs, report: ReportViolation) -> None:
    allowed = set(args.get_config().get("allowedPaths") or [])
    props = plain(args.props)
    for path, value, parent in leaves({k: v for k, v in props.items() if not k.startswith("__")}):
        if path in allowed or is_unknown(value) or not isinstance(value, str) or not value:
            continue
        # Provider configs carry every setting as a string: "true", "false", "3" are no secrets.
        if isinstance(value, SecretStr) or _REFERENCE.match(value) or _SCALAR_TEXT.match(value):
            continue
        if _is_key_material(value):
            report(f"{args.resource_type} '{args.name}' input {path} holds private key material as a plain value")
        elif _credential_key(path, parent):
            report(f"{args.resource_type} '{args.name}' input {path} looks like a credential and is a plain value")


no_plaintext_secrets = resource_policy(
    "no-plaintext-secrets",
    "No input that looks like a key, password or token is a plain (non-secret) value.",
    "Keep the value out of the program: reference it as env:NAME or config:KEY (set with "
    "`pulumi config set --secret KEY`) and resolve it with edgefabric.tiers.secret_output(), which "
    "wraps it as a secret; Kubernetes env vars take valueFrom.secretKeyRef.",
    _validate,
    schema(allowedPaths={"type": "array", "items": {"type": "string"}}),
)

POLICIES = [no_plaintext_secrets]
