"""RedisHealth beyond the store contract (tests/test_store_contract.py): what a healthy
call costs, the keys, hostile records, Redis down, slow or refusing, the subscription,
and the clients a user may hand in. Real ``redis-server`` processes on loopback ports;
each test keeps its keys under its own namespace. Multi-process tests are in
tests/test_redis_processes.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import pytest
from redis_servers import (  # noqa: F401 (fixtures)
    RedisServer,
    free_port,
    ns_fixture,
    redis_server_fixture,
    ticking,
    wait_for,
)
from test_store_contract import aask_through, ask_through

import failover
from failover import Breaker, State
from failover._health import Health, HealthStore
from failover._providers import endpoint_for
from failover.redis import RedisHealth
from failover.testing import FakeProvider

pytest.importorskip("redis")
import redis
import redis.asyncio

redis_server = redis_server_fixture  # tests/test_ownership.py takes it from here
Chain = tuple[failover.Provider, failover.Provider]
OPEN_AT_ONCE = Breaker(failures=1, cooldown=60.0)


def shared(url: str, ns: str, **kwargs: Any) -> RedisHealth:
    """A RedisHealth that does not fall back to memory on a busy machine."""
    return RedisHealth(url, namespace=ns, **{"timeout": 5.0, **kwargs})


def record_key(ns: str, chain: Chain, i: int = 0) -> str:
    return f"{ns}:health:{{{endpoint_for(chain[i]).key}}}"


def round_trips(server: RedisServer) -> int:
    """Commands clients have sent the server so far (this INFO excluded): the commands a
    compare-and-set script runs inside (GET, TIME, SET, PUBLISH) are not round trips."""
    with server.client() as client:
        calls = {k[8:]: v["calls"] for k, v in client.info("commandstats").items()}
    inside = 2 * calls.get("evalsha", 0) + calls.get("set", 0) + calls.get("publish", 0)
    return sum(calls.values()) - calls.get("info", 0) - inside


# -- a healthy call ----------------------------------------------------------------------


@pytest.fixture
def own_server() -> Iterator[RedisServer]:
    """A server of this test's alone: nothing else sends it commands."""
    server = RedisServer().start()
    yield server
    server.stop()


def test_a_healthy_call_makes_no_round_trip(
    own_server: RedisServer, ns: str, comet: FakeProvider, chain: Chain
) -> None:
    store = shared(own_server.url, ns)
    settings = {"health": store, "retry": None}
    comet.fail(500, times=1)
    assert ask_through("decorator", chain, **settings) == "[backup] hello"  # a write: warm
    wait_for(lambda: store._watcher.subscribed, "the subscription")

    async def healthy_async() -> None:
        for form in ("decorator", "fallback_clients"):
            for _ in range(50):
                assert await aask_through(form, chain, **settings) == "[comet] hello"

    before, started = round_trips(own_server), time.monotonic()
    for form in ("decorator", "fallback_clients"):
        for _ in range(50):
            assert ask_through(form, chain, **settings) == "[comet] hello"
    asyncio.run(healthy_async())
    elapsed = time.monotonic() - started
    # 200 calls; what Redis saw is the background flush of their counts, once a second
    # per provider, and the handshake of a connection or two.
    assert round_trips(own_server) - before <= 2 * (math.ceil(elapsed) + 1) + 4
    store.close()
    with own_server.client() as raw:
        stored = json.loads(raw.get(record_key(ns, chain)))
    assert (stored["calls"], stored["failures"]) == (201, 1)  # every count reached Redis


# -- keys --------------------------------------------------------------------------------


def test_keys_are_hash_tagged_expire_and_never_name_the_api_key(
    redis_server: RedisServer, ns: str, comet: FakeProvider, backup: FakeProvider, chain: Chain
) -> None:
    comet.fail(500, times=1)
    store = shared(redis_server.url, ns)
    assert ask_through("decorator", chain, health=store, retry=None) == "[backup] hello"
    store.close()  # the backup's success is counted: written now
    with redis_server.client() as raw:
        keys = {k.decode(): raw.get(k).decode() for k in raw.scan_iter(match=f"{ns}:*")}
        assert set(keys) == {record_key(ns, chain, 0), record_key(ns, chain, 1)}
        for key, value in keys.items():
            assert 0 < raw.ttl(key) <= 86_400
            assert value.startswith('{"v":')
            for secret in (comet.api_key, backup.api_key):
                assert secret not in key
                assert secret not in value


def test_import_failover_does_not_import_redis() -> None:
    check = (
        "import sys, failover\n"
        "loaded = sorted(m for m in sys.modules if m == 'redis' or m.startswith('redis.'))\n"
        "assert not loaded and 'failover.redis' not in sys.modules, loaded\n"
    )
    child = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, timeout=60
    )
    assert child.returncode == 0, child.stderr


def test_a_record_of_the_previous_version_still_decodes(
    redis_server: RedisServer, ns: str, comet: FakeProvider, chain: Chain
) -> None:
    old = {
        "state": "open",
        "consecutive_failures": 3,
        "open_until": time.time() + 60,
        "cooldown": 5.0,
        "probe_until": 0.0,
        "calls": 7,
        "failures": 3,
        "failovers_served": 0,
        "skipped": 1,
        "name": "comet",
    }
    with redis_server.client() as raw:
        raw.set(record_key(ns, chain), json.dumps(old))
    store = shared(redis_server.url, ns)
    assert ask_through("decorator", chain, health=store) == "[backup] hello"
    assert not comet.requests
    view = failover.health(store)["comet"]
    assert (view["state"], view["calls"], view["reason"], view["skipped"]) == (
        State.OPEN,
        7,
        None,
        2,
    )


# -- hostile records ------------------------------------------------------------------------

HOSTILE = {
    "not json": b"not json",
    "a list": b"[1, 2, 3]",
    "no name": b'{"v":5,"state":"open","consecutive_failures":1,"open_until":0,"cooldown":0,'
    b'"probe_until":0,"calls":1,"failures":1,"failovers_served":0,"skipped":0}',
    "counts as strings": json.dumps(
        {
            "name": "comet",
            "state": "open",
            "consecutive_failures": "3",
            "open_until": "9e99",
            "cooldown": 5,
            "probe_until": 0,
            "calls": "7",
            "failures": 3,
            "failovers_served": 0,
            "skipped": 0,
        }
    ).encode(),
    "a bad state": b'{"name":"comet","state":"melted"}',
    "a bad window": b'{"v":1,"name":"comet","state":"closed","consecutive_failures":0,'
    b'"open_until":0,"cooldown":0,"probe_until":0,"calls":1,"failures":0,'
    b'"failovers_served":0,"skipped":0,"window":[[1,"a"]]}',
    "binary": b"\xff\xfe\x00\x01",
}


@pytest.mark.parametrize("value", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_hostile_record_starts_afresh_and_never_fails_a_call(
    redis_server: RedisServer,
    ns: str,
    value: bytes,
    comet: FakeProvider,
    chain: Chain,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with redis_server.client() as raw:
        raw.set(record_key(ns, chain), value)
    store = shared(redis_server.url, ns)
    caplog.set_level(logging.WARNING, logger="failover")
    for _ in range(2):
        assert ask_through("decorator", chain, health=store) == "[comet] hello"
        assert failover.health(store) is not None  # never raises
    unreadable = [r for r in caplog.records if "unreadable health record" in r.getMessage()]
    assert len(unreadable) == 1  # once per key
    comet.fail(500, times=1)
    assert ask_through("decorator", chain, health=store, retry=None) == "[backup] hello"
    with redis_server.client() as raw:
        stored = json.loads(raw.get(record_key(ns, chain)))
    assert (stored["name"], stored["failures"]) == ("comet", 1)  # ours again, afresh


def test_a_foreign_type_under_the_key_is_a_record_afresh(
    redis_server: RedisServer, ns: str, comet: FakeProvider, chain: Chain
) -> None:
    with redis_server.client() as raw:
        raw.hset(record_key(ns, chain), "state", "open")  # GET would say WRONGTYPE
    store = shared(redis_server.url, ns)
    comet.fail(500, times=1)
    assert ask_through("decorator", chain, health=store, retry=None) == "[backup] hello"
    assert failover.health(store)["comet"]["failures"] == 1
    assert store.source.startswith("redis")


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_a_client_that_decodes_responses_works_as_any(
    redis_server: RedisServer, ns: str, flavour: str, comet: FakeProvider, chain: Chain
) -> None:
    kind = redis.Redis if flavour == "sync" else redis.asyncio.Redis
    client = kind(port=redis_server.port, decode_responses=True)
    writer = RedisHealth(client=client, namespace=ns, timeout=5.0)
    comet.fail(500, times=2)
    for _ in range(2):
        assert ask_through("decorator", chain, health=writer, breaker=OPEN_AT_ONCE, retry=None)
    reader = RedisHealth(client=client, namespace=ns, timeout=5.0)
    assert failover.health(reader)["comet"]["state"] is State.OPEN
    assert reader.source.startswith("redis")


# -- Redis down, slow or refusing ------------------------------------------------------------


@pytest.fixture(params=["refusing", "silent"])
def unreachable(request: pytest.FixtureRequest, ns: str) -> Iterator[Callable[..., RedisHealth]]:
    """RedisHealth stores on a port where nothing listens, or where nothing ever answers."""
    if request.param == "refusing":
        yield partial(RedisHealth, f"redis://127.0.0.1:{free_port()}/0", namespace=ns)
        return
    with socket.socket() as sock:  # accepts connections (backlog), never replies
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield partial(RedisHealth, f"redis://127.0.0.1:{sock.getsockname()[1]}/0", namespace=ns)


def redis_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "failover" and r.levelno == logging.WARNING and "redis" in r.getMessage()
    ]


def test_unreachable_redis_never_fails_or_slows_a_call(
    unreachable: Callable[..., RedisHealth],
    comet: FakeProvider,
    chain: Chain,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = unreachable()
    comet.fail(500, times=1)
    caplog.set_level(logging.WARNING, logger="failover")
    for expected in ("[backup] hello", "[comet] hello", "[comet] hello"):
        started = time.monotonic()
        assert ask_through("decorator", chain, health=store, retry=None) == expected
        assert time.monotonic() - started < 1.0
    view = failover.health(store)
    assert view["comet"]["failures"] == 1  # kept in process meanwhile
    assert all(entry["source"].startswith("memory") for entry in view.values())  # type: ignore[union-attr]


def test_unreachable_redis_logs_one_warning_however_often_it_is_retried(
    unreachable: Callable[..., RedisHealth],
    comet: FakeProvider,
    chain: Chain,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = unreachable(retry_interval=0.0)  # retry every time
    caplog.set_level(logging.WARNING, logger="failover")
    comet.fail(500, times=3)
    for _ in range(4):
        assert ask_through("decorator", chain, health=store, retry=None)
    assert len(redis_warnings(caplog)) == 1


@pytest.fixture
def stalled(own_server: RedisServer) -> Iterator[Callable[[float], None]]:
    """Stall the server with DEBUG SLEEP (from a thread); killed at teardown."""
    threads = []

    def stall(seconds: float) -> None:
        def sleep() -> None:
            with own_server.client(socket_timeout=seconds + 5, retry=None) as client:
                try:
                    client.execute_command("DEBUG", "SLEEP", seconds)
                except redis.ConnectionError:
                    pass  # killed in its sleep

        thread = threading.Thread(target=sleep)
        thread.start()
        threads.append(thread)
        time.sleep(0.05)  # the server is asleep now

    yield stall
    own_server.stop()
    for thread in threads:
        thread.join()


USERS_CLIENTS = {
    # redis-py's defaults: no socket timeout at all ...
    "no timeout": {},
    # ... and, with one, three retries with backoff (about 2 s of waiting).
    "retrying": {"socket_timeout": 0.05, "socket_connect_timeout": 0.05},
}


@pytest.mark.parametrize("options", USERS_CLIENTS.values(), ids=USERS_CLIENTS.keys())
@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_a_users_client_is_bounded_by_timeout_when_redis_stalls(
    own_server: RedisServer,
    stalled: Callable[[float], None],
    ns: str,
    flavour: str,
    options: dict[str, Any],
    comet: FakeProvider,
    chain: Chain,
) -> None:
    kind = redis.Redis if flavour == "sync" else redis.asyncio.Redis
    store = RedisHealth(client=kind(port=own_server.port, **options), namespace=ns)
    settings = {"health": store, "retry": None}
    asker = (
        partial(ask_through, "decorator", chain, **settings)
        if flavour == "sync"
        else lambda: asyncio.run(aask_through("decorator", chain, **settings))
    )
    stalled(3.0)
    comet.fail(500, times=1)
    started = time.monotonic()
    assert asker() == "[backup] hello"  # a first use, a failure, a success: all bounded
    assert asker() == "[comet] hello"
    assert time.monotonic() - started < 1.5  # a stall of 3 s; the store waited 50 ms a command
    wait_for(lambda: store.source.startswith("memory"), "the store to notice")


def test_a_stalled_redis_never_blocks_the_event_loop(
    own_server: RedisServer,
    stalled: Callable[[float], None],
    ns: str,
    comet: FakeProvider,
    chain: Chain,
) -> None:
    store = RedisHealth(own_server.url, namespace=ns, timeout=2.0)  # a command may wait 2 s

    async def main() -> float:
        assert await aask_through("decorator", chain, health=store) == "[comet] hello"
        async with ticking() as ticker:
            stalled(1.0)
            comet.fail(500, times=2)  # failures are written behind, and the breaker opens
            breaker = Breaker(failures=2, cooldown=0.0)
            for _ in range(3):
                await aask_through("decorator", chain, health=store, breaker=breaker, retry=None)
        return ticker.late

    late = asyncio.run(main())
    assert late < 0.5  # never a socket wait on the loop (the stall is 1 s)


def test_writes_cancelled_by_the_loops_shutdown_still_land(
    redis_server: RedisServer, ns: str, chain: Chain
) -> None:
    store = shared(redis_server.url, ns)
    key = endpoint_for(chain[0]).key

    async def main() -> None:
        failed = lambda h, now: (h._replace(failures=h.failures + 1), None)  # noqa: E731
        for _ in range(5):
            store.update(key, "comet", failed, time.time)  # written behind; never awaited

    asyncio.run(main())  # cancels the writes in flight as it shuts down
    assert len(store._async) == 0  # the loop's client was closed with the loop
    reader = shared(redis_server.url, ns)
    wait_for(lambda: reader.read([key], time.time)[0][0].failures == 5, "the writes to land")


def test_aclose_writes_the_counts_without_blocking_the_loop(
    own_server: RedisServer,
    stalled: Callable[[float], None],
    ns: str,
    chain: Chain,
) -> None:
    store = RedisHealth(own_server.url, namespace=ns, timeout=2.0)

    async def main() -> float:
        for _ in range(3):
            assert await aask_through("decorator", chain, health=store) == "[comet] hello"
        async with ticking() as ticker:
            stalled(1.0)  # the flush of the counts waits for Redis: the loop must not
            await store.aclose()
        return ticker.late

    late = asyncio.run(main())
    assert late < 0.5  # the stall is 1 s
    key = endpoint_for(chain[0]).key
    reader = shared(own_server.url, ns)
    assert reader.read([key], time.time)[0][0].calls == 3
    reader.close()


def counted(url: str, ns: str, chain: Chain) -> tuple[RedisHealth, str]:
    """A store with 10 successes counted, that only the test flushes."""
    store = shared(url, ns)
    key = endpoint_for(chain[0]).key
    store.peek(key)
    store._flushed[key] = math.inf  # never due for the background flush
    for _ in range(10):
        store.count(key, "comet", OPEN_AT_ONCE)
    return store, key


def test_counts_on_their_way_to_redis_are_never_missed_by_a_read(
    redis_server: RedisServer, ns: str, chain: Chain
) -> None:
    # The flush takes the counted successes to write them: until the write lands, a read
    # (the CLI's, a health report's) still sees them, in the view they will land in.
    store, key = counted(redis_server.url, ns, chain)
    seen: list[int] = []
    drive = store._drive

    def watched(key: str, steps: Any) -> Any:
        seen.append(store.read([key], time.time)[0][0].calls)
        return drive(key, steps)

    store._drive = watched  # type: ignore[method-assign]
    store._write_pending(lambda key: True)
    assert seen
    assert set(seen) == {10}
    assert store.read([key], time.time)[0][0].calls == 10
    assert store._entries[key].writes == []
    store.close()


def test_counts_taken_back_that_net_nothing_are_no_write(
    redis_server: RedisServer, ns: str, chain: Chain
) -> None:
    # Calls counted as they started and taken back (each failed, or was the caller's
    # error): nothing to write, and nothing below none once a record was lost.
    store = shared(redis_server.url, ns)
    key = endpoint_for(chain[0]).key
    store.peek(key)
    store._flushed[key] = math.inf
    steps: list[str] = []
    drive = store._drive

    def watched(key: str, how: Any) -> Any:
        steps.append(key)
        return drive(key, how)

    store._drive = watched  # type: ignore[method-assign]
    for _ in range(3):
        start = store.count(key, "comet", OPEN_AT_ONCE)
        store.tallies[key].take_back(start)
    store._write_pending(lambda key: True)
    assert steps == []
    assert store.read([key], time.time)[0][0].calls == 0
    store.count(key, "comet", OPEN_AT_ONCE)
    store._write_pending(lambda key: True)  # written: calls 1
    redis.Redis.from_url(redis_server.url).flushall()  # the record is lost meanwhile
    store.tallies[key].take_back(start)
    store._write_pending(lambda key: True)
    store.close()
    reader = shared(redis_server.url, ns)
    assert reader.read([key], time.time)[0][0].calls == 0  # a record, not junk below none
    reader.close()


def test_counts_whose_write_fails_are_counted_again_once(
    redis_server: RedisServer, ns: str, chain: Chain
) -> None:
    store, key = counted(redis_server.url, ns, chain)
    drive = store._drive

    def broken(key: str, steps: Any) -> Any:
        raise RuntimeError("not Redis's")  # a bug, not Redis: it goes on, the counts stay

    def landed_unheard(key: str, steps: Any) -> Any:
        drive(key, steps)
        raise redis.TimeoutError("the reply was lost")  # it landed: not counted again

    for drive_as in (broken, landed_unheard):
        store._drive = drive_as  # type: ignore[method-assign]
        with pytest.raises(RuntimeError) if drive_as is broken else contextlib.nullcontext():
            store._write_pending(lambda key: True)
        assert store._entries[key].writes == []
        assert store.read([key], time.time)[0][0].calls == 10
    store._drive = drive  # type: ignore[method-assign]
    store.close()
    reader = shared(redis_server.url, ns)
    assert reader.read([key], time.time)[0][0].calls == 10
    reader.close()


def test_a_write_behind_that_changes_nothing_leaves_the_cache(
    redis_server: RedisServer, ns: str, chain: Chain
) -> None:
    # Written behind on a loop, a change that finds nothing to change writes nothing:
    # it must leave the cache then, not be applied again to whatever Redis says next.
    store, other = shared(redis_server.url, ns), shared(redis_server.url, ns)
    key = endpoint_for(chain[0]).key
    store.peek(key)

    def reset(h: Health, now: float) -> tuple[Health, None]:
        return (h._replace(consecutive_failures=0) if h.consecutive_failures else h), None

    async def main() -> None:
        store.update(key, "comet", reset, time.time)
        while store._tasks:
            await asyncio.gather(*list(store._tasks))

    asyncio.run(main())
    assert store._entries[key].writes == []
    failed = lambda h, now: (h._replace(consecutive_failures=3), None)  # noqa: E731
    other.update(key, "comet", failed, time.time)
    wait_for(lambda: store.peek(key).consecutive_failures == 3, "the other process's write")
    store.close()
    other.close()


# -- the subscription --------------------------------------------------------------------------


def test_a_dropped_subscription_is_logged_once_and_taken_up_again(
    redis_server: RedisServer, ns: str, caplog: pytest.LogCaptureFixture
) -> None:
    store, other = shared(redis_server.url, ns), shared(redis_server.url, ns)
    key = "comet http://127.0.0.1:9/v1 none"
    store.peek(key)
    wait_for(lambda: store._watcher.subscribed, "the subscription")
    caplog.set_level(logging.INFO, logger="failover")
    with redis_server.client() as raw:
        raw.execute_command("CLIENT", "KILL", "TYPE", "pubsub")

    def mine(what: str) -> list[logging.LogRecord]:
        return [r for r in caplog.records if ns in r.getMessage() and what in r.getMessage()]

    wait_for(lambda: mine("subscription is back"), "the subscription to come back")
    assert len(mine("subscription lost")) == 1
    other.update(key, "comet", lambda h, now: (h._replace(failures=7), None), time.time)
    wait_for(lambda: store.peek(key).failures == 7, "news by the new subscription")


def test_without_a_subscription_records_are_polled_within_max_staleness(
    redis_server: RedisServer, ns: str, caplog: pytest.LogCaptureFixture
) -> None:
    with redis_server.client() as raw:  # a user who may not subscribe
        raw.execute_command("ACL", "SETUSER", "nosub", "on", "nopass", "~*", "+@all", "-subscribe")
    caplog.set_level(logging.WARNING, logger="failover")
    url = f"redis://nosub@127.0.0.1:{redis_server.port}/0"
    store = RedisHealth(url, namespace=ns, timeout=5.0, max_staleness=0.2)
    other = shared(redis_server.url, ns)
    key = "comet http://127.0.0.1:9/v1 none"
    store.peek(key)
    other.update(key, "comet", lambda h, now: (h._replace(failures=3), None), time.time)
    wait_for(lambda: store.peek(key).failures == 3, "the poll", within=2.0)
    assert caplog.text.count("polling every 0.2s") == 1
    assert store.source.startswith("redis")


# -- the process-wide default ------------------------------------------------------------


@pytest.fixture
def configured() -> Iterator[Callable[[HealthStore], None]]:
    yield lambda store: failover.configure(health=store)
    failover.configure(health=None)


def test_configure_makes_the_store_the_default_of_chains(
    redis_server: RedisServer,
    ns: str,
    comet: FakeProvider,
    chain: Chain,
    configured: Callable[[HealthStore], None],
) -> None:
    configured(shared(redis_server.url, ns))
    comet.fail(500, times=1)
    assert ask_through("decorator", chain, retry=None) == "[backup] hello"
    with redis_server.client() as raw:
        stored = json.loads(raw.get(record_key(ns, chain)))
    assert (stored["name"], stored["failures"]) == ("comet", 1)
    failover.configure(health=None)
    assert failover.health() == {}  # back to in-process state, which saw nothing


def test_health_shows_the_shared_state_and_its_source(
    redis_server: RedisServer,
    ns: str,
    comet: FakeProvider,
    chain: Chain,
    configured: Callable[[HealthStore], None],
) -> None:
    writer = shared(redis_server.url, ns)
    comet.fail(500)
    for _ in range(2):
        ask_through("decorator", chain, breaker=Breaker(failures=2, cooldown=60.0), health=writer)

    reader = shared(redis_server.url, ns)  # like another process: its own client
    configured(reader)
    view = failover.health()
    assert set(view) == {"comet", "backup"}
    assert view["comet"]["state"] is State.OPEN
    assert view["comet"]["failures"] == 2
    assert view["comet"]["source"] == reader.source
    assert reader.source.startswith(f"redis 127.0.0.1:{redis_server.port}/0")
    assert ns in reader.source


def test_redis_store_with_sub_second_ttl_shares_state(redis_server: RedisServer) -> None:
    store = RedisHealth(redis_server.url, namespace="review-ttl", timeout=5.0, ttl=0.5)
    store.update("k", "n", lambda h, now: (h._replace(calls=1), None), lambda: 0.0)
    assert store.source.startswith("redis"), store.source
