"""Embeddings (``POST /embeddings``) and models (``GET /models``, ``GET /models/{id}``)."""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from typing import Any

from failover.testing._host import Host


def answer(provider: Host, payload: dict[str, Any]) -> dict[str, Any]:
    """A list of deterministic pseudo-embeddings, one per input."""
    raw = payload.get("input")
    # A string or one token list is a single input; otherwise a list of them.
    inputs = raw if isinstance(raw, list) and raw and not isinstance(raw[0], int) else [raw]
    dims = payload.get("dimensions") or 8
    data = []
    for index, item in enumerate(inputs):
        vector: Any = _vector(json.dumps(item), dims)
        if payload.get("encoding_format") == "base64":  # the openai client's default
            vector = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": vector})
    tokens = sum(len(json.dumps(item).split()) for item in inputs)
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return {"object": "list", "data": data, "model": payload.get("model", ""), "usage": usage}


def _vector(text: str, dims: int) -> list[float]:
    """A deterministic pseudo-embedding in [0, 1); exact in float32, so base64 round-trips."""
    digest = b""
    while len(digest) < dims:
        digest += hashlib.sha256(digest + text.encode()).digest()
    return [byte / 256 for byte in digest[:dims]]


def model(provider: Host, model_id: str) -> dict[str, Any]:
    """One entry of ``/models``."""
    return {"id": model_id, "object": "model", "created": 1_700_000_000, "owned_by": provider.name}


def models(provider: Host) -> dict[str, Any]:
    """The ``/models`` list: the provider's ``models``."""
    return {"object": "list", "data": [model(provider, m) for m in provider.models]}
