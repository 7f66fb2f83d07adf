"""A chain: the providers of a decorator, drop-in client or block form, and what is
built once for all of its calls (scopes, handed-out clients, admission rules).

A call's first attempt on a closed provider runs on the chain alone (``first``,
``served``): the healthy path builds no :class:`~failover._engine.Run`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ._activity import ACTIVITY
from ._health import Breaker, Health, State, Verdict, admit, clean, default_store, succeeded
from ._ownership import Ownership
from ._providers import Endpoint
from ._scope import Scope
from ._settings import Settings
from ._telemetry import Observer, tracing
from ._tracking import Tracked

logger = logging.getLogger("failover")


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
    lean: bool = field(init=False, repr=False, compare=False)

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
        breaker = self.settings.breaker
        admits = None
        if breaker is not None:
            admits = tuple(
                functools.partial(_admit, breaker=breaker, force=f) for f in (False, True)
            )
        object.__setattr__(self, "admits", admits)
        # Whether a call's first attempt may run without a Run (see ``lean``): nothing
        # per call to set up (no time budget) nor to report (no on_attempt callback).
        s = settings
        lean = s.attempt_timeout is None and s.deadline is None and s.on_attempt is None
        object.__setattr__(self, "lean", lean)

    def first(self) -> Endpoint | None:
        """The provider a call may try at once, with no :class:`Run` (the healthy path):
        the first, when the chain is lean, nothing traces and its breaker is closed.
        None: the call takes the full path. A failure there continues in ``Run.resumed``."""
        if not self.lean or tracing():
            return None
        endpoint = self.endpoints[0]
        breaker = self.settings.breaker
        store = self.settings.store or default_store()
        if breaker is not None and store.peek(endpoint.key).state is not State.CLOSED:
            return None
        return endpoint

    def served(
        self,
        endpoint: Endpoint,
        elapsed: float,
        after_failover: bool = False,
        observer: Observer | None = None,
    ) -> None:
        """``endpoint`` answered a call, after ``elapsed`` seconds."""
        breaker = self.settings.breaker
        if breaker is not None:
            store = self.settings.store or default_store()
            if not after_failover and clean(store.peek(endpoint.key)):
                store.count(endpoint.key, endpoint.name, breaker)  # no new record
            else:

                def change(h: Health, now: float) -> tuple[Health, State]:
                    return succeeded(h, breaker, now, after_failover), h.state

                before = store.update(endpoint.key, endpoint.name, change, breaker.clock)
                if before is not State.CLOSED and observer is not None:
                    observer.transition(endpoint, Health())  # (only traced calls see it)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("failover: %s served in %.3fs", endpoint.name, elapsed)
        if observer is None:
            ACTIVITY.served(endpoint.key, endpoint.name)
        else:
            observer.succeeded(endpoint)

    def handed_out(self, client: Any, scope: Scope) -> Any:
        """``client`` (an endpoint's) as handed out for this chain's ``scope``."""
        entry = self.handed.get(id(scope))
        if entry is None or entry[0] is not client:
            entry = self.handed[id(scope)] = (client, Tracked(client, scope))
        return entry[1]
