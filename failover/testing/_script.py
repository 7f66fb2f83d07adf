"""What the fake provider answers: the test's ``reply=`` script, a schema's instance, or an echo."""

from __future__ import annotations

import dataclasses
import json
import secrets
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Union

from failover.testing._schema import instance

if TYPE_CHECKING:
    import pydantic


@dataclasses.dataclass(frozen=True)
class ToolCall:
    """A function call the fake model makes; ``arguments`` are sent as a JSON object.

    A ``reply=`` function that returns a list of these is answered with
    ``finish_reason="tool_calls"`` (chat) or ``function_call`` output items (Responses),
    each with a generated call id.
    """

    name: str
    arguments: Mapping[str, Any] = dataclasses.field(default_factory=dict)


#: What a script answers: text, tool calls, or structured output (sent as JSON text).
Answer = Union[str, list[ToolCall], Mapping[str, Any], "pydantic.BaseModel"]
#: A custom responder: gets the request JSON, returns the :data:`Answer`.
Reply = Callable[[dict[str, Any]], Answer]


@dataclasses.dataclass(frozen=True)
class Call:
    """A :class:`ToolCall` as sent: with its id, arguments in JSON."""

    id: str
    name: str
    arguments: str


@dataclasses.dataclass(frozen=True)
class Output:
    """One answer, ready for any API family: text, or tool calls."""

    text: str
    calls: tuple[Call, ...] = ()


def output(
    script: Answer | Reply | None,
    name: str,
    payload: dict[str, Any],
    items: Any,
    schema: Mapping[str, Any] | None,
) -> Output:
    """The answer of the ``script`` of the provider ``name``; else, when the request asks for
    a JSON schema, its smallest instance; else ``"[name] <last user message>"``."""
    if script is None and schema is None:
        return Output(_echo(name, items))
    if script is None:
        return Output(json.dumps(instance(schema or {})))
    answer = script(payload) if callable(script) else script
    if isinstance(answer, str):
        return Output(answer)
    if isinstance(answer, list) and answer and all(isinstance(a, ToolCall) for a in answer):
        return Output("", tuple(_call(call) for call in answer))
    if isinstance(answer, Mapping):
        return Output(json.dumps(dict(answer)))
    if hasattr(answer, "model_dump_json"):  # a pydantic model
        return Output(str(answer.model_dump_json()))
    raise TypeError(
        f"reply must give a str, a non-empty list of ToolCall, a dict or a pydantic model, "
        f"not {type(answer).__name__}"
    )


def _call(call: ToolCall) -> Call:
    return Call(f"call_{secrets.token_hex(12)}", call.name, json.dumps(dict(call.arguments)))


def _echo(name: str, items: Any) -> str:
    if isinstance(items, str):  # a prompt, or the Responses API's plain string input
        return f"[{name}] {items}"
    said = ""
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict) and item.get("role") == "user":
            said = _text_of(item.get("content"))
    return f"[{name}] {said}"


def _text_of(content: Any) -> str:
    """The text of a message ``content``: a string or a list of text parts."""
    if isinstance(content, str):
        return content
    parts = content if isinstance(content, list) else []
    return " ".join(str(p.get("text", "")) for p in parts if isinstance(p, dict))


def usage(payload: dict[str, Any], answer: Output) -> dict[str, int]:
    """Chat-style token counts: rough word counts, deterministic and good enough for tests."""
    asked = payload.get("messages", payload.get("input", payload.get("prompt", "")))
    said = " ".join([answer.text, *(call.arguments for call in answer.calls)])
    prompt, done = len(json.dumps(asked).split()), len(said.split())
    return {"prompt_tokens": prompt, "completion_tokens": done, "total_tokens": prompt + done}
