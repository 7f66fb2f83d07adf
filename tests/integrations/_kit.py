"""What the framework tests share: a failing primary, a backup, and failover's clients.

Every framework gets ``failover.OpenAI`` / ``failover.AsyncOpenAI`` over two fake
providers on 127.0.0.1; the primary fails in one of three ways. Where a framework needs
more than an echo, the backup plays its model by a script (``reply=``): structured
output, or a tool call then, once the tool's result comes back, a text answer.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

import openai
import pytest

from failover import FailoverError, Provider
from failover.testing import FakeProvider, ToolCall

MODEL = "gpt-4o-mini"

#: How the primary fails: an error status, a dropped connection, a hang past attempt_timeout.
FAULTS: dict[str, Callable[[FakeProvider], None]] = {
    "503": lambda fake: fake.fail(503),
    "reset": lambda fake: fake.reset(),
    "hang": lambda fake: fake.hang(10),
}
ATTEMPT_TIMEOUT = 0.5


def provider(fake: FakeProvider) -> Provider:
    return Provider(fake.name, base_url=fake.base_url, api_key=fake.api_key)


def options() -> dict[str, Any]:
    """The clients' failover options: no breaker and no same-provider retry (each test
    sees each fault go to the backup at once), a short hang."""
    return {"breaker": None, "retry": None, "attempt_timeout": ATTEMPT_TIMEOUT}


Reply = Callable[[dict[str, Any]], Any]
#: What a scripted model says when the request does not offer the tool it means to call:
#: no test expects it, so the test fails on the framework's request, not on a timeout.
NOT_OFFERED = "(the tool I was scripted to call was not offered)"


def json_reply(payload: dict[str, Any]) -> Reply:
    """A fake's ``reply=``: ``payload`` as JSON, for structured output."""
    return lambda request: json.dumps(payload)


def tool_reply(call: ToolCall, answer: Callable[[str], str] | None = None) -> Reply:
    """A fake's ``reply=`` that plays an agent's model: it makes ``call`` while the request
    carries no result of it, then answers ``answer(result)``; without ``answer`` it always
    makes the call (structured output through a forced tool call)."""

    def reply(request: dict[str, Any]) -> str | list[ToolCall]:
        if call.name not in offered(request):
            return NOT_OFFERED
        result = tool_result(request, call.name)
        if result is None or answer is None:
            return [call]
        return answer(result)

    return reply


#: The agent tests' model: call weather(Lyon), then say what it returned.
WEATHER = tool_reply(ToolCall("weather", {"city": "Lyon"}), lambda result: f"It is {result}.")
WEATHER_ANSWER = "It is sunny in Lyon."


@dataclasses.dataclass(frozen=True)
class Scripted:
    """A backup that plays the model by a script, and failover's clients: the primary, then it."""

    backup: FakeProvider
    client: openai.OpenAI
    aclient: openai.AsyncOpenAI


@dataclasses.dataclass(frozen=True)
class Weather:
    """An agent's tool round trip: failover's clients on a backup scripted with ``WEATHER``,
    and the tool that model calls, for each framework to wrap."""

    chain: Scripted
    primary: FakeProvider
    ran: list[str]  # the cities the tool was asked about

    def weather(self, city: str) -> str:
        """The weather in a city."""
        self.ran.append(city)
        return f"sunny in {city}"

    def check(self) -> None:
        """The tool ran once (failover re-sends a request, never a turn), and each of the
        two turns went to the primary first, then to the backup."""
        assert self.ran == ["Lyon"]
        assert len(self.primary.requests) == len(self.chain.backup.requests) == 2


def offered(request: dict[str, Any]) -> list[str]:
    """The names of the function tools a chat or Responses request offers."""
    tools = request.get("tools") or []
    return [t.get("function", t).get("name") for t in tools if t.get("type") == "function"]


def tool_result(request: dict[str, Any], name: str) -> str | None:
    """The result of the last call to tool ``name`` that the request sends back, or None.

    A result counts only when it answers a call id of the conversation's own: the
    framework carried the call the fake made (and its generated id) into the next turn."""
    items = request.get("messages") or request.get("input") or []
    items = items if isinstance(items, list) else []
    ids = {
        c["id"] for m in items for c in m.get("tool_calls") or [] if c["function"]["name"] == name
    }
    ids |= {m["call_id"] for m in items if m.get("type") == "function_call" and m["name"] == name}
    results = [
        _text(m.get("content", m.get("output")))
        for m in items
        if m.get("tool_call_id", m.get("call_id")) in ids
        and (m.get("role") == "tool" or m.get("type") == "function_call_output")
    ]
    return results[-1] if results else None


def _text(content: Any) -> str:
    """A message's content: a string, or the text of its parts."""
    if isinstance(content, str):
        return content
    return "".join(str(part.get("text", "")) for part in content or [] if isinstance(part, dict))


def caused_by_failover(error: BaseException) -> FailoverError:
    """``error`` itself, or the first one of its ``__cause__`` chain, that is a FailoverError."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, FailoverError):
            return seen
        seen = seen.__cause__
    pytest.fail(f"{error!r} is not a FailoverError, nor caused by one")
