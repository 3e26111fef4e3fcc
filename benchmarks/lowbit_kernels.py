"""Low-bit kernels (issue 6): fake-quant float vs int8 x int8 vs int8 weight-only vs plain float.

    .venv/bin/python benchmarks/lowbit_kernels.py            # CPU, and the GPU too when one is present
    .venv/bin/python benchmarks/lowbit_kernels.py --quick    # fewer shapes (a smoke run)

Two parts, each timed with nas.latency (K iterations inside one compiled program, variants of one
shape interleaved round by round, median per call):
  * single linear layers (in = out = N, batch B), 8-bit weights; "int" with unsigned 8-bit inputs
    (the shifted path post-ReLU layers take), "weight" with float inputs;
  * whole extracted quickstart-like MLP subnets (64 features, 10 classes, hidden widths as listed;
    latency does not depend on training, so the supernet is freshly initialised) at batch 1 and 64.
Prints one line per timing and one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from nas.latency import compile_program, device_profile, time_programs
from search_spaces import is_bit_width
from supernets.linear import ElasticLinear
from supernets.lowbit import use_integer_kernels
from supernets.mlp import MLPFamily

BATCHES = (1, 64, 256)
FEATURES = (64, 256, 1024)
# (name, hidden widths, bits per layer incl. the head): quickstart's space is widths 16..128, bits 2/4/8/32.
MLPS = (
    ("quickstart-largest-8b", (128, 128, 128), 8),
    ("quickstart-largest-4b", (128, 128, 128), 4),
    ("quickstart-small-8b", (32,), 8),
    ("wide-1024x3-8b", (1024, 1024, 1024), 8),
)


def _fn(module: nnx.Module) -> tuple[Any, Any]:
    """(fn(params, x), params) of a module, as the measure stage times it."""
    graphdef, params = nnx.split(module)
    return (lambda p, x: nnx.merge(graphdef, p)(x)), params


def _time(variants: dict[str, nnx.Module], x: jax.Array, device: jax.Device, rounds: int) -> dict[str, float]:
    """Median ms per call of each variant, interleaved."""
    programs = [compile_program(*_fn(m), x, device=device) for m in variants.values()]
    timings = time_programs(programs, rounds, max_rounds=3 * rounds)
    return {name: round(t.median_ms, 5) for name, t in zip(variants, timings)}


def layer_variants(n: int) -> dict[str, nnx.Module]:
    """One n x n linear layer four ways."""
    layer = ElasticLinear(n, n, signed_input=False, rngs=nnx.Rngs(0))
    return {"float": layer.extract(n, n, 32, 32), "fake8": layer.extract(n, n, 8, 8),
            "int8": use_integer_kernels(layer.extract(n, n, 8, 8)),
            "weight8": use_integer_kernels(layer.extract(n, n, 8, 32))}


def mlp_variants(widths: tuple[int, ...], bits: int) -> dict[str, nnx.Module]:
    """An extracted MLP subnet: float, fake-quant at `bits`, and its integer-kernel copy."""
    family = MLPFamily()
    depth, width = len(widths), max(widths)
    space = family.parse_space({"family": "mlp", "max_depth": depth, "max_width": width,
                                "space": {"depth": [depth], "width": [[w] for w in widths], "bits": [bits, 32]}},
                               64, 10)
    model = family.build(space, rngs=nnx.Rngs(0))
    config = {"depth": depth, "bits.out": bits, **{f"width.{i}": w for i, w in enumerate(widths)},
              **{f"bits.{i}": bits for i in range(depth)}}
    fake = family.extract(model, space, config)
    plain = family.extract(model, space, {**config, **{k: 32 for k in config if is_bit_width(k)}})
    return {"float": plain, f"fake{bits}": fake, f"int{bits}": use_integer_kernels(fake)}


def run(device: jax.Device, quick: bool, rounds: int) -> dict[str, Any]:
    """All timings on one device."""
    out: dict[str, Any] = {"profile": device_profile(device), "layers": [], "mlps": []}
    batches, features = ((1, 64), (64, 1024)) if quick else (BATCHES, FEATURES)
    for n in features:
        variants = layer_variants(n)
        for b in batches:
            x = jax.random.uniform(jax.random.key(0), (b, n), jnp.float32, 0.0, 4.0)
            row = {"batch": b, "features": n, **_time(variants, x, device, rounds)}
            row["int8_speedup_vs_fake"] = round(row["fake8"] / row["int8"], 2)
            row["int8_speedup_vs_float"] = round(row["float"] / row["int8"], 2)
            print(json.dumps(row), flush=True)
            out["layers"].append(row)
    for name, widths, bits in MLPS[:2] if quick else MLPS:
        variants = mlp_variants(widths, bits)
        for b in (1, 64):
            x = jax.random.uniform(jax.random.key(0), (b, 64), jnp.float32, -1.0, 1.0)
            row = {"mlp": name, "batch": b, **_time(variants, x, device, rounds)}
            row["int_speedup_vs_fake"] = round(row[f"fake{bits}"] / row[f"int{bits}"], 2)
            row["int_speedup_vs_float"] = round(row["float"] / row[f"int{bits}"], 2)
            print(json.dumps(row), flush=True)
            out["mlps"].append(row)
    return out


def main() -> None:
    """Time on the CPU, then on the GPU if there is one; the last line is one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer shapes (smoke run)")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds (more if unstable)")
    parser.add_argument("--gpu-only", action="store_true", help="skip the CPU timings (device runs)")
    args = parser.parse_args()
    results = {} if args.gpu_only else {"cpu": run(jax.devices("cpu")[0], args.quick, args.rounds)}
    try:
        gpu = jax.devices("gpu")[0]
    except RuntimeError:
        gpu = None
    if gpu is not None:
        results["gpu"] = run(gpu, args.quick, args.rounds)
    elif args.gpu_only:
        print("no GPU: nothing timed", file=sys.stderr)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
