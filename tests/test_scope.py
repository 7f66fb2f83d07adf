"""Time budgets only ever narrow a timeout (issue 9, item 1).

Every phase of a request gets the smallest of what applies: the client's or the
provider's own timeout, a per-call ``timeout=``, ``attempt_timeout``, what is left
of ``deadline`` and, for the first read of a stream, ``first_token_timeout``. Each
test has the primary hang far longer than the bound that should end its attempt,
and asserts that the call returned long before that hang would have ended.
"""

from __future__ import annotations

from typing import Any

import openai
import pytest
from conftest import NO_BREAKER, provider
from test_engine import HOW, asker, call, timed

from failover import Provider
from failover.testing import FakeProvider, unreachable

HANG = 5  # how long the primary hangs; every call must be back well before it ends
BACKUP = "[backup] hello"


def backed_up(primary: Any, backup: FakeProvider) -> tuple[Any, Provider]:
    return primary, provider(backup)


@pytest.mark.parametrize("budget", ["deadline", "attempt_timeout"])
@pytest.mark.parametrize("how", HOW)
def test_a_provider_timeout_is_kept_under_a_longer_budget(
    comet: FakeProvider, backup: FakeProvider, how: str, budget: str
) -> None:
    comet.hang(HANG)
    chain = backed_up(provider(comet, timeout=0.3), backup)
    answer, elapsed = timed(lambda: call(chain, how, **{budget: HANG}, **NO_BREAKER))
    assert answer == BACKUP
    assert elapsed < HANG / 2


@pytest.mark.parametrize("how", HOW)
def test_the_timeout_of_a_client_given_as_a_provider_is_kept(
    comet: FakeProvider, backup: FakeProvider, how: str
) -> None:
    # An openai.OpenAI: async code gets it rebuilt as an AsyncOpenAI, with its timeout.
    comet.hang(HANG)
    with comet.client(timeout=0.3) as given:
        chain = backed_up(given, backup)
        answer, elapsed = timed(lambda: call(chain, how, deadline=HANG, **NO_BREAKER))
    assert answer == BACKUP
    assert elapsed < HANG / 2


def with_options_asker(mode: str) -> Any:
    """A body that narrows its client with ``with_options(timeout=0.3)`` before asking."""
    ask = asker(mode)

    def narrowed(client: Any = None) -> Any:
        return ask(client.with_options(timeout=0.3))

    async def anarrowed(client: Any = None) -> Any:
        return await ask(client.with_options(timeout=0.3))

    return anarrowed if mode == "async" else narrowed


@pytest.mark.parametrize("how", HOW)
def test_with_options_timeout_in_the_body_is_kept(
    comet: FakeProvider, chain: tuple[Provider, Provider], how: str
) -> None:
    comet.hang(HANG)
    body = with_options_asker(how.split("-")[1])
    answer, elapsed = timed(lambda: call(chain, how, body=body, deadline=HANG, **NO_BREAKER))
    assert answer == BACKUP
    assert elapsed < HANG / 2


@pytest.mark.parametrize(
    "timeout",
    [0.3, openai.Timeout(HANG, read=0.3)],
    ids=["float", "Timeout-read"],
)
@pytest.mark.parametrize("how", HOW)
def test_a_per_call_timeout_is_kept_under_a_longer_budget(
    comet: FakeProvider, chain: tuple[Provider, Provider], how: str, timeout: Any
) -> None:
    comet.hang(HANG)
    request = {"timeout": timeout}
    settings = {"deadline": HANG, "attempt_timeout": HANG, **NO_BREAKER}
    answer, elapsed = timed(lambda: call(chain, how, request=request, **settings))
    assert answer == BACKUP
    assert elapsed < HANG / 2


@pytest.mark.parametrize(
    "timeout",
    [10, openai.Timeout(10, connect=5)],
    ids=["float", "Timeout"],
)
@pytest.mark.parametrize("how", HOW)
def test_attempt_timeout_clips_a_larger_per_call_timeout(
    comet: FakeProvider, chain: tuple[Provider, Provider], how: str, timeout: Any
) -> None:
    comet.hang(HANG)  # then it would answer: unclipped, the primary would serve late
    request = {"timeout": timeout}
    answer, elapsed = timed(
        lambda: call(chain, how, request=request, attempt_timeout=0.3, **NO_BREAKER)
    )
    assert answer == BACKUP
    assert elapsed < HANG / 2


@pytest.mark.parametrize("how", HOW)
def test_first_token_timeout_bounds_the_connect_of_a_stream(backup: FakeProvider, how: str) -> None:
    body = asker(how.split("-")[1], stream=True)
    with unreachable() as url:
        down = Provider("down", base_url=url, api_key="sk-down")
        settings = {"first_token_timeout": 0.3, **NO_BREAKER}
        answer, elapsed = timed(lambda: call((down, provider(backup)), how, body=body, **settings))
    assert answer == BACKUP
    assert elapsed < HANG / 2  # not openai's 600 s connect timeout


@pytest.mark.parametrize("how", ["decorator-sync", "proxy-async"])
def test_a_budget_alone_bounds_the_connect(backup: FakeProvider, how: str) -> None:
    with unreachable() as url:
        down = Provider("down", base_url=url, api_key="sk-down")
        chain = (down, provider(backup))
        answer, elapsed = timed(lambda: call(chain, how, attempt_timeout=0.3, **NO_BREAKER))
    assert answer == BACKUP
    assert elapsed < HANG / 2


def raw_asker(mode: str, view: str) -> Any:
    """A body that asks through a raw-response view (``view``: its path on the client)."""
    request = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}

    def create(client: Any) -> Any:
        for name in view.split("."):
            client = getattr(client, name)
        return client.create

    def ask(client: Any = None) -> str:
        if "streaming" in view:
            with create(client)(**request) as response:
                return str(response.parse().choices[0].message.content)
        return str(create(client)(**request).parse().choices[0].message.content)

    async def aask(client: Any = None) -> str:
        if "streaming" in view:
            async with create(client)(**request) as response:
                return str((await response.parse()).choices[0].message.content)
        raw = await create(client)(**request)
        return str(raw.parse().choices[0].message.content)

    return aask if mode == "async" else ask


VIEWS = [
    "chat.completions.with_raw_response",
    "with_raw_response.chat.completions",
    "chat.completions.with_streaming_response",
]


@pytest.mark.parametrize("view", VIEWS)
@pytest.mark.parametrize("how", HOW)
def test_a_provider_timeout_is_kept_through_raw_response_views(
    comet: FakeProvider, backup: FakeProvider, how: str, view: str
) -> None:
    comet.hang(HANG)
    chain = backed_up(provider(comet, timeout=0.3), backup)
    body = raw_asker(how.split("-")[1], view)
    answer, elapsed = timed(lambda: call(chain, how, body=body, deadline=HANG, **NO_BREAKER))
    assert answer == BACKUP
    assert elapsed < HANG / 2
