"""``failover.OpenAI`` and ``failover.AsyncOpenAI``: long-lived drop-in clients.

The same proxy as ``with fallback_clients(...) as client:``, without the ``with``:
built once (at import time, for the async one too: it needs no running loop) and
handed around, to frameworks included, until ``close()``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from types import TracebackType
from typing import Any, NoReturn, cast

import openai

from ._context import OpenChain, open_chain, sync_template
from ._health import Breaker, HealthStore
from ._policy import OnSpec
from ._providers import Endpoint, ProviderLike
from ._proxy import Failover
from ._retry import Retry
from ._settings import DEFAULT_BREAKER, DEFAULT_RETRY, Event, Settings

# Where each provider is and who it is: per provider, never one value for the chain.
_PROVIDER_ONLY = frozenset({"api_key", "base_url", "organization", "project", "websocket_base_url"})


def _provider_spelling(names: list[str], call: str) -> str:
    """How to say ``names`` (openai client arguments) per provider; never their values."""
    fields = [f"{n}=..." for n in names if n in ("api_key", "base_url", "timeout", "max_retries")]
    other = [f"{n!r}: ..." for n in names if f"{n}=..." not in fields]
    if other:
        fields.append(f"client_options={{{', '.join(other)}}}")
    return (
        f"{call} takes providers, not one client's settings; "
        f"set {', '.join(n + '=' for n in names)} on each provider: "
        f"Provider('name', {', '.join(fields)})"
    )


def _refuse_client_options(call: str, options: dict[str, Any], kind: type[Any]) -> None:
    if not options:
        return
    accepted = inspect.signature(kind.__init__).parameters
    unknown = sorted(name for name in options if name not in accepted or name == "self")
    if unknown:
        raise TypeError(f"{call} got an unexpected keyword argument {unknown[0]!r}")
    raise TypeError(_provider_spelling(sorted(options), call))


class _DropIn(Failover):
    """The client (or a copy of it): closing any copy closes what the original built,
    as closing a copy of an ``openai`` client closes the transport they share."""

    def __new__(cls, opened: OpenChain, template: Any, *args: Any, **kwargs: Any) -> Any:
        return super().__new__(cls, template)  # the proxy's class is the template's

    def __init__(self, opened: OpenChain, template: Any, path: tuple[Any, ...], is_async: bool):
        super().__init__(template, opened.chain, path, is_async)
        self._self_opened = opened

    def with_options(self, *args: Any, **kwargs: Any) -> Any:
        """A copy whose calls carry these options on every provider (openai's ``with_options``)."""
        moved = sorted(_PROVIDER_ONLY.intersection(kwargs))
        if moved:
            raise TypeError(_provider_spelling(moved, "with_options() on a failover client"))
        # The proxy's own navigation records the call for every provider (its own
        # transport handed back, as pydantic-ai does, becomes each provider's); keep it.
        copied = Failover.__getattr__(self, "with_options")(*args, **kwargs)
        return type(self)(
            self._self_opened, copied.__wrapped__, copied._self_path, self._self_async
        )

    copy = with_options

    def is_closed(self) -> bool:
        """Whether ``close()`` was called (on this client or a copy)."""
        return bool(self.__wrapped__.is_closed())


class _SyncDropIn(_DropIn):
    def close(self) -> None:
        """Close the clients this client built (never a client you passed)."""
        self._self_opened.close()

    def __enter__(self) -> Any:
        return self

    def __exit__(
        self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class _AsyncDropIn(_DropIn):
    async def close(self) -> None:
        """Close the clients this client built for the running loop, and its sync ones;
        those of other loops are closed when their loop closes."""
        await self._self_opened.aclose()

    async def __aenter__(self) -> Any:
        return self

    async def __aexit__(
        self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


def _async_template(endpoint: Endpoint) -> tuple[Any, bool]:
    # No loop may be running yet: a client of the endpoint's options that never sends
    # (calls go to each loop's own clients) stands for the chain.
    given = endpoint._given
    if isinstance(given, openai.AsyncOpenAI):
        return given, False
    return openai.AsyncOpenAI(**endpoint._options()), True


# The keyword options are spelled out in each public signature (with_fallback,
# fallback_clients, OpenAI, AsyncOpenAI) because users read them in their IDE; they
# mean the same everywhere, as Settings.from_options(locals()) alone turns them into
# settings. So the four repeat on purpose.
def OpenAI(  # named as the class it replaces
    *providers: ProviderLike,
    on: OnSpec | None = None,
    breaker: Breaker | None = DEFAULT_BREAKER,
    retry: Retry | None = DEFAULT_RETRY,
    attempt_timeout: float | None = None,
    deadline: float | None = None,
    first_token_timeout: float | None = None,
    stall_timeout: float | None = None,
    hedge: float | None = None,
    on_attempt: Callable[[Event], object] | None = None,
    health: HealthStore | None = None,
    **openai_options: NoReturn,
) -> openai.OpenAI:
    """An ``openai.OpenAI`` on which every API call fails over across ``providers``.

    CometAPI then OpenAI, from the environment, when none are given. The keyword
    options are those of :func:`fallback_clients`; openai's own constructor arguments
    (``api_key=``, ``base_url=``, ...) belong to each :class:`Provider`. Usable until
    ``close()`` (or the end of ``with OpenAI(...) as client:``), which closes the
    clients it built, never the ones you passed.
    """
    _refuse_client_options("OpenAI()", openai_options, openai.OpenAI)
    if hedge is not None:
        raise TypeError(
            "hedge= starts attempts side by side, which a sync client cannot do: "
            "use it with failover.AsyncOpenAI(...)"
        )
    settings = Settings.from_options(locals())
    opened = open_chain(providers, settings, sync_template, openai.OpenAI)
    return cast(openai.OpenAI, _SyncDropIn(opened, opened.template, (), is_async=False))


# The keyword options are spelled out in each public signature (with_fallback,
# fallback_clients, OpenAI, AsyncOpenAI) because users read them in their IDE; they
# mean the same everywhere, as Settings.from_options(locals()) alone turns them into
# settings. So the four repeat on purpose.
def AsyncOpenAI(  # named as the class it replaces
    *providers: ProviderLike,
    on: OnSpec | None = None,
    breaker: Breaker | None = DEFAULT_BREAKER,
    retry: Retry | None = DEFAULT_RETRY,
    attempt_timeout: float | None = None,
    deadline: float | None = None,
    first_token_timeout: float | None = None,
    stall_timeout: float | None = None,
    hedge: float | None = None,
    on_attempt: Callable[[Event], object] | None = None,
    health: HealthStore | None = None,
    **openai_options: NoReturn,
) -> openai.AsyncOpenAI:
    """An ``openai.AsyncOpenAI`` on which every API call fails over across ``providers``.

    As :func:`OpenAI`, plus ``hedge=``. It needs no running loop to be built and works
    on any loop, one after another (``asyncio.run()`` per call, a loop per test): it
    keeps one client per provider and live loop. ``await client.close()`` (or the end
    of ``async with``) closes the running loop's clients; other loops' are closed
    when their loop closes.
    """
    _refuse_client_options("AsyncOpenAI()", openai_options, openai.AsyncOpenAI)
    settings = Settings.from_options(locals())
    opened = open_chain(providers, settings, _async_template, openai.AsyncOpenAI)
    return cast(openai.AsyncOpenAI, _AsyncDropIn(opened, opened.template, (), is_async=True))
