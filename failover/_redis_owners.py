"""The owners of provider-bound resources, shared through a :class:`~failover.redis.RedisHealth`
(its link to Redis)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Sequence
from typing import Any

from ._ownership import Owner, Owners
from ._redis_clients import ERRORS
from ._redis_link import Link
from ._redis_records import as_bytes


class SharedOwners(Owners):
    """Owners written through to Redis (behind, from an event loop), read from memory
    first, then from Redis."""

    def __init__(self, health: Link, prefix: str, ttl: float) -> None:
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

        def read() -> list[Any]:
            # One GET per id, pipelined: ids land on any cluster slot, where MGET cannot.
            with self._health._sync_client().pipeline(transaction=False) as pipe:
                for resource in unknown:
                    pipe.get(self._prefix + resource)
                return list(pipe.execute(raise_on_error=False))  # a foreign type: no owner

        raws = self._health._try(read)
        if raws is None:
            return found
        shared = {i: owner for i, raw in zip(unknown, raws, strict=True) if (owner := _owner(raw))}
        for resource, owner in shared.items():
            super().remember([resource], owner)
        return [owner or shared.get(i) for i, owner in zip(ids, found, strict=True)]

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
