"""``@with_fallback``: the whole body re-runs on the next provider after a provider fault."""

from __future__ import annotations

import asyncio
import copy
import functools
import inspect
import logging
import pickle
import sys
import time
import typing
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
import pydantic
import pytest
import wrapt
from conftest import MESSAGES, NO_BREAKER, chat_text, provider

import failover
from failover import FailoverError, with_fallback
from failover.testing import FakeProvider

if sys.version_info < (3, 11):
    from exceptiongroup import ExceptionGroup

MODES = ["sync", "async"]
MODEL = "fake-model"


# -- helpers ---------------------------------------------------------------------------


class _Bot:
    """A class found by its name (pickled methods are), given methods by a test."""

    def __init__(self, tag: str) -> None:
        self.tag = tag


# Its methods, named as they are set on it (a bound method is pickled by its name).
def lines(self: _Bot, client: Any = None) -> Iterator[str]:
    yield f"{self.tag}: {chat_text(client, 'hi')}"


def locked(self: _Bot, client: Any = None) -> str:
    return f"{self.tag}: {chat_text(client, 'hi')}"


def _messages(question: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": question}]


def _text(chunks: list[Any]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def _complete(client: Any, question: str, stream: bool) -> str:
    reply = client.chat.completions.create(model=MODEL, messages=_messages(question), stream=stream)
    return _text(list(reply)) if stream else reply.choices[0].message.content


async def _acomplete(client: Any, question: str, stream: bool) -> str:
    reply = await client.chat.completions.create(
        model=MODEL, messages=_messages(question), stream=stream
    )
    return _text([c async for c in reply]) if stream else reply.choices[0].message.content


def _no_check(text: str) -> None:
    pass


def make_ask(
    mode: str,
    *providers: Any,
    stream: bool = False,
    check: Callable[[str], None] = _no_check,
    request: Callable[[Any, str], Any] | None = None,
    **options: Any,
) -> tuple[Callable[..., Any], list[Any]]:
    """A decorated ``ask(question, client=None)`` of ``mode`` and the clients its body got.

    The body asks ``question`` (or runs ``request(client, question)``), then passes the
    answer to ``check``, which may raise.
    """
    calls: list[Any] = []
    default = _complete if mode == "sync" else _acomplete
    act = request or functools.partial(default, stream=stream)

    if mode == "sync":

        @with_fallback(*providers, **options)
        def ask(question: str = "hello", client: Any = None) -> Any:
            calls.append(client)
            text = act(client, question)
            check(text)
            return text

        return ask, calls

    @with_fallback(*providers, **options)
    async def aask(question: str = "hello", client: Any = None) -> Any:
        calls.append(client)
        result = act(client, question)
        text = await result if inspect.isawaitable(result) else result
        check(text)
        return text

    return aask, calls


def run(mode: str, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``func`` in ``mode``: directly, or awaited in a fresh event loop."""
    if mode == "async":
        return asyncio.run(func(*args, **kwargs))
    return func(*args, **kwargs)


def raises(error: BaseException) -> Callable[[str], None]:
    def check(text: str) -> None:
        raise error

    return check


def fails_on_comet(text: str) -> None:
    if text.startswith("[comet]"):
        raise ValueError("the user's code rejects comet's answer")


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# -- every provider fault fails over ---------------------------------------------------

# name: (inject the fault, decorator options, provider options, stream)
FAULTS: dict[str, tuple[Callable[[FakeProvider], None], dict[str, Any], dict[str, Any], bool]] = {
    "http-500": (lambda f: f.fail(500), {}, {}, False),
    "http-503": (lambda f: f.fail(503), {}, {}, False),
    "http-400": (lambda f: f.fail(400), {}, {}, False),
    "http-401": (lambda f: f.fail(401), {}, {}, False),
    "http-429-retry-after": (lambda f: f.fail(429, retry_after=30), {}, {}, False),
    "tcp-reset": (lambda f: f.reset(), {}, {}, False),
    "hang-attempt-timeout": (lambda f: f.hang(5), {"attempt_timeout": 0.3}, {}, False),
    "hang-provider-timeout": (lambda f: f.hang(5), {}, {"timeout": 0.3}, False),
    "garbage-200": (lambda f: f.garbage(), {}, {}, False),
    "stream-cut": (lambda f: f.cut_stream(after=2), {}, {}, True),
    "stream-truncated": (lambda f: f.truncate_stream(after=2), {}, {}, True),
}


@pytest.mark.parametrize("fault", FAULTS.values(), ids=FAULTS.keys())
def test_provider_fault_reruns_body_on_backup(
    mode: str, fault: Any, comet: FakeProvider, backup: FakeProvider
) -> None:
    inject, options, provider_options, stream = fault
    inject(comet)
    ask, calls = make_ask(
        mode,
        provider(comet, **provider_options),
        provider(backup),
        stream=stream,
        **options,
        **NO_BREAKER,
    )
    started = time.monotonic()
    assert run(mode, ask, "hello") == "[backup] hello"  # the backup's whole answer
    assert time.monotonic() - started < 3
    assert len(calls) == 2  # the body ran once per provider
    assert len(comet.requests) == 1
    assert len(backup.requests) == 1


def test_truncated_stream_is_a_provider_fault(mode: str, comet: FakeProvider) -> None:
    comet.truncate_stream(after=2)
    ask, _ = make_ask(mode, provider(comet), stream=True, **NO_BREAKER)
    with pytest.raises(FailoverError) as info:
        run(mode, ask)
    assert isinstance(info.value.exceptions[0], failover.StreamTruncated)


# -- every provider fails --------------------------------------------------------------


def _both_fail(mode: str, comet: FakeProvider, backup: FakeProvider) -> FailoverError:
    comet.fail(500)
    backup.fail(503)
    ask, _ = make_ask(mode, provider(comet), provider(backup), **NO_BREAKER)
    with pytest.raises(FailoverError) as info:
        run(mode, ask)
    return info.value


def test_all_failing_raises_failover_error_in_attempt_order(
    mode: str, comet: FakeProvider, backup: FakeProvider
) -> None:
    error = _both_fail(mode, comet, backup)
    assert isinstance(error, ExceptionGroup)
    assert [e.status_code for e in error.exceptions] == [500, 503]  # type: ignore[attr-defined]
    assert all(isinstance(e, openai.APIStatusError) for e in error.exceptions)
    assert [a.provider for a in error.attempts] == ["comet", "backup"]
    for attempt, exc in zip(error.attempts, error.exceptions, strict=True):
        assert attempt.error is exc
        assert not attempt.skipped


def test_failover_error_message_names_providers_errors_and_statuses(
    mode: str, comet: FakeProvider, backup: FakeProvider
) -> None:
    error = _both_fail(mode, comet, backup)
    first, second = (type(e).__name__ for e in error.exceptions)
    message = str(error)
    assert f"comet: {first} 500" in message
    assert f"backup: {second} 503" in message
    assert message.index("comet") < message.index("backup")


# ``except*`` is a syntax error before Python 3.11, so this module compiles it at run time.
_EXCEPT_STAR = """
def catch_star(call, kind):
    caught = []
    try:
        call()
    except* kind as group:
        caught.extend(group.exceptions)
    return caught
"""


@pytest.mark.skipif(sys.version_info < (3, 11), reason="except* needs Python 3.11")
def test_except_star_catches_status_errors(
    mode: str, comet: FakeProvider, backup: FakeProvider
) -> None:
    namespace: dict[str, Any] = {}
    exec(_EXCEPT_STAR, namespace)
    comet.fail(500)
    backup.fail(503)
    ask, _ = make_ask(mode, provider(comet), provider(backup), **NO_BREAKER)
    caught = namespace["catch_star"](lambda: run(mode, ask), openai.APIStatusError)
    assert [e.status_code for e in caught] == [500, 503]


# -- the user's own errors are not failed over -----------------------------------------


def _misses_messages(client: Any, question: str) -> Any:
    return client.chat.completions.create(model=MODEL)  # messages is required


def _empty_id(client: Any, question: str) -> Any:
    return client.chat.completions.retrieve("")


USER_ERRORS = {
    "body-raises-value-error": (ValueError, {"check": raises(ValueError("mine"))}),
    "create-missing-messages": (TypeError, {"request": _misses_messages}),
    "client-argument-validation": (ValueError, {"request": _empty_id}),
}


@pytest.mark.parametrize("case", USER_ERRORS.values(), ids=USER_ERRORS.keys())
def test_user_error_propagates_without_failover(
    mode: str, case: Any, chain: Any, backup: FakeProvider
) -> None:
    expected, options = case
    ask, calls = make_ask(mode, *chain, **options, **NO_BREAKER)
    with pytest.raises(expected) as info:
        run(mode, ask)
    assert not isinstance(info.value, FailoverError)
    assert len(calls) == 1
    assert backup.requests == []


def test_body_error_propagates_unchanged(mode: str, chain: Any, comet: FakeProvider) -> None:
    mine = ValueError("mine")
    ask, _ = make_ask(mode, *chain, check=raises(mine), **NO_BREAKER)
    with pytest.raises(ValueError) as info:
        run(mode, ask)
    assert info.value is mine
    assert len(comet.requests) == 1


def test_keyboard_interrupt_is_not_failed_over(mode: str, chain: Any, backup: FakeProvider) -> None:
    ask, calls = make_ask(mode, *chain, check=raises(KeyboardInterrupt()), **NO_BREAKER)
    with pytest.raises(KeyboardInterrupt):
        run(mode, ask)
    assert len(calls) == 1
    assert backup.requests == []


async def _wait_for_request(fake: FakeProvider) -> None:
    for _ in range(300):
        if fake.requests:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{fake.name} got no request")


@pytest.mark.asyncio
async def test_cancelling_the_task_cancels_promptly_without_failover(
    chain: Any, comet: FakeProvider, backup: FakeProvider
) -> None:
    comet.hang(5)
    ask, _ = make_ask("async", *chain, **NO_BREAKER)
    task = asyncio.create_task(ask())
    await _wait_for_request(comet)
    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < 3
    await asyncio.sleep(0.05)
    assert backup.requests == []


# -- methods, classmethods, staticmethods, metadata ------------------------------------


def _body(mode: str) -> Callable[..., Any]:
    """A body taking any positional arguments (self, cls or none) and returning them."""
    if mode == "sync":

        def body(*args: Any, question: str = "hello", client: Any = None) -> Any:
            return args, _complete(client, question, False)

        return body

    async def abody(*args: Any, question: str = "hello", client: Any = None) -> Any:
        return args, await _acomplete(client, question, False)

    return abody


def _decorated(kind: str, mode: str, chain: Any) -> Any:
    decorate = with_fallback(*chain, **NO_BREAKER)
    body = _body(mode)
    return {
        "method": lambda: decorate(body),
        "classmethod-outer": lambda: decorate(classmethod(body)),
        "classmethod-inner": lambda: classmethod(decorate(body)),
        "staticmethod-outer": lambda: decorate(staticmethod(body)),
        "staticmethod-inner": lambda: staticmethod(decorate(body)),
    }[kind]()


@pytest.mark.parametrize(
    "kind",
    [
        "method",
        "classmethod-outer",
        "classmethod-inner",
        "staticmethod-outer",
        "staticmethod-inner",
    ],
)
def test_works_on_methods(mode: str, kind: str, chain: Any, comet: FakeProvider) -> None:
    comet.fail(500)

    class Assistant:
        ask = _decorated(kind, mode, chain)

    obj = Assistant()
    expected_args = {"method": (obj,), "classmethod": (Assistant,), "staticmethod": ()}
    args, text = run(mode, obj.ask)
    assert args == expected_args[kind.partition("-")[0]]
    assert text == "[backup] hello"
    if kind != "method":
        assert run(mode, Assistant.ask) == (args, text)


def _documented(mode: str) -> Callable[..., Any]:
    if mode == "sync":

        def answer(question: str, *, temperature: float = 0.0, client: Any = None) -> str:
            """Answer a question."""
            return question

        return answer

    async def answer_async(question: str, *, temperature: float = 0.0, client: Any = None) -> str:
        """Answer a question."""
        return question

    return answer_async


def test_keeps_name_doc_wrapped_and_signature(mode: str, chain: Any) -> None:
    original = _documented(mode)
    decorated = with_fallback(*chain)(original)
    assert decorated.__name__ == original.__name__
    assert decorated.__doc__ == "Answer a question."
    assert decorated.__wrapped__ is original  # type: ignore[attr-defined]
    assert inspect.signature(decorated) == inspect.signature(original)
    assert inspect.iscoroutinefunction(decorated) is (mode == "async")


# -- injection -------------------------------------------------------------------------


def test_no_client_parameter_is_a_type_error_at_decoration(chain: Any) -> None:
    def ask(question: str) -> str:
        return question

    with pytest.raises(TypeError, match="'client'"):
        with_fallback(*chain)(ask)


def test_no_parameter_named_by_inject_is_a_type_error(chain: Any) -> None:
    def ask(question: str, client: Any = None) -> str:
        return question

    with pytest.raises(TypeError, match="'llm'"):
        with_fallback(*chain, inject="llm")(ask)


def test_inject_names_the_parameter(chain: Any, comet: FakeProvider) -> None:
    comet.fail(500)

    @with_fallback(*chain, inject="llm", **NO_BREAKER)
    def ask(question: str, llm: Any = None) -> str:
        return _complete(llm, question, False)

    assert ask("hi") == "[backup] hi"


def test_var_keyword_function_gets_the_client(chain: Any, comet: FakeProvider) -> None:
    comet.fail(500)

    @with_fallback(*chain, **NO_BREAKER)
    def ask(question: str, **kwargs: Any) -> str:
        return _complete(kwargs["client"], question, False)

    assert ask("hi") == "[backup] hi"


def _own_client(mode: str, fake: FakeProvider) -> Any:
    # A fresh one per call: an AsyncOpenAI is bound to the event loop that first used it.
    return fake.client() if mode == "sync" else fake.async_client()


def test_explicit_client_is_used_exactly_once(
    mode: str, chain: Any, comet: FakeProvider, backup: FakeProvider
) -> None:
    mine = _own_client(mode, backup)
    ask, calls = make_ask(mode, *chain, **NO_BREAKER)
    assert run(mode, ask, "hi", client=mine) == "[backup] hi"
    assert len(calls) == 1
    assert calls[0] is mine
    assert comet.requests == []


def test_explicit_client_failing_is_not_failed_over(
    mode: str, chain: Any, comet: FakeProvider, backup: FakeProvider
) -> None:
    comet.fail(500)
    ask, calls = make_ask(mode, *chain, **NO_BREAKER)
    with pytest.raises(openai.InternalServerError):
        run(mode, ask, "hi", client=_own_client(mode, comet))
    assert len(calls) == 1
    assert len(comet.requests) == 1
    assert backup.requests == []


def test_an_explicit_none_client_is_injected(
    mode: str, chain: Any, comet: FakeProvider, backup: FakeProvider
) -> None:
    # What a framework passes that fills in every parameter (pydantic's validate_call,
    # a web framework's handler): None is no client of the caller's, so one is injected.
    comet.fail(500)
    ask, calls = make_ask(mode, *chain, **NO_BREAKER)
    assert run(mode, ask, "hi", client=None) == "[backup] hi"
    assert len(calls) == 2


def test_validate_call_above_the_decorator_fails_over(chain: Any, comet: FakeProvider) -> None:
    comet.fail(500)

    @pydantic.validate_call(config={"arbitrary_types_allowed": True})
    @with_fallback(*chain, **NO_BREAKER)
    def ask(question: str, client: Any = None) -> str:
        return _complete(client, question, False)

    assert ask("hi") == "[backup] hi"


# -- what the decorated function is ------------------------------------------------------


class Item:
    """A name that only this module's globals know."""


def test_string_annotations_resolve_through_the_wrapped_function(mode: str, chain: Any) -> None:
    # With ``from __future__ import annotations`` (as here), annotations are strings that
    # frameworks evaluate in the globals of the function ``__wrapped__`` leads to; the
    # wrapper's own frame stays failover's (tracebacks, debuggers' skip lists).
    def ask(item: Item, client: Any = None) -> Item:
        return item

    async def aask(item: Item, client: Any = None) -> Item:
        return item

    decorated = with_fallback(*chain)(ask if mode == "sync" else aask)
    assert typing.get_type_hints(decorated)["item"] is Item
    assert inspect.signature(decorated, eval_str=True).parameters["item"].annotation is Item
    assert decorated.__globals__["__name__"] == "failover._attempts"  # type: ignore[attr-defined]


def test_what_binds_on_its_own_binds_as_it_did(chain: Any, comet: FakeProvider) -> None:
    # A descriptor below the decorator (another wrapt decorator) gets the instance; a
    # callable object or a partial kept on a class gets no ``self`` of the class's.
    seen: list[Any] = []

    @wrapt.decorator
    def below(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        seen.append(instance)
        return wrapped(*args, **kwargs)

    class Handler:
        def __call__(self, question: str, client: Any = None) -> str:
            return _complete(client, question, False)

    def answer(prefix: str, question: str, client: Any = None) -> str:
        return prefix + _complete(client, question, False)

    class Service:
        @with_fallback(*chain)
        @below
        def ask(self, question: str, client: Any = None) -> str:
            return _complete(client, question, False)

        handle = with_fallback(*chain)(Handler())
        partial = with_fallback(*chain)(functools.partial(answer, "> "))

    service = Service()
    assert service.ask("a") == "[comet] a"
    assert seen == [service]
    assert service.handle("b") == "[comet] b"
    assert service.partial("c") == "> [comet] c"


def test_what_it_wraps_shows_through(chain: Any) -> None:
    @with_fallback(*chain)
    @functools.lru_cache(maxsize=8)
    def cached(question: str, client: Any = None) -> str:
        return question

    assert cached.cache_info().maxsize == 8  # type: ignore[attr-defined]

    @with_fallback(*chain)
    class Asker:
        def __init__(self, client: Any = None) -> None:
            self.client = client

    assert isinstance(Asker(), Asker)


def test_copies_of_a_decorated_function_are_itself(chain: Any) -> None:
    def ask(client: Any = None) -> str:
        return "hi"

    def items(client: Any = None) -> Iterator[str]:
        yield "hi"

    for decorated in (with_fallback(*chain)(ask), with_fallback(*chain)(items)):
        assert copy.copy(decorated) is decorated
        assert copy.deepcopy({"f": decorated})["f"] is decorated


def test_a_bound_proxied_method_pickles_and_copies_as_a_bound_method(chain: Any) -> None:
    # The methods whose wrapper is a proxy (generators, another wrapt decorator below):
    # bound, they pickle and copy as a bound method does, by instance and name.
    class_body = {
        "lines": with_fallback(*chain)(lines),
        "locked": with_fallback(*chain)(wrapt.synchronized(locked)),
    }
    for name, decorated in class_body.items():
        setattr(_Bot, name, decorated)
    try:
        bot = _Bot("b")
        for name in class_body:
            method = getattr(bot, name)
            again = pickle.loads(pickle.dumps(method))
            assert again.__self__.tag == "b"
            assert again.__name__ == method.__name__
            assert copy.copy(method) is method
            deep = copy.deepcopy(method)
            assert deep.__self__ is not bot
            assert deep.__self__.tag == "b"
        for name in class_body:  # read from the class: found on it again
            unbound = getattr(_Bot, name)
            again = pickle.loads(pickle.dumps(unbound))
            assert type(again) is type(unbound)
            assert again.__qualname__ == unbound.__qualname__
            assert copy.deepcopy(unbound) is unbound
        assert list(pickle.loads(pickle.dumps(bot.lines))()) == ["b: [comet] hi"]
        assert copy.deepcopy(bot.locked)() == "b: [comet] hi"
    finally:
        for name in class_body:
            delattr(_Bot, name)


def test_a_decorated_callable_object_refuses_to_pickle_saying_why(chain: Any) -> None:
    class Tool:
        def __call__(self, client: Any = None) -> str:
            return "hi"

    with pytest.raises(TypeError, match="cannot pickle a decorated 'Tool' object"):
        pickle.dumps(with_fallback(*chain)(Tool()))


# -- on= -------------------------------------------------------------------------------


def test_on_types_narrow_what_fails_over(
    mode: str, chain: Any, comet: FakeProvider, backup: FakeProvider
) -> None:
    comet.fail(500)
    ask, _ = make_ask(mode, *chain, on=(openai.APIConnectionError,), **NO_BREAKER)
    with pytest.raises(openai.InternalServerError):
        run(mode, ask)
    assert backup.requests == []


def _is_503(exc: BaseException) -> bool:
    return getattr(exc, "status_code", None) == 503


@pytest.mark.parametrize(("status", "fails_over"), [(503, True), (500, False)])
def test_on_predicate_decides(
    mode: str, status: int, fails_over: bool, chain: Any, comet: FakeProvider
) -> None:
    comet.fail(status)
    ask, _ = make_ask(mode, *chain, on=_is_503, **NO_BREAKER)
    if fails_over:
        assert run(mode, ask) == "[backup] hello"
    else:
        with pytest.raises(openai.InternalServerError):
            run(mode, ask)


def test_on_widens_to_a_user_error(mode: str, chain: Any) -> None:
    on = (openai.APIError, ValueError)
    ask, calls = make_ask(mode, *chain, check=fails_on_comet, on=on, **NO_BREAKER)
    assert run(mode, ask) == "[backup] hello"
    assert len(calls) == 2


# -- what each provider receives -------------------------------------------------------


def test_each_provider_gets_its_own_key_and_the_same_body(
    mode: str, chain: Any, comet: FakeProvider, backup: FakeProvider
) -> None:
    comet.fail(500)
    ask, _ = make_ask(mode, *chain, **NO_BREAKER)
    run(mode, ask, "hello")
    (sent_comet,) = comet.requests
    (sent_backup,) = backup.requests
    assert sent_comet.headers["authorization"] == f"Bearer {comet.api_key}"
    assert sent_backup.headers["authorization"] == f"Bearer {backup.api_key}"
    assert sent_comet.json == sent_backup.json
    assert sent_comet.json["messages"] == MESSAGES


# -- concurrency and event loops -------------------------------------------------------

SERVERS = {"primary-failing": "backup", "primary-healthy": "comet"}


def _concurrent_ask(
    mode: str, serves: str, comet: FakeProvider, backup: FakeProvider
) -> Callable[..., Any]:
    if serves == "backup":
        comet.fail(500)  # holds for every call
    return make_ask(mode, provider(comet), provider(backup), **NO_BREAKER)[0]


@pytest.mark.parametrize("serves", SERVERS.values(), ids=SERVERS.keys())
def test_many_threads_share_one_decorated_function(
    serves: str, comet: FakeProvider, backup: FakeProvider
) -> None:
    ask = _concurrent_ask("sync", serves, comet, backup)
    questions = [f"q{i}" for i in range(20)]
    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(ask, questions))
    assert answers == [f"[{serves}] {q}" for q in questions]
    assert len(comet.requests) == 20


@pytest.mark.parametrize("serves", SERVERS.values(), ids=SERVERS.keys())
@pytest.mark.asyncio
async def test_many_tasks_share_one_decorated_function(
    serves: str, comet: FakeProvider, backup: FakeProvider
) -> None:
    ask = _concurrent_ask("async", serves, comet, backup)
    questions = [f"q{i}" for i in range(50)]
    answers = await asyncio.gather(*(ask(q) for q in questions))
    assert answers == [f"[{serves}] {q}" for q in questions]
    assert len(comet.requests) == 50


def test_async_function_survives_successive_event_loops(chain: Any, comet: FakeProvider) -> None:
    ask, _ = make_ask("async", *chain, **NO_BREAKER)
    assert asyncio.run(ask("one")) == "[comet] one"
    comet.fail(500)
    assert asyncio.run(ask("two")) == "[backup] two"
    comet.recover()
    assert asyncio.run(ask("three")) == "[comet] three"


# -- logging ---------------------------------------------------------------------------


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "failover" and r.levelno == logging.WARNING
    ]


def test_one_warning_per_failed_attempt(
    mode: str, caplog: pytest.LogCaptureFixture, comet: FakeProvider, backup: FakeProvider
) -> None:
    with caplog.at_level(logging.WARNING, logger="failover"):
        error = _both_fail(mode, comet, backup)
    first, second = _warnings(caplog)
    names = [type(e).__name__ for e in error.exceptions]
    assert all(s in first for s in ("comet", names[0], "500", "trying backup"))
    assert all(s in second for s in ("backup", names[1], "503", "no provider left"))


def test_failover_that_succeeds_warns_once(
    mode: str, caplog: pytest.LogCaptureFixture, chain: Any, comet: FakeProvider
) -> None:
    comet.fail(500)
    ask, _ = make_ask(mode, *chain, **NO_BREAKER)
    with caplog.at_level(logging.DEBUG, logger="failover"):
        assert run(mode, ask) == "[backup] hello"
    (warning,) = _warnings(caplog)
    assert "comet" in warning
    assert "trying backup" in warning


def test_no_api_key_in_logs_or_errors(
    mode: str, caplog: pytest.LogCaptureFixture, comet: FakeProvider, backup: FakeProvider
) -> None:
    comet.fail(401)
    backup.reset()
    ask, _ = make_ask(mode, provider(comet), provider(backup), **NO_BREAKER)
    with caplog.at_level(logging.DEBUG), pytest.raises(FailoverError) as info:
        run(mode, ask)
    error = info.value
    texts = [r.getMessage() for r in caplog.records] + [caplog.text]
    texts += [str(error), repr(error), error.message]
    texts += [note for e in error.exceptions for note in getattr(e, "__notes__", [])]
    texts += [str(e) for e in error.exceptions] + [repr(a) for a in error.attempts]
    assert len(caplog.records) >= 2
    for text in texts:
        assert comet.api_key not in text
        assert backup.api_key not in text


# -- generator functions -----------------------------------------------------------------


def _word_generators(*providers: Any) -> dict[str, Callable[[], Any]]:
    """A sync and an async generator function yielding the streamed answer's pieces."""
    request = {"model": MODEL, "messages": _messages("one two three four"), "stream": True}

    @with_fallback(*providers, **NO_BREAKER)
    def words(client: Any = None) -> Any:
        for chunk in client.chat.completions.create(**request):
            if chunk.choices and chunk.choices[0].delta.content:
                yield chunk.choices[0].delta.content

    @with_fallback(*providers, **NO_BREAKER)
    async def awords(client: Any = None) -> Any:
        async for chunk in await client.chat.completions.create(**request):
            if chunk.choices and chunk.choices[0].delta.content:
                yield chunk.choices[0].delta.content

    return {"sync": words, "async": awords}


def _drain(mode: str, generator_function: Callable[[], Any]) -> str:
    if mode == "sync":
        return "".join(generator_function())

    async def collect() -> str:
        return "".join([piece async for piece in generator_function()])

    return asyncio.run(collect())


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param(lambda fake: fake.fail(500), id="http-500"),
        pytest.param(lambda fake: fake.cut_stream(after=0), id="cut-before-first-item"),
    ],
)
def test_generator_fails_over_until_its_first_item(
    mode: str, fault: Callable[[FakeProvider], None], comet: FakeProvider, backup: FakeProvider
) -> None:
    fault(comet)
    words = _word_generators(provider(comet), provider(backup))[mode]
    assert inspect.isgeneratorfunction(words) or inspect.isasyncgenfunction(words)
    assert _drain(mode, words) == "[backup] one two three four"


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param(lambda fake: fake.cut_stream(after=3), id="cut"),
        pytest.param(lambda fake: fake.truncate_stream(after=3), id="truncated"),
    ],
)
def test_generator_fault_after_items_were_delivered_raises_stream_interrupted(
    mode: str, fault: Callable[[FakeProvider], None], comet: FakeProvider, backup: FakeProvider
) -> None:
    fault(comet)
    words = _word_generators(provider(comet), provider(backup))[mode]
    with pytest.raises(failover.StreamInterrupted) as info:
        _drain(mode, words)
    assert info.value.provider == "comet"
    assert info.value.chunks >= 1
    assert backup.requests == []


class _FrameworkError(Exception):
    """Stands in for a framework's own error, raised ``from`` the client's (pydantic-ai)."""


def test_generator_fails_over_on_a_provider_fault_a_framework_wrapped(
    mode: str, comet: FakeProvider, backup: FakeProvider
) -> None:
    comet.fail(503)
    request = {"model": MODEL, "messages": _messages("one two"), "stream": True}

    @with_fallback(provider(comet), provider(backup), **NO_BREAKER)
    def words(client: Any = None) -> Any:
        try:
            stream = client.chat.completions.create(**request)
        except openai.APIError as exc:
            raise _FrameworkError("request failed") from exc
        yield from (c.choices[0].delta.content for c in stream if c.choices[0].delta.content)

    @with_fallback(provider(comet), provider(backup), **NO_BREAKER)
    async def awords(client: Any = None) -> Any:
        try:
            stream = await client.chat.completions.create(**request)
        except openai.APIError as exc:
            raise _FrameworkError("request failed") from exc
        async for c in stream:
            if c.choices[0].delta.content:
                yield c.choices[0].delta.content

    assert _drain(mode, words if mode == "sync" else awords) == "[backup] one two"
