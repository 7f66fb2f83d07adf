"""Stream integrity: no streamed answer ends silently cut short, in any form."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import openai
import pytest
from conftest import MESSAGES, NO_BREAKER

from failover import (
    Event,
    FailoverError,
    Provider,
    StreamInterrupted,
    StreamTruncated,
    fallback_clients,
    with_fallback,
)
from failover._policy import is_provider_fault
from failover.testing import FakeProvider

MODES = ["sync", "async"]
REQUEST: dict[str, Any] = {"model": "m", "messages": MESSAGES, "stream": True}


def pieces(stream: Any) -> list[str]:
    return [c.choices[0].delta.content or "" for c in stream if c.choices]


async def apieces(stream: Any) -> list[str]:
    return [c.choices[0].delta.content or "" async for c in stream if c.choices]


def read(client: Any = None) -> str:
    """A whole streamed answer, read on ``client``."""
    return "".join(pieces(client.chat.completions.create(**REQUEST)))


async def aread(client: Any = None) -> str:
    return "".join(await apieces(await client.chat.completions.create(**REQUEST)))


def rerun(chain: tuple[Provider, Provider], form: str, mode: str, **settings: Any) -> Any:
    """Read a stream in a body that is re-run per provider (decorator or block form)."""
    if form == "decorator":
        body: Callable[..., Any] = aread if mode == "async" else read
        call = with_fallback(*chain, **NO_BREAKER, **settings)(body)
        return asyncio.run(call()) if mode == "async" else call()
    if mode == "async":
        return asyncio.run(block_async(chain, settings))
    for attempt in fallback_clients(*chain, **NO_BREAKER, **settings):
        with attempt as client:
            answer = read(client)
    return answer


async def block_async(chain: tuple[Provider, Provider], settings: dict[str, Any]) -> str:
    async for attempt in fallback_clients(*chain, **NO_BREAKER, **settings):
        async with attempt as client:
            answer = await aread(client)
    return answer


def proxied(chain: tuple[Provider, Provider], mode: str) -> list[str]:
    """Read a stream through the drop-in proxy; raises what reading raised."""
    if mode == "async":
        return asyncio.run(proxied_async(chain))
    with fallback_clients(*chain, **NO_BREAKER) as client:
        return pieces(client.chat.completions.create(**REQUEST))


async def proxied_async(chain: tuple[Provider, Provider]) -> list[str]:
    async with fallback_clients(*chain, **NO_BREAKER) as client:
        return await apieces(await client.chat.completions.create(**REQUEST))


# -- decorator and block form: the body runs again on the backup -----------------

MID_STREAM: dict[str, Callable[[FakeProvider], None]] = {
    "truncated": lambda f: f.truncate_stream(after=2),
    "cut": lambda f: f.cut_stream(after=2),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("form", ["decorator", "block"])
@pytest.mark.parametrize("fault", MID_STREAM.values(), ids=MID_STREAM.keys())
def test_a_broken_stream_reruns_the_body_on_the_backup(
    comet: FakeProvider,
    backup: FakeProvider,
    chain: tuple[Provider, Provider],
    fault: Callable[[FakeProvider], None],
    form: str,
    mode: str,
) -> None:
    fault(comet)
    assert rerun(chain, form, mode) == "[backup] hello"
    assert len(comet.requests) == 1
    assert len(backup.requests) == 1


@pytest.mark.parametrize("mode", MODES)
def test_truncation_is_reported_as_stream_truncated(
    comet: FakeProvider, chain: tuple[Provider, Provider], mode: str
) -> None:
    comet.truncate_stream(after=2)
    events: list[Event] = []
    assert rerun(chain, "decorator", mode, on_attempt=events.append) == "[backup] hello"
    error = events[0].error
    assert isinstance(error, StreamTruncated)
    assert (error.provider, error.chunks) == ("comet", 2)
    assert is_provider_fault(error)


@pytest.mark.parametrize("mode", MODES)
def test_every_provider_truncating_raises_failover_error(
    comet: FakeProvider, backup: FakeProvider, chain: tuple[Provider, Provider], mode: str
) -> None:
    comet.truncate_stream(after=2)
    backup.truncate_stream(after=3)
    with pytest.raises(FailoverError) as info:
        rerun(chain, "decorator", mode)
    assert [type(e) for e in info.value.exceptions] == [StreamTruncated, StreamTruncated]
    assert [e.chunks for e in info.value.exceptions] == [2, 3]  # type: ignore[attr-defined]


@pytest.mark.parametrize("mode", MODES)
def test_a_whole_stream_is_not_mistaken_for_a_truncated_one(
    comet: FakeProvider, backup: FakeProvider, chain: tuple[Provider, Provider], mode: str
) -> None:
    assert rerun(chain, "decorator", mode) == "[comet] hello"
    assert backup.requests == []


# -- the drop-in proxy ---------------------------------------------------------

BEFORE_FIRST_CHUNK: dict[str, Callable[[FakeProvider], None]] = {
    "cut-at-0": lambda f: f.cut_stream(after=0),
    "truncated-at-0": lambda f: f.truncate_stream(after=0),
    "500": lambda f: f.fail(500),
    "reset": lambda f: f.reset(),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fault", BEFORE_FIRST_CHUNK.values(), ids=BEFORE_FIRST_CHUNK.keys())
def test_proxy_fails_over_a_stream_that_breaks_before_its_first_chunk(
    comet: FakeProvider,
    chain: tuple[Provider, Provider],
    fault: Callable[[FakeProvider], None],
    mode: str,
) -> None:
    fault(comet)
    assert "".join(proxied(chain, mode)) == "[backup] hello"
    assert len(comet.requests) == 1


@pytest.mark.parametrize("mode", MODES)
def test_proxy_raises_stream_interrupted_after_chunks_were_delivered(
    comet: FakeProvider, backup: FakeProvider, chain: tuple[Provider, Provider], mode: str
) -> None:
    comet.cut_stream(after=2)
    with pytest.raises(StreamInterrupted) as info:
        proxied(chain, mode)
    assert (info.value.provider, info.value.chunks) == ("comet", 2)
    assert "comet" in str(info.value)
    assert backup.requests == []


@pytest.mark.parametrize("mode", MODES)
def test_stream_interrupted_keeps_the_transport_error_as_its_cause(
    comet: FakeProvider, chain: tuple[Provider, Provider], mode: str
) -> None:
    comet.cut_stream(after=2)
    with pytest.raises(StreamInterrupted) as info:
        proxied(chain, mode)
    assert isinstance(info.value.__cause__, openai.APIConnectionError)


@pytest.mark.parametrize("mode", MODES)
def test_proxy_raises_stream_truncated_after_chunks_were_delivered(
    comet: FakeProvider, backup: FakeProvider, chain: tuple[Provider, Provider], mode: str
) -> None:
    comet.truncate_stream(after=2)
    with pytest.raises(StreamTruncated) as info:
        proxied(chain, mode)
    assert (info.value.provider, info.value.chunks) == ("comet", 2)
    assert backup.requests == []


@pytest.mark.parametrize("mode", MODES)
def test_proxy_streams_a_whole_answer(
    backup: FakeProvider, chain: tuple[Provider, Provider], mode: str
) -> None:
    assert "".join(proxied(chain, mode)) == "[comet] hello"
    assert backup.requests == []
