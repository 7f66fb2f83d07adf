"""The background thread of a :class:`~failover.redis.RedisHealth`: what keeps its
cache fresh and its counts flowing, off every caller's path.

It holds the store's subscription to the namespace's channel (each write publishes
the new record, so a change made by another process lands here within a round trip
of it), and when the subscription drops it says so once, polls the known records
every ``max_staleness`` seconds, and subscribes again. It also flushes the counted
successes (once a second per provider, one write each), loads the records that an
event loop asked for (a loop never waits on a socket), and finishes the writes a
loop's shutdown cancelled. It uses the sync client only.

The thread holds its store weakly (it ends with it) and is started again in a forked
child, whose copy of the parent's threads does not run.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Collection
from typing import Any, Protocol

from redis.exceptions import ResponseError

from ._redis_clients import ERRORS
from ._redis_records import Keys


class Watched(Protocol):
    """What the thread needs of its store (:class:`~failover.redis.RedisHealth`)."""

    _keys: Keys
    _timeout: float
    _retry_interval: float
    _max_staleness: float
    _where: str

    @property
    def _entries(self) -> Collection[str]: ...

    def _sync_client(self) -> Any: ...

    def _refresh(self, keys: list[str]) -> bool: ...

    def _background(self, polling: bool) -> None: ...

    def _on_message(self, data: object) -> None: ...

    def _after_fork(self) -> None: ...


logger = logging.getLogger("failover")

#: How often the thread looks up from the subscription for its other work (at most).
TICK = 0.1
#: Successes are flushed this often, per provider.
FLUSH_EVERY = 1.0


class Watcher:
    """The background thread of one store (started on the store's first use)."""

    def __init__(self, store: Watched) -> None:
        self._store = weakref.ref(store)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        #: True while subscribed: news arrives by message, no polling needed.
        self.subscribed = False
        self.was_up = False
        self.lost = False  # said so in the log, until it is back

    def start(self) -> None:
        with self._lock:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(
                    target=self._run, name="failover-redis-watch", daemon=True
                )
                self._thread.start()

    def wake(self) -> None:
        """Do the background work now rather than at the next tick (if not subscribed)."""
        self._wake.set()

    def stop(self, wait: float) -> None:
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(wait)

    def after_fork(self) -> None:
        """In a forked child: the parent's thread does not run here; start one anew."""
        self._lock = threading.Lock()
        running = self._thread is not None
        self._thread, self.subscribed = None, False
        store = self._store()
        if store is not None:
            store._after_fork()
            if running:
                self.start()

    # -- the thread ------------------------------------------------------------------

    def _run(self) -> None:
        pubsub: Any = None
        retry_at = 0.0
        while not self._stop.is_set():
            store = self._store()
            if store is None:
                break
            try:
                if pubsub is None and time.monotonic() >= retry_at:
                    try:
                        pubsub = self._subscribe(store)
                    except ERRORS as exc:
                        self._unsubscribed(store, exc)
                        retry_at = time.monotonic() + min(
                            store._max_staleness, store._retry_interval
                        )
                store._background(polling=pubsub is None)
                if pubsub is None:
                    del store
                    self._wake.wait(TICK)
                    self._wake.clear()
                    continue
                message = pubsub.get_message(ignore_subscribe_messages=True, timeout=TICK)
                while message is not None:
                    store._on_message(message.get("data"))
                    message = pubsub.get_message(ignore_subscribe_messages=True, timeout=0)
            except ERRORS as exc:
                _close(pubsub)
                self._unsubscribed(store, exc)
                pubsub, retry_at = None, time.monotonic()  # subscribe again at once
            except Exception:  # a bug here must not end the freshness of every process
                logger.exception("failover: the Redis health watcher failed; it goes on")
                time.sleep(TICK)
            del store
        _close(pubsub)

    def _subscribe(self, store: Watched) -> Any:
        """A subscribed pubsub; then every known record is read once, to catch up on
        what was missed meanwhile."""
        pubsub = store._sync_client().pubsub()
        try:
            pubsub.subscribe(store._keys.channel)
            deadline = time.monotonic() + store._timeout
            while True:  # the confirmation: from now on no write goes unheard
                message = pubsub.get_message(timeout=store._timeout)
                if message is not None and message.get("type") == "subscribe":
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError("no subscription confirmation")
            store._refresh(list(store._entries))
        except BaseException:
            _close(pubsub)
            raise
        self.subscribed = self.was_up = True
        if self.lost:
            self.lost = False
            logger.info("failover: %s subscription is back; no more polling", store._where)
        return pubsub

    def _unsubscribed(self, store: Watched, exc: BaseException) -> None:
        """Say once that the store polls: after a drop, or when Redis refuses it (a user
        without the right to subscribe). Redis unreachable says so itself."""
        self.subscribed = False
        if not self.lost and (self.was_up or isinstance(exc, ResponseError)):
            self.lost = True
            logger.warning(
                "failover: %s subscription lost (%s); polling every %.3gs until it is back",
                store._where,
                type(exc).__name__,
                store._max_staleness,
            )


def _close(pubsub: Any) -> None:
    if pubsub is None:
        return
    try:
        pubsub.close()
    except Exception:  # a broken connection may fail to close: it is gone either way
        pass


_WATCHED: weakref.WeakSet[Watcher] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for watcher in list(_WATCHED):
        watcher.after_fork()


def watch(store: Watched) -> Watcher:
    watcher = Watcher(store)
    _WATCHED.add(watcher)
    return watcher


if hasattr(os, "register_at_fork"):  # not on Windows, which cannot fork
    os.register_at_fork(after_in_child=_after_fork_in_child)
