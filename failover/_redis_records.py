"""How :class:`~failover.redis.RedisHealth` lays out its records in Redis.

One key per provider, ``{namespace}:health:{<provider key>}``: the braces are a hash
tag, so every key of one provider lands on one Redis Cluster slot. A record is JSON
that starts with its version, ``{"v":<n>,...}``; the version is a number that only
grows (``max(previous + 1, the server's time in µs)``, so it keeps growing after a
Redis restart that lost every key), which lets a subscriber drop news older than
what it holds. Anything else under a key (junk, another writer's value, a missing
field, a string where a count belongs) decodes as no record: the next write starts
it afresh.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, NamedTuple

from ._activity import Tally
from ._health import BUCKETS, FRESH, Change, Counts, Health, Reason, State, folded


def gather(tallies: dict[str, Tally], counts: dict[str, Counts]) -> None:
    """Move the successes tallied per key into ``counts`` (under the store's lock)."""
    for key, tally in tallies.items():
        if tally:
            add_counts(counts, key, tally.drain())


def add_counts(counts: dict[str, Counts], key: str, more: Counts) -> None:
    """``more`` counted in ``key``'s ``counts``; what nets nothing (a count and its
    take-back) is dropped: it is no write."""
    mine = counts.setdefault(key, {})
    for start, calls in more.items():
        mine[start] = mine.get(start, 0) + calls
        if not mine[start]:
            del mine[start]
    if not mine:
        del counts[key]


#: Compare-and-set on the record's version, the only server-side logic (the breaker's
#: rules stay in Python, one copy, shared with the in-process store). On a version that
#: differs, the current value comes back, so the caller recomputes without another GET.
#: A write is published on the namespace's channel, value then provider key, so that
#: every subscribed process learns of it without asking. TIME rides along: every host
#: reads one clock, the server's.
COMPARE_AND_SET = """
local cur = redis.pcall('GET', KEYS[1])
if type(cur) ~= 'string' then cur = false end
local v = cur and string.match(cur, '^{"v":(%d+),') or ''
local t = redis.call('TIME')
if v ~= ARGV[1] then
    return {0, cur, t[1], t[2]}
end
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local version = string.format('%.0f', math.max((tonumber(v) or 0) + 1, now))
local value = '{"v":' .. version .. ',' .. ARGV[2]
redis.call('SET', KEYS[1], value, 'PX', ARGV[3])
redis.call('PUBLISH', ARGV[4], value .. '\\n' .. ARGV[5])
return {1, version, t[1], t[2]}
"""

# The script's version pattern, to the byte: the CAS compares what both of them read.
_VERSION = re.compile(rb'\{"v":(\d+),')
_COUNTS = ("consecutive_failures", "calls", "failures", "failovers_served", "skipped")
_TIMES = ("open_until", "cooldown", "probe_until")
MAX_NAME = 256


class Keys:
    """The Redis names of one namespace."""

    def __init__(self, namespace: str) -> None:
        self.prefix = f"{namespace}:health:"
        self.pattern = self.prefix + "{*}"
        self.channel = f"{namespace}:health:changes"

    def record(self, key: str) -> str:
        return f"{self.prefix}{{{key}}}"

    def provider(self, name: bytes | str) -> str | None:
        """The provider key of a record's Redis key (None: not one of ours)."""
        text = name.decode("utf-8", "replace") if isinstance(name, bytes) else name
        if text.startswith(self.prefix + "{") and text.endswith("}"):
            return text[len(self.prefix) + 1 : -1]
        return None


class Stored(NamedTuple):
    """A record as read from Redis: ``version`` is what the CAS compares ('' for none),
    ``order`` the same as a number (-1 for none), ``name`` None when there is no record
    or it did not validate, ``writer`` the id of the write that made it (if any)."""

    version: str
    order: int
    name: str | None
    health: Health
    writer: str = ""


ABSENT = Stored("", -1, None, FRESH)


def encode(name: str, record: Health, writer: str) -> str:
    """The record as the script's ARGV: its JSON without the leading ``{``, which the
    script writes after the version. ``writer`` tells the writing process that news of
    this record is news of its own write."""
    reason = record.reason.value if record.reason is not None else None
    body = {**record._asdict(), "state": record.state.value, "reason": reason, "name": name}
    return json.dumps({**body, "w": writer}, separators=(",", ":"))[1:]


def as_bytes(raw: object) -> bytes | None:
    """A reply as bytes (a client may decode responses), None for no value."""
    if raw is None or raw is False:
        return None
    if isinstance(raw, str):
        return raw.encode("utf-8", "surrogateescape")
    return raw if isinstance(raw, bytes) else None


def decode(raw: object) -> tuple[Stored, bool]:
    """The stored record, and whether the value was junk (to log: it starts afresh)."""
    data = as_bytes(raw)
    if data is None:
        return ABSENT, False
    match = _VERSION.match(data)
    version = match.group(1).decode() if match else ""
    order = int(version) if version else -1
    try:
        parsed = json.loads(data)
        name, health = _validate(parsed)
    except (ValueError, KeyError, TypeError):
        return Stored(version, order, None, FRESH), True
    writer = parsed.get("w")
    return Stored(version, order, name, health, writer if isinstance(writer, str) else ""), False


def _count(value: object) -> int:
    if type(value) is not int or value < 0:
        raise TypeError("a count must be a non-negative integer")
    return value


def _time(value: object) -> float:
    if type(value) not in (int, float):
        raise TypeError("a time must be a number")
    number = float(value)  # type: ignore[arg-type]
    if not math.isfinite(number) or number < 0:
        raise TypeError("a time must be finite and non-negative")
    return number


def _validate(data: Any) -> tuple[str, Health]:
    """A record's name and Health, or an error when anything does not hold."""
    if not isinstance(data, dict):
        raise TypeError("a record is an object")
    name = data["name"]
    if not isinstance(name, str) or not name or len(name) > MAX_NAME:
        raise TypeError("a record names its provider")
    reason = data.get("reason")  # records of earlier versions have neither reason nor window
    window = data.get("window", [])
    if not isinstance(window, list) or len(window) > BUCKETS:
        raise TypeError("a window is a short list")
    buckets = []
    for bucket in window:
        start, calls, failures = bucket  # a ValueError or TypeError unless a triple
        buckets.append((_time(start), _count(calls), _count(failures)))
    fields: dict[str, Any] = {field: _count(data[field]) for field in _COUNTS}
    fields.update({field: _time(data[field]) for field in _TIMES})
    health = Health(
        state=State(data["state"]),
        reason=None if reason is None else Reason(reason),
        window=tuple(buckets),
        **fields,
    )
    return name, health


# -- what a store keeps of its records -------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class Write:
    """A change (or counted successes) on its way to Redis, shown in the cache until it
    lands."""

    change: Change[Any]
    counts: Counts  # the successes it carries to Redis
    now: float
    id: str  # in the record it writes: news of that record is news that it landed

    def apply(self, h: Health) -> Health:
        return self.change(folded(h, self.counts), self.now)[0]


def unchanged(h: Health, now: float) -> tuple[Health, None]:
    """The change of a write that only carries counted successes."""
    return h, None


class Entry:
    """What a process knows of one provider's record."""

    __slots__ = ("known", "name", "record", "writes")

    def __init__(self) -> None:
        self.name: str | None = None
        self.record: Stored = Stored("", -1, None, FRESH)  # as Redis last told
        self.known = False  # read from Redis (or written) at least once
        self.writes: list[Write] = []  # on their way, not landed yet

    def shown(self, h: Health) -> Health:
        """``h`` with the writes on their way applied, in order."""
        for write in self.writes:
            h = write.apply(h)
        return h

    def drop(self, write: Write) -> bool:
        """``write`` leaves without landing; False when it is gone: it landed."""
        if write not in self.writes:
            return False
        self.writes.remove(write)
        return True
