"""What fails over: telling a provider's fault from the caller's own bug.

Type alone cannot tell them apart: a 200 whose body is not JSON surfaces as
``json.JSONDecodeError``, a ``ValueError`` like any in the caller's code. So an
error counts as the provider's when it is an ``openai.APIError`` (only the client
raises those) or when it was raised *inside a call on a client that failover
handed out* and its traceback passes through the client's transport (sending,
reading or parsing a response). Argument checks that the client does before any
request (``TypeError``, ``ValueError`` for an empty id) never reach the transport,
so they stay the caller's bug.

Frameworks (instructor, pydantic-ai) catch the client's error and raise their own
``from`` it: such an error is the provider's when its explicit cause chain holds a
provider fault, and that fault is what the breaker, fault kinds and ``Retry-After``
read (see :func:`provider_fault`). A mere ``__context__`` (an error raised while
handling another, without ``from``) is not followed: that is the caller's code.
"""

from __future__ import annotations

import email.utils
import enum
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Union

import openai

from ._errors import MissingAPIKey, ProviderBound, StreamInterrupted, StreamTruncated
from ._openai import TRANSPORT_MODULES

_TRANSPORT_PREFIXES = ("httpx", "httpcore", "h11.", "h2.")
_REFUSAL_CODES = frozenset({"content_policy_violation", "content_filter"})
_UNWELL_STATUSES = frozenset({401, 403, 408, 429})
_MARK = "__failover_fault__"
FINAL = "__failover_final__"  # set on an error that must reach the caller as it is

#: What ``on=`` accepts: exception types, or a predicate on the exception.
OnSpec = Union[
    type[BaseException], tuple[type[BaseException], ...], Callable[[BaseException], bool]
]


class Fault(enum.Enum):
    """How a failed attempt bears on its provider's health."""

    UNWELL = "unwell"  # outage-like: counts toward opening the breaker
    REQUEST = "request"  # about the request (other 4xx): fails over, proves the provider answers
    REFUSAL = "refusal"  # a content refusal: raised at once by default


def _from_transport(tb: TracebackType | None) -> bool:
    while tb is not None:
        module = tb.tb_frame.f_globals.get("__name__", "")
        if module in TRANSPORT_MODULES or module.startswith(_TRANSPORT_PREFIXES):
            return True
        tb = tb.tb_next
    return False


def mark_if_transport(exc: BaseException) -> None:
    """Called on errors leaving a call on a handed-out client: remember the provider's."""
    # A TypeError is the caller's (an argument the client cannot encode), wherever raised.
    if (
        isinstance(exc, Exception)
        and not isinstance(exc, TypeError)
        and _from_transport(exc.__traceback__)
    ):
        mark_fault(exc)


def mark_fault(exc: BaseException) -> None:
    """Count ``exc`` as the provider's whatever its type (a client that cannot be built)."""
    try:
        setattr(exc, _MARK, True)
    except AttributeError:  # pragma: no cover - exceptions with __slots__ are rare
        pass


def mark_final(exc: BaseException) -> None:
    """Never fail over on ``exc``, whatever ``on=`` says: the call may have been accepted."""
    try:
        setattr(exc, FINAL, True)
    except AttributeError:  # pragma: no cover - exceptions with __slots__ are rare
        pass


def is_provider_fault(exc: BaseException) -> bool:
    """The default rule of ``on=``: any provider-side failure."""
    return isinstance(exc, (openai.APIError, MissingAPIKey, StreamTruncated)) or bool(
        getattr(exc, _MARK, False)
    )


def provider_fault(exc: BaseException) -> BaseException | None:
    """The provider fault ``exc`` is, or was raised ``from`` (its ``__cause__`` chain)."""
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        if is_provider_fault(link):
            return link
        if isinstance(link, StreamInterrupted):
            return None  # chunks reached the caller: what it was raised from is spent
        seen.add(id(link))
        link = link.__cause__
    return None


def status_of(exc: BaseException) -> int | None:
    status = getattr(exc, "status_code", None)
    return status if isinstance(status, int) else None


def fault_kind(exc: BaseException) -> Fault:
    status = status_of(exc)
    if status is None or status >= 500 or status in _UNWELL_STATUSES:
        return Fault.UNWELL
    if status == 400 and getattr(exc, "code", None) in _REFUSAL_CODES:
        return Fault.REFUSAL
    return Fault.REQUEST


def retry_after(exc: BaseException, now: Callable[[], float] = time.time) -> float | None:
    """Seconds a 429/503 asks us to stay away (``Retry-After`` as seconds or HTTP date)."""
    if status_of(exc) not in (429, 503):
        return None
    response = getattr(exc, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now())


@dataclass(frozen=True, slots=True)
class Policy:
    """Decides, per error, whether the call moves on to the next provider."""

    on: OnSpec | None = None

    def fails_over(self, exc: BaseException) -> bool:
        if (
            not isinstance(exc, Exception)
            or isinstance(exc, StreamInterrupted)
            or getattr(exc, FINAL, False)
        ):
            # KeyboardInterrupt, SystemExit, GeneratorExit, CancelledError; a stream whose
            # chunks already reached the caller, which no re-run can take back; and a call
            # the provider may have accepted, which must not run twice.
            return False
        if isinstance(exc, ProviderBound):
            return True  # another provider owns what the call names: it goes there
        if self.on is None:
            fault = provider_fault(exc)
            return fault is not None and fault_kind(fault) is not Fault.REFUSAL
        if isinstance(self.on, (type, tuple)):
            # Matched on what a framework wrapped, too: on=RateLimitError around instructor.
            return isinstance(exc, self.on) or isinstance(provider_fault(exc), self.on)
        return bool(self.on(exc))
