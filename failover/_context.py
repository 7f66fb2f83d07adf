"""``fallback_clients()``: a drop-in client, or a block re-run per provider."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from types import TracebackType
from typing import Any, cast

import openai

from ._attempts import AttemptContext, Attempts
from ._decorator import _DEFAULT_BREAKER, _DEFAULT_RETRY
from ._engine import Chain, Event, Settings
from ._health import Breaker, HealthStore
from ._policy import OnSpec, Policy
from ._providers import Endpoint, ProviderLike, endpoints
from ._proxy import Failover
from ._retry import Retry

# Stands in for the client's shape when no provider's client can be built (every
# key missing): calls through it still try each provider and fail over as usual.
_PLACEHOLDER = {"api_key": "unset", "base_url": "http://127.0.0.1:9/unset", "max_retries": 0}


class FallbackClients:
    """What :func:`fallback_clients` returns; see there."""

    def __init__(self, providers: tuple[ProviderLike, ...], settings: Settings) -> None:
        self._providers = providers
        self._settings = settings
        # Each ``with`` builds clients of its own, closed on its exit (innermost last).
        self._open: list[tuple[Chain, Any]] = []

    def __repr__(self) -> str:
        return f"fallback_clients({', '.join(e.name for e in endpoints(self._providers))})"

    def _enter(self, build: Callable[[Endpoint], Any], kind: type[Any], is_async: bool) -> Any:
        chain = Chain(endpoints(self._providers, shared=False), self._settings)
        placeholder = None
        for endpoint in chain.endpoints:
            try:
                template = build(endpoint).__wrapped__
                break
            except openai.OpenAIError:
                continue
        else:
            template = placeholder = kind(**_PLACEHOLDER)
        self._open.append((chain, placeholder))
        return Failover(template, chain, (), is_async=is_async)

    def _unhedged(self, form: str) -> None:
        if self._settings.hedge is not None:
            raise TypeError(
                f"hedge= starts attempts side by side, which {form} cannot do: "
                "use it with `async with fallback_clients(...)` or an async def function"
            )

    def __enter__(self) -> openai.OpenAI:
        self._unhedged("a sync client")
        return cast(openai.OpenAI, self._enter(Endpoint.sync_client, openai.OpenAI, False))

    def __exit__(
        self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        chain, placeholder = self._open.pop()
        for endpoint in chain.endpoints:
            endpoint.close()
        if placeholder is not None:
            placeholder.close()

    async def __aenter__(self) -> openai.AsyncOpenAI:
        client = self._enter(Endpoint.async_client, openai.AsyncOpenAI, True)
        return cast(openai.AsyncOpenAI, client)

    async def __aexit__(
        self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        chain, placeholder = self._open.pop()
        for endpoint in chain.endpoints:
            await endpoint.aclose()
        if placeholder is not None:
            await placeholder.close()

    # The block form is typically run once per request: it uses the clients shared by
    # every chain that names the same Provider, so connections are reused across loops.

    def __iter__(self) -> Iterator[AttemptContext[openai.OpenAI]]:
        self._unhedged("the block form")
        return Attempts(Chain(endpoints(self._providers), self._settings))

    def __aiter__(self) -> AsyncIterator[AttemptContext[openai.AsyncOpenAI]]:
        self._unhedged("the block form")
        return Attempts(Chain(endpoints(self._providers), self._settings))


def fallback_clients(
    *providers: ProviderLike,
    on: OnSpec | None = None,
    breaker: Breaker | None = _DEFAULT_BREAKER,
    retry: Retry | None = _DEFAULT_RETRY,
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
        retry=retry,
        store=health,
        attempt_timeout=attempt_timeout,
        deadline=deadline,
        first_token_timeout=first_token_timeout,
        hedge=hedge,
        on_attempt=on_attempt,
    )
    return FallbackClients(providers, settings)
