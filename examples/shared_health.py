"""Shared health on Redis: one worker sees the primary go down, every worker skips it.

Starts a throwaway ``redis-server`` on a free loopback port (exits quietly when it or the
``redis`` package is missing: ``pip install 'failover[redis]'``). This process is worker
A: comet answers it 503 with ``Retry-After``, which opens comet's breaker in Redis. Worker
B, a separate process, then skips comet without sending it a single request.

Run it: python examples/shared_health.py
"""

import importlib.util
import multiprocessing
import shutil
import socket
import subprocess
import time
from concurrent.futures import ProcessPoolExecutor

import failover
from failover import Provider, with_fallback
from failover.testing import FakeProvider


def worker(redis_url: str, urls: dict[str, tuple[str, str]], name: str) -> str:
    """One worker process: every worker configures the same store and the same providers."""
    from failover.redis import RedisHealth

    failover.configure(health=RedisHealth(redis_url, namespace="example"))
    providers = [Provider(n, base_url=url, api_key=key) for n, (url, key) in urls.items()]

    @with_fallback(*providers)
    def ask(question: str, client=None) -> str:
        reply = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": question}]
        )
        return reply.choices[0].message.content

    answer = ask(f"hi from worker {name}")
    comet = failover.health()["comet"]
    print(
        f"worker {name}: {answer!r}; comet is {comet['state'].value} in {comet['source']}",
        flush=True,
    )
    return answer


def start_redis() -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as sock:  # a free port
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""],
        stdout=subprocess.DEVNULL,
    )
    for _ in range(100):  # until it accepts connections
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            break
        except OSError:
            time.sleep(0.05)
    return server, f"redis://127.0.0.1:{port}/0"


def main() -> None:
    if shutil.which("redis-server") is None or importlib.util.find_spec("redis") is None:
        print("skipped: needs redis-server and the redis package (pip install 'failover[redis]')")
        return
    server, redis_url = start_redis()
    try:
        with FakeProvider("comet") as comet_fake, FakeProvider("backup") as backup_fake:
            comet_fake.fail(status=503, retry_after=30)  # "go away for 30 s"
            urls = {fake.name: (fake.base_url, fake.api_key) for fake in (comet_fake, backup_fake)}
            assert worker(redis_url, urls, "A") == "[backup] hi from worker A"

            spawn = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(1, mp_context=spawn) as pool:
                answer = pool.submit(worker, redis_url, urls, "B").result(timeout=30)
            assert answer == "[backup] hi from worker B"
            print(f"comet received {len(comet_fake.requests)} request(s) in all")
            assert len(comet_fake.requests) == 1  # worker B never called comet
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
