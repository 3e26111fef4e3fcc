"""Inherited vs standalone accuracy per family: train the supernet once, pick 8 configs across the
size range (4-bit and mixed-precision ones included), train each alone from scratch for the same
number of steps, and compare test accuracy. Also the 4-bit vs float gap of inherited subnets and
the sandwich-step / dense-step time ratio on this device.

    .venv/bin/python benchmarks/supernet_quality.py [--quick] [--families mlp,cnn,transformer]
                                                    [--steps N] [--out runs/bench-supernet]
    .venv/bin/python benchmarks/supernet_quality.py --step-time-only --gpu-experiments   # GPU step figures only

Targets (issue 4): inherited within 1.0 point of standalone on average, never more than 2.5 points
below; 4-bit subnets within 1.5 points of their float counterparts. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

EXPERIMENTS = {"mlp": "experiments/quickstart.toml", "cnn": "experiments/cnn.toml",
               "transformer": "experiments/transformer.toml"}


def pick_configs(space) -> list[tuple[str, dict]]:
    """8 configs across the size range: float extremes, 4-bit extremes, mixed precision, random."""
    rng = np.random.default_rng(2026)
    from search_spaces import is_bit_width

    bits_dims = [n for n in space.names if is_bit_width(n)]
    def with_bits(c, b):
        return space.canonical({**c, **{n: b if b in space.dim(n).choices else space.dim(n).choices[-1]
                                       for n in bits_dims}})
    mid = space.sample(rng)
    mixed = space.canonical({**space.sample(rng),
                             **{n: int(rng.choice(space.dim(n).choices)) for n in bits_dims}})
    return [("largest_float", with_bits(space.largest(), 32)), ("largest_4bit", with_bits(space.largest(), 4)),
            ("smallest_float", with_bits(space.smallest(), 32)), ("smallest_4bit", with_bits(space.smallest(), 4)),
            ("mid_float", with_bits(mid, 32)), ("mid_4bit", with_bits(mid, 4)), ("mixed", mixed),
            ("random", space.sample(rng))]


def train_alone(ctx, config: dict, steps: int) -> nnx.Module:
    """The same net trained alone: the supernet code with one fixed config per step (labels only)."""
    from nas.data import load_data
    from nas.train import batch_indices, init_state, train_step

    cfg = dataclasses.replace(ctx.exp.train, steps=steps, distill=False, sandwich_random=0)
    graphdef, params, rest, opt_state, tx = init_state(dataclasses.replace(ctx, exp=dataclasses.replace(
        ctx.exp, train=cfg)))
    splits = load_data(ctx.exp.data)
    active = {k: jnp.asarray(v) for k, v in ctx.family.active(ctx.space, [config]).items()}
    for step in range(steps):
        idx = batch_indices(ctx.exp.seed, step, len(splits.x_train), cfg.batch_size)
        params, opt_state, _, _ = train_step(graphdef, tx, cfg, params, opt_state, rest,
                                             jnp.asarray(splits.x_train[idx]), jnp.asarray(splits.y_train[idx]), active)
    return nnx.merge(graphdef, params, rest)


# Dense tensor-core peaks (TFLOP/s) for float32 matmuls, which XLA runs as TF32 on these GPUs by
# default; MFU is reported against them (and achieved TFLOP/s for any other peak one prefers).
PEAK_TFLOPS = {"H200": 494.7, "H100 PCIE": 378.0, "H100": 494.7, "A100": 156.0, "L4": 60.0}  # first match wins


def device_peak_tflops(kind: str) -> float | None:
    """Peak dense TF32 TFLOP/s of a GPU named `kind` (None for CPUs and unknown devices)."""
    return next((v for k, v in PEAK_TFLOPS.items() if k in kind.upper()), None)


def compiled_flops(compiled) -> float | None:
    """FLOPs of a compiled program as XLA counts them (None where the backend does not say)."""
    try:
        cost = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 - a backend without cost analysis just has no MFU
        return None
    if isinstance(cost, (list, tuple)):  # older jax: one dict per computation
        cost = cost[0] if cost else None
    return float(cost["flops"]) if cost and cost.get("flops", 0) > 0 else None


def step_ratio(ctx, repeats: int = 20, peak_tflops: float | None = None) -> dict[str, float | None]:
    """Wall time of one sandwich step (the training recipe's configs, vmapped) over a step of the largest
    alone, and the dense step's model FLOP utilisation where the device's peak is known."""
    from nas.data import load_data
    from nas.train import init_state, sandwich_configs, train_step

    splits = load_data(ctx.exp.data)
    cfg = ctx.exp.train
    x = jnp.asarray(splits.x_train[: cfg.batch_size])
    y = jnp.asarray(splits.y_train[: cfg.batch_size])
    times, flops = {}, {}
    sandwich = sandwich_configs(ctx, 0, cfg.sandwich_random, cfg.smallest_bits, cfg.uniform_bits)
    # The GPU target is stated for 4 configs (largest, smallest, 2 random); the recipe may run more.
    four = sandwich_configs(ctx, 0, 2)
    for name, configs in (("dense", [ctx.space.largest()]), ("sandwich", sandwich), ("sandwich4", four)):
        graphdef, params, rest, opt_state, tx = init_state(ctx)
        active = {k: jnp.asarray(v) for k, v in ctx.family.active(ctx.space, configs).items()}
        # One compile serves both the FLOP count and the timing (CNN steps take 20-60 s to compile here).
        step = train_step.lower(graphdef, tx, cfg, params, opt_state, rest, x, y, active).compile()
        flops[name] = compiled_flops(step)
        for _ in range(3):  # warm up
            params, opt_state, loss, _ = step(params, opt_state, rest, x, y, active)
        loss.block_until_ready()
        t0 = time.perf_counter()
        for _ in range(repeats):
            params, opt_state, loss, _ = step(params, opt_state, rest, x, y, active)
        loss.block_until_ready()
        times[name] = (time.perf_counter() - t0) / repeats * 1e3
    kind = str(jax.devices()[0].device_kind)
    peak = peak_tflops or device_peak_tflops(kind)
    achieved = flops["dense"] / (times["dense"] * 1e-3) / 1e12 if flops["dense"] else None
    return {"dense_step_ms": times["dense"], "sandwich_step_ms": times["sandwich"],
            "configs_per_step": len(sandwich), "ratio": times["sandwich"] / times["dense"],
            "sandwich4_step_ms": times["sandwich4"], "ratio4": times["sandwich4"] / times["dense"],
            "dense_step_gflop": flops["dense"] / 1e9 if flops["dense"] else None,
            "sandwich_step_gflop": flops["sandwich"] / 1e9 if flops["sandwich"] else None,
            "dense_tflops_achieved": achieved, "device": kind, "peak_tflops": peak,
            "dense_mfu": achieved / peak if achieved and peak else None}


def _points(value: float) -> float | None:
    """A figure in points, rounded; None when it was not measured (NaN)."""
    return None if np.isnan(value) else round(float(value), 2)


def train_overrides(pairs: list[str]) -> dict[str, object]:
    """`KEY=VALUE` strings ([train] keys, or SECTION.KEY), values parsed as TOML scalars (3e-3, true, "all")."""
    import tomllib

    out = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        out[key.strip()] = tomllib.loads(f"v = {value.strip()}")["v"]
    return out


def family_context(experiment: str, run_dir: Path, steps: int | None = None, overrides: dict | None = None,
                   seed: int | None = None):
    """The experiment's context with the benchmark's step count, seed and KEY=VALUE overrides applied."""
    from nas.context import prepare

    ctx = prepare(experiment, run_dir=run_dir)
    if steps:
        ctx = dataclasses.replace(ctx, exp=dataclasses.replace(ctx.exp, train=dataclasses.replace(
            ctx.exp.train, steps=steps, warmup_steps=min(ctx.exp.train.warmup_steps, steps // 10),
            checkpoint_every=steps)))
    if seed is not None:  # the supernet's and the standalone nets' initialisation and batches
        ctx = dataclasses.replace(ctx, exp=dataclasses.replace(ctx.exp, seed=seed))
    sections: dict[str, dict] = {}
    for key, value in (overrides or {}).items():  # "KEY" is a [train] key, "SECTION.KEY" any other
        section, _, field = key.rpartition(".")
        sections.setdefault(section or "train", {})[field] = tuple(value) if isinstance(value, list) else value
    for section, fields in sections.items():
        ctx = dataclasses.replace(ctx, exp=dataclasses.replace(
            ctx.exp, **{section: dataclasses.replace(getattr(ctx.exp, section), **fields)}))
    return ctx


def family_figures(name: str, steps: int | None, out: Path, overrides: dict | None = None,
                   step_time: bool = True, seed: int | None = None, with_standalone: bool = True,
                   peak_tflops: float | None = None) -> dict:
    """Train once, compare inherited vs standalone on 8 configs, 4-bit vs float, step ratio."""
    from nas.data import load_data
    from nas.measure import accuracy_many
    from nas.train import load_supernet, train

    ctx = family_context(EXPERIMENTS[name], out / name, steps, overrides, seed)
    t0 = time.time()
    train(ctx, quiet=True)

    supernet = load_supernet(ctx)
    splits = load_data(ctx.exp.data)
    picked = pick_configs(ctx.space)
    configs = [c for _, c in picked]
    inherited = accuracy_many(ctx, supernet, configs, splits.x_test, splits.y_test) * 100
    standalone = np.array([accuracy_many(ctx, train_alone(ctx, c, ctx.exp.train.steps), [c], splits.x_test,
                                         splits.y_test)[0] * 100 if with_standalone else np.nan for c in configs])
    gap = standalone - inherited  # > 0: inherited is worse
    labels = [n for n, _ in picked]
    quant_pairs = [("largest_4bit", "largest_float"), ("smallest_4bit", "smallest_float"), ("mid_4bit", "mid_float")]
    quant_gap = [inherited[labels.index(f)] - inherited[labels.index(q)] for q, f in quant_pairs]
    # A second, independent estimate of the 4-bit loss: on a small test split (digits: one image is
    # 0.28 points) a single split cannot tell a 1.5-point target from noise.
    val = accuracy_many(ctx, supernet, configs, splits.x_val, splits.y_val) * 100
    quant_gap_val = [val[labels.index(f)] - val[labels.index(q)] for q, f in quant_pairs]
    return {
        "steps": ctx.exp.train.steps, "seed": ctx.exp.seed, "wall_s": round(time.time() - t0, 1),
        "configs": {n: {"inherited": round(float(i), 2), "standalone": _points(s),
                        "size_kb": round(ctx.family.size_bytes(ctx.space, c) / 1024, 2),
                        "macs": ctx.family.macs(ctx.space, c)}
                    for (n, c), i, s in zip(picked, inherited, standalone)},
        "mean_gap_points": _points(gap.mean()), "worst_gap_points": _points(gap.max()),
        "quant_gap_points": [round(float(g), 2) for g in quant_gap],
        "quant_gap_points_val": [round(float(g), 2) for g in quant_gap_val],
        "targets_met": (bool(gap.mean() <= 1.0 and gap.max() <= 2.5 and max(quant_gap) <= 1.5)
                        if with_standalone else None),
        "train": {k: getattr(ctx.exp.train, k) for k in ("label_loss", "distill", "sandwich_random",
                                                           "channel_sorting", "learning_rate")},
        "step_time": step_ratio(ctx, peak_tflops=peak_tflops) if step_time else None,
    }


def main() -> None:
    """Run the benchmark and print one JSON object last."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="CPU-sized: 300 steps per training")
    ap.add_argument("--families", default="mlp,cnn,transformer")
    ap.add_argument("--steps", type=int, default=None, help="override every family's train.steps")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a [train] key of every family's runs, e.g. label_loss=\"all\", or SECTION.KEY, "
                         "e.g. data.val_fraction=0.4")
    ap.add_argument("--seed", type=int, default=None, help="replace the experiments' seed")
    ap.add_argument("--inherited-only", action="store_true",
                    help="skip the standalone nets (for comparing supernet recipes: they do not depend on it)")
    ap.add_argument("--skip-step-time", action="store_true", help="leave out the sandwich/dense step timing")
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="the device's peak TFLOP/s for the dense step's MFU (default: known GPUs' dense TF32 peak)")
    ap.add_argument("--step-time-only", action="store_true",
                    help="only the sandwich/dense step timing and MFU (no training): the GPU figures of item 6")
    ap.add_argument("--gpu-experiments", action="store_true",
                    help="use the GPU-sized experiments/<family>_gpu.toml instead of the CPU ones")
    ap.add_argument("--out", default="runs/bench-supernet")
    ap.add_argument("--reuse", action="store_true",
                    help="keep --out: supernets already trained there (same settings) are evaluated, not retrained")
    args = ap.parse_args()
    steps = args.steps or (300 if args.quick else None)
    out = Path(args.out)
    if not args.reuse:
        shutil.rmtree(out, ignore_errors=True)
    t0 = time.time()
    figures = {}
    overrides = train_overrides(args.set)
    if args.gpu_experiments:
        EXPERIMENTS.update({n: f"experiments/{n}_gpu.toml" for n in EXPERIMENTS})
    for name in args.families.split(","):
        if args.step_time_only:
            ctx = family_context(EXPERIMENTS[name], out / name, steps, overrides, args.seed)
            figures[name] = {"experiment": EXPERIMENTS[name],
                             "step_time": step_ratio(ctx, peak_tflops=args.peak_tflops)}
            print(f"{name}: {json.dumps(figures[name])}", flush=True)
            continue
        figures[name] = family_figures(name, steps, out, overrides, not args.skip_step_time, args.seed,
                                       not args.inherited_only, args.peak_tflops)
        print(f"{name}: {json.dumps(figures[name])}", flush=True)
    print(json.dumps({"device": str(jax.devices()[0].device_kind), "jax": jax.__version__, "quick": args.quick,
                      "overrides": overrides,
                      "wall_s": round(time.time() - t0, 1), "families": figures}))


if __name__ == "__main__":
    main()
