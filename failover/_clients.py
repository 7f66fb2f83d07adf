"""Building ``openai`` clients: cheaply, off the failing call's path, and of the flavour
(sync, async) the code needs.

Every client failover builds shares one SSL context: loading the CA bundle is most of
what an ``openai.OpenAI()`` costs (about 20 ms of CPU), and a failover must not pay it.
The clients a chain may fail over to are built by the warm-up thread (see
:data:`WARM_UP`), never on an event loop. A user's client of the other flavour is
rebuilt in its own family (Azure stays Azure); one that cannot be rebuilt faithfully is
refused up front, with what to pass instead.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
import os
import ssl
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import httpx2
import openai

from ._openai import AsyncHttpxClientWrapper, SyncHttpxClientWrapper, get_platform

# Each family's two flavours: (sync, async).
_FAMILIES: tuple[tuple[type[Any], type[Any]], ...] = (
    (openai.OpenAI, openai.AsyncOpenAI),
    (openai.AzureOpenAI, openai.AsyncAzureOpenAI),
)
_COUNTERPART = {kind: pair[1 - i] for pair in _FAMILIES for i, kind in enumerate(pair)}


# Made once, under a lock: the caller and the warm-up thread may both need it first, and
# one of them waiting beats both loading the CA bundle.
_SSL_CONTEXT: list[ssl.SSLContext] = []
_SSL_LOCK = threading.Lock()


def shared_ssl_context() -> ssl.SSLContext:
    """The verifying SSL context of every client failover builds (made once, on first use)."""
    if not _SSL_CONTEXT:
        with _SSL_LOCK:
            if not _SSL_CONTEXT:
                _SSL_CONTEXT.append(httpx2.create_ssl_context())
    return _SSL_CONTEXT[0]


# openai's value for its X-Stainless-OS header, once learnt. An async client that lacks
# it works it out on its first request in a worker thread (it reads files), a hop to a
# thread and back that would otherwise land on the first call failing over to it.
_PLATFORM: list[object] = []


def _with_platform(client: Any) -> Any:
    if not _PLATFORM:
        try:
            asyncio.get_running_loop()  # blocking reads: learnt off the loop (warm-up thread)
        except RuntimeError:
            _PLATFORM.append(get_platform())
    if _PLATFORM and getattr(client, "_platform", None) is None:
        client._platform = _PLATFORM[0]
    return client


def build_client(options: dict[str, Any], *, is_async: bool) -> Any:
    """An ``openai.OpenAI`` (``AsyncOpenAI``) from ``options``, on the shared SSL context
    unless ``options`` brings its own ``http_client`` (which is then left as it is)."""
    if "http_client" not in options:
        options = {**options, "http_client": _http_client(is_async)}
    client = _FAMILIES[0][is_async](**options)
    return _with_platform(client) if is_async else client


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
    client = counterpart(**options, http_client=_http_client(is_async))
    return _with_platform(client) if is_async else client


# -- the warm-up thread -------------------------------------------------------------------

#: How long a fork waits for the warm-up (a few ms of CPU) to finish, so that the child
#: inherits no lock held by a thread it does not have. Past it, the fork goes ahead (the
#: child starts afresh: its locks are new, and it builds its own clients).
FORK_WAIT = 1.0


class WarmUp:
    """Runs jobs one after another in a daemon thread that is started when a job comes and
    ends when none is left, so that no thread lingers. A job's exception is dropped: what
    it prepares is built again, and fails there, when a call needs it."""

    def __init__(self) -> None:
        self._start()

    def _start(self) -> None:
        self._lock = threading.Lock()
        self._jobs: collections.deque[Callable[[], object]] = collections.deque()
        self._idle = threading.Event()
        self._idle.set()
        self._thread: threading.Thread | None = None  # the running one, or the last one

    def submit(self, job: Callable[[], object]) -> None:
        """Run ``job`` soon, in the warm-up thread."""
        with self._lock:
            self._jobs.append(job)
            if not self._idle.is_set():
                return  # the running thread takes it
            thread = threading.Thread(target=self._run, name="failover-warm-up", daemon=True)
            try:
                thread.start()
            except RuntimeError:  # the interpreter is exiting: nothing is worth building
                self._jobs.clear()
                return
            self._idle.clear()
            self._thread = thread

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._jobs:
                    self._idle.set()
                    return
                job = self._jobs.popleft()
            with contextlib.suppress(Exception):
                job()

    def wait(self, timeout: float | None = None) -> bool:
        """Whether every job submitted so far is done and its thread gone, within ``timeout``."""
        if not self._idle.wait(timeout):
            return False
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        return thread is None or not thread.is_alive()

    def _after_fork_in_child(self) -> None:
        # The thread did not survive the fork; the jobs it had left are the parent's.
        self._start()


#: The process's one warm-up thread.
WARM_UP = WarmUp()


def _before_fork() -> None:
    WARM_UP.wait(FORK_WAIT)


def _after_fork_in_child() -> None:
    global _SSL_LOCK
    _SSL_LOCK = threading.Lock()
    WARM_UP._after_fork_in_child()


if hasattr(os, "register_at_fork"):  # not on Windows, which cannot fork
    os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)
