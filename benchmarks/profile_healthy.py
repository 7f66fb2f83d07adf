"""Where the healthy path's time goes: the decorator, the drop-in and ``failover.OpenAI``.

    python benchmarks/profile_healthy.py                  # fake provider in a child process
    python benchmarks/profile_healthy.py --server thread --calls 2000

Four views of the same healthy chat call, sync and async:

1. around a real loopback call: each form's extra µs over the bare openai call
   (interleaved, median of paired differences, a few rounds);
2. failover alone, ``chat.completions.create`` stubbed out: each form's whole cost, the
   pieces of the healthy path timed alone on the real objects, and per form the sum of
   the pieces it runs (the rest: frames, closures, ``with`` statements);
3. cProfile around real calls: failover's and wrapt's heaviest functions, and how often
   one call does each kind of work;
4. tracemalloc: blocks allocated by failover's (and wrapt's) lines that are alive while
   the request is in flight, by line.
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
import timeit
import tracemalloc
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any
from unittest.mock import patch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import httpx2
import openai
from _fixtures import _COMPLETION, MESSAGES, MODEL, chat, fakes, forms_async, forms_sync, provider
from _timing import Cost, ainterleave, interleave
from openai.resources.chat.completions import AsyncCompletions, Completions
from openai.types.chat import ChatCompletion

import failover
from failover import Provider, fallback_clients, with_fallback
from failover._activity import ACTIVITY, Activity
from failover._attempts import AttemptContext, async_driver
from failover._chain import Chain, _readiness
from failover._engine import Run
from failover._health import MemoryStore, default_store
from failover._ownership import Ownership
from failover._proxy import Failover, _async_method
from failover._proxy import _Call as ProxyCall
from failover._scope import SCOPE, Scope, narrowed, phases
from failover._streaming import _Watched
from failover._telemetry import tracing
from failover._tracking import Navigable, _Call, _tracked_await, tracked_method

# The forms of _fixtures that the healthy-path targets are about (not the block form).
FORMS = {
    "sync": ("@with_fallback", "fallback_clients() proxy", "failover.OpenAI"),
    "async": ("@with_fallback", "fallback_clients() proxy", "failover.AsyncOpenAI"),
}
REPLY = ChatCompletion.model_validate(_COMPLETION)


def _named(forms: dict[str, Any], flavour: str) -> dict[str, Any]:
    return {f"{name} {flavour}": forms[name] for name in FORMS[flavour]}


def _pair(*where: Any, **options: Any) -> list[Provider]:
    return [provider(w, client_options=options) for w in where]


def _invalid() -> list[Provider]:
    """Two providers that are never reached (their client's method is stubbed)."""
    return [Provider(n, base_url=f"http://{n}.invalid/v1", api_key="k") for n in "ab"]


# -- 1. around a real call -----------------------------------------------------------------


def totals(comet: Any, backup: Any, n: int, rounds: int) -> dict[str, Cost]:
    pair = _pair(comet, backup)
    bare = comet.client()
    forms, close = forms_sync(*pair)
    sync = {"bare": lambda: chat(bare), **_named(forms, "sync")}
    done = [interleave(sync, n) for _ in range(rounds)]
    close()
    result = {name: Cost.of(done, name, "bare") for name in sync if name != "bare"}

    async def run_async() -> list[Any]:
        abare = comet.async_client()
        aforms, aclose = await forms_async(*pair)
        contenders = {"bare": lambda: chat(abare), **_named(aforms, "async")}
        rounds_ = [await ainterleave(contenders, n) for _ in range(rounds)]
        await aclose()
        return rounds_

    done = asyncio.run(run_async())
    result.update({name: Cost.of(done, name, "bare") for name in done[0] if name != "bare"})
    return result


# -- 2. failover alone ---------------------------------------------------------------------


def _create(self: Any, **kwargs: Any) -> ChatCompletion:
    return REPLY


async def _reply() -> ChatCompletion:
    return REPLY


def _acreate(self: Any, **kwargs: Any) -> Coroutine[Any, Any, ChatCompletion]:
    # As openai's own: a plain function (its required_args decorator) returning a coroutine.
    return _reply()


async def _anothing() -> None:
    pass


def _cell(function: Any, name: str) -> Any:
    """What ``name`` is in ``function``'s closure (a wrapper's, a method's state)."""
    cells = dict(zip(function.__code__.co_freevars, function.__closure__, strict=True))
    return cells[name].cell_contents


def _chain_of(decorated: Any) -> Chain:
    """A ``with_fallback`` function's chain."""
    chain: Chain = _cell(decorated, "chain")
    return chain


class Parts:
    """The real objects of a healthy call, for the items: a decorator's chain and its
    client, a drop-in proxy and its method (built with the method stubbed)."""

    def __init__(self, chain: Chain, client: Any, proxy: Any) -> None:
        self.endpoint = endpoint = chain.endpoints[0]
        self.scope = chain.scopes[id(endpoint)]
        self.client = client
        self.handed = chain.handed_out(client, self.scope)
        self.owner = client.chat.completions
        self.proxy = proxy
        self.method = proxy.chat.completions.create
        self.kwargs = {"model": MODEL, "messages": MESSAGES}


def _least(pairs: list[tuple[float, float]]) -> float:
    return min(t for t, _ in pairs) - min(base for _, base in pairs)


class Items:
    """What view 2 found: each form's whole cost over the bare call, and the items; each
    timed alone, in loops of ``n`` operations."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.whole: dict[str, float] = {}
        self.found: list[tuple[str, str, float]] = []  # (RECIPES key or "", what, ns)

    def ns(self, fn: Callable[[], object], base: Callable[[], object] = lambda: None) -> float:
        """ns per call of ``fn`` less ``base`` (by default the empty loop). Each is the
        fastest of 7 loops, the two taking turns: the least disturbed by the machine's
        other work. The collector runs, as it does in use."""

        def each(f: Callable[[], object]) -> float:
            return timeit.Timer(f, "gc.enable()").timeit(self.n) * 1e9 / self.n

        return _least([(each(fn), each(base)) for _ in range(7)])

    async def ans(self, fn: Callable[[], Awaitable[object]], base: Any = _anothing) -> float:
        """:meth:`ns` for awaitables, awaited one at a time."""

        async def each(f: Callable[[], Awaitable[object]]) -> float:
            t0 = time.perf_counter_ns()
            for _ in range(self.n):
                await f()
            return (time.perf_counter_ns() - t0) / self.n

        return _least([(await each(fn), await each(base)) for _ in range(7)])

    def add(self, what: str, fn: Any, base: Any = lambda: None, key: str = "") -> None:
        self.found.append((key, what, self.ns(fn, base)))

    async def awaited(self, what: str, fn: Any, base: Any = _anothing, key: str = "") -> None:
        self.found.append((key, what, await self.ans(fn, base)))


def items(t: Items) -> None:
    """The sync forms' whole costs, then the pieces of the sync healthy path."""
    bare = openai.OpenAI(api_key="k", base_url="http://bare.invalid/v1")
    forms, close = forms_sync(*_invalid())
    for name, form in _named(forms, "sync").items():
        t.whole[name] = t.ns(form, lambda: chat(bare))
    close()

    def user(client: Any = None) -> Any:
        return client

    decorated = with_fallback(*_invalid())(user)
    chain = _chain_of(decorated)
    opened = fallback_clients(*_invalid())
    p = Parts(chain, chain.endpoints[0].sync_client(), opened.__enter__())
    chat(p.proxy)  # its first call builds the drop-in's Tracked clients
    e, store, kw, owner, scope = (
        p.endpoint,
        (chain.settings.store or default_store()),
        p.kwargs,
        p.owner,
        p.scope,
    )
    breaker, lock, create = chain.settings.breaker, threading.Lock(), owner.create
    assert isinstance(store, MemoryStore)
    assert breaker is not None
    attempt = _cell(p.method, "fn")  # the method is its driver, of its attempt
    reach, own = _cell(attempt, "reach"), _cell(attempt, "own")
    path = _cell(_cell(attempt, "described"), "path")
    seen = store.views.get(e.key)

    def locked() -> None:
        with lock:
            pass

    def hop(client: Any) -> Callable[[], object]:
        return lambda: client.chat.completions.create

    t.add("@with_fallback: its driver, over the body alone", decorated, user, key="driver")
    t.add("  Chain.ready(): flag, client, view, counts", lambda: chain.ready(e._sync))
    t.add("    tracing() (only once opentelemetry is imported)", tracing)
    t.add(
        "    the store's view", lambda: (chain.settings.store or default_store()).views.get(e.key)
    )
    t.add(
        "    MemoryStore.count() (inlined: only for a new or long tally)",
        lambda: store.count(e.key, e.name, breaker),
    )
    t.add("      lock acquire + release (not on the healthy path)", locked)
    t.add("      breaker clock, time.time() (x2: the activity's too)", time.time)
    t.add("    ACTIVITY.served() (inlined, as count)", lambda: ACTIVITY.served(e.key, e.name))
    t.add("  SCOPE.set + SCOPE.reset", lambda: SCOPE.reset(SCOPE.set(scope)))
    t.add("  time.monotonic() (1 per call)", time.monotonic)
    t.add("  after the call: the record was not replaced", lambda: store.views.get(e.key) is seen)
    t.add("Tracked hops .chat.completions.create (slots)", hop(p.handed), hop(p.client), "hops")
    tracked = p.handed.chat.completions.create
    t.add("= the tracked method", lambda: tracked(**kw), lambda: owner.create(**kw), "method")
    ownership = scope.ownership
    assert ownership is not None
    t.add("  Ownership.quiet() (the plain call's one question)", ownership.quiet)
    t.add(
        "  a full _Call() (not plain: ownership, flags, monotonic)",
        lambda: _Call(owner, "create", create, (), kw, scope),
    )
    t.add("    Ownership.request()", lambda: ownership.request(owner, "create", (), kw, e))
    t.add("drop-in: Failover hops (slots)", hop(p.proxy), hop(p.client), "proxy_hops")
    t.add(
        "drop-in: step tuple + _Call.of (off the healthy path)",
        lambda: (*path, ProxyCall.of((), kw, own)),
    )
    t.add("drop-in: attrgetter via the Tracked client", lambda: reach(p.handed), key="reach")
    opened.__exit__(None, None, None)
    with failover.OpenAI(*_invalid()) as dropin:
        chat(dropin)
        t.add("failover.OpenAI: its hops (sync; async alike)", hop(dropin), hop(p.client), "ohops")


async def aitems(t: Items) -> None:
    """The async forms' whole costs, then the pieces the async healthy path runs
    besides (or instead of) the sync ones."""
    # One loop for building and timing: an async client belongs to its loop.
    bare = openai.AsyncOpenAI(api_key="k", base_url="http://bare.invalid/v1")
    forms, close = await forms_async(*_invalid())
    for name, form in _named(forms, "async").items():
        t.whole[name] = await t.ans(form, lambda: chat(bare))
    await close()

    async def user(client: Any = None) -> Any:
        return client

    decorated = with_fallback(*_invalid())(user)
    chain = _chain_of(decorated)
    opened = fallback_clients(*_invalid())
    p = Parts(chain, chain.endpoints[0].async_client(), await opened.__aenter__())
    await chat(p.proxy)

    async def layer() -> None:
        return await _anothing()

    fn, base = decorated, (lambda: user(None))
    await t.awaited("@with_fallback: its driver (async), over the body alone", fn, base, "adriver")
    t.add("  Endpoint.async_client(): PerLoop.get", p.endpoint.async_client)
    tracked, owner, kw = p.handed.chat.completions.create, p.owner, p.kwargs
    fn, base = (lambda: tracked(**kw)), (lambda: owner.create(**kw))
    await t.awaited("= the tracked method (async) + _tracked_await", fn, base, "amethod")
    await t.awaited("one coroutine layer (create, await, return)", layer, key="layer")
    await opened.__aexit__(None, None, None)


# What each form's stubbed call runs, as item keys (one per time it runs); the rest is
# not isolated. Async, the bare call is the stubbed coroutine alone: the user's function
# is a layer, and so is the drop-in's attempt. A drop-in's method is its driver, as a
# decorated function is (its attempt's frame is not isolated).
_DROP_IN = " driver reach method"
_ADROP_IN = " adriver layer reach amethod"
RECIPES = {
    "@with_fallback sync": "driver hops method",
    "fallback_clients() proxy sync": "proxy_hops" + _DROP_IN,
    "failover.OpenAI sync": "ohops" + _DROP_IN,
    "@with_fallback async": "adriver layer hops amethod",
    "fallback_clients() proxy async": "proxy_hops" + _ADROP_IN,
    "failover.AsyncOpenAI async": "ohops" + _ADROP_IN,
}


# -- 3. cProfile ---------------------------------------------------------------------------

_OURS = (os.sep + "failover" + os.sep, os.sep + "wrapt" + os.sep)
Key = tuple[str, int, str]


def _keys(*functions: Any) -> tuple[Key, ...]:
    """Functions as cProfile keys them: a class stands for its ``__init__``, a string for
    a builtin (cProfile's name for it), a code object for the function it makes."""
    codes = [
        f if not callable(f) else (vars(f)["__init__"] if isinstance(f, type) else f).__code__
        for f in functions
    ]
    return tuple(
        ("~", 0, c) if isinstance(c, str) else (c.co_filename, c.co_firstlineno, c.co_name)
        for c in codes
    )


def _nested(func: Any, name: str) -> Any:
    """The code of the function ``name`` defined in ``func``'s body."""
    return next(c for c in func.__code__.co_consts if getattr(c, "co_name", None) == name)


_CONTEXTVAR = "<method '%s' of '_contextvars.ContextVar' objects>"
_TIME = "<built-in method time.%s>"
Logger = logging.Logger
# What view 3 counts; calls of shared functions (logging, clocks, context variables)
# from failover's frames only.
_COUNTED: dict[str, tuple[Key, ...]] = {
    "proxies and methods built (Navigable, tracked_method)": _keys(Navigable, tracked_method),
    "attribute hops that miss the slots (__getattr__)": _keys(
        Navigable.__getattr__, Failover.__getattr__
    ),
    "ContextVar.set / reset": _keys(_CONTEXTVAR % "set", _CONTEXTVAR % "reset"),
    "Chain.ready / lean / settle / served": _keys(
        next(c for c in _readiness.__code__.co_consts if getattr(c, "co_name", "") == "ready"),
        Chain.lean,
        Chain.settle,
        Chain.served,
    ),
    "Run objects": _keys(Run),
    "attempt objects (AttemptContext)": _keys(AttemptContext),
    "store peek / count / update": _keys(MemoryStore.peek, MemoryStore.count, MemoryStore.update),
    "ACTIVITY.served": _keys(Activity.served),
    "Scope objects (Scope.__post_init__)": _keys(Scope.__post_init__),
    "_Call objects (tracking _Call, _Call.plain; proxy _Call.of)": _keys(
        _Call, _Call.plain, ProxyCall.of
    ),
    "Ownership.request": _keys(Ownership.request),
    "timeout arithmetic (remaining, narrowed, phases)": _keys(Scope.remaining, narrowed, phases),
    "Logger.debug / info / isEnabledFor": _keys(Logger.debug, Logger.info, Logger.isEnabledFor),
    "time.monotonic / time.time": _keys(_TIME % "monotonic", _TIME % "time"),
    "stream wrappers (SyncStream, AsyncStream)": _keys(_Watched),
    "coroutine resumes: the async driver, the drop-in's attempt, _tracked_await": _keys(
        _nested(async_driver, "called"),
        _nested(_async_method, "attempt"),
        _tracked_await,
    ),
}


# Navigable.__getattr__ called by Failover.__getattr__ is the same miss: counted once.
_SAME = dict(zip(_keys(Navigable.__getattr__), _keys(Failover.__getattr__), strict=True))


def _ours(file: str) -> bool:
    return any(part in file for part in _OURS) and "benchmarks" not in file


def counts(stats: pstats.Stats, calls: int) -> dict[str, float]:
    """How often one call does each of ``_COUNTED`` (and how many Python calls it makes)."""
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    out = {}
    for what, functions in _COUNTED.items():
        total = 0
        for key in functions:
            callers = raw[key][4] if key in raw else {}
            total += sum(
                c[1]
                for caller, c in callers.items()
                if caller != _SAME.get(key) and (_ours(key[0]) or _ours(caller[0]))
            )
        out[what] = total / calls
    python = sum(value[1] for (file, _, _), value in raw.items() if _ours(file))
    out["Python function calls in failover + wrapt"] = python / calls
    return out


def top(stats: pstats.Stats, calls: int, k: int = 10) -> list[tuple[str, float, float]]:
    """(function, calls per call, own µs per call) of failover's and wrapt's heaviest."""
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    rows = [
        (f"{os.path.basename(file)}:{line} {func}", value[1] / calls, value[2] / calls * 1e6)
        for (file, line, func), value in raw.items()
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


def alive(call: Callable[[], Any], watch: Alive, runs: int = 5) -> tuple[float, list[str]]:
    """Blocks failover's lines allocated for a call, alive during its request (median)."""
    found = []
    lines: list[str] = []
    for _ in range(runs):
        tracemalloc.clear_traces()  # what is traced from here on: this call's blocks
        watch.armed = True
        call()
        assert watch.inside is not None
        ours = [tracemalloc.Filter(True, f"*{part}*") for part in _OURS]
        grown = watch.inside.filter_traces(ours).statistics("lineno")
        found.append(sum(stat.count for stat in grown))
        lines = [
            f"{stat.count:3d}  {os.path.basename(frame.filename)}:{frame.lineno:<4} "
            + linecache.getline(frame.filename, frame.lineno).strip()
            for stat in sorted(grown, key=lambda stat: -stat.count)[:10]
            for frame in [stat.traceback[0]]
        ]
    return statistics.median(found), lines


# -- main ----------------------------------------------------------------------------------


def show_alone(n: int) -> None:
    """View 2, on clients whose ``chat.completions.create`` answers at once: failover's
    whole path runs (it looks the method up on each call), with no I/O."""
    t = Items(n)
    with (
        patch.object(Completions, "create", _create),
        patch.object(AsyncCompletions, "create", _acreate),
    ):
        items(t)
        asyncio.run(aitems(t))
    print("\n2. failover alone (create stubbed, no I/O), ns per call over the bare call")
    print("   items, ns per operation (extra over the direct call where there is one):")
    for _, what, ns in t.found:
        print(f"     {what:<56} {ns:8.0f}")
    by_key = {key: ns for key, _, ns in t.found if key}
    print(f"   {'form':<32} {'whole':>8} {'items':>8} {'rest':>8}")
    for name, ns in t.whole.items():
        summed = sum(by_key[key] for key in RECIPES[name].split())
        print(f"   {name:<32} {ns:8.0f} {summed:8.0f} {ns - summed:8.0f}")


def _on(loop: asyncio.AbstractEventLoop, form: Callable[[], Any]) -> Callable[[], object]:
    return lambda: loop.run_until_complete(form())


def _repeat(call: Callable[[], object], times: int) -> None:
    for _ in range(times):
        call()


def show_profiles(comet: Any, backup: Any, calls: int) -> None:
    """Views 3 and 4, on forms whose requests pass an httpx event hook."""
    watch, loop = Alive(), asyncio.new_event_loop()
    http = httpx2.Client(event_hooks={"request": [watch.hook]})
    sync, close = forms_sync(*_pair(comet, backup, http_client=http))
    ahttp = httpx2.AsyncClient(event_hooks={"request": [watch.ahook]})
    aforms, aclose = loop.run_until_complete(forms_async(*_pair(comet, backup, http_client=ahttp)))
    forms = _named(sync, "sync")  # and the async ones, each call run to its end on the loop
    forms.update({k: _on(loop, f) for k, f in _named(aforms, "async").items()})
    counted: dict[str, dict[str, float]] = {}
    print("\n3. cProfile around real calls: own µs per call (profiler-inflated), calls per call")
    for name, form in forms.items():
        profiler = cProfile.Profile()
        profiler.runcall(_repeat, form, calls)
        stats = pstats.Stats(profiler)
        counted[name] = counts(stats, calls)
        print(f"   {name}")
        for func, n, us in top(stats, calls):
            print(f"     {us:6.2f} µs  {n:4.1f}x  {func}")
    print("\n   counted per call:")
    print("   " + " | ".join(f"{i + 1}: {name}" for i, name in enumerate(forms)))
    print(f"   {'':<64}" + "".join(f"{i + 1:>6}" for i in range(len(forms))))
    for what in next(iter(counted.values())):
        print(f"   {what:<64}" + "".join(f"{counted[f][what]:6.1f}" for f in forms))

    print("\n4. tracemalloc: blocks allocated by failover/wrapt lines, alive during the request")
    tracemalloc.start(1)
    for name, form in forms.items():
        blocks, lines = alive(form, watch)
        print(f"   {name}: {blocks:.0f} blocks; by line:")
        for line in lines:
            print(f"     {line}")
    tracemalloc.stop()
    close()
    loop.run_until_complete(aclose())
    loop.close()


def main() -> None:
    logging.getLogger("failover").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", choices=("process", "thread"), default="process")
    parser.add_argument("--calls", type=int, default=1000, help="calls per round and profile")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ops", type=int, default=10_000, help="loop length of view 2's timings")
    args = parser.parse_args()
    python = sys.version.split()[0]
    print(f"failover {failover.__version__}, openai {openai.__version__}, Python {python}")
    with fakes(args.server) as (comet, backup, _):
        print(f"\n1. extra µs per healthy call over loopback (server: {args.server})")
        for name, cost in totals(comet, backup, args.calls, args.rounds).items():
            print(f"   {name:<32} {cost.spread()}")
        show_alone(args.ops)
        show_profiles(comet, backup, args.calls)


if __name__ == "__main__":
    main()
