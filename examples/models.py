"""Per-provider model names: one model name in your code, each provider's own on the wire.

``Provider(..., models=...)`` rewrites the request's ``model`` for that provider only:
a mapping (names not in it pass unchanged) or a function of the name.

Run it: python examples/models.py
"""

from failover import Provider, fallback_clients, with_fallback
from failover.testing import FakeProvider


def main() -> None:
    with FakeProvider("comet") as comet_fake, FakeProvider("gateway") as gateway_fake:
        comet = Provider(
            "comet",
            base_url=comet_fake.base_url,
            api_key=comet_fake.api_key,
            models={"gpt-4o-mini": "gpt-4o-mini-2024-07-18"},
        )
        gateway = Provider(
            "gateway",
            base_url=gateway_fake.base_url,
            api_key=gateway_fake.api_key,
            models=lambda name: f"openai/{name}",
        )

        @with_fallback(comet, gateway)
        def ask(question: str, model: str, client=None) -> str:
            reply = client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": question}]
            )
            return reply.choices[0].message.content

        def sent_to(fake: FakeProvider) -> str:
            return fake.requests[-1].json["model"]

        ask("hi", model="gpt-4o-mini")
        print("comet received:  ", sent_to(comet_fake))  # mapped
        assert sent_to(comet_fake) == "gpt-4o-mini-2024-07-18"
        ask("hi", model="gpt-4o")
        print("comet received:  ", sent_to(comet_fake))  # not in the mapping: unchanged
        assert sent_to(comet_fake) == "gpt-4o"

        comet_fake.fail(status=503)  # comet is down: the gateway serves, with its own names
        assert ask("hi", model="gpt-4o-mini") == "[gateway] hi"
        print("gateway received:", sent_to(gateway_fake))
        assert sent_to(gateway_fake) == "openai/gpt-4o-mini"
        with fallback_clients(comet, gateway) as client:  # the drop-in client rewrites too
            client.embeddings.create(model="text-embedding-3-small", input="hello")
        print("gateway received:", sent_to(gateway_fake))
        assert sent_to(gateway_fake) == "openai/text-embedding-3-small"


if __name__ == "__main__":
    main()
