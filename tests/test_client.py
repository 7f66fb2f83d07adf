"""``failover.OpenAI`` / ``failover.AsyncOpenAI``: long-lived drop-in clients.

Each is built outside any event loop (as at import time) and kept; the async one is
then used from one ``asyncio.run()`` after another. The scenarios are those of the
``fallback_clients`` drop-in (tests/test_context.py), run through these clients.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
import warnings
from typing import Any

import openai
import pytest
from conftest import MESSAGES, NO_BREAKER, provider
from test_context import FAULTS, FLAVOURS, OPS, Flavour, done, hold_fault, op_chat, op_stream

import failover
from failover import AsyncOpenAI, FailoverError, OpenAI, Provider, StreamInterrupted
from failover.testing import FakeProvider

MODEL = "gpt-test"


@pytest.fixture(params=FLAVOURS, ids=lambda f: f.name)
def flavour(request: pytest.FixtureRequest) -> Flavour:
    return request.param  # type: ignore[no-any-return]


def make(f: Flavour, *providers: Any, **options: Any) -> Any:
    """The flavour's long-lived client, built here: outside any event loop."""
    return (AsyncOpenAI if f.is_async else OpenAI)(*providers, **options)


def run(f: Flavour, client: Any, scenario: Any) -> Any:
    async def main() -> Any:
        return await scenario(f, client)

    return f.run(main())


def close(f: Flavour, client: Any) -> None:
    async def main() -> None:
        await done(client.close())

    f.run(main())


def connections_to(fake: FakeProvider) -> int:
    """Established TCP connections from this machine to ``fake`` (client side)."""
    port = f"{fake.port:04X}"
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                if fields[2].endswith(f":{port}") and fields[3] == "01":
                    count += 1
    return count


# -- what it is ------------------------------------------------------------------


def test_it_is_an_openai_client(chain: tuple[Provider, Provider]) -> None:
    client = OpenAI(*chain)
    assert isinstance(client, openai.OpenAI)
    assert not isinstance(client, openai.AsyncOpenAI)
    client.close()


def test_async_one_is_an_async_openai_client_built_without_a_loop(
    chain: tuple[Provider, Provider],
) -> None:
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()
    client = AsyncOpenAI(*chain)
    assert isinstance(client, openai.AsyncOpenAI)
    assert not isinstance(client, openai.OpenAI)
    close(Flavour("async"), client)


def test_base_url_and_api_key_are_the_first_providers(
    flavour: Flavour, comet: FakeProvider, backup: FakeProvider
) -> None:
    client = make(flavour, provider(comet), provider(backup))
    assert str(client.base_url).rstrip("/") == comet.base_url
    assert client.api_key == comet.api_key  # as openai's own client has it
    assert comet.api_key not in repr(client)
    assert repr(client) == f"<failover {'Async' if flavour.is_async else ''}OpenAI [comet, backup]>"
    close(flavour, client)


def test_base_url_is_the_next_provider_when_the_first_has_no_key(
    flavour: Flavour, backup: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FAILOVER_TEST_NO_SUCH_KEY", raising=False)
    keyless = Provider(
        "keyless", base_url="http://127.0.0.1:9/v1", api_key_env="FAILOVER_TEST_NO_SUCH_KEY"
    )
    client = make(flavour, keyless, provider(backup), **NO_BREAKER)
    assert str(client.base_url).rstrip("/") == backup.base_url
    assert run(flavour, client, op_chat) == "[backup] hello"
    close(flavour, client)


# -- openai's own arguments are the providers' -------------------------------------


@pytest.mark.parametrize("kind", [OpenAI, AsyncOpenAI])
def test_openai_arguments_are_refused_with_the_provider_spelling(kind: Any) -> None:
    with pytest.raises(TypeError) as caught:
        kind(api_key="sk-secret-value", base_url="https://example.invalid/v1")
    message = str(caught.value)
    assert "Provider('name', api_key=..., base_url=...)" in message
    assert "sk-secret-value" not in message
    with pytest.raises(TypeError, match=r"client_options=\{'organization': \.\.\.\}"):
        kind(organization="org-1")
    with pytest.raises(TypeError, match="unexpected keyword argument 'no_such_option'"):
        kind(no_such_option=1)


def test_hedge_needs_the_async_client(chain: tuple[Provider, Provider]) -> None:
    with pytest.raises(TypeError, match="AsyncOpenAI"):
        OpenAI(*chain, hedge=0.1)
    close(Flavour("async"), AsyncOpenAI(*chain, hedge=0.1))


def test_options_are_checked_as_fallback_clients_checks_them(
    chain: tuple[Provider, Provider],
) -> None:
    with pytest.raises(ValueError, match="deadline"):
        OpenAI(*chain, deadline=0)
    with pytest.raises(ValueError, match="attempt_timeout"):
        AsyncOpenAI(*chain, attempt_timeout=-1)


# -- every call fails over, on every loop ----------------------------------------------


# Every kind of call on a 500; the other faults on a plain and a streamed call (the
# drop-in's own tests run the whole matrix).
_CASES = [(op, "fail") for op in OPS] + [
    (op, fault) for op in ("chat", "stream") for fault in FAULTS if fault in ("reset", "hang")
]


@pytest.mark.parametrize(("op", "fault"), _CASES)
def test_call_fails_over_to_backup(
    flavour: Flavour, comet: FakeProvider, backup: FakeProvider, op: str, fault: str
) -> None:
    scenario, expected = OPS[op]
    hold_fault(comet, fault)
    client = make(flavour, provider(comet), provider(backup), attempt_timeout=0.3, **NO_BREAKER)
    # Twice: the async flavour runs each on a new event loop.
    assert run(flavour, client, scenario) == expected
    assert run(flavour, client, scenario) == expected
    assert comet.requests, "the primary was tried first"
    close(flavour, client)


def test_every_provider_failing_raises_failover_error(
    flavour: Flavour, comet: FakeProvider, backup: FakeProvider
) -> None:
    comet.fail(503)
    backup.reset()
    client = make(flavour, provider(comet), provider(backup), **NO_BREAKER)
    with pytest.raises(FailoverError) as caught:
        run(flavour, client, op_chat)
    assert [a.provider for a in caught.value.attempts] == ["comet", "backup"]
    close(flavour, client)


def test_a_stream_cut_after_chunks_is_interrupted(
    flavour: Flavour, comet: FakeProvider, backup: FakeProvider
) -> None:
    comet.cut_stream(after=3)
    client = make(flavour, provider(comet), provider(backup), **NO_BREAKER)
    with pytest.raises(StreamInterrupted):
        run(flavour, client, op_stream)
    assert not backup.requests
    close(flavour, client)


def test_models_are_mapped_per_provider(
    flavour: Flavour, comet: FakeProvider, backup: FakeProvider
) -> None:
    comet.fail(503)
    client = make(
        flavour, provider(comet), provider(backup, models={MODEL: "backup-model"}), **NO_BREAKER
    )
    assert run(flavour, client, op_chat) == "[backup] hello"
    assert backup.requests[-1].json["model"] == "backup-model"
    close(flavour, client)


def test_health_is_shared_with_every_chain_naming_the_providers(
    comet: FakeProvider, backup: FakeProvider
) -> None:
    comet.fail(503)
    primary, secondary = provider(comet), provider(backup)
    breaker = failover.Breaker(failures=1, cooldown=60)
    client = OpenAI(primary, secondary, breaker=breaker)
    assert run(Flavour("sync"), client, op_chat) == "[backup] hello"
    assert failover.health()["comet"]["state"] is failover.State.OPEN
    tried = len(comet.requests)

    @failover.with_fallback(primary, secondary, breaker=breaker)
    def ask(client: Any = None) -> str:
        reply = client.chat.completions.create(model=MODEL, messages=MESSAGES)
        return reply.choices[0].message.content  # type: ignore[no-any-return]

    assert ask() == "[backup] hello"
    assert len(comet.requests) == tried, "the decorator skipped the open primary"
    client.close()


# -- with_options, copy, raw and streaming responses -------------------------------


@pytest.mark.parametrize("name", ["with_options", "copy"])
def test_a_copy_fails_over_with_its_options(
    flavour: Flavour, comet: FakeProvider, backup: FakeProvider, name: str
) -> None:
    comet.hang(5)
    client = make(flavour, provider(comet), provider(backup), **NO_BREAKER)
    copy = getattr(client, name)(timeout=0.3, max_retries=0)
    assert isinstance(copy, openai.AsyncOpenAI if flavour.is_async else openai.OpenAI)
    started = time.monotonic()
    assert run(flavour, copy, op_chat) == "[backup] hello"
    assert time.monotonic() - started < 4
    assert run(flavour, copy.with_options(default_headers={"x-n": "2"}), op_chat)
    assert backup.requests[-1].headers["x-n"] == "2"
    close(flavour, client)


@pytest.mark.parametrize("option", ["api_key", "base_url", "organization"])
def test_a_copy_cannot_point_every_provider_at_one_place(
    flavour: Flavour, chain: tuple[Provider, Provider], option: str
) -> None:
    client = make(flavour, *chain)
    with pytest.raises(TypeError, match=f"set {option}= on each provider"):
        client.with_options(**{option: "sk-or-url"})
    close(flavour, client)


async def op_client_raw_response(f: Flavour, client: Any) -> str:
    raw = await done(
        client.with_raw_response.chat.completions.create(model=MODEL, messages=MESSAGES)
    )
    assert raw.status_code == 200
    return (await done(raw.parse())).choices[0].message.content  # type: ignore[no-any-return]


async def op_client_streaming_response(f: Flavour, client: Any) -> str:
    create = client.with_streaming_response.chat.completions.create
    async with f.enter(create(model=MODEL, messages=MESSAGES)) as response:
        return (await done(response.parse())).choices[0].message.content  # type: ignore[no-any-return]


@pytest.mark.parametrize("op", [op_client_raw_response, op_client_streaming_response])
def test_client_level_raw_forms_fail_over(
    flavour: Flavour, comet: FakeProvider, backup: FakeProvider, op: Any
) -> None:
    comet.fail(503)
    client = make(flavour, provider(comet), provider(backup), **NO_BREAKER)
    try:
        assert run(flavour, client, op) == "[backup] hello"
    finally:
        close(flavour, client)


# -- lifetime ---------------------------------------------------------------------


def _built(client: Any) -> list[Any]:
    """The clients the drop-in built for its providers (sync ones, and this loop's)."""
    endpoints = client._self_chain.endpoints
    return [e._sync for e in endpoints if e._sync is not None] + [
        c for e in endpoints for c in e._async._values.values()
    ]


def test_close_closes_what_it_built(
    flavour: Flavour, comet: FakeProvider, backup: FakeProvider
) -> None:
    comet.fail(503)
    client = make(flavour, provider(comet), provider(backup), **NO_BREAKER)

    async def main() -> list[Any]:
        assert await op_chat(flavour, client) == "[backup] hello"
        built = _built(client)
        assert connections_to(backup) == 1
        await done(client.close())
        return built

    built = flavour.run(main())
    assert len(built) == 2
    assert all(c.is_closed() for c in built)
    assert client.is_closed()
    assert connections_to(backup) == 0


def test_close_leaves_the_clients_you_passed_open(
    flavour: Flavour, comet: FakeProvider, backup: FakeProvider
) -> None:
    comet.fail(503)
    kind = "async_client" if flavour.is_async else "client"
    users = (getattr(comet, kind)(), getattr(backup, kind)())
    client = make(flavour, *users, **NO_BREAKER)

    async def main() -> list[bool]:
        assert await op_chat(flavour, client) == "[backup] hello"
        await done(client.close())
        still_open = [not c.is_closed() for c in users]
        for user_client in users:
            await done(user_client.close())
        return still_open

    assert flavour.run(main()) == [True, True]


def test_closing_a_copy_closes_the_original(
    flavour: Flavour, comet: FakeProvider, backup: FakeProvider
) -> None:
    # As with openai's own copies, which share their original's transport.
    client = make(flavour, provider(comet), provider(backup), **NO_BREAKER)
    copy = client.with_options(timeout=5)

    async def main() -> None:
        assert await op_chat(flavour, copy) == "[comet] hello"
        await done(copy.close())

    flavour.run(main())
    assert client.is_closed()
    assert connections_to(comet) == 0


def test_with_block_closes_it(comet: FakeProvider, backup: FakeProvider) -> None:
    with OpenAI(provider(comet), provider(backup)) as client:
        assert isinstance(client, openai.OpenAI)
        assert run(Flavour("sync"), client, op_chat) == "[comet] hello"
        assert connections_to(comet) == 1
    assert client.is_closed()
    assert connections_to(comet) == 0


@pytest.mark.asyncio
async def test_async_with_block_closes_it(comet: FakeProvider, backup: FakeProvider) -> None:
    async with AsyncOpenAI(provider(comet), provider(backup)) as client:
        assert isinstance(client, openai.AsyncOpenAI)
        assert await op_chat(Flavour("async"), client) == "[comet] hello"
        assert connections_to(comet) == 1
    assert client.is_closed()
    assert connections_to(comet) == 0


def test_an_unclosed_client_is_collected_with_its_connections(
    comet: FakeProvider, backup: FakeProvider
) -> None:
    # Nothing more than a plain openai.OpenAI leaks: its connections close when it goes.
    plain = comet.client()
    plain.chat.completions.create(model=MODEL, messages=MESSAGES)
    client = OpenAI(provider(comet), provider(backup))
    assert run(Flavour("sync"), client, op_chat) == "[comet] hello"
    assert connections_to(comet) == 2
    del plain, client
    gc.collect()
    assert connections_to(comet) == 0


# -- one client per live loop ------------------------------------------------------


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_asyncio_run_after_asyncio_run_leaves_nothing_behind(
    comet: FakeProvider, backup: FakeProvider, caplog: pytest.LogCaptureFixture
) -> None:
    comet.fail(503)
    client = AsyncOpenAI(provider(comet), provider(backup), **NO_BREAKER)
    assert run(Flavour("async"), client, op_chat) == "[backup] hello"
    gc.collect()
    before = _fds()
    with (
        warnings.catch_warnings(record=True) as caught,
        caplog.at_level(logging.WARNING, "asyncio"),
    ):
        warnings.simplefilter("always")
        for _ in range(20):  # each new loop builds its clients (tens of ms each)
            assert run(Flavour("async"), client, op_chat) == "[backup] hello"
        assert _fds() <= before + 2, "file descriptors grow with each closed loop"
        assert connections_to(backup) <= 1
        del client
        gc.collect()
    assert not [r for r in caplog.records if r.name == "asyncio"]
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


@pytest.fixture(scope="module")
def long_lived() -> Any:
    """One AsyncOpenAI for the whole module, built with no loop running."""
    with FakeProvider("comet") as comet, FakeProvider("backup") as backup:
        comet.fail(503)
        yield AsyncOpenAI(provider(comet), provider(backup), **NO_BREAKER), backup


@pytest.mark.asyncio
@pytest.mark.parametrize("test", [1, 2, 3])
async def test_one_client_serves_each_tests_own_loop(long_lived: Any, test: int) -> None:
    client, _ = long_lived
    assert await op_chat(Flavour("async"), client) == "[backup] hello"
    assert await op_stream(Flavour("async"), client) == "[backup] hello"


def test_a_copy_given_its_own_transport_keeps_each_providers(
    flavour: Flavour, comet: FakeProvider, backup: FakeProvider
) -> None:
    # pydantic-ai's ModelSettings(max_retries=...) round trip: the template's transport
    # (which never sends) must not become every provider's.
    comet.fail(503)
    client = make(flavour, provider(comet), provider(backup), **NO_BREAKER)
    copy = client.with_options(http_client=client._client, max_retries=0)
    for _ in range(2):  # the async flavour: on two loops, one after the other
        assert run(flavour, copy, op_chat) == "[backup] hello"
    # The backup was reached on a transport of its own, not on the template's.
    assert f":{backup.port}" not in repr(client._client._transport._pool.connections)
    close(flavour, client)
