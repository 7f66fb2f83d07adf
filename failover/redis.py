"""Provider health shared by every process and host, on Redis.

::

    from failover.redis import RedisHealth

    health = RedisHealth("redis://127.0.0.1:6379/0", namespace="myapp")
    failover.configure(health=health)          # or with_fallback(..., health=health)

The breaker's rules are the same pure functions as in-process (``failover._health``);
this store only applies them atomically: read the provider's key and the server's
``TIME`` (one round trip), compute, then write with a compare-and-set script that
fails if another worker wrote first, in which case the change is recomputed. No count
is lost, exactly one worker claims a half-open probe, every host reads one clock (the
server's), and keys expire on their own.

Redis down, slow or refusing never fails a call: every command is bounded by
``timeout`` (50 ms by default); on the first error the store logs one WARNING and
runs on in-process state, then tries Redis again every ``retry_interval`` seconds.

The owners of provider-bound resources (which provider made a file, a response, a
batch ...) are shared there too, one small record per id under
``{namespace}:owner:{id}`` that expires after ``owner_ttl`` seconds (30 days by
default), so the worker that uses a file agrees with the one that uploaded it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

import redis

from ._health import (
    FRESH,
    Breaker,
    Change,
    Clock,
    Health,
    MemoryStore,
    Reason,
    State,
    bucket_start,
    fold,
)
from ._ownership import Owner, Owners

__all__ = ["RedisHealth"]

R = TypeVar("R")
T = TypeVar("T")
logger = logging.getLogger("failover")
_FIELDS = frozenset(Health._fields)


# Compare-and-set, the only server-side logic: the breaker's rules stay in Python (one
# copy, shared with the in-process store), and a lost race is simply recomputed.
_COMPARE_AND_SET = """
if (redis.call('GET', KEYS[1]) or '') == ARGV[1] then
    redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
    return 1
end
return 0
"""


def _encode(name: str, record: Health) -> str:
    reason = record.reason.value if record.reason is not None else None
    return json.dumps(
        {**record._asdict(), "state": record.state.value, "reason": reason, "name": name}
    )


def _decode(raw: bytes | str | None) -> Health:
    if raw is None:
        return FRESH
    try:
        data = json.loads(raw)
        data["state"] = State(data["state"])
        # Records of earlier versions have neither: the defaults apply.
        if data.get("reason") is not None:
            data["reason"] = Reason(data["reason"])
        if "window" in data:
            data["window"] = tuple((float(s), int(c), int(f)) for s, c, f in data["window"])
        return Health(**{k: v for k, v in data.items() if k in _FIELDS})
    except (ValueError, KeyError, TypeError):
        # Junk under our key (another version, a stray write) must not fail a call.
        logger.warning("failover: unreadable health record in Redis; starting it afresh")
        return FRESH


class RedisHealth:
    """A :class:`~failover._health.HealthStore` on Redis, shared across processes."""

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        namespace: str = "failover",
        client: redis.Redis | None = None,
        timeout: float = 0.05,
        retry_interval: float = 1.0,
        ttl: float = 86_400.0,
        owner_ttl: float = 30 * 86_400.0,
    ) -> None:
        if client is None:
            client = redis.Redis.from_url(
                url, socket_timeout=timeout, socket_connect_timeout=timeout, retry=None
            )
        self._redis = client
        self._swap = client.register_script(_COMPARE_AND_SET)
        self._prefix = f"{namespace}:health:"
        if ttl <= 0 or timeout <= 0 or owner_ttl <= 0:
            raise ValueError("RedisHealth needs a positive ttl, owner_ttl and timeout")
        self._ttl_ms = max(1, round(ttl * 1000))
        self._retry_interval = retry_interval
        self._local = MemoryStore()  # the fallback while Redis is unreachable
        self._lock = threading.Lock()
        self._down_until = 0.0
        kwargs = client.connection_pool.connection_kwargs
        where = kwargs.get("path") or f"{kwargs.get('host')}:{kwargs.get('port')}"
        self._where = f"redis {where}/{kwargs.get('db', 0)} namespace {namespace!r}"
        #: Who made which resource, shared by every process on this Redis.
        self.owners: Owners = _SharedOwners(self, f"{namespace}:owner:", owner_ttl)

    def __repr__(self) -> str:
        return f"<RedisHealth {self._where}>"

    @property
    def source(self) -> str:
        """Where :func:`failover.health` reads the state from, right now."""
        if self._down():
            return f"memory (fallback: {self._where} unreachable)"
        return self._where

    # -- HealthStore -----------------------------------------------------------

    def peek(self, key: str) -> Health:
        return self.read([key], time.time)[0][0]

    def count(self, key: str, name: str, breaker: Breaker) -> None:
        start = bucket_start(breaker, breaker.clock())
        self.update(key, name, lambda h, now: (fold(h, start, 1), None), breaker.clock)

    async def aupdate(self, key: str, name: str, change: Change[R], clock: Clock) -> R:
        return self.update(key, name, change, clock)

    def update(self, key: str, name: str, change: Change[R], clock: Clock) -> R:
        shared = self._try(lambda: self._update(self._prefix + key, name, change))
        return (
            self._local.update(key, name, change, clock)
            if isinstance(shared, _Unavailable)
            else shared
        )

    def read(self, keys: Sequence[str], clock: Clock) -> tuple[list[Health], float]:
        def read() -> tuple[list[Health], float]:
            with self._redis.pipeline(transaction=False) as pipe:
                pipe.mget([self._prefix + k for k in keys])
                pipe.time()
                raws, (seconds, micros) = pipe.execute()
            return [_decode(raw) for raw in raws], seconds + micros / 1e6

        shared = self._try(read)
        return self._local.read(keys, clock) if isinstance(shared, _Unavailable) else shared

    def snapshot(self) -> dict[str, tuple[str, Health]]:
        def snapshot() -> dict[str, tuple[str, Health]]:
            keys = list(self._redis.scan_iter(match=self._prefix + "*", count=500))
            raws = self._redis.mget(keys) if keys else []
            return {
                key.decode()[len(self._prefix) :]: (json.loads(raw)["name"], _decode(raw))
                for key, raw in zip(keys, raws, strict=True)
                if raw is not None
            }

        shared = self._try(snapshot)
        return self._local.snapshot() if isinstance(shared, _Unavailable) else shared

    def close(self) -> None:
        self._redis.close()

    # -- internals -------------------------------------------------------------

    def _update(self, key: str, name: str, change: Change[R]) -> R:
        while True:
            with self._redis.pipeline(transaction=False) as pipe:
                pipe.get(key)
                pipe.time()
                raw, (seconds, micros) = pipe.execute()
            current = _decode(raw)
            new, result = change(current, seconds + micros / 1e6)
            if new is current:
                return result  # nothing to write: the healthy path costs one round trip
            if self._swap(keys=[key], args=[raw or b"", _encode(name, new), self._ttl_ms]):
                return result
            # Another worker wrote first: recompute from its state.

    def _down(self) -> bool:
        return time.monotonic() < self._down_until

    def _try(self, operation: Callable[[], T]) -> T | _Unavailable:
        """Run ``operation`` on Redis, or say it is unavailable (never raise, never wait long)."""
        if self._down():
            return _UNAVAILABLE
        try:
            result = operation()
        except redis.RedisError as exc:
            with self._lock:
                first = self._down_until == 0.0
                self._down_until = time.monotonic() + self._retry_interval
            if first:
                logger.warning(
                    "failover: %s unreachable (%s); using in-process state until it is back",
                    self._where,
                    type(exc).__name__,
                )
            return _UNAVAILABLE
        if self._down_until:
            self._down_until = 0.0
            logger.info("failover: %s reachable again; sharing state", self._where)
        return result


class _SharedOwners(Owners):
    """Owners written through to Redis, read from memory first, then from Redis."""

    def __init__(self, health: RedisHealth, prefix: str, ttl: float) -> None:
        super().__init__()
        self._health = health
        self._prefix = prefix
        self._ttl_ms = max(1, round(ttl * 1000))

    def may_know(self) -> bool:
        return True  # another process may have made any id: requests are always scanned

    def owners(self, ids: Sequence[str]) -> list[Owner | None]:
        found = super().owners(ids)
        unknown = [i for i, owner in zip(ids, found, strict=True) if owner is None]
        if not unknown:
            return found
        keys = [self._prefix + i for i in unknown]
        raws = self._health._try(lambda: self._health._redis.mget(keys))
        if isinstance(raws, _Unavailable):
            return found
        shared = {i: owner for i, raw in zip(unknown, raws, strict=True) if (owner := _owner(raw))}
        for resource, owner in shared.items():
            super().remember([resource], owner)
        return [owner or shared.get(i) for i, owner in zip(ids, found, strict=True)]

    def remember(self, ids: Iterable[str], owner: Owner) -> None:
        ids = list(ids)
        super().remember(ids, owner)
        record = json.dumps({"where": owner.where[:512], "name": owner.name[:128]})

        def write() -> None:
            with self._health._redis.pipeline(transaction=False) as pipe:
                for resource in ids:
                    pipe.set(self._prefix + resource, record, px=self._ttl_ms)
                pipe.execute()

        self._health._try(write)


def _owner(raw: bytes | str | None) -> Owner | None:
    if raw is None:
        return None
    try:
        data = json.loads(raw)
        return Owner(str(data["where"]), str(data["name"]))
    except (ValueError, KeyError, TypeError):
        return None  # junk under our key: the id routes as an unknown one


class _Unavailable:
    """Internal: the answer of an operation that Redis could not serve."""


_UNAVAILABLE = _Unavailable()
