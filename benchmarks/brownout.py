"""Brownout: a primary that fails 30 % of its attempts, the failure-rate breaker on and off.

    python benchmarks/brownout.py              # 300 calls of each (about 100 s: hangs)
    python benchmarks/brownout.py --calls 60   # a shorter run

The failures are spread evenly (3 of every 10 attempts, never two in a row), the
pattern a brownout shows under load, where other callers' successes land between
the failures: the consecutive-failures rule never opens on it, only the rate rule
can. Each scenario runs sequential calls through ``@with_fallback`` with the
defaults, against ``FakeProvider`` over real HTTP on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable
from typing import Any

from _report import Row

from failover import Breaker, Event, Provider, with_fallback
from failover._health import STORE
from failover.testing import FakeProvider, _Fault

PATTERN = (True, False, False, True, False, False, True, False, False, False)
MESSAGES: list[Any] = [{"role": "user", "content": "hello"}]
HANG = _Fault("hang", seconds=3.0)  # cut short by the 1 s attempt timeout
FAST_503 = _Fault("fail", 503)


class BrownoutFake(FakeProvider):
    """Fails attempt ``i`` with ``fault`` when ``PATTERN[i % 10]``."""

    def __init__(self, name: str, fault: _Fault) -> None:
        super().__init__(name)
        self.fault = fault
        self.count = 0

    def _take_fault(self) -> _Fault:
        with self._lock:
            failing = PATTERN[self.count % len(PATTERN)]
            self.count += 1
        return self.fault if failing else super()._take_fault()


def run_calls(
    fault: _Fault, backup: FakeProvider, calls: int, breaker: Breaker
) -> tuple[float, float]:
    """Total seconds of ``calls`` sequential calls, and the share that paid a failed attempt."""
    STORE.clear()
    events: list[Event] = []
    with BrownoutFake("primary", fault) as primary:
        fakes = (primary, backup)
        chain = [Provider(f.name, base_url=f.base_url, api_key=f.api_key) for f in fakes]

        @with_fallback(*chain, breaker=breaker, attempt_timeout=1.0, on_attempt=events.append)
        def ask(client: Any = None) -> Any:
            return client.chat.completions.create(model="m", messages=MESSAGES)

        paid = 0
        started = time.perf_counter()
        for _ in range(calls):
            events.clear()
            ask()
            paid += any(e.outcome == "failure" for e in events)
        total = time.perf_counter() - started
    STORE.clear()
    return total, paid / calls


def measure(calls: int = 300) -> dict[str, float]:
    """The brownout figures: totals with hangs, shares with fast 503s, rate rule on and off."""
    on, off = Breaker(), Breaker(failure_rate=None)
    with FakeProvider("backup") as backup:
        hang_on, _ = run_calls(HANG, backup, calls, on)
        hang_off, _ = run_calls(HANG, backup, calls, off)
        fast_on, share_on = run_calls(FAST_503, backup, calls, on)
        fast_off, share_off = run_calls(FAST_503, backup, calls, off)
    return {
        "calls": calls,
        "hang_total_on_s": hang_on,
        "hang_total_off_s": hang_off,
        "hang_speedup": hang_off / hang_on,
        "fast_503_total_on_s": fast_on,
        "fast_503_total_off_s": fast_off,
        "fast_503_paid_share_on": share_on,
        "fast_503_paid_share_off": share_off,
    }


def bench(report: Any, row: Callable[..., Any], calls: int = 300) -> None:
    """Add the brownout rows to ``benchmarks/run.py``'s report."""
    r = measure(calls)
    report.extra["brownout"] = r
    section = f"4a brownout, 30 % of primary attempts hang (1 s timeout), {calls} calls: total"
    speedup = r["hang_speedup"]
    report.add(row(section, "rate rule off", r["hang_total_off_s"], None, unit="s", ratio=1.0))
    report.add(
        row(
            section,
            "rate rule on (default)",
            r["hang_total_on_s"],
            None,
            unit="s",
            ratio=r["hang_total_on_s"] / r["hang_total_off_s"],
            target="≥ 5x faster",
            met=speedup >= 5,
            note=f"{speedup:.1f}x faster",
        )
    )
    section = f"4b brownout, 30 % of primary attempts fast 503s, {calls} calls: paid a failure"
    for name, key in (("rate rule off", "off"), ("rate rule on (default)", "on")):
        share = r[f"fast_503_paid_share_{key}"] * 100
        total = r[f"fast_503_total_{key}_s"]
        report.add(row(section, name, share, None, unit="%", note=f"total {total:.2f} s"))


def run(ctx: Any) -> None:
    """The section of ``benchmarks/run.py`` (its full runs only: real hangs are slow)."""
    bench(ctx.report, Row)


def main() -> None:
    logging.getLogger("failover").setLevel(logging.ERROR)  # the figures say it all
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=300)
    r = measure(parser.parse_args().calls)
    print(f"brownout, {r['calls']:.0f} sequential calls, 30 % of primary attempts failing")
    print(
        f"  hangs (1 s timeout): rate rule off {r['hang_total_off_s']:.2f} s, "
        f"on {r['hang_total_on_s']:.2f} s: {r['hang_speedup']:.1f}x faster (target >= 5x)"
    )
    print(
        f"  fast 503s: calls that paid a failed attempt, off {r['fast_503_paid_share_off']:.1%}, "
        f"on {r['fast_503_paid_share_on']:.1%}"
    )


if __name__ == "__main__":
    main()
