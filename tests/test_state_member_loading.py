"""Packing and loading a module-state member (a tiny transformer): a kernel off its grid is refused at
export, 8-bit kernels are stored as int8 and load, a manifest whose bits or steps disagree with the
config's subnet is refused, and so is a stored float array holding NaN."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nas import packing, state_export
from nas.errors import NasError, StageError
from supernets import get_family

MODEL = {"family": "transformer", "max_depth": 1, "embed": 8, "heads": 2, "head_dim": 4, "ffn": 8, "patch": 4,
         "space": {"depth": [1], "heads": [2], "ffn": [8], "bits": [4, 8, 32], "act_bits": [4, 8, 32]}}


def _plain(bits: int) -> tuple[nnx.Module, object, dict]:
    family = get_family("transformer")
    space = family.parse_space(MODEL, 64, 3, (8, 8, 1))
    config = space.validate({k: (bits if "bits" in k else v) for k, v in space.largest().items()})
    return family.extract(family.build(space, rngs=nnx.Rngs(0)), space, config), space, config


def _member(bits: int) -> tuple[dict[str, np.ndarray], dict]:
    plain, space, config = _plain(bits)
    arrays, entries = state_export.pack_state(plain)
    manifest = state_export.state_manifest("transformer", space, config, entries, np.zeros(64, np.float32),
                                           np.ones(64, np.float32))
    return arrays, manifest


@pytest.fixture(scope="module")
def member() -> tuple[dict[str, np.ndarray], dict]:
    return _member(4)


def _write(folder: Path, arrays: dict[str, np.ndarray], manifest: dict) -> Path:
    state_export.save_state_npz(folder / packing.PARAMS_NPZ, arrays)
    (folder / packing.MANIFEST).write_text(json.dumps(manifest))
    return folder


def test_a_stored_float_array_holding_nan_is_refused(member: tuple, tmp_path: Path) -> None:
    arrays, manifest = member
    name = next(n for n, e in manifest["arrays"].items() if e["bits"] >= packing.FLOAT_BITS and e["shape"])
    damaged = {**arrays, name: np.full_like(arrays[name], np.nan)}
    with pytest.raises(NasError, match=rf"array {re.escape(name)} holds a value that is not a finite number"):
        state_export.load_state_member(_write(tmp_path, damaged, manifest))


def test_a_kernel_off_its_grid_is_refused_at_export() -> None:
    plain, _, _ = _plain(4)
    layer = next(node for _, node in nnx.iter_graph(plain)
                 if isinstance(node, nnx.Module) and getattr(node, "w_bits", 32) < packing.FLOAT_BITS)
    layer.kernel[...] = layer.kernel[...] + 1e-3 * layer.w_step[...]
    with pytest.raises(StageError, match="not on its 4-bit grid"):
        state_export.pack_state(plain)


def test_8_bit_kernels_are_stored_as_int8_and_load(tmp_path: Path) -> None:
    arrays, manifest = _member(8)
    quantised = [n for n, e in manifest["arrays"].items() if e["bits"] == 8]
    assert quantised and all(arrays[n].dtype == np.int8 for n in quantised)
    out = state_export.load_state_member(_write(tmp_path, arrays, manifest))(jnp.zeros((2, 64), jnp.float32))
    assert out.shape == (2, 3) and bool(jnp.isfinite(out).all())


def test_a_manifest_whose_bits_disagree_with_its_config_is_refused(member: tuple, tmp_path: Path) -> None:
    arrays, manifest = member
    key = next(k for k in manifest["config"] if "bits" in k and not k.startswith("abits"))
    changed = {**manifest, "config": {**manifest["config"], key: 8}}
    with pytest.raises(NasError, match=r"\.bits is 4, but its config gives 8"):
        state_export.load_state_member(_write(tmp_path, arrays, changed))


def test_a_kernel_scaled_by_another_layers_steps_is_refused(member: tuple, tmp_path: Path) -> None:
    arrays, manifest = member
    a, b = [n for n, e in manifest["arrays"].items() if e["bits"] < packing.FLOAT_BITS][:2]
    entries = {**manifest["arrays"], a: {**manifest["arrays"][a], "step": manifest["arrays"][b]["step"]}}
    with pytest.raises(NasError, match=r"\.step is .*not its layer's w_step"):
        state_export.load_state_member(_write(tmp_path, arrays, {**manifest, "arrays": entries}))
