"""The link of a :class:`~failover.redis.RedisHealth` to Redis: its bounded clients
(sync, and one ``redis.asyncio`` client per event loop, closed with the loop), the
server's clock as this host reads it, and what happens while Redis is unreachable (one
WARNING, in-process state, another try every ``retry_interval`` seconds)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from ._providers import PerLoop
from ._redis_clients import ERRORS, Target
from ._redis_records import COMPARE_AND_SET

T = TypeVar("T")
logger = logging.getLogger("failover")
#: Seconds a reading of the server's clock is trusted over a later, lower one.
OFFSET_KEPT = 60.0


class Link:
    """Clients, clock and outages of one store."""

    def __init__(self, target: Target, namespace: str, timeout: float, retry: float) -> None:
        self._target = target
        self._timeout = timeout
        self._retry_interval = retry
        self._where = f"redis {target.where} namespace {namespace!r}"
        self._async: PerLoop[tuple[Any, Any]] = PerLoop(_close_async)
        self._offset = 0.0  # the server's clock minus ours
        self._reset_link()

    def _reset_link(self) -> None:
        """Anew (also in a forked child: the parent's connections are the parent's)."""
        self._client_lock = threading.Lock()
        self._down_lock = threading.Lock()
        self._sync: tuple[Any, Any] | None = None  # the sync client and script, on first use
        self._offset_at = -OFFSET_KEPT  # when the offset was read (monotonic)
        self._down_until = 0.0
        self._tasks: dict[asyncio.Task[None], str] = {}  # writes behind, and their keys

    def _behind(self, task: asyncio.Task[None], key: str) -> None:
        self._tasks[task] = key
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)

    @property
    def source(self) -> str:
        """Where :func:`failover.health` reads the state from, right now."""
        if self._down():
            return f"memory (fallback: {self._where} unreachable)"
        return self._where

    def _sync_client(self) -> Any:
        return self._sync_script()[0]

    def _sync_script(self) -> tuple[Any, Any]:
        """The sync client and its script, built on first use (by one thread)."""
        built = self._sync
        if built is None:
            with self._client_lock:
                if self._sync is None:
                    client = self._target.sync_client(self._timeout)
                    self._sync = (client, client.register_script(COMPARE_AND_SET))
                built = self._sync
        return built

    def _async_script(self) -> tuple[Any, Any]:
        client = self._target.async_client(self._timeout)
        return client, client.register_script(COMPARE_AND_SET)

    def _now(self) -> float:
        """The server's clock, as well as this host can tell it."""
        return time.time() + self._offset

    def _clock(self, seconds: object, micros: object) -> None:
        """Learn the server's clock from a reply's TIME. Each reading, taken as of the
        reply's arrival, is a lower bound of the offset: the highest of the last minute
        is the closest, and keeps this host's reading of the server's clock monotonic."""
        reading = int(seconds) + int(micros) / 1e6 - time.time()  # type: ignore[call-overload]
        now = time.monotonic()
        if reading > self._offset or now - self._offset_at > OFFSET_KEPT:
            self._offset, self._offset_at = reading, now

    def _down(self) -> bool:
        return time.monotonic() < self._down_until

    def _failed(self, exc: BaseException) -> None:
        with self._down_lock:
            first = self._down_until == 0.0
            self._down_until = time.monotonic() + self._retry_interval
        if first:
            logger.warning(
                "failover: %s unreachable (%s); using in-process state until it is back",
                self._where,
                type(exc).__name__,
            )

    def _up(self) -> None:
        if self._down_until:
            self._down_until = 0.0
            logger.info("failover: %s reachable again; sharing state", self._where)

    def _try(self, operation: Callable[[], T]) -> T | None:
        """Run ``operation`` on Redis, or None when it is unavailable (never raises,
        never waits past ``timeout`` a command)."""
        if self._down():
            return None
        try:
            return operation()
        except ERRORS as exc:
            self._failed(exc)
            return None


def on_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop running in this thread, if any: there, no socket is waited on."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


async def _close_async(client_and_script: tuple[Any, Any]) -> None:
    await client_and_script[0].aclose()
