"""Time budgets: a hanging provider cannot eat your time.

- ``attempt_timeout``: each attempt gets at most that long, then the next provider is tried;
- ``first_token_timeout``: a stream whose first chunk does not come in time fails over;
- ``deadline``: the budget of the whole call; when it runs out the call raises a
  ``FailoverError`` whose last entry is ``DeadlineExceeded``.

Run it: python examples/budgets.py
"""

import time
from collections.abc import Callable

from failover import DeadlineExceeded, FailoverError, Provider, with_fallback
from failover.testing import FakeProvider


def ask(question: str, client=None, stream: bool = False) -> str:
    reply = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": question}], stream=stream
    )
    if stream:
        return "".join(chunk.choices[0].delta.content or "" for chunk in reply)
    return reply.choices[0].message.content


def timed(label: str, call: Callable[..., str], *args: object, **kwargs: object) -> object:
    """Run ``call``; print and return its result (or its FailoverError), and how long it took."""
    start = time.monotonic()
    try:
        result: object = call(*args, **kwargs)
    except FailoverError as error:
        result = error
    elapsed = time.monotonic() - start
    print(f"{label:<24} {result} after {elapsed:.2f}s")
    assert elapsed < 4, "a hanging provider held the call up"
    return result


def main() -> None:
    with FakeProvider("comet") as comet_fake, FakeProvider("backup") as backup_fake:
        comet_fake.hang(5)  # every request to comet waits 5 s before it is answered
        comet = Provider("comet", base_url=comet_fake.base_url, api_key=comet_fake.api_key)
        backup = Provider("backup", base_url=backup_fake.base_url, api_key=backup_fake.api_key)

        quick = with_fallback(comet, backup, attempt_timeout=1)(ask)
        assert timed("attempt_timeout=1", quick, "hi") == "[backup] hi"

        streaming = with_fallback(comet, backup, first_token_timeout=1)(ask)
        assert timed("first_token_timeout=1", streaming, "hi", stream=True) == "[backup] hi"

        backup_fake.hang(5)  # now both hang
        budgeted = with_fallback(comet, backup, deadline=1.5)(ask)
        error = timed("deadline=1.5", budgeted, "hi")
        assert isinstance(error, FailoverError)
        assert isinstance(error.exceptions[-1], DeadlineExceeded)


if __name__ == "__main__":
    main()
