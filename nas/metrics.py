"""The metrics objectives and budgets may name: their direction and where their value comes from."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    """A subnet metric: `source` is "predicted" (a fitted predictor) or "exact" (counted)."""

    name: str
    direction: str
    source: str
    unit: str
    description: str


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("accuracy", "maximize", "predicted", "", "validation accuracy of the subnet (test in reports)"),
        Metric("latency_ms", "minimize", "predicted", "ms", "latency of the extracted XLA-compiled subnet"),
        Metric("size_kb", "minimize", "exact", "KiB", "deployed weight bytes at the chosen bit-widths / 1024"),
        Metric("macs", "minimize", "exact", "", "multiply-accumulates per example"),
    )
}


def better(metric: str, a: float, b: float) -> bool:
    """Whether value `a` is strictly better than `b` for `metric`."""
    return a > b if METRICS[metric].direction == "maximize" else a < b
