"""The attempt in progress: its provider and its time bounds.

Every client that failover hands out carries the :class:`Scope` of its attempt, so
calls made from worker threads (which do not inherit context variables) still get
the attempt's model names and timeouts. The context variable only serves
:func:`current_provider`.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import openai

if TYPE_CHECKING:
    from ._ownership import Ownership
    from ._providers import Endpoint

_PHASES = ("connect", "read", "write", "pool")
Phases = tuple[float | None, float | None, float | None, float | None]


@dataclass(frozen=True, slots=True)
class Scope:
    """One attempt: whose client it is, and what bounds its requests (monotonic times)."""

    endpoint: Endpoint
    ends_at: float | None = None  # attempt_timeout: until the answer starts arriving
    deadline_at: float | None = None  # the whole call's deadline
    deadline: float | None = None  # its length in seconds, for DeadlineExceeded
    first_token_timeout: float | None = None
    stall_timeout: float | None = None
    # The streams opened in the attempt, for drivers that close them when it ends early.
    opened: list[Any] | None = field(default=None, compare=False)
    # The chain's view of who owns which resource (ids go back to their provider).
    ownership: Ownership | None = field(default=None, compare=False)
    # Whether any bound applies: unbounded calls skip all timeout arithmetic.
    bounded: bool = field(init=False, repr=False, compare=False)
    # Unbounded, and no model names to map: a call's arguments go out as they are.
    plain: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        bounds = (
            self.ends_at,
            self.deadline_at,
            self.first_token_timeout,
            self.stall_timeout,
        )
        bounded = any(b is not None for b in bounds)
        spec = self.endpoint.spec
        object.__setattr__(self, "bounded", bounded)
        object.__setattr__(self, "plain", not bounded and (spec is None or not spec.models))

    def remaining(self, now: float) -> float | None:
        """Seconds left of the attempt's own budget and of the deadline (None: unbounded)."""
        ends = [t for t in (self.ends_at, self.deadline_at) if t is not None]
        return max(0.001, min(ends) - now) if ends else None

    def first_chunk_by(self, started: float) -> float | None:
        """When a stream sent at ``started`` must have shown its first chunk."""
        ends = [t for t in (self.ends_at, self.deadline_at) if t is not None]
        if self.first_token_timeout is not None:
            ends.append(started + self.first_token_timeout)
        return min(ends) if ends else None


def phases(timeout: Any) -> Phases:
    """A client's or a call's timeout, per phase (None: no limit)."""
    if isinstance(timeout, (int, float)):
        return (timeout, timeout, timeout, timeout)
    if timeout is None:
        return (None, None, None, None)
    return (timeout.connect, timeout.read, timeout.write, timeout.pool)


def narrowed(own: Phases, limit: float) -> openai.Timeout:
    """``own`` with every phase cut to at most ``limit``: budgets never widen a timeout."""
    cut = [limit if t is None else min(t, limit) for t in own]
    return openai.Timeout(None, **dict(zip(_PHASES, cut, strict=True)))


SCOPE: contextvars.ContextVar[Scope | None] = contextvars.ContextVar("failover_scope", default=None)


def current_provider() -> str | None:
    """The name of the provider whose client the running attempt uses (None outside one)."""
    scope = SCOPE.get()
    return scope.endpoint.name if scope is not None else None
