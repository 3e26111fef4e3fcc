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
    """Per-layer MACs, split by float vs quantised (fake-quant costs extra ops), plus totals."""
    n_slots = ctx.space.meta["max_depth"] + 1
    rows = []
    for c in configs:
        shapes = ctx.family.layer_shapes(ctx.space, c)
        # Hidden layers keep their slot; the head is always the last slot whatever the depth.
        slots = [(0, 0, 32)] * n_slots
        for k, s in enumerate(shapes[:-1]):
            slots[k] = s
        slots[-1] = shapes[-1]
        macs = [i * o for i, o, _ in slots]
        quant = [i * o if b < 32 and i else 0 for i, o, b in slots]
        acts = [o if i else 0 for i, o, _ in slots]
        qacts = [i if b < 32 else 0 for i, _, b in slots]  # inputs that go through fake-quant ops
        rows.append(macs + quant + acts + qacts + [sum(macs), len(shapes)])
    names = ([f"macs.{k}" for k in range(n_slots)] + [f"qmacs.{k}" for k in range(n_slots)]
             + [f"acts.{k}" for k in range(n_slots)] + [f"qacts.{k}" for k in range(n_slots)] + ["macs", "layers"])
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
