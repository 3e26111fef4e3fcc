"""Tests for predictors/: conformance for every registered kind, files, metrics."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest

from nas.errors import PredictorFileError
from predictors import (
    NEEDS_LAYER_TABLE,
    PREDICTORS,
    Predictor,
    kendall_tau,
    load,
    make,
    mape,
    save,
    score,
    spearman,
    within,
)

# Measured held-out tau on this task: ridge 0.91, mlp_ensemble 0.80, gbm 0.65;
# a linear model reaches only ~0.13 and constants give nan, so 0.55 can fail.
TAU_THRESHOLD = 0.55
N_FEATURES = 8
NAMES = [f"f{i}" for i in range(N_FEATURES)]
# The lut kind needs a summed per-layer latency as column 0: tests/test_lut.py covers it.
KINDS = sorted(k for k in PREDICTORS if k not in NEEDS_LAYER_TABLE)


def nonlinear(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """y = 1 + x0*x1 + 0.5*x2^2 + noise over 8 features, 5 of them irrelevant."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1.0, 1.0, size=(n, N_FEATURES))
    y = 1.0 + X[:, 0] * X[:, 1] + 0.5 * X[:, 2] ** 2 + 0.05 * rng.normal(size=n)
    return X, y


def multiplicative(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A latency-like positive target spanning about a decade, with log-normal noise."""
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 4, size=(n, N_FEATURES)).astype(float)
    y = 2.0 * np.exp(0.15 * X[:, :6].sum(axis=1) + 0.03 * rng.normal(size=n))
    return X, y


class ConstantPredictor(Predictor):
    """Predicts the training mean: the baseline the tau threshold must reject."""

    kind = "constant_for_tests"

    def _fit(self, Z, t):
        self.c = float(t.mean())

    def _predict(self, Z):
        return np.full(len(Z), self.c), np.zeros(len(Z))

    def _params(self):
        return {"c": self.c}

    def _load_params(self, params, n_features):
        self.c = float(params["c"])


@pytest.fixture(scope="module")
def train_test() -> tuple[np.ndarray, ...]:
    return (*nonlinear(200, 0), *nonlinear(300, 1))


@pytest.fixture(scope="module")
def fitted(train_test) -> dict[str, Predictor]:
    X, y, _, _ = train_test
    return {kind: make(kind).fit(X, y) for kind in KINDS}


# --- conformance: every registered kind -------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_kind_is_registered_consistently(kind):
    cls = PREDICTORS[kind]
    assert cls.kind == kind
    assert isinstance(make(kind), cls)


@pytest.mark.parametrize("kind", KINDS)
def test_held_out_kendall_tau(kind, fitted, train_test):
    _, _, Xte, yte = train_test
    mean, _ = fitted[kind].predict(Xte)
    assert kendall_tau(yte, mean) > TAU_THRESHOLD


def test_tau_threshold_rejects_baselines(train_test):
    X, y, Xte, yte = train_test
    const = ConstantPredictor().fit(X, y).predict(Xte)[0]
    assert not kendall_tau(yte, const) > TAU_THRESHOLD
    linear = make("ridge", degree=1).fit(X, y).predict(Xte)[0]
    assert not kendall_tau(yte, linear) > TAU_THRESHOLD
    noise = np.random.default_rng(3).normal(size=len(yte))
    assert not kendall_tau(yte, noise) > TAU_THRESHOLD


@pytest.mark.parametrize("kind", KINDS)
def test_predict_shapes_and_std(kind, fitted, train_test):
    _, _, Xte, _ = train_test
    mean, std = fitted[kind].predict(Xte[:17])
    assert mean.shape == (17,) and std.shape == (17,)
    assert np.all(np.isfinite(mean)) and np.all(std >= 0)
    one_mean, _ = fitted[kind].predict(Xte[:1])
    np.testing.assert_allclose(one_mean, mean[:1])


@pytest.mark.parametrize("kind", KINDS)
def test_score_method(kind, fitted, train_test):
    _, _, Xte, yte = train_test
    s = fitted[kind].score(Xte, yte)
    assert s["n"] == len(yte)
    json.dumps(s)
    assert s["kendall_tau"] == pytest.approx(kendall_tau(yte, fitted[kind].predict(Xte)[0]))


@pytest.mark.parametrize("kind", KINDS)
def test_save_load_round_trip_is_exact(kind, fitted, train_test, tmp_path):
    _, _, Xte, _ = train_test
    path = tmp_path / "sub" / f"{kind}.json"
    save(fitted[kind], path, feature_names=NAMES, meta={"target": "acc", "tau": math.nan})
    loaded, header = load(path, feature_names=NAMES)
    assert type(loaded) is type(fitted[kind])
    assert header["format"] == "nas-predictor" and header["version"] == 1
    assert header["kind"] == kind and header["feature_names"] == NAMES
    assert header["meta"] == {"target": "acc", "tau": None}
    before, after = fitted[kind].predict(Xte), loaded.predict(Xte)
    np.testing.assert_array_equal(before[0], after[0])
    np.testing.assert_array_equal(before[1], after[1])
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left


@pytest.mark.parametrize("kind", KINDS)
def test_log_target(kind):
    X, y = multiplicative(200, 0)
    Xte, yte = multiplicative(200, 1)
    p = make(kind, log_target=True).fit(X, y)
    mean, std = p.predict(Xte)
    assert np.all(mean > 0) and np.all(std >= 0)
    assert mape(yte, mean) < 0.15
    assert kendall_tau(yte, mean) > 0.7
    with pytest.raises(ValueError, match="positive"):
        make(kind, log_target=True).fit(X, -y)


@pytest.mark.parametrize("kind", KINDS)
def test_deterministic(kind, fitted, train_test):
    X, y, Xte, _ = train_test
    again = make(kind).fit(X, y)
    np.testing.assert_array_equal(again.predict(Xte)[0], fitted[kind].predict(Xte)[0])


@pytest.mark.parametrize("kind", KINDS)
def test_input_checks(kind, fitted):
    with pytest.raises(RuntimeError, match="not fitted"):
        make(kind).predict(np.zeros((2, N_FEATURES)))
    with pytest.raises(ValueError, match="features"):
        fitted[kind].predict(np.zeros((2, N_FEATURES + 1)))
    with pytest.raises(ValueError, match="X has no feature columns"):  # lut: IndexError, gbm: empty argmax
        make(kind).fit(np.zeros((20, 0)), np.arange(1.0, 21.0))


def test_mlp_std_is_a_real_spread(fitted, train_test):
    _, _, Xte, _ = train_test
    _, std = fitted["mlp_ensemble"].predict(Xte)
    assert np.all(std > 0)
    _, far_std = fitted["mlp_ensemble"].predict(Xte * 5.0)  # far outside the training box
    assert far_std.mean() > std.mean()


def test_gp_finds_the_relevant_features_and_is_unsure_far_away(fitted, train_test):
    gp = fitted["gp"]
    length_scales = np.exp(gp.theta[:N_FEATURES])
    # y uses x0, x1, x2 only: each of them varies on a shorter scale than any of the other five.
    assert length_scales[:3].max() < length_scales[3:].min()
    _, _, Xte, yte = train_test
    mean, std = gp.predict(Xte)
    # The spread is that of a new measurement (noise sd 0.05 here) plus the posterior's.
    assert 0.03 < np.median(std) < 0.2 and np.sqrt(np.mean((mean - yte) ** 2)) < 0.15
    _, far_std = gp.predict(Xte * 5.0)
    assert far_std.mean() > 2 * std.mean()


def test_gp_on_a_large_table_uses_seeded_row_subsets(train_test):
    X, y, Xte, yte = train_test
    gp = make("gp", fit_rows=60, max_rows=120).fit(X, y)  # 200 rows
    assert len(gp.to_dict()["params"]["train_features"]) == 120
    assert kendall_tau(yte, gp.predict(Xte)[0]) > TAU_THRESHOLD
    again = make("gp", fit_rows=60, max_rows=120).fit(X, y)
    assert np.array_equal(gp.predict(Xte)[0], again.predict(Xte)[0])


@pytest.mark.parametrize("kind", ["ridge", "gbm"])
def test_constant_std_is_the_typical_held_out_error(kind, fitted, train_test):
    _, _, Xte, yte = train_test
    mean, std = fitted[kind].predict(Xte)
    assert np.ptp(std) == 0 and std[0] > 0
    rms = float(np.sqrt(np.mean((mean - yte) ** 2)))
    # Estimated on the training rows only (out-of-fold / leave-one-out), it should match fresh data.
    assert 0.6 * rms < std[0] < 1.6 * rms, (std[0], rms)


def test_gbm_files_without_sigma_load_with_no_uncertainty(fitted, train_test):
    d = json.loads(json.dumps(fitted["gbm"].to_dict()))
    del d["params"]["sigma"]
    mean, std = Predictor.from_dict(d).predict(train_test[2])
    np.testing.assert_array_equal(mean, fitted["gbm"].predict(train_test[2])[0])
    assert np.all(std == 0)


def test_make_unknown_kind():
    with pytest.raises(ValueError, match="unknown predictor kind 'nope'; known: "):
        make("nope")


def test_make_rejects_bad_option():
    with pytest.raises(ValueError):
        make("ridge", degree=3)
    with pytest.raises(TypeError):
        make("gbm", no_such_option=1)


# --- corrupt and incompatible files -------------------------------------------


@pytest.fixture()
def saved(fitted, tmp_path) -> dict[str, Path]:
    paths = {}
    for kind in KINDS:
        paths[kind] = tmp_path / f"{kind}.json"
        save(fitted[kind], paths[kind], feature_names=NAMES)
    return paths


def _rewrite(path: Path, edit) -> None:
    """Edit a saved file as a person would who also drops its digest (so the checks behind it run)."""
    header = json.loads(path.read_text())
    del header["sha256"]
    edit(header)
    path.write_text(json.dumps(header))


@pytest.mark.parametrize("kind", KINDS)
def test_a_value_edited_after_saving_is_caught_by_the_digest(kind, saved):
    header = json.loads(saved[kind].read_text())
    header["model"]["scaler"]["y_mean"] += 1e6  # structurally valid: only the digest can tell
    saved[kind].write_text(json.dumps(header))
    _expect_error(saved[kind], "changed since it was written")
    del header["sha256"]
    saved[kind].write_text(json.dumps(header))
    load(saved[kind], feature_names=NAMES)  # without a digest: loads as edited


def _expect_error(path: Path, match: str, **kwargs) -> None:
    with pytest.raises(PredictorFileError, match=match) as info:
        load(path, **kwargs)
    message = str(info.value)
    assert str(path) in message and "\n" not in message


def test_missing_file(tmp_path):
    _expect_error(tmp_path / "absent.json", "not found")


@pytest.mark.parametrize("kind", KINDS)
def test_truncated_json(kind, saved):
    text = saved[kind].read_text()
    saved[kind].write_text(text[: len(text) // 2])
    _expect_error(saved[kind], "not valid JSON")


def test_wrong_format_tag(saved):
    _rewrite(saved["ridge"], lambda h: h.update(format="something-else"))
    _expect_error(saved["ridge"], "format")


def test_top_level_not_object(tmp_path):
    path = tmp_path / "list.json"
    path.write_text("[1, 2]")
    _expect_error(path, "not a predictor file")


@pytest.mark.parametrize("version", [2, 0, "1", None, True])
def test_unsupported_version(saved, version):
    _rewrite(saved["ridge"], lambda h: h.update(version=version))
    _expect_error(saved["ridge"], "unsupported predictor file version")


@pytest.mark.parametrize("kind", [["ridge"], {"ridge": 1}])
def test_a_kind_that_is_no_string_is_a_predictor_file_error(saved, kind):
    _rewrite(saved["ridge"], lambda h: h.update(kind=kind))
    _expect_error(saved["ridge"], "unknown predictor kind")


def test_unknown_kind(saved):
    def edit(h):
        h["kind"] = "xgboost"
        h["model"]["kind"] = "xgboost"

    _rewrite(saved["gbm"], edit)
    _expect_error(saved["gbm"], "unknown predictor kind 'xgboost'")


def test_model_kind_differs_from_header(saved):
    _rewrite(saved["gbm"], lambda h: h["model"].update(kind="ridge"))
    _expect_error(saved["gbm"], "differs")


def test_feature_mismatch(saved):
    other = NAMES[:-1] + ["depth"]
    _expect_error(saved["ridge"], "fitted on other features: .*'depth'", feature_names=other)
    _expect_error(saved["ridge"], "other order", feature_names=NAMES[::-1])
    _expect_error(saved["ridge"], "fitted on other features", feature_names=NAMES[:3])


def test_feature_names_count_must_match_model(saved):
    _rewrite(saved["ridge"], lambda h: h.update(feature_names=NAMES[:5]))
    _expect_error(saved["ridge"], "5 feature names")


def _drop_column(matrix: list[list[float]]) -> None:
    for row in matrix:
        row.pop()


SHAPE_EDITS = {
    "ridge": lambda m: m["params"]["coef"].pop(),
    "mlp_ensemble": lambda m: _drop_column(m["params"]["members"][0][1]["W"]),
    "gbm": lambda m: _drop_column(m["params"]["threshold"]),
    "gp": lambda m: _drop_column(m["params"]["train_features"]),
}


@pytest.mark.parametrize("kind", KINDS)
def test_wrong_array_shape(kind, saved):
    _rewrite(saved[kind], lambda h: SHAPE_EDITS[kind](h["model"]))
    _expect_error(saved[kind], "shape")


@pytest.mark.parametrize("kind", KINDS)
def test_scaler_shape_mismatch(kind, saved):
    _rewrite(saved[kind], lambda h: h["model"]["scaler"]["x_scale"].pop())
    _expect_error(saved[kind], "x_scale")


@pytest.mark.parametrize("kind", KINDS)
def test_missing_params(kind, saved):
    _rewrite(saved[kind], lambda h: h["model"].pop("params"))
    _expect_error(saved[kind], "params")


def test_non_numeric_and_bad_options(saved):
    _rewrite(saved["ridge"], lambda h: h["model"]["params"].update(coef="rm -rf /"))
    _expect_error(saved["ridge"], "coef")
    _rewrite(saved["gbm"], lambda h: h["model"]["options"].update(depth=-1))
    _expect_error(saved["gbm"], "bad options")


def test_gbm_feature_index_out_of_range(saved):
    _rewrite(saved["gbm"], lambda h: h["model"]["params"]["feature"][0].__setitem__(0, 99))
    _expect_error(saved["gbm"], "indexes outside")


def test_save_checks_feature_names(fitted, tmp_path):
    with pytest.raises(ValueError, match="feature names"):
        save(fitted["ridge"], tmp_path / "x.json", feature_names=NAMES[:2])
    with pytest.raises(ValueError, match="unfitted"):
        save(make("ridge"), tmp_path / "x.json", feature_names=NAMES)


def test_base_from_dict_dispatches_by_kind(fitted):
    d = json.loads(json.dumps(fitted["gbm"].to_dict()))
    assert type(Predictor.from_dict(d)) is PREDICTORS["gbm"]
    with pytest.raises(PredictorFileError):
        PREDICTORS["ridge"].from_dict(d)


# --- metrics on hand-computed examples ------------------------------------------


def test_kendall_and_spearman_orders():
    a = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert kendall_tau(a, a[::-1]) == pytest.approx(-1.0)
    assert kendall_tau(a, a) == pytest.approx(1.0)
    assert spearman(a, a[::-1]) == pytest.approx(-1.0)
    # One discordant pair of six, no ties: (5 - 1) / 6.
    assert kendall_tau([1, 2, 3, 4], [1, 2, 4, 3]) == pytest.approx(4 / 6)


def test_kendall_tau_b_with_ties():
    # x = [1,1,2,3], y = [1,2,3,4]: concordant 5, discordant 0, one tie in x.
    # tau-b = 5 / sqrt((6 - 1) * 6).
    assert kendall_tau([1, 1, 2, 3], [1, 2, 3, 4]) == pytest.approx(5 / math.sqrt(30))


def test_mape_and_within():
    t = [1.0, 2.0, 4.0, 10.0]
    p = [1.1, 1.8, 4.0, 13.0]  # relative errors 0.1, 0.1, 0, 0.3
    assert mape(t, p) == pytest.approx(0.125)
    assert within(t, p) == pytest.approx(0.75)  # 0.1 counts as within 10 %
    assert within(t, p, tol=0.05) == pytest.approx(0.25)


def test_score_dict_is_json_ready():
    s = score([1.0, 2.0, 4.0], [1.0, 2.0, 5.0])
    assert set(s) == {
        "n",
        "mape",
        "kendall_tau",
        "spearman",
        "within_10pct",
        "within_5pct",
        "rmse",
    }
    assert type(s["n"]) is int and all(type(v) is float for k, v in s.items() if k != "n")
    assert s["rmse"] == pytest.approx(math.sqrt(1 / 3))
    assert s["mape"] == pytest.approx(0.25 / 3)
    json.dumps(s)


@pytest.mark.parametrize(
    "y_true, y_pred",
    [
        ([], []),
        ([1.0], [2.0]),
        ([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]),
        ([1.0, 2.0], [3.0, 3.0]),
    ],
)
def test_degenerate_metrics_give_nan(y_true, y_pred):
    s = score(y_true, y_pred)
    assert math.isnan(s["kendall_tau"]) and math.isnan(s["spearman"])


def test_metrics_reject_length_mismatch():
    with pytest.raises(ValueError):
        mape([1.0, 2.0], [1.0])


# --- regression: mlp_ensemble on a latency-like table ------------------------


def latency_table(n: int, seed: int, outliers: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Like nas.features' latency features: [0, 1] choices next to raw MAC counts
    up to ~30k, a constant, a near-constant flag and a constant-up-to-noise
    column; latency is multiplicative in the MACs, and a few training rows are
    timing outliers 40x too slow."""
    rng = np.random.default_rng(seed)
    choices = rng.integers(0, 4, size=(n, 6)).astype(float) / 3.0
    width = 16 * 2 ** (3 * choices[:, :3])  # 16 .. 128
    macs = np.column_stack([32 * width[:, 0], width[:, 0] * width[:, 1], width[:, 1] * width[:, 2]])
    X = np.column_stack([
        choices,
        macs,
        macs.sum(axis=1, keepdims=True),
        np.full(n, 320.0),
        np.where(rng.random(n) < 0.02, 1.0, 0.0),
        40000.0 + 1e-9 * rng.normal(size=n),
    ])
    y = 0.004 * (1.0 + macs.sum(axis=1) / 4000.0) * np.exp(0.05 * rng.normal(size=n))
    if outliers:
        y[rng.choice(n, outliers, replace=False)] *= 40.0
    return X, y


def test_mlp_log_target_does_not_explode_on_latency_table():
    # Before the fix (squared error, weight decay too weak to matter) the nets
    # memorised the outliers and their neighbourhoods: held-out MAPE ~0.35 with
    # predictions up to 10x the truth, against ridge's 0.13.
    X, y = latency_table(130, 0, outliers=2)
    Xte, yte = latency_table(300, 1)
    ridge, _ = make("ridge", log_target=True).fit(X, y).predict(Xte)
    for seed in (0, 1):
        mean, std = make("mlp_ensemble", log_target=True, seed=seed).fit(X, y).predict(Xte)
        assert np.all(np.isfinite(mean)) and np.all(std >= 0)
        assert mape(yte, mean) < min(0.15, 1.5 * mape(yte, ridge))
        assert np.max(np.abs(np.log(mean / yte))) < np.log(3.0)
        assert kendall_tau(yte, mean) > 0.8


def test_scaler_treats_float_noise_columns_as_constant():
    from predictors.scaling import Standardizer

    X = np.column_stack([np.arange(5.0), 40000.0 + 1e-9 * np.arange(5.0)])
    sc = Standardizer.fit(X, np.arange(5.0))
    assert sc.x_scale[1] == 1.0
    assert np.all(np.abs(sc.x(np.array([[2.0, 40001.0]]))) < 2.0)


def test_gbm_split_between_neighbouring_floats():
    """The midpoint of two adjacent floats can round to the upper one; the split must still separate them."""
    from predictors.gbm import _best_split

    lo = np.nextafter(1.0, 2.0)
    hi = np.nextafter(lo, 2.0)
    X = np.array([[lo], [lo], [hi], [hi]])
    feature, threshold = _best_split(X, np.array([-1.0, -1.0, 1.0, 1.0]), 1)
    assert feature == 0
    assert list(X[:, 0] > threshold) == [False, False, True, True]


@pytest.mark.parametrize("kind", KINDS)
def test_a_column_constant_in_training_does_not_move_predictions(kind):
    # Nothing was learned about a column that never varied; a GP's length scale or an MLP's input
    # weights for it stay at their initial values, and a new value moved GP predictions to the
    # mean (std 0.05 -> 12) before such columns were read as 0.
    X, y = nonlinear(80, 0)
    X[:, 4] = 50176.0
    Xq, _ = nonlinear(5, 1)
    model = make(kind).fit(X, y)
    base = model.predict(np.where(np.arange(N_FEATURES) == 4, 50176.0, Xq))
    moved = model.predict(np.where(np.arange(N_FEATURES) == 4, 100352.0, Xq))
    np.testing.assert_array_equal(base[0], moved[0])
    np.testing.assert_array_equal(base[1], moved[1])


def test_a_feature_in_tiny_units_is_still_a_feature():
    # The constant test is relative to the column's magnitude only: x in units of 1e-13 is x.
    x = np.arange(1.0, 9.0)
    for kind in ("ridge", "gp"):
        mean, _ = make(kind).fit((x * 1e-13)[:, None], 3 * x + 1).predict(np.array([[1e-13], [2e-13]]))
        np.testing.assert_allclose(mean, [4.0, 7.0], atol=0.2)


def test_scaler_files_without_the_constant_columns_load_as_before(tmp_path):
    from predictors.scaling import Standardizer

    X = np.column_stack([np.arange(5.0), np.full(5, 3.0)])
    sc = Standardizer.fit(X, np.arange(5.0))
    assert sc.to_dict()["x_varies"] == [True, False]
    old = {k: v for k, v in sc.to_dict().items() if k != "x_varies"}
    np.testing.assert_array_equal(Standardizer.from_dict(old).x(np.array([[1.0, 5.0]])), [[-1 / np.sqrt(2), 2.0]])
    with pytest.raises(PredictorFileError, match="x_varies"):
        Standardizer.from_dict({**sc.to_dict(), "x_varies": [True]})


def test_mlp_std_is_the_size_of_the_held_out_error(fitted, train_test):
    # The member spread alone was 3-5x narrower than the error on fresh data, so a budget met "with
    # 90 % confidence" (nas query --confidence) held for about half of the subnets.
    _, _, Xte, yte = train_test
    mean, std = fitted["mlp_ensemble"].predict(Xte)
    rms = float(np.sqrt(np.mean((mean - yte) ** 2)))
    assert 0.6 * rms < float(np.sqrt(np.mean(std**2))) < 2.0 * rms, (float(np.sqrt(np.mean(std**2))), rms)
    assert np.mean(np.abs(mean - yte) <= 1.2816 * std) > 0.8  # the two-sided 80 % band holds 80 %


def test_mlp_files_without_sigma_load_with_the_member_spread(fitted, train_test):
    d = json.loads(json.dumps(fitted["mlp_ensemble"].to_dict()))
    del d["params"]["sigma"]
    old = Predictor.from_dict(d)
    mean, std = old.predict(train_test[2])
    np.testing.assert_array_equal(mean, fitted["mlp_ensemble"].predict(train_test[2])[0])
    from predictors.mlp import _forward

    outs = np.stack([_forward(m, old._scaler.x(train_test[2]))[0] for m in old.members])
    np.testing.assert_allclose(std, outs.std(axis=0) * old._scaler.y_scale)


def test_coverage_counts_the_share_within_the_band():
    from predictors.metrics import coverage

    t, p = [1.0, 2.0, 3.0, 4.0], [1.0, 2.5, 3.0, 10.0]
    assert coverage(t, p, [0.1, 0.1, 0.1, 1.0]) == 0.5  # 2.5 is 5 std off, 10 is 3.6 std off
    assert coverage(t, p, [1.0, 1.0, 1.0, 1.0], z=10.0) == 1.0
    assert math.isnan(coverage([], [], []))


def test_exact_predictions_of_zero_and_of_a_constant_count_as_hits():
    from predictors.metrics import coverage

    # within: 0 predicted for 0 was 0/0, a miss; coverage: a std of exactly 0 missed a mean exp(log(5))
    # gives back one ulp off (a constant positive target, fitted exactly in log space).
    assert within([0.0, 1.0, 2.0], [0.0, 1.0, 2.0]) == 1.0
    five = float(np.exp(np.log(5.0)))
    assert five != 5.0 and coverage([5.0, 5.0], [five, five], [0.0, 0.0]) == 1.0
    assert coverage([5.0], [5.001], [0.0]) == 0.0


def test_a_log_target_std_stays_finite_over_a_huge_target_range():
    # Targets over 1e-26..1e26 (within the measurement table's limits): the log-space std passed ~26.6
    # and the std became inf (NaN where exp(mean) underflowed to 0).
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 2))
    t = np.exp(rng.uniform(-60, 60, size=40))
    for kind in ("ridge", "gbm", "gp"):
        mean, std = make(kind, log_target=True).fit(X, t).predict(rng.normal(size=(5, 2)) * 50)
        assert np.isfinite(mean).all() and np.isfinite(std).all() and (std >= 0).all(), kind


@pytest.mark.parametrize("kind", ["ridge", "gbm", "mlp_ensemble", "gp"])
def test_each_kinds_std_covers_held_out_data_about_as_it_says(fitted, train_test, kind):
    # The score's coverage_90: a calibrated std puts ~90 % of fresh measurements in mean +- 1.645 std.
    # The MLP ensemble's member spread alone covered well under half of them.
    s = fitted[kind].score(*train_test[2:])
    assert 0.75 <= s["coverage_90"] <= 1.0, s["coverage_90"]


def test_a_log_target_budget_holds_at_the_log_normal_quantile():
    """`nas query --confidence` on latency (fitted in log space) checks exp(m + z s), the log-normal's
    quantile: median + z std, as before, met a 0.99 budget for 0.962 of subnets."""
    from statistics import NormalDist

    from nas.budget_query import _as_checked

    rng = np.random.default_rng(0)
    X = rng.normal(size=(6000, 3))
    y = np.exp(X @ np.array([0.5, -0.2, 0.1]) + 0.3 * rng.normal(size=len(X)))
    model = make("ridge", degree=1, log_target=True).fit(X[:2000], y[:2000])
    mean, std = model.predict(X[2000:])
    log_mean, log_std = model.predict_fitted(X[2000:])
    np.testing.assert_allclose(np.exp(log_mean), mean)
    values = {"latency_ms": mean, "latency_ms_std": std, "latency_ms_logstd": log_std}
    for confidence in (0.9, 0.99):
        z = NormalDist().inv_cdf(confidence)
        met = np.mean(y[2000:] <= _as_checked(values, "latency_ms", "<=", z))
        assert abs(met - confidence) < 0.012, (confidence, met)
        assert np.mean(y[2000:] >= _as_checked(values, "latency_ms", ">=", z)) > confidence - 0.012
    # The median + z std of the log-normal falls short where it matters (0.99: about 0.962).
    assert np.mean(y[2000:] <= mean + NormalDist().inv_cdf(0.99) * std) < 0.975
    # coverage_90 is taken on the log too: the band a calibrated log-space std covers.
    assert abs(model.score(X[2000:], y[2000:])["coverage_90"] - 0.9) < 0.02


def _repeated(seed: int, configs: int, repeats: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each of `configs` random configs measured `repeats` times (noise 0.1), and 1,000 new configs."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=5)

    def f(X: np.ndarray) -> np.ndarray:
        return np.sin(X @ w) + 0.3 * X[:, 0] * X[:, 1]

    X = np.repeat(rng.normal(size=(configs, 5)), repeats, axis=0)
    new = rng.normal(size=(1000, 5))
    return X, f(X) + 0.1 * rng.normal(size=len(X)), new, f(new) + 0.1 * rng.normal(size=len(new))


@pytest.mark.parametrize("kind", ["ridge", "gbm", "mlp_ensemble"])
def test_repeats_of_a_config_do_not_shrink_the_std(kind):
    """Folds (and ridge's leave-one-out) hold a config's repeats out together: with its twins in
    training the error was the repeats' spread, and the 90 % band covered 0.52 (ridge), 0.29 (gbm),
    0.63 (mlp_ensemble) of new configs at 4 repeats (3 seeds; now 0.86, 0.82, 0.91)."""
    from predictors.metrics import coverage

    X, y, new, y_new = _repeated(0, 30, 4)
    mean, std = make(kind).fit(X, y).predict(new)
    assert coverage(y_new, mean, std) > 0.75


def test_group_folds_keep_repeats_together_and_distinct_rows_as_before():
    from predictors.base import group_folds

    X = np.random.default_rng(0).normal(size=(23, 3))
    # Distinct rows: the seeded permutation split in turn, as the folds were before groups.
    before = np.array_split(np.random.default_rng(7).permutation(23), 5)
    assert [f.tolist() for f in group_folds(X, 5, 7)] == [sorted(f.tolist()) for f in before]
    folds = group_folds(np.repeat(X[:4], 3, axis=0), 5, 7)
    assert len(folds) == 4 and all(len(set(f // 3)) == 1 and len(f) == 3 for f in folds)


def test_ridge_leaves_a_configs_repeats_out_together_exactly():
    """The leave-group-out error is the brute-force refit's (penalised least squares, intercept free)."""
    from predictors.base import repeated_rows
    from predictors.ridge import _ridge_loo

    rng = np.random.default_rng(3)
    G = np.repeat(rng.normal(size=(9, 4)), [1, 2, 3, 1, 1, 2, 1, 1, 4], axis=0)
    G -= G.mean(axis=0)
    t = G @ rng.normal(size=4) + 0.3 * rng.normal(size=len(G))
    t -= t.mean()
    mse, alpha, _ = _ridge_loo(G, t, repeated_rows(G))
    X = np.hstack([np.ones((len(G), 1)), G])
    penalty = alpha * np.diag([0.0, 1, 1, 1, 1])
    errors = np.empty(len(t))
    _, group = np.unique(G, axis=0, return_inverse=True)
    for g in np.unique(group):
        held = np.asarray(group).ravel() == g
        beta = np.linalg.solve(X[~held].T @ X[~held] + penalty, X[~held].T @ t[~held])
        errors[held] = t[held] - X[held] @ beta
    assert mse == pytest.approx(np.mean(errors**2), rel=1e-6)


def test_gp_std_on_few_rows_is_widened_to_the_out_of_fold_error():
    """Type-II ML on few rows is overconfident (length scales at their bound, noise at its floor): the
    90 % band covered 0.61 of new rows at 10 training rows (4 seeds; 0.81 with the out-of-fold scale)."""
    from predictors import Predictor
    from predictors.metrics import coverage

    covered = []
    for seed in range(4):
        rng = np.random.default_rng(seed)
        w = rng.normal(size=5)
        X, new = rng.normal(size=(10, 5)), rng.normal(size=(400, 5))
        y = np.sin(X @ w) + 0.3 * X[:, 0] * X[:, 1] + 0.1 * rng.normal(size=10)
        y_new = np.sin(new @ w) + 0.3 * new[:, 0] * new[:, 1] + 0.1 * rng.normal(size=400)
        model = make("gp").fit(X, y)
        covered.append(coverage(y_new, *model.predict(new)))
        assert model.std_scale >= 1.0
    assert np.mean(covered) > 0.72
    # A file written before the scale was kept loads with its std as it was.
    d = model.to_dict()
    del d["params"]["std_scale"]
    old = Predictor.from_dict(d)
    np.testing.assert_allclose(old.predict(new)[1] * model.std_scale, model.predict(new)[1])


@pytest.mark.parametrize("kind", ["gbm", "mlp_ensemble"])
def test_the_predictors_section_seed_reaches_the_randomised_kinds(tmp_path, kind):
    """`[predictors] seed` seeds the fitted models themselves, not only the held-out split."""
    from conftest import write_tiny
    from nas.context import prepare
    from nas.features import features
    from nas.fit import fit_predictors

    ctx = prepare(write_tiny(tmp_path), run_dir=tmp_path / "run")
    configs = ctx.space.enumerate()[:12]
    rows = [{"config": c, "accuracy": 0.5 + 0.01 * i, "latency_ms": 0.1 + 0.003 * i * i}
            for i, c in enumerate(configs)]
    X = features(ctx, "accuracy", configs)[1]
    saved = {}
    for seed in (0, 0, 1):
        exp = dataclasses.replace(ctx.exp, predictors=dataclasses.replace(ctx.exp.predictors, accuracy=kind,
                                                                          seed=seed))
        folder = tmp_path / f"fit{len(saved)}"
        fit_predictors(dataclasses.replace(ctx, exp=exp), rows, folder, quiet=True)
        # The saved model is fitted on every row, so its predictions depend on the model's seed alone.
        saved[len(saved)] = load(folder / "accuracy.json")[0].predict(X)[0]
    np.testing.assert_array_equal(saved[0], saved[1])
    assert not np.allclose(saved[0], saved[2])
