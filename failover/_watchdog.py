"""Time bounds that a request's own timeout cannot express, for streams.

An HTTP client reads one read timeout per response, so it cannot bound the wait
for a stream's first chunk differently from the gaps after it, nor the stream as
a whole (a trickle of chunks each inside the read timeout never times out). One
daemon thread keeps the streams' next expiry and, when one passes, shuts the
stream's socket down: the blocked read (sync, or the event loop's) wakes at once
with an error that the stream wrapper turns into the right one.
"""

from __future__ import annotations

import heapq
import itertools
import os
import socket
import threading
import time
from typing import Any


class Timer:
    """One stream's expiry, moved by its reader (earlier ones are scheduled anew)."""

    __slots__ = ("_lock", "expiry", "fired", "response", "scheduled")

    def __init__(self, expiry: float, response: Any) -> None:
        self.expiry = expiry
        self.response = response
        self.fired = False
        self.scheduled = float("inf")  # the earliest time the watchdog will look at it
        # Disarming and aborting exclude each other: once a stream has ended, its
        # connection may go back to the pool, and no late abort may shut it then.
        self._lock = threading.Lock()

    def disarm(self) -> None:
        with self._lock:
            self.expiry = float("inf")
            # Its heap entry stays until the expiry it had: it must not keep the
            # response (and the request, prompt included) alive that long.
            self.response = None

    def abort(self) -> None:
        with self._lock:
            if self.response is None or self.expiry > time.monotonic():
                return  # ended, or a chunk just came in time
            self.fired = True
            self.expiry = float("inf")
            self._shut()

    def _shut(self) -> None:
        stream = getattr(self.response, "extensions", {}).get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed: the reader is not waiting on it
        # Without a socket (a custom transport) the reader checks ``fired`` per chunk.


class _Watchdog:
    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._heap: list[tuple[float, int, Timer]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def schedule(self, timer: Timer) -> None:
        """Make sure the watchdog looks at ``timer`` by its expiry (cheap when it will)."""
        if timer.expiry >= timer.scheduled:
            return  # moved later (the usual case): found when the earlier look comes
        with self._lock:
            timer.scheduled = timer.expiry
            first = not self._heap or timer.expiry < self._heap[0][0]
            heapq.heappush(self._heap, (timer.expiry, next(self._order), timer))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="failover-watchdog", daemon=True
                )
                self._thread.start()
            elif first:
                self._lock.notify()

    def _run(self) -> None:
        heap = self._heap
        while True:
            with self._lock:
                while not heap:
                    self._lock.wait()
                when, _, timer = heap[0]
                if when != timer.scheduled:
                    heapq.heappop(heap)  # an entry an earlier one superseded
                    continue
                if timer.expiry == float("inf"):
                    # Disarmed, or parked while its caller holds a chunk: the next read
                    # re-arms it, and must then schedule it anew.
                    heapq.heappop(heap)
                    timer.scheduled = float("inf")
                    expiry = timer.expiry  # a reader may have re-armed it meanwhile
                    if expiry != float("inf"):
                        timer.scheduled = expiry
                        heapq.heappush(heap, (expiry, next(self._order), timer))
                    continue
                if timer.expiry > when:  # moved later: look again then
                    timer.scheduled = timer.expiry
                    heapq.heapreplace(heap, (timer.expiry, next(self._order), timer))
                    continue
                wait = when - time.monotonic()
                if wait > 0:
                    self._lock.wait(wait)
                    continue
                heapq.heappop(heap)
                timer.scheduled = float("inf")
            timer.abort()

    def _after_fork(self) -> None:
        # The thread did not survive the fork; the child's streams are its own.
        self._lock = threading.Condition()
        self._heap.clear()
        self._thread = None


WATCHDOG = _Watchdog()
os.register_at_fork(after_in_child=WATCHDOG._after_fork)
