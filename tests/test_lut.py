"""Per-layer latency table and the lut predictor (summed table time x learned correction)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import predictors
from nas.errors import NasError, PredictorFileError, StageError


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


def test_fit_with_lut_times_every_layer_of_the_space_and_predicts(finished_run, tmp_path: Path, capsys) -> None:
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
    largest = ctx.family.lut_units(ctx.space, ctx.space.largest())
    assert all(entry_key(u) in table.entries for u in largest)
    quality = json.loads((work / "fit" / "quality.json").read_text())
    assert quality["latency_ms"]["kind"] == "lut"
    out = Oracle(ctx).evaluate([ctx.space.largest(), ctx.space.smallest()])
    assert np.all(out["latency_ms"] > 0) and np.all(np.isfinite(out["latency_ms_std"]))
    # A unit the table lacks is estimated from its kind's entries instead of failing.
    missing = dataclasses.replace(largest[0], shape=(64, 7), macs=64 * 7)
    assert missing.key not in table.entries and table.time_ms(missing) > 0
    # A table cut short (a crash) is finished on resume, its new rows timed against re-timed old ones.
    import nas.lut

    lut_file = work / "measure" / "lut.jsonl"
    good = lut_file.read_text()
    lines = good.splitlines(keepends=True)
    lut_file.write_text("".join(lines[: len(lines) // 2]))
    seen: list[int] = []
    real = nas.lut.time_chunk

    def spy(m, programs, anchors=(), **kw):
        seen.append(len(anchors))
        assert not kw.get("as_reference")  # the kept rows are the reference, not this session's first chunk
        return real(m, programs, anchors, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(nas.lut, "time_chunk", spy)
        nas.lut.measure_table(ctx, None, "latency_ms", "cpu", ctx.exp.measure.batch_size, quiet=True)
    assert seen and all(n == min(ctx.exp.measure.anchors, len(lines) // 2) for n in seen)
    assert set(load_table(ctx, "latency_ms").entries) == keys
    # ... but not on another machine or XLA setup than the run was measured on: `nas fit` there timed the
    # rest of the table unseen, two machines' times in one table.
    device_json = work / "measure" / "device.json"
    profiles = json.loads(device_json.read_text())
    device_json.write_text(json.dumps({k: {**v, "xla_flags": "--other"} for k, v in profiles.items()}))
    half = "".join(lines[: len(lines) // 2])
    lut_file.write_text(half)
    with pytest.raises(NasError, match=r"measured on another machine or setup \(latency_ms: xla_flags '--other' -> "):
        nas.lut.measure_table(ctx, None, "latency_ms", "cpu", ctx.exp.measure.batch_size, quiet=True)
    assert lut_file.read_text() == half
    # `nas fit --force` says so before it removes the fitted predictors, not after.
    fitted = sorted(p.name for p in (work / "fit").iterdir())
    assert main(["fit", str(lut_exp), "--run-dir", str(work), "--force", "--quiet"]) == 2
    assert "measured on another machine or setup" in capsys.readouterr().err
    assert sorted(p.name for p in (work / "fit").iterdir()) == fitted and lut_file.read_text() == half
    device_json.write_text(json.dumps(profiles))
    for bad in ('{"key": "dense|40x16|w2|a32"}', "[1, 2]", '{"key": "dense|4x4|w8|a8", "ms": -1}',
                '{"key": "dense|4x4|w8|a8", "ms": 1, "macs": 2.5}', '{"key": "k", "ms": 1}',
                '{"key": "dense|axb|w2|a32", "ms": 1}'):
        lut_file.write_text(good + bad + "\n")
        assert main(["query", str(work), "--from", "predictors", "--budget", "size_kb=4"]) == 2, bad
    # A unit lost after the table was finished would be estimated, moving predictions silently: refused.
    lut_file.write_text("".join(good.splitlines(keepends=True)[:-1]))
    capsys.readouterr()
    assert main(["query", str(work), "--from", "predictors", "--budget", "size_kb=4"]) == 2
    err = capsys.readouterr().err
    assert "lacks 1 unit(s) of the space" in err and "nas fit --force" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("ms", [1e308, 1e200, -1.0, 0.0])
def test_a_unit_time_no_timing_gives_is_refused_by_line(tmp_path: Path, ms: float) -> None:
    from nas.lut import read_lut

    path = tmp_path / "lut.jsonl"
    rows = [{"key": "dense|40x16|w8|a8", "ms": 0.01, "macs": 640}, {"key": "dense|16x10|w8|a8", "ms": ms, "macs": 160}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    # 1e308 summed with the other units was inf: `nas fit` and `nas query` ended in a ValueError traceback.
    with pytest.raises(StageError, match="line 2: expected") as info:
        read_lut(path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("row", [{"key": "dense|16x10|w8|a8", "ms": 0.01, "macs": 10**400},
                                 {"key": "dense|16x10|w8|a8", "ms": 0.01, "macs": 10**19},
                                 {"key": "dense|99999999999x99999999999x9999999999|w8|a8", "ms": 0.01},
                                 {"key": "dense|" + "9" * 5000 + "|w8|a8", "ms": 0.01}])
def test_unit_macs_past_any_layer_are_refused_by_line(tmp_path: Path, row: dict) -> None:
    from nas.lut import LatencyTable, read_lut

    path = tmp_path / "lut.jsonl"
    path.write_text(json.dumps({"key": "dense|40x16|w8|a8", "ms": 0.01, "macs": 640}) + "\n" + json.dumps(row) + "\n")
    # 10**400 MACs broke the log-MACs fit (TypeError); a key's shape product past int64 wrapped silently.
    with pytest.raises(StageError, match=r"line 2: the MACs are above 1e\+18, expected a count") as info:
        read_lut(path)
    assert "\n" not in str(info.value)
    key = "dense|4000000000x4000000000|w8|a8"
    assert LatencyTable({key: 1.0}).macs == {key: 16 * 10**18}


# -- units of the CNN and transformer families -------------------------------------------------
def _chain(units: list, x: jax.Array) -> jax.Array:
    """The units run in order, each on the previous output reshaped to its input (one program each)."""
    for _, module, shape in units:
        graphdef, state = nnx.split(module)
        x = jax.jit(lambda s, v, g=graphdef: nnx.merge(g, s)(v))(state, x.reshape((len(x), *shape)))
    return x


def _call(module: nnx.Module, x: jax.Array) -> jax.Array:
    graphdef, state = nnx.split(module)
    return jax.jit(lambda s, v: nnx.merge(graphdef, s)(v))(state, x)


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    """(context, random supernet) of test_cnn's tiny CNN experiment (its space is test_cnn.SPACE)."""
    import test_cnn

    from nas.context import prepare

    folder = tmp_path_factory.mktemp("lut_cnn")
    return prepare(test_cnn.write_cnn(folder), run_dir=folder / "run"), test_cnn._random_supernet()


@pytest.mark.parametrize("name", ["largest", "smallest", "mixed"])
def test_cnn_units_in_sequence_are_the_extracted_net(cnn, name: str) -> None:
    import test_cnn

    from nas.calibrate import extract_subnet
    from nas.lut import unit_modules

    ctx, model = cnn
    config = test_cnn.CONFIGS[name]
    x = jnp.asarray(np.random.default_rng(0).normal(0.0, 1.0, (8, 64)), jnp.float32)
    units = unit_modules(ctx, model, config)  # from the recalibrated, extracted subnet
    assert [u.kind for u, _, _ in units] == ["stem"] + ["block"] * (config["depth.0"] + config["depth.1"]) + ["head"]
    assert [u for u, _, _ in units] == ctx.family.lut_units(ctx.space, config)
    expected = _call(extract_subnet(ctx, model, config), x)
    assert float(jnp.max(jnp.abs(_chain(units, x) - expected))) <= 1e-5
    assert sum(u.macs for u, _, _ in units) == ctx.family.macs(ctx.space, config)


@pytest.mark.parametrize("name", ["largest", "smallest", "mixed", "random0"])
def test_transformer_units_in_sequence_are_the_extracted_net(name: str) -> None:
    import test_transformer as tt

    model = tt.FAMILY.build(tt.SPACE, rngs=nnx.Rngs(0))
    tt._perturb(model)
    config = tt._configs(tt.SPACE)[name]
    subnet = tt.FAMILY.extract(model, tt.SPACE, config)
    units = tt.FAMILY.unit_modules(subnet, tt.SPACE, config)
    assert [u.kind for u, _, _ in units] == ["embed"] + ["layer"] * config["depth"] + ["head"]
    x = jnp.asarray(np.random.default_rng(0).normal(0.0, 1.0, (8, 64)), jnp.float32)
    assert float(jnp.max(jnp.abs(_chain(units, x) - _call(subnet, x)))) <= 1e-5
    assert sum(u.macs for u, _, _ in units) == tt.FAMILY.macs(tt.SPACE, config)


def test_mlp_units_in_sequence_are_the_extracted_net() -> None:
    from supernets.mlp import MLPFamily

    family = MLPFamily()
    space = family.parse_space({"family": "mlp", "max_depth": 2, "max_width": 32,
                                "space": {"depth": [1, 2], "width": [8, 32], "bits": [4, 32]}}, 64, 10)
    model = family.build(space, rngs=nnx.Rngs(0))
    x = jnp.asarray(np.random.default_rng(0).normal(0.0, 1.0, (8, 64)), jnp.float32)
    for config in (space.largest(), space.smallest()):
        subnet = family.extract(model, space, config)
        units = family.unit_modules(subnet, space, config)
        assert [u.key for u, _, _ in units] == [f"dense|{c.key[0]}x{c.key[1]}|w{c.bits}|a{c.a_bits}"
                                                 for c in family.layer_costs(space, config)]  # old table keys
        assert float(jnp.max(jnp.abs(_chain(units, x) - _call(subnet, x)))) <= 1e-5


def test_cnn_unit_keys_follow_shape_and_bits_not_the_slot() -> None:
    import test_cnn

    from supernets.cnn import CNNFamily

    # Stage 0: three equal 8 -> 8 blocks (the first reads the unsigned stem output); stage 1 repeats
    # 8 -> 8 on the same 8x8 input with stride 2.
    stages = [{"channels": 8, "max_depth": 3, "stride": 1}, {"channels": 8, "max_depth": 2, "stride": 2}]
    model = {**test_cnn.MODEL, "stages": stages, "space": {**test_cnn.MODEL["space"], "depth": [[1, 2, 3], [1, 2]]}}
    space = CNNFamily().parse_space(model, 64, 10, test_cnn.SHAPE)
    config = space.largest()

    def keys(**change: int) -> dict[str, str]:
        return {u.slot: u.key for u in CNNFamily().lut_units(space, space.canonical({**config, **change}))}

    base = keys()
    assert base["s0.b1"] == base["s0.b2"]  # equal blocks in different slots share one entry
    assert base["s0.b0"] != base["s0.b1"]  # signed vs unsigned input
    assert base["s1.b0"].replace("x2x1|", "x1x1|") == base["s0.b1"] != base["s1.b0"]  # the stride alone
    assert base["s1.b1"] != base["s0.b1"]  # 4x4 input
    for change in ({"bits.0.2": 8}, {"kernel.0.2": 3}, {"expand.0.2": 2}):
        other = keys(**change)
        assert other["s0.b2"] != base["s0.b2"] and other["s0.b1"] == base["s0.b1"]
    assert keys(**{"bits.0.2": 8})["s0.b2"] == keys(**{"bits.0.1": 8})["s0.b1"]


def test_transformer_unit_keys_follow_shape_and_bits_not_the_slot() -> None:
    import test_transformer as tt

    config = tt.SPACE.largest()

    def keys(**change: int) -> dict[str, str]:
        return {u.slot: u.key for u in tt.FAMILY.lut_units(tt.SPACE, tt.SPACE.canonical({**config, **change}))}

    base = keys()
    assert base["layer.0"] == base["layer.1"] == base["layer.2"]
    for change in ({"heads.1": 2}, {"ffn.1": 32}, {"bits.1": 8}, {"abits.1": 8}):
        assert keys(**change)["layer.1"] != base["layer.1"] and keys(**change)["layer.0"] == base["layer.0"]
    smaller = keys(embed=16)
    assert all(smaller[slot] != base[slot] for slot in base)  # the embedding width reaches every unit


def test_lut_features_sum_the_unit_times(cnn, tmp_path: Path) -> None:
    from nas.context import prepare
    from nas.lut import LatencyTable, lut_features, space_layers

    exp = tmp_path / "t.toml"
    text = (Path(__file__).resolve().parents[1] / "experiments" / "transformer.toml").read_text()
    exp.write_text(text.replace('latency = "ridge"', 'latency = "lut"'))
    for ctx in (cnn[0], prepare(exp, run_dir=tmp_path / "run")):
        rng = np.random.default_rng(0)
        layers = space_layers(ctx)
        macs = {u.key: u.macs for config in layers.values() for u in ctx.family.lut_units(ctx.space, config)}
        times = {key: float(rng.uniform(0.01, 1.0)) for key in layers}
        with pytest.raises(NasError, match="its MACs are needed"):  # only a dense key's shape gives its MACs
            LatencyTable(times)
        table = LatencyTable(times, macs)
        configs = [ctx.space.largest(), ctx.space.smallest()] + [ctx.space.sample(rng) for _ in range(5)]
        names, X = lut_features(ctx, "latency_ms", configs, table)
        assert names[0] == "lut_sum" and len(names) == X.shape[1]
        for row, config in zip(X, configs):
            units = ctx.family.lut_units(ctx.space, config)
            assert row[0] == pytest.approx(sum(table.entries[u.key] for u in units))
            assert row[0] == pytest.approx(row[1:].sum()) and np.count_nonzero(row[1:]) == len(units)


def test_measure_table_times_every_cnn_unit(tmp_path: Path) -> None:
    import test_cnn

    from nas.context import prepare
    from nas.io import read_jsonl
    from nas.lut import load_table, lut_features, measure_table, space_layers, table_path

    # test_cnn's end-to-end model at 8 bits and kernel 3 only: 1 stem, 2 x 3 blocks, 1 head = 8 units.
    model_toml = test_cnn.SMALL_MODEL_TOML.replace("kernel = [1, 3]", "kernel = [3]").replace("bits = [4, 32]",
                                                                                            "bits = [8]")
    exp = test_cnn.write_cnn(tmp_path, model=model_toml)
    exp.write_text(exp.read_text().replace('latency = "ridge"', 'latency = "lut"'))
    ctx = prepare(exp, run_dir=tmp_path / "run")
    ctx.path("measure").mkdir(parents=True)  # the measure stage's folder, where the table is kept
    model = ctx.family.build(ctx.space, rngs=nnx.Rngs(0))
    metric, device, batch = ctx.exp.measure.latency_targets()[0]
    keys = set(space_layers(ctx))
    assert len(keys) == 8
    table = measure_table(ctx, model, metric, device, batch, quiet=True)
    assert set(table) == keys and all(ms > 0 for ms in table.values())
    rows = read_jsonl(table_path(ctx, metric))
    assert len(rows) == 8 and all(r["macs"] > 0 for r in rows)
    assert measure_table(ctx, None, metric, device, batch, quiet=True) == table  # complete: nothing re-timed
    X = lut_features(ctx, metric, [ctx.space.largest(), ctx.space.smallest()], load_table(ctx, metric))[1]
    assert X[0, 0] > X[1, 0] > 0
    # A block entry without its MACs (a table of an older version) is not estimated from a wrong count:
    # the table lacks it (said by load_table) until it is timed again.
    path = table_path(ctx, metric)
    lines = path.read_text().splitlines(keepends=True)
    old = next(i for i, line in enumerate(lines) if '"block|' in line)
    lines[old] = json.dumps({k: v for k, v in json.loads(lines[old]).items() if k != "macs"}) + "\n"
    path.write_text("".join(lines))
    with pytest.raises(StageError, match="lacks 1 unit"):
        load_table(ctx, metric)
    assert set(measure_table(ctx, model, metric, device, batch, quiet=True)) == keys
    assert set(load_table(ctx, metric).entries) == keys


@pytest.mark.parametrize("family", ["cnn", "transformer"])
def test_lut_is_accepted_for_every_family_with_units(tmp_path: Path, family: str) -> None:
    from nas.context import prepare

    exp = tmp_path / "t.toml"
    text = (Path(__file__).resolve().parents[1] / "experiments" / f"{family}.toml").read_text()
    exp.write_text(text.replace('latency = "ridge"', 'latency = "lut"').replace('latency = "gbm"', 'latency = "lut"'))
    assert prepare(exp, run_dir=tmp_path / "run").exp.predictors.latency == "lut"


def test_lut_needs_a_family_that_times_units_alone(tmp_path: Path, monkeypatch) -> None:
    from nas.context import prepare
    from nas.errors import ConfigError
    from supernets.transformer import TransformerFamily

    monkeypatch.delattr(TransformerFamily, "unit_modules")
    exp = tmp_path / "t.toml"
    text = (Path(__file__).resolve().parents[1] / "experiments" / "transformer.toml").read_text()
    exp.write_text(text.replace('latency = "ridge"', 'latency = "lut"'))
    with pytest.raises(ConfigError, match="predictors.latency"):
        prepare(exp, run_dir=tmp_path / "run")
