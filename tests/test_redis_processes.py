"""RedisHealth across real processes: exact counts, one probe, fast news, and no call lost
while Redis is killed, restarted empty, slowed or drops the subscription.

Workers are forks of a fresh server process (``forkserver``), not of this one: forking a
multi-threaded process (the fake providers run in threads here) may deadlock.
"""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from redis_servers import (  # noqa: F401 (fixtures)
    RedisServer,
    ns_fixture,
    redis_server_fixture,
    run_child,
    wait_for,
)

from failover import Breaker, Provider, State, with_fallback
from failover._health import Health, admit, count_skip, failed
from failover._policy import Fault
from failover._providers import endpoint_for
from failover.redis import RedisHealth
from failover.testing import FakeProvider

CONTEXT = multiprocessing.get_context("forkserver")
WORKERS = 3
KEY = "comet http://127.0.0.1:9/v1 none"
Chain = tuple[Provider, Provider]


def shared(url: str, ns: str, **kwargs: Any) -> RedisHealth:
    return RedisHealth(url, namespace=ns, **{"timeout": 5.0, **kwargs})


def run_workers(target: Callable[..., None], *args: Any, workers: int = WORKERS) -> None:
    processes = [CONTEXT.Process(target=target, args=args) for _ in range(workers)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=60)
    assert [process.exitcode for process in processes] == [0] * workers


def record(store: RedisHealth, key: str = KEY) -> Health:
    return store.read([key], time.time)[0][0]


def fakes_of(*fakes: FakeProvider) -> list[dict[str, str]]:
    return [{"name": f.name, "base_url": f.base_url, "api_key": f.api_key} for f in fakes]


def chain_of(fakes: list[dict[str, str]]) -> list[Provider]:
    return [Provider(f["name"], base_url=f["base_url"], api_key=f["api_key"]) for f in fakes]


def ask(store: RedisHealth, providers: list[Provider], breaker: Breaker | None = None) -> str:
    @with_fallback(
        *providers, health=store, retry=None, **({"breaker": breaker} if breaker else {})
    )
    def call(client: Any = None) -> str:
        reply = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}]
        )
        return str(reply.choices[0].message.content)

    return call()


# -- exact counts and one probe ---------------------------------------------------------


def _count_and_fail(url: str, ns: str, rounds: int) -> None:
    store = shared(url, ns)
    counting = Breaker(failures=10**6, failure_rate=1.0, window=3600.0)
    for _ in range(rounds):  # two calls, one failed: never all of them, so never open
        store.count(KEY, "comet", counting)
        store.update(
            KEY,
            "comet",
            lambda h, now: (failed(h, counting, now, Fault.UNWELL, None, False), None),
            time.time,
        )
    store.close()  # the counted successes are flushed


def test_counts_from_many_processes_are_exact(redis_server: RedisServer, ns: str) -> None:
    run_workers(_count_and_fail, redis_server.url, ns, 100)
    health = record(shared(redis_server.url, ns))
    assert (health.calls, health.failures) == (WORKERS * 200, WORKERS * 100)
    assert sum(c for _, c, _ in health.window) == WORKERS * 200
    assert sum(f for *_, f in health.window) == WORKERS * 100
    assert health.state is State.CLOSED


def _race_for_the_probe(url: str, ns: str, start: Any, verdicts: Any) -> None:
    store = shared(url, ns)
    breaker = Breaker(failures=1, cooldown=0.05, max_cooldown=60.0)
    store.peek(KEY)  # connected before the race starts
    start.wait(timeout=10)
    verdict = store.update(KEY, "comet", lambda h, now: admit(h, breaker, now, False), time.time)
    if verdict.value == "skip":
        store.update(KEY, "comet", lambda h, now: (count_skip(h), None), time.time)
    verdicts.put(verdict.value)
    store.close()


def test_exactly_one_process_claims_the_half_open_probe(redis_server: RedisServer, ns: str) -> None:
    store = shared(redis_server.url, ns)
    breaker = Breaker(failures=1, cooldown=0.05)
    store.update(
        KEY,
        "comet",
        lambda h, now: (failed(h, breaker, now, Fault.UNWELL, None, False), 0),
        time.time,
    )
    wait_for(lambda: store._now() >= record(store).open_until, "the cooldown")
    start, verdicts = CONTEXT.Barrier(WORKERS), CONTEXT.Queue()
    run_workers(_race_for_the_probe, redis_server.url, ns, start, verdicts)
    results = sorted(verdicts.get(timeout=5) for _ in range(WORKERS))
    assert results == sorted(["probe"] + ["skip"] * (WORKERS - 1))
    wait_for(lambda: record(store).skipped == WORKERS - 1, "the skips to arrive")
    assert record(store).state is State.HALF_OPEN


# -- news between processes -----------------------------------------------------------------

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


def test_a_breaker_tripped_in_one_process_skips_in_a_new_one(
    redis_server: RedisServer, ns: str, comet: FakeProvider, backup: FakeProvider, chain: Chain
) -> None:
    store = shared(redis_server.url, ns)
    comet.fail(500)
    for _ in range(2):
        assert ask(store, list(chain), Breaker(failures=2, cooldown=60.0)) == "[backup] hello"
    assert len(comet.requests) == 2
    config = {"url": redis_server.url, "ns": ns, "providers": fakes_of(comet, backup)}
    assert run_child(CHILD, config) == "[backup] hello"
    assert len(comet.requests) == 2  # the fresh process never tried comet


def _skip_once_opened(url: str, ns: str, fakes: list[dict[str, str]], ready: Any, out: Any) -> None:
    providers = chain_of(fakes)
    key = endpoint_for(providers[0]).key
    # A minute of staleness: only the subscription can bring the news in time.
    store = shared(url, ns, max_staleness=60.0)
    assert ask(store, providers) == "[comet] hello"  # the provider is known, healthy
    wait_for(lambda: store._watcher.subscribed, "the subscription")
    ready.set()
    deadline = time.monotonic() + 10
    while store.peek(key).state is State.CLOSED and time.monotonic() < deadline:
        time.sleep(0.0005)
    out.put(time.time())
    out.put(ask(store, providers))


def test_an_opening_reaches_a_subscribed_process_at_once(
    redis_server: RedisServer, ns: str, comet: FakeProvider, backup: FakeProvider, chain: Chain
) -> None:
    ready, out = CONTEXT.Event(), CONTEXT.Queue()
    worker = CONTEXT.Process(
        target=_skip_once_opened, args=(redis_server.url, ns, fakes_of(comet, backup), ready, out)
    )
    worker.start()
    try:
        assert ready.wait(timeout=30)
        comet.fail(500)
        store = shared(redis_server.url, ns)
        assert ask(store, list(chain), Breaker(failures=1, cooldown=60.0)) == "[backup] hello"
        opened = time.time()
        seen = out.get(timeout=30)
        assert seen - opened < 5.0  # generous here; benchmarks/shared_health.py measures it
        assert out.get(timeout=30) == "[backup] hello"
        assert len(comet.requests) == 2  # the worker's healthy call, and the failure here
    finally:
        worker.join(timeout=30)
    assert worker.exitcode == 0


# -- no call lost ------------------------------------------------------------------------------


def _call_until_told(
    url: str, ns: str, fakes: list[dict[str, str]], done: Any, stop: Any, out: Any
) -> None:
    """Calls through the chain until told to stop: how many, and every error."""
    store = RedisHealth(url, namespace=ns, retry_interval=0.1, max_staleness=0.2)
    providers = chain_of(fakes)
    breaker = Breaker(failures=2, cooldown=0.05, max_cooldown=0.2)
    answered, errors = 0, []
    while not stop.is_set():
        try:
            ask(store, providers, breaker)
            answered += 1
        except Exception as exc:
            errors.append(repr(exc))
        with done.get_lock():
            done.value += 1
    out.put((answered, errors))


def test_no_call_is_lost_whatever_redis_does(
    ns: str, comet: FakeProvider, backup: FakeProvider, chain: Chain
) -> None:
    server = RedisServer().start()
    done, stop, out = CONTEXT.Value("i", 0), CONTEXT.Event(), CONTEXT.Queue()
    args = (server.url, ns, fakes_of(comet, backup), done, stop, out)
    workers = [CONTEXT.Process(target=_call_until_told, args=args) for _ in range(2)]

    def calls_go_on(n: int = 30) -> None:
        start = done.value
        wait_for(lambda: done.value >= start + n, f"{n} more calls", within=30.0)

    def stall() -> None:
        with server.client(socket_timeout=5.0) as client:
            client.execute_command("DEBUG", "SLEEP", 0.5)

    comet.fail(500)  # every call fails over: writes, openings, probes all along
    for worker in workers:
        worker.start()
    try:
        calls_go_on()
        server.stop()  # killed mid-run
        calls_go_on()
        server.start()  # back, empty
        calls_go_on()
        sleeper = threading.Thread(target=stall)
        sleeper.start()  # slow: every command waits half a second
        calls_go_on(10)
        sleeper.join()
        with server.client() as client:
            client.execute_command("CLIENT", "KILL", "TYPE", "pubsub")  # the subscription drops
        calls_go_on()
        with server.client() as client:  # and the state is shared again
            key = f"{ns}:health:{{{endpoint_for(chain[0]).key}}}"
            wait_for(lambda: client.exists(key), "a record in the restarted Redis")
    finally:
        stop.set()
        results = [out.get(timeout=30) for _ in workers]
        for worker in workers:
            worker.join(timeout=30)
        server.stop()
    assert [errors for _, errors in results] == [[]] * len(workers)
    assert sum(answered for answered, _ in results) == done.value


# -- fork --------------------------------------------------------------------------------------

FORKED = """
import os, sys, time
from failover import Breaker
from failover.redis import RedisHealth

url, ns, key = sys.argv[1:4]
store = RedisHealth(url, namespace=ns, timeout=5.0)
store.peek(key)
deadline = time.monotonic() + 10
while not store._watcher.subscribed and time.monotonic() < deadline:
    time.sleep(0.01)
for _ in range(10):
    store.count(key, "comet", Breaker())  # the parent's, pending at the fork
child = os.fork()
if child == 0:
    while not store._watcher.subscribed and time.monotonic() < deadline:
        time.sleep(0.01)
    print("subscribed", flush=True)
    while store.peek(key).failures != 7 and time.monotonic() < deadline:
        time.sleep(0.01)
    store.close()
    os._exit(0 if store.peek(key).failures == 7 else 1)
store.close()
_, status = os.waitpid(child, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def test_a_forked_child_subscribes_again_and_leaves_the_parents_counts_alone(
    redis_server: RedisServer, ns: str
) -> None:
    child = subprocess.Popen(
        [sys.executable, "-W", "ignore", "-c", FORKED, redis_server.url, ns, KEY],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "subscribed"
        other = shared(redis_server.url, ns)
        other.update(KEY, "comet", lambda h, now: (h._replace(failures=7), None), time.time)
        assert child.wait(timeout=30) == 0
    finally:
        child.kill()
    assert record(shared(redis_server.url, ns)).calls == 10  # flushed once, by the parent
