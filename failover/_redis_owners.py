"""The owners of provider-bound resources, shared through a :class:`~failover.redis.RedisHealth`
(its link to Redis)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Sequence
from typing import Any

from ._ownership import LOOKED_UP, Owner, Owners
from ._redis_clients import ERRORS
from ._redis_link import Link
from ._redis_records import as_bytes


class SharedOwners(Owners):
    """Owners written through to Redis (behind, from an event loop), read from memory
    first, then from Redis."""

    shared = True  # another process may have made any id: requests are always scanned

    def __init__(self, health: Link, prefix: str, ttl: float) -> None:
        super().__init__()
        self._health = health
        self._prefix = prefix
        self._ttl_ms = max(1, round(ttl * 1000))

    def owners(self, ids: Sequence[str]) -> list[Owner | None]:
        found = super().owners(ids)
        unknown = [i for i, owner in zip(ids, found, strict=True) if owner is None]
        if not unknown:
            return found

        def read() -> list[Any]:
            with self._health._sync_client().pipeline(transaction=False) as pipe:
                return list(self._gets(pipe, unknown).execute(raise_on_error=False))

        raws = self._health._try(read)
        if raws is None:
            return found
        shared = self._learnt(unknown, raws)
        return [owner or shared.get(i) for i, owner in zip(ids, found, strict=True)]

    def unseen(self, ids: Sequence[str], found: Sequence[Owner | None]) -> list[str]:
        if self._health._down():
            return []  # the in-process map serves meanwhile
        asked = LOOKED_UP.get()
        return [i for i, owner in zip(ids, found, strict=True) if owner is None and i not in asked]

    async def look_up(self, ids: Sequence[str]) -> None:
        client, _ = self._health._async.get(self._health._async_script)
        try:
            async with client.pipeline(transaction=False) as pipe:
                sent = self._gets(pipe, ids).execute(raise_on_error=False)
                raws = await asyncio.wait_for(sent, self._health._timeout)
        except ERRORS as exc:
            self._health._failed(exc)
            return
        self._learnt(ids, raws)

    def _gets(self, pipe: Any, ids: Iterable[str]) -> Any:
        # One GET per id, pipelined: ids land on any cluster slot, where MGET cannot.
        for resource in ids:
            pipe.get(self._prefix + resource)
        return pipe

    def _learnt(self, ids: Sequence[str], raws: Sequence[Any]) -> dict[str, Owner]:
        """The owners found in Redis (a foreign type or junk: none), now in memory too."""
        shared = {i: owner for i, raw in zip(ids, raws, strict=True) if (owner := _owner(raw))}
        for resource, owner in shared.items():
            super().remember([resource], owner)
        return shared

    def remember(self, ids: Iterable[str], owner: Owner) -> None:
        ids = list(ids)
        super().remember(ids, owner)
        if self._health._down():
            return
        record = json.dumps({"where": owner.where[:512], "name": owner.name[:128]})
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._health._try(lambda: self._write(self._health._sync_client(), ids, record))
            return
        self._health._behind(loop.create_task(self._awrite(ids, record)), "")

    def _write(self, client: Any, ids: list[str], record: str) -> Any:
        with client.pipeline(transaction=False) as pipe:
            for resource in ids:
                pipe.set(self._prefix + resource, record, px=self._ttl_ms)
            return pipe.execute()

    async def _awrite(self, ids: list[str], record: str) -> None:
        client, _ = self._health._async.get(self._health._async_script)
        async with client.pipeline(transaction=False) as pipe:
            for resource in ids:
                pipe.set(self._prefix + resource, record, px=self._ttl_ms)
            try:
                await asyncio.wait_for(pipe.execute(), self._health._timeout)
            except ERRORS as exc:
                self._health._failed(exc)


def _owner(raw: object) -> Owner | None:
    data = as_bytes(raw)
    if data is None:
        return None
    try:
        record = json.loads(data)
        return Owner(str(record["where"]), str(record["name"]))
    except (ValueError, KeyError, TypeError):
        return None  # junk under our key: the id routes as an unknown one
