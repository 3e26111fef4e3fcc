"""nas export's own check: each shipped form (as read back from disk) must reproduce the extracted subnet,
so a writer or packer that damages the numbers stops the export instead of shipping."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from flax import nnx

from conftest import write_tiny
from nas import packing
from nas.context import prepare
from nas.data import load_data
from nas.errors import StageError
from nas.export import write_member


def _setup(tmp_path: Path):
    exp = write_tiny(tmp_path)
    exp.write_text(exp.read_text().replace("[export]", '[export]\nformats = ["npz"]'))
    ctx = prepare(exp, run_dir=tmp_path / "run")
    model = ctx.family.build(ctx.space, rngs=nnx.Rngs(0))
    splits = load_data(ctx.exp.data)
    config = {**ctx.space.largest(), "bits.0": 4, "bits.1": 8}
    x = (splits.x_test[:40] * splits.scale + splits.shift).astype(np.float32)
    return ctx, model, splits, {"config": config}, x


def test_an_untouched_member_passes(tmp_path: Path) -> None:
    ctx, model, splits, row, x = _setup(tmp_path)
    stats = write_member(ctx, model, row, splits, tmp_path / "m", x)
    assert stats["export_checked"] == ["npz"] and stats["export_max_abs_diff"] <= 1e-3
    assert stats["params_bytes"] == stats["predicted_size_bytes"] == ctx.family.size_bytes(ctx.space, row["config"])


def test_a_writer_that_damages_the_npz_fails_the_check(tmp_path: Path, monkeypatch) -> None:
    ctx, model, splits, row, x = _setup(tmp_path)
    real = packing.save_npz

    def damaged(path, tree):  # the arrays in memory stay right; the file on disk does not
        tree = [dict(layer) for layer in tree]
        tree[-1]["bias"] = tree[-1]["bias"] + np.float32(1.0)
        real(path, tree)

    monkeypatch.setattr(packing, "save_npz", damaged)
    with pytest.raises(StageError, match="differ from the extracted"):
        write_member(ctx, model, row, splits, tmp_path / "m", x)


def test_a_packer_that_damages_the_weights_fails_the_check(tmp_path: Path, monkeypatch) -> None:
    ctx, model, splits, row, x = _setup(tmp_path)
    real = packing.pack_layer

    def damaged(kernel, bias, act_clip, bits):
        return real(kernel, np.asarray(bias, np.float32) + np.float32(1.0), act_clip, bits)

    monkeypatch.setattr(packing, "pack_layer", damaged)
    with pytest.raises(StageError, match="differ from the extracted"):
        write_member(ctx, model, row, splits, tmp_path / "m", x)


def test_a_float_member_is_checked_at_the_float_tolerance(tmp_path: Path, monkeypatch) -> None:
    """A float subnet computes the same ops as its export: 1e-4 off is a fault, not a rounding flip."""
    ctx, model, splits, _, x = _setup(tmp_path)
    row = {"config": {**ctx.space.largest(), "bits.0": 32, "bits.1": 32, "bits.out": 32}}
    real = packing.save_npz

    def slightly_off(path, tree):
        tree = [dict(layer) for layer in tree]
        tree[-1]["bias"] = tree[-1]["bias"] + np.float32(1e-4)
        real(path, tree)

    monkeypatch.setattr(packing, "save_npz", slightly_off)
    with pytest.raises(StageError, match="for a float subnet"):
        write_member(ctx, model, row, splits, tmp_path / "m", x)
