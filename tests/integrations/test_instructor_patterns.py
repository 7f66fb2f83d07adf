"""instructor's two patterns, reproduced: instructor itself cannot be installed beside
this project's openai (it pins ``jiter<0.15``; openai 3.57 needs ``jiter>=0.16``).

1. It picks its streaming path by ``isinstance(stream, collections.abc.AsyncIterator)``.
2. It raises its own retry error ``from`` the provider's.
"""

from __future__ import annotations

import collections.abc
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

import failover
from failover.testing import FakeProvider

from ._kit import MODEL, caused_by_failover, options, provider

MESSAGES = [{"role": "user", "content": "hello"}]


class InstructorRetryException(Exception):
    """Stands for instructor's: raised ``from`` the last error of its retry loop."""


def create_with_retries(client: Any, retries: int = 2) -> Any:
    """instructor's retry loop around one create() call."""
    for _ in range(retries):
        try:
            return client.chat.completions.create(model=MODEL, messages=MESSAGES)
        except Exception as exc:  # the last error of any kind is its cause
            last = exc
    raise InstructorRetryException(f"failed after {retries} attempts") from last


def texts(stream: Any) -> Iterator[str]:
    for chunk in stream:
        if chunk.choices:
            yield chunk.choices[0].delta.content or ""


async def atexts(stream: Any) -> AsyncIterator[str]:
    async for chunk in stream:
        if chunk.choices:
            yield chunk.choices[0].delta.content or ""


def partial(stream: Any) -> Any:
    """instructor's choice of path, by the stream's type."""
    if isinstance(stream, collections.abc.AsyncIterator):
        return atexts(stream)
    return texts(stream)


def test_a_sync_stream_takes_the_sync_path(client: Any) -> None:
    stream = client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    assert not isinstance(stream, collections.abc.AsyncIterator)
    assert "".join(partial(stream)) == "[backup] hello"


@pytest.mark.asyncio
async def test_an_async_stream_takes_the_async_path(aclient: Any) -> None:
    stream = await aclient.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    assert not isinstance(stream, collections.abc.Iterator)
    assert "".join([t async for t in partial(stream)]) == "[backup] hello"


def test_retry_error_through_the_drop_in(client: Any, backup: FakeProvider) -> None:
    # The drop-in fails over inside each create(): instructor never sees the primary fail.
    assert create_with_retries(client).choices[0].message.content == "[backup] hello"
    backup.fail(503)
    with pytest.raises(InstructorRetryException) as caught:
        create_with_retries(client)
    assert [a.provider for a in caused_by_failover(caught.value).attempts] == [
        "primary",
        "backup",
    ]


def test_retry_error_in_the_decorator(primary: FakeProvider, backup: FakeProvider) -> None:
    @failover.with_fallback(provider(primary), provider(backup), **options())
    def ask(client: Any = None) -> str:
        reply = create_with_retries(client)
        return reply.choices[0].message.content  # type: ignore[no-any-return]

    assert ask() == "[backup] hello"


def test_retry_error_in_the_block_form(primary: FakeProvider, backup: FakeProvider) -> None:
    for attempt in failover.fallback_clients(provider(primary), provider(backup), **options()):
        with attempt as client:
            reply = create_with_retries(client)
    assert reply.choices[0].message.content == "[backup] hello"
