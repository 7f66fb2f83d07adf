"""The circuit breaker: a dead primary is skipped, then probed once it may have recovered.

With ``Breaker(failures=2, cooldown=0.5)`` the primary ("comet") opens after two failures
in a row; later calls go straight to the backup without sending comet a request. Once
the cooldown has passed, one call probes comet: it has recovered, so the breaker closes.
A fake clock stands in for time (``Breaker(clock=...)``), so nothing sleeps.

Run it: python examples/breaker.py
"""

import failover
from failover import Breaker, Provider, with_fallback
from failover.testing import FakeProvider


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def main() -> None:
    clock = FakeClock()
    with FakeProvider("comet") as comet_fake, FakeProvider("backup") as backup_fake:
        comet = Provider("comet", base_url=comet_fake.base_url, api_key=comet_fake.api_key)
        backup = Provider("backup", base_url=backup_fake.base_url, api_key=backup_fake.api_key)

        @with_fallback(comet, backup, breaker=Breaker(failures=2, cooldown=0.5, clock=clock))
        def ask(question: str, client=None) -> str:
            reply = client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": question}]
            )
            return reply.choices[0].message.content

        def call(label: str) -> failover.State:
            answer = ask("hi")
            state = failover.health()["comet"]["state"]
            sent = len(comet_fake.requests)
            print(f"{label:<20} {answer:<12} comet: {state.value:<6} requests: {sent}")
            return state

        comet_fake.fail(status=500)
        call("call 1 (comet fails)")
        assert call("call 2 (comet fails)") is failover.State.OPEN
        assert call("call 3 (skips comet)") is failover.State.OPEN
        assert len(comet_fake.requests) == 2  # call 3 never reached comet

        comet_fake.recover()
        clock.now += 0.6  # past the cooldown: the next call probes comet
        assert call("call 4 (probe)") is failover.State.CLOSED
        assert ask("hi") == "[comet] hi"


if __name__ == "__main__":
    main()
