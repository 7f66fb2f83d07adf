"""Ownership: what looking for resource ids in a request costs on the healthy path.

    python benchmarks/ownership.py

A chat with a 50-message history goes through the drop-in client to a healthy fake
provider over real HTTP, interleaved: with nothing remembered (requests are not
scanned at all) and with ids remembered (every request is scanned for ids). Also
the scan on its own, in process. Prints the cost ratio against no scan.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from typing import Any

from failover import Provider, fallback_clients
from failover._ownership import MEMORY, Owner, ids_in
from failover.testing import FakeProvider

HISTORY: list[Any] = [
    {"role": "user" if i % 2 else "assistant", "content": f"turn {i}: " + "words " * 20}
    for i in range(50)
]


def _scan_us(n: int) -> float:
    """Median µs of one scan of the 50-message chat's arguments."""
    kwargs = {"model": "m", "messages": HISTORY}
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        for _ in range(100):
            ids_in((), kwargs)
        samples.append((time.perf_counter() - started) / 100 * 1e6)
    return statistics.median(samples)


def _timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return (time.perf_counter() - started) * 1e6


def measure(n: int = 300) -> dict[str, float]:
    with FakeProvider("comet") as comet, FakeProvider("backup") as backup:
        chain = [Provider(f.name, base_url=f.base_url, api_key=f.api_key) for f in (comet, backup)]
        with fallback_clients(*chain, breaker=None, retry=None) as client:

            def chat() -> object:
                return client.chat.completions.create(model="m", messages=HISTORY)

            plain, scanned = [], []
            for _ in range(20):  # warm up connections and caches
                chat()
            for i in range(n):
                for known in (i % 2 == 0, i % 2 == 1):  # interleaved, order rotating
                    MEMORY.clear()
                    if known:
                        MEMORY.remember(["file-elsewhere"], Owner("nowhere", "other"))
                    (scanned if known else plain).append(_timed(chat))
    MEMORY.clear()
    no_scan, scan = statistics.median(plain), statistics.median(scanned)
    return {
        "no_scan_us": no_scan,
        "scan_us": scan,
        "ratio": scan / no_scan,
        "scan_alone_us": _scan_us(max(10, n // 10)),
    }


def bench(report: Any, row: Callable[..., Any], n: int = 300) -> None:
    """Add the ownership rows to ``benchmarks/run.py``'s report."""
    r = measure(n)
    report.extra["ownership"] = r
    section = "4e ownership: a 50-message chat, drop-in, healthy (median)"
    report.add(row(section, "nothing remembered (no scan)", r["no_scan_us"], None, ratio=1.0))
    report.add(
        row(
            section,
            "ids remembered (scanned)",
            r["scan_us"],
            None,
            ratio=r["ratio"],
            target="≤ 1.05x",
            met=r["ratio"] <= 1.05,
            note=f"the scan alone: {r['scan_alone_us']:.1f} µs",
        )
    )


def main() -> None:
    logging.getLogger("failover").setLevel(logging.ERROR)
    r = measure()
    print("ownership: a chat with a 50-message history, drop-in client, healthy provider")
    print(f"  nothing remembered (not scanned): {r['no_scan_us']:.0f} µs per call (median)")
    print(f"  ids remembered (scanned):         {r['scan_us']:.0f} µs per call (median)")
    print(f"  cost ratio against no scan: {r['ratio']:.3f}x")
    print(f"  the scan alone: {r['scan_alone_us']:.1f} µs")


if __name__ == "__main__":
    main()


def run(ctx: Any) -> None:
    """The section of ``benchmarks/run.py``."""
    from _report import Row

    bench(ctx.report, Row)
