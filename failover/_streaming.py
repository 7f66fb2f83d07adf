"""Streams: no answer may end silently cut short, none may outlive its bounds.

Every stream a handed-out client returns is wrapped (sync and async ones by
separate classes, so ``isinstance(s, AsyncIterator)`` tells them apart as it does
for the client's own): errors while reading count as the provider's, and a chat,
completions or Responses stream that ends without its terminal event (a
``finish_reason``, ``response.completed``) raises :class:`StreamTruncated`.
Streams are recognised by shape, so one wrapped by an instrumentation keeps
these guarantees. Time bounds the request's timeout cannot express (the first
chunk, stalls between chunks, the call's deadline) are kept by the watchdog.

The ``Peeked`` streams are what the drop-in client returns: their first chunk was
read inside the attempt (so a stream that fails before it fails over), and a
failure after chunks reached the caller raises :class:`StreamInterrupted`.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from typing import Any

import openai
import wrapt
from openai.types import Completion
from openai.types.chat import ChatCompletionChunk
from openai.types.responses import ResponseStreamEvent

from . import _telemetry
from ._errors import DeadlineExceeded, StreamInterrupted, StreamTruncated, add_note
from ._policy import is_provider_fault, mark_fault, mark_if_transport
from ._scope import Scope
from ._spans import current as current_span
from ._watchdog import WATCHDOG, Timer

_NOTHING: Any = object()
KEEP: Any = object()  # a stream whose read timeout failover did not narrow
_RESPONSE_ENDS = frozenset({"response.completed", "response.incomplete", "response.failed"})
_CHOICES = {"chat.completion.chunk": "chat", "text_completion": "completion"}
_INNER = ("response", "__wrapped__", "stream", "_stream", "_raw_stream", "_wrapped")


def _find(stream: Any, found: Callable[[Any], bool], depth: int = 3) -> Any:
    """What ``found`` accepts under ``stream``, looked for through wrappers of it."""
    for name in _INNER:
        inner = getattr(stream, name, None)
        if inner is None:
            continue
        if found(inner):
            return inner
        if depth > 1 and (deeper := _find(inner, found, depth - 1)) is not None:
            return deeper
    return None


def _is_response(value: Any) -> bool:
    return hasattr(value, "extensions") and hasattr(value, "request")


def _kind_of(stream: Any) -> str | None:
    """What the stream's terminal event looks like, from its chunk type when it has one."""
    inner = stream if hasattr(stream, "_cast_to") else _find(stream, _has_cast)
    cast = getattr(inner, "_cast_to", None)
    if cast is ChatCompletionChunk:
        return "chat"
    if cast is Completion:
        return "completion"
    if cast is not None and cast == ResponseStreamEvent:
        return "response"
    return None  # known from the first chunk, if at all


def _has_cast(value: Any) -> bool:
    return hasattr(value, "_cast_to")


def _is_async_client_stream(value: Any) -> bool:
    return isinstance(value, openai.AsyncStream)


def is_async(stream: Any) -> bool:
    """Whether ``stream`` is read with ``async for``: told by the client stream under it,
    since a wrapper may offer both protocols (OpenTelemetry's has one class for both)."""
    if isinstance(stream, (openai.Stream, openai.AsyncStream)):
        return isinstance(stream, openai.AsyncStream)
    inner = _find(stream, lambda v: isinstance(v, (openai.Stream, openai.AsyncStream)))
    if inner is not None:
        return isinstance(inner, openai.AsyncStream)
    return hasattr(stream, "__anext__")


def is_stream(value: Any, requested: bool) -> bool:
    """A client stream, or (for a call that asked for one) anything iterated like it.

    Not a stream helper's stream of events: that is watched through the client stream
    it reads (its ``_raw_stream``), whose chunks tell how the answer ended.
    """
    if isinstance(value, (openai.Stream, openai.AsyncStream)):
        return True
    if not requested or hasattr(value, "_raw_stream"):
        return False
    return hasattr(value, "__next__") or hasattr(value, "__anext__")


class _Watch:
    """What a stream has shown so far, and the bounds it must keep."""

    __slots__ = (
        "answered",
        "chunks",
        "finished",
        "kind",
        "provider",
        "response",
        "scope",
        "span",
        "timer",
    )

    def __init__(
        self,
        stream: Any,
        scope: Scope | None,
        started: float | None,
        body_read: Any,
        answered: Callable[[Any], None] | None = None,
    ) -> None:
        # Told of the resource a streamed creating call made (its id is the provider's).
        self.answered = answered
        self.provider = scope.endpoint.name if scope is not None else "unknown"
        self.scope = scope
        self.chunks = 0
        self.finished = False
        self.kind = _kind_of(stream)
        self.timer: Timer | None = None
        self.response = None
        # The attempt's trace span lasts as long as the stream (None: not tracing).
        self.span = current_span() if _telemetry.LIVE else None
        if self.span is not None:
            self.span.hold()
        if scope is None or not scope.bounded:
            return
        self.response = response = _find(stream, _is_response)
        if response is not None and body_read is not KEEP:
            # The request's read timeout held the first-chunk bound until the headers;
            # the body reads get the client's own back (the watchdog bounds the rest).
            response.request.extensions["timeout"]["read"] = body_read
        first = scope.first_chunk_by(time.monotonic() if started is None else started)
        if first is not None or scope.stall_timeout is not None:
            self.timer = Timer(first if first is not None else float("inf"), response)
            WATCHDOG.schedule(self.timer)

    def see(self, chunk: Any) -> Any:
        self.chunks += 1
        if not self.finished:
            self._check(chunk)
        if self.span is not None:
            self.span.chunk(chunk, self.chunks)
        timer = self.timer
        if timer is not None:
            if timer.fired:  # no socket to shut down: caught at the next chunk
                raise self.expired()
            # The caller's time over a chunk is no silence of the provider's: only the
            # deadline bounds it; the stall clock starts at the next read (reading()).
            later = self.scope.deadline_at  # type: ignore[union-attr]
            timer.expiry = float("inf") if later is None else later
            WATCHDOG.schedule(timer)
        return chunk

    def reading(self) -> None:
        """The caller asks for the next chunk: from now on, the provider's silence counts."""
        timer = self.timer
        if timer is None or not self.chunks:
            return  # no bounds, or the first chunk's (set when the stream was opened)
        scope = self.scope
        stall = scope.stall_timeout  # type: ignore[union-attr]
        if stall is not None:
            bound = time.monotonic() + stall
            later = scope.deadline_at  # type: ignore[union-attr]
            timer.expiry = bound if later is None else min(later, bound)
            WATCHDOG.schedule(timer)

    def _check(self, chunk: Any) -> None:
        kind = self.kind
        if kind is None:
            kind = self.kind = _CHOICES.get(str(getattr(chunk, "object", "")), "")
            if not kind and str(getattr(chunk, "type", "")).startswith("response."):
                kind = self.kind = "response"
        if kind == "response":
            self.finished = chunk.type in _RESPONSE_ENDS
            if self.answered is not None and chunk.type == "response.created":
                self.answered(chunk.response)
        elif kind:
            self.finished = any(c.finish_reason for c in chunk.choices)

    def _end(self) -> None:
        """The stream ended cleanly: raise if its answer is cut short."""
        timer = self.timer
        error: Exception | None = None
        if timer is not None:
            timer.disarm()
            if timer.fired:
                error = self.expired()
        if error is None and self.kind and not self.finished:
            error = StreamTruncated(self.provider, self.chunks)
        self._release(error)
        if error is not None:
            raise error

    def stop(self) -> None:
        if self.timer is not None:
            self.timer.disarm()
        self._release(None)

    def _release(self, error: BaseException | None) -> None:
        """The stream is over: so may its attempt's span be."""
        span, self.span = self.span, None
        if span is not None:
            span.release(error)

    def error(self, exc: BaseException) -> BaseException | None:
        """What a read's exception means: the stream's end (which raises if the answer is
        cut short), a bound that expired (returned: raise it instead), or the provider's.

        Both flavours' readers hand every exception here, so they differ only by ``await``.
        """
        if isinstance(exc, (StopIteration, StopAsyncIteration)):
            self._end()
            return None
        timer = self.timer
        if timer is not None:
            timer.disarm()
            # A cancellation or KeyboardInterrupt that came meanwhile is never a timeout.
            if timer.fired and isinstance(exc, Exception):
                expired = self.expired()
                self._release(expired)
                return expired
        mark_if_transport(exc)
        self._release(exc)
        return None

    def expired(self) -> Exception:
        scope = self.scope
        assert scope is not None
        assert self.timer is not None
        self.timer.fired = False  # reported once
        request = self.response.request if self.response is not None else None
        if self.chunks and scope.deadline_at is not None and time.monotonic() >= scope.deadline_at:
            error: Exception = DeadlineExceeded(scope.deadline or 0.0)
            mark_fault(error)
            return error
        error = openai.APITimeoutError(request=request)  # type: ignore[arg-type]
        if self.chunks:
            add_note(error, f"failover: no chunk for {scope.stall_timeout}s (stall_timeout)")
        else:
            add_note(error, "failover: no first chunk in time (first_token_timeout/budget)")
        return error


class _Watched(wrapt.BaseObjectProxy[Any]):
    """A stream with its :class:`_Watch`: the flavours below differ only by ``await``."""

    def __init__(
        self,
        stream: Any,
        scope: Scope | None,
        started: float | None = None,
        body_read: Any = KEEP,
        answered: Callable[[Any], None] | None = None,
    ) -> None:
        super().__init__(stream)
        self._self_watch = _Watch(stream, scope, started, body_read, answered)


class SyncStream(_Watched):
    """A sync stream of a handed-out client (``openai.Stream`` or a wrapper of one)."""

    def __iter__(self) -> SyncStream:
        return self

    def __next__(self) -> Any:
        watch = self._self_watch
        watch.reading()
        try:
            chunk = next(self.__wrapped__)
        except BaseException as exc:
            if (error := watch.error(exc)) is None:
                raise
            self.__wrapped__.close()
            raise error from exc
        return watch.see(chunk)

    def __enter__(self) -> SyncStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._self_watch.stop()
        self.__wrapped__.close()


class AsyncStream(_Watched):
    """:class:`SyncStream` for async streams."""

    def __aiter__(self) -> AsyncStream:
        return self

    async def __anext__(self) -> Any:
        watch = self._self_watch
        watch.reading()
        try:
            chunk = await self.__wrapped__.__anext__()
        except BaseException as exc:
            if (error := watch.error(exc)) is None:
                raise
            await self.close()
            raise error from exc
        return watch.see(chunk)

    async def __aenter__(self) -> AsyncStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        self._self_watch.stop()
        closed = self.__wrapped__.close()
        if inspect.isawaitable(closed):
            await closed
        elif (inner := _find(self.__wrapped__, _is_async_client_stream)) is not None:
            await inner.close()  # a wrapper whose close() is sync: its connection too


def interrupted(exc: Exception, provider: str, delivered: int) -> Exception:
    """A provider fault after ``delivered`` chunks reached the caller cannot fail over."""
    if (
        delivered
        and is_provider_fault(exc)
        and not isinstance(exc, (StreamTruncated, DeadlineExceeded))
    ):
        return StreamInterrupted(provider, delivered, exc)
    return exc


class _Peeked:
    """Shared by the peeked streams: the chunk read ahead, and what a late fault means."""

    _self_first: Any
    _self_delivered: int
    __wrapped__: Any

    def _fail(self, exc: Exception) -> Exception:
        """What a failed read raises: ``exc`` itself, or the interruption it caused."""
        watch = self.__wrapped__._self_watch
        error = interrupted(exc, watch.provider, self._self_delivered)
        if error is not exc:
            error.__cause__ = exc  # as ``raise error from exc`` does: both readers raise it
        return error


class SyncPeekedStream(_Peeked, SyncStream):
    """What the sync drop-in client returns: the first chunk was read inside the attempt."""

    def __init__(self, stream: SyncStream) -> None:
        wrapt.BaseObjectProxy.__init__(self, stream)
        self._self_first = next(stream, _NOTHING)
        self._self_delivered = 0

    def __next__(self) -> Any:
        chunk, self._self_first = self._self_first, _NOTHING
        if chunk is _NOTHING:
            try:
                chunk = next(self.__wrapped__)
            except Exception as exc:
                raise self._fail(exc)  # noqa: B904 - the cause is set by _fail
        self._self_delivered += 1
        return chunk


class AsyncPeekedStream(_Peeked, AsyncStream):
    """:class:`SyncPeekedStream` for the async drop-in client (build it with :meth:`peek`)."""

    def __init__(self, stream: AsyncStream, first: Any) -> None:
        wrapt.BaseObjectProxy.__init__(self, stream)
        self._self_first = first
        self._self_delivered = 0

    @classmethod
    async def peek(cls, stream: AsyncStream) -> AsyncPeekedStream:
        return cls(stream, await anext(stream, _NOTHING))

    async def __anext__(self) -> Any:
        chunk, self._self_first = self._self_first, _NOTHING
        if chunk is _NOTHING:
            try:
                chunk = await self.__wrapped__.__anext__()
            except Exception as exc:
                raise self._fail(exc)  # noqa: B904 - the cause is set by _fail
        self._self_delivered += 1
        return chunk
