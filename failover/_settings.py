"""What a chain is configured with: the public keyword options, as one frozen object.

Also what ``on_attempt=`` receives after each attempt (:class:`Event`).
"""

from __future__ import annotations

import enum
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ._health import Breaker, HealthStore
from ._policy import Policy
from ._retry import Retry

# The defaults of the public signatures: one object each, so that ``breaker=`` and
# ``retry=`` left unset read the same in every chain.
DEFAULT_BREAKER = Breaker()
DEFAULT_RETRY = Retry()


class Outcome(str, enum.Enum):
    """How an attempt ended (a ``str`` enum: ``outcome == "success"`` holds too)."""

    SUCCESS = "success"
    FAILURE = "failure"
    SKIPPED = "skipped"


@dataclass(frozen=True, slots=True)
class Event:
    """What ``on_attempt=`` receives after each attempt."""

    provider: str
    outcome: Outcome
    error: BaseException | None
    elapsed: float


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a chain was configured with, besides its providers."""

    policy: Policy = field(default_factory=Policy)
    breaker: Breaker | None = field(default_factory=Breaker)
    retry: Retry | None = field(default_factory=Retry)
    store: HealthStore | None = None
    attempt_timeout: float | None = None
    deadline: float | None = None
    first_token_timeout: float | None = None
    stall_timeout: float | None = None
    hedge: float | None = None
    on_attempt: Callable[[Event], object] | None = None

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> Settings:
        """The public keyword options as settings, in one place.

        ``with_fallback``, ``fallback_clients``, ``OpenAI`` and ``AsyncOpenAI`` each spell
        the options out (users read them in their IDE) and pass their ``locals()`` here.
        """
        return cls(
            policy=Policy(options["on"]),
            breaker=options["breaker"],
            retry=options["retry"],
            store=options["health"],
            attempt_timeout=options["attempt_timeout"],
            deadline=options["deadline"],
            first_token_timeout=options["first_token_timeout"],
            stall_timeout=options["stall_timeout"],
            hedge=options["hedge"],
            on_attempt=options["on_attempt"],
        )

    def __post_init__(self) -> None:
        for name in (
            "attempt_timeout",
            "deadline",
            "first_token_timeout",
            "stall_timeout",
            "hedge",
        ):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")
        callback = self.on_attempt
        if inspect.iscoroutinefunction(callback) or inspect.iscoroutinefunction(
            getattr(callback, "__call__", None)  # noqa: B004 - an object whose __call__ is async
        ):
            raise TypeError(
                "on_attempt is called, never awaited, so an async callback would never run: "
                "pass a plain function and schedule the async work from it, e.g. "
                "`lambda event: tasks.add(asyncio.get_running_loop().create_task(record(event)))` "
                "(keep a reference to the task), or `asyncio.run_coroutine_threadsafe(...)` "
                "from a sync caller"
            )
