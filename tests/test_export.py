"""Export that ships: integer packing, formats, exported == extracted, size on disk, load_exported errors."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nas import packing
from nas.cli import main
from nas.errors import NasError
from search_spaces import is_bit_width

# Per-array cost of the npz container (zip64 local + central headers, 128-byte npy header) is
# about 260 bytes here; 320 leaves room for longer names. The end-of-archive record is 22 bytes.
NPZ_BYTES_PER_ARRAY = 320


def _members(run_dir: Path) -> list[Path]:
    return sorted(p for p in (run_dir / "export").iterdir() if p.is_dir())


def _raw_inputs(n: int = 32) -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 16, (n, 64)).astype(np.float32)


def _export_copy(exp: Path, run_dir: Path, tmp_path: Path, *formats: str) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    args = [a for f in formats for a in ("--format", f)]
    assert main(["export", str(exp), "--run-dir", str(copy), "--quiet", *args]) == 0
    return copy


@pytest.mark.parametrize("bits", range(2, 9))
def test_pack_unpack_round_trip_is_exact(bits: int) -> None:
    rng = np.random.default_rng(bits)
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    for n in (2, 7, 64 * 13 + 3):
        q = rng.integers(lo, hi + 1, n)
        q[:2] = lo, hi
        packed = packing.pack_bits(q, bits)
        assert packed.dtype == np.uint8 and packed.size == math.ceil(n * bits / 8)
        np.testing.assert_array_equal(packing.unpack_bits(packed, bits, n), q)


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 7, 8, 32])
def test_packed_layer_reproduces_the_quantised_kernel(bits: int) -> None:
    from supernets.quant import quantize_weight

    w = np.random.default_rng(bits).normal(size=(37, 11)).astype(np.float32)
    w[:, 3] = 0.0  # a dead channel: scale 1, all zeros
    kernel = np.asarray(quantize_weight(jnp.asarray(w), bits))
    stored = packing.pack_layer(kernel, np.zeros(11), np.float32(2.5), bits)
    layer = {"in": 37, "out": 11, "bits": bits}
    # Exact both in numpy and inside a traced graph (the codes the StableHLO artefact multiplies by).
    np.testing.assert_array_equal(packing.unpack_kernel(stored, layer), kernel)
    if bits < 32:
        codes = jax.jit(lambda: packing.codes_in_graph(stored, layer))()
        np.testing.assert_array_equal(np.asarray(codes, np.float32) * stored["scale"], kernel)
    expected_dtype = {8: np.int8, 32: np.float32}.get(bits, np.uint8)
    assert stored["kernel"].dtype == expected_dtype
    if bits < 32:
        assert stored["kernel"].nbytes == math.ceil(37 * 11 * bits / 8)


@pytest.mark.parametrize("bits", range(2, 8))
def test_in_graph_unpack_offsets_do_not_wrap_in_int32(bits: int) -> None:
    """Value i of the stream starts at bit i * bits: past 2^31 / bits values (307M at 7 bits, a layer a
    space under the 2^31-parameter limit can have) that product wrapped in int32 and the traced unpack
    read other bytes, silently. The offsets must be exact for every index a layer can have."""
    edge = 2**31 // bits
    idx = np.array([0, 1, 7, 8, 9, edge - 1, edge, edge + 1, edge + 9, 2**31 - 1], np.int64)
    byte, offset = jax.jit(packing.bit_offsets, static_argnums=1)(jnp.asarray(idx, jnp.int32), bits)
    np.testing.assert_array_equal(np.asarray(byte, np.int64), idx * bits // 8)
    np.testing.assert_array_equal(np.asarray(offset, np.int64), idx * bits % 8)


def test_off_grid_kernel_is_refused() -> None:
    with pytest.raises(ValueError, match="not on a 4-bit"):
        packing.integer_weights(np.array([[1.0], [0.3]], np.float32), 4)


def test_exported_outputs_equal_the_extracted_subnet(finished_run) -> None:
    from nas.context import prepare
    from nas.data import load_data
    from nas.export import deployable_function
    from nas.shipped import load_exported
    from nas.train import load_supernet

    exp, run_dir = finished_run
    ctx = prepare(exp, run_dir=run_dir)
    model, splits = load_supernet(ctx), load_data(ctx.exp.data)
    x = jnp.asarray(_raw_inputs())
    kinds = set()
    for member in _members(run_dir):
        config = json.loads((member / "config.json").read_text())
        fn, metrics = load_exported(member)
        expected = np.asarray(deployable_function(ctx, model, config, splits)(x))
        quantised = any(config[k] < 32 for k in config if is_bit_width(k))
        tolerance = 1e-3 if quantised else 1e-5
        kinds.add(quantised)
        assert np.max(np.abs(np.asarray(fn(x)) - expected)) <= tolerance
        assert metrics["export_max_abs_diff"] <= tolerance
        # The npz + manifest forward (no StableHLO) gives the same numbers as the artefact.
        tree, manifest = packing.load_npz(member)
        np.testing.assert_allclose(np.asarray(jax.jit(packing.make_forward(tree, manifest))(x)),
                                   np.asarray(fn(x)), atol=1e-6)
    assert True in kinds  # the tiny front always holds quantised members


def test_artefact_embeds_packed_integers_not_floats(finished_run) -> None:
    _, run_dir = finished_run
    for member in _members(run_dir):
        manifest = json.loads((member / "manifest.json").read_text())
        mlir = (member / "model.mlir").read_text()
        for layer in manifest["layers"]:
            n, bits = layer["in"] * layer["out"], layer["bits"]
            if bits == 8:
                assert f"tensor<{layer['in']}x{layer['out']}xi8>" in mlir
            elif bits < 8:
                assert f"tensor<{math.ceil(n * bits / 8)}xui8>" in mlir
            if bits < 32:  # no float copy of a quantised kernel is embedded
                assert not re.search(rf"constant dense<[^\n]*: tensor<{layer['in']}x{layer['out']}xf32>", mlir)


def test_size_on_disk_matches_the_predicted_size(finished_run) -> None:
    _, run_dir = finished_run
    for member in _members(run_dir):
        metrics = json.loads((member / "metrics.json").read_text())
        predicted = metrics["measured"]["size_kb"] * 1024
        assert metrics["predicted_size_bytes"] == predicted
        assert metrics["params_bytes"] == predicted  # the arrays themselves: exactly the prediction
        on_disk = (member / "params.npz").stat().st_size
        assert metrics["params_bytes_on_disk"] == on_disk
        assert on_disk <= 1.10 * predicted + NPZ_BYTES_PER_ARRAY * metrics["npz_arrays"] + 22
        with np.load(member / "params.npz", allow_pickle=False) as data:
            assert sum(data[k].nbytes for k in data.files) == predicted


def test_format_npz_only_writes_no_stablehlo_and_still_loads(finished_run, tmp_path: Path) -> None:
    from nas.shipped import load_exported

    exp, run_dir = finished_run
    copy = _export_copy(exp, run_dir, tmp_path, "npz")
    x = _raw_inputs()
    for original, member in zip(_members(run_dir), _members(copy), strict=True):
        assert {p.name for p in member.iterdir()} == {"config.json", "metrics.json", "manifest.json", "params.npz"}
        fn, metrics = load_exported(member)
        reference, _ = load_exported(original)
        np.testing.assert_allclose(np.asarray(fn(x)), np.asarray(reference(x)), atol=1e-6)
        assert metrics["formats"] == ["npz"] and "artefact_bytes" not in metrics


def test_npz_loads_without_supernet_code(finished_run, tmp_path: Path) -> None:
    from nas.shipped import load_exported

    _, run_dir = finished_run
    member = _members(run_dir)[0]
    x = _raw_inputs(5)
    np.save(tmp_path / "x.npy", x)
    script = (
        "import sys\n"
        "sys.modules.update({m: None for m in ('supernets', 'search_spaces', 'predictors', 'flax', 'optax')})\n"
        "from pathlib import Path\nimport numpy as np\nfrom nas.packing import load_npz, make_forward\n"
        "fn = make_forward(*load_npz(Path(sys.argv[1])))\n"
        "np.save(sys.argv[2], np.asarray(fn(np.load(sys.argv[2]))))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    subprocess.run([sys.executable, "-c", script, str(member), str(tmp_path / "x.npy")], check=True, env=env)
    fn, _ = load_exported(member)
    np.testing.assert_allclose(np.load(tmp_path / "x.npy"), np.asarray(fn(x)), atol=1e-6)


def test_format_orbax_writes_a_restorable_checkpoint(finished_run, tmp_path: Path) -> None:
    from nas.shipped import load_exported

    exp, run_dir = finished_run
    copy = _export_copy(exp, run_dir, tmp_path, "orbax")
    for original, member in zip(_members(run_dir), _members(copy), strict=True):
        assert (member / "params.orbax").is_dir()
        assert not (member / "params.npz").exists() and not (member / "model.jaxexport").exists()
        tree, manifest = packing.load_orbax(member)
        expected, _ = packing.load_npz(original)
        for got, want in zip(tree, expected, strict=True):
            assert set(got) == set(want)
            for name in want:
                assert got[name].dtype == want[name].dtype
                np.testing.assert_array_equal(got[name], want[name])
        fn, metrics = load_exported(member)  # falls back to the orbax tree
        x = _raw_inputs()
        np.testing.assert_allclose(np.asarray(fn(x)), np.asarray(load_exported(original)[0](x)), atol=1e-6)
        assert metrics["orbax_bytes_on_disk"] > 0


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("damage, named", [
    ("truncate_artefact", "model.jaxexport"),
    ("garbage_npz", "params.npz"),
    ("truncate_npz", "params.npz"),
    ("bad_manifest", "manifest.json"),
    ("wrong_dtype", "params.npz"),
    ("bad_metrics", "metrics.json"),
    ("empty_folder", "params.orbax"),
    ("missing_folder", "nowhere"),
])
def test_damaged_export_is_one_line_nas_error(finished_run, tmp_path: Path, damage: str, named: str) -> None:
    from nas import load_exported

    _, run_dir = finished_run
    member = tmp_path / "member"
    shutil.copytree(_members(run_dir)[0], member)
    if damage != "truncate_artefact" and damage != "bad_metrics":
        (member / "model.jaxexport").unlink()  # so the npz path is the one that loads
    if damage == "truncate_artefact":
        _truncate(member / "model.jaxexport")
    elif damage == "garbage_npz":
        (member / "params.npz").write_bytes(b"\0garbage" * 16)
    elif damage == "truncate_npz":
        _truncate(member / "params.npz")
    elif damage == "bad_manifest":
        (member / "manifest.json").write_text("{not json")
    elif damage == "wrong_dtype":
        with np.load(member / "params.npz", allow_pickle=False) as data:
            flat = {k: data[k].astype(np.float64) for k in data.files}
        np.savez(member / "params.npz", **flat)
    elif damage == "bad_metrics":
        (member / "metrics.json").write_text("{")
    elif damage == "empty_folder":
        for p in member.iterdir():
            p.unlink()
    else:
        member = tmp_path / "nowhere"
    if damage not in ("bad_metrics", "missing_folder", "empty_folder"):
        # Without the recorded digests (an export written before them) the readers themselves must
        # name the damage; with them, the digest check does first (test below).
        metrics = json.loads((member / "metrics.json").read_text())
        del metrics["sha256"]
        (member / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(NasError) as info:
        load_exported(member)
    message = str(info.value)
    assert named in message and "\n" not in message


def test_a_changed_artefact_is_refused_by_its_digest(finished_run, tmp_path: Path) -> None:
    from nas import load_exported

    _, run_dir = finished_run
    first, second = _members(run_dir)[:2]
    member = tmp_path / "member"
    shutil.copytree(first, member)
    data = bytearray((member / "model.jaxexport").read_bytes())
    # One flipped byte in the middle: it often still deserialises, then computes wrong logits or fails
    # inside XLA at the first call.
    data[len(data) // 2] ^= 0x5A
    (member / "model.jaxexport").write_bytes(bytes(data))
    with pytest.raises(NasError, match="model.jaxexport: its SHA-256 differs"):
        load_exported(member)
    shutil.copy(second / "model.jaxexport", member / "model.jaxexport")  # another member's artefact
    with pytest.raises(NasError, match="SHA-256 differs"):
        load_exported(member)
    shutil.copy(first / "model.jaxexport", member / "model.jaxexport")
    (member / "params.npz").write_bytes((second / "params.npz").read_bytes())
    (member / "model.jaxexport").unlink()  # the npz path is checked too
    with pytest.raises(NasError, match="params.npz: its SHA-256 differs"):
        load_exported(member)
    shutil.copy(first / "params.npz", member / "params.npz")
    load_exported(member)  # the recorded npz, its artefact deleted
    # An artefact this member was not exported with (npz only) is refused, not run unchecked.
    metrics = json.loads((member / "metrics.json").read_text())
    del metrics["sha256"]["model.jaxexport"]
    (member / "metrics.json").write_text(json.dumps(metrics))
    shutil.copy(second / "model.jaxexport", member / "model.jaxexport")
    with pytest.raises(NasError, match="model.jaxexport: not among the files metrics.json recorded"):
        load_exported(member)


@pytest.mark.parametrize("text, expect", [
    ("[1, 2]", "expected an object with a 'measured' object"),
    ('"hello"', "expected an object"),
    ("{}", "expected an object"),
    ('{"measured": {"accuracy": NaN}}', "measured.accuracy is not a finite number"),
])
def test_metrics_json_must_be_a_members_metrics(finished_run, tmp_path: Path, text: str, expect: str) -> None:
    from nas import load_exported

    _, run_dir = finished_run
    member = tmp_path / "member"
    shutil.copytree(_members(run_dir)[0], member)
    (member / "metrics.json").write_text(text)
    with pytest.raises(NasError, match=re.escape(expect)):
        load_exported(member)


@pytest.mark.parametrize("fmt", ["stablehlo", "npz"])
def test_loaded_model_checks_its_input(finished_run, tmp_path: Path, fmt: str) -> None:
    from nas import load_exported

    _, run_dir = finished_run
    member = tmp_path / "member"
    shutil.copytree(_members(run_dir)[0], member)
    if fmt == "npz":
        (member / "model.jaxexport").unlink()
    fn, metrics = load_exported(member)
    n = metrics["input"]["features"]
    x = _raw_inputs(5)[:, :n]
    np.testing.assert_allclose(np.asarray(fn(x.astype(np.float64))), np.asarray(fn(x)), atol=1e-6)
    for bad, expect in [(x[:, :-1], f"expected shape (batch >= 1, {n})"), (x[0], "got (64,)"),
                        (x[:0], "got (0,"), (x.astype(str), "expected real numbers"),
                        (x > 1, "got dtype bool"), ([[0.0] * n, [0.0] * (n - 1)], "not an array")]:
        with pytest.raises(NasError, match=re.escape(expect)):
            fn(bad)
    half = jnp.asarray(x, jnp.bfloat16)  # cast to float32 inside, as any other float
    np.testing.assert_allclose(np.asarray(fn(half)), np.asarray(fn(np.asarray(half.astype(jnp.float32)))), atol=1e-6)
    # Inside a user's own jit the check reads the tracer's shape and dtype.
    np.testing.assert_allclose(np.asarray(jax.jit(fn)(x)), np.asarray(fn(x)), atol=1e-6)


def test_stablehlo_member_loads_without_the_supernet_code(finished_run) -> None:
    _, run_dir = finished_run
    member = _members(run_dir)[0]
    code = ("import sys\n"
            "for name in ('supernets', 'search_spaces', 'flax', 'optax', 'optuna'):\n"
            "    sys.modules[name] = None  # importing any of them now fails\n"
            "import numpy as np, nas\n"
            f"fn, metrics = nas.load_exported({str(member)!r})\n"
            "print(np.asarray(fn(np.ones((3, metrics['input']['features']), np.float32))).shape)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd="/")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().startswith("(3, ")


def test_query_refuses_a_member_folder_that_is_missing_or_not_its_own(finished_run, tmp_path: Path, capsys) -> None:
    _, run_dir = finished_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    front_path = copy / "export" / "front.json"
    front = json.loads(front_path.read_text())
    best = max(front["members"], key=lambda m: m["accuracy"])
    shutil.rmtree(copy / "export" / best["name"])
    assert main(["query", str(copy)]) == 2
    assert "is missing (front.json lists it)" in capsys.readouterr().err
    best["name"] = "../../../../etc"
    front_path.write_text(json.dumps(front))
    assert main(["query", str(copy)]) == 2
    assert "is not a folder name" in capsys.readouterr().err


def test_output_agreement_allows_only_a_few_small_rounding_flips() -> None:
    from nas.export import FLIP_SHARE, output_agreement

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 10)).astype(np.float32)
    reference = lambda a: a * 3.0  # noqa: E731  (logits up to ~12)

    def shifted(rows: int, by: float):
        def fn(a):
            out = np.asarray(a) * 3.0
            out[:rows, 0] += by
            return out
        return fn

    assert output_agreement(reference, reference, x, "float")["ok"]
    assert not output_agreement(shifted(1, 1e-4), reference, x, "float")["ok"]  # float: no flips allowed
    one_flip = output_agreement(shifted(1, 0.02), reference, x, "quantised")
    assert one_flip["ok"] and one_flip["over"] == 1 and one_flip["max_abs_diff"] > 0.019
    too_many = output_agreement(shifted(int(FLIP_SHARE * 200) + 1, 0.02), reference, x, "quantised")
    assert not too_many["ok"] and "samples beyond" in too_many["why"]
    assert not output_agreement(shifted(1, 2.0), reference, x, "quantised")["ok"]  # not a one-code flip


def test_output_agreement_runs_both_functions_a_slice_at_a_time() -> None:
    from nas.export import output_agreement

    x = np.random.default_rng(1).normal(size=(203, 10)).astype(np.float32)
    seen: list[int] = []

    def reference(a):
        seen.append(len(a))
        return np.asarray(a) * 3.0

    def shipped(a):
        out = np.asarray(a) * 3.0
        out[np.abs(np.asarray(a)[:, 0]) > 2.5, 0] += 0.02  # the same samples whatever the slicing
        return out

    whole = output_agreement(shipped, reference, x, "quantised")
    assert seen == [203]
    seen.clear()
    sliced = output_agreement(shipped, reference, x, "quantised", batch=50)
    assert seen == [41] * 4 + [39] and sliced == whole and whole["over"] > 0


def test_packed_layout_takes_every_bit_width_a_subnet_can_have() -> None:
    # nas.packing imports no supernet code (a shipped model loads without it), so it keeps its own list.
    from nas.packing import PACKED_BITS
    from supernets.quant import SUPPORTED_BITS

    assert PACKED_BITS == SUPPORTED_BITS


def test_export_formats_flag_takes_several_values_or_repeats() -> None:
    from nas.cli import build_parser

    parser = build_parser()
    for argv in (["--format", "npz", "orbax"], ["--format", "npz", "--format", "orbax"]):
        assert parser.parse_args(["export", "x.toml", *argv]).formats == ["npz", "orbax"]


def test_a_second_export_beside_a_running_one_is_refused(finished_run, tmp_path: Path, capsys) -> None:
    """Two exports of one run shared its temp folder: both said done over a folder with 3 of 12 members."""
    from nas.workers import sole_lock

    exp, run_dir = finished_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    before = sorted(p.name for p in (copy / "export").iterdir())
    described = {name: (copy / name).read_bytes() for name in ("experiment.toml", "run.json")}
    edited = tmp_path / "edited.toml"
    edited.write_text(exp.read_text().replace("[export]\n", "[export]\nplot = false\n", 1))
    with sole_lock(copy / "export.lock", "held by this test"):
        assert main(["export", str(edited), "--run-dir", str(copy), "--force", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "another process is running stage 'export'" in err and f":{os.getpid()})" in err, err
    assert sorted(p.name for p in (copy / "export").iterdir()) == before
    # Refused, it wrote nothing: not even the run's description, which queries read.
    assert {name: (copy / name).read_bytes() for name in described} == described
    assert main(["export", str(exp), "--run-dir", str(copy), "--force", "--quiet"]) == 0  # released
    assert sorted(p.name for p in (copy / "export").iterdir()) == before
    assert not (copy / ".export.tmp").exists() and not (copy / ".export.old").exists()


def test_a_member_without_its_metrics_is_named_as_not_whole(finished_run, tmp_path: Path) -> None:
    from nas import load_exported

    _, run_dir = finished_run
    member = tmp_path / "member"
    shutil.copytree(_members(run_dir)[0], member)
    (member / "metrics.json").unlink()
    with pytest.raises(NasError, match="is not a whole exported member"):
        load_exported(member)


def test_an_npz_member_without_an_input_record_checks_its_input_from_the_manifest(finished_run,
                                                                                 tmp_path: Path) -> None:
    from nas import load_exported

    _, run_dir = finished_run
    member = tmp_path / "member"
    shutil.copytree(_members(run_dir)[0], member)
    (member / "model.jaxexport").unlink()
    metrics = json.loads((member / "metrics.json").read_text())
    n = metrics.pop("input")["features"]  # as metrics.json files written before the record
    (member / "metrics.json").write_text(json.dumps(metrics))
    fn, _ = load_exported(member)
    with pytest.raises(NasError, match=re.escape(f"expected shape (batch >= 1, {n})")):
        fn(np.zeros((3, n + 1), np.float32))


def test_export_one_loses_a_race_without_leaving_files(finished_run, tmp_path: Path, monkeypatch) -> None:
    import nas.export
    from nas.context import prepare
    from nas.measure import load_table

    exp, run_dir = finished_run
    ctx = prepare(exp, run_dir=run_dir)
    folder = tmp_path / "out" / "member"

    def racing(ctx, model, row, splits, tmp, *args):  # another export finishes the same folder meanwhile
        (tmp / "params.npz").write_bytes(b"mine")
        folder.mkdir(parents=True)
        (folder / "theirs").write_text("whole")
        return {}

    monkeypatch.setattr(nas.export, "write_exported", racing)
    # What an export killed mid-way left (a dead process's) is swept; a live one's is not.
    dead = folder.parent / f".member.{socket.gethostname()}:{2**22 + 7}.ab12cd34.tmp"
    live = folder.parent / f".member.{socket.gethostname()}:{os.getpid()}.ef56ab78.tmp"
    for left in (dead, live):
        left.mkdir(parents=True)
    with pytest.raises(OSError):
        nas.export.export_one(ctx, load_table(ctx)[0], folder)
    assert sorted(p.name for p in folder.parent.iterdir()) == sorted(["member", live.name])
    assert (folder / "theirs").is_file()


@pytest.mark.parametrize("failure", [NasError("exported outputs differ from the extracted subnet's"),
                                     OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_a_member_failing_its_check_leaves_no_half_export(finished_run, tmp_path: Path, monkeypatch,
                                                          failure: BaseException) -> None:
    # A failed member check (a diverged supernet's outputs) left .export.tmp with the members before it;
    # a full disk or Ctrl-C left it too, holding the space.
    import nas.export

    exp, run_dir = finished_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    before = sorted(p.name for p in _members(copy))
    real = nas.export.write_exported
    calls = []

    def second_fails(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls.append(1)
        if len(calls) == 2:
            raise failure
        return real(*args, **kwargs)

    monkeypatch.setattr(nas.export, "write_exported", second_fails)
    expected = {NasError: 2, OSError: 2, KeyboardInterrupt: 130}[type(failure)]
    assert main(["export", str(exp), "--run-dir", str(copy), "--quiet", "--force"]) == expected
    assert len(calls) == 2
    assert not (copy / ".export.tmp").exists()
    assert sorted(p.name for p in _members(copy)) == before  # the earlier export is kept whole
