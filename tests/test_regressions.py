"""Regressions found in review: the engine, the breaker, the drivers, the endpoints."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from conftest import NO_BREAKER, provider

from failover import Breaker, StreamInterrupted, fallback_clients, with_fallback
from failover._health import STORE, Health, State, failed
from failover._policy import Fault
from failover._providers import endpoint_for
from failover._scope import current_provider
from failover.testing import FakeProvider

MODEL = "fake-model"


def _ask(client: Any, question: str = "hello") -> str:
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": question}]
    )
    return str(reply.choices[0].message.content)


async def _aask(client: Any, question: str = "hello") -> str:
    reply = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": question}]
    )
    return str(reply.choices[0].message.content)


def _state(fake: FakeProvider) -> Health:
    key = endpoint_for(provider(fake)).key
    return STORE.snapshot().get(key, ("", Health()))[1]


# -- generators: a fault after delivery never re-runs the body ---------------------------


def test_generator_interrupt_is_not_failed_over_with_wide_on(
    comet: FakeProvider, backup: FakeProvider
) -> None:
    @with_fallback(provider(comet), provider(backup), on=Exception, breaker=None)
    def items(client: Any = None) -> Iterator[str]:
        yield _ask(client)
        raise RuntimeError("broke after the first item")

    seen: list[str] = []
    with pytest.raises(StreamInterrupted):
        seen.extend(items())  # keeps the items delivered before the raise
    assert seen == ["[comet] hello"]


# -- generators resumed in another context (thread pools, asyncgen finalizers) ------------


def test_generator_resumed_in_another_context_completes(
    comet: FakeProvider, backup: FakeProvider
) -> None:
    @with_fallback(provider(comet), provider(backup), **NO_BREAKER)
    def items(client: Any = None) -> Iterator[str]:
        yield _ask(client, "one")
        yield _ask(client, "two")

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
        yield await _aask(client, "one")
        yield await _aask(client, "two")

    gen = items()
    assert await gen.__anext__() == "[comet] one"
    await asyncio.create_task(gen.aclose())  # raises ValueError on the current code


def test_interleaved_generators_leave_no_scope_behind(
    comet: FakeProvider, backup: FakeProvider
) -> None:
    @with_fallback(provider(comet), **NO_BREAKER)
    def first(client: Any = None) -> Iterator[str]:
        yield _ask(client, "a")

    @with_fallback(provider(backup), **NO_BREAKER)
    def second(client: Any = None) -> Iterator[str]:
        yield _ask(client, "b")
        yield _ask(client, "c")

    pairs = list(zip(first(), second(), strict=False))  # first ends before second
    assert pairs == [("[comet] a", "[backup] b")]
    assert current_provider() is None


# -- the breaker: "failures in a row" -------------------------------------------------------


def test_success_between_concurrent_faults_breaks_the_row(
    comet: FakeProvider, backup: FakeProvider
) -> None:
    breaker = Breaker(failures=2, cooldown=60.0, max_cooldown=60.0)
    admitted, go = threading.Event(), threading.Event()

    @with_fallback(provider(comet), provider(backup), breaker=breaker)
    def slow(client: Any = None) -> str:
        admitted.set()
        assert go.wait(5)
        return _ask(client)

    @with_fallback(provider(comet), provider(backup), breaker=breaker, retry=None)
    def fast(client: Any = None) -> str:
        return _ask(client)

    result: list[str] = []
    worker = threading.Thread(target=lambda: result.append(slow()))
    worker.start()
    assert admitted.wait(5)  # the slow call was admitted on comet while it was clean
    comet.fail(500, times=1)
    assert fast() == "[backup] hello"  # fault 1
    go.set()
    worker.join(5)
    assert result == ["[comet] hello"]  # a success: the row is broken
    comet.fail(500, times=1)
    assert fast() == "[backup] hello"  # fault 1 of a new row
    assert _state(comet).state is State.CLOSED
    assert fast() == "[comet] hello"


def test_late_failure_does_not_shorten_a_doubled_open_window() -> None:
    breaker = Breaker(failures=2, cooldown=1.0, max_cooldown=60.0)
    now = 1000.0
    opened = Health(State.OPEN, consecutive_failures=3, open_until=now + 8.0, cooldown=8.0)
    after = failed(opened, breaker, now, Fault.UNWELL, None, probe=False)
    assert after.state is State.OPEN
    assert after.open_until >= opened.open_until
    assert after.cooldown == 8.0  # the next failed probe doubles from here


# -- endpoints: one async client per live event loop ------------------------------------------


def test_async_clients_of_finished_loops_are_freed(comet: FakeProvider) -> None:
    fake = provider(comet)

    @with_fallback(fake, **NO_BREAKER)
    async def ask(client: Any = None) -> str:
        return await _aask(client)

    for _ in range(3):
        assert asyncio.run(ask()) == "[comet] hello"
    gc.collect()
    # Only the last loop's client is kept, until a client for another loop is built.
    assert len(endpoint_for(fake)._async) <= 1


def test_block_form_reuses_clients_of_same_named_providers(comet: FakeProvider) -> None:
    first = provider(comet)
    second = provider(comet)  # same name, e.g. two keys for one gateway
    clients = fallback_clients(first, second, **NO_BREAKER)

    def second_client() -> Any:
        comet.fail(500, times=1)
        for attempt in clients:
            with attempt as client:
                _ask(client)
                return client.__wrapped__
        raise AssertionError("no attempt")

    assert second_client() is second_client()


# -- fallback_clients(): one object entered twice ----------------------------------------------


def test_entering_one_fallback_clients_twice_closes_both(comet: FakeProvider) -> None:
    clients = fallback_clients(provider(comet), **NO_BREAKER)
    with clients as outer:
        built = outer._self_chain.endpoints[0].sync_client()
        with clients as inner:
            assert _ask(inner) == "[comet] hello"
        assert _ask(outer) == "[comet] hello"
    assert built.is_closed()


# -- RedisHealth ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    test_redis = pytest.importorskip("test_redis")  # skips without redis / redis-server
    server = test_redis.RedisServer().start()
    yield server.url
    server.stop()


def test_redis_store_with_sub_second_ttl_shares_state(redis_url: str) -> None:
    from failover.redis import RedisHealth

    store = RedisHealth(redis_url, namespace="review-ttl", timeout=5.0, ttl=0.5)
    store.update("k", "n", lambda h, now: (h._replace(calls=1), None), lambda: 0.0)
    assert store.source.startswith("redis"), store.source


def test_undecodable_redis_record_does_not_fail_the_call(
    redis_url: str, comet: FakeProvider
) -> None:
    import redis

    from failover.redis import RedisHealth

    fake = provider(comet)
    store = RedisHealth(redis_url, namespace="review-bad", timeout=5.0)
    raw = redis.Redis.from_url(redis_url)
    raw.set("review-bad:health:" + endpoint_for(fake).key, "not json")
    raw.close()

    @with_fallback(fake, health=store)
    def ask(client: Any = None) -> str:
        return _ask(client)

    assert ask() == "[comet] hello"
