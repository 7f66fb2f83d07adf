"""A user's client given to code of the other flavour: rebuilt in its own family, or refused.

The fake provider only knows Bearer auth, so Azure requests get a 401 there: the tests
read what was sent (``fake.requests[-1]``), which is what Azure itself would check.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx2
import openai
import pytest
from conftest import MESSAGES, NO_BREAKER

from failover import FailoverError, Provider, fallback_clients, with_fallback
from failover.testing import FakeProvider

API_VERSION = "2024-06-01"
FORMS = ("decorator", "drop-in", "block")


def run(flavour: str, form: str, client: Any, seen: list[Any]) -> str:
    """One chat call through ``client`` in code of ``flavour``, in ``form``."""
    if flavour == "async":
        return asyncio.run(run_async(form, client, seen))

    @with_fallback(client, **NO_BREAKER)
    def decorated(client: Any = None) -> Any:
        seen.append(client.__wrapped__)
        return client.chat.completions.create(model="gpt", messages=MESSAGES)

    if form == "decorator":
        return answer(decorated)
    if form == "drop-in":
        with fallback_clients(client, **NO_BREAKER) as proxy:
            seen.append(proxy._self_chain.endpoints[0].sync_client())
            return answer(lambda: proxy.chat.completions.create(model="gpt", messages=MESSAGES))

    def block() -> Any:
        for attempt in fallback_clients(client, **NO_BREAKER):
            with attempt as tracked:
                seen.append(tracked.__wrapped__)
                return tracked.chat.completions.create(model="gpt", messages=MESSAGES)
        raise AssertionError("unreachable: the block ends the loop or raises")

    return answer(block)


async def run_async(form: str, client: Any, seen: list[Any]) -> str:
    @with_fallback(client, **NO_BREAKER)
    async def decorated(client: Any = None) -> Any:
        seen.append(client.__wrapped__)
        return await client.chat.completions.create(model="gpt", messages=MESSAGES)

    async def block() -> Any:
        async for attempt in fallback_clients(client, **NO_BREAKER):
            async with attempt as tracked:
                seen.append(tracked.__wrapped__)
                return await tracked.chat.completions.create(model="gpt", messages=MESSAGES)
        raise AssertionError("unreachable: the block ends the loop or raises")

    try:
        if form == "decorator":
            reply = await decorated()
        elif form == "drop-in":
            async with fallback_clients(client, **NO_BREAKER) as proxy:
                seen.append(proxy._self_chain.endpoints[0].async_client())
                reply = await proxy.chat.completions.create(model="gpt", messages=MESSAGES)
        else:
            reply = await block()
    except FailoverError as error:
        return f"failed: {error.exceptions[-1]!r}"
    return str(reply.choices[0].message.content)


def answer(call: Callable[[], Any]) -> str:
    try:
        return str(call().choices[0].message.content)
    except FailoverError as error:
        return f"failed: {error.exceptions[-1]!r}"


def other(flavour: str) -> str:
    return "sync" if flavour == "async" else "async"


def azure(fake: FakeProvider, flavour: str, **kwargs: Any) -> Any:
    kind = openai.AzureOpenAI if flavour == "sync" else openai.AsyncAzureOpenAI
    settings: dict[str, Any] = {
        "azure_endpoint": f"http://127.0.0.1:{fake.port}",
        "azure_deployment": "dep",
        "api_version": API_VERSION,
        "max_retries": 0,
    }
    return kind(**{**settings, **kwargs})


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_azure_stays_azure_in_code_of_the_other_flavour(
    comet: FakeProvider, flavour: str, form: str
) -> None:
    seen: list[Any] = []
    given = azure(comet, other(flavour), api_key="azure-key-1")
    assert "401" in run(flavour, form, given, seen)  # the fake knows Bearer auth only
    sent = comet.requests[-1]
    assert sent.headers.get("api-key") == "azure-key-1"
    assert "authorization" not in sent.headers
    assert sent.path == f"/openai/deployments/dep/chat/completions?api-version={API_VERSION}"
    expected = openai.AsyncAzureOpenAI if flavour == "async" else openai.AzureOpenAI
    assert type(seen[-1]) is expected


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_azure_tokens_are_carried_over(comet: FakeProvider, flavour: str) -> None:
    fixed = azure(comet, other(flavour), azure_ad_token="token-1")
    run(flavour, "decorator", fixed, [])
    assert comet.requests[-1].headers["authorization"] == "Bearer token-1"
    assert "api-key" not in comet.requests[-1].headers

    provided = azure(comet, other(flavour), azure_ad_token_provider=lambda: "token-2")
    run(flavour, "decorator", provided, [])
    assert comet.requests[-1].headers["authorization"] == "Bearer token-2"


def test_an_azure_client_without_deployment_keeps_its_endpoint(comet: FakeProvider) -> None:
    given = azure(comet, "sync", api_key="azure-key-2", azure_deployment=None)
    run("async", "decorator", given, [])
    sent = comet.requests[-1]
    assert sent.path == f"/openai/deployments/gpt/chat/completions?api-version={API_VERSION}"
    assert sent.headers["api-key"] == "azure-key-2"


def test_a_sync_key_provider_serves_async_code(comet: FakeProvider) -> None:
    given = openai.OpenAI(base_url=comet.base_url, api_key=lambda: comet.api_key, max_retries=0)
    seen: list[Any] = []
    assert run("async", "decorator", given, seen) == "[comet] hello"
    assert type(seen[-1]) is openai.AsyncOpenAI


# -- refused up front, with what to pass instead ------------------------------------------


async def async_token() -> str:
    return "token"


async def async_key() -> str:
    return "key"


class CustomClient(openai.OpenAI):
    """A user's subclass: failover cannot know what it changes."""


def unrebuildable(fake: FakeProvider) -> dict[str, tuple[Any, str, str]]:
    """Clients that cannot be rebuilt faithfully: (client, flavour of code, in the message)."""
    url, key = fake.base_url, fake.api_key
    return {
        "async token provider": (
            azure(fake, "async", azure_ad_token_provider=async_token),
            "sync",
            "azure_ad_token_provider is async",
        ),
        "async key provider": (
            openai.AsyncOpenAI(base_url=url, api_key=async_key),
            "sync",
            "async key provider",
        ),
        "subclass": (CustomClient(base_url=url, api_key=key), "async", "CustomClient"),
        "own http_client": (
            openai.OpenAI(base_url=url, api_key=key, http_client=httpx2.Client()),
            "async",
            "http_client",
        ),
    }


CASES = ("async token provider", "async key provider", "subclass", "own http_client")


@pytest.mark.parametrize("case", CASES)
def test_a_client_that_cannot_be_rebuilt_is_refused_at_decoration(
    comet: FakeProvider, case: str
) -> None:
    client, flavour, reason = unrebuildable(comet)[case]
    wanted = "Pass an openai.Async" if flavour == "async" else "Pass an openai."

    async def ask_async(client: Any = None) -> None: ...

    def ask(client: Any = None) -> None: ...

    with pytest.raises(TypeError, match=reason) as info:
        with_fallback(client)(ask_async if flavour == "async" else ask)
    assert wanted in str(info.value)
    assert comet.requests == []


@pytest.mark.parametrize("case", CASES)
def test_a_client_that_cannot_be_rebuilt_is_refused_on_entering(
    comet: FakeProvider, case: str
) -> None:
    client, flavour, reason = unrebuildable(comet)[case]
    clients = fallback_clients(client)

    async def enter_async() -> None:
        with pytest.raises(TypeError, match=reason):
            async with clients:
                pass
        with pytest.raises(TypeError, match=reason):
            async for _ in clients:
                pass

    if flavour == "async":
        asyncio.run(enter_async())
    else:
        with pytest.raises(TypeError, match=reason), clients:
            pass
        with pytest.raises(TypeError, match=reason):
            for _ in clients:
                pass
    assert comet.requests == []


def test_a_client_of_the_right_flavour_is_never_refused(comet: FakeProvider) -> None:
    client, _, _ = unrebuildable(comet)["subclass"]
    assert run("sync", "decorator", client, []) == "[comet] hello"


def test_a_providers_http_client_of_the_wrong_flavour_is_refused(comet: FakeProvider) -> None:
    spec = Provider(
        "comet", base_url=comet.base_url, client_options={"http_client": httpx2.Client()}
    )
    with pytest.raises(TypeError, match=r"httpx2\.AsyncClient"):

        @with_fallback(spec)
        async def ask(client: Any = None) -> None: ...

    with pytest.raises(TypeError, match=r"httpx2\.AsyncClient"):
        asyncio.run(fallback_clients(spec).__aenter__())

    @with_fallback(spec)  # right for sync code
    def ask_sync(client: Any = None) -> None: ...
