"""The engine over real HTTP: time budgets, hedging, model names, on_attempt, current_provider."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
import warnings
from collections.abc import Callable
from typing import Any

import openai
import pytest
from conftest import MESSAGES, NO_BREAKER, provider

import failover
from failover import (
    Breaker,
    DeadlineExceeded,
    Event,
    FailoverError,
    Provider,
    ProviderSkipped,
    current_provider,
    fallback_clients,
    with_fallback,
)
from failover._providers import endpoint_for
from failover.testing import FakeProvider

#: Every way to make a call: form (decorator, drop-in proxy, block) x sync/async.
HOW = [f"{form}-{mode}" for form in ("decorator", "proxy", "block") for mode in ("sync", "async")]
ASYNC_FORMS = ["decorator", "proxy"]  # the forms that hedge


def asker(mode: str, stream: bool = False, **request: Any) -> Callable[..., Any]:
    """A body that asks one chat question on the client it is given and returns the text."""
    request = {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": stream, **request}

    def text(reply: Any) -> str:
        return str(reply.choices[0].message.content)

    def ask(client: Any = None) -> str:
        reply = client.chat.completions.create(**request)
        return "".join(c.choices[0].delta.content or "" for c in reply) if stream else text(reply)

    async def aask(client: Any = None) -> str:
        reply = await client.chat.completions.create(**request)
        if stream:
            return "".join([c.choices[0].delta.content or "" async for c in reply])
        return text(reply)

    return aask if mode == "async" else ask


def run_sync(chain: tuple[Provider, ...], form: str, body: Any, settings: Any) -> Any:
    if form == "decorator":
        return with_fallback(*chain, **settings)(body)()
    if form == "proxy":
        with fallback_clients(*chain, **settings) as client:
            return body(client)
    for attempt in fallback_clients(*chain, **settings):
        with attempt as client:
            result = body(client)
    return result


async def run_async(chain: tuple[Provider, ...], form: str, body: Any, settings: Any) -> Any:
    if form == "decorator":
        return await with_fallback(*chain, **settings)(body)()
    if form == "proxy":
        async with fallback_clients(*chain, **settings) as client:
            return await body(client)
    async for attempt in fallback_clients(*chain, **settings):
        async with attempt as client:
            result = await body(client)
    return result


def call(
    chain: tuple[Provider, ...],
    how: str,
    *,
    body: Callable[..., Any] | None = None,
    request: dict[str, Any] | None = None,
    **settings: Any,
) -> Any:
    """Run one call in the form ``how`` names; ``body`` gets the client (default: asker)."""
    form, mode = how.split("-")
    fn = body or asker(mode, **(request or {}))
    if mode == "async":
        return asyncio.run(run_async(chain, form, fn, settings))
    return run_sync(chain, form, fn, settings)


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """What ``fn`` returned (or raised), and how long it took."""
    started = time.monotonic()
    try:
        result: Any = fn()
    except Exception as exc:
        result = exc
    return result, time.monotonic() - started


# -- attempt_timeout -----------------------------------------------------------


@pytest.mark.parametrize("how", HOW)
def test_attempt_timeout_moves_a_hanging_primary_to_the_backup(
    comet: FakeProvider, chain: tuple[Provider, Provider], how: str
) -> None:
    comet.hang(5)
    answer, elapsed = timed(lambda: call(chain, how, attempt_timeout=0.2, **NO_BREAKER))
    assert answer == "[backup] hello"
    assert elapsed < 3


def test_attempt_timeout_must_be_positive(chain: tuple[Provider, Provider]) -> None:
    with pytest.raises(ValueError, match="attempt_timeout"):
        with_fallback(*chain, attempt_timeout=0)


# -- deadline ------------------------------------------------------------------


def assert_deadline_error(result: Any, elapsed: float) -> None:
    assert isinstance(result, FailoverError), result
    last = result.exceptions[-1]
    assert isinstance(last, DeadlineExceeded)
    assert isinstance(last, TimeoutError)
    assert result.attempts[-1].error is last
    assert elapsed < 2


@pytest.mark.parametrize("how", HOW)
def test_deadline_with_every_provider_hanging_raises_deadline_exceeded(
    comet: FakeProvider, backup: FakeProvider, chain: tuple[Provider, Provider], how: str
) -> None:
    comet.hang(5)
    backup.hang(5)
    result, elapsed = timed(lambda: call(chain, how, deadline=0.25, **NO_BREAKER))
    assert_deadline_error(result, elapsed)
    assert result.exceptions[0].__class__ is openai.APITimeoutError


def test_deadline_spans_attempts(
    comet: FakeProvider, backup: FakeProvider, chain: tuple[Provider, Provider]
) -> None:
    for each in chain:  # built beforehand: building a client is no part of the budgets
        endpoint_for(each).sync_client()
    comet.hang(5)
    backup.hang(5)
    settings = {"attempt_timeout": 0.15, "deadline": 0.3, **NO_BREAKER}
    result, elapsed = timed(lambda: call(chain, "decorator-sync", **settings))
    assert_deadline_error(result, elapsed)
    assert [a.provider for a in result.attempts] == ["comet", "backup", "deadline"]
    assert len(backup.requests) == 1


@pytest.mark.parametrize("how", ["decorator-sync", "decorator-async", "proxy-sync", "proxy-async"])
def test_deadline_clips_a_larger_explicit_timeout(
    comet: FakeProvider, chain: tuple[Provider, Provider], how: str
) -> None:
    comet.hang(5)  # then it would answer: without the clip the call would succeed late
    request = {"timeout": 10}
    result, elapsed = timed(lambda: call(chain, how, request=request, deadline=0.15, **NO_BREAKER))
    assert_deadline_error(result, elapsed)


# -- first_token_timeout -------------------------------------------------------


@pytest.mark.parametrize("how", HOW)
def test_first_token_timeout_fails_a_silent_stream_over(
    comet: FakeProvider, chain: tuple[Provider, Provider], how: str
) -> None:
    comet.hang(5)
    body = asker(how.split("-")[1], stream=True)
    settings = {"first_token_timeout": 0.3, **NO_BREAKER}
    answer, elapsed = timed(lambda: call(chain, how, body=body, **settings))
    assert answer == "[backup] hello"
    assert elapsed < 3
    assert comet.requests[-1].json["stream"] is True


# -- hedging -------------------------------------------------------------------


async def hedged(chain: tuple[Provider, Provider], form: str, **settings: Any) -> Any:
    return await run_async(chain, form, asker("async"), {"hedge": 0.2, **NO_BREAKER, **settings})


@pytest.mark.asyncio
@pytest.mark.parametrize("form", ASYNC_FORMS)
async def test_hedge_lets_the_backup_win_over_a_hanging_primary(
    comet: FakeProvider, backup: FakeProvider, chain: tuple[Provider, Provider], form: str
) -> None:
    comet.hang(3)
    events: list[Event] = []
    gc.collect()  # earlier tests' garbage must not warn inside the check below
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        started = time.monotonic()
        answer = await hedged(chain, form, on_attempt=events.append)
        elapsed = time.monotonic() - started
        await asyncio.sleep(0.05)
    assert answer == "[backup] hello"
    assert elapsed < 2
    assert len(comet.requests) == 1
    # The loser was cancelled: no task of it lingers, and it is not counted a failure.
    assert asyncio.all_tasks() == {asyncio.current_task()}
    assert [(e.provider, e.outcome) for e in events] == [("backup", "success")]
    assert [str(w.message) for w in caught] == []


@pytest.mark.asyncio
@pytest.mark.parametrize("form", ASYNC_FORMS)
async def test_hedge_never_calls_the_backup_when_the_primary_is_fast(
    backup: FakeProvider, chain: tuple[Provider, Provider], form: str
) -> None:
    assert await hedged(chain, form) == "[comet] hello"
    await asyncio.sleep(0.25)  # past the hedge delay
    assert backup.requests == []


@pytest.mark.asyncio
@pytest.mark.parametrize("form", ASYNC_FORMS)
async def test_hedge_moves_on_at_once_when_the_primary_fails(
    comet: FakeProvider, chain: tuple[Provider, Provider], form: str
) -> None:
    comet.fail(500)
    started = time.monotonic()
    answer = await run_async(chain, form, asker("async"), {"hedge": 3.0, **NO_BREAKER})
    assert answer == "[backup] hello"
    assert time.monotonic() - started < 2


@pytest.mark.asyncio
@pytest.mark.parametrize("form", ASYNC_FORMS)
async def test_hedge_waits_for_the_running_attempts_once_every_provider_runs(
    comet: FakeProvider, backup: FakeProvider, chain: tuple[Provider, Provider], form: str
) -> None:
    # Both slow: after the backup starts no provider is left to add, and the call waits
    # for whichever running attempt answers first.
    comet.hang(3)
    backup.hang(0.6)
    assert await hedged(chain, form) == "[backup] hello"


@pytest.mark.asyncio
async def test_hedge_with_every_provider_failing_raises_failover_error(
    comet: FakeProvider, backup: FakeProvider, chain: tuple[Provider, Provider]
) -> None:
    comet.fail(500)
    backup.fail(503)
    with pytest.raises(FailoverError) as info:
        await hedged(chain, "decorator")
    assert [a.provider for a in info.value.attempts] == ["comet", "backup"]


# -- per-provider model names --------------------------------------------------

MODEL_MAPS: dict[str, Any] = {
    "mapping": {"gpt-4o-mini": "gpt-4o-mini-2024-07-18"},
    "callable": lambda model: f"{model}-2024-07-18",
}


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("models", MODEL_MAPS.values(), ids=MODEL_MAPS.keys())
def test_model_names_are_rewritten_per_provider(
    comet: FakeProvider, backup: FakeProvider, how: str, models: Any
) -> None:
    comet.fail(500, times=1)
    chain = (provider(comet, models=models), provider(backup))
    assert call(chain, how, **NO_BREAKER) == "[backup] hello"
    assert comet.requests[-1].json["model"] == "gpt-4o-mini-2024-07-18"
    assert backup.requests[-1].json["model"] == "gpt-4o-mini"


def test_model_names_missing_from_a_mapping_pass_unchanged(
    comet: FakeProvider, backup: FakeProvider
) -> None:
    chain = (provider(comet, models=MODEL_MAPS["mapping"]), provider(backup))
    call(chain, "decorator-sync", request={"model": "other"}, **NO_BREAKER)
    assert comet.requests[-1].json["model"] == "other"


def test_model_names_of_the_backup_apply_to_the_backup_only(
    comet: FakeProvider, backup: FakeProvider
) -> None:
    comet.fail(500, times=1)
    chain = (provider(comet), provider(backup, models=str.upper))
    call(chain, "proxy-sync", **NO_BREAKER)
    assert [r.json["model"] for r in comet.requests + backup.requests] == [
        "gpt-4o-mini",
        "GPT-4O-MINI",
    ]


# -- on_attempt ----------------------------------------------------------------


def outcomes(events: list[Event]) -> list[tuple[str, str, type[BaseException] | None]]:
    return [(e.provider, e.outcome, type(e.error) if e.error else None) for e in events]


@pytest.mark.parametrize("how", HOW)
def test_on_attempt_reports_failure_then_success(
    comet: FakeProvider, chain: tuple[Provider, Provider], how: str
) -> None:
    comet.fail(500, times=1)
    events: list[Event] = []
    assert call(chain, how, on_attempt=events.append, **NO_BREAKER) == "[backup] hello"
    assert outcomes(events) == [
        ("comet", "failure", openai.InternalServerError),
        ("backup", "success", None),
    ]
    assert all(isinstance(e, Event) and e.elapsed >= 0 for e in events)


@pytest.mark.parametrize("how", HOW)
def test_on_attempt_reports_skipped_providers(
    comet: FakeProvider, chain: tuple[Provider, Provider], how: str
) -> None:
    comet.fail(500)
    breaker = Breaker(failures=1, cooldown=60, max_cooldown=60)
    call(chain, how, breaker=breaker)  # opens comet
    events: list[Event] = []
    assert call(chain, how, breaker=breaker, on_attempt=events.append) == "[backup] hello"
    assert outcomes(events) == [("comet", "skipped", ProviderSkipped), ("backup", "success", None)]
    assert events[0].elapsed == 0
    assert len(comet.requests) == 1


# -- on_attempt callbacks that fail, or are async --------------------------------


def callback_errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "failover" and "on_attempt" in r.message]


def broken(events: list[Event]) -> Callable[[Event], None]:
    """An on_attempt callback whose metrics backend is down."""

    def on_attempt(event: Event) -> None:
        events.append(event)
        raise RuntimeError("metrics backend down")

    return on_attempt


@pytest.mark.parametrize("how", HOW)
def test_a_raising_on_attempt_never_discards_a_success(
    comet: FakeProvider,
    backup: FakeProvider,
    chain: tuple[Provider, Provider],
    how: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    events: list[Event] = []
    assert call(chain, how, on_attempt=broken(events), **NO_BREAKER) == "[comet] hello"
    assert outcomes(events) == [("comet", "success", None)]
    assert (len(comet.requests), len(backup.requests)) == (1, 0)
    [record] = callback_errors(caplog)  # logged once, with its traceback
    assert record.exc_info is not None
    assert record.exc_info[0] is RuntimeError


@pytest.mark.parametrize("how", HOW)
def test_a_raising_on_attempt_never_stops_failover(
    comet: FakeProvider,
    chain: tuple[Provider, Provider],
    how: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    comet.fail(500, times=1)
    events: list[Event] = []
    assert call(chain, how, on_attempt=broken(events), **NO_BREAKER) == "[backup] hello"
    assert outcomes(events) == [
        ("comet", "failure", openai.InternalServerError),
        ("backup", "success", None),
    ]
    assert [r.exc_info[0] for r in callback_errors(caplog) if r.exc_info] == [RuntimeError] * 2


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("primary", ["succeeds", "fails"])
def test_keyboard_interrupt_from_on_attempt_propagates(
    comet: FakeProvider,
    backup: FakeProvider,
    chain: tuple[Provider, Provider],
    how: str,
    primary: str,
) -> None:
    if primary == "fails":
        comet.fail(500)

    def on_attempt(event: Event) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        call(chain, how, on_attempt=on_attempt, **NO_BREAKER)
    assert backup.requests == []


async def arecord(event: Event) -> None: ...


class AsyncRecorder:
    async def __call__(self, event: Event) -> None: ...


@pytest.mark.parametrize("configure", [with_fallback, fallback_clients])
@pytest.mark.parametrize("callback", [arecord, AsyncRecorder()], ids=["async-def", "async-call"])
def test_an_async_on_attempt_is_refused_at_configuration(
    chain: tuple[Provider, Provider], configure: Callable[..., Any], callback: Any
) -> None:
    with pytest.raises(TypeError, match=r"never awaited.*create_task"):
        configure(*chain, on_attempt=callback)


def test_a_sync_callable_object_is_a_fine_on_attempt(chain: tuple[Provider, Provider]) -> None:
    class Recorder:
        def __call__(self, event: Event) -> None: ...

    with_fallback(*chain, on_attempt=Recorder())
    fallback_clients(*chain, on_attempt=Recorder())


# -- on= predicates that raise ---------------------------------------------------


def bad_predicate(exc: BaseException) -> bool:
    raise LookupError("a bug in the caller's on= predicate")


def cooled_down(comet: FakeProvider, chain: tuple[Provider, Provider], how: str) -> Breaker:
    """A breaker on an injected clock whose comet opened and has just cooled down."""
    now = [1000.0]
    breaker = Breaker(failures=1, cooldown=10, max_cooldown=60, clock=lambda: now[0])
    comet.fail(500, times=1)
    assert call(chain, how, breaker=breaker) == "[backup] hello"
    now[0] += 11  # past the cooldown: the next call probes comet
    return breaker


def assert_probe_released(
    comet: FakeProvider, chain: tuple[Provider, Provider], how: str, breaker: Breaker
) -> None:
    seen = len(comet.requests)
    assert call(chain, how, breaker=breaker) == "[comet] hello"  # tried, not skipped
    assert len(comet.requests) == seen + 1


@pytest.mark.parametrize("how", HOW)
def test_a_raising_predicate_on_a_probe_s_error_releases_the_probe(
    comet: FakeProvider, chain: tuple[Provider, Provider], how: str
) -> None:
    breaker = cooled_down(comet, chain, how)
    comet.fail(404, times=1)  # the probe proves comet answers; the predicate chokes on it
    events: list[Event] = []
    with pytest.raises(LookupError):
        call(chain, how, breaker=breaker, on=bad_predicate, on_attempt=events.append)
    assert_probe_released(comet, chain, how, breaker)
    assert outcomes(events) == [("comet", "failure", openai.NotFoundError)]


@pytest.mark.parametrize("how", [h for h in HOW if not h.startswith("proxy")])
def test_a_raising_predicate_on_the_caller_s_own_error_releases_the_probe(
    comet: FakeProvider, backup: FakeProvider, chain: tuple[Provider, Provider], how: str
) -> None:
    breaker = cooled_down(comet, chain, how)
    ask = asker(how.split("-")[1])

    def body(client: Any = None) -> Any:
        ask(client)
        raise ValueError("the caller's own bug")

    async def abody(client: Any = None) -> Any:
        await ask(client)
        raise ValueError("the caller's own bug")

    events: list[Event] = []
    with pytest.raises(LookupError) as info:
        call(
            chain,
            how,
            body=abody if how.endswith("async") else body,
            breaker=breaker,
            on=bad_predicate,
            on_attempt=events.append,
        )
    assert isinstance(info.value.__context__, ValueError)
    assert len(backup.requests) == 1  # only the call that opened comet
    assert_probe_released(comet, chain, how, breaker)
    assert outcomes(events) == [("comet", "failure", ValueError)]


# -- errors that frameworks wrap -------------------------------------------------


class InstructorRetryException(Exception):
    """Stands in for instructor's: raised ``from`` the last attempt's error."""

    def __init__(self, last: BaseException, n_attempts: int = 1) -> None:
        super().__init__(f"failed after {n_attempts} attempts: {type(last).__name__}")
        self.n_attempts = n_attempts


class ModelHTTPError(Exception):
    """Stands in for pydantic-ai's: its own ``status_code`` and body, ``from`` the openai error."""

    def __init__(self, exc: openai.APIError) -> None:
        self.status_code = getattr(exc, "status_code", 0)
        self.body = exc.body
        super().__init__(f"status_code: {self.status_code}, model_name: gpt-4o-mini")


WRAPPERS = [InstructorRetryException, ModelHTTPError]
DIRECT = [h for h in HOW if not h.startswith("proxy")]  # the forms that run the caller's body


def wrapped(how: str, wrap: Callable[[openai.APIError], Exception]) -> Callable[..., Any]:
    """A body that asks as a framework does: the client's error re-raised ``from`` it."""
    ask = asker(how.split("-")[1])

    def body(client: Any = None) -> Any:
        try:
            return ask(client)
        except openai.APIError as exc:
            raise wrap(exc) from exc

    async def abody(client: Any = None) -> Any:
        try:
            return await ask(client)
        except openai.APIError as exc:
            raise wrap(exc) from exc

    return abody if how.endswith("async") else body


@pytest.mark.parametrize("how", DIRECT)
@pytest.mark.parametrize("wrapper", WRAPPERS)
def test_a_provider_fault_a_framework_wrapped_fails_over(
    comet: FakeProvider, chain: tuple[Provider, Provider], how: str, wrapper: Any
) -> None:
    comet.fail(503)
    events: list[Event] = []
    body = wrapped(how, wrapper)
    assert call(chain, how, body=body, on_attempt=events.append, **NO_BREAKER) == "[backup] hello"
    assert outcomes(events) == [("comet", "failure", wrapper), ("backup", "success", None)]


@pytest.mark.parametrize("how", DIRECT)
def test_failover_error_keeps_what_the_body_raised(
    comet: FakeProvider, backup: FakeProvider, chain: tuple[Provider, Provider], how: str
) -> None:
    comet.fail(503)
    backup.fail(500)
    result, _ = timed(lambda: call(chain, how, body=wrapped(how, ModelHTTPError), **NO_BREAKER))
    assert isinstance(result, FailoverError), result
    assert [type(e) for e in result.exceptions] == [ModelHTTPError, ModelHTTPError]
    causes = [type(e.__cause__) for e in result.exceptions]
    assert causes == [openai.InternalServerError, openai.InternalServerError]


@pytest.mark.parametrize("how", DIRECT)
def test_a_wrapped_content_refusal_is_not_failed_over(
    comet: FakeProvider, backup: FakeProvider, chain: tuple[Provider, Provider], how: str
) -> None:
    comet.fail(400, code="content_policy_violation")
    with pytest.raises(ModelHTTPError):
        call(chain, how, body=wrapped(how, ModelHTTPError), **NO_BREAKER)
    assert backup.requests == []


@pytest.mark.parametrize("how", DIRECT)
def test_a_wrapped_429_with_retry_after_opens_the_breaker(
    comet: FakeProvider, chain: tuple[Provider, Provider], how: str
) -> None:
    now = [1000.0]
    breaker = Breaker(failures=5, cooldown=1, max_cooldown=60, clock=lambda: now[0])
    comet.fail(429, times=1, retry_after=30)
    body = wrapped(how, InstructorRetryException)
    assert call(chain, how, body=body, breaker=breaker) == "[backup] hello"
    assert failover.health()["comet"]["open_until"] == 1030.0  # the 429's Retry-After
    events: list[Event] = []
    assert call(chain, how, body=body, breaker=breaker, on_attempt=events.append) == (
        "[backup] hello"
    )
    assert outcomes(events) == [("comet", "skipped", ProviderSkipped), ("backup", "success", None)]
    assert len(comet.requests) == 1


@pytest.mark.parametrize("how", DIRECT)
def test_an_error_raised_while_handling_a_provider_fault_is_the_caller_s(
    comet: FakeProvider, backup: FakeProvider, chain: tuple[Provider, Provider], how: str
) -> None:
    comet.fail(503)

    def bug(exc: openai.APIError) -> Exception:
        raise ValueError("the caller's own handler is broken")  # no `from`: only __context__

    with pytest.raises(ValueError, match="handler") as info:
        call(chain, how, body=wrapped(how, bug), **NO_BREAKER)
    assert isinstance(info.value.__context__, openai.InternalServerError)
    assert backup.requests == []


# -- skipped attempts in FailoverError -----------------------------------------


@pytest.mark.parametrize("how", HOW)
def test_skipped_attempt_stands_in_failover_error(
    comet: FakeProvider, backup: FakeProvider, chain: tuple[Provider, Provider], how: str
) -> None:
    comet.fail(500)
    breaker = Breaker(failures=1, cooldown=60, max_cooldown=60)
    call(chain, how, breaker=breaker)  # opens comet
    backup.fail(500, times=1)
    result, _ = timed(lambda: call(chain, how, breaker=breaker))
    assert isinstance(result, FailoverError), result
    skipped, tried = result.attempts
    assert (skipped.provider, skipped.skipped) == ("comet", True)
    assert isinstance(skipped.error, ProviderSkipped)
    assert isinstance(skipped.error, failover.ProviderSkipped)
    assert skipped.error.provider == "comet"
    assert (tried.provider, tried.skipped) == ("backup", False)
    assert [a.error for a in result.attempts] == list(result.exceptions)
    assert len(comet.requests) == 1


# -- current_provider ----------------------------------------------------------


def test_current_provider_is_none_outside_a_call() -> None:
    assert current_provider() is None


@pytest.mark.parametrize("how", [h for h in HOW if not h.startswith("proxy")])
def test_current_provider_names_the_injected_client_s_provider(
    comet: FakeProvider, chain: tuple[Provider, Provider], how: str
) -> None:
    comet.fail(500, times=1)
    seen: list[str | None] = []
    ask = asker(how.split("-")[1])

    def body(client: Any = None) -> Any:
        seen.append(current_provider())
        return ask(client)

    async def abody(client: Any = None) -> Any:
        seen.append(current_provider())
        return await ask(client)

    answer = call(chain, how, body=abody if how.endswith("async") else body, **NO_BREAKER)
    assert answer == "[backup] hello"
    assert seen == ["comet", "backup"]
    assert current_provider() is None


# -- hedging needs async -------------------------------------------------------------


def test_hedge_on_a_sync_function_is_refused_at_decoration(
    chain: tuple[Provider, Provider],
) -> None:
    with pytest.raises(TypeError, match="async"):

        @failover.with_fallback(*chain, hedge=0.2)
        def ask(client: Any = None) -> None: ...


def test_hedge_on_the_sync_client_or_the_block_form_is_refused(
    chain: tuple[Provider, Provider],
) -> None:
    clients = failover.fallback_clients(*chain, hedge=0.2)
    with pytest.raises(TypeError, match="async with"), clients:
        pass
    with pytest.raises(TypeError, match="block form"):
        iter(clients)


@pytest.mark.parametrize("how", HOW)
def test_debug_logs_a_success_only_after_a_failed_attempt(
    comet: FakeProvider,
    chain: tuple[Provider, Provider],
    how: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A healthy call logs nothing (a line per call is what metrics are for); neither does
    # one that skips an open primary (the skip has its own INFO line).
    caplog.set_level(logging.DEBUG, logger="failover")
    breaker = Breaker(failures=1, cooldown=60, max_cooldown=60, failure_rate=None)

    def served() -> list[str]:
        return [r.getMessage() for r in caplog.records if "served in" in r.getMessage()]

    assert call(chain, how, breaker=breaker, retry=None) == "[comet] hello"
    assert served() == []
    comet.fail(500)
    assert call(chain, how, breaker=breaker, retry=None) == "[backup] hello"
    [line] = served()
    assert line.startswith("failover: backup served in ")
    assert line.endswith(", after 1 failed attempt(s)")
    caplog.clear()
    assert call(chain, how, breaker=breaker, retry=None) == "[backup] hello"
    assert any("skipping comet" in r.getMessage() for r in caplog.records)
    assert served() == []
