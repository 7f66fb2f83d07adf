"""Benchmarks: failover against a bare ``openai`` call, a naive loop, tenacity and stamina.

    python benchmarks/run.py                 # the full run (several minutes: hangs are slow)
    python benchmarks/run.py --quick         # fewer iterations
    python benchmarks/run.py --quick --check # the CI regression guard (ratios only)
    python benchmarks/run.py --json out.json # every measured number, as JSON

Every scenario runs against ``failover.testing.FakeProvider`` over real HTTP on
127.0.0.1. Contenders are interleaved call by call in one process (the order
rotating), so that noise hits them alike; results are medians, p99 and ratios
to each scenario's baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx2
import openai
import stamina
import tenacity

import failover
from failover import Provider, fallback_clients, with_fallback
from failover._health import STORE
from failover.testing import FakeProvider, _Fault, _Server

MODEL = "fake-model"
MESSAGES: list[Any] = [{"role": "user", "content": "hello"}]


# -- measuring ---------------------------------------------------------------------------


@dataclass
class Stats:
    n: int
    median: float  # µs (per call), or s for totals
    p99: float
    samples: tuple[float, ...] = ()  # in measuring order: round i of every contender aligns

    @classmethod
    def of(cls, samples: list[float]) -> Stats:
        ordered = sorted(samples)
        p99 = ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]
        return cls(len(ordered), statistics.median(ordered), p99, tuple(samples))

    def cost_over(self, base: Stats) -> float:
        """Median of per-round differences: drifts that hit both sides of a round cancel."""
        return statistics.median(a - b for a, b in zip(self.samples, base.samples, strict=True))


def _rotations(names: list[str], n: int) -> Iterator[list[str]]:
    for i in range(n):
        k = i % len(names)
        yield names[k:] + names[:k]


def interleave(
    contenders: dict[str, Callable[[], object]], n: int, warmup: int = 5, batch: int = 1
) -> dict[str, Stats]:
    """Per-call times in µs, the contenders taking turns (``batch`` calls a turn)."""
    for fn in contenders.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    gc.collect()
    clock = time.perf_counter_ns
    for order in _rotations(list(contenders), n):
        for name in order:
            fn = contenders[name]
            t0 = clock()
            for _ in range(batch):
                fn()
            samples[name].append((clock() - t0) / 1000 / batch)
    return {name: Stats.of(s) for name, s in samples.items()}


async def ainterleave(
    contenders: dict[str, Callable[[], Awaitable[object]]], n: int, warmup: int = 5, batch: int = 1
) -> dict[str, Stats]:
    """As :func:`interleave`, for coroutine functions (awaited one at a time)."""
    for fn in contenders.values():
        for _ in range(warmup):
            await fn()
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    gc.collect()
    clock = time.perf_counter_ns
    for order in _rotations(list(contenders), n):
        for name in order:
            fn = contenders[name]
            t0 = clock()
            for _ in range(batch):
                await fn()
            samples[name].append((clock() - t0) / 1000 / batch)
    return {name: Stats.of(s) for name, s in samples.items()}


# -- sockets -------------------------------------------------------------------------------


def _tcp_table() -> list[tuple[int, int, str, int]]:
    """(local port, remote port, state, inode) of every IPv4 TCP socket in our namespace."""
    rows = []
    with open("/proc/self/net/tcp") as f:
        next(f)
        for line in f:
            parts = line.split()
            local, remote, state, inode = parts[1], parts[2], parts[3], int(parts[9])
            rows.append((int(local.split(":")[1], 16), int(remote.split(":")[1], 16), state, inode))
    return rows


def _my_socket_inodes() -> set[int]:
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def client_sockets(ports: set[int]) -> int:
    """Open TCP sockets of this process connected to one of ``ports`` (the client side)."""
    mine = _my_socket_inodes()
    return sum(1 for _, remote, _, inode in _tcp_table() if remote in ports and inode in mine)


def connections_opened(ports: set[int]) -> int:
    """Client-side sockets to ``ports``, open or closed by us (TIME_WAIT): a connect count."""
    mine = _my_socket_inodes()
    return sum(
        1
        for _, remote, state, inode in _tcp_table()
        if remote in ports and (inode in mine or state == "06")
    )


# -- results -------------------------------------------------------------------------------


@dataclass
class Row:
    section: str
    contender: str
    median: float | None
    p99: float | None
    unit: str = "µs"
    ratio: float | None = None  # to the section's baseline
    target: str = ""
    met: bool | None = None
    note: str = ""


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    checks: list[tuple[str, bool]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        return row

    def stats_rows(
        self, section: str, stats: dict[str, Stats], baseline: str, targets: dict[str, float]
    ) -> None:
        """Rows for per-call stats; ``targets``: contender -> max ratio to the baseline."""
        base = stats[baseline].median
        for name, s in stats.items():
            ratio = s.median / base
            limit = targets.get(name)
            self.add(
                Row(
                    section,
                    name,
                    s.median,
                    s.p99,
                    ratio=ratio,
                    target=f"≤ {limit:.2f}x" if limit else "",
                    met=None if limit is None else ratio <= limit,
                )
            )

    def check(self, what: str, ok: bool) -> None:
        self.checks.append((what, ok))

    def print(self) -> None:
        header = ("section", "contender", "median", "p99", "ratio", "target", "met", "note")
        lines = [header]
        for r in self.rows:
            lines.append(
                (
                    r.section,
                    r.contender,
                    _fmt(r.median, r.unit),
                    _fmt(r.p99, r.unit),
                    f"{r.ratio:.3f}x" if r.ratio is not None else "",
                    r.target,
                    {True: "yes", False: "NO", None: ""}[r.met],
                    r.note,
                )
            )
        widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
        previous = None
        for line in lines:
            if previous is not None and line[0] != previous and line is not lines[1]:
                print()
            previous = line[0] if line is not lines[0] else None
            print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
        if self.checks:
            print("\nregression checks (--check):")
            for what, ok in self.checks:
                print(f"  [{'ok' if ok else 'FAIL'}] {what}")

    def as_json(self) -> dict[str, Any]:
        return {
            "rows": [asdict(r) for r in self.rows],
            "checks": [{"check": what, "ok": ok} for what, ok in self.checks],
            **self.extra,
        }


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return ""
    if unit == "µs" and value >= 10_000:
        return f"{value / 1000:.1f} ms"
    if unit == "s":
        return f"{value:.3f} s"
    return f"{value:.1f} {unit}" if unit != "%" else f"{value:.1f} %"


# -- fixtures ------------------------------------------------------------------------------


def provider(fake: FakeProvider, **kwargs: Any) -> Provider:
    return Provider(fake.name, base_url=fake.base_url, api_key=fake.api_key, **kwargs)


def free_port() -> int:
    """A port with nothing listening (bound, then released)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


class AlternatingFake(FakeProvider):
    """Answers every other request with a 500 (odd ones), deterministically."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.count = 0

    def _take_fault(self) -> _Fault:
        with self._lock:
            self.count += 1
            odd = self.count % 2 == 1
        return _Fault("fail", 500) if odd else super()._take_fault()


def _chat(client: Any) -> Any:
    return client.chat.completions.create(model=MODEL, messages=MESSAGES)


_COMPLETION = {
    "id": "chatcmpl-mock",
    "object": "chat.completion",
    "created": 1_700_000_000,
    "model": MODEL,
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "hi", "refusal": None},
            "finish_reason": "stop",
            "logprobs": None,
        }
    ],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}


def _mock_handler(request: httpx2.Request) -> httpx2.Response:
    return httpx2.Response(200, json=_COMPLETION)


def mock_client(host: str) -> openai.OpenAI:
    transport = httpx2.MockTransport(_mock_handler)
    return openai.OpenAI(
        api_key="x", base_url=f"http://{host}/v1", http_client=httpx2.Client(transport=transport)
    )


def mock_async_client(host: str) -> openai.AsyncOpenAI:
    transport = httpx2.MockTransport(_mock_handler)
    http_client = httpx2.AsyncClient(transport=transport)
    return openai.AsyncOpenAI(api_key="x", base_url=f"http://{host}/v1", http_client=http_client)


def _tenacity_sync(call: Callable[[], Any]) -> Callable[[], Any]:
    retry = tenacity.retry(
        stop=tenacity.stop_after_attempt(2),
        retry=tenacity.retry_if_exception_type(openai.APIError),
        reraise=True,
    )
    return retry(call)


def _stamina(call: Callable[..., Any]) -> Callable[..., Any]:
    return stamina.retry(on=openai.APIError, attempts=2)(call)


# -- 1. healthy path -----------------------------------------------------------------------


def _forms_sync(primary: Any, backup: Any) -> tuple[dict[str, Callable[[], object]], Any]:
    """The three failover forms, sync, over ``primary`` then ``backup``."""

    @with_fallback(primary, backup)
    def decorated(client: Any = None) -> Any:
        return _chat(client)

    clients = fallback_clients(primary, backup)
    proxy = clients.__enter__()

    def block() -> Any:
        for attempt in fallback_clients(primary, backup):
            with attempt as client:
                reply = _chat(client)
        return reply

    forms = {"@with_fallback": decorated, "fallback_clients() proxy": lambda: _chat(proxy)}
    return {**forms, "block form": block}, clients


async def _forms_async(primary: Any, backup: Any) -> tuple[dict[str, Any], Any]:
    @with_fallback(primary, backup)
    async def decorated(client: Any = None) -> Any:
        return await _chat(client)

    clients = fallback_clients(primary, backup)
    proxy = await clients.__aenter__()

    async def block() -> Any:
        async for attempt in fallback_clients(primary, backup):
            async with attempt as client:
                reply = await _chat(client)
        return reply

    forms = {"@with_fallback": decorated, "fallback_clients() proxy": lambda: _chat(proxy)}
    return {**forms, "block form": block}, clients


def bench_healthy(report: Report, comet: FakeProvider, backup: FakeProvider, n: int) -> None:
    STORE.clear()
    bare = comet.client()
    forms, clients = _forms_sync(provider(comet), provider(backup))
    stats = interleave({"bare openai": lambda: _chat(bare), **forms}, n)
    clients.__exit__(None, None, None)
    bare.close()
    limits = {"@with_fallback": 1.03, "fallback_clients() proxy": 1.03}
    report.stats_rows("1a healthy, loopback, sync", stats, "bare openai", limits)
    for name in limits:
        report.check(
            f"sync {name} ≤ 2x bare over loopback",
            stats[name].median < 2 * stats["bare openai"].median,
        )

    async def run_async() -> dict[str, Stats]:
        STORE.clear()
        bare = comet.async_client()
        forms, clients = await _forms_async(provider(comet), provider(backup))
        stats = await ainterleave({"bare openai": lambda: _chat(bare), **forms}, n)
        await clients.__aexit__(None, None, None)
        await bare.close()
        return stats

    stats = asyncio.run(run_async())
    report.stats_rows("1b healthy, loopback, async", stats, "bare openai", limits)
    for name in limits:
        report.check(
            f"async {name} ≤ 2x bare over loopback",
            stats[name].median < 2 * stats["bare openai"].median,
        )


WRAPPER_BATCH = 20
EMPTY_BATCH = 200


def _wrapper_rows(
    report: Report, section: str, stats: dict[str, Stats], budget: float | None, base: str
) -> None:
    """Rows of wrapper costs; ``budget`` µs is the target where one applies, else ≤ tenacity.

    Paired differences, not differences of medians: a few µs of cost under ~600 µs of
    client work is only visible once the slow drifts of a shared machine cancel. Even
    so, every wrapper around a real client call pays some tens of µs of cache effects
    that the bare call does not, so the absolute target is checked on an empty body.
    """
    reference = stats[base]
    cost = {name: s.cost_over(reference) for name, s in stats.items()}
    report.extra.setdefault("wrapper_cost_us", {})[section] = cost
    for name, s in stats.items():
        ratio = s.median / reference.median
        row = report.add(Row(section, name, s.median, s.p99, ratio=ratio))
        if name == base:
            continue
        row.note = f"cost {cost[name]:+.2f} µs"
        if name in ("@with_fallback", "fallback_clients() proxy"):
            within = budget is None or cost[name] <= budget
            row.target = f"≤ {budget:.0f} µs, ≤ tenacity" if budget else "≤ tenacity (+5 %)"
            row.met = within and cost[name] <= cost["tenacity"] * 1.05 + 0.5


def bench_empty_body(report: Report, n: int) -> None:
    """The wrapper's own cost: an empty body (it only returns the injected client)."""
    STORE.clear()
    primary, backup = mock_client("primary"), mock_client("backup")

    def body(client: Any = primary) -> Any:
        return client

    contenders = {
        "undecorated": body,
        "@with_fallback": with_fallback(primary, backup)(body),
        "tenacity": _tenacity_sync(body),
        "stamina": _stamina(body),
    }
    stats = interleave(contenders, n, batch=EMPTY_BATCH)
    _wrapper_rows(report, "1e wrapper alone (empty body), sync", stats, 5, "undecorated")

    async def run_async() -> dict[str, Stats]:
        primary, backup = mock_async_client("primary"), mock_async_client("backup")

        async def body(client: Any = primary) -> Any:
            return client

        contenders = {
            "undecorated": body,
            "@with_fallback": with_fallback(primary, backup)(body),
            "tenacity": tenacity.retry(stop=tenacity.stop_after_attempt(2), reraise=True)(body),
            "stamina": _stamina(body),
        }
        return await ainterleave(contenders, n, batch=EMPTY_BATCH)

    stats = asyncio.run(run_async())
    _wrapper_rows(report, "1f wrapper alone (empty body), async", stats, 10, "undecorated")


def bench_wrapper(report: Report, n: int) -> None:
    STORE.clear()
    bare = mock_client("primary")
    forms, clients = _forms_sync(bare, mock_client("backup"))
    contenders = {
        "bare openai": lambda: _chat(bare),
        **forms,
        "tenacity": _tenacity_sync(lambda: _chat(bare)),
        "stamina": _stamina(lambda: _chat(bare)),
    }
    stats = interleave(contenders, n, batch=WRAPPER_BATCH)
    _wrapper_rows(
        report, "1c wrapper around a mock-transport call, sync", stats, None, "bare openai"
    )
    clients.__exit__(None, None, None)

    async def run_async() -> dict[str, Stats]:
        STORE.clear()
        bare = mock_async_client("primary")
        forms, clients = await _forms_async(bare, mock_async_client("backup"))

        @tenacity.retry(
            stop=tenacity.stop_after_attempt(2),
            retry=tenacity.retry_if_exception_type(openai.APIError),
            reraise=True,
        )
        async def with_tenacity() -> Any:
            return await _chat(bare)

        async def call() -> Any:
            return await _chat(bare)

        contenders = {
            "bare openai": call,
            **forms,
            "tenacity": with_tenacity,
            "stamina": _stamina(call),
        }
        stats = await ainterleave(contenders, n, batch=WRAPPER_BATCH)
        await clients.__aexit__(None, None, None)
        return stats

    stats = asyncio.run(run_async())
    _wrapper_rows(
        report, "1d wrapper around a mock-transport call, async", stats, None, "bare openai"
    )


def bench_connections(
    report: Report, comet: FakeProvider, backup: FakeProvider, calls: int
) -> None:
    """New TCP connections per call of each form: none once warm means no client per call."""
    STORE.clear()
    ports = {comet.port, backup.port}
    bare = comet.client()
    forms, clients = _forms_sync(provider(comet), provider(backup))
    result = {}
    for name, fn in {"bare openai": lambda: _chat(bare), **forms}.items():
        fn()  # warm: the first call opens the pool's connection
        before = connections_opened(ports)
        for _ in range(calls):
            fn()
        result[name] = (connections_opened(ports) - before) / calls
    clients.__exit__(None, None, None)
    bare.close()
    report.extra["new_connections_per_call"] = result
    for name, per_call in result.items():
        report.add(
            Row(
                "1e new TCP connections per call (sync, warm)",
                name,
                None,
                None,
                target="0 (no client per call)",
                met=per_call < 0.05,
                note=f"{per_call:.2f} per call",
            )
        )
        if name in ("@with_fallback", "fallback_clients() proxy"):
            report.check(f"{name} opens no connection per call", per_call < 0.05)


# -- 2. primary down -----------------------------------------------------------------------


def _naive(gateway: openai.OpenAI, fallback: openai.OpenAI) -> Callable[[], Any]:
    def call() -> Any:
        try:
            return _chat(gateway)
        except openai.APIError:
            return _chat(fallback)

    return call


def _tenacity_fallback(gateway: openai.OpenAI, fallback: openai.OpenAI) -> Callable[[], Any]:
    clients = (gateway, fallback)

    def call() -> Any:
        for attempt in tenacity.Retrying(
            stop=tenacity.stop_after_attempt(2),
            retry=tenacity.retry_if_exception_type(openai.APIError),
            reraise=True,
        ):
            with attempt:
                return _chat(clients[attempt.retry_state.attempt_number - 1])
        raise AssertionError("unreachable")

    return call


def _sequential_totals(
    contenders: dict[str, Callable[[], object]], calls: dict[str, int]
) -> dict[str, list[float]]:
    """Each contender's per-call times (s) over ``calls[name]`` calls, interleaved."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for i, order in enumerate(_rotations(list(contenders), max(calls.values()))):
        for name in order:
            if i < calls[name]:
                t0 = time.perf_counter()
                contenders[name]()
                times[name].append(time.perf_counter() - t0)
    return times


def bench_primary_down(
    report: Report, comet: FakeProvider, backup: FakeProvider, calls: int, hang_baseline: int
) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    faults: dict[str, tuple[str, float]] = {
        "connection refused": (dead, 2.0),
        "503": (comet.base_url, 2.0),
        "hang, 1 s timeout": (comet.base_url, 20.0),
    }
    for fault, (url, target) in faults.items():
        STORE.clear()
        comet.recover()
        if fault == "503":
            comet.fail(503)
        hang = fault.startswith("hang")
        if hang:
            comet.hang(3)
        timeout: dict[str, Any] = {"timeout": 1.0} if hang else {}
        gateway = openai.OpenAI(base_url=url, api_key=comet.api_key, max_retries=0, **timeout)
        fallback = backup.client(**timeout)
        primary = Provider(comet.name, base_url=url, api_key=comet.api_key)

        @with_fallback(primary, provider(backup), attempt_timeout=1.0 if hang else None)
        def decorated(client: Any = None) -> Any:
            return _chat(client)

        baselines = {
            "naive loop": _naive(gateway, fallback),
            "tenacity fallback": _tenacity_fallback(gateway, fallback),
        }
        if hang:
            # The breaker's cooldown runs on the wall clock: interleaved with the
            # baselines' 1 s calls, failover's 200 calls would stretch over minutes
            # and pay for probes that a 3 s run never makes. So it runs alone first,
            # and the baselines (each call alike: 1 s, then the fallback) are
            # extrapolated from ``hang_baseline`` calls.
            times = _sequential_totals({"@with_fallback": decorated}, {"@with_fallback": calls})
            times.update(_sequential_totals(baselines, dict.fromkeys(baselines, hang_baseline)))
        else:
            contenders = {**baselines, "@with_fallback": decorated}
            times = _sequential_totals(contenders, dict.fromkeys(contenders, calls))
        gateway.close()
        fallback.close()
        section = f"2 primary down ({fault}), {calls} sequential calls: total"
        totals = {name: sum(t) * calls / len(t) for name, t in times.items()}
        naive_total = totals["naive loop"]
        for name, per_call in times.items():
            speedup = naive_total / totals[name]
            row = Row(section, name, totals[name], Stats.of(per_call).p99, unit="s")
            row.ratio = totals[name] / naive_total
            notes = [f"{speedup:.1f}x faster than naive"] if name != "naive loop" else []
            if len(per_call) != calls:
                notes.append(f"extrapolated from {len(per_call)} calls")
            row.note = "; ".join(notes)
            if name == "@with_fallback":
                row.target = f"≥ {target:.0f}x faster than naive"
                row.met = speedup >= target
                report.extra.setdefault("speedup_vs_naive", {})[fault] = speedup
            report.add(row)
        if hang:
            speedup = report.extra["speedup_vs_naive"][fault]
            report.check(
                f"hanging primary: @with_fallback ≥ 5x faster than naive ({speedup:.1f}x)",
                speedup >= 5,
            )
    comet.recover()


def bench_failover_latency(
    report: Report, comet: FakeProvider, backup: FakeProvider, n: int
) -> None:
    """What failing over after a 503 costs beyond the failed call and the second call."""
    STORE.clear()
    comet.fail(503)
    gateway, fallback = comet.client(), backup.client()

    def failing() -> None:
        try:
            _chat(gateway)
        except openai.APIStatusError:
            pass

    @with_fallback(provider(comet), provider(backup), breaker=None)
    def decorated(client: Any = None) -> Any:
        return _chat(client)

    stats = interleave(
        {
            "503 call alone": failing,
            "second call alone": lambda: _chat(fallback),
            "naive loop": _naive(gateway, fallback),
            "@with_fallback (no breaker)": decorated,
        },
        n,
    )
    comet.recover()
    gateway.close()
    fallback.close()
    parts = stats["503 call alone"].median + stats["second call alone"].median
    section = "2d failover latency after a 503 (per call)"
    for name, s in stats.items():
        row = report.add(Row(section, name, s.median, s.p99, ratio=s.median / parts))
        if name in ("naive loop", "@with_fallback (no breaker)"):
            beyond = s.median - parts
            row.note = f"{beyond:+.0f} µs beyond 503 call + second call"
            if name.startswith("@"):
                row.target = "≤ 1000 µs beyond"
                row.met = beyond <= 1000
                report.extra["failover_latency_beyond_us"] = beyond


# -- 3. concurrency --------------------------------------------------------------------


def bench_concurrent(report: Report, backup: FakeProvider, n: int) -> None:
    flaky = AlternatingFake("flaky").start()
    ports = {flaky.port, backup.port}

    @with_fallback(provider(flaky), provider(backup))
    async def decorated(client: Any = None) -> Any:
        return await _chat(client)

    async def burst(fn: Callable[[], Awaitable[Any]]) -> tuple[float, list[float], list[Any]]:
        async def timed() -> tuple[float, Any]:
            t0 = time.perf_counter()
            try:
                result = await fn()
            except Exception as exc:
                result = exc
            return time.perf_counter() - t0, result

        t0 = time.perf_counter()
        done = await asyncio.gather(*(timed() for _ in range(n)))
        return time.perf_counter() - t0, [d for d, _ in done], [r for _, r in done]

    async def main() -> dict[str, Any]:
        STORE.clear()
        bare = backup.async_client()
        base_wall, base_lat, _ = await burst(lambda: _chat(bare))
        await bare.close()
        before = client_sockets(ports)
        wall, lat, results = await burst(decorated)
        after_first = client_sockets(ports)
        wall2, lat2, results2 = await burst(decorated)
        after_second = client_sockets(ports)
        replies = results + results2
        ok = [r for r in replies if not isinstance(r, BaseException)]
        served = {
            name: sum(1 for r in ok if r.choices[0].message.content.startswith(f"[{name}]"))
            for name in ("flaky", "backup")
        }
        return {
            "baseline_wall_s": base_wall,
            "baseline_p99_s": Stats.of(base_lat).p99,
            "wall_s": min(wall, wall2),
            "p99_s": Stats.of(lat + lat2).p99,
            "median_s": Stats.of(lat + lat2).median,
            "success_rate": 100 * len(ok) / len(replies),
            "errors": sorted({type(r).__name__ for r in replies if isinstance(r, BaseException)}),
            "served": served,
            "sockets_before": before,
            "sockets_after_burst_1": after_first,
            "sockets_after_burst_2": after_second,
        }

    r = asyncio.run(main())
    flaky.stop()
    report.extra["concurrent"] = r
    section = f"3 {n} concurrent async calls, primary failing every other request"
    report.add(
        Row(
            section,
            "bare openai, healthy (throughput)",
            n / r["baseline_wall_s"],
            None,
            unit="calls/s",
            ratio=1.0,
            note=f"p99 {r['baseline_p99_s'] * 1000:.0f} ms",
        )
    )
    throughput = n / r["wall_s"]
    report.add(
        Row(
            section,
            "@with_fallback (throughput)",
            throughput,
            None,
            unit="calls/s",
            ratio=throughput / (n / r["baseline_wall_s"]),
            note=f"median {r['median_s'] * 1000:.0f} ms, p99 {r['p99_s'] * 1000:.0f} ms, "
            f"served {r['served']}",
        )
    )
    report.add(
        Row(
            section,
            "@with_fallback success rate",
            r["success_rate"],
            None,
            unit="%",
            target="100 %",
            met=r["success_rate"] == 100,
            note=", ".join(r["errors"]),
        )
    )
    # The pools keep up to 100 idle connections per client (openai's default): what
    # counts is that a second burst leaves no more sockets than the first.
    leak = r["sockets_after_burst_2"] > r["sockets_after_burst_1"] + max(10, n // 20)
    report.add(
        Row(
            section,
            "open sockets before / after burst 1 / after burst 2",
            None,
            None,
            target="no growth",
            met=not leak,
            note=f"{r['sockets_before']} / {r['sockets_after_burst_1']} / "
            f"{r['sockets_after_burst_2']}",
        )
    )
    report.check(
        f"concurrent success rate 100 % ({r['success_rate']:.1f} %)", r["success_rate"] == 100
    )
    report.check("no socket leak across concurrent bursts", not leak)


# -- 4. import time ------------------------------------------------------------------------

_IMPORTTIME = re.compile(r"import time:\s+(\d+)\s+\|\s+(\d+)\s+\|( *)(\S+)")


def import_cost(runs: int) -> dict[str, Any]:
    """Median over ``runs`` of what ``import failover`` adds once openai is imported (ms).

    Measured as ``python -X importtime -c "import openai; import failover"``: the
    cumulative time of the ``failover`` line, i.e. everything imported for failover
    that ``import openai`` had not already imported (openai's lazily loaded
    submodules included), broken down by top-level package.
    """
    extra: list[float] = []
    packages: dict[str, list[float]] = {}
    # As installed packages are: with bytecode caches (kept out of the tree, in a
    # temporary prefix; the first, unmeasured run writes them), whatever
    # PYTHONDONTWRITEBYTECODE says in this environment.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    command = [sys.executable, "-X", "importtime", "-c", "import openai; import failover"]
    with tempfile.TemporaryDirectory() as prefix:
        env["PYTHONPYCACHEPREFIX"] = prefix
        outputs = [
            subprocess.run(command, capture_output=True, text=True, check=True, env=env).stderr
            for _ in range(runs + 1)
        ][1:]
    for out in outputs:
        lines = [(m.group(4), int(m.group(1)), int(m.group(2))) for m in _IMPORTTIME.finditer(out)]
        start = next(i for i, (name, _, _) in enumerate(lines) if name == "openai") + 1
        after = lines[start:]
        extra.append(next(cum for name, _, cum in after if name == "failover") / 1000)
        for name, self_us, _ in after:
            packages.setdefault(name.split(".")[0], []).append(self_us / 1000 / runs)
    by_package = {name: round(sum(v), 2) for name, v in packages.items()}
    top = dict(sorted(by_package.items(), key=lambda kv: -kv[1])[:6])
    return {"beyond_openai_ms": statistics.median(extra), "by_package_ms": top}


def bench_import(report: Report, runs: int) -> None:
    cost = import_cost(runs)
    report.extra["import"] = cost
    report.add(
        Row(
            "4 import (python -X importtime)",
            "import failover beyond import openai",
            cost["beyond_openai_ms"],
            None,
            unit="ms",
            target="≤ 15 ms",
            met=cost["beyond_openai_ms"] <= 15,
            note=", ".join(f"{k} {v:.1f} ms" for k, v in cost["by_package_ms"].items()),
        )
    )


# -- 5. streaming --------------------------------------------------------------------------


def _first_token_sync(client: Any) -> Callable[[], float]:
    def run() -> float:
        t0 = time.perf_counter_ns()
        stream = client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
        next(iter(stream))
        first = (time.perf_counter_ns() - t0) / 1000
        for _ in stream:
            pass
        return first

    return run


def bench_streaming(report: Report, comet: FakeProvider, backup: FakeProvider, n: int) -> None:
    STORE.clear()
    bare = comet.client()
    clients = fallback_clients(provider(comet), provider(backup))
    proxy = clients.__enter__()
    runs = {
        "bare openai": _first_token_sync(bare),
        "fallback_clients() proxy": _first_token_sync(proxy),
    }
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for order in _rotations(list(runs), n + 5):
        for name in order:
            samples[name].append(runs[name]())
    clients.__exit__(None, None, None)
    bare.close()
    stats = {name: Stats.of(s[5:]) for name, s in samples.items()}
    report.stats_rows(
        "5 streaming: time to first chunk (sync)",
        stats,
        "bare openai",
        {"fallback_clients() proxy": 1.03},
    )


# -- main ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    per_call: int  # interleaved iterations for per-call timings over loopback
    in_memory: int  # iterations for the mock-transport wrapper cost
    sequential: int  # calls with the primary down
    hang_baseline: int  # calls of the naive loop and tenacity against a hanging primary
    concurrent: int
    import_runs: int


FULL = Sizes(
    per_call=1000, in_memory=5000, sequential=200, hang_baseline=200, concurrent=1000, import_runs=9
)
QUICK = Sizes(
    per_call=150, in_memory=1000, sequential=100, hang_baseline=5, concurrent=200, import_runs=3
)


@contextmanager
def fakes() -> Iterator[tuple[FakeProvider, FakeProvider]]:
    # The fake is a test server: give it a listen backlog like a real provider's, so
    # that a burst of concurrent connects is not slowed by dropped SYNs (1 s retries).
    backlog = _Server.request_queue_size
    _Server.request_queue_size = 2048
    try:
        with FakeProvider("comet") as comet, FakeProvider("backup") as backup:
            yield comet, backup
    finally:
        _Server.request_queue_size = backlog


def run(sizes: Sizes, only: set[str] | None = None) -> Report:
    logging.getLogger("failover").setLevel(logging.ERROR)
    report = Report()
    report.extra["sizes"] = asdict(sizes)
    report.extra["versions"] = {
        "python": sys.version.split()[0],
        "openai": openai.__version__,
        "failover": failover.__version__,
    }

    def want(name: str) -> bool:
        return only is None or name in only

    with fakes() as (comet, backup):
        if want("healthy"):
            bench_healthy(report, comet, backup, sizes.per_call)
        if want("wrapper"):
            bench_wrapper(report, sizes.in_memory // WRAPPER_BATCH)
            bench_empty_body(report, sizes.in_memory // 10)
        if want("connections"):
            bench_connections(report, comet, backup, 20)
        if want("down"):
            bench_primary_down(report, comet, backup, sizes.sequential, sizes.hang_baseline)
        if want("latency"):
            bench_failover_latency(report, comet, backup, sizes.per_call)
        if want("concurrent"):
            bench_concurrent(report, backup, sizes.concurrent)
        if want("streaming"):
            bench_streaming(report, comet, backup, sizes.per_call)
    if want("import"):
        bench_import(report, sizes.import_runs)
    if sizes == FULL:  # full runs only: the brownout waits out real hangs
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import brownout
        import ownership
        import recovery
        import telemetry  # the cost of traces and metrics (needs opentelemetry-sdk)

        for module in (m for m in (brownout, recovery, ownership, telemetry) if want(m.__name__)):
            module.bench(report, Row)
    STORE.clear()
    return report


SCENARIOS = (
    "healthy",
    "wrapper",
    "connections",
    "down",
    "latency",
    "concurrent",
    "import",
    "streaming",
    "brownout",
    "recovery",
    "ownership",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer iterations (CI)")
    parser.add_argument("--check", action="store_true", help="exit 1 on a gross regression")
    parser.add_argument("--json", metavar="FILE", help="write every measured number here")
    parser.add_argument("--only", nargs="+", choices=SCENARIOS, help="run only these scenarios")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    report = run(QUICK if args.quick else FULL, set(args.only) if args.only else None)
    report.extra["elapsed_s"] = time.perf_counter() - started
    report.print()
    print(f"\n{'quick' if args.quick else 'full'} run: {report.extra['elapsed_s']:.1f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report.as_json(), f, indent=2, default=str)
    if args.check and not all(ok for _, ok in report.checks):
        print("benchmark regression check FAILED", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
