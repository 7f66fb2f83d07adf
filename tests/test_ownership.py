"""Provider-bound resources: an id goes back to the provider that made it.

Over real HTTP: two fake providers that mint ids with the real prefixes and answer 404
for ids they never made, driven by the real ``openai`` client through every form.
"""

from __future__ import annotations

import asyncio
import functools
import io
import time
from collections.abc import Awaitable, Callable
from typing import Any

import openai
import pytest
from conftest import NO_BREAKER, provider
from redis_servers import run_child, ticking
from test_redis import free_port, own_server, redis_server, stalled  # noqa: F401 - fixtures

from failover import (
    FailoverError,
    Outcome,
    ProviderBound,
    ProviderSkipped,
    fallback_clients,
    with_fallback,
)
from failover._ownership import MEMORY, Owner, Owners, creation, ids_in
from failover.testing import FakeProvider

FORMS = ["drop-in", "decorator", "block"]


def in_a_loop(test: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """An async test, run in a loop of its own."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


Chain = tuple[Any, ...]


def call(form: str, chain: Chain, body: Callable[[Any], Any], **options: Any) -> Any:
    """``body(client)`` through one of the three forms."""
    options = {**NO_BREAKER, **options}
    if form == "drop-in":
        with fallback_clients(*chain, **options) as client:
            return body(client)
    if form == "decorator":

        @with_fallback(*chain, **options)
        def run(client: Any = None) -> Any:
            return body(client)

        return run()
    for attempt in fallback_clients(*chain, **options):
        with attempt as client:
            result = body(client)
    return result


async def acall(
    form: str, chain: Chain, body: Callable[[Any], Awaitable[Any]], **options: Any
) -> Any:
    options = {**NO_BREAKER, **options}
    if form == "drop-in":
        async with fallback_clients(*chain, **options) as client:
            return await body(client)
    if form == "decorator":

        @with_fallback(*chain, **options)
        async def run(client: Any = None) -> Any:
            return await body(client)

        return await run()
    async for attempt in fallback_clients(*chain, **options):
        with attempt as client:
            result = await body(client)
    return result


def ask(client: Any, **kwargs: Any) -> Any:
    return client.responses.create(model="m", input="hello", **kwargs)


async def aask(client: Any, **kwargs: Any) -> Any:
    return await client.responses.create(model="m", input="hello", **kwargs)


def upload(client: Any) -> Any:
    return client.files.create(file=("in.jsonl", io.BytesIO(b"{}\n")), purpose="batch")


def batch(client: Any, file_id: str) -> Any:
    return client.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
    )


def posts(fake: FakeProvider, path: str) -> int:
    return sum(r.method == "POST" and r.path == path for r in fake.requests)


def bound_entries(error: FailoverError) -> list[ProviderBound]:
    return [e for e in error.exceptions if isinstance(e, ProviderBound)]


# -- a response chain -------------------------------------------------------------


@pytest.mark.parametrize("form", FORMS)
def test_a_response_chain_across_an_outage_of_its_owner(
    form: str, comet: FakeProvider, backup: FakeProvider, chain: Chain
) -> None:
    first = call(form, chain, ask)
    comet.fail(503)
    sent = len(backup.requests)
    with pytest.raises(FailoverError) as caught:
        call(form, chain, lambda c: ask(c, previous_response_id=first.id))
    assert len(backup.requests) == sent  # it cannot know the response: not asked
    assert isinstance(caught.value.exceptions[0], openai.InternalServerError)
    (bound,) = bound_entries(caught.value)
    assert isinstance(bound, ProviderSkipped)
    assert (bound.provider, bound.owner, bound.resource) == ("backup", "comet", first.id)
    assert bound.message == f"resource {first.id} belongs to provider 'comet'"
    comet.recover()
    reply = call(form, chain, lambda c: ask(c, previous_response_id=first.id))
    assert reply.output_text == "[comet] hello"


@pytest.mark.parametrize("form", FORMS)
@in_a_loop
async def test_a_response_chain_across_an_outage_of_its_owner_async(
    form: str, comet: FakeProvider, backup: FakeProvider, chain: Chain
) -> None:
    first = await acall(form, chain, aask)
    comet.fail(503)
    sent = len(backup.requests)
    with pytest.raises(FailoverError) as caught:
        await acall(form, chain, lambda c: aask(c, previous_response_id=first.id))
    assert len(backup.requests) == sent
    assert [b.provider for b in bound_entries(caught.value)] == ["backup"]


@pytest.mark.parametrize("form", FORMS)
def test_an_id_minted_on_the_backup_stays_there_after_the_primary_recovers(
    form: str, comet: FakeProvider, backup: FakeProvider, chain: Chain
) -> None:
    comet.fail(503)
    first = call(form, chain, ask)
    assert first.output_text == "[backup] hello"
    comet.recover()
    sent = len(comet.requests)
    events: list[Any] = []
    reply = call(
        form, chain, lambda c: ask(c, previous_response_id=first.id), on_attempt=events.append
    )
    assert reply.output_text == "[backup] hello"
    assert call(form, chain, lambda c: c.responses.retrieve(first.id)).id == first.id
    assert len(comet.requests) == sent  # not one request to the primary
    assert [(e.provider, e.outcome) for e in events][-1] == ("backup", Outcome.SUCCESS)


@pytest.mark.parametrize("form", FORMS)
@in_a_loop
async def test_an_id_minted_on_the_backup_stays_there_async(
    form: str, comet: FakeProvider, backup: FakeProvider, chain: Chain
) -> None:
    comet.fail(503)
    first = await acall(form, chain, aask)
    comet.recover()
    sent = len(comet.requests)
    reply = await acall(form, chain, lambda c: aask(c, previous_response_id=first.id))
    assert reply.output_text == "[backup] hello"
    assert len(comet.requests) == sent


# -- files, batches, nested references ------------------------------------------------


@pytest.mark.parametrize("form", FORMS)
def test_a_file_used_by_a_batch(
    form: str, comet: FakeProvider, backup: FakeProvider, chain: Chain
) -> None:
    comet.fail(503)
    made = call(form, chain, upload)
    assert made.id.startswith("file-")
    comet.recover()
    sent = len(comet.requests)
    started = call(form, chain, lambda c: batch(c, made.id))
    assert started.id.startswith("batch_")
    assert started.input_file_id == made.id
    assert call(form, chain, lambda c: c.files.retrieve(made.id)).id == made.id
    assert call(form, chain, lambda c: c.batches.cancel(started.id)).status == "cancelling"
    assert len(comet.requests) == sent
    assert [b["id"] for b in backup.made("batch")] == [started.id]


@in_a_loop
async def test_a_file_used_by_a_batch_async(
    comet: FakeProvider, backup: FakeProvider, chain: Chain
) -> None:
    comet.fail(503)
    async with fallback_clients(*chain, **NO_BREAKER) as client:
        made = await client.files.create(file=("a.jsonl", b"{}\n"), purpose="batch")
        comet.recover()
        sent = len(comet.requests)
        started = await client.batches.create(
            input_file_id=made.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
    assert started.input_file_id == made.id
    assert len(comet.requests) == sent


HISTORY = [{"role": "user" if i % 2 else "assistant", "content": f"turn {i}"} for i in range(50)]


def _chat_file_part(client: Any, file_id: str) -> Any:
    part = {"type": "file", "file": {"file_id": file_id}}
    messages = [*HISTORY, {"role": "user", "content": [{"type": "text", "text": "read"}, part]}]
    return client.chat.completions.create(model="m", messages=messages)


def _responses_file_part(client: Any, file_id: str) -> Any:
    content = [{"type": "input_text", "text": "read"}, {"type": "input_file", "file_id": file_id}]
    return client.responses.create(model="m", input=[{"role": "user", "content": content}])


def _vector_store_tool(client: Any, file_id: str) -> Any:
    store = client.vector_stores.create(name="docs", file_ids=[file_id])
    tool = {"type": "file_search", "vector_store_ids": [store.id]}
    return client.responses.create(model="m", input="find it", tools=[tool])


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("use", [_chat_file_part, _responses_file_part, _vector_store_tool])
def test_ids_in_nested_message_parts(
    form: str, use: Callable[[Any, str], Any], comet: FakeProvider, chain: Chain
) -> None:
    comet.fail(503)
    made = call(form, chain, upload)
    comet.recover()
    sent = len(comet.requests)
    call(form, chain, lambda c: use(c, made.id))
    assert len(comet.requests) == sent


# -- ids the library never saw ------------------------------------------------------------


@pytest.mark.parametrize("form", ["drop-in", "decorator"])
def test_an_unknown_id_is_learnt_from_the_provider_that_answered(
    form: str, comet: FakeProvider, backup: FakeProvider, chain: Chain
) -> None:
    outside = backup.client().responses.create(model="m", input="made elsewhere")
    reply = call(form, chain, lambda c: ask(c, previous_response_id=outside.id))
    assert reply.output_text == "[backup] hello"
    sent = len(comet.requests)
    call(form, chain, lambda c: ask(c, previous_response_id=outside.id))
    assert len(comet.requests) == sent  # the 404 was not asked for again


# -- calls that must not run twice ------------------------------------------------------


def _shared_file(comet: FakeProvider, backup: FakeProvider) -> str:
    """A file both providers know under one id, made outside failover: only the rule
    for calls that must not run twice keeps a second batch from starting."""
    made = upload(comet.client())
    backup._store(dict(comet._stored(made.id) or {}))
    return str(made.id)


AMBIGUOUS: dict[str, Callable[[FakeProvider], None]] = {
    "read timeout": lambda fake: fake.hang(2, times=1),
    "reset after sending": lambda fake: fake.reset(times=1),
}
CLEAR: dict[str, Callable[[FakeProvider], None]] = {
    "503": lambda fake: fake.fail(503, times=1),
    "429": lambda fake: fake.fail(429, times=1),
    "connect refused": lambda fake: fake.stop(),
}


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("fault", list(AMBIGUOUS))
def test_a_batch_create_whose_answer_was_lost_is_not_sent_again(
    form: str, fault: str, comet: FakeProvider, backup: FakeProvider
) -> None:
    file_id = _shared_file(comet, backup)
    AMBIGUOUS[fault](comet)
    chain = (provider(comet, timeout=0.5), provider(backup))
    with pytest.raises(openai.APIConnectionError) as caught:
        call(form, chain, lambda c: batch(c, file_id))
    assert posts(backup, "/v1/batches") == 0  # no second batch
    assert any("may have accepted it" in note for note in caught.value.__notes__)
    for clear in CLEAR.values():  # the provider refused, or never got it: failed over
        clear(comet)
        assert call(form, chain, lambda c: batch(c, file_id)).input_file_id == file_id
    assert len(backup.made("batch")) == len(CLEAR)


@pytest.mark.parametrize("fault", list(AMBIGUOUS))
@in_a_loop
async def test_a_batch_create_whose_answer_was_lost_is_not_sent_again_async(
    fault: str, comet: FakeProvider, backup: FakeProvider
) -> None:
    file_id = _shared_file(comet, backup)
    AMBIGUOUS[fault](comet)
    chain = (provider(comet, timeout=0.5), provider(backup))
    for hedge in (None, 0.05):  # nor is it hedged
        with pytest.raises(openai.APIConnectionError):
            await acall("drop-in", chain, lambda c: batch_async(c, file_id), hedge=hedge)
        AMBIGUOUS[fault](comet)
    assert posts(backup, "/v1/batches") == 0


async def batch_async(client: Any, file_id: str) -> Any:
    return await client.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
    )


# -- what is remembered, and what it costs ------------------------------------------------


def test_only_stored_resources_are_remembered(comet: FakeProvider, chain: Chain) -> None:
    messages = [{"role": "user", "content": "hi"}]
    call("drop-in", chain, lambda c: c.chat.completions.create(model="m", messages=messages))
    call("drop-in", chain, lambda c: c.embeddings.create(model="m", input="hi"))
    call("drop-in", chain, lambda c: ask(c, store=False))
    assert not MEMORY.may_know()  # nothing remembered: requests are not even scanned
    call("drop-in", chain, lambda c: ask(c))
    assert MEMORY.may_know()


@pytest.mark.parametrize("form", FORMS)
def test_a_chat_completion_stored_on_request_is_remembered(
    form: str, comet: FakeProvider, chain: Chain
) -> None:
    # chat.completions.create stores only with store=True: without it, the healthy path's
    # plain call; with it, the call whose answer is remembered as the provider's.
    messages = [{"role": "user", "content": "hi"}]

    def chat(client: Any, **kwargs: Any) -> Any:
        return client.chat.completions.create(model="m", messages=messages, **kwargs)

    call(form, chain, chat)
    assert not MEMORY.may_know()
    made = call(form, chain, lambda c: chat(c, store=True))
    assert MEMORY.known([made.id])[0] is not None


@pytest.mark.parametrize("form", FORMS)
@in_a_loop
async def test_a_chat_completion_stored_on_request_is_remembered_async(
    form: str, comet: FakeProvider, chain: Chain
) -> None:
    messages = [{"role": "user", "content": "hi"}]

    async def chat(client: Any, **kwargs: Any) -> Any:
        return await client.chat.completions.create(model="m", messages=messages, **kwargs)

    await acall(form, chain, chat)
    assert not MEMORY.may_know()
    made = await acall(form, chain, lambda c: chat(c, store=True))
    assert MEMORY.known([made.id])[0] is not None


def test_the_creating_calls_are_read_from_the_client() -> None:
    client = openai.OpenAI(api_key="unused", base_url="http://127.0.0.1:9/v1")
    makers = [
        (client.files, "create"),
        (client.batches, "create"),
        (client.vector_stores, "create"),
        (client.vector_stores.files, "create"),
        (client.conversations, "create"),
        (client.fine_tuning.jobs, "create"),
        (client.containers, "create"),
        (client.evals.runs, "create"),
        (client.uploads, "complete"),
        (client.responses, "create"),
        (client.responses.with_raw_response, "create"),
    ]
    assert all(creation(owner, name) is not None for owner, name in makers)
    stateless = [
        (client.embeddings, "create"),
        (client.moderations, "create"),
        (client.completions, "create"),
        (client.images, "generate"),
        (client.audio.speech, "create"),
        (client.files, "retrieve"),
    ]
    assert all(creation(owner, name) is None for owner, name in stateless)
    assert creation(client.chat.completions, "create").stores is False  # type: ignore[union-attr]
    assert creation(client.responses, "create").stores is True  # type: ignore[union-attr]
    once = [(client.batches, "create"), (client.uploads, "complete"), (client.evals.runs, "create")]
    assert all(creation(owner, name).once for owner, name in once)  # type: ignore[union-attr]


def test_ids_are_found_wherever_the_body_names_them() -> None:
    kwargs = {
        "previous_response_id": "resp_1",
        "conversation": {"id": "conv_1"},
        "messages": [{"role": "tool", "tool_call_id": "call_1", "content": "x"}],
        "tool_resources": {"code_interpreter": {"file_ids": ["file-1"]}},
        "input": [{"content": [{"type": "input_file", "file_id": "file-2"}]}],
    }
    assert sorted(ids_in(("vs_1",), kwargs)) == ["conv_1", "file-1", "file-2", "resp_1", "vs_1"]


def test_the_in_process_registry_is_bounded() -> None:
    owners, owner = Owners(size=2), Owner("http://127.0.0.1:9/v1 key-id:x", "comet")
    for resource in ("a", "b", "c"):
        owners.remember([resource], owner)
    assert owners.owners(["a", "b", "c"]) == [None, owner, owner]


# -- shared through Redis ------------------------------------------------------------------

CHILD = """
import io, json, sys
from failover import Provider, fallback_clients
from failover.redis import RedisHealth

config = json.loads(sys.argv[1])
providers = [Provider(p["name"], base_url=p["base_url"], api_key=p["api_key"])
             for p in config["providers"]]
health = RedisHealth(config["url"], namespace=config["ns"], timeout=5.0)
with fallback_clients(*providers, breaker=None, retry=None, health=health) as client:
    if config["file"] is None:
        made = client.files.create(file=("in.jsonl", io.BytesIO(b"{}")), purpose="batch")
        print(made.id)
    else:
        print(client.batches.create(
            input_file_id=config["file"], endpoint="/v1/chat/completions",
            completion_window="24h").id)
"""


def _child(url: str, ns: str, fakes: list[FakeProvider], file_id: str | None) -> str:
    chain = [{"name": f.name, "base_url": f.base_url, "api_key": f.api_key} for f in fakes]
    config = {"url": url, "ns": ns, "providers": chain, "file": file_id}
    return run_child(CHILD, config)


def test_two_processes_share_ownership_through_redis(
    redis_server: Any,  # noqa: F811 - the fixture
    comet: FakeProvider,
    backup: FakeProvider,
) -> None:
    comet.fail(503)
    file_id = _child(redis_server.url, "owners", [comet, backup], None)
    assert file_id.startswith("file-")
    comet.recover()
    sent = len(comet.requests)
    batch_id = _child(redis_server.url, "owners", [comet, backup], file_id)
    assert batch_id.startswith("batch_")
    assert len(comet.requests) == sent  # the second process knew the file is backup's
    assert [b["id"] for b in backup.made("batch")] == [batch_id]


async def _ask_created(client: Any, previous: str) -> str:
    return str((await aask(client, previous_response_id=previous)).output_text)


async def _ask_streamed(client: Any, previous: str) -> str:
    stream = await aask(client, previous_response_id=previous, stream=True)
    events = [e async for e in stream if e.type == "response.completed"]
    return str(events[0].response.output_text)


async def _ask_raw(client: Any, previous: str) -> str:
    raw = await client.responses.with_raw_response.create(
        model="m", input="hello", previous_response_id=previous
    )
    return str(raw.parse().output_text)


async def _ask_in_a_task(client: Any, previous: str) -> str:
    # The call is a coroutine, whether its ids are known or not: a task can run it.
    task = asyncio.create_task(
        client.responses.create(model="m", input="hello", previous_response_id=previous)
    )
    return str((await task).output_text)


async def _chat_naming_a_file(client: Any, file_id: str) -> str:
    # chat.completions.create is a coroutine method behind one of openai's sync decorators.
    part = {"type": "file", "file": {"file_id": file_id}}
    messages = [{"role": "user", "content": [{"type": "text", "text": "hello"}, part]}]
    reply = await client.chat.completions.create(model="m", messages=messages)
    return str(reply.choices[0].message.content).strip()  # the fake joins the parts


ASYNC_BODIES: dict[str, Callable[[Any, str], Awaitable[str]]] = {
    "create": _ask_created,
    "stream": _ask_streamed,
    "raw": _ask_raw,
    "task": _ask_in_a_task,
    "chat": _chat_naming_a_file,
}


@pytest.mark.parametrize("body", ASYNC_BODIES)
@pytest.mark.parametrize("form", FORMS)
def test_an_async_call_asks_redis_for_an_unseen_id_without_blocking_the_loop(
    form: str,
    body: str,
    own_server: Any,  # noqa: F811 - the fixture
    stalled: Callable[[float], None],  # noqa: F811 - the fixture
    comet: FakeProvider,
    backup: FakeProvider,
    chain: Chain,
) -> None:
    from failover.redis import RedisHealth

    def store() -> RedisHealth:  # each one a process's view: its memory knows nothing
        return RedisHealth(own_server.url, namespace="unseen", timeout=5.0)

    maker = store()
    comet.fail(503)
    made = call("drop-in", chain, ask, health=maker).id  # the backup's response
    comet.recover()
    maker.close()
    sent = len(comet.requests)
    other = store()

    async def main() -> tuple[str, float]:
        async with ticking() as ticker:
            stalled(1.0)  # the lookup waits for Redis: the loop must not
            reply = await acall(form, chain, lambda c: ASYNC_BODIES[body](c, made), health=other)
        return reply, ticker.late

    reply, late = asyncio.run(main())
    other.close()
    assert reply == "[backup] hello"
    assert len(comet.requests) == sent  # routed to the owner Redis named: nothing to comet
    assert late < 0.5  # the stall is 1 s


def test_a_looked_up_call_is_made_once_without_asking_again_then_forgets() -> None:
    from failover._ownership import LOOKED_UP, Unseen
    from failover._tracking import _looked_up

    asked: list[list[str]] = []

    class Shared(Owners):
        async def look_up(self, ids: Any) -> None:
            asked.append(list(ids))

    def again() -> Any:
        assert LOOKED_UP.get() == {"resp_1"}  # the call made again does not ask again
        return asyncio.sleep(0, "answered")

    def bound() -> Any:
        raise ProviderBound("comet", "backup", "resp_1")

    async def main() -> None:
        assert await _looked_up(Unseen(Shared(), ["resp_1"]), again) == "answered"
        with pytest.raises(ProviderBound):  # raised on await, before anything is sent
            await _looked_up(Unseen(Shared(), ["resp_1"]), bound)
        assert LOOKED_UP.get() == frozenset()

    asyncio.run(main())
    assert asked == [["resp_1"], ["resp_1"]]


@pytest.mark.parametrize("form", FORMS)
def test_a_helper_of_an_async_client_that_sends_nothing_still_runs_at_once(
    form: str,
    redis_server: Any,  # noqa: F811 - the fixture
    chain: Chain,
) -> None:
    from failover.redis import RedisHealth

    health = RedisHealth(redis_server.url, namespace="helpers", timeout=5.0)
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(int(time.time()))}
    headers["webhook-signature"] = "v1,bm90IGEgc2lnbmF0dXJl"

    async def check(client: Any) -> None:
        with pytest.raises(openai.InvalidWebhookSignatureError):  # checked, not deferred
            client.webhooks.verify_signature('{"id": "evt_1"}', headers, secret="whsec_eA==")

    asyncio.run(acall(form, chain, check, health=health))
    health.close()


def test_with_redis_down_ownership_stays_in_process(
    comet: FakeProvider, backup: FakeProvider, chain: Chain
) -> None:
    from failover.redis import RedisHealth

    health = RedisHealth(f"redis://127.0.0.1:{free_port()}/0", namespace="down", timeout=0.05)
    comet.fail(503)
    made = call("drop-in", chain, upload, health=health)
    comet.recover()
    sent = len(comet.requests)
    call("drop-in", chain, lambda c: batch(c, made.id), health=health)
    assert len(comet.requests) == sent


def _streamed_id(client: Any) -> str:
    stream = client.responses.create(model="m", input="hello", stream=True)
    ids = [e.response.id for e in stream if e.type == "response.completed"]
    return str(ids[0])


@pytest.mark.parametrize("form", FORMS)
def test_a_response_made_by_a_stream_is_remembered_as_its_providers(
    form: str, comet: FakeProvider, backup: FakeProvider, chain: Chain
) -> None:
    comet.fail(503)
    made = call(form, chain, _streamed_id)  # minted on the backup, in a stream
    comet.recover()
    sent = len(comet.requests)
    reply = call(form, chain, lambda c: ask(c, previous_response_id=made))
    assert reply.output_text == "[backup] hello"
    assert len(comet.requests) == sent  # not one request to the primary
