"""Provider health: the circuit breaker's rules and the store that keeps its state.

The rules are pure functions from one provider's :class:`Health` record to the
next; a store only has to apply one of them atomically (``update``). So the
in-process store and a shared one (Redis) run the very same breaker logic.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol, TypeVar

from ._activity import ACTIVITY, GATHER_AT, Tally, taken_back
from ._policy import Fault

R = TypeVar("R")


class State(str, enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Reason(str, enum.Enum):
    """Why a provider's breaker opened (``health()[name]["reason"]``)."""

    CONSECUTIVE = "consecutive"  # ``failures`` unwell faults in a row
    RATE = "rate"  # at least ``failure_rate`` of the window's calls failed
    RETRY_AFTER = "retry_after"  # the provider asked to be left alone until a date
    PROBE = "probe"  # the half-open probe failed


class Verdict(enum.Enum):
    """What the breaker says about trying a provider now."""

    TRY = "try"
    PROBE = "probe"  # the single half-open trial after a cooldown
    SKIP = "skip"


@dataclass(frozen=True, slots=True)
class Breaker:
    """Per-provider circuit breaker settings (the defaults apply when none is given).

    A provider opens after ``failures`` unwell faults in a row, or when at least
    ``failure_rate`` of the (at least ``min_calls``) attempts of the last ``window``
    seconds failed unwell. Its state is shared by every chain in the process that names
    the same provider (same name and base URL); each call applies its own chain's
    settings to it. ``clock`` returns seconds since the epoch and is injectable for tests.
    """

    failures: int = 3
    cooldown: float = 5.0
    max_cooldown: float = 60.0
    #: Also open when, over the last ``window`` seconds, at least ``min_calls`` attempts
    #: were made and at least this share of them failed unwell (None: no such rule).
    failure_rate: float | None = 0.25
    min_calls: int = 20
    window: float = 30.0
    clock: Callable[[], float] = time.time
    #: The width of a failure-rate window bucket (None: no rate rule), for the healthy
    #: path, which computes a success's bucket start inline (see :func:`bucket_start`).
    bucket_width: float | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not (self.failures >= 1 and 0 <= self.cooldown <= self.max_cooldown):
            raise ValueError("Breaker needs failures >= 1 and 0 <= cooldown <= max_cooldown")
        rate = self.failure_rate
        if rate is not None and not (0 < rate <= 1 and self.min_calls >= 1 and self.window > 0):
            raise ValueError("Breaker needs 0 < failure_rate <= 1, min_calls >= 1 and window > 0")
        object.__setattr__(self, "bucket_width", None if rate is None else self.window / BUCKETS)


#: The failure-rate window is this many time buckets of ``window / BUCKETS`` seconds,
#: each ``(start, calls, failures)``: constant memory, whatever the traffic.
BUCKETS = 10
#: A probe that failed in less than this (an HTTP error, a refused connection) cost its
#: caller nothing much: probing again one base cooldown later is cheap.
FAST_FAILURE = 1.0

Bucket = tuple[float, int, int]


class Health(NamedTuple):
    """One provider's breaker state and counters (a tuple: copied on every call, so cheap)."""

    state: State = State.CLOSED
    consecutive_failures: int = 0
    open_until: float = 0.0
    cooldown: float = 0.0  # the cooldown of the last opening, doubled on a failed probe
    probe_until: float = 0.0  # lease of the probe in flight, so a lost probe cannot wedge it
    calls: int = 0
    failures: int = 0
    failovers_served: int = 0
    skipped: int = 0
    reason: Reason | None = None  # why it opened, while not closed
    window: tuple[Bucket, ...] = ()  # recent calls and failures, for the failure rate

    def as_dict(self) -> dict[str, object]:
        return {
            "state": self.state,
            "reason": self.reason,
            "consecutive_failures": self.consecutive_failures,
            "open_until": self.open_until or None,
            "calls": self.calls,
            "failures": self.failures,
            "failovers_served": self.failovers_served,
            "skipped": self.skipped,
        }


FRESH = Health()  # a provider never seen: closed, no counts


def unavailable(h: Health, now: float) -> bool:
    """Open and cooling down, or its one probe in flight: a call would skip it."""
    return h.state is not State.CLOSED and (now < h.open_until or now < h.probe_until)


def _added(
    window: tuple[Bucket, ...], start: float, calls: int, failures: int, since: float | None
) -> tuple[Bucket, ...]:
    """``window`` with ``calls`` and ``failures`` counted in the bucket that starts at
    ``start``; a new bucket drops those that start at or before ``since``, if given."""
    if window and window[-1][0] >= start:
        # The current bucket (or, if another chain's width or clock disagrees, the last).
        last = window[-1]
        return (*window[:-1], (last[0], last[1] + calls, last[2] + failures))
    kept = window if since is None else tuple(bucket for bucket in window if bucket[0] > since)
    return (*kept[1 - BUCKETS :], (start, calls, failures))


def tally(h: Health, b: Breaker, now: float, calls: int, failures: int) -> tuple[Bucket, ...]:
    """The window with ``calls`` and ``failures`` added at ``now``, old buckets dropped."""
    start = bucket_start(b, now)
    if start is None:
        return h.window
    return _added(h.window, start, calls, failures, since=start - b.window)


def rate_exceeded(window: tuple[Bucket, ...], b: Breaker, now: float) -> bool:
    """At least ``min_calls`` calls in the last ``window`` seconds, ``failure_rate`` failed."""
    if b.failure_rate is None:
        return False
    since = now - b.window
    calls = failures = 0
    for start, c, f in window:
        if start > since - b.window / BUCKETS:  # the bucket overlaps the window
            calls += c
            failures += f
    return calls >= b.min_calls and failures >= b.failure_rate * calls


def admit(h: Health, b: Breaker, now: float, force: bool) -> tuple[Health, Verdict]:
    """May a call try this provider now? ``force`` tries it even while unavailable.

    Counts nothing: an attempt is counted when it ends (:func:`failed`, :func:`succeeded`)
    or, on the healthy path, as it starts (a store's ``count``, taken back if it fails),
    so a closed provider's admission changes nothing and the engine decides it from
    ``peek`` alone, without the store's lock.
    """
    if h.state is State.CLOSED or (force and unavailable(h, now)):
        return h, Verdict.TRY
    if not unavailable(h, now):
        return h._replace(state=State.HALF_OPEN, probe_until=now + b.max_cooldown), Verdict.PROBE
    return h, Verdict.SKIP  # counted by count_skip() once the engine is sure it skips


def count_skip(h: Health) -> Health:
    return h._replace(skipped=h.skipped + 1)


def succeeded(h: Health, b: Breaker, now: float, after_failover: bool, calls: int = 1) -> Health:
    """A success that changes the record: it closes the provider, breaks a row of
    failures, or served a failover (a clean one goes to the store's ``count``); it adds
    ``calls`` (0: the call was counted already)."""
    return h._replace(
        state=State.CLOSED,
        consecutive_failures=0,
        open_until=0.0,
        cooldown=0.0,
        probe_until=0.0,
        calls=h.calls + calls,
        failovers_served=h.failovers_served + after_failover,
        reason=None,
        window=tally(h, b, now, calls, 0),
    )


def clean(h: Health) -> bool:
    """Closed with no failure in a row: a success there changes nothing but counts."""
    return h.state is State.CLOSED and not h.consecutive_failures


def bucket_start(b: Breaker, now: float) -> float | None:
    """The start of the window bucket that ``now`` falls in (None: no rate rule)."""
    width = b.bucket_width
    return None if width is None else now - now % width


def fold(h: Health, start: float | None, calls: int) -> Health:
    """``h`` with ``calls`` clean successes counted in the bucket that starts at ``start``
    (fewer than none: counts taken back, see :func:`_less`)."""
    if calls < 0:
        window = h.window if start is None else _less(h.window, start, -calls)
        # Never below none: the record may have been lost (a restart, its ttl) meanwhile.
        return h._replace(calls=max(0, h.calls + calls), window=window)
    if start is None:
        return h._replace(calls=h.calls + calls)
    return h._replace(calls=h.calls + calls, window=_added(h.window, start, calls, 0, None))


def _less(window: tuple[Bucket, ...], start: float, calls: int) -> tuple[Bucket, ...]:
    """``window`` less ``calls`` counted at ``start``, from the buckets they went to (see
    ``taken_back``: ``_added`` puts a late count in the last bucket)."""
    takes = taken_back([(s, c) for s, c, _ in window], start, calls)
    return tuple((s, c - taken, f) for (s, c, f), taken in zip(window, takes, strict=True))


#: Clean successes per window bucket start (None: the breaker has no window).
Counts = dict[float | None, int]


def folded(h: Health, counts: Counts) -> Health:
    """``h`` with ``counts`` counted in (see :func:`fold`)."""
    for start, calls in counts.items():
        h = fold(h, start, calls)
    return h


def released(h: Health) -> Health:
    """A probe that ended without news (the caller's bug, a cancellation): free the slot."""
    state = State.OPEN if h.state is State.HALF_OPEN else h.state
    return h._replace(state=state, probe_until=0.0)


def failed(
    h: Health,
    b: Breaker,
    now: float,
    kind: Fault,
    wait: float | None,
    probe: bool,
    elapsed: float = 0.0,
    timed_out: bool = False,
) -> Health:
    """A failed attempt that took ``elapsed`` seconds (``timed_out``: it hit a timeout)."""
    if kind is not Fault.UNWELL:
        # The provider answered: the fault is the request's, so the row is broken.
        return succeeded(h._replace(failures=h.failures + 1), b, now, after_failover=False)
    h = h._replace(calls=h.calls + 1, failures=h.failures + 1, window=tally(h, b, now, 1, 1))
    count = h.consecutive_failures + 1
    reason = Reason.PROBE if probe else Reason.CONSECUTIVE
    if wait is not None:
        cooldown, reason = min(wait, b.max_cooldown), Reason.RETRY_AFTER
    elif probe:
        # Decided by what the probe cost its caller: its elapsed time, and a timeout
        # always counts as costly (a hang cut short by the budget). A fast failure
        # (an HTTP error, a refused connection) probes again a base cooldown later,
        # so a recovered provider is back within about one cooldown; slow ones back off.
        slow = timed_out or elapsed >= FAST_FAILURE
        cooldown = min(max(h.cooldown, b.cooldown) * 2, b.max_cooldown) if slow else b.cooldown
    elif count >= b.failures or h.state is not State.CLOSED:
        cooldown = b.cooldown
    elif rate_exceeded(h.window, b, now):
        cooldown, reason = b.cooldown, Reason.RATE
    else:
        return h._replace(consecutive_failures=count)
    if h.state is not State.CLOSED and not probe:
        # A call admitted before the breaker opened (or forced), ending now: it may
        # lengthen the open window, never shorten it, nor touch a probe in flight.
        return h._replace(
            consecutive_failures=count,
            open_until=max(h.open_until, now + cooldown),
            cooldown=max(h.cooldown, cooldown),
        )
    return h._replace(
        state=State.OPEN,
        consecutive_failures=count,
        open_until=now + cooldown,
        cooldown=cooldown,
        probe_until=0.0,
        reason=reason,
    )


#: A store's clock (seconds since the epoch), and a change it applies atomically: from a
#: provider's record and the store's now, the new record and what the caller gets back.
Clock = Callable[[], float]
Change = Callable[[Health, float], tuple[Health, R]]


class HealthStore(Protocol):
    """Where breaker state lives: one atomic read-modify-write per provider key.

    ``now`` comes from the store (a shared store uses one clock for every host);
    ``clock`` is the breaker's, for stores that have none of their own. A healthy
    call reads :attr:`views` and appends to :attr:`tallies`, with no call, else asks
    :meth:`peek` and :meth:`count`: none of these does I/O or takes a lock held
    across I/O. :meth:`update` runs only when something may change.
    """

    source: str

    @property
    def views(self) -> Mapping[str, Health]:
        """What :meth:`peek` answers for the keys this process knows (for a missing one,
        ask :meth:`peek`). Written by the store alone; the healthy path reads it."""
        ...

    @property
    def tallies(self) -> Mapping[str, Tally]:
        """Each key's :class:`Tally` of clean successes, that :meth:`count` makes and
        appends to. A healthy call appends its bucket start to it itself, as it starts
        (``Chain.ready``), and calls :meth:`count` when there is none or it is long."""
        ...

    def peek(self, key: str) -> Health:
        """The record as this process knows it now (FRESH when unknown): no I/O, no lock.

        A shared store answers from its cache, which may lag other processes by at most
        its staleness bound.
        """
        ...

    def count(self, key: str, name: str, breaker: Breaker) -> float | None:
        """One clean success: add a call to the record's ``calls`` and to the window
        bucket of ``breaker.clock()``; that bucket's start is returned (None: the breaker
        has no window), where ``Tally.take_back`` takes the call back if it fails
        instead. Never I/O on the caller's path."""
        ...

    def update(self, key: str, name: str, change: Change[R], clock: Clock) -> R:
        """Apply ``change`` atomically. Called on an event loop's thread, a shared store
        must not wait on a socket: it applies the change to its cache and writes behind."""
        ...

    async def aupdate(self, key: str, name: str, change: Change[R], clock: Clock) -> R:
        """:meth:`update` for an async caller that needs the shared answer (the claim of
        a half-open probe: one at a time across processes). Never blocks the loop."""
        ...

    def read(self, keys: Sequence[str], clock: Clock) -> tuple[list[Health], float]:
        """The records of ``keys`` (a fresh one where none is kept) and the store's now."""
        ...

    def snapshot(self) -> dict[str, tuple[str, Health]]: ...


class MemoryStore:
    """The in-process store: a dict under a lock, shared by threads and tasks.

    Clean successes take no lock: each is an append to its key's :class:`Tally`,
    folded into the record whenever the record is updated or read (or the tally
    grows long): a healthy call never builds a new record.
    """

    source = "memory"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.views: dict[str, Health] = {}
        self._names: dict[str, str] = {}
        self.tallies: dict[str, Tally] = {}

    def peek(self, key: str) -> Health:
        return self.views.get(key, FRESH)

    def count(self, key: str, name: str, breaker: Breaker) -> float | None:
        tally = self.tallies.get(key)
        if tally is None:
            with self._lock:
                tally = self.tallies.setdefault(key, Tally(name))
                # Known from now on: a healthy call reads its view with no call.
                self.views.setdefault(key, FRESH)
                self._names.setdefault(key, name)
        start = bucket_start(breaker, breaker.clock())
        tally.append(start)
        if len(tally) > GATHER_AT:
            with self._lock:
                self._fold(key)
        return start

    def update(self, key: str, name: str, change: Change[R], clock: Clock) -> R:
        with self._lock:
            current = self._fold(key)
            new, result = change(current, clock())
            if new is not current:
                self.views[key] = new
                self._names[key] = name
        return result

    async def aupdate(self, key: str, name: str, change: Change[R], clock: Clock) -> R:
        return self.update(key, name, change, clock)

    def read(self, keys: Sequence[str], clock: Clock) -> tuple[list[Health], float]:
        with self._lock:
            return [self._fold(k) for k in keys], clock()

    def snapshot(self) -> dict[str, tuple[str, Health]]:
        with self._lock:
            for key in list(self.tallies):
                self._fold(key)
            return {key: (self._names[key], h) for key, h in self.views.items()}

    def clear(self) -> None:
        with self._lock:
            self.views.clear()
            self._names.clear()
            self.tallies.clear()

    def _fold(self, key: str) -> Health:
        """The record of ``key`` with its tallied successes counted in (under the lock)."""
        record = self.views.get(key, FRESH)
        tally = self.tallies.get(key)
        if not tally:
            return record
        record = self.views[key] = folded(record, tally.drain())
        self._names.setdefault(key, tally.name)
        return record


STORE = MemoryStore()
#: The process-wide store, in a list that ``configure`` changes in place (the healthy
#: path reads ``STORES[0]``, with no call).
STORES: list[HealthStore] = [STORE]


def default_store() -> HealthStore:
    return STORES[0]


def health(store: HealthStore | None = None) -> dict[str, dict[str, object]]:
    """A snapshot of every provider's breaker state, keyed by provider name.

    Reads ``store``, or the process-wide default (see ``configure``); each entry's
    ``source`` says where the state comes from, and its ``last_minute`` what this
    process saw of the provider in the last minute.
    """
    store = store or default_store()
    records = store.snapshot()
    names = [name for name, _ in records.values()]
    return {
        (name if names.count(name) == 1 else key): {
            **record.as_dict(),
            "source": store.source,
            "last_minute": ACTIVITY.view(key),
        }
        for key, (name, record) in records.items()
    }
