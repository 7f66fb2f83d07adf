"""The clients failover hands to user code (``wrapt`` proxies: ``isinstance`` holds).

Every call on a ``Tracked`` client marks errors that came from the transport as
the provider's, applies the attempt's timeout and model name, and wraps what it
returns (streams, awaitables, sub-resources) so that the same holds for them.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import openai
import pydantic
import wrapt
from openai._base_client import AsyncPaginator, BaseClient
from openai._legacy_response import LegacyAPIResponse
from openai._resource import AsyncAPIResource, SyncAPIResource
from openai._response import AsyncResponseContextManager, BaseAPIResponse, ResponseContextManager

from ._policy import mark_if_transport
from ._scope import SCOPE, Scope
from ._streaming import TrackedStream


def is_navigation(value: Any) -> bool:
    """A client, a resource or a raw/streaming-response view: no I/O of its own."""
    if isinstance(value, (BaseClient, SyncAPIResource, AsyncAPIResource)):
        return True
    name = type(value).__name__
    return type(value).__module__.startswith("openai.") and name.endswith(
        ("WithRawResponse", "WithStreamingResponse")
    )


@functools.lru_cache(maxsize=512)
def _accepts(func: Callable[..., Any], name: str) -> bool:
    try:
        parameters = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False
    return name in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())


_OPENAI_DEFAULT_TIMEOUT = 600.0


def _adjust(method: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The attempt's model name and timeout, applied to one call's arguments."""
    scope = SCOPE.get()
    if scope is None:
        return kwargs
    model = kwargs.get("model")
    if isinstance(model, str) and scope.endpoint.spec is not None and scope.endpoint.spec.models:
        kwargs = {**kwargs, "model": scope.endpoint.map_model(model)}
    timeout = _timeout(scope, kwargs)
    if timeout is not None and _accepts(getattr(method, "__func__", method), "timeout"):
        kwargs = {**kwargs, "timeout": timeout}
    return kwargs


def _timeout(scope: Scope, kwargs: dict[str, Any]) -> float | openai.Timeout | None:
    """The attempt's budget, clipping the caller's own; for streams, a first-token bound.

    The first-token bound is the read timeout of the request, so it bounds the wait
    for the response and for each chunk alike (the transport cannot change it once
    the first chunk is in).
    """
    given = kwargs.get("timeout")
    if isinstance(given, (openai.NotGiven, openai.Omit)):
        given = None  # the client's sentinels for "no timeout given"
    budget = scope.timeout()
    if isinstance(given, (int, float)):
        budget = given if budget is None else min(given, budget)
    elif given is not None:
        return None  # the caller's own httpx Timeout object: leave it alone
    first = scope.first_token_timeout
    if first is None or kwargs.get("stream") is not True:
        return budget
    total = budget if budget is not None else _OPENAI_DEFAULT_TIMEOUT
    return openai.Timeout(total, read=min(first, total))


def _provider() -> str:
    scope = SCOPE.get()
    return scope.endpoint.name if scope is not None else "unknown"


async def _tracked_await(awaitable: Any) -> Any:
    try:
        return track(await awaitable)
    except BaseException as exc:
        mark_if_transport(exc)
        raise


def _is_manager(value: Any, enter: str) -> bool:
    """A stream helper's manager (``chat.completions.stream(...)``): it sends on enter."""
    return type(value).__name__.endswith("StreamManager") and hasattr(value, enter)


def track(value: Any) -> Any:
    """Wrap what a call on a tracked client returned."""
    if isinstance(value, pydantic.BaseModel):
        return value  # a parsed answer (the common case): nothing left to read
    if isinstance(value, (openai.Stream, openai.AsyncStream)):
        return TrackedStream(value, _provider())
    if inspect.iscoroutine(value) or isinstance(value, AsyncPaginator):
        return _tracked_await(value)
    if isinstance(value, ResponseContextManager) or _is_manager(value, "__enter__"):
        return TrackedContext(value)
    if isinstance(value, AsyncResponseContextManager) or _is_manager(value, "__aenter__"):
        return TrackedAsyncContext(value)
    raw = getattr(value, "_raw_stream", None)
    if isinstance(raw, (openai.Stream, openai.AsyncStream)):
        # A stream helper's events are read from the client's stream, lazily: watch it.
        value._raw_stream = TrackedStream(raw, _provider())
        return value
    if isinstance(value, (LegacyAPIResponse, BaseAPIResponse)):
        if isinstance(value, LegacyAPIResponse) and not value._stream:
            value.parse()  # parsed (and cached) now, inside the attempt: a bad body is a fault
        return Tracked(value)  # its parse() and reads are calls on the provider too
    if is_navigation(value):
        return Tracked(value)
    return value


class Navigable(wrapt.ObjectProxy[Any]):
    """A proxy whose sub-resources and methods are proxies too, built once and cached."""

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
            self._self_children[name] = child
        return child


class Tracked(Navigable):
    """A client or resource whose calls know which attempt they belong to."""

    def _child(self, value: Any, name: str, method: bool) -> Any:
        return TrackedMethod(value) if method else Tracked(value)


class TrackedMethod(wrapt.ObjectProxy[Any]):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        method = self.__wrapped__
        try:
            return track(method(*args, **_adjust(method, kwargs)))
        except BaseException as exc:
            mark_if_transport(exc)
            raise


class TrackedContext(wrapt.ObjectProxy[Any]):
    def __enter__(self) -> Any:
        try:
            return track(self.__wrapped__.__enter__())
        except BaseException as exc:
            mark_if_transport(exc)
            raise


class TrackedAsyncContext(wrapt.ObjectProxy[Any]):
    async def __aenter__(self) -> Any:
        return await _tracked_await(self.__wrapped__.__aenter__())

    async def __aexit__(self, *exc_info: Any) -> Any:
        return await self.__wrapped__.__aexit__(*exc_info)
