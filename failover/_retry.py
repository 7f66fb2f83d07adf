"""Same-provider retry: which failures are worth a second try on the provider that
just failed, and how long to wait before it. Pure rules; the engine applies them."""

from __future__ import annotations

import random as _random
from collections.abc import Callable
from dataclasses import dataclass

import httpx2
import openai

from ._policy import status_of

#: Answered, but by a server that may well answer the next request (no Retry-After).
_BACKOFF_STATUSES = frozenset({500, 502, 503, 504})
#: The connection broke after it was made: a restart or a load balancer dropping it.
_RESETS = (
    ConnectionResetError,
    BrokenPipeError,
    httpx2.ReadError,
    httpx2.WriteError,
    httpx2.RemoteProtocolError,
)
_TIMEOUTS = (TimeoutError, openai.APITimeoutError, httpx2.TimeoutException)
#: Nobody listens (or the name does not resolve): a retry would fail the same way.
_REFUSED = (ConnectionRefusedError, httpx2.ConnectError)


def _jitter() -> float:
    # The process's own generator, read at each call: a Retry pickled to a worker (with a
    # decorated function sent by value) draws there, not a copy of this one's state.
    return _random.random()


@dataclass(frozen=True, slots=True)
class Retry:
    """Extra tries on the same provider for transient faults, before the next provider.

    ``attempts`` extra tries at most. A 429 or 503 whose ``Retry-After`` is at most
    ``max_wait`` seconds is retried after that wait; a 500, 502, 503 or 504 without
    one, or a connection reset, after a full-jitter backoff (uniform in 0 to
    ``backoff * 2**n`` for the n-th retry, at most ``max_wait``). ``random`` returns
    a number in [0, 1): the jitter's source, injectable for tests.
    """

    attempts: int = 1
    max_wait: float = 2.0
    backoff: float = 0.2
    random: Callable[[], float] = _jitter

    def __post_init__(self) -> None:
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int):
            raise ValueError(f"Retry needs a whole number of attempts, not {self.attempts!r}")
        if not (self.attempts >= 0 and self.max_wait >= 0 and self.backoff >= 0):
            raise ValueError("Retry needs attempts >= 0, max_wait >= 0 and backoff >= 0")

    def delay(self, exc: BaseException, retried: int, retry_after: float | None) -> float | None:
        """Seconds to wait before retrying after ``exc``, or None for no retry.

        ``retried``: how many retries this provider had in this call already;
        ``retry_after``: what the response asked for, in seconds, if anything.
        """
        if retried >= self.attempts:
            return None
        if retry_after is not None:
            return retry_after if retry_after <= self.max_wait else None
        status = status_of(exc)
        if status in _BACKOFF_STATUSES or (status is None and reset(exc)):
            return self.random() * min(self.max_wait, self.backoff * 2.0**retried)
        return None


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and what caused it, outermost first (cycles cut)."""
    seen: list[BaseException] = []
    link: BaseException | None = exc
    while link is not None and all(link is not s for s in seen):
        seen.append(link)
        link = link.__cause__ or link.__context__
    return seen


def timed_out(exc: BaseException) -> bool:
    """The attempt hit a timeout: the time is spent, whatever the kind of timeout."""
    return any(isinstance(link, _TIMEOUTS) for link in _chain(exc))


def reset(exc: BaseException) -> bool:
    """The connection broke once established (never a refusal, never a timeout)."""
    links = _chain(exc)
    if any(isinstance(link, (*_TIMEOUTS, *_REFUSED)) for link in links):
        return False
    return any(isinstance(link, _RESETS) for link in links)
