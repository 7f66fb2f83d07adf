"""failover.testing.FakeProvider against the real openai client (sync and async)."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import enum
import functools
import json
import os
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import httpx2
import openai
import pydantic
import pytest

from failover._pytest_plugin import FakeProviderFactory
from failover.testing import FakeProvider, RecordedRequest, ToolCall, unreachable
from failover.testing._schema import instance

pytest_plugins = ["pytester"]

HELLO: Any = [{"role": "user", "content": "hello"}]


@pytest.fixture
def fake_provider() -> Iterator[FakeProviderFactory]:
    # The same factory as the plugin's fixture, defined here so that this file works
    # whether or not the pytest11 entry point is installed (a local fixture wins).
    factory = FakeProviderFactory()
    yield factory
    factory.close()


@pytest.fixture
def comet(fake_provider: FakeProviderFactory) -> FakeProvider:
    return fake_provider("comet")


@pytest.fixture
def client(comet: FakeProvider) -> Iterator[openai.OpenAI]:
    with comet.client() as client:
        yield client


def chat(client: openai.OpenAI) -> str | None:
    return client.chat.completions.create(model="m", messages=HELLO).choices[0].message.content


def outcome(client: openai.OpenAI) -> str:
    """The exception class name a chat call raises, or "ok"."""
    try:
        chat(client)
    except Exception as exc:
        return type(exc).__name__
    return "ok"


# -- normal answers ------------------------------------------------------------


def test_identity_and_repr(comet: FakeProvider) -> None:
    assert comet.name == "comet"
    assert comet.port > 0
    assert comet.base_url == f"http://127.0.0.1:{comet.port}/v1"
    assert re.fullmatch(r"sk-fake-comet-[0-9a-f]{16}", comet.api_key)
    assert comet.api_key not in repr(comet)
    assert "comet" in repr(comet)
    assert comet.start() is comet  # start() again is harmless
    assert comet.running


def test_chat_completion(comet: FakeProvider, client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="gpt-x", messages=HELLO)
    assert reply.object == "chat.completion"
    assert reply.model == "gpt-x"
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content == "[comet] hello"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None
    assert reply.usage.total_tokens > 0


def test_custom_reply(fake_provider: FakeProviderFactory) -> None:
    seen: list[dict[str, Any]] = []

    def reply(request: dict[str, Any]) -> str:
        seen.append(request)
        return "custom"

    with fake_provider("x", reply=reply).client() as client:
        assert chat(client) == "custom"
        assert client.responses.create(model="m", input="hi").output_text == "custom"
    assert [request.get("messages", request.get("input")) for request in seen] == [HELLO, "hi"]


def test_stream_ends_with_finish_reason(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model="m", messages=HELLO, stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content for c in chunks[1:-1]]
    assert len(pieces) >= 3
    assert "".join(p or "" for p in pieces) == "[comet] hello"
    assert [c.choices[0].finish_reason for c in chunks][-2:] == [None, "stop"]


def test_stream_with_usage(client: openai.OpenAI) -> None:
    options: Any = {"include_usage": True}
    stream = client.chat.completions.create(
        model="m", messages=HELLO, stream=True, stream_options=options
    )
    *_, finish, usage = list(stream)
    assert finish.choices[0].finish_reason == "stop"
    assert usage.choices == []
    assert usage.usage is not None
    assert usage.usage.total_tokens > 0


def test_embeddings_base64_and_float(client: openai.OpenAI) -> None:
    default = client.embeddings.create(model="e", input=["a", "b"])  # the client asks for base64
    floats = client.embeddings.create(model="e", input=["a", "b"], encoding_format="float")
    assert [d.index for d in default.data] == [0, 1]
    assert len(default.data[0].embedding) == 8
    assert all(isinstance(x, float) for x in default.data[0].embedding)
    assert [d.embedding for d in default.data] == [d.embedding for d in floats.data]
    assert default.data[0].embedding != default.data[1].embedding
    assert len(client.embeddings.create(model="e", input="a", dimensions=3).data[0].embedding) == 3


def test_models(comet: FakeProvider, client: openai.OpenAI) -> None:
    (model,) = client.models.list().data
    assert (model.id, model.object, model.owned_by) == ("fake-model", "model", "comet")
    assert client.models.retrieve("fake-model").id == "fake-model"
    with pytest.raises(openai.NotFoundError) as info:
        client.models.retrieve("nope")
    assert info.value.code == "model_not_found"


def test_responses(client: openai.OpenAI) -> None:
    assert client.responses.create(model="m", input="hi").output_text == "[comet] hi"
    items: Any = [{"role": "user", "content": [{"type": "input_text", "text": "yo"}]}]
    response = client.responses.create(model="m", input=items)
    assert (response.status, response.output_text) == ("completed", "[comet] yo")


def test_unknown_path_is_a_json_404(comet: FakeProvider) -> None:
    auth = {"Authorization": f"Bearer {comet.api_key}"}
    response = httpx2.get(f"{comet.base_url}/nope", headers=auth)
    assert response.status_code == 404
    assert "message" in response.json()["error"]


def test_each_provider_checks_its_own_key(fake_provider: FakeProviderFactory) -> None:
    comet, nova = fake_provider("comet"), fake_provider("nova")
    with openai.OpenAI(base_url=comet.base_url, api_key=nova.api_key, max_retries=0) as wrong:
        with pytest.raises(openai.AuthenticationError) as info:
            chat(wrong)
    assert info.value.status_code == 401
    assert info.value.code == "invalid_api_key"
    with nova.client() as right:
        assert chat(right) == "[nova] hello"


def test_requests_are_recorded(comet: FakeProvider, client: openai.OpenAI) -> None:
    chat(client)
    client.models.list()
    post, get = comet.requests
    assert (post.method, post.path, get.method, get.path) == (
        "POST", "/v1/chat/completions", "GET", "/v1/models",
    )  # fmt: skip
    assert post.headers["authorization"] == f"Bearer {comet.api_key}"
    assert all(key == key.lower() for key in post.headers)
    assert post.json == {"model": "m", "messages": HELLO}
    assert get.json is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        post.path = "/elsewhere"  # type: ignore[misc]


def test_keep_alive_reuses_one_connection(comet: FakeProvider) -> None:
    peers: set[Any] = set()

    def hook(response: httpx2.Response) -> None:
        peers.add(response.extensions["network_stream"].get_extra_info("client_addr"))

    with comet.client(http_client=httpx2.Client(event_hooks={"response": [hook]})) as client:
        for _ in range(3):
            chat(client)
            client.embeddings.create(model="e", input="x")
            comet.fail(500, times=1)
            assert outcome(client) == "InternalServerError"  # errors keep it alive too
    assert len(peers) == 1


# -- faults -------------------------------------------------------------------


@pytest.mark.parametrize("retry_after", [7, "Wed, 21 Oct 2015 07:28:00 GMT"])
def test_fail_with_retry_after(
    comet: FakeProvider, client: openai.OpenAI, retry_after: int | str
) -> None:
    comet.fail(503, retry_after=retry_after)
    with pytest.raises(openai.InternalServerError) as info:
        chat(client)
    assert info.value.status_code == 503
    assert info.value.response.headers["retry-after"] == str(retry_after)
    assert info.value.body == {
        "message": "[comet] simulated HTTP 503 failure",
        "type": "server_error",
        "param": None,
        "code": None,
    }


def test_fail_with_code_and_message(comet: FakeProvider, client: openai.OpenAI) -> None:
    comet.fail(400, code="content_policy_violation", message="nope")
    with pytest.raises(openai.BadRequestError) as info:
        chat(client)
    assert info.value.code == "content_policy_violation"
    assert info.value.message.endswith("nope")
    assert "retry-after" not in info.value.response.headers
    comet.fail(429)
    with pytest.raises(openai.RateLimitError) as limited:
        chat(client)
    assert limited.value.code == "rate_limit_exceeded"
    with pytest.raises(ValueError):
        comet.fail(200)


def test_times_queue_in_order(comet: FakeProvider, client: openai.OpenAI) -> None:
    comet.fail(500, times=1)
    comet.reset(times=1)
    comet.fail(429, times=2)
    seen = [outcome(client) for _ in range(5)]
    assert seen == [
        "InternalServerError",
        "APIConnectionError",
        "RateLimitError",
        "RateLimitError",
        "ok",
    ]


def test_holding_fault_replaces_queue_until_recover(
    comet: FakeProvider, client: openai.OpenAI
) -> None:
    comet.fail(500, times=3)
    comet.fail(503)  # holds, and drops the queued 500s
    assert [outcome(client) for _ in range(4)] == ["InternalServerError"] * 4
    assert all(r.json is not None for r in comet.requests)
    comet.fail(429, times=1)  # queued after a holding fault: served first, then it resumes
    assert [outcome(client) for _ in range(2)] == ["RateLimitError", "InternalServerError"]
    comet.recover()
    assert outcome(client) == "ok"


def test_recover_clears_the_queue(comet: FakeProvider, client: openai.OpenAI) -> None:
    comet.garbage(times=3)
    comet.recover()
    assert outcome(client) == "ok"


def test_times_is_thread_safe(comet: FakeProvider, client: openai.OpenAI) -> None:
    comet.fail(500, times=5)
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(outcome(client))) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == ["InternalServerError"] * 5 + ["ok"] * 15


def test_hang_times_out_then_answers(comet: FakeProvider) -> None:
    comet.hang(5)
    with comet.client(timeout=0.3) as client:
        started = time.monotonic()
        with pytest.raises(openai.APITimeoutError):
            chat(client)
        assert time.monotonic() - started < 1.5
        comet.recover()
        comet.hang(0.1, times=1)
        started = time.monotonic()
        assert chat(client) == "[comet] hello"  # a short hang, then a normal answer
        assert time.monotonic() - started >= 0.1


def wait_for_requests(provider: FakeProvider, count: int) -> None:
    deadline = time.monotonic() + 2
    while len(provider.requests) < count:
        assert time.monotonic() < deadline, "the request never arrived"
        time.sleep(0.005)


def test_stop_is_fast_with_a_hang_in_flight(comet: FakeProvider, client: openai.OpenAI) -> None:
    chat(client)  # leaves an idle keep-alive connection open as well
    comet.hang(30)
    errors: list[BaseException] = []

    def call() -> None:
        with comet.client() as other:
            try:
                chat(other)
            except Exception as exc:
                errors.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    wait_for_requests(comet, 2)
    started = time.monotonic()
    comet.stop()
    assert time.monotonic() - started < 0.5
    thread.join(timeout=2)
    assert not comet.running
    assert [type(e) for e in errors] == [openai.APIConnectionError]


def test_stop_refuses_then_start_returns_on_the_same_port(
    comet: FakeProvider, client: openai.OpenAI
) -> None:
    port = comet.port
    comet.stop()
    comet.stop()  # harmless
    with pytest.raises(openai.APIConnectionError) as info:
        chat(client)
    assert isinstance(info.value.__cause__, httpx2.ConnectError)
    comet.start()
    assert comet.port == port
    assert chat(client) == "[comet] hello"


def test_reset(comet: FakeProvider, client: openai.OpenAI) -> None:
    comet.reset(times=1)
    with pytest.raises(openai.APIConnectionError) as info:
        chat(client)
    assert isinstance(info.value.__cause__, httpx2.ReadError)  # ECONNRESET: a RST, not a FIN
    assert chat(client) == "[comet] hello"


def test_garbage(comet: FakeProvider, client: openai.OpenAI) -> None:
    comet.garbage(times=1)
    # openai 3.57 lets the decoding error of a 200 body through unwrapped.
    with pytest.raises(json.JSONDecodeError):
        chat(client)
    assert chat(client) == "[comet] hello"


def stream_reasons(client: openai.OpenAI) -> list[str | None]:
    stream = client.chat.completions.create(model="m", messages=HELLO, stream=True)
    return [chunk.choices[0].finish_reason for chunk in stream]


def test_cut_stream(comet: FakeProvider, client: openai.OpenAI) -> None:
    comet.cut_stream(after=3, times=1)
    received: list[Any] = []
    with pytest.raises(openai.APIConnectionError) as info:
        received.extend(client.chat.completions.create(model="m", messages=HELLO, stream=True))
    assert len(received) == 3
    assert isinstance(info.value.__cause__, httpx2.ReadError)
    comet.cut_stream(after=2, times=1)  # not a stream: like reset
    assert outcome(client) == "APIConnectionError"
    assert stream_reasons(client)[-1] == "stop"


def test_truncate_stream(comet: FakeProvider, client: openai.OpenAI) -> None:
    comet.truncate_stream(after=3, times=1)
    assert stream_reasons(client) == [None, None, None]  # ends quietly, no finish_reason
    comet.truncate_stream(after=100, times=1)
    assert len(stream_reasons(client)) == 5  # role + 4 content pieces, still no "stop"
    comet.truncate_stream(times=1)
    assert chat(client) == "[comet] hello"  # not a stream: answered normally, fault used
    assert stream_reasons(client)[-1] == "stop"


# -- async --------------------------------------------------------------------


async def achat(client: openai.AsyncOpenAI) -> str | None:
    reply = await client.chat.completions.create(model="m", messages=HELLO)
    return reply.choices[0].message.content


@pytest.mark.asyncio
async def test_async_answers(comet: FakeProvider) -> None:
    async with comet.async_client() as client:
        assert await achat(client) == "[comet] hello"
        stream = await client.chat.completions.create(model="m", messages=HELLO, stream=True)
        assert [c.choices[0].finish_reason async for c in stream][-1] == "stop"
        embedding = await client.embeddings.create(model="e", input="a")
        assert len(embedding.data[0].embedding) == 8
        assert (await client.responses.create(model="m", input="hi")).output_text == "[comet] hi"


@pytest.mark.asyncio
async def test_async_faults(comet: FakeProvider) -> None:
    async with comet.async_client(timeout=0.3) as client:
        comet.fail(429, times=1, retry_after=2)
        with pytest.raises(openai.RateLimitError) as info:
            await achat(client)
        assert info.value.response.headers["retry-after"] == "2"
        comet.fail(400, times=1, code="content_policy_violation")
        with pytest.raises(openai.BadRequestError) as refused:
            await achat(client)
        assert refused.value.code == "content_policy_violation"
        comet.reset(times=1)
        with pytest.raises(openai.APIConnectionError) as reset:
            await achat(client)
        assert isinstance(reset.value.__cause__, httpx2.ReadError)
        comet.garbage(times=1)
        with pytest.raises(json.JSONDecodeError):
            await achat(client)
        comet.hang(5, times=1)
        started = time.monotonic()
        with pytest.raises(openai.APITimeoutError):
            await achat(client)
        assert time.monotonic() - started < 1.5
        assert await achat(client) == "[comet] hello"


async def drain(stream: openai.AsyncStream[Any], into: list[Any]) -> None:
    async for chunk in stream:
        into.append(chunk)


@pytest.mark.asyncio
async def test_async_broken_streams(comet: FakeProvider) -> None:
    async with comet.async_client() as client:
        comet.cut_stream(after=2, times=1)
        received: list[Any] = []
        stream = await client.chat.completions.create(model="m", messages=HELLO, stream=True)
        with pytest.raises(openai.APIConnectionError) as info:
            await drain(stream, received)
        assert len(received) == 2
        assert isinstance(info.value.__cause__, httpx2.ReadError)
        comet.truncate_stream(after=2, times=1)
        stream = await client.chat.completions.create(model="m", messages=HELLO, stream=True)
        assert [c.choices[0].finish_reason async for c in stream] == [None, None]


@pytest.mark.asyncio
async def test_async_concurrent_providers(fake_provider: FakeProviderFactory) -> None:
    comet, nova = fake_provider("comet"), fake_provider("nova")
    nova.fail(500)
    async with comet.async_client() as a, nova.async_client() as b:
        results = await asyncio.gather(achat(a), achat(b), return_exceptions=True)
    assert results[0] == "[comet] hello"
    assert isinstance(results[1], openai.InternalServerError)


# -- the pytest plugin ---------------------------------------------------------


def test_plugin_fixture(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(
        """
        made = []

        def test_makes_started_providers(fake_provider):
            comet = fake_provider("comet", reply=lambda request: "hi")
            with comet.client() as client:
                reply = client.chat.completions.create(model="m", messages=[])
            assert comet.running and reply.choices[0].message.content == "hi"
            made.append(comet)

        def test_stopped_them_at_teardown():
            assert made and not made[0].running
        """
    )
    # Load the plugin explicitly, and only once even if its entry point is installed.
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    result = pytester.runpytest("-p", "failover._pytest_plugin", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


# -- slow streams: trickle and pause -------------------------------------------


def arrivals(open_stream: Callable[[], Iterable[Any]]) -> tuple[list[tuple[float, Any]], float]:
    """Each event of a stream with when it arrived, and when the stream ended, both in
    seconds since the request was sent: lower bounds on when the server sent them."""
    started = time.monotonic()
    arrived = [(time.monotonic() - started, event) for event in open_stream()]
    return arrived, time.monotonic() - started


def test_trickle_paces_the_content_chunks(comet: FakeProvider, client: openai.OpenAI) -> None:
    comet.trickle(0.05, chunks=5, times=1)
    stream = functools.partial(
        client.chat.completions.create, model="m", messages=HELLO, stream=True
    )
    arrived, _ = arrivals(stream)
    assert len(arrived) == 1 + 5 + 1  # the role, five content chunks, the finish
    assert "".join(c.choices[0].delta.content or "" for _, c in arrived) == "[comet] hello"
    assert arrived[-1][1].choices[0].finish_reason == "stop"
    for index, (moment, _) in enumerate(arrived[1:6], start=1):
        assert moment >= index * 0.05 - 0.005  # content chunk i leaves i intervals in
    assert stream_reasons(client) == [None] * 5 + ["stop"]  # times=1: back to normal


def test_trickle_more_chunks_than_characters(comet: FakeProvider, client: openai.OpenAI) -> None:
    comet.trickle(0, chunks=20, times=1)
    chunks = list(client.chat.completions.create(model="m", messages=HELLO, stream=True))
    assert len(chunks) == 22
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "[comet] hello"


def test_trickle_and_pause_answer_plain_requests(
    comet: FakeProvider, client: openai.OpenAI
) -> None:
    comet.trickle(5, times=1)
    comet.pause(0, 5, times=1)
    started = time.monotonic()
    assert [chat(client), chat(client)] == ["[comet] hello"] * 2  # and the faults are used up
    assert time.monotonic() - started < 4
    with pytest.raises(ValueError):
        comet.trickle(0.1, chunks=0)
    with pytest.raises(ValueError):
        comet.pause(-1, 1)


@pytest.mark.parametrize("after", [0, 2, 100])
def test_pause_goes_silent_then_finishes(
    comet: FakeProvider, client: openai.OpenAI, after: int
) -> None:
    comet.pause(after, 0.5, times=1)
    stream = functools.partial(
        client.chat.completions.create, model="m", messages=HELLO, stream=True
    )
    arrived, ended = arrivals(stream)
    assert "".join(c.choices[0].delta.content or "" for _, c in arrived) == "[comet] hello"
    assert arrived[-1][1].choices[0].finish_reason == "stop"
    before, later = arrived[:after], arrived[after:]
    assert all(moment < 0.45 for moment, _ in before)  # generous: these came at once
    assert all(moment >= 0.5 for moment, _ in later)  # the silence came first
    assert ended >= 0.5  # past the last event: the silence comes before [DONE]


def test_a_slow_stream_is_cut_short_by_stop(comet: FakeProvider, client: openai.OpenAI) -> None:
    comet.trickle(10, chunks=3)
    stream = client.chat.completions.create(model="m", messages=HELLO, stream=True)
    first = next(iter(stream))
    assert first.choices[0].delta.role == "assistant"
    threading.Timer(0.1, comet.stop).start()
    started = time.monotonic()
    with pytest.raises(openai.APIConnectionError):
        list(stream)
    assert time.monotonic() - started < 5


@pytest.mark.asyncio
async def test_async_trickle_and_pause(comet: FakeProvider) -> None:
    async with comet.async_client() as client:
        comet.trickle(0.05, chunks=3, times=1)
        started = time.monotonic()
        stream = await client.chat.completions.create(model="m", messages=HELLO, stream=True)
        chunks = [chunk async for chunk in stream]
        assert len(chunks) == 5
        assert time.monotonic() - started >= 0.15
        comet.pause(1, 0.2, times=1)
        started = time.monotonic()
        response = await client.responses.create(model="m", input="hi", stream=True)
        events = [event.type async for event in response]
        assert events[-1] == "response.completed"
        assert time.monotonic() - started >= 0.2


# -- an address whose connect hangs ----------------------------------------------


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="relies on Linux dropping SYNs")
def test_unreachable_connect_times_out() -> None:
    before = open_fds()
    timeout = openai.Timeout(5, connect=0.3)
    with unreachable() as base_url:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v1", base_url)
        with openai.OpenAI(base_url=base_url, api_key="k", max_retries=0, timeout=timeout) as c:
            for _ in range(2):  # every connect hangs, not only the first
                started = time.monotonic()
                with pytest.raises(openai.APITimeoutError) as info:
                    chat(c)
                assert isinstance(info.value.__cause__, httpx2.ConnectTimeout)
                assert time.monotonic() - started < 3
    assert open_fds() <= before  # every socket closed on exit (others may close too)
    port = int(base_url.split(":")[2].removesuffix("/v1"))
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="relies on Linux dropping SYNs")
@pytest.mark.asyncio
async def test_unreachable_connect_times_out_async() -> None:
    timeout = openai.Timeout(5, connect=0.3)
    with unreachable() as base_url:
        client = openai.AsyncOpenAI(base_url=base_url, api_key="k", max_retries=0, timeout=timeout)
        async with client:
            started = time.monotonic()
            with pytest.raises(openai.APITimeoutError) as info:
                await achat(client)
            assert isinstance(info.value.__cause__, httpx2.ConnectTimeout)
            assert time.monotonic() - started < 3


# -- legacy completions ----------------------------------------------------------


def completion_stream(client: openai.OpenAI, **kwargs: Any) -> list[Any]:
    return list(client.completions.create(model="m", prompt="hello", stream=True, **kwargs))


def test_completions(client: openai.OpenAI) -> None:
    reply = client.completions.create(model="gpt-3.5-turbo-instruct", prompt="hello")
    assert (reply.object, reply.model) == ("text_completion", "gpt-3.5-turbo-instruct")
    assert (reply.choices[0].text, reply.choices[0].finish_reason) == ("[comet] hello", "stop")
    assert reply.usage is not None
    assert reply.usage.total_tokens > 0
    batch = client.completions.create(model="m", prompt=["one", "two"])
    assert batch.choices[0].text == "[comet] one"


def test_completions_stream(client: openai.OpenAI) -> None:
    chunks = completion_stream(client)
    assert "".join(c.choices[0].text for c in chunks) == "[comet] hello"
    assert [c.choices[0].finish_reason for c in chunks][-2:] == [None, "stop"]
    *_, finish, usage = completion_stream(client, stream_options={"include_usage": True})
    assert finish.choices[0].finish_reason == "stop"
    assert usage.choices == []
    assert usage.usage is not None
    assert usage.usage.total_tokens > 0


def cut_after(fake: FakeProvider, after: int, open_stream: Callable[[], Iterable[Any]]) -> int:
    """How many events a stream delivers before ``cut_stream(after)`` resets it."""
    fake.cut_stream(after=after, times=1)
    received: list[Any] = []
    with pytest.raises(openai.APIConnectionError):
        received.extend(open_stream())
    return len(received)


def test_completions_broken_streams(comet: FakeProvider, client: openai.OpenAI) -> None:
    stream = functools.partial(client.completions.create, model="m", prompt="hello", stream=True)
    assert cut_after(comet, 2, stream) == 2
    comet.truncate_stream(after=100, times=1)
    chunks = completion_stream(client, stream_options={"include_usage": True})
    assert "".join(c.choices[0].text for c in chunks) == "[comet] hello"
    assert [c.choices[0].finish_reason for c in chunks] == [None] * len(chunks)  # no usage
    comet.trickle(0.05, chunks=3, times=1)
    started = time.monotonic()
    assert len(completion_stream(client)) == 4
    assert time.monotonic() - started >= 0.15


# -- the Responses API -------------------------------------------------------------

RESPONSE_EVENTS = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    *["response.output_text.delta"] * 4,
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


def test_responses_stream_events(client: openai.OpenAI) -> None:
    events = list(client.responses.create(model="m", input="hello", stream=True))
    assert [event.type for event in events] == RESPONSE_EVENTS
    assert [event.sequence_number for event in events] == list(range(len(events)))
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert "".join(deltas) == "[comet] hello"
    created, completed = events[0], events[-1]
    assert created.type == "response.created"
    assert completed.type == "response.completed"
    assert created.response.status == "in_progress"
    assert created.response.usage is None
    assert completed.response.id == created.response.id
    assert completed.response.output_text == "[comet] hello"
    assert completed.response.usage is not None
    assert completed.response.usage.total_tokens > 0


def test_responses_stream_helper(client: openai.OpenAI) -> None:
    with client.responses.stream(model="m", input="hello") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == final.output_text == "[comet] hello"
    assert final.status == "completed"


def test_responses_retrieve(comet: FakeProvider, client: openai.OpenAI) -> None:
    made = client.responses.create(model="m", input="hi")
    streamed = list(client.responses.create(model="m", input="yo", stream=True))[-1]
    assert client.responses.retrieve(made.id).output_text == "[comet] hi"
    assert streamed.type == "response.completed"
    assert client.responses.retrieve(streamed.response.id).output_text == "[comet] yo"
    with pytest.raises(openai.NotFoundError) as info:
        client.responses.retrieve("resp_unknown")
    assert "resp_unknown" in info.value.message
    assert isinstance(info.value.body, dict)
    assert "message" in info.value.body


def test_responses_broken_streams(comet: FakeProvider, client: openai.OpenAI) -> None:
    stream = functools.partial(client.responses.create, model="m", input="hello", stream=True)
    assert cut_after(comet, 5, stream) == 5
    comet.truncate_stream(after=100, times=1)
    events = list(client.responses.create(model="m", input="hello", stream=True))
    assert [event.type for event in events] == RESPONSE_EVENTS[:-1]  # ends before completed
    comet.truncate_stream(after=100, times=1)
    with client.responses.stream(model="m", input="hello") as stream:
        list(stream)
        with pytest.raises(RuntimeError, match=r"response\.completed"):
            stream.get_final_response()
    comet.trickle(0.05, chunks=3, times=1)
    started = time.monotonic()
    events = list(client.responses.create(model="m", input="hello", stream=True))
    assert [e.type for e in events].count("response.output_text.delta") == 3
    assert time.monotonic() - started >= 0.15


@pytest.mark.asyncio
async def test_async_responses(comet: FakeProvider) -> None:
    async with comet.async_client() as client:
        response = await client.responses.create(model="m", input="hello", stream=True)
        assert [event.type async for event in response] == RESPONSE_EVENTS
        async with client.responses.stream(model="m", input="hi") as stream:
            final = await stream.get_final_response()
        assert (await client.responses.retrieve(final.id)).output_text == "[comet] hi"
        comet.truncate_stream(after=3, times=1)
        response = await client.responses.create(model="m", input="hello", stream=True)
        assert [event.type async for event in response] == RESPONSE_EVENTS[:3]


# -- which connection, which credential ----------------------------------------------


def test_requests_record_the_peer(comet: FakeProvider) -> None:
    with comet.client() as one, comet.client() as two:
        chat(one)
        chat(one)
        chat(two)
    first, again, other = (request.peer for request in comet.requests)
    assert first == again != other
    assert first[0] == "127.0.0.1"
    assert first[1] > 0
    assert RecordedRequest("GET", "/v1/models", {}, None).peer == ("", 0)  # the old signature


def test_reply_can_be_a_string(fake_provider: FakeProviderFactory) -> None:
    with fake_provider("x", reply="fixed").client() as client:
        assert chat(client) == "fixed"
        assert client.completions.create(model="m", prompt="p").choices[0].text == "fixed"
        assert client.responses.create(model="m", input="hi").output_text == "fixed"


def test_azure_client(comet: FakeProvider) -> None:
    with comet.azure_client() as client:
        assert isinstance(client, openai.AzureOpenAI)
        assert chat(client) == "[comet] hello"
        assert client.completions.create(model="d", prompt="hi").choices[0].text == "[comet] hi"
        assert client.responses.create(model="d", input="hi").output_text == "[comet] hi"
        assert len(client.embeddings.create(model="d", input="x").data) == 1
        assert [model.id for model in client.models.list()] == ["fake-model"]
    paths = [request.path.split("?") for request in comet.requests]
    assert [path for path, _ in paths] == [
        "/openai/deployments/m/chat/completions",
        "/openai/deployments/d/completions",
        "/openai/responses",
        "/openai/deployments/d/embeddings",
        "/openai/models",
    ]
    assert {query for _, query in paths} == {"api-version=2024-10-21"}
    assert {request.headers["api-key"] for request in comet.requests} == {comet.api_key}
    assert all("authorization" not in request.headers for request in comet.requests)


def test_azure_wrong_key_and_explicit_base_url(fake_provider: FakeProviderFactory) -> None:
    comet, nova = fake_provider("comet"), fake_provider("nova")
    with (
        comet.azure_client(api_key=nova.api_key) as wrong,
        pytest.raises(openai.AuthenticationError),
    ):
        chat(wrong)
    base_url = f"http://127.0.0.1:{comet.port}/openai/deployments/dep"
    with comet.azure_client(base_url=base_url) as client:
        assert chat(client) == "[comet] hello"
    assert comet.requests[-1].path.startswith("/openai/deployments/dep/chat/completions?")


@pytest.mark.asyncio
async def test_async_azure_client(comet: FakeProvider) -> None:
    async with comet.async_azure_client() as client:
        assert isinstance(client, openai.AsyncAzureOpenAI)
        assert await achat(client) == "[comet] hello"
        stream = await client.chat.completions.create(model="m", messages=HELLO, stream=True)
        assert [c.choices[0].finish_reason async for c in stream if c.choices][-1] == "stop"
    assert comet.requests[-1].headers["api-key"] == comet.api_key


# -- scripted answers: reply=, tool calls, structured output ---------------------------

WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
RESPONSES_WEATHER_TOOL: Any = {"type": "function", **WEATHER_TOOL["function"]}


def weather_agent(request: dict[str, Any]) -> str | list[ToolCall]:
    """A model that calls get_weather first, then answers with what the tool said."""
    last = (request.get("messages") or request.get("input"))[-1]
    if last.get("role") == "tool":  # chat
        return f"It is {last['content']} in Paris."
    if last.get("type") == "function_call_output":  # responses
        return f"It is {last['output']} in Paris."
    return [ToolCall("get_weather", {"city": "Paris"})]


def test_reply_function_for_every_family(fake_provider: FakeProviderFactory) -> None:
    def reply(request: dict[str, Any]) -> str:
        return f"model {request['model']}"

    with fake_provider("x", reply=reply).client() as client:
        assert chat(client) == "model m"
        assert client.completions.create(model="c", prompt="p").choices[0].text == "model c"
        chunks = completion_stream(client)
        assert "".join(chunk.choices[0].text for chunk in chunks) == "model m"
        assert client.responses.create(model="r", input="hi").output_text == "model r"
        with client.responses.stream(model="s", input="hi") as stream:
            assert stream.get_final_response().output_text == "model s"


def test_tool_call_loop_chat(fake_provider: FakeProviderFactory) -> None:
    with fake_provider("agent", reply=weather_agent).client() as client:
        messages: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
        first = client.chat.completions.create(model="m", messages=messages, tools=[WEATHER_TOOL])
        assert first.choices[0].finish_reason == "tool_calls"
        message = first.choices[0].message
        assert message.content is None
        assert message.tool_calls is not None
        (call,) = message.tool_calls
        assert call.type == "function"
        assert re.fullmatch(r"call_[0-9a-f]{24}", call.id)
        assert (call.function.name, json.loads(call.function.arguments)) == (
            "get_weather",
            {"city": "Paris"},
        )
        messages.append(message.model_dump(exclude_none=True))
        messages.append({"role": "tool", "tool_call_id": call.id, "content": "sunny"})
        second = client.chat.completions.create(model="m", messages=messages, tools=[WEATHER_TOOL])
        assert second.choices[0].finish_reason == "stop"
        assert second.choices[0].message.content == "It is sunny in Paris."


def test_tool_call_loop_chat_streamed(fake_provider: FakeProviderFactory) -> None:
    with fake_provider("agent", reply=weather_agent).client() as client:
        messages: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
        chunks = list(
            client.chat.completions.create(
                model="m", messages=messages, tools=[WEATHER_TOOL], stream=True
            )
        )
        deltas = [d for c in chunks for d in c.choices[0].delta.tool_calls or []]
        assert deltas[0].id is not None
        assert deltas[0].function is not None
        assert deltas[0].function.name == "get_weather"
        arguments = "".join(d.function.arguments or "" for d in deltas if d.function)
        assert json.loads(arguments) == {"city": "Paris"}
        assert chunks[-1].choices[0].finish_reason == "tool_calls"
        with client.chat.completions.stream(
            model="m", messages=messages, tools=[WEATHER_TOOL]
        ) as stream:
            final = stream.get_final_completion()
        (call,) = final.choices[0].message.tool_calls or []
        messages.append({"role": "assistant", "tool_calls": [call.model_dump(exclude={"index"})]})
        messages.append({"role": "tool", "tool_call_id": call.id, "content": "rainy"})
        with client.chat.completions.stream(model="m", messages=messages) as stream:
            answer = stream.get_final_completion().choices[0].message.content
        assert answer == "It is rainy in Paris."


def test_tool_call_loop_responses(fake_provider: FakeProviderFactory) -> None:
    with fake_provider("agent", reply=weather_agent).client() as client:
        items: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
        first = client.responses.create(model="m", input=items, tools=[RESPONSES_WEATHER_TOOL])
        (call,) = first.output
        assert call.type == "function_call"
        assert call.call_id.startswith("call_")
        assert (call.name, json.loads(call.arguments)) == ("get_weather", {"city": "Paris"})
        items.append(call.model_dump(exclude_none=True))
        items.append({"type": "function_call_output", "call_id": call.call_id, "output": "foggy"})
        with client.responses.stream(
            model="m", input=items, tools=[RESPONSES_WEATHER_TOOL]
        ) as stream:
            assert stream.get_final_response().output_text == "It is foggy in Paris."
        events = list(client.responses.create(model="m", input=items[:1], stream=True))
        kinds = [event.type for event in events]
        assert kinds[2:4] == [
            "response.output_item.added",
            "response.function_call_arguments.delta",
        ]
        assert kinds[-3:] == [
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed",
        ]


@pytest.mark.asyncio
async def test_async_tool_call_loop(fake_provider: FakeProviderFactory) -> None:
    async with fake_provider("agent", reply=weather_agent).async_client() as client:
        messages: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
        async with client.chat.completions.stream(
            model="m", messages=messages, tools=[WEATHER_TOOL]
        ) as stream:
            first = await stream.get_final_completion()
        (call,) = first.choices[0].message.tool_calls or []
        messages.append({"role": "assistant", "tool_calls": [call.model_dump(exclude={"index"})]})
        messages.append({"role": "tool", "tool_call_id": call.id, "content": "windy"})
        second = await client.chat.completions.create(model="m", messages=messages)
        assert second.choices[0].message.content == "It is windy in Paris."
        response = await client.responses.create(model="m", input=messages[:1])
        assert [item.type for item in response.output] == ["function_call"]


def test_several_tool_calls(fake_provider: FakeProviderFactory) -> None:
    calls = [ToolCall("a", {"n": 1}), ToolCall("b")]
    with fake_provider("x", reply=lambda request: calls).client() as client:
        made = client.chat.completions.create(model="m", messages=HELLO).choices[0].message
        chunks = list(client.chat.completions.create(model="m", messages=HELLO, stream=True))
        output = client.responses.create(model="m", input="hi").output
    assert [(c.function.name, c.function.arguments) for c in made.tool_calls or []] == [
        ("a", '{"n": 1}'),
        ("b", "{}"),
    ]
    assert len({c.id for c in made.tool_calls or []}) == 2
    deltas = [d for c in chunks for d in c.choices[0].delta.tool_calls or []]
    assert sorted({d.index for d in deltas}) == [0, 1]
    assert [(item.type, getattr(item, "name", None)) for item in output] == [
        ("function_call", "a"),
        ("function_call", "b"),
    ]


class City(pydantic.BaseModel):
    name: str
    population: int


def test_structured_reply_is_sent_as_json(fake_provider: FakeProviderFactory) -> None:
    with fake_provider("x", reply={"name": "Paris", "population": 2}).client() as client:
        assert json.loads(chat(client) or "") == {"name": "Paris", "population": 2}
    with fake_provider("y", reply=lambda request: City(name="Rome", population=3)).client() as c:
        parsed = c.chat.completions.parse(model="m", messages=HELLO, response_format=City)
        assert parsed.choices[0].message.parsed == City(name="Rome", population=3)
        assert c.responses.parse(model="m", input="hi", text_format=City).output_parsed == City(
            name="Rome", population=3
        )


class Kind(enum.Enum):
    TOWN = "town"
    CITY = "city"


class Place(pydantic.BaseModel):
    name: str = pydantic.Field(min_length=2)
    kind: Kind
    rank: int = pydantic.Field(gt=10, le=20)
    score: float = pydantic.Field(gt=0, lt=0.5)
    capital: bool
    tags: list[str] = pydantic.Field(min_length=1)
    founded: datetime.date
    mayor: City | None
    neighbours: list[Place]
    nickname: str | None = None


def test_structured_output_from_the_request_schema(comet: FakeProvider) -> None:
    with comet.client() as client:
        chat_reply = client.chat.completions.parse(model="m", messages=HELLO, response_format=Place)
        place = chat_reply.choices[0].message.parsed
        assert place is not None
        assert (place.kind, place.rank, place.mayor, place.neighbours) == (Kind.TOWN, 11, None, [])
        assert len(place.name) == 2
        assert len(place.tags) == 1
        assert 0 < place.score < 0.5
        assert client.responses.parse(model="m", input="hi", text_format=Place).output_parsed
        with client.responses.stream(model="m", input="hi", text_format=City) as stream:
            assert stream.get_final_response().output_parsed == City(name="", population=0)
        json_object: Any = {"type": "json_object"}
        made = client.chat.completions.create(
            model="m", messages=HELLO, response_format=json_object
        )
        assert made.choices[0].message.content == "{}"
        text = client.responses.create(model="m", input="hi", text={"format": {"type": "text"}})
        assert text.output_text == "[comet] hi"  # no schema asked: the echo


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        ({"type": "integer", "minimum": 3}, 3),
        ({"type": "integer", "exclusiveMaximum": -2}, -3),
        ({"type": "number", "exclusiveMinimum": 1, "exclusiveMaximum": 1.5}, 1.25),
        ({"type": "string", "maxLength": 3, "format": "email"}, "use"),
        ({"type": "string", "format": "date-time"}, "1970-01-01T00:00:00Z"),
        ({"type": ["string", "null"]}, None),
        ({"enum": [2, 3]}, 2),
        ({"const": "x"}, "x"),
        ({"type": "array", "prefixItems": [{"type": "boolean"}], "minItems": 2}, [False, None]),
        (
            {
                "$defs": {"A": {"required": ["a"]}},
                "allOf": [{"$ref": "#/$defs/A"}, {"required": ["b"]}],
            },
            {"a": None, "b": None},
        ),
        ({"$defs": {"A": {"required": ["a"]}}, "$ref": "#/$defs/A"}, {"a": None}),
        ({"oneOf": [{"type": "integer"}, {"type": "string"}]}, 0),
    ],
)
def test_schema_instance(schema: dict[str, Any], expected: Any) -> None:
    assert instance(schema) == expected


def test_schema_with_a_required_cycle_is_a_reply_error(comet: FakeProvider) -> None:
    cycle: Any = {
        "type": "json_schema",
        "json_schema": {
            "name": "loop",
            "schema": {"required": ["me"], "properties": {"me": {"$ref": "#"}}},
        },
    }
    with comet.client() as client, pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="m", messages=HELLO, response_format=cycle)
    assert "no finite instance" in info.value.message


def test_reply_errors_are_500s_that_say_why(
    fake_provider: FakeProviderFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(request: dict[str, Any]) -> str:
        raise LookupError("boom")

    with fake_provider("x", reply=broken).client() as client:
        with pytest.raises(openai.InternalServerError) as info:
            chat(client)
        assert "LookupError('boom')" in info.value.message
        assert info.value.code == "fake_reply_error"
    assert "LookupError: boom" in capsys.readouterr().err  # the traceback, for the test's author
    with fake_provider("y", reply=lambda request: 42).client() as client:  # type: ignore[arg-type,return-value]
        with pytest.raises(openai.InternalServerError, match="not int"):
            chat(client)
    with fake_provider("z", reply=[ToolCall("f")]).client() as client:
        with pytest.raises(openai.InternalServerError, match="cannot answer with tool calls"):
            client.completions.create(model="m", prompt="p")


# -- usage on every reply ----------------------------------------------------------------


def test_usage_on_every_reply(fake_provider: FakeProviderFactory) -> None:
    with_usage: Any = {"include_usage": True}
    tool_reply = [ToolCall("lookup", {"query": "three short words"})]
    with fake_provider("x").client() as client, fake_provider("t", reply=tool_reply).client() as t:
        usages: list[Any] = [
            client.chat.completions.create(model="m", messages=HELLO).usage,
            list(
                client.chat.completions.create(
                    model="m", messages=HELLO, stream=True, stream_options=with_usage
                )
            )[-1].usage,
            client.completions.create(model="m", prompt="hello").usage,
            completion_stream(client, stream_options=with_usage)[-1].usage,
            client.embeddings.create(model="e", input="hello").usage,
            t.chat.completions.create(model="m", messages=HELLO).usage,
        ]
        responses = [
            client.responses.create(model="m", input="hello").usage,
            list(client.responses.create(model="m", input="hello", stream=True))[-1].response.usage,  # type: ignore[union-attr]
            t.responses.create(model="m", input="hello").usage,
        ]
    for usage in usages:
        assert usage is not None
        assert usage.prompt_tokens > 0
        assert usage.total_tokens >= usage.prompt_tokens
    assert usages[-1].completion_tokens == 4  # the tool call's arguments count
    for used in responses:
        assert used is not None
        assert used.input_tokens > 0
        assert used.total_tokens == used.input_tokens + used.output_tokens
    assert responses[-1].output_tokens == 4
