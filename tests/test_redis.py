"""Provider health on Redis: one breaker contract for every store, shared across processes.

A real ``redis-server`` runs on a free loopback port; each test keeps its keys under
its own namespace. Skipped when ``redis-server`` or the ``redis`` package is missing.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import pytest
from conftest import chat_text, provider

from failover import Breaker, fallback_clients, with_fallback
from failover._health import Health, failed
from failover._policy import Fault
from failover._providers import endpoint_for
from failover.testing import FakeProvider

redis = pytest.importorskip("redis")
REDIS_SERVER = shutil.which("redis-server")
if REDIS_SERVER is None:
    pytest.skip("redis-server is not installed", allow_module_level=True)

from conftest import MESSAGES  # noqa: E402

import failover  # noqa: E402
from failover import Provider, Retry, State  # noqa: E402
from failover._health import (  # noqa: E402
    HealthStore,
    MemoryStore,
    Reason,
    Verdict,
    admit,
    clean,
    count_skip,
    released,
    succeeded,
)
from failover.redis import RedisHealth  # noqa: E402

NAME = "comet"
KEY = "comet http://127.0.0.1:9/v1"
#: Short real cooldowns: with Redis, ``now`` is the server's wall clock.
BREAKER = Breaker(failures=2, cooldown=0.1, max_cooldown=0.8)
WORKERS = 8
Chain = tuple[Provider, Provider]


# -- the server ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(condition: Callable[[], object], what: str, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


class RedisServer:
    """A ``redis-server`` on a free loopback port; stop and start it again on that port."""

    def __init__(self) -> None:
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        assert REDIS_SERVER is not None
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self._process = subprocess.Popen(
            [REDIS_SERVER, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        client = redis.Redis(port=self.port, socket_timeout=0.2, socket_connect_timeout=0.2)

        def answers() -> bool:
            assert self._process is not None
            assert self._process.poll() is None, "redis-server exited"
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False

        try:
            wait_for(answers, "redis-server to answer PING", within=10.0)
        finally:
            client.close()
        return self

    def stop(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def ns(request: pytest.FixtureRequest) -> str:
    """This test's own namespace, so that tests never share keys."""
    return re.sub(r"[^\w-]", "_", request.node.name)


@pytest.fixture
def raw(redis_server: RedisServer) -> Iterator[Any]:
    """A plain client, to look at what the store wrote."""
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()


def shared(url: str, ns: str, **kwargs: Any) -> RedisHealth:
    """A RedisHealth that does not fall back to memory on a busy machine."""
    return RedisHealth(url, namespace=ns, **{"timeout": 5.0, **kwargs})


# -- driving a store with the breaker's pure rules ---------------------------------


def _admit_and_count(h: Health, now: float, breaker: Breaker) -> tuple[Health, Verdict]:
    # As the engine does: a skip is counted once it is sure to skip.
    new, verdict = admit(h, breaker, now, False)
    return (count_skip(new) if verdict is Verdict.SKIP else new), verdict


def admit_now(store: HealthStore, breaker: Breaker = BREAKER, key: str = KEY) -> Verdict:
    return store.update(key, NAME, lambda h, now: _admit_and_count(h, now, breaker), time.time)


def fail_now(
    store: HealthStore,
    kind: Fault = Fault.UNWELL,
    wait: float | None = None,
    probe: bool = False,
    key: str = KEY,
    timed_out: bool = False,
    breaker: Breaker = BREAKER,
) -> None:
    store.update(
        key,
        NAME,
        lambda h, now: (failed(h, breaker, now, kind, wait, probe, 0.01, timed_out), None),
        time.time,
    )


def succeed_now(store: HealthStore, breaker: Breaker = BREAKER) -> None:
    # As the engine does: a clean success is only counted, any other one is a change.
    if clean(store.peek(KEY)):
        store.count(KEY, NAME, breaker)
    else:
        change_now(store, lambda h: succeeded(h, breaker, time.time(), False))


def change_now(store: HealthStore, change: Callable[[Health], Health]) -> None:
    store.update(KEY, NAME, lambda h, now: (change(h), None), time.time)


def record(store: HealthStore, key: str = KEY) -> tuple[Health, float]:
    (health,), now = store.read([key], time.time)
    return health, now


def trip(store: HealthStore) -> Health:
    """Open the breaker with BREAKER.failures unwell failures."""
    for _ in range(BREAKER.failures):
        assert admit_now(store) is Verdict.TRY
        fail_now(store)
    return record(store)[0]


def wait_cooldown(store: HealthStore, key: str = KEY) -> None:
    def over() -> bool:
        health, now = record(store, key)
        return now >= health.open_until

    wait_for(over, "the cooldown to pass")


# -- one contract, every store ------------------------------------------------------


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest, redis_server: RedisServer, ns: str) -> Iterator[Any]:
    if request.param == "memory":
        yield MemoryStore()
        return
    # A retry_interval of an hour: a silent fallback to memory would show in `source`.
    health = shared(redis_server.url, ns, retry_interval=3600.0)
    yield health
    assert health.source.startswith("redis"), "the contract ran on the fallback, not Redis"
    health.close()


def test_unknown_provider_reads_as_a_fresh_closed_record(store: HealthStore) -> None:
    health, now = record(store, "nobody http://nowhere/v1")
    assert health == Health()
    assert abs(now - time.time()) < 5
    assert store.snapshot() == {}


def test_opens_after_n_unwell_failures_then_skips(store: HealthStore) -> None:
    assert admit_now(store) is Verdict.TRY
    fail_now(store)
    health, _ = record(store)
    assert (health.state, health.consecutive_failures) == (State.CLOSED, 1)

    assert admit_now(store) is Verdict.TRY
    fail_now(store)  # the second: BREAKER.failures reached
    assert record(store)[0].state is State.OPEN
    assert admit_now(store) is Verdict.SKIP
    health, now = record(store)
    assert (health.calls, health.failures, health.skipped) == (2, 2, 1)
    assert 0 < health.open_until - now <= BREAKER.cooldown
    assert store.snapshot()[KEY][0] == NAME


def test_half_open_admits_a_single_probe_after_the_cooldown(store: HealthStore) -> None:
    trip(store)
    wait_cooldown(store)
    assert admit_now(store) is Verdict.PROBE
    assert record(store)[0].state is State.HALF_OPEN
    assert admit_now(store) is Verdict.SKIP  # the probe is in flight
    succeed_now(store)
    assert record(store)[0].state is State.CLOSED
    assert admit_now(store) is Verdict.TRY


@pytest.mark.parametrize(
    ("timed_out", "cooldowns"), [(True, (0.2, 0.4)), (False, (0.1, 0.1))], ids=["slow", "fast"]
)
def test_each_slow_failed_probe_doubles_the_cooldown(
    store: HealthStore, timed_out: bool, cooldowns: tuple[float, ...]
) -> None:
    trip(store)
    for cooldown in cooldowns:
        wait_cooldown(store)
        assert admit_now(store) is Verdict.PROBE
        fail_now(store, probe=True, timed_out=timed_out)
        health, now = record(store)
        assert health.state is State.OPEN
        assert health.cooldown == pytest.approx(cooldown)
        assert cooldown / 2 < health.open_until - now <= cooldown


def test_a_released_probe_frees_the_slot(store: HealthStore) -> None:
    trip(store)
    wait_cooldown(store)
    assert admit_now(store) is Verdict.PROBE
    change_now(store, released)
    assert record(store)[0].state is State.OPEN
    assert admit_now(store) is Verdict.PROBE


@pytest.mark.parametrize(("wait", "expected"), [(30.0, 30.0), (1000.0, 60.0)])
def test_retry_after_opens_at_once_for_the_asked_time(
    store: HealthStore, wait: float, expected: float
) -> None:
    breaker = Breaker(failures=3, cooldown=1.0, max_cooldown=60.0)
    store.update(
        KEY,
        NAME,
        lambda h, now: (failed(h, breaker, now, Fault.UNWELL, wait, False), None),
        time.time,
    )
    health, now = record(store)
    assert health.state is State.OPEN
    assert health.open_until - now == pytest.approx(expected, abs=1.0)
    assert admit_now(store, breaker) is Verdict.SKIP


def test_a_request_fault_resets_the_row(store: HealthStore) -> None:
    fail_now(store)
    fail_now(store, Fault.REQUEST)
    health, _ = record(store)
    assert (health.state, health.consecutive_failures, health.failures) == (State.CLOSED, 0, 2)
    fail_now(store)  # one unwell failure again: still below the threshold
    assert record(store)[0].state is State.CLOSED


def ask_through(form: str, chain: tuple[Any, ...], **settings: Any) -> str:
    """One chat question through the decorator or the drop-in client."""

    def body(client: Any) -> str:
        reply = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        return str(reply.choices[0].message.content)

    if form == "decorator":
        return with_fallback(*chain, **settings)(lambda client=None: body(client))()
    with fallback_clients(*chain, **settings) as client:
        return body(client)


@pytest.mark.parametrize("form", ["decorator", "fallback_clients"])
def test_a_chain_trips_and_skips_through_the_store(
    store: HealthStore, form: str, comet: FakeProvider, chain: Chain
) -> None:
    settings = {"breaker": Breaker(failures=2, cooldown=60.0), "health": store, "retry": None}
    comet.fail(500)
    for _ in range(3):
        assert ask_through(form, chain, **settings) == "[backup] hello"
    assert len(comet.requests) == 2  # the third call skipped it
    view = failover.health(store)
    assert view["comet"]["state"] is State.OPEN
    assert (view["comet"]["failures"], view["comet"]["skipped"]) == (2, 1)
    assert view["comet"]["source"] == store.source
    assert view["backup"]["failovers_served"] == 3


# -- across processes ----------------------------------------------------------------


def _record_failures(url: str, ns: str, count: int) -> None:
    store = shared(url, ns)
    for _ in range(count):
        fail_now(store, Fault.REQUEST)
    store.close()


def _race_for_the_probe(url: str, ns: str, start: Any, verdicts: Any) -> None:
    store = shared(url, ns)
    record(store)  # connected before the race starts
    start.wait(timeout=10)
    verdicts.put(admit_now(store, Breaker(failures=1, cooldown=0.05, max_cooldown=60.0)).value)
    store.close()


# Forks of a fresh server process, not of this one: forking a multi-threaded process (fake
# servers run in threads) may deadlock, and Python 3.12+ warns about it.
CONTEXT = multiprocessing.get_context("forkserver")


def run_workers(target: Callable[..., None], *args: Any) -> None:
    context = CONTEXT
    workers = [context.Process(target=target, args=args) for _ in range(WORKERS)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)
    assert [worker.exitcode for worker in workers] == [0] * WORKERS


def test_counts_from_many_processes_are_exact(redis_server: RedisServer, ns: str) -> None:
    run_workers(_record_failures, redis_server.url, ns, 200)
    health, _ = record(shared(redis_server.url, ns))
    assert health.failures == WORKERS * 200
    assert (health.state, health.consecutive_failures) == (State.CLOSED, 0)


def test_exactly_one_process_claims_the_half_open_probe(redis_server: RedisServer, ns: str) -> None:
    store = shared(redis_server.url, ns)
    trip(store)
    wait_cooldown(store)
    start, verdicts = CONTEXT.Barrier(WORKERS), CONTEXT.Queue()
    run_workers(_race_for_the_probe, redis_server.url, ns, start, verdicts)
    results = sorted(verdicts.get(timeout=5) for _ in range(WORKERS))
    assert results == sorted(["probe"] + ["skip"] * (WORKERS - 1))
    health, _ = record(store)
    assert health.state is State.HALF_OPEN
    assert health.skipped == WORKERS - 1


CHILD = """
import json, sys
from failover import Provider, with_fallback
from failover.redis import RedisHealth

config = json.loads(sys.argv[1])
providers = [Provider(p["name"], base_url=p["base_url"], api_key=p["api_key"])
             for p in config["providers"]]
health = RedisHealth(config["url"], namespace=config["ns"], timeout=5.0)

@with_fallback(*providers, health=health)
def ask(client=None):
    reply = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}]
    )
    return reply.choices[0].message.content

print(ask())
"""


def test_a_breaker_tripped_in_one_process_skips_in_another(
    redis_server: RedisServer, ns: str, comet: FakeProvider, backup: FakeProvider, chain: Chain
) -> None:
    settings = {
        "breaker": Breaker(failures=2, cooldown=60.0),
        "health": shared(redis_server.url, ns),
    }
    comet.fail(500)
    for _ in range(2):
        assert ask_through("decorator", chain, **settings) == "[backup] hello"
    assert len(comet.requests) == 2

    fakes = [
        {"name": f.name, "base_url": f.base_url, "api_key": f.api_key} for f in (comet, backup)
    ]
    config = {"url": redis_server.url, "ns": ns, "providers": fakes}
    child = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert child.returncode == 0, child.stderr
    assert child.stdout.strip() == "[backup] hello"
    assert len(comet.requests) == 2  # the fresh process never tried comet


# -- keys --------------------------------------------------------------------------------


def test_keys_expire_and_name_provider_and_url_never_the_api_key(
    redis_server: RedisServer,
    raw: Any,
    ns: str,
    comet: FakeProvider,
    backup: FakeProvider,
    chain: Chain,
) -> None:
    comet.fail(500, times=1)
    store = shared(redis_server.url, ns)
    assert ask_through("decorator", chain, health=store, retry=None) == "[backup] hello"
    keys = {key.decode(): raw.get(key).decode() for key in raw.scan_iter(match=f"{ns}:*")}
    assert len(keys) == 2
    for fake in (comet, backup):
        (key,) = [k for k in keys if fake.name in k and fake.base_url in k]
        assert 0 < raw.ttl(key) <= 86_400
        for text in (key, keys[key]):
            assert comet.api_key not in text
            assert backup.api_key not in text


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


# -- Redis down, slow or back -----------------------------------------------------------


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
    for _ in range(4):
        assert ask_through("decorator", chain, health=store) == "[comet] hello"
    assert len(redis_warnings(caplog)) == 1


def test_redis_killed_and_restarted_mid_run_loses_no_call(
    ns: str, comet: FakeProvider, chain: Chain
) -> None:
    server = RedisServer().start()
    store = RedisHealth(server.url, namespace=ns, retry_interval=0.1)
    settings = {"breaker": Breaker(failures=100, failure_rate=None), "health": store, "retry": None}
    served = []
    try:
        for i in range(30):
            if i == 10:
                server.stop()
            if i == 20:
                server.start()
            if i % 2 == 0:
                comet.fail(500, times=1)
            served.append(ask_through("decorator", chain, **settings))
            if i == 10:
                assert failover.health(store)["comet"]["source"].startswith("memory")  # type: ignore[union-attr]
        assert served == ["[backup] hello", "[comet] hello"] * 15

        client = redis.Redis.from_url(server.url)
        key = f"{ns}:health:{endpoint_for(chain[0]).key}"

        def shared_again() -> bool:
            assert ask_through("decorator", chain, **settings) == "[comet] hello"
            return bool(client.exists(key))

        wait_for(shared_again, "the store to write to Redis again")
        client.close()
        assert failover.health(store)["comet"]["source"] == store.source
        assert store.source.startswith("redis")
    finally:
        store.close()
        server.stop()


# -- the process-wide default ------------------------------------------------------------


@pytest.fixture
def configured() -> Iterator[Callable[[HealthStore], None]]:
    yield lambda store: failover.configure(health=store)
    failover.configure(health=None)


def test_configure_makes_the_store_the_default_of_chains(
    redis_server: RedisServer,
    raw: Any,
    ns: str,
    comet: FakeProvider,
    chain: Chain,
    configured: Callable[[HealthStore], None],
) -> None:
    configured(shared(redis_server.url, ns))
    comet.fail(500, times=1)
    assert ask_through("decorator", chain, retry=None) == "[backup] hello"
    stored = json.loads(raw.get(f"{ns}:health:{endpoint_for(chain[0]).key}"))
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


# -- the failure-rate rule and retries, on every store ------------------------------------

T0 = 1_700_000_000.0
RATE = Breaker(failures=100, cooldown=60.0, max_cooldown=60.0, failure_rate=0.5, min_calls=4)


def at(store: HealthStore, now: float, change: Callable[[Health, float], Health]) -> None:
    """Apply ``change`` at a simulated ``now``: windows without waiting for them."""
    store.update(KEY, NAME, lambda h, _: (change(h, now), None), time.time)


def test_a_brownout_opens_by_rate(store: HealthStore) -> None:
    for i, ok in enumerate([True, False, True, False]):
        assert admit_now(store, RATE) is Verdict.TRY
        if ok:
            succeed_now(store, RATE)
        else:
            fail_now(store, breaker=RATE)
        assert record(store)[0].state is (State.OPEN if i == 3 else State.CLOSED)
    health, _ = record(store)
    assert (health.reason, health.consecutive_failures) == (Reason.RATE, 1)
    assert failover.health(store)[NAME]["reason"] is Reason.RATE
    assert admit_now(store, RATE) is Verdict.SKIP


def test_the_window_stays_bounded_in_the_record(store: HealthStore) -> None:
    b = Breaker(failures=10**6, failure_rate=0.9, min_calls=4, window=10.0)
    for i in range(400):  # 40 windows' worth, simulated
        if i % 4 == 0:
            at(store, T0 + i * 1.01, lambda h, now: failed(h, b, now, Fault.UNWELL, None, False))
        else:
            at(store, T0 + i * 1.01, lambda h, now: succeeded(h, b, now, False))
    health, _ = record(store)
    assert health.state is State.CLOSED
    assert len(health.window) <= 10
    assert sum(c for _, c, _ in health.window) <= 11
    assert health.calls == 400  # the lifetime counters go on


def _record_calls(url: str, ns: str, count: int) -> None:
    # Each round: a clean success and a failure.
    store = shared(url, ns)
    counting = Breaker(failures=10**6, failure_rate=1.0, window=3600.0)
    for _ in range(count):  # two calls, one failed: never all of them, so never open
        store.count(KEY, NAME, counting)
        fail_now(store, breaker=counting)
    store.close()


def test_window_counts_from_many_processes_are_exact(redis_server: RedisServer, ns: str) -> None:
    run_workers(_record_calls, redis_server.url, ns, 100)
    health, _ = record(shared(redis_server.url, ns))
    assert health.state is State.CLOSED
    assert sum(c for _, c, _ in health.window) == WORKERS * 200
    assert sum(f for *_, f in health.window) == WORKERS * 100


def test_a_record_of_the_previous_version_still_decodes(
    redis_server: RedisServer, raw: Any, ns: str
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
        "name": NAME,
    }
    raw.set(f"{ns}:health:{KEY}", json.dumps(old))
    store = shared(redis_server.url, ns)
    health, _ = record(store)
    assert (health.state, health.calls, health.reason, health.window) == (State.OPEN, 7, None, ())
    assert admit_now(store) is Verdict.SKIP
    assert failover.health(store)[NAME]["skipped"] == 2


@pytest.mark.parametrize("form", ["decorator", "fallback_clients"])
def test_a_chain_opens_by_rate_through_the_store(
    store: HealthStore, form: str, comet: FakeProvider, chain: Chain
) -> None:
    for _ in range(3):
        comet.hang(0, times=1)  # answers normally
        comet.fail(500, times=1)
    settings = {"breaker": RATE, "health": store, "retry": None}
    answers = [ask_through(form, chain, **settings) for _ in range(6)]
    assert answers == ["[comet] hello", "[backup] hello"] * 2 + ["[backup] hello"] * 2
    assert len(comet.requests) == 4  # 2 of 4 failed: open, then skipped
    assert failover.health(store)["comet"]["reason"] is Reason.RATE


def test_a_short_retry_after_is_retried_through_the_store(
    store: HealthStore, comet: FakeProvider, chain: Chain
) -> None:
    comet.fail(503, times=1, retry_after="0.2")
    settings = {"health": store, "retry": Retry(max_wait=1.0)}
    assert ask_through("decorator", chain, **settings) == "[comet] hello"
    assert len(comet.requests) == 2
    assert failover.health(store)["comet"]["state"] is State.CLOSED


# -- RedisHealth ---------------------------------------------------------------------------------


def test_redis_store_with_sub_second_ttl_shares_state(redis_server: RedisServer) -> None:
    store = RedisHealth(redis_server.url, namespace="review-ttl", timeout=5.0, ttl=0.5)
    store.update("k", "n", lambda h, now: (h._replace(calls=1), None), lambda: 0.0)
    assert store.source.startswith("redis"), store.source


def test_undecodable_redis_record_does_not_fail_the_call(
    redis_server: RedisServer, comet: FakeProvider
) -> None:
    fake = provider(comet)
    store = RedisHealth(redis_server.url, namespace="review-bad", timeout=5.0)
    raw = redis.Redis.from_url(redis_server.url)
    raw.set("review-bad:health:" + endpoint_for(fake).key, "not json")
    raw.close()

    @with_fallback(fake, health=store)
    def ask(client: Any = None) -> str:
        return chat_text(client)

    assert ask() == "[comet] hello"
