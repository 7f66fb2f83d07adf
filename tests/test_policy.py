"""What fails over: the policy on real errors from the openai client, fault kinds, Retry-After."""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import json
from collections.abc import Callable
from typing import Any

import openai
import pytest
from conftest import MESSAGES, NO_BREAKER

from failover import FailoverError, Provider, StreamInterrupted, with_fallback
from failover._policy import Fault, Policy, fault_kind, provider_fault, retry_after
from failover._tracking import Tracked
from failover.testing import FakeProvider


def chat(client: Any) -> str:
    reply = client.chat.completions.create(model="m", messages=MESSAGES)
    return str(reply.choices[0].message.content)


def raised(call: Callable[[], object]) -> Exception:
    """The exception ``call`` raises (it must raise one)."""
    with pytest.raises(Exception) as info:
        call()
    return info.value


def call_error(fake: FakeProvider, *, tracked: bool = False, **client_kwargs: Any) -> Exception:
    """The error a chat call on a fresh real client of ``fake`` raises (it must raise)."""
    with fake.client(**client_kwargs) as client:
        return raised(lambda: chat(Tracked(client) if tracked else client))


def status_error(fake: FakeProvider, status: int, **kwargs: Any) -> Exception:
    """The error the real openai client raises when ``fake`` answers ``status`` once."""
    fake.fail(status, times=1, **kwargs)
    return call_error(fake)


def asker(chain: tuple[Provider, Provider], **kwargs: Any) -> Callable[[], str]:
    @with_fallback(*chain, **NO_BREAKER, **kwargs)
    def ask(client: Any = None) -> str:
        return chat(client)

    return ask


# -- the default policy on real errors -----------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 400, 401, 403, 404, 408, 422, 429])
def test_status_errors_fail_over(comet: FakeProvider, status: int) -> None:
    exc = status_error(comet, status)
    assert isinstance(exc, openai.APIStatusError)
    assert exc.status_code == status
    assert Policy().fails_over(exc)


def test_wrong_api_key_fails_over(comet: FakeProvider) -> None:
    exc = call_error(comet, api_key="sk-wrong")
    assert isinstance(exc, openai.AuthenticationError)
    assert Policy().fails_over(exc)


def test_connection_reset_fails_over(comet: FakeProvider) -> None:
    comet.reset(times=1)
    exc = call_error(comet)
    assert isinstance(exc, openai.APIConnectionError)
    assert Policy().fails_over(exc)


def test_timeout_fails_over(comet: FakeProvider) -> None:
    comet.hang(5, times=1)
    exc = call_error(comet, timeout=0.3)
    assert isinstance(exc, openai.APITimeoutError)
    assert Policy().fails_over(exc)


def test_garbage_body_through_a_tracked_client_fails_over(comet: FakeProvider) -> None:
    comet.garbage(times=1)
    exc = call_error(comet, tracked=True)
    assert isinstance(exc, json.JSONDecodeError)
    assert Policy().fails_over(exc)


def test_garbage_body_inside_a_decorated_function_fails_over(
    comet: FakeProvider, backup: FakeProvider, chain: tuple[Provider, Provider]
) -> None:
    comet.garbage(times=1)
    assert asker(chain)() == "[backup] hello"


def test_callers_own_value_error_does_not_fail_over() -> None:
    exc = raised(lambda: json.loads("x"))
    assert isinstance(exc, ValueError)
    assert not Policy().fails_over(exc)


def test_callers_own_error_in_a_decorated_function_is_raised(
    backup: FakeProvider, chain: tuple[Provider, Provider]
) -> None:
    @with_fallback(*chain, **NO_BREAKER)
    def ask(client: Any = None) -> object:
        return json.loads("x")

    with pytest.raises(json.JSONDecodeError):
        ask()
    assert backup.requests == []


@pytest.mark.parametrize(
    "exc",
    [KeyboardInterrupt(), SystemExit(1), GeneratorExit(), asyncio.CancelledError()],
    ids=lambda e: type(e).__name__,
)
@pytest.mark.parametrize("on", [None, BaseException, lambda e: True], ids=["default", "type", "fn"])
def test_interrupts_never_fail_over(exc: BaseException, on: Any) -> None:
    assert not Policy(on).fails_over(exc)


# -- content refusals ----------------------------------------------------------

REFUSAL_CODES = ["content_policy_violation", "content_filter"]


@pytest.mark.parametrize("code", REFUSAL_CODES)
def test_content_refusal_is_not_failed_over_by_default(comet: FakeProvider, code: str) -> None:
    exc = status_error(comet, 400, code=code)
    assert isinstance(exc, openai.BadRequestError)
    assert not Policy().fails_over(exc)
    assert Policy(on=openai.BadRequestError).fails_over(exc)


@pytest.mark.parametrize("code", REFUSAL_CODES)
def test_content_refusal_is_raised_at_once(
    comet: FakeProvider, backup: FakeProvider, chain: tuple[Provider, Provider], code: str
) -> None:
    comet.fail(400, code=code)
    with pytest.raises(openai.BadRequestError) as info:
        asker(chain)()
    assert not isinstance(info.value, FailoverError)
    assert info.value.code == code
    assert backup.requests == []


@pytest.mark.parametrize("code", REFUSAL_CODES)
def test_content_refusal_fails_over_when_asked(
    comet: FakeProvider, chain: tuple[Provider, Provider], code: str
) -> None:
    comet.fail(400, code=code)
    assert asker(chain, on=openai.BadRequestError)() == "[backup] hello"


# -- on= -----------------------------------------------------------------------


@pytest.fixture
def errors(comet: FakeProvider) -> dict[str, Exception]:
    """Real errors by name: a 429, a 500 and a connection reset."""
    comet.reset(times=1)
    reset = call_error(comet)
    return {
        "429": status_error(comet, 429),
        "500": status_error(comet, 500),
        "reset": reset,
        "bug": ValueError("the caller's own"),
    }


@pytest.mark.parametrize(
    ("on", "expected"),
    [
        (openai.RateLimitError, {"429"}),
        ((openai.RateLimitError, openai.APIConnectionError), {"429", "reset"}),
        (lambda e: getattr(e, "status_code", None) == 500, {"500"}),
        (ValueError, {"bug"}),
    ],
    ids=["type", "tuple", "predicate", "any-type"],
)
def test_on_replaces_the_default_rule(
    errors: dict[str, Exception], on: Any, expected: set[str]
) -> None:
    policy = Policy(on=on)
    assert {name for name, exc in errors.items() if policy.fails_over(exc)} == expected


def test_on_a_type_applies_in_a_decorated_function(
    comet: FakeProvider, backup: FakeProvider, chain: tuple[Provider, Provider]
) -> None:
    comet.fail(500)
    with pytest.raises(openai.InternalServerError):
        asker(chain, on=openai.RateLimitError)()
    assert backup.requests == []


# -- fault_kind ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (500, Fault.UNWELL),
        (502, Fault.UNWELL),
        (503, Fault.UNWELL),
        (401, Fault.UNWELL),
        (403, Fault.UNWELL),
        (408, Fault.UNWELL),
        (429, Fault.UNWELL),
        (400, Fault.REQUEST),
        (404, Fault.REQUEST),
        (422, Fault.REQUEST),
    ],
)
def test_fault_kind_of_status_errors(comet: FakeProvider, status: int, kind: Fault) -> None:
    assert fault_kind(status_error(comet, status)) is kind


def test_fault_kind_of_connection_errors(comet: FakeProvider) -> None:
    comet.reset(times=1)
    assert fault_kind(call_error(comet)) is Fault.UNWELL
    comet.hang(5, times=1)
    assert fault_kind(call_error(comet, timeout=0.3)) is Fault.UNWELL


@pytest.mark.parametrize("code", REFUSAL_CODES)
def test_fault_kind_of_content_refusals(comet: FakeProvider, code: str) -> None:
    assert fault_kind(status_error(comet, 400, code=code)) is Fault.REFUSAL


def test_other_400_codes_are_request_faults(comet: FakeProvider) -> None:
    assert fault_kind(status_error(comet, 400, code="context_length_exceeded")) is Fault.REQUEST


# -- retry_after ---------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_in_seconds(comet: FakeProvider, status: int) -> None:
    assert retry_after(status_error(comet, status, retry_after=7)) == 7.0


def test_retry_after_as_an_http_date(comet: FakeProvider) -> None:
    when = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    when += datetime.timedelta(seconds=30)
    exc = status_error(comet, 429, retry_after=email.utils.format_datetime(when, usegmt=True))
    assert retry_after(exc, now=lambda: when.timestamp() - 30) == 30.0
    assert retry_after(exc) == pytest.approx(30, abs=3)


def test_retry_after_in_the_past_is_zero(comet: FakeProvider) -> None:
    past = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)
    exc = status_error(comet, 503, retry_after=email.utils.format_datetime(past, usegmt=True))
    assert retry_after(exc) == 0.0


@pytest.mark.parametrize("value", [None, "soon"], ids=["missing", "unparseable"])
def test_retry_after_missing_or_unparseable_is_none(comet: FakeProvider, value: Any) -> None:
    assert retry_after(status_error(comet, 429, retry_after=value)) is None


@pytest.mark.parametrize("status", [500, 502, 400, 404])
def test_retry_after_only_on_429_and_503(comet: FakeProvider, status: int) -> None:
    assert retry_after(status_error(comet, status, retry_after=7)) is None


def test_retry_after_of_a_connection_error_is_none(comet: FakeProvider) -> None:
    comet.reset(times=1)
    assert retry_after(call_error(comet)) is None


def test_garbage_body_from_a_client_failover_did_not_hand_out_is_not_marked(
    comet: FakeProvider,
) -> None:
    # Type alone cannot tell it from the caller's own ValueError: only tracking can.
    comet.garbage(times=1)
    exc = call_error(comet)
    assert isinstance(exc, json.JSONDecodeError)
    assert not Policy().fails_over(exc)


# -- provider_fault: what a wrapper was raised from ------------------------------


class Wrapper(Exception):
    """A framework's own error (instructor, pydantic-ai), raised ``from`` the client's."""


def wrap(exc: BaseException, *, explicit: bool = True) -> Exception:
    """``exc`` re-raised as a Wrapper, with ``from`` or (``explicit=False``) without."""
    try:
        try:
            raise exc
        except BaseException as inner:
            if explicit:
                raise Wrapper("wrapped") from inner
            raise Wrapper("raised while handling")  # noqa: B904 - the point: no `from`
    except Wrapper as outer:
        return outer


def test_provider_fault_follows_the_cause_chain(comet: FakeProvider) -> None:
    exc = status_error(comet, 503)
    assert provider_fault(exc) is exc
    assert provider_fault(wrap(exc)) is exc
    assert provider_fault(wrap(wrap(exc))) is exc  # instructor: via tenacity's RetryError


def test_provider_fault_does_not_follow_a_mere_context(comet: FakeProvider) -> None:
    exc = status_error(comet, 503)
    error = wrap(exc, explicit=False)
    assert error.__cause__ is None
    assert error.__context__ is not None
    assert provider_fault(error) is None
    assert not Policy().fails_over(error)


def test_provider_fault_survives_a_cause_cycle() -> None:
    a, b = Wrapper("a"), Wrapper("b")
    a.__cause__, b.__cause__ = b, a
    assert provider_fault(a) is None


def test_provider_fault_stops_at_a_stream_that_reached_the_caller(comet: FakeProvider) -> None:
    exc = status_error(comet, 503)
    interrupted = StreamInterrupted("comet", 3, exc)
    interrupted.__cause__ = exc
    assert provider_fault(wrap(interrupted)) is None
    assert not Policy().fails_over(wrap(interrupted))


def test_on_a_type_matches_the_fault_a_framework_wrapped(comet: FakeProvider) -> None:
    error = wrap(status_error(comet, 429))
    assert Policy(on=openai.RateLimitError).fails_over(error)
    assert not Policy(on=openai.APIConnectionError).fails_over(error)


def test_an_on_predicate_sees_what_the_body_raised(comet: FakeProvider) -> None:
    error = wrap(status_error(comet, 503))
    seen: list[BaseException] = []
    Policy(on=lambda exc: seen.append(exc) or True).fails_over(error)
    assert seen == [error]


def test_a_wrapped_interrupt_never_fails_over(comet: FakeProvider) -> None:
    interrupt = KeyboardInterrupt()
    interrupt.__cause__ = status_error(comet, 503)
    assert not Policy().fails_over(interrupt)
