"""3. Concurrent async calls with the primary failing every other request: success rate,
throughput against bare, and no socket growth across bursts."""

from __future__ import annotations

import asyncio
from typing import Any

import openai
from _fixtures import Context, chat, client_sockets, provider
from _report import Row
from _timing import Stats, burst

from failover import with_fallback
from failover._health import STORE


def run(ctx: Context) -> None:
    report, flaky, backup, n = ctx.report, ctx.flaky, ctx.backup, ctx.sizes.concurrent
    ports = {flaky.port, backup.port}

    @with_fallback(provider(flaky), provider(backup))
    async def decorated(client: Any = None) -> Any:
        return await chat(client)

    async def main() -> dict[str, Any]:
        STORE.clear()
        bare = backup.async_client()
        base_wall, base_lat, _ = await burst(lambda: chat(bare), n)
        await bare.close()
        before = client_sockets(ports)
        wall, lat, results = await burst(decorated, n)
        after_first = client_sockets(ports)
        wall2, lat2, results2 = await burst(decorated, n)
        after_second = client_sockets(ports)
        replies = results + results2
        ok = [r for r in replies if not isinstance(r, BaseException)]
        served = {
            name: sum(1 for r in ok if r.choices[0].message.content.startswith(f"[{name}]"))
            for name in ("flaky", "backup")
        }
        return {
            "baseline_wall_s": base_wall,
            "baseline_p99_s": Stats.of(base_lat).p99,
            "wall_s": min(wall, wall2),
            "p99_s": Stats.of(lat + lat2).p99,
            "median_s": Stats.of(lat + lat2).median,
            "success_rate": 100 * len(ok) / len(replies),
            "errors": sorted({type(r).__name__ for r in replies if isinstance(r, BaseException)}),
            "served": served,
            "sockets_before": before,
            "sockets_after_burst_1": after_first,
            "sockets_after_burst_2": after_second,
        }

    r = asyncio.run(main())
    report.extra["concurrent"] = r
    section = f"3 {n} concurrent async calls, primary failing every other request"
    report.add(
        Row(
            section,
            "bare openai, healthy (throughput)",
            n / r["baseline_wall_s"],
            None,
            unit="calls/s",
            ratio=1.0,
            note=f"p99 {r['baseline_p99_s'] * 1000:.0f} ms",
        )
    )
    throughput = n / r["wall_s"]
    report.add(
        Row(
            section,
            "@with_fallback (throughput)",
            throughput,
            None,
            unit="calls/s",
            ratio=throughput / (n / r["baseline_wall_s"]),
            note=f"median {r['median_s'] * 1000:.0f} ms, p99 {r['p99_s'] * 1000:.0f} ms, "
            f"served {r['served']}",
        )
    )
    report.add(
        Row(
            section,
            "@with_fallback success rate",
            r["success_rate"],
            None,
            unit="%",
            target="100 %",
            met=r["success_rate"] == 100,
            note=", ".join(r["errors"]),
        )
    )
    # The pools keep up to 100 idle connections per client (openai's default): what
    # counts is that a second burst leaves no more sockets than the first, or than the
    # two pools may keep (a first burst that finished early may have filled them less).
    kept = len(ports) * openai.DEFAULT_CONNECTION_LIMITS.max_keepalive_connections
    ceiling = max(r["sockets_after_burst_1"] + max(10, n // 20), kept)
    leak = r["sockets_after_burst_2"] > ceiling
    report.add(
        Row(
            section,
            "open sockets before / after burst 1 / after burst 2",
            None,
            None,
            target="no growth",
            met=not leak,
            note=f"{r['sockets_before']} / {r['sockets_after_burst_1']} / "
            f"{r['sockets_after_burst_2']}",
        )
    )
    report.check(
        f"concurrent success rate 100 % ({r['success_rate']:.1f} %)", r["success_rate"] == 100
    )
    report.check("no socket leak across concurrent bursts", not leak)
