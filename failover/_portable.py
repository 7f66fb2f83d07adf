"""Errors as they pickle: a process pool sends a worker's ``FailoverError`` to the parent.

openai's errors (and httpx's status errors) would unpickle by calling ``__init__`` with
the message alone, which they refuse, and before openai 3.60 they hold the request with
its credentials. Here an error travels as its class, arguments and attributes, with every
request and response in it rebuilt without credentials; groups travel leaf by leaf.
"""

from __future__ import annotations

import sys
from typing import Any

import httpx2
import openai

if sys.version_info < (3, 11):  # pragma: no cover - exercised on old Pythons only
    from exceptiongroup import BaseExceptionGroup, ExceptionGroup

# The request headers that carry a credential (OpenAI's, Azure's, Anthropic-style): more
# than the breaker's fingerprint reads (_providers), whose keys must not change.
_AUTH_HEADERS = frozenset({"authorization", "proxy-authorization", "api-key", "x-api-key"})
# Query parameters that carry one (``?key=``, as some gateways take it).
_AUTH_PARAMS = frozenset({"key", "api_key", "api-key", "apikey", "token", "access_token"})
# What described the body as sent: the rebuilt response holds it decoded.
_ENCODING = frozenset({"content-encoding", "content-length", "transfer-encoding"})


def restored(cls: type[BaseException], args: tuple[Any, ...], state: dict[str, Any]) -> Any:
    """An exception unpickled from its arguments and attributes, not by its ``__init__``
    (failover's and openai's take what made the message, not the message)."""
    exc = cls.__new__(cls, *args) if issubclass(cls, BaseExceptionGroup) else cls.__new__(cls)
    exc.args = args
    exc.__dict__.update(state)
    return exc


def by_state(self: BaseException) -> tuple[Any, ...]:
    """The ``__reduce__`` of failover's exceptions (and of the errors ``Sent`` rebuilds)."""
    return restored, (type(self), self.args, _state(self))


def _state(exc: BaseException) -> dict[str, Any]:
    return {k: _portable(v) for k, v in vars(exc).items()}


def _portable(value: Any) -> Any:
    if isinstance(value, BaseException):
        return Sent(value)
    if isinstance(value, httpx2.Request):
        return _scrubbed(value)
    if isinstance(value, httpx2.Response):
        # It holds its request too: a clean one.
        request = value._request  # None for a response built without one
        return httpx2.Response(
            value.status_code,
            headers=[(k, v) for k, v in value.headers.multi_items() if k.lower() not in _ENCODING],
            content=_body(value),
            request=_scrubbed(request) if request is not None else None,
        )
    return value


def _scrubbed(request: httpx2.Request) -> httpx2.Request:
    """``request`` without its credentials: headers and key-like query parameters."""
    headers = [(k, v) for k, v in request.headers.multi_items() if k.lower() not in _AUTH_HEADERS]
    url = request.url
    for name in url.params:
        if name.lower() in _AUTH_PARAMS:
            url = url.copy_set_param(name, "[redacted]")
    try:
        content = request.content
    except httpx2.RequestNotRead:  # a streamed upload: its body is gone
        content = b""
    return httpx2.Request(request.method, url, headers=headers, content=content)


def _body(response: httpx2.Response) -> bytes:
    try:
        return response.content
    except httpx2.ResponseNotRead:  # a stream's error, raised before its body was read
        return b""


_GROUPS = (BaseExceptionGroup, ExceptionGroup)  # plain groups: a subclass may differ


class Sent:
    """An error as it pickles (see the module): any other error pickles as it does anyway."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __reduce__(self) -> tuple[Any, ...]:
        error = self.error
        if isinstance(error, BaseExceptionGroup) and type(error) in _GROUPS:
            args = (error.message, [Sent(e) for e in error.exceptions])
            return restored, (type(error), args, _state(error))
        if isinstance(error, (openai.APIError, httpx2.HTTPError)):
            return by_state(error)
        return _same, (error,)


def _same(error: BaseException) -> BaseException:
    return error
