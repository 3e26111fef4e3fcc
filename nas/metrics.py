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
        Metric("flops", "minimize", "exact", "", "floating-point operations per example (2 x MACs)"),
        Metric("peak_act_kb", "minimize", "exact", "KiB", "largest live activations (one layer's input + output, "
               "attention scores, a pending residual input) per example, fp32"),
    )
}

LATENCY = "latency_ms"


def latency_metric(target: str | None) -> str:
    """Metric name of the latency on an extra measurement target: latency_ms@NAME."""
    return LATENCY if target is None else f"{LATENCY}@{target}"


def metric_info(name: str) -> Metric | None:
    """The Metric called `name` (latency_ms@TARGET included), or None if unknown."""
    base, _, target = name.partition("@")
    if base not in METRICS or (target and base != LATENCY):
        return None
    m = METRICS[base]
    return m if not target else Metric(name, m.direction, m.source, m.unit, f"{m.description} (target {target})")


def limit_problem(name: str, limit: float) -> str | None:
    """Why `limit` cannot bound metric `name` (none is negative; accuracy is a fraction), or None."""
    if limit < 0:
        return f"{name} is never negative, so {limit:g} is not a limit"
    if name.partition("@")[0] == "accuracy" and limit > 1:
        # 95 meant as a percentage would otherwise be a budget no subnet meets.
        return f"accuracy is a fraction in [0, 1], so {limit:g} is not a limit (a percentage? use {limit / 100:g})"
    return None
