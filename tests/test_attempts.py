"""The drivers: clients that carry their attempt, generators that close at once,
block forms resumed in other contexts (issue "Correct in the wild", items 4, 8, 9)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import cProfile
import gc
import os
import pstats
import weakref
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from conftest import MESSAGES, NO_BREAKER, achat_text, chat_text, provider

from failover import StreamInterrupted, _engine, _telemetry, fallback_clients, health, with_fallback
from failover._scope import Scope, current_provider
from failover.testing import FakeProvider

MAPPED = {"models": {"gpt-x": "mapped-x"}}


def _ask(client: Any) -> str:
    reply = client.chat.completions.create(model="gpt-x", messages=MESSAGES)
    return str(reply.choices[0].message.content)


async def _aask(client: Any) -> str:
    reply = await client.chat.completions.create(model="gpt-x", messages=MESSAGES)
    return str(reply.choices[0].message.content)


# -- item 8: a handed-out client carries its attempt into worker threads --------------


def test_worker_thread_keeps_the_attempts_model_mapping_and_budget(
    comet: FakeProvider, backup: FakeProvider
) -> None:
    comet.hang(5)

    @with_fallback(provider(comet, **MAPPED), provider(backup), attempt_timeout=0.3, **NO_BREAKER)
    def ask(client: Any = None) -> str:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:  # no context is copied
            return pool.submit(_ask, client).result(timeout=4)

    assert ask() == "[backup] hello"  # comet's hang was cut at 0.3 s, not after 5 s
    assert comet.requests[0].json["model"] == "mapped-x"


@pytest.mark.asyncio
async def test_run_in_executor_keeps_the_attempts_model_mapping_and_budget(
    comet: FakeProvider, backup: FakeProvider
) -> None:
    comet.hang(5)

    @with_fallback(provider(comet, **MAPPED), provider(backup), attempt_timeout=0.3, **NO_BREAKER)
    async def ask(client: Any = None) -> str:
        loop = asyncio.get_running_loop()

        def start() -> Any:  # the call is made (arguments fixed) in the worker thread
            return client.chat.completions.create(model="gpt-x", messages=MESSAGES)

        reply = await (await loop.run_in_executor(None, start))
        return str(reply.choices[0].message.content)

    assert await ask() == "[backup] hello"
    assert comet.requests[0].json["model"] == "mapped-x"


def _ask_sync_twin(client: Any) -> str:
    # The async client's coroutine, run to its end on a fresh loop in the worker thread.
    return asyncio.run(_aask(client))


@pytest.mark.asyncio
async def test_to_thread_keeps_the_attempts_model_mapping(
    comet: FakeProvider, backup: FakeProvider
) -> None:
    @with_fallback(provider(comet, **MAPPED), provider(backup), **NO_BREAKER)
    async def ask(client: Any = None) -> str:
        return await asyncio.to_thread(_ask_sync_twin, client)

    assert await ask() == "[comet] hello"
    assert comet.requests[-1].json["model"] == "mapped-x"


def test_block_form_client_carries_its_attempt_into_threads(
    comet: FakeProvider, backup: FakeProvider
) -> None:
    comet.hang(5)
    for attempt in fallback_clients(
        provider(comet, **MAPPED), provider(backup), attempt_timeout=0.3, **NO_BREAKER
    ):
        with attempt as client, concurrent.futures.ThreadPoolExecutor(1) as pool:
            answer = pool.submit(_ask, client).result(timeout=4)
    assert answer == "[backup] hello"
    assert comet.requests[0].json["model"] == "mapped-x"


# -- item 4: closing a decorated generator closes the body's generator at once -------


def test_closing_a_decorated_generator_closes_the_body_and_its_stream(
    comet: FakeProvider, backup: FakeProvider
) -> None:
    comet.trickle(0.05, chunks=40)
    seen: dict[str, Any] = {}

    @with_fallback(provider(comet), provider(backup), **NO_BREAKER)
    def words(client: Any = None) -> Iterator[str]:
        stream = client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
        seen["response"] = stream.response
        try:
            for chunk in stream:
                yield chunk.choices[0].delta.content or ""
        finally:
            seen["finally"] = True

    gen = words()
    next(gen)
    body = weakref.ref(gen.gi_frame.f_locals["items"])  # the body's own generator
    gc.disable()  # what must happen, happens by itself: no collection helps
    try:
        gen.close()
        assert seen.get("finally") is True
        assert seen["response"].is_closed
        del gen
        assert body() is None  # no reference cycle keeps the finished body alive
    finally:
        gc.enable()
    assert "cometapi" not in health()


@pytest.mark.asyncio
async def test_closing_a_decorated_async_generator_closes_the_body_and_its_stream(
    comet: FakeProvider, backup: FakeProvider
) -> None:
    comet.trickle(0.05, chunks=40)
    seen: dict[str, Any] = {}

    @with_fallback(provider(comet), provider(backup), **NO_BREAKER)
    async def words(client: Any = None) -> AsyncIterator[str]:
        stream = await client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
        seen["stream"] = stream
        try:
            async for chunk in stream:
                yield chunk.choices[0].delta.content or ""
        finally:
            seen["finally"] = True

    gen = words()
    await anext(gen)
    await gen.aclose()
    assert seen.get("finally") is True
    assert seen["stream"].response.is_closed


def test_break_in_a_for_over_a_decorated_generator_closes_the_body(
    comet: FakeProvider, backup: FakeProvider
) -> None:
    comet.trickle(0.05, chunks=40)
    closed: list[bool] = []

    @with_fallback(provider(comet), provider(backup), **NO_BREAKER)
    def words(client: Any = None) -> Iterator[str]:
        try:
            for chunk in client.chat.completions.create(model="m", messages=MESSAGES, stream=True):
                yield chunk.choices[0].delta.content or ""
        finally:
            closed.append(True)

    gc.disable()
    try:
        for _ in words():
            break
        assert closed == [True]  # the for loop dropped the generator: closed by refcount
    finally:
        gc.enable()


# -- item 9: the block form inside a generator resumed in fresh contexts -------------


def _starlette_like(gen: Iterator[str]) -> list[str]:
    """Each next() in a fresh copy_context() on a thread pool, as Starlette does."""
    out: list[str] = []
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        while True:
            context = contextvars.copy_context()
            item = pool.submit(context.run, next, gen, None).result(timeout=5)
            if item is None:
                return out
            out.append(item)


def test_block_form_in_a_generator_resumed_in_other_contexts_records_success(
    comet: FakeProvider, backup: FakeProvider
) -> None:
    def words() -> Iterator[str]:
        for attempt in fallback_clients(provider(comet), provider(backup)):
            with attempt as client:
                stream = client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
                for chunk in stream:
                    yield chunk.choices[0].delta.content or ""

    assert "".join(_starlette_like(words())) == "[comet] hello"
    assert health()["comet"]["calls"] == 1  # the attempt ended, and was recorded


@pytest.mark.parametrize("fault", ["fail", "hang"])
def test_block_form_in_a_generator_resumed_elsewhere_still_fails_over(
    comet: FakeProvider, backup: FakeProvider, fault: str
) -> None:
    comet.fail(503) if fault == "fail" else comet.hang(5)

    def words() -> Iterator[str]:
        chain = fallback_clients(provider(comet), provider(backup), attempt_timeout=0.3)
        for attempt in chain:
            with attempt as client:
                stream = client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
                for chunk in stream:
                    yield chunk.choices[0].delta.content or ""

    assert "".join(_starlette_like(words())) == "[backup] hello"


def test_block_form_loops_leave_nothing_behind_on_the_shared_clients(
    comet: FakeProvider, backup: FakeProvider
) -> None:
    chain = (provider(comet), provider(backup))
    for _ in range(3):
        for attempt in fallback_clients(*chain):
            with attempt as client:
                _ask(client)
    gc.collect()
    before = _live(Scope)
    for _ in range(50):  # one loop per request: each builds a chain of its own
        for attempt in fallback_clients(*chain):
            with attempt as client:
                _ask(client)
    gc.collect()
    assert _live(Scope) <= before  # the shared clients keep no scope of a finished loop


def _live(kind: type) -> int:
    return sum(isinstance(o, kind) for o in gc.get_objects())


# -- generators: a fault after delivery never re-runs the body ---------------------------


def test_generator_interrupt_is_not_failed_over_with_wide_on(
    comet: FakeProvider, backup: FakeProvider
) -> None:
    @with_fallback(provider(comet), provider(backup), on=Exception, breaker=None)
    def items(client: Any = None) -> Iterator[str]:
        yield chat_text(client)
        raise RuntimeError("broke after the first item")

    seen: list[str] = []
    with pytest.raises(StreamInterrupted):
        seen.extend(items())  # keeps the items delivered before the raise
    assert seen == ["[comet] hello"]


def test_a_generator_interrupted_leaves_no_cycle_keeping_its_body(
    comet: FakeProvider, backup: FakeProvider
) -> None:
    comet.cut_stream(after=2)

    @with_fallback(provider(comet), provider(backup), **NO_BREAKER)
    def words(client: Any = None) -> Iterator[str]:
        for chunk in client.chat.completions.create(model="m", messages=MESSAGES, stream=True):
            yield chunk.choices[0].delta.content or ""

    gen = words()
    next(gen)
    body = weakref.ref(gen.gi_frame.f_locals["items"])
    gc.disable()  # the interruption's traceback must not hold the body in a cycle
    try:
        with pytest.raises(StreamInterrupted):
            list(gen)
        del gen
        assert body() is None
    finally:
        gc.enable()


@pytest.mark.asyncio
async def test_an_async_generator_interrupted_leaves_no_cycle_keeping_its_body(
    comet: FakeProvider, backup: FakeProvider
) -> None:
    comet.cut_stream(after=2)

    @with_fallback(provider(comet), provider(backup), **NO_BREAKER)
    async def words(client: Any = None) -> AsyncIterator[str]:
        stream = await client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
        async for chunk in stream:
            yield chunk.choices[0].delta.content or ""

    gen = words()
    await anext(gen)
    body = weakref.ref(gen.ag_frame.f_locals["items"])
    gc.disable()
    try:
        with pytest.raises(StreamInterrupted):
            [_ async for _ in gen]
        del gen
        assert body() is None
    finally:
        gc.enable()


# -- generators resumed in another context (thread pools, asyncgen finalizers) ------------


def test_generator_resumed_in_another_context_completes(
    comet: FakeProvider, backup: FakeProvider
) -> None:
    @with_fallback(provider(comet), provider(backup), **NO_BREAKER)
    def items(client: Any = None) -> Iterator[str]:
        yield chat_text(client, "one")
        yield chat_text(client, "two")

    gen = items()
    seen = []
    while True:  # each step in a fresh copy of the context, as a thread pool does
        try:
            seen.append(contextvars.copy_context().run(next, gen))
        except StopIteration:
            break
    assert seen == ["[comet] one", "[comet] two"]


@pytest.mark.asyncio
async def test_async_generator_closed_from_another_task(
    comet: FakeProvider, backup: FakeProvider
) -> None:
    @with_fallback(provider(comet), provider(backup), **NO_BREAKER)
    async def items(client: Any = None) -> AsyncIterator[str]:
        yield await achat_text(client, "one")
        yield await achat_text(client, "two")

    gen = items()
    assert await gen.__anext__() == "[comet] one"
    await asyncio.create_task(gen.aclose())  # raises ValueError on the current code


def test_interleaved_generators_leave_no_scope_behind(
    comet: FakeProvider, backup: FakeProvider
) -> None:
    @with_fallback(provider(comet), **NO_BREAKER)
    def first(client: Any = None) -> Iterator[str]:
        yield chat_text(client, "a")

    @with_fallback(provider(backup), **NO_BREAKER)
    def second(client: Any = None) -> Iterator[str]:
        yield chat_text(client, "b")
        yield chat_text(client, "c")

    pairs = list(zip(first(), second(), strict=False))  # first ends before second
    assert pairs == [("[comet] a", "[backup] b")]
    assert current_provider() is None


# -- the lean first attempt ----------------------------------------------------------


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("form", ["decorator", "proxy"])
def test_a_healthy_call_builds_no_run_and_a_failing_one_carries_on_from_its_attempt(
    comet: FakeProvider, backup: FakeProvider, monkeypatch: pytest.MonkeyPatch, form: str, mode: str
) -> None:
    runs: list[object] = []
    real = _engine.Run.__init__

    def counted(self: Any, *args: Any, **kwargs: Any) -> None:
        runs.append(self)
        real(self, *args, **kwargs)

    monkeypatch.setattr(_engine.Run, "__init__", counted)
    chain = (provider(comet), provider(backup))

    def ask() -> str:
        if mode == "async":
            if form == "decorator":
                body = with_fallback(*chain, retry=None)(achat_text)
                return asyncio.run(body())

            async def drop_in() -> str:
                async with fallback_clients(*chain, retry=None) as client:
                    return await achat_text(client)

            return asyncio.run(drop_in())
        if form == "decorator":
            return with_fallback(*chain, retry=None)(chat_text)()
        with fallback_clients(*chain, retry=None) as client:
            return chat_text(client)

    assert ask() == "[comet] hello"
    assert runs == []  # the healthy path: no Run, no attempt list, no observer
    comet.fail(500, times=1)
    assert ask() == "[backup] hello"
    assert len(runs) == 1  # built when the first attempt failed, carrying it on
    assert health()["comet"]["consecutive_failures"] == 1
    assert health()["backup"]["failovers_served"] == 1


# -- the healthy path stays flat ----------------------------------------------------

# Around a real call every function failover runs is a cache miss of several µs (see
# README, Performance): so how many distinct ones a healthy call runs is held here, as
# a budget. Counted, not timed. Raise a budget only for a function the healthy path must
# run. Not counted: tracing()'s check, which runs once some module imported opentelemetry.
FRAMES = {"decorator-sync": 4, "decorator-async": 5, "proxy-sync": 5, "proxy-async": 7}


def _ours(stats: pstats.Stats) -> list[str]:
    return sorted(
        f"{os.path.basename(file)}:{name}"
        for file, _, name in stats.stats  # type: ignore[attr-defined]
        if (f"{os.sep}failover{os.sep}" in file or f"{os.sep}wrapt{os.sep}" in file)
        and not file.endswith("_telemetry.py")
    )


@pytest.mark.parametrize("how", list(FRAMES))
def test_a_healthy_call_runs_few_functions_of_failover(
    comet: FakeProvider, backup: FakeProvider, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As in a process that never traced: once anything traced, calls look for spans (a
    # latch that the telemetry tests, in the same worker, may have set).
    monkeypatch.setattr(_telemetry, "LIVE", False)
    form, mode = how.split("-")
    chain = (provider(comet), provider(backup))
    profile = cProfile.Profile()

    def ask(client: Any = None) -> str:
        return chat_text(client)

    async def aask(client: Any = None) -> str:
        return await achat_text(client)

    def measured(call: Any) -> None:
        assert call() == "[comet] hello"  # warm: clients built, methods resolved
        profile.enable()
        call()
        profile.disable()

    async def ameasured(call: Any) -> None:
        assert await call() == "[comet] hello"
        profile.enable()
        await call()
        profile.disable()

    if mode == "sync" and form == "decorator":
        measured(with_fallback(*chain)(ask))
    elif mode == "sync":
        with fallback_clients(*chain) as client:
            measured(lambda: ask(client))
    elif form == "decorator":
        asyncio.run(ameasured(with_fallback(*chain)(aask)))
    else:

        async def main() -> None:
            async with fallback_clients(*chain) as client:
                await ameasured(lambda: aask(client))

        asyncio.run(main())
    ours = _ours(pstats.Stats(profile))
    assert len(ours) <= FRAMES[how], " ".join(ours)
