"""Shared fixtures: two fake providers on 127.0.0.1 and a clean breaker per test."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from failover import Breaker, Provider
from failover._activity import ACTIVITY
from failover._health import STORE
from failover._ownership import MEMORY
from failover.testing import FakeProvider


@pytest.fixture(scope="session", autouse=True)
def warm_openai() -> None:
    """openai imports each API's modules, and its async transport, on first use: some
    0.2 s in a fresh process, more on a busy machine, and inside the first attempt's
    timeout. Pay that once here, so that attempt_timeout times the providers only."""
    chat: Any = {"model": "fake-model", "messages": [{"role": "user", "content": "warm up"}]}
    responses: Any = {"model": "fake-model", "input": "warm up"}

    async def warm(client: openai.AsyncOpenAI) -> None:
        async with client:
            [_ async for _ in await client.chat.completions.create(**chat, stream=True)]
            [_ async for _ in await client.responses.create(**responses, stream=True)]
            await client.completions.create(model="fake-model", prompt="warm up")

    with FakeProvider("warm-up") as fake, fake.client() as client:
        client.chat.completions.create(**chat)
        client.responses.create(**responses)
        list(client.chat.completions.create(**chat, stream=True))
        list(client.responses.create(**responses, stream=True))
        list(client.completions.create(model="fake-model", prompt="warm up", stream=True))
        asyncio.run(warm(fake.async_client()))


@pytest.fixture(autouse=True)
def _fresh_breakers() -> Iterator[None]:
    # Breaker state, resource owners and the rolling counters are process-wide by
    # design; tests must not see each other's.
    STORE.clear()
    MEMORY.clear()
    ACTIVITY.clear()
    yield
    STORE.clear()
    MEMORY.clear()
    ACTIVITY.clear()


@pytest.fixture
def comet(fake_provider) -> FakeProvider:  # type: ignore[no-untyped-def]
    return fake_provider("comet")


@pytest.fixture
def backup(fake_provider) -> FakeProvider:  # type: ignore[no-untyped-def]
    return fake_provider("backup")


def provider(fake: FakeProvider, **kwargs: object) -> Provider:
    """A failover Provider that points at a fake one."""
    return Provider(fake.name, base_url=fake.base_url, api_key=fake.api_key, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def chain(comet: FakeProvider, backup: FakeProvider) -> tuple[Provider, Provider]:
    """comet, then backup."""
    return provider(comet), provider(backup)


#: No breaker and no retry: tests of plain failover should see every failure move on
#: at once, and no provider skipped.
NO_BREAKER: dict[str, object] = {"breaker": None, "retry": None}
FAST_BREAKER = Breaker(failures=2, cooldown=0.2, max_cooldown=0.8)

MESSAGES = [{"role": "user", "content": "hello"}]


def chat_text(client: Any, question: str = "hello") -> str:
    """A chat completion's text, from a sync client."""
    reply = client.chat.completions.create(
        model="fake-model", messages=[{"role": "user", "content": question}]
    )
    return str(reply.choices[0].message.content)


async def achat_text(client: Any, question: str = "hello") -> str:
    """A chat completion's text, from an async client."""
    reply = await client.chat.completions.create(
        model="fake-model", messages=[{"role": "user", "content": question}]
    )
    return str(reply.choices[0].message.content)
