"""Export the measured front: per member a folder with config, metrics and the subnet in the requested
formats (integer-packed npz + manifest, the same tree as orbax, StableHLO computing from the packed
integers), plus front.json and a Pareto plot."""

from __future__ import annotations

import contextlib
import glob
import hashlib
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from nas import packing, state_export
from nas.calibrate import extract_subnet
from nas.context import Context
from nas.data import Splits, load_data
from nas.errors import NasError, StageError
from nas.io import read_json, remove_path, write_bytes, write_json
from nas.measure import accuracy_many, check_measured_rows, even_slices
from nas.pareto import spread
from nas.progress import progress, say
from nas.shipped import ARTIFACT, DIGESTS, LOADED, METRICS, file_digests, load_params
from nas.workers import me, owner_alive
from search_spaces import Config

# Largest |exported - extracted| accepted per sample: float subnets compute the same ops.
TOLERANCE = {"float": 1e-5, "quantised": 1e-3}
# Integer kernels rescale in another fp32 order than the fake-quant path, so an activation within an
# ulp of a rounding boundary can take the neighbouring code in one of them (seen on 1-10 of 359 digits
# images for 8-bit transformer layers, 0.014-0.019 in logits; one CNN image 0.317 of logits up to 9.2,
# a 4-bit code carried through later layers). Such flips are allowed on a few samples, each bounded
# by a share of the logit range; everything else must agree to TOLERANCE (a wrong scale or layout
# moves every sample).
FLIP_SHARE = 0.05
FLIP_BOUND = 0.10


def deployable_function(ctx: Context, model: nnx.Module, config: Config, splits: Splits) -> Callable:
    """raw features -> logits: the data normalisation baked in front of the extracted subnet."""
    plain = extract_subnet(ctx, model, config)
    shift, scale = jnp.asarray(splits.shift), jnp.asarray(splits.scale)

    def fn(x: jax.Array) -> jax.Array:
        return plain((x - shift) / scale)

    return fn


def packed_subnet(ctx: Context, model: nnx.Module, config: Config,
                  splits: Splits) -> tuple[list[dict[str, np.ndarray]], dict[str, Any]]:
    """(integer-packed parameter tree, manifest) of the extracted subnet for `config`."""
    plain = extract_subnet(ctx, model, config)
    layers = getattr(plain, "layers", None)
    if layers is None:
        raise StageError(f"family {ctx.family.name!r}: export needs an extracted model with .layers of QuantDense")
    tree, shapes = [], []
    for layer in layers:
        if layer.w_bits != layer.a_bits:
            raise StageError(f"family {ctx.family.name!r}: export needs equal weight and input bits")
        kernel = np.asarray(layer.kernel[...])
        try:
            tree.append(packing.pack_layer(kernel, np.asarray(layer.bias[...]), np.asarray(layer.act_clip[...]),
                                           layer.w_bits))
        except ValueError as e:
            raise StageError(f"export of {config}: {e}") from None
        shapes.append({"in": kernel.shape[0], "out": kernel.shape[1], "bits": layer.w_bits,
                       "signed_input": layer.signed_input})
    return tree, packing.make_manifest(shapes, splits.shift, splits.scale)


@dataclass
class PackedMember:
    """One member in shippable form: the forward from the stored arrays, its manifest and writers."""

    forward: Callable[[jax.Array], jax.Array]
    manifest: dict[str, Any]
    save_npz: Callable[[Path], None]
    save_orbax: Callable[[Path], None]
    raw_bytes: int
    n_arrays: int
    bits: list[int]


def pack_member(ctx: Context, model: nnx.Module, config: Config, splits: Splits) -> PackedMember:
    """Dense-layer packing for families that declare it (code-free loading), else the module-state layout.

    Both forwards run quantised layers on the stored integers as the subnet was timed; the dense
    layout always does, the module-state layout under `[measure] kernels = "int"` (the default).
    """
    if getattr(ctx.family, "dense_packing", False):
        tree, manifest = packed_subnet(ctx, model, config, splits)
        return PackedMember(packing.make_forward(tree, manifest), manifest, partial(packing.save_npz, tree=tree),
                            partial(packing.save_orbax, tree=tree), packing.raw_bytes(tree),
                            sum(len(layer) for layer in tree), [layer["bits"] for layer in manifest["layers"]])
    plain = extract_subnet(ctx, model, config)
    arrays, entries = state_export.pack_state(plain)
    # Compute as the subnet was timed (nas.measure.deployed_form): integer kernels unless measure.kernels = "fake".
    manifest = state_export.state_manifest(ctx.family.name, ctx.space, config, entries, splits.shift, splits.scale,
                                           kernels=ctx.exp.measure.kernels)
    graphdef, template = nnx.split(plain)
    return PackedMember(state_export.make_state_forward(graphdef, template, arrays, manifest), manifest,
                        partial(state_export.save_state_npz, arrays=arrays),
                        partial(state_export.save_state_orbax, arrays=arrays),
                        sum(int(a.nbytes) for a in arrays.values()), len(arrays),
                        [e["bits"] for e in entries.values()])


def serialize(fn: Callable, n_features: int, platforms: tuple[str, ...] | None = None) -> tuple[bytes, str]:
    """(serialised jax.export artefact with a symbolic batch dimension, its StableHLO text), lowered for
    `platforms` (None: this machine's default backend only)."""
    spec = jax.ShapeDtypeStruct(jax.export.symbolic_shape(f"b, {n_features}"), jnp.float32)
    exported = jax.export.export(jax.jit(fn), platforms=platforms)(spec)
    return bytes(exported.serialize()), exported.mlir_module()


def artefact_platforms(ctx: Context) -> tuple[str, ...]:
    """The platforms the artefact is lowered for: the target device's (`[measure] device`, what the subnet
    was timed on), and this machine's default backend, on which the export checks it."""
    from nas.latency import target_device

    here = jax.export.default_export_platform()  # "cuda"/"rocm", not jax's "gpu" alias, which export refuses
    try:
        target = target_device(ctx.exp.measure.device).platform
    except NasError:  # not here: the check below still needs this machine's
        target = here
    # A device is "cpu" or the default backend's (a GPU is the default wherever there is one).
    return tuple(dict.fromkeys(["cpu" if target == "cpu" else here, here]))


def member_name(rank: int, row: dict[str, Any]) -> str:
    """Folder name of a front member: its rank along the first objective and a hash of its config."""
    digest = hashlib.sha256(row["key"].encode()).hexdigest()[:8]
    return f"{rank:02d}_{digest}"


def write_member(ctx: Context, model: nnx.Module, row: dict[str, Any], splits: Splits, folder: Path,
                 x_check: np.ndarray) -> dict[str, Any]:
    """Write one member's requested formats; returns the storage and check figures for metrics.json."""
    formats = ctx.exp.export.formats
    config = row["config"]
    packed = pack_member(ctx, model, config, splits)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "config.json", config)
    forward = packed.forward
    stats: dict[str, Any] = {"formats": list(formats), "params_bytes": packed.raw_bytes,
                             "predicted_size_bytes": ctx.family.size_bytes(ctx.space, config),
                             "layout": packed.manifest["format"]}
    if "npz" in formats or "orbax" in formats:
        write_json(folder / packing.MANIFEST, packed.manifest)
    if "npz" in formats:
        packed.save_npz(folder / packing.PARAMS_NPZ)
        stats["params_bytes_on_disk"] = (folder / packing.PARAMS_NPZ).stat().st_size
        stats["npz_arrays"] = packed.n_arrays
    if "orbax" in formats:
        packed.save_orbax(folder / packing.PARAMS_ORBAX)
        stats["orbax_bytes_on_disk"] = sum(f.stat().st_size for f in (folder / packing.PARAMS_ORBAX).rglob("*")
                                           if f.is_file())
    # Check what actually ships, each format as a user loads it: the deserialised artefact, and the
    # params read back from disk (a writer that damaged them would otherwise ship unnoticed).
    shipped = {}
    if "stablehlo" in formats:
        blob, mlir = serialize(forward, ctx.space.meta["n_features"], artefact_platforms(ctx))
        write_bytes(folder / ARTIFACT, blob)
        write_bytes(folder / "model.mlir", mlir.encode())
        stats["artefact_bytes"] = len(blob)
        shipped["stablehlo"] = jax.export.deserialize(blob).call
    for fmt in ("npz", "orbax"):
        if fmt in formats:
            shipped[fmt] = load_params(folder, fmt)
    # Compiled, as every shipped form is: run op by op, convolutions and attention round differently
    # (~4e-7 relative), which alone put float members with logits past ~25 over the 1e-5 check.
    reference = jax.jit(deployable_function(ctx, model, config, splits))
    kind = "float" if all(b >= packing.FLOAT_BITS for b in packed.bits) else "quantised"
    checks = {fmt: output_agreement(fn, reference, x_check, kind, ctx.exp.measure.eval_batch_size)
              for fmt, fn in (shipped or {"in memory": jax.jit(forward)}).items()}
    for fmt, check in checks.items():
        if not check["ok"]:
            raise StageError(f"export of {folder.name} ({fmt}): exported outputs differ from the extracted "
                             f"subnet's: {check['why']}")
    return {"export_max_abs_diff": max(c["max_abs_diff"] for c in checks.values()),
            "export_samples_over_tolerance": max(c["over"] for c in checks.values()),
            "export_checked": list(checks), **stats}


def write_exported(ctx: Context, model: nnx.Module, row: dict[str, Any], splits: Splits, folder: Path,
                   test_accuracy: float, x_check: np.ndarray) -> dict[str, Any]:
    """One measured subnet as a shippable folder: its formats (checked) and metrics.json; returns the metrics."""
    stored = write_member(ctx, model, row, splits, folder, x_check)
    # Every measured metric (extra latency targets included), not the timing bookkeeping.
    measured = {k: v for k, v in row.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)
                and not k.startswith(("latency_iters", "latency_repeats", "latency_outliers", "compile_s"))}
    metrics = {"measured": {**measured, "test_accuracy": test_accuracy}, "predicted": row.get("predicted"),
               "source": row.get("source"), **stored,
               "input": {"features": ctx.space.meta["n_features"], "dtype": "float32",
                         "note": "raw features; the normalisation is inside the artefact and in manifest.json"},
               "device": ctx.exp.measure.device, "measure_batch_size": ctx.exp.measure.batch_size}
    # Written last, over the files as they are on disk: load_exported refuses a file that changed since.
    metrics[DIGESTS] = file_digests(folder, dict.fromkeys(n for names in LOADED.values() for n in names))
    write_json(folder / METRICS, metrics)
    return metrics


def export_one(ctx: Context, row: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Export one measured subnet (a table row with its config) to a new folder, whole or not at all."""
    from nas.train import load_supernet

    if folder.exists() or folder.is_symlink():
        raise NasError(f"export folder {folder} already exists; choose a new one")
    model = load_supernet(ctx)
    splits = load_data(ctx.exp.data)
    (test_accuracy,) = accuracy_many(ctx, model, [row["config"]], splits.x_test, splits.y_test)
    created = [p for p in folder.parents if not p.exists()]  # innermost first
    for left in folder.parent.glob(f".{glob.escape(folder.name)}.*.tmp"):  # by exports killed mid-way
        if not owner_alive(left.name[len(folder.name) + 2:].rsplit(".", 2)[0]):
            shutil.rmtree(left, ignore_errors=True)
    tmp = None
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        # A folder of its own, named by its owner: two exports to one path at once must not delete each
        # other's files, and one killed is swept by the next.
        tmp = folder.with_name(f".{folder.name}.{me()}.{secrets.token_hex(4)}.tmp")
        tmp.mkdir()
        metrics = write_exported(ctx, model, row, splits, tmp, float(test_accuracy),
                                 splits.x_test * splits.scale + splits.shift)
        tmp.rename(folder)  # fails, leaving nothing, when another export got there first
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        for parent in created:  # "whole or not at all" includes the folders made on the way
            with contextlib.suppress(OSError):
                parent.rmdir()
        raise
    return metrics


def output_gap(got: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """|got - ref| elementwise, where a non-finite value on one side only is an infinite gap (NaN would
    compare false with every tolerance and pass) and the same non-finite value on both sides is none."""
    got, ref = np.broadcast_arrays(got.astype(np.float64), ref.astype(np.float64))
    same = (np.isnan(got) & np.isnan(ref)) | (np.isinf(got) & (got == ref))
    with np.errstate(invalid="ignore"):
        gap = np.abs(got - ref)
    return np.where(same, 0.0, np.where(np.isnan(gap), np.inf, gap))


def _in_slices(fn: Callable, x: np.ndarray, batch: int) -> np.ndarray:
    """fn over `x` in even slices of at most `batch` examples (a whole test set at once can exhaust memory)."""
    step, _ = even_slices(len(x), batch)
    return np.concatenate([np.asarray(fn(jnp.asarray(x[i : i + step]))) for i in range(0, max(len(x), 1), step)])


def output_agreement(shipped: Callable, reference: Callable, x: np.ndarray, kind: str,
                     batch: int = 4096) -> dict[str, Any]:
    """Whether the shipped function reproduces the reference (both run `batch` examples at a time): float
    to TOLERANCE everywhere; quantised to TOLERANCE except rounding-boundary flips (at most FLIP_SHARE of
    samples, each <= FLIP_BOUND x max|logit|)."""
    ref = _in_slices(reference, x, batch)
    per_sample = output_gap(_in_slices(shipped, x, batch), ref).reshape(len(ref), -1).max(axis=1)
    tol = TOLERANCE[kind]
    diff, over = float(per_sample.max()), int((per_sample > tol).sum())
    if over == 0:
        why = None
    elif kind == "float":
        why = f"max {diff:.3g} > {tol:g} for a float subnet"
    else:
        finite = np.abs(ref[np.isfinite(ref)])
        bound = FLIP_BOUND * float(finite.max(initial=0.0))
        why = None if over <= FLIP_SHARE * len(ref) and diff <= bound else (
            f"{over} of {len(ref)} samples beyond {tol:g}, max {diff:.3g} (allowed for rounding-boundary flips: "
            f"{FLIP_SHARE:.0%} of samples, each <= {bound:.3g})")
    return {"ok": why is None, "why": why, "max_abs_diff": diff, "over": over}


def export(ctx: Context, *, quiet: bool = False) -> dict[str, Any]:
    """The export stage: writes into a temp folder, then swaps it in whole."""
    from nas.train import load_supernet

    ctx.require("search")
    t0 = time.time()
    path = ctx.path("search", "front.json")
    front = check_measured_rows(ctx, read_json(path, "measured front"), path, "nas search --force", unit="member")
    members = [front[i] for i in spread(range(len(front)), front, ctx.exp.objectives[0], ctx.exp.export.max_models)]
    model = load_supernet(ctx)
    splits = load_data(ctx.exp.data)
    test_acc = accuracy_many(ctx, model, [m["config"] for m in members], splits.x_test, splits.y_test)
    out, tmp, old = ctx.path("export"), ctx.path(".export.tmp"), ctx.path(".export.old")
    if not out.exists() and old.is_dir():  # killed between the swap's two renames
        old.rename(out)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    x_check = splits.x_test * splits.scale + splits.shift  # raw inputs again
    summary_rows = []
    try:
        with progress("export", total=len(members), quiet=quiet) as bar:
            for rank, (row, acc) in enumerate(zip(members, test_acc)):
                name = member_name(rank, row)
                metrics = write_exported(ctx, model, row, splits, tmp / name, float(acc), x_check)
                summary_rows.append({"name": name, "config": row["config"], **metrics["measured"],
                                     "predicted": row.get("predicted")})
                bar.update(rank + 1)
        write_json(tmp / "front.json", {"experiment": ctx.exp.name,
                                        "objectives": [o.metric for o in ctx.exp.objectives],
                                        "budgets": [str(b) for b in ctx.exp.budgets], "members": summary_rows,
                                        "formats": list(ctx.exp.export.formats),
                                        # nas query and nas report tell from it whether the search ran again since.
                                        "search_stamp": ctx.stamp_id("search")})
        if ctx.exp.export.plot:
            from nas.plot import pareto_plot

            pareto_plot(ctx, summary_rows, tmp / "pareto.png")
        # Renames only between two whole exports: deleting the old one first (0.2 s for an orbax export)
        # left, when interrupted, an export folder with half its members and no front.json.
        remove_path(old)
        if out.exists() or out.is_symlink():  # a linked export folder: the link goes, what it points to stays
            out.rename(old)
        tmp.rename(out)
    except BaseException:
        # A member failing its checks, a full disk, Ctrl-C: no half-written export left behind (nor its space
        # held); the old export stays, or comes back from .export.old next time.
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    with contextlib.suppress(OSError):  # the new export is in place: a leftover is swept by the next one
        remove_path(old)
    summary = {"exported": len(summary_rows), "wall_s": round(time.time() - t0, 2), "folder": str(out),
               "formats": list(ctx.exp.export.formats)}
    say(f"  exported {len(summary_rows)} subnets to {out}", quiet=quiet)
    ctx.mark_done("export", summary)
    return summary
