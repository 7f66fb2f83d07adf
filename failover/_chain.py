"""A chain: the providers of a decorator, drop-in client or block form, and what is
built once for all of its calls (scopes, handed-out clients, admission rules).

A call's first attempt on a closed provider runs on the chain alone (``lean``,
``served``): the healthy path builds no :class:`~failover._engine.Run`.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ._activity import ACTIVITY, GATHER_AT, STEP
from ._health import STORES, Breaker, Health, HealthStore, State, Verdict, admit, succeeded
from ._ownership import Ownership
from ._providers import Endpoint, Provider, endpoints
from ._scope import Scope
from ._settings import Settings
from ._telemetry import Observer, tracing
from ._tracking import Tracked

Admit = Callable[[Health, float], tuple[Health, tuple[Verdict, Health, float]]]


def _admit(
    h: Health, now: float, *, breaker: Breaker, force: bool
) -> tuple[Health, tuple[Verdict, Health, float]]:
    new, verdict = admit(h, breaker, now, force)
    return new, (verdict, new, now)


@dataclass(frozen=True, slots=True)
class Chain:
    endpoints: tuple[Endpoint, ...]
    settings: Settings = field(default_factory=Settings)
    # Built once, not per call: without a time budget an attempt's scope never
    # changes, and the breaker's admission rule is one of two (normal, forced).
    scopes: dict[int, Scope] = field(init=False, repr=False, compare=False)
    admits: tuple[Admit, Admit] | None = field(init=False, repr=False, compare=False)
    # The clients handed out for those scopes, by scope: (the endpoint's client, bound).
    # Kept here, so they live as long as the chain, and one per scope (an async
    # endpoint's client changes with the loop: the newest replaces the last).
    handed: dict[int, tuple[Any, Any]] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )
    ownership: Ownership = field(init=False, repr=False, compare=False)
    direct: bool = field(init=False, repr=False, compare=False)
    # The provider a healthy call tries first, and its scope (read on every call).
    head: Endpoint = field(init=False, repr=False, compare=False)
    head_scope: Scope = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        settings = self.settings
        ownership = Ownership(self.endpoints, settings.store)
        object.__setattr__(self, "ownership", ownership)
        scopes = {
            id(e): Scope(
                e,
                first_token_timeout=settings.first_token_timeout,
                stall_timeout=settings.stall_timeout,
                ownership=ownership,
            )
            for e in self.endpoints
        }
        object.__setattr__(self, "scopes", scopes)
        object.__setattr__(self, "head", self.endpoints[0])
        object.__setattr__(self, "head_scope", scopes[id(self.endpoints[0])])
        breaker = self.settings.breaker
        admits = None
        if breaker is not None:
            admits = tuple(
                functools.partial(_admit, breaker=breaker, force=f) for f in (False, True)
            )
        object.__setattr__(self, "admits", admits)
        # Whether a call's first attempt may run without a Run (``lean``): nothing
        # per call to set up (no time budget) nor to report (no on_attempt callback).
        s = settings
        direct = s.attempt_timeout is None and s.deadline is None and s.on_attempt is None
        object.__setattr__(self, "direct", direct)

    def __reduce__(self) -> tuple[Callable[..., Chain], tuple[Any, ...]]:
        """A chain pickles as what it is made of, its providers and settings, and is built
        anew where it is unpickled: cloudpickle sends a decorated function of ``__main__``
        (or of a notebook) by value, chain included, to the workers of joblib, Ray or Dask,
        each of which has its own clients and breakers."""
        for endpoint in self.endpoints:
            spec = endpoint.spec
            if spec is None or "http_client" in spec.client_options:
                what = "is a client object" if spec is None else "has its own http_client"
                raise TypeError(
                    f"cannot pickle failover's chain: its provider {endpoint.name!r} {what}, "
                    "which holds connections (pass a failover.Provider without one: it "
                    "builds its clients where it is used)"
                )
        if self.settings.store is not None:
            raise TypeError(
                "cannot pickle failover's chain: its health store holds connections and "
                "locks (configure one in each process with failover.configure(health=...))"
            )
        specs = tuple(e.spec for e in self.endpoints)
        return _built, (specs, self.settings)

    def lean(self, build: Callable[[Endpoint], Any]) -> Any:
        """The client (from ``build``, handed out) of a call's first attempt when it may
        run at once on ``head``, with no :class:`Run` (the healthy path): the chain is
        ``direct``, nothing traces, the head's breaker is closed and its client builds.
        None: the call takes the full path. When this first attempt fails, the call goes
        on in a :class:`Run` (``Run.resumed``, from the drivers' ``_resumed``).

        The healthy path runs with caches cold (the client's own work evicts failover's
        code between two calls), where each function called costs several µs: so it is
        written flat, here, in the drivers, :meth:`served` and ``tracked_method``.
        """
        if not self.direct or ("opentelemetry" in sys.modules and tracing()):
            return None
        endpoint = self.head
        breaker = self.settings.breaker
        if breaker is not None:
            store = self.settings.store or STORES[0]
            # store.peek(), when the store has a view: no call.
            if (
                store.views.get(endpoint.key) or store.peek(endpoint.key)
            ).state is not State.CLOSED:
                return None
        try:
            client = build(endpoint)
        except Exception:
            return None  # the full path records it as the failed attempt it is
        entry = self.handed.get(id(self.head_scope))
        if entry is not None and entry[0] is client:
            return entry[1]
        return self.handed_out(client, self.head_scope)

    def served(
        self, endpoint: Endpoint, *, after_failover: bool = False, observer: Observer | None = None
    ) -> None:
        """``endpoint`` answered a call (``after_failover``: after another provider failed).

        A clean success is the store's ``count`` and the activity's ``served``, inlined
        for the healthy path (see :meth:`lean`): a view read and two appends, no call.
        Either is called when the key has no tally yet, or a long one to gather.
        """
        key = endpoint.key
        breaker = self.settings.breaker
        if breaker is not None:
            store = self.settings.store or STORES[0]
            h = None if after_failover else (store.views.get(key) or store.peek(key))
            # A clean record (see ``clean``): the success changes nothing but counts.
            if h is not None and h.state is State.CLOSED and not h.consecutive_failures:
                tally = store.tallies.get(key)
                if tally is None or len(tally) >= GATHER_AT:
                    store.count(key, endpoint.name, breaker)
                else:  # bucket_start(), inlined
                    now, width = breaker.clock(), breaker.bucket_width
                    tally.append(None if width is None else now - now % width)
            else:
                self._recovered(endpoint, store, breaker, after_failover, observer)
        if observer is not None:
            observer.succeeded(endpoint)
            return
        tally = ACTIVITY.tallies.get(key)
        if tally is None or len(tally) >= GATHER_AT:
            ACTIVITY.served(key, endpoint.name)
        else:
            now = ACTIVITY.clock()
            tally.append(now - now % STEP)

    @staticmethod
    def _recovered(
        endpoint: Endpoint,
        store: HealthStore,
        breaker: Breaker,
        after_failover: bool,
        observer: Observer | None,
    ) -> None:
        """A success that changes the record (see ``succeeded``)."""

        def change(h: Health, now: float) -> tuple[Health, State]:
            return succeeded(h, breaker, now, after_failover), h.state

        before = store.update(endpoint.key, endpoint.name, change, breaker.clock)
        if before is not State.CLOSED and observer is not None:
            observer.transition(endpoint, Health())  # (only traced calls see it)

    def handed_out(self, client: Any, scope: Scope) -> Any:
        """``client`` (an endpoint's) as handed out for this chain's ``scope``."""
        entry = self.handed.get(id(scope))
        if entry is None or entry[0] is not client:
            entry = self.handed[id(scope)] = (client, Tracked(client, scope))
        return entry[1]


def _built(specs: tuple[Provider, ...], settings: Settings) -> Chain:
    """The chain of ``specs`` (an unpickled chain: see ``Chain.__reduce__``)."""
    return Chain(endpoints(specs), settings)
