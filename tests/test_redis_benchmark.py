"""Smoke test of benchmarks/shared_health.py: with a few iterations, its four figures come
out (never asserts speed: the benchmarks' ``--check`` guards the gross regressions)."""

from __future__ import annotations

import dataclasses
import importlib
import math
import shutil

import pytest
from test_benchmarks import BENCHMARKS, load


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
def test_shared_health_section_measures_its_four_figures() -> None:
    runner = load(BENCHMARKS / "run.py", "failover_benchmarks_run")  # benchmarks/ on sys.path
    fixtures = importlib.import_module("_fixtures")
    section = importlib.import_module("shared_health")
    with fixtures.fakes("thread") as running:
        sizes = dataclasses.replace(fixtures.QUICK, per_call=3, concurrent=10)
        ctx = fixtures.Context(runner.Report(), sizes, "thread", *running)
        section.run(ctx)
    figures = ctx.report.extra["shared_health"]
    assert math.isfinite(figures["healthy_ratio"])
    assert figures["healthy_ratio"] > 0
    assert figures["round_trips_per_call"] >= 0
    assert set(figures["loop_lag"]) == {"bare openai", *section.STORES}
    assert figures["propagation_us"]["p99"] > 0
    assert [name for name, _ in ctx.report.checks] == [
        "shared health: healthy call ≤ 1.5x in-process",
        "shared health: no round trip per healthy call",
    ]
