"""The HTTP side of the fake provider: requests, faults, routing and SSE streams."""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import json
import re
import socket
import struct
import sys
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import urlsplit

from failover.testing import _chat, _completions, _embeddings, _files, _responses
from failover.testing._host import Answerer, Host, Streamer, error_body
from failover.testing._stream import Stream

_GARBAGE = b'{"id": "chatcmpl-oops", "choices": [ <html>502 Bad Gateway</html>'
# The OpenAI paths (/v1/...) and Azure's (/openai/... and /openai/deployments/{name}/...).
_PREFIX = re.compile(r"^/(?:v1|openai(?:/deployments/[^/]+)?)(/.*)$")


@dataclasses.dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake provider received it."""

    method: str
    path: str  # including any query string
    headers: dict[str, str]  # lower-case keys
    json: Any  # the parsed body, or None when absent or not JSON
    peer: tuple[str, int] = ("", 0)  # the client's address: which TCP connection it came on


class _Kind(str, enum.Enum):
    # A str enum, so that ``_Fault("fail", 500)`` (as the benchmarks write it) still works.
    NONE = "none"
    FAIL = "fail"
    HANG = "hang"
    RESET = "reset"
    GARBAGE = "garbage"
    CUT = "cut"
    TRUNCATE = "truncate"
    TRICKLE = "trickle"
    PAUSE = "pause"


@dataclasses.dataclass(frozen=True)
class _Fault:
    kind: _Kind
    status: int = 500
    code: str | None = None
    message: str | None = None
    retry_after: int | str | None = None
    seconds: float = 0.0  # hang, pause: how long; trickle: the interval between chunks
    after: int = 0  # cut, truncate, pause: how many stream events come first
    chunks: int | None = None  # trickle: how many content chunks

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", _Kind(self.kind))


_HEALTHY = _Fault(_Kind.NONE)
_STREAM_FAULTS = (_Kind.CUT, _Kind.TRUNCATE, _Kind.TRICKLE, _Kind.PAUSE)


class Backend(Host, Protocol):
    """The provider as the server sees it: a :class:`Host` that also checks keys, keeps
    the requests and hands out the faults (``FakeProvider``, which starts the server)."""

    def _authorized(self, headers: dict[str, str]) -> bool: ...

    def _record(self, request: RecordedRequest) -> None: ...

    def _take_fault(self) -> _Fault: ...


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a stuck handler never keeps the interpreter alive
    allow_reuse_address = True  # restart on the same port despite TIME_WAIT
    request_queue_size = 128  # the default backlog of 5 resets bursts of concurrent clients

    def __init__(self, port: int, provider: Backend) -> None:
        self.provider = provider
        self.stopping = threading.Event()  # wakes hung handlers on stop()
        self.connections: set[socket.socket] = set()
        self.conn_lock = threading.Lock()
        super().__init__(("127.0.0.1", port), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.conn_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.conn_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        # shutdown() rather than close(): threads blocked in recv() on idle
        # keep-alive connections wake up, exit and close their own socket.
        with self.conn_lock:
            connections = list(self.connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up (timeouts, resets, stop()) are expected: stay quiet.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


_FAMILIES: dict[str, tuple[Answerer, Streamer | None]] = {
    "/chat/completions": (_chat.answer, _chat.stream),
    "/completions": (_completions.answer, _completions.stream),
    "/responses": (_responses.answer, _responses.stream),
    "/embeddings": (_embeddings.answer, None),
}


@dataclasses.dataclass(frozen=True)
class _Json:
    status: int
    body: Any


def _route(
    provider: Host,
    method: str,
    raw_path: str,
    payload: Any,
    pieces: int | None,
    fields: _files.Form | None = None,
) -> _Json | Stream:
    """What a healthy provider answers; a stream's text comes in ``pieces`` chunks."""
    match = _PREFIX.match(urlsplit(raw_path).path.rstrip("/"))
    path = match.group(1) if match else ""
    if method == "GET" and path == "/models":
        return _Json(200, _embeddings.models(provider))
    if method == "GET" and path.startswith("/models/"):
        model_id = path.removeprefix("/models/")
        if model_id in provider.models:
            return _Json(200, _embeddings.model(provider, model_id))
        message = f"The model '{model_id}' does not exist"
        return _Json(404, error_body(404, message, "model_not_found"))
    # Ids the provider never made are unknown to it, wherever the request names them.
    stateful = (method == "POST" and _files.missing(provider, payload)) or _files.route(
        provider, method, path, payload, fields or {}
    )
    if stateful:
        return _Json(*stateful)
    family = _FAMILIES.get(path)
    if method != "POST" or family is None:
        message = f"Unknown request URL: {method} {raw_path}"
        return _Json(404, error_body(404, message, None))
    if not isinstance(payload, dict):
        return _Json(400, error_body(400, "The request body must be a JSON object.", None))
    answer, stream = family
    if payload.get("stream") is True and stream is not None:
        return stream(provider, payload, pieces)
    return _Json(200, answer(provider, payload))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so client connection pools are reused
    disable_nagle_algorithm = True  # each SSE chunk leaves at once, before any RST
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def _dispatch(self) -> None:
        provider = self.server.provider
        # Content-Length bodies only: the openai client never sends chunked requests.
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        try:
            payload: Any = json.loads(body) if body else None
        except ValueError:
            payload = None
        headers = {k.lower(): v for k, v in self.headers.items()}
        peer = (str(self.client_address[0]), int(self.client_address[1]))
        provider._record(RecordedRequest(self.command, self.path, headers, payload, peer))
        if not provider._authorized(headers):
            message = f"Incorrect API key provided to fake provider {provider.name!r}."
            return self._json(401, error_body(401, message, "invalid_api_key"))

        fault = provider._take_fault()
        stream = isinstance(payload, dict) and payload.get("stream") is True
        if fault.kind is _Kind.HANG and self._wait(fault.seconds):
            return self._reset()  # the server is stopping: give up at once
        if fault.kind is _Kind.FAIL:
            return self._fail(fault)
        if fault.kind is _Kind.RESET or (fault.kind is _Kind.CUT and not stream):
            return self._reset()
        if fault.kind is _Kind.GARBAGE:
            return self._send(200, _GARBAGE, "application/json")
        try:
            pieces = fault.chunks if fault.kind is _Kind.TRICKLE else None
            content_type = self.headers.get("content-type") or ""
            fields = _files.form(body, content_type) if "multipart/" in content_type else None
            answer = _route(provider, self.command, self.path, payload, pieces, fields)
        except Exception as exc:  # the test's reply function failed: say so, loudly
            traceback.print_exc()
            message = f"FakeProvider {provider.name!r}: the reply function raised {exc!r}"
            return self._json(500, error_body(500, message, "fake_reply_error"))
        if isinstance(answer, Stream):
            return self._stream(answer, fault if fault.kind in _STREAM_FAULTS else _HEALTHY)
        self._json(answer.status, answer.body)

    def _wait(self, seconds: float) -> bool:
        """Sleep; True when the server is stopping (cut the request short)."""
        return seconds > 0 and self.server.stopping.wait(seconds)

    def _send(
        self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json", headers)

    def _fail(self, fault: _Fault) -> None:
        headers = {} if fault.retry_after is None else {"Retry-After": str(fault.retry_after)}
        code = fault.code or ("rate_limit_exceeded" if fault.status == 429 else None)
        default = f"[{self.server.provider.name}] simulated HTTP {fault.status} failure"
        self._json(fault.status, error_body(fault.status, fault.message or default, code), headers)

    def _stream(self, stream: Stream, fault: _Fault) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        events, frames = stream.events, []
        if fault.kind is _Kind.TRUNCATE:  # no terminal event, no usage
            events = [event for event in events if not event.terminal]
        for event in events:
            trickles = fault.kind is _Kind.TRICKLE and event.content
            frames.append((fault.seconds if trickles else 0.0, event.encode()))
        if fault.kind in (_Kind.CUT, _Kind.TRUNCATE):
            frames = frames[: fault.after]
        elif stream.done:
            frames.append((0.0, b"data: [DONE]\n\n"))
        # A pause past the last event still comes before [DONE] or the end of the body.
        pause_at = min(fault.after, len(events)) if fault.kind is _Kind.PAUSE else -1
        for index, (delay, frame) in enumerate(frames):
            if self._wait(delay + (fault.seconds if index == pause_at else 0.0)):
                return self._reset()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(frame), frame))
        if pause_at == len(frames) and self._wait(fault.seconds):
            return self._reset()
        if fault.kind is _Kind.CUT:
            return self._reset()
        self.wfile.write(b"0\r\n\r\n")  # the proper end of a chunked body

    def _reset(self) -> None:
        # Linger 0 makes close() send a TCP RST instead of a FIN.
        self.close_connection = True
        linger = struct.pack("ii", 1, 0)
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        self.rfile.close()  # drop the makefile() reference so close() really closes
        self.connection.close()
