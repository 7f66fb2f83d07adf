"""The drop-in client of ``fallback_clients()``: every API call fails over.

A ``Failover`` proxy records the attribute path of a call
(``chat.completions.create``) and replays it on each provider's tracked client
in turn. Whether a call is an API call is decided by what it returns, not by
its name, so every resource works, ``with_raw_response``,
``with_streaming_response`` and ``with_options(...)`` included.
"""

from __future__ import annotations

import functools
import inspect
import operator
import sys
import types
from collections.abc import Callable, Coroutine
from typing import Any, NamedTuple

from . import _attempts, _ownership
from ._chain import Chain
from ._openai import AsyncPaginator
from ._streaming import AsyncPeekedStream, AsyncStream, SyncPeekedStream, SyncStream
from ._tracking import Navigable, is_navigation

Path = tuple[Any, ...]  # attribute names (str) and calls (_Call), from the client down
# What private attributes of the template the caller read, by id: their paths.
Own = dict[int, tuple[Path, Any]]


class _Call(NamedTuple):
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    # Arguments that are the template's own private parts (``client._client``, which
    # pydantic-ai hands back to ``with_options``): each provider gets its own instead.
    swaps: tuple[tuple[int | str, Path], ...] = ()

    @classmethod
    def of(cls, args: tuple[Any, ...], kwargs: dict[str, Any], own: Own) -> _Call:
        if not own:  # the common case, built as the tuple it is (no Python __new__)
            return tuple.__new__(cls, (args, kwargs, ()))
        where: list[tuple[int | str, Any]] = [*enumerate(args), *kwargs.items()]
        swaps = tuple(
            (key, entry[0])
            for key, value in where
            if (entry := own.get(id(value))) is not None and entry[1] is value
        )
        return cls(args, kwargs, swaps)

    def apply(self, client: Any, target: Any) -> Any:
        if not self.swaps:
            return target(*self.args, **self.kwargs)
        args, kwargs = list(self.args), dict(self.kwargs)
        for key, path in self.swaps:
            mine = _resolve(client, path)
            if isinstance(key, int):
                args[key] = mine
            else:
                kwargs[key] = mine
        return target(*args, **kwargs)


def _resolve(client: Any, path: Path) -> Any:
    target = client
    for step in path:
        target = getattr(target, step) if isinstance(step, str) else step.apply(client, target)
    return target


class Failover(Navigable):
    """Stands for ``template`` (a real client or resource) at ``path``."""

    def __init__(
        self, template: Any, chain: Chain, path: Path, is_async: bool, own: Own | None = None
    ) -> None:
        super().__init__(template)
        self._self_chain = chain
        self._self_path = path
        self._self_async = is_async
        self._self_own: Own = {} if own is None else own

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            value = getattr(self.__wrapped__, name)
            # Not a bound method either: each read makes a new one, so remembering them
            # would grow without end on a long-lived client (and none is a part to swap).
            if not isinstance(value, (str, int, float, type(None), types.MethodType)):
                self._self_own[id(value)] = ((*self._self_path, name), value)
            return value
        return super().__getattr__(name)

    def __repr__(self) -> str:
        names = ", ".join(e.name for e in self._self_chain.endpoints)
        return f"<failover {type(self.__wrapped__).__name__} [{names}]>"

    def _child(self, value: Any, name: str, method: bool) -> Any:
        kind = failover_method if method else Failover
        path = (*self._self_path, name)
        return kind(value, self._self_chain, path, self._self_async, self._self_own)


# Sync calls send at once, so they cannot be tried out on the template as async ones
# are: the few that send nothing are known by name. Copies of the client navigate;
# streaming responses and stream helpers send when entered.
_NAVIGATION = frozenset({"with_options", "copy"})
_DEFERRED = frozenset({"with_streaming_response", "stream"})


def failover_method(template: Any, chain: Chain, path: Path, is_async: bool, own: Own) -> Any:
    """The method ``template`` at ``path`` of a drop-in client: each call fails over.

    A plain function, as a tracked client's methods are (see ``tracked_method``): its
    state in its closure, with the template's name, signature and ``__wrapped__``.
    """
    # Decided once per method, from its path: what a call of it does.
    names = [step for step in path if isinstance(step, str)]
    navigates = path[-1] in _NAVIGATION
    defers = any(name in _DEFERRED for name in names)
    # The whole path as one C-level lookup, when it is names only (no call on the way).
    reach = operator.attrgetter(".".join(names)) if len(names) == len(path) else None
    # Async: what a call returns when it sends later (known from the first call).
    deferred: Callable[[Chain, Path], Any] | None = None

    def call(*args: Any, **kwargs: Any) -> Any:
        step = (*path, _Call.of(args, kwargs, own))
        if is_async:
            if deferred is not None:
                return deferred(chain, step)
            return first_async(step, args, kwargs)
        if navigates:
            return Failover(template(*args, **kwargs), chain, step, False, own)
        if defers:
            return FailoverContext(chain, step)
        # The method in one lookup, when its path is names only and the call swaps nothing.
        method = reach if not step[-1].swaps else None

        def attempt(client: Any) -> Any:
            result = method(client)(*args, **kwargs) if method else _resolve(client, step)
            return SyncPeekedStream(result) if isinstance(result, SyncStream) else result

        return _attempts.call_sync(chain, attempt, step)

    def first_async(step: Path, args: Any, kwargs: Any) -> Any:
        nonlocal deferred
        # An async API method does no I/O until awaited (or entered), so calling it on
        # the template tells what kind of call this is at no cost; it never changes.
        probe = template(*args, **kwargs)
        if inspect.iscoroutine(probe) or isinstance(probe, AsyncPaginator):
            # A coroutine method's call is a coroutine here too (``create_task`` takes
            # nothing else); a page, an awaitable that can be iterated.
            kind: Callable[..., Any] = FailoverAwaitable
            if inspect.iscoroutine(probe):
                kind = _sent
                probe.close()
            # A call that must not run twice is never hedged either.
            hedged = not _ownership.once(template)
            deferred = functools.partial(kind, hedge=hedged, reach=reach)
            return deferred(chain, step)
        if hasattr(probe, "__aenter__") and not is_navigation(probe):
            # A streaming response or a stream helper: it sends when entered.
            for unsent in [v for v in vars(probe).values() if inspect.iscoroutine(v)]:
                unsent.close()
            deferred = FailoverAsyncContext
            return FailoverAsyncContext(chain, step)
        if is_navigation(probe):
            return Failover(probe, chain, step, True, own)
        return probe

    if not inspect.iscoroutinefunction(template):
        return functools.update_wrapper(call, template, updated=())

    async def acall(*args: Any, **kwargs: Any) -> Any:
        return await call(*args, **kwargs)

    return functools.update_wrapper(acall, template, updated=())


def _sent(
    chain: Chain, step: Path, hedge: bool = True, reach: Callable[[Any], Any] | None = None
) -> Coroutine[Any, Any, Any]:
    """The coroutine of an async API call that fails over (the driver's own: one layer
    less to await): ``reach`` finds its method on a client, when its path is names only;
    ``hedge`` is whether it may be hedged."""
    call: _Call = step[-1]
    reach = reach if not call.swaps else None

    async def attempt(client: Any) -> Any:
        result = await (
            reach(client)(*call.args, **call.kwargs) if reach else _resolve(client, step)
        )
        if isinstance(result, AsyncStream):
            return await AsyncPeekedStream.peek(result)
        return result

    streaming = call.kwargs.get("stream") is True  # hedging is for whole answers only
    return _attempts.call_async(chain, attempt, step, hedge=hedge and not streaming)


class FailoverAwaitable:
    """An async API call of a page that fails over when awaited, or iterated."""

    __slots__ = ("_chain", "_hedge", "_reach", "_step")

    def __init__(
        self,
        chain: Chain,
        step: Path,
        hedge: bool = True,
        reach: Callable[[Any], Any] | None = None,
    ) -> None:
        self._chain = chain
        self._step = step
        self._hedge = hedge
        self._reach = reach

    def __await__(self) -> Any:
        return _sent(self._chain, self._step, self._hedge, self._reach).__await__()

    async def __aiter__(self) -> Any:
        async for item in await self:
            yield item


class _Deferred:
    """A streaming response or stream helper: the request is sent, with failover, on enter.

    Never hedged: only one entered context may be left to exit.
    """

    def __init__(self, chain: Chain, step: Path) -> None:
        self._chain = chain
        self._step = step
        self._context: Any = None


class FailoverContext(_Deferred):
    def __enter__(self) -> Any:
        def attempt(client: Any) -> Any:
            context = _resolve(client, self._step)
            response = context.__enter__()
            raw = getattr(response, "_raw_stream", None)
            if isinstance(raw, SyncStream):
                # A stream helper: its first event is read inside the attempt, as for
                # create(stream=True), so a stream that breaks before it fails over.
                try:
                    response._raw_stream = SyncPeekedStream(raw)
                except BaseException:
                    context.__exit__(*sys.exc_info())
                    raise
            self._context = context
            return response

        return _attempts.call_sync(self._chain, attempt, self._step)

    def __exit__(self, *exc_info: Any) -> None:
        self._context.__exit__(*exc_info)


class FailoverAsyncContext(_Deferred):
    async def __aenter__(self) -> Any:
        async def attempt(client: Any) -> Any:
            context = _resolve(client, self._step)
            response = await context.__aenter__()
            raw = getattr(response, "_raw_stream", None)
            if isinstance(raw, AsyncStream):
                try:
                    response._raw_stream = await AsyncPeekedStream.peek(raw)
                except BaseException:
                    await context.__aexit__(*sys.exc_info())
                    raise
            self._context = context
            return response

        return await _attempts.call_async(self._chain, attempt, self._step, hedge=False)

    async def __aexit__(self, *exc_info: Any) -> None:
        await self._context.__aexit__(*exc_info)
