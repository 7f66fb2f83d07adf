"""The circuit breaker: its pure rules, and its behaviour over real HTTP."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import email.utils
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import openai
import pytest
from conftest import MESSAGES, chat_text, provider

import failover
from failover import (
    Breaker,
    FailoverError,
    Provider,
    ProviderSkipped,
    State,
    _activity,
    _chain,
    _health,
    fallback_clients,
    with_fallback,
)
from failover._activity import ACTIVITY, GATHER_AT, Activity, Tally
from failover._health import (
    FRESH,
    STORE,
    Health,
    MemoryStore,
    Reason,
    Verdict,
    admit,
    bucket_start,
    count_skip,
    failed,
    fold,
    succeeded,
)
from failover._policy import Fault
from failover._providers import Endpoint, endpoint_for
from failover.testing import FakeProvider

T0 = 1_000_000.0


class Clock:
    """A fake clock: ``clock()`` reads it, ``clock.advance(s)`` moves it on."""

    def __init__(self) -> None:
        self.now = [T0]

    def __call__(self) -> float:
        return self.now[0]

    def advance(self, seconds: float) -> None:
        self.now[0] += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


def breaker(clock: Clock, failures: int = 3, cooldown: float = 5.0) -> Breaker:
    return Breaker(failures=failures, cooldown=cooldown, max_cooldown=60.0, clock=clock)


# -- how a call is made: form x sync/async ---------------------------------------

HOW = [f"{form}-{mode}" for mode in ("sync", "async") for form in ("decorator", "proxy", "block")]


def chat(client: Any = None) -> str:
    return str(
        client.chat.completions.create(model="m", messages=MESSAGES).choices[0].message.content
    )


async def achat(client: Any = None) -> str:
    reply = await client.chat.completions.create(model="m", messages=MESSAGES)
    return str(reply.choices[0].message.content)


def ask_sync(chain: tuple[Provider, ...], form: str, settings: dict[str, Any]) -> str:
    body = chat
    if form == "decorator":
        return failover.with_fallback(*chain, **settings)(body)()
    clients = fallback_clients(*chain, **settings)
    if form == "proxy":
        with clients as client:
            return body(client)
    for attempt in clients:
        with attempt as client:
            text = body(client)
    return text


async def ask_async(chain: tuple[Provider, ...], form: str, settings: dict[str, Any]) -> str:
    body = achat
    if form == "decorator":
        return await failover.with_fallback(*chain, **settings)(body)()
    clients = fallback_clients(*chain, **settings)
    if form == "proxy":
        async with clients as client:
            return await body(client)
    async for attempt in clients:
        async with attempt as client:
            text = await body(client)
    return text


def ask(chain: tuple[Provider, ...], how: str = "decorator-sync", **settings: Any) -> Any:
    """One call; returns the answer, or the exception it raised."""
    form, mode = how.split("-")
    try:
        if mode == "async":
            return asyncio.run(ask_async(chain, form, settings))
        return ask_sync(chain, form, settings)
    except Exception as exc:
        return exc


def state(name: str) -> dict[str, Any]:
    return failover.health()[name]


# -- the pure rules ------------------------------------------------------------

B = Breaker(failures=3, cooldown=5.0, max_cooldown=60.0)
OPEN = Health(state=State.OPEN, consecutive_failures=3, open_until=T0 + 5, cooldown=5.0)


def test_breaker_defaults() -> None:
    b = Breaker()
    assert (b.failures, b.cooldown, b.max_cooldown) == (3, 5.0, 60.0)
    assert (b.failure_rate, b.min_calls, b.window) == (0.25, 20, 30.0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"failures": 0},
        {"cooldown": -1},
        {"cooldown": 10, "max_cooldown": 5},
        {"failure_rate": 0},
        {"failure_rate": 1.5},
        {"min_calls": 0},
        {"window": 0},
        {"cooldown": float("nan")},
    ],
    ids=[
        "no-failures",
        "negative-cooldown",
        "max-below-cooldown",
        "zero-rate",
        "rate-above-one",
        "no-min-calls",
        "no-window",
        "nan-cooldown",
    ],
)
def test_breaker_rejects_bad_settings(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="Breaker"):
        Breaker(**kwargs)


def test_state_values() -> None:
    assert [s.value for s in State] == ["closed", "open", "half_open"]
    assert State.HALF_OPEN == "half_open"


def test_admit_tries_a_closed_provider_and_changes_nothing() -> None:
    # Attempts are counted when they end: the healthy path's admission writes nothing.
    h = Health()
    assert admit(h, B, T0, force=False) == (h, Verdict.TRY)


def test_admit_skips_an_open_provider_before_its_cooldown() -> None:
    h, verdict = admit(OPEN, B, T0 + 4.9, force=False)
    assert verdict is Verdict.SKIP
    assert h is OPEN  # the engine counts the skip once it is sure (count_skip)
    assert (count_skip(h).skipped, count_skip(h).calls) == (OPEN.skipped + 1, OPEN.calls)


def test_admit_probes_after_the_cooldown_and_then_skips_others() -> None:
    h, verdict = admit(OPEN, B, T0 + 5, force=False)
    assert verdict is Verdict.PROBE
    assert (h.state, h.calls) == (State.HALF_OPEN, OPEN.calls)
    h, verdict = admit(h, B, T0 + 5.1, force=False)
    assert verdict is Verdict.SKIP


def test_admit_forced_tries_an_open_provider() -> None:
    assert admit(OPEN, B, T0, force=True)[1] is Verdict.TRY


def test_succeeded_closes_and_counts_failovers_served() -> None:
    h = succeeded(OPEN, B, T0, after_failover=True)
    assert (h.state, h.consecutive_failures, h.open_until, h.failovers_served) == (
        State.CLOSED,
        0,
        0.0,
        1,
    )
    assert succeeded(Health(), B, T0, after_failover=False).failovers_served == 0


def fail_n(h: Health, n: int, kind: Fault = Fault.UNWELL, now: float = T0) -> Health:
    for _ in range(n):
        h = failed(h, B, now, kind, None, probe=False)
    return h


def test_failed_opens_after_failures_in_a_row() -> None:
    h = fail_n(Health(), 2)
    assert (h.state, h.consecutive_failures, h.failures) == (State.CLOSED, 2, 2)
    h = fail_n(h, 1)
    assert (h.state, h.open_until) == (State.OPEN, T0 + 5)


@pytest.mark.parametrize("kind", [Fault.REQUEST, Fault.REFUSAL])
def test_failed_with_a_request_fault_breaks_the_row(kind: Fault) -> None:
    h = fail_n(fail_n(Health(), 2), 1, kind)
    assert (h.state, h.consecutive_failures, h.failures) == (State.CLOSED, 0, 3)
    assert fail_n(h, 2).state is State.CLOSED


@pytest.mark.parametrize(("wait", "until"), [(30.0, T0 + 30), (3600.0, T0 + 60)])
def test_failed_with_retry_after_opens_at_once_capped(wait: float, until: float) -> None:
    h = failed(Health(), B, T0, Fault.UNWELL, wait, probe=False)
    assert (h.state, h.open_until) == (State.OPEN, until)


def probes(h: Health, costs: list[tuple[float, bool]]) -> list[float]:
    """The cooldown after each failed probe that took ``elapsed`` (``timed_out``) seconds."""
    seen = []
    for elapsed, timed_out in costs:
        now = h.open_until
        h = admit(h, B, now, force=False)[0]
        h = failed(h, B, now, Fault.UNWELL, None, True, elapsed, timed_out)
        assert (h.state, h.reason) == (State.OPEN, Reason.PROBE)
        seen.append(h.open_until - now)
    return seen


def test_a_slow_failed_probe_doubles_the_cooldown_up_to_the_cap() -> None:
    # A hang cut short by a timeout, however short; or any failure that took >= 1 s.
    costs = [(0.2, True), (1.0, False), (3.0, False), (0.05, True), (30.0, True)]
    assert probes(OPEN, costs) == [10, 20, 40, 60, 60]


def test_a_fast_failed_probe_keeps_the_base_cooldown() -> None:
    assert probes(OPEN, [(0.02, False)] * 4) == [5, 5, 5, 5]
    # After slow probes, a fast one goes back to the base cooldown.
    assert probes(OPEN, [(0.2, True), (0.2, True), (0.02, False), (0.2, True)]) == [10, 20, 5, 10]


# -- over HTTP: opening and skipping -------------------------------------------

UNWELL: dict[str, Callable[[FakeProvider], None]] = {
    "reset": lambda f: f.reset(),
    "timeout": lambda f: f.hang(5),
    "garbage": lambda f: f.garbage(),
    **{str(s): (lambda f, s=s: f.fail(s)) for s in (401, 403, 408, 429, 500, 503)},
}


@pytest.mark.parametrize("fault", UNWELL.values(), ids=UNWELL.keys())
def test_unwell_faults_open_the_breaker(
    comet: FakeProvider, backup: FakeProvider, clock: Clock, fault: Callable[..., None]
) -> None:
    fault(comet)
    chain = (provider(comet, timeout=0.2), provider(backup))
    for _ in range(3):
        assert ask(chain, breaker=breaker(clock), retry=None) == "[backup] hello"
    assert state("comet")["state"] is State.OPEN
    assert state("comet")["reason"] is Reason.CONSECUTIVE
    assert ask(chain, breaker=breaker(clock), retry=None) == "[backup] hello"
    assert len(comet.requests) == 3  # the fourth call skipped it


@pytest.mark.parametrize("how", HOW)
def test_open_provider_is_skipped_in_every_form(
    comet: FakeProvider, backup: FakeProvider, chain: tuple[Provider, Provider], how: str
) -> None:
    comet.fail(500)
    for _ in range(3):
        assert ask(chain, how, retry=None) == "[backup] hello"  # the default breaker
    backup.fail(503, times=1)
    error = ask(chain, how, retry=None)
    assert isinstance(error, FailoverError)
    skipped, tried = error.attempts
    assert skipped.skipped is True
    assert isinstance(skipped.error, ProviderSkipped)
    assert error.exceptions[0] is skipped.error
    assert (tried.provider, tried.skipped) == ("backup", False)
    assert len(comet.requests) == 3


@pytest.mark.parametrize("status", [400, 404, 422])
def test_other_client_errors_fail_over_without_counting_and_break_the_row(
    comet: FakeProvider, chain: tuple[Provider, Provider], clock: Clock, status: int
) -> None:
    for fault in (500, 500, status, 500, 500):
        comet.fail(fault, times=1)
        assert ask(chain, breaker=breaker(clock), retry=None) == "[backup] hello"
    assert state("comet")["state"] is State.CLOSED
    assert state("comet")["consecutive_failures"] == 2
    assert ask(chain, breaker=breaker(clock)) == "[comet] hello"


@pytest.mark.parametrize("how", HOW)
def test_content_refusal_is_raised_at_once_and_does_not_count(
    comet: FakeProvider,
    backup: FakeProvider,
    chain: tuple[Provider, Provider],
    clock: Clock,
    how: str,
) -> None:
    comet.fail(500, times=2)
    comet.fail(400, times=1, code="content_policy_violation")
    ask(chain, how, breaker=breaker(clock), retry=None)
    ask(chain, how, breaker=breaker(clock), retry=None)
    refusal = ask(chain, how, breaker=breaker(clock), retry=None)
    assert isinstance(refusal, openai.BadRequestError)
    assert refusal.code == "content_policy_violation"
    assert len(backup.requests) == 2
    assert state("comet")["state"] is State.CLOSED
    assert ask(chain, how, breaker=breaker(clock)) == "[comet] hello"


def test_breaker_none_never_skips(comet: FakeProvider, chain: tuple[Provider, Provider]) -> None:
    comet.fail(500)
    for _ in range(5):
        assert ask(chain, breaker=None, retry=None) == "[backup] hello"
    assert len(comet.requests) == 5
    assert "comet" not in failover.health()


# -- half-open probes ----------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "cooldowns"),
    [("500", (5, 5, 5, 5, 5)), ("hang", (10, 20, 40, 60, 60))],
    ids=["fast-500", "timeout"],
)
@pytest.mark.parametrize("how", HOW)
def test_failed_probes_reopen_slow_ones_with_doubled_cooldown_capped(
    comet: FakeProvider,
    backup: FakeProvider,
    clock: Clock,
    fault: str,
    cooldowns: tuple[int, ...],
    how: str,
) -> None:
    comet.fail(500) if fault == "500" else comet.hang(5)
    # Only the hang needs a timeout (a slow machine must not turn a 500 into one).
    timeout = {"timeout": 0.2} if fault == "hang" else {}
    chain = (provider(comet, **timeout), provider(backup))
    settings = {"breaker": breaker(clock, failures=1)}
    ask(chain, how, **settings)
    assert state("comet")["open_until"] == T0 + 5
    for cooldown in cooldowns:
        clock.advance(state("comet")["open_until"] - clock())
        events: list[failover.Event] = []
        assert ask(chain, how, on_attempt=events.append, **settings) == "[backup] hello"
        assert [e.provider for e in events] == ["comet", "backup"]  # the probe, not retried
        assert (state("comet")["state"], state("comet")["reason"]) == (State.OPEN, Reason.PROBE)
        assert state("comet")["open_until"] == clock() + cooldown


def test_a_recovered_primary_serves_again_one_cooldown_after_its_last_fast_failure(
    comet: FakeProvider, chain: tuple[Provider, Provider], clock: Clock
) -> None:
    # Down for a minute (fast 503s), one call a second: the cadence stays at the base
    # cooldown, so the primary serves again within 2 x cooldown of recovering.
    comet.fail(503)
    settings = {"breaker": breaker(clock)}
    served, during_outage = [], 0
    for second in range(75):
        if second == 60:
            comet.recover()
            during_outage = len(comet.requests)
        served.append(ask(chain, **settings))
        clock.advance(1)
    back = served.index("[comet] hello")
    assert 60 <= back <= 60 + 2 * 5
    assert served[back:] == ["[comet] hello"] * (75 - back)
    assert during_outage <= 15


def test_successful_probe_closes(
    comet: FakeProvider, chain: tuple[Provider, Provider], clock: Clock
) -> None:
    comet.fail(500, times=1)
    settings = {"breaker": breaker(clock, failures=1)}
    ask(chain, **settings)
    clock.advance(4.9)
    assert ask(chain, **settings) == "[backup] hello"  # still open
    clock.advance(0.1)
    assert ask(chain, **settings) == "[comet] hello"  # the probe
    assert state("comet")["state"] is State.CLOSED
    assert state("comet")["open_until"] is None
    assert len(comet.requests) == 2


def open_then_hang(comet: FakeProvider, chain: tuple[Provider, Provider], clock: Clock) -> Breaker:
    """Open comet, move past its cooldown, and make its probe take a while."""
    settings = breaker(clock, failures=1)
    comet.fail(500, times=1)
    ask(chain, breaker=settings)
    clock.advance(5)
    comet.hang(0.5, times=1)
    return settings


def assert_one_probe(comet: FakeProvider, answers: list[str]) -> None:
    assert len(comet.requests) == 2  # the opening failure, then the single probe
    assert sorted(answers) == ["[backup] hello"] * 49 + ["[comet] hello"]
    assert state("comet")["state"] is State.CLOSED


def test_single_probe_across_threads(
    comet: FakeProvider, chain: tuple[Provider, Provider], clock: Clock
) -> None:
    settings = open_then_hang(comet, chain, clock)
    call = failover.with_fallback(*chain, breaker=settings)(chat)
    start = threading.Barrier(50)
    answers: list[str] = []

    def worker() -> None:
        start.wait()
        answers.append(call())

    threads = [threading.Thread(target=worker) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert_one_probe(comet, answers)


@pytest.mark.asyncio
async def test_single_probe_across_tasks(
    comet: FakeProvider, chain: tuple[Provider, Provider], clock: Clock
) -> None:
    call = failover.with_fallback(*chain, breaker=open_then_hang(comet, chain, clock))(achat)
    answers = await asyncio.gather(*(call() for _ in range(50)))
    assert_one_probe(comet, list(answers))


# -- Retry-After ---------------------------------------------------------------


def http_date(seconds: int) -> str:
    """An HTTP date ``seconds`` after the fake clock's start: dates are read on that clock."""
    when = datetime.datetime.fromtimestamp(T0 + seconds, tz=datetime.timezone.utc)
    return email.utils.format_datetime(when, usegmt=True)


@pytest.mark.parametrize("status", [429, 503])
@pytest.mark.parametrize(
    ("retry_after", "opens_for"),
    [(30, 30), ("http-date", 30), (3600, 60)],
    ids=["seconds", "http-date", "capped"],
)
def test_retry_after_opens_on_the_first_failure(
    comet: FakeProvider,
    chain: tuple[Provider, Provider],
    clock: Clock,
    status: int,
    retry_after: Any,
    opens_for: float,
) -> None:
    value = http_date(30) if retry_after == "http-date" else retry_after
    comet.fail(status, times=1, retry_after=value)
    assert ask(chain, breaker=breaker(clock)) == "[backup] hello"
    assert state("comet")["state"] is State.OPEN
    assert state("comet")["open_until"] == pytest.approx(T0 + opens_for)
    assert ask(chain, breaker=breaker(clock)) == "[backup] hello"
    assert len(comet.requests) == 1


# -- every provider open -------------------------------------------------------


def test_when_every_provider_is_open_the_soonest_to_recover_is_tried_first(
    comet: FakeProvider, backup: FakeProvider, chain: tuple[Provider, Provider], clock: Clock
) -> None:
    comet.fail(503, times=1, retry_after=30)
    backup.fail(503, times=1, retry_after=10)
    assert isinstance(ask(chain, breaker=breaker(clock)), FailoverError)
    assert ask(chain, breaker=breaker(clock)) == "[backup] hello"
    assert (len(comet.requests), len(backup.requests)) == (1, 2)


def test_when_every_provider_is_open_all_are_still_tried(
    comet: FakeProvider, backup: FakeProvider, chain: tuple[Provider, Provider], clock: Clock
) -> None:
    comet.fail(503, retry_after=10)
    backup.fail(503, retry_after=30)
    ask(chain, breaker=breaker(clock))
    error = ask(chain, breaker=breaker(clock))
    assert isinstance(error, FailoverError)
    assert [(a.provider, a.skipped) for a in error.attempts] == [
        ("comet", False),
        ("backup", False),
    ]
    assert (len(comet.requests), len(backup.requests)) == (2, 2)


# -- shared state and health() -------------------------------------------------


@pytest.mark.parametrize("how", ["decorator-sync", "proxy-async"])
def test_state_is_shared_by_chains_naming_the_same_provider(
    comet: FakeProvider, backup: FakeProvider, clock: Clock, how: str
) -> None:
    comet.fail(500)
    first = (provider(comet), provider(backup))
    second = (provider(comet), provider(backup))  # other objects, same name and base URL
    for _ in range(3):
        ask(first, "decorator-sync", breaker=breaker(clock))
    assert ask(second, how, breaker=breaker(clock)) == "[backup] hello"
    assert len(comet.requests) == 3


def test_health_counts_a_scripted_sequence(
    comet: FakeProvider, backup: FakeProvider, chain: tuple[Provider, Provider], clock: Clock
) -> None:
    settings = {"breaker": breaker(clock, failures=2), "retry": None}
    ask(chain, **settings)  # comet serves
    comet.fail(500, times=2)
    ask(chain, **settings)  # comet fails, backup serves
    ask(chain, **settings)  # comet fails and opens, backup serves
    ask(chain, **settings)  # comet skipped, backup serves
    clock.advance(5)
    assert ask(chain, **settings) == "[comet] hello"  # the probe succeeds
    report = failover.health()
    expected = {
        "comet": {
            "state": State.CLOSED,
            "consecutive_failures": 0,
            "open_until": None,
            "calls": 4,
            "failures": 2,
            "failovers_served": 0,
            "skipped": 1,
            "reason": None,
        },
        "backup": {
            "state": State.CLOSED,
            "consecutive_failures": 0,
            "open_until": None,
            "calls": 3,
            "failures": 0,
            "failovers_served": 3,
            "skipped": 0,
        },
    }
    assert {name: {k: report[name][k] for k in expected[name]} for name in report} == expected
    assert isinstance(report["comet"]["state"], State)


def test_health_while_open(
    comet: FakeProvider, chain: tuple[Provider, Provider], clock: Clock
) -> None:
    comet.fail(500)
    for _ in range(3):
        ask(chain, breaker=breaker(clock))
    assert state("comet")["state"] == "open"
    assert state("comet")["consecutive_failures"] == 3
    assert state("comet")["open_until"] == T0 + 5


# -- the failure-rate rule -------------------------------------------------------

RATE = Breaker(failures=3, cooldown=5.0, max_cooldown=60.0, failure_rate=0.25, min_calls=8)


def brownout(
    h: Health, calls: int, b: Breaker = RATE, now: float = T0, step: float = 0.1
) -> Health:
    """``calls`` calls, every third failing unwell (never two in a row), ``step`` s apart."""
    for i in range(calls):
        h, verdict = admit(h, b, now + i * step, force=False)
        if verdict is Verdict.SKIP:
            break
        if i % 3 == 2:
            h = failed(h, b, now + i * step, Fault.UNWELL, None, False)
        else:
            h = succeeded(h, b, now + i * step, after_failover=False)
    return h


def test_a_brownout_opens_by_rate_once_min_calls_were_made() -> None:
    h = brownout(Health(), 6)  # 2 of 6 failed: a third, but too few calls to judge
    assert (h.state, h.consecutive_failures) == (State.CLOSED, 1)
    h = brownout(Health(), 9)  # 3 of 9
    assert (h.state, h.reason) == (State.OPEN, Reason.RATE)
    assert h.open_until == pytest.approx(T0 + 0.8 + 5)


def test_below_the_failure_rate_stays_closed() -> None:
    b = Breaker(failure_rate=0.5, min_calls=8)
    assert brownout(Health(), 60, b).state is State.CLOSED


def test_failure_rate_none_turns_the_rule_off() -> None:
    h = brownout(Health(), 60, Breaker(failure_rate=None, min_calls=8))
    assert (h.state, h.window) == (State.CLOSED, ())


def test_the_window_forgets_calls_older_than_window() -> None:
    b = Breaker(failure_rate=0.25, min_calls=8, window=30.0)
    h = brownout(Health(), 6, b)  # 2 failures of 6, at T0
    later = T0 + 31  # those have left the window
    outcomes = [True] * 5 + [False, True, False]  # then 2 failures of 8
    for i, ok in enumerate(outcomes):
        h = admit(h, b, later + i, force=False)[0]
        if ok:
            h = succeeded(h, b, later + i, after_failover=False)
            continue
        h = failed(h, b, later + i, Fault.UNWELL, None, False)
        assert h.state is (State.OPEN if i == 7 else State.CLOSED)
    assert h.reason is Reason.RATE


def test_the_window_stays_bounded_however_long_it_runs() -> None:
    h = brownout(Health(), 5000, Breaker(failure_rate=0.9, min_calls=8, window=30.0), step=0.37)
    assert h.state is State.CLOSED
    assert 0 < len(h.window) <= 10
    assert sum(calls for _, calls, _ in h.window) <= 30 / 0.37 + 10


def test_fold_counts_clean_successes_as_succeeded_does() -> None:
    # The stores' cheap count of a clean success is the same record as the rule's.
    b = Breaker(failure_rate=0.25, window=30.0)
    h = failed(Health(), b, T0, Fault.UNWELL, None, False)._replace(consecutive_failures=0)
    for now in (T0 + 1, T0 + 1.5, T0 + 4, T0 + 20):
        assert fold(h, bucket_start(b, now), 1) == succeeded(h, b, now, after_failover=False)
    assert fold(h, None, 2).calls == h.calls + 2


def test_fold_takes_counts_back_from_where_they_went_never_below_none() -> None:
    # A count made at 3.0, gathered when the window's last bucket already started at 9.0
    # (another chain's width, or a clock that disagrees), went to that bucket: taken back
    # from the first bucket at or after 3.0 that holds calls, the sum stays right.
    h = Health(calls=5, failures=2, window=((0.0, 1, 0), (9.0, 4, 2)))
    assert fold(h, 3.0, -1).window == ((0.0, 1, 0), (9.0, 3, 2))
    assert fold(h, 0.0, -1).window == ((0.0, 0, 0), (9.0, 4, 2))
    taken = fold(h, 0.0, -3)  # more than one bucket holds
    assert (taken.calls, taken.window) == (2, ((0.0, 0, 0), (9.0, 2, 2)))
    assert fold(h, 12.0, -1).window == h.window  # (in no bucket yet: nowhere to take it from)
    # Aged out with its bucket (a call longer than the window): the newer buckets hold
    # other calls, and keep them; the record's calls still lose it.
    later = Health(calls=4, window=((65.0, 3, 0),))
    assert fold(later, 0.0, -1) == later._replace(calls=3)
    # The record was lost meanwhile (Redis restarted, its ttl passed): nothing below none.
    assert fold(Health(), 0.0, -1) == Health()
    assert fold(Health(), None, -1).calls == 0


def test_a_tally_nets_its_counts_and_takes_back_no_more_than_was_served() -> None:
    tally = Tally("comet")
    for start in (0.0, 0.0, 5.0):
        tally.append(start)
    tally.take_back(0.0)
    tally.take_back(5.0)
    assert tally.drain() == {0.0: 1}  # (net nothing at 5.0: no entry)
    activity = Activity(clock=lambda: T0)
    activity.tallies["k"] = tally
    tally.append(T0)
    activity.ended("k", "comet", failed=False, moved=False)  # gathers
    tally.take_back(T0 - 60.0)  # an older count, gathered in the current bucket
    tally.take_back(T0)  # and one more than was served there
    assert activity.view("k")["calls"] == 1  # the attempt that ended, nothing below it
    # A count whose bucket aged out of the minute before it was taken back: the calls
    # counted since stay.
    older = Tally("backup")
    activity.tallies["b"] = older
    older.append(T0 - 70.0)
    activity.view("b")
    for _ in range(3):
        older.append(T0)
    activity.view("b")
    older.take_back(T0 - 70.0)
    assert activity.view("b")["calls"] == 3


def test_a_failure_landing_while_the_first_call_starts_is_broken_by_its_success(
    comet: FakeProvider, backup: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The chain's first call checks comet is clean, then builds its client (Chain.lean):
    # another call's failure landing meanwhile is in the record it starts on, and the
    # success must still break that row.
    breaker = Breaker(failures=2, cooldown=60.0, max_cooldown=60.0)
    chain = (provider(comet), provider(backup))
    key, build = endpoint_for(chain[0]).key, Endpoint.sync_client

    def failing_meanwhile(endpoint: Endpoint) -> Any:
        STORE.update(
            key,
            "comet",
            lambda h, now: (failed(h, breaker, now, Fault.UNWELL, None, False), None),
            time.monotonic,
        )
        return build(endpoint)

    monkeypatch.setattr(Endpoint, "sync_client", failing_meanwhile)
    assert failover.with_fallback(*chain, breaker=breaker)(chat)() == "[comet] hello"
    assert STORE.peek(key).consecutive_failures == 0


def test_a_first_call_across_a_bucket_edge_is_taken_back_where_it_was_counted(
    comet: FakeProvider, backup: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The chain's first call counts through ACTIVITY.served() and store.count() (Chain.lean):
    # the take-back uses the bucket start they counted in, not a second read of the clock.
    edge = T0 + 5.0
    reads = iter([edge - 1e-6])
    crossing = lambda: next(reads, edge + 0.001)  # noqa: E731
    monkeypatch.setattr(ACTIVITY, "clock", crossing)
    rate = Breaker(failure_rate=0.5, min_calls=100, clock=Clock())
    comet.fail(500, times=1)
    decorated = failover.with_fallback(provider(comet), provider(backup), breaker=rate, retry=None)
    assert decorated(chat)() == "[backup] hello"
    minute = failover.health()["comet"]["last_minute"]
    assert (minute["calls"], minute["failures"], minute["served"]) == (1, 1, 0.0)


def test_the_memory_store_counts_clean_successes_apart_and_folds_them_in() -> None:
    store, clock = MemoryStore(), Clock()
    b = Breaker(failure_rate=0.25, window=30.0, clock=clock)
    for _ in range(3):
        store.count("k", "comet", b)
    clock.advance(3.0)  # the next bucket
    store.count("k", "comet", b)
    assert store.peek("k") is FRESH  # no record is built per healthy call
    (record,), _ = store.read(["k"], clock)
    assert (record.calls, [c for _, c, _ in record.window]) == (4, [3, 1])
    assert store.snapshot() == {"k": ("comet", record)}


def test_a_long_tally_is_folded_in_though_nothing_reads_it() -> None:
    store, b = MemoryStore(), Breaker(failure_rate=0.25, clock=Clock())
    for _ in range(GATHER_AT + 1):
        store.count("k", "comet", b)
    assert store.peek("k").calls == GATHER_AT + 1  # memory stays bounded


@pytest.mark.parametrize("kind", ["memory", "activity"])
def test_successes_counted_from_many_threads_at_once_are_all_counted(kind: str) -> None:
    store, activity = MemoryStore(), Activity()
    b = Breaker(failure_rate=0.25, clock=Clock())
    count = (
        (lambda: store.count("k", "comet", b))
        if kind == "memory"
        else (lambda: activity.served("k", "comet"))
    )
    per_thread, threads = 3 * GATHER_AT, 4  # each thread also gathers, now and then
    start = threading.Barrier(threads)

    def run() -> None:
        start.wait()
        for _ in range(per_thread):
            count()

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    total = per_thread * threads
    if kind == "memory":
        assert store.read(["k"], b.clock)[0][0].calls == total
    else:
        assert activity.view("k")["calls"] == total


def test_request_faults_count_as_calls_not_failures() -> None:
    h = Health()
    for i in range(20):
        h = admit(h, RATE, T0 + i, force=False)[0]
        h = failed(h, RATE, T0 + i, Fault.REQUEST, None, False)
    assert h.state is State.CLOSED
    assert sum(c for _, c, _ in h.window) == 20
    assert sum(f for *_, f in h.window) == 0


@pytest.mark.parametrize("how", HOW)
def test_a_brownout_over_http_opens_by_rate_in_every_form(
    comet: FakeProvider, backup: FakeProvider, clock: Clock, how: str
) -> None:
    for _ in range(10):
        comet.hang(0, times=2)  # answers normally
        comet.fail(500, times=1)
    chain = (provider(comet), provider(backup))
    settings = {"breaker": dataclasses.replace(RATE, clock=clock), "retry": None}
    answers = [ask(chain, how, **settings) for _ in range(12)]
    assert state("comet")["state"] is State.OPEN
    assert state("comet")["reason"] is Reason.RATE
    assert state("comet")["consecutive_failures"] == 1  # never two in a row
    assert len(comet.requests) == 9  # 3 of 9 failed: the breaker opened, then skipped
    assert answers[9:] == ["[backup] hello"] * 3


def test_a_brownout_with_the_rate_rule_off_never_opens(
    comet: FakeProvider, backup: FakeProvider, clock: Clock
) -> None:
    for _ in range(10):
        comet.hang(0, times=2)
        comet.fail(500, times=1)
    chain = (provider(comet), provider(backup))
    off = Breaker(failure_rate=None, clock=clock)
    for _ in range(30):
        ask(chain, breaker=off, retry=None)
    assert state("comet")["state"] is State.CLOSED
    assert len(comet.requests) == 30


def test_opening_by_rate_is_logged(
    comet: FakeProvider, backup: FakeProvider, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    for _ in range(3):
        comet.hang(0, times=2)
        comet.fail(500, times=1)
    chain = (provider(comet), provider(backup))
    caplog.set_level(logging.WARNING, logger="failover")
    b = Breaker(failure_rate=0.25, min_calls=8, clock=clock)
    for _ in range(9):
        ask(chain, breaker=b, retry=None)
    last = [r.getMessage() for r in caplog.records if r.name == "failover"][-1]
    assert "circuit open (rate); trying backup" in last


def _state(fake: FakeProvider) -> Health:
    key = endpoint_for(provider(fake)).key
    return STORE.snapshot().get(key, ("", Health()))[1]


# -- the breaker: "failures in a row" -------------------------------------------------------


def test_success_between_concurrent_faults_breaks_the_row(
    comet: FakeProvider, backup: FakeProvider
) -> None:
    breaker = Breaker(failures=2, cooldown=60.0, max_cooldown=60.0)
    admitted, go = threading.Event(), threading.Event()

    @with_fallback(provider(comet), provider(backup), breaker=breaker)
    def slow(client: Any = None) -> str:
        admitted.set()
        assert go.wait(5)
        return chat_text(client)

    @with_fallback(provider(comet), provider(backup), breaker=breaker, retry=None)
    def fast(client: Any = None) -> str:
        return chat_text(client)

    result: list[str] = []
    worker = threading.Thread(target=lambda: result.append(slow()))
    worker.start()
    assert admitted.wait(5)  # the slow call was admitted on comet while it was clean
    comet.fail(500, times=1)
    assert fast() == "[backup] hello"  # fault 1
    go.set()
    worker.join(5)
    assert result == ["[comet] hello"]  # a success: the row is broken
    comet.fail(500, times=1)
    assert fast() == "[backup] hello"  # fault 1 of a new row
    assert _state(comet).state is State.CLOSED
    assert fast() == "[comet] hello"


def test_late_failure_does_not_shorten_a_doubled_open_window() -> None:
    breaker = Breaker(failures=2, cooldown=1.0, max_cooldown=60.0)
    now = 1000.0
    opened = Health(State.OPEN, consecutive_failures=3, open_until=now + 8.0, cooldown=8.0)
    after = failed(opened, breaker, now, Fault.UNWELL, None, probe=False)
    assert after.state is State.OPEN
    assert after.open_until >= opened.open_until
    assert after.cooldown == 8.0  # the next failed probe doubles from here


class _Spy(MemoryStore):
    """A memory store that says which of its entry points each call used."""

    def __init__(self) -> None:
        super().__init__()
        self.used: list[str] = []

    def update(self, key: str, name: str, change: Any, clock: Any) -> Any:
        self.used.append("update")
        return super().update(key, name, change, clock)

    async def aupdate(self, key: str, name: str, change: Any, clock: Any) -> Any:
        self.used.append("aupdate")
        return super().update(key, name, change, clock)

    def count(self, key: str, name: str, breaker: Breaker) -> float | None:
        self.used.append("count")
        return super().count(key, name, breaker)


@pytest.mark.parametrize("how", HOW)
def test_healthy_calls_are_all_counted_through_long_tallies(
    comet: FakeProvider, backup: FakeProvider, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The healthy path appends to the store's and the activity's tallies itself, and
    # leaves a missing or long one to count() / served(), which gather it: whichever
    # does, every success counts once, in the record, its window and the last minute.
    for module in (_chain, _health, _activity):
        monkeypatch.setattr(module, "GATHER_AT", 2)
    chain = (provider(comet), provider(backup))
    rate = Breaker(failure_rate=0.5, min_calls=100)
    for _ in range(7):
        assert ask(chain, how, breaker=rate) == "[comet] hello"
    seen, key = failover.health()["comet"], endpoint_for(chain[0]).key
    assert (seen["calls"], seen["last_minute"]["calls"]) == (7, 7)
    assert sum(calls for _, calls, _ in STORE.peek(key).window) == 7
    assert max(len(STORE.tallies.get(key, ())), len(ACTIVITY.tallies.get(key, ()))) <= 3


def _one_chain(
    chain: tuple[Provider, ...], how: str, before: Callable[[int], object], **settings: Any
) -> list[str]:
    """Three calls on one decorated function or drop-in client (in one event loop), each
    after ``before(i)``: from the second on, each runs on what the first built."""
    form, mode = how.split("-")
    if mode == "sync":
        if form == "decorator":
            decorated = failover.with_fallback(*chain, **settings)(chat)
            return [(before(i), decorated())[1] for i in range(3)]
        with fallback_clients(*chain, **settings) as client:
            return [(before(i), chat(client))[1] for i in range(3)]

    async def calls() -> list[str]:
        if form == "decorator":
            decorated = failover.with_fallback(*chain, **settings)(achat)
            return [(before(i), await decorated())[1] for i in range(3)]
        async with fallback_clients(*chain, **settings) as client:
            return [(before(i), await achat(client))[1] for i in range(3)]

    return asyncio.run(calls())


@pytest.mark.parametrize("how", [how for how in HOW if not how.startswith("block")])
def test_a_call_counted_as_it_started_counts_once_when_it_fails(
    comet: FakeProvider, backup: FakeProvider, how: str
) -> None:
    # A healthy call is counted as served before it is sent (Chain.ready); its failure
    # takes that back: one call, one failure, in the record, its window and the last minute.
    chain = (provider(comet), provider(backup))
    rate = Breaker(failure_rate=0.5, min_calls=100)
    fail_second = lambda i: i == 1 and comet.fail(500, times=1)  # noqa: E731
    texts = _one_chain(chain, how, fail_second, breaker=rate, retry=None)
    assert texts == ["[comet] hello", "[backup] hello", "[comet] hello"]
    record = STORE.peek(endpoint_for(chain[0]).key)
    assert (record.calls, record.failures, record.consecutive_failures) == (3, 1, 0)
    assert [bucket[1:] for bucket in record.window] == [(3, 1)]
    minute = failover.health()["comet"]["last_minute"]
    assert (minute["calls"], minute["failures"]) == (3, 1)
    assert minute["served"] == pytest.approx(2 / 3)  # the process's 3 calls: backup served one


def test_a_call_counted_as_it_started_is_unserved_when_the_caller_raises(
    comet: FakeProvider, backup: FakeProvider
) -> None:
    # The caller's own error after comet answered: comet served no call, but was called
    # (its attempt is in the last minute); the record counts nothing, as for a call that
    # was not counted as it started (the full path).
    @failover.with_fallback(provider(comet), provider(backup))
    def answered(client: Any = None, fail: bool = False) -> str:
        text = chat(client)
        if fail:
            raise ValueError("the caller's bug")
        return text

    assert answered() == "[comet] hello"
    with pytest.raises(ValueError, match="the caller's bug"):
        answered(fail=True)
    seen = failover.health()["comet"]
    assert (seen["calls"], seen["failures"]) == (1, 0)
    minute = seen["last_minute"]
    assert (minute["calls"], minute["failures"], minute["served"]) == (2, 0, 0.5)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_counted_call_that_fails_later_is_taken_back_where_it_was_counted(
    comet: FakeProvider,
    backup: FakeProvider,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
) -> None:
    # Counted in the bucket where it started, 70 s before it failed: taken back from
    # there, and the attempt and its failure counted where it ended (as the full path
    # does), so the last minute shows one attempt that failed and moved on.
    monkeypatch.setattr(ACTIVITY, "clock", clock)
    rate = Breaker(failure_rate=0.5, min_calls=100, window=300.0, clock=clock)
    chain = (provider(comet), provider(backup))

    late: list[float] = []

    def slow(client: Any = None) -> str:
        if late:
            clock.advance(late.pop())  # after it was counted, before it is sent
        return chat(client)

    async def aslow(client: Any = None) -> str:
        if late:
            clock.advance(late.pop())
        return await achat(client)

    decorated = failover.with_fallback(*chain, breaker=rate, retry=None)(
        slow if mode == "sync" else aslow
    )

    def call() -> Any:
        made = decorated()
        return made if mode == "sync" else asyncio.run(made)

    assert [call() for _ in range(3)] == ["[comet] hello"] * 3
    clock.advance(100.0)
    comet.fail(500, times=1)
    late.append(70.0)  # comet's attempt only
    assert call() == "[backup] hello"
    minute = failover.health()["comet"]["last_minute"]
    assert (minute["calls"], minute["failures"], minute["failover_rate"]) == (1, 1, 1.0)
    record = STORE.peek(endpoint_for(chain[0]).key)
    assert (record.calls, record.failures) == (4, 1)
    assert sum(c for _, c, _ in record.window) == 4  # none counted twice, none negative
    assert all(c >= 0 for _, c, _ in record.window)
    assert record.window[-1][1:] == (1, 1)  # the failure's bucket: its attempt, failed


def test_a_counted_call_bound_to_another_provider_is_not_the_heads(
    comet: FakeProvider, backup: FakeProvider
) -> None:
    # A call that names a response backup made goes to backup, never sent to comet: it
    # was counted as comet's as it started, and is taken back.
    chain = (provider(comet), provider(backup))
    mint = failover.with_fallback(chain[1], chain[0])(
        lambda client=None: client.responses.create(model="m", input="hi")
    )
    first = mint()

    @failover.with_fallback(*chain)
    def follow(client: Any = None, **options: Any) -> Any:
        return client.responses.create(model="m", input="hi", **options)

    follow()  # comet's
    sent = len(comet.requests)
    assert follow(previous_response_id=first.id).output_text.startswith("[backup]")
    assert len(comet.requests) == sent
    seen = failover.health()
    assert (seen["comet"]["calls"], seen["comet"]["last_minute"]["calls"]) == (1, 1)
    assert (seen["backup"]["calls"], seen["backup"]["last_minute"]["calls"]) == (2, 2)
    assert seen["backup"]["last_minute"]["served"] == pytest.approx(2 / 3)


def test_a_counted_call_cancelled_by_its_caller_counts_nothing_in_the_record(
    comet: FakeProvider, backup: FakeProvider
) -> None:
    # Cancelled while comet hangs: nothing said of comet's health, as on the full path.
    @failover.with_fallback(provider(comet), provider(backup))
    async def ask_it(client: Any = None) -> str:
        return await achat(client)

    async def main() -> None:
        assert await ask_it() == "[comet] hello"
        comet.hang(5.0, times=1)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(ask_it(), 0.2)

    asyncio.run(main())
    seen = failover.health()["comet"]
    assert (seen["calls"], seen["failures"]) == (1, 0)


@pytest.mark.parametrize("how", HOW)
def test_the_store_is_asked_only_when_something_may_change(
    comet: FakeProvider, backup: FakeProvider, clock: Clock, how: str
) -> None:
    # A healthy call only counts (as it starts); an open provider's admission is the store's to
    # decide, awaited by async drivers (a shared store answers it over the network).
    spy = _Spy()
    chain = (provider(comet), provider(backup))
    settings = {"breaker": breaker(clock, failures=1), "retry": None, "health": spy}
    assert ask(chain, how, **settings) == "[comet] hello"
    assert spy.used == ["count"]
    comet.fail(500)
    spy.used.clear()
    assert ask(chain, how, **settings) == "[backup] hello"  # comet opens
    # Its failure, and backup served a failover; a call (not a block) is counted as it
    # starts on a clean comet, and its failure takes that count back.
    started = [] if how.startswith("block") else ["count"]
    assert spy.used == [*started, "update", "update"]
    clock.advance(5.0)  # its probe is due
    spy.used.clear()
    assert ask(chain, how, **settings) == "[backup] hello"
    admission = "aupdate" if how.endswith("async") else "update"
    assert spy.used == [admission, "update", "update"]  # the probe, its failure, backup
