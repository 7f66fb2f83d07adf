"""6. Shared health on Redis (``failover.redis.RedisHealth``), on a ``redis-server`` of its
own on a loopback port (the section is skipped without one):

6a a healthy call with shared health against in-process health (target: ratio ≤ 1.01);
6b Redis round trips per healthy call, from the server's ``INFO commandstats`` (target 0:
   only the background flush of the counts, once a second per provider);
6c ``sizes.concurrent`` concurrent healthy async calls: the event loop's lag (the most a
   ``sleep(0)`` ticker was late), and the part of it the store's calls held the loop
   (garbage collections they happened to trigger excepted), against the store as it
   was, whose every call made three round trips on the sync client, on the loop
   (target: the store holds the loop ≤ 5 ms; the ticker's lateness with bare
   ``openai``, the burst's own work, is reported beside it);
6d propagation: from one process opening a provider to another, subscribed, seeing it
   open (target: p99 ≤ 50 ms over 100 trials).
"""

from __future__ import annotations

import asyncio
import gc
import math
import multiprocessing
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import redis
from _fixtures import FULL, Context, chat, free_port, provider
from _report import Row
from _timing import Stats, burst, interleave

from failover import Breaker, with_fallback
from failover._health import Change, Clock, Health, MemoryStore, State, bucket_start, fold
from failover.redis import RedisHealth

SECTION = "6"
KEY = "comet http://127.0.0.1:9/v1 none"


@contextmanager
def redis_server() -> Iterator[int | None]:
    """The port of a fresh ``redis-server`` (None if there is none), killed at exit."""
    binary = shutil.which("redis-server")
    if binary is None:
        yield None
        return
    port = free_port()
    args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    process = subprocess.Popen([binary, *args], stdout=subprocess.DEVNULL)
    client = redis.Redis(port=port, socket_timeout=0.5, retry=None)
    try:
        for _ in range(500):
            try:
                client.ping()
                break
            except redis.RedisError:
                time.sleep(0.01)
        yield port
    finally:
        client.close()
        process.kill()
        process.wait()


def round_trips(port: int) -> int:
    """Commands clients sent so far (INFO aside): what a compare-and-set script runs
    inside (GET, TIME, SET, PUBLISH) is no round trip of its own."""
    with redis.Redis(port=port, retry=None) as client:
        calls = {k[8:]: v["calls"] for k, v in client.info("commandstats").items()}
    inside = 2 * calls.get("evalsha", 0) + calls.get("set", 0) + calls.get("publish", 0)
    return sum(calls.values()) - calls.get("info", 0) - inside


class Blocking(RedisHealth):
    """The store as it was (issue 14): every healthy call made three round trips on the
    sync client (read, counting write, read), also from an event loop."""

    def peek(self, key: str) -> Health:
        self._refresh([key])
        return super().peek(key)

    def count(self, key: str, name: str, breaker: Breaker) -> None:
        start = bucket_start(breaker, breaker.clock())
        self._drive(key, self._steps(key, name, lambda h, now: (fold(h, start, 1), None), {}))
        self._refresh([key])

    def update(self, key: str, name: str, change: Change[Any], clock: Clock) -> Any:
        return self._drive(key, self._steps(key, name, change, self._take(key)))

    async def aupdate(self, key: str, name: str, change: Change[Any], clock: Clock) -> Any:
        return self.update(key, name, change, clock)


def run(ctx: Context) -> None:
    with redis_server() as port:
        if port is None:
            ctx.report.add(
                Row(f"{SECTION} shared health", "skipped", None, None, note="no redis-server")
            )
            return
        url = f"redis://127.0.0.1:{port}/0"
        _healthy(ctx, url, port)
        _lag(ctx, url)
        _propagation(ctx, url)


def _healthy(ctx: Context, url: str, port: int) -> None:
    comet, backup, report = ctx.comet, ctx.backup, ctx.report
    shared = RedisHealth(url, namespace="bench-healthy")
    chains: dict[str, Callable[[], object]] = {}
    for name, store in (("in-process health", MemoryStore()), ("shared health (Redis)", shared)):

        @with_fallback(provider(comet), provider(backup), health=store)
        def call(client: Any = None) -> Any:
            return chat(client)

        chains[name] = call
    chains["shared health (Redis)"]()  # the first use reads the record: once per process
    started, before = time.monotonic(), round_trips(port)
    stats = interleave(chains, ctx.sizes.per_call * 2)
    elapsed, made = time.monotonic() - started, round_trips(port) - before
    shared.close()
    base, mine = stats["in-process health"], stats["shared health (Redis)"]
    ratio = mine.median / base.median
    report.add(
        Row(
            f"{SECTION}a shared health: healthy call, sync",
            "in-process health",
            base.median,
            base.p99,
        )
    )
    report.add(
        Row(
            f"{SECTION}a shared health: healthy call, sync",
            "shared health (Redis)",
            mine.median,
            mine.p99,
            ratio=ratio,
            target="≤ 1.01x",
            met=ratio <= 1.01,
            note=f"extra {mine.cost_over(base):+.1f} µs (median of paired differences)",
        )
    )
    calls = mine.n + 5  # and the warm-up
    per_call = made / calls
    report.add(
        Row(
            f"{SECTION}b shared health: Redis round trips per healthy call",
            "shared health (Redis)",
            per_call,
            None,
            unit="round trips",
            target="0 (a flush a second)",
            met=made <= math.ceil(elapsed) + 1,
            note=f"{made} in {elapsed:.1f} s, {calls} calls: the background flush",
        )
    )
    report.extra["shared_health"] = {"healthy_ratio": ratio, "round_trips_per_call": per_call}
    report.check("shared health: healthy call ≤ 1.5x in-process", ratio <= 1.5)
    report.check("shared health: no round trip per healthy call", per_call < 0.1)


class _Collections:
    """The time the garbage collector has run (while installed in ``gc.callbacks``): a
    collection that a store call's allocation happens to trigger collects the whole
    heap (openai's objects, mostly), and is not the store's to answer for."""

    total = started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.started = time.perf_counter()
        else:
            self.total += time.perf_counter() - self.started


COLLECTIONS = _Collections()


class _Timed:
    """A store that keeps the time its calls held the caller's thread (an async call's
    awaits excepted: they hold nothing; and collections, see :class:`_Collections`)."""

    held = longest = 0.0

    def _took(self, seconds: float) -> None:
        self.held += seconds
        self.longest = max(self.longest, seconds)


def _timing(base: Callable[..., Any]) -> Callable[..., Any]:
    # The base method called as it is: the interval timed holds the store's code alone.
    def timed(self: _Timed, *args: Any) -> Any:
        started, collected = time.perf_counter(), COLLECTIONS.total
        try:
            return base(self, *args)
        finally:
            self._took(time.perf_counter() - started - (COLLECTIONS.total - collected))

    return timed


def _timed(kind: type) -> type:
    methods = {name: _timing(getattr(kind, name)) for name in ("peek", "count", "update")}
    return type(f"Timed{kind.__name__}", (_Timed, kind), methods)


STORES: dict[str, Callable[[str], Any]] = {
    "in-process health": lambda url: _timed(MemoryStore)(),
    "RedisHealth as it was (sync, on the loop)": lambda url: _timed(Blocking)(
        url, namespace="bench-lag", timeout=5.0
    ),
    "RedisHealth": lambda url: _timed(RedisHealth)(url, namespace="bench-lag", timeout=5.0),
}


def _lag(ctx: Context, url: str) -> None:
    """The event loop's lag under a burst of healthy calls, with each store: all of it,
    and the part the store's calls held the loop (the target: what a store can add)."""
    n, report = ctx.sizes.concurrent, ctx.report
    section = f"{SECTION}c shared health: {n} concurrent healthy async calls, event-loop lag"

    # The floor: the ticker's lateness with no failover at all (the burst's own work).
    async def unwrapped() -> float:
        client = ctx.comet.async_client()
        try:
            return (await _burst_lag(lambda: chat(client), None, n))[0]
        finally:
            await client.close()

    bare = asyncio.run(unwrapped())
    figures: dict[str, dict[str, float]] = {"bare openai": {"late_s": bare}}
    for name, build in STORES.items():
        store = build(url)

        @with_fallback(provider(ctx.comet), provider(ctx.backup), health=store)
        async def call(client: Any = None) -> Any:
            return await chat(client)

        late, held = asyncio.run(_burst_lag(call, store, n))
        if hasattr(store, "close"):
            store.close()
        figures[name] = {"late_s": late, "held_by_store_s": held, "longest_s": store.longest}
    report.add(
        Row(
            section,
            "bare openai (no failover)",
            None,
            None,
            note=f"the ticker: {bare * 1000:.0f} ms late, the burst's own work (no store)",
        )
    )
    base = figures["RedisHealth as it was (sync, on the loop)"]["held_by_store_s"]
    for name, f in figures.items():
        if name == "bare openai":
            continue
        now = name == "RedisHealth"
        report.add(
            Row(
                section,
                name,
                f["held_by_store_s"] * 1e6,
                None,
                ratio=f["held_by_store_s"] / base if base else None,
                target="≤ 5 ms held by the store" if now else "",
                met=f["held_by_store_s"] <= 0.005 if now else None,
                note=f"how late the store made a sleep(0) ticker (the ticker: "
                f"{f['late_s'] * 1000:.0f} ms late all told); longest store call "
                f"{f['longest_s'] * 1e6:.0f} µs",
            )
        )
    report.extra.setdefault("shared_health", {})["loop_lag"] = figures


async def _burst_lag(call: Callable[[], Any], store: Any, n: int) -> tuple[float, float]:
    """A ticker's lateness during a burst of ``n`` calls, and of that the most the
    store's calls (if a store is given) held the loop between two of its ticks."""
    await burst(call, n)  # warm: every connection of the pools, the records
    if store is not None:
        store.longest = 0.0
    late = held = 0.0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal late, held
        while not done.is_set():
            before, store_before = time.perf_counter(), store.held if store else 0.0
            await asyncio.sleep(0)
            late = max(late, time.perf_counter() - before)
            if store is not None:
                held = max(held, store.held - store_before)

    tick = asyncio.ensure_future(ticker())
    await asyncio.sleep(0)
    gc.callbacks.append(COLLECTIONS)
    try:
        await burst(call, n)
    finally:
        gc.callbacks.remove(COLLECTIONS)
    done.set()
    await tick
    return late, held


def _watch(url: str, conn: Any) -> None:
    """The other process: report when it first sees each change of the record."""
    store = RedisHealth(url, namespace="bench-news", timeout=5.0, max_staleness=60.0)
    store.peek(KEY)
    while not store._watcher.subscribed:
        time.sleep(0.001)
    conn.send("ready")
    while (wanted := conn.recv()) is not None:
        state = State(wanted)
        while store.peek(KEY).state is not state:
            time.sleep(0.0001)
        conn.send(time.time())
    store.close()


def _propagation(ctx: Context, url: str) -> None:
    trials = 100 if ctx.sizes == FULL else 30
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    child = context.Process(target=_watch, args=(url, theirs), daemon=True)
    child.start()
    store = RedisHealth(url, namespace="bench-news", timeout=5.0)
    times = []
    try:
        if not ours.poll(60) or ours.recv() != "ready":
            raise RuntimeError("the watching process did not start")
        for i in range(trials * 2):
            state = State.OPEN if i % 2 == 0 else State.CLOSED
            change = _opened if state is State.OPEN else _closed
            ours.send(state.value)
            written = time.time()
            store.update(KEY, "comet", change, time.time)
            seen = ours.recv()
            if state is State.OPEN:
                times.append((seen - written) * 1e6)
    finally:
        ours.send(None)
        child.join(timeout=10)
        store.close()
    stats = Stats.of(times)
    ctx.report.add(
        Row(
            f"{SECTION}d shared health: an opening reaches another process",
            "RedisHealth (pub/sub)",
            stats.median,
            stats.p99,
            target="p99 ≤ 50 ms",
            met=stats.p99 <= 50_000,
            note=f"{trials} trials, mean {statistics.fmean(times) / 1000:.2f} ms",
        )
    )
    ctx.report.extra.setdefault("shared_health", {})["propagation_us"] = {
        "median": stats.median,
        "p99": stats.p99,
    }


def _opened(h: Health, now: float) -> tuple[Health, None]:
    return h._replace(state=State.OPEN, open_until=now + 60.0), None


def _closed(h: Health, now: float) -> tuple[Health, None]:
    return h._replace(state=State.CLOSED, open_until=0.0), None
