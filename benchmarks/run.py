"""Benchmarks: failover against a bare ``openai`` call, a naive loop, tenacity and stamina.

    python benchmarks/run.py                   # the full run (several minutes: hangs are slow)
    python benchmarks/run.py --quick           # fewer iterations
    python benchmarks/run.py --quick --check   # the CI regression guard (ratios only)
    python benchmarks/run.py --server process  # the fake provider in a child process
    python benchmarks/run.py --json out.json   # every measured number, as JSON

Every scenario runs against ``failover.testing.FakeProvider`` over real HTTP on
127.0.0.1, in this process (``--server thread``, the default) or in a child process
(``--server process``: the client's timings then carry no GIL hand-off from the
server). Contenders are interleaved call by call (in a shuffled order), so that noise
hits them alike; results are medians, p99 and ratios to each scenario's baseline.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import logging
import os
import sys
import time
from dataclasses import dataclass

# The sections are modules beside this file, whether it runs as a script or is imported.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import openai
from _fixtures import FULL, QUICK, Context, Sizes, fakes
from _report import Report

import failover
from failover._health import STORE


@dataclass(frozen=True)
class Section:
    """A scenario of ``--only``: ``function(ctx)`` of ``benchmarks/<module>.py``."""

    name: str
    module: str
    function: str = "run"
    full_only: bool = False  # not in --quick (real hangs, long waits)


# In running order. A new section is one line here (and its module's ``run(ctx)``).
SECTIONS = (
    Section("healthy", "healthy"),
    Section("throughput", "healthy", "throughput"),
    Section("connections", "healthy", "connections"),
    Section("wrapper", "wrapper"),
    Section("down", "outages", "primary_down"),
    Section("latency", "outages", "failover_latency"),
    Section("concurrent", "concurrency"),
    Section("streaming", "streaming"),
    Section("import", "imports"),
    Section("shared", "shared_health"),
    Section("brownout", "brownout", full_only=True),
    Section("recovery", "recovery", full_only=True),
    Section("ownership", "ownership", full_only=True),
    Section("telemetry", "telemetry", full_only=True),
)


def run(sizes: Sizes, only: set[str] | None = None, server: str = "thread") -> Report:
    logging.getLogger("failover").setLevel(logging.ERROR)
    report = Report()
    report.extra["sizes"] = dataclasses.asdict(sizes)
    report.extra["server"] = server
    report.extra["versions"] = {
        "python": sys.version.split()[0],
        "openai": openai.__version__,
        "failover": failover.__version__,
    }
    chosen = [
        s
        for s in SECTIONS
        if (only is None or s.name in only) and (sizes == FULL or not s.full_only)
    ]
    with fakes(server) as (comet, backup, flaky):
        ctx = Context(report, sizes, server, comet, backup, flaky)
        for section in chosen:
            STORE.clear()  # the breaker is process-wide: every section starts fresh
            getattr(importlib.import_module(section.module), section.function)(ctx)
    STORE.clear()
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer iterations (CI)")
    parser.add_argument("--check", action="store_true", help="exit 1 on a gross regression")
    parser.add_argument("--json", metavar="FILE", help="write every measured number here")
    parser.add_argument(
        "--only", nargs="+", choices=[s.name for s in SECTIONS], help="run only these scenarios"
    )
    parser.add_argument(
        "--server",
        choices=("thread", "process"),
        default="thread",
        help="where the fake provider runs: in this process (default) or a child process",
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    only = set(args.only) if args.only else None
    report = run(QUICK if args.quick else FULL, only, args.server)
    report.extra["elapsed_s"] = time.perf_counter() - started
    report.print()
    mode = "quick" if args.quick else "full"
    print(f"\n{mode} run, server {args.server}: {report.extra['elapsed_s']:.1f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report.as_json(), f, indent=2, default=str)
    if args.check and not all(ok for _, ok in report.checks):
        print("benchmark regression check FAILED", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
