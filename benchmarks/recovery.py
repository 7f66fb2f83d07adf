"""Recovery: how soon traffic returns to a primary that was down, and what one transient
500 costs.

    python benchmarks/recovery.py

- recovery: the primary answers 503 for 60 s, then is healthy; one call per second.
  Time is simulated (the breaker's clock is injected and moved on one second per
  call), so the run takes a second, not minutes; the requests are real HTTP.
- transient 500: the primary fails one request; the retry serves it. The extra
  latency against a healthy call is compared with the jittered backoff drawn.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from typing import Any

from _report import Row

from failover import Breaker, Provider, Retry, with_fallback
from failover._health import STORE
from failover.testing import FakeProvider

MESSAGES: list[Any] = [{"role": "user", "content": "hello"}]
OUTAGE = 60  # seconds the primary is down
RUN = 90  # seconds simulated, one call each


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def chain(primary: FakeProvider, backup: FakeProvider) -> list[Provider]:
    return [Provider(f.name, base_url=f.base_url, api_key=f.api_key) for f in (primary, backup)]


def _answer(client: Any) -> str:
    reply = client.chat.completions.create(model="m", messages=MESSAGES)
    return str(reply.choices[0].message.content)


def measure_recovery(primary: FakeProvider, backup: FakeProvider) -> dict[str, float]:
    """Seconds from recovery to the primary serving again, and its requests meanwhile."""
    STORE.clear()
    clock = Clock()

    @with_fallback(*chain(primary, backup), breaker=Breaker(clock=clock))
    def ask(client: Any = None) -> str:
        return _answer(client)

    primary.fail(503)
    start, during, back = clock.now, 0, None
    sent = len(primary.requests)
    for second in range(RUN):
        if second == OUTAGE:
            primary.recover()
            during = len(primary.requests) - sent
        if ask().startswith(f"[{primary.name}]") and back is None and second >= OUTAGE:
            back = clock.now - start - OUTAGE
        clock.now += 1.0
    STORE.clear()
    return {
        "seconds_to_primary": back if back is not None else float("inf"),
        "primary_requests_during_outage": during,
    }


def measure_transient(primary: FakeProvider, backup: FakeProvider, n: int) -> dict[str, float]:
    """Median extra latency of a call whose first try got a 500, and of the backoff drawn."""
    STORE.clear()
    drawn: list[float] = []
    retry = Retry()

    def jitter() -> float:
        drawn.append(retry.random())
        return drawn[-1]

    @with_fallback(*chain(primary, backup), retry=Retry(random=jitter))
    def ask(client: Any = None) -> str:
        return _answer(client)

    healthy, transient, served = [], [], 0
    for _ in range(n):
        STORE.clear()  # each round is one transient fault, not a run of them
        started = time.perf_counter()
        ask()
        healthy.append(time.perf_counter() - started)
        primary.fail(500, times=1)
        started = time.perf_counter()
        served += ask().startswith(f"[{primary.name}]")
        transient.append(time.perf_counter() - started)
    STORE.clear()
    backoff = [d * retry.backoff for d in drawn]
    extra = [t - h for t, h in zip(transient, healthy, strict=True)]
    return {
        "served_by_primary": served / n,
        "extra_latency_ms": statistics.median(extra) * 1000,
        "backoff_ms": statistics.median(backoff) * 1000,
        "beyond_backoff_ms": statistics.median(e - b for e, b in zip(extra, backoff, strict=True))
        * 1000,
    }


def measure(n: int = 30) -> dict[str, float]:
    with FakeProvider("primary") as primary, FakeProvider("backup") as backup:
        return {**measure_recovery(primary, backup), **measure_transient(primary, backup, n)}


def bench(report: Any, row: Callable[..., Any], n: int = 30) -> None:
    """Add the recovery rows to ``benchmarks/run.py``'s report."""
    r = measure(n)
    report.extra["recovery"] = r
    section = f"4c recovery: primary down {OUTAGE} s (503), one call a second (simulated time)"
    back, sent = r["seconds_to_primary"], r["primary_requests_during_outage"]
    report.add(
        row(section, "recovery to primary", back, None, unit="s", target="≤ 10 s", met=back <= 10)
    )
    report.add(
        row(
            section,
            "primary requests in outage",
            sent,
            None,
            unit="",
            target="≤ 15",
            met=sent <= 15,
        )
    )
    section = f"4d one transient 500, {n} calls (median)"
    note = f"backoff drawn {r['backoff_ms']:.0f} ms; beyond it {r['beyond_backoff_ms']:+.1f} ms"
    served = r["served_by_primary"] * 100
    report.add(row(section, "extra latency", r["extra_latency_ms"], None, unit="ms", note=note))
    report.add(row(section, "served by the primary", served, None, unit="%", met=served == 100))


def run(ctx: Any) -> None:
    """The section of ``benchmarks/run.py`` (its full runs only)."""
    bench(ctx.report, Row)


def main() -> None:
    logging.getLogger("failover").setLevel(logging.ERROR)  # the figures say it all
    r = measure()
    print(f"recovery: primary down {OUTAGE} s (fast 503s), one call per second, simulated time")
    print(f"  seconds from recovery to the primary serving again: {r['seconds_to_primary']:.0f}")
    print(f"  primary requests during the outage: {r['primary_requests_during_outage']:.0f}")
    print("one transient 500 (median of 30 calls):")
    print(f"  served by the primary after the retry: {r['served_by_primary']:.0%}")
    print(
        f"  extra latency {r['extra_latency_ms']:.1f} ms, of which the jittered backoff "
        f"{r['backoff_ms']:.1f} ms (beyond it {r['beyond_backoff_ms']:+.1f} ms)"
    )


if __name__ == "__main__":
    main()
