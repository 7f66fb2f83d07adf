"""Providers: the Provider spec, names, the zero-config chain, client building, secrets."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import gc
import logging
import pickle
import shutil
import socket
import subprocess
import time
import traceback
from collections.abc import Callable
from typing import Any

import openai
import pytest
from conftest import MESSAGES, NO_BREAKER, achat_text, chat_text, provider

import failover
from failover import (
    FailoverError,
    MissingAPIKey,
    Provider,
    fallback_clients,
    with_fallback,
)
from failover._providers import COMETAPI_BASE_URL, default_providers, endpoint_for, endpoints
from failover.testing import FakeProvider


def chat(client: Any) -> str:
    reply = client.chat.completions.create(model="m", messages=MESSAGES)
    return str(reply.choices[0].message.content)


def asker(*providers: Any, **kwargs: Any) -> Callable[[], str]:
    @with_fallback(*providers, **kwargs)
    def ask(client: Any = None) -> str:
        return chat(client)

    return ask


# -- Provider ------------------------------------------------------------------


def test_provider_is_frozen() -> None:
    spec = Provider("comet", base_url="http://127.0.0.1:1/v1")
    assert dataclasses.is_dataclass(spec)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.name = "other"  # type: ignore[misc]


def test_provider_name_is_positional_and_the_rest_keyword_only() -> None:
    assert Provider("comet").name == "comet"
    assert Provider(name="comet").name == "comet"
    with pytest.raises(TypeError):
        Provider("comet", "http://127.0.0.1:1/v1")  # type: ignore[misc]


def test_provider_defaults() -> None:
    spec = Provider("comet")
    assert (spec.base_url, spec.api_key, spec.api_key_env) == (None, None, None)
    assert spec.max_retries == 0
    assert spec.timeout is None


def test_provider_repr_hides_the_api_key() -> None:
    text = repr(Provider("comet", base_url="http://h/v1", api_key="sk-HIDDEN-42"))
    assert "sk-HIDDEN-42" not in text
    assert "comet" in text


def test_provider_repr_hides_client_options_which_may_carry_credentials() -> None:
    headers = {"Authorization": "Bearer sk-HIDDEN-43"}
    text = repr(Provider("comet", client_options={"default_headers": headers}))
    assert "sk-HIDDEN-43" not in text


# -- names ---------------------------------------------------------------------


def test_a_user_client_is_named_after_its_host(comet: FakeProvider) -> None:
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{comet.port}/v1", api_key=comet.api_key)
    assert endpoint_for(client).name == f"127.0.0.1:{comet.port}"
    assert endpoint_for(comet.async_client()).name == f"127.0.0.1:{comet.port}"


def test_names_of_user_clients_appear_in_failover_error(
    comet: FakeProvider, backup: FakeProvider
) -> None:
    comet.fail(500)
    backup.fail(500)
    with pytest.raises(FailoverError) as info:
        asker(comet.client(), backup.client(), **NO_BREAKER)()
    names = [a.provider for a in info.value.attempts]
    assert names == [f"127.0.0.1:{comet.port}", f"127.0.0.1:{backup.port}"]


def test_duplicate_names_get_a_number(comet: FakeProvider) -> None:
    chain = endpoints([comet.client(), comet.client(), provider(comet), provider(comet)])
    host = f"127.0.0.1:{comet.port}"
    assert [e.name for e in chain] == [host, f"{host}#2", "comet", "comet#2"]


def test_endpoint_for_rejects_other_objects() -> None:
    with pytest.raises(TypeError, match=r"failover\.Provider"):
        endpoint_for("http://127.0.0.1:1/v1")  # type: ignore[arg-type]


# -- the zero-config chain -----------------------------------------------------


@pytest.fixture
def environ(comet: FakeProvider, backup: FakeProvider, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default chain's variables: CometAPI at the comet fake, OpenAI at the backup."""
    monkeypatch.setenv("COMETAPI_KEY", comet.api_key)
    monkeypatch.setenv("COMETAPI_BASE_URL", comet.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", backup.api_key)
    monkeypatch.setenv("OPENAI_BASE_URL", backup.base_url)


def auth(fake: FakeProvider) -> list[str]:
    return [r.headers.get("authorization", "") for r in fake.requests]


@pytest.mark.usefixtures("environ")
def test_default_chain_serves_from_cometapi(comet: FakeProvider, backup: FakeProvider) -> None:
    assert asker()() == "[comet] hello"
    assert auth(comet) == [f"Bearer {comet.api_key}"]
    assert backup.requests == []


@pytest.mark.usefixtures("environ")
def test_default_chain_falls_back_to_openai(comet: FakeProvider, backup: FakeProvider) -> None:
    comet.fail(503)
    assert asker(retry=None)() == "[backup] hello"
    assert auth(comet) == [f"Bearer {comet.api_key}"]
    assert auth(backup) == [f"Bearer {backup.api_key}"]


@pytest.mark.usefixtures("environ")
def test_default_chain_without_cometapi_key_goes_to_openai(
    comet: FakeProvider, backup: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("COMETAPI_KEY")
    assert asker()() == "[backup] hello"
    assert comet.requests == []
    assert auth(backup) == [f"Bearer {backup.api_key}"]


def test_provider_whose_client_cannot_be_built_fails_over(
    backup: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No api_key, no api_key_env and no OPENAI_API_KEY: openai refuses to build it.
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    keyless = Provider("keyless", base_url="http://127.0.0.1:9/v1")
    ask = asker(keyless, provider(backup), **NO_BREAKER)
    assert ask() == "[backup] hello"


@pytest.mark.usefixtures("environ")
def test_default_chain_without_any_key(
    comet: FakeProvider, backup: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("COMETAPI_KEY")
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(FailoverError) as info:
        asker()()
    first, second = info.value.exceptions
    assert isinstance(first, MissingAPIKey)
    assert first.variable == "COMETAPI_KEY"
    assert "COMETAPI_KEY" in str(first)
    assert isinstance(second, openai.OpenAIError)
    assert isinstance(second, MissingAPIKey)
    assert second.variable == "OPENAI_API_KEY"
    assert [a.provider for a in info.value.attempts] == ["cometapi", "openai"]
    assert comet.requests == backup.requests == []


def test_default_cometapi_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COMETAPI_BASE_URL", raising=False)
    cometapi, openai_ = default_providers()
    assert COMETAPI_BASE_URL == "https://api.cometapi.com/v1"
    assert (cometapi.name, cometapi.base_url, cometapi.api_key_env) == (
        "cometapi",
        "https://api.cometapi.com/v1",
        "COMETAPI_KEY",
    )
    assert (openai_.name, openai_.api_key_env) == ("openai", "OPENAI_API_KEY")


@pytest.mark.usefixtures("environ")
def test_default_chain_reads_base_urls_from_the_environment(
    comet: FakeProvider, backup: FakeProvider
) -> None:
    assert [p.base_url for p in default_providers()] == [comet.base_url, backup.base_url]
    assert [p.api_key for p in default_providers()] == [None, None]  # read when clients are built


# -- building clients ----------------------------------------------------------


def test_clients_are_built_lazily(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FAILOVER_TEST_UNSET_KEY", raising=False)
    endpoint = endpoint_for(Provider("lazy", api_key_env="FAILOVER_TEST_UNSET_KEY"))
    with pytest.raises(MissingAPIKey, match="FAILOVER_TEST_UNSET_KEY"):
        endpoint.sync_client()


def test_sync_client_is_built_once_and_reused(comet: FakeProvider) -> None:
    endpoint = endpoint_for(provider(comet))
    assert endpoint.sync_client() is endpoint.sync_client()
    assert isinstance(endpoint.sync_client(), openai.OpenAI)
    assert chat(endpoint.sync_client()) == "[comet] hello"


def test_decorated_calls_reuse_the_client(comet: FakeProvider) -> None:
    seen: list[Any] = []

    @with_fallback(provider(comet), **NO_BREAKER)
    def ask(client: Any = None) -> str:
        seen.append(client)
        return chat(client)

    assert [ask(), ask()] == ["[comet] hello"] * 2
    assert seen[0] is seen[1]


def test_built_clients_do_not_retry(comet: FakeProvider, backup: FakeProvider) -> None:
    assert endpoint_for(provider(comet)).sync_client().max_retries == 0
    comet.fail(500)
    assert asker(provider(comet), provider(backup), **NO_BREAKER)() == "[backup] hello"
    assert len(comet.requests) == 1


def test_provider_settings_reach_the_client(comet: FakeProvider) -> None:
    client = endpoint_for(provider(comet, timeout=4.0, max_retries=2)).sync_client()
    assert (client.timeout, client.max_retries) == (4.0, 2)
    assert str(client.base_url).rstrip("/") == comet.base_url


def test_async_clients_are_per_event_loop(comet: FakeProvider) -> None:
    endpoint = endpoint_for(provider(comet))

    async def use() -> tuple[Any, str]:
        client = endpoint.async_client()
        assert endpoint.async_client() is client  # reused within the loop
        try:
            return client, await client.chat.completions.create(model="m", messages=MESSAGES)
        finally:
            await endpoint.aclose()

    (first, reply1), (second, reply2) = asyncio.run(use()), asyncio.run(use())
    assert first is not second
    assert isinstance(first, openai.AsyncOpenAI)
    assert [reply1.choices[0].message.content, reply2.choices[0].message.content] == [
        "[comet] hello"
    ] * 2


def test_decorated_async_function_works_across_event_loops(comet: FakeProvider) -> None:
    @with_fallback(provider(comet), **NO_BREAKER)
    async def ask(client: Any = None) -> str:
        reply = await client.chat.completions.create(model="m", messages=MESSAGES)
        return str(reply.choices[0].message.content)

    assert [asyncio.run(ask()), asyncio.run(ask())] == ["[comet] hello"] * 2


# -- secrets -------------------------------------------------------------------

COMET_KEY = "sk-SECRET-comet-0123456789"
BACKUP_KEY = "sk-SECRET-backup-9876543210"


@pytest.fixture
def secret_fakes(fake_provider: Any) -> tuple[FakeProvider, FakeProvider]:
    return fake_provider("comet", api_key=COMET_KEY), fake_provider("backup", api_key=BACKUP_KEY)


def assert_no_secret(text: str) -> None:
    assert "SECRET" not in text, text
    assert COMET_KEY not in text
    assert BACKUP_KEY not in text


def test_reprs_never_show_keys(secret_fakes: tuple[FakeProvider, FakeProvider]) -> None:
    comet, backup = secret_fakes
    spec = provider(comet)
    assert_no_secret(repr(spec))
    assert_no_secret(repr(endpoint_for(spec)))
    assert_no_secret(repr(endpoint_for(backup.client())))
    assert_no_secret(repr(endpoints([spec, backup.client()])))


def test_logs_never_show_keys(
    secret_fakes: tuple[FakeProvider, FakeProvider], caplog: pytest.LogCaptureFixture
) -> None:
    comet, backup = secret_fakes
    comet.fail(500, times=1)
    caplog.set_level(logging.DEBUG)
    assert asker(provider(comet), provider(backup), **NO_BREAKER)() == "[backup] hello"
    assert any(r.name == "failover" for r in caplog.records)
    for record in caplog.records:
        assert_no_secret(record.getMessage())
    assert_no_secret(caplog.text)


def test_failover_error_never_shows_keys(secret_fakes: tuple[FakeProvider, FakeProvider]) -> None:
    comet, backup = secret_fakes
    comet.fail(500)
    backup.reset()
    with pytest.raises(FailoverError) as info:
        asker(provider(comet), provider(backup), **NO_BREAKER)()
    error = info.value
    assert_no_secret(str(error))
    assert_no_secret(repr(error))
    for exc in error.exceptions:
        for note in getattr(exc, "__notes__", []):
            assert_no_secret(note)
    assert_no_secret("".join(traceback.format_exception(error)))


# -- identity: one breaker per credential --------------------------------------------------

KEY_A = "sk-SECRET-key-A-0123456789"
KEY_B = "sk-SECRET-key-B-9876543210"


def two_keys(fake: FakeProvider, **kwargs: Any) -> tuple[Provider, Provider]:
    """Two keys of one account: same name and base URL; ``fake`` accepts the first only."""
    return (
        Provider(fake.name, base_url=fake.base_url, api_key=fake.api_key, **kwargs),
        Provider(fake.name, base_url=fake.base_url, api_key=KEY_B, **kwargs),
    )


def test_two_keys_of_one_provider_are_two_breaker_identities(comet: FakeProvider) -> None:
    first, second = two_keys(comet)
    assert endpoint_for(first).key != endpoint_for(second).key
    assert endpoint_for(first).key == endpoint_for(provider(comet)).key  # same key, same state
    assert endpoint_for(first).name == endpoint_for(second).name == "comet"


def keys_sent(fake: FakeProvider) -> list[str]:
    return [r.headers["authorization"].removeprefix("Bearer ") for r in fake.requests]


@pytest.mark.parametrize("form", ["sync", "async", "drop-in", "block"])
def test_a_rate_limited_key_does_not_skip_the_other_key(
    comet: FakeProvider, backup: FakeProvider, form: str
) -> None:
    limited, other = two_keys(comet)

    def ask(spec: Provider) -> str:
        chain = (spec, provider(backup))
        if form == "async":

            @with_fallback(*chain)
            async def ask_async(client: Any = None) -> str:
                reply = await client.chat.completions.create(model="m", messages=MESSAGES)
                return str(reply.choices[0].message.content)

            return asyncio.run(ask_async())
        if form == "drop-in":
            with fallback_clients(*chain) as client:
                return chat(client)
        if form == "block":
            for attempt in fallback_clients(*chain):
                with attempt as client:
                    return chat(client)
        return asker(*chain)()

    comet.fail(429, retry_after=30, times=1)  # opens the first key's breaker for 30 s
    assert ask(limited) == "[backup] hello"
    # The other key is tried (the fake refuses it: it accepts one key only), not skipped.
    assert ask(other) == "[backup] hello"
    assert keys_sent(comet) == [comet.api_key, KEY_B]
    assert ask(limited) == "[backup] hello"  # the first key's own breaker is still open
    assert keys_sent(comet) == [comet.api_key, KEY_B]


def test_keys_from_the_environment_are_told_apart(
    comet: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAILOVER_TEST_KEY_A", KEY_A)
    monkeypatch.setenv("FAILOVER_TEST_KEY_B", KEY_B)
    a = Provider("comet", base_url=comet.base_url, api_key_env="FAILOVER_TEST_KEY_A")
    b = Provider("comet", base_url=comet.base_url, api_key_env="FAILOVER_TEST_KEY_B")
    same = Provider("comet", base_url=comet.base_url, api_key=KEY_A)
    assert endpoint_for(a).key != endpoint_for(b).key
    assert endpoint_for(a).key == endpoint_for(same).key


def test_user_clients_with_different_keys_are_told_apart(comet: FakeProvider) -> None:
    a = openai.OpenAI(base_url=comet.base_url, api_key=KEY_A)
    b = openai.OpenAI(base_url=comet.base_url, api_key=KEY_B)
    assert endpoint_for(a).key != endpoint_for(b).key
    assert endpoint_for(a).name == endpoint_for(b).name


def test_no_key_in_breaker_keys_reprs_or_health(comet: FakeProvider) -> None:
    limited, other = two_keys(comet)
    limited = dataclasses.replace(limited, api_key=KEY_A)
    clients = [openai.OpenAI(base_url=comet.base_url, api_key=KEY_B)]
    chain = endpoints([limited, other, *clients])
    for spec in (limited, other):
        with pytest.raises(FailoverError):
            asker(spec)()  # both keys refused by the fake: state is recorded
    snapshot = failover.health()
    names = list(snapshot)
    assert len(names) == 2  # same name, two identities: told apart readably
    assert all(name.startswith("comet ") for name in names)
    for text in [*(e.key for e in chain), *(repr(e) for e in chain), repr(snapshot)]:
        assert_no_secret(text)
        assert "SECRET" not in text
    assert KEY_A not in repr(endpoint_for(limited).__dict__)


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
def test_no_key_in_redis(comet: FakeProvider, tmp_path: Any) -> None:
    redis = pytest.importorskip("redis")
    from failover.redis import RedisHealth

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    server = subprocess.Popen(
        [shutil.which("redis-server") or "", *args, "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    raw = redis.Redis(port=port, socket_timeout=1)
    try:
        for _ in range(200):  # up within 2 s
            with contextlib.suppress(redis.RedisError):
                if raw.ping():
                    break
            time.sleep(0.01)
        store = RedisHealth(f"redis://127.0.0.1:{port}/0", namespace="keys", timeout=1)
        for key in (KEY_A, KEY_B):
            with pytest.raises(FailoverError):
                asker(Provider("comet", base_url=comet.base_url, api_key=key), health=store)()
        stored = {k: raw.get(k) for k in raw.keys("*")}
        assert len(stored) == 2  # one record per key, under readable names
        assert_no_secret(repr(stored))
        assert_no_secret(repr(failover.health(store)))
        store.close()
    finally:
        raw.close()
        server.kill()
        server.wait()


# -- endpoints: one async client per live event loop ------------------------------------------


def test_async_clients_of_finished_loops_are_freed(comet: FakeProvider) -> None:
    fake = provider(comet)

    @with_fallback(fake, **NO_BREAKER)
    async def ask(client: Any = None) -> str:
        return await achat_text(client)

    for _ in range(3):
        assert asyncio.run(ask()) == "[comet] hello"
    gc.collect()
    # Only the last loop's client is kept, until a client for another loop is built.
    assert len(endpoint_for(fake)._async) <= 1


def test_block_form_reuses_clients_of_same_named_providers(comet: FakeProvider) -> None:
    first = provider(comet)
    second = provider(comet)  # same name, e.g. two keys for one gateway
    clients = fallback_clients(first, second, **NO_BREAKER)

    def second_client() -> Any:
        comet.fail(500, times=1)
        for attempt in clients:
            with attempt as client:
                chat_text(client)
                return client.__wrapped__
        raise AssertionError("no attempt")

    assert second_client() is second_client()


def test_a_provider_pickles_without_the_clients_built_for_it(comet: FakeProvider) -> None:
    spec = provider(comet, models={"m": "fake-model"})
    endpoint = endpoint_for(spec)
    assert chat(endpoint.sync_client()) == "[comet] hello"
    again = pickle.loads(pickle.dumps(spec))
    same = ("name", "base_url", "api_key", "models", "max_retries")
    assert [getattr(again, n) for n in same] == [getattr(spec, n) for n in same]
    assert endpoint_for(again) is not endpoint  # built anew where it is unpickled
    assert copy.copy(spec) is spec  # frozen: a copy is the provider, clients and all
    assert chat(endpoint_for(again).sync_client()) == "[comet] hello"
    endpoint_for(again).close()
