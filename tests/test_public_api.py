"""The public surface: what ``import failover`` offers, and what it leaves alone."""

from __future__ import annotations

import importlib
import importlib.resources
import logging
import pathlib
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


def _package_imports(root: pathlib.Path) -> dict[str, set[str]]:
    """Each module of the package at ``root``, subpackages included (``failover.testing._server``),
    and the package modules it imports: wherever the import stands (top level, under
    ``TYPE_CHECKING``, inside a function), relative or absolute."""
    import ast

    files = {
        ".".join((root.name, *path.relative_to(root).with_suffix("").parts)).removesuffix(
            ".__init__"
        ): path
        for path in root.rglob("*.py")
    }
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    package = here.rsplit(".", node.level - 1)[0]
                    base = f"{package}.{base}" if base else package
                # ``from package import module`` imports that module; a name, the package.
                found |= {
                    f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names
                }
        graph[name] = (found & files.keys()) - {name}
    return graph


def _circle(graph: dict[str, set[str]], start: str) -> list[str] | None:
    """The modules of an import path from ``start`` back to it, if there is one."""
    paths, seen = [[start]], {start}
    while paths:
        path = paths.pop()
        for module in sorted(graph[path[-1]]):
            if module == start:
                return path
            if module not in seen:
                seen.add(module)
                paths.append([*path, module])
    return None


def test_the_import_graph_sees_every_kind_of_import(tmp_path: pathlib.Path) -> None:
    root = tmp_path / "pkg"
    (root / "sub").mkdir(parents=True)
    sources = {
        "__init__.py": "from .a import x\n",
        "a.py": "import json\nfrom . import b\nx = 1\n",
        "b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.sub import c\n",
        "sub/__init__.py": "",
        "sub/c.py": "def f():\n    from ..a import x\n    from pkg import sub, x\n",
    }
    for name, text in sources.items():
        (root / name).write_text(text)
    assert _package_imports(root) == {
        "pkg": {"pkg.a"},
        "pkg.a": {"pkg.b"},  # relative; not the standard library
        "pkg.b": {"pkg.sub.c"},  # under TYPE_CHECKING, absolute
        "pkg.sub": set(),
        "pkg.sub.c": {"pkg.a", "pkg", "pkg.sub"},  # inside a function; a name, a module
    }
    assert _circle(_package_imports(root), "pkg.a") == ["pkg.a", "pkg.b", "pkg.sub.c"]


def test_the_package_has_no_import_circle() -> None:
    """Layers only point down: no module of the package or its subpackages imports (even
    for type checking, even inside a function) one that imports it back, directly or
    through others."""
    graph = _package_imports(pathlib.Path(failover.__file__).parent)
    circles = [" -> ".join([*path, path[0]]) for m in graph if (path := _circle(graph, m))]
    assert circles == []


def test_the_readme_layout_names_every_module() -> None:
    """Every module, those of subpackages too, and every subpackage (``testing/``)."""
    import re

    root = pathlib.Path(failover.__file__).parent
    readme = (root.parent / "README.md").read_text()
    section = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`(_?[a-z_]+)/?`", section))
    modules = {p.stem for p in root.rglob("*.py") if p.stem != "__init__"}
    packages = {p.parent.name for p in root.glob("*/__init__.py")}
    assert sorted((modules | packages) - named) == []


def test_every_package_of_the_tree_is_shipped() -> None:
    # A subpackage left out of pyproject's list is missing from the wheel: installed
    # from PyPI, ``failover.testing`` (and the demo, which runs on it) would not import.
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    root = pathlib.Path(failover.__file__).parent
    found = {
        ".".join(("failover", *init.parent.relative_to(root).parts))
        for init in root.rglob("__init__.py")
    }
    listed = tomllib.loads((root.parent / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert set(listed["packages"]) == found
