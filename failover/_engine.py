"""The engine: every decision of a failover call, and no I/O.

A :class:`Run` is one logical call across a chain of providers. Drivers (the
block-form iterator in ``_attempts``, the hedging driver) ask it which provider
to try next, tell it how each attempt ended, and raise what it builds when it
gives up. Sync and async drivers share it, so the rules exist once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Generator
from typing import Any

from ._chain import Chain
from ._errors import (
    Attempt,
    DeadlineExceeded,
    FailoverError,
    ProviderBound,
    ProviderSkipped,
    add_note,
    bound_in,
    describe,
)
from ._health import (
    Breaker,
    Health,
    State,
    Verdict,
    count_skip,
    default_store,
    failed,
    released,
    unavailable,
)
from ._policy import Fault, fault_kind, provider_fault, retry_after
from ._providers import Endpoint
from ._retry import timed_out
from ._scope import Scope
from ._settings import Event, Outcome
from ._telemetry import Observer, observe
from ._tracking import Tracked

logger = logging.getLogger("failover")


class Run:
    """One call's way through its chain."""

    __slots__ = (
        "_chain",
        "_exhausted",
        "_force",
        "_forced",
        "_pending",
        "_probe",
        "_retry_at",
        "_settings",
        "_store",
        "_tried",
        "attempts",
        "done",
        "observer",
        "started",
    )

    def __init__(self, chain: Chain, operation: object = "block") -> None:
        settings = chain.settings
        self._chain = chain
        self._settings = settings
        self._store = chain.settings.store or default_store()
        self._pending = list(chain.endpoints)
        self._force = False
        self._probe: set[int] = set()
        self._exhausted = False
        self._retry_at = 0.0  # monotonic time before which a planned retry must not start
        self._forced: Endpoint | None = None  # a retry the provider's own Retry-After allows
        self.attempts: list[Attempt] = []
        self.started = time.monotonic()
        self.done = False  # an attempt succeeded
        self._tried = False  # some provider was tried (or skipped) already
        # Traces, metrics and the rolling counters; ``operation`` names the call in traces.
        self.observer: Observer = observe(settings.store, operation)

    @classmethod
    def resumed(cls, chain: Chain, operation: object, endpoint: Endpoint, started: float) -> Run:
        """The call whose first attempt, on ``endpoint``, ``Chain.ready`` let run alone."""
        run = cls(chain, operation)
        run.started = started
        run._tried = True
        del run._pending[0]
        run.observer.started(endpoint, None if chain.settings.breaker is None else State.CLOSED)
        return run

    def _all_open(self, breaker: Breaker) -> bool:
        """Whether every provider is open; if so, try them all, soonest-to-recover first.

        The breaker never refuses a call that might succeed. Asked at the first skip
        only, so the healthy path never reads the store for it.
        """
        records, now = self._store.read([e.key for e in self._pending], breaker.clock)
        if not all(unavailable(record, now) for record in records):
            return False
        until = [max(record.open_until, record.probe_until) for record in records]
        order = sorted(range(len(until)), key=until.__getitem__)
        self._pending = [self._pending[i] for i in order]
        self._force = True
        return True

    # -- decisions -------------------------------------------------------------

    @property
    def wait(self) -> float:
        """Seconds the driver must sleep before asking :meth:`next` for the next attempt.

        Zero unless the engine retries the provider that just failed: then ``next``
        hands that provider back once the pause is over.
        """
        return max(0.0, self._retry_at - time.monotonic()) if self._retry_at else 0.0

    def next(self) -> Endpoint | None:
        """The provider to try now, or None when the call must give up."""
        steps = self._next()
        try:
            request = next(steps)
            while True:  # a provider that is not closed: the store decides its admission
                request = steps.send(self._store.update(*request))
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]

    async def anext(self) -> Endpoint | None:
        """:meth:`next` for async drivers: a shared store's answer is awaited, never
        waited for on the event loop's thread."""
        steps = self._next()
        try:
            request = next(steps)
            while True:
                request = steps.send(await self._store.aupdate(*request))
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]

    def _next(self) -> Generator[tuple[Any, ...], Any, Endpoint | None]:
        """The decision behind :meth:`next`: yields the store updates it needs answered."""
        settings = self._settings
        deadline = settings.deadline
        self._retry_at = 0.0  # the driver waited out any pause before asking
        while self._pending:
            if deadline is not None and self._deadline_passed():
                return None
            endpoint = self._pending[0]
            breaker = settings.breaker
            if breaker is None:
                self.observer.started(endpoint, None)
                return self._pending.pop(0)
            if self._store.peek(endpoint.key).state is State.CLOSED:
                # The healthy path: a closed provider is tried, and nothing is written.
                self._tried = True
                self.observer.started(endpoint, State.CLOSED)
                return self._pending.pop(0)
            # A retry that the provider's Retry-After asked for is not blocked by the
            # opening that same Retry-After caused (others skip it until then).
            forced, self._forced = self._force or endpoint is self._forced, None
            admit = self._chain.admits[forced]  # type: ignore[index]
            verdict, record, now = yield endpoint.key, endpoint.name, admit, breaker.clock
            if verdict is Verdict.SKIP and not self._tried and self._all_open(breaker):
                continue
            self._tried = True
            self._pending.pop(0)
            if verdict is Verdict.PROBE:
                self._probe.add(id(endpoint))
                self.observer.transition(endpoint, record)
            if verdict is not Verdict.SKIP:
                self.observer.started(endpoint, record.state)
                return endpoint
            self._skip(endpoint, record, now, breaker)
        return None

    def scope(self, endpoint: Endpoint) -> tuple[Scope, bool]:
        """The attempt's scope, and whether it is the chain's own (the same for every call)."""
        settings = self._settings
        if settings.attempt_timeout is None and settings.deadline is None:
            return self._chain.scopes[id(endpoint)], True
        attempt, deadline = settings.attempt_timeout, settings.deadline
        scope = Scope(
            endpoint,
            ends_at=time.monotonic() + attempt if attempt is not None else None,
            deadline_at=self.started + deadline if deadline is not None else None,
            deadline=deadline,
            first_token_timeout=settings.first_token_timeout,
            stall_timeout=settings.stall_timeout,
            ownership=self._chain.ownership,
        )
        return scope, False

    def handed_out(self, client: Any, scope: Scope, shared: bool) -> Any:
        """The client an attempt of ``scope`` hands out: bound to it (kept, when shared)."""
        return self._chain.handed_out(client, scope) if shared else Tracked(client, scope)

    def failed(self, endpoint: Endpoint, exc: BaseException, elapsed: float) -> bool:
        """Record a failed attempt; True when the call moves on to the next provider."""
        bound = bound_in(exc)
        if bound is not None:
            self._bound(endpoint, bound)
            return True
        settings = self._settings
        breaker = settings.breaker
        judging: Exception | None = None
        try:
            fails_over = settings.policy.fails_over(exc)
        except Exception as error:  # on='s predicate raised: the caller gets that error
            fails_over, judging = False, error
        # What a framework raised its own error from is what tells of the provider.
        fault = provider_fault(exc)
        news = exc if fault is None else fault
        wait = retry_after(news, breaker.clock if breaker is not None else time.time)
        record = None
        # A deadline that ran out while the provider was delivering is the caller's
        # budget, no news of the provider's health.
        told = not isinstance(exc, DeadlineExceeded) and (fails_over or fault is not None)
        if breaker is not None and told:
            # News of the provider's health, even when raised to the caller: a refusal
            # proves it answers, a 5xx that on= keeps from failing over does not.
            record = self._record(endpoint, breaker, news, wait, elapsed)
        elif breaker is not None and id(endpoint) in self._probe:
            # Says nothing of the provider's health: let another call probe it.
            self._store.update(
                endpoint.key, endpoint.name, lambda h, now: (released(h), None), breaker.clock
            )
        if judging is not None:
            # Still an attempt that ended (and, above, a probe that is no longer claimed).
            self._emit(endpoint, Outcome.FAILURE, exc, elapsed)
            self.observer.failed(endpoint, exc, fails_over=False, retry=False)
            raise judging
        if not fails_over:
            self.observer.failed(endpoint, exc, fails_over=False, retry=False)
            return False
        self._add(Attempt(endpoint.name, exc, elapsed))
        then, retry = self._then(endpoint, news, wait, record)
        logger.warning(
            "failover: %s failed with %s after %.3fs; %s",
            endpoint.name,
            describe(exc) if fault in (None, exc) else f"{describe(exc)} from {describe(fault)}",
            elapsed,
            then,
        )
        self._emit(endpoint, Outcome.FAILURE, exc, elapsed)
        self.observer.failed(endpoint, exc, fails_over=True, retry=retry)
        return True

    def succeeded(self, endpoint: Endpoint, elapsed: float) -> None:
        # A provider that served after its own retry served no failover.
        after_failover = bool(self.attempts) and any(
            a.provider != endpoint.name and not isinstance(a.error, ProviderBound)
            for a in self.attempts
        )
        self._chain.served(endpoint, self.observer, after_failover)
        # Only a call that had to try again is logged: a healthy call's line would be
        # one per call, which is what the metrics are for (skips are logged as such).
        failed = [
            a for a in self.attempts if not a.skipped and not isinstance(a.error, ProviderBound)
        ]
        if failed and logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "failover: %s served in %.3fs, after %d failed attempt(s)",
                endpoint.name,
                elapsed,
                len(failed),
            )
        if self._settings.on_attempt is not None:
            self._emit(endpoint, Outcome.SUCCESS, None, elapsed)

    def error(self) -> FailoverError:
        """What the call raises when no provider is left."""
        deadline = self._settings.deadline
        last = self.attempts[-1].error if self.attempts else None
        if (
            deadline is not None
            and self._deadline_passed()
            and not self._exhausted
            and not isinstance(last, DeadlineExceeded)
        ):
            self._exhausted = True
            self._add(
                Attempt("deadline", DeadlineExceeded(deadline), time.monotonic() - self.started)
            )
        error = FailoverError.from_attempts(self.attempts)
        self.observer.gave_up(error)
        return error

    # -- bookkeeping -----------------------------------------------------------

    def _then(
        self, endpoint: Endpoint, exc: BaseException, wait: float | None, record: Health | None
    ) -> tuple[str, bool]:
        """Decide what follows a failure that fails over, and say it for the log; True
        when that is a retry of the same provider."""
        pause = self._plan_retry(endpoint, exc, wait, record)
        opened = ""
        if record is not None and record.state is State.OPEN and record.reason is not None:
            opened = f"circuit open ({record.reason.value}); "
        if pause is not None:
            return f"{opened}retrying it in {pause:.3f}s", True
        upcoming = self._pending[0].name if self._pending and not self._deadline_passed() else None
        return opened + (f"trying {upcoming}" if upcoming else "no provider left"), False

    def _plan_retry(
        self, endpoint: Endpoint, exc: BaseException, wait: float | None, record: Health | None
    ) -> float | None:
        """Retry ``endpoint`` next, after a pause? The pause in seconds, or None."""
        retry = self._settings.retry
        if retry is None or fault_kind(exc) is not Fault.UNWELL:
            return None
        if record is not None and record.state is not State.CLOSED and wait is None:
            return None  # the breaker opened (or stays open): stop hammering it
        tries = sum(a.provider == endpoint.name and not a.skipped for a in self.attempts)
        pause = retry.delay(exc, tries - 1, wait)
        deadline = self._settings.deadline
        if pause is None or (
            deadline is not None and self.started + deadline - time.monotonic() <= pause
        ):
            return None  # nothing to retry, or the budget cannot cover the wait
        self._pending.insert(0, endpoint)
        self._retry_at = time.monotonic() + pause
        self._forced = endpoint if wait is not None else None
        return pause

    def _deadline_passed(self) -> bool:
        deadline = self._settings.deadline
        return deadline is not None and time.monotonic() - self.started >= deadline

    def _record(
        self,
        endpoint: Endpoint,
        breaker: Breaker,
        exc: BaseException,
        wait: float | None,
        elapsed: float,
    ) -> Health:
        """Record a failure; the provider's record as it left it."""
        kind, probe, slow = fault_kind(exc), id(endpoint) in self._probe, timed_out(exc)
        self._probe.discard(id(endpoint))  # a retry is not the probe unless admitted as one

        def change(h: Health, now: float) -> tuple[Health, tuple[Health, State]]:
            new = failed(h, breaker, now, kind, wait, probe, elapsed, slow)
            return new, (new, h.state)

        record, before = self._store.update(endpoint.key, endpoint.name, change, breaker.clock)
        if record.state is not before:
            self.observer.transition(endpoint, record)
        return record

    def _skip(self, endpoint: Endpoint, record: Health, now: float, breaker: Breaker) -> None:
        self._store.update(
            endpoint.key, endpoint.name, lambda h, now: (count_skip(h), None), breaker.clock
        )
        open_for = max(0.0, record.open_until - now)
        reason = "circuit open" if open_for else "a recovery probe is in flight"
        skipped = ProviderSkipped(endpoint.name, reason, open_for)
        self._add(Attempt(endpoint.name, skipped, 0.0, skipped=True))
        logger.info("failover: skipping %s (%s)", endpoint.name, reason)
        self._emit(endpoint, Outcome.SKIPPED, skipped, 0.0)
        self.observer.skipped(endpoint, reason, record.state)

    def _bound(self, endpoint: Endpoint, bound: ProviderBound) -> None:
        """``endpoint`` cannot know a resource the call names: only its owner is left.

        Nothing was sent, so the breaker hears nothing; the owner is tried even when
        its circuit is open, since no other provider can serve the call.
        """
        breaker = self._settings.breaker
        if breaker is not None and id(endpoint) in self._probe:
            self._probe.discard(id(endpoint))
            self._store.update(
                endpoint.key, endpoint.name, lambda h, now: (released(h), None), breaker.clock
            )
        others = [e for e in self._pending if e.name != bound.owner]
        self._pending = [e for e in self._pending if e.name == bound.owner]
        self._force = True
        logger.info("failover: %s; trying it alone", bound.message)
        for skipped in (endpoint, *others):
            error = bound if skipped is endpoint else bound.on(skipped.name)
            self._add(Attempt(skipped.name, error, 0.0, skipped=True))
            self._emit(skipped, Outcome.SKIPPED, error, 0.0)

    def _add(self, attempt: Attempt) -> None:
        number = len(self.attempts) + 1
        add_note(
            attempt.error,
            f"failover: provider {attempt.provider!r}, attempt {number}, {attempt.elapsed:.3f}s",
        )
        self.attempts.append(attempt)

    def _emit(
        self, endpoint: Endpoint, outcome: Outcome, exc: BaseException | None, elapsed: float
    ) -> None:
        callback = self._settings.on_attempt
        if callback is None:
            return
        try:
            callback(Event(endpoint.name, outcome, exc, elapsed))
        except Exception:
            # The caller's metrics code: it must neither discard a paid answer nor stop
            # failover. KeyboardInterrupt and the like still propagate.
            logger.exception(
                "failover: on_attempt callback raised on the %s event of %s; ignored",
                outcome.value,
                endpoint.name,
            )
