"""Smoke tests of benchmarks/: each section runs with a few iterations and figures come out.

Never asserts speed: the benchmarks' own ``--check`` guards against regressions.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import math
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import openai
import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


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
    # run.py puts benchmarks/ on sys.path: its sections import as plain modules after it.
    return load(BENCHMARKS / "run.py", "failover_benchmarks_run")


def context(bench: ModuleType, running: tuple[object, ...], server: str = "thread") -> object:
    """A run's context with a few iterations of everything."""
    fixtures = importlib.import_module("_fixtures")
    sizes = dataclasses.replace(fixtures.QUICK, per_call=3, rounds=2, concurrent=10)
    return fixtures.Context(bench.Report(), sizes, server, *running)


def test_every_section_names_an_entry_point(bench: ModuleType) -> None:
    for section in bench.SECTIONS:
        assert callable(getattr(importlib.import_module(section.module), section.function))
    assert len({s.name for s in bench.SECTIONS}) == len(bench.SECTIONS)


def test_healthy_table_has_every_contender_and_its_extra_cost(bench: ModuleType) -> None:
    fixtures, healthy = importlib.import_module("_fixtures"), importlib.import_module("healthy")
    with fixtures.fakes("thread") as running:
        ctx = context(bench, running)
        healthy.run(ctx)
    report = ctx.report  # type: ignore[attr-defined]
    for flavour, drop_in in (("sync", "failover.OpenAI"), ("async", "failover.AsyncOpenAI")):
        extra = report.extra["healthy_extra_us"][flavour]
        expected = {"naive loop", "tenacity", "stamina", "@with_fallback", drop_in}
        assert expected | {"fallback_clients() proxy"} <= set(extra)
        assert all(math.isfinite(c["median"]) for c in extra.values())
    ratios = {row.contender: row.ratio for row in report.rows if row.section.startswith("1a")}
    assert ratios["bare openai"] == 1.0
    assert all(math.isfinite(r) and r > 0 for r in ratios.values())


def test_healthy_throughput_in_a_child_process_server(bench: ModuleType) -> None:
    fixtures, healthy = importlib.import_module("_fixtures"), importlib.import_module("healthy")
    with fixtures.fakes("process") as running:
        ctx = context(bench, running, "process")
        healthy.throughput(ctx)
    ratios = ctx.report.extra["healthy_throughput_ratio"]  # type: ignore[attr-defined]
    assert {"@with_fallback", "fallback_clients() proxy", "failover.AsyncOpenAI"} <= set(ratios)
    # Whether every call of a 200-call burst succeeds is the benchmark guard's to check
    # (`run.py --quick --check`, in a process of its own): beside the suite's other
    # workers, a burst may meet a loaded machine's connection resets.


def test_process_server_takes_faults_and_is_torn_down() -> None:
    fixtures = importlib.import_module("_fixtures")
    with fixtures.fakes("process") as (comet, _, flaky):
        client = comet.client()
        comet.fail(503)
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
        comet.recover()
        reply = client.chat.completions.create(model="m", messages=[])
        assert reply.choices[0].message.content.startswith("[comet]")
        flaky_client = flaky.client()
        outcomes = []
        for _ in range(2):
            try:
                flaky_client.chat.completions.create(model="m", messages=[])
                outcomes.append("ok")
            except openai.InternalServerError:
                outcomes.append("500")
        assert outcomes == ["500", "ok"]
        client.close()
        flaky_client.close()
    with pytest.raises(openai.APIConnectionError):
        openai.OpenAI(base_url=comet.base_url, api_key="x", max_retries=0).models.list()


def test_recovery_and_brownout_scenarios_produce_figures(bench: ModuleType) -> None:
    report = bench.Report()
    row = importlib.import_module("_report").Row
    importlib.import_module("recovery").bench(report, row, n=2)
    importlib.import_module("brownout").bench(report, row, calls=2)
    figures = {row.contender: row.median for row in report.rows}
    assert {"recovery to primary", "primary requests in outage", "extra latency"} <= set(figures)
    assert {"rate rule off", "rate rule on (default)"} <= set(figures)
    assert all(math.isfinite(value) and value >= 0 for value in figures.values())


def test_profile_healthy_runs_and_prints_its_four_views() -> None:
    # In a process of its own, as it is run: it patches openai's create for its view 2.
    command = [sys.executable, str(BENCHMARKS / "profile_healthy.py"), "--server", "thread"]
    tiny = ["--calls", "10", "--rounds", "1", "--ops", "50"]
    done = subprocess.run(command + tiny, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    views = re.findall(r"^([1-4])\. ", done.stdout, flags=re.MULTILINE)
    assert views == ["1", "2", "3", "4"]
    forms = ["@with_fallback", "fallback_clients() proxy"]
    names = [f"{f} {flavour}" for flavour in ("sync", "async") for f in forms]
    names += ["failover.OpenAI sync", "failover.AsyncOpenAI async"]
    for view in done.stdout.split("\n\n")[1:]:
        assert all(name in view for name in names), view
    assert "Chain.ready():" in done.stdout  # view 2's piece
    assert "Chain.ready / lean / settle / served" in done.stdout  # view 3's count


def test_cold_path_prints_hot_and_cold_costs_and_each_knocked_out_piece() -> None:
    # In a process of its own, as it is run: it stubs the chain's clients and knocks
    # pieces of failover out while it measures.
    command = [sys.executable, str(BENCHMARKS / "cold_path.py"), "--calls", "5"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    for flavour in ("sync", "async"):
        assert f"{flavour}: extra µs over the bare stubbed call, hot / cold" in done.stdout
    rows = re.findall(r"^  (@with_fallback|fallback_clients\(\) proxy) ", done.stdout, re.M)
    assert rows == ["@with_fallback", "fallback_clients() proxy"] * 2
    cold_path = load(BENCHMARKS / "cold_path.py", "failover_benchmarks_cold_path")
    for piece in cold_path.KNOCKOUTS:
        assert f"without {piece}" in done.stdout
