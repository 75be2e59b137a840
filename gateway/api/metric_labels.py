"""Labelled children of Prometheus metrics, looked up once per label values."""

from __future__ import annotations

from typing import Any


class Children:
    """A metric's ``labels(...)``, looked up once per label values: prometheus_client checks
    and converts the values and takes a lock on every call (issue #16: ~2% of a worker's CPU
    per request). Its children are never removed here, so a child found stays the metric's."""

    __slots__ = ("children", "metric")

    def __init__(self, metric: Any) -> None:
        self.metric = metric
        self.children: dict[tuple[str, ...], Any] = {}

    def __call__(self, *values: str) -> Any:
        try:
            return self.children[values]
        except KeyError:
            child = self.children[values] = self.metric.labels(*values)
            return child
