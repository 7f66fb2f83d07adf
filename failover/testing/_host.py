"""What the server and the API families agree on: the provider as the families see it,
the handlers each family offers the server, and OpenAI error bodies.

The families (``_chat``, ``_completions``, ``_responses``, ``_embeddings``, ``_files``)
and the server are written against :class:`Host`, not ``FakeProvider``: they sit below
it (``FakeProvider`` starts the server), so naming it would close an import circle.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from failover.testing._script import Answer, Reply
from failover.testing._stream import Stream


class Host(Protocol):
    """The provider as its API families see it: who it is, what it answers, what it made."""

    @property
    def name(self) -> str: ...

    @property
    def models(self) -> tuple[str, ...]: ...

    @property
    def _reply(self) -> Answer | Reply | None: ...

    def _store(self, made: dict[str, Any]) -> None: ...

    def _stored(self, resource: str) -> dict[str, Any] | None: ...

    def _forget(self, resource: str) -> None: ...


#: A family's answer to a request (its JSON body): ``answer(host, payload)``.
Answerer = Callable[[Host, dict[str, Any]], dict[str, Any]]
#: A family's streamed answer, its text in ``pieces`` chunks (None: the default split).
Streamer = Callable[[Host, dict[str, Any], int | None], Stream]


def error_body(status: int, message: str, code: str | None) -> dict[str, Any]:
    """An OpenAI error body."""
    kind = "requests" if status == 429 else "server_error" if status >= 500 else None
    error = {"message": message, "type": kind or "invalid_request_error"}
    return {"error": {**error, "param": None, "code": code}}
