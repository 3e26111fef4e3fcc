"""The loader trusts only digest-checked files for the model's input, checks an
artefact's signature and platform at load, and checks a module-state manifest against its subnet."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nas import state_export
from nas.errors import NasError
from nas.shipped import load_params


def _member(run_dir: Path, tmp_path: Path, *, artefact: bool) -> Path:
    member = tmp_path / "member"
    shutil.copytree(sorted((run_dir / "export").glob("0*"))[0], member)
    if not artefact:
        metrics = json.loads((member / "metrics.json").read_text())
        del metrics["sha256"]["model.jaxexport"]
        (member / "metrics.json").write_text(json.dumps(metrics))
        (member / "model.jaxexport").unlink()
    return member


def _set_artefact(member: Path, blob: bytes) -> None:
    (member / "model.jaxexport").write_bytes(blob)
    metrics = json.loads((member / "metrics.json").read_text())
    metrics["sha256"]["model.jaxexport"] = hashlib.sha256(blob).hexdigest()  # as written by an export there
    (member / "metrics.json").write_text(json.dumps(metrics))


def test_npz_member_takes_its_input_width_from_the_checked_manifest(finished_run, tmp_path: Path) -> None:
    from nas import load_exported

    member = _member(finished_run[1], tmp_path, artefact=False)
    metrics = json.loads((member / "metrics.json").read_text())
    metrics["input"]["features"] = 10  # metrics.json holds the digests: nothing checks it
    (member / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(NasError, match="input.features is 10, but manifest.json"):
        load_exported(member)


@pytest.mark.parametrize("spec", [((4,), jnp.float32), ((2, 64), jnp.float32), ((3, 64), jnp.int32)])
def test_an_artefact_of_another_signature_is_refused_at_load(finished_run, tmp_path: Path, spec) -> None:
    from nas import load_exported

    member = _member(finished_run[1], tmp_path, artefact=True)
    shape, dtype = spec
    _set_artefact(member, jax.export.export(jax.jit(lambda x: x * 2))(jax.ShapeDtypeStruct(shape, dtype)).serialize())
    with pytest.raises(NasError, match="not an exported member's artefact"):
        load_exported(member)


def test_an_artefact_for_a_platform_not_here_falls_back_to_the_params(finished_run, tmp_path: Path) -> None:
    from nas import load_exported

    member = _member(finished_run[1], tmp_path, artefact=True)
    missing = "cuda" if jax.default_backend() == "cpu" else "tpu"
    spec = jax.ShapeDtypeStruct(jax.export.symbolic_shape("b, 64"), jnp.float32)
    _set_artefact(member, jax.export.export(load_params(member, "npz"), platforms=(missing,))(spec).serialize())
    # Exported on a GPU host, loaded on a CPU one: its npz runs here (before, the error's advice to load
    # the npz could not be followed through load_exported).
    x = np.random.default_rng(0).normal(size=(5, 64)).astype(np.float32)
    fn, _ = load_exported(member)
    np.testing.assert_array_equal(np.asarray(fn(x)), np.asarray(load_params(member, "npz")(x)))
    np.testing.assert_array_equal(np.asarray(load_exported(member, "npz")[0](x)), np.asarray(fn(x)))
    with pytest.raises(NasError, match=f"exported for {missing}, which this machine lacks"):
        load_exported(member, "stablehlo")
    with pytest.raises(NasError, match="format 'onnx': expected one of stablehlo, npz, orbax"):
        load_exported(member, "onnx")
    # Only the artefact: refused, naming the platform.
    metrics = json.loads((member / "metrics.json").read_text())
    for name in list(metrics["sha256"]):
        if name != "model.jaxexport":
            del metrics["sha256"][name]
            (member / name).unlink(missing_ok=True)
    shutil.rmtree(member / "params.orbax", ignore_errors=True)
    (member / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(NasError, match=f"exported for {missing}, which this machine lacks"):
        load_exported(member)
    with pytest.raises(NasError, match="holds no npz form"):
        load_exported(member, "npz")


def test_a_state_manifest_must_name_its_subnets_variables(tmp_path: Path) -> None:
    from flax import nnx

    from nas import load_exported
    from supernets import get_family

    family = get_family("cnn")
    table = {"family": "cnn", "stem": 4, "max_expand": 2, "max_kernel": 3,
             "stages": [{"channels": 4, "max_depth": 1, "stride": 1}],
             "space": {"depth": [1], "expand": [1], "kernel": [3], "bits": [4, 32]}}
    space = family.parse_space(table, 64, 3, (8, 8, 1))
    config = space.validate({k: (4 if "bits" in k else v) for k, v in space.largest().items()})
    plain = family.extract(family.build(space, rngs=nnx.Rngs(0)), space, config)
    arrays, entries = state_export.pack_state(plain)
    manifest = state_export.state_manifest("cnn", space, config, entries, np.zeros(64, np.float32),
                                           np.ones(64, np.float32))
    np.savez(tmp_path / "params.npz", **arrays)
    (tmp_path / "metrics.json").write_text(json.dumps({"measured": {}}))  # no digests: readers must check
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    fn, _ = load_exported(tmp_path)
    assert fn(np.zeros((2, 64), np.float32)).shape == (2, 3)
    dropped = next(iter(entries))
    del manifest["arrays"][dropped]
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(NasError, match=f"'arrays' lacks '{dropped}'"):
        load_exported(tmp_path)
    # The space is built as shapes only until checked against the arrays: n_classes 1e12 was an XLA
    # RESOURCE_EXHAUSTED error allocating the supernet's 4 TB head.
    manifest["arrays"][dropped] = entries[dropped]
    manifest["space"]["meta"]["n_classes"] = 10**12
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(NasError, match=r"shape is \[3\], but the subnet its config gives has \[1000000000000\]"):
        load_exported(tmp_path)


def test_a_state_member_without_supernets_installed_is_one_line(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # The npz form of a CNN or transformer member rebuilds its subnet: without the project's supernets
    # (or flax) that was a bare ImportError; it names what is needed and the form that needs only jax.
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "jaxnas-state", "family": "cnn"}))
    monkeypatch.setitem(__import__("sys").modules, "nas.state_export", None)  # import now raises ImportError
    with pytest.raises(NasError, match="npz form of a cnn member rebuilds its subnet.*model.jaxexport needs only jax"):
        load_params(tmp_path, "npz")
