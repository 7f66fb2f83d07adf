"""``@with_fallback``: re-run the whole function body on the next provider."""

from __future__ import annotations

import copy
import functools
import inspect
import types
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import wrapt

from ._attempts import always, async_driver, iterate_async, iterate_sync, sync_driver
from ._chain import Chain
from ._health import Breaker, HealthStore
from ._policy import OnSpec
from ._providers import ProviderLike, check_flavour, endpoints
from ._retry import Retry
from ._settings import DEFAULT_BREAKER, DEFAULT_RETRY, Event, Settings

P = ParamSpec("P")
R = TypeVar("R")


def _check_injectable(func: Callable[..., Any], inject: str) -> None:
    target = getattr(func, "__func__", func)
    parameters = inspect.signature(target).parameters.values()
    if not any(p.name == inject or p.kind is p.VAR_KEYWORD for p in parameters):
        raise TypeError(
            f"@with_fallback injects the client as the keyword argument {inject!r}, "
            f"but {getattr(target, '__qualname__', target)!r} has no parameter {inject!r} "
            f"(add one, or pass inject='<your parameter name>')"
        )


# The keyword options are spelled out in each public signature (with_fallback,
# fallback_clients, OpenAI, AsyncOpenAI) because users read them in their IDE; they
# mean the same everywhere, as Settings.from_options(locals()) alone turns them into
# settings. So the four repeat on purpose.
def with_fallback(
    *providers: ProviderLike,
    inject: str = "client",
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
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Run the decorated function with a client injected as ``inject``; on a provider
    fault, run the whole body again with the next provider's client (or, for a
    transient fault that ``retry`` covers, with the same provider's, after a pause).

    With no providers: CometAPI, then OpenAI, from the environment. A caller that
    passes a client as ``inject`` itself gets exactly that client, once, with no
    failover (None is no client: one is injected, as when nothing is passed).
    """
    settings = Settings.from_options(locals())
    chain = Chain(endpoints(providers), settings)

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        if isinstance(func, (classmethod, staticmethod)):
            # Decorated inside, bound as it was: the function it holds gets the client.
            return type(func)(decorate(func.__func__))
        _check_injectable(func, inject)
        name = getattr(func, "__qualname__", "call")  # the call's name in traces

        def named(args: Any, kwargs: Any) -> str:
            return name

        # Decided once, here: the driver that fits what the function is, as a function of
        # the function to call (the one decorated, or a proxy's bound one) and its call.
        generates = inspect.isasyncgenfunction(func) or inspect.isgeneratorfunction(func)
        is_async = inspect.isasyncgenfunction(func) or inspect.iscoroutinefunction(func)
        check_flavour(chain.endpoints, is_async=is_async)
        if hedge is not None and (generates or not is_async):
            raise TypeError(
                "hedge= starts attempts side by side, which only async functions can do: "
                f"{name!r} is not an async def function"
            )
        # A plain function's wrapper is its driver itself, a plain function too, not a wrapt
        # proxy (it is on every healthy call's path, where a proxy's call costs µs); it
        # binds as methods do. Its globals are failover's, so that tracebacks, debuggers
        # and coverage see it as failover's frame; frameworks follow ``__wrapped__``.
        plain = type(func) is types.FunctionType
        run: Callable[[Callable[..., Any], Any, Any], Any]
        if generates:
            iterate = iterate_async if is_async else iterate_sync

            def run(fn: Callable[..., Any], args: Any, kwargs: Any) -> Any:
                return iterate(chain, fn, name, (inject, args, kwargs))

        else:

            def driven(fn: Callable[..., Any]) -> Callable[..., Any]:
                if is_async:
                    return async_driver(chain, fn, inject, named, always)
                return sync_driver(chain, fn, inject, named)

            if plain:
                return functools.update_wrapper(driven(func), func)

            def run(fn: Callable[..., Any], args: Any, kwargs: Any) -> Any:
                return driven(fn)(*args, **kwargs)

        # Anything else (a generator, a descriptor such as another wrapt decorator, a
        # callable object, an lru_cache) gets a proxy: it binds through what it wraps,
        # shows its attributes, and a generator's call returns the driver's own
        # generator, so the caller's send, throw and close reach it (a wrapping
        # generator would relay them, which ``async for`` cannot).
        def proxied(wrapped: Callable[..., Any], _: Any, args: Any, kwargs: Any) -> Any:
            if kwargs.get(inject) is not None:
                return wrapped(*args, **kwargs)
            return run(wrapped, args, kwargs)

        decorated: Callable[P, R] = _Proxy(func, proxied)
        return decorated

    return decorate


class _BoundProxy(wrapt.BoundFunctionWrapper):  # type: ignore[type-arg]
    """A :class:`_Proxy` bound to an instance: pickled and copied as a bound method is
    (its instance, and the name to find it by), where a proxy would refuse."""

    def __reduce_ex__(self, protocol: object) -> tuple[Any, ...]:
        # Read from the class (``Bot.lines``), it has no instance: found on the class.
        owner = self._self_owner if self._self_instance is None else self.__self__
        return getattr, (owner, self.__name__)

    def __copy__(self) -> _BoundProxy:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        if self._self_instance is None:
            return self
        return getattr(copy.deepcopy(self.__self__, memo), self.__name__)


class _Proxy(wrapt.FunctionWrapper):  # type: ignore[type-arg]
    """A decorated callable that is not a plain function (see ``decorate``): pickled and
    copied as a function is (by module and name: process pools pickle what they run),
    where a proxy would refuse."""

    __bound_function_wrapper__ = _BoundProxy

    def __reduce_ex__(self, protocol: object) -> str:
        name = getattr(self.__wrapped__, "__qualname__", None)
        if name is None:  # a callable object or a partial: it has no name to be found by
            kind = type(self.__wrapped__).__name__
            raise TypeError(f"cannot pickle a decorated {kind!r} object: it has no name")
        return name  # type: ignore[no-any-return]

    def __copy__(self) -> _Proxy:
        return self

    def __deepcopy__(self, memo: object) -> _Proxy:
        return self
