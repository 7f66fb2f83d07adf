"""Providers: what the user names, and the endpoints that build and cache clients."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import os
import threading
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Mapping
from dataclasses import KW_ONLY, dataclass, field, fields
from typing import Any, Generic, TypeVar, Union
from urllib.parse import urlsplit

import openai

from ._clients import WARM_UP, build_client, check_http_client, check_rebuildable, rebuild
from ._errors import MissingAPIKey

COMETAPI_BASE_URL = "https://api.cometapi.com/v1"

#: A model-name rewrite: a mapping (names not in it pass unchanged) or a function.
ModelMap = Union[Mapping[str, str], Callable[[str], str]]
ProviderLike = Union["Provider", openai.OpenAI, openai.AsyncOpenAI]
T = TypeVar("T")


@dataclass(frozen=True, slots=True, eq=False)
class Provider:
    """How to reach one OpenAI-compatible provider; failover builds its clients.

    ``api_key`` wins over ``api_key_env``; with neither, the ``openai`` package's own
    default (``OPENAI_API_KEY``) applies. Built clients default to ``max_retries=0``:
    moving on to the next provider is the retry.
    """

    name: str
    _: KW_ONLY
    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    api_key_env: str | None = None
    timeout: float | None = None
    max_retries: int = 0
    models: ModelMap | None = None
    client_options: Mapping[str, Any] = field(default_factory=dict, repr=False)  # may hold secrets
    # The clients built for this provider, shared by every chain that names it.
    _failover_endpoint: Endpoint | None = field(default=None, init=False, repr=False)

    def __copy__(self) -> Provider:
        return self  # frozen: a copy is the same provider, with the same clients

    def __getstate__(self) -> list[Any]:
        # Pickled as how to reach the provider, without the clients built for it (they
        # hold connections): where it is unpickled, it builds its own.
        return [None if f.name == _ENDPOINT else getattr(self, f.name) for f in fields(self)]


_ENV = ("COMETAPI_BASE_URL", "COMETAPI_KEY", "OPENAI_BASE_URL", "OPENAI_API_KEY")


def default_providers() -> tuple[Provider, ...]:
    """The zero-config chain: CometAPI, then OpenAI, both from the environment."""
    return _default_providers(tuple(os.environ.get(name) for name in _ENV))


@functools.lru_cache(maxsize=8)
def _default_providers(env: tuple[str | None, ...]) -> tuple[Provider, ...]:
    # Cached per environment, so that calls with no providers reuse one set of clients.
    comet_url, _, openai_url, _ = env
    return (
        Provider("cometapi", base_url=comet_url or COMETAPI_BASE_URL, api_key_env="COMETAPI_KEY"),
        Provider("openai", base_url=openai_url, api_key_env="OPENAI_API_KEY"),
    )


def _host_name(base_url: object) -> str:
    parts = urlsplit(str(base_url))
    return parts.netloc.rpartition("@")[2] or str(base_url)


# -- credential fingerprints -------------------------------------------------------------

# A fixed key: the digest must be the same in every process sharing Redis, and API keys
# are long random strings, so the digest cannot be searched back to one.
_FINGERPRINT_KEY = b"failover: breaker identity of a credential"
_AUTH_HEADERS = frozenset({"authorization", "api-key"})


def fingerprint(*credentials: object) -> str:
    """A short digest standing for ``credentials`` in breaker keys; never the key itself.

    A callable credential (a key or token provider) counts by its qualified name.
    """
    texts = [
        f"callable {getattr(c, '__module__', '')}.{getattr(c, '__qualname__', type(c).__name__)}"
        if callable(c)
        else str(c)
        for c in credentials
        if c
    ]
    if not texts:
        return "none"
    digest = hashlib.blake2b("\0".join(texts).encode(), digest_size=6, key=_FINGERPRINT_KEY)
    return digest.hexdigest()


def _auth_values(headers: object) -> list[object]:
    if not isinstance(headers, Mapping):
        return []
    return [value for name, value in headers.items() if str(name).lower() in _AUTH_HEADERS]


# -- one value per event loop ------------------------------------------------------------


class PerLoop(Generic[T]):
    """One value per running asyncio event loop: built there on first use, and closed
    inside that loop when it shuts down (``asyncio.run``, ``asyncio.Runner``,
    pytest-asyncio: whatever calls ``loop.shutdown_asyncgens()``).

    A loop closed without that call cannot run a close any more: its values are dropped
    when the next value for another loop is built. In a forked child every value is
    dropped (the parent's loops do not run there).
    """

    def __init__(self, close: Callable[[T], Awaitable[object]]) -> None:
        self._close_value = close
        # A plain dict: the lookup is on every call. Values keep their loop alive (their
        # connections hold it), so weak keys would never die by themselves anyway.
        self._values: dict[asyncio.AbstractEventLoop, T] = {}
        _PER_LOOP.add(self)

    def get(self, build: Callable[[], T]) -> T:
        """The running loop's value; ``build()`` makes it on first use in this loop."""
        loop = asyncio.get_running_loop()
        value = self._values.get(loop)
        if value is None:
            # A loop runs in one thread and build() does not await: no other caller can
            # build for this loop meanwhile.
            _drop_closed_loops()
            value = self._values[loop] = build()
            _watch(loop).owners.add(self)
        return value

    def has(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Whether ``loop`` has its value already (safe from any thread)."""
        return loop in self._values

    def pop(self) -> T | None:
        """Take the running loop's value out (the caller closes it)."""
        return self._values.pop(asyncio.get_running_loop(), None)

    def __len__(self) -> int:
        return len(self._values)

    async def _close(self, loop: asyncio.AbstractEventLoop) -> None:
        value = self._values.pop(loop, None)
        if value is not None:
            # A connection that broke meanwhile may fail to close: it is gone either way.
            with contextlib.suppress(Exception):
                await self._close_value(value)

    def _drop(self, loop: asyncio.AbstractEventLoop | None) -> None:
        if loop is None:
            self._values.clear()
        else:
            self._values.pop(loop, None)


class _LoopWatch:
    """Closes the values of every ``PerLoop`` for one loop when that loop shuts down."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.owners: weakref.WeakSet[PerLoop[Any]] = weakref.WeakSet()
        self.done = bool(getattr(loop, "_asyncgens_shutdown_called", False))  # too late to hook
        self._hook = self._on_shutdown()
        if not self.done:
            # Started now, inside the running loop: the loop's first-iteration hook then
            # lists it among the generators that shutdown_asyncgens() closes, which runs
            # the `finally` below inside the still-running loop.
            with contextlib.suppress(StopIteration):
                self._hook.asend(None).send(None)

    async def _on_shutdown(self) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            if not self.done:  # set by discard(): nothing left to run in this loop
                self.done = True
                loop = asyncio.get_running_loop()
                for owner in list(self.owners):
                    await owner._close(loop)
                with _WATCHES_LOCK:
                    _WATCHES.pop(loop, None)

    def discard(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """Drop the values of ``loop`` (None: every loop, after a fork) without awaiting."""
        self.done = True
        for owner in list(self.owners):
            owner._drop(loop)
        # Finish the hook here, so that no loop ever runs it later.
        with contextlib.suppress(StopIteration, RuntimeError):
            self._hook.aclose().send(None)


_WATCHES: dict[asyncio.AbstractEventLoop, _LoopWatch] = {}
_WATCHES_LOCK = threading.Lock()
_PER_LOOP: weakref.WeakSet[PerLoop[Any]] = weakref.WeakSet()


def _watch(loop: asyncio.AbstractEventLoop) -> _LoopWatch:
    with _WATCHES_LOCK:
        watch = _WATCHES.get(loop)
        if watch is None:
            watch = _WATCHES[loop] = _LoopWatch(loop)
        return watch


def _drop_closed_loops() -> None:
    # Loops closed without shutdown_asyncgens(): nothing can be awaited in them any
    # more, so their values are let go (their sockets close when collected).
    with _WATCHES_LOCK:
        closed = [(loop, w) for loop, w in _WATCHES.items() if loop.is_closed()]
        for loop, _ in closed:
            del _WATCHES[loop]
    for loop, watch in closed:
        watch.discard(loop)


# -- endpoints ---------------------------------------------------------------------------


async def _close_async(client: Any) -> None:
    await client.close()


async def _leave_open(client: Any) -> None:
    """Closing would close the http_client the user gave the Provider: theirs to close."""


class Endpoint:
    """One provider of one chain: its name, its breaker key, and its clients.

    The sync client is built once; async clients once per event loop, because an
    ``AsyncOpenAI`` is bound to the loop that first used it. When one of a chain's
    clients is built (in async code: for a loop), the warm-up thread builds the others'
    of that flavour (for async code, a spare that the next loop needing one takes), so
    that a failover neither pays for one nor builds one on the event loop.
    """

    def __init__(
        self, name: str, spec: Provider | None, client: Any | None, origin: Endpoint | None = None
    ) -> None:
        self.name = name
        self.spec = spec
        self._given: Any = client  # set when spec is None
        self._origin = origin  # the endpoint this one is a renamed copy of
        self._lock = threading.Lock()
        # The clients; a user's client of the right flavour is used as it is. The layer
        # above hands them out, each wrapped for its attempt.
        self._owns_sync = not isinstance(client, openai.OpenAI)
        self._sync: Any = None if self._owns_sync else client
        self._given_async: Any = client if isinstance(client, openai.AsyncOpenAI) else None
        self._owns_transport = spec is None or "http_client" not in spec.client_options
        self._async: PerLoop[Any] = PerLoop(_close_async if self._owns_transport else _leave_open)
        self._spare: Any = None  # an async client built off the loop, not yet any loop's
        self._generation = 0  # one more at each close: the warm-up then builds nothing older
        self._renamed: dict[str, Endpoint] = {}
        # The other endpoints of the chains this one is in (by id, weakly: chains come and go).
        self._peers: weakref.WeakValueDictionary[int, Endpoint] = weakref.WeakValueDictionary()
        _ENDPOINTS.add(self)

    def __repr__(self) -> str:
        return f"<Endpoint {self.name!r} {self.key.partition(' ')[2]}>"

    @functools.cached_property
    def key(self) -> str:
        """The breaker identity: name, base URL and a fingerprint of the credential.

        Worked out on first use, as late as the client: a key may come from the
        environment, loaded after the decorators ran.
        """
        if self._origin is not None:
            return self._origin.key
        spec, client = self.spec, self._given
        if spec is not None:
            base_url = spec.base_url or os.environ.get("OPENAI_BASE_URL") or "api.openai.com"
            options = spec.client_options
            api_key = options.get("api_key", spec.api_key)
            if api_key is None:
                api_key = os.environ.get(spec.api_key_env or "OPENAI_API_KEY")
            credentials = [api_key, *_auth_values(options.get("default_headers"))]
        else:
            base_url = str(client.base_url)
            credentials = [
                getattr(client, "_api_key_provider", None) or client.api_key,
                getattr(client, "_azure_ad_token", None),
                getattr(client, "_azure_ad_token_provider", None),
                *_auth_values(getattr(client, "_custom_headers", None)),
            ]
        return f"{self.name} {base_url} key-id:{fingerprint(*credentials)}"

    def renamed(self, name: str) -> Endpoint:
        """A copy under another name (same breaker key), with clients of its own, made once."""
        with self._lock:
            copy = self._renamed.get(name)
            if copy is None:
                copy = self._renamed[name] = Endpoint(name, self.spec, self._given, origin=self)
            return copy

    def map_model(self, model: str) -> str:
        models = self.spec.models if self.spec is not None else None
        if models is None:
            return model
        if callable(models):
            return models(model)
        return models.get(model, model)

    def check(self, is_async: bool) -> None:
        """Refuse now, with a TypeError, a client this endpoint cannot build for code of
        that flavour (rather than failing over on every call later)."""
        given = self._given
        if given is not None:
            if isinstance(given, openai.AsyncOpenAI) != is_async:
                check_rebuildable(given, self.name)
            return
        http_client = self.spec.client_options.get("http_client") if self.spec else None
        if http_client is not None:
            check_http_client(http_client, self.name, is_async=is_async)

    def _options(self) -> dict[str, Any]:
        spec = self.spec
        assert spec is not None
        api_key = spec.api_key
        if api_key is None and spec.api_key_env is not None:
            api_key = os.environ.get(spec.api_key_env)
            if not api_key:
                raise MissingAPIKey(self.name, spec.api_key_env)
        options: dict[str, Any] = {"base_url": spec.base_url, "max_retries": spec.max_retries}
        if api_key is not None:
            options["api_key"] = api_key
        if spec.timeout is not None:
            options["timeout"] = spec.timeout
        return {**options, **spec.client_options}

    def _new(self, is_async: bool) -> Any:
        given = self._given
        if given is None:
            return build_client(self._options(), is_async=is_async)
        same = isinstance(given, openai.AsyncOpenAI) == is_async
        return given if same else rebuild(given, self.name)

    def _lacks(self, loop: asyncio.AbstractEventLoop | None) -> bool:
        """Whether a failover to this endpoint would build a client (sync: ``loop`` None)."""
        if loop is None:
            return self._sync is None
        return self._given_async is None and self._spare is None and not self._async.has(loop)

    def _warm_peers(self, loop: asyncio.AbstractEventLoop | None) -> None:
        # Off the failover path: when the chain's first call (per loop, for async code)
        # builds its client, the warm-up thread builds those it may fail over to.
        for peer in list(self._peers.values()):
            if peer._lacks(loop):
                WARM_UP.submit(functools.partial(peer._prepare, loop, peer._generation))

    def _prepare(self, loop: asyncio.AbstractEventLoop | None, generation: int) -> None:
        """In the warm-up thread: build the client a failover to this endpoint takes."""
        with self._lock:
            # Closed since (its chain is done with it), or built meanwhile by a failover.
            if generation == self._generation and self._lacks(loop):
                if loop is None:
                    self._sync = self._new(is_async=False)
                else:
                    self._spare = self._new(is_async=True)

    def _sync_client(self) -> Any:
        with self._lock:
            if self._sync is None:
                self._sync = self._new(is_async=False)
            client = self._sync
        self._warm_peers(None)
        return client

    def sync_client(self) -> Any:
        """The tracked sync client (built on first use, then reused)."""
        client = self._sync
        return client if client is not None else self._sync_client()

    def _async_client(self) -> Any:
        # On the loop. A spare the warm-up thread is building is waited for (the lock),
        # not built a second time here.
        with self._lock:
            client, self._spare = self._spare, None
        if client is None:
            client = self._new(is_async=True)
        self._warm_peers(asyncio.get_running_loop())
        return client

    def async_client(self) -> Any:
        """The tracked async client of the running event loop."""
        given = self._given_async  # the user's own: the same on every loop
        if given is not None:
            return given
        # PerLoop.get's lookup, inlined: it runs on every async call's healthy path.
        built = self._async._values.get(asyncio.get_running_loop())
        return built if built is not None else self._async.get(self._async_client)

    def _forget_built(self) -> None:
        # In a forked child: the parent's connections are not this process's to use.
        self._lock = threading.Lock()  # another thread may have held it at the fork
        self._spare = None
        if self._owns_sync:
            self._sync = None

    def close(self) -> None:
        """Close the sync client failover built (never a client the user passed); the
        warm-up builds nothing more for this endpoint until it is used again."""
        with self._lock:
            self._generation += 1
            self._spare = None  # never used: it has no connection to close
            client = self._sync if self._owns_sync else None
            if client is not None:
                self._sync = None
        if client is not None and self._owns_transport:
            client.close()

    async def aclose(self) -> None:
        """Close what was built: this loop's async client, and the sync one."""
        client = self._async.pop()
        if client is not None and self._owns_transport:
            await _close_async(client)
        self.close()


_ENDPOINTS: weakref.WeakSet[Endpoint] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    global _WATCHES_LOCK
    _WATCHES_LOCK = threading.Lock()  # another thread may have held it at the fork
    watches = list(_WATCHES.values())
    _WATCHES.clear()
    for watch in watches:
        watch.discard(None)
    for per_loop in list(_PER_LOOP):
        per_loop._drop(None)
    for endpoint in list(_ENDPOINTS):
        endpoint._forget_built()


if hasattr(os, "register_at_fork"):  # not on Windows, which cannot fork
    os.register_at_fork(after_in_child=_after_fork_in_child)


_SHARING = threading.Lock()
_ENDPOINT = "_failover_endpoint"


def endpoint_for(provider: ProviderLike, *, shared: bool = True) -> Endpoint:
    """The endpoint of ``provider``: built once and ``shared`` by every chain naming it."""
    if shared:
        # Kept on the provider itself, so it lives exactly as long as the provider does.
        with _SHARING:
            endpoint: Endpoint | None = getattr(provider, _ENDPOINT, None)
            if endpoint is None:
                endpoint = endpoint_for(provider, shared=False)
                object.__setattr__(provider, _ENDPOINT, endpoint)
            return endpoint
    if isinstance(provider, Provider):
        return Endpoint(provider.name, provider, None)
    if isinstance(provider, (openai.OpenAI, openai.AsyncOpenAI)):
        return Endpoint(_host_name(provider.base_url), None, provider)
    raise TypeError(
        "a provider is a failover.Provider, an openai.OpenAI or an openai.AsyncOpenAI, "
        f"not {type(provider).__name__}"
    )


def endpoints(providers: Iterable[ProviderLike], *, shared: bool = True) -> tuple[Endpoint, ...]:
    """Endpoints for a chain (the zero-config default when empty), with unique names.

    ``shared``: a ``Provider``'s clients are the ones every chain naming it uses (the
    decorator, the block form); otherwise the chain builds and closes its own.
    """
    chain = [endpoint_for(p, shared=shared) for p in (tuple(providers) or default_providers())]
    seen: dict[str, int] = {}
    for i, endpoint in enumerate(chain):
        count = seen[endpoint.name] = seen.get(endpoint.name, 0) + 1
        if count > 1:
            chain[i] = endpoint.renamed(f"{endpoint.name}#{count}")
    for endpoint in chain:
        for peer in chain:
            if peer is not endpoint and id(peer) not in endpoint._peers:
                endpoint._peers[id(peer)] = peer
    return tuple(chain)


def check_flavour(chain: Iterable[Endpoint], is_async: bool) -> None:
    """A TypeError now for any provider of ``chain`` that code of that flavour cannot use."""
    for endpoint in chain:
        endpoint.check(is_async)
