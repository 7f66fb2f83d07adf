"""Same-provider retry (``retry=Retry(...)``): its rules, and how every form applies them."""

from __future__ import annotations

import asyncio
import logging
import pickle
import time
from collections.abc import Callable
from typing import Any

import httpx2
import openai
import pytest
from conftest import MESSAGES, provider

import failover
from failover import (
    Breaker,
    Event,
    FailoverError,
    Provider,
    Retry,
    State,
    StreamInterrupted,
    fallback_clients,
    with_fallback,
)
from failover._health import Reason
from failover.testing import FakeProvider

HOW = [f"{form}-{mode}" for mode in ("sync", "async") for form in ("decorator", "proxy", "block")]
#: Quick retries: the real sleeps stay in tens of milliseconds.
QUICK = Retry(attempts=1, max_wait=0.5, backoff=0.02)
T0 = 1_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


# -- one call in any form ---------------------------------------------------------


def chat(client: Any = None) -> str:
    reply = client.chat.completions.create(model="m", messages=MESSAGES)
    return f"{failover.current_provider()}:{reply.choices[0].message.content}"


async def achat(client: Any = None) -> str:
    reply = await client.chat.completions.create(model="m", messages=MESSAGES)
    return f"{failover.current_provider()}:{reply.choices[0].message.content}"


def run_sync(chain: tuple[Provider, ...], form: str, settings: dict[str, Any]) -> str:
    if form == "decorator":
        return with_fallback(*chain, **settings)(chat)()
    if form == "proxy":
        with fallback_clients(*chain, **settings) as client:
            reply = client.chat.completions.create(model="m", messages=MESSAGES)  # type: ignore[arg-type]
            return f"-:{reply.choices[0].message.content}"
    for attempt in fallback_clients(*chain, **settings):
        with attempt as client:
            text = chat(client)
    return text


async def run_async(chain: tuple[Provider, ...], form: str, settings: dict[str, Any]) -> str:
    if form == "decorator":
        return await with_fallback(*chain, **settings)(achat)()
    if form == "proxy":
        async with fallback_clients(*chain, **settings) as client:
            reply = await client.chat.completions.create(model="m", messages=MESSAGES)  # type: ignore[arg-type]
            return f"-:{reply.choices[0].message.content}"
    async for attempt in fallback_clients(*chain, **settings):
        async with attempt as client:
            text = await achat(client)
    return text


def call(chain: tuple[Provider, ...], how: str, **settings: Any) -> Any:
    """The answer (``provider:text``; ``-:`` for the proxy), or the exception raised."""
    form, mode = how.split("-")
    settings = {"retry": QUICK, **settings}
    try:
        if mode == "async":
            return asyncio.run(run_async(chain, form, settings))
        return run_sync(chain, form, settings)
    except Exception as exc:
        return exc


def text(answer: Any) -> str:
    return str(answer).partition(":")[2]


# -- Retry itself -------------------------------------------------------------------


def test_defaults_and_export() -> None:
    retry = Retry()
    assert (retry.attempts, retry.max_wait, retry.backoff) == (1, 2.0, 0.2)
    assert failover.Retry is Retry
    assert "Retry" in failover.__all__


@pytest.mark.parametrize(
    "kwargs",
    [
        {"attempts": -1},
        {"attempts": 1.5},
        {"attempts": True},
        {"max_wait": -0.1},
        {"backoff": -1},
        {"backoff": float("nan")},
    ],
)
def test_bad_values_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="Retry"):
        Retry(**kwargs)


def test_is_frozen() -> None:
    with pytest.raises(AttributeError):
        Retry().attempts = 2  # type: ignore[misc]


def status_error(status: int) -> openai.APIStatusError:
    response = httpx2.Response(status, request=httpx2.Request("POST", "http://127.0.0.1:9/v1"))
    return openai.APIStatusError("boom", response=response, body=None)


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_back_off_with_full_jitter(status: int) -> None:
    retry = Retry(attempts=3, max_wait=0.5, backoff=0.2, random=lambda: 0.5)
    exc = status_error(status)
    assert [retry.delay(exc, n, None) for n in range(4)] == [0.1, 0.2, 0.25, None]
    assert Retry(random=lambda: 0.0).delay(exc, 0, None) == 0.0


@pytest.mark.parametrize("status", [400, 401, 403, 404, 408, 409, 422, 429, 501])
def test_other_statuses_are_not_retried_without_retry_after(status: int) -> None:
    assert Retry().delay(status_error(status), 0, None) is None


def test_retry_after_is_waited_when_short_enough() -> None:
    exc = status_error(429)
    assert Retry(max_wait=2.0).delay(exc, 0, 1.5) == 1.5
    assert Retry(max_wait=2.0).delay(exc, 0, 2.5) is None
    assert Retry(attempts=0).delay(exc, 0, 0.1) is None


# -- over HTTP: what is retried ------------------------------------------------------


@pytest.mark.parametrize("how", HOW)
def test_a_transient_500_is_served_by_the_primary_after_the_retry(
    comet: FakeProvider, backup: FakeProvider, chain: tuple[Provider, Provider], how: str
) -> None:
    comet.fail(500, times=1)
    events: list[Event] = []
    answer = call(chain, how, on_attempt=events.append)
    assert text(answer) == "[comet] hello"
    assert [(e.provider, e.outcome) for e in events] == [
        ("comet", "failure"),
        ("comet", "success"),
    ]
    assert len(comet.requests) == 2
    assert backup.requests == []
    if not how.startswith("proxy"):
        assert answer.startswith("comet:")  # the body re-ran on the same provider's client
    assert failover.health()["comet"]["failovers_served"] == 0


@pytest.mark.parametrize("how", HOW)
def test_each_failed_try_is_its_own_attempt_with_increasing_numbers(
    comet: FakeProvider, backup: FakeProvider, chain: tuple[Provider, Provider], how: str
) -> None:
    comet.fail(503)
    backup.reset()
    error = call(chain, how)
    assert isinstance(error, FailoverError)
    assert [a.provider for a in error.attempts] == ["comet", "comet", "backup", "backup"]
    notes = [e.__notes__[-1] for e in error.exceptions]
    assert [n.split(", ")[1] for n in notes] == [f"attempt {i}" for i in (1, 2, 3, 4)]
    assert failover.health()["comet"]["failures"] == 2


@pytest.mark.parametrize("how", ["decorator-sync", "block-async"])
def test_a_connection_reset_is_retried(
    comet: FakeProvider, chain: tuple[Provider, Provider], how: str
) -> None:
    comet.reset(times=1)
    assert text(call(chain, how)) == "[comet] hello"
    assert len(comet.requests) == 2


NOT_RETRIED: dict[str, Callable[[FakeProvider], None]] = {
    "timeout": lambda f: f.hang(5, times=1),
    "429 without Retry-After": lambda f: f.fail(429, times=1),
    "malformed body": lambda f: f.garbage(times=1),
    "400": lambda f: f.fail(400, times=1),
    "404": lambda f: f.fail(404, times=1),
    "401": lambda f: f.fail(401, times=1),
}


@pytest.mark.parametrize("fault", NOT_RETRIED.values(), ids=NOT_RETRIED.keys())
@pytest.mark.parametrize("how", ["decorator-sync", "proxy-async"])
def test_faults_that_a_retry_would_not_fix_move_on_at_once(
    comet: FakeProvider, backup: FakeProvider, how: str, fault: Callable[[FakeProvider], None]
) -> None:
    fault(comet)
    chain = (provider(comet, timeout=0.2), provider(backup))
    assert text(call(chain, how)) == "[backup] hello"
    assert len(comet.requests) == 1


def test_a_refused_connection_is_not_retried(backup: FakeProvider) -> None:
    with FakeProvider("dead") as dead:
        dead.stop()  # nothing listens on its port now
        chain = (provider(dead), provider(backup))
        events: list[Event] = []
        assert text(call(chain, "decorator-sync", on_attempt=events.append)) == "[backup] hello"
    assert [(e.provider, e.outcome) for e in events] == [("dead", "failure"), ("backup", "success")]


@pytest.mark.parametrize("how", ["decorator-sync", "proxy-async"])
def test_a_refusal_is_raised_without_a_retry(
    comet: FakeProvider, chain: tuple[Provider, Provider], how: str
) -> None:
    comet.fail(400, times=1, code="content_policy_violation")
    assert isinstance(call(chain, how), openai.BadRequestError)
    assert len(comet.requests) == 1


def test_what_on_does_not_fail_over_is_not_retried(
    comet: FakeProvider, chain: tuple[Provider, Provider]
) -> None:
    comet.fail(500, times=1)
    error = call(chain, "decorator-sync", on=openai.APIConnectionError)
    assert isinstance(error, openai.InternalServerError)
    assert len(comet.requests) == 1


def test_retry_none_moves_on_at_once(comet: FakeProvider, chain: tuple[Provider, Provider]) -> None:
    comet.fail(500, times=1)
    assert text(call(chain, "decorator-sync", retry=None)) == "[backup] hello"
    assert len(comet.requests) == 1


def test_the_default_retries_once(comet: FakeProvider, chain: tuple[Provider, Provider]) -> None:
    comet.fail(500, times=2)
    assert text(call(chain, "decorator-sync", retry=Retry(backoff=0.01))) == "[backup] hello"
    assert len(comet.requests) == 2


def test_more_attempts_retry_more(comet: FakeProvider, chain: tuple[Provider, Provider]) -> None:
    comet.fail(500, times=3)
    retry = Retry(attempts=3, backoff=0.01)
    assert text(call(chain, "decorator-sync", retry=retry, breaker=None)) == "[comet] hello"
    assert len(comet.requests) == 4


# -- Retry-After ----------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 503])
@pytest.mark.parametrize("how", HOW)
def test_a_short_retry_after_is_waited_then_retried(
    comet: FakeProvider, chain: tuple[Provider, Provider], status: int, how: str
) -> None:
    comet.fail(status, times=1, retry_after="0.2")
    started = time.monotonic()
    assert text(call(chain, how, breaker=Breaker(clock=Clock()))) == "[comet] hello"
    assert time.monotonic() - started >= 0.2
    assert len(comet.requests) == 2


def test_while_one_caller_waits_out_retry_after_the_others_skip_the_provider(
    comet: FakeProvider, backup: FakeProvider, chain: tuple[Provider, Provider]
) -> None:
    # The fake clock never reaches the Retry-After date: the provider stays open to
    # others, and the waiting caller's own retry goes through all the same.
    breaker = Breaker(clock=Clock())
    comet.fail(429, times=1, retry_after="0.1")
    seen: list[Any] = []

    def meanwhile(event: Event) -> None:
        if event.provider == "comet" and event.outcome == "failure":
            record = failover.health()["comet"]
            seen.append((record["state"], record["reason"]))
            seen.append(call(chain, "decorator-sync", breaker=breaker))

    assert call(chain, "decorator-sync", breaker=breaker, on_attempt=meanwhile) == (
        "comet:[comet] hello"
    )
    assert seen == [(State.OPEN, Reason.RETRY_AFTER), "backup:[backup] hello"]
    assert len(comet.requests) == 2
    assert failover.health()["comet"]["state"] is State.CLOSED


@pytest.mark.parametrize("how", ["decorator-sync", "proxy-async"])
def test_a_long_retry_after_opens_and_moves_on_at_once(
    comet: FakeProvider, chain: tuple[Provider, Provider], how: str
) -> None:
    comet.fail(429, times=1, retry_after="30")
    started = time.monotonic()
    assert text(call(chain, how, breaker=Breaker(clock=Clock()))) == "[backup] hello"
    assert time.monotonic() - started < 5
    assert len(comet.requests) == 1
    assert failover.health()["comet"]["reason"] is Reason.RETRY_AFTER


# -- budgets and the breaker -------------------------------------------------------------


@pytest.mark.parametrize("how", ["decorator-sync", "block-async"])
def test_a_retry_is_skipped_when_the_deadline_cannot_cover_the_wait(
    comet: FakeProvider, chain: tuple[Provider, Provider], how: str
) -> None:
    comet.fail(503, times=1, retry_after="2")
    events: list[Event] = []
    answer = call(chain, how, retry=Retry(max_wait=5.0), deadline=1.5, on_attempt=events.append)
    assert text(answer) == "[backup] hello"
    assert [(e.provider, e.outcome) for e in events] == [
        ("comet", "failure"),
        ("backup", "success"),
    ]
    assert len(comet.requests) == 1


@pytest.mark.parametrize("how", ["decorator-sync", "proxy-async"])
def test_an_open_breaker_stops_retries(
    comet: FakeProvider, chain: tuple[Provider, Provider], how: str
) -> None:
    comet.fail(500)
    breaker = Breaker(failures=1, clock=Clock())
    assert text(call(chain, how, breaker=breaker)) == "[backup] hello"
    assert len(comet.requests) == 1
    assert failover.health()["comet"]["state"] is State.OPEN


@pytest.mark.parametrize("how", ["decorator-async", "block-sync"])
def test_every_failed_try_counts_for_the_breaker(
    comet: FakeProvider, chain: tuple[Provider, Provider], how: str
) -> None:
    comet.fail(500)
    breaker = Breaker(failures=2, clock=Clock())
    assert text(call(chain, how, breaker=breaker)) == "[backup] hello"  # a try and its retry
    assert failover.health()["comet"]["state"] is State.OPEN
    assert text(call(chain, how, breaker=breaker)) == "[backup] hello"
    assert len(comet.requests) == 2


def test_retries_are_logged_as_their_own_attempts(
    comet: FakeProvider, chain: tuple[Provider, Provider], caplog: pytest.LogCaptureFixture
) -> None:
    comet.fail(500, times=2)
    caplog.set_level(logging.WARNING, logger="failover")
    assert text(call(chain, "decorator-sync")) == "[backup] hello"
    messages = [r.getMessage() for r in caplog.records if r.name == "failover"]
    assert len(messages) == 2
    assert "comet failed with InternalServerError 500" in messages[0]
    assert "retrying it in" in messages[0]
    assert messages[1].endswith("trying backup")


# -- streams and hedging ------------------------------------------------------------------


def stream_text(stream: Any) -> str:
    return "".join(c.choices[0].delta.content or "" for c in stream)


def test_a_proxied_stream_is_retried_before_its_first_chunk(
    comet: FakeProvider, chain: tuple[Provider, Provider]
) -> None:
    comet.fail(503, times=1)
    with fallback_clients(*chain, retry=QUICK) as client:
        stream = client.chat.completions.create(model="m", messages=MESSAGES, stream=True)  # type: ignore[arg-type]
        assert stream_text(stream) == "[comet] hello"
    assert len(comet.requests) == 2


@pytest.mark.asyncio
async def test_a_stream_broken_after_chunks_is_not_retried(
    comet: FakeProvider, chain: tuple[Provider, Provider]
) -> None:
    comet.cut_stream(after=2, times=1)

    @with_fallback(*chain, retry=QUICK)
    async def pieces(client: Any = None) -> Any:
        stream = await client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
        async for chunk in stream:
            yield chunk.choices[0].delta.content or ""

    got: list[str] = []

    async def read() -> None:
        async for piece in pieces():
            got.append(piece)

    with pytest.raises(StreamInterrupted):
        await read()
    assert got
    assert len(comet.requests) == 1


def test_a_generator_is_retried_when_it_failed_before_yielding(
    comet: FakeProvider, chain: tuple[Provider, Provider]
) -> None:
    comet.fail(502, times=1)

    @with_fallback(*chain, retry=QUICK)
    def pieces(client: Any = None) -> Any:
        stream = client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
        for chunk in stream:
            yield chunk.choices[0].delta.content or ""

    assert "".join(pieces()) == "[comet] hello"
    assert len(comet.requests) == 2


@pytest.mark.asyncio
@pytest.mark.parametrize("form", ["decorator", "proxy"])
async def test_hedging_counts_a_retry_as_an_attempt(
    comet: FakeProvider, backup: FakeProvider, chain: tuple[Provider, Provider], form: str
) -> None:
    comet.fail(500, times=1)
    events: list[Event] = []
    settings = {"hedge": 2.0, "retry": QUICK, "on_attempt": events.append}
    assert text(await run_async(chain, form, settings)) == "[comet] hello"
    assert [(e.provider, e.outcome) for e in events] == [
        ("comet", "failure"),
        ("comet", "success"),
    ]
    assert backup.requests == []


@pytest.mark.asyncio
async def test_a_hedged_retry_pause_lets_a_running_attempt_win(
    comet: FakeProvider, backup: FakeProvider, chain: tuple[Provider, Provider]
) -> None:
    # comet is slow, so the backup is hedged in; it fails at once and its retry waits
    # out a Retry-After, while comet's running attempt wins meanwhile.
    comet.hang(0.3, times=1)
    backup.fail(503, times=1, retry_after="3")
    settings = {"hedge": 0.05, "retry": Retry(max_wait=5.0), "breaker": None}
    started = time.monotonic()
    answer = await run_async(chain, "decorator", settings)
    assert time.monotonic() - started < 2.5  # not held up by the backup's 3 s pause
    assert answer == "comet:[comet] hello"
    assert len(backup.requests) == 1


@pytest.mark.asyncio
async def test_cancelling_a_call_during_its_retry_pause_is_not_swallowed(
    comet: FakeProvider, chain: tuple[Provider, Provider]
) -> None:
    comet.fail(503, times=1, retry_after="5")
    task = asyncio.ensure_future(run_async(chain, "decorator", {"retry": Retry(max_wait=10)}))
    while not comet.requests:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(comet.requests) == 1


def test_a_retry_sent_to_workers_draws_its_own_jitter() -> None:
    # Pickled with a decorated function sent by value: each worker must not replay a
    # copy of this process's random state (their backoffs would all be the same).
    data = pickle.dumps(Retry())
    assert len({pickle.loads(data).random() for _ in range(8)}) == 8
