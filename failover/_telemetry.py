"""Observability: OpenTelemetry traces and metrics, and the process-wide options.

The engine tells an :class:`Observer` of every step of a call (an attempt started,
was skipped, failed, served; the call gave up; a breaker changed state). The plain
observer only keeps the rolling counters of :mod:`._activity`. When the app uses
OpenTelemetry (it imported it, and configured an SDK or passed providers to
``configure``), a :class:`Traced` one also makes the spans and records the metrics.

OpenTelemetry is never imported here: an app that has not imported it has no
provider and no current span, so there is nothing to record into; checking
``sys.modules`` costs a dict lookup, and ``import failover`` stays as fast as it was.
"""

from __future__ import annotations

import asyncio
import sys
import time
import weakref
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ._activity import ACTIVITY, Alerting
from ._health import STORE, STORES, Health, HealthStore, Reason, State, default_store
from ._spans import _OPERATIONS, AttemptSpan, _set_error

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation
    from opentelemetry.trace import Span, TracerProvider

    from ._providers import Endpoint

_UNSET: Any = object()


def configure(
    *,
    health: HealthStore | None = _UNSET,
    alert_failure_rate: float | None = _UNSET,
    tracer_provider: TracerProvider | None = _UNSET,
    meter_provider: MeterProvider | None = _UNSET,
) -> None:
    """Set process-wide options; those left out keep their value.

    ``health``: the default health store (``None``: back to in-process state).
    ``alert_failure_rate``: log a WARNING (at most once a minute per provider) when a
    provider fails at least this share of its attempts of the last minute (default
    0.2; ``None``: never). ``tracer_provider`` / ``meter_provider``: where failover's
    spans and metrics go (``None``: OpenTelemetry's global providers, the default).
    """
    global _OTEL, _PROVIDERS
    if health is not _UNSET:
        STORES[0] = health if health is not None else STORE
    if alert_failure_rate is not _UNSET:
        ACTIVITY.alerting = Alerting(alert_failure_rate)
    if tracer_provider is not _UNSET or meter_provider is not _UNSET:
        old_tracer, old_meter = _PROVIDERS
        _PROVIDERS = (
            old_tracer if tracer_provider is _UNSET else tracer_provider,
            old_meter if meter_provider is _UNSET else meter_provider,
        )
        _OTEL = None  # rebuilt on the next call, on the providers now in force
        _recheck[0] = 0.0


class Observer:
    """One call's observer when nothing traces: the rolling counters only."""

    __slots__ = ("finished",)

    def __init__(self) -> None:
        self.finished = False

    def started(self, endpoint: Endpoint, state: State | None) -> None:
        """An attempt on ``endpoint`` starts (``state``: its breaker's, None: no breaker)."""

    def attempt(self, endpoint: Endpoint) -> AttemptSpan | None:
        """The span of the attempt on ``endpoint`` that just started, if traced."""
        return None

    def skipped(self, endpoint: Endpoint, reason: str, state: State) -> None:
        ACTIVITY.skipped(endpoint.key, endpoint.name)

    def failed(self, endpoint: Endpoint, exc: BaseException, fails_over: bool, retry: bool) -> None:
        """The attempt ended in ``exc``: the call goes on (``fails_over``), to the same
        provider (``retry``), or raises."""
        ACTIVITY.ended(
            endpoint.key, endpoint.name, failed=fails_over, moved=fails_over and not retry
        )
        if not fails_over and not self.finished:
            self.finished = True
            ACTIVITY.unserved()

    def succeeded(self, endpoint: Endpoint) -> None:
        if self.finished:  # a second hedged attempt that served: one call, served once
            ACTIVITY.ended(endpoint.key, endpoint.name, failed=False, moved=False)
            return
        self.finished = True
        ACTIVITY.served(endpoint.key, endpoint.name)

    def gave_up(self, error: BaseException) -> None:
        """No provider is left: the call raises ``error``."""
        if not self.finished:
            self.finished = True
            ACTIVITY.unserved()

    def transition(self, endpoint: Endpoint, record: Health) -> None:
        """The breaker of ``endpoint`` changed state: ``record`` is its new record."""


def _in_force() -> _Otel | None:
    """The instruments, when an SDK is set up (looked for at most once a ``RECHECK``)."""
    if _OTEL is None and "opentelemetry" in sys.modules and time.monotonic() >= _recheck[0]:
        return _resolve()
    return _OTEL


def tracing() -> bool:
    """Whether calls are traced now: for drivers that skip the per-call observer when
    nothing traces."""
    return _in_force() is not None


def observe(store: HealthStore | None, operation: object) -> Observer:
    """The observer of one call of a chain whose settings name ``store`` (None: the
    process-wide one); ``operation`` names it (see :class:`Traced`)."""
    otel = _in_force()
    if otel is None:
        return Observer()
    return Traced(otel, store, operation)


# -- OpenTelemetry -------------------------------------------------------------------------

_PROVIDERS: tuple[Any, Any] = (None, None)  # from configure(); None: the global one
#: Seconds between looks for an SDK set up since: an app's first traced call may come
#: that much later, the healthy path without one costs a clock read.
RECHECK = 1.0
_recheck = [0.0]
_OTEL: _Otel | None = None
#: True once something was traced: streams look for their attempt's span only then.
LIVE = False
_STORES: weakref.WeakSet[Any] = weakref.WeakSet()  # stores the breaker-state gauge reads
_last_store: list[object] = [None]


def _placeholder(provider: object) -> bool:
    """The API's own no-op or proxy provider (an SDK's lives in another package)."""
    return type(provider).__module__.startswith(("opentelemetry.trace", "opentelemetry.metrics"))


def _resolve() -> _Otel | None:
    """Instruments on the providers in force, or None while there is no SDK to record."""
    global _OTEL, LIVE
    tracer_provider, meter_provider = _PROVIDERS
    if tracer_provider is None and (trace := sys.modules.get("opentelemetry.trace")):
        global_tracer = trace.get_tracer_provider()
        tracer_provider = None if _placeholder(global_tracer) else global_tracer
    if meter_provider is None and (metrics := sys.modules.get("opentelemetry.metrics")):
        global_meter = metrics.get_meter_provider()
        meter_provider = None if _placeholder(global_meter) else global_meter
    if tracer_provider is None and meter_provider is None:
        # No SDK yet: look again in a second (the healthy path pays one clock read).
        _recheck[0] = time.monotonic() + RECHECK
        return None
    # A global provider, once set, stays: the instruments are built once, on the API's
    # proxies where failover was given none (they follow a provider set later).
    _OTEL = _Otel(*_PROVIDERS)
    LIVE = True
    return _OTEL


class _Otel:
    """The tracer and the instruments."""

    def __init__(self, tracer_provider: TracerProvider | None, meter_provider: Any) -> None:
        from opentelemetry import metrics, trace

        self.trace = trace
        self.tracer = (tracer_provider or trace.get_tracer_provider()).get_tracer("failover")
        meter = (meter_provider or metrics.get_meter_provider()).get_meter("failover")
        self.attempts = meter.create_counter(
            "failover.attempts", "{attempt}", "Attempts, by provider and outcome"
        )
        self.failovers = meter.create_counter(
            "failover.failovers", "{failover}", "Calls moving from one provider to another"
        )
        self.transitions = meter.create_counter(
            "failover.breaker.transitions", "{transition}", "Circuit breaker state changes"
        )
        self.attempt_duration = meter.create_histogram(
            "failover.attempt.duration", "s", "Duration of attempts, by provider and outcome"
        )
        self.call_duration = meter.create_histogram(
            "failover.call.duration", "s", "Duration of failover calls, all attempts included"
        )
        meter.create_observable_gauge(
            "failover.breaker.state",
            [_breaker_states],
            "1",
            "1 for each provider's current breaker state, 0 for the others",
        )


def _breaker_states(options: CallbackOptions) -> Iterable[Observation]:
    from opentelemetry.metrics import Observation

    stores = {id(default_store()): default_store(), **{id(s): s for s in list(_STORES)}}
    for store in stores.values():
        for name, record in store.snapshot().values():
            for state in State:
                attributes = {"failover.provider": name, "failover.breaker.state": state.value}
                yield Observation(int(record.state is state), attributes)


_SERVERS: dict[str, dict[str, Any]] = {}


def _server(endpoint: Endpoint) -> dict[str, Any]:
    """server.address and server.port of the endpoint's base URL."""
    found = _SERVERS.get(endpoint.key)
    if found is None:
        spec, given = endpoint.spec, endpoint._given
        url = str(spec.base_url if spec is not None else getattr(given, "base_url", "")) or ""
        parts = urlsplit(url if "//" in url else f"//{url}")
        found = {}
        if parts.hostname:
            found["server.address"] = parts.hostname
            found["server.port"] = parts.port or (80 if parts.scheme == "http" else 443)
        _SERVERS[endpoint.key] = found
    return found


class Traced(Observer):
    """One call's observer when tracing: a span for the call, a child for each attempt.

    ``operation`` names the call: a string (the decorated function's qualified name,
    ``block`` for the block form) or a drop-in call's path of attribute names and
    calls (``chat.completions.create(...)``: its ``model`` argument is the request's).
    """

    __slots__ = (
        "_context",
        "_left",
        "_live",
        "_model",
        "_moves",
        "_number",
        "_open",
        "_operation",
        "_started",
        "otel",
        "span",
    )

    def __init__(self, otel: _Otel, store: HealthStore | None, operation: object) -> None:
        super().__init__()
        self.otel = otel
        if store is not None and store is not _last_store[0]:
            _STORES.add(store)
            _last_store[0] = store
        name, self._model, self._operation = _naming(operation)
        attributes = {"gen_ai.operation.name": self._operation} if self._operation else None
        self.span: Span = otel.tracer.start_span(f"failover {name}", attributes=attributes)
        self._context: Context = otel.trace.set_span_in_context(self.span)
        self._started = time.monotonic()
        self._live: dict[int, AttemptSpan] = {}
        self._number = 0
        self._open = 0  # attempt spans not ended yet: the call's span ends after them
        self._moves = 0
        self._left: str | None = None  # the provider the call just left, if it did

    def _attempt(
        self, endpoint: Endpoint, state: State | None, start_time: int | None = None
    ) -> AttemptSpan:
        self._number += 1
        if self._left is not None and self._left != endpoint.name:
            self.otel.failovers.add(1, {"failover.from": self._left, "failover.to": endpoint.name})
        self._left = None
        attributes: dict[str, Any] = {
            "failover.provider": endpoint.name,
            "failover.attempt": self._number,
            **_server(endpoint),
        }
        if state is not None:
            attributes["failover.breaker.state"] = state.value
        if self._operation:
            attributes["gen_ai.operation.name"] = self._operation
        if self._model is not None:
            attributes["gen_ai.request.model"] = endpoint.map_model(self._model)
        span = self.otel.tracer.start_span(
            f"failover attempt {endpoint.name}",
            self._context,
            attributes=attributes,
            start_time=start_time,
        )
        self._open += 1
        return AttemptSpan(self, span, endpoint.name)

    def started(self, endpoint: Endpoint, state: State | None) -> None:
        self._live[id(endpoint)] = self._attempt(endpoint, state)

    def attempt(self, endpoint: Endpoint) -> AttemptSpan | None:
        return self._live.get(id(endpoint))

    def skipped(self, endpoint: Endpoint, reason: str, state: State) -> None:
        super().skipped(endpoint, reason, state)
        now = time.time_ns()  # a zero-length span: starts and ends at once
        attempt = self._attempt(endpoint, state, now)
        attempt.span.set_attribute("failover.skip_reason", reason)
        attempt.skipped(now)
        self._moved_from(endpoint)

    def _moved_from(self, endpoint: Endpoint) -> None:
        self._moves += 1
        self._left = endpoint.name

    def failed(self, endpoint: Endpoint, exc: BaseException, fails_over: bool, retry: bool) -> None:
        finished = self.finished
        super().failed(endpoint, exc, fails_over, retry)
        if fails_over and not retry:
            self._moved_from(endpoint)
        elif not fails_over and not finished:
            self._end_call(None, exc)  # ended by the attempt's span, just below
        attempt = self._live.pop(id(endpoint), None)
        if attempt is not None:
            # A hedged attempt that lost the race, or a call its caller cancelled.
            cancelled = isinstance(exc, asyncio.CancelledError)
            outcome = "cancelled" if cancelled else "retry" if retry else "failure"
            attempt.finish(outcome, None if cancelled else exc)

    def succeeded(self, endpoint: Endpoint) -> None:
        finished = self.finished  # two hedged attempts may both have served
        super().succeeded(endpoint)
        if not finished:
            self._end_call(endpoint.name, None)
        attempt = self._live.pop(id(endpoint), None)
        if attempt is not None:
            attempt.finish("success", None)

    def gave_up(self, error: BaseException) -> None:
        if not self.finished:
            super().gave_up(error)
            self._end_call(None, error)

    def transition(self, endpoint: Endpoint, record: Health) -> None:
        attributes = {
            "failover.provider": endpoint.name,
            "failover.breaker.state": record.state.value,
        }
        if record.state is State.OPEN and isinstance(record.reason, Reason):
            attributes["failover.breaker.reason"] = record.reason.value
        self.otel.transitions.add(1, attributes)

    def _end_call(self, served_by: str | None, error: BaseException | None) -> None:
        """The call is over: its span ends as soon as its attempts' spans have."""
        span = self.span
        span.set_attribute("failover.failed_over", bool(self._moves))
        span.set_attribute("failover.attempts", self._number)
        if served_by is not None:
            span.set_attribute("failover.served_by", served_by)
        if error is not None:
            _set_error(span, error, self.otel)
        outcome = "success" if served_by is not None else "failure"
        self.otel.call_duration.record(
            time.monotonic() - self._started,
            {"failover.outcome": outcome, "failover.failed_over": bool(self._moves)},
        )
        self._close()

    def _close(self) -> None:
        """End the call's span once it finished and every attempt span has ended."""
        if self.finished and not self._open:
            self._open = -1  # ended: never twice
            self.span.end()


def _naming(operation: object) -> tuple[str, str | None, str | None]:
    """The span name, the requested model and gen_ai.operation.name of ``operation``."""
    if isinstance(operation, str):
        return operation, None, None
    path = operation if isinstance(operation, tuple) else ()
    names = [step for step in path if isinstance(step, str)]
    kwargs: Mapping[str, Any] = getattr(path[-1], "kwargs", {}) if path else {}
    model = kwargs.get("model")
    kind = next((_OPERATIONS[n] for n in names if n in _OPERATIONS), None)
    return ".".join(names), model if isinstance(model, str) else None, kind
