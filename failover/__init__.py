"""failover: keep LLM calls alive when a provider fails.

from failover import with_fallback

@with_fallback()                      # CometAPI, then OpenAI, from the environment
def ask(question: str, client=None):
    reply = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": question}]
    )
    return reply.choices[0].message.content
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING

__version__ = "0.1.0"

__all__ = [
    "AsyncOpenAI",
    "Attempt",
    "AttemptContext",
    "Breaker",
    "DeadlineExceeded",
    "Event",
    "FailoverError",
    "FallbackClients",
    "MissingAPIKey",
    "OpenAI",
    "Outcome",
    "Provider",
    "ProviderBound",
    "ProviderSkipped",
    "Retry",
    "State",
    "StreamInterrupted",
    "StreamTruncated",
    "configure",
    "current_provider",
    "fallback_clients",
    "health",
    "with_fallback",
]

logging.getLogger("failover").addHandler(logging.NullHandler())

if TYPE_CHECKING:
    # What type checkers and IDEs see: the names, from their modules, as plain imports.
    from ._attempts import AttemptContext
    from ._client import AsyncOpenAI, OpenAI
    from ._context import FallbackClients, fallback_clients
    from ._decorator import with_fallback
    from ._errors import (
        Attempt,
        DeadlineExceeded,
        FailoverError,
        MissingAPIKey,
        ProviderBound,
        ProviderSkipped,
        StreamInterrupted,
        StreamTruncated,
    )
    from ._health import Breaker, State, health
    from ._providers import Provider
    from ._retry import Retry
    from ._scope import current_provider
    from ._settings import Event, Outcome
    from ._telemetry import configure
else:
    # At run time each name is imported on first use (PEP 562), so ``import failover``
    # costs next to nothing and each form loads only its own modules: a decorator user
    # never loads the drop-in's proxy, nor the drop-in user the decorator. Once
    # imported, a name is a plain module global: later uses never come back here.
    _HOME = {  # where each name lives
        "AsyncOpenAI": "_client",
        "Attempt": "_errors",
        "AttemptContext": "_attempts",
        "Breaker": "_health",
        "DeadlineExceeded": "_errors",
        "Event": "_settings",
        "FailoverError": "_errors",
        "FallbackClients": "_context",
        "MissingAPIKey": "_errors",
        "OpenAI": "_client",
        "Outcome": "_settings",
        "Provider": "_providers",
        "ProviderBound": "_errors",
        "ProviderSkipped": "_errors",
        "Retry": "_retry",
        "State": "_health",
        "StreamInterrupted": "_errors",
        "StreamTruncated": "_errors",
        "configure": "_telemetry",
        "current_provider": "_scope",
        "fallback_clients": "_context",
        "health": "_health",
        "with_fallback": "_decorator",
    }

    def __getattr__(name: str) -> object:
        module = _HOME.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
        globals()[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*globals(), *__all__})
