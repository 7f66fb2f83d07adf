"""The first failover against later ones, each form measured in a fresh process.

    python benchmarks/first_failover.py            # sync and async decorator, 5 processes each
    python benchmarks/first_failover.py --runs 15 --later 50

In each fresh process: a few healthy calls on the primary (the app has been running),
then the primary answers 503 to everything and the calls fail over to the backup (no
breaker, so every call pays the failed attempt). Printed, as medians over the
processes: the first failing-over call, the median of the later ones, their difference
and ratio, and how many openai clients were constructed during the first failover (the
cold-start cost this guards against). The machine's noise is in every number: compare
runs made side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from typing import Any

FORMS = ("sync", "async")
MESSAGES: list[Any] = [{"role": "user", "content": "hello"}]


def _count_constructions() -> list[int]:
    # Counts every openai client built from here on (by failover or anyone else).
    import openai

    built = [0]
    for cls in (openai.OpenAI, openai.AsyncOpenAI):
        original = cls.__init__

        def counting(self: Any, *args: Any, _original: Any = original, **kwargs: Any) -> None:
            built[0] += 1
            _original(self, *args, **kwargs)

        cls.__init__ = counting  # type: ignore[method-assign]
    return built


def measure(form: str, later: int) -> dict[str, float]:
    """One form's numbers, in this (fresh) process."""
    built = _count_constructions()
    from failover import Provider, with_fallback
    from failover.testing import FakeProvider

    with FakeProvider("primary") as primary, FakeProvider("backup") as backup:
        chain = [
            Provider(f.name, base_url=f.base_url, api_key=f.api_key) for f in (primary, backup)
        ]

        # No breaker and no same-provider retry: every call pays the failed attempt
        # and moves on at once, so the difference is the cold start alone.
        @with_fallback(*chain, breaker=None, retry=None)
        def ask_sync(client: Any = None) -> Any:
            return client.chat.completions.create(model="m", messages=MESSAGES)

        @with_fallback(*chain, breaker=None, retry=None)
        async def ask_async(client: Any = None) -> Any:
            return await client.chat.completions.create(model="m", messages=MESSAGES)

        async def timed_async() -> float:
            start = time.perf_counter()
            await ask_async()
            return time.perf_counter() - start

        def timed_sync() -> float:
            start = time.perf_counter()
            ask_sync()
            return time.perf_counter() - start

        async def run_async() -> dict[str, float]:
            for _ in range(3):
                await timed_async()
            primary.fail(503)
            before = built[0]
            first = await timed_async()
            during = built[0] - before
            rest = [await timed_async() for _ in range(later)]
            return {"first": first, "later": statistics.median(rest), "built": during}

        def run_sync() -> dict[str, float]:
            for _ in range(3):
                timed_sync()
            primary.fail(503)
            before = built[0]
            first = timed_sync()
            during = built[0] - before
            rest = [timed_sync() for _ in range(later)]
            return {"first": first, "later": statistics.median(rest), "built": during}

        return asyncio.run(run_async()) if form == "async" else run_sync()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--later", type=int, default=30, help="later failovers to take the median of"
    )
    parser.add_argument("--runs", type=int, default=5, help="fresh processes per form")
    parser.add_argument("--child", choices=FORMS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.later)))
        return
    print(f"{'form':<6} {'first ms':>9} {'later ms':>9} {'extra ms':>9} {'ratio':>6} {'built':>6}")
    for form in FORMS:
        command = [sys.executable, __file__, "--child", form, "--later", str(args.later)]
        runs = [
            json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
            for _ in range(args.runs)
        ]
        first, later, extra, ratio, built = (
            statistics.median(f(run) for run in runs)
            for f in (
                lambda r: r["first"] * 1e3,
                lambda r: r["later"] * 1e3,
                lambda r: (r["first"] - r["later"]) * 1e3,
                lambda r: r["first"] / r["later"],
                lambda r: r["built"],
            )
        )
        print(f"{form:<6} {first:>9.2f} {later:>9.2f} {extra:>9.2f} {ratio:>6.2f} {built:>6.0f}")


if __name__ == "__main__":
    main()
