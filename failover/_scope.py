"""The attempt in progress, as calls on handed-out clients see it (a context variable,
so each thread and each task sees its own)."""

from __future__ import annotations

import contextvars
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._providers import Endpoint


@dataclass(frozen=True, slots=True)
class Scope:
    """The attempt in progress, seen by calls on the clients failover hands out."""

    endpoint: Endpoint
    ends_at: float | None  # time.monotonic() by which this attempt must be done
    first_token_timeout: float | None

    def timeout(self) -> float | None:
        if self.ends_at is None:
            return None
        return max(0.001, self.ends_at - time.monotonic())


SCOPE: contextvars.ContextVar[Scope | None] = contextvars.ContextVar("failover_scope", default=None)


def current_provider() -> str | None:
    """The name of the provider whose client the running attempt uses (None outside one)."""
    scope = SCOPE.get()
    return scope.endpoint.name if scope is not None else None
