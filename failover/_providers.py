"""Providers: what the user names, and the endpoints that build and cache clients."""

from __future__ import annotations

import asyncio
import functools
import os
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import KW_ONLY, dataclass, field
from typing import Any, Union
from urllib.parse import urlsplit

import openai

from ._errors import MissingAPIKey
from ._tracking import Tracked

COMETAPI_BASE_URL = "https://api.cometapi.com/v1"

#: A model-name rewrite: a mapping (names not in it pass unchanged) or a function.
ModelMap = Union[Mapping[str, str], Callable[[str], str]]
ProviderLike = Union["Provider", openai.OpenAI, openai.AsyncOpenAI]


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


def _settings_of(client: openai.OpenAI | openai.AsyncOpenAI) -> dict[str, Any]:
    # A user's client of the other flavour: rebuild it with the same settings.
    return {
        "api_key": client.api_key,
        "base_url": client.base_url,
        "organization": client.organization,
        "project": client.project,
        "timeout": client.timeout,
        "max_retries": client.max_retries,
        "default_headers": client._custom_headers,
        "default_query": client._custom_query,
    }


class Endpoint:
    """One provider of one chain: its name, its breaker key, and its clients.

    The sync client is built once; async clients once per event loop, because an
    ``AsyncOpenAI`` is bound to the loop that first used it.
    """

    def __init__(self, name: str, key: str, spec: Provider | None, client: Any | None) -> None:
        self.name = name
        self.key = key
        self.spec = spec
        self._given = client
        self._lock = threading.Lock()
        self._sync: Any = None  # Tracked proxies of the clients
        self._renamed: dict[str, Endpoint] = {}
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary()
        )

    def __repr__(self) -> str:
        return f"<Endpoint {self.name!r} {self.key.partition(' ')[2]}>"

    def renamed(self, name: str) -> Endpoint:
        """A copy under another name (same breaker key), with clients of its own, made once."""
        with self._lock:
            copy = self._renamed.get(name)
            if copy is None:
                copy = self._renamed[name] = Endpoint(name, self.key, self.spec, self._given)
            return copy

    def map_model(self, model: str) -> str:
        models = self.spec.models if self.spec is not None else None
        if models is None:
            return model
        if callable(models):
            return models(model)
        return models.get(model, model)

    def _options(self) -> dict[str, Any]:
        if self.spec is None:
            return _settings_of(self._given)  # type: ignore[arg-type]
        spec = self.spec
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

    def sync_client(self) -> Any:
        """The tracked sync client (built on first use, then reused)."""
        if self._sync is not None:  # the common case needs no lock
            return self._sync
        with self._lock:
            if self._sync is None:
                given = self._given
                self._sync = Tracked(
                    given if isinstance(given, openai.OpenAI) else openai.OpenAI(**self._options())
                )
            return self._sync

    def async_client(self) -> Any:
        """The tracked async client of the running event loop."""
        loop = asyncio.get_running_loop()
        client = self._async.get(loop)
        if client is not None:  # the common case needs no lock
            return client
        with self._lock:
            # A client keeps its loop alive (so the weak keys never die by themselves):
            # drop the clients of loops that are gone, whose connections are dead anyway.
            for stale in [other for other in self._async if other.is_closed()]:
                del self._async[stale]
            client = self._async.get(loop)
            if client is None:
                given = self._given
                client = self._async[loop] = Tracked(
                    given
                    if isinstance(given, openai.AsyncOpenAI)
                    else openai.AsyncOpenAI(**self._options())
                )
            return client

    def _built(self, client: Any) -> bool:
        return client is not None and client.__wrapped__ is not self._given

    def close(self) -> None:
        """Close the sync client failover built (never a client the user passed)."""
        with self._lock:
            client, self._sync = self._sync, None
        if self._built(client):
            client.close()

    async def aclose(self) -> None:
        """Close what was built: this loop's async client, and the sync one."""
        with self._lock:
            client = self._async.pop(asyncio.get_running_loop(), None)
        if self._built(client):
            await client.close()
        self.close()


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
        base_url = provider.base_url or os.environ.get("OPENAI_BASE_URL") or "api.openai.com"
        return Endpoint(provider.name, f"{provider.name} {base_url}", provider, None)
    if isinstance(provider, (openai.OpenAI, openai.AsyncOpenAI)):
        name = _host_name(provider.base_url)
        return Endpoint(name, f"{name} {provider.base_url}", None, provider)
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
    return tuple(chain)
