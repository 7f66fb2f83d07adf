"""OpenTelemetry's openai instrumentation (opentelemetry-instrumentation-openai-v2) over
failover's clients, with the SDK's in-memory exporter.

openai is instrumented AFTER the failover client was built and used once, as happens
when an app sets up telemetry late, or a test patches openai.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

import failover
from failover import StreamInterrupted, StreamTruncated
from failover.testing import FakeProvider

from ._kit import MODEL, options, provider

pytest.importorskip("opentelemetry.sdk")
openai_v2 = pytest.importorskip("opentelemetry.instrumentation.openai_v2")
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)

MESSAGES = [{"role": "user", "content": "hello"}]
pytestmark = pytest.mark.parametrize("fault", ["503"])  # the primary answers 503


@pytest.fixture
def used(primary: FakeProvider, backup: FakeProvider) -> Iterator[tuple[Any, Any]]:
    """A sync and an async failover client, each used once before instrumentation."""
    sync = failover.OpenAI(provider(primary), provider(backup), **options())
    async_ = failover.AsyncOpenAI(provider(primary), provider(backup), **options())
    sync.chat.completions.create(model=MODEL, messages=MESSAGES)
    yield sync, async_
    sync.close()


@contextlib.contextmanager
def instrumented() -> Iterator[InMemorySpanExporter]:
    """openai instrumented, its spans exported in memory, until the end of the block."""
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    exporter.tracer_provider = tracer_provider  # type: ignore[attr-defined]
    instrumentor = openai_v2.OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider)
    try:
        yield exporter
    finally:
        instrumentor.uninstrument()


@pytest.fixture
def spans(used: tuple[Any, Any]) -> Iterator[InMemorySpanExporter]:
    with instrumented() as exporter:
        yield exporter


def chat_spans(exporter: InMemorySpanExporter) -> list[Any]:
    return [s for s in exporter.get_finished_spans() if s.name.startswith("chat")]


def test_failover_is_unchanged(used: tuple[Any, Any], spans: InMemorySpanExporter) -> None:
    client, _ = used
    reply = client.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert reply.choices[0].message.content == "[backup] hello"
    stream = client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == (
        "[backup] hello"
    )


@pytest.mark.asyncio
async def test_failover_is_unchanged_async(
    used: tuple[Any, Any], spans: InMemorySpanExporter
) -> None:
    _, client = used
    reply = await client.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert reply.choices[0].message.content == "[backup] hello"


def test_one_span_per_attempt(used: tuple[Any, Any], spans: InMemorySpanExporter) -> None:
    client, _ = used
    client.chat.completions.create(model=MODEL, messages=MESSAGES)
    recorded = chat_spans(spans)
    assert len(recorded) == 2  # the primary's 503, then the backup's answer
    assert [s.status.status_code.name for s in recorded] == ["ERROR", "UNSET"]


@pytest.mark.asyncio
async def test_one_span_per_attempt_async(used: tuple[Any, Any]) -> None:
    _, client = used
    await client.chat.completions.create(model=MODEL, messages=MESSAGES)  # used on this loop
    with instrumented() as spans:
        await client.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert len(chat_spans(spans)) == 2


def test_an_instrumented_stream_cut_midway_is_interrupted(
    fake_provider: Any, backup: FakeProvider, spans: InMemorySpanExporter
) -> None:
    cutting = fake_provider("cutting")
    cutting.cut_stream(after=3)
    with failover.OpenAI(provider(cutting), provider(backup), **options()) as client:
        stream = client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
        with pytest.raises(StreamInterrupted):
            list(stream)


def test_an_instrumented_stream_that_ends_silently_is_truncated(
    fake_provider: Any, backup: FakeProvider, spans: InMemorySpanExporter
) -> None:
    truncating = fake_provider("truncating")
    truncating.truncate_stream(after=3)
    with failover.OpenAI(provider(truncating), provider(backup), **options()) as client:
        stream = client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
        with pytest.raises(StreamTruncated):
            list(stream)


# -- with failover's own spans -----------------------------------------------------------


@pytest.fixture
def traced(used: tuple[Any, Any]) -> Iterator[InMemorySpanExporter]:
    """openai instrumented, and failover tracing, on one tracer provider."""
    with instrumented() as exporter:
        failover.configure(tracer_provider=exporter.tracer_provider)  # type: ignore[attr-defined]
        try:
            yield exporter
        finally:
            failover.configure(tracer_provider=None)


def check_parents(exporter: InMemorySpanExporter) -> None:
    """Each openai request span is the child of failover's span for its attempt."""
    finished = exporter.get_finished_spans()
    attempts = {s.context.span_id: s for s in finished if s.name.startswith("failover attempt")}
    (call,) = [s for s in finished if s.name == "failover chat.completions.create"]
    requests = chat_spans(exporter)
    assert len(requests) == len(attempts) == 2  # the primary's 503, the backup's answer
    for request in requests:
        assert request.parent is not None
        attempt = attempts[request.parent.span_id]
        assert attempt.parent is not None
        assert attempt.parent.span_id == call.context.span_id
        failed = request.status.status_code.name == "ERROR"
        assert attempt.attributes["failover.outcome"] == ("failure" if failed else "success")
    outcomes = [a.attributes["failover.outcome"] for a in attempts.values()]
    assert sorted(outcomes) == ["failure", "success"]  # type: ignore[type-var]


def test_openai_spans_are_children_of_the_attempt_spans(
    used: tuple[Any, Any], traced: InMemorySpanExporter
) -> None:
    client, _ = used
    client.chat.completions.create(model=MODEL, messages=MESSAGES)
    check_parents(traced)


@pytest.mark.asyncio
async def test_openai_spans_are_children_of_the_attempt_spans_async(
    used: tuple[Any, Any], traced: InMemorySpanExporter
) -> None:
    _, client = used
    await client.chat.completions.create(model=MODEL, messages=MESSAGES)
    check_parents(traced)


def test_an_instrumented_stream_keeps_its_attempt_span_open(
    used: tuple[Any, Any], traced: InMemorySpanExporter
) -> None:
    client, _ = used
    stream = client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    next(stream)
    assert not [s for s in traced.get_finished_spans() if s.name == "failover attempt backup"]
    list(stream)
    check_parents(traced)
