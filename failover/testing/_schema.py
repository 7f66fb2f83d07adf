"""A minimal JSON value that satisfies a JSON schema: structured output with no script."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

_MAX_DEPTH = 64  # deeper than any real schema: past it, a required cycle has no instance
_FORMATS = {  # a valid example of each common string format
    "date-time": "1970-01-01T00:00:00Z",
    "date": "1970-01-01",
    "time": "00:00:00Z",
    "duration": "PT0S",
    "email": "user@example.com",
    "hostname": "example.com",
    "ipv4": "127.0.0.1",
    "ipv6": "::1",
    "uri": "https://example.com/",
    "url": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
}


def schema_of(response_format: Any) -> Mapping[str, Any] | None:
    """The schema that a chat ``response_format`` or a Responses ``text.format`` asks for."""
    if not isinstance(response_format, Mapping):
        return None
    if response_format.get("type") == "json_object":
        return {"type": "object"}
    if response_format.get("type") != "json_schema":
        return None
    # chat nests it under "json_schema"; the Responses API puts it at the top level
    holder = response_format.get("json_schema", response_format)
    schema = holder.get("schema") if isinstance(holder, Mapping) else None
    return schema if isinstance(schema, Mapping) else {}


def instance(schema: Mapping[str, Any]) -> Any:
    """The smallest value the schema accepts: required properties only, no optional items,
    ``null`` wherever it is allowed, the first ``enum`` value, zero or the nearest bound.

    Covers objects, arrays (and tuples), strings (length and common formats), numbers,
    integers, booleans, ``enum``/``const``, ``anyOf``/``oneOf``/``allOf`` and
    ``$ref`` into ``$defs``; ``pattern`` and ``multipleOf`` are not honoured.
    """
    return _Walk(schema).value(schema, 0)


class _Walk:
    def __init__(self, root: Mapping[str, Any]) -> None:
        self.root = root

    def value(self, node: Any, depth: int) -> Any:
        if depth > _MAX_DEPTH:
            raise ValueError("the schema has no finite instance (a required cycle?)")
        if not isinstance(node, Mapping):
            return None  # `true` (or a malformed node): anything goes
        if "$ref" in node:
            return self.value(self.resolve(node["$ref"]), depth + 1)
        if "const" in node:
            return node["const"]
        if node.get("enum"):
            return node["enum"][0]
        for key in ("anyOf", "oneOf"):
            if node.get(key):
                return self.value(_nullable(node[key]) or node[key][0], depth + 1)
        if node.get("allOf"):
            return self.every(node["allOf"], depth)
        kind = node.get("type")
        if isinstance(kind, list):
            kind = "null" if "null" in kind or not kind else kind[0]
        if kind is None:
            shaped = "properties" in node or "required" in node
            kind = "object" if shaped else "array" if "items" in node else "null"
        return self.typed(node, kind, depth)

    def typed(self, node: Mapping[str, Any], kind: str, depth: int) -> Any:
        if kind == "object":
            properties = node.get("properties") or {}
            required = node.get("required") or []
            return {name: self.value(properties.get(name, {}), depth + 1) for name in required}
        if kind == "array":
            prefix = [self.value(item, depth + 1) for item in node.get("prefixItems") or []]
            missing = max(0, int(node.get("minItems", 0)) - len(prefix))
            filler = self.value(node.get("items", {}), depth + 1) if missing else None
            return prefix + [filler] * missing
        if kind == "string":
            return _string(node)
        if kind in ("number", "integer"):
            return _number(node, kind == "integer")
        return False if kind == "boolean" else None

    def every(self, parts: list[Any], depth: int) -> Any:
        """``allOf``: the objects' properties merged (pydantic wraps a ``$ref`` in one)."""
        values = [self.value(part, depth + 1) for part in parts]
        if all(isinstance(value, dict) for value in values):
            return {key: item for value in values for key, item in value.items()}
        return values[0]

    def resolve(self, ref: str) -> Any:
        if not ref.startswith("#"):
            raise ValueError(f"only local $ref are supported, got {ref!r}")
        node: Any = self.root
        for token in filter(None, ref[1:].split("/")):
            node = node[token.replace("~1", "/").replace("~0", "~")]
        return node


def _nullable(options: list[Any]) -> Any:
    """The ``{"type": "null"}`` option, if there is one (the smallest choice)."""
    return next((o for o in options if isinstance(o, Mapping) and o.get("type") == "null"), None)


def _string(node: Mapping[str, Any]) -> str:
    text = _FORMATS.get(str(node.get("format")), "")
    minimum = int(node.get("minLength", 0))
    text = text.ljust(minimum, "a") if len(text) < minimum else text
    return text[: int(node["maxLength"])] if "maxLength" in node else text


def _number(node: Mapping[str, Any], integer: bool) -> int | float:
    """Zero, else the first value near the bounds that keeps within all of them."""
    minimum, above = node.get("minimum"), node.get("exclusiveMinimum")
    maximum, below = node.get("maximum"), node.get("exclusiveMaximum")

    def fits(x: float) -> bool:
        return (
            (minimum is None or x >= minimum)
            and (above is None or x > above)
            and (maximum is None or x <= maximum)
            and (below is None or x < below)
        )

    lows = [b for b in (minimum, above) if b is not None]
    highs = [b for b in (maximum, below) if b is not None]
    near = [*lows, *(b + 1 for b in lows), *highs, *(b - 1 for b in highs)]
    if lows and highs:
        near.append((max(lows) + min(highs)) / 2)
    if integer:
        near = [rounded for x in near for rounded in (math.ceil(x), math.floor(x))]
    value = next((x for x in [0, *near] if fits(x)), 0)
    return int(value) if integer else float(value)
