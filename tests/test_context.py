"""``fallback_clients(...)``: the drop-in proxy client and the block form, sync and async.

Every scenario is written once, as a coroutine, and run in both flavours: with the
async flavour it runs on an event loop against an ``AsyncOpenAI`` proxy; with the
sync flavour against an ``openai.OpenAI`` proxy, where nothing it awaits ever
suspends, so it runs to completion in a single ``send(None)`` with no event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import openai
import pytest
from conftest import MESSAGES, NO_BREAKER, chat_text, provider
from test_engine import call

import failover
from failover import (
    FailoverError,
    MissingAPIKey,
    Provider,
    fallback_clients,
)
from failover.testing import FakeProvider

MODEL = "gpt-test"


# -- running one scenario in either flavour ------------------------------------


@dataclass(frozen=True)
class Flavour:
    name: str  # "sync" or "async"

    @property
    def is_async(self) -> bool:
        return self.name == "async"

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        if self.is_async:
            return asyncio.run(coro)
        try:
            coro.send(None)
        except StopIteration as done:
            return done.value
        coro.close()
        raise AssertionError("a sync scenario suspended")

    @contextlib.asynccontextmanager
    async def enter(self, manager: Any) -> AsyncIterator[Any]:
        """``with manager`` or ``async with manager``."""
        if self.is_async:
            async with manager as value:
                yield value
        else:
            with manager as value:
                yield value

    async def items(self, iterable: Any) -> list[Any]:
        """``for`` or ``async for`` over ``iterable``, collected."""
        if self.is_async:
            return [item async for item in iterable]
        return list(iterable)


FLAVOURS = [Flavour("sync"), Flavour("async")]


@pytest.fixture(params=FLAVOURS, ids=lambda f: f.name)
def flavour(request: pytest.FixtureRequest) -> Flavour:
    return request.param  # type: ignore[no-any-return]


async def done(value: Any) -> Any:
    """The value itself (sync), or what it resolves to (async)."""
    return await value if inspect.isawaitable(value) else value


Scenario = Callable[[Flavour, Any], Awaitable[Any]]


def through_proxy(
    flavour: Flavour, providers: tuple[Any, ...], scenario: Scenario, **kw: Any
) -> Any:
    """Open ``fallback_clients(*providers)`` in ``flavour`` and run ``scenario`` on its client."""
    settings = {**NO_BREAKER, **kw}

    async def main() -> Any:
        async with flavour.enter(failover.fallback_clients(*providers, **settings)) as client:
            return await scenario(flavour, client)

    return flavour.run(main())


# -- the API calls, each checking that the backup answered ---------------------


def chat(**kw: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": MESSAGES, **kw}


def content_of(completion: Any) -> str:
    return completion.choices[0].message.content  # type: ignore[no-any-return]


async def stream_text(f: Flavour, stream: Any) -> str:
    chunks = await f.items(stream)
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


async def op_chat(f: Flavour, client: Any) -> str:
    return content_of(await done(client.chat.completions.create(**chat())))


async def op_stream(f: Flavour, client: Any) -> str:
    return await stream_text(f, await done(client.chat.completions.create(**chat(stream=True))))


async def op_embeddings(f: Flavour, client: Any) -> str:
    result = await done(client.embeddings.create(model="emb", input="hello"))
    assert len(result.data) == 1
    assert len(result.data[0].embedding) == 8
    return "[backup] hello"  # who served is checked on the fakes' request logs


async def op_models_list(f: Flavour, client: Any) -> str:
    models = await f.items(client.models.list())
    return ",".join(f"[{m.owned_by}] {m.id}" for m in models)


async def op_models_list_awaited(f: Flavour, client: Any) -> str:
    page = await done(client.models.list())
    return ",".join(f"[{m.owned_by}] {m.id}" for m in page.data)


async def op_models_retrieve(f: Flavour, client: Any) -> str:
    model = await done(client.models.retrieve("fake-model"))
    return f"[{model.owned_by}] {model.id}"


async def op_responses(f: Flavour, client: Any) -> str:
    response = await done(client.responses.create(model=MODEL, input="hello"))
    return response.output_text  # type: ignore[no-any-return]


async def op_raw_response(f: Flavour, client: Any) -> str:
    raw = await done(client.chat.completions.with_raw_response.create(**chat()))
    assert raw.status_code == 200
    return content_of(await done(raw.parse()))


async def op_with_options(f: Flavour, client: Any) -> str:
    configured = client.with_options(timeout=5)
    return content_of(await done(configured.chat.completions.create(**chat())))


async def op_streaming_response(f: Flavour, client: Any) -> str:
    manager = client.chat.completions.with_streaming_response.create(**chat())
    async with f.enter(manager) as response:
        return content_of(await done(response.parse()))


OPS: dict[str, tuple[Scenario, str]] = {
    "chat": (op_chat, "[backup] hello"),
    "stream": (op_stream, "[backup] hello"),
    "embeddings": (op_embeddings, "[backup] hello"),
    "models.list": (op_models_list, "[backup] fake-model"),
    "models.retrieve": (op_models_retrieve, "[backup] fake-model"),
    "responses": (op_responses, "[backup] hello"),
    "with_raw_response": (op_raw_response, "[backup] hello"),
    "with_options": (op_with_options, "[backup] hello"),
    "with_streaming_response": (op_streaming_response, "[backup] hello"),
}


def hold_fault(fake: FakeProvider, fault: str) -> None:
    """Make ``fake`` fail every request with ``fault`` until recover()."""
    if fault == "fail":
        fake.fail(500)
    elif fault == "hang":
        fake.hang(5)
    else:
        getattr(fake, fault)()


FAULTS = ["fail", "reset", "garbage", "hang"]


def _matrix() -> list[Any]:
    # with_streaming_response hands the body itself to the caller: a bad body after a 200
    # is read outside the attempt (see test_streaming_response_body_is_the_callers).
    return [
        pytest.param(name, fault, id=f"{name}-{fault}")
        for name in OPS
        for fault in FAULTS
        if (name, fault) != ("with_streaming_response", "garbage")
    ]


# -- the proxy's type -----------------------------------------------------------


def test_with_gives_a_drop_in_openai_client(chain: tuple[Provider, Provider]) -> None:
    with failover.fallback_clients(*chain, **NO_BREAKER) as client:
        assert isinstance(client, openai.OpenAI)


@pytest.mark.asyncio
async def test_async_with_gives_a_drop_in_async_openai_client(
    chain: tuple[Provider, Provider],
) -> None:
    async with failover.fallback_clients(*chain, **NO_BREAKER) as client:
        assert isinstance(client, openai.AsyncOpenAI)


# -- every kind of call fails over ---------------------------------------------


@pytest.mark.parametrize(("op", "fault"), _matrix())
def test_call_fails_over_to_backup(
    flavour: Flavour, comet: FakeProvider, backup: FakeProvider, op: str, fault: str
) -> None:
    scenario, expected = OPS[op]
    hold_fault(comet, fault)
    started = time.monotonic()
    result = through_proxy(
        flavour, (provider(comet), provider(backup)), scenario, attempt_timeout=0.3
    )
    assert result == expected
    assert time.monotonic() - started < 3
    assert comet.requests, "the primary was tried first"
    assert backup.requests


def _decorated(flavour: Flavour, providers: tuple[Any, ...], scenario: Scenario) -> Any:
    """``scenario`` as the body of a ``@with_fallback`` function, in ``flavour``."""
    if flavour.is_async:

        @failover.with_fallback(*providers, **NO_BREAKER)
        async def abody(client: Any = None) -> Any:
            return await scenario(flavour, client)

        return asyncio.run(abody())

    @failover.with_fallback(*providers, **NO_BREAKER)
    def body(client: Any = None) -> Any:
        return flavour.run(scenario(flavour, client))

    return body()


@pytest.mark.parametrize("form", ["decorator", "proxy"])
@pytest.mark.parametrize(("op", "fault"), [p for p in _matrix() if p.values[1] != "hang"])
def test_a_call_with_no_time_bound_fails_over_on_every_fault(
    flavour: Flavour, comet: FakeProvider, backup: FakeProvider, op: str, fault: str, form: str
) -> None:
    # No budget: the healthy path's plain calls, which build what a call needs only when
    # the answer is not a parsed one. A fault met while reading the answer (a raw
    # response's bad body, parsed inside the attempt) is the provider's there too.
    scenario, expected = OPS[op]
    hold_fault(comet, fault)
    providers = (provider(comet), provider(backup))
    run = through_proxy if form == "proxy" else _decorated
    assert run(flavour, providers, scenario) == expected
    assert comet.requests, "the primary was tried first"


def test_async_models_list_can_be_awaited(comet: FakeProvider, backup: FakeProvider) -> None:
    comet.fail(500)
    providers = (provider(comet), provider(backup))
    result = through_proxy(Flavour("async"), providers, op_models_list_awaited)
    assert result == "[backup] fake-model"


@pytest.mark.parametrize("form", ["decorator", "proxy", "block"])
def test_async_pages_are_iterated_in_every_form(
    comet: FakeProvider, backup: FakeProvider, form: str
) -> None:
    # An AsyncPaginator is awaited (its first page) or iterated over every item.
    async def ids(client: Any = None) -> list[str]:
        return [f"{m.owned_by} {m.id}" async for m in client.models.list()]

    comet.fail(500)
    chain = (provider(comet), provider(backup))
    assert call(chain, f"{form}-async", body=ids, **NO_BREAKER) == ["backup fake-model"]


def test_streaming_response_body_is_the_callers(
    flavour: Flavour, comet: FakeProvider, backup: FakeProvider
) -> None:
    # with_streaming_response returns once the 200 arrives; its body is the caller's to read.
    comet.garbage()
    with pytest.raises(json.JSONDecodeError):
        through_proxy(flavour, (provider(comet), provider(backup)), op_streaming_response)
    assert backup.requests == []


def test_healthy_primary_serves_and_backup_is_untouched(
    flavour: Flavour, comet: FakeProvider, backup: FakeProvider
) -> None:
    result = through_proxy(flavour, (provider(comet), provider(backup)), op_chat)
    assert result == "[comet] hello"
    assert backup.requests == []


# -- streams ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param(lambda fake: fake.cut_stream(after=0), id="cut-before-first-chunk"),
        pytest.param(lambda fake: fake.fail(500), id="fail"),
        pytest.param(lambda fake: fake.truncate_stream(after=0), id="empty-stream"),
    ],
)
def test_stream_failing_before_first_chunk_fails_over(
    flavour: Flavour,
    comet: FakeProvider,
    backup: FakeProvider,
    fault: Callable[[FakeProvider], None],
) -> None:
    fault(comet)
    result = through_proxy(flavour, (provider(comet), provider(backup)), op_stream)
    assert result == "[backup] hello"


def test_stream_cut_after_chunks_raises_stream_interrupted(
    flavour: Flavour, comet: FakeProvider, backup: FakeProvider
) -> None:
    comet.cut_stream(after=3)
    with pytest.raises(failover.StreamInterrupted) as caught:
        through_proxy(flavour, (provider(comet), provider(backup)), op_stream)
    assert caught.value.provider == "comet"
    assert caught.value.chunks == 3
    assert "comet" in str(caught.value)
    assert "3 chunks" in str(caught.value)
    assert backup.requests == []


def test_truncated_stream_raises_stream_truncated_at_the_end(
    flavour: Flavour, comet: FakeProvider, backup: FakeProvider
) -> None:
    comet.truncate_stream(after=3)
    seen: list[Any] = []

    async def scenario(f: Flavour, client: Any) -> None:
        stream = await done(client.chat.completions.create(**chat(stream=True)))
        if f.is_async:
            async for chunk in stream:
                seen.append(chunk)
        else:
            seen.extend(stream)

    with pytest.raises(failover.StreamTruncated) as caught:
        through_proxy(flavour, (provider(comet), provider(backup)), scenario)
    assert len(seen) == 3, "the chunks before the cut were delivered"
    assert caught.value.provider == "comet"
    assert caught.value.chunks == 3


# -- when everything fails, and the caller's own errors -------------------------


def test_both_failing_raises_failover_error_in_order(
    flavour: Flavour, comet: FakeProvider, backup: FakeProvider
) -> None:
    comet.fail(500)
    backup.fail(503)
    with pytest.raises(FailoverError) as caught:
        through_proxy(flavour, (provider(comet), provider(backup)), op_chat)
    statuses = [getattr(e, "status_code", None) for e in caught.value.exceptions]
    assert statuses == [500, 503]
    assert [a.provider for a in caught.value.attempts] == ["comet", "backup"]


async def bad_create(f: Flavour, client: Any) -> Any:
    return await done(client.chat.completions.create())


async def bad_retrieve(f: Flavour, client: Any) -> Any:
    return await done(client.chat.completions.retrieve(""))


@pytest.mark.parametrize(
    ("scenario", "error"),
    [
        pytest.param(bad_create, TypeError, id="create-missing-args"),
        pytest.param(bad_retrieve, ValueError, id="retrieve-empty-id"),
    ],
)
def test_user_errors_are_not_failed_over(
    flavour: Flavour,
    comet: FakeProvider,
    backup: FakeProvider,
    scenario: Scenario,
    error: type[Exception],
) -> None:
    comet.fail(500)
    with pytest.raises(error) as caught:
        through_proxy(flavour, (provider(comet), provider(backup)), scenario)
    assert not isinstance(caught.value, FailoverError)
    assert backup.requests == []


# -- closing ---------------------------------------------------------------------


def _endpoint_clients(proxy: Any, f: Flavour) -> list[Any]:
    build = "async_client" if f.is_async else "sync_client"
    return [getattr(e, build)() for e in proxy._self_chain.endpoints]


def test_clients_failover_built_are_closed_on_exit(
    flavour: Flavour, comet: FakeProvider, backup: FakeProvider
) -> None:
    comet.fail(500)
    manager = failover.fallback_clients(provider(comet), provider(backup), **NO_BREAKER)

    async def main() -> list[Any]:
        async with flavour.enter(manager) as client:
            assert await op_chat(flavour, client) == "[backup] hello"
            built = _endpoint_clients(client, flavour)
            assert not any(c.is_closed() for c in built)
        return built

    built = flavour.run(main())
    assert len(built) == 2
    assert all(c.is_closed() for c in built)


def test_clients_the_user_passed_stay_open(
    flavour: Flavour, comet: FakeProvider, backup: FakeProvider
) -> None:
    comet.fail(500)
    make = "async_client" if flavour.is_async else "client"
    users = (getattr(comet, make)(), getattr(backup, make)())

    async def main() -> list[bool]:
        async with flavour.enter(failover.fallback_clients(*users, **NO_BREAKER)) as client:
            assert await op_chat(flavour, client) == "[backup] hello"
        still_open = [not c.is_closed() for c in users]
        for user_client in users:
            await done(user_client.close())
        return still_open

    assert flavour.run(main()) == [True, True]


# -- the block form --------------------------------------------------------------

BLOCK_MODES = ["sync", "async-for-with", "async-for-async-with"]


def run_blocks(mode: str, manager: failover.FallbackClients, body: Scenario) -> Any:
    """``for attempt in manager: with attempt as client: body`` in ``mode``; its last result."""
    f = Flavour("sync" if mode == "sync" else "async")
    result = None

    async def main() -> Any:
        nonlocal result
        if mode == "sync":
            for attempt in manager:
                with attempt as client:
                    result = await body(attempt, client)
        elif mode == "async-for-with":
            async for attempt in manager:
                with attempt as client:
                    result = await body(attempt, client)
        else:
            async for attempt in manager:
                async with attempt as client:
                    result = await body(attempt, client)
        return result

    return f.run(main())


class Recorder:
    """A block body that records each run: (attempt.provider, current_provider())."""

    def __init__(self, error: Exception | None = None, stream: bool = False) -> None:
        self.runs: list[tuple[str, str | None]] = []
        self.error = error
        self.stream = stream

    async def __call__(self, attempt: Any, client: Any) -> str:
        self.runs.append((attempt.provider, failover.current_provider()))
        if self.error is not None:
            raise self.error
        if self.stream:  # read to the end: a cut or silently truncated stream must re-run
            flavour = Flavour("sync" if isinstance(client, openai.OpenAI) else "async")
            reply = await done(client.chat.completions.create(**chat(stream=True)))
            return await stream_text(flavour, reply)
        return content_of(await done(client.chat.completions.create(**chat())))


@pytest.fixture(params=BLOCK_MODES)
def block_mode(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]


@pytest.mark.parametrize("fault", [*FAULTS, "cut_stream", "truncate_stream"])
def test_block_reruns_on_backup_when_primary_fails(
    block_mode: str, fault: str, comet: FakeProvider, backup: FakeProvider
) -> None:
    hold_fault(comet, fault)
    body = Recorder(stream=fault.endswith("_stream"))
    chain = (provider(comet), provider(backup))
    manager = failover.fallback_clients(*chain, attempt_timeout=0.3, **NO_BREAKER)
    assert run_blocks(block_mode, manager, body) == "[backup] hello"
    assert body.runs == [("comet", "comet"), ("backup", "backup")]


def test_block_runs_once_when_primary_is_healthy(
    block_mode: str, comet: FakeProvider, backup: FakeProvider
) -> None:
    body = Recorder()
    manager = failover.fallback_clients(provider(comet), provider(backup), **NO_BREAKER)
    assert run_blocks(block_mode, manager, body) == "[comet] hello"
    assert body.runs == [("comet", "comet")]
    assert backup.requests == []


def test_block_raises_failover_error_when_all_fail(
    block_mode: str, comet: FakeProvider, backup: FakeProvider
) -> None:
    comet.fail(500)
    backup.fail(502)
    body = Recorder()
    manager = failover.fallback_clients(provider(comet), provider(backup), **NO_BREAKER)
    with pytest.raises(FailoverError) as caught:
        run_blocks(block_mode, manager, body)
    assert [e.status_code for e in caught.value.exceptions] == [500, 502]  # type: ignore[attr-defined]
    assert len(body.runs) == 2


def test_block_user_error_propagates_at_once(
    block_mode: str, comet: FakeProvider, backup: FakeProvider
) -> None:
    body = Recorder(ValueError("my bug"))
    manager = failover.fallback_clients(provider(comet), provider(backup), **NO_BREAKER)
    with pytest.raises(ValueError, match="my bug"):
        run_blocks(block_mode, manager, body)
    assert body.runs == [("comet", "comet")]
    assert comet.requests == backup.requests == []


def test_block_reuses_each_providers_clients_across_loops(
    comet: FakeProvider, backup: FakeProvider
) -> None:
    # A block form runs once per request: rebuilding clients (and TLS contexts,
    # connection pools) per loop would cost more than the request itself.
    comet.fail(500)
    chain = (provider(comet), provider(backup))
    loops = []
    for _ in range(2):
        clients = []
        for attempt in failover.fallback_clients(*chain, **NO_BREAKER):
            with attempt as client:
                clients.append(client.__wrapped__)
                client.models.list()
        loops.append(clients)
    assert [a is b for a, b in zip(*loops, strict=True)] == [True, True]
    assert not any(c.is_closed() for c in loops[0])


@pytest.mark.asyncio
async def test_async_block_reuses_each_providers_clients_within_an_event_loop(
    comet: FakeProvider, backup: FakeProvider
) -> None:
    comet.fail(500)
    chain = (provider(comet), provider(backup))
    loops = []
    for _ in range(2):
        clients = []
        async for attempt in failover.fallback_clients(*chain, **NO_BREAKER):
            async with attempt as client:
                clients.append(client.__wrapped__)
                await client.models.list()
        loops.append(clients)
    assert [a is b for a, b in zip(*loops, strict=True)] == [True, True]


def test_current_provider_is_none_outside_a_block() -> None:
    assert failover.current_provider() is None


# -- missing keys ------------------------------------------------------------------


def keyless(fake: FakeProvider) -> Provider:
    return Provider("x", base_url=fake.base_url, api_key_env="FAILOVER_TEST_UNSET_KEY")


@pytest.fixture
def no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FAILOVER_TEST_UNSET_KEY", raising=False)


@pytest.mark.usefixtures("no_key")
def test_provider_without_key_is_skipped_for_the_backup(
    flavour: Flavour, comet: FakeProvider, backup: FakeProvider
) -> None:
    assert through_proxy(flavour, (keyless(comet), provider(backup)), op_chat) == "[backup] hello"
    assert comet.requests == []


@pytest.mark.usefixtures("no_key")
def test_missing_key_is_listed_when_all_fail(
    flavour: Flavour, comet: FakeProvider, backup: FakeProvider
) -> None:
    backup.fail(500)
    with pytest.raises(FailoverError) as caught:
        through_proxy(flavour, (keyless(comet), provider(backup)), op_chat)
    first, second = caught.value.exceptions
    assert isinstance(first, MissingAPIKey)
    assert isinstance(second, openai.APIStatusError)
    assert [a.provider for a in caught.value.attempts] == ["x", "backup"]


@pytest.mark.usefixtures("no_key")
def test_no_key_at_all_still_gives_a_client_that_raises_failover_error(
    flavour: Flavour, comet: FakeProvider, backup: FakeProvider
) -> None:
    providers = (keyless(comet), keyless(backup))
    with pytest.raises(FailoverError) as caught:
        through_proxy(flavour, providers, op_chat)
    assert all(isinstance(e, MissingAPIKey) for e in caught.value.exceptions)
    assert len(caught.value.exceptions) == 2
    assert comet.requests == backup.requests == []


# -- concurrency -------------------------------------------------------------------


def test_threads_share_one_sync_proxy(comet: FakeProvider, backup: FakeProvider) -> None:
    comet.fail(500)
    with failover.fallback_clients(provider(comet), provider(backup), **NO_BREAKER) as client:

        def ask(i: int) -> str:
            messages = [{"role": "user", "content": f"q{i}"}]
            reply = client.chat.completions.create(model=MODEL, messages=messages)  # type: ignore[arg-type]
            return f"{content_of(reply)} on {threading.get_ident()}"

        with ThreadPoolExecutor(max_workers=20) as pool:
            answers = list(pool.map(ask, range(20)))
    assert [a.split(" on ")[0] for a in answers] == [f"[backup] q{i}" for i in range(20)]


@pytest.mark.asyncio
async def test_tasks_share_one_async_proxy(comet: FakeProvider, backup: FakeProvider) -> None:
    comet.fail(500)
    async with failover.fallback_clients(provider(comet), provider(backup), **NO_BREAKER) as client:

        async def ask(i: int) -> str:
            messages = [{"role": "user", "content": f"q{i}"}]
            reply = await client.chat.completions.create(model=MODEL, messages=messages)  # type: ignore[arg-type]
            return content_of(reply)

        answers = await asyncio.gather(*(ask(i) for i in range(50)))
    assert answers == [f"[backup] q{i}" for i in range(50)]


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", ["fallback_clients()", "failover.AsyncOpenAI"])
async def test_an_async_api_call_is_a_coroutine_that_tasks_can_run(
    kind: str, comet: FakeProvider, backup: FakeProvider
) -> None:
    # As openai's own: create_task (and TaskGroup's) take coroutines, not other awaitables.
    comet.fail(500)
    chain = (provider(comet), provider(backup))
    if kind == "fallback_clients()":
        manager: Any = failover.fallback_clients(*chain, **NO_BREAKER)
    else:
        manager = failover.AsyncOpenAI(*chain, **NO_BREAKER)
    async with manager as client:
        call = client.chat.completions.create(model=MODEL, messages=MESSAGES)
        assert inspect.iscoroutine(call)
        first = await asyncio.create_task(call)
        tasks = [
            asyncio.create_task(client.chat.completions.create(model=MODEL, messages=MESSAGES))
            for _ in range(3)
        ]
        rest = await asyncio.gather(*tasks)
    assert [content_of(r) for r in [first, *rest]] == ["[backup] hello"] * 4


# -- repr ----------------------------------------------------------------------------


def test_reprs_never_show_the_api_key(
    flavour: Flavour, comet: FakeProvider, backup: FakeProvider
) -> None:
    manager = failover.fallback_clients(provider(comet), provider(backup), **NO_BREAKER)
    reprs = [repr(manager)]

    async def main() -> None:
        async with flavour.enter(manager) as client:
            reprs.extend([repr(client), repr(client.chat.completions), str(client)])

    flavour.run(main())
    assert "comet" in reprs[0]
    assert "backup" in reprs[1]
    for text in reprs:
        assert comet.api_key not in text
        assert backup.api_key not in text


# -- fallback_clients(): one object entered twice ----------------------------------------------


def test_entering_one_fallback_clients_twice_closes_both(comet: FakeProvider) -> None:
    clients = fallback_clients(provider(comet), **NO_BREAKER)
    with clients as outer:
        built = outer._self_chain.endpoints[0].sync_client()
        with clients as inner:
            assert chat_text(inner) == "[comet] hello"
        assert chat_text(outer) == "[comet] hello"
    assert built.is_closed()
