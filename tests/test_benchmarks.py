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


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("failover_benchmarks_run", RUN_PY)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through it
    spec.loader.exec_module(module)
    return module


def test_healthy_scenario_produces_ratios(bench: ModuleType) -> None:
    report = bench.Report()
    with bench.fakes() as (comet, backup):
        bench.bench_healthy(report, comet, backup, 3)
    ratios = {row.contender: row.ratio for row in report.rows if row.section.startswith("1a")}
    assert set(ratios) >= {"bare openai", "@with_fallback", "fallback_clients() proxy"}
    assert ratios["bare openai"] == 1.0
    assert all(math.isfinite(r) and r > 0 for r in ratios.values())
