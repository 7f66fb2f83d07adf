"""Real Redis servers for the shared-health tests: one server, a three-node cluster, and
Valkey when it is installed. Every one listens on 127.0.0.1 only, answers within a
bounded wait or fails the test, and is killed at teardown.

Import the fixtures (``redis_server_fixture`` ... , named ``redis_server``,
``redis_cluster``, ``valkey_server`` and ``ns``) into a test module to use them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

pytest.importorskip("redis")
import redis
import redis.cluster
import redis.sentinel

REDIS_SERVER = shutil.which("redis-server")
REDIS_CLI = shutil.which("redis-cli")
VALKEY_SERVER = shutil.which("valkey-server")


def run_child(script: str, config: dict[str, Any]) -> str:
    """``script`` in a fresh interpreter (another worker), given ``config`` as JSON in
    ``sys.argv[1]``: what it printed."""
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


class Ticker:
    """How late a ``sleep(0)`` ticker ran at most: what blocked the event loop."""

    late = 0.0


@contextlib.asynccontextmanager
async def ticking() -> AsyncIterator[Ticker]:
    """A ticker on the running loop while the block runs (read ``late`` after it)."""
    ticker, done = Ticker(), asyncio.Event()

    async def tick() -> None:
        while not done.is_set():
            before = time.monotonic()
            await asyncio.sleep(0)
            ticker.late = max(ticker.late, time.monotonic() - before)

    task = asyncio.ensure_future(tick())
    await asyncio.sleep(0)
    try:
        yield ticker
    finally:
        done.set()
        await task


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too."""
    for _ in range(200):
        port = random.randint(20_000, 45_000)
        if _free(port) and _free(port + 10_000):
            return port
    raise RuntimeError("no free port pair for a cluster node")


def wait_for(condition: Callable[[], object], what: str, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _debug_option(binary: str) -> list[str]:
    """Redis 7 and Valkey refuse DEBUG (the tests' DEBUG SLEEP) unless it is enabled."""
    version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
    found = re.search(r"v=(\d+)", version)
    return ["--enable-debug-command", "yes"] if found and int(found.group(1)) >= 7 else []


class RedisServer:
    """A server on a loopback port; stop and start it again (empty) on that port."""

    def __init__(self, binary: str | None = REDIS_SERVER, port: int | None = None) -> None:
        assert binary is not None
        self.binary = binary
        self.port = port or free_port()
        self.extra: list[str] = []
        self.binary_args: list[str] = []  # a config file, before any option
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self, **kwargs: Any) -> Any:
        """A plain client, to look at the server or act on it (no retries)."""
        return redis.Redis(port=self.port, **{"socket_timeout": 2.0, "retry": None, **kwargs})

    def start(self) -> RedisServer:
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly"]
        self._process = subprocess.Popen(
            [self.binary, *self.binary_args, *args, "no", *_debug_option(self.binary), *self.extra],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_timeout=0.2, socket_connect_timeout=0.2)

        def answers() -> bool:
            assert self._process is not None
            assert self._process.poll() is None, f"{self.binary} exited"
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False

        try:
            wait_for(answers, "the server to answer PING", within=10.0)
        finally:
            client.close()
        return self

    def stop(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None


class Cluster:
    """Three masters (no replicas) on loopback ports, all 16384 slots covered."""

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="failover-cluster-")
        self.nodes = [RedisServer(port=cluster_port()) for _ in range(3)]
        for node in self.nodes:
            node.extra = [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                f"{self._dir.name}/nodes-{node.port}.conf",
                "--dir",
                self._dir.name,
            ]

    def start(self) -> Cluster:
        assert REDIS_CLI is not None
        for node in self.nodes:
            node.start()
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        subprocess.run(
            [
                REDIS_CLI,
                "--cluster",
                "create",
                *addresses,
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )

        def ready() -> bool:
            for node in self.nodes:
                with node.client() as client:
                    if client.cluster("info").get("cluster_state") != "ok":
                        return False
            return True

        wait_for(ready, "the cluster to cover every slot", within=20.0)
        return self

    def client(self, **kwargs: Any) -> Any:
        node = redis.cluster.ClusterNode("127.0.0.1", self.nodes[0].port)
        return redis.cluster.RedisCluster(startup_nodes=[node], socket_timeout=2.0, **kwargs)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        self._dir.cleanup()


class Sentinel:
    """A Sentinel (``redis-server --sentinel``) watching ``master`` as ``mymaster``."""

    def __init__(self, master: RedisServer) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="failover-sentinel-")
        self.port = free_port()
        config = f"{self._dir.name}/sentinel.conf"
        with open(config, "w") as f:
            f.write(f"port {self.port}\nbind 127.0.0.1\ndir {self._dir.name}\n")
            f.write(f"sentinel monitor mymaster 127.0.0.1 {master.port} 1\n")
        self._server = RedisServer(port=self.port)
        self._server.extra = ["--sentinel"]
        self._config = config

    def start(self) -> Sentinel:
        server = self._server
        assert server.binary is not None
        server.binary_args = [self._config]
        server.start()
        return self

    def master(self, **kwargs: Any) -> Any:
        """A client of the master, found through this Sentinel."""
        sentinel = redis.sentinel.Sentinel([("127.0.0.1", self.port)], socket_timeout=2.0)
        return sentinel.master_for("mymaster", socket_timeout=2.0, **kwargs)

    def stop(self) -> None:
        self._server.stop()
        self._dir.cleanup()


@pytest.fixture(scope="module", name="redis_server")
def redis_server_fixture() -> Iterator[RedisServer]:
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module", name="redis_cluster")
def redis_cluster_fixture() -> Iterator[Cluster]:
    if REDIS_SERVER is None or REDIS_CLI is None:
        pytest.skip("redis-server or redis-cli is not installed")
    cluster = Cluster()
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@pytest.fixture(scope="module", name="valkey_server")
def valkey_server_fixture() -> Iterator[RedisServer]:
    if VALKEY_SERVER is None:
        pytest.skip("valkey-server is not installed")
    server = RedisServer(VALKEY_SERVER).start()
    yield server
    server.stop()


@pytest.fixture(name="ns")
def ns_fixture(request: pytest.FixtureRequest) -> str:
    """This test's own namespace, so that tests never share keys."""
    return re.sub(r"[^\w-]", "_", request.node.name)
