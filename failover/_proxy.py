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
from collections.abc import Callable
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
    state in its closure, with the template's name, signature and ``__wrapped__``. An
    API method's is its driver itself (see ``_attempts.sync_driver``).
    """
    # Decided once per method, from its path: what a call of it does.
    names = [step for step in path if isinstance(step, str)]
    navigates = path[-1] in _NAVIGATION
    defers = any(name in _DEFERRED for name in names)
    # The whole path as one C-level lookup, when it is names only (no call on the way).
    reach = operator.attrgetter(".".join(names)) if len(names) == len(path) else None

    def described(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Path:
        """The call's path (what it is in traces, and how a client reaches it)."""
        return (*path, _Call.of(args, kwargs, own))

    if is_async:
        return _async_method(template, chain, reach, described, own)

    def attempt(client: Any, /, *args: Any, **kwargs: Any) -> Any:
        # The method in one lookup, when its path is names only and the call holds no
        # part of the template to swap (``own``): else the call's path, resolved.
        if reach is not None and not own:
            result = reach(client)(*args, **kwargs)
        else:
            result = _resolve(client, described(args, kwargs))
        return SyncPeekedStream(result) if isinstance(result, SyncStream) else result

    if not (navigates or defers):
        return functools.update_wrapper(
            _attempts.sync_driver(chain, attempt, None, described), template, updated=()
        )

    def call(*args: Any, **kwargs: Any) -> Any:
        step = described(args, kwargs)
        if navigates:
            return Failover(template(*args, **kwargs), chain, step, False, own)
        return FailoverContext(chain, step)

    return functools.update_wrapper(call, template, updated=())


def _async_method(
    template: Any,
    chain: Chain,
    reach: Callable[[Any], Any] | None,
    described: Callable[[tuple[Any, ...], dict[str, Any]], Path],
    own: Own,
) -> Any:
    """:func:`failover_method` for an async client's method."""

    async def attempt(client: Any, /, *args: Any, **kwargs: Any) -> Any:
        if reach is not None and not own:  # (see failover_method's attempt)
            result = await reach(client)(*args, **kwargs)
        else:
            result = await _resolve(client, described(args, kwargs))
        if isinstance(result, AsyncStream):
            return await AsyncPeekedStream.peek(result)
        return result

    # A call that must not run twice is never hedged either; hedging is for whole
    # answers only.
    hedged = not _ownership.once(template)

    def hedges(kwargs: dict[str, Any]) -> bool:
        return hedged and kwargs.get("stream") is not True

    driver = _attempts.async_driver(chain, attempt, None, described, hedges)
    if inspect.iscoroutinefunction(template):  # its call is a coroutine here too
        return functools.update_wrapper(driver, template, updated=())
    # What a call returns when it sends later (known from the first call).
    deferred: Callable[..., Any] | None = None

    def call(*args: Any, **kwargs: Any) -> Any:
        nonlocal deferred
        if deferred is not None:
            return deferred(*args, **kwargs)
        # An async API method does no I/O until awaited (or entered), so calling it on
        # the template tells what kind of call this is at no cost; it never changes.
        probe = template(*args, **kwargs)
        if inspect.iscoroutine(probe):  # (a plain function that returns a coroutine)
            probe.close()
            deferred = driver
        elif isinstance(probe, AsyncPaginator):  # a page, an awaitable that can be iterated
            deferred = functools.partial(FailoverAwaitable, driver)
        elif hasattr(probe, "__aenter__") and not is_navigation(probe):
            # A streaming response or a stream helper: it sends when entered.
            for unsent in [v for v in vars(probe).values() if inspect.iscoroutine(v)]:
                unsent.close()
            deferred = functools.partial(_entered, chain, described)
        elif is_navigation(probe):
            return Failover(probe, chain, described(args, kwargs), True, own)
        else:
            return probe
        return deferred(*args, **kwargs)

    return functools.update_wrapper(call, template, updated=())


def _entered(
    chain: Chain,
    described: Callable[[tuple[Any, ...], dict[str, Any]], Path],
    /,
    *args: Any,
    **kwargs: Any,
) -> FailoverAsyncContext:
    """A streaming response or stream helper's call: it fails over when entered."""
    return FailoverAsyncContext(chain, described(args, kwargs))


class FailoverAwaitable:
    """An async API call of a page that fails over when awaited, or iterated."""

    __slots__ = ("_args", "_driver", "_kwargs")

    def __init__(self, driver: Callable[..., Any], /, *args: Any, **kwargs: Any) -> None:
        self._driver = driver
        self._args = args
        self._kwargs = kwargs

    def __await__(self) -> Any:
        return self._driver(*self._args, **self._kwargs).__await__()

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

        return await _attempts.call_async(self._chain, attempt, self._step)

    async def __aexit__(self, *exc_info: Any) -> None:
        await self._context.__aexit__(*exc_info)
