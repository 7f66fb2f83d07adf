"""Telemetry's cost on the healthy path: without OpenTelemetry, with the API and no SDK,
with the SDK and an in-memory exporter, beside the openai instrumentation's own cost.

    python benchmarks/telemetry.py           # about a minute
    python benchmarks/telemetry.py --quick   # fewer rounds

Every state is set up before each batch of calls (outside the timing), the states
taking turns, so that one process measures them all with the same noise: the
"no OpenTelemetry" state hides the imported package from ``sys.modules``, which is
all failover looks at. Costs are medians of per-round differences to a baseline.
The openai instrumentation rows need ``opentelemetry-instrumentation-openai-v2``.
"""

from __future__ import annotations

import argparse
import gc
import logging
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from _fixtures import chat as _chat
from _fixtures import mock_client
from _report import Report, Row
from _timing import Stats
from imports import import_cost

from failover import _telemetry, with_fallback

State = Callable[[], None]


def _rounds(
    contenders: dict[str, tuple[State, Callable[[], Any]]], n: int, batch: int
) -> dict[str, Stats]:
    """Per-call µs of each contender, its state set up before each of its batches."""
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for setup, fn in contenders.values():  # warm up, in each state
        setup()
        for _ in range(batch):
            fn()
    gc.collect()
    clock = time.perf_counter_ns
    names = list(contenders)
    for i in range(n):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            setup, fn = contenders[name]
            setup()
            t0 = clock()
            for _ in range(batch):
                fn()
            samples[name].append((clock() - t0) / 1000 / batch)
    return {name: Stats.of(s) for name, s in samples.items()}


class States:
    """The telemetry states the contenders run in."""

    def __init__(self) -> None:
        # The API imported: the app "uses" OpenTelemetry.
        import opentelemetry.metrics
        import opentelemetry.trace  # noqa: F401
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        self.package = sys.modules["opentelemetry"]
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
        _telemetry.configure(
            tracer_provider=self.tracer_provider, meter_provider=self.meter_provider
        )
        self.sdk = _telemetry._resolve()  # built once: the states swap it in and out
        _telemetry.configure(tracer_provider=None, meter_provider=None)
        self.instrumentor: Any = None
        try:
            from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

            self.instrumentor = OpenAIInstrumentor()
        except ImportError:
            pass
        self._instrumented = False

    def _set(self, imported: bool, sdk: bool, instrumented: bool = False) -> None:
        self.exporter.clear()  # spans pile up otherwise
        if imported:
            sys.modules["opentelemetry"] = self.package
        else:
            sys.modules.pop("opentelemetry", None)
        _telemetry._OTEL = self.sdk if sdk else None
        if instrumented != self._instrumented:
            if instrumented:
                self.instrumentor.instrument(tracer_provider=self.tracer_provider)
            else:
                self.instrumentor.uninstrument()
            self._instrumented = instrumented

    def none(self) -> None:
        self._set(imported=False, sdk=False)

    def api(self) -> None:
        self._set(imported=True, sdk=False)

    def with_sdk(self) -> None:
        self._set(imported=True, sdk=True)

    def openai_v2(self) -> None:
        self._set(imported=True, sdk=False, instrumented=True)

    def both(self) -> None:
        self._set(imported=True, sdk=True, instrumented=True)


def measure(rounds: int) -> dict[str, Any]:
    states = States()
    primary, backup = mock_client("primary"), mock_client("backup")

    def body(client: Any = primary) -> Any:
        return client

    def chat(client: Any = primary) -> Any:
        return _chat(client)

    empty, around = with_fallback(primary, backup)(body), with_fallback(primary, backup)(chat)
    results: dict[str, Any] = {}
    stats = _rounds(
        {
            "undecorated": (states.none, body),
            "no OpenTelemetry": (states.none, empty),
            "API, no SDK": (states.api, empty),
            "SDK, in-memory exporter": (states.with_sdk, empty),
        },
        rounds,
        batch=200,
    )
    results["empty body"] = {name: s.cost_over(stats["undecorated"]) for name, s in stats.items()}
    contenders = {
        "bare openai": (states.none, lambda: _chat(primary)),
        "@with_fallback, no OpenTelemetry": (states.none, around),
        "@with_fallback, SDK": (states.with_sdk, around),
    }
    if states.instrumentor is not None:
        contenders["bare openai, openai-v2 instrumentation, SDK"] = (
            states.openai_v2,
            lambda: _chat(primary),
        )
        contenders["@with_fallback, SDK, and openai-v2"] = (states.both, around)
    stats = _rounds(contenders, rounds, batch=20)
    base = stats["bare openai"]
    results["mock-transport call"] = {name: s.cost_over(base) for name, s in stats.items()}
    results["bare call us"] = base.median
    states.none()
    sys.modules["opentelemetry"] = states.package
    results["import"] = import_cost(7)
    check = "import sys, openai, failover; print(any('opentelemetry' in m for m in sys.modules))"
    imported = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, check=True
    )
    results["imports opentelemetry"] = imported.stdout.strip() == "True"
    return results


def bench(report: Report, row: type[Row], rounds: int = 200) -> None:
    """Add the telemetry rows to ``benchmarks/run.py``'s report."""
    r = measure(rounds)
    report.extra["telemetry"] = r
    for section, costs in (
        ("6a telemetry, empty body", r["empty body"]),
        ("6b telemetry, mock-transport call", r["mock-transport call"]),
    ):
        for name, cost in costs.items():
            report.add(row(section, name, cost, None, note="cost over the first row"))
    report.add(
        row(
            "6c import failover beyond openai (extra installed)",
            "failover",
            r["import"]["beyond_openai_ms"],
            None,
            unit="ms",
        )
    )


def main() -> None:
    logging.getLogger("failover").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    args = parser.parse_args()
    r = measure(40 if args.quick else 200)
    for section in ("empty body", "mock-transport call"):
        print(f"{section} (µs per call, median of paired differences to the first row):")
        for name, cost in r[section].items():
            print(f"  {name:48} {cost:+8.2f}")
    print(f"bare mock-transport call: {r['bare call us']:.1f} µs")
    imported = r["import"]
    print(f"import failover beyond openai: {imported['beyond_openai_ms']:.1f} ms")
    print(f"  by package (ms): {imported['by_package_ms']}")
    print(f"opentelemetry imported by `import failover`: {r['imports opentelemetry']}")


def run(ctx: Any) -> None:
    """The section of ``benchmarks/run.py``."""
    bench(ctx.report, Row)


if __name__ == "__main__":
    main()
