"""Smoke test of benchmarks/run.py: one scenario, a few iterations, a ratio comes out.

Never asserts speed: the benchmarks' own ``--check`` guards against regressions.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest

RUN_PY = Path(__file__).resolve().parent.parent / "benchmarks" / "run.py"


def load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through it
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load(RUN_PY, "failover_benchmarks_run")


def test_healthy_scenario_produces_ratios(bench: ModuleType) -> None:
    report = bench.Report()
    with bench.fakes() as (comet, backup):
        bench.bench_healthy(report, comet, backup, 3)
    ratios = {row.contender: row.ratio for row in report.rows if row.section.startswith("1a")}
    assert set(ratios) >= {"bare openai", "@with_fallback", "fallback_clients() proxy"}
    assert ratios["bare openai"] == 1.0
    assert all(math.isfinite(r) and r > 0 for r in ratios.values())


def test_recovery_and_brownout_scenarios_produce_figures(bench: ModuleType) -> None:
    report = bench.Report()
    load(RUN_PY.with_name("recovery.py"), "failover_benchmarks_recovery").bench(
        report, bench.Row, n=2
    )
    load(RUN_PY.with_name("brownout.py"), "failover_benchmarks_brownout").bench(
        report, bench.Row, calls=2
    )
    figures = {row.contender: row.median for row in report.rows}
    assert {"recovery to primary", "primary requests in outage", "extra latency"} <= set(figures)
    assert {"rate rule off", "rate rule on (default)"} <= set(figures)
    assert all(math.isfinite(value) and value >= 0 for value in figures.values())
