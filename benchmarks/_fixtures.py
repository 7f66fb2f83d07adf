"""What the sections share: the fake servers (in this process or a child), the contenders
that are not failover (a naive loop, tenacity, stamina), and the run's context."""

from __future__ import annotations

import multiprocessing
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx2
import openai
import stamina
import tenacity
from _report import Report

import failover
from failover import Provider, fallback_clients, with_fallback
from failover.testing import FakeProvider, _Fault, _Server

MODEL = "fake-model"
MESSAGES: list[Any] = [{"role": "user", "content": "hello"}]


@dataclass(frozen=True)
class Sizes:
    per_call: int  # interleaved iterations for per-call timings over loopback
    rounds: int  # rounds of those, for the healthy-path table's medians
    in_memory: int  # iterations for the mock-transport wrapper cost
    sequential: int  # calls with the primary down
    hang_baseline: int  # calls of the naive loop and tenacity against a hanging primary
    concurrent: int
    import_runs: int


FULL = Sizes(
    per_call=1000,
    rounds=5,
    in_memory=5000,
    sequential=200,
    hang_baseline=200,
    concurrent=1000,
    import_runs=21,
)
QUICK = Sizes(
    per_call=150,
    rounds=1,
    in_memory=1000,
    sequential=100,
    hang_baseline=5,
    concurrent=200,
    import_runs=3,
)


@dataclass
class Context:
    """One run: its report, its sizes and the fakes every section may use."""

    report: Report
    sizes: Sizes
    server: str  # "thread" (in this process) or "process" (a child process)
    comet: FakeProvider
    backup: FakeProvider
    flaky: FakeProvider  # answers every other request with a 500


def provider(fake: FakeProvider, **kwargs: Any) -> Provider:
    return Provider(fake.name, base_url=fake.base_url, api_key=fake.api_key, **kwargs)


def free_port() -> int:
    """A port with nothing listening (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def chat(client: Any) -> Any:
    return client.chat.completions.create(model=MODEL, messages=MESSAGES)


# -- sockets -------------------------------------------------------------------------------


def _tcp_table() -> list[tuple[int, int, str, int]]:
    """(local port, remote port, state, inode) of every IPv4 TCP socket in our namespace."""
    rows = []
    with open("/proc/self/net/tcp") as f:
        next(f)
        for line in f:
            parts = line.split()
            local, remote, state, inode = parts[1], parts[2], parts[3], int(parts[9])
            rows.append((int(local.split(":")[1], 16), int(remote.split(":")[1], 16), state, inode))
    return rows


def _my_socket_inodes() -> set[int]:
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def client_sockets(ports: set[int]) -> int:
    """Open TCP sockets of this process connected to one of ``ports`` (the client side)."""
    mine = _my_socket_inodes()
    return sum(1 for _, remote, _, inode in _tcp_table() if remote in ports and inode in mine)


def connections_opened(ports: set[int]) -> int:
    """Client-side sockets to ``ports``, open or closed by us (TIME_WAIT): a connect count."""
    mine = _my_socket_inodes()
    return sum(
        1
        for _, remote, state, inode in _tcp_table()
        if remote in ports and (inode in mine or state == "06")
    )


# -- the fakes -----------------------------------------------------------------------------


class AlternatingFake(FakeProvider):
    """Answers every other request with a 500 (odd ones), deterministically."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.count = 0

    def _take_fault(self) -> _Fault:
        with self._lock:
            self.count += 1
            odd = self.count % 2 == 1
        return _Fault("fail", 500) if odd else super()._take_fault()


_KINDS: dict[str, type[FakeProvider]] = {"fake": FakeProvider, "alternating": AlternatingFake}
_FAKES = (("comet", "fake"), ("backup", "fake"), ("flaky", "alternating"))
# The fake is a test server: give it a listen backlog like a real provider's, so that a
# burst of concurrent connects is not slowed by dropped SYNs (1 s retries).
_BACKLOG = 2048


def _serve(conn: Any, fakes: tuple[tuple[str, str], ...]) -> None:
    """The child process: serve ``fakes``, apply the faults the parent sends, until told."""
    _Server.request_queue_size = _BACKLOG
    running = {name: _KINDS[kind](name).start() for name, kind in fakes}
    conn.send({name: (f.port, f.api_key) for name, f in running.items()})
    try:
        while (message := conn.recv()) is not None:
            name, method, args = message
            getattr(running[name], method)(*args)
            conn.send(None)
    except EOFError:  # the parent is gone
        pass
    finally:
        for fake in running.values():
            fake.stop()


class RemoteFake(FakeProvider):
    """A fake served by the child process: its clients are built here, its faults are
    queued there."""

    def __init__(self, name: str, port: int, api_key: str, conn: Any) -> None:
        super().__init__(name, api_key=api_key, port=port)
        self._conn = conn

    @property
    def running(self) -> bool:
        return True

    def _ask(self, method: str, *args: Any) -> None:
        self._conn.send((self.name, method, args))
        self._conn.recv()

    def _add(self, fault: _Fault, times: int | None) -> None:
        self._ask("_add", fault, times)

    def recover(self) -> None:
        self._ask("recover")


@contextmanager
def _thread_fakes() -> Iterator[tuple[FakeProvider, ...]]:
    backlog = _Server.request_queue_size
    _Server.request_queue_size = _BACKLOG
    running = [_KINDS[kind](name) for name, kind in _FAKES]
    try:
        for fake in running:
            fake.start()
        yield tuple(running)
    finally:
        for fake in running:
            fake.stop()
        _Server.request_queue_size = backlog


@contextmanager
def _process_fakes() -> Iterator[tuple[FakeProvider, ...]]:
    # spawn: a fresh interpreter, no copy of this one's threads, locks or clients.
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    child = context.Process(target=_serve, args=(theirs, _FAKES), daemon=True)
    child.start()
    theirs.close()  # so that a child that dies is an EOFError here, not a wait forever
    try:
        if not ours.poll(60):
            raise RuntimeError("the fake provider's process did not start within 60 s")
        where = ours.recv()
        yield tuple(RemoteFake(name, *where[name], ours) for name, _ in _FAKES)
    finally:
        try:
            ours.send(None)
        except OSError:
            pass
        child.join(timeout=5)
        if child.is_alive():
            child.terminate()
            child.join()
        ours.close()


@contextmanager
def fakes(server: str = "thread") -> Iterator[tuple[FakeProvider, ...]]:
    """comet, backup and flaky, served in this process (``"thread"``) or a child one."""
    with (_process_fakes if server == "process" else _thread_fakes)() as running:
        yield running


# -- contenders that are not failover ------------------------------------------------------


_COMPLETION = {
    "id": "chatcmpl-mock",
    "object": "chat.completion",
    "created": 1_700_000_000,
    "model": MODEL,
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "hi", "refusal": None},
            "finish_reason": "stop",
            "logprobs": None,
        }
    ],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}


def _mock_handler(request: httpx2.Request) -> httpx2.Response:
    return httpx2.Response(200, json=_COMPLETION)


def mock_client(host: str) -> openai.OpenAI:
    transport = httpx2.MockTransport(_mock_handler)
    return openai.OpenAI(
        api_key="x", base_url=f"http://{host}/v1", http_client=httpx2.Client(transport=transport)
    )


def mock_async_client(host: str) -> openai.AsyncOpenAI:
    transport = httpx2.MockTransport(_mock_handler)
    http_client = httpx2.AsyncClient(transport=transport)
    return openai.AsyncOpenAI(api_key="x", base_url=f"http://{host}/v1", http_client=http_client)


def tenacity_retry(call: Callable[..., Any]) -> Callable[..., Any]:
    """``call`` under tenacity's decorator: two tries on provider errors."""
    retry = tenacity.retry(
        stop=tenacity.stop_after_attempt(2),
        retry=tenacity.retry_if_exception_type(openai.APIError),
        reraise=True,
    )
    return retry(call)


def stamina_retry(call: Callable[..., Any]) -> Callable[..., Any]:
    return stamina.retry(on=openai.APIError, attempts=2)(call)


def naive(primary: Any, backup: Any) -> Callable[[], Any]:
    """The loop a user writes by hand: the primary, and on any API error the backup."""

    def call() -> Any:
        try:
            return chat(primary)
        except openai.APIError:
            return chat(backup)

    return call


def anaive(primary: Any, backup: Any) -> Callable[[], Any]:
    async def call() -> Any:
        try:
            return await chat(primary)
        except openai.APIError:
            return await chat(backup)

    return call


def tenacity_fallback(primary: Any, backup: Any) -> Callable[[], Any]:
    """tenacity driving a fallback: its attempt number picks the client."""
    clients = (primary, backup)

    def call() -> Any:
        for attempt in tenacity.Retrying(
            stop=tenacity.stop_after_attempt(2),
            retry=tenacity.retry_if_exception_type(openai.APIError),
            reraise=True,
        ):
            with attempt:
                return chat(clients[attempt.retry_state.attempt_number - 1])
        raise AssertionError("unreachable")

    return call


def atenacity_fallback(primary: Any, backup: Any) -> Callable[[], Any]:
    clients = (primary, backup)

    async def call() -> Any:
        async for attempt in tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(2),
            retry=tenacity.retry_if_exception_type(openai.APIError),
            reraise=True,
        ):
            with attempt:
                return await chat(clients[attempt.retry_state.attempt_number - 1])
        raise AssertionError("unreachable")

    return call


def stamina_fallback(primary: Any, backup: Any) -> Callable[[], Any]:
    """stamina driving a fallback: its attempt number picks the client."""
    clients = (primary, backup)

    def call() -> Any:
        for attempt in stamina.retry_context(on=openai.APIError, attempts=2):
            with attempt:
                return chat(clients[attempt.num - 1])
        raise AssertionError("unreachable")

    return call


def astamina_fallback(primary: Any, backup: Any) -> Callable[[], Any]:
    clients = (primary, backup)

    async def call() -> Any:
        async for attempt in stamina.retry_context(on=openai.APIError, attempts=2):
            with attempt:
                return await chat(clients[attempt.num - 1])
        raise AssertionError("unreachable")

    return call


# -- failover's forms ----------------------------------------------------------------------


def forms_sync(primary: Any, backup: Any) -> tuple[dict[str, Callable[[], object]], Any]:
    """failover's forms, sync, over ``primary`` then ``backup``; and what closes them."""

    @with_fallback(primary, backup)
    def decorated(client: Any = None) -> Any:
        return chat(client)

    clients = fallback_clients(primary, backup)
    proxy = clients.__enter__()
    dropin = failover.OpenAI(primary, backup)

    def block() -> Any:
        for attempt in fallback_clients(primary, backup):
            with attempt as client:
                reply = chat(client)
        return reply

    def close() -> None:
        clients.__exit__(None, None, None)
        dropin.close()

    forms = {
        "@with_fallback": decorated,
        "fallback_clients() proxy": lambda: chat(proxy),
        "failover.OpenAI": lambda: chat(dropin),
        "block form": block,
    }
    return forms, close


async def forms_async(primary: Any, backup: Any) -> tuple[dict[str, Any], Any]:
    """:func:`forms_sync`, async (in the running loop); the closer is a coroutine function."""

    @with_fallback(primary, backup)
    async def decorated(client: Any = None) -> Any:
        return await chat(client)

    clients = fallback_clients(primary, backup)
    proxy = await clients.__aenter__()
    dropin = failover.AsyncOpenAI(primary, backup)

    async def block() -> Any:
        async for attempt in fallback_clients(primary, backup):
            async with attempt as client:
                reply = await chat(client)
        return reply

    async def close() -> None:
        await clients.__aexit__(None, None, None)
        await dropin.close()

    forms = {
        "@with_fallback": decorated,
        "fallback_clients() proxy": lambda: chat(proxy),
        "failover.AsyncOpenAI": lambda: chat(dropin),
        "block form": block,
    }
    return forms, close
