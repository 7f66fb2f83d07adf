"""Retrofit failover onto existing code, three ways: the decorator, the drop-in client
and the block form. The primary ("comet") answers 503 to every request, so each
form gets its answer from the backup.

Run it: python examples/retrofit.py
"""

from failover import Provider, fallback_clients, with_fallback
from failover.testing import FakeProvider


def main() -> None:
    with FakeProvider("comet") as comet_fake, FakeProvider("backup") as backup_fake:
        comet_fake.fail(status=503)  # down until comet_fake.recover()
        comet = Provider("comet", base_url=comet_fake.base_url, api_key=comet_fake.api_key)
        backup = Provider("backup", base_url=backup_fake.base_url, api_key=backup_fake.api_key)

        # 1. The decorator: the whole body runs again with the next provider's client.
        @with_fallback(comet, backup)
        def ask(question: str, client=None) -> str:
            reply = client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": question}]
            )
            return reply.choices[0].message.content

        answer = ask("hello from the decorator")
        print("decorator:     ", answer)
        assert answer == "[backup] hello from the decorator"

        # 2. The drop-in client: every API call on it tries comet, then backup.
        with fallback_clients(comet, backup) as client:
            reply = client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hello from a client"}]
            )
        print("drop-in client:", reply.choices[0].message.content)
        assert reply.choices[0].message.content == "[backup] hello from a client"

        # 3. The block form: a whole block runs on one provider, again on the next on a fault.
        for attempt in fallback_clients(comet, backup):
            with attempt as client:
                models = client.models.list()
                first = client.chat.completions.create(
                    model=models.data[0].id, messages=[{"role": "user", "content": "a block"}]
                )
        print("block form:    ", first.choices[0].message.content)
        assert first.choices[0].message.content == "[backup] a block"


if __name__ == "__main__":
    main()
