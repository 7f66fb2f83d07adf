"""What an API family hands the server to stream: events the faults can cut, pace or trim."""

from __future__ import annotations

import dataclasses
import json
from typing import Any


@dataclasses.dataclass(frozen=True)
class Event:
    """One server-sent event."""

    data: dict[str, Any]
    name: str | None = None  # the SSE ``event:`` field (the Responses API names its events)
    content: bool = False  # a piece of the answer: ``trickle()`` paces these
    terminal: bool = False  # what marks a complete answer: ``truncate_stream()`` drops these

    def encode(self) -> bytes:
        head = f"event: {self.name}\n" if self.name else ""
        return f"{head}data: {json.dumps(self.data)}\n\n".encode()


@dataclasses.dataclass(frozen=True)
class Stream:
    """A streamed answer: its events, then ``data: [DONE]`` when ``done``."""

    events: list[Event]
    done: bool = True


def split(text: str, pieces: int | None) -> list[str]:
    """``text`` in exactly ``pieces`` parts (some empty if it is short), or, for None, in
    about four parts of at least one character."""
    if pieces is None:
        size = max(1, -(-len(text) // 4))
        return [text[i : i + size] for i in range(0, len(text), size)] or [""]
    size, extra = divmod(len(text), pieces)
    parts, start = [], 0
    for index in range(pieces):
        end = start + size + (index < extra)
        parts.append(text[start:end])
        start = end
    return parts
