"""Medians, percentiles, spreads and the printed table."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


@dataclass(frozen=True)
class Spread:
    """The median of repeated measurements and their range."""

    median: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        if not values:
            nan = float("nan")
            return cls(nan, nan, nan, 0)
        return cls(median(values), min(values), max(values), len(values))

    def fmt(self, unit: str = "", digits: int = 0, scale: float = 1.0) -> str:
        m, lo, hi = (v * scale for v in (self.median, self.low, self.high))
        if self.n <= 1:
            return f"{m:,.{digits}f}{unit}"
        return f"{m:,.{digits}f}{unit} ({lo:,.{digits}f}-{hi:,.{digits}f})"


@dataclass
class Row:
    figure: str
    measured: str
    baseline: str
    ratio: str
    target: str
    met: bool | None


def ratio_fmt(spread: Spread) -> str:
    return spread.fmt("x", 2)


HEADER = ("Figure", "Measured", "Baseline", "Ratio", "Target", "Met")


def table(rows: Sequence[Row], header: Sequence[str] = HEADER) -> str:
    cells = [header] + [
        (
            r.figure,
            r.measured,
            r.baseline,
            r.ratio,
            r.target,
            "-" if r.met is None else ("yes" if r.met else "NO"),
        )
        for r in rows
    ]
    widths = [max(len(c[i]) for c in cells) for i in range(len(header))]

    def line(values: Sequence[str]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)) + " |"

    out = [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(c) for c in cells[1:]]
    return "\n".join(out)
