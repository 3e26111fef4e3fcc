"""What the predictors' cost and quant columns hold, by hand on the quickstart MLP (40 inputs, widths
128, 10 classes), and which sets the accuracy and latency predictors read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nas.context import Context, prepare
from nas.features import cost_features, features, quant_features

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ctx() -> Context:
    return prepare(REPO / "experiments" / "quickstart.toml", run_dir="unused")


def _mixed(ctx: Context) -> dict[str, int]:
    """Three hidden layers of 128: the first at 8 bits, the head at 2, the rest float."""
    return {**ctx.space.largest(), "depth": 3, "bits.0": 8, "bits.out": 2}


def test_quantised_layers_count_their_macs_and_inputs_in_the_quantised_columns(ctx: Context) -> None:
    names, X = cost_features(ctx, [_mixed(ctx)])
    row = dict(zip(names, X[0]))
    assert [row[f"qmacs.{s}"] for s in ("hidden.0", "hidden.1", "hidden.2", "head")] == [40 * 128, 0, 0, 128 * 10]
    # The fake-quantised input of a layer is what it reads: 40 features into the first, 128 into the head.
    assert [row[f"qacts.{s}"] for s in ("hidden.0", "hidden.1", "hidden.2", "head")] == [40, 0, 0, 128]
    assert row["macs"] == 40 * 128 + 2 * 128 * 128 + 128 * 10 and row["layers"] == 4


def test_quant_totals_by_hand(ctx: Context) -> None:
    names, X = quant_features(ctx, [_mixed(ctx)])
    row = dict(zip(names, X[0]))
    # The bottleneck is the narrowest layer before the head (128), not the head's 10 classes.
    assert row["q.log_min_channels"] == pytest.approx(np.log2(129))
    bits = 40 * 128 * 8 + 2 * 128 * 128 * 32 + 128 * 10 * 2
    assert row["q.log_weight_bits"] == pytest.approx(np.log2(1 + bits))


def test_latency_reads_the_cost_columns_and_accuracy_the_quant_ones(ctx: Context) -> None:
    latency, _ = features(ctx, "latency_ms", [_mixed(ctx)])
    accuracy, _ = features(ctx, "accuracy", [_mixed(ctx)])
    assert "qmacs.hidden.0" in latency and not any(n.startswith("q.") for n in latency)
    assert "q.w_step_max" in accuracy and "qmacs.hidden.0" not in accuracy
