"""Legacy completions: ``POST /completions``, plain and streamed."""

from __future__ import annotations

import secrets
import time
from typing import Any

from failover.testing import _script
from failover.testing._host import Host
from failover.testing._stream import Event, Stream, split


def _prompt(payload: dict[str, Any]) -> Any:
    prompt = payload.get("prompt", "")
    return prompt[0] if isinstance(prompt, list) and prompt else prompt  # one prompt of a batch


def _output(provider: Host, payload: dict[str, Any]) -> _script.Output:
    output = _script.output(provider._reply, provider.name, payload, _prompt(payload), None)
    if output.calls:
        raise ValueError("legacy completions cannot answer with tool calls")
    return output


def _head(payload: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": f"cmpl-{secrets.token_hex(12)}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": payload.get("model", ""),
    }


def _choice(text: str, finish: str | None) -> dict[str, Any]:
    return {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}


def answer(provider: Host, payload: dict[str, Any]) -> dict[str, Any]:
    """A ``text_completion``."""
    output = _output(provider, payload)
    choices = [_choice(output.text, "stop")]
    return {**_head(payload), "choices": choices, "usage": _script.usage(payload, output)}


def stream(provider: Host, payload: dict[str, Any], pieces: int | None) -> Stream:
    """``text_completion`` chunks: the text, then an empty one with ``finish_reason``, usage."""
    output = _output(provider, payload)
    with_usage = bool((payload.get("stream_options") or {}).get("include_usage"))
    head = _head(payload)
    extra = {"usage": None} if with_usage else {}
    events = [
        Event({**head, "choices": [_choice(piece, None)], **extra}, content=True)
        for piece in split(output.text, pieces)
    ]
    events.append(Event({**head, "choices": [_choice("", "stop")], **extra}, terminal=True))
    if with_usage:
        usage = {**head, "choices": [], "usage": _script.usage(payload, output)}
        events.append(Event(usage, terminal=True))
    return Stream(events)
