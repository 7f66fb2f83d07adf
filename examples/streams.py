"""Broken streams are failures, not short answers.

- In the decorator, a stream that ends early without a ``finish_reason`` (a silent
  cut) is a provider fault: the body runs again on the backup, the caller gets it all.
- On the drop-in client, a stream that breaks after chunks have reached you cannot fail
  over (you already have part of the answer): it raises ``StreamInterrupted``.

Run it: python examples/streams.py
"""

from failover import Provider, StreamInterrupted, current_provider, fallback_clients, with_fallback
from failover.testing import FakeProvider

MESSAGES = [{"role": "user", "content": "tell me a story"}]


def main() -> None:
    with FakeProvider("comet") as comet_fake, FakeProvider("backup") as backup_fake:
        comet = Provider("comet", base_url=comet_fake.base_url, api_key=comet_fake.api_key)
        backup = Provider("backup", base_url=backup_fake.base_url, api_key=backup_fake.api_key)

        comet_fake.truncate_stream(after=3)  # the role chunk, 2 pieces of text, then a clean end
        plain = comet_fake.client().chat.completions.create(
            model="m", messages=MESSAGES, stream=True
        )
        partial = "".join(chunk.choices[0].delta.content or "" for chunk in plain)
        print(f"a plain client returns: {partial!r} (and no error)")

        @with_fallback(comet, backup)
        def story(client=None) -> str:
            print(f"  reading the stream from {current_provider()}")
            stream = client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
            return "".join(chunk.choices[0].delta.content or "" for chunk in stream)

        answer = story()
        print(f"the decorator returns: {answer!r}")
        assert answer == "[backup] tell me a story"

        comet_fake.cut_stream(after=3)  # 3 chunks, then the connection is reset
        with fallback_clients(comet, backup) as client:
            stream = client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
            delivered = []
            try:
                for chunk in stream:
                    delivered.append(chunk.choices[0].delta.content)
            except StreamInterrupted as error:
                print(f"the drop-in client delivers {delivered}, then raises: {error}")
            else:
                raise AssertionError("a broken stream must not end quietly")
        assert delivered == ["", "[comet", "] tell"]


if __name__ == "__main__":
    main()
