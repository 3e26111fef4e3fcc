"""What `nas.load_exported` hands back, without an export: the callable refuses inputs that are not a batch
of real-number feature rows (an empty batch and booleans included) and casts the rest to float32, and a
member's metrics.json with a value that is not a finite number is refused, as is a file inside the orbax
params folder that differs from the digest metrics.json recorded, or a params file it never recorded."""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from nas.errors import NasError
from nas.shipped import checked_input, read_metrics


def _seen() -> tuple[list, object]:
    got: list = []

    def fn(x: object) -> object:
        got.append(x)
        return x

    return got, checked_input(fn, 3)


@pytest.mark.parametrize("bad", [np.zeros((0, 3), np.float32), np.zeros((2, 3), bool), np.zeros((2, 4), np.float32),
                                 np.zeros(3, np.float32), np.array([["a", "b", "c"]])])
def test_an_input_that_is_no_batch_of_feature_rows_is_refused(bad: np.ndarray) -> None:
    got, call = _seen()
    with pytest.raises(NasError, match="exported model input"):
        call(bad)
    assert got == []


def test_integer_and_list_inputs_reach_the_model_as_float32() -> None:
    got, call = _seen()
    call(np.arange(6, dtype=np.int64).reshape(2, 3))
    call([[1, 2, 3]])
    assert [a.dtype for a in got] == [jnp.float32, jnp.float32]
    assert np.asarray(got[0]).tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_metrics_with_a_value_that_is_not_finite_are_refused(tmp_path: Path, value: str) -> None:
    (tmp_path / "metrics.json").write_text('{"measured": {"accuracy": 0.9, "latency_ms": ' + value + "}}")
    with pytest.raises(NasError, match=r"measured\.latency_ms is not a finite number"):
        read_metrics(tmp_path)


def test_a_changed_file_inside_the_orbax_folder_is_refused_by_its_digest(tmp_path: Path) -> None:
    import hashlib
    import json

    from nas import packing
    from nas.shipped import load_exported

    (tmp_path / packing.PARAMS_ORBAX / "d").mkdir(parents=True)
    (tmp_path / packing.PARAMS_ORBAX / "d" / "chunk").write_bytes(b"as exported")
    (tmp_path / packing.MANIFEST).write_text("{}")
    digests = {rel: hashlib.sha256((tmp_path / rel).read_bytes()).hexdigest()
               for rel in (packing.MANIFEST, f"{packing.PARAMS_ORBAX}/d/chunk")}
    (tmp_path / "metrics.json").write_text(json.dumps({"measured": {"accuracy": 0.9}, "sha256": digests}))
    (tmp_path / packing.PARAMS_ORBAX / "d" / "chunk").write_bytes(b"changed since")
    with pytest.raises(NasError, match=r"params\.orbax/d/chunk: its SHA-256 differs"):
        load_exported(tmp_path, "orbax")


def test_a_params_file_metrics_json_never_recorded_is_refused(tmp_path: Path) -> None:
    import hashlib
    import json

    from nas import packing
    from nas.shipped import load_exported

    (tmp_path / packing.MANIFEST).write_text("{}")
    (tmp_path / packing.PARAMS_NPZ).write_bytes(b"copied in from another member")
    digests = {packing.MANIFEST: hashlib.sha256(b"{}").hexdigest()}
    (tmp_path / "metrics.json").write_text(json.dumps({"measured": {"accuracy": 0.9}, "sha256": digests}))
    with pytest.raises(NasError, match=r"params\.npz: not among the files metrics\.json recorded"):
        load_exported(tmp_path)
