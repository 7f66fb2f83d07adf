"""``fallback_clients()``: a drop-in client, or a block re-run per provider."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, cast

import openai

from ._attempts import AttemptContext, Attempts
from ._chain import Chain
from ._health import Breaker, HealthStore
from ._policy import OnSpec
from ._providers import Endpoint, ProviderLike, check_flavour, endpoints
from ._proxy import Failover
from ._retry import Retry
from ._settings import DEFAULT_BREAKER, DEFAULT_RETRY, Event, Settings

# Stands in for the client's shape when no provider's client can be built (every
# key missing): calls through it still try each provider and fail over as usual.
_PLACEHOLDER = {"api_key": "unset", "base_url": "http://127.0.0.1:9/unset", "max_retries": 0}


def sync_template(endpoint: Endpoint) -> tuple[Any, bool]:
    """The endpoint's own sync client (it closes it)."""
    return endpoint.sync_client(), False


def _loop_template(endpoint: Endpoint) -> tuple[Any, bool]:
    return endpoint.async_client(), False


@dataclass(frozen=True, slots=True)
class OpenChain:
    """A chain with clients of its own, and the client a drop-in stands for.

    ``own`` is that client when only the drop-in holds it (a placeholder, or a template
    that never sends): closed with the chain's clients.
    """

    chain: Chain
    template: Any
    own: Any | None

    def close(self) -> None:
        """Close what was built: the chain's sync clients (never a client the user passed)."""
        for endpoint in self.chain.endpoints:
            endpoint.close()
        if self.own is not None:
            self.own.close()

    async def aclose(self) -> None:
        """Close what was built: this loop's async clients, and the sync ones."""
        for endpoint in self.chain.endpoints:
            await endpoint.aclose()
        if self.own is not None:
            await self.own.close()


def open_chain(
    providers: tuple[ProviderLike, ...],
    settings: Settings,
    build: Callable[[Endpoint], tuple[Any, bool]],
    kind: type[Any],
) -> OpenChain:
    """A chain of clients built for it alone; the drop-in stands for the first provider's
    client that ``build`` can make (``build`` tells whether it made it for the drop-in
    alone). With none (every key missing), it stands for a placeholder of the same
    shape: calls through it still try each provider and fail over as usual.
    """
    chain = Chain(endpoints(providers, shared=False), settings)
    check_flavour(chain.endpoints, issubclass(kind, openai.AsyncOpenAI))
    for endpoint in chain.endpoints:
        try:
            template, own = build(endpoint)
        except openai.OpenAIError:
            continue
        return OpenChain(chain, template, template if own else None)
    placeholder = kind(**_PLACEHOLDER)
    return OpenChain(chain, placeholder, placeholder)


class FallbackClients:
    """What :func:`fallback_clients` returns; see there."""

    def __init__(self, providers: tuple[ProviderLike, ...], settings: Settings) -> None:
        self._providers = providers
        self._settings = settings
        # Each ``with`` builds clients of its own, closed on its exit (innermost last).
        self._open: list[OpenChain] = []

    def __repr__(self) -> str:
        return f"fallback_clients({', '.join(e.name for e in endpoints(self._providers))})"

    def _enter(
        self, build: Callable[[Endpoint], tuple[Any, bool]], kind: type[Any], is_async: bool
    ) -> Any:
        opened = open_chain(self._providers, self._settings, build, kind)
        self._open.append(opened)
        return Failover(opened.template, opened.chain, (), is_async=is_async)

    def _unhedged(self, form: str) -> None:
        if self._settings.hedge is not None:
            raise TypeError(
                f"hedge= starts attempts side by side, which {form} cannot do: "
                "use it with `async with fallback_clients(...)` or an async def function"
            )

    def __enter__(self) -> openai.OpenAI:
        self._unhedged("a sync client")
        return cast(openai.OpenAI, self._enter(sync_template, openai.OpenAI, False))

    def __exit__(
        self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._open.pop().close()

    async def __aenter__(self) -> openai.AsyncOpenAI:
        client = self._enter(_loop_template, openai.AsyncOpenAI, True)
        return cast(openai.AsyncOpenAI, client)

    async def __aexit__(
        self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._open.pop().aclose()

    # The block form is typically run once per request: it uses the clients shared by
    # every chain that names the same Provider, so connections are reused across loops.

    def _block(self, is_async: bool) -> Attempts:
        self._unhedged("the block form")
        chain = Chain(endpoints(self._providers), self._settings)
        check_flavour(chain.endpoints, is_async)
        return Attempts(chain)

    def __iter__(self) -> Iterator[AttemptContext[openai.OpenAI]]:
        return self._block(is_async=False)

    def __aiter__(self) -> AsyncIterator[AttemptContext[openai.AsyncOpenAI]]:
        return self._block(is_async=True)


# The keyword options are spelled out in each public signature (with_fallback,
# fallback_clients, OpenAI, AsyncOpenAI) because users read them in their IDE; they
# mean the same everywhere, as Settings.from_options(locals()) alone turns them into
# settings. So the four repeat on purpose.
def fallback_clients(
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
) -> FallbackClients:
    """Clients that fail over across ``providers`` (CometAPI then OpenAI when none given).

    ``with fallback_clients() as client:`` gives a drop-in ``openai.OpenAI`` on which
    every API call tries the providers in order (``async with``: an ``AsyncOpenAI``);
    the clients it built are closed on exit, clients you passed are not.
    ``for attempt in fallback_clients(): with attempt as client: ...`` re-runs a whole
    block per provider (``async for`` likewise), on clients built once per ``Provider``
    and reused by every loop, as the decorator's are.
    """
    settings = Settings.from_options(locals())
    return FallbackClients(providers, settings)
