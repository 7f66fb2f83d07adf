"""``fallback_clients()``: a drop-in client, or a block re-run per provider."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from types import TracebackType
from typing import Any, cast

import openai

from ._attempts import AttemptContext, Attempts
from ._decorator import _DEFAULT_BREAKER
from ._engine import Chain, Event, Settings
from ._health import Breaker, HealthStore
from ._policy import OnSpec, Policy
from ._providers import Endpoint, ProviderLike, endpoints
from ._proxy import Failover

# Stands in for the client's shape when no provider's client can be built (every
# key missing): calls through it still try each provider and fail over as usual.
_PLACEHOLDER = {"api_key": "unset", "base_url": "http://127.0.0.1:9/unset", "max_retries": 0}


class FallbackClients:
    """What :func:`fallback_clients` returns; see there."""

    def __init__(self, providers: tuple[ProviderLike, ...], settings: Settings) -> None:
        self._providers = providers
        self._settings = settings
        self._chain = Chain((), settings)  # the context manager's own clients, from __enter__
        self._placeholder: Any = None

    def __repr__(self) -> str:
        return f"fallback_clients({', '.join(e.name for e in endpoints(self._providers))})"

    def _own_chain(self) -> Chain:
        self._chain = Chain(endpoints(self._providers, shared=False), self._settings)
        return self._chain

    def _template(self, build: Callable[[Endpoint], Any], placeholder: Callable[..., Any]) -> Any:
        for endpoint in self._own_chain().endpoints:
            try:
                return build(endpoint).__wrapped__
            except openai.OpenAIError:
                continue
        self._placeholder = placeholder(**_PLACEHOLDER)
        return self._placeholder

    def __enter__(self) -> openai.OpenAI:
        template = self._template(Endpoint.sync_client, openai.OpenAI)
        return cast(openai.OpenAI, Failover(template, self._chain, (), is_async=False))

    def __exit__(
        self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for endpoint in self._chain.endpoints:
            endpoint.close()
        if self._placeholder is not None:
            self._placeholder.close()

    async def __aenter__(self) -> openai.AsyncOpenAI:
        template = self._template(Endpoint.async_client, openai.AsyncOpenAI)
        return cast(openai.AsyncOpenAI, Failover(template, self._chain, (), is_async=True))

    async def __aexit__(
        self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for endpoint in self._chain.endpoints:
            await endpoint.aclose()
        if self._placeholder is not None:
            await self._placeholder.close()

    # The block form is typically run once per request: it uses the clients shared by
    # every chain that names the same Provider, so connections are reused across loops.

    def __iter__(self) -> Iterator[AttemptContext[openai.OpenAI]]:
        return Attempts(Chain(endpoints(self._providers), self._settings))

    def __aiter__(self) -> AsyncIterator[AttemptContext[openai.AsyncOpenAI]]:
        return Attempts(Chain(endpoints(self._providers), self._settings))


def fallback_clients(
    *providers: ProviderLike,
    on: OnSpec | None = None,
    breaker: Breaker | None = _DEFAULT_BREAKER,
    attempt_timeout: float | None = None,
    deadline: float | None = None,
    first_token_timeout: float | None = None,
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
    settings = Settings(
        policy=Policy(on),
        breaker=breaker,
        store=health,
        attempt_timeout=attempt_timeout,
        deadline=deadline,
        first_token_timeout=first_token_timeout,
        hedge=hedge,
        on_attempt=on_attempt,
    )
    return FallbackClients(providers, settings)
