"""Provider health shared by every process and host, on Redis.

::

    from failover.redis import RedisHealth

    health = RedisHealth("redis://127.0.0.1:6379/0", namespace="myapp")
    failover.configure(health=health)          # or with_fallback(..., health=health)

A healthy call costs no Redis round trip: each process keeps the records it uses in
memory, and learns of other processes' changes by subscription (every write
publishes the new record). Successes are counted locally and flushed in the
background, once a second per provider, in one write. A call that changes something
(a failure, an opening, a probe, a close) makes one atomic round trip: a
compare-and-set on the record's version that, if another worker wrote first, returns
that worker's record, so the change is recomputed at once. The breaker's rules are the
same pure functions as in-process (``failover._health``); every host reads one clock
(the server's); keys expire on their own. From an event loop, the store never waits
on a socket: a change applies to the cache at once and is written behind by the
loop's own ``redis.asyncio`` client, and ``aupdate`` awaits its write.

Redis down, slow or refusing never fails a call: every command is bounded by
``timeout`` (50 ms by default), whoever built the client; on the first error the
store logs one WARNING and runs on in-process state, then tries Redis again every
``retry_interval`` seconds. If the subscription drops, the store polls its records
every ``max_staleness`` seconds until it is back.

The owners of provider-bound resources (which provider made a file, a response, a
batch ...) are shared there too, one small record per id under
``{namespace}:owner:{id}`` that expires after ``owner_ttl`` seconds (30 days by
default), so the worker that uses a file agrees with the one that uploaded it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Generator, Sequence
from typing import Any, TypeVar

from redis.exceptions import ResponseError

from ._activity import GATHER_AT, Tally
from ._health import FRESH, Breaker, Change, Clock, Counts, Health, bucket_start, folded
from ._redis_clients import ERRORS, from_client, from_url
from ._redis_link import Link, on_loop
from ._redis_owners import SharedOwners
from ._redis_records import (
    Entry,
    Keys,
    Stored,
    Write,
    add_counts,
    decode,
    encode,
    gather,
    unchanged,
)
from ._redis_watch import FLUSH_EVERY, watch

__all__ = ["RedisHealth"]

R = TypeVar("R")
logger = logging.getLogger("failover")
#: What one compare-and-set step sends (the script's args) and gets back (its reply).
Step = Generator[list[Any], Any, R]


class RedisHealth(Link):
    """A :class:`~failover._health.HealthStore` on Redis, shared across processes.

    ``client`` may be any redis-py client (``redis.Redis``, one from Sentinel's
    ``master_for``, ``redis.cluster.RedisCluster`` or their ``redis.asyncio`` twins):
    the store connects where it does, with its own bounded connections.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        namespace: str = "failover",
        client: Any = None,
        timeout: float = 0.05,
        retry_interval: float = 1.0,
        ttl: float = 86_400.0,
        owner_ttl: float = 30 * 86_400.0,
        max_staleness: float = 1.0,
    ) -> None:
        if ttl <= 0 or timeout <= 0 or owner_ttl <= 0 or max_staleness <= 0:
            raise ValueError("RedisHealth needs a positive ttl, owner_ttl, timeout, max_staleness")
        target = from_url(url) if client is None else from_client(client)
        super().__init__(target, namespace, timeout, retry_interval)
        self._keys = Keys(namespace)
        self._ttl_ms = str(max(1, round(ttl * 1000)))
        self._max_staleness = max_staleness
        self._watcher = watch(self)
        self._started = False
        self._reset()
        #: Who made which resource, shared by every process on this Redis.
        self.owners = SharedOwners(self, f"{namespace}:owner:", owner_ttl)

    def _reset(self) -> None:
        """The state no forked child may inherit: locks, and what is pending here."""
        self._lock = threading.Lock()
        self._reset_link()
        self._entries: dict[str, Entry] = getattr(self, "_entries", {})
        for entry in self._entries.values():
            entry.writes = []
        self.views: dict[str, Health] = getattr(self, "views", {})  # what peek answers
        self.tallies: dict[str, Tally] = {}  # successes counted, not yet gathered
        self._counts: dict[str, Counts] = {}  # gathered, to flush
        self._flushed: dict[str, float] = {}
        self._wanted: set[str] = set()  # to load in the background
        self._scan_wanted = False  # the whole namespace, asked for from a loop
        self._polled_at = 0.0
        self._handed: list[tuple[str, str, Write]] = []  # cancelled writes, to finish
        self._junk: set[str] = set()
        self._token = os.urandom(6).hex()  # this process's, in the ids of its writes
        self._written_ids = itertools.count()

    def _after_fork(self) -> None:
        self._reset()
        for key in self._entries:  # the parent's writes and counts are the parent's
            self._view(key)

    def __repr__(self) -> str:
        return f"<RedisHealth {self._where}>"

    # -- HealthStore -------------------------------------------------------------

    def peek(self, key: str) -> Health:
        view = self.views.get(key)
        return view if view is not None else self._first_use(key)

    def count(self, key: str, name: str, breaker: Breaker) -> float | None:
        tally = self.tallies.get(key)
        if tally is None:
            with self._lock:
                self._entry(key, name)
                tally = self.tallies.setdefault(key, Tally(name))
        start = bucket_start(breaker, breaker.clock())
        tally.append(start)
        if len(tally) > GATHER_AT:
            with self._lock:
                gather(self.tallies, self._counts)
        return start

    def update(self, key: str, name: str, change: Change[R], clock: Clock) -> R:
        loop = on_loop()
        if self._down():
            return self._keep(key, name, change, self._take(key))
        if loop is not None:
            return self._write_behind(loop, key, name, change, self._take(key))
        write = self._carry(key, name)
        try:
            return self._drive(key, self._steps(key, name, change, write.counts, write))
        except ERRORS as exc:
            self._failed(exc)
            return self._keep(key, name, change, write.counts, write)
        except BaseException:
            self._give_back(key, write)
            raise

    async def aupdate(self, key: str, name: str, change: Change[R], clock: Clock) -> R:
        await self._landed_here(key)
        if self._down():
            return self._keep(key, name, change, self._take(key))
        write = self._carry(key, name)
        try:
            return await self._adrive(key, self._steps(key, name, change, write.counts, write))
        except ERRORS as exc:
            self._failed(exc)
            return self._keep(key, name, change, write.counts, write)
        except BaseException:  # cancelled, or interrupted: counted here again
            self._give_back(key, write)
            raise

    def read(self, keys: Sequence[str], clock: Clock) -> tuple[list[Health], float]:
        for key in keys:
            if key not in self.views:
                self._first_use(key)
        with self._lock:  # the views and the counts at one instant: no count is in neither
            gather(self.tallies, self._counts)
            records = [folded(self._shown(k), self._counts.get(k, {})) for k in keys]
        return records, self._now()

    def snapshot(self) -> dict[str, tuple[str, Health]]:
        if on_loop():  # the cache, as it is; the namespace is read in the background
            self._scan_wanted = True
            self._watcher.wake()
        else:
            self._try(self._scan)
        with self._lock:
            gather(self.tallies, self._counts)
            shown = {key: self._shown(key) for key, e in self._entries.items() if e.name}
            return {
                key: (self._entries[key].name or key, folded(h, self._counts.get(key, {})))
                for key, h in shown.items()
                if h != FRESH or key in self._counts
            }

    def close(self) -> None:
        """Write the counted successes (bounded by ``timeout``) and let go of Redis."""
        self._watcher.stop(wait=1.0)
        self._write_pending(lambda key: True)
        if self._sync is not None:
            self._sync[0].close()

    async def aclose(self) -> None:
        """:meth:`close` from an event loop: done in a worker thread, so that the loop
        never waits on the sockets (nor on the background thread's end)."""
        await asyncio.to_thread(self.close)

    # -- writes --------------------------------------------------------------------

    def _steps(
        self, key: str, name: str, change: Change[R], counts: Counts, write: Write | None = None
    ) -> Step[R]:
        """The compare-and-set of one change, without I/O (the sync and async drivers
        send what it yields): recomputed on the record a lost race returns. ``write``:
        the cache's copy of the change, which leaves the cache as the change lands."""
        with self._lock:
            stored = self._entry(key).record
        while True:
            current = folded(stored.health, counts)
            new, result = change(current, self._now())
            if new is current and not counts:  # nothing changes: nothing to write
                if write is not None:
                    with self._lock:
                        self._drop(key, write)
                return result
            writer = write.id if write is not None else ""
            args = [
                stored.version,
                encode(name, new, writer),
                self._ttl_ms,
                self._keys.channel,
                key,
            ]
            done, value, seconds, micros = yield args
            self._up()
            self._clock(seconds, micros)
            if done:
                version = value.decode() if isinstance(value, bytes) else str(value)
                self._learn(key, Stored(version, int(version), name, new, writer), True)
                return result
            stored = self._learn(key, value, reply=True)

    def _drive(self, key: str, steps: Step[R]) -> R:
        self._start()
        client, script = self._sync_script()
        try:
            args = next(steps)
            while True:
                reply = script(keys=[self._keys.record(key)], args=args, client=client)
                args = steps.send(reply)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    async def _adrive(self, key: str, steps: Step[R]) -> R:
        self._start()
        client, script = self._async.get(self._async_script)
        try:
            args = next(steps)
            while True:
                call = script(keys=[self._keys.record(key)], args=args, client=client)
                args = steps.send(await asyncio.wait_for(call, self._timeout))
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    def _write_behind(
        self,
        loop: asyncio.AbstractEventLoop,
        key: str,
        name: str,
        change: Change[R],
        counts: Counts,
    ) -> R:
        """On an event loop: the change shows in the cache now, and is written by a task."""
        with self._lock:
            entry = self._entry(key, name)
            now = self._now()
            new, result = change(folded(self.views.get(key, entry.record.health), counts), now)
            write = Write(change, counts, now, f"{self._token}:{next(self._written_ids)}")
            entry.writes.append(write)
            entry.known = True
            self.views[key] = new
        self._behind(loop.create_task(self._land(key, name, write)), key)
        return result

    async def _landed_here(self, key: str) -> None:
        """Wait for this loop's earlier writes of ``key`` to land: they land in order, and
        a shared answer builds on them."""
        loop, me = asyncio.get_running_loop(), asyncio.current_task()
        while True:
            earlier = []
            for task, k in list(self._tasks.items()):
                if task is me:
                    break
                if k == key and task.get_loop() is loop:
                    earlier.append(task)
            if not earlier:
                return
            await asyncio.wait(earlier)

    async def _land(self, key: str, name: str, write: Write) -> None:
        try:
            await self._landed_here(key)
            if self._down():  # an earlier write found Redis unreachable
                self._keep(key, name, write.change, write.counts, write)
                return
            await self._adrive(key, self._steps(key, name, write.change, write.counts, write))
        except ERRORS as exc:
            self._failed(exc)
            self._keep(key, name, write.change, write.counts, write)
        except asyncio.CancelledError:
            # The loop is shutting down: the background thread writes it instead.
            with self._lock:
                self._handed.append((key, name, write))
            self._watcher.wake()
            raise

    def _keep(
        self, key: str, name: str, change: Change[R], counts: Counts, write: Write | None = None
    ) -> R:
        """Apply a change here only (Redis is unreachable): in-process state meanwhile."""
        with self._lock:
            entry = self._entry(key, name)
            new, result = change(folded(entry.record.health, counts), self._now())
            if write is not None and not self._drop(key, write):
                return result  # it landed (news of it came, its reply did not): it is in
            entry.record = entry.record._replace(health=new, name=name)
            entry.known = True
            self._view(key)
        return result

    # -- the cache -------------------------------------------------------------------

    def _entry(self, key: str, name: str | None = None) -> Entry:
        """The entry of ``key`` (under the lock)."""
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = Entry()
        if name is not None and entry.name is None:
            entry.name = name
        return entry

    def _drop(self, key: str, write: Write) -> bool:
        """``write`` leaves the cache without landing (under the lock); False when it is
        not there: it landed (the news of the record it wrote took it out)."""
        if not self._entry(key).drop(write):
            return False
        self._view(key)
        return True

    def _shown(self, key: str) -> Health:
        """What peek answers for ``key``, or for a record not read yet, a fresh one with
        this process's writes in flight (under the lock)."""
        view = self.views.get(key)
        if view is not None:
            return view
        entry = self._entries.get(key)
        return FRESH if entry is None else entry.shown(FRESH)

    def _view(self, key: str) -> None:
        """What peek answers for ``key``: its record with the writes in flight (under the lock)."""
        entry = self._entries[key]
        if entry.known:
            self.views[key] = entry.shown(entry.record.health)

    def _learn(self, key: str, raw: object, reply: bool) -> Stored:
        """Take in a value of ``key`` read from Redis (``reply``: as it is now, from a
        command; else news from the channel, dropped if older than what is known)."""
        stored = raw if isinstance(raw, Stored) else self._decode(key, raw)
        with self._lock:
            entry = self._entry(key, stored.name)
            known = entry.record.order
            # A reply is the record now; a lost or spoiled record (-1) starts afresh.
            if stored.writer and entry.writes:  # one of ours: it left the cache as it landed
                entry.writes = [w for w in entry.writes if w.id != stored.writer]
            if stored.order > known or (reply and (stored.order >= known or stored.order < 0)):
                entry.record = stored
                entry.known = True
            self._view(key)
            self._wanted.discard(key)
        return stored

    def _decode(self, key: str, raw: object) -> Stored:
        stored, junk = decode(raw)
        if junk and key not in self._junk:
            self._junk.add(key)
            logger.warning(
                "failover: unreadable health record for %r in %s; starting it afresh",
                key.partition(" ")[0],
                self._where,
            )
        return stored

    def _first_use(self, key: str) -> Health:
        """A key this process has not read yet: one GET, or in the background from a loop."""
        self._start()
        if not on_loop() and self._try(lambda: self._refresh([key])) is not None:
            return self.views.get(key, FRESH)
        with self._lock:
            self._wanted.add(key)
        self._watcher.wake()
        return FRESH

    def _on_message(self, data: object) -> None:
        """News from the channel: a record, a newline, its provider key."""
        if not isinstance(data, (bytes, str)):
            return
        raw, _, key = (data.encode() if isinstance(data, str) else data).partition(b"\n")
        if key:
            self._learn(key.decode("utf-8", "replace"), raw, reply=False)

    def _take(self, key: str) -> Counts:
        with self._lock:
            gather(self.tallies, self._counts)
            return self._counts.pop(key, {})

    def _carry(self, key: str, name: str) -> Write:
        """Take ``key``'s counted successes to write them: they show in its view (as a
        write in flight) until they land or are given back, so no read misses them."""
        with self._lock:
            gather(self.tallies, self._counts)
            counts = self._counts.pop(key, {})
            write = Write(unchanged, counts, 0.0, f"{self._token}:{next(self._written_ids)}")
            self._entry(key, name).writes.append(write)
            self._view(key)
        return write

    def _give_back(self, key: str, write: Write) -> None:
        """A write that did not land: its successes are counted here again."""
        with self._lock:
            if not self._drop(key, write):
                return  # it did land
            add_counts(self._counts, key, write.counts)

    # -- background work (the watcher's thread, and close) ----------------------------

    def _background(self, polling: bool) -> None:
        """The watcher's round: finish handed-over writes, flush the counts due, load
        the records wanted, and while not subscribed poll the known ones (every
        ``max_staleness``). Never raises for Redis."""
        with self._lock:
            wanted, self._wanted = self._wanted, set()
            scan, self._scan_wanted = self._scan_wanted, False
        now = time.monotonic()
        self._write_pending(lambda key: now - self._flushed.get(key, 0.0) >= FLUSH_EVERY)
        if polling and now >= self._polled_at + self._max_staleness:
            self._polled_at = now
            wanted.update(self._entries)
        if scan:
            self._try(self._scan)
        elif wanted:
            self._try(lambda: self._refresh(list(wanted)))

    def _write_pending(self, due: Callable[[str], bool]) -> None:
        """Write the changes handed over by loops that shut down, and the counts of
        the providers ``due``: one write each."""
        with self._lock:
            handed, self._handed = self._handed, []
        for key, name, write in handed:
            with self._lock:
                landed = write not in self._entry(key).writes  # before its task was cancelled
            if not landed and not self._written(
                key, self._steps(key, name, write.change, write.counts, write)
            ):
                self._keep(key, name, write.change, write.counts, write)
        with self._lock:
            gather(self.tallies, self._counts)
            counted = list(self._counts)
        for key in [k for k in counted if due(k)]:
            self._flushed[key] = time.monotonic()
            with self._lock:
                name = self._entry(key).name or key
            write, landed = self._carry(key, name), False
            try:
                landed = self._written(key, self._steps(key, name, unchanged, write.counts, write))
            finally:
                if not landed:
                    self._give_back(key, write)

    def _written(self, key: str, steps: Step[Any]) -> bool:
        return self._try(lambda: (self._drive(key, steps), True)[1]) is not None

    def _refresh(self, keys: list[str]) -> bool:
        """Read ``keys`` from Redis, one round trip (and the server's clock, once)."""
        client = self._sync_client()
        with client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.get(self._keys.record(key))
            raws = pipe.execute(raise_on_error=False)  # (a cluster pipeline cannot carry TIME)
        if self._offset_at < 0:
            self._clock(*client.time())
        for key, raw in zip(keys, raws, strict=True):
            if isinstance(raw, ResponseError):  # not a string under our key: a spoiled record
                raw = b"not ours"
            elif isinstance(raw, Exception):
                raise raw
            self._learn(key, raw, reply=True)
        self._up()
        return True

    def _scan(self) -> bool:
        client = self._sync_client()
        names = list(client.scan_iter(match=self._keys.pattern, count=500))
        keys = [self._keys.provider(name) for name in names]
        return self._refresh([k for k in keys if k is not None]) if names else True

    def _start(self) -> None:
        if not self._started:
            self._started = True
            self._watcher.start()
