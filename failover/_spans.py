"""Trace spans of attempts: current while an attempt runs, ended with it, or with the
last stream it opened; and how an error is told in a span (never a key or a body).

OpenTelemetry is imported here only inside the functions that the telemetry of
:mod:`._telemetry` calls once an app uses it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Protocol

from ._errors import describe

if TYPE_CHECKING:
    from opentelemetry.trace import Span


class Call(Protocol):
    """What an attempt's span needs of its call's span (a :class:`._telemetry.Traced`)."""

    otel: Any
    _open: int

    def _close(self) -> None: ...


# gen_ai.operation.name of the drop-in's API calls, by resource (the GenAI conventions).
_OPERATIONS = {
    "chat": "chat",
    "completions": "text_completion",
    "embeddings": "embeddings",
    "responses": "chat",
}


def _error_type(exc: BaseException) -> str:
    """The HTTP status of an error response, else the error's class (HTTP conventions)."""
    status = getattr(exc, "status_code", None)
    if isinstance(status, int):
        return str(status)
    kind = type(exc)
    return (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )


def _set_error(span: Span, exc: BaseException, otel: Any) -> None:
    """Status ERROR and the exception event, from what ``describe`` says: a class and an
    HTTP status, never a message that could quote a key or a request body."""
    kind = type(exc)
    span.set_attribute("error.type", _error_type(exc))
    span.add_event(
        "exception",
        {
            "exception.type": f"{kind.__module__}.{kind.__qualname__}",
            "exception.message": describe(exc),
        },
    )
    span.set_status(otel.trace.Status(otel.trace.StatusCode.ERROR, describe(exc)))


class AttemptSpan:
    """One attempt's span: current while the attempt runs, ended when it ends, or when
    the last stream it opened ends (``hold`` / ``release``)."""

    __slots__ = ("_call", "_ended", "_holds", "_outcome", "_provider", "_started", "span")

    def __init__(self, call: Call, span: Span, provider: str) -> None:
        self._call = call
        self.span = span
        self._provider = provider
        self._started = time.monotonic()
        self._holds = 0
        self._outcome: str | None = None
        self._ended = False

    def enter(self) -> object:
        """Make the span current (the openai instrumentation's spans become its children)."""
        from opentelemetry import context

        return context.attach(
            context.set_value(_KEY, self, self._call.otel.trace.set_span_in_context(self.span))
        )

    def leave(self, token: object) -> None:
        from opentelemetry import context

        context.detach(token)  # type: ignore[arg-type]

    def requested(self, where: str, model: object) -> None:
        """A call of the attempt on a handed-out client (``where``: its resource's module)
        asked for ``model``, as the provider received it: the decorator's and block
        form's calls, whose operation failover does not see."""
        kind = next((_OPERATIONS[n] for n in where.split(".") if n in _OPERATIONS), None)
        if kind is not None:
            self.span.set_attribute("gen_ai.operation.name", kind)
        if isinstance(model, str):
            self.span.set_attribute("gen_ai.request.model", model)

    def answered(self, result: Any) -> None:
        """Set what the answer tells: the model that served, the tokens used."""
        model = getattr(result, "model", None)
        if isinstance(model, str):
            self.span.set_attribute("gen_ai.response.model", model)
        usage = getattr(result, "usage", None)
        if usage is not None:
            for ours, names in _USAGE.items():
                tokens = next(
                    (getattr(usage, n) for n in names if isinstance(getattr(usage, n, None), int)),
                    None,
                )
                if tokens is not None:
                    self.span.set_attribute(ours, tokens)

    def chunk(self, chunk: Any, number: int) -> None:
        """A stream of the attempt delivered its ``number``-th chunk."""
        if number == 1:
            elapsed = time.monotonic() - self._started
            self.span.set_attribute("failover.time_to_first_chunk", elapsed)
            self.span.add_event("failover.first_chunk")
            self.answered(chunk)
        elif getattr(chunk, "usage", None) is not None:  # the last chunk, when asked for
            self.answered(chunk)

    def hold(self) -> None:
        """A stream opened in the attempt: the span lasts until it ends."""
        self._holds += 1

    def release(self, exc: BaseException | None) -> None:
        """A stream of the attempt ended (``exc``: it broke)."""
        if exc is not None:
            self._outcome = "failure"
            _set_error(self.span, exc, self._call.otel)
        self._holds -= 1
        self._end()

    def finish(self, outcome: str, exc: BaseException | None) -> None:
        """The engine says the attempt ended."""
        if self._outcome is None:
            self._outcome = outcome
        if exc is not None:
            _set_error(self.span, exc, self._call.otel)
        self._end()

    def skipped(self, now: int) -> None:
        self._ended = True
        self._record("skipped", None)
        self.span.end(end_time=now)
        self._call._open -= 1

    def _end(self) -> None:
        if self._ended or self._holds > 0 or self._outcome is None:
            return
        self._ended = True
        self._record(self._outcome, time.monotonic() - self._started)
        self.span.end()
        call = self._call
        call._open -= 1
        call._close()

    def _record(self, outcome: str, elapsed: float | None) -> None:
        self.span.set_attribute("failover.outcome", outcome)
        attributes = {"failover.provider": self._provider, "failover.outcome": outcome}
        otel = self._call.otel
        otel.attempts.add(1, attributes)
        if elapsed is not None:
            otel.attempt_duration.record(elapsed, attributes)


_KEY = "failover.attempt"
_USAGE = {
    "gen_ai.usage.input_tokens": ("input_tokens", "prompt_tokens"),
    "gen_ai.usage.output_tokens": ("output_tokens", "completion_tokens"),
}


def current() -> AttemptSpan | None:
    """The span of the attempt running in this context (for its streams)."""
    from opentelemetry import context

    found = context.get_value(_KEY)
    return found if isinstance(found, AttemptSpan) else None
