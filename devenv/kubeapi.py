"""A small Kubernetes API client for the local clusters, and the one error of devenv's Kubernetes.

Apart from devenv/kubernetes.py (which builds the clusters, their PKI among them) so that a
process that only talks to a cluster, such as the LoadBalancer controller, does not load
`cryptography`: ~10 MiB resident less, and it counts toward the control planes' memory.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import requests
import yaml


class KubernetesError(RuntimeError):
    """A binary is missing, a component failed to start, or the cluster did not become ready."""


class KubeApi:
    """A small Kubernetes API client over `requests` with a client certificate.

    Paths are API paths ("/api/v1/nodes"); methods raise KubernetesError on HTTP errors unless
    the status is in `ok`.
    """

    def __init__(
        self, server: str, ca_file: Path, cert_file: Path, key_file: Path, timeout: float = 10.0
    ) -> None:
        self.server = server.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        self.session.verify = str(ca_file)
        self.session.cert = (str(cert_file), str(key_file))
        self.session.trust_env = False  # never a proxy: everything is on loopback

    @classmethod
    def from_kubeconfig(cls, path: Path, context: str | None = None) -> KubeApi:
        """From a kubeconfig with embedded (-data) or file certificates."""
        cfg = yaml.safe_load(Path(path).read_text())
        ctx_name = context or cfg["current-context"]
        ctx = next(c["context"] for c in cfg["contexts"] if c["name"] == ctx_name)
        cluster = next(c["cluster"] for c in cfg["clusters"] if c["name"] == ctx["cluster"])
        user = next(u["user"] for u in cfg["users"] if u["name"] == ctx["user"])
        tmp = Path(tempfile.mkdtemp(prefix="kubeapi-"))
        os.chmod(tmp, 0o700)

        def material(obj: dict[str, Any], key: str, name: str) -> Path:
            if f"{key}-data" in obj:
                import base64

                out = tmp / name
                out.write_bytes(base64.b64decode(obj[f"{key}-data"]))
                out.chmod(0o600)
                return out
            return Path(obj[key])

        return cls(
            cluster["server"],
            material(cluster, "certificate-authority", "ca.crt"),
            material(user, "client-certificate", "client.crt"),
            material(user, "client-key", "client.key"),
        )

    def request(self, method: str, path: str, body: Any = None, *, ok: Iterable[int] = (),
                content_type: str = "application/json", timeout: float | None = None,
                **params: Any) -> tuple[int, Any]:  # fmt: skip
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        data = None if body is None else json.dumps(body)
        resp = self.session.request(
            method, self.server + path, data=data, headers=headers, params=params or None,
            timeout=timeout or self.timeout,
        )  # fmt: skip
        try:
            payload = resp.json()
        except ValueError:
            payload = resp.text
        if resp.status_code >= 400 and resp.status_code not in set(ok):
            message = payload.get("message") if isinstance(payload, dict) else payload
            raise KubernetesError(f"{method} {path}: HTTP {resp.status_code}: {message}")
        return resp.status_code, payload

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, **params)[1]

    def create(self, path: str, body: Any) -> Any:
        return self.request("POST", path, body)[1]

    def merge_patch(self, path: str, body: Any) -> Any:
        return self.request("PATCH", path, body, content_type="application/merge-patch+json")[1]

    def delete(self, path: str) -> None:
        self.request("DELETE", path, ok=(404,))

    def wait_for(self, what: str, check: Callable[[], Any], timeout: float, interval: float = 0.2,
                 hint: str = "") -> Any:  # fmt: skip
        """Call `check` until it returns something truthy; KubernetesError after `timeout`."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            try:
                last = check()
                if last:
                    return last
            except (KubernetesError, requests.RequestException) as exc:
                last = exc
            if time.monotonic() > deadline:
                raise KubernetesError(f"{what}: not within {timeout:.0f} s (last: {last!r}){hint}")
            time.sleep(interval)
