"""Where the healthy path's time goes: the decorator (sync, async) and the drop-in.

    python benchmarks/profile_healthy.py                  # fake provider in a child process
    python benchmarks/profile_healthy.py --server thread --calls 2000

Four views of the same healthy chat call, each printed as a table:

1. around a real loopback call: each form's extra µs over the bare openai call
   (interleaved, median of paired differences, a few rounds);
2. the per-call items: each piece of failover's work timed alone on the real objects
   (ns per operation, empty-loop cost removed), times how often one call does it
   (counted by cProfile), so that the items add up to (most of) view 1; the sum is
   checked against the whole form timed with the client's method stubbed out (no I/O);
3. cProfile around real calls: failover's and wrapt's functions by own time per call;
4. tracemalloc: blocks allocated by failover's (and wrapt's) lines that are alive while
   the request is in flight, per call, by line.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import linecache
import logging
import os
import pstats
import statistics
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import httpx2
import openai
import wrapt
from _fixtures import MESSAGES, MODEL, chat, fakes
from _timing import Cost, ainterleave, interleave
from openai.types.chat import ChatCompletion

import failover
from failover import Provider, fallback_clients, with_fallback
from failover._attempts import AttemptContext, Attempts
from failover._engine import Chain, _on_success
from failover._engine import logger as engine_logger
from failover._health import FRESH, STORE, MemoryStore, admit, succeeded, tally
from failover._providers import endpoints
from failover._proxy import Failover
from failover._proxy import _Call as ProxyCall
from failover._scope import SCOPE, Scope, narrowed, phases
from failover._settings import Settings
from failover._streaming import AsyncStream, SyncStream
from failover._tracking import Navigable, TrackedMethod, _Call, _call, track

FORMS = ("@with_fallback sync", "@with_fallback async", "drop-in sync", "drop-in async")
REPLY = ChatCompletion.model_validate(
    {
        "id": "c",
        "object": "chat.completion",
        "created": 0,
        "model": MODEL,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
        ],
    }
)


# -- forms over given providers ------------------------------------------------------------


def _forms(primary: Any, backup: Any) -> dict[str, Callable[[], Any]]:
    """The sync forms (the drop-in is opened here and never closed: a profile run)."""

    @with_fallback(primary, backup)
    def decorated(client: Any = None) -> Any:
        return chat(client)

    proxy = fallback_clients(primary, backup).__enter__()
    return {"@with_fallback sync": decorated, "drop-in sync": lambda: chat(proxy)}


async def _aforms(primary: Any, backup: Any) -> dict[str, Callable[[], Any]]:
    @with_fallback(primary, backup)
    async def decorated(client: Any = None) -> Any:
        return await chat(client)

    proxy = await fallback_clients(primary, backup).__aenter__()
    return {"@with_fallback async": decorated, "drop-in async": lambda: chat(proxy)}


def _providers(fakes_: tuple[Any, ...], **options: Any) -> list[Provider]:
    return [
        Provider(f.name, base_url=f.base_url, api_key=f.api_key, client_options=options)
        for f in fakes_
    ]


# -- 1. around a real call -----------------------------------------------------------------


def totals(comet: Any, backup: Any, n: int, rounds: int) -> dict[str, Cost]:
    pair = _providers((comet, backup))
    bare = comet.client()
    sync = {"bare": lambda: chat(bare), **_forms(*pair)}
    result = {}
    done = [interleave(sync, n) for _ in range(rounds)]
    result.update({name: Cost.of(done, name, "bare") for name in sync if name != "bare"})

    async def run_async() -> list[Any]:
        abare = comet.async_client()
        contenders = {"bare": lambda: chat(abare), **(await _aforms(*pair))}
        return [await ainterleave(contenders, n) for _ in range(rounds)]

    done = asyncio.run(run_async())
    result.update({name: Cost.of(done, name, "bare") for name in done[0] if name != "bare"})
    return result


# -- 2. items ------------------------------------------------------------------------------


def per_op(fn: Callable[[], object], n: int = 20_000) -> float:
    """ns per call of ``fn``, the loop's own cost removed (median of 5 repeats)."""

    def empty() -> None:
        pass

    def loop(f: Callable[[], object]) -> float:
        clock = time.perf_counter_ns
        t0 = clock()
        for _ in range(n):
            f()
        return (clock() - t0) / n

    return statistics.median(loop(fn) - loop(empty) for _ in range(5))


def _stub(clients: list[Any], is_async: bool) -> None:
    """Replace ``chat.completions.create`` on these (raw) clients by an instant reply:
    failover looks the method up on each call, so its whole path runs, with no I/O."""

    def create(**kwargs: Any) -> ChatCompletion:
        return REPLY

    async def acreate(**kwargs: Any) -> ChatCompletion:
        return REPLY

    for client in clients:
        client.chat.completions.create = acreate if is_async else create


def stubbed_forms() -> dict[str, float]:
    """Each form's whole cost (ns), the client's method stubbed out: failover alone."""
    primary, backup = (Provider(n, base_url=f"http://{n}.invalid/v1", api_key="k") for n in "ab")
    shared = endpoints((primary, backup))  # the decorator's clients (shared per Provider)
    forms = _forms(primary, backup)
    bare = openai.OpenAI(api_key="k", base_url="http://bare.invalid/v1")
    raw = [e.sync_client().__wrapped__ for e in shared] + _drop_in_clients(forms["drop-in sync"])
    _stub([*raw, bare], is_async=False)
    base = per_op(lambda: chat(bare))
    result = {name: per_op(fn) - base for name, fn in forms.items()}

    async def timed() -> dict[str, float]:
        # One loop for the stubs and the timing: an async client belongs to its loop.
        aforms = await _aforms(primary, backup)
        abare = openai.AsyncOpenAI(api_key="k", base_url="http://bare.invalid/v1")
        araw = [e.async_client().__wrapped__ for e in shared]
        _stub([*araw, abare, *_drop_in_clients(aforms["drop-in async"])], is_async=True)
        out = {}
        for name, fn in {"bare": lambda: chat(abare), **aforms}.items():
            samples = []
            for _ in range(5):
                t0 = time.perf_counter_ns()
                for _ in range(20_000):
                    await fn()
                samples.append((time.perf_counter_ns() - t0) / 20_000)
            out[name] = statistics.median(samples)
        return out

    times = asyncio.run(timed())
    result.update({name: t - times["bare"] for name, t in times.items() if name != "bare"})
    return result


def _drop_in_clients(form: Callable[[], Any]) -> list[Any]:
    """The raw clients behind a drop-in form's proxy: its template and its chain's."""
    cells = [c.cell_contents for c in form.__closure__ or ()]
    proxy = next(c for c in cells if hasattr(c, "_self_chain"))
    is_async = proxy._self_async
    built = [e.async_client() if is_async else e.sync_client() for e in proxy._self_chain.endpoints]
    return [proxy.__wrapped__, *(c.__wrapped__ for c in built)]


def items() -> list[tuple[str, float]]:
    """(item, ns per operation) for each piece of the sync decorator's and drop-in's work."""
    primary, backup = (Provider(n, base_url=f"http://{n}.invalid/v1", api_key="k") for n in "cd")
    settings = Settings()
    chain = Chain(endpoints((primary, backup)), settings)
    endpoint, breaker = chain.endpoints[0], settings.breaker
    assert breaker is not None
    assert chain.admits is not None
    client = endpoint.sync_client()
    _stub([client.__wrapped__], is_async=False)
    key, name, clock, admits = endpoint.key, endpoint.name, breaker.clock, chain.admits
    run = chain.run()
    scope, _ = run.scope(endpoint)
    bound = client.bound(scope, cache=True)
    kwargs = {"model": MODEL, "messages": MESSAGES}
    owner = client.__wrapped__.chat.completions
    lock = threading.Lock()
    path = ("chat", "completions", "create")

    def locked() -> None:
        with lock:
            pass

    def attempt_loop() -> None:
        with Attempts(chain).attempt(lambda e: e.sync_client()):
            pass

    @wrapt.decorator
    def wrapper(wrapped: Any, instance: Any, args: Any, kw: dict[str, Any]) -> Any:
        # with_fallback's own wrapper, its driver replaced by a direct call.
        if "client" in kw:
            return wrapped(*args, **kw)

        def body(c: Any) -> Any:
            kw["client"] = c
            return wrapped(*args, **kw)

        return body(None)

    def body(client: Any = None) -> Any:
        return client

    def through_tracked() -> Any:
        return bound.chat.completions.create

    def direct() -> Any:
        return client.__wrapped__.chat.completions.create

    def call_scope() -> None:
        SCOPE.reset(SCOPE.set(scope))

    found: list[tuple[str, float]] = []

    def add(what: str, fn: Callable[[], object], base: Callable[[], object] | None = None) -> None:
        found.append((what, per_op(fn) - (per_op(base) if base is not None else 0.0)))

    add("wrapt FunctionWrapper + body closure (decorator)", wrapper(body), body)
    add("Attempts(chain): Run.__init__", lambda: Attempts(chain))
    add(
        "MemoryStore.update(admit), closed record",
        lambda: STORE.update(key, name, admits[0], clock),
    )
    add("  of which lock acquire + release", locked)
    add("  of which admit(): tally + _replace", lambda: admit(FRESH, breaker, 1e9, False))
    add("  of which tally(): the window bucket", lambda: tally(FRESH, breaker, 1e9, 1, 0))
    add("  of which the breaker clock, time.time()", time.time)
    add(
        "MemoryStore.update(_on_success), writes nothing",
        lambda: STORE.update(key, name, _on_success, clock),
    )
    add("logger.debug (disabled), Run.succeeded", lambda: engine_logger.debug("%s %.3f", name, 0.1))
    add(
        "AttemptContext(): scope, Tracked.bound, monotonic",
        lambda: AttemptContext(run, endpoint, client),
    )
    add("SCOPE.set + SCOPE.reset", call_scope)
    add("= attempt loop: Attempts, next, enter, exit, end", attempt_loop)
    add("Tracked hops: .chat.completions.create", through_tracked, direct)
    add(
        "_Call(): model map and bounds check",
        lambda: _Call(owner, "create", owner.create, kwargs, scope),
    )
    add("track(reply): isinstance BaseModel", lambda: track(REPLY, scope))
    add(
        "= TrackedMethod's _call (stubbed method)",
        lambda: _call(owner, "create", scope, (), kwargs),
        lambda: owner.create(**kwargs),
    )
    add(
        "drop-in: step tuple + _Call.of (frozen dataclass)",
        lambda: (*path[:2], ProxyCall.of((), kwargs, {})),
    )
    add("drop-in: deferred-name scan of the path", lambda: any(n in {"stream"} for n in path))
    return found


# -- 3. cProfile ---------------------------------------------------------------------------

_OURS = (os.sep + "failover" + os.sep, os.sep + "wrapt" + os.sep)


def _code(func: Any) -> tuple[str, int, str]:
    """A Python function as cProfile keys it."""
    code = func.__code__
    return (code.co_filename, code.co_firstlineno, code.co_name)


def _builtin(name: str) -> tuple[str, int, str]:
    return ("~", 0, name)


# What the breakdown counts: functions as cProfile keys them. Calls to shared functions
# (logging, the clocks, context variables) are counted from failover's frames only.
_COUNTED = {
    "wrapt proxies built (Tracked, TrackedMethod, Failover)": (
        _code(Navigable.__init__),
        _code(TrackedMethod.__init__),
    ),
    "attribute hops after a wrapt miss (__getattr__)": (
        _code(Navigable.__getattr__),
        _code(Failover.__getattr__),
    ),
    "ContextVar.set / reset": (
        _builtin("<method 'set' of '_contextvars.ContextVar' objects>"),
        _builtin("<method 'reset' of '_contextvars.ContextVar' objects>"),
    ),
    "MemoryStore.update": (_code(MemoryStore.update),),
    "admit / tally / succeeded": (_code(admit), _code(tally), _code(succeeded)),
    "Scope objects (Scope.__post_init__)": (_code(Scope.__post_init__),),
    "_Call objects (tracking; proxy _Call.of)": (_code(_Call.__init__), _code(ProxyCall.of)),
    "timeout arithmetic (remaining, narrowed, phases)": (
        _code(Scope.remaining),
        _code(narrowed),
        _code(phases),
    ),
    "Logger.debug / info / isEnabledFor": (
        _code(logging.Logger.debug),
        _code(logging.Logger.info),
        _code(logging.Logger.isEnabledFor),
    ),
    "time.monotonic / time.time": (
        _builtin("<built-in method time.monotonic>"),
        _builtin("<built-in method time.time>"),
    ),
    "stream wrappers (SyncStream, AsyncStream)": (
        _code(SyncStream.__init__),
        _code(AsyncStream.__init__),
    ),
}


def profile(
    form: Callable[[], Any], calls: int, loop: asyncio.AbstractEventLoop | None = None
) -> pstats.Stats:
    """``calls`` calls of ``form`` under cProfile (awaited on ``loop`` when given)."""

    async def many() -> None:
        for _ in range(calls):
            await form()

    profiler = cProfile.Profile()
    profiler.enable()
    if loop is not None:
        loop.run_until_complete(many())
    else:
        for _ in range(calls):
            form()
    profiler.disable()
    return pstats.Stats(profiler)


def _entries(stats: pstats.Stats) -> dict[tuple[str, int, str], tuple[int, float]]:
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    return {key: (value[1], value[2]) for key, value in raw.items()}  # (ncalls, tottime)


def counts(stats: pstats.Stats, calls: int) -> dict[str, float]:
    """How often one call does each of ``_COUNTED`` (and how many Python calls it makes)."""
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    out = {}
    for what, functions in _COUNTED.items():
        total = 0
        for key in functions:
            if key not in raw:
                continue
            if _ours(key[0]):
                total += raw[key][1]
            else:  # from failover's frames only
                total += sum(c[1] for caller, c in raw[key][4].items() if _ours(caller[0]))
        out[what] = total / calls
    python = sum(n for (file, _, _), (n, _) in _entries(stats).items() if _ours(file))
    out["Python function calls in failover + wrapt"] = python / calls
    return out


def _ours(file: str) -> bool:
    return any(part in file for part in _OURS) and "benchmarks" not in file


def top(stats: pstats.Stats, calls: int, k: int = 12) -> list[tuple[str, float, float]]:
    """(function, calls per call, own µs per call) of failover's and wrapt's heaviest."""
    rows = [
        (f"{os.path.basename(file)}:{line} {func}", n / calls, t / calls * 1e6)
        for (file, line, func), (n, t) in _entries(stats).items()
        if _ours(file)
    ]
    return sorted(rows, key=lambda r: -r[2])[:k]


# -- 4. tracemalloc ------------------------------------------------------------------------


class Alive:
    """Takes a tracemalloc snapshot while a request is in flight (an httpx event hook)."""

    def __init__(self) -> None:
        self.armed = False
        self.inside: tracemalloc.Snapshot | None = None

    def hook(self, request: httpx2.Request) -> None:
        if self.armed:
            self.inside = tracemalloc.take_snapshot()
            self.armed = False

    async def ahook(self, request: httpx2.Request) -> None:
        self.hook(request)


def _filtered(snapshot: tracemalloc.Snapshot) -> tracemalloc.Snapshot:
    return snapshot.filter_traces([tracemalloc.Filter(True, f"*{p}*") for p in _OURS])


def alive(call: Callable[[], Any], watch: Alive, runs: int = 5) -> tuple[float, list[str]]:
    """Blocks failover's lines allocated for a call, alive during its request (median)."""
    found = []
    lines: list[str] = []
    for _ in range(runs):
        before = _filtered(tracemalloc.take_snapshot())
        watch.armed = True
        call()
        assert watch.inside is not None
        diff = _filtered(watch.inside).compare_to(before, "lineno")
        grown = [d for d in diff if d.count_diff > 0]
        found.append(sum(d.count_diff for d in grown))
        lines = [
            f"{d.count_diff:3d}  {os.path.basename(frame.filename)}:{frame.lineno:<4} "
            + linecache.getline(frame.filename, frame.lineno).strip()
            for d in sorted(grown, key=lambda d: -d.count_diff)[:10]
            for frame in [d.traceback[0]]
        ]
    return statistics.median(found), lines


# -- main ----------------------------------------------------------------------------------


def main() -> None:
    logging.getLogger("failover").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", choices=("process", "thread"), default="process")
    parser.add_argument("--calls", type=int, default=1000, help="calls per round and profile")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    python = sys.version.split()[0]
    print(f"failover {failover.__version__}, openai {openai.__version__}, Python {python}")
    with fakes(args.server) as (comet, backup, _):
        print(f"\n1. extra µs per healthy call over loopback (server: {args.server})")
        for name, cost in totals(comet, backup, args.calls, args.rounds).items():
            print(f"   {name:<24} {cost.spread()}")

        print("\n2. failover alone (client method stubbed, no I/O), ns per call")
        for name, ns in stubbed_forms().items():
            print(f"   {name:<24} {ns:8.0f}")
        print("   items, ns per operation (times per call: view 3)")
        for name, ns in items():
            print(f"   {name:<58} {ns:8.0f}")

        watch = Alive()
        pair = _providers(
            (comet, backup), http_client=httpx2.Client(event_hooks={"request": [watch.hook]})
        )
        sync = _forms(*pair)
        loop = asyncio.new_event_loop()
        apair = _providers(
            (comet, backup), http_client=httpx2.AsyncClient(event_hooks={"request": [watch.ahook]})
        )
        aforms = loop.run_until_complete(_aforms(*apair))
        forms = {**sync, **aforms}
        counted: dict[str, dict[str, float]] = {}
        print(
            "\n3. cProfile around real calls: own µs per call (profiler-inflated), calls per call"
        )
        for name in FORMS:
            stats = profile(forms[name], args.calls, loop if name.endswith("async") else None)
            counted[name] = counts(stats, args.calls)
            print(f"   {name}")
            for func, n, us in top(stats, args.calls):
                print(f"     {us:6.2f} µs  {n:4.1f}x  {func}")
        print("\n   counted per call: " + " | ".join(FORMS))
        for what in next(iter(counted.values())):
            print(f"   {what:<55} " + "  ".join(f"{counted[f][what]:6.1f}" for f in FORMS))

        print(
            "\n4. tracemalloc: blocks allocated by failover/wrapt lines, alive during the request"
        )
        tracemalloc.start(1)
        for name in FORMS:
            form = forms[name]
            call = (lambda f=form: loop.run_until_complete(f())) if name.endswith("async") else form
            blocks, lines = alive(call, watch)
            print(f"   {name}: {blocks:.0f} blocks; by line:")
            for line in lines:
                print(f"     {line}")
        tracemalloc.stop()
        loop.close()


if __name__ == "__main__":
    main()
