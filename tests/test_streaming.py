"""Stream integrity: no streamed answer ends silently cut short, in any form."""

from __future__ import annotations

import asyncio
import gc
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx2
import openai
import pytest
from conftest import MESSAGES, NO_BREAKER
from openai.resources.chat.completions import AsyncCompletions, Completions
from test_engine import call, run_async, timed

from failover import (
    DeadlineExceeded,
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
FORMS = ["decorator", "proxy", "block"]
BODIES = ["decorator", "block"]  # the forms that re-run a body
REQUEST: dict[str, Any] = {"model": "m", "messages": MESSAGES, "stream": True}

#: Every kind of stream, by how it is opened on a client (each answers "[name] hello").
OPEN: dict[str, Callable[[Any], Any]] = {
    "chat": lambda client: client.chat.completions.create(**REQUEST),
    "completions": lambda client: client.completions.create(model="m", prompt="hello", stream=True),
    "responses": lambda client: client.responses.create(model="m", input="hello", stream=True),
}
# Chat streams that an instrumentation wraps (below), in one class per flavour or in one.
INSTRUMENTED = ["instrumented", "instrumented-one-class"]
OPEN.update(dict.fromkeys(INSTRUMENTED, OPEN["chat"]))
PROXY_KINDS = [*OPEN]
KINDS = [*OPEN, "responses.stream"]  # the last: the stream helper, to get_final_response()
HELPER: dict[str, Any] = {"model": "m", "input": "hello"}


class ChatStreamWrapper:
    """Stands for OpenTelemetry's: a plain class (no openai type) around the client's stream."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def __iter__(self) -> ChatStreamWrapper:
        return self

    def __next__(self) -> Any:
        return next(self.stream)

    def close(self) -> None:
        self.stream.close()

    def __enter__(self) -> ChatStreamWrapper:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncChatStreamWrapper:
    """:class:`ChatStreamWrapper` for async streams."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def __aiter__(self) -> AsyncChatStreamWrapper:
        return self

    async def __anext__(self) -> Any:
        return await self.stream.__anext__()

    async def close(self) -> None:
        await self.stream.close()

    async def __aenter__(self) -> AsyncChatStreamWrapper:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


class StreamWrapper(ChatStreamWrapper, AsyncChatStreamWrapper):
    """Both flavours in one class, as OpenTelemetry's openai-v2 ``BaseStreamWrapper``
    (whose ``close()`` is sync, for async streams too)."""

    def close(self) -> None:
        if isinstance(self.stream, openai.Stream):
            self.stream.close()


def instrument(monkeypatch: pytest.MonkeyPatch, one_class: bool) -> None:
    """Wrap the chat streams ``openai`` returns, as an instrumentation does."""
    create, acreate = Completions.create, AsyncCompletions.create
    sync_kind = StreamWrapper if one_class else ChatStreamWrapper
    async_kind = StreamWrapper if one_class else AsyncChatStreamWrapper

    def wrapped(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = create(self, *args, **kwargs)
        return sync_kind(result) if kwargs.get("stream") else result

    async def awrapped(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = await acreate(self, *args, **kwargs)
        return async_kind(result) if kwargs.get("stream") else result

    monkeypatch.setattr(Completions, "create", wrapped)
    monkeypatch.setattr(AsyncCompletions, "create", awrapped)


@pytest.fixture(scope="session")
def warm() -> None:
    """One stream of each kind read first: ``openai`` builds its models of the Responses
    events on first use, which on a cold process takes longer than the bounds here."""
    with FakeProvider("warm") as fake, fake.client() as client:
        for kind in KINDS:
            reader("sync", kind)(client)


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, warm: None) -> str:
    """A kind of stream (narrow it with ``parametrize("kind", [...], indirect=True)``)."""
    if request.param in INSTRUMENTED:
        instrument(monkeypatch, one_class=request.param == "instrumented-one-class")
    return request.param  # type: ignore[no-any-return]


def text_of(event: Any) -> str:
    """The piece of the answer a chunk or event of any kind carries."""
    if getattr(event, "type", None) == "response.output_text.delta":
        return str(event.delta)
    choices = getattr(event, "choices", None)
    if not choices:
        return ""
    delta = getattr(choices[0], "delta", None)
    return (delta.content if delta is not None else choices[0].text) or ""


def reader(mode: str, kind: str = "chat", got: list[str] | None = None) -> Callable[..., Any]:
    """A body that reads a whole streamed answer of ``kind`` on its client, piece by piece
    into ``got`` (what the last run of the body saw reach it)."""
    seen: list[str] = [] if got is None else got

    def read(client: Any = None) -> str:
        seen.clear()
        if kind == "responses.stream":
            with client.responses.stream(**HELPER) as events:
                seen.extend(map(text_of, events))
                return str(events.get_final_response().output_text)
        seen.extend(map(text_of, OPEN[kind](client)))
        return "".join(seen)

    async def aread(client: Any = None) -> str:
        seen.clear()
        if kind == "responses.stream":
            async with client.responses.stream(**HELPER) as events:
                async for event in events:
                    seen.append(text_of(event))
                return str((await events.get_final_response()).output_text)
        async for event in await OPEN[kind](client):
            seen.append(text_of(event))
        return "".join(seen)

    return aread if mode == "async" else read


def streamed(
    chain: tuple[Provider, Provider],
    form: str,
    mode: str,
    kind: str = "chat",
    got: list[str] | None = None,
    **settings: Any,
) -> Any:
    """Read a stream of ``kind`` in ``form``; raises what reading raised."""
    body = reader(mode, kind, got)
    return call(chain, f"{form}-{mode}", body=body, **NO_BREAKER, **settings)


def rerun(chain: tuple[Provider, Provider], form: str, mode: str, **settings: Any) -> Any:
    """Read a stream in a body that is re-run per provider (decorator or block form)."""
    return streamed(chain, form, mode, **settings)


def proxied(chain: tuple[Provider, Provider], mode: str, **settings: Any) -> Any:
    """Read a stream through the drop-in proxy; raises what reading raised."""
    return streamed(chain, "proxy", mode, **settings)


# -- decorator and block form: the body runs again on the backup -----------------

MID_STREAM: dict[str, Callable[[FakeProvider], None]] = {
    "truncated": lambda f: f.truncate_stream(after=2),
    "cut": lambda f: f.cut_stream(after=2),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("form", BODIES)
@pytest.mark.parametrize("fault", MID_STREAM.values(), ids=MID_STREAM.keys())
def test_a_broken_stream_reruns_the_body_on_the_backup(
    comet: FakeProvider,
    backup: FakeProvider,
    chain: tuple[Provider, Provider],
    fault: Callable[[FakeProvider], None],
    form: str,
    mode: str,
    kind: str,
) -> None:
    fault(comet)
    assert rerun(chain, form, mode, kind=kind) == "[backup] hello"
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
    backup: FakeProvider, chain: tuple[Provider, Provider], mode: str, kind: str
) -> None:
    assert rerun(chain, "decorator", mode, kind=kind) == "[comet] hello"
    assert backup.requests == []


# -- the drop-in proxy ---------------------------------------------------------

BEFORE_FIRST_CHUNK: dict[str, Callable[[FakeProvider], None]] = {
    "cut-at-0": lambda f: f.cut_stream(after=0),
    "truncated-at-0": lambda f: f.truncate_stream(after=0),
    "500": lambda f: f.fail(500),
    "reset": lambda f: f.reset(),
}


@pytest.mark.parametrize("kind", PROXY_KINDS, indirect=True)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fault", BEFORE_FIRST_CHUNK.values(), ids=BEFORE_FIRST_CHUNK.keys())
def test_proxy_fails_over_a_stream_that_breaks_before_its_first_chunk(
    comet: FakeProvider,
    chain: tuple[Provider, Provider],
    fault: Callable[[FakeProvider], None],
    mode: str,
    kind: str,
) -> None:
    fault(comet)
    assert proxied(chain, mode, kind=kind) == "[backup] hello"
    assert len(comet.requests) == 1


@pytest.mark.parametrize("kind", PROXY_KINDS, indirect=True)
@pytest.mark.parametrize("mode", MODES)
def test_proxy_raises_stream_interrupted_after_chunks_were_delivered(
    comet: FakeProvider,
    backup: FakeProvider,
    chain: tuple[Provider, Provider],
    mode: str,
    kind: str,
) -> None:
    comet.cut_stream(after=2)
    with pytest.raises(StreamInterrupted) as info:
        proxied(chain, mode, kind=kind)
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
    comet: FakeProvider,
    backup: FakeProvider,
    chain: tuple[Provider, Provider],
    mode: str,
    kind: str,
) -> None:
    comet.truncate_stream(after=2)
    with pytest.raises(StreamTruncated) as info:
        proxied(chain, mode, kind=kind)
    assert (info.value.provider, info.value.chunks) == ("comet", 2)
    assert backup.requests == []


@pytest.mark.parametrize("mode", MODES)
def test_proxy_streams_a_whole_answer(
    backup: FakeProvider, chain: tuple[Provider, Provider], mode: str, kind: str
) -> None:
    assert proxied(chain, mode, kind=kind) == "[comet] hello"
    assert backup.requests == []


# -- time bounds of a stream (deadline, first chunk, stalls, attempts) ------------

TRICKLE = 2.0  # seconds a trickling answer takes: 10 chunks, 0.2 s apart


@pytest.mark.parametrize("kind", ["chat", *INSTRUMENTED], indirect=True)
@pytest.mark.parametrize("mode", MODES)
def test_deadline_ends_a_trickling_stream_in_the_drop_in(
    comet: FakeProvider,
    backup: FakeProvider,
    chain: tuple[Provider, Provider],
    mode: str,
    kind: str,
) -> None:
    comet.trickle(TRICKLE / 10, chunks=10)
    got: list[str] = []
    error, elapsed = timed(lambda: proxied(chain, mode, kind=kind, got=got, deadline=0.8))
    assert isinstance(error, DeadlineExceeded), error
    assert "".join(got)  # chunks reached the caller first
    assert "[comet] hello".startswith("".join(got))
    assert "".join(got) != "[comet] hello"
    assert elapsed < TRICKLE - 0.3  # the stream was ended, not read to its end
    assert backup.requests == []


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("form", BODIES)
def test_deadline_ends_a_trickling_stream_in_a_body(
    comet: FakeProvider,
    backup: FakeProvider,
    chain: tuple[Provider, Provider],
    form: str,
    mode: str,
) -> None:
    comet.trickle(TRICKLE / 10, chunks=10)
    error, elapsed = timed(lambda: rerun(chain, form, mode, deadline=0.8))
    assert isinstance(error, FailoverError), error
    assert isinstance(error.exceptions[-1], DeadlineExceeded)
    assert elapsed < TRICKLE - 0.3
    assert backup.requests == []  # no time was left for it


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("form", FORMS)
def test_deadline_before_the_first_chunk_is_a_timeout_like_any(
    comet: FakeProvider,
    backup: FakeProvider,
    chain: tuple[Provider, Provider],
    form: str,
    mode: str,
) -> None:
    comet.hang(5)
    backup.hang(5)
    error, elapsed = timed(lambda: streamed(chain, form, mode, deadline=0.5))
    assert isinstance(error, FailoverError), error
    assert isinstance(error.exceptions[0], openai.APITimeoutError)
    assert isinstance(error.exceptions[-1], DeadlineExceeded)
    assert elapsed < 3


PAUSED: dict[str, dict[str, Any]] = {
    "unbounded": {},
    "first_token_timeout": {"first_token_timeout": 0.3},
    "attempt_timeout": {"attempt_timeout": 0.3},
    "deadline": {"deadline": 5},
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("settings", PAUSED.values(), ids=PAUSED.keys())
def test_a_pause_after_the_first_chunk_is_survived_without_stall_timeout(
    comet: FakeProvider,
    backup: FakeProvider,
    chain: tuple[Provider, Provider],
    settings: dict[str, Any],
    form: str,
    mode: str,
) -> None:
    comet.pause(after=2, seconds=0.6)  # a reasoning model thinking, after its first chunk
    assert streamed(chain, form, mode, **settings) == "[comet] hello"
    assert backup.requests == []


def raw_reader(mode: str, view: str) -> Callable[..., Any]:
    """A body that reads a chat stream through a raw-response view, to its end."""

    def read(client: Any = None) -> str:
        if view == "with_streaming_response":
            with client.chat.completions.with_streaming_response.create(**REQUEST) as response:
                return "".join(map(text_of, response.parse()))
        raw = client.chat.completions.with_raw_response.create(**REQUEST)
        return "".join(map(text_of, raw.parse()))

    async def aread(client: Any = None) -> str:
        if view == "with_streaming_response":
            views = client.chat.completions.with_streaming_response
            async with views.create(**REQUEST) as response:
                return "".join([text_of(e) async for e in await response.parse()])
        raw = await client.chat.completions.with_raw_response.create(**REQUEST)
        return "".join([text_of(e) async for e in raw.parse()])

    return aread if mode == "async" else read


@pytest.mark.parametrize("view", ["with_raw_response", "with_streaming_response"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("form", FORMS)
def test_a_pause_after_the_first_chunk_is_survived_through_raw_response_views(
    comet: FakeProvider,
    backup: FakeProvider,
    chain: tuple[Provider, Provider],
    form: str,
    mode: str,
    view: str,
) -> None:
    # first_token_timeout bounds the first chunk only, whichever way the stream is read.
    comet.pause(after=2, seconds=0.6)
    body = raw_reader(mode, view)
    answer = call(chain, f"{form}-{mode}", body=body, first_token_timeout=0.3, **NO_BREAKER)
    assert answer == "[comet] hello"
    assert backup.requests == []


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize(("interval", "chunks"), [(0.15, 6), (0.4, 2)], ids=["fast", "slow"])
def test_attempt_timeout_never_cuts_a_stream_that_is_delivering(
    comet: FakeProvider,
    backup: FakeProvider,
    chain: tuple[Provider, Provider],
    interval: float,
    chunks: int,
    form: str,
    mode: str,
) -> None:
    comet.trickle(interval, chunks=chunks)  # longer in all than the attempt_timeout
    assert streamed(chain, form, mode, attempt_timeout=0.3) == "[comet] hello"
    assert backup.requests == []


@pytest.mark.parametrize("kind", ["chat", *INSTRUMENTED], indirect=True)
@pytest.mark.parametrize("mode", MODES)
def test_stall_timeout_interrupts_a_stalled_stream_in_the_drop_in(
    comet: FakeProvider,
    backup: FakeProvider,
    chain: tuple[Provider, Provider],
    mode: str,
    kind: str,
) -> None:
    comet.pause(after=2, seconds=1.5)
    got: list[str] = []
    error, elapsed = timed(lambda: proxied(chain, mode, kind=kind, got=got, stall_timeout=0.3))
    assert isinstance(error, StreamInterrupted), error
    assert error.provider == "comet"
    assert error.chunks == len(got) > 0  # what reached the caller
    assert isinstance(error.__cause__, openai.APITimeoutError)
    assert elapsed < 1.3  # not the pause's end
    assert backup.requests == []


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("form", BODIES)
def test_stall_timeout_reruns_a_stalled_body_on_the_backup(
    comet: FakeProvider,
    backup: FakeProvider,
    chain: tuple[Provider, Provider],
    form: str,
    mode: str,
) -> None:
    comet.pause(after=2, seconds=1.5)
    events: list[Event] = []
    answer, elapsed = timed(
        lambda: rerun(chain, form, mode, stall_timeout=0.3, on_attempt=events.append)
    )
    assert answer == "[backup] hello"
    assert elapsed < 1.3
    assert isinstance(events[0].error, openai.APITimeoutError)
    assert len(backup.requests) == 1


def slow_reader(mode: str, pause: float) -> Callable[..., Any]:
    """A body that takes ``pause`` seconds over each chunk (it relays them to a slow client)."""

    def read(client: Any = None) -> str:
        got = []
        for chunk in client.chat.completions.create(**REQUEST):
            got.append(text_of(chunk))
            time.sleep(pause)
        return "".join(got)

    async def aread(client: Any = None) -> str:
        got = []
        async for chunk in await client.chat.completions.create(**REQUEST):
            got.append(text_of(chunk))
            await asyncio.sleep(pause)
        return "".join(got)

    return aread if mode == "async" else read


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("form", FORMS)
def test_stall_timeout_never_counts_the_time_the_caller_takes_over_a_chunk(
    comet: FakeProvider,
    backup: FakeProvider,
    chain: tuple[Provider, Provider],
    form: str,
    mode: str,
) -> None:
    # The provider sends at once; the caller is slow. No silence of the provider's.
    body = slow_reader(mode, pause=0.4)
    answer = call(chain, f"{form}-{mode}", body=body, stall_timeout=0.2, **NO_BREAKER)
    assert answer == "[comet] hello"
    assert backup.requests == []


@pytest.mark.parametrize("deadline", [None, 30])
@pytest.mark.parametrize("mode", MODES)
def test_stall_timeout_still_catches_a_stall_after_a_slow_caller(
    comet: FakeProvider,
    backup: FakeProvider,
    chain: tuple[Provider, Provider],
    mode: str,
    deadline: float | None,
) -> None:
    # The watchdog looked while the caller held a chunk: the next read must re-arm it.
    comet.pause(after=3, seconds=1.5)
    body = slow_reader(mode, pause=0.4)
    settings = {"stall_timeout": 0.2, "deadline": deadline, **NO_BREAKER}
    error, elapsed = timed(lambda: call(chain, f"proxy-{mode}", body=body, **settings))
    assert isinstance(error, StreamInterrupted), error
    assert elapsed < 1.3 + 3 * 0.4  # not the pause's end
    assert backup.requests == []


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("form", FORMS)
def test_a_finished_stream_is_not_kept_alive_until_its_deadline(
    chain: tuple[Provider, Provider], form: str, mode: str
) -> None:
    # A busy service with deadline=60 would otherwise hold every request (prompt
    # included) of the last minute's streams.
    requests: list[weakref.ref[Any]] = []

    def read(client: Any = None) -> str:
        stream = client.chat.completions.create(**REQUEST)
        requests.append(weakref.ref(stream.response.request))
        return "".join(map(text_of, stream))

    async def aread(client: Any = None) -> str:
        stream = await client.chat.completions.create(**REQUEST)
        requests.append(weakref.ref(stream.response.request))
        return "".join([text_of(chunk) async for chunk in stream])

    body = aread if mode == "async" else read
    settings = {"deadline": 60, "stall_timeout": 30, **NO_BREAKER}
    assert call(chain, f"{form}-{mode}", body=body, **settings) == "[comet] hello"
    gc.collect()
    assert [ref() for ref in requests] == [None]


class NoSocket(httpx2.AsyncBaseTransport):
    """A transport that does not expose its socket: the watchdog cannot cut its reads."""

    def __init__(self) -> None:
        self.inner = httpx2.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await self.inner.handle_async_request(request)
        response.extensions = {
            k: v for k, v in response.extensions.items() if k != "network_stream"
        }
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.mark.parametrize("form", ["decorator", "proxy", "block"])
def test_a_cancellation_after_the_watchdog_fired_is_never_a_timeout(
    comet: FakeProvider, backup: FakeProvider, form: str
) -> None:
    comet.pause(after=0, seconds=2)  # the headers, then nothing
    transport = {"http_client": httpx2.AsyncClient(transport=NoSocket())}
    primary = Provider(
        "comet", base_url=comet.base_url, api_key=comet.api_key, client_options=transport
    )
    chain = (primary, Provider("backup", base_url=backup.base_url, api_key=backup.api_key))

    async def main() -> None:
        run = run_async(chain, form, reader("async"), {"first_token_timeout": 0.2, **NO_BREAKER})
        task = asyncio.ensure_future(run)
        await asyncio.sleep(0.5)  # the first-chunk bound has expired; the read still waits
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert backup.requests == []  # the cancelled call went on nowhere


@pytest.mark.parametrize("value", [0, -1])
@pytest.mark.parametrize("configure", [with_fallback, fallback_clients])
def test_stall_timeout_must_be_positive(
    chain: tuple[Provider, Provider], configure: Callable[..., Any], value: float
) -> None:
    with pytest.raises(ValueError, match="stall_timeout"):
        configure(*chain, stall_timeout=value)


# -- a stream is an iterator of its own flavour only ----------------------------


def flavour_of(stream: Any) -> str:
    """Which path a library that decides by ``isinstance`` (instructor) takes for ``stream``."""
    sync, async_ = isinstance(stream, Iterator), isinstance(stream, AsyncIterator)
    assert sync != async_, f"{type(stream).__name__}: Iterator {sync}, AsyncIterator {async_}"
    return "async" if async_ else "sync"


def by_flavour(mode: str) -> Callable[..., Any]:
    """A body that reads its stream on the path ``flavour_of`` picks, as instructor does."""

    def read(client: Any = None) -> tuple[str, str]:
        stream = client.chat.completions.create(**REQUEST)
        return flavour_of(stream), "".join(map(text_of, stream))

    async def aread(client: Any = None) -> tuple[str, str]:
        stream = await client.chat.completions.create(**REQUEST)
        return flavour_of(stream), "".join([text_of(event) async for event in stream])

    return aread if mode == "async" else read


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("settings", [{}, {"stall_timeout": 5}], ids=["unbounded", "bounded"])
def test_a_stream_is_an_iterator_of_its_own_flavour_only(
    chain: tuple[Provider, Provider], form: str, mode: str, settings: dict[str, Any]
) -> None:
    body = by_flavour(mode)
    answer = call(chain, f"{form}-{mode}", body=body, **NO_BREAKER, **settings)
    assert answer == (mode, "[comet] hello")


@pytest.mark.parametrize("kind", ["completions", "responses", "responses.stream"], indirect=True)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("form", ["decorator", "proxy"])
def test_first_token_timeout_bounds_only_the_first_chunk_of_every_kind(
    comet: FakeProvider,
    backup: FakeProvider,
    chain: tuple[Provider, Provider],
    form: str,
    mode: str,
    kind: str,
) -> None:
    comet.hang(2, times=1)  # no first chunk in time: the backup serves
    comet.pause(after=2, seconds=0.6, times=1)  # a pause after it: the primary serves
    settings = {"first_token_timeout": 0.3, "kind": kind}
    assert streamed(chain, form, mode, **settings) == "[backup] hello"
    assert streamed(chain, form, mode, **settings) == "[comet] hello"
    assert len(comet.requests) == 2
