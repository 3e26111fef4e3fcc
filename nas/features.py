"""Feature vectors of configs for the predictors: architecture choices, plus layer costs for latency."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from nas.context import Context
from search_spaces import Config


def arch_features(ctx: Context, configs: Sequence[Config]) -> tuple[list[str], np.ndarray]:
    """The search space's own encoding (choices scaled to [0, 1], 0 where inactive)."""
    return ctx.space.feature_names(), ctx.space.encode_many(list(configs))


def cost_features(ctx: Context, configs: Sequence[Config]) -> tuple[list[str], np.ndarray]:
    """Per-layer-slot MACs, split by float vs quantised (fake-quant costs extra ops), plus totals."""
    slots = ctx.family.cost_slots(ctx.space)
    index = {slot: k for k, slot in enumerate(slots)}
    rows = []
    for c in configs:
        costs = ctx.family.layer_costs(ctx.space, c)
        per_slot = np.zeros((4, len(slots)))
        for cost in costs:
            k = index[cost.slot]
            per_slot[:, k] = (cost.macs, cost.macs if cost.bits < 32 else 0, cost.act_out,
                              cost.act_in if cost.a_bits < 32 else 0)
        rows.append(np.concatenate([per_slot.ravel(), [sum(x.macs for x in costs), len(costs)]]))
    names = [f"{part}.{slot}" for part in ("macs", "qmacs", "acts", "qacts") for slot in slots] + ["macs", "layers"]
    return names, np.asarray(rows, np.float64)


FEATURE_SETS: dict[str, Callable[[Context, Sequence[Config]], tuple[list[str], np.ndarray]]] = {
    "arch": arch_features,
    "cost": cost_features,
}

# Accuracy depends on the choices; latency (on any target) mostly on how much work each layer does.
METRIC_FEATURES = {"accuracy": ("arch",), "latency_ms": ("arch", "cost")}


def predicted_metrics(ctx: Context) -> list[str]:
    """Metrics that need a fitted predictor: accuracy and the latency of every measurement target."""
    return ["accuracy"] + [metric for metric, _, _ in ctx.exp.measure.latency_targets()]


def features(ctx: Context, metric: str, configs: Sequence[Config]) -> tuple[list[str], np.ndarray]:
    """Concatenated feature sets used to predict `metric`."""
    parts = [FEATURE_SETS[name](ctx, configs) for name in METRIC_FEATURES[metric.partition("@")[0]]]
    names = [f"{n}" for p in parts for n in p[0]]
    return names, np.concatenate([p[1] for p in parts], axis=1)
