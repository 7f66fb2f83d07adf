"""The first failover is not a cold start: the clients a chain may fail over to are built
in the warm-up thread, off the call path and never on an event loop; a fork during a
warm-up does not hang the child.

Every call goes through the real ``openai`` client to fake providers on 127.0.0.1; the
clients built are seen by wrapping the real constructors (they still run).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import openai
import pytest
from conftest import NO_BREAKER, achat_text, chat_text, provider
from test_process_models import in_child, needs_fork

from failover import Provider, fallback_clients, with_fallback
from failover import _clients as clients
from failover._clients import WARM_UP, shared_ssl_context
from failover._providers import endpoint_for
from failover.testing import FakeProvider

pytestmark = pytest.mark.filterwarnings(
    # Python 3.12+ warns on any fork of a process with threads (the fake servers').
    "ignore:This process .* is multi-threaded:DeprecationWarning"
)

FORMS = ("decorator", "block", "drop-in")
WARM_UP_THREAD = "failover-warm-up"


@pytest.fixture(autouse=True)
def _warm_up_done() -> Iterator[None]:
    # No warm-up of another test (building clients for its fakes' ports) runs meanwhile.
    assert WARM_UP.wait(10)
    yield
    assert WARM_UP.wait(10)


@dataclass(frozen=True)
class Built:
    """One openai client construction: where it pointed and where it ran."""

    flavour: str
    base_url: str
    thread: str
    on_loop: bool


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[Built]:
    """Every openai client built during the test, in order."""
    seen: list[Built] = []
    for flavour, cls in (("sync", openai.OpenAI), ("async", openai.AsyncOpenAI)):
        original = cls.__init__

        def recording(
            self: Any, *args: Any, _original: Any = original, _flavour: str = flavour, **kw: Any
        ) -> None:
            _original(self, *args, **kw)
            try:
                on_loop = asyncio.get_running_loop() is not None
            except RuntimeError:
                on_loop = False
            thread = threading.current_thread().name
            seen.append(Built(_flavour, str(self.base_url), thread, on_loop))

        monkeypatch.setattr(cls, "__init__", recording)
    return seen


def of(fake: FakeProvider, built: list[Built]) -> list[Built]:
    return [b for b in built if b.base_url.rstrip("/") == fake.base_url]


# -- the forms: a call of each, on clients that outlive the call (a drop-in's `with`) ------


@contextlib.contextmanager
def sync_call(chain: tuple[Provider, ...], form: str) -> Iterator[Callable[[], str]]:
    if form == "drop-in":
        with fallback_clients(*chain, **NO_BREAKER) as client:
            yield lambda: chat_text(client)
        return

    @with_fallback(*chain, **NO_BREAKER)
    def decorated(client: Any = None) -> str:
        return chat_text(client)

    def block() -> str:
        for attempt in fallback_clients(*chain, **NO_BREAKER):
            with attempt as client:
                return chat_text(client)
        raise AssertionError("unreachable: the block ends the loop or raises")

    yield decorated if form == "decorator" else block


@contextlib.asynccontextmanager
async def async_call(
    chain: tuple[Provider, ...], form: str
) -> AsyncIterator[Callable[[], Awaitable[str]]]:
    if form == "drop-in":
        async with fallback_clients(*chain, **NO_BREAKER) as client:
            yield lambda: achat_text(client)
        return

    @with_fallback(*chain, **NO_BREAKER)
    async def decorated(client: Any = None) -> str:
        return await achat_text(client)

    async def block() -> str:
        async for attempt in fallback_clients(*chain, **NO_BREAKER):
            async with attempt as client:
                return await achat_text(client)
        raise AssertionError("unreachable: the block ends the loop or raises")

    yield decorated if form == "decorator" else block


class RecordingExecutor(concurrent.futures.ThreadPoolExecutor):
    """A loop's default executor that keeps what it was given (``asyncio.to_thread``)."""

    def __init__(self) -> None:
        super().__init__(max_workers=1)
        self.sent: list[Any] = []

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        self.sent.append(fn)
        return super().submit(fn, *args, **kwargs)


# -- a failover builds no client, and sends nothing to a thread --------------------------


@pytest.mark.parametrize("form", FORMS)
def test_the_clients_a_sync_call_may_fail_over_to_are_built_in_the_warm_up_thread(
    comet: FakeProvider, backup: FakeProvider, built: list[Built], form: str
) -> None:
    with sync_call((provider(comet), provider(backup)), form) as call:
        assert call() == "[comet] hello"
        assert WARM_UP.wait(10)
        before = len(built)
        comet.fail(503)
        assert call() == "[backup] hello"
        assert built[before:] == []  # the failover built nothing
    # The caller built the client it used, and went on; the warm-up thread the backup's.
    assert [(b.flavour, b.thread) for b in of(comet, built)] == [("sync", "MainThread")]
    assert [(b.flavour, b.thread) for b in of(backup, built)] == [("sync", WARM_UP_THREAD)]


@pytest.mark.parametrize("form", FORMS)
def test_no_client_is_built_on_the_event_loop_nor_sent_to_a_thread_during_a_failover(
    comet: FakeProvider, backup: FakeProvider, built: list[Built], form: str
) -> None:
    executor = RecordingExecutor()

    async def main() -> None:
        asyncio.get_running_loop().set_default_executor(executor)
        async with async_call((provider(comet), provider(backup)), form) as call:
            assert await call() == "[comet] hello"
            assert WARM_UP.wait(10)
            before, sent = len(built), len(executor.sent)
            comet.fail(503)
            assert await call() == "[backup] hello"
            assert built[before:] == []
            # No hop to a worker thread either (openai's own first-request platform lookup).
            assert executor.sent[sent:] == []

    asyncio.run(main())
    assert [(b.flavour, b.thread) for b in of(backup, built)] == [("async", WARM_UP_THREAD)]
    assert not any(b.on_loop for b in of(backup, built))


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_a_failover_on_a_chains_very_first_call_builds_the_backups_client_once(
    comet: FakeProvider, backup: FakeProvider, built: list[Built], flavour: str
) -> None:
    # The warm-up may not have run yet: the failover waits for it, or builds the client
    # itself and the warm-up then builds nothing.
    comet.fail(503)
    chain = (provider(comet), provider(backup))
    if flavour == "sync":
        with sync_call(chain, "decorator") as call:
            assert call() == "[backup] hello"
    else:

        async def main() -> None:
            async with async_call(chain, "decorator") as call:
                assert await call() == "[backup] hello"
                assert WARM_UP.wait(10)  # while this loop still has the backup's client

        asyncio.run(main())
    assert WARM_UP.wait(10)
    assert [b.flavour for b in of(backup, built)] == [flavour]


def test_a_provider_without_key_does_not_stop_the_others_being_built(
    comet: FakeProvider,
    backup: FakeProvider,
    built: list[Built],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("FAILOVER_TEST_UNSET_KEY", raising=False)
    keyless = Provider("keyless", base_url=comet.base_url, api_key_env="FAILOVER_TEST_UNSET_KEY")
    with sync_call((provider(comet), keyless, provider(backup)), "decorator") as call:
        assert call() == "[comet] hello"
    assert WARM_UP.wait(10)
    assert endpoint_for(keyless)._sync is None  # it fails, and counts, when it is tried
    assert [b.thread for b in of(backup, built)] == [WARM_UP_THREAD]


def test_the_clients_failover_builds_share_one_ssl_context(
    chain: tuple[Provider, Provider],
) -> None:
    with sync_call(chain, "decorator") as call:
        assert call() == "[comet] hello"
    assert WARM_UP.wait(10)

    def ssl_context_of(spec: Provider) -> object:
        return endpoint_for(spec)._sync._client._transport._pool._ssl_context

    # Loading the CA bundle is most of what building a client costs.
    assert ssl_context_of(chain[0]) is ssl_context_of(chain[1]) is shared_ssl_context()


# -- the warm-up thread: gone when idle, and nothing built for a closed chain ---------------


def test_the_warm_up_thread_ends_when_it_has_nothing_left(chain: tuple[Provider, Provider]) -> None:
    with sync_call(chain, "decorator") as call:
        assert call() == "[comet] hello"
    assert WARM_UP.wait(10)
    assert WARM_UP_THREAD not in {thread.name for thread in threading.enumerate()}


def test_a_drop_in_closed_before_its_warm_up_ran_gets_nothing_built(
    comet: FakeProvider, backup: FakeProvider, built: list[Built]
) -> None:
    release = threading.Event()
    WARM_UP.submit(release.wait)  # the warm-up thread is busy until the drop-in is closed
    try:
        with fallback_clients(provider(comet), provider(backup), **NO_BREAKER) as client:
            chain = client._self_chain  # type: ignore[attr-defined]
    finally:
        release.set()
    assert WARM_UP.wait(10)
    assert chain.endpoints[1]._sync is None
    assert of(backup, built) == []


# -- a fork during a warm-up -------------------------------------------------------------


@needs_fork
def test_a_fork_waits_for_the_warm_up_in_progress() -> None:
    started, done = threading.Event(), threading.Event()

    def warm_up() -> None:
        started.set()
        time.sleep(0.05)  # a few ms of CPU, in the real warm-up
        done.set()

    WARM_UP.submit(warm_up)
    assert started.wait(10)
    assert in_child(lambda: "done" if done.is_set() else "forked mid-warm-up") == "done"


@needs_fork
def test_a_fork_past_a_stuck_warm_up_leaves_the_child_working(
    comet: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = provider(comet)
    endpoint = endpoint_for(spec)
    monkeypatch.setattr(clients, "FORK_WAIT", 0.05)
    monkeypatch.setattr(clients, "_SSL_CONTEXT", [])  # so that the child makes one
    held, release = threading.Event(), threading.Event()

    def stuck() -> None:  # holds every lock a warm-up may hold, at the fork
        with endpoint._lock, clients._SSL_LOCK:
            held.set()
            release.wait(10)

    WARM_UP.submit(stuck)
    try:
        assert held.wait(10)
        with sync_call((spec,), "decorator") as call:
            assert in_child(call) == "[comet] hello"
    finally:
        release.set()
