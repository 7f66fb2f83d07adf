"""The circuit breaker: a dead primary is skipped, then probed once it may have recovered.

With ``Breaker(failures=2, cooldown=0.5)`` the primary ("comet") opens after two failures
in a row; later calls go straight to the backup without sending comet a request. Once
the cooldown has passed, one call probes comet: it has recovered, so the breaker closes.
Then a brownout: comet fails one call in three, never two in a row, and the breaker
opens on the failure rate instead. ``health()`` says why it opened each time.
A fake clock stands in for time (``Breaker(clock=...)``), so nothing sleeps.
(``retry=None``: by default a 500 is first retried once on comet; here every failure
moves on at once, to show the breaker alone.)

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
    breaker = Breaker(failures=2, cooldown=0.5, min_calls=6, clock=clock)
    with FakeProvider("comet") as comet_fake, FakeProvider("backup") as backup_fake:
        comet = Provider("comet", base_url=comet_fake.base_url, api_key=comet_fake.api_key)
        backup = Provider("backup", base_url=backup_fake.base_url, api_key=backup_fake.api_key)

        @with_fallback(comet, backup, breaker=breaker, retry=None)
        def ask(question: str, client=None) -> str:
            reply = client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": question}]
            )
            return reply.choices[0].message.content

        def call(label: str) -> failover.State:
            answer = ask("hi")
            record = failover.health()["comet"]
            state, reason = record["state"], record["reason"]
            why = f" ({reason.value})" if reason else ""
            sent = len(comet_fake.requests)
            print(f"{label:<22} {answer:<12} comet: {state.value + why:<18} requests: {sent}")
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

        clock.now += 60  # later: a brownout, one call in three fails
        for _ in range(3):
            comet_fake.hang(0, times=2)  # a hang of 0 s: answered at once
            comet_fake.fail(status=500, times=1)
        states = [call(f"call {n} (brownout)") for n in range(6, 15)]
        assert states[5] is failover.State.OPEN  # 2 of its first 6 calls failed: 33 % >= 25 %
        assert failover.health()["comet"]["reason"] == "rate"


if __name__ == "__main__":
    main()
