"""The public surface: what ``import failover`` offers, and what it leaves alone."""

from __future__ import annotations

import importlib
import importlib.resources
import logging
import subprocess
import sys

import pytest

import failover

EXPECTED_ALL = [
    "AsyncOpenAI",
    "Attempt",
    "AttemptContext",
    "Breaker",
    "DeadlineExceeded",
    "Event",
    "FailoverError",
    "FallbackClients",
    "MissingAPIKey",
    "OpenAI",
    "Outcome",
    "Provider",
    "ProviderBound",
    "ProviderSkipped",
    "Retry",
    "State",
    "StreamInterrupted",
    "StreamTruncated",
    "configure",
    "current_provider",
    "fallback_clients",
    "health",
    "with_fallback",
]


def test_all_is_exactly_the_public_api() -> None:
    assert sorted(failover.__all__) == EXPECTED_ALL
    assert len(failover.__all__) == len(set(failover.__all__))


@pytest.mark.parametrize("name", EXPECTED_ALL)
def test_every_public_name_is_importable(name: str) -> None:
    module = importlib.import_module("failover")
    assert getattr(module, name) is not None


def test_the_main_names_import_from_the_package() -> None:
    from failover import Attempt, FailoverError, Provider, fallback_clients, with_fallback

    assert callable(with_fallback)
    assert callable(fallback_clients)
    assert issubclass(FailoverError, Exception)
    assert Attempt.__module__.startswith("failover")
    assert Provider("x").name == "x"


def test_version() -> None:
    assert isinstance(failover.__version__, str)
    assert failover.__version__


def test_import_does_not_import_redis() -> None:
    code = "import failover, sys; print('redis' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "False", result.stderr


def test_package_is_typed() -> None:
    assert importlib.resources.files("failover").joinpath("py.typed").is_file()


def test_logger_has_only_a_null_handler() -> None:
    handlers = logging.getLogger("failover").handlers
    assert [type(h) for h in handlers] == [logging.NullHandler]


def test_the_package_has_no_import_circle() -> None:
    """Layers only point down: no module imports (even for type checking) one that
    imports it back, directly or through others."""
    import ast
    import pathlib

    package = pathlib.Path(failover.__file__).parent
    graph: dict[str, set[str]] = {}
    for path in package.glob("*.py"):
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                found |= {node.module} if node.module else {a.name for a in node.names}
        graph[path.stem] = found

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for module in graph.get(start, ()):
            if module == goal or (module not in seen and reaches(module, goal, seen | {module})):
                return True
        return False

    assert [m for m in graph if reaches(m, m, set())] == []


def test_the_readme_layout_names_every_module() -> None:
    import pathlib
    import re

    root = pathlib.Path(failover.__file__).parent
    readme = (root.parent / "README.md").read_text()
    section = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`(_?[a-z_]+)/?`", section))
    modules = {p.stem for p in root.glob("*.py") if p.stem != "__init__"} | {"testing"}
    assert modules <= named
