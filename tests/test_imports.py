"""What ``import failover`` loads: its names on first use, never an opt-in dependency.

Each check runs in a fresh interpreter (this one has imported everything already) and
looks at ``sys.modules``; none times anything.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import failover

# Dependencies of opt-in features: the OpenTelemetry API (the ``otel`` extra, installed
# for the tests), Redis, failover's Redis store and its test helpers.
OPT_IN = ("opentelemetry", "redis", "failover.redis", "failover.testing")
DROP_IN = {"failover._client", "failover._context", "failover._proxy"}
BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def fresh(code: str) -> Any:
    """What ``code`` (run in a new interpreter) prints, as JSON."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def loaded_after(statement: str) -> set[str]:
    """The modules that ``statement`` imports once openai is imported."""
    return set(
        fresh(f"""
        import json, sys
        import openai
        before = set(sys.modules)
        {statement}
        print(json.dumps(sorted(set(sys.modules) - before)))
        """)
    )


def opt_in(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in OPT_IN or m.startswith(OPT_IN))


def test_the_otel_extra_is_installed_for_these_tests() -> None:
    # Otherwise the checks below that nothing imports it would hold trivially.
    assert importlib.util.find_spec("opentelemetry") is not None


def test_import_failover_loads_the_package_alone() -> None:
    assert loaded_after("import failover") == {"failover"}


def test_the_decorator_loads_neither_the_drop_in_nor_an_opt_in_module() -> None:
    loaded = loaded_after("from failover import with_fallback")
    assert "failover._decorator" in loaded
    assert loaded & DROP_IN == set()
    assert opt_in(loaded) == []


def test_the_drop_in_loads_neither_the_decorator_nor_an_opt_in_module() -> None:
    loaded = loaded_after("from failover import OpenAI")
    assert loaded >= DROP_IN
    assert "failover._decorator" not in loaded
    assert opt_in(loaded) == []


def test_every_public_name_loads_no_opt_in_module() -> None:
    assert opt_in(loaded_after("from failover import *")) == []


def test_calls_in_every_form_import_no_opentelemetry_that_the_app_did_not() -> None:
    modules = fresh("""
        import json, sys
        from failover.testing import FakeProvider
        before = set(sys.modules)
        import failover
        ask = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        with FakeProvider("comet") as comet, FakeProvider("backup") as backup:
            chain = [
                failover.Provider(f.name, base_url=f.base_url, api_key=f.api_key)
                for f in (comet, backup)
            ]
            comet.fail(503)

            @failover.with_fallback(*chain, retry=None)
            def decorated(client=None):
                return client.chat.completions.create(**ask)

            decorated()
            with failover.fallback_clients(*chain, retry=None) as client:
                client.chat.completions.create(**ask)
            for attempt in failover.fallback_clients(*chain, retry=None):
                with attempt as client:
                    client.chat.completions.create(**ask)
            with failover.OpenAI(*chain, retry=None) as client:
                list(client.chat.completions.create(**ask, stream=True))
            assert len(backup.requests) == 4
        print(json.dumps(sorted(set(sys.modules) - before)))
    """)
    assert [m for m in modules if m.startswith("opentelemetry")] == []


def test_a_name_becomes_a_module_global_on_first_use() -> None:
    # Later uses are plain attribute lookups: the hot path never comes back to
    # the package's __getattr__.
    seen = fresh("""
        import json, failover
        before = "with_fallback" in vars(failover)
        failover.with_fallback
        print(json.dumps([before, "with_fallback" in vars(failover)]))
    """)
    assert seen == [False, True]


def test_dir_lists_every_public_name_before_first_use() -> None:
    names = fresh("import json, failover; print(json.dumps(dir(failover)))")
    assert set(failover.__all__) <= set(names)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="module 'failover' has no attribute 'nope'"):
        failover.nope  # type: ignore[attr-defined]  # noqa: B018


def test_each_name_comes_from_the_module_type_checkers_are_told() -> None:
    """The names type checkers see (the TYPE_CHECKING imports) are the ones the package
    hands out at run time, from the same modules: the lists cannot drift apart."""
    tree = ast.parse(Path(failover.__file__).read_text())
    told = {
        alias.name: f"failover.{node.module}"
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and ast.unparse(block.test) == "TYPE_CHECKING"
        for node in block.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert sorted(told) == sorted(failover.__all__)
    for name, module in told.items():
        assert getattr(failover, name) is getattr(importlib.import_module(module), name)


def test_the_import_benchmark_reports_each_figure() -> None:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        imports = importlib.import_module("imports")
    finally:
        sys.path.remove(str(BENCHMARKS))
    cost = imports.import_cost(1)
    assert cost["otel_extra_installed"] is True
    assert cost["opt_in_imported"] == []
    if cost["install"] == "wheel":  # pip could build and install the wheel here
        assert "site" in Path(cost["file"]).parts
    for figures in (cost, cost["checkout"]):
        assert math.isfinite(figures["beyond_openai_ms"])
        assert figures["first_use_ms"] > 0
    assert math.isfinite(cost["paired_ms"])
    assert "failover" in cost["by_package_ms"]
