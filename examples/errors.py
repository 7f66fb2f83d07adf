"""When every provider fails: one FailoverError that tells the whole story.

The primary ("comet") answers 503 and the backup resets the connection. The error
is an ExceptionGroup of both original errors, in attempt order; ``.attempts`` says
which provider raised each one, and how long it took. On Python >= 3.11 you can also
catch parts of it with ``except* openai.APIStatusError``.

Run it: python examples/errors.py
"""

import openai

from failover import FailoverError, Provider, with_fallback
from failover.testing import FakeProvider


def report(error: FailoverError) -> tuple[list[str], list[str]]:
    """Print what happened; return which providers failed over HTTP, and which otherwise."""
    print(error)  # all providers failed (comet: InternalServerError 503; backup: ...)
    for attempt in error.attempts:
        print(f"  {attempt.provider}: {attempt.error!r}")
        print(f"    {attempt.error.__notes__[-1]}")  # each error is noted with its provider
    # Split the group by error type: each part keeps the attempts of its errors.
    http_errors, other_errors = error.split(openai.APIStatusError)
    http = [attempt.provider for attempt in http_errors.attempts]
    other = [attempt.provider for attempt in other_errors.attempts]
    print("HTTP errors from:", http, "- other errors from:", other)
    return http, other


def main() -> None:
    with FakeProvider("comet") as comet_fake, FakeProvider("backup") as backup_fake:
        comet_fake.fail(status=503)
        backup_fake.reset()  # TCP reset, no response at all
        comet = Provider("comet", base_url=comet_fake.base_url, api_key=comet_fake.api_key)
        backup = Provider("backup", base_url=backup_fake.base_url, api_key=backup_fake.api_key)

        @with_fallback(comet, backup)
        def ask(question: str, client=None) -> str:
            reply = client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": question}]
            )
            return reply.choices[0].message.content

        try:
            ask("hello")
        except FailoverError as error:
            http, other = report(error)
        else:
            raise AssertionError("expected a FailoverError")
        # Each provider was retried once (a 503 and a reset are transient): two attempts each.
        assert (http, other) == (["comet", "comet"], ["backup", "backup"])


if __name__ == "__main__":
    main()
