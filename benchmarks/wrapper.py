"""1e-1h. The wrapper alone: around a call on a mock transport, and around an empty body.

No network: the openai client runs on an ``httpx2.MockTransport``, so what is left is
the wrappers' own instructions (and their cache effects) against tenacity and stamina.
"""

from __future__ import annotations

import asyncio
from typing import Any

import openai
import tenacity
from _fixtures import (
    Context,
    chat,
    forms_async,
    forms_sync,
    mock_async_client,
    mock_client,
    stamina_retry,
    tenacity_retry,
)
from _report import Report, Row
from _timing import Stats, ainterleave, interleave

from failover import with_fallback
from failover._health import STORE

WRAPPER_BATCH = 20
EMPTY_BATCH = 200


def _wrapper_rows(
    report: Report, section: str, stats: dict[str, Stats], budget: float | None, base: str
) -> None:
    """Rows of wrapper costs; ``budget`` µs is the target where one applies, else ≤ tenacity.

    Paired differences, not differences of medians: a few µs of cost under ~600 µs of
    client work is only visible once the slow drifts of a shared machine cancel. Even
    so, every wrapper around a real client call pays some tens of µs of cache effects
    that the bare call does not, so the absolute target is checked on an empty body.
    """
    reference = stats[base]
    cost = {name: s.cost_over(reference) for name, s in stats.items()}
    report.extra.setdefault("wrapper_cost_us", {})[section] = cost
    for name, s in stats.items():
        ratio = s.median / reference.median
        row = report.add(Row(section, name, s.median, s.p99, ratio=ratio))
        if name == base:
            continue
        row.note = f"cost {cost[name]:+.2f} µs"
        if name in ("@with_fallback", "fallback_clients() proxy"):
            within = budget is None or cost[name] <= budget
            row.target = f"≤ {budget:.0f} µs, ≤ tenacity" if budget else "≤ tenacity (+5 %)"
            row.met = within and cost[name] <= cost["tenacity"] * 1.05 + 0.5


def bench_empty_body(report: Report, n: int) -> None:
    """The wrapper's own cost: an empty body (it only returns the injected client)."""
    STORE.clear()
    primary, backup = mock_client("primary"), mock_client("backup")

    def body(client: Any = primary) -> Any:
        return client

    contenders = {
        "undecorated": body,
        "@with_fallback": with_fallback(primary, backup)(body),
        "tenacity": tenacity_retry(body),
        "stamina": stamina_retry(body),
    }
    stats = interleave(contenders, n, batch=EMPTY_BATCH)
    _wrapper_rows(report, "1g wrapper alone (empty body), sync", stats, 5, "undecorated")

    async def run_async() -> dict[str, Stats]:
        primary, backup = mock_async_client("primary"), mock_async_client("backup")

        async def body(client: Any = primary) -> Any:
            return client

        contenders = {
            "undecorated": body,
            "@with_fallback": with_fallback(primary, backup)(body),
            "tenacity": tenacity.retry(stop=tenacity.stop_after_attempt(2), reraise=True)(body),
            "stamina": stamina_retry(body),
        }
        return await ainterleave(contenders, n, batch=EMPTY_BATCH)

    stats = asyncio.run(run_async())
    _wrapper_rows(report, "1h wrapper alone (empty body), async", stats, 10, "undecorated")


def bench_wrapper(report: Report, n: int) -> None:
    STORE.clear()
    bare = mock_client("primary")
    forms, close = forms_sync(bare, mock_client("backup"))
    contenders = {
        "bare openai": lambda: chat(bare),
        **forms,
        "tenacity": tenacity_retry(lambda: chat(bare)),
        "stamina": stamina_retry(lambda: chat(bare)),
    }
    stats = interleave(contenders, n, batch=WRAPPER_BATCH)
    _wrapper_rows(
        report, "1e wrapper around a mock-transport call, sync", stats, None, "bare openai"
    )
    close()

    async def run_async() -> dict[str, Stats]:
        STORE.clear()
        bare = mock_async_client("primary")
        forms, close = await forms_async(bare, mock_async_client("backup"))

        @tenacity.retry(
            stop=tenacity.stop_after_attempt(2),
            retry=tenacity.retry_if_exception_type(openai.APIError),
            reraise=True,
        )
        async def with_tenacity() -> Any:
            return await chat(bare)

        async def call() -> Any:
            return await chat(bare)

        contenders = {
            "bare openai": call,
            **forms,
            "tenacity": with_tenacity,
            "stamina": stamina_retry(call),
        }
        stats = await ainterleave(contenders, n, batch=WRAPPER_BATCH)
        await close()
        return stats

    stats = asyncio.run(run_async())
    _wrapper_rows(
        report, "1f wrapper around a mock-transport call, async", stats, None, "bare openai"
    )


def run(ctx: Context) -> None:
    bench_wrapper(ctx.report, ctx.sizes.in_memory // WRAPPER_BATCH)
    bench_empty_body(ctx.report, ctx.sizes.in_memory // 10)
