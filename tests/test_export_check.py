"""The export's own check: the reference is the compiled extracted subnet (as every shipped form is
compiled), and a non-finite output on one side only is a disagreement, not a pass."""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
import test_cnn
from flax import nnx

TRANSFORMER_TOML = """
[model]
family = "transformer"
max_depth = 1
embed = 16
heads = 2
head_dim = 8
ffn = 16
patch = 4

[model.space]
depth = [1]
heads = [2]
ffn = [16]
bits = [8, 32]
"""
MODELS = {"cnn": test_cnn.SMALL_MODEL_TOML, "transformer": TRANSFORMER_TOML}


@pytest.mark.parametrize("family", list(MODELS))
def test_float_members_with_large_logits_pass_the_export_check(family: str, tmp_path: Path) -> None:
    from nas.context import prepare
    from nas.data import load_data
    from nas.export import deployable_function, write_member

    ctx = prepare(test_cnn.write_cnn(tmp_path, model=MODELS[family]), run_dir=tmp_path / "run")
    model = ctx.family.build(ctx.space, rngs=nnx.Rngs(0))
    model.head.kernel[...] = model.head.kernel[...] * 60.0  # logits past 25, as a long training gives
    splits = load_data(ctx.exp.data)
    config = ctx.space.validate({k: (32 if "bits" in k else v) for k, v in ctx.space.largest().items()})
    x = splits.x_test[:64] * splits.scale + splits.shift
    stats = write_member(ctx, model, {"config": config}, splits, tmp_path / "m", x)
    assert float(np.abs(np.asarray(deployable_function(ctx, model, config, splits)(jnp.asarray(x)))).max()) > 25
    assert stats["export_max_abs_diff"] <= 1e-5 and stats["export_samples_over_tolerance"] == 0


def test_non_finite_outputs_agree_only_with_the_same_non_finite_outputs() -> None:
    from nas.export import output_agreement

    x = np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32)

    def with_value(value: float, row: int = 3):
        def fn(a):
            out = np.asarray(a, np.float32) * 2.0
            out[row, 1] = value
            return out
        return fn

    reference = lambda a: np.asarray(a) * 2.0  # noqa: E731
    for kind in ("float", "quantised"):
        nan = output_agreement(with_value(np.nan), reference, x, kind)
        assert not nan["ok"] and nan["over"] == 1 and nan["max_abs_diff"] == np.inf
        assert not output_agreement(with_value(np.inf), reference, x, kind)["ok"]
        assert not output_agreement(with_value(np.inf), with_value(-np.inf), x, kind)["ok"]
        assert output_agreement(with_value(np.nan), with_value(np.nan), x, kind)["ok"]
        assert output_agreement(with_value(np.inf), with_value(np.inf), x, kind)["ok"]
        assert not output_agreement(with_value(np.nan, 4), with_value(np.nan), x, kind)["ok"]
