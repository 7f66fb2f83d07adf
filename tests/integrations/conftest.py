"""Fixtures of the framework tests: a failing primary and a healthy backup."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import failover
from failover.testing import FakeProvider

from ._kit import FAULTS, WEATHER, Reply, Scripted, Weather, options, provider


@pytest.fixture(params=list(FAULTS))
def fault(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def primary(fake_provider: Any, fault: str) -> FakeProvider:
    """The first provider, failing every request with ``fault``."""
    fake: FakeProvider = fake_provider("primary")
    FAULTS[fault](fake)
    return fake


@pytest.fixture
def backup(fake_provider: Any) -> FakeProvider:
    return fake_provider("backup")  # type: ignore[no-any-return]


@pytest.fixture
def client(primary: FakeProvider, backup: FakeProvider) -> Iterator[Any]:
    """``failover.OpenAI``: the primary, then the backup."""
    with failover.OpenAI(provider(primary), provider(backup), **options()) as client:
        yield client


@pytest.fixture
def aclient(primary: FakeProvider, backup: FakeProvider) -> Iterator[Any]:
    """``failover.AsyncOpenAI``, built before the test's loop runs (as at import time)."""
    client = failover.AsyncOpenAI(provider(primary), provider(backup), **options())
    yield client
    asyncio.run(client.close())  # the test's loop is gone: its clients close with it


@pytest.fixture
def scripted(fake_provider: Any, primary: FakeProvider) -> Iterator[Callable[[Reply], Scripted]]:
    """``scripted(reply)``: a :class:`Scripted` whose backup answers with ``reply=``."""
    made: list[Scripted] = []

    def make(reply: Reply) -> Scripted:
        backup = fake_provider("backup", reply=reply)
        providers = (provider(primary), provider(backup))
        made.append(
            Scripted(
                backup,
                failover.OpenAI(*providers, **options()),
                failover.AsyncOpenAI(*providers, **options()),
            )
        )
        return made[-1]

    yield make
    for each in made:
        each.client.close()
        asyncio.run(each.aclient.close())


@pytest.fixture
def weather(scripted: Callable[[Reply], Scripted], primary: FakeProvider) -> Weather:
    return Weather(scripted(WEATHER), primary, [])
