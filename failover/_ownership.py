"""Provider-bound resources: an id goes back to the provider that made it.

A file, a stored response, a batch, a vector store ... exists on the provider that
created it, and nowhere else. Every id that a handed-out client receives from a
*resource-creating* call is remembered with its provider (by where it lives: base
URL and credential, not by name); a later call that names a remembered id (as a
path parameter or anywhere in its body) may only go to that provider: on any
other, :class:`~failover.ProviderBound` is raised before anything is sent, and the
engine then tries the owner alone.

Which calls create resources is read from the installed ``openai`` client, not
from a table of id prefixes: a method named like a maker (``create``,
``upload``, ``complete``, ``parse`` ...) of a resource that can be fetched back
(it has ``retrieve``, ``delete``, ``cancel`` or ``content``) whose answer model
carries an ``id``. A call with a ``store`` parameter creates one only when it
stores (``store=True``, or unset where the client documents that it defaults to
true).

A few calls start long-lived paid work (:data:`ONCE`): after an ambiguous failure
(the request was sent, the answer lost) they are not failed over, since the
provider may have accepted them.

The in-process registry is a bounded LRU (:data:`MEMORY_SIZE` ids); with
:class:`~failover.redis.RedisHealth` the owners are shared through Redis too.
"""

from __future__ import annotations

import collections
import contextvars
import functools
import inspect
import threading
import typing
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import httpx2
import openai
import pydantic
import typing_extensions

from ._errors import ProviderBound, add_note
from ._health import STORES, HealthStore, default_store
from ._openai import AsyncAPIResource, SyncAPIResource
from ._policy import mark_final

if TYPE_CHECKING:
    from ._providers import Endpoint

#: How many ids the in-process registry keeps (least recently used ones go first).
MEMORY_SIZE = 10_000

#: Calls that start long-lived paid work: ``(resource module, method)`` under
#: ``openai.resources``. Never re-sent after an ambiguous failure.
ONCE = frozenset(
    {
        ("batches", "create"),
        ("fine_tuning.jobs.jobs", "create"),
        ("evals.runs.runs", "create"),
        ("vector_stores.file_batches", "create"),
        ("vector_stores.file_batches", "create_and_poll"),
        ("vector_stores.file_batches", "upload_and_poll"),
        ("uploads.uploads", "complete"),
        ("uploads.uploads", "upload_file_chunked"),
    }
)

_MAKERS = ("create", "upload", "complete", "parse", "remix", "edit", "extend", "compact")
_FETCHED_BACK = ("retrieve", "delete", "cancel", "content")
# Keys that end in _id but name no resource of the provider's (tool calls, items of
# the request itself): never looked up.
_NOT_RESOURCES = frozenset({"tool_call_id", "call_id", "item_id", "safety_identifier"})
_HOLDERS = frozenset({"conversation", "container"})  # an id as a string, or {"id": ...}
MAX_ID = 256  # longer strings are no provider's ids: never remembered, nor looked up
# Failures that prove the request never reached the provider.
_UNSENT = (httpx2.ConnectError, httpx2.ConnectTimeout, httpx2.PoolTimeout, httpx2.WriteTimeout)
# The transport's own, under those; known by name, so that importing failover does not
# import the transport before a client is built.
_UNSENT_CORE = frozenset({"ConnectError", "ConnectTimeout", "PoolTimeout"})


class Owner(NamedTuple):
    """Where a resource lives (base URL and credential fingerprint) and its provider's name."""

    where: str
    name: str


def where(endpoint: Endpoint) -> str:
    """The identity that owns resources: the breaker key without the provider's name."""
    return endpoint.key.partition(" ")[2]


# -- the registries --------------------------------------------------------------


class Unseen(Exception):
    """Internal: a coroutine method's call names ids that only a shared registry may
    know. Raised before anything is sent; the call is made once their owners have been
    awaited (``_tracking._looked_up``), so that no lookup waits on a socket on the loop."""

    def __init__(self, owners: Owners, ids: list[str]) -> None:
        super().__init__(ids)
        self.owners = owners
        self.ids = ids


# The ids whose owners the running call has already asked the shared registry for.
LOOKED_UP: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar(
    "failover_looked_up", default=frozenset()
)


class Owners:
    """The in-process registry: a bounded LRU of owners, and of recent 404s.

    A 404 for an id the registry does not know is kept (as a miss) so that when a
    later provider answers for that id, the id is remembered as that provider's.
    """

    shared: ClassVar[bool] = False  # shared with other processes: it may know any id

    def __init__(self, size: int = MEMORY_SIZE) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._owners: collections.OrderedDict[str, Owner] = collections.OrderedDict()
        self._misses: collections.OrderedDict[str, str] = collections.OrderedDict()

    def may_know(self) -> bool:
        """Whether any request could name a known id: if not, requests are not scanned."""
        return self.shared or bool(self._owners or self._misses)

    def owners(self, ids: Sequence[str]) -> list[Owner | None]:
        """The owner of each id, as far as this registry knows (None: not known)."""
        return self.known(ids)

    def known(self, ids: Sequence[str]) -> list[Owner | None]:
        """:meth:`owners` from this process's memory alone (no I/O)."""
        with self._lock:
            found = [self._owners.get(i) for i in ids]
            for i, owner in zip(ids, found, strict=True):
                if owner is not None:
                    self._owners.move_to_end(i)
        return found

    def unseen(self, ids: Sequence[str], found: Sequence[Owner | None]) -> list[str]:
        """Of the ids that memory did not know (``found``), those to ask elsewhere."""
        return []

    async def look_up(self, ids: Sequence[str]) -> None:
        """Learn the owners of ``ids`` from wherever this registry shares them."""

    def remember(self, ids: Iterable[str], owner: Owner) -> None:
        with self._lock:
            for i in ids:
                self._misses.pop(i, None)
                self._owners[i] = owner
                self._owners.move_to_end(i)
            while len(self._owners) > self._size:
                self._owners.popitem(last=False)

    def missed(self, ids: Iterable[str], at: str) -> None:
        with self._lock:
            for i in ids:
                self._misses[i] = at
            while len(self._misses) > self._size:
                self._misses.popitem(last=False)

    def misses(self, ids: Sequence[str]) -> list[str | None]:
        with self._lock:
            return [self._misses.get(i) for i in ids]

    def clear(self) -> None:
        with self._lock:
            self._owners.clear()
            self._misses.clear()


MEMORY = Owners()


def registry(store: HealthStore | None) -> Owners:
    """The owners registry of a chain's health store (a shared one has its own)."""
    owners = getattr(store or default_store(), "owners", None)
    return owners if isinstance(owners, Owners) else MEMORY


# -- reading the client ------------------------------------------------------------


class Creation(NamedTuple):
    """How a method of the client creates resources."""

    stores: bool | None  # with a ``store`` parameter: whether it stores when unset
    once: bool  # starts long-lived paid work: never re-sent after an ambiguous failure


def _resource_of(owner: Any) -> Any:
    """The resource a method belongs to (through a raw or streaming-response view)."""
    if isinstance(owner, (SyncAPIResource, AsyncAPIResource)):
        return owner
    for value in vars(owner).values() if hasattr(owner, "__dict__") else ():
        if isinstance(value, (SyncAPIResource, AsyncAPIResource)):
            return value
    return None


def _answers_with_id(func: Any) -> bool:
    try:
        answer = typing.get_type_hints(func).get("return")
    except Exception:  # an annotation this Python cannot resolve: not a maker we know
        return False
    kinds = typing.get_args(answer) or (answer,)
    return any(
        inspect.isclass(kind) and issubclass(kind, pydantic.BaseModel) and "id" in kind.model_fields
        for kind in kinds
    )


def _stores_by_default(kind: type[Any], func: Any) -> bool:
    """Read from the documentation of ``store``: the client says its default (on the
    method, its overloads, or the resource's ``create``, which the helpers wrap)."""
    documented = [func, getattr(kind, "create", func)]
    docs = [
        inspect.getdoc(f) or ""
        for given in documented
        for f in (given, *typing_extensions.get_overloads(given))
    ]
    doc = "\n".join(docs)
    start = doc.find("store:")
    return start >= 0 and "defaults to true" in doc[start : start + 200].lower()


def makes(made: Creation | None, kwargs: dict[str, Any]) -> bool:
    """Whether a call with ``kwargs`` of a method that creates as ``made`` creates (and
    stores) a resource: some create only with ``store=True``, some unless ``store=False``."""
    if made is None or made.stores is None:
        return made is not None
    stored = kwargs.get("store")
    return stored is True or (made.stores and stored is not False)


_CREATIONS: dict[tuple[type[Any], str], Creation | None] = {}
_UNSEEN: Any = object()


def creation(owner: Any, name: str) -> Creation | None:
    """How ``owner.name(...)`` creates resources (None: it creates none). Read once per
    resource class and method."""
    key = (type(owner), name)
    try:
        return _CREATIONS[key]
    except KeyError:
        pass
    found = None
    resource = _resource_of(owner)
    func = getattr(type(resource), name, None) if resource is not None else None
    if (
        func is not None
        and name.startswith(_MAKERS)
        and any(hasattr(resource, other) for other in _FETCHED_BACK)
        and _answers_with_id(func)
    ):
        module = type(resource).__module__.removeprefix("openai.resources.")
        stores = (
            _stores_by_default(type(resource), func)
            if "store" in inspect.signature(func).parameters
            else None
        )
        found = Creation(stores, (module, name) in ONCE)
    _CREATIONS[key] = found
    return found


def once(method: Any) -> bool:
    """Whether a bound method of the client must never run twice (nor be hedged)."""
    owner = getattr(method, "__self__", None)
    made = creation(owner, getattr(method, "__name__", "")) if owner is not None else None
    return made is not None and made.once


# -- scanning a request ------------------------------------------------------------


@functools.lru_cache(maxsize=1024)
def _names_id(key: str) -> bool:
    return key in _HOLDERS or (key.endswith(("_id", "_ids")) and key not in _NOT_RESOURCES)


def _walk(node: dict[Any, Any], found: list[str]) -> None:
    for key, value in node.items():
        if isinstance(value, str):
            if _names_id(key):
                found.append(value)
        elif isinstance(value, dict):
            held = value.get("id") if key in _HOLDERS else None
            if isinstance(held, str):
                found.append(held)
            _walk(value, found)
        elif isinstance(value, (list, tuple)):
            named = _names_id(key)
            for item in value:
                if isinstance(item, dict):
                    _walk(item, found)
                elif named and isinstance(item, str):
                    found.append(item)


def ids_in(args: Sequence[Any], kwargs: dict[str, Any]) -> list[str]:
    """The strings of a call that may be resource ids: positional arguments (path
    parameters) and values under id keys anywhere in the body."""
    found = [a for a in args if isinstance(a, str)]
    _walk(kwargs, found)
    return [i for i in found if 0 < len(i) <= MAX_ID] if found else found


def _ambiguous(exc: BaseException) -> bool:
    """Sent and unanswered: the provider may have done what was asked."""
    if isinstance(exc, openai.APIStatusError) or not isinstance(exc, Exception):
        return False  # it answered (a refusal, a 5xx, a 429); or the caller stopped it
    link: BaseException | None = exc
    while link is not None:
        kind = type(link)
        if isinstance(link, _UNSENT) or (
            kind.__module__.startswith("httpcore2") and kind.__name__ in _UNSENT_CORE
        ):
            return False
        link = link.__cause__ or link.__context__
    return True


# -- one chain, one call -------------------------------------------------------------


def _is_coroutine_method(method: Any) -> bool:
    """Whether ``method``'s calls are coroutines: through openai's own sync decorators
    (``required_args`` on ``chat.completions.create``) and instrumentation wrappers."""
    try:
        return inspect.iscoroutinefunction(inspect.unwrap(method))
    except ValueError:  # a cycle of __wrapped__
        return inspect.iscoroutinefunction(method)


class Ownership:
    """A chain's side of the registry: who in the chain owns what."""

    __slots__ = ("_endpoints", "_registry", "_store", "_where")

    def __init__(self, endpoints: Sequence[Endpoint], store: HealthStore | None) -> None:
        self._endpoints = endpoints
        self._store = store
        # The registry of the last store asked (the process-wide one may change), as
        # registry() finds it: a store without ``owners`` costs an AttributeError there.
        self._registry: tuple[HealthStore | None, Owners] = (None, MEMORY)
        self._where: dict[str, str] | None = None  # where -> name, built on first use

    def _names(self) -> dict[str, str]:
        # Worked out late, as endpoint keys are: a key may come from the environment.
        if self._where is None:
            self._where = {}
            for endpoint in self._endpoints:
                self._where.setdefault(where(endpoint), endpoint.name)
        return self._where

    def quiet(self) -> bool:
        """Whether no call can name an id the registry knows: it knows no owner and no
        miss, and is not shared (a plain call skips ``request`` then; see
        ``tracked_method``). ``may_know()``, inlined for the healthy path: a subclass
        says it may know any id with ``shared``, not by overriding ``may_know``."""
        store = self._store or STORES[0]
        if store is not self._registry[0]:
            self._registry = (store, registry(store))
        owners = self._registry[1]
        return not (owners.shared or owners._owners or owners._misses)  # may_know(), inlined

    def request(
        self,
        owner: Any,
        name: str,
        args: Sequence[Any],
        kwargs: dict[str, Any],
        at: Endpoint,
        method: Any = None,
    ) -> Request | None:
        """What ownership asks of this call on ``at``; raises :class:`ProviderBound` when
        it names a resource another provider of the chain owns, :class:`Unseen` when
        ``method`` (the one called) is a coroutine function's and must first await the
        owners of unseen ids from a shared registry. None: nothing to do."""
        made = _CREATIONS.get((type(owner), name), _UNSEEN)
        if made is _UNSEEN:
            made = creation(owner, name)
        if not makes(made, kwargs):
            made = None
        owners = registry(self._store)
        knows = owners.may_know()
        if made is None and not knows:
            return None  # the common case: nothing made, nothing known to route by
        ids = ids_in(args, kwargs) if knows else []
        if made is None and not ids:
            return None
        here = where(at)
        if ids:
            names = self._names()
            if _is_coroutine_method(method):
                # Its call sends nothing until awaited: unseen ids are looked up then,
                # awaited, not here (on the loop, with a sync client). Other methods
                # (paginators, stream helpers, helpers that send nothing) look up now.
                found = owners.known(ids)
                if unseen := owners.unseen(ids, found):
                    raise Unseen(owners, unseen)
            else:
                found = owners.owners(ids)
            for resource, known in zip(ids, found, strict=True):
                if known is not None and known.where != here and known.where in names:
                    raise ProviderBound(at.name, names[known.where], resource)
        called = f"{type(owner).__name__}.{name}"
        return Request(owners, made, ids or (args, kwargs), Owner(here, at.name), called)

    def failed(
        self, args: Sequence[Any], kwargs: dict[str, Any], exc: BaseException, at: Endpoint
    ) -> None:
        """A call that needed nothing failed: a 404 may name an id another provider has."""
        if isinstance(exc, openai.NotFoundError):
            registry(self._store).missed(ids_in(args, kwargs), where(at))


class Request:
    """One call that creates a resource or names ids: what it learns from its answer."""

    __slots__ = ("_called", "_ids", "_made", "_owner", "_owners")

    def __init__(
        self,
        owners: Owners,
        made: Creation | None,
        ids: list[str] | tuple[Sequence[Any], dict[str, Any]],
        owner: Owner,
        called: str,
    ) -> None:
        # The ids it names, or its arguments when it was not scanned (nothing was known).
        self._owners = owners
        self._made = made
        self._ids = ids
        self._owner = owner
        self._called = called

    def answered(self, value: Any) -> None:
        """The provider answered: remember what it made, and the ids it knew that others
        had answered 404 for."""
        ids = self._ids
        if isinstance(ids, list) and ids:
            learnt = [i for i, at in zip(ids, self._owners.misses(ids), strict=True) if at]
            if learnt:
                self._owners.remember(learnt, self._owner)
        if self._made is not None:
            made = _made_ids(value)
            if made:
                self._owners.remember(made, self._owner)

    def failed(self, exc: BaseException) -> None:
        if isinstance(exc, openai.NotFoundError):
            ids = self._ids if isinstance(self._ids, list) else ids_in(*self._ids)
            self._owners.missed(ids, self._owner.where)
        if self._made is not None and self._made.once and _ambiguous(exc):
            add_note(
                exc,
                f"failover: {self._called} was sent to provider {self._owner.name!r} and its "
                "answer was lost: the provider may have accepted it, so it was not sent to "
                "another provider (that could run it twice)",
            )
            mark_final(exc)


def _made_ids(value: Any) -> list[str]:
    """The ids an answer makes: its own, and those of objects it made along (an upload's file)."""
    if not isinstance(value, pydantic.BaseModel):
        return []
    made = []
    own = getattr(value, "id", None)
    if isinstance(own, str) and len(own) <= MAX_ID:
        made.append(own)
    for field in type(value).model_fields:
        inner = getattr(value, field, None)
        inner_id = getattr(inner, "id", None)
        if (
            isinstance(inner, pydantic.BaseModel)
            and isinstance(inner_id, str)
            and isinstance(getattr(inner, "object", None), str)
            and len(inner_id) <= MAX_ID
        ):
            made.append(inner_id)
    return made
