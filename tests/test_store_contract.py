"""One breaker contract, every store: in-process, Redis from sync code, Redis from an
event loop, a Redis Cluster, and Valkey when it is installed.

Each store is driven as the engine drives it: a closed provider's admission is a
read of its ``views`` (a ``peek`` when it has none), a clean success an append to its
key's tally (a ``count`` when there is none, or it is long: ``Chain.served``), anything
else an ``update`` (from an event loop:
written behind) or, for the admission of a provider that is not closed, an awaited
``aupdate`` on async drivers. Where the store is shared, what the test checks is also
checked from another store on the same namespace, as another process would see it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import Coroutine, Iterator
from concurrent.futures import Future
from typing import Any, TypeVar

import pytest
from conftest import MESSAGES
from redis_servers import (  # noqa: F401 (fixtures)
    Cluster,
    RedisServer,
    Sentinel,
    ns_fixture,
    redis_cluster_fixture,
    redis_server_fixture,
    valkey_server_fixture,
    wait_for,
)

import failover
from failover import Breaker, Retry, State, fallback_clients, with_fallback
from failover._activity import GATHER_AT
from failover._health import (
    Change,
    Health,
    HealthStore,
    MemoryStore,
    Reason,
    Verdict,
    admit,
    bucket_start,
    clean,
    count_skip,
    failed,
    released,
    succeeded,
)
from failover._policy import Fault
from failover._providers import endpoint_for
from failover.redis import RedisHealth
from failover.testing import FakeProvider

R = TypeVar("R")
NAME = "comet"
KEY = "comet http://127.0.0.1:9/v1 none"
#: Short real cooldowns: with Redis, ``now`` is the server's wall clock.
BREAKER = Breaker(failures=2, cooldown=0.1, max_cooldown=0.8)
RATE = Breaker(failures=100, cooldown=60.0, max_cooldown=60.0, failure_rate=0.5, min_calls=4)
Chain = tuple[failover.Provider, failover.Provider]


class Driver:
    """Calls a store as the engine's sync drivers do."""

    flavour = "sync"

    def __init__(self, store: HealthStore, other: HealthStore) -> None:
        self.store = store
        self.other = other  # the same namespace from another store: another process

    def update(self, change: Change[R], key: str = KEY) -> R:
        return self.store.update(key, NAME, change, time.time)

    def claim(self, change: Change[R], key: str = KEY) -> R:
        """The admission of a provider that is not closed."""
        return self.update(change, key)

    def count(self, breaker: Breaker = BREAKER) -> None:
        tally = self.store.tallies.get(KEY)
        if tally is None or len(tally) >= GATHER_AT:
            self.store.count(KEY, NAME, breaker)
        else:
            tally.append(bucket_start(breaker, breaker.clock()))

    def peek(self, key: str = KEY) -> Health:
        return self.store.views.get(key) or self.store.peek(key)

    def settle(self) -> None:
        """Let every write and count of this store reach Redis."""
        if isinstance(self.store, RedisHealth):
            self.store._write_pending(lambda key: True)

    def close(self) -> None:
        for store in {id(s): s for s in (self.store, self.other)}.values():
            if isinstance(store, RedisHealth):
                store.close()


class LoopDriver(Driver):
    """Calls a store as the async drivers do: from a running event loop (its own thread),
    where ``update`` writes behind and an admission that is not closed is awaited."""

    flavour = "async"

    def __init__(self, store: HealthStore, other: HealthStore) -> None:
        super().__init__(store, other)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def _run(self, coroutine: Coroutine[Any, Any, R]) -> R:
        future: Future[R] = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        return future.result(timeout=10)

    def update(self, change: Change[R], key: str = KEY) -> R:
        async def on_loop() -> R:
            return self.store.update(key, NAME, change, time.time)

        return self._run(on_loop())

    def claim(self, change: Change[R], key: str = KEY) -> R:
        return self._run(self.store.aupdate(key, NAME, change, time.time))

    def settle(self) -> None:
        async def landed() -> None:
            assert isinstance(self.store, RedisHealth)
            while self.store._tasks:
                await asyncio.gather(*list(self.store._tasks))

        self._run(landed())
        super().settle()

    def close(self) -> None:
        self.settle()
        self._run(self.loop.shutdown_asyncgens())  # closes the loop's Redis client
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()
        super().close()


def _redis_pair(ns: str, **kwargs: Any) -> tuple[RedisHealth, RedisHealth]:
    # A generous timeout and retry_interval: a busy machine must not send the contract
    # to the in-process fallback (which the teardown would notice).
    settings = {"timeout": 5.0, "retry_interval": 3600.0, **kwargs}
    return RedisHealth(namespace=ns, **settings), RedisHealth(namespace=ns, **settings)


@pytest.fixture(params=["memory", "redis", "redis-async", "cluster", "valkey"])
def driver(request: pytest.FixtureRequest, ns: str) -> Iterator[Driver]:
    kind = request.param
    if kind == "memory":
        store = MemoryStore()
        yield Driver(store, store)
        return
    if kind == "cluster":
        cluster: Cluster = request.getfixturevalue("redis_cluster")
        stores = _redis_pair(ns, client=cluster.client())
    else:
        server: RedisServer = request.getfixturevalue(
            "valkey_server" if kind == "valkey" else "redis_server"
        )
        stores = _redis_pair(ns, url=server.url)
    made = (LoopDriver if kind == "redis-async" else Driver)(*stores)
    yield made
    try:
        for store in stores:
            assert store.source.startswith("redis"), "the contract ran on the fallback"
    finally:
        made.close()


# -- the engine's moves ----------------------------------------------------------------


def admit_now(d: Driver, breaker: Breaker = BREAKER, key: str = KEY) -> Verdict:
    """As the engine admits: a closed provider from ``peek``; else the store decides,
    and a skip is counted once it is sure to skip."""
    if d.peek(key).state is State.CLOSED:
        return Verdict.TRY

    verdict = d.claim(lambda h, now: admit(h, breaker, now, False), key)
    if verdict is Verdict.SKIP:
        d.update(lambda h, now: (count_skip(h), None), key)
    return verdict


def fail_now(
    d: Driver,
    kind: Fault = Fault.UNWELL,
    wait: float | None = None,
    probe: bool = False,
    timed_out: bool = False,
    breaker: Breaker = BREAKER,
) -> None:
    d.update(lambda h, now: (failed(h, breaker, now, kind, wait, probe, 0.01, timed_out), None))


def succeed_now(d: Driver, breaker: Breaker = BREAKER) -> None:
    if clean(d.peek()):
        d.count(breaker)
    else:
        d.update(lambda h, now: (succeeded(h, breaker, now, False), None))


def record(store: HealthStore, key: str = KEY) -> tuple[Health, float]:
    (health, *_), now = store.read([key], time.time)
    return health, now


def shared(d: Driver, key: str = KEY) -> Health:
    """The record as another process sees it, once this one's writes have landed."""
    d.settle()
    if d.other is d.store:
        return record(d.store, key)[0]
    wait_for(
        lambda: record(d.other, key)[0] == record(d.store, key)[0],
        "the other process to see the record",
    )
    return record(d.other, key)[0]


def trip(d: Driver) -> None:
    for _ in range(BREAKER.failures):
        assert admit_now(d) is Verdict.TRY
        fail_now(d)


def wait_cooldown(d: Driver) -> None:
    def over() -> bool:
        health, now = record(d.store)
        return now >= max(health.open_until, health.probe_until)

    wait_for(over, "the cooldown to pass")


# -- the contract ------------------------------------------------------------------------


def test_the_views_answer_as_peek_does(driver: Driver) -> None:
    # The healthy path reads a key's view with no call: it must be what peek answers.
    succeed_now(driver, RATE)
    fail_now(driver, breaker=RATE)
    succeed_now(driver, RATE)
    assert driver.store.views[KEY] == driver.store.peek(KEY)
    assert driver.store.views[KEY].consecutive_failures == 0
    for _ in range(GATHER_AT + 2):  # past a long tally: count gathers it
        succeed_now(driver, RATE)
    assert len(driver.store.tallies[KEY]) <= GATHER_AT
    assert record(driver.store)[0].calls == GATHER_AT + 5  # the failure is a call too


def test_unknown_provider_reads_as_a_fresh_closed_record(driver: Driver) -> None:
    assert driver.store.peek("nobody http://nowhere/v1 none") == Health()
    health, now = record(driver.store, "nobody http://nowhere/v1 none")
    assert health == Health()
    assert abs(now - time.time()) < 5
    assert driver.store.snapshot() == {}


def test_opens_after_n_unwell_failures_then_skips(driver: Driver) -> None:
    assert admit_now(driver) is Verdict.TRY
    fail_now(driver)
    assert (driver.store.peek(KEY).state, driver.store.peek(KEY).consecutive_failures) == (
        State.CLOSED,
        1,
    )
    assert admit_now(driver) is Verdict.TRY
    fail_now(driver)  # the second: BREAKER.failures reached
    assert driver.store.peek(KEY).state is State.OPEN
    assert admit_now(driver) is Verdict.SKIP
    health, now = record(driver.store)
    assert (health.calls, health.failures, health.skipped) == (2, 2, 1)
    assert 0 < health.open_until - now <= BREAKER.cooldown
    assert driver.store.snapshot()[KEY][0] == NAME
    assert shared(driver)[:3] == health[:3]


def test_half_open_admits_a_single_probe_after_the_cooldown(driver: Driver) -> None:
    trip(driver)
    wait_cooldown(driver)
    assert admit_now(driver) is Verdict.PROBE
    assert record(driver.store)[0].state is State.HALF_OPEN
    assert shared(driver).state is State.HALF_OPEN
    assert admit_now(driver) is Verdict.SKIP  # the probe is in flight
    succeed_now(driver)
    assert record(driver.store)[0].state is State.CLOSED
    assert admit_now(driver) is Verdict.TRY
    assert shared(driver).state is State.CLOSED


@pytest.mark.parametrize(
    ("timed_out", "cooldowns"), [(True, (0.2, 0.4)), (False, (0.1, 0.1))], ids=["slow", "fast"]
)
def test_each_slow_failed_probe_doubles_the_cooldown(
    driver: Driver, timed_out: bool, cooldowns: tuple[float, ...]
) -> None:
    trip(driver)
    for cooldown in cooldowns:
        wait_cooldown(driver)
        assert admit_now(driver) is Verdict.PROBE
        fail_now(driver, probe=True, timed_out=timed_out)
        health, now = record(driver.store)
        assert health.state is State.OPEN
        assert health.cooldown == pytest.approx(cooldown)
        assert cooldown / 2 < health.open_until - now <= cooldown
    assert shared(driver).cooldown == pytest.approx(cooldowns[-1])


def test_a_released_probe_frees_the_slot(driver: Driver) -> None:
    trip(driver)
    wait_cooldown(driver)
    assert admit_now(driver) is Verdict.PROBE
    driver.update(lambda h, now: (released(h), None))
    assert record(driver.store)[0].state is State.OPEN
    assert admit_now(driver) is Verdict.PROBE


@pytest.mark.parametrize(("wait", "expected"), [(30.0, 30.0), (1000.0, 60.0)])
def test_retry_after_opens_at_once_for_the_asked_time(
    driver: Driver, wait: float, expected: float
) -> None:
    breaker = Breaker(failures=3, cooldown=1.0, max_cooldown=60.0)
    fail_now(driver, wait=wait, breaker=breaker)
    health, now = record(driver.store)
    assert health.state is State.OPEN
    assert health.open_until - now == pytest.approx(expected, abs=1.0)
    assert admit_now(driver, breaker) is Verdict.SKIP
    assert shared(driver).reason is Reason.RETRY_AFTER


def test_a_request_fault_resets_the_row(driver: Driver) -> None:
    fail_now(driver)
    fail_now(driver, Fault.REQUEST)
    health, _ = record(driver.store)
    assert (health.state, health.consecutive_failures, health.failures) == (State.CLOSED, 0, 2)
    fail_now(driver)  # one unwell failure again: still below the threshold
    assert record(driver.store)[0].state is State.CLOSED


def test_clean_successes_are_counted_and_reach_every_process(driver: Driver) -> None:
    for _ in range(5):
        succeed_now(driver, RATE)
    fail_now(driver, breaker=RATE)
    health, _ = record(driver.store)
    assert (health.calls, health.failures) == (6, 1)
    assert sum(c for _, c, _ in health.window) == 6
    assert shared(driver).calls == 6


def test_counts_taken_back_leave_their_own_bucket(driver: Driver) -> None:
    # A healthy call is counted as it starts; when it fails, its count is taken back
    # (Tally.take_back), before or after the store gathered it, from the bucket it went to.
    now = time.time()
    rate = dataclasses.replace(RATE, clock=lambda: now)  # every count in one bucket
    for _ in range(3):
        succeed_now(driver, rate)
    start = bucket_start(rate, now)
    record(driver.store)  # gathered, and (Redis) written
    driver.settle()
    driver.store.tallies[KEY].take_back(start)
    driver.count(rate)
    driver.store.tallies[KEY].take_back(start)  # taken back before it was gathered
    fail_now(driver, breaker=rate)
    health, _ = record(driver.store)
    assert (health.calls, health.failures) == (3, 1)
    assert sum(c for _, c, _ in health.window) == 3
    assert all(c >= 0 for _, c, _ in health.window)
    assert shared(driver).calls == 3


def test_a_brownout_opens_by_rate(driver: Driver) -> None:
    for i, ok in enumerate([True, False, True, False]):
        assert admit_now(driver, RATE) is Verdict.TRY
        if ok:
            succeed_now(driver, RATE)
        else:
            fail_now(driver, breaker=RATE)
        assert record(driver.store)[0].state is (State.OPEN if i == 3 else State.CLOSED)
    health, _ = record(driver.store)
    assert (health.reason, health.consecutive_failures) == (Reason.RATE, 1)
    assert failover.health(driver.store)[NAME]["reason"] is Reason.RATE
    assert admit_now(driver, RATE) is Verdict.SKIP


def test_the_window_stays_bounded_in_the_record(driver: Driver) -> None:
    b = Breaker(failures=10**6, failure_rate=0.9, min_calls=4, window=10.0)
    t0 = 1_700_000_000.0
    for i in range(200):  # 20 windows' worth, simulated
        now = t0 + i * 1.01
        if i % 4 == 0:
            driver.update(lambda h, _, now=now: (failed(h, b, now, Fault.UNWELL, None, False), 0))
        else:
            driver.update(lambda h, _, now=now: (succeeded(h, b, now, False), 0))
    health, _ = record(driver.store)
    assert health.state is State.CLOSED
    assert len(health.window) <= 10
    assert sum(c for _, c, _ in health.window) <= 11
    assert health.calls == 200  # the lifetime counters go on
    assert shared(driver).calls == 200


def test_one_claimer_of_many_gets_the_probe(driver: Driver) -> None:
    trip(driver)
    wait_cooldown(driver)
    other = Driver(driver.other, driver.other)
    verdicts = [admit_now(driver), admit_now(driver), admit_now(other)]
    assert sorted(v.value for v in verdicts) == ["probe", "skip", "skip"]
    assert shared(driver).skipped == 2


# -- through the engine ---------------------------------------------------------------------


def ask_through(form: str, chain: tuple[Any, ...], **settings: Any) -> str:
    """One chat question through the decorator or the drop-in client."""

    def body(client: Any) -> str:
        reply = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        return str(reply.choices[0].message.content)

    if form == "decorator":
        return with_fallback(*chain, **settings)(lambda client=None: body(client))()
    with fallback_clients(*chain, **settings) as client:
        return body(client)


async def aask_through(form: str, chain: tuple[Any, ...], **settings: Any) -> str:
    """:func:`ask_through`, async."""

    async def body(client: Any) -> str:
        reply = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        return str(reply.choices[0].message.content)

    if form == "decorator":

        @with_fallback(*chain, **settings)
        async def decorated(client: Any = None) -> str:
            return await body(client)

        return await decorated()
    async with fallback_clients(*chain, **settings) as client:
        return await body(client)


def ask(driver: Driver, form: str, chain: Chain, **settings: Any) -> str:
    """One question through ``form``, as the driver's flavour calls (sync, or on its loop)."""
    settings = {"health": driver.store, **settings}
    if isinstance(driver, LoopDriver):
        return driver._run(aask_through(form, chain, **settings))
    return ask_through(form, chain, **settings)


@pytest.mark.parametrize("form", ["decorator", "fallback_clients"])
def test_a_chain_trips_and_skips_through_the_store(
    driver: Driver, form: str, comet: FakeProvider, chain: Chain
) -> None:
    settings = {"breaker": Breaker(failures=2, cooldown=60.0), "retry": None}
    comet.fail(500)
    for _ in range(3):
        assert ask(driver, form, chain, **settings) == "[backup] hello"
    assert len(comet.requests) == 2  # the third call skipped it
    view = failover.health(driver.store)
    assert view["comet"]["state"] is State.OPEN
    assert (view["comet"]["failures"], view["comet"]["skipped"]) == (2, 1)
    assert view["comet"]["source"] == driver.store.source
    assert view["backup"]["failovers_served"] == 3
    assert shared(driver, endpoint_for(chain[0]).key).state is State.OPEN


@pytest.mark.parametrize("form", ["decorator", "fallback_clients"])
def test_a_chain_opens_by_rate_through_the_store(
    driver: Driver, form: str, comet: FakeProvider, chain: Chain
) -> None:
    for _ in range(3):
        comet.hang(0, times=1)  # answers normally
        comet.fail(500, times=1)
    answers = [ask(driver, form, chain, breaker=RATE, retry=None) for _ in range(6)]
    assert answers == ["[comet] hello", "[backup] hello"] * 2 + ["[backup] hello"] * 2
    assert len(comet.requests) == 4  # 2 of 4 failed: open, then skipped
    assert failover.health(driver.store)["comet"]["reason"] is Reason.RATE


def test_a_short_retry_after_is_retried_through_the_store(
    driver: Driver, comet: FakeProvider, chain: Chain
) -> None:
    comet.fail(503, times=1, retry_after="0.2")
    assert ask(driver, "decorator", chain, retry=Retry(max_wait=1.0)) == "[comet] hello"
    assert len(comet.requests) == 2
    assert failover.health(driver.store)["comet"]["state"] is State.CLOSED


def test_a_provider_opened_elsewhere_is_skipped_here(
    driver: Driver, comet: FakeProvider, chain: Chain
) -> None:
    other = Driver(driver.other, driver.other)
    key = endpoint_for(chain[0]).key
    breaker = Breaker(failures=1, cooldown=60.0)
    ask(driver, "decorator", chain)  # this process knows the provider already
    other.update(lambda h, now: (failed(h, breaker, now, Fault.UNWELL, None, False), 0), key)
    wait_for(lambda: driver.store.peek(key).state is State.OPEN, "the news to arrive")
    assert ask(driver, "decorator", chain, breaker=breaker) == "[backup] hello"
    assert len(comet.requests) == 1


# -- whoever built the client ------------------------------------------------------------------


def _users_client(request: pytest.FixtureRequest, kind: str, ns: str) -> tuple[Any, HealthStore]:
    """A client as a user builds it, and a store of the store's own that reads the same."""
    import redis.asyncio
    import redis.asyncio.sentinel

    flavour, _, where = kind.partition(" ")
    asynchronous = flavour == "async"
    if where == "cluster":
        cluster: Cluster = request.getfixturevalue("redis_cluster")
        node = cluster.nodes[0].port
        reader = RedisHealth(client=cluster.client(), namespace=ns, timeout=5.0)
        if asynchronous:
            return redis.asyncio.RedisCluster(host="127.0.0.1", port=node), reader
        return cluster.client(), reader
    server: RedisServer = request.getfixturevalue("redis_server")
    reader = RedisHealth(server.url, namespace=ns, timeout=5.0)
    if where == "sentinel":
        sentinel = request.getfixturevalue("sentinel")
        if asynchronous:
            found = redis.asyncio.sentinel.Sentinel([("127.0.0.1", sentinel.port)])
            return found.master_for("mymaster"), reader
        return sentinel.master(), reader
    return (redis.asyncio.Redis if asynchronous else redis.Redis)(port=server.port), reader


@pytest.fixture(scope="module")
def sentinel(redis_server: RedisServer) -> Iterator[Sentinel]:
    watching = Sentinel(redis_server).start()
    yield watching
    watching.stop()


@pytest.mark.parametrize(
    "kind",
    [f"{f} {w}" for w in ("redis", "sentinel", "cluster") for f in ("sync", "async")],
)
def test_any_users_client_shares_the_state(
    request: pytest.FixtureRequest, kind: str, ns: str, comet: FakeProvider, chain: Chain
) -> None:
    client, reader = _users_client(request, kind, ns)
    store = RedisHealth(client=client, namespace=ns, timeout=5.0)
    comet.fail(500, times=1)
    driver = (LoopDriver if kind.startswith("async") else Driver)(store, reader)
    try:
        assert ask(driver, "decorator", chain, retry=None) == "[backup] hello"
        key = endpoint_for(chain[0]).key
        assert shared(driver, key).failures == 1
        assert store.source.startswith("redis"), store.source
    finally:
        driver.close()
