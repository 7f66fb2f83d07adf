"""The drivers: where attempts actually run.

:class:`Attempts` is the block form, and one iterator serves ``for`` and
``async for``::

    for attempt in fallback_clients(primary, secondary):
        with attempt as client:
            ...

The decorator and the drop-in proxy run their calls on the same attempts (the
function a caller calls is a driver, ``sync_driver`` / ``async_driver``; ``iterate_*``
for generators), so the three forms cannot drift apart; ``call_hedged`` is the one
driver that runs attempts side by side.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from types import TracebackType
from typing import Any, Generic, TypeVar

from . import _scope
from ._chain import Chain, Counted
from ._engine import Run
from ._errors import DeadlineExceeded, FailoverError, StreamInterrupted
from ._policy import mark_fault
from ._providers import Endpoint
from ._scope import SCOPE

T = TypeVar("T")
C = TypeVar("C")


class AttemptContext(Generic[C]):
    """One attempt on one provider: ``with attempt as client:`` runs the block on it.

    A provider fault raised in the block is recorded and suppressed, so the loop
    goes on to the next provider; anything else propagates.
    """

    __slots__ = ("_client", "_run", "_scope", "_span", "_started", "_token", "endpoint")

    def __init__(self, run: Run, endpoint: Endpoint, client: Any, streams: bool = False) -> None:
        self._run = run
        self.endpoint = endpoint
        scope, shared = run.scope(endpoint)  # its time budget starts now
        if streams:  # a generator's attempt: it closes what it opened if it ends early
            scope, shared = dataclasses.replace(scope, opened=[]), False
        self._scope = scope
        # The client carries its attempt, so calls from worker threads keep its bounds.
        self._client: C = run.handed_out(client, scope, shared)
        self._started = time.monotonic()
        self._token: Any = None
        self._span = run.observer.attempt(endpoint)  # its trace span, when tracing

    @property
    def provider(self) -> str:
        """The name of this attempt's provider."""
        return self.endpoint.name

    def __repr__(self) -> str:
        return f"<attempt on {self.endpoint.name!r}>"

    def __enter__(self) -> C:
        self._token = SCOPE.set(self._scope), self._span and self._span.enter()
        return self._client

    def __exit__(
        self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        self._leave(self._token)
        return self.end(exc)

    def _leave(self, token: tuple[contextvars.Token[Any], object]) -> None:
        _reset(token[0])
        if self._span is not None:
            self._span.leave(token[1])

    def answered(self, result: T) -> T:
        """``result``, the attempt's answer: its trace span records what it tells."""
        if self._span is not None:
            self._span.answered(result)
        return result

    def end(self, exc: BaseException | None) -> bool:
        """Record how the attempt ended; True when ``exc`` is a fault to fail over on."""
        elapsed = time.monotonic() - self._started
        if exc is None:
            self._run.succeeded(self.endpoint, elapsed)
            self._run.done = True
            return False
        return self._run.failed(self.endpoint, exc, elapsed)

    def scoped(self) -> _Scoped[C]:
        """Just the attempt's scope, for one step of a generator: never held across a
        ``yield``, which may resume in another context (a thread pool, another task)."""
        return _Scoped(self)

    def close_streams(self) -> None:
        """Close the streams the attempt opened: it ended early, nobody will read them."""
        for stream in self._scope.opened or ():
            stream.close()

    async def aclose_streams(self) -> None:
        for stream in self._scope.opened or ():
            await stream.close()

    async def __aenter__(self) -> C:
        return self.__enter__()

    async def __aexit__(
        self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        return self.__exit__(typ, exc, tb)


class _Scoped(Generic[C]):
    """``with attempt.scoped() as client:``, entered twice per item of a generator: a
    slotted class, not a ``contextmanager``, whose generator machinery costs more."""

    __slots__ = ("_attempt", "_token")

    def __init__(self, attempt: AttemptContext[C]) -> None:
        self._attempt = attempt

    def __enter__(self) -> C:
        attempt = self._attempt
        self._token = SCOPE.set(attempt._scope), attempt._span and attempt._span.enter()
        return attempt._client

    def __exit__(
        self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._attempt._leave(self._token)


def _reset(token: contextvars.Token[Any]) -> None:
    try:
        SCOPE.reset(token)
    except ValueError:
        # Exited in another context than it was entered in (a generator resumed by a
        # thread pool in a fresh copy_context()): that context never saw our value.
        pass


class Attempts:
    """Attempts in provider order until one block succeeds; ``FailoverError`` when none does."""

    def __init__(self, chain: Chain, operation: object = "block", run: Run | None = None) -> None:
        self._run = Run(chain, operation) if run is None else run

    def attempt(
        self, build: Callable[[Endpoint], Any], streams: bool = False
    ) -> AttemptContext[Any]:
        """The next attempt, with its client from ``build``; ``FailoverError`` when none is left."""
        if wait := self._run.wait:  # the engine retries the same provider after a pause
            time.sleep(wait)
        attempt = self.next_attempt(build, streams)
        if attempt is None:
            raise self.error()
        return attempt

    async def attempt_async(
        self, build: Callable[[Endpoint], Any], streams: bool = False
    ) -> AttemptContext[Any]:
        """:meth:`attempt`, pausing (and asking a shared store) without blocking the loop."""
        if wait := self._run.wait:
            await asyncio.sleep(wait)
        attempt = await self.next_attempt_async(build, streams)
        if attempt is None:
            raise self.error()
        return attempt

    def next_attempt(
        self, build: Callable[[Endpoint], Any], streams: bool = False
    ) -> AttemptContext[Any] | None:
        """The next attempt, or None when no provider is left to try."""
        run = self._run
        while (endpoint := run.next()) is not None:
            if (attempt := self._on(endpoint, build, streams)) is not None:
                return attempt
        return None

    async def next_attempt_async(
        self, build: Callable[[Endpoint], Any], streams: bool = False
    ) -> AttemptContext[Any] | None:
        run = self._run
        while (endpoint := await run.anext()) is not None:
            if (attempt := self._on(endpoint, build, streams)) is not None:
                return attempt
        return None

    def _on(
        self, endpoint: Endpoint, build: Callable[[Endpoint], Any], streams: bool
    ) -> AttemptContext[Any] | None:
        """An attempt on ``endpoint``, or None when its client cannot be built and the
        call moves on."""
        try:
            client = build(endpoint)
        except Exception as exc:  # a client that cannot be built (no key) is a failed attempt
            mark_fault(exc)
            if self._run.failed(endpoint, exc, 0.0):
                return None
            raise
        return AttemptContext(self._run, endpoint, client, streams)

    def error(self) -> FailoverError:
        """What the call raises now that no attempt is left to succeed."""
        return self._run.error()

    def __iter__(self) -> Attempts:
        return self

    def __next__(self) -> AttemptContext[Any]:
        if self._run.done:
            raise StopIteration
        return self.attempt(Endpoint.sync_client)

    def __aiter__(self) -> Attempts:
        return self

    async def __anext__(self) -> AttemptContext[Any]:
        if self._run.done:
            raise StopAsyncIteration
        return await self.attempt_async(Endpoint.async_client)


# ``operation`` names the call in traces: a function's qualified name, or a drop-in
# call's path (see ``_telemetry.Traced``). A driver reads it from the call's arguments
# (``Describe``), only when the call leaves the healthy path.

#: A decorated function's call (the parameter to inject the client as, its arguments and
#: its own keyword dict), as the generators' drivers take it.
Injection = tuple[str, tuple[Any, ...], dict[str, Any]]
#: What a driver's call is in traces, from its arguments.
Describe = Callable[[tuple[Any, ...], dict[str, Any]], object]


def as_body(
    fn: Callable[..., T], inject: str | None, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Callable[[Any], T]:
    """The call ``fn(*args, **kwargs)`` as a function of the client: injected as the
    keyword ``inject``, or (None) passed first."""
    if inject is None:
        return fn if not (args or kwargs) else lambda client: fn(client, *args, **kwargs)

    def body(client: Any) -> T:
        kwargs[inject] = client  # this call's own dict: each attempt sets its client
        return fn(*args, **kwargs)

    return body


def sync_driver(
    chain: Chain, fn: Callable[..., T], inject: str | None, describe: Describe
) -> Callable[..., T]:
    """``fn`` as a function whose calls fail over on ``chain``: the client injected as the
    keyword ``inject`` (a caller's own client, given so, is used once, as it is), or passed
    as the first argument (``inject`` None).

    The driver itself is what the caller calls (the decorated function, a drop-in's
    method): on the healthy path, one frame between the caller and ``fn``, which reads
    what the chain fixes from the chain (see ``Chain.ready``). cloudpickle sends a driver
    by value, with its closure and the globals it reads: they all pickle (the chain as
    its providers; the context variable, which does not, is read from its module). The
    twin of :func:`async_driver`.
    """

    def called(*args: Any, **kwargs: Any) -> T:
        if inject is not None and kwargs.get(inject) is not None:
            return fn(*args, **kwargs)  # the caller's own client: no failover
        lean = chain.ready(chain.head._sync) or chain.lean(Endpoint.sync_client)
        if lean is None:
            attempts = Attempts(chain, describe(args, kwargs))
        else:  # the healthy path, flat (see Chain.ready)
            client, views, key, seen, counted = lean
            token = _scope.SCOPE.set(chain.head_scope)
            started = time.monotonic()
            try:
                if inject is None:
                    result = fn(client, *args, **kwargs)
                else:
                    kwargs[inject] = client  # (see as_body)
                    result = fn(*args, **kwargs)
            except BaseException as exc:
                _scope.SCOPE.reset(token)  # a plain call: it ends in the context it started in
                resumed = _resumed(chain, describe(args, kwargs), started, exc, counted)
                if resumed is None:
                    raise
                attempts = resumed
            else:
                _scope.SCOPE.reset(token)
                if views is not None and views.get(key) is not seen:  # (see Lean)
                    chain.settle()
                return result
        body = as_body(fn, inject, args, kwargs)
        while True:  # ends by the return, or by FailoverError from attempt()
            attempt = attempts.attempt(Endpoint.sync_client)
            with attempt as client:
                return attempt.answered(body(client))

    return called


def async_driver(
    chain: Chain,
    fn: Callable[..., Awaitable[T]],
    inject: str | None,
    describe: Describe,
    hedges: Callable[[dict[str, Any]], bool] | None = None,
) -> Callable[..., Coroutine[Any, Any, T]]:
    """:func:`sync_driver` for a coroutine function; a call whose keyword arguments
    ``hedges`` accepts is hedged, when the chain's settings hedge."""
    delay = chain.settings.hedge
    hedges = hedges if delay is not None else None

    async def called(*args: Any, **kwargs: Any) -> T:
        if inject is not None and kwargs.get(inject) is not None:
            return await fn(*args, **kwargs)
        if hedges is not None and delay is not None and hedges(kwargs):
            body = as_body(fn, inject, args, kwargs)
            return await call_hedged(chain, body, delay, describe(args, kwargs))
        head = chain.head  # (the client as Endpoint.async_client() finds it, inlined)
        current = head._given_async or head._async._values.get(asyncio.get_running_loop())
        lean = chain.ready(current) or chain.lean(Endpoint.async_client)
        if lean is None:
            attempts = Attempts(chain, describe(args, kwargs))
        else:
            client, views, key, seen, counted = lean
            token = _scope.SCOPE.set(chain.head_scope)
            started = time.monotonic()
            try:
                if inject is None:
                    result = await fn(client, *args, **kwargs)
                else:
                    kwargs[inject] = client  # (see as_body)
                    result = await fn(*args, **kwargs)
            except BaseException as exc:
                _scope.SCOPE.reset(token)
                resumed = _resumed(chain, describe(args, kwargs), started, exc, counted)
                if resumed is None:
                    raise
                attempts = resumed
            else:
                _scope.SCOPE.reset(token)
                if views is not None and views.get(key) is not seen:  # (see Lean)
                    chain.settle()
                return result
        body = as_body(fn, inject, args, kwargs)
        while True:
            attempt = await attempts.attempt_async(Endpoint.async_client)
            with attempt as client:
                return attempt.answered(await body(client))

    return called


def call_sync(chain: Chain, fn: Callable[[Any], T], operation: object = "call") -> T:
    """One call of ``fn(client)`` that fails over on ``chain`` (see :func:`sync_driver`)."""
    return sync_driver(chain, fn, None, lambda args, kwargs: operation)()


async def call_async(
    chain: Chain, fn: Callable[[Any], Awaitable[T]], operation: object = "call"
) -> T:
    """:func:`call_sync` for a coroutine function; never hedged."""
    return await async_driver(chain, fn, None, lambda args, kwargs: operation)()


def always(kwargs: dict[str, Any]) -> bool:
    """``hedges`` for a driver whose every call may be hedged."""
    return True


def _resumed(
    chain: Chain, operation: object, started: float, exc: BaseException, counted: Counted
) -> Attempts | None:
    """The rest of a call whose lean first attempt (on ``chain.head``, from ``started``,
    ``counted`` as it started) raised ``exc``; None when ``exc`` is no fault to fail
    over on (it goes on as raised)."""
    chain.uncount(counted)  # it did not serve: the Run records how it ended
    elapsed = time.monotonic() - started
    run = Run.resumed(chain, operation, chain.head, started)
    return Attempts(chain, operation, run) if run.failed(chain.head, exc, elapsed) else None


def _settle(chain: Chain, attempt: AttemptContext[Any], exc: BaseException, delivered: int) -> bool:
    """End a generator's attempt on ``exc``: True to re-run it, False to let ``exc`` go on."""
    error: BaseException | None = None
    try:
        # A deadline is not interrupted: the call is over, and FailoverError says so.
        if delivered and isinstance(exc, Exception) and not isinstance(exc, DeadlineExceeded):
            try:
                faulted = chain.settings.policy.fails_over(exc)
            except Exception:
                attempt.end(exc)  # releases a probe, then raises the predicate's error
                raise
            if faulted:
                # Items already reached the caller: re-running would repeat them.
                error = StreamInterrupted(attempt.provider, delivered, exc)
                attempt.end(error)
                raise error from exc
        return attempt.end(exc)
    finally:
        # The raised error's traceback holds this frame: without these, a cycle would
        # keep the attempt (and the streams it opened) alive until a collection.
        del exc, attempt, error


class _Reruns:
    """A generator's attempts, one iterator for ``for`` and ``async for``: each run of
    the body is a ``with`` (``async with``) on it, whose exit closes what the run left
    open and settles how it ended (a re-run, or the error going on). So the two
    drivers below differ only by ``await``.
    """

    __slots__ = ("_attempts", "_chain", "attempt", "delivered", "items")
    attempt: AttemptContext[Any]  # set by each step of the iteration
    items: Any  # the body's generator, once this run has built it
    delivered: int  # the items this run yielded that the caller came back after

    def __init__(self, chain: Chain, operation: object) -> None:
        self._chain = chain
        self._attempts = Attempts(chain, operation)

    def __iter__(self) -> _Reruns:
        return self

    def __next__(self) -> _Reruns:
        attempt = self._attempts.attempt(Endpoint.sync_client, streams=True)
        return self._begin(attempt)

    def __aiter__(self) -> _Reruns:
        return self

    async def __anext__(self) -> _Reruns:
        attempt = await self._attempts.attempt_async(Endpoint.async_client, streams=True)
        return self._begin(attempt)

    def _begin(self, attempt: AttemptContext[Any]) -> _Reruns:
        self.attempt, self.items, self.delivered = attempt, None, 0
        return self

    def __enter__(self) -> AttemptContext[Any]:
        return self.attempt

    async def __aenter__(self) -> AttemptContext[Any]:
        return self.__enter__()

    # On an error: at once, not at a garbage collection, the body's finally runs and
    # the streams it opened stop (and stop billing).

    def __exit__(self, typ: object, exc: BaseException | None, tb: object) -> bool:
        if exc is not None:
            if self.items is not None:
                self.items.close()
            self.attempt.close_streams()
        return self._end(exc)

    async def __aexit__(self, typ: object, exc: BaseException | None, tb: object) -> bool:
        if exc is not None:
            if self.items is not None:
                await self.items.aclose()
            await self.attempt.aclose_streams()
        return self._end(exc)

    def _end(self, exc: BaseException | None) -> bool:
        """Whether to re-run the body (the next attempt) after this run ended on ``exc``."""
        attempt, self.items = self.attempt, None  # no object of ours keeps a finished body alive
        if exc is None:
            attempt.end(None)
            return False
        return _settle(self._chain, attempt, exc, self.delivered)


def iterate_sync(
    chain: Chain,
    fn: Callable[..., Iterator[T]],
    operation: object = "call",
    injected: Injection | None = None,
) -> Iterator[T]:
    """A generator re-run per provider until it has yielded; after that, no re-run."""
    fn = fn if injected is None else as_body(fn, *injected)
    for run in _Reruns(chain, operation):  # FailoverError when no provider is left
        with run as attempt:
            with attempt.scoped() as client:
                items = run.items = fn(client)
            while True:
                with attempt.scoped():
                    item = next(items, _END)
                if item is _END:
                    return
                yield item
                run.delivered += 1


async def iterate_async(
    chain: Chain,
    fn: Callable[..., AsyncIterator[T]],
    operation: object = "call",
    injected: Injection | None = None,
) -> AsyncIterator[T]:
    """:func:`iterate_sync` for async generators."""
    fn = fn if injected is None else as_body(fn, *injected)
    async for run in _Reruns(chain, operation):
        async with run as attempt:
            with attempt.scoped() as client:
                items = run.items = fn(client)
            while True:
                with attempt.scoped():
                    item = await anext(items, _END)
                if item is _END:
                    return
                yield item
                run.delivered += 1


_END: Any = object()


async def call_hedged(
    chain: Chain, fn: Callable[[Any], Awaitable[T]], delay: float, operation: object = "call"
) -> T:
    """Start the next provider whenever the running ones have not finished after ``delay``.

    The first success wins and the others are cancelled (closing their connections).
    """
    attempts = Attempts(chain, operation)

    async def one(attempt: AttemptContext[Any]) -> T:
        with attempt as client:
            return attempt.answered(await fn(client))
        raise _Failed  # the attempt's fault was recorded and suppressed

    running: set[asyncio.Task[T]] = set()
    try:
        while True:
            # A retry of the provider that just failed starts after its pause; the
            # running attempts may win meanwhile.
            pause = attempts._run.wait
            attempt = None if pause else await attempts.next_attempt_async(Endpoint.async_client)
            if attempt is not None:
                running.add(asyncio.ensure_future(one(attempt)))
            elif not running:
                if not pause:
                    raise attempts.error()
                await asyncio.sleep(pause)
                continue
            timeout = pause or (delay if attempt is not None else None)  # None: no one to add
            done, running = await asyncio.wait(
                running, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            for task in done:
                if not isinstance(task.exception(), _Failed):
                    return task.result()  # the winner, or an error that is not a provider fault
    finally:
        for task in running:
            task.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)


class _Failed(Exception):
    """Internal: a hedged attempt ended in a provider fault (already recorded)."""
