"""What the fake provider answers: the test's ``reply=`` script, or an echo."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from failover.testing._provider import FakeProvider

#: A custom responder: gets the request JSON, returns the reply's text content.
Reply = Callable[[dict[str, Any]], str]


def text(provider: FakeProvider, payload: dict[str, Any], items: Any) -> str:
    """The answer's text: the script's, else ``"[name] <last user message>"``."""
    script = provider._reply
    if script is not None:
        return script if isinstance(script, str) else script(payload)
    if isinstance(items, str):  # a prompt, or the Responses API's plain string input
        return f"[{provider.name}] {items}"
    said = ""
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict) and item.get("role") == "user":
            said = _text_of(item.get("content"))
    return f"[{provider.name}] {said}"


def _text_of(content: Any) -> str:
    """The text of a message ``content``: a string or a list of text parts."""
    if isinstance(content, str):
        return content
    parts = content if isinstance(content, list) else []
    return " ".join(str(p.get("text", "")) for p in parts if isinstance(p, dict))


def usage(payload: dict[str, Any], output: str) -> dict[str, int]:
    """Chat-style token counts: rough word counts, deterministic and good enough for tests."""
    asked = payload.get("messages", payload.get("input", payload.get("prompt", "")))
    prompt, done = len(json.dumps(asked).split()), len(output.split())
    return {"prompt_tokens": prompt, "completion_tokens": done, "total_tokens": prompt + done}
