"""Hedging (async): when the primary is slow, race the backup instead of waiting.

With ``hedge=0.2``, if comet has not answered after 0.2 s the backup starts too; the
first success wins and the slower attempt is cancelled. While comet is quick the backup is
never asked; once comet hangs for 5 s, the answer still arrives after about 0.2 s.

Run it: python examples/hedging.py
"""

import asyncio
import time

from failover import Provider, with_fallback
from failover.testing import FakeProvider


async def main() -> None:
    with FakeProvider("comet") as comet_fake, FakeProvider("backup") as backup_fake:
        comet = Provider("comet", base_url=comet_fake.base_url, api_key=comet_fake.api_key)
        backup = Provider("backup", base_url=backup_fake.base_url, api_key=backup_fake.api_key)

        @with_fallback(comet, backup, hedge=0.2)
        async def ask(question: str, client=None) -> str:
            reply = await client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": question}]
            )
            return reply.choices[0].message.content

        answer = await ask("hi")  # comet answers well within 0.2 s: no hedge
        print(f"comet quick:   {answer}; requests sent to the backup: {len(backup_fake.requests)}")

        comet_fake.hang(5)  # every request to comet now waits 5 s before it is answered
        start = time.monotonic()
        answer = await ask("hi")
        elapsed = time.monotonic() - start
        print(f"comet hanging: {answer} after {elapsed:.2f}s (comet would have taken 5 s)")
        assert answer == "[backup] hi"
        assert elapsed < 3
        assert len(comet_fake.requests) == 2  # comet was asked too, it was just slower


if __name__ == "__main__":
    asyncio.run(main())
