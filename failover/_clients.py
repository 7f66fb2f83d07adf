"""Building ``openai`` clients: cheaply, and of the flavour (sync, async) the code needs.

Every client failover builds shares one SSL context: loading the CA bundle is most of
what an ``openai.OpenAI()`` costs (about 20 ms of CPU), and a failover must not pay it.
A user's client of the other flavour is rebuilt in its own family (Azure stays Azure);
one that cannot be rebuilt faithfully is refused up front, with what to pass instead.
"""

from __future__ import annotations

import functools
import inspect
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import httpx2
import openai

from ._openai import AsyncHttpxClientWrapper, SyncHttpxClientWrapper

# Each family's two flavours: (sync, async).
_FAMILIES: tuple[tuple[type[Any], type[Any]], ...] = (
    (openai.OpenAI, openai.AsyncOpenAI),
    (openai.AzureOpenAI, openai.AsyncAzureOpenAI),
)
_COUNTERPART = {kind: pair[1 - i] for pair in _FAMILIES for i, kind in enumerate(pair)}


@functools.lru_cache(maxsize=1)
def shared_ssl_context() -> ssl.SSLContext:
    """The verifying SSL context of every client failover builds (made once, on first use)."""
    return httpx2.create_ssl_context()


def build_client(options: dict[str, Any], *, is_async: bool) -> Any:
    """An ``openai.OpenAI`` (``AsyncOpenAI``) from ``options``, on the shared SSL context
    unless ``options`` brings its own ``http_client`` (which is then left as it is)."""
    if "http_client" not in options:
        options = {**options, "http_client": _http_client(is_async)}
    return _FAMILIES[0][is_async](**options)


def _http_client(is_async: bool) -> Any:
    # openai's own defaults. A sync one that is dropped closes its connections, as openai's
    # does; an async one must not (its __del__ would schedule the close on whatever loop
    # runs then, not on its own): failover closes it on its loop.
    http = openai.DefaultAsyncHttpxClient if is_async else SyncHttpxClientWrapper
    return http(verify=shared_ssl_context())


def _flavour(is_async: bool) -> str:
    return "async" if is_async else "sync"


def _why_not(client: Any, counterpart: type[Any] | None) -> str | None:
    """Why ``client`` cannot be rebuilt as ``counterpart`` with the same behaviour."""
    if counterpart is None:
        return f"{type(client).__qualname__} is not a client class failover knows how to rebuild"
    if type(client._client) not in (SyncHttpxClientWrapper, AsyncHttpxClientWrapper):
        return "it has an http_client of its own, which code of the other flavour cannot use"
    if getattr(client, "_provider", None) is not None:
        return "it was built with provider=, which failover does not carry over"
    if getattr(client, "workload_identity", None) is not None:
        return "it authenticates with workload_identity, which failover does not carry over"
    to_sync = isinstance(client, openai.AsyncOpenAI)
    if to_sync and getattr(client, "_api_key_provider", None) is not None:
        return "its api_key is an async key provider, which sync code cannot await"
    token_provider = getattr(client, "_azure_ad_token_provider", None)
    if to_sync and token_provider is not None and _is_async_callable(token_provider):
        return "its azure_ad_token_provider is async, which sync code cannot await"
    return None


def _is_async_callable(func: object) -> bool:
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(
        getattr(func, "__call__", None)  # noqa: B004 (a callable object's own method)
    )


def check_rebuildable(client: Any, name: str) -> None:
    """A TypeError, saying what to pass instead, if ``client`` cannot be rebuilt."""
    counterpart = _COUNTERPART.get(type(client))
    reason = _why_not(client, counterpart)
    if reason is None:
        return
    to_async = not isinstance(client, openai.AsyncOpenAI)
    wanted = counterpart.__qualname__ if counterpart else ("AsyncOpenAI" if to_async else "OpenAI")
    raise TypeError(
        f"provider {name!r} is a {_flavour(not to_async)} {type(client).__qualname__}, given to "
        f"{_flavour(to_async)} code, and failover cannot rebuild it as a {wanted}: {reason}. "
        f"Pass an openai.{wanted} (built with the same settings) or a failover.Provider instead"
    )


def check_http_client(http_client: object, name: str, *, is_async: bool) -> None:
    """A TypeError if a Provider's ``client_options['http_client']`` is of the wrong flavour."""
    wanted = httpx2.AsyncClient if is_async else httpx2.Client
    if not isinstance(http_client, wanted):
        raise TypeError(
            f"provider {name!r} has client_options['http_client'] of type "
            f"{type(http_client).__qualname__}, which {_flavour(is_async)} code cannot use: give "
            f"it an httpx2.{wanted.__name__} (such as openai.Default"
            f"{'Async' if is_async else ''}HttpxClient(...)), or use one Provider per flavour"
        )


def _awaitable(key_provider: Callable[[], str]) -> Callable[[], Awaitable[str]]:
    # An async client awaits its key provider; a sync one's returns the key itself.
    async def api_key() -> str:
        return key_provider()

    return api_key


def rebuild(client: Any, name: str) -> Any:
    """``client`` as a client of the other flavour and the same family, with its settings
    (a TypeError when that cannot be done faithfully, as :func:`check_rebuildable`)."""
    check_rebuildable(client, name)
    counterpart = _COUNTERPART[type(client)]
    key_provider = getattr(client, "_api_key_provider", None)
    options: dict[str, Any] = {
        # Azure's placeholder for "the credential is a token" is kept as it is, so that
        # the rebuilt client does not read AZURE_OPENAI_API_KEY in its place.
        "api_key": _awaitable(key_provider) if key_provider is not None else client.api_key or None,
        "admin_api_key": client.admin_api_key,
        "organization": client.organization,
        "project": client.project,
        "webhook_secret": client.webhook_secret,
        "websocket_base_url": client.websocket_base_url,
        "base_url": str(client.base_url),
        "timeout": client.timeout,
        "max_retries": client.max_retries,
        "default_headers": client._custom_headers,
        "default_query": client._custom_query,
        "_strict_response_validation": client._strict_response_validation,
    }
    if isinstance(client, (openai.AzureOpenAI, openai.AsyncAzureOpenAI)):
        options.update(
            api_version=client._api_version,
            azure_ad_token=client._azure_ad_token,
            azure_ad_token_provider=client._azure_ad_token_provider,
        )
        if client._azure_endpoint is not None:
            # The endpoint (and deployment) route the calls that are not per deployment.
            del options["base_url"]
            options["azure_endpoint"] = str(client._azure_endpoint)
            options["azure_deployment"] = client._azure_deployment
    is_async = issubclass(counterpart, openai.AsyncOpenAI)
    return counterpart(**options, http_client=_http_client(is_async))
