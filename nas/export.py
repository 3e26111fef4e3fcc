"""Export the measured front: per member a folder with config, parameters, metrics and the
extracted subnet serialised by jax.export (StableHLO), plus front.json and a Pareto plot."""

from __future__ import annotations

import hashlib
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from nas.context import Context
from nas.data import Splits, load_data
from nas.io import read_json, write_bytes, write_json
from nas.measure import accuracy_many
from nas.pareto import spread
from nas.progress import progress, say
from search_spaces import Config

ARTIFACT = "model.jaxexport"


def deployable_function(ctx: Context, model: nnx.Module, config: Config, splits: Splits) -> Callable:
    """raw features -> logits: the data normalisation baked in front of the extracted subnet."""
    plain = ctx.family.extract(model, ctx.space, config)
    shift, scale = jnp.asarray(splits.shift), jnp.asarray(splits.scale)

    def fn(x: jax.Array) -> jax.Array:
        return plain((x - shift) / scale)

    return fn


def serialize(fn: Callable, n_features: int) -> tuple[bytes, str]:
    """(serialised jax.export artefact with a symbolic batch dimension, its StableHLO text)."""
    spec = jax.ShapeDtypeStruct(jax.export.symbolic_shape(f"b, {n_features}"), jnp.float32)
    exported = jax.export.export(jax.jit(fn))(spec)
    return bytes(exported.serialize()), exported.mlir_module()


def flat_params(module: nnx.Module) -> dict[str, np.ndarray]:
    """Parameters as {'layers.0.kernel': array, ...}: names equal the plain layer's attributes."""
    state = nnx.state(module, nnx.Param)
    return {".".join(str(k) for k in path): np.asarray(v[...]) for path, v in nnx.to_flat_state(state)}


def member_name(rank: int, row: dict[str, Any]) -> str:
    """Folder name of a front member: its rank along the first objective and a hash of its config."""
    digest = hashlib.sha256(row["key"].encode()).hexdigest()[:8]
    return f"{rank:02d}_{digest}"


def export(ctx: Context, *, quiet: bool = False) -> dict[str, Any]:
    """The export stage: writes into a temp folder, then swaps it in whole."""
    from nas.train import load_supernet

    ctx.require("search")
    t0 = time.time()
    front = read_json(ctx.path("search", "front.json"), "measured front")
    first = ctx.exp.objectives[0].metric
    members = [front[i] for i in spread(range(len(front)), front, first, ctx.exp.export.max_models)]
    model = load_supernet(ctx)
    splits = load_data(ctx.exp.data)
    test_acc = accuracy_many(ctx, model, [m["config"] for m in members], splits.x_test, splits.y_test)
    out, tmp = ctx.path("export"), ctx.path(".export.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    x_check = splits.x_test * splits.scale + splits.shift  # raw inputs again
    summary_rows = []
    with progress("export", total=len(members), quiet=quiet) as bar:
        for rank, (row, acc) in enumerate(zip(members, test_acc)):
            name = member_name(rank, row)
            folder = tmp / name
            fn = deployable_function(ctx, model, row["config"], splits)
            blob, mlir = serialize(fn, ctx.space.meta["n_features"])
            write_bytes(folder / ARTIFACT, blob)
            write_bytes(folder / "model.mlir", mlir.encode())
            np.savez(folder / "params.npz", **flat_params(ctx.family.extract(model, ctx.space, row["config"])))
            write_json(folder / "config.json", row["config"])
            reloaded = jax.export.deserialize(blob).call(jnp.asarray(x_check))
            diff = float(jnp.max(jnp.abs(reloaded - fn(jnp.asarray(x_check)))))
            measured = {k: row[k] for k in ("accuracy", "latency_ms", "latency_iqr_ms", "size_kb", "macs")}
            metrics = {"measured": {**measured, "test_accuracy": float(acc)}, "predicted": row.get("predicted"),
                       "source": row.get("source"), "export_max_abs_diff": diff,
                       "input": {"features": ctx.space.meta["n_features"], "dtype": "float32",
                                 "note": "raw features; the normalisation is inside the artefact"},
                       "device": ctx.exp.measure.device, "measure_batch_size": ctx.exp.measure.batch_size}
            write_json(folder / "metrics.json", metrics)
            summary_rows.append({"name": name, "config": row["config"], **metrics["measured"],
                                 "predicted": row.get("predicted")})
            bar.update(rank + 1)
    write_json(tmp / "front.json", {"experiment": ctx.exp.name, "objectives": [o.metric for o in ctx.exp.objectives],
                                    "budgets": [str(b) for b in ctx.exp.budgets], "members": summary_rows})
    if ctx.exp.export.plot:
        from nas.plot import pareto_plot

        pareto_plot(ctx, summary_rows, tmp / "pareto.png")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    summary = {"exported": len(summary_rows), "wall_s": round(time.time() - t0, 2), "folder": str(out)}
    say(f"  exported {len(summary_rows)} subnets to {out}", quiet=quiet)
    ctx.mark_done("export", summary)
    return summary


def load_exported(folder: str | Path) -> tuple[Callable[[Any], jax.Array], dict[str, Any]]:
    """(callable from the StableHLO artefact alone, its metrics) of one exported member."""
    from nas.errors import NasError

    folder = Path(folder)
    try:
        exported = jax.export.deserialize(bytearray((folder / ARTIFACT).read_bytes()))
    except Exception as e:
        raise NasError(f"{folder / ARTIFACT}: not a readable jax.export artefact ({e})".splitlines()[0]) from None
    return exported.call, read_json(folder / "metrics.json", "exported metrics")
