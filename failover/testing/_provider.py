"""``FakeProvider``: the server's lifecycle, its clients, and the faults a test injects."""

from __future__ import annotations

import collections
import secrets
import threading
from typing import TYPE_CHECKING, Any

from failover.testing._script import Answer, Reply
from failover.testing._server import _HEALTHY, RecordedRequest, _Fault, _Kind, _Server

if TYPE_CHECKING:
    import openai

#: Azure's API version that ``azure_client()`` asks for (any is accepted).
AZURE_API_VERSION = "2024-10-21"


class FakeProvider:
    """An OpenAI-compatible server on 127.0.0.1 that can be told to fail.

    ``reply`` is what chat, completions and responses answer: an :data:`Answer` (a string,
    a list of :class:`ToolCall`, or a dict or pydantic model sent as JSON text), or a
    function of the request JSON that returns one. Without it the answer is the smallest
    JSON instance of the request's ``response_format`` / ``text.format`` schema if it asks
    for one, else ``"[name] <last user message>"``. ``models`` are what ``/v1/models``
    lists; the other endpoints accept any model name.
    """

    def __init__(
        self,
        name: str = "fake",
        *,
        reply: Answer | Reply | None = None,
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
        # What the provider made (responses, files, batches ...), by id: what lookups find.
        self._objects: dict[str, dict[str, Any]] = {}
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

    def azure_client(self, **kwargs: Any) -> openai.AzureOpenAI:
        """An ``openai.AzureOpenAI`` for this provider (``api-key`` header, deployment paths)."""
        import openai

        return openai.AzureOpenAI(**self._azure_kwargs(kwargs))

    def async_azure_client(self, **kwargs: Any) -> openai.AsyncAzureOpenAI:
        """An ``openai.AsyncAzureOpenAI``; ``kwargs`` as for :meth:`azure_client`."""
        import openai

        return openai.AsyncAzureOpenAI(**self._azure_kwargs(kwargs))

    def _client_kwargs(self) -> dict[str, Any]:
        return {"base_url": self.base_url, "api_key": self.api_key, "max_retries": 0}

    def _azure_kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        # base_url and azure_endpoint are exclusive: a caller's base_url wins.
        where = {} if "base_url" in kwargs else {"azure_endpoint": f"http://127.0.0.1:{self.port}"}
        defaults = {"api_key": self.api_key, "api_version": AZURE_API_VERSION, "max_retries": 0}
        return {**defaults, **where, **kwargs}

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
        self._add(_Fault(_Kind.FAIL, status, code, message, retry_after), times)

    def hang(self, seconds: float, times: int | None = None) -> None:
        """Wait ``seconds`` before answering normally (cut short by ``stop()``)."""
        self._add(_Fault(_Kind.HANG, seconds=seconds), times)

    def reset(self, times: int | None = None) -> None:
        """Close the connection with a TCP RST, sending no response."""
        self._add(_Fault(_Kind.RESET), times)

    def garbage(self, times: int | None = None) -> None:
        """Answer 200 ``application/json`` with a body that is not JSON."""
        self._add(_Fault(_Kind.GARBAGE), times)

    def cut_stream(self, after: int = 2, times: int | None = None) -> None:
        """Streams: send ``after`` SSE data chunks, then a RST. Other requests: ``reset``."""
        self._add(_Fault(_Kind.CUT, after=after), times)

    def truncate_stream(self, after: int = 2, times: int | None = None) -> None:
        """Streams: ``after`` events, then a clean end with no terminal event.

        No ``finish_reason``, usage or ``[DONE]`` (chat and completions), no
        ``response.completed`` (responses). Other requests are answered normally (and
        consume the fault).
        """
        self._add(_Fault(_Kind.TRUNCATE, after=after), times)

    def trickle(self, interval: float, chunks: int = 10, times: int | None = None) -> None:
        """Streams: the answer in ``chunks`` content chunks, ``interval`` seconds apart.

        The first event comes at once, each content chunk after ``interval`` seconds, the
        terminal events right after the last one: a slow but complete answer of about
        ``chunks * interval`` seconds. Other requests are answered normally.
        """
        if interval < 0 or chunks < 1:
            raise ValueError(f"need interval >= 0 and chunks >= 1, got {interval}, {chunks}")
        self._add(_Fault(_Kind.TRICKLE, seconds=interval, chunks=chunks), times)

    def pause(self, after: int, seconds: float, times: int | None = None) -> None:
        """Streams: ``after`` events, ``seconds`` of silence, then the rest as normal.

        A reasoning model's long pause. Other requests are answered normally.
        """
        if after < 0 or seconds < 0:
            raise ValueError(f"need after >= 0 and seconds >= 0, got {after}, {seconds}")
        self._add(_Fault(_Kind.PAUSE, seconds=seconds, after=after), times)

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

    # -- what the server asks ----------------------------------------------

    def _authorized(self, headers: dict[str, str]) -> bool:
        # OpenAI's Bearer token, or Azure's api-key header.
        bearer = headers.get("authorization") == f"Bearer {self.api_key}"
        return bearer or headers.get("api-key") == self.api_key

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _store(self, made: dict[str, Any]) -> None:
        with self._lock:
            self._objects[made["id"]] = made

    def _stored(self, resource: str) -> dict[str, Any] | None:
        with self._lock:
            return self._objects.get(resource)

    def _forget(self, resource: str) -> None:
        with self._lock:
            self._objects.pop(resource, None)

    def made(self, kind: str) -> list[dict[str, Any]]:
        """What this provider made of ``kind`` (an ``object`` value: ``"batch"``, ``"file"``)."""
        with self._lock:
            return [made for made in self._objects.values() if made.get("object") == kind]
