"""Per-layer latency table and the lut predictor (summed table time x learned correction)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import predictors
from nas.errors import PredictorFileError


def _sum_and_features(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    per_layer = rng.uniform(0.01, 0.2, (n, 3))
    extra = rng.uniform(0, 1, (n, 1))
    return per_layer, np.hstack([per_layer.sum(1, keepdims=True), per_layer, extra])


def test_lut_predictor_learns_a_multiplicative_correction_of_the_sum() -> None:
    per_layer, X = _sum_and_features(120)
    # The whole net is 30 % cheaper than its layers timed alone, a bit more when the extra feature is high.
    y = per_layer.sum(1) * 0.7 * np.exp(0.2 * X[:, -1])
    model = predictors.make("lut").fit(X[:80], y[:80])
    mean, std = model.predict(X[80:])
    assert np.max(np.abs(mean / y[80:] - 1)) < 1e-3 and np.all(std >= 0)
    assert model.score(X[80:], y[80:])["kendall_tau"] > 0.99


def test_lut_predictor_round_trips_and_rejects_bad_files(tmp_path: Path) -> None:
    _, X = _sum_and_features(40)
    y = X[:, 0] * 1.3
    model = predictors.make("lut").fit(X, y)
    names = [f"f{i}" for i in range(X.shape[1])]
    predictors.save(model, tmp_path / "p.json", feature_names=names)
    back, _ = predictors.load(tmp_path / "p.json", feature_names=names)
    assert np.allclose(back.predict(X)[0], model.predict(X)[0])
    doc = json.loads((tmp_path / "p.json").read_text())
    doc["model"]["params"]["correction"] = {"kind": "gbm"}
    (tmp_path / "bad.json").write_text(json.dumps(doc))
    with pytest.raises(PredictorFileError):
        predictors.load(tmp_path / "bad.json", feature_names=names)
    with pytest.raises(ValueError, match="log_target"):
        predictors.make("lut", log_target=False)


def test_lut_is_never_an_accuracy_predictor_nor_auto_picked(tmp_path: Path) -> None:
    from conftest import write_tiny
    from nas.config import load_experiment
    from nas.errors import ConfigError

    exp = write_tiny(tmp_path)
    exp.write_text(exp.read_text().replace('accuracy = "ridge"', 'accuracy = "lut"'))
    with pytest.raises(ConfigError, match="predictors.accuracy"):
        load_experiment(exp)


def test_fit_with_lut_times_every_layer_of_the_space_and_predicts(finished_run, tmp_path: Path) -> None:
    from nas.cli import main
    from nas.context import prepare
    from nas.lut import entry_key, load_table, space_layers
    from nas.oracle import Oracle

    exp, run_dir = finished_run
    work = tmp_path / "run"
    shutil.copytree(run_dir, work)
    lut_exp = tmp_path / "tiny.toml"
    lut_exp.write_text(exp.read_text().replace('latency = "ridge"', 'latency = "lut"'))
    # The measured table is kept (measure does not depend on the predictor kind); fit builds the layer table.
    assert main(["fit", str(lut_exp), "--run-dir", str(work), "--quiet"]) == 0
    ctx = prepare(lut_exp, run_dir=work)
    table = load_table(ctx, "latency_ms")
    keys = set(space_layers(ctx))
    # depth 1-2, widths 8/16/32, bits 4/8/32: every (in, out, bits) the space can build was timed
    assert keys == set(table.entries) and all(ms > 0 for ms in table.entries.values())
    largest = ctx.family.layer_costs(ctx.space, ctx.space.largest())
    assert all(entry_key(c) in table.entries for c in largest)
    quality = json.loads((work / "fit" / "quality.json").read_text())
    assert quality["latency_ms"]["kind"] == "lut"
    out = Oracle(ctx).evaluate([ctx.space.largest(), ctx.space.smallest()])
    assert np.all(out["latency_ms"] > 0) and np.all(np.isfinite(out["latency_ms_std"]))
    # A layer the table lacks is estimated from its kind's entries instead of failing.
    missing = type(largest[0])(**{**largest[0].__dict__, "key": (64, 7)})
    assert table.time_ms(missing) > 0


def test_lut_needs_a_family_that_times_layers_alone(tmp_path: Path) -> None:
    from nas.context import prepare
    from nas.errors import ConfigError

    exp = tmp_path / "t.toml"
    text = (Path(__file__).resolve().parents[1] / "experiments" / "transformer.toml").read_text()
    exp.write_text(text.replace('latency = "ridge"', 'latency = "lut"'))
    with pytest.raises(ConfigError, match="predictors.latency"):
        prepare(exp, run_dir=tmp_path / "run")
