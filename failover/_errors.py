"""Exceptions raised by failover.

The tree, with where each comes from::

    BaseException
    └── Exception
        ├── ExceptionGroup
        │   └── FailoverError          every provider failed; .attempts pairs .exceptions
        ├── openai.OpenAIError
        │   └── MissingAPIKey          a provider's key variable is unset (no request sent)
        ├── ProviderSkipped            stands in .exceptions for a provider the breaker skipped
        │   └── ProviderBound          ... or one that cannot know a resource the call names
        ├── StreamTruncated            a stream ended without its terminal event (provider fault)
        ├── StreamInterrupted          a proxied stream broke after chunks reached the caller
        └── TimeoutError
            └── DeadlineExceeded       the call's deadline ran out; last entry of FailoverError

The original provider errors (``openai.APIStatusError``, ``openai.APIConnectionError``,
``json.JSONDecodeError`` ...) are never wrapped: they stand in ``FailoverError.exceptions``
as raised, each with a PEP 678 note naming its provider, so ``except*`` works on them.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import openai

from ._portable import Sent, by_state

if sys.version_info < (3, 11):  # pragma: no cover - exercised on old Pythons only
    from exceptiongroup import BaseExceptionGroup, ExceptionGroup

__all__ = [
    "Attempt",
    "DeadlineExceeded",
    "FailoverError",
    "MissingAPIKey",
    "ProviderBound",
    "ProviderSkipped",
    "StreamInterrupted",
    "StreamTruncated",
]


@dataclass(frozen=True, slots=True)
class Attempt:
    """One try on one provider, as recorded in :class:`FailoverError`."""

    provider: str
    error: BaseException
    elapsed: float
    skipped: bool = False

    def __reduce__(self) -> tuple[Any, ...]:
        return Attempt, (self.provider, Sent(self.error), self.elapsed, self.skipped)

    def __copy__(self) -> Attempt:
        return self  # frozen (copy.copy would otherwise run __reduce__, Sent and all)


def add_note(exc: BaseException, note: str) -> None:
    """PEP 678 ``add_note``, also where Python < 3.11 lacks the method."""
    notes: list[str] = getattr(exc, "__notes__", [])
    notes.append(note)
    setattr(exc, "__notes__", notes)  # noqa: B010 - unknown to type checkers before 3.11


def describe(exc: BaseException) -> str:
    """``ClassName`` plus the HTTP status when there is one: short, and never a secret."""
    status = getattr(exc, "status_code", None)
    name = type(exc).__name__
    return f"{name} {status}" if isinstance(status, int) else name


class FailoverError(ExceptionGroup[Exception]):
    """Every provider failed. ``.exceptions`` are the errors in attempt order."""

    attempts: tuple[Attempt, ...]

    def __new__(
        cls, message: str, exceptions: Sequence[Exception], attempts: Sequence[Attempt] = ()
    ) -> FailoverError:
        self: FailoverError = super().__new__(cls, message, exceptions)
        self.attempts = tuple(attempts)
        return self

    def __init__(
        self, message: str, exceptions: Sequence[Exception], attempts: Sequence[Attempt] = ()
    ) -> None:
        super().__init__(message, exceptions)

    @classmethod
    def from_attempts(cls, attempts: Sequence[Attempt]) -> FailoverError:
        lines = "; ".join(f"{a.provider}: {describe(a.error)}" for a in attempts)
        errors = [a.error for a in attempts]
        # Only Exceptions reach here: the engine never catches BaseException-only errors.
        return cls(f"all providers failed ({lines})", errors, attempts)  # type: ignore[arg-type]

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled with its errors as they can travel (see _portable), each one once: an
        # attempt's error is still the very one in .exceptions where it is unpickled.
        sent: dict[int, Any] = {}
        for error in (*self.exceptions, *(a.error for a in self.attempts)):
            sent.setdefault(id(error), Sent(error))
        errors = [sent[id(e)] for e in self.exceptions]
        attempts = [(a.provider, sent[id(a.error)], a.elapsed, a.skipped) for a in self.attempts]
        state = {k: v for k, v in self.__dict__.items() if k != "attempts"}
        return _unpickled, (self.message, errors, attempts), state

    def __copy__(self) -> FailoverError:
        copied = FailoverError(self.message, self.exceptions, self.attempts)
        copied.__dict__.update(self.__dict__)
        return copied

    def derive(self, excs: Sequence[Exception]) -> FailoverError:  # type: ignore[override]
        # except* splits the group: keep the attempts whose errors remain in the part
        # (a nested group comes back as a new, smaller group of the same leaves).
        kept = [a for a in self.attempts if any(_within(e, a.error) for e in excs)]
        return FailoverError(self.message, excs, kept)


def _unpickled(
    message: str, errors: Sequence[Exception], attempts: Sequence[tuple[Any, ...]]
) -> FailoverError:
    return FailoverError(message, errors, [Attempt(*a) for a in attempts])


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _within(part: BaseException, whole: BaseException) -> bool:
    """``part`` is ``whole``, or what a split kept of it."""
    if part is whole:
        return True
    if not isinstance(part, BaseExceptionGroup) or not isinstance(whole, BaseExceptionGroup):
        return False
    return all(any(leaf is mine for mine in _leaves(whole)) for leaf in _leaves(part))


class MissingAPIKey(openai.OpenAIError):
    """A provider's API key variable is unset, so no request was sent to it."""

    __reduce__ = by_state

    def __init__(self, provider: str, variable: str) -> None:
        super().__init__(f"{provider}: no API key, set the {variable} environment variable")
        self.variable = variable


class ProviderSkipped(Exception):
    """The breaker held this provider open, so the call went to the next one."""

    __reduce__ = by_state

    def __init__(self, provider: str, reason: str, until: float) -> None:
        super().__init__(f"{provider} skipped: {reason} (open for {until:.2f}s more)")
        self.provider = provider
        self.reason = reason
        self.until = until


class ProviderBound(ProviderSkipped):
    """The call names a resource (a file, a response, a batch ...) that another provider
    of the chain made: only that one can know it, so this one was not asked."""

    def __init__(self, provider: str, owner: str, resource: str) -> None:
        self.message = f"resource {resource} belongs to provider {owner!r}"
        Exception.__init__(self, f"{provider} skipped: {self.message}")
        self.provider = provider
        self.reason = self.message
        self.until = 0.0
        self.owner = owner
        self.resource = resource

    def on(self, provider: str) -> ProviderBound:
        """The same binding, as it stands for another provider of the chain."""
        return ProviderBound(provider, self.owner, self.resource)


def bound_in(exc: BaseException) -> ProviderBound | None:
    """The :class:`ProviderBound` that ``exc`` is, or was raised ``from`` (a framework's)."""
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        if isinstance(link, ProviderBound):
            return link
        seen.add(id(link))
        link = link.__cause__
    return None


class DeadlineExceeded(TimeoutError):
    """The whole call's ``deadline`` ran out before any provider succeeded."""

    __reduce__ = by_state

    def __init__(self, deadline: float) -> None:
        super().__init__(f"deadline of {deadline:g}s exceeded")
        self.deadline = deadline


class StreamTruncated(Exception):
    """A stream ended cleanly but without its terminal event (a chat or completions
    ``finish_reason``, a Responses ``response.completed``): a silent cut."""

    __reduce__ = by_state

    def __init__(self, provider: str, chunks: int) -> None:
        super().__init__(
            f"{provider}: stream ended after {chunks} chunks without its terminal event "
            "(finish_reason, response.completed)"
        )
        self.provider = provider
        self.chunks = chunks


class StreamInterrupted(Exception):
    """A proxied stream failed after chunks had reached the caller; it cannot fail over."""

    __reduce__ = by_state

    def __init__(self, provider: str, chunks: int, cause: BaseException) -> None:
        super().__init__(
            f"{provider}: stream broke after {chunks} chunks were delivered ({describe(cause)})"
        )
        self.provider = provider
        self.chunks = chunks
