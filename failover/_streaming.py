"""Streams: no answer may end silently cut short.

``TrackedStream`` wraps the client's own streams (sync or async) on every client
failover hands out: errors while reading count as the provider's, and a
chat-completion stream that ends without a ``finish_reason`` raises
:class:`StreamTruncated`. ``PeekedStream`` is what the drop-in proxy returns: the
first chunk was read inside the attempt (so a stream that fails before it fails
over), and a failure after chunks reached the caller raises :class:`StreamInterrupted`.
"""

from __future__ import annotations

from typing import Any, NoReturn

import wrapt
from openai.types.chat import ChatCompletionChunk

from ._errors import StreamInterrupted, StreamTruncated
from ._policy import is_provider_fault, mark_if_transport

_NOTHING: Any = object()


class _Watch:
    """What a stream has shown so far."""

    __slots__ = ("chat", "chunks", "finished", "provider")

    def __init__(self, stream: Any, provider: str) -> None:
        self.chat = getattr(stream, "_cast_to", None) is ChatCompletionChunk
        self.provider = provider
        self.chunks = 0
        self.finished = False

    def see(self, chunk: Any) -> Any:
        self.chunks += 1
        if self.chat and any(c.finish_reason for c in chunk.choices):
            self.finished = True
        return chunk

    def end(self) -> None:
        if self.chat and not self.finished:
            raise StreamTruncated(self.provider, self.chunks)


class TrackedStream(wrapt.ObjectProxy[Any]):
    """A client's ``Stream`` or ``AsyncStream``: reading errors are the provider's."""

    def __init__(self, stream: Any, provider: str) -> None:
        super().__init__(stream)
        self._self_watch = _Watch(stream, provider)

    def __enter__(self) -> TrackedStream:
        return self

    async def __aenter__(self) -> TrackedStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.__wrapped__.close()

    def __iter__(self) -> TrackedStream:
        return self

    def __aiter__(self) -> TrackedStream:
        return self

    def __next__(self) -> Any:
        try:
            chunk = next(self.__wrapped__)
        except StopIteration:
            self._self_watch.end()
            raise
        except BaseException as exc:
            mark_if_transport(exc)
            raise
        return self._self_watch.see(chunk)

    async def __anext__(self) -> Any:
        try:
            chunk = await self.__wrapped__.__anext__()
        except StopAsyncIteration:
            self._self_watch.end()
            raise
        except BaseException as exc:
            mark_if_transport(exc)
            raise
        return self._self_watch.see(chunk)


def first_chunk(stream: TrackedStream) -> Any:
    try:
        return next(stream)
    except StopIteration:
        return _NOTHING


async def first_chunk_async(stream: TrackedStream) -> Any:
    try:
        return await stream.__anext__()
    except StopAsyncIteration:
        return _NOTHING


def interrupted(exc: Exception, provider: str, delivered: int) -> Exception:
    """A provider fault after ``delivered`` chunks reached the caller cannot fail over."""
    if delivered and is_provider_fault(exc) and not isinstance(exc, StreamTruncated):
        return StreamInterrupted(provider, delivered, exc)
    return exc


class PeekedStream(TrackedStream):
    """What the drop-in client returns: the first chunk was read inside the attempt."""

    def __init__(self, stream: TrackedStream, first: Any) -> None:
        wrapt.ObjectProxy.__init__(self, stream)
        self._self_first = first
        self._self_delivered = 0

    def _deliver(self, chunk: Any) -> Any:
        self._self_delivered += 1
        return chunk

    def _fail(self, exc: Exception) -> NoReturn:
        error = interrupted(exc, self.__wrapped__._self_watch.provider, self._self_delivered)
        if error is exc:
            raise exc
        raise error from exc

    def __next__(self) -> Any:
        chunk, self._self_first = self._self_first, _NOTHING
        if chunk is _NOTHING:
            try:
                chunk = next(self.__wrapped__)
            except Exception as exc:
                self._fail(exc)
        return self._deliver(chunk)

    async def __anext__(self) -> Any:
        chunk, self._self_first = self._self_first, _NOTHING
        if chunk is _NOTHING:
            try:
                chunk = await self.__wrapped__.__anext__()
            except Exception as exc:
                self._fail(exc)
        return self._deliver(chunk)
