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

import logging

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
