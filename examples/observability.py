"""Observability: see every attempt, which provider is serving, and each provider's health.

- ``on_attempt=`` gets an ``Event(provider, outcome, error, elapsed)`` after each attempt;
- ``current_provider()`` names the provider of the running attempt, inside the body;
- ``failover.health()`` is a snapshot of every provider's breaker state and counters;
- each failed attempt is also one WARNING on the ``failover`` logger (shown here).

Run it: python examples/observability.py
"""

import logging
import sys

import failover
from failover import Event, Provider, with_fallback
from failover.testing import FakeProvider

logging.basicConfig(stream=sys.stdout, format="log: %(levelname)s %(message)s")


def on_attempt(event: Event) -> None:
    error = f" ({event.error!r})" if event.error else ""
    print(f"event: {event.provider} {event.outcome} in {event.elapsed:.3f}s{error}")


def main() -> None:
    with FakeProvider("comet") as comet_fake, FakeProvider("backup") as backup_fake:
        comet_fake.fail(status=502, times=2)  # the next request and its retry fail
        comet = Provider("comet", base_url=comet_fake.base_url, api_key=comet_fake.api_key)
        backup = Provider("backup", base_url=backup_fake.base_url, api_key=backup_fake.api_key)
        ran_on = []

        @with_fallback(comet, backup, on_attempt=on_attempt)
        def ask(question: str, client=None) -> str:
            ran_on.append(failover.current_provider())
            reply = client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": question}]
            )
            return reply.choices[0].message.content

        print("answer:", ask("first"))
        print("answer:", ask("second"))
        print("body ran on:", ran_on)
        assert ran_on == ["comet", "comet", "backup", "comet"]

        for name, record in failover.health().items():
            print(f"health: {name}: {record['state'].value}, calls={record['calls']}", end="")
            print(f" failures={record['failures']} failovers_served={record['failovers_served']}")
        assert failover.health()["comet"]["failures"] == 2
        assert failover.health()["backup"]["failovers_served"] == 1


if __name__ == "__main__":
    main()
