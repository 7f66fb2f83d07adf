"""The Responses API: ``POST /responses``, plain and streamed (``GET /responses/{id}`` is the
provider's memory of these)."""

from __future__ import annotations

import dataclasses
import secrets
import time
from typing import TYPE_CHECKING, Any

from failover.testing import _script
from failover.testing._stream import Event, Stream, split

if TYPE_CHECKING:
    from failover.testing._provider import FakeProvider


def _response(payload: dict[str, Any], output: list[Any], usage: Any) -> dict[str, Any]:
    return {
        "id": f"resp_{secrets.token_hex(12)}",
        "object": "response",
        "created_at": int(time.time()),
        "model": payload.get("model", ""),
        "status": "completed",
        "output": output,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "error": None,
        "incomplete_details": None,
        "usage": usage,
    }


def _usage(payload: dict[str, Any], text: str) -> dict[str, Any]:
    used = _script.usage(payload, text)
    return {
        "input_tokens": used["prompt_tokens"],
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": used["completion_tokens"],
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": used["total_tokens"],
    }


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _message(text: str) -> dict[str, Any]:
    item_id = f"msg_{secrets.token_hex(12)}"
    content = [_text_part(text)]
    return {
        "type": "message",
        "id": item_id,
        "role": "assistant",
        "status": "completed",
        "content": content,
    }


def answer(provider: FakeProvider, payload: dict[str, Any]) -> dict[str, Any]:
    """A completed ``response``, remembered for ``responses.retrieve``."""
    text = _script.text(provider, payload, payload.get("input"))
    response = _response(payload, [_message(text)], _usage(payload, text))
    provider._store(response)
    return response


def _item_events(item: dict[str, Any], index: int, pieces: int | None) -> list[Event]:
    """``output_item.added`` ... ``output_item.done`` for one output item."""
    added = {**item, "status": "in_progress", "content": []}
    text = item["content"][0]["text"]
    where = {"item_id": item["id"], "output_index": index, "content_index": 0}
    events = [
        Event({"type": "response.output_item.added", "output_index": index, "item": added}),
        Event({"type": "response.content_part.added", **where, "part": _text_part("")}),
    ]
    for piece in split(text, pieces):
        delta = {"type": "response.output_text.delta", **where, "delta": piece, "logprobs": []}
        events.append(Event(delta, content=True))
    done = {"type": "response.output_text.done", **where, "text": text, "logprobs": []}
    events.append(Event(done))
    events.append(
        Event({"type": "response.content_part.done", **where, "part": item["content"][0]})
    )
    events.append(Event({"type": "response.output_item.done", "output_index": index, "item": item}))
    return events


def stream(provider: FakeProvider, payload: dict[str, Any], pieces: int | None) -> Stream:
    """The event sequence of a streamed response, ``response.created`` to ``response.completed``."""
    final = answer(provider, payload)
    started = {**final, "status": "in_progress", "output": [], "usage": None}
    events = [
        Event({"type": "response.created", "response": started}),
        Event({"type": "response.in_progress", "response": started}),
    ]
    for index, item in enumerate(final["output"]):
        events += _item_events(item, index, pieces)
    events.append(Event({"type": "response.completed", "response": final}, terminal=True))
    # Every event is named by its type and numbered in order.
    named = [
        dataclasses.replace(
            event, data={**event.data, "sequence_number": number}, name=event.data["type"]
        )
        for number, event in enumerate(events)
    ]
    return Stream(named, done=False)
