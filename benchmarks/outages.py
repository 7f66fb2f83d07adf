"""2. The primary down: refused, 503 or hanging, against a naive loop and tenacity; and
the latency of one failover after a 503."""

from __future__ import annotations

from typing import Any

import openai
from _fixtures import Context, chat, free_port, naive, provider, tenacity_fallback
from _report import Report, Row
from _timing import Stats, interleave, sequential_totals

from failover import Provider, with_fallback
from failover._health import STORE
from failover.testing import FakeProvider


def bench_primary_down(
    report: Report, comet: FakeProvider, backup: FakeProvider, calls: int, hang_baseline: int
) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    faults: dict[str, tuple[str, float]] = {
        "connection refused": (dead, 2.0),
        "503": (comet.base_url, 2.0),
        "hang, 1 s timeout": (comet.base_url, 20.0),
    }
    for fault, (url, target) in faults.items():
        STORE.clear()
        comet.recover()
        if fault == "503":
            comet.fail(503)
        hang = fault.startswith("hang")
        if hang:
            comet.hang(3)
        timeout: dict[str, Any] = {"timeout": 1.0} if hang else {}
        gateway = openai.OpenAI(base_url=url, api_key=comet.api_key, max_retries=0, **timeout)
        fallback = backup.client(**timeout)
        primary = Provider(comet.name, base_url=url, api_key=comet.api_key)

        @with_fallback(primary, provider(backup), attempt_timeout=1.0 if hang else None)
        def decorated(client: Any = None) -> Any:
            return chat(client)

        baselines = {
            "naive loop": naive(gateway, fallback),
            "tenacity fallback": tenacity_fallback(gateway, fallback),
        }
        if hang:
            # The breaker's cooldown runs on the wall clock: interleaved with the
            # baselines' 1 s calls, failover's 200 calls would stretch over minutes
            # and pay for probes that a 3 s run never makes. So it runs alone first,
            # and the baselines (each call alike: 1 s, then the fallback) are
            # extrapolated from ``hang_baseline`` calls.
            times = sequential_totals({"@with_fallback": decorated}, {"@with_fallback": calls})
            times.update(sequential_totals(baselines, dict.fromkeys(baselines, hang_baseline)))
        else:
            contenders = {**baselines, "@with_fallback": decorated}
            times = sequential_totals(contenders, dict.fromkeys(contenders, calls))
        gateway.close()
        fallback.close()
        section = f"2 primary down ({fault}), {calls} sequential calls: total"
        totals = {name: sum(t) * calls / len(t) for name, t in times.items()}
        naive_total = totals["naive loop"]
        for name, per_call in times.items():
            speedup = naive_total / totals[name]
            row = Row(section, name, totals[name], Stats.of(per_call).p99, unit="s")
            row.ratio = totals[name] / naive_total
            notes = [f"{speedup:.1f}x faster than naive"] if name != "naive loop" else []
            if len(per_call) != calls:
                notes.append(f"extrapolated from {len(per_call)} calls")
            row.note = "; ".join(notes)
            if name == "@with_fallback":
                row.target = f"≥ {target:.0f}x faster than naive"
                row.met = speedup >= target
                report.extra.setdefault("speedup_vs_naive", {})[fault] = speedup
            report.add(row)
        if hang:
            speedup = report.extra["speedup_vs_naive"][fault]
            report.check(
                f"hanging primary: @with_fallback ≥ 5x faster than naive ({speedup:.1f}x)",
                speedup >= 5,
            )
    comet.recover()


def bench_failover_latency(
    report: Report, comet: FakeProvider, backup: FakeProvider, n: int
) -> None:
    """What failing over after a 503 costs beyond the failed call and the second call."""
    STORE.clear()
    comet.fail(503)
    gateway, fallback = comet.client(), backup.client()

    def failing() -> None:
        try:
            chat(gateway)
        except openai.APIStatusError:
            pass

    @with_fallback(provider(comet), provider(backup), breaker=None)
    def decorated(client: Any = None) -> Any:
        return chat(client)

    stats = interleave(
        {
            "503 call alone": failing,
            "second call alone": lambda: chat(fallback),
            "naive loop": naive(gateway, fallback),
            "@with_fallback (no breaker)": decorated,
        },
        n,
    )
    comet.recover()
    gateway.close()
    fallback.close()
    parts = stats["503 call alone"].median + stats["second call alone"].median
    section = "2d failover latency after a 503 (per call)"
    for name, s in stats.items():
        row = report.add(Row(section, name, s.median, s.p99, ratio=s.median / parts))
        if name in ("naive loop", "@with_fallback (no breaker)"):
            beyond = s.median - parts
            row.note = f"{beyond:+.0f} µs beyond 503 call + second call"
            if name.startswith("@"):
                row.target = "≤ 1000 µs beyond"
                row.met = beyond <= 1000
                report.extra["failover_latency_beyond_us"] = beyond


def primary_down(ctx: Context) -> None:
    sizes = ctx.sizes
    bench_primary_down(ctx.report, ctx.comet, ctx.backup, sizes.sequential, sizes.hang_baseline)


def failover_latency(ctx: Context) -> None:
    bench_failover_latency(ctx.report, ctx.comet, ctx.backup, ctx.sizes.per_call)
