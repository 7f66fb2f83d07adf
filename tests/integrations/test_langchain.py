"""langchain-openai's ChatOpenAI on failover's clients.

ChatOpenAI takes four clients: ``client`` / ``async_client`` (the chat completions
resources it calls) and ``root_client`` / ``root_async_client`` (the clients, for
structured output and the Responses API). Pass all four: a ``root_client`` given
without ``client`` is silently replaced by a plain ``openai.OpenAI`` it builds itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import openai
import pytest

import failover
from failover import StreamInterrupted, StreamTruncated
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

langchain_openai = pytest.importorskip("langchain_openai")
pydantic = pytest.importorskip("pydantic")
from langchain_core.messages import HumanMessage  # noqa: E402
from langchain_core.tools import tool as langchain_tool  # noqa: E402


def chat_model(client: Any, aclient: Any, **kwargs: Any) -> Any:
    return langchain_openai.ChatOpenAI(
        model=MODEL,
        client=client.chat.completions,
        async_client=aclient.chat.completions,
        root_client=client,
        root_async_client=aclient,
        **kwargs,
    )


@pytest.fixture
def llm(client: Any, aclient: Any) -> Any:
    return chat_model(client, aclient)


class City(pydantic.BaseModel):  # type: ignore[name-defined,misc]
    name: str
    population: int


CITY = {"name": "Lyon", "population": 522_000}


def test_invoke(llm: Any, primary: FakeProvider) -> None:
    assert llm.invoke("hello").content == "[backup] hello"
    assert primary.requests, "the primary was tried first"


@pytest.mark.asyncio
async def test_ainvoke(llm: Any) -> None:
    assert (await llm.ainvoke("hello")).content == "[backup] hello"


def test_stream(llm: Any) -> None:
    chunks = list(llm.stream("hello"))
    assert "".join(c.content for c in chunks) == "[backup] hello"
    assert len(chunks) > 2


@pytest.mark.asyncio
async def test_astream(llm: Any) -> None:
    chunks = [chunk async for chunk in llm.astream("hello")]
    assert "".join(c.content for c in chunks) == "[backup] hello"


@pytest.mark.asyncio
async def test_abatch(llm: Any) -> None:
    replies = await llm.abatch(["one", "two", "three"])
    assert [r.content for r in replies] == ["[backup] one", "[backup] two", "[backup] three"]


@pytest.fixture
def structured(scripted: Callable[[Reply], Scripted]) -> tuple[Any, Any]:
    chain = scripted(json_reply(CITY))
    return chain.client, chain.aclient


def test_with_structured_output(structured: tuple[Any, Any]) -> None:
    llm = chat_model(*structured).with_structured_output(City)
    assert llm.invoke("Which city?") == City(**CITY)


@pytest.mark.asyncio
async def test_with_structured_output_async(structured: tuple[Any, Any]) -> None:
    llm = chat_model(*structured).with_structured_output(City)
    assert await llm.ainvoke("Which city?") == City(**CITY)


@pytest.fixture
def by_function_calling(scripted: Callable[[Reply], Scripted]) -> Any:
    """A City through a forced tool call: the model calls the tool named after the schema."""
    chain = scripted(tool_reply(ToolCall("City", CITY)))
    llm = chat_model(chain.client, chain.aclient)
    return llm.with_structured_output(City, method="function_calling")


def test_with_structured_output_by_function_calling(by_function_calling: Any) -> None:
    assert by_function_calling.invoke("Which city?") == City(**CITY)


@pytest.mark.asyncio
async def test_with_structured_output_by_function_calling_async(by_function_calling: Any) -> None:
    assert await by_function_calling.ainvoke("Which city?") == City(**CITY)


def tool_model(weather: Weather) -> tuple[Any, Any]:
    """A chat model bound to the weather tool, and that tool."""
    tool = langchain_tool(weather.weather)
    return chat_model(weather.chain.client, weather.chain.aclient).bind_tools([tool]), tool


def test_bind_tools_round_trip(weather: Weather) -> None:
    llm, tool = tool_model(weather)
    messages: list[Any] = [HumanMessage("weather in Lyon?")]
    messages.append(llm.invoke(messages))
    (call,) = messages[-1].tool_calls
    assert (call["name"], call["args"]) == ("weather", {"city": "Lyon"})
    messages.append(tool.invoke(call))  # a ToolMessage, with the call's id
    assert llm.invoke(messages).content == WEATHER_ANSWER
    weather.check()


@pytest.mark.asyncio
async def test_bind_tools_round_trip_streamed(weather: Weather) -> None:
    llm, tool = tool_model(weather)
    messages: list[Any] = [HumanMessage("weather in Lyon?")]
    chunks = [chunk async for chunk in llm.astream(messages)]
    assert len(chunks) > 2, "the call came in deltas"
    messages.append(sum(chunks[1:], chunks[0]))  # the chunks, merged into one message
    (call,) = messages[-1].tool_calls
    assert (call["name"], call["args"]) == ("weather", {"city": "Lyon"})
    messages.append(await tool.ainvoke(call))
    answer = [chunk.content async for chunk in llm.astream(messages)]
    assert "".join(answer) == WEATHER_ANSWER
    weather.check()


def test_responses_api(llm: Any, client: Any, aclient: Any) -> None:
    llm = chat_model(client, aclient, use_responses_api=True)
    assert llm.invoke("hello").text == "[backup] hello"


def test_responses_api_stream(client: Any, aclient: Any) -> None:
    llm = chat_model(client, aclient, use_responses_api=True)
    assert "".join(c.text for c in llm.stream("hello")) == "[backup] hello"


@pytest.mark.parametrize("fault", ["503"])
def test_every_provider_failing(llm: Any, backup: FakeProvider) -> None:
    backup.fail(503)
    with pytest.raises(Exception) as caught:
        llm.invoke("hello")
    assert [a.provider for a in caused_by_failover(caught.value).attempts] == [
        "primary",
        "backup",
    ]


@pytest.mark.parametrize("fault", ["503"])
@pytest.mark.asyncio
async def test_every_provider_failing_async(llm: Any, backup: FakeProvider) -> None:
    backup.reset()
    with pytest.raises(Exception) as caught:
        await llm.ainvoke("hello")
    caused_by_failover(caught.value)


@pytest.mark.parametrize("fault", ["503"])
def test_root_client_alone_is_silently_replaced(client: Any) -> None:
    # The pitfall documented in the README: pass client= (and async_client=) too.
    llm = langchain_openai.ChatOpenAI(model=MODEL, root_client=client, api_key="sk-unused")
    assert llm.root_client is not client
    assert type(llm.root_client) is openai.OpenAI  # built by ChatOpenAI: no failover


def test_a_stream_cut_midway_is_interrupted(fake_provider: Any, backup: FakeProvider) -> None:
    cutting = fake_provider("cutting")
    cutting.cut_stream(after=3)
    sync = failover.OpenAI(provider(cutting), provider(backup), **options())
    async_ = failover.AsyncOpenAI(provider(cutting), provider(backup), **options())
    with pytest.raises(StreamInterrupted):
        list(chat_model(sync, async_).stream("hello"))
    assert not backup.requests, "chunks reached the caller: no re-run"


@pytest.mark.asyncio
async def test_a_stream_that_ends_silently_is_truncated(
    fake_provider: Any, backup: FakeProvider
) -> None:
    truncating = fake_provider("truncating")
    truncating.truncate_stream(after=3)
    sync = failover.OpenAI(provider(truncating), provider(backup), **options())
    async_ = failover.AsyncOpenAI(provider(truncating), provider(backup), **options())
    with pytest.raises(StreamTruncated):
        [chunk async for chunk in chat_model(sync, async_).astream("hello")]
