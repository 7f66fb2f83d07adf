"""The few private names of ``openai`` that failover needs, and why, in one place.

``.ci/run`` runs the suite against the oldest ``openai`` the pin allows and the newest
one available, so that a change of any of these is caught there, not by users.
"""

from __future__ import annotations

# A client, and its resources: what navigating a handed-out client returns (no I/O),
# told apart from API calls by type, because their names are open-ended.
from openai._base_client import BaseClient
from openai._resource import AsyncAPIResource, SyncAPIResource

# An async list call returns a paginator that sends when awaited or iterated: it is
# an API call whose result must be tracked like a coroutine's.
from openai._base_client import AsyncPaginator  # isort: skip

# ``with_raw_response`` / ``with_streaming_response`` results: read and parsed later,
# so their reads must count as the provider's too.
from openai._legacy_response import LegacyAPIResponse
from openai._response import AsyncResponseContextManager, BaseAPIResponse, ResponseContextManager

# The http clients openai builds when given none: a client with another one has a
# transport of its own, which a rebuild for the other flavour cannot carry over; the
# sync wrapper (unlike the public default) closes its connections when dropped.
from openai._base_client import AsyncHttpxClientWrapper, SyncHttpxClientWrapper  # isort: skip

# What an async client works out, in a worker thread, on its first request (its
# ``_platform``): failover works it out once, in its warm-up thread, for the clients it builds.
from openai._base_client import get_platform  # isort: skip

# The modules whose frames, in a traceback, mean the error came from the transport
# (sending, reading or parsing a response) rather than from the caller's code.
TRANSPORT_MODULES = frozenset(
    {"openai._base_client", "openai._response", "openai._legacy_response", "openai._streaming"}
)

__all__ = [
    "TRANSPORT_MODULES",
    "AsyncAPIResource",
    "AsyncHttpxClientWrapper",
    "AsyncPaginator",
    "AsyncResponseContextManager",
    "BaseAPIResponse",
    "BaseClient",
    "LegacyAPIResponse",
    "ResponseContextManager",
    "SyncAPIResource",
    "SyncHttpxClientWrapper",
    "get_platform",
]
