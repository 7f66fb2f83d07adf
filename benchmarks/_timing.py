"""The one timing helper of the benchmarks: interleaved per-call times and their statistics.

Contenders take turns call by call (in a new shuffled order each turn), so that the
slow drifts of a shared machine hit them alike; costs are medians of per-round differences.
"""

from __future__ import annotations

import asyncio
import gc
import math
import random
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any


@dataclass
class Stats:
    n: int
    median: float  # µs (per call), or s for totals
    p99: float
    samples: tuple[float, ...] = ()  # in measuring order: round i of every contender aligns

    @classmethod
    def of(cls, samples: list[float]) -> Stats:
        ordered = sorted(samples)
        p99 = ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]
        return cls(len(ordered), statistics.median(ordered), p99, tuple(samples))

    def cost_over(self, base: Stats) -> float:
        """Median of per-round differences: drifts that hit both sides of a round cancel."""
        return statistics.median(a - b for a, b in zip(self.samples, base.samples, strict=True))


def shuffles(names: list[str], n: int, seed: int = 16) -> Iterator[list[str]]:
    """``n`` orders of ``names``, each a seeded shuffle: no contender always follows the
    same one (what runs just before a call, and what it left in the caches, varies)."""
    rng = random.Random(seed)
    order = list(names)
    for _ in range(n):
        rng.shuffle(order)
        yield list(order)


def interleave(
    contenders: dict[str, Callable[[], object]],
    n: int,
    warmup: int = 5,
    batch: int = 1,
    before: Callable[[], object] | None = None,
) -> dict[str, Stats]:
    """Per-call times in µs, the contenders taking turns (``batch`` calls a turn);
    ``before`` runs ahead of each turn, untimed."""
    for fn in contenders.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    gc.collect()
    clock = time.perf_counter_ns
    for order in shuffles(list(contenders), n):
        for name in order:
            fn = contenders[name]
            if before is not None:
                before()
            t0 = clock()
            for _ in range(batch):
                fn()
            samples[name].append((clock() - t0) / 1000 / batch)
    return {name: Stats.of(s) for name, s in samples.items()}


async def ainterleave(
    contenders: dict[str, Callable[[], Awaitable[object]]],
    n: int,
    warmup: int = 5,
    batch: int = 1,
    before: Callable[[], Awaitable[object]] | None = None,
) -> dict[str, Stats]:
    """As :func:`interleave`, for coroutine functions (awaited one at a time)."""
    for fn in contenders.values():
        for _ in range(warmup):
            await fn()
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    gc.collect()
    clock = time.perf_counter_ns
    for order in shuffles(list(contenders), n):
        for name in order:
            fn = contenders[name]
            if before is not None:
                await before()
            t0 = clock()
            for _ in range(batch):
                await fn()
            samples[name].append((clock() - t0) / 1000 / batch)
    return {name: Stats.of(s) for name, s in samples.items()}


@dataclass(frozen=True)
class Cost:
    """A contender's extra µs per call over the baseline, over several rounds."""

    median: float  # of the rounds' paired costs
    low: float
    high: float
    stats: Stats  # of the last round

    @classmethod
    def of(cls, rounds: list[dict[str, Stats]], name: str, base: str) -> Cost:
        costs = [r[name].cost_over(r[base]) for r in rounds]
        return cls(statistics.median(costs), min(costs), max(costs), rounds[-1][name])

    def spread(self) -> str:
        return f"{self.median:+.1f} µs ({self.low:+.1f} to {self.high:+.1f})"


def sequential_totals(
    contenders: dict[str, Callable[[], object]], calls: dict[str, int]
) -> dict[str, list[float]]:
    """Each contender's per-call times (s) over ``calls[name]`` calls, interleaved."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for i, order in enumerate(shuffles(list(contenders), max(calls.values()))):
        for name in order:
            if i < calls[name]:
                t0 = time.perf_counter()
                contenders[name]()
                times[name].append(time.perf_counter() - t0)
    return times


async def burst(fn: Callable[[], Awaitable[Any]], n: int) -> tuple[float, list[float], list[Any]]:
    """``n`` concurrent calls of ``fn``: wall time (s), each call's latency, each result
    (or the exception it raised)."""

    async def timed() -> tuple[float, Any]:
        t0 = time.perf_counter()
        try:
            result = await fn()
        except Exception as exc:
            result = exc
        return time.perf_counter() - t0, result

    t0 = time.perf_counter()
    done = await asyncio.gather(*(timed() for _ in range(n)))
    return time.perf_counter() - t0, [d for d, _ in done], [r for _, r in done]
