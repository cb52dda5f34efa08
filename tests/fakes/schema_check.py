"""Strict validators for the two schema dialects the fakes serve.

- Swagger 2.0 / OpenAPI (Azure REST specs): `$ref`, `allOf`, `type`, `enum`,
  `items`, `properties`, `additionalProperties`, `readOnly`, `required`.
- Google API discovery documents: `$ref` by schema id, `type`, `format`,
  `enum`, `items`, `properties`, `additionalProperties`, `readOnly`.

"Strict" means stricter than a JSON-schema reading of the specs, on purpose:
unknown properties are rejected (the vendors reject or silently drop them,
both of which would hide a bug in our request building), read-only properties
must not be sent, and enum values must be among the published ones.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

Resolver = Callable[[str], Mapping[str, Any]]

_INT_FORMATS = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1), "uint32": (0, 2**32 - 1)}


def _type_ok(kind: str, value: Any, fmt: str | None) -> bool:
    if kind == "string":
        # Discovery encodes int64/uint64 as strings.
        return isinstance(value, str)
    if kind == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            return False
        lo, hi = _INT_FORMATS.get(fmt or "", (None, None))
        return lo is None or lo <= value <= hi  # type: ignore[operator]
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "array":
        return isinstance(value, list)
    if kind == "object":
        return isinstance(value, dict)
    return True


class SchemaValidator:
    """Validate JSON values against one document's schemas."""

    def __init__(self, resolve: Resolver, ref_key: str = "$ref") -> None:
        self._resolve = resolve
        self._ref_key = ref_key

    def _flatten(self, schema: Mapping[str, Any]) -> dict[str, Any]:
        """Resolve $ref and merge allOf into one schema (properties unioned)."""
        while self._ref_key in schema:
            schema = self._resolve(schema[self._ref_key])
        out = {k: v for k, v in schema.items() if k != "allOf"}
        props = dict(out.get("properties", {}))
        required = list(out.get("required", []))
        for part in schema.get("allOf", []):
            flat = self._flatten(part)
            props = {**flat.get("properties", {}), **props}
            required += flat.get("required", [])
            out.setdefault("type", flat.get("type"))
        if props:
            out["properties"] = props
        if required:
            out["required"] = required
        if out.get("type") is None and props:
            out["type"] = "object"
        return out

    def errors(
        self, schema: Mapping[str, Any], value: Any, path: str = "$", request: bool = True
    ) -> list[str]:
        s = self._flatten(schema)
        errs: list[str] = []
        kind = s.get("type")
        if kind and not _type_ok(kind, value, s.get("format")):
            return [
                f"{path}: expected {kind}{'/' + s['format'] if s.get('format') else ''}, got {type(value).__name__} {value!r:.60}"
            ]
        if "enum" in s and value not in s["enum"]:
            errs.append(f"{path}: {value!r} not one of {s['enum']}")
        if kind == "array" and "items" in s:
            for i, item in enumerate(value):
                errs += self.errors(s["items"], item, f"{path}[{i}]", request)
        if isinstance(value, dict) and (kind == "object" or "properties" in s):
            props = s.get("properties", {})
            extra = s.get("additionalProperties")
            for key, item in value.items():
                if key in props:
                    sub = self._flatten(props[key])
                    if request and (props[key].get("readOnly") or sub.get("readOnly")):
                        errs.append(f"{path}.{key}: read-only property must not be sent")
                        continue
                    errs += self.errors(props[key], item, f"{path}.{key}", request)
                elif isinstance(extra, Mapping):
                    errs += self.errors(extra, item, f"{path}.{key}", request)
                elif extra is True:
                    continue
                else:
                    errs.append(f"{path}.{key}: unknown property (allowed: {sorted(props)})")
            for key in s.get("required", []):
                if key not in value:
                    errs.append(f"{path}.{key}: required property missing")
        return errs
