"""Feature vectors of configs for the predictors: architecture choices, plus layer costs for latency."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from nas.context import Context
from search_spaces import Config
from supernets.costs import LayerCost
from supernets.quant import FLOAT_BITS


def arch_features(ctx: Context, configs: Sequence[Config]) -> tuple[list[str], np.ndarray]:
    """The search space's own encoding (choices scaled to [0, 1], 0 where inactive)."""
    return ctx.space.feature_names(), ctx.space.encode_many(list(configs))


def per_slot_table(ctx: Context, configs: Sequence[Config], parts: Sequence[str],
                   per_layer: Callable[[LayerCost], Sequence[float]],
                   totals: Callable[[list[LayerCost]], Sequence[float]]) -> np.ndarray:
    """Rows of `len(parts)` values per layer slot (0 where the slot is unused), then the totals."""
    slots = ctx.family.cost_slots(ctx.space)
    index = {slot: k for k, slot in enumerate(slots)}
    rows = []
    for c in configs:
        costs = ctx.family.layer_costs(ctx.space, c)
        per_slot = np.zeros((len(parts), len(slots)))
        for cost in costs:
            per_slot[:, index[cost.slot]] = per_layer(cost)
        rows.append(np.concatenate([per_slot.ravel(), totals(costs)]))
    return np.asarray(rows, np.float64)


def slot_names(ctx: Context, prefix: str, parts: Sequence[str]) -> list[str]:
    """Column names of `per_slot_table`'s per-slot part."""
    return [f"{prefix}{part}.{slot}" for part in parts for slot in ctx.family.cost_slots(ctx.space)]


def cost_features(ctx: Context, configs: Sequence[Config]) -> tuple[list[str], np.ndarray]:
    """Per-layer-slot MACs, split by float vs quantised (fake-quant costs extra ops), plus totals."""
    parts = ("macs", "qmacs", "acts", "qacts")
    X = per_slot_table(ctx, configs, parts,
                       lambda c: (c.macs, c.macs if c.bits < 32 else 0, c.act_out, c.act_in if c.a_bits < 32 else 0),
                       lambda costs: [sum(x.macs for x in costs), len(costs)])
    return slot_names(ctx, "", parts) + ["macs", "layers"], X


def quant_step(bits: int) -> float:
    """Relative rounding step of a symmetric `bits`-bit quantiser, 1 / (2^(bits-1) - 1); 0 for float.

    Accuracy falls with the quantisation noise, which grows about 2x per bit removed: 2 bits cost
    far more than 4, while 8 and 32 are nearly the same. `bits / 32` (the arch encoding) spaces
    them the other way round, so linear models and small trees need this column to see it.
    """
    return 0.0 if bits >= FLOAT_BITS else 1.0 / max(2.0 ** (bits - 1) - 1.0, 1.0)


def quant_features(ctx: Context, configs: Sequence[Config]) -> tuple[list[str], np.ndarray]:
    """Capacity and precision per layer slot, on the scales accuracy responds to, plus totals.

    Per slot: log2 MACs, log2 output channels, weight and input quantisation steps (`quant_step`;
    0 where the slot is unused). Totals: log2 MACs and weights, sum and max of the steps, log2 of
    the narrowest layer before the head (the bottleneck), layer count, log2 weight bits. Built from
    the family's layer costs, so every family gets it.
    """
    parts = ("log_macs", "log_channels", "w_step", "a_step")

    def totals(costs: list[LayerCost]) -> list[float]:
        weighted = [x for x in costs if x.weights] or costs
        w_steps = [quant_step(x.bits) for x in weighted]
        a_steps = [quant_step(x.a_bits) for x in weighted]
        return [np.log2(1 + sum(x.macs for x in costs)), np.log2(1 + sum(x.weights for x in costs)),
                sum(w_steps), max(w_steps), sum(a_steps), max(a_steps),
                np.log2(1 + min(x.channels_out for x in costs[:-1] or costs)), len(costs),
                np.log2(1 + sum(x.weights * min(x.bits, FLOAT_BITS) for x in costs))]

    X = per_slot_table(ctx, configs, parts,
                       lambda c: (np.log2(1 + c.macs), np.log2(1 + c.channels_out), quant_step(c.bits),
                                  quant_step(c.a_bits)), totals)
    names = slot_names(ctx, "q.", parts)
    names += ["q.log_macs", "q.log_weights", "q.w_step_sum", "q.w_step_max", "q.a_step_sum", "q.a_step_max",
              "q.log_min_channels", "q.layers", "q.log_weight_bits"]
    # Rounded so that equal sums added in another order are equal floats (tree splits need it).
    return names, np.round(X, 12)


FEATURE_SETS: dict[str, Callable[[Context, Sequence[Config]], tuple[list[str], np.ndarray]]] = {
    "arch": arch_features,
    "cost": cost_features,
    "quant": quant_features,
}

# Accuracy depends on the choices, through capacity (log widths) and quantisation noise (steps);
# the "quant" columns lift held-out Kendall tau at 25-100 training rows (benchmarks/RESULTS.md,
# issue 6). Latency (on any target) mostly depends on how much work each layer does.
METRIC_FEATURES = {"accuracy": ("arch", "quant"), "latency_ms": ("arch", "cost")}


def predicted_metrics(ctx: Context) -> list[str]:
    """Metrics that need a fitted predictor: accuracy and the latency of every measurement target."""
    return ["accuracy"] + [metric for metric, _, _ in ctx.exp.measure.latency_targets()]


def features(ctx: Context, metric: str, configs: Sequence[Config]) -> tuple[list[str], np.ndarray]:
    """Concatenated feature sets used to predict `metric`."""
    parts = [FEATURE_SETS[name](ctx, configs) for name in METRIC_FEATURES[metric.partition("@")[0]]]
    if metric != "accuracy" and ctx.exp.predictors.latency == "lut":
        from nas.lut import lut_features  # the lut predictor reads the summed table time as column 0

        parts.insert(0, lut_features(ctx, metric, configs))
    names = [f"{n}" for p in parts for n in p[0]]
    return names, np.concatenate([p[1] for p in parts], axis=1)
