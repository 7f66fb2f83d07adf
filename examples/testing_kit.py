"""Testing your own failover with ``failover.testing.FakeProvider``.

A FakeProvider is a real OpenAI-compatible HTTP server on 127.0.0.1 that you can tell
to fail in the ways real providers do. Here the code under test is ``summarize`` (your
app's function); each check breaks the primary one way and asserts the backup served.
With pytest, the ``fake_provider`` fixture gives you started servers with no setup.

Run it: python examples/testing_kit.py
"""

from failover import Provider, with_fallback
from failover.testing import FakeProvider

FAULTS = {  # how a provider can break, as FakeProvider simulates it
    "HTTP 503": lambda fake: fake.fail(status=503),
    "hang": lambda fake: fake.hang(5),  # cut short by attempt_timeout below
    "TCP reset": lambda fake: fake.reset(),
    "200 with a body that is not JSON": lambda fake: fake.garbage(),
    "stream cut midway": lambda fake: fake.cut_stream(after=2),
}


def make_summarize(primary: FakeProvider, backup: FakeProvider):
    """The app's code, pointed at the fakes (in your app the providers are real ones)."""
    providers = [
        Provider(f.name, base_url=f.base_url, api_key=f.api_key) for f in (primary, backup)
    ]

    # breaker=None: each check starts afresh, not with comet skipped after earlier ones;
    # retry=None: each fault goes to the backup at once (a 503 or a reset is otherwise
    # retried once on comet first).
    @with_fallback(*providers, attempt_timeout=1, breaker=None, retry=None)
    def summarize(text: str, client=None) -> str:
        stream = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": text}], stream=True
        )
        return "".join(chunk.choices[0].delta.content or "" for chunk in stream)

    return summarize


def main() -> None:
    with FakeProvider("comet") as comet, FakeProvider("backup") as backup:
        summarize = make_summarize(comet, backup)
        assert summarize("hello") == "[comet] hello"  # healthy: the primary serves
        for fault, inject in FAULTS.items():
            inject(comet)
            assert summarize("hello") == "[backup] hello", fault
            comet.recover()
            print(f"ok: {fault} -> the backup served")
        assert summarize("hello") == "[comet] hello"  # recovered: the primary serves again
        # Every request reached comet with comet's own key (the fakes record them all).
        assert len(comet.requests) == 2 + len(FAULTS)
        assert {r.headers["authorization"] for r in comet.requests} == {f"Bearer {comet.api_key}"}
        print(f"ok: comet received {len(comet.requests)} requests, all with its own key")


if __name__ == "__main__":
    main()
