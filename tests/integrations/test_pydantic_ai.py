"""pydantic-ai on ``failover.AsyncOpenAI``: the chat and the Responses models."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import failover
from failover.testing import FakeProvider, ToolCall

from ._kit import (
    MODEL,
    WEATHER_ANSWER,
    Reply,
    Scripted,
    Weather,
    caused_by_failover,
    json_reply,
    options,
    provider,
    tool_reply,
)

pydantic_ai = pytest.importorskip("pydantic_ai")
pytest.importorskip("pydantic_ai.models.openai")  # the [openai] extra
from pydantic import BaseModel  # noqa: E402
from pydantic_ai.models.openai import OpenAIChatModel, OpenAIResponsesModel  # noqa: E402
from pydantic_ai.providers.openai import OpenAIProvider  # noqa: E402
from pydantic_ai.settings import ModelSettings  # noqa: E402

MODELS = {"chat": OpenAIChatModel, "responses": OpenAIResponsesModel}


@pytest.fixture(params=list(MODELS))
def kind(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]


def agent(aclient: Any, kind: str, **kwargs: Any) -> Any:
    model = MODELS[kind](MODEL, provider=OpenAIProvider(openai_client=aclient))
    return pydantic_ai.Agent(model, **kwargs)


class City(BaseModel):
    name: str
    population: int


CITY = {"name": "Lyon", "population": 522_000}


@pytest.mark.asyncio
async def test_run(aclient: Any, kind: str, primary: FakeProvider) -> None:
    result = await agent(aclient, kind).run("hello")
    assert result.output == "[backup] hello"
    assert primary.requests, "the primary was tried first"


def test_run_sync(aclient: Any, kind: str) -> None:
    assert agent(aclient, kind).run_sync("hello").output == "[backup] hello"
    assert agent(aclient, kind).run_sync("again").output == "[backup] again"


@pytest.mark.parametrize(
    "kind",
    [
        "chat",
        "responses",
    ],
)
@pytest.mark.asyncio
async def test_run_stream(aclient: Any, kind: str) -> None:
    async with agent(aclient, kind).run_stream("hello") as result:
        pieces = [text async for text in result.stream_text(delta=True)]
    assert "".join(pieces) == "[backup] hello"


@pytest.mark.asyncio
async def test_max_retries_setting(aclient: Any, kind: str, backup: FakeProvider) -> None:
    # pydantic-ai sends such a request through client.with_options(http_client=client._client, ...).
    settings = ModelSettings(max_retries=0)
    result = await agent(aclient, kind, model_settings=settings).run("hello")
    assert result.output == "[backup] hello"
    backup.fail(503)
    with pytest.raises(Exception) as caught:  # max_retries=0 on every provider: one try each
        await agent(aclient, kind, model_settings=settings).run("hello")
    assert len(caused_by_failover(caught.value).attempts) == 2


@pytest.mark.parametrize("fault", ["503"])
def test_max_retries_setting_keeps_each_providers_transport(
    fake_provider: Any, primary: FakeProvider, backup: FakeProvider
) -> None:
    # One asyncio.run() per call, as run_sync does: the copy must not carry the
    # primary's transport (bound to no loop, or to a closed one) to every provider.
    aclient = failover.AsyncOpenAI(provider(primary), provider(backup), **options())
    assistant = agent(aclient, "chat", model_settings=ModelSettings(max_retries=0))
    for _ in range(3):
        assert assistant.run_sync("hello").output == "[backup] hello"


@pytest.fixture
def structured(scripted: Callable[[Reply], Scripted]) -> Any:
    return scripted(json_reply(CITY)).aclient


@pytest.mark.asyncio
async def test_structured_output(structured: Any, kind: str) -> None:
    output_type = pydantic_ai.NativeOutput(City)
    result = await agent(structured, kind, output_type=output_type).run("Which city?")
    assert result.output == City(**CITY)


@pytest.mark.asyncio
async def test_structured_output_in_the_default_mode(
    scripted: Callable[[Reply], Scripted], kind: str
) -> None:
    # The default is a tool output: the model must call final_result (tool_choice="required").
    aclient = scripted(tool_reply(ToolCall("final_result", CITY))).aclient
    result = await agent(aclient, kind, output_type=City).run("Which city?")
    assert result.output == City(**CITY)


def tool_agent(weather: Weather, kind: str) -> Any:
    assistant = agent(weather.chain.aclient, kind, instructions="Use tools.")
    assistant.tool_plain(weather.weather)
    return assistant


@pytest.mark.asyncio
async def test_a_tool_round_trip(weather: Weather, kind: str) -> None:
    result = await tool_agent(weather, kind).run("weather in Lyon?")
    assert result.output == WEATHER_ANSWER
    weather.check()


@pytest.mark.asyncio
async def test_a_tool_round_trip_streamed(weather: Weather, kind: str) -> None:
    async with tool_agent(weather, kind).run_stream("weather in Lyon?") as result:
        pieces = [text async for text in result.stream_text(delta=True)]
    assert "".join(pieces) == WEATHER_ANSWER
    weather.check()


@pytest.mark.parametrize("fault", ["503"])
@pytest.mark.asyncio
async def test_every_provider_failing(aclient: Any, kind: str, backup: FakeProvider) -> None:
    backup.fail(503)
    with pytest.raises(Exception) as caught:
        await agent(aclient, kind).run("hello")
    attempts = caused_by_failover(caught.value).attempts
    assert [a.provider for a in attempts] == ["primary", "backup"]
