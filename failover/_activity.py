"""The last minute of each provider in this process, and the alarm for frequent switching.

Kept apart from the breaker's records (which may live on Redis and count only what
the breaker needs): plain counters in time buckets, one locked update per attempt that
did not serve, so that ``health()`` can say what share of the traffic each provider
served and how often calls had to leave it, and a WARNING can say so when a provider
keeps failing. A served call takes no lock: it is one append to a :class:`Tally`,
gathered into the buckets when they are read.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

logger = logging.getLogger("failover")

WINDOW = 60.0  # seconds: "the last minute"
STEP = 5.0  # bucket width: the window moves in 5-second steps
#: Fewer attempts than this in the window say nothing of a failure rate: no alarm.
ALERT_MIN_CALLS = 5

# A bucket: [start, attempts, failures, skips, served, moved]; "moved" counts the calls
# that reached the provider (tried or skipped it) and went on without it.
_START, _CALLS, _FAILURES, _SKIPS, _SERVED, _MOVED = range(6)
Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class Alerting:
    """The process-wide alarm setting (see ``configure(alert_failure_rate=...)``)."""

    failure_rate: float | None = 0.2

    def __post_init__(self) -> None:
        rate = self.failure_rate
        if rate is not None and not 0 < rate <= 1:
            raise ValueError(f"alert_failure_rate must be in (0, 1], or None, not {rate!r}")


#: A tally longer than this is gathered by the call that makes it so: memory stays
#: bounded when nothing reads it.
GATHER_AT = 4096


class Tally(collections.deque[float | tuple[float | None] | None]):
    """Successes of one key, in order, each as the start of its time bucket: one
    append each and no lock (a deque's appends and pops are atomic), drained by
    whoever counts them in, under that one's lock.

    A call is counted as it starts (``Chain.ready``); when it fails instead, its count
    is taken back (:meth:`take_back`), in the bucket it went to.
    """

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def take_back(self, start: float | None) -> None:
        """Take back a count appended at ``start``: one append too, drained after it."""
        self.append((start,))

    def drain(self) -> dict[float | None, int]:
        """The successes appended so far less those taken back, by bucket start, in
        order; the ones appended meanwhile stay for the next drain."""
        counts: dict[float | None, int] = {}
        pop = self.popleft
        for _ in range(len(self)):
            entry = pop()
            if isinstance(entry, tuple):  # a count taken back
                counts[entry[0]] = counts.get(entry[0], 0) - 1
            else:
                counts[entry] = counts.get(entry, 0) + 1
        return {start: n for start, n in counts.items() if n}  # (net nothing: nothing to do)


def taken_back(held: list[tuple[float, int]], start: float, calls: int) -> list[int]:
    """How many of ``calls`` counted at ``start`` to take back from each bucket, given as
    its start and what it holds, in order: from the first that start at or after it (a
    late count joins the newest bucket), never below none. Once the buckets no longer
    reach back to ``start``, the calls aged out with theirs: none (the newer buckets
    hold other calls). The rule of the breaker's window and of the last minute alike."""
    if not held or held[0][0] > start:
        return [0] * len(held)
    takes = []
    for begins, holds in held:
        taken = min(calls, holds) if begins >= start else 0
        takes.append(taken)
        calls -= taken
    return takes


class _Rolling:
    __slots__ = ("alerted", "buckets", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self.buckets: list[list[float]] = []
        self.alerted = float("-inf")  # when the last alarm for it was logged

    def take_back(self, start: float, calls: int) -> None:
        """Take ``calls`` served calls counted at ``start`` back (see :func:`taken_back`)."""
        held = [(bucket[_START], int(bucket[_SERVED])) for bucket in self.buckets]
        for bucket, taken in zip(self.buckets, taken_back(held, start, calls), strict=True):
            bucket[_CALLS] -= taken
            bucket[_SERVED] -= taken

    def bucket(self, now: float) -> list[float]:
        buckets = self.buckets
        start = now - now % STEP
        if buckets and buckets[-1][_START] >= start:  # the current one (or a clock step back)
            return buckets[-1]
        while buckets and buckets[0][_START] <= start - WINDOW:
            del buckets[0]
        fresh = [start, 0, 0, 0, 0, 0]
        buckets.append(fresh)
        return fresh

    def totals(self, now: float) -> list[float]:
        """Each counter summed over the buckets that overlap the last minute."""
        sums = [0.0] * 6
        for bucket in self.buckets:
            if bucket[_START] + STEP > now - WINDOW:
                for i in range(_CALLS, _MOVED + 1):
                    sums[i] += bucket[i]
        return sums


class Activity:
    """Rolling counters per provider key, and the calls of the process."""

    def __init__(self, clock: Clock = time.time) -> None:
        self.clock = clock  # seconds; tests inject their own
        self._lock = threading.Lock()
        self._providers: dict[str, _Rolling] = {}
        # Calls served, not yet in the buckets: appended to by ``served``, and by the
        # healthy path itself once ``served`` has made the key's tally (``Chain.ready``).
        self.tallies: dict[str, Tally] = {}
        self._unserved = _Rolling("")  # calls no provider served, in its _CALLS column
        self.alerting = Alerting()

    def _rolling(self, key: str, name: str) -> _Rolling:
        rolling = self._providers.get(key)
        if rolling is None:
            rolling = self._providers[key] = _Rolling(name)
        return rolling

    def served(self, key: str, name: str) -> float:
        """An attempt serves its call (the healthy path: one append, no lock), counted as
        it starts; :meth:`Tally.take_back` takes it back, at the bucket start returned,
        if it fails instead."""
        now = self.clock()
        tally = self.tallies.get(key)
        if tally is None:
            with self._lock:
                tally = self.tallies.setdefault(key, Tally(name))
        start = now - now % STEP
        tally.append(start)
        if len(tally) > GATHER_AT:
            with self._lock:
                self._gather()
        return start

    def _gather(self) -> None:
        """Count the served calls in (under the lock)."""
        for key, tally in self.tallies.items():
            if tally:
                rolling = self._rolling(key, tally.name)
                for start, calls in tally.drain().items():
                    if calls < 0:
                        rolling.take_back(start or 0.0, -calls)
                        continue
                    bucket = rolling.bucket(start or 0.0)
                    bucket[_CALLS] += calls
                    # The process's calls: every provider's served, plus unserved.
                    bucket[_SERVED] += calls

    def unserved(self) -> None:
        """A call ended without an answer (every provider failed, or the caller's error)."""
        now = self.clock()
        with self._lock:
            self._gather()  # the buckets go forward in time: what came before, first
            self._unserved.bucket(now)[_CALLS] += 1

    def skipped(self, key: str, name: str) -> None:
        now = self.clock()
        with self._lock:
            self._gather()
            bucket = self._rolling(key, name).bucket(now)
            bucket[_SKIPS] += 1
            bucket[_MOVED] += 1

    def ended(self, key: str, name: str, *, failed: bool, moved: bool) -> None:
        """An attempt that did not serve: ``failed`` (a provider fault), and whether the
        call then ``moved`` on to another provider. Raises the alarm when it is due."""
        now = self.clock()
        with self._lock:
            self._gather()  # the alarm's rates count the calls served too
            rolling = self._rolling(key, name)
            bucket = rolling.bucket(now)
            bucket[_CALLS] += 1
            bucket[_FAILURES] += failed
            bucket[_MOVED] += moved
            alarm = self._alarm(rolling, now) if failed else None
        if alarm is not None:
            logger.warning(*alarm)

    def _alarm(self, rolling: _Rolling, now: float) -> tuple[object, ...] | None:
        threshold = self.alerting.failure_rate
        if threshold is None or now - rolling.alerted < WINDOW:
            return None
        sums = rolling.totals(now)
        calls, failures = sums[_CALLS], sums[_FAILURES]
        if calls < ALERT_MIN_CALLS or failures < threshold * calls:
            return None
        rolling.alerted = now
        reached = sums[_SERVED] + sums[_MOVED]
        return (
            "failover: %s failed %.0f%% of its %d attempts in the last minute "
            "(alert_failure_rate=%s); %.0f%% of the calls that reached it went elsewhere",
            rolling.name,
            100 * failures / calls,
            calls,
            threshold,
            100 * sums[_MOVED] / reached if reached else 0.0,
        )

    def view(self, key: str) -> dict[str, object]:
        """``health()[name]["last_minute"]``: this process's last minute of the provider."""
        now = self.clock()
        with self._lock:
            self._gather()
            rolling = self._providers.get(key)
            sums = rolling.totals(now) if rolling is not None else [0.0] * 6
            calls = self._unserved.totals(now)[_CALLS]
            calls += sum(other.totals(now)[_SERVED] for other in self._providers.values())
        reached = sums[_SERVED] + sums[_MOVED]
        return {
            "calls": int(sums[_CALLS]),
            "failures": int(sums[_FAILURES]),
            "skips": int(sums[_SKIPS]),
            "served": sums[_SERVED] / calls if calls else 0.0,
            "failover_rate": sums[_MOVED] / reached if reached else 0.0,
        }

    def clear(self) -> None:
        with self._lock:
            self._providers.clear()
            self.tallies.clear()
            self._unserved = _Rolling("")


ACTIVITY = Activity()
