"""failover's own cost with the caches as a real call leaves them: cold.

    python benchmarks/cold_path.py             # hot and cold, and what each piece costs cold
    python benchmarks/cold_path.py --calls 500

Timed alone in a loop (``profile_healthy.py`` view 2), failover's code stays in the
CPU's caches; around a real call, the client's own work (openai, httpx, pydantic)
evicts it between two calls, and every piece runs cold. Here
``chat.completions.create`` is stubbed out (no I/O), and in the cold runs each timed
call follows a real openai call over a mock transport: what is left is failover's code,
as cold as in production. A contender's cost is the median of its per-round
differences to the bare stubbed call, the contenders taking turns. Then, for
``@with_fallback`` (sync), the cold cost with one piece knocked out at a time: what that
piece costs cold.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import openai
from _fixtures import (
    anaive,
    atenacity_fallback,
    chat,
    mock_async_client,
    mock_client,
    naive,
    tenacity_fallback,
)
from _timing import Stats, ainterleave, interleave
from openai.types.chat import ChatCompletion

import failover._chain
import failover._scope
from failover import Provider, fallback_clients, with_fallback
from failover._activity import Tally
from failover._chain import Chain
from failover._providers import endpoints

REPLY = ChatCompletion.model_construct(
    id="x", choices=[], created=0, model="m", object="chat.completion"
)
PROVIDERS = [Provider(n, base_url=f"http://{n}.invalid/v1", api_key="k") for n in "ab"]


def _stubbed(client: Any, is_async: bool) -> Any:
    async def acreate(**kwargs: Any) -> ChatCompletion:
        return REPLY

    client.chat.completions.create = acreate if is_async else (lambda **kwargs: REPLY)
    return client


def _clients(is_async: bool) -> tuple[Any, Any]:
    """A bare stubbed client, and an evicting one (a real openai call, mock transport);
    the chain's clients stubbed too."""
    for endpoint in endpoints(PROVIDERS):
        _stubbed(endpoint.async_client() if is_async else endpoint.sync_client(), is_async)
    kind = openai.AsyncOpenAI if is_async else openai.OpenAI
    bare = _stubbed(kind(api_key="k", base_url="http://x.invalid/v1"), is_async)
    evict = (mock_async_client if is_async else mock_client)("evict.invalid")
    return bare, evict


def _extra(stats: dict[str, Stats]) -> dict[str, float]:
    return {name: s.cost_over(stats["bare"]) for name, s in stats.items() if name != "bare"}


def measure_sync(calls: int, cold: bool = True) -> dict[str, float]:
    """Extra µs over the bare stubbed call, per contender, sync."""
    bare, evict = _clients(False)

    @with_fallback(*PROVIDERS)
    def decorated(client: Any = None) -> Any:
        return chat(client)

    with fallback_clients(*PROVIDERS) as proxy:
        for client in [proxy.__wrapped__, *(e.sync_client() for e in proxy._self_chain.endpoints)]:
            _stubbed(client, False)
        contenders: dict[str, Callable[[], Any]] = {
            "bare": lambda: chat(bare),
            "naive loop": naive(bare, bare),
            "tenacity": tenacity_fallback(bare, bare),
            "@with_fallback": decorated,
            "fallback_clients() proxy": lambda: chat(proxy),
        }
        before = (lambda: chat(evict)) if cold else None
        return _extra(interleave(contenders, calls, before=before))


def measure_async(calls: int, cold: bool = True) -> dict[str, float]:
    """:func:`measure_sync`, async (in a loop of its own)."""

    async def main() -> dict[str, float]:
        bare, evict = _clients(True)

        @with_fallback(*PROVIDERS)
        async def decorated(client: Any = None) -> Any:
            return await chat(client)

        async with fallback_clients(*PROVIDERS) as proxy:
            chain = proxy._self_chain.endpoints
            for client in [proxy.__wrapped__, *(e.async_client() for e in chain)]:
                _stubbed(client, True)
            contenders: dict[str, Callable[[], Any]] = {
                "bare": lambda: chat(bare),
                "naive loop": anaive(bare, bare),
                "tenacity": atenacity_fallback(bare, bare),
                "@with_fallback": decorated,
                "fallback_clients() proxy": lambda: chat(proxy),
            }
            before = (lambda: chat(evict)) if cold else None
            return _extra(await ainterleave(contenders, calls, before=before))

    return asyncio.run(main())


class _NoScope:
    def set(self, value: Any) -> None:
        return None

    def reset(self, token: Any) -> None:
        pass


@contextlib.contextmanager
def _replaced(owner: Any, name: str, value: Any) -> Iterator[None]:
    old = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, old)


def _handed(chain: Chain) -> Callable[[Any], Any]:
    """A ``Chain.ready`` that checks and counts nothing: it hands out the tracked client."""
    key = chain.head.key
    return lambda current: (
        chain.handed_out(chain.head.sync_client(), chain.head_scope),
        None,
        key,
        None,
        _UNCOUNTED,
    )


def _raw(chain: Chain) -> Callable[[Any], Any]:
    """A ``Chain.ready`` that hands out the client itself, untracked."""
    key = chain.head.key
    return lambda current: (chain.head.sync_client(), None, key, None, _UNCOUNTED)


_UNCOUNTED = (None, None, Tally(""), 0.0)  # (the stub never fails: nothing is taken back)


# What each knock-out removes from @with_fallback's healthy path (the call stays valid:
# the stub answers whatever client it is given).
KNOCKOUTS: dict[str, Callable[[], contextlib.AbstractContextManager[None]]] = {
    "nothing": contextlib.nullcontext,
    "the scope's context variable": lambda: _replaced(failover._scope, "SCOPE", _NoScope()),
    "the admission and its counts (Chain.ready)": lambda: _replaced(
        failover._chain, "_readiness", _handed
    ),
    "the admission and the tracked client": lambda: _replaced(failover._chain, "_readiness", _raw),
}


def knockouts(calls: int) -> dict[str, float]:
    """@with_fallback's cold extra µs (sync) with each piece knocked out in turn."""
    costs = {}
    for name, knock in KNOCKOUTS.items():
        with knock():
            costs[name] = measure_sync(calls)["@with_fallback"]
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=2500, help="turns per contender")
    calls = parser.parse_args().calls
    logging.getLogger("failover").setLevel(logging.ERROR)
    for flavour, measure in (("sync", measure_sync), ("async", measure_async)):
        hot, cold = measure(calls, cold=False), measure(calls)
        print(f"{flavour}: extra µs over the bare stubbed call, hot / cold")
        for name in hot:
            print(f"  {name:28s} {hot[name]:+7.1f} / {cold[name]:+7.1f}")
    costs = knockouts(calls)
    print("@with_fallback (sync), cold, with one piece knocked out: what the piece costs")
    for name, cost in costs.items():
        print(f"  without {name:46s} {cost:+7.1f}   (the piece: {costs['nothing'] - cost:+.1f})")


if __name__ == "__main__":
    main()
