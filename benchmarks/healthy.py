"""1. The healthy path over loopback: what each form adds to a bare call that succeeds.

Beside failover's forms: the loop a user writes by hand over two clients, and tenacity
and stamina driving the same fallback. Every contender calls the same two clients
(failover's forms are given them, as a user passes their own), so that the wrapper is
all that differs, not a connection or a client's state. Each cost is the median of
per-round paired differences to the bare call, over ``sizes.rounds`` rounds (their
range in the note).
"""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Callable
from typing import Any

from _fixtures import (
    Context,
    anaive,
    astamina_fallback,
    atenacity_fallback,
    chat,
    connections_opened,
    forms_async,
    forms_sync,
    naive,
    provider,
    stamina_fallback,
    tenacity_fallback,
)
from _report import Report, Row
from _timing import Cost, Stats, ainterleave, burst, interleave, shuffles

from failover._health import STORE

BARE = "bare openai"
# Issue 16's budgets, µs over the bare call: a target to meet, not a --check.
BUDGETS = {
    "@with_fallback": 10.0,
    "fallback_clients() proxy": 15.0,
    "failover.OpenAI": 15.0,
    "failover.AsyncOpenAI": 15.0,
}
GUARDED = ("@with_fallback", "fallback_clients() proxy")  # --check: ≤ 2x bare
BURST = 200


def _rows(report: Report, section: str, rounds: list[dict[str, Stats]], flavour: str) -> None:
    base = rounds[-1][BARE]
    costs = report.extra.setdefault("healthy_extra_us", {}).setdefault(flavour, {})
    for name, s in rounds[-1].items():
        row = report.add(Row(section, name, s.median, s.p99, ratio=s.median / base.median))
        if name == BARE:
            continue
        cost = Cost.of(rounds, name, BARE)
        costs[name] = {"median": cost.median, "low": cost.low, "high": cost.high}
        row.note = f"extra {cost.spread()}"
        budget = BUDGETS.get(name)
        if budget is not None:
            row.target = f"≤ {budget:.0f} µs extra"
            row.met = cost.median <= budget
    for name in GUARDED:
        report.check(
            f"{flavour} {name} ≤ 2x bare over loopback", rounds[-1][name].median < 2 * base.median
        )


def run(ctx: Context) -> None:
    """The per-call table, sync then async."""
    comet, backup, n = ctx.comet, ctx.backup, ctx.sizes.per_call
    label = f"(server: {ctx.server})"
    STORE.clear()
    bare, spare = comet.client(), backup.client()
    forms, close = forms_sync(bare, spare)  # the same clients: the wrapper is the difference
    contenders: dict[str, Callable[[], object]] = {
        BARE: lambda: chat(bare),
        "naive loop": naive(bare, spare),
        "tenacity": tenacity_fallback(bare, spare),
        "stamina": stamina_fallback(bare, spare),
        **forms,
    }
    rounds = [interleave(contenders, n) for _ in range(ctx.sizes.rounds)]
    close()
    bare.close()
    spare.close()
    _rows(ctx.report, f"1a healthy, loopback, sync {label}", rounds, "sync")

    async def run_async() -> list[dict[str, Stats]]:
        STORE.clear()
        bare, spare = comet.async_client(), backup.async_client()
        forms, close = await forms_async(bare, spare)
        contenders = {
            BARE: lambda: chat(bare),
            "naive loop": anaive(bare, spare),
            "tenacity": atenacity_fallback(bare, spare),
            "stamina": astamina_fallback(bare, spare),
            **forms,
        }
        rounds = [await ainterleave(contenders, n) for _ in range(ctx.sizes.rounds)]
        await close()
        await bare.close()
        await spare.close()
        return rounds

    rounds = asyncio.run(run_async())
    _rows(ctx.report, f"1b healthy, loopback, async {label}", rounds, "async")


def throughput(ctx: Context) -> None:
    """``BURST`` concurrent healthy async calls: each form's throughput against bare."""
    comet, backup = ctx.comet, ctx.backup
    rounds = 3 * ctx.sizes.rounds

    async def main() -> tuple[dict[str, list[float]], set[str]]:
        STORE.clear()
        bare, spare = comet.async_client(), backup.async_client()
        forms, close = await forms_async(bare, spare)
        del forms["block form"]
        contenders: dict[str, Callable[[], Any]] = {BARE: lambda: chat(bare), **forms}
        for fn in contenders.values():
            await burst(fn, BURST)  # warm: each pool opens its connections
        walls: dict[str, list[float]] = {name: [] for name in contenders}
        errors: set[str] = set()
        for order in shuffles(list(contenders), rounds):
            for name in order:
                wall, _, results = await burst(contenders[name], BURST)
                walls[name].append(wall)
                errors.update(type(r).__name__ for r in results if isinstance(r, BaseException))
        await close()
        await bare.close()
        await spare.close()
        return walls, errors

    walls, errors = asyncio.run(main())
    section = f"1c {BURST} concurrent async calls, healthy (server: {ctx.server}): throughput"
    ratios = ctx.report.extra.setdefault("healthy_throughput_ratio", {})
    for name, times in walls.items():
        # Per round, against the bare burst of the same round.
        per_round = [b / w for b, w in zip(walls[BARE], times, strict=True)]
        ratio = statistics.median(per_round)
        per_s = BURST / statistics.median(times)
        row = ctx.report.add(Row(section, name, per_s, None, unit="calls/s", ratio=ratio))
        if name == BARE:
            continue
        ratios[name] = ratio
        row.target, row.met = "≥ 0.99x bare", ratio >= 0.99
        row.note = f"rounds {min(per_round):.3f}x to {max(per_round):.3f}x"
        if name == "@with_fallback":
            ctx.report.check(f"healthy burst: {name} ≥ 0.5x bare throughput", ratio >= 0.5)
    ctx.report.check(f"healthy bursts without errors ({', '.join(errors) or 'none'})", not errors)


def connections(ctx: Context, calls: int = 20) -> None:
    """New TCP connections per call of each form: none once warm means no client per call."""
    comet, backup = ctx.comet, ctx.backup
    STORE.clear()
    ports = {comet.port, backup.port}
    bare = comet.client()
    forms, close = forms_sync(provider(comet), provider(backup))
    result = {}
    for name, fn in {BARE: lambda: chat(bare), **forms}.items():
        fn()  # warm: the first call opens the pool's connection
        before = connections_opened(ports)
        for _ in range(calls):
            fn()
        result[name] = (connections_opened(ports) - before) / calls
    close()
    bare.close()
    ctx.report.extra["new_connections_per_call"] = result
    for name, per_call in result.items():
        ctx.report.add(
            Row(
                "1d new TCP connections per call (sync, warm)",
                name,
                None,
                None,
                target="0 (no client per call)",
                met=per_call < 0.05,
                note=f"{per_call:.2f} per call",
            )
        )
        if name in GUARDED:
            ctx.report.check(f"{name} opens no connection per call", per_call < 0.05)
