"""The benchmarks' results: rows of a printed table, regression checks, and extra figures."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from _timing import Stats


@dataclass
class Row:
    section: str
    contender: str
    median: float | None
    p99: float | None
    unit: str = "µs"
    ratio: float | None = None  # to the section's baseline
    target: str = ""
    met: bool | None = None
    note: str = ""


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    checks: list[tuple[str, bool]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        return row

    def stats_rows(
        self, section: str, stats: dict[str, Stats], baseline: str, targets: dict[str, float]
    ) -> None:
        """Rows for per-call stats; ``targets``: contender -> max ratio to the baseline."""
        base = stats[baseline].median
        for name, s in stats.items():
            ratio = s.median / base
            limit = targets.get(name)
            self.add(
                Row(
                    section,
                    name,
                    s.median,
                    s.p99,
                    ratio=ratio,
                    target=f"≤ {limit:.2f}x" if limit else "",
                    met=None if limit is None else ratio <= limit,
                )
            )

    def check(self, what: str, ok: bool) -> None:
        self.checks.append((what, ok))

    def print(self) -> None:
        header = ("section", "contender", "median", "p99", "ratio", "target", "met", "note")
        lines = [header]
        for r in self.rows:
            lines.append(
                (
                    r.section,
                    r.contender,
                    _fmt(r.median, r.unit),
                    _fmt(r.p99, r.unit),
                    f"{r.ratio:.3f}x" if r.ratio is not None else "",
                    r.target,
                    {True: "yes", False: "NO", None: ""}[r.met],
                    r.note,
                )
            )
        widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
        previous = None
        for line in lines:
            if previous is not None and line[0] != previous and line is not lines[1]:
                print()
            previous = line[0] if line is not lines[0] else None
            print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
        if self.checks:
            print("\nregression checks (--check):")
            for what, ok in self.checks:
                print(f"  [{'ok' if ok else 'FAIL'}] {what}")

    def as_json(self) -> dict[str, Any]:
        return {
            "rows": [asdict(r) for r in self.rows],
            "checks": [{"check": what, "ok": ok} for what, ok in self.checks],
            **self.extra,
        }


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return ""
    if unit == "µs" and value >= 10_000:
        return f"{value / 1000:.1f} ms"
    if unit == "s":
        return f"{value:.3f} s"
    return f"{value:.1f} {unit}" if unit != "%" else f"{value:.1f} %"
