"""The clients failover hands to user code (``wrapt`` proxies: ``isinstance`` holds).

A ``Tracked`` client carries the :class:`~failover._scope.Scope` of its attempt,
so every call on it, from any thread, marks errors that came from the transport
as the provider's, applies the attempt's timeouts and model name, and wraps what
it returns (streams, awaitables, sub-resources) so that the same holds for them.
Methods are looked up on each call, so instrumenting ``openai`` later is seen.
"""

from __future__ import annotations

import functools
import inspect
import time
import types
from collections.abc import Callable
from typing import Any

import openai
import pydantic
import wrapt

from . import _telemetry
from ._openai import (
    AsyncAPIResource,
    AsyncPaginator,
    AsyncResponseContextManager,
    BaseAPIResponse,
    BaseClient,
    LegacyAPIResponse,
    ResponseContextManager,
    SyncAPIResource,
)
from ._ownership import LOOKED_UP, Unseen, creation
from ._policy import mark_if_transport
from ._scope import Scope, narrowed, phases
from ._spans import current as current_span
from ._streaming import KEEP, AsyncStream, SyncStream, is_async, is_stream

_VIEWS = ("WithRawResponse", "WithStreamingResponse", "WithStreamedResponse")


def is_navigation(value: Any) -> bool:
    """A client, a resource or a raw/streaming-response view: no I/O of its own."""
    if isinstance(value, (BaseClient, SyncAPIResource, AsyncAPIResource)):
        return True
    return type(value).__module__.startswith("openai.") and type(value).__name__.endswith(_VIEWS)


@functools.lru_cache(maxsize=512)
def _accepts(func: Callable[..., Any], name: str) -> bool:
    try:
        parameters = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False
    return name in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())


def _own_timeout(owner: Any, given: Any) -> Any:
    """The timeout the call would have without failover: its own, else its client's."""
    if not isinstance(given, (openai.NotGiven, openai.Omit)):
        return given
    client = getattr(owner, "_client", None)
    if client is None:
        # A raw/streaming-response view (``completions.with_raw_response``) has no client
        # of its own: the resource it wraps has; the client itself has its timeout.
        resources = (SyncAPIResource, AsyncAPIResource)
        found = [v for v in getattr(owner, "__dict__", {}).values() if isinstance(v, resources)]
        client = found[0]._client if found else owner
    timeout = getattr(client, "timeout", None)
    return None if isinstance(timeout, (openai.NotGiven, openai.Omit)) else timeout


class _Call:
    """One call's arguments as the attempt adjusts them, and what its stream needs."""

    __slots__ = ("args", "body_read", "kwargs", "request", "scope", "started", "stream")

    def __init__(
        self,
        owner: Any,
        name: str,
        method: Any,
        args: Any,
        kwargs: dict[str, Any],
        scope: Scope,
        sent: _Call | None = None,
    ) -> None:
        self.args = args
        self.scope = scope
        ownership = scope.ownership
        # Raises ProviderBound, before anything is sent, for an id another provider made.
        self.request = (
            ownership.request(owner, name, args, kwargs, scope.endpoint, method)
            if ownership is not None
            else None
        )
        # A stream helper (``responses.stream()``, ``chat.completions.stream()``) asks
        # for its stream itself: its request's first read is a stream's first chunk too.
        self.stream = kwargs.get("stream") is True or name == "stream"
        self.started = time.monotonic()
        self.body_read: Any = KEEP
        if sent is not None:
            # A call on a response (its parse()) reads what that request sent: its stream
            # gets the request's first-chunk bound and its body read timeout back.
            self.started, self.body_read = sent.started, sent.body_read
        if not scope.plain:
            kwargs = self._adjusted(owner, method, kwargs)
        self.kwargs = kwargs

    @classmethod
    def plain(cls, name: str, args: Any, kwargs: dict[str, Any], scope: Scope) -> _Call:
        """A call that needs nothing of its attempt but to know its errors: no bounds nor
        model names (``scope.plain``), creating nothing, naming nothing known."""
        call = cls.__new__(cls)
        call.args, call.kwargs, call.scope, call.request = args, kwargs, scope, None
        call.stream = kwargs.get("stream") is True or name == "stream"
        # Read only by bounds, which a plain scope has none of (so when it is set, once the
        # call returned, is of no consequence: it is no latency).
        call.started, call.body_read = time.monotonic(), KEEP
        return call

    def _adjusted(self, owner: Any, method: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        """``kwargs`` with the provider's model name and the attempt's time bounds."""
        scope = self.scope
        spec = scope.endpoint.spec
        model = kwargs.get("model")
        if isinstance(model, str) and spec is not None and spec.models:
            kwargs = {**kwargs, "model": scope.endpoint.map_model(model)}
        if scope.bounded and _accepts(getattr(method, "__func__", method), "timeout"):
            own = phases(_own_timeout(owner, kwargs.get("timeout", openai.NOT_GIVEN)))
            limit = scope.remaining(self.started)
            if self.stream and scope.first_token_timeout is not None:
                first = scope.first_token_timeout
                limit = first if limit is None else min(limit, first)
            if limit is not None:
                # Every phase gets the smallest bound that applies; a stream's body
                # reads get the client's own back once the headers are in.
                kwargs = {**kwargs, "timeout": narrowed(own, limit)}
                self.body_read = own[1]
        return kwargs

    def answered(self, value: Any) -> None:
        if self.request is not None:
            self.request.answered(value)

    def failed(self, exc: BaseException) -> None:
        mark_if_transport(exc)
        if self.request is not None:
            self.request.failed(exc)
        elif self.scope.ownership is not None:
            self.scope.ownership.failed(self.args, self.kwargs, exc, self.scope.endpoint)


async def _tracked_await(
    awaitable: Any,
    scope: Scope | None,
    call: _Call | None,
    plain: tuple[str, Any, dict[str, Any], Scope] | None = None,
) -> Any:
    """``awaitable``'s answer, tracked as the answer of ``call``: or, for a ``plain``
    call (its name, arguments and scope), of a ``_Call.plain`` made only when needed."""
    try:
        result = await awaitable
        # A parsed answer with nothing to remember (the common case) is as track() gives it.
        if not isinstance(result, pydantic.BaseModel) or (call is not None and call.request):
            if plain is not None:
                call = _Call.plain(*plain)
            result = track(result, scope, call)
    except BaseException as exc:
        if plain is not None:
            call = _Call.plain(*plain)
        if call is None:
            mark_if_transport(exc)
        else:
            call.failed(exc)
        raise
    if _telemetry.LIVE:
        _answered(result)
    return result


def _answered(result: Any) -> None:
    """Tell the attempt's trace span what an answer says (model, tokens), if tracing."""
    if _telemetry.LIVE and isinstance(result, pydantic.BaseModel):
        span = current_span()
        if span is not None:
            span.answered(result)


def _is_manager(value: Any, enter: str) -> bool:
    """A stream helper's manager (``chat.completions.stream(...)``): it sends on enter."""
    return type(value).__name__.endswith("StreamManager") and hasattr(value, enter)


def _stream(value: Any, scope: Scope | None, call: _Call | None) -> Any:
    kind = AsyncStream if is_async(value) else SyncStream
    if call is None:
        stream = kind(value, scope)
    else:
        answered = call.answered if call.request is not None else None
        stream = kind(value, scope, call.started, call.body_read, answered)
    if scope is not None and scope.opened is not None:
        scope.opened.append(stream)
    return stream


def track(value: Any, scope: Scope | None, call: _Call | None = None) -> Any:
    """Wrap what a call on a tracked client returned."""
    if isinstance(value, pydantic.BaseModel):
        if call is not None:
            call.answered(value)  # what it created is remembered as this provider's
        return value  # a parsed answer (the common case): nothing left to read
    if isinstance(value, types.CoroutineType):  # an async call's answer, to await
        return _tracked_await(value, scope, call)
    if is_stream(value, call is not None and call.stream):
        return _stream(value, scope, call)
    if isinstance(value, AsyncPaginator):
        return TrackedPaginator(value, scope, call)
    if isinstance(value, ResponseContextManager) or _is_manager(value, "__enter__"):
        return TrackedContext(value, scope, call)
    if isinstance(value, AsyncResponseContextManager) or _is_manager(value, "__aenter__"):
        return TrackedAsyncContext(value, scope, call)
    raw = getattr(value, "_raw_stream", None)
    if isinstance(raw, (openai.Stream, openai.AsyncStream)):
        # A stream helper's events are read from the client's stream, lazily: watch it.
        value._raw_stream = _stream(raw, scope, call)
        return value
    if isinstance(value, (LegacyAPIResponse, BaseAPIResponse)):
        if isinstance(value, LegacyAPIResponse) and not value._stream:
            # Parsed (and cached) now, inside the attempt: a bad body is a fault.
            parsed = value.parse()
            if call is not None:
                call.answered(parsed)
        return Tracked(value, scope, call)  # its parse() and reads are calls on the provider too
    if is_navigation(value):
        return Tracked(value, scope)
    return value


def _slots(cls: type[Any], proxy: type[Any]) -> tuple[str, ...]:
    """The public sub-resources and methods of ``cls``: the children a proxy may build."""
    names = []
    for name in dir(cls):
        if name.startswith("_") or hasattr(proxy, name):
            continue
        if isinstance(inspect.getattr_static(cls, name, None), _CHILDREN):
            names.append(name)
    return tuple(names)


_CHILDREN = (functools.cached_property, property, types.FunctionType)
_KINDS: dict[tuple[type[Any], type[Any]], type[Any]] = {}


class Navigable(wrapt.ObjectProxy[Any]):
    """A proxy whose sub-resources and methods are proxies too, built once per proxy.

    Each proxy class gets one subclass per wrapped class, with a slot per public
    sub-resource and method: a child, once built, is found by the attribute lookup
    itself, with no miss in ``wrapt`` and no ``__getattr__`` (the hot path's hops).
    """

    def __new__(cls, wrapped: Any, *args: Any, **kwargs: Any) -> Any:
        kind = _KINDS.get((cls, type(wrapped)))
        if kind is None:
            slots = _slots(type(wrapped), cls) if "_self_kinded" not in cls.__dict__ else ()
            kind = cls
            if slots:
                kind = type(cls.__name__, (cls,), {"__slots__": slots, "_self_kinded": True})
                kind.__module__, kind.__qualname__ = cls.__module__, cls.__qualname__
            _KINDS[cls, type(wrapped)] = kind
        return super().__new__(kind, wrapped)

    def __init__(self, wrapped: Any) -> None:
        super().__init__(wrapped)
        self._self_children: dict[str, Any] = {}

    def _child(self, value: Any, name: str, method: bool) -> Any:
        raise NotImplementedError

    def __getattr__(self, name: str) -> Any:
        child = self._self_children.get(name)
        if child is None:
            value = getattr(self.__wrapped__, name)
            if name.startswith("_"):
                return value
            if is_navigation(value):
                child = self._child(value, name, method=False)
            elif callable(value) and not isinstance(value, type):
                child = self._child(value, name, method=True)
            else:
                return value
            slot = type(self).__dict__.get(name)
            if slot is not None:
                slot.__set__(self, child)  # read without this method from now on
            else:
                self._self_children[name] = child
        return child


class Tracked(Navigable):
    """A client or resource whose calls belong to the attempt ``scope``."""

    def __init__(self, wrapped: Any, scope: Scope | None = None, sent: _Call | None = None) -> None:
        super().__init__(wrapped)
        self._self_scope = scope
        self._self_sent = sent  # the call whose response this is, if it is one

    def _child(self, value: Any, name: str, method: bool) -> Any:
        if method:
            return tracked_method(value, self.__wrapped__, name, self._self_scope, self._self_sent)
        return Tracked(value, self._self_scope)


def tracked_method(
    method: Any, owner: Any, name: str, scope: Scope | None, sent: _Call | None = None
) -> Any:
    """``method`` (``owner.name``) as a method of a tracked client: a call of the attempt
    ``scope`` (on the response of the call ``sent``, if any), ``owner.name`` looked up at
    each call (instrumentation may replace it later).

    A plain function, not a proxy (its state in its closure: on the healthy path a
    proxy's call and attribute reads cost µs), with the method's name, signature and
    ``__wrapped__``; for a coroutine method, a coroutine function (frameworks ask).
    """
    # Whether its calls may be plain (see ``_Call.plain``): decided once, as far as the
    # method and its attempt tell; by the registry, and for a method that creates only
    # with store=True (see ``makes``) by that argument, per call.
    ownership = scope.ownership if scope is not None else None
    made = creation(owner, name) if ownership is not None else None
    stores = made is None or made.stores is False
    quick = scope is not None and scope.plain and sent is None and stores
    if_stored = made is not None

    def tracked(*args: Any, **kwargs: Any) -> Any:
        method = getattr(owner, name)
        if scope is None:
            try:
                return track(method(*args, **kwargs), None)
            except BaseException as exc:
                mark_if_transport(exc)
                raise
        if (
            quick
            and not _telemetry.LIVE
            # Creates nothing, and names no id anyone knows.
            and (not if_stored or kwargs.get("store") is not True)
            and (ownership is None or ownership.quiet())
        ):
            call = None
            try:
                result = method(*args, **kwargs)
                if isinstance(result, pydantic.BaseModel):
                    return result  # a parsed answer: nothing more to do
                if type(result) is types.CoroutineType:  # an async call's answer, to await
                    return _tracked_await(result, scope, None, (name, args, kwargs, scope))
                call = _Call.plain(name, args, kwargs, scope)
                return track(result, scope, call)
            except BaseException as exc:
                (call or _Call.plain(name, args, kwargs, scope)).failed(exc)
                raise
        try:
            call = _Call(owner, name, method, args, kwargs, scope, sent)
        except Unseen as unseen:
            return _looked_up(unseen, functools.partial(tracked, *args, **kwargs))
        try:
            result = track(method(*args, **call.kwargs), scope, call)
        except BaseException as exc:
            call.failed(exc)
            raise
        if _telemetry.LIVE and (span := current_span()) is not None:
            span.requested(type(owner).__module__, call.kwargs.get("model"))
            _answered(result)
        return result

    if not inspect.iscoroutinefunction(method):
        return functools.update_wrapper(tracked, method, updated=())

    async def atracked(*args: Any, **kwargs: Any) -> Any:
        return await tracked(*args, **kwargs)

    return functools.update_wrapper(atracked, method, updated=())


async def _looked_up(unseen: Unseen, again: Callable[[], Any]) -> Any:
    """An async API call that names ids this process has not seen, as the coroutine it
    is: awaited, it asks the shared registry for their owners, then makes the call as
    any (routed by what it learnt: nothing is sent before)."""
    await unseen.owners.look_up(unseen.ids)
    token = LOOKED_UP.set(LOOKED_UP.get() | frozenset(unseen.ids))
    try:
        made = again()  # the same call, on what the registry knows now
    finally:
        LOOKED_UP.reset(token)
    return await made


class TrackedPaginator(wrapt.ObjectProxy[Any]):
    """An async paginator: awaited for its first page, or iterated (``async for``) over
    every item, as the client's own is."""

    def __init__(self, wrapped: Any, scope: Scope | None, call: _Call | None) -> None:
        super().__init__(wrapped)
        self._self_scope = scope
        self._self_call = call

    def __await__(self) -> Any:
        return _tracked_await(self.__wrapped__, self._self_scope, self._self_call).__await__()

    async def __aiter__(self) -> Any:
        page = await self
        async for item in page:
            yield item


class TrackedContext(wrapt.ObjectProxy[Any]):
    """A context that sends on enter; what it gives is the call's (its stream's bounds)."""

    def __init__(self, wrapped: Any, scope: Scope | None, call: _Call | None = None) -> None:
        super().__init__(wrapped)
        self._self_scope = scope
        self._self_call = call

    def __enter__(self) -> Any:
        try:
            return track(self.__wrapped__.__enter__(), self._self_scope, self._self_call)
        except BaseException as exc:
            mark_if_transport(exc)
            raise


class TrackedAsyncContext(wrapt.ObjectProxy[Any]):
    def __init__(self, wrapped: Any, scope: Scope | None, call: _Call | None = None) -> None:
        super().__init__(wrapped)
        self._self_scope = scope
        self._self_call = call

    async def __aenter__(self) -> Any:
        enter = self.__wrapped__.__aenter__()
        return await _tracked_await(enter, self._self_scope, self._self_call)

    async def __aexit__(self, *exc_info: Any) -> Any:
        return await self.__wrapped__.__aexit__(*exc_info)
