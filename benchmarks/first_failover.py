"""The first failover against later ones in the same fresh process, beside a bare openai loop.

    python benchmarks/first_failover.py            # 7 fresh processes per form
    python benchmarks/first_failover.py --runs 15 --forms sync "naive sync"

One child process serves the fake providers for the whole run: the measured processes
run no server thread, and the server's own first 503s and connections are paid in two
discarded rounds, as a provider that has been up a while has paid them. Each measured
process is fresh: ``HEALTHY`` calls served by the primary (the first is the process's
cold start: imports, clients, first connection), a pause (the app runs a while;
failover's warm-up thread builds the backup's client meanwhile), then the primary
answers 503 to everything and every call fails over, with no breaker and no
same-provider retry, so each pays the failed attempt. The first failover opens the
connection to the backup and later ones reuse it, in every form alike.

Forms: failover's decorator (sync, async), and the loop a user writes by hand over two
bare openai clients (``naive``, built by its first call): its cold start and its
first-failover cost are openai's own. Printed, as medians over the processes (the forms
interleaved run by run): the process's first call and a healthy one; the first
failover, the median of the later ones and their difference in wall time, and in CPU
time (the whole process's); and how many openai clients were constructed during the
first failover. The machine's noise is in every number: compare runs made side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import inspect
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

FORMS = ("sync", "async", "naive sync", "naive async")
HEALTHY = 5  # healthy calls before the outage; the first is the process's cold start
PAUSE = 0.1  # seconds before each failover (the app serves others meanwhile)
MESSAGES: list[Any] = [{"role": "user", "content": "hello"}]
KEYS = ("cold", "healthy", "first", "later", "extra", "cpu extra", "new conn")  # printed


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


def _asks(form: str, where: dict[str, Any]) -> Callable[[], Any]:
    """The call of ``form`` (for an async form, a coroutine function)."""
    import openai

    from failover import Provider, with_fallback

    if form.startswith("naive"):
        kind = openai.AsyncOpenAI if form.endswith("async") else openai.OpenAI
        clients: list[Any] = []

        def ask(i: int) -> Any:
            if not clients:  # built by the first call, as failover builds its own
                clients.extend(
                    kind(base_url=u, api_key=k, max_retries=0) for u, k in where.values()
                )
            return clients[i].chat.completions.create(model="m", messages=MESSAGES)

        def naive_sync() -> Any:
            try:
                return ask(0)
            except openai.APIError:
                return ask(1)

        async def naive_async() -> Any:
            try:
                return await ask(0)
            except openai.APIError:
                return await ask(1)

        return naive_async if form.endswith("async") else naive_sync

    chain = [Provider(name, base_url=url, api_key=key) for name, (url, key) in where.items()]

    # No breaker and no same-provider retry: every call pays the failed attempt
    # and moves on at once.
    @with_fallback(*chain, breaker=None, retry=None)
    def ask_sync(client: Any = None) -> Any:
        return client.chat.completions.create(model="m", messages=MESSAGES)

    @with_fallback(*chain, breaker=None, retry=None)
    async def ask_async(client: Any = None) -> Any:
        return await client.chat.completions.create(model="m", messages=MESSAGES)

    return ask_async if form == "async" else ask_sync


def measure(form: str, where: dict[str, Any], later: int) -> dict[str, float]:
    """One form's numbers (ms), in this fresh process."""
    built = _count_constructions()
    ask = _asks(form, where)
    loop = asyncio.new_event_loop()

    def timed(call: Callable[[], Any]) -> tuple[float, float]:
        """Wall and CPU time (this process's, every thread) of one call."""
        wall, cpu = time.perf_counter(), time.process_time()
        result = call()
        if inspect.isawaitable(result):
            loop.run_until_complete(result)
        return (time.perf_counter() - wall) * 1e3, (time.process_time() - cpu) * 1e3

    def new_connection() -> float:
        """What a request on a new connection to the backup costs beyond a pooled one's."""
        import httpx2

        url, key = list(where.values())[1]
        kind = httpx2.AsyncClient if form.endswith("async") else httpx2.Client
        costs = []
        for _ in range(5):
            http = kind(headers={"Authorization": f"Bearer {key}"}, verify=False)
            new, pooled = (timed(functools.partial(http.get, f"{url}/models"))[0] for _ in "12")
            costs.append(new - pooled)
            timed(http.aclose if form.endswith("async") else http.close)
        return statistics.median(costs)

    def failover() -> tuple[float, float]:
        # Each after the same pause: back to back, later ones would find the caches
        # (the CPU's, and the code's) hot that the first found cold.
        time.sleep(PAUSE)
        return timed(ask)

    # The primary's fake answers HEALTHY requests, then 503 to every one.
    healthy = [timed(ask) for _ in range(HEALTHY)]
    before = built[0]
    first = failover()
    during = built[0] - before
    rest = [failover() for _ in range(later)]
    connection = new_connection()
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()
    return {
        "cold": healthy[0][0],
        "healthy": statistics.median(wall for wall, _ in healthy[1:]),
        "first": first[0],
        "later": statistics.median(wall for wall, _ in rest),
        "cpu extra": first[1] - statistics.median(cpu for _, cpu in rest),
        "new conn": connection,
        "built": during,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--later", type=int, default=10, help="later failovers to take the median of"
    )
    parser.add_argument("--runs", type=int, default=7, help="fresh processes per form")
    parser.add_argument("--forms", nargs="+", choices=FORMS, default=FORMS, help="forms to run")
    parser.add_argument("--child", choices=FORMS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, json.load(sys.stdin), args.later)))
        return

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _fixtures import fakes

    from failover.testing._server import _HEALTHY

    def fresh_process(form: str, primary: Any, backup: Any) -> dict[str, float]:
        primary.fail(503)
        primary._add(_HEALTHY, HEALTHY)
        where = {f.name: (f.base_url, f.api_key) for f in (primary, backup)}
        command = [sys.executable, __file__, "--child", form, "--later", str(args.later)]
        done = subprocess.run(command, input=json.dumps(where), capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"{form}: the measured process failed:\n{done.stderr}")
        return dict(json.loads(done.stdout))

    runs: dict[str, list[dict[str, float]]] = {form: [] for form in args.forms}
    with fakes("process") as (primary, backup, _):
        for _ in range(2):  # the server's own first 503s and connections
            fresh_process("naive sync", primary, backup)
        for _ in range(args.runs):
            for form in args.forms:  # interleaved, so that the machine's noise hits all alike
                runs[form].append(fresh_process(form, primary, backup))

    columns = ("cold call", "healthy", "first f/o", "later f/o", "extra", "cpu extra", "new conn")
    print(f"{'form (ms)':<12}" + "".join(f"{c:>11}" for c in columns) + f"{'built':>7}")
    for form, rows in runs.items():
        for row in rows:
            row["extra"] = row["first"] - row["later"]
        *times, built = (statistics.median(row[c] for row in rows) for c in (*KEYS, "built"))
        print(f"{form:<12}" + "".join(f"{t:>11.2f}" for t in times) + f"{built:>7.0f}")


if __name__ == "__main__":
    main()
