"""Chat completions: ``POST /chat/completions``, plain and streamed, text or tool calls."""

from __future__ import annotations

import secrets
import time
from typing import Any

from failover.testing import _script
from failover.testing._host import Host
from failover.testing._schema import schema_of
from failover.testing._stream import Event, Stream, split


def _output(provider: Host, payload: dict[str, Any]) -> _script.Output:
    schema = schema_of(payload.get("response_format"))
    return _script.output(provider._reply, provider.name, payload, payload.get("messages"), schema)


def _head(payload: dict[str, Any], kind: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{secrets.token_hex(12)}",
        "object": kind,
        "created": int(time.time()),
        "model": payload.get("model", ""),
    }


def _finish(output: _script.Output) -> str:
    return "tool_calls" if output.calls else "stop"


def answer(provider: Host, payload: dict[str, Any]) -> dict[str, Any]:
    """A ``chat.completion``."""
    output = _output(provider, payload)
    message: dict[str, Any] = {"role": "assistant", "content": output.text, "refusal": None}
    if output.calls:
        message["content"] = None
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in output.calls
        ]
    choice = {"index": 0, "message": message, "finish_reason": _finish(output), "logprobs": None}
    return {
        **_head(payload, "chat.completion"),
        "choices": [choice],
        "usage": _script.usage(payload, output),
    }


def stream(provider: Host, payload: dict[str, Any], pieces: int | None) -> Stream:
    """``chat.completion.chunk`` events: the role, the content or the tool calls piece by
    piece, ``finish_reason``, then usage when ``stream_options.include_usage``."""
    output = _output(provider, payload)
    with_usage = bool((payload.get("stream_options") or {}).get("include_usage"))
    head = _head(payload, "chat.completion.chunk")

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        return {**head, "choices": [choice], **({"usage": None} if with_usage else {})}

    events = [Event(chunk({"role": "assistant", "content": None if output.calls else ""}))]
    if not output.calls:
        events += [Event(chunk({"content": p}), content=True) for p in split(output.text, pieces)]
    for index, call in enumerate(output.calls):
        # The first piece names the call; the others carry its arguments.
        first = {"index": index, "id": call.id, "type": "function"}
        events.append(
            Event(
                chunk({"tool_calls": [{**first, "function": {"name": call.name, "arguments": ""}}]})
            )
        )
        for piece in split(call.arguments, pieces):
            delta = {"tool_calls": [{"index": index, "function": {"arguments": piece}}]}
            events.append(Event(chunk(delta), content=True))
    events.append(Event(chunk({}, _finish(output)), terminal=True))
    if with_usage:
        usage = {**head, "choices": [], "usage": _script.usage(payload, output)}
        events.append(Event(usage, terminal=True))
    return Stream(events)
