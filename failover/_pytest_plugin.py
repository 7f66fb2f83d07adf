"""pytest plugin: the ``fake_provider`` fixture, a factory of running :class:`FakeProvider`.

::

    def test_failover(fake_provider):
        comet = fake_provider("comet")
        nova = fake_provider("nova", reply=lambda request: "hi")
        comet.fail(503)
        ...

Every provider the factory made is stopped at teardown.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from failover.testing import FakeProvider

__all__ = ["FakeProviderFactory", "fake_provider"]


class FakeProviderFactory:
    """Makes started :class:`FakeProvider` objects and stops them all on :meth:`close`."""

    def __init__(self) -> None:
        self.providers: list[FakeProvider] = []

    def __call__(self, name: str = "fake", **kwargs: Any) -> FakeProvider:
        provider = FakeProvider(name, **kwargs).start()
        self.providers.append(provider)
        return provider

    def close(self) -> None:
        """Stop every provider made so far."""
        while self.providers:
            self.providers.pop().stop()


@pytest.fixture
def fake_provider() -> Iterator[FakeProviderFactory]:
    """A factory: ``fake_provider("comet", **kwargs)`` returns a started FakeProvider."""
    factory = FakeProviderFactory()
    try:
        yield factory
    finally:
        factory.close()
