"""5. Streaming: time to the first chunk, through the drop-in against bare."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from _fixtures import MESSAGES, MODEL, Context, provider
from _timing import Stats, shuffles

from failover import fallback_clients
from failover._health import STORE


def _first_token_sync(client: Any) -> Callable[[], float]:
    def time_to_first() -> float:
        t0 = time.perf_counter_ns()
        stream = client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
        next(iter(stream))
        first = (time.perf_counter_ns() - t0) / 1000
        for _ in stream:
            pass
        return first

    return time_to_first


def run(ctx: Context) -> None:
    report, comet, backup, n = ctx.report, ctx.comet, ctx.backup, ctx.sizes.per_call
    STORE.clear()
    bare = comet.client()
    clients = fallback_clients(provider(comet), provider(backup))
    proxy = clients.__enter__()
    runs = {
        "bare openai": _first_token_sync(bare),
        "fallback_clients() proxy": _first_token_sync(proxy),
    }
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for order in shuffles(list(runs), n + 5):
        for name in order:
            samples[name].append(runs[name]())
    clients.__exit__(None, None, None)
    bare.close()
    stats = {name: Stats.of(s[5:]) for name, s in samples.items()}
    report.stats_rows(
        f"5 streaming: time to first chunk (sync, server: {ctx.server})",
        stats,
        "bare openai",
        {"fallback_clients() proxy": 1.03},
    )
