"""The Responses API: ``POST /responses``, plain and streamed, text or function calls
(``GET /responses/{id}`` is the provider's memory of these)."""

from __future__ import annotations

import dataclasses
import secrets
import time
from typing import Any

from failover.testing import _script
from failover.testing._host import Host
from failover.testing._schema import schema_of
from failover.testing._stream import Event, Stream, split


def _usage(payload: dict[str, Any], output: _script.Output) -> dict[str, Any]:
    used = _script.usage(payload, output)
    return {
        "input_tokens": used["prompt_tokens"],
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": used["completion_tokens"],
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": used["total_tokens"],
    }


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _items(output: _script.Output) -> list[dict[str, Any]]:
    """The output items: one message, or one ``function_call`` per tool call."""
    done = {"status": "completed"}
    if not output.calls:
        content = [_text_part(output.text)]
        item_id = f"msg_{secrets.token_hex(12)}"
        return [{"type": "message", "id": item_id, "role": "assistant", **done, "content": content}]
    return [
        {
            "type": "function_call",
            "id": f"fc_{secrets.token_hex(12)}",
            "call_id": call.id,
            "name": call.name,
            "arguments": call.arguments,
            **done,
        }
        for call in output.calls
    ]


def answer(provider: Host, payload: dict[str, Any]) -> dict[str, Any]:
    """A completed ``response``, remembered for ``responses.retrieve``."""
    schema = schema_of((payload.get("text") or {}).get("format"))
    output = _script.output(provider._reply, provider.name, payload, payload.get("input"), schema)
    response = {
        "id": f"resp_{secrets.token_hex(12)}",
        "object": "response",
        "created_at": int(time.time()),
        "model": payload.get("model", ""),
        "status": "completed",
        "output": _items(output),
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": payload.get("tools") or [],
        "error": None,
        "incomplete_details": None,
        "usage": _usage(payload, output),
    }
    provider._store(response)
    return response


def _message_events(item: dict[str, Any], where: dict[str, Any], pieces: int | None) -> list[Event]:
    """Between a message's ``output_item.added`` and ``output_item.done``."""
    part = item["content"][0]
    where = {**where, "content_index": 0}
    events = [Event({"type": "response.content_part.added", **where, "part": _text_part("")})]
    for piece in split(part["text"], pieces):
        delta = {"type": "response.output_text.delta", **where, "delta": piece, "logprobs": []}
        events.append(Event(delta, content=True))
    done = {"type": "response.output_text.done", **where, "text": part["text"], "logprobs": []}
    events.append(Event(done))
    events.append(Event({"type": "response.content_part.done", **where, "part": part}))
    return events


def _call_events(item: dict[str, Any], where: dict[str, Any], pieces: int | None) -> list[Event]:
    """Between a function call's ``output_item.added`` and ``output_item.done``."""
    events = [
        Event({"type": "response.function_call_arguments.delta", **where, "delta": p}, content=True)
        for p in split(item["arguments"], pieces)
    ]
    done = {"type": "response.function_call_arguments.done", **where}
    events.append(Event({**done, "arguments": item["arguments"]}))
    return events


def stream(provider: Host, payload: dict[str, Any], pieces: int | None) -> Stream:
    """The event sequence of a streamed response, ``response.created`` to ``response.completed``."""
    final = answer(provider, payload)
    started = {**final, "status": "in_progress", "output": [], "usage": None}
    events = [
        Event({"type": "response.created", "response": started}),
        Event({"type": "response.in_progress", "response": started}),
    ]
    for index, item in enumerate(final["output"]):
        where = {"item_id": item["id"], "output_index": index}
        empty: dict[str, Any] = {"content": []} if item["type"] == "message" else {"arguments": ""}
        added = {**item, "status": "in_progress", **empty}
        events.append(
            Event({"type": "response.output_item.added", "output_index": index, "item": added})
        )
        body = _message_events if item["type"] == "message" else _call_events
        events += body(item, where, pieces)
        events.append(
            Event({"type": "response.output_item.done", "output_index": index, "item": item})
        )
    events.append(Event({"type": "response.completed", "response": final}, terminal=True))
    # Every event is named by its type and numbered in order.
    named = [
        dataclasses.replace(
            event, data={**event.data, "sequence_number": number}, name=event.data["type"]
        )
        for number, event in enumerate(events)
    ]
    return Stream(named, done=False)
