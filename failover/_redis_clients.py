"""The bounded Redis clients of :class:`~failover.redis.RedisHealth`.

The store never sends a command on a client it did not build: from a URL, or from
the connection settings of the user's client (``redis.Redis``, Sentinel's
``master_for``, ``redis.cluster.RedisCluster``, or their ``redis.asyncio``
counterparts), it builds its own pools with its ``timeout`` on every socket, bytes
replies, and no retries. redis-py 8 retries a timed-out command three times with
backoff by default (a 50 ms socket timeout then waits about 2 s), and a user's
client may have no socket timeout at all: neither may stall a call.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.retry
import redis.asyncio.sentinel
import redis.cluster
import redis.sentinel
from redis.backoff import NoBackoff
from redis.connection import parse_url
from redis.exceptions import RedisClusterException
from redis.retry import Retry

#: What a Redis command may raise when Redis is down, slow, moved or refusing (a cluster
#: client's own errors are not RedisErrors; asyncio's timeout is not the builtin one
#: before Python 3.11).
ERRORS: tuple[type[BaseException], ...] = (
    redis.RedisError,
    RedisClusterException,
    OSError,
    asyncio.TimeoutError,
)

# Connection settings that mean the same to every client flavour: where and who; never
# timeouts, retries, decoding or callbacks, which are the store's own.
_PORTABLE = frozenset(
    {
        "host",
        "port",
        "db",
        "username",
        "password",
        "credential_provider",
        "client_name",
        "ssl_keyfile",
        "ssl_certfile",
        "ssl_cert_reqs",
        "ssl_ca_certs",
        "ssl_ca_path",
        "ssl_ca_data",
        "ssl_check_hostname",
        "ssl_min_version",
        "ssl_ciphers",
        "ssl_password",
    }
)


class Kind(enum.Enum):
    SINGLE = "single"
    SENTINEL = "sentinel"
    CLUSTER = "cluster"


@dataclass(frozen=True, slots=True)
class Target:
    """Where the store connects, in terms every client flavour understands."""

    kind: Kind
    options: Mapping[str, Any]  # portable connection settings, plus ``ssl``/``unix_socket_path``
    nodes: tuple[tuple[str, int], ...] = ()  # cluster startup nodes, or the sentinels
    service: str = ""  # the Sentinel service name
    sentinel_options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def where(self) -> str:
        options = self.options
        if self.kind is Kind.CLUSTER:
            return "cluster " + ",".join(f"{h}:{p}" for h, p in self.nodes)
        if self.kind is Kind.SENTINEL:
            return f"sentinel {self.service}"
        place = options.get("unix_socket_path") or f"{options.get('host')}:{options.get('port')}"
        return f"{place}/{options.get('db', 0)}"

    def sync_client(self, timeout: float) -> Any:
        """A sync client (``redis.Redis`` or ``RedisCluster``), bounded by ``timeout``."""
        bounded = _bounded(timeout, Retry(NoBackoff(), 0))
        if self.kind is Kind.CLUSTER:
            nodes = [redis.cluster.ClusterNode(h, p) for h, p in self.nodes]  # type: ignore[no-untyped-call, unused-ignore]
            kwargs = _accepted(redis.cluster.RedisCluster, self.options)
            return redis.cluster.RedisCluster(startup_nodes=nodes, **kwargs, **bounded)
        if self.kind is Kind.SENTINEL:
            sentinel = redis.sentinel.Sentinel(  # type: ignore[no-untyped-call, unused-ignore]
                self.nodes, sentinel_kwargs={**self.sentinel_options, **bounded}
            )
            return sentinel.master_for(self.service, **self.options, **bounded)  # type: ignore[no-untyped-call, unused-ignore]
        return redis.Redis(**_accepted(redis.Redis, self.options), **bounded)

    def async_client(self, timeout: float) -> Any:
        """A ``redis.asyncio`` client for the running loop, bounded by ``timeout``."""
        bounded = _bounded(timeout, redis.asyncio.retry.Retry(NoBackoff(), 0))
        if self.kind is Kind.CLUSTER:
            nodes = [redis.asyncio.cluster.ClusterNode(h, p) for h, p in self.nodes]
            kwargs = _accepted(redis.asyncio.RedisCluster, self.options)
            return redis.asyncio.RedisCluster(startup_nodes=nodes, **kwargs, **bounded)
        if self.kind is Kind.SENTINEL:
            sentinel = redis.asyncio.sentinel.Sentinel(  # type: ignore[no-untyped-call, unused-ignore]
                self.nodes, sentinel_kwargs={**self.sentinel_options, **bounded}
            )
            return sentinel.master_for(self.service, **self.options, **bounded)
        return redis.asyncio.Redis(**_accepted(redis.asyncio.Redis, self.options), **bounded)


def _bounded(timeout: float, retry: Any) -> dict[str, Any]:
    return {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": retry,
        "decode_responses": False,
    }


def _accepted(cls: type, options: Mapping[str, Any]) -> dict[str, Any]:
    parameters = inspect.signature(cls).parameters
    return {k: v for k, v in options.items() if k in parameters}


def _portable(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The portable part of a pool's connection kwargs, ssl and unix sockets named the
    way the clients' constructors take them."""
    options = {k: v for k, v in kwargs.items() if k in _PORTABLE}
    connection_class = kwargs.get("connection_class")
    if connection_class is not None and "SSL" in connection_class.__name__:
        options["ssl"] = True
    if kwargs.get("path"):
        options["unix_socket_path"] = kwargs["path"]
    return options


def from_url(url: str) -> Target:
    return Target(Kind.SINGLE, _portable(parse_url(url)))  # type: ignore[no-untyped-call, unused-ignore]


def from_client(client: object) -> Target:
    """The target of a user's client, of any flavour redis-py has."""
    if isinstance(client, (redis.cluster.RedisCluster, redis.asyncio.RedisCluster)):
        nodes = tuple((n.host, int(n.port)) for n in client.get_nodes())
        if isinstance(client, redis.cluster.RedisCluster):
            kwargs = client.nodes_manager.connection_kwargs
        else:
            kwargs = client.connection_kwargs
        if not nodes:  # an async cluster client lists its nodes once initialized
            startup = client.nodes_manager.startup_nodes.values()
            nodes = tuple((n.host, int(n.port)) for n in startup)
        options = _portable(kwargs)
        options.pop("db", None)
        return Target(Kind.CLUSTER, options, nodes)
    pool = getattr(client, "connection_pool", None)
    if pool is None:
        raise TypeError(f"RedisHealth needs a redis-py client, not {type(client).__name__}")
    options = _portable(pool.connection_kwargs)
    if isinstance(
        pool,
        (redis.sentinel.SentinelConnectionPool, redis.asyncio.sentinel.SentinelConnectionPool),
    ):
        manager = pool.sentinel_manager
        addresses = [s.connection_pool.connection_kwargs for s in manager.sentinels]
        sentinels = tuple((a["host"], int(a["port"])) for a in addresses)
        options.pop("host", None)
        options.pop("port", None)
        return Target(
            Kind.SENTINEL,
            options,
            sentinels,
            pool.service_name,
            _portable(manager.sentinel_kwargs),
        )
    return Target(Kind.SINGLE, options)
