"""Feature sets for the predictors: shapes, names, and what the accuracy columns encode."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nas.context import prepare
from nas.features import FEATURE_SETS, METRIC_FEATURES, features, quant_features, quant_step

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = ("quickstart", "cnn", "transformer")


@pytest.fixture(scope="module", params=EXPERIMENTS)
def ctx(request, tmp_path_factory):
    return prepare(REPO / "experiments" / f"{request.param}.toml", run_dir=tmp_path_factory.mktemp(request.param))


def configs(ctx, n=12):
    rng = np.random.default_rng(0)
    return [ctx.space.largest(), ctx.space.smallest()] + [ctx.space.sample(rng) for _ in range(n)]


def test_quant_step_orders_precisions():
    steps = [quant_step(b) for b in (2, 3, 4, 8, 32)]
    assert steps == sorted(steps, reverse=True)
    assert steps[0] == 1.0 and steps[-1] == 0.0
    assert quant_step(4) == pytest.approx(1 / 7)


@pytest.mark.parametrize("name", sorted(FEATURE_SETS))
def test_every_set_gives_named_finite_columns(ctx, name):
    cs = configs(ctx)
    names, X = FEATURE_SETS[name](ctx, cs)
    assert X.shape == (len(cs), len(names))
    assert len(set(names)) == len(names)
    assert np.all(np.isfinite(X))


@pytest.mark.parametrize("metric", ["accuracy", "latency_ms"])
def test_metric_features_are_unique_concatenations(ctx, metric):
    cs = configs(ctx)
    width = sum(len(FEATURE_SETS[s](ctx, cs[:1])[0]) for s in METRIC_FEATURES[metric])
    if metric != "accuracy" and ctx.exp.predictors.latency == "lut":
        # A table (values of the test's own making) for every unit of the space; the lut columns come first.
        from nas.io import append_jsonl
        from nas.lut import lut_slots, space_layers, table_path

        path = table_path(ctx, metric)
        path.parent.mkdir(parents=True, exist_ok=True)
        layers = space_layers(ctx)
        macs = {u.key: u.macs for config in layers.values() for u in ctx.family.lut_units(ctx.space, config)}
        for i, key in enumerate(sorted(layers)):
            append_jsonl(path, {"key": key, "ms": 1e-3 * (i + 1), "macs": macs[key]})
        width += 1 + len(lut_slots(ctx))
    names, X = features(ctx, metric, cs)
    assert len(set(names)) == len(names), "feature sets must not reuse a column name"
    assert X.shape == (len(cs), width) and np.all(np.isfinite(X))


def test_accuracy_uses_quant_columns():
    assert "quant" in METRIC_FEATURES["accuracy"]


def test_quant_features_see_precision_and_capacity(ctx):
    names, X = quant_features(ctx, [ctx.space.largest(), ctx.space.smallest()])
    big, small = dict(zip(names, X[0])), dict(zip(names, X[1]))
    assert big["q.w_step_max"] == 0.0 or big["q.w_step_max"] <= small["q.w_step_max"]
    assert small["q.w_step_sum"] >= big["q.w_step_sum"]
    assert big["q.log_macs"] > small["q.log_macs"]
    assert big["q.log_weights"] > small["q.log_weights"]


def test_quant_features_equal_for_permuted_sums():
    """Same multiset of bit-widths in another layer order: the totals are bit-identical floats."""
    ctx = prepare(REPO / "experiments" / "quickstart.toml", run_dir="unused")
    base = {**ctx.space.largest(), "depth": 3}
    a = {**base, "bits.0": 2, "bits.1": 4, "bits.2": 8}
    b = {**base, "bits.0": 8, "bits.1": 2, "bits.2": 4}
    names, X = quant_features(ctx, [a, b])
    for col in ("q.w_step_sum", "q.a_step_sum", "q.w_step_max"):
        k = names.index(col)
        assert X[0, k] == X[1, k]


def test_inactive_layers_are_zero():
    ctx = prepare(REPO / "experiments" / "quickstart.toml", run_dir="unused")
    shallow = ctx.space.canonical({**ctx.space.largest(), "depth": 1, "bits.0": 2})
    names, X = quant_features(ctx, [shallow])
    row = dict(zip(names, X[0]))
    unused = [n for n in names if n.startswith("q.log_macs.") and row[n] == 0.0]
    assert len(unused) == 2  # two of the three hidden slots are not used at depth 1
