"""A fake OpenAI-compatible provider for tests, which can be told to fail.

:class:`FakeProvider` runs a small HTTP server on ``127.0.0.1`` (standard
library only, in a daemon thread) that answers chat completions, legacy
completions and the Responses API (plain and streamed), embeddings and models,
with the same JSON shapes as the real API (and Azure's paths and ``api-key``
header), so the real ``openai`` client parses them.  Faults are injected on
demand::

    from failover.testing import FakeProvider

    with FakeProvider("comet") as comet, FakeProvider("nova") as nova:
        comet.fail(status=503, retry_after=2)  # down until recover()
        nova.hang(5, times=1)                  # the next request waits 5 s first
        client = comet.client()                # openai.OpenAI, max_retries=0
        ...                                    # exercise the failover logic
        comet.recover()
        reply = client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hello"}]
        )
        assert reply.choices[0].message.content == "[comet] hello"
        assert comet.requests[-1].headers["authorization"] == f"Bearer {comet.api_key}"

Faults given with ``times=N`` queue up in order, each consumed by one request.
A fault without ``times`` holds until :meth:`FakeProvider.recover` and replaces
whatever was queued; faults queued after it are served first, then it resumes.
A request with the wrong key gets a 401 (code ``invalid_api_key``) and consumes
no fault, so tests can prove each provider was called with its own key.
``stop()`` makes the provider refuse connections; ``start()`` brings it back on
the same port, so clients made earlier keep working.  :func:`unreachable` gives
a base URL whose TCP connect never completes.
"""

from __future__ import annotations

from failover.testing._provider import FakeProvider
from failover.testing._script import Answer, Reply, ToolCall
from failover.testing._server import RecordedRequest
from failover.testing._server import _Fault as _Fault  # for the benchmarks
from failover.testing._server import _Server as _Server  # for the benchmarks
from failover.testing._unreachable import unreachable

__all__ = ["Answer", "FakeProvider", "RecordedRequest", "Reply", "ToolCall", "unreachable"]
