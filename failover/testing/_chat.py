"""Chat completions: ``POST /chat/completions``, plain and streamed."""

from __future__ import annotations

import secrets
import time
from typing import TYPE_CHECKING, Any

from failover.testing import _script
from failover.testing._stream import Event, Stream, split

if TYPE_CHECKING:
    from failover.testing._provider import FakeProvider


def _head(payload: dict[str, Any], kind: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{secrets.token_hex(12)}",
        "object": kind,
        "created": int(time.time()),
        "model": payload.get("model", ""),
    }


def answer(provider: FakeProvider, payload: dict[str, Any]) -> dict[str, Any]:
    """A ``chat.completion``."""
    content = _script.text(provider, payload, payload.get("messages"))
    message = {"role": "assistant", "content": content, "refusal": None}
    choice = {"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}
    return {
        **_head(payload, "chat.completion"),
        "choices": [choice],
        "usage": _script.usage(payload, content),
    }


def stream(provider: FakeProvider, payload: dict[str, Any], pieces: int | None) -> Stream:
    """``chat.completion.chunk`` events: the role, the content, ``finish_reason``, usage."""
    content = _script.text(provider, payload, payload.get("messages"))
    with_usage = bool((payload.get("stream_options") or {}).get("include_usage"))
    head = _head(payload, "chat.completion.chunk")

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        return {**head, "choices": [choice], **({"usage": None} if with_usage else {})}

    events = [Event(chunk({"role": "assistant", "content": ""}))]
    events += [Event(chunk({"content": piece}), content=True) for piece in split(content, pieces)]
    events.append(Event(chunk({}, "stop"), terminal=True))
    if with_usage:
        usage = {**head, "choices": [], "usage": _script.usage(payload, content)}
        events.append(Event(usage, terminal=True))
    return Stream(events)
