"""What the framework tests share: a failing primary, a backup, and failover's clients.

Every framework gets ``failover.OpenAI`` / ``failover.AsyncOpenAI`` over two fake
providers on 127.0.0.1; the primary fails in one of three ways.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from failover import FailoverError, Provider
from failover.testing import FakeProvider

MODEL = "gpt-4o-mini"

#: How the primary fails: an error status, a dropped connection, a hang past attempt_timeout.
FAULTS: dict[str, Callable[[FakeProvider], None]] = {
    "503": lambda fake: fake.fail(503),
    "reset": lambda fake: fake.reset(),
    "hang": lambda fake: fake.hang(10),
}
ATTEMPT_TIMEOUT = 0.5


def provider(fake: FakeProvider) -> Provider:
    return Provider(fake.name, base_url=fake.base_url, api_key=fake.api_key)


def options() -> dict[str, Any]:
    """The clients' failover options: no breaker and no same-provider retry (each test
    sees each fault go to the backup at once), a short hang."""
    return {"breaker": None, "retry": None, "attempt_timeout": ATTEMPT_TIMEOUT}


def json_reply(payload: dict[str, Any]) -> Callable[[dict[str, Any]], str]:
    """A fake's ``reply=``: ``payload`` as JSON, for structured output."""
    return lambda request: json.dumps(payload)


def caused_by_failover(error: BaseException) -> FailoverError:
    """``error`` itself, or the first one of its ``__cause__`` chain, that is a FailoverError."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, FailoverError):
            return seen
        seen = seen.__cause__
    pytest.fail(f"{error!r} is not a FailoverError, nor caused by one")
