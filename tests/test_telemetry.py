"""Observability: OpenTelemetry spans and metrics (SDK in-memory exporter and reader),
the rolling last-minute view of ``health()`` and the frequent-switching alarm."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import MESSAGES, NO_BREAKER, provider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from test_engine import HOW, asker, call, run_async

import failover
from failover import Breaker, FailoverError, Provider, Retry, StreamInterrupted, fallback_clients
from failover._activity import ACTIVITY
from failover._chain import Chain
from failover._providers import endpoints
from failover._telemetry import Observer, Traced, observe
from failover.testing import FakeProvider

MODEL = "gpt-4o-mini"


class Telemetry:
    """Where failover's spans and metrics went during a test."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    @property
    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def call(self) -> ReadableSpan:
        (span,) = [s for s in self.spans if not s.name.startswith(("failover attempt", "app"))]
        return span

    def attempts(self) -> list[ReadableSpan]:
        found = [s for s in self.spans if s.name.startswith("failover attempt")]
        return sorted(found, key=lambda s: s.attributes["failover.attempt"])  # type: ignore[index]

    def points(self, name: str) -> dict[tuple[tuple[str, Any], ...], Any]:
        """Each data point of the metric ``name``: value (sum, count or gauge) by attributes."""
        data = self.reader.get_metrics_data()
        found: dict[tuple[tuple[str, Any], ...], Any] = {}
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name != name:
                        continue
                    for point in metric.data.data_points:
                        key = tuple(sorted(point.attributes.items()))
                        found[key] = getattr(point, "count", None) or point.value  # type: ignore[union-attr]
        return found


@pytest.fixture
def otel() -> Iterator[Telemetry]:
    telemetry = Telemetry()
    failover.configure(
        tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider
    )
    yield telemetry
    failover.configure(tracer_provider=None, meter_provider=None)
    telemetry.meter_provider.shutdown()


def key(**attributes: Any) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted((f"failover.{k}", v) for k, v in attributes.items()))


def expected_name(how: str) -> str:
    form, mode = how.split("-")
    if form == "decorator":
        return f"failover asker.<locals>.{'aask' if mode == 'async' else 'ask'}"
    return "failover chat.completions.create" if form == "proxy" else "failover block"


def in_app_span(otel: Telemetry, fn: Any) -> tuple[Any, ReadableSpan]:
    """``fn()`` inside an app span of its own; what it returned, and that span."""
    with otel.tracer_provider.get_tracer("app").start_as_current_span("app"):
        result = fn()
    (app,) = [s for s in otel.spans if s.name == "app"]
    return result, app


# -- traces --------------------------------------------------------------------------------


@pytest.mark.parametrize("how", HOW)
def test_a_healthy_call_is_a_call_span_with_one_attempt_span(
    otel: Telemetry, chain: tuple[Provider, Provider], comet: FakeProvider, how: str
) -> None:
    answer, app = in_app_span(otel, lambda: call(chain, how, **NO_BREAKER))
    assert answer == "[comet] hello"
    span = otel.call()
    assert span.name == expected_name(how)
    assert span.parent is not None
    assert span.parent.span_id == app.context.span_id
    assert span.attributes["failover.served_by"] == "comet"
    assert span.attributes["failover.failed_over"] is False
    (attempt,) = otel.attempts()
    assert attempt.parent is not None
    assert attempt.parent.span_id == span.context.span_id
    assert attempt.name == "failover attempt comet"
    assert attempt.attributes["failover.outcome"] == "success"
    assert attempt.attributes["failover.provider"] == "comet"
    assert attempt.attributes["server.address"] == "127.0.0.1"
    assert attempt.attributes["server.port"] == comet.port
    assert attempt.status.status_code is StatusCode.UNSET
    assert otel.points("failover.attempts") == {key(provider="comet", outcome="success"): 1}
    assert otel.points("failover.attempt.duration") == {key(provider="comet", outcome="success"): 1}
    assert otel.points("failover.call.duration") == {key(outcome="success", failed_over=False): 1}


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_the_drop_in_sets_the_genai_attributes(
    otel: Telemetry, fake_provider: Any, backup: FakeProvider, mode: str
) -> None:
    mapped = provider(fake_provider("comet"), models={MODEL: "comet-mini"})
    call((mapped, provider(backup)), f"proxy-{mode}", **NO_BREAKER)
    assert otel.call().attributes["gen_ai.operation.name"] == "chat"
    (attempt,) = otel.attempts()
    assert attempt.attributes["gen_ai.operation.name"] == "chat"
    assert attempt.attributes["gen_ai.request.model"] == "comet-mini"  # what comet received
    assert attempt.attributes["gen_ai.response.model"] == "comet-mini"
    assert attempt.attributes["gen_ai.usage.input_tokens"] > 0
    assert attempt.attributes["gen_ai.usage.output_tokens"] > 0


def _texts(span: ReadableSpan) -> str:
    """Everything a span says, as text."""
    parts = [str(span.attributes), str(span.status.description)]
    parts += [f"{e.name} {e.attributes}" for e in span.events]
    return " ".join(parts)


@pytest.mark.parametrize("how", HOW)
def test_a_failover_is_a_failed_attempt_then_a_served_one(
    otel: Telemetry, chain: tuple[Provider, Provider], comet: FakeProvider, how: str
) -> None:
    comet.fail(503)
    assert call(chain, how, **NO_BREAKER) == "[backup] hello"
    span = otel.call()
    assert span.attributes["failover.failed_over"] is True
    assert span.attributes["failover.served_by"] == "backup"
    assert span.attributes["failover.attempts"] == 2
    assert span.status.status_code is StatusCode.UNSET
    failed, served = otel.attempts()
    assert (failed.attributes["failover.provider"], served.attributes["failover.provider"]) == (
        "comet",
        "backup",
    )
    assert failed.attributes["failover.outcome"] == "failure"
    assert failed.attributes["error.type"] == "503"
    assert failed.status.status_code is StatusCode.ERROR
    (event,) = failed.events
    assert event.name == "exception"
    assert event.attributes["exception.type"] == "openai.InternalServerError"
    assert event.attributes["exception.message"] == "InternalServerError 503"
    assert comet.api_key not in _texts(failed)
    assert "hello" not in _texts(failed)
    assert served.attributes["failover.outcome"] == "success"
    assert served.attributes["failover.attempt"] == 2
    assert otel.points("failover.attempts") == {
        key(provider="comet", outcome="failure"): 1,
        key(provider="backup", outcome="success"): 1,
    }
    assert otel.points("failover.failovers") == {key(**{"from": "comet", "to": "backup"}): 1}
    assert otel.points("failover.call.duration") == {key(outcome="success", failed_over=True): 1}


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("how", HOW)
def test_a_skipped_provider_is_a_zero_length_span(
    otel: Telemetry, chain: tuple[Provider, Provider], comet: FakeProvider, how: str
) -> None:
    comet.fail(503)
    breaker = Breaker(failures=1, cooldown=30, clock=Clock())
    assert call(chain, how, breaker=breaker, retry=None) == "[backup] hello"
    assert otel.points("failover.breaker.transitions") == {
        key(provider="comet", **{"breaker.state": "open", "breaker.reason": "consecutive"}): 1
    }
    otel.exporter.clear()
    assert call(chain, how, breaker=breaker, retry=None) == "[backup] hello"
    skipped, served = otel.attempts()
    assert skipped.attributes["failover.outcome"] == "skipped"
    assert skipped.attributes["failover.skip_reason"] == "circuit open"
    assert skipped.attributes["failover.breaker.state"] == "open"
    assert skipped.start_time == skipped.end_time
    assert served.attributes["failover.breaker.state"] == "closed"
    assert otel.call().attributes["failover.failed_over"] is True
    assert otel.points("failover.attempts")[key(provider="comet", outcome="skipped")] == 1
    gauge = otel.points("failover.breaker.state")
    assert gauge[key(provider="comet", **{"breaker.state": "open"})] == 1
    assert gauge[key(provider="comet", **{"breaker.state": "closed"})] == 0


@pytest.mark.parametrize("how", HOW)
def test_a_retry_is_a_second_attempt_span_on_the_same_provider(
    otel: Telemetry, chain: tuple[Provider, Provider], comet: FakeProvider, how: str
) -> None:
    comet.fail(503, times=1)
    assert call(chain, how, breaker=None, retry=Retry(backoff=0.01)) == "[comet] hello"
    retried, served = otel.attempts()
    assert retried.attributes["failover.provider"] == served.attributes["failover.provider"]
    assert retried.attributes["failover.outcome"] == "retry"
    assert retried.status.status_code is StatusCode.ERROR
    assert served.attributes["failover.outcome"] == "success"
    assert otel.call().attributes["failover.failed_over"] is False
    assert otel.points("failover.failovers") == {}


@pytest.mark.parametrize("how", HOW)
def test_both_providers_failing_is_an_error_call_span(
    otel: Telemetry,
    chain: tuple[Provider, Provider],
    comet: FakeProvider,
    backup: FakeProvider,
    how: str,
) -> None:
    comet.fail(503)
    backup.fail(500)
    with pytest.raises(FailoverError):
        call(chain, how, **NO_BREAKER)
    span = otel.call()
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == "failover._errors.FailoverError"
    assert "failover.served_by" not in span.attributes
    assert [a.attributes["error.type"] for a in otel.attempts()] == ["503", "500"]
    assert all(a.end_time <= span.end_time for a in otel.attempts())  # type: ignore[operator]
    assert otel.points("failover.call.duration") == {key(outcome="failure", failed_over=True): 1}


# -- streams -------------------------------------------------------------------------------


def test_a_stream_attempt_span_ends_with_the_stream(
    otel: Telemetry, chain: tuple[Provider, Provider]
) -> None:
    with fallback_clients(*chain, **NO_BREAKER) as client:
        stream = client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
        next(stream)
        assert otel.spans == []  # the answer is still coming: its spans are open
        list(stream)
    (attempt,) = otel.attempts()
    assert attempt.attributes["failover.outcome"] == "success"
    assert attempt.attributes["failover.time_to_first_chunk"] > 0
    assert [e.name for e in attempt.events] == ["failover.first_chunk"]
    assert otel.call().end_time >= attempt.end_time  # type: ignore[operator]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_stream_cut_mid_answer_ends_its_attempt_span_in_error(
    otel: Telemetry, fake_provider: Any, backup: FakeProvider, mode: str
) -> None:
    cutting = fake_provider("cutting")
    cutting.cut_stream(after=3)
    chain = (provider(cutting), provider(backup))

    async def read_async() -> None:
        async with fallback_clients(*chain, **NO_BREAKER) as client:
            stream = await client.chat.completions.create(
                model=MODEL, messages=MESSAGES, stream=True
            )
            async for _ in stream:
                pass

    def read() -> None:
        with fallback_clients(*chain, **NO_BREAKER) as client:
            list(client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True))

    with pytest.raises(StreamInterrupted):
        asyncio.run(read_async()) if mode == "async" else read()
    (attempt,) = otel.attempts()
    assert attempt.attributes["failover.provider"] == "cutting"
    assert attempt.attributes["failover.outcome"] == "failure"
    assert attempt.status.status_code is StatusCode.ERROR
    assert "failover.time_to_first_chunk" in attempt.attributes
    assert otel.call().end_time >= attempt.end_time  # type: ignore[operator]


def test_a_generator_stream_cut_mid_answer_is_a_failed_attempt(
    otel: Telemetry, fake_provider: Any, backup: FakeProvider
) -> None:
    cutting = fake_provider("cutting")
    cutting.cut_stream(after=3)

    @failover.with_fallback(provider(cutting), provider(backup), **NO_BREAKER)
    def chunks(client: Any = None) -> Iterator[str]:
        for chunk in client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True):
            yield chunk.choices[0].delta.content or "" if chunk.choices else ""

    with pytest.raises(StreamInterrupted):
        list(chunks())
    (attempt,) = otel.attempts()
    assert attempt.attributes["failover.outcome"] == "failure"
    assert otel.call().status.status_code is StatusCode.ERROR


# -- hedging -------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["decorator", "proxy"])
def test_hedged_attempt_spans_overlap(
    otel: Telemetry, chain: tuple[Provider, Provider], comet: FakeProvider, form: str
) -> None:
    comet.hang(3)
    answer = asyncio.run(run_async(chain, form, asker("async"), {"hedge": 0.1, **NO_BREAKER}))
    assert answer == "[backup] hello"
    slow, fast = otel.attempts()
    assert slow.start_time < fast.start_time < slow.end_time  # type: ignore[operator]
    assert slow.attributes["failover.outcome"] == "cancelled"
    assert fast.attributes["failover.outcome"] == "success"
    span = otel.call()
    assert span.attributes["failover.served_by"] == "backup"
    assert span.end_time >= slow.end_time  # type: ignore[operator]


# -- without an SDK ------------------------------------------------------------------------


def test_without_an_sdk_calls_are_not_traced(chain: tuple[Provider, Provider]) -> None:
    # The global providers of this process are the API's placeholders: nothing records.
    plain = Chain(endpoints(chain)).settings.store
    assert type(observe(plain, "call")) is Observer
    failover.configure(tracer_provider=TracerProvider())
    try:
        assert isinstance(observe(plain, "call"), Traced)
    finally:
        failover.configure(tracer_provider=None)
    assert type(observe(plain, "call")) is Observer


# -- the last minute, and the alarm ---------------------------------------------------------


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    now = Clock()
    monkeypatch.setattr(ACTIVITY, "clock", now)
    return now


@pytest.mark.parametrize("how", HOW)
def test_health_shows_the_last_minute(
    chain: tuple[Provider, Provider], comet: FakeProvider, clock: Clock, how: str
) -> None:
    breaker = Breaker(failures=2, cooldown=30, clock=clock)
    comet.fail(503, times=2)
    for _ in range(4):
        assert call(chain, how, breaker=breaker, retry=None).startswith("[")
    # comet failed twice (and opened), then was skipped twice; backup served all four.
    view = failover.health()
    assert view["comet"]["last_minute"] == {
        "calls": 2,
        "failures": 2,
        "skips": 2,
        "served": 0.0,
        "failover_rate": 1.0,
    }
    assert view["backup"]["last_minute"]["served"] == 1.0
    clock.now += 66  # out of the window
    assert failover.health()["comet"]["last_minute"]["calls"] == 0


@pytest.mark.parametrize("how", ["decorator-sync", "proxy-async", "block-sync"])
def test_a_provider_failing_often_raises_one_alarm_a_minute(
    chain: tuple[Provider, Provider],
    comet: FakeProvider,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
    how: str,
) -> None:
    caplog.set_level(logging.WARNING, logger="failover")

    def alarms() -> list[str]:
        return [r.getMessage() for r in caplog.records if "in the last minute" in r.getMessage()]

    comet.fail(503, times=4)
    for _ in range(6):  # 4 of comet's 6 attempts fail: 67 %
        call(chain, how, **NO_BREAKER)
    assert alarms() == []  # below ALERT_MIN_CALLS failing attempts it said nothing...
    comet.fail(503)
    call(chain, how, **NO_BREAKER)
    (alarm,) = alarms()  # ...then once, naming the provider, its rate and the traffic lost
    assert alarm.startswith("failover: comet failed 71% of its 7 attempts in the last minute")
    assert alarm.endswith("71% of the calls that reached it went elsewhere")
    for _ in range(3):
        call(chain, how, **NO_BREAKER)
    assert len(alarms()) == 1  # at most once a minute
    clock.now += 61
    for _ in range(5):
        call(chain, how, **NO_BREAKER)
    assert len(alarms()) == 2


def test_the_alarm_can_be_turned_off(
    chain: tuple[Provider, Provider],
    comet: FakeProvider,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    comet.fail(503)
    failover.configure(alert_failure_rate=None)
    try:
        for _ in range(6):
            call(chain, "decorator-sync", **NO_BREAKER)
    finally:
        failover.configure(alert_failure_rate=0.2)
    assert not [r for r in caplog.records if "in the last minute" in r.getMessage()]
    with pytest.raises(ValueError, match="alert_failure_rate"):
        failover.configure(alert_failure_rate=1.5)


@pytest.mark.parametrize("how", [h for h in HOW if not h.startswith("proxy")])
def test_the_decorator_and_block_form_set_the_genai_attributes(
    otel: Telemetry, fake_provider: Any, backup: FakeProvider, how: str
) -> None:
    mapped = provider(fake_provider("comet"), models={MODEL: "comet-mini"})
    call((mapped, provider(backup)), how, **NO_BREAKER)
    (attempt,) = otel.attempts()
    assert attempt.attributes["gen_ai.operation.name"] == "chat"
    assert attempt.attributes["gen_ai.request.model"] == "comet-mini"  # what comet received
    assert attempt.attributes["gen_ai.response.model"] == "comet-mini"
    assert attempt.attributes["gen_ai.usage.input_tokens"] > 0
