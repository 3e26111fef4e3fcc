"""Module-state export (CNN, transformer) computes as the timed subnet: int8 x int8 -> int32 on the stored
codes under `kernels = "int"`, float under `kernels = "fake"`; outputs equal the extracted subnet's."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nas import packing, state_export
from nas.errors import NasError
from nas.export import serialize
from supernets import get_family
from supernets.lowbit import kernel_modes, use_integer_kernels

N_FEATURES, SHAPE = 64, (8, 8, 1)
MODELS = {
    "cnn": {"family": "cnn", "stem": 4, "max_expand": 2, "max_kernel": 3,
            "stages": [{"channels": 4, "max_depth": 1, "stride": 1}, {"channels": 8, "max_depth": 1, "stride": 2}],
            "space": {"depth": [1], "expand": [1, 2], "kernel": [3], "bits": [4, 8, 32]}},
    "transformer": {"family": "transformer", "max_depth": 1, "embed": 8, "heads": 2, "head_dim": 4, "ffn": 8,
                    "patch": 4, "space": {"depth": [1], "heads": [2], "ffn": [8], "bits": [4, 8, 32],
                                          "act_bits": [4, 8, 32]}},
}
N_CLASSES = 3
# (lhs, rhs) -> result element types of every dot_general / convolution in StableHLO text.
OP_TYPES = re.compile(r"stablehlo\.(dot_general|convolution)[^\n]*: \(tensor<[^>]*x(\w+)>, tensor<[^>]*x(\w+)>\) "
                      r"-> tensor<[^>]*x(\w+)>")


def _ops(mlir: str) -> list[tuple[str, str, str, str]]:
    return OP_TYPES.findall(mlir)


@pytest.fixture(scope="module", params=list(MODELS))
def family_model(request):
    family = get_family(request.param)
    space = family.parse_space(MODELS[request.param], N_FEATURES, N_CLASSES, SHAPE)
    return family, space, family.build(space, rngs=nnx.Rngs(0))


def _member(family_model, bits: int, kernels: str = "int"):
    """(extracted subnet, packed arrays, manifest, raw-input normalisation) with every bit-width at `bits`."""
    family, space, model = family_model
    config = space.validate({k: (bits if "bits" in k else v) for k, v in space.largest().items()})
    plain = family.extract(model, space, config)
    arrays, entries = state_export.pack_state(plain)
    rng = np.random.default_rng(bits)
    shift, scale = rng.normal(size=N_FEATURES).astype(np.float32), rng.uniform(0.5, 2, N_FEATURES).astype(np.float32)
    manifest = state_export.state_manifest(family.name, space, config, entries, shift, scale, kernels=kernels)
    return plain, arrays, manifest, (shift, scale)


def _exported(plain: nnx.Module, arrays, manifest) -> tuple[object, str]:
    """(deserialised StableHLO call, its text) of the module-state forward."""
    graphdef, template = nnx.split(plain)
    blob, mlir = serialize(state_export.make_state_forward(graphdef, template, arrays, manifest), N_FEATURES)
    return jax.export.deserialize(blob).call, mlir


def _run(module: nnx.Module, x: jax.Array) -> jax.Array:
    graphdef, state = nnx.split(module)
    return jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))(state, x)


def _x(norm: tuple[np.ndarray, np.ndarray]) -> tuple[jax.Array, jax.Array]:
    """(raw inputs, the normalised inputs the extracted subnet takes)."""
    shift, scale = norm
    raw = jnp.asarray(np.random.default_rng(1).normal(0, 2, (16, N_FEATURES)) * scale + shift, jnp.float32)
    return raw, (raw - shift) / scale


@pytest.mark.parametrize("bits", [4, 8])  # 4: bit-packed codes; 8: int8 codes, unsigned inputs shifted by -128
def test_integer_export_runs_int8_on_the_stored_codes(family_model, bits: int) -> None:
    plain, arrays, manifest, norm = _member(family_model, bits)
    call, mlir = _exported(plain, arrays, manifest)
    measured = use_integer_kernels(plain)  # what nas.measure times
    n_int = list(kernel_modes(measured).values()).count("int")
    ops = _ops(mlir)
    assert n_int > 0 and sum(op[1:] == ("i8", "i8", "i32") for op in ops) == n_int
    if family_model[0].name == "cnn":
        assert ("convolution", "i8", "i8", "i32") in ops
    assert ("dot_general", "i8", "i8", "i32") in ops
    assert manifest["kernels"] == "int"
    raw, x = _x(norm)
    got = np.asarray(call(raw))
    # The stored codes are the measured codes: same numbers as the timed integer copy ...
    np.testing.assert_allclose(got, np.asarray(_run(measured, x)), rtol=0, atol=1e-6)
    # ... and as the extracted fake-quant subnet, up to fp32 rounding of the rescale.
    assert float(np.max(np.abs(got - np.asarray(_run(plain, x))))) <= 1e-3


def test_a_row_with_a_missing_value_answers_nan(family_model) -> None:
    # The integer kernels rounded a NaN input to code 0 and answered the row with finite logits; the
    # fake-quant subnet answers NaN. Other rows of the batch keep their answers.
    plain, arrays, manifest, norm = _member(family_model, 4)
    call, _ = _exported(plain, arrays, manifest)
    raw, _ = _x(norm)
    clean = np.asarray(call(raw))
    raw = raw.at[2, 0].set(jnp.nan).at[5, -1].set(jnp.inf)
    got = np.asarray(call(raw))
    assert np.isnan(got[[2, 5]]).all()
    keep = np.setdiff1d(np.arange(len(got)), [2, 5])
    np.testing.assert_array_equal(got[keep], clean[keep])


def test_fake_kernels_export_stays_float(family_model) -> None:
    plain, arrays, manifest, norm = _member(family_model, 8, kernels="fake")
    legacy = {k: v for k, v in manifest.items() if k != "kernels"}  # manifests written before the field
    raw, x = _x(norm)
    expected = np.asarray(_run(plain, x))
    for m in (manifest, legacy):
        call, mlir = _exported(plain, arrays, m)
        ops = _ops(mlir)
        assert ops and all(op[1:] == ("f32", "f32", "f32") for op in ops)
        assert float(np.max(np.abs(np.asarray(call(raw)) - expected))) <= 1e-3


def test_loaded_member_equals_the_artefact(family_model, tmp_path: Path) -> None:
    plain, arrays, manifest, norm = _member(family_model, 4)
    state_export.save_state_npz(tmp_path / packing.PARAMS_NPZ, arrays)
    (tmp_path / packing.MANIFEST).write_text(json.dumps(manifest))
    call, _ = _exported(plain, arrays, manifest)
    raw, _ = _x(norm)
    loaded = state_export.load_state_member(tmp_path)
    np.testing.assert_allclose(np.asarray(loaded(raw)), np.asarray(call(raw)), rtol=0, atol=1e-6)
    (tmp_path / packing.MANIFEST).write_text(json.dumps({**manifest, "kernels": "int4"}))
    with pytest.raises(NasError, match="kernels must be one of"):
        state_export.load_state_member(tmp_path)
    # A damaged manifest is named in one line, not a KeyError or AttributeError from the loader.
    first = next(iter(manifest["arrays"]))
    quantised = next(n for n, e in manifest["arrays"].items() if e["bits"] < packing.FLOAT_BITS)
    for damaged, expect in [
        ({k: v for k, v in manifest.items() if k != "arrays"}, "'arrays' must be an object"),
        ({**manifest, "arrays": []}, "'arrays' must be an object"),
        ({**manifest, "arrays": {**manifest["arrays"], first: {"shape": "x", "bits": 32}}}, ".shape must be a list"),
        ({**manifest, "arrays": {**manifest["arrays"], quantised: {**manifest["arrays"][quantised], "step": "nope"}}},
         "needs a shape and a 'step'"),
        ({**manifest, "input": {**manifest["input"], "scale": [0.0] * len(manifest["input"]["scale"])}},
         "input.scale has a zero"),
        # A ZeroDivisionError from the rebuild (a CNN) or another error naming nothing, before.
        ({**manifest, "space": {**manifest["space"], "meta": {**manifest["space"]["meta"], "n_classes": 0}}},
         "manifest.json: "),
        ({**manifest, "space": {**manifest["space"], "meta": {**manifest["space"]["meta"], "n_features": "64"}}},
         "but its space takes '64'"),
    ]:
        (tmp_path / packing.MANIFEST).write_text(json.dumps(damaged))
        with pytest.raises(NasError, match=re.escape(expect)) as info:
            state_export.load_state_member(tmp_path)
        assert "\n" not in str(info.value)


def test_unknown_kernels_refused_at_export(family_model) -> None:
    with pytest.raises(NasError, match="kernels must be one of"):
        _member(family_model, 8, kernels="int4")


@pytest.mark.parametrize("bits", [[4, 8, 32], [32], [4]])
def test_stored_bytes_are_the_predicted_size(family_model, bits: list[int]) -> None:
    """BatchNorm statistics folded, no bias on a conv a BatchNorm follows, no steps on float layers:
    the packed arrays are exactly the family's size model, for mixed, all-float and all-quantised nets."""
    family, space, model = family_model
    rng = np.random.default_rng(len(bits))
    for _ in range(3):
        drawn = space.sample(rng)
        config = space.validate({k: (int(rng.choice(bits)) if "bits" in k else v) for k, v in drawn.items()})
        arrays, _ = state_export.pack_state(family.extract(model, space, config))
        assert sum(a.nbytes for a in arrays.values()) == family.size_bytes(space, config), config
        assert not any(name.endswith((".mean", ".var")) for name in arrays)


def test_version_1_export_named(family_model, tmp_path: Path) -> None:
    plain, arrays, manifest, _ = _member(family_model, 8)
    (tmp_path / packing.MANIFEST).write_text(json.dumps({**manifest, "version": 1}))
    state_export.save_state_npz(tmp_path / packing.PARAMS_NPZ, arrays)
    with pytest.raises(NasError, match="v1 export .*re-export"):
        state_export.load_state_member(tmp_path)
