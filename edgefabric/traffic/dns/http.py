"""Minimal JSON-over-HTTP helper for REST backends (stdlib only)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

from edgefabric.traffic.dns.base import DnsBackendError, TransientError

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


def json_request(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: Any = None,
    timeout_s: float = 10.0,
    ok_missing: bool = False,
) -> tuple[int, Any]:
    """Send one request. Raises TransientError for retryable failures.

    With ok_missing, a 404 returns (404, None) instead of raising: callers use
    it for "read what is there" and "delete what may already be gone".
    """
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    for key, value in headers.items():
        req.add_header(key, value)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            raw = resp.read()
            return resp.status, (json.loads(raw) if raw else None)
    except urllib.error.HTTPError as exc:
        detail = exc.read()[:300].decode("utf-8", "replace")
        if exc.code == 404 and ok_missing:
            return 404, None
        if exc.code in RETRYABLE_STATUS:
            raise TransientError(f"{method} {url}: HTTP {exc.code}: {detail}") from exc
        raise DnsBackendError(f"{method} {url}: HTTP {exc.code}: {detail}") from exc
    except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
        raise TransientError(f"{method} {url}: {exc}") from exc
