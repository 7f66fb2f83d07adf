"""A fake OpenAI-compatible provider for tests, which can be told to fail.

:class:`FakeProvider` runs a small HTTP server on ``127.0.0.1`` (standard
library only, in a daemon thread) that answers chat completions (plain and
streamed), embeddings, models and responses with the same JSON shapes as the
real API, so the real ``openai`` client parses them.  Faults are injected on
demand::

    from failover.testing import FakeProvider

    with FakeProvider("comet") as comet, FakeProvider("nova") as nova:
        comet.fail(status=503, retry_after=2)  # down until recover()
        nova.hang(5, times=1)                  # the next request waits 5 s first
        client = comet.client()                # openai.OpenAI, max_retries=0
        ...                                    # exercise the failover logic
        comet.recover()
        reply = client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hello"}]
        )
        assert reply.choices[0].message.content == "[comet] hello"
        assert comet.requests[-1].headers["authorization"] == f"Bearer {comet.api_key}"

Faults given with ``times=N`` queue up in order, each consumed by one request.
A fault without ``times`` holds until :meth:`FakeProvider.recover` and replaces
whatever was queued; faults queued after it are served first, then it resumes.
A request with the wrong key gets a 401 (code ``invalid_api_key``) and consumes
no fault, so tests can prove each provider was called with its own key.
``stop()`` makes the provider refuse connections; ``start()`` brings it back on
the same port, so clients made earlier keep working.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import dataclasses
import hashlib
import json
import secrets
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import openai

__all__ = ["FakeProvider", "RecordedRequest", "Reply"]

#: A custom responder: gets the request JSON, returns the reply's text content.
Reply = Callable[[dict[str, Any]], str]

_POST_PATHS = ("/v1/chat/completions", "/v1/embeddings", "/v1/responses")
_GARBAGE = b'{"id": "chatcmpl-oops", "choices": [ <html>502 Bad Gateway</html>'


@dataclasses.dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake provider received it."""

    method: str
    path: str  # including any query string
    headers: dict[str, str]  # lower-case keys
    json: Any  # the parsed body, or None when absent or not JSON


@dataclasses.dataclass(frozen=True)
class _Fault:
    kind: str  # "none" | "fail" | "hang" | "reset" | "garbage" | "cut" | "truncate"
    status: int = 500
    code: str | None = None
    message: str | None = None
    retry_after: int | str | None = None
    seconds: float = 0.0
    after: int = 0


_HEALTHY = _Fault("none")


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a stuck handler never keeps the interpreter alive
    allow_reuse_address = True  # restart on the same port despite TIME_WAIT
    request_queue_size = 128  # the default backlog of 5 resets bursts of concurrent clients

    def __init__(self, port: int, provider: FakeProvider) -> None:
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
        provider._record(RecordedRequest(self.command, self.path, headers, payload))
        if headers.get("authorization") != f"Bearer {provider.api_key}":
            message = f"Incorrect API key provided to fake provider {provider.name!r}."
            return self._error(401, message, "invalid_api_key")

        fault = provider._take_fault()
        stream = isinstance(payload, dict) and payload.get("stream") is True
        if fault.kind == "hang" and self.server.stopping.wait(fault.seconds):
            return self._reset()  # the server is stopping: give up at once
        if fault.kind == "fail":
            return self._fail(fault)
        if fault.kind == "reset" or (fault.kind == "cut" and not stream):
            return self._reset()
        if fault.kind == "garbage":
            return self._send(200, _GARBAGE, "application/json")
        self._route(provider, payload, fault)

    def _route(self, provider: FakeProvider, payload: Any, fault: _Fault) -> None:
        path, get = self.path.split("?", 1)[0].rstrip("/"), self.command == "GET"
        if get and path == "/v1/models":
            models = [provider._model(m) for m in provider.models]
            return self._json(200, {"object": "list", "data": models})
        if get and path.startswith("/v1/models/"):
            model_id = path.removeprefix("/v1/models/")
            if model_id in provider.models:
                return self._json(200, provider._model(model_id))
            return self._error(404, f"The model '{model_id}' does not exist", "model_not_found")
        if self.command != "POST" or path not in _POST_PATHS:
            return self._error(404, f"Unknown request URL: {self.command} {self.path}", None)
        if not isinstance(payload, dict):
            return self._error(400, "The request body must be a JSON object.", None)
        if path == "/v1/embeddings":
            return self._json(200, provider._embeddings(payload))
        if path == "/v1/responses":
            if payload.get("stream") is True:
                return self._error(400, "FakeProvider streams chat completions only.", None)
            return self._json(200, provider._response(payload))
        if payload.get("stream") is True:
            return self._stream(provider._chunks(payload), fault)
        self._json(200, provider._completion(payload))

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

    def _error(
        self, status: int, message: str, code: str | None, headers: dict[str, str] | None = None
    ) -> None:
        kind = "requests" if status == 429 else "server_error" if status >= 500 else None
        error = {"message": message, "type": kind or "invalid_request_error"}
        self._json(status, {"error": {**error, "param": None, "code": code}}, headers)

    def _fail(self, fault: _Fault) -> None:
        headers = {} if fault.retry_after is None else {"Retry-After": str(fault.retry_after)}
        code = fault.code or ("rate_limit_exceeded" if fault.status == 429 else None)
        default = f"[{self.server.provider.name}] simulated HTTP {fault.status} failure"
        self._error(fault.status, fault.message or default, code, headers)

    def _stream(self, events: list[dict[str, Any]], fault: _Fault) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if fault.kind == "truncate":  # content-bearing chunks only: no finish_reason, no usage
            events = [e for e in events if e["choices"] and not e["choices"][0]["finish_reason"]]
        data = [f"data: {json.dumps(event)}\n\n".encode() for event in events]
        if fault.kind in ("cut", "truncate"):
            data = data[: fault.after]
        else:
            data.append(b"data: [DONE]\n\n")
        for item in data:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(item), item))
        if fault.kind == "cut":
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


class FakeProvider:
    """An OpenAI-compatible server on 127.0.0.1 that can be told to fail.

    ``reply`` computes the text of chat and responses answers from the request
    JSON (default: ``"[name] <last user message>"``). ``models`` are what
    ``/v1/models`` lists; chat and embeddings accept any model name.
    """

    def __init__(
        self,
        name: str = "fake",
        *,
        reply: Reply | None = None,
        models: tuple[str, ...] = ("fake-model",),
        api_key: str | None = None,
        port: int = 0,
    ) -> None:
        self.name = name
        self.api_key = api_key or f"sk-fake-{name}-{secrets.token_hex(8)}"
        self.models = models
        self.port = port  # 0 picks a free port at the first start; kept across restarts
        self._reply = reply
        self._lock = threading.Lock()
        self._queue: collections.deque[_Fault] = collections.deque()
        self._holding = _HEALTHY
        self._requests: list[RecordedRequest] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:  # never shows the api key
        state = "running" if self.running else "stopped"
        return f"<FakeProvider {self.name!r} {self.base_url} {state}>"

    # -- lifecycle ---------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> FakeProvider:
        """Start serving (on the same port after a stop); does nothing if running."""
        with self._lock:
            if self._server is None:
                server = _Server(self.port, self)
                self.port = server.server_address[1]
                self._server = server
                self._thread = threading.Thread(
                    target=server.serve_forever,
                    kwargs={"poll_interval": 0.02},  # so that stop() returns quickly
                    name=f"FakeProvider-{self.name}",
                    daemon=True,
                )
                self._thread.start()
        return self

    def stop(self) -> None:
        """Stop at once, cutting hung requests and open keep-alive connections."""
        with self._lock:
            server, thread = self._server, self._thread
            self._server = self._thread = None
        if server is None or thread is None:
            return
        server.stopping.set()
        server.shutdown()
        server.server_close()
        server.close_connections()
        thread.join(timeout=1)

    def __enter__(self) -> FakeProvider:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- clients -----------------------------------------------------------

    def client(self, **kwargs: Any) -> openai.OpenAI:
        """An ``openai.OpenAI`` for this provider; ``kwargs`` override ``max_retries=0`` etc."""
        import openai

        return openai.OpenAI(**{**self._client_kwargs(), **kwargs})

    def async_client(self, **kwargs: Any) -> openai.AsyncOpenAI:
        """An ``openai.AsyncOpenAI`` for this provider; ``kwargs`` as for :meth:`client`."""
        import openai

        return openai.AsyncOpenAI(**{**self._client_kwargs(), **kwargs})

    def _client_kwargs(self) -> dict[str, Any]:
        return {"base_url": self.base_url, "api_key": self.api_key, "max_retries": 0}

    # -- faults ------------------------------------------------------------

    def fail(
        self,
        status: int = 500,
        times: int | None = None,
        retry_after: int | str | None = None,
        *,
        code: str | None = None,
        message: str | None = None,
    ) -> None:
        """Answer with an OpenAI error body (a 429 gets code ``rate_limit_exceeded``)."""
        if not 400 <= status <= 599:
            raise ValueError(f"status must be an HTTP error status (400-599), got {status}")
        fault = _Fault("fail", status, code, message, retry_after)
        self._add(fault, times)

    def hang(self, seconds: float, times: int | None = None) -> None:
        """Wait ``seconds`` before answering normally (cut short by ``stop()``)."""
        self._add(_Fault("hang", seconds=seconds), times)

    def reset(self, times: int | None = None) -> None:
        """Close the connection with a TCP RST, sending no response."""
        self._add(_Fault("reset"), times)

    def garbage(self, times: int | None = None) -> None:
        """Answer 200 ``application/json`` with a body that is not JSON."""
        self._add(_Fault("garbage"), times)

    def cut_stream(self, after: int = 2, times: int | None = None) -> None:
        """Streams: send ``after`` SSE data chunks, then a RST. Other requests: ``reset``."""
        self._add(_Fault("cut", after=after), times)

    def truncate_stream(self, after: int = 2, times: int | None = None) -> None:
        """Streams: ``after`` chunks, then a clean end without finish_reason or [DONE].

        Other requests are answered normally (and consume the fault).
        """
        self._add(_Fault("truncate", after=after), times)

    def recover(self) -> None:
        """Clear every queued and holding fault."""
        with self._lock:
            self._queue.clear()
            self._holding = _HEALTHY

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of the requests received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def _add(self, fault: _Fault, times: int | None) -> None:
        if times is not None and times < 0:
            raise ValueError(f"times must be >= 0 or None, got {times}")
        with self._lock:
            if times is None:
                self._queue.clear()
                self._holding = fault
            else:
                self._queue.extend([fault] * times)

    def _take_fault(self) -> _Fault:
        with self._lock:
            return self._queue.popleft() if self._queue else self._holding

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    # -- response bodies ---------------------------------------------------

    def _content(self, payload: dict[str, Any], items: Any) -> str:
        if self._reply is not None:
            return self._reply(payload)
        if isinstance(items, str):  # the Responses API accepts a plain string
            return f"[{self.name}] {items}"
        text = ""
        for item in items if isinstance(items, list) else []:
            if isinstance(item, dict) and item.get("role") == "user":
                text = _text_of(item.get("content"))
        return f"[{self.name}] {text}"

    def _model(self, model_id: str) -> dict[str, Any]:
        return {"id": model_id, "object": "model", "created": 1_700_000_000, "owned_by": self.name}

    def _completion(self, payload: dict[str, Any]) -> dict[str, Any]:
        content = self._content(payload, payload.get("messages"))
        message = {"role": "assistant", "content": content, "refusal": None}
        choice = {"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}
        return {
            "id": f"chatcmpl-{secrets.token_hex(12)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": payload.get("model", ""),
            "choices": [choice],
            "usage": _usage(payload, content),
        }

    def _chunks(self, payload: dict[str, Any]) -> list[dict[str, Any]]:
        content = self._content(payload, payload.get("messages"))
        size = max(1, -(-len(content) // 4))  # about four content pieces
        pieces = [content[i : i + size] for i in range(0, len(content), size)] or [""]
        with_usage = bool((payload.get("stream_options") or {}).get("include_usage"))
        base: dict[str, Any] = {
            "id": f"chatcmpl-{secrets.token_hex(12)}",
            "created": int(time.time()),
        }
        base.update(object="chat.completion.chunk", model=payload.get("model", ""))

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
            return {**base, "choices": [choice], **({"usage": None} if with_usage else {})}

        events = [chunk({"role": "assistant", "content": ""})]
        events += [chunk({"content": piece}) for piece in pieces]
        events.append(chunk({}, "stop"))
        if with_usage:
            events.append({**base, "choices": [], "usage": _usage(payload, content)})
        return events

    def _embeddings(self, payload: dict[str, Any]) -> dict[str, Any]:
        raw = payload.get("input")
        # A string or one token list is a single input; otherwise a list of them.
        inputs = raw if isinstance(raw, list) and raw and not isinstance(raw[0], int) else [raw]
        dims = payload.get("dimensions") or 8
        data = []
        for index, item in enumerate(inputs):
            vector: Any = _vector(json.dumps(item), dims)
            if payload.get("encoding_format") == "base64":  # the openai client's default
                vector = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": vector})
        tokens = sum(len(json.dumps(item).split()) for item in inputs)
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return {"object": "list", "data": data, "model": payload.get("model", ""), "usage": usage}

    def _response(self, payload: dict[str, Any]) -> dict[str, Any]:
        text = self._content(payload, payload.get("input"))
        part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
        message = {"type": "message", "id": f"msg_{secrets.token_hex(12)}", "role": "assistant"}
        used = _usage(payload, text)
        return {
            "id": f"resp_{secrets.token_hex(12)}",
            "object": "response",
            "created_at": int(time.time()),
            "model": payload.get("model", ""),
            "status": "completed",
            "output": [{**message, "status": "completed", "content": [part]}],
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "error": None,
            "incomplete_details": None,
            "usage": {
                "input_tokens": used["prompt_tokens"],
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": used["completion_tokens"],
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": used["total_tokens"],
            },
        }


def _text_of(content: Any) -> str:
    """The text of a message ``content``: a string or a list of text parts."""
    if isinstance(content, str):
        return content
    parts = content if isinstance(content, list) else []
    return " ".join(str(p.get("text", "")) for p in parts if isinstance(p, dict))


def _usage(payload: dict[str, Any], content: str) -> dict[str, int]:
    # Rough word counts: deterministic and good enough for tests.
    prompt = len(json.dumps(payload.get("messages", payload.get("input", ""))).split())
    done = len(content.split())
    return {"prompt_tokens": prompt, "completion_tokens": done, "total_tokens": prompt + done}


def _vector(text: str, dims: int) -> list[float]:
    """A deterministic pseudo-embedding in [0, 1); exact in float32, so base64 round-trips."""
    digest = b""
    while len(digest) < dims:
        digest += hashlib.sha256(digest + text.encode()).digest()
    return [byte / 256 for byte in digest[:dims]]
