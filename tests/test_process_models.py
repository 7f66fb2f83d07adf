"""Process models: forked workers, process pools, and an event loop per call
(``asyncio.run``).

Every test runs the real ``openai`` client against fake providers on 127.0.0.1; the
fork tests fork this process (its fake servers keep serving the child from here).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import multiprocessing
import os
import pickle
import sys
import threading
import warnings
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import cloudpickle
import httpx2
import openai
import pytest
from conftest import MESSAGES, NO_BREAKER, provider

from failover import FailoverError, Provider, fallback_clients, with_fallback
from failover._health import MemoryStore
from failover._providers import _WATCHES, PerLoop, endpoint_for
from failover.testing import FakeProvider

pytestmark = pytest.mark.filterwarnings(
    # Python 3.12+ warns on any fork of a process with threads (the fake servers'); the
    # child here only sends HTTP requests to those servers, which keep running here.
    "ignore:This process .* is multi-threaded:DeprecationWarning"
)

needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="no os.fork on this platform")


def text(reply: Any) -> str:
    return str(reply.choices[0].message.content)


def in_child(work: Callable[[], str]) -> str:
    """What ``work()`` returns when run in a forked child of this process."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report through the pipe and never return into pytest
        try:
            os.close(read)
            os.write(write, work().encode())
        except BaseException as exc:  # whatever it is, the parent must see it
            with contextlib.suppress(BaseException):
                os.write(write, f"the child raised {exc!r}".encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        out = pipe.read().decode()
    os.waitpid(pid, 0)
    return out


# -- os.fork() after a call (gunicorn --preload, multiprocessing's fork) -----------------

#: A form of use: call it, get the answer and the openai client that served it.
Form = Callable[[], tuple[str, Any]]


@contextlib.contextmanager
def forms(spec: Any) -> Iterator[dict[str, Form]]:
    seen: list[Any] = []

    @with_fallback(spec, **NO_BREAKER)
    def decorated(client: Any = None) -> str:
        seen.append(client.__wrapped__)
        return text(client.chat.completions.create(model="m", messages=MESSAGES))

    def decorator() -> tuple[str, Any]:
        return decorated(), seen[-1]

    def block() -> tuple[str, Any]:
        for attempt in fallback_clients(spec, **NO_BREAKER):
            with attempt as client:
                answer = text(client.chat.completions.create(model="m", messages=MESSAGES))
        return answer, client.__wrapped__

    drop_in = fallback_clients(spec, **NO_BREAKER)
    proxy = drop_in.__enter__()  # kept open across the fork, as a preloaded app would

    def dropped_in() -> tuple[str, Any]:
        answer = text(proxy.chat.completions.create(model="m", messages=MESSAGES))
        return answer, proxy._self_chain.endpoints[0]._sync

    try:
        yield {"decorator": decorator, "block": block, "drop-in": dropped_in}
    finally:
        drop_in.__exit__(None, None, None)


FORMS = ("decorator", "block", "drop-in")


@needs_fork
@pytest.mark.parametrize("form", FORMS)
def test_a_forked_child_builds_its_own_client(comet: FakeProvider, form: str) -> None:
    with forms(provider(comet)) as calls:
        call = calls[form]
        answer, parent_client = call()  # a keep-alive connection is now open in the pool
        assert answer == "[comet] hello"

        def child() -> str:
            answer, client = call()
            if client is parent_client or client._client is parent_client._client:
                return "the child used the parent's client and its connections"
            return answer

        assert in_child(child) == "[comet] hello"
        # The parent's client and connection were left alone, and still serve it.
        assert call() == ("[comet] hello", parent_client)


@needs_fork
def test_a_forked_child_keeps_the_users_own_client(comet: FakeProvider) -> None:
    with comet.client() as mine, forms(mine) as calls:
        call = calls["decorator"]
        assert call() == ("[comet] hello", mine)

        def child() -> str:
            answer, client = call()
            return answer if client is mine else "the user's client was replaced"

        assert in_child(child) == "[comet] hello"


@needs_fork
def test_a_forked_child_drops_the_parents_event_loop_clients(comet: FakeProvider) -> None:
    spec = provider(comet)

    @with_fallback(spec, **NO_BREAKER)
    async def ask(client: Any = None) -> str:
        return text(await client.chat.completions.create(model="m", messages=MESSAGES))

    # An app's loop, running in a thread, has a client (and a connection) for it.
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        assert asyncio.run_coroutine_threadsafe(ask(), loop).result(10) == "[comet] hello"
        endpoint = endpoint_for(spec)
        assert len(endpoint._async) == 1

        def child() -> str:
            if len(endpoint._async) or _WATCHES:
                return "the parent's loop clients were kept"
            return asyncio.run(ask())

        assert in_child(child) == "[comet] hello"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.run_until_complete(endpoint.aclose())
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


# -- process pools: a decorated function is sent to its workers by reference ---------------


def pooled(client: Any = None) -> str:
    """Decorated in place by the test: a worker finds it by its module and name."""
    return text(client.chat.completions.create(model="m", messages=MESSAGES))


async def apooled(client: Any = None) -> str:
    return text(await client.chat.completions.create(model="m", messages=MESSAGES))


def gpooled(client: Any = None) -> Iterator[str]:
    yield text(client.chat.completions.create(model="m", messages=MESSAGES))


async def agpooled(client: Any = None) -> AsyncIterator[str]:
    yield text(await client.chat.completions.create(model="m", messages=MESSAGES))


def run_in_worker(fn: Callable[[], Coroutine[Any, Any, str]]) -> str:
    return asyncio.run(fn())


def drain_in_worker(fn: Callable[[], Iterator[str]]) -> str:
    return "".join(fn())


@needs_fork
def test_a_decorated_function_runs_in_a_process_pool(
    comet: FakeProvider, backup: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ProcessPoolExecutor and multiprocessing.Pool pickle what they run: a function is
    # pickled by its module and name, which holds for the decorated one as for the one
    # it wraps (a proxy object cannot be pickled).
    module = sys.modules[__name__]
    chain = (provider(comet), provider(backup))
    for name in ("pooled", "apooled", "gpooled", "agpooled"):
        decorated = with_fallback(*chain, **NO_BREAKER)(getattr(module, name))
        monkeypatch.setattr(module, name, decorated)
        assert pickle.loads(pickle.dumps(decorated)) is decorated
    comet.fail(500, times=3)  # the workers fail over, each in its own process
    fork = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(1, mp_context=fork) as pool:
        assert pool.submit(module.pooled).result(timeout=30) == "[backup] hello"
        assert pool.submit(run_in_worker, module.apooled).result(timeout=30) == "[backup] hello"
        assert pool.submit(drain_in_worker, module.gpooled).result(timeout=30) == "[backup] hello"
    assert len(comet.requests) == 3
    assert len(backup.requests) == 3


def run_pickled(data: bytes) -> str:
    """A worker of joblib, Ray or Dask: it unpickles what it was sent, and runs it."""
    fn = pickle.loads(data)
    result = fn()
    return result if isinstance(result, str) else asyncio.run(result)


@needs_fork
def test_a_decorated_function_sent_by_value_fails_over_in_its_worker(
    comet: FakeProvider, backup: FakeProvider
) -> None:
    # cloudpickle sends a function of __main__ or a notebook (here: a local one) by
    # value, with its closure: the chain goes as its providers, and each worker builds
    # its own clients and breakers.
    chain = (provider(comet), provider(backup))

    @with_fallback(*chain, **NO_BREAKER)
    def ask(client: Any = None) -> str:
        return text(client.chat.completions.create(model="m", messages=MESSAGES))

    @with_fallback(*chain, **NO_BREAKER)
    async def aask(client: Any = None) -> str:
        return text(await client.chat.completions.create(model="m", messages=MESSAGES))

    comet.fail(500, times=2)
    fork = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(1, mp_context=fork) as pool:
        for fn in (ask, aask):
            data = cloudpickle.dumps(fn)
            assert pool.submit(run_pickled, data).result(timeout=30) == "[backup] hello"
    assert len(comet.requests) == 2
    assert len(backup.requests) == 2
    assert ask() == "[comet] hello"  # the chain pickled is this process's still


@needs_fork
def test_a_worker_whose_providers_all_fail_sends_its_failover_error_back(
    comet: FakeProvider, backup: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The pool pickles the worker's error to the parent: before, openai's errors in it
    # failed to unpickle there, and the whole pool broke (BrokenProcessPool).
    module = sys.modules[__name__]
    decorated = with_fallback(provider(comet), provider(backup), **NO_BREAKER)(pooled)
    monkeypatch.setattr(module, "pooled", decorated)
    comet.fail(500, times=1)
    backup.fail(429, times=1)
    fork = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(1, mp_context=fork) as pool:
        with pytest.raises(FailoverError) as info:
            pool.submit(module.pooled).result(timeout=30)
        assert pool.submit(module.pooled).result(timeout=30) == "[comet] hello"  # still up
    assert [type(e) for e in info.value.exceptions] == [
        openai.InternalServerError,
        openai.RateLimitError,
    ]
    assert [a.provider for a in info.value.attempts] == ["comet", "backup"]
    assert info.value.exceptions[1].status_code == 429


def test_a_chain_that_cannot_be_sent_says_why(comet: FakeProvider) -> None:
    def ask(client: Any = None) -> str:
        return "hi"

    client = openai.OpenAI(base_url=comet.base_url, api_key="sk-test")
    http = httpx2.Client()
    cases = {
        "its provider '127.0.0.1:.*' is a client object": with_fallback(client)(ask),
        "its provider 'comet' has its own http_client": with_fallback(
            provider(comet, client_options={"http_client": http})
        )(ask),
        "its health store holds connections": with_fallback(provider(comet), health=MemoryStore())(
            ask
        ),
    }
    for message, decorated in cases.items():
        with pytest.raises(TypeError, match=message):
            cloudpickle.dumps(decorated)
    client.close()
    http.close()


# -- asyncio.run() per call --------------------------------------------------------------


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


needs_proc = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")


def async_forms(chain: tuple[Provider, ...]) -> dict[str, Callable[[], Any]]:
    @with_fallback(*chain, **NO_BREAKER)
    async def decorated(client: Any = None) -> str:
        return text(await client.chat.completions.create(model="m", messages=MESSAGES))

    async def block() -> str:
        async for attempt in fallback_clients(*chain, **NO_BREAKER):
            async with attempt as client:
                return text(await client.chat.completions.create(model="m", messages=MESSAGES))
        raise AssertionError("unreachable: the block ends the loop or raises")

    async def drop_in() -> str:
        async with fallback_clients(*chain, **NO_BREAKER) as client:
            return text(await client.chat.completions.create(model="m", messages=MESSAGES))

    return {"decorator": decorated, "block": block, "drop-in": drop_in}


@pytest.fixture
def quiet(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Every log record of asyncio and failover at WARNING and above, and any warning
    (unclosed sockets and transports included) turned into an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gc.collect()  # what earlier tests left behind is not this test's
    caplog.set_level(logging.WARNING)
    yield caplog
    gc.collect()  # what was left unclosed is collected, and warns, inside the test
    problems = [r for r in caplog.records if r.name.startswith(("asyncio", "failover"))]
    assert [r.getMessage() for r in problems] == []


@needs_proc
@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("form", FORMS)
def test_an_event_loop_per_call_leaks_nothing(
    chain: tuple[Provider, Provider], comet: FakeProvider, form: str, quiet: Any
) -> None:
    call = async_forms(chain)[form]
    for _ in range(10):  # warm: pools, imports, the first connections
        assert asyncio.run(call()) == "[comet] hello"
    before = open_fds()
    for _ in range(200):
        assert asyncio.run(call()) == "[comet] hello"
    # Flat: a leak would grow by one or more fds per call. The slack is for the fake
    # provider's own handler threads (in this process), which close theirs in their time.
    assert open_fds() <= before + 4
    assert len(endpoint_for(chain[0])._async) == 0
    assert _WATCHES == {}


def test_a_loops_clients_are_closed_when_it_shuts_down(
    chain: tuple[Provider, Provider], comet: FakeProvider, backup: FakeProvider
) -> None:
    seen: list[Any] = []

    @with_fallback(*chain, **NO_BREAKER)
    async def ask(client: Any = None) -> str:
        seen.append(client.__wrapped__)
        return text(await client.chat.completions.create(model="m", messages=MESSAGES))

    async def twice() -> list[str]:
        first = await ask()
        comet.fail(503, times=1)
        return [first, await ask()]

    assert asyncio.run(twice()) == ["[comet] hello", "[backup] hello"]
    primary, _, secondary = seen
    assert primary is seen[1]
    assert primary._client.is_closed
    assert secondary._client.is_closed


def test_loops_closed_without_shutting_down_are_let_go(
    comet: FakeProvider, caplog: pytest.LogCaptureFixture
) -> None:
    spec = provider(comet)

    @with_fallback(spec, **NO_BREAKER)
    async def ask(client: Any = None) -> str:
        return text(await client.chat.completions.create(model="m", messages=MESSAGES))

    caplog.set_level(logging.WARNING)
    for _ in range(5):
        loop = asyncio.new_event_loop()  # older code: no shutdown_asyncgens() before close()
        assert loop.run_until_complete(ask()) == "[comet] hello"
        loop.close()
    # Only the last closed loop's client is still held, until the next loop's is built.
    assert len(endpoint_for(spec)._async) == 1
    assert len(_WATCHES) == 1
    assert asyncio.run(ask()) == "[comet] hello"
    assert len(endpoint_for(spec)._async) == 0
    assert _WATCHES == {}
    assert [r.getMessage() for r in caplog.records if r.name.startswith("asyncio")] == []


def test_per_loop_values_are_built_once_per_loop_and_closed_in_it() -> None:
    closed: list[tuple[str, asyncio.AbstractEventLoop]] = []

    async def close(value: str) -> None:
        closed.append((value, asyncio.get_running_loop()))

    values: PerLoop[str] = PerLoop(close)
    loops: list[asyncio.AbstractEventLoop] = []

    async def use(name: str) -> None:
        loops.append(asyncio.get_running_loop())
        assert values.get(lambda: name) == name
        assert values.get(lambda: "built twice") == name

    asyncio.run(use("first"))
    asyncio.run(use("second"))
    assert closed == [("first", loops[0]), ("second", loops[1])]
    assert len(values) == 0


def test_a_providers_own_http_client_is_left_open_at_loop_shutdown(comet: FakeProvider) -> None:
    http = httpx2.AsyncClient()
    spec = Provider(
        "comet",
        base_url=comet.base_url,
        api_key=comet.api_key,
        client_options={"http_client": http},
    )

    @with_fallback(spec, **NO_BREAKER)
    async def ask(client: Any = None) -> str:
        return text(await client.chat.completions.create(model="m", messages=MESSAGES))

    with asyncio.Runner() as runner:
        assert runner.run(ask()) == "[comet] hello"
        loop = runner.get_loop()
        loop.run_until_complete(loop.shutdown_asyncgens())  # what closing the runner does first
        assert len(endpoint_for(spec)._async) == 0  # failover's client is closed ...
        assert not http.is_closed  # ... but not the user's transport
        runner.run(http.aclose())  # theirs to close, on the loop that used it
