"""4. Import time: what ``import failover`` adds once ``import openai`` is done."""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import tempfile
from typing import Any

from _fixtures import Context
from _report import Row

_IMPORTTIME = re.compile(r"import time:\s+(\d+)\s+\|\s+(\d+)\s+\|( *)(\S+)")


def import_cost(runs: int) -> dict[str, Any]:
    """Median over ``runs`` of what ``import failover`` adds once openai is imported (ms).

    Measured as ``python -X importtime -c "import openai; import failover"``: the
    cumulative time of the ``failover`` line, i.e. everything imported for failover
    that ``import openai`` had not already imported (openai's lazily loaded
    submodules included), broken down by top-level package.
    """
    extra: list[float] = []
    packages: dict[str, list[float]] = {}
    # As installed packages are: with bytecode caches (kept out of the tree, in a
    # temporary prefix; the first, unmeasured run writes them), whatever
    # PYTHONDONTWRITEBYTECODE says in this environment.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    command = [sys.executable, "-X", "importtime", "-c", "import openai; import failover"]
    with tempfile.TemporaryDirectory() as prefix:
        env["PYTHONPYCACHEPREFIX"] = prefix
        outputs = [
            subprocess.run(command, capture_output=True, text=True, check=True, env=env).stderr
            for _ in range(runs + 1)
        ][1:]
    for out in outputs:
        lines = [(m.group(4), int(m.group(1)), int(m.group(2))) for m in _IMPORTTIME.finditer(out)]
        start = next(i for i, (name, _, _) in enumerate(lines) if name == "openai") + 1
        after = lines[start:]
        extra.append(next(cum for name, _, cum in after if name == "failover") / 1000)
        for name, self_us, _ in after:
            packages.setdefault(name.split(".")[0], []).append(self_us / 1000 / runs)
    by_package = {name: round(sum(v), 2) for name, v in packages.items()}
    top = dict(sorted(by_package.items(), key=lambda kv: -kv[1])[:6])
    return {"beyond_openai_ms": statistics.median(extra), "by_package_ms": top}


def run(ctx: Context) -> None:
    report = ctx.report
    cost = import_cost(ctx.sizes.import_runs)
    report.extra["import"] = cost
    report.add(
        Row(
            "4 import (python -X importtime)",
            "import failover beyond import openai",
            cost["beyond_openai_ms"],
            None,
            unit="ms",
            target="≤ 15 ms",
            met=cost["beyond_openai_ms"] <= 15,
            note=", ".join(f"{k} {v:.1f} ms" for k, v in cost["by_package_ms"].items()),
        )
    )
