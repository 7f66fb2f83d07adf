"""The exceptions failover raises: FailoverError and its pairing of attempts and errors."""

from __future__ import annotations

import copy
import dataclasses
import gzip
import pickle
import re
import sys
import textwrap

import httpx2
import openai
import pytest
from conftest import MESSAGES

from failover import (
    Attempt,
    DeadlineExceeded,
    FailoverError,
    MissingAPIKey,
    Provider,
    ProviderBound,
    ProviderSkipped,
    StreamInterrupted,
    StreamTruncated,
    with_fallback,
)
from failover.testing import FakeProvider

if sys.version_info < (3, 11):  # pragma: no cover - the backport, as failover uses it
    from exceptiongroup import ExceptionGroup

# A request as openai's errors hold one (from openai 3.60 on, they must: they strip its
# credentials).
REQUEST = httpx2.Request("POST", "http://127.0.0.1/v1/chat/completions")
NOTE = re.compile(r"^failover: provider '(?P<name>[^']+)', attempt (?P<n>\d+), \d+\.\d+s$")


def fail_all(chain: tuple[Provider, Provider]) -> FailoverError:
    """Run a call on ``chain`` (whose providers were told to fail) and return its error."""

    @with_fallback(*chain, breaker=None, retry=None)
    def ask(client: openai.OpenAI | None = None) -> object:
        assert client is not None
        return client.chat.completions.create(model="m", messages=MESSAGES)  # type: ignore[arg-type]

    with pytest.raises(FailoverError) as info:
        ask()
    return info.value


@pytest.fixture
def error(
    comet: FakeProvider, backup: FakeProvider, chain: tuple[Provider, Provider]
) -> FailoverError:
    """comet answers 500, backup resets the connection: a status error and a connection one."""
    comet.fail(500)
    backup.reset()
    return fail_all(chain)


# -- FailoverError -------------------------------------------------------------


def test_is_an_exception_group(error: FailoverError) -> None:
    assert isinstance(error, ExceptionGroup)
    assert isinstance(error, Exception)


def test_exceptions_are_the_original_errors_in_attempt_order(error: FailoverError) -> None:
    assert [type(e) for e in error.exceptions] == [
        openai.InternalServerError,
        openai.APIConnectionError,
    ]


def test_attempts_pair_with_exceptions(error: FailoverError) -> None:
    assert isinstance(error.attempts, tuple)
    assert [a.provider for a in error.attempts] == ["comet", "backup"]
    assert len(error.attempts) == len(error.exceptions)
    for attempt, exc in zip(error.attempts, error.exceptions, strict=True):
        assert attempt.error is exc
        assert attempt.skipped is False
        assert attempt.elapsed >= 0


def test_each_error_has_a_note_naming_its_provider_and_attempt(error: FailoverError) -> None:
    for number, (attempt, exc) in enumerate(zip(error.attempts, error.exceptions, strict=True), 1):
        notes = [n for n in getattr(exc, "__notes__", []) if n.startswith("failover:")]
        assert len(notes) == 1, notes
        match = NOTE.match(notes[0])
        assert match, notes[0]
        assert match["name"] == attempt.provider
        assert int(match["n"]) == number


def test_a_failover_error_pickles_with_its_errors_and_without_credentials(
    error: FailoverError, comet: FakeProvider, backup: FakeProvider
) -> None:
    # A process pool sends a worker's error to the parent by pickle: openai's errors
    # alone refuse to unpickle (their __init__ wants the response), and before openai
    # 3.60 they hold the request with its Authorization header.
    data = pickle.dumps(error)
    assert comet.api_key.encode() not in data
    assert backup.api_key.encode() not in data
    again = pickle.loads(data)
    assert type(again) is FailoverError
    assert str(again) == str(error)
    assert [type(e) for e in again.exceptions] == [type(e) for e in error.exceptions]
    status = again.exceptions[0]
    assert status.status_code == 500
    assert status.response.status_code == 500
    assert "authorization" not in status.request.headers
    assert status.request.url == error.exceptions[0].request.url
    assert status.body == error.exceptions[0].body
    for attempt, exc, original in zip(
        again.attempts, again.exceptions, error.exceptions, strict=True
    ):
        assert attempt.error is exc
        assert exc.__notes__ == original.__notes__
    assert [a.provider for a in again.attempts] == ["comet", "backup"]
    assert copy.deepcopy(error).exceptions[1].request.url == error.exceptions[1].request.url


SECRET = "sk-secret-never-sent"


def sent_request(url: str = "http://127.0.0.1/v1/chat/completions?key=" + SECRET) -> httpx2.Request:
    headers = {"Authorization": f"Bearer {SECRET}", "x-api-key": SECRET, "api-key": SECRET}
    return httpx2.Request("POST", url, headers=headers, content=b'{"model": "m"}')


def gzipped_error() -> openai.InternalServerError:
    """A 503 as real APIs send it: gzipped, its request carrying the key three ways."""
    response = httpx2.Response(
        503,
        headers={"content-encoding": "gzip", "content-type": "application/json"},
        content=gzip.compress(b'{"error": {"message": "overloaded"}}'),
        request=sent_request(),
    )
    response.read()
    return openai.InternalServerError("overloaded", response=response, body=response.json())


def test_errors_of_every_kind_pickle_without_credentials() -> None:
    status = gzipped_error()
    http = httpx2.HTTPStatusError("503", request=sent_request(), response=status.response)
    nested = ExceptionGroup(
        "hedged", [gzipped_error(), openai.APIConnectionError(request=sent_request())]
    )
    attempts = [Attempt("comet", e, 0.1) for e in (status, http, nested)]
    error = FailoverError.from_attempts(attempts)
    data = pickle.dumps(error)
    assert SECRET.encode() not in data
    again = pickle.loads(data)
    assert [a.error for a in again.attempts] == list(again.exceptions)
    status, http, nested = again.exceptions
    assert status.response.json() == {"error": {"message": "overloaded"}}
    for request in (
        status.request,
        status.response.request,
        http.request,
        nested.exceptions[1].request,
    ):
        assert not {"authorization", "x-api-key", "api-key"} & set(request.headers)
        assert request.url.params["key"] == "[redacted]"
        assert request.content == b'{"model": "m"}'
    assert type(http) is httpx2.HTTPStatusError
    assert http.response.status_code == 503
    assert [type(e) for e in nested.exceptions] == [
        openai.InternalServerError,
        openai.APIConnectionError,
    ]


def test_copies_of_a_failover_error_hold_its_errors(error: FailoverError) -> None:
    copied = copy.copy(error)
    assert type(copied) is FailoverError
    assert copied.exceptions == error.exceptions
    assert [a.error for a in copied.attempts] == list(error.exceptions)
    assert copy.copy(error.attempts[0]).error is error.exceptions[0]


@pytest.mark.parametrize(
    "exc",
    [
        StreamTruncated("comet", 3),
        StreamInterrupted("comet", 4, openai.APIConnectionError(request=REQUEST)),
        ProviderSkipped("comet", "circuit open", 1.5),
        ProviderBound("backup", "comet", "resp_1"),
        DeadlineExceeded(2.5),
        MissingAPIKey("cometapi", "COMETAPI_KEY"),
    ],
    ids=type,
)
def test_failover_exceptions_pickle(exc: Exception) -> None:
    exc.add_note("a note")
    again = pickle.loads(pickle.dumps(exc))
    assert type(again) is type(exc)
    assert str(again) == str(exc)
    assert again.__notes__ == ["a note"]
    shown = {k: v for k, v in vars(exc).items() if not isinstance(v, BaseException)}
    assert {k: v for k, v in vars(again).items() if k in shown} == shown
    assert pickle.loads(pickle.dumps(Attempt("comet", exc, 0.5))).error.args == exc.args


def test_message_lists_each_provider_with_class_and_status(error: FailoverError) -> None:
    assert "comet: InternalServerError 500" in str(error)
    assert "backup: APIConnectionError" in str(error)
    assert error.message.index("comet") < error.message.index("backup")


def test_message_gives_the_status_of_each_status_error(
    comet: FakeProvider, backup: FakeProvider, chain: tuple[Provider, Provider]
) -> None:
    comet.fail(503)
    backup.fail(429)
    error = fail_all(chain)
    assert "comet: InternalServerError 503" in error.message
    assert "backup: RateLimitError 429" in error.message


# ``except*`` is a syntax error before Python 3.11 (the project supports 3.10), so the
# handler is compiled at run time rather than written out in this module.
EXCEPT_STAR = textwrap.dedent(
    """
    try:
        raise error
    except* openai.APIStatusError as group:
        caught.append(group)
    except* openai.APIConnectionError as other:
        rest.append(other)
    """
)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="except* needs Python 3.11")
def test_except_star_catches_a_group_that_keeps_only_matching_attempts(
    error: FailoverError,
) -> None:
    caught: list[BaseException] = []
    rest: list[BaseException] = []
    exec(EXCEPT_STAR, {"openai": openai, "error": error, "caught": caught, "rest": rest})
    [status_group], [connection_group] = caught, rest
    assert isinstance(status_group, FailoverError)
    assert [type(e) for e in status_group.exceptions] == [openai.InternalServerError]
    assert [a.provider for a in status_group.attempts] == ["comet"]
    assert status_group.attempts[0].error is status_group.exceptions[0]
    assert isinstance(connection_group, FailoverError)
    assert [a.provider for a in connection_group.attempts] == ["backup"]


def test_split_keeps_the_pairing(error: FailoverError) -> None:
    match, rest = error.split(openai.APIStatusError)
    assert isinstance(match, FailoverError)
    assert isinstance(rest, FailoverError)
    for part, provider in ((match, "comet"), (rest, "backup")):
        assert [a.provider for a in part.attempts] == [provider]
        assert part.attempts[0].error is part.exceptions[0]


def test_subgroup_keeps_the_pairing(error: FailoverError) -> None:
    part = error.subgroup(lambda e: isinstance(e, openai.APIConnectionError))
    assert isinstance(part, FailoverError)
    assert [a.provider for a in part.attempts] == ["backup"]
    assert part.attempts[0].error is part.exceptions[0]
    assert error.subgroup(KeyError) is None


# -- Attempt -------------------------------------------------------------------


def test_attempt_is_a_frozen_dataclass() -> None:
    exc = RuntimeError("x")
    attempt = Attempt("comet", exc, 0.5)
    assert dataclasses.is_dataclass(attempt)
    assert [f.name for f in dataclasses.fields(attempt)] == [
        "provider",
        "error",
        "elapsed",
        "skipped",
    ]
    assert attempt.skipped is False
    with pytest.raises(dataclasses.FrozenInstanceError):
        attempt.provider = "other"  # type: ignore[misc]


# -- the other exceptions ------------------------------------------------------


def test_deadline_exceeded_is_a_timeout_error() -> None:
    exc = DeadlineExceeded(2.5)
    assert isinstance(exc, TimeoutError)
    assert exc.deadline == 2.5
    assert "2.5" in str(exc)


def test_missing_api_key_is_an_openai_error_naming_the_variable() -> None:
    exc = MissingAPIKey("cometapi", "COMETAPI_KEY")
    assert isinstance(exc, openai.OpenAIError)
    assert exc.variable == "COMETAPI_KEY"
    assert "COMETAPI_KEY" in str(exc)
    assert "cometapi" in str(exc)


@pytest.mark.parametrize(
    ("exc", "parts"),
    [
        (StreamTruncated("comet", 3), ("comet", "3")),
        (StreamInterrupted("comet", 4, openai.APIConnectionError(request=REQUEST)), ("comet", "4")),
        (ProviderSkipped("comet", "circuit open", 1.5), ("comet", "circuit open", "1.50")),
    ],
    ids=["truncated", "interrupted", "skipped"],
)
def test_messages_name_provider_and_counts(exc: Exception, parts: tuple[str, ...]) -> None:
    for part in parts:
        assert part in str(exc)
    assert exc.provider == "comet"  # type: ignore[attr-defined]


def test_stream_interrupted_describes_its_cause() -> None:
    cause = openai.APIConnectionError(request=REQUEST)
    assert "APIConnectionError" in str(StreamInterrupted("comet", 2, cause))
