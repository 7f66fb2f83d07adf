"""A chain: the providers of a decorator, drop-in client or block form, and what is
built once for all of its calls (scopes, handed-out clients, admission rules).

A call's first attempt on a closed provider runs on the chain alone (``ready``,
``lean``): the healthy path builds no :class:`~failover._engine.Run`.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ._activity import ACTIVITY, GATHER_AT, STEP, Tally
from ._health import (
    STORES,
    Breaker,
    Health,
    State,
    Verdict,
    admit,
    clean,
    succeeded,
)
from ._ownership import Ownership
from ._providers import Endpoint, Provider, endpoints
from ._scope import Scope
from ._settings import Settings
from ._telemetry import Observer, tracing
from ._tracking import Tracked

#: Where a lean call was counted as it started: the store's tally and the bucket start
#: appended to it (None, None without a breaker), then the activity's and its bucket
#: start; its failure takes them back there (``Chain.uncount``).
Counted = tuple["Tally | None", "float | None", Tally, float]
#: A lean call (``Chain.ready``): its handed-out client, and what tells, once it returned,
#: whether its success has more to do than the count it got when it started: the
#: store's views, the head's key and the record it was admitted on (the views and the
#: record are None without a breaker). A record is replaced when it changes: the same
#: object, nothing happened meanwhile (the drivers check this inline, with no call).
#: Last, where it was counted.
Lean = tuple[Any, "Mapping[str, Health] | None", str, "Health | None", Counted]
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
    #: The healthy path's admission, given the head's client now: see :func:`_readiness`.
    ready: Callable[[Any], Lean | None] = field(init=False, repr=False, compare=False)

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
        object.__setattr__(self, "ready", _readiness(self))

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

    def lean(self, build: Callable[[Endpoint], Any]) -> Lean | None:
        """:attr:`ready`'s answer when it has none only for want of what it reads: the head's
        client (from ``build``) not built or handed out yet, no tally yet, or a long one
        to gather. None: the call takes the full path (the chain is not ``direct``, calls
        are traced, the head's record is not clean, or its client does not build)."""
        if not self.direct or ("opentelemetry" in sys.modules and tracing()):
            return None
        endpoint, breaker = self.head, self.settings.breaker
        key, name = endpoint.key, endpoint.name
        store = self.settings.store or STORES[0]
        if breaker is not None and not clean(store.peek(key)):
            return None  # its success changes the record
        try:
            client = build(endpoint)
        except Exception:
            return None  # the full path records it as the failed attempt it is
        handed = self.handed_out(client, self.head_scope)
        step = ACTIVITY.served(key, name)  # counted as it starts (see ready)
        if breaker is None:
            return handed, None, key, None, (None, None, ACTIVITY.tallies[key], step)
        at = store.count(key, name, breaker)
        counted = (store.tallies.get(key), at, ACTIVITY.tallies[key], step)
        seen = store.views.get(key)
        if seen is not None and not clean(seen):
            seen = None  # a failure landed since the check above: the success settles it
        return handed, store.views, key, seen, counted

    def uncount(self, counted: Counted) -> None:
        """Take back the count of a lean call that did not serve (it failed, or raised the
        caller's error): the full path goes on from there, as if it had not been counted."""
        tally, at, served, step = counted
        served.take_back(step)
        if tally is not None:
            tally.take_back(at)

    def settle(self) -> None:
        """A lean call succeeded after its head's record changed (``Lean``): a success
        breaks a row of failures that began meanwhile, and closes the provider."""
        breaker, endpoint = self.settings.breaker, self.head
        assert breaker is not None  # (a lean call without a breaker has nothing to settle)
        store = self.settings.store or STORES[0]
        if not clean(store.peek(endpoint.key)):

            def change(h: Health, now: float) -> tuple[Health, None]:
                return succeeded(h, breaker, now, False, calls=0), None  # counted already

            store.update(endpoint.key, endpoint.name, change, breaker.clock)

    def served(self, endpoint: Endpoint, observer: Observer, after_failover: bool) -> None:
        """``endpoint`` answered a call of the full path (``after_failover``: after another
        provider failed); a lean call was counted by :meth:`lean`."""
        breaker = self.settings.breaker
        if breaker is not None:
            store = self.settings.store or STORES[0]
            key, name = endpoint.key, endpoint.name
            if not after_failover and clean(store.peek(key)):
                store.count(key, name, breaker)  # the success changes nothing but counts
            else:

                def change(h: Health, now: float) -> tuple[Health, State]:
                    return succeeded(h, breaker, now, after_failover), h.state

                if store.update(key, name, change, breaker.clock) is not State.CLOSED:
                    observer.transition(endpoint, Health())  # (only traced calls see it)
        observer.succeeded(endpoint)

    def handed_out(self, client: Any, scope: Scope) -> Any:
        """``client`` (an endpoint's) as handed out for this chain's ``scope``."""
        entry = self.handed.get(id(scope))
        if entry is None or entry[0] is not client:
            entry = self.handed[id(scope)] = (client, Tracked(client, scope))
        return entry[1]


def _readiness(chain: Chain) -> Callable[[Any], Lean | None]:
    """``chain.ready(current)``: the lean call (see :data:`Lean`) of a call whose first
    attempt may run at once on the head, whose client is ``current`` now: with no
    :class:`Run`, as the healthy path. None: the call goes to ``Chain.lean``, whose answer
    it is otherwise. When this first attempt fails, the call goes on in a Run
    (``Run.resumed``, from the drivers' ``_resumed``).

    The healthy path runs with caches cold (the client's own work evicts failover's code
    between two calls), where each function called costs µs: so what the chain fixes is
    read from this closure, and the call is counted as served here, before it is sent,
    not once it returns (where the same appends cost several µs: benchmarks/cold_path.py).
    When the call fails instead, ``Chain.uncount`` takes the count back, from the
    buckets it went to; when it succeeds, the drivers only check that the head's record
    was not replaced meanwhile.
    ``store.count()`` and ``ACTIVITY.served()``, inlined: ``lean`` calls them.
    """
    if not chain.direct:
        return lambda current: None  # every call has a Run, for its budget or its callback
    scope_id, handed = id(chain.head_scope), chain.handed
    key, breaker, given = chain.head.key, chain.settings.breaker, chain.settings.store
    width, clock = (None, None) if breaker is None else (breaker.bucket_width, breaker.clock)
    modules, tallies, closed = sys.modules, ACTIVITY.tallies, State.CLOSED

    def ready(current: Any) -> Lean | None:
        entry, served = handed.get(scope_id), tallies.get(key)
        if (
            entry is None
            or entry[0] is not current
            or served is None
            or len(served) >= GATHER_AT
            or ("opentelemetry" in modules and tracing())
        ):
            return None
        views = seen = tally = at = None
        if clock is not None:
            store = given or STORES[0]
            views, tally = store.views, store.tallies.get(key)
            seen = views.get(key)
            if (
                seen is None
                or seen.state is not closed
                or seen.consecutive_failures  # not clean: its success changes the record
                or tally is None
                or len(tally) >= GATHER_AT
            ):
                return None
            now = clock()
            at = None if width is None else now - now % width
            tally.append(at)
        now = ACTIVITY.clock()
        step = now - now % STEP
        served.append(step)
        return entry[1], views, key, seen, (tally, at, served, step)

    return ready


def _built(specs: tuple[Provider, ...], settings: Settings) -> Chain:
    """The chain of ``specs`` (an unpickled chain: see ``Chain.__reduce__``)."""
    return Chain(endpoints(specs), settings)
