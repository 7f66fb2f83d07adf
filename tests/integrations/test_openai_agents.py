"""The OpenAI Agents SDK on ``failover.AsyncOpenAI``, tracing disabled."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from failover.testing import FakeProvider

from ._kit import (
    MODEL,
    WEATHER_ANSWER,
    Weather,
    caused_by_failover,
)

agents = pytest.importorskip("agents")
from agents.models import _openai_shared  # noqa: E402

agents.set_tracing_disabled(True)


def agent(aclient: Any) -> Any:
    model = agents.OpenAIChatCompletionsModel(model=MODEL, openai_client=aclient)
    return agents.Agent(name="assistant", instructions="Answer briefly.", model=model)


@pytest.fixture
def default_client(aclient: Any) -> Iterator[Any]:
    """``set_default_openai_client(aclient)`` for one test, then the SDK's defaults again."""
    saved = (
        _openai_shared.get_default_openai_client(),
        _openai_shared.get_use_responses_by_default(),
    )
    agents.set_default_openai_client(aclient, use_for_tracing=False)
    try:
        yield aclient
    finally:
        _openai_shared.set_default_openai_client(saved[0])  # type: ignore[arg-type]
        _openai_shared.set_use_responses_by_default(saved[1])


@pytest.mark.asyncio
async def test_run(aclient: Any, primary: FakeProvider) -> None:
    result = await agents.Runner.run(agent(aclient), "hello")
    assert result.final_output == "[backup] hello"
    assert primary.requests, "the primary was tried first"


def test_run_sync(aclient: Any) -> None:
    # Runner.run_sync runs its own event loop: the client was built before it, outside any.
    assert agents.Runner.run_sync(agent(aclient), "hello").final_output == "[backup] hello"
    assert agents.Runner.run_sync(agent(aclient), "again").final_output == "[backup] again"


@pytest.mark.asyncio
async def test_run_streamed(aclient: Any) -> None:
    result = agents.Runner.run_streamed(agent(aclient), "hello")
    deltas = [
        event.data.delta
        async for event in result.stream_events()
        if event.type == "raw_response_event" and event.data.type == "response.output_text.delta"
    ]
    assert "".join(deltas) == "[backup] hello"
    assert result.final_output == "[backup] hello"


def test_default_client_with_chat_completions(default_client: Any) -> None:
    agents.set_default_openai_api("chat_completions")
    assistant = agents.Agent(name="assistant", instructions="Answer briefly.", model=MODEL)
    assert agents.Runner.run_sync(assistant, "hello").final_output == "[backup] hello"


def test_default_client_with_responses(default_client: Any) -> None:
    agents.set_default_openai_api("responses")
    assistant = agents.Agent(name="assistant", instructions="Answer briefly.", model=MODEL)
    assert agents.Runner.run_sync(assistant, "hello").final_output == "[backup] hello"


@pytest.mark.asyncio
async def test_default_client_with_responses_streamed(default_client: Any) -> None:
    agents.set_default_openai_api("responses")
    assistant = agents.Agent(name="assistant", instructions="Answer briefly.", model=MODEL)
    result = agents.Runner.run_streamed(assistant, "hello")
    async for _ in result.stream_events():
        pass
    assert result.final_output == "[backup] hello"


MODELS = {
    "chat_completions": agents.OpenAIChatCompletionsModel,
    "responses": agents.OpenAIResponsesModel,
}


@pytest.fixture(params=list(MODELS))
def api(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]


def tool_agent(weather: Weather, api: str) -> Any:
    model = MODELS[api](model=MODEL, openai_client=weather.chain.aclient)
    tools = [agents.function_tool(weather.weather)]
    return agents.Agent(name="a", instructions="Use tools.", model=model, tools=tools)


@pytest.mark.asyncio
async def test_a_function_tool_round_trip(weather: Weather, api: str) -> None:
    result = await agents.Runner.run(tool_agent(weather, api), "weather in Lyon?")
    assert result.final_output == WEATHER_ANSWER
    weather.check()


@pytest.mark.asyncio
async def test_a_function_tool_round_trip_streamed(weather: Weather, api: str) -> None:
    result = agents.Runner.run_streamed(tool_agent(weather, api), "weather in Lyon?")
    items = [
        event.item.type
        async for event in result.stream_events()
        if event.type == "run_item_stream_event"
    ]
    assert items == ["tool_call_item", "tool_call_output_item", "message_output_item"]
    assert result.final_output == WEATHER_ANSWER
    weather.check()


@pytest.mark.parametrize("fault", ["503"])
@pytest.mark.asyncio
async def test_every_provider_failing(aclient: Any, backup: FakeProvider) -> None:
    backup.fail(503)
    with pytest.raises(Exception) as caught:
        await agents.Runner.run(agent(aclient), "hello")
    attempts = caused_by_failover(caught.value).attempts
    assert [a.provider for a in attempts] == ["primary", "backup"]
