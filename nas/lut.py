"""Per-layer latency lookup table, measured once per device: every distinct layer (kind, shape,
weight and input bits) the space can produce is extracted, compiled alone at the target batch and
timed with the same harness as whole subnets. `lut_features` turns a config into its per-slot
table times and their sum, the input of the `lut` latency predictor."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from nas.context import Context
from nas.errors import NasError
from nas.io import append_jsonl, read_jsonl
from nas.latency import compile_program, target_device, time_programs
from nas.measure import deployed_form
from nas.progress import progress
from search_spaces import Config
from supernets.costs import LayerCost

ENUMERATION_SAMPLES = 4096  # random configs scanned for layer keys, besides largest and smallest
CHUNK = 32  # layers compiled, then timed in interleaved rounds, before their entries are written


def entry_key(cost: LayerCost) -> str:
    """Table key of a layer: what its time depends on (kind, shape, bits), not where it sits."""
    return f"{cost.kind}|{'x'.join(map(str, cost.key))}|w{cost.bits}|a{cost.a_bits}"


def supports_lut(family: Any) -> bool:
    """Whether the family can hand out its extracted layers one by one (`layer_modules`)."""
    return callable(getattr(family, "layer_modules", None))


def table_path(ctx: Context, metric: str) -> Path:
    """Where the table of latency target `metric` (e.g. latency_ms@b1) is kept."""
    return ctx.path("measure", f"lut{metric[len('latency_ms'):]}.jsonl")


def space_layers(ctx: Context) -> dict[str, Config]:
    """Every layer key the space produces (found on largest, smallest and seeded random configs),
    each with one config that contains it."""
    rng = np.random.default_rng([ctx.exp.measure.seed, 23])
    found: dict[str, Config] = {}
    configs = [ctx.space.largest(), ctx.space.smallest()] + [ctx.space.sample(rng) for _ in range(ENUMERATION_SAMPLES)]
    for config in configs:
        for cost in ctx.family.layer_costs(ctx.space, config):
            found.setdefault(entry_key(cost), config)
    return found


def _layer_program(module: nnx.Module, relu: bool, cost: LayerCost, batch: int, device: jax.Device,
                   ctx: Context) -> Any:
    graphdef, params = nnx.split(deployed_form(ctx, module))
    shape = (batch, cost.act_in)
    x = jnp.asarray(np.random.default_rng(0).uniform(0, 1, shape).astype(np.float32))

    def forward(p: Any, v: jax.Array) -> jax.Array:
        y = nnx.merge(graphdef, p)(v)
        return jax.nn.relu(y) if relu else y

    m = ctx.exp.measure
    return compile_program(forward, params, x, device=device, warmup=m.warmup, min_time_ms=m.min_time_ms)


def measure_table(ctx: Context, model: nnx.Module | None, metric: str, device_kind: str, batch: int, *,
                  quiet: bool = False) -> dict[str, float]:
    """Time every layer key of the space not yet in the table of `metric` (resumable), return key -> ms;
    the supernet is loaded only when something is left to time and no `model` is given."""
    if not supports_lut(ctx.family):
        raise NasError(f"predictors.latency = 'lut': family '{ctx.family.name}' cannot time its layers alone")
    path = table_path(ctx, metric)
    table = {r["key"]: r["ms"] for r in read_jsonl(path)}
    todo = [(k, c) for k, c in space_layers(ctx).items() if k not in table]
    if not todo:
        return table
    if model is None:
        from nas.train import load_supernet

        model = load_supernet(ctx)
    device = target_device(device_kind)
    m = ctx.exp.measure
    with progress(f"layer table {metric}", total=len(todo), quiet=quiet) as bar:
        for start in range(0, len(todo), CHUNK):
            chunk, programs = todo[start : start + CHUNK], []
            for key, config in chunk:
                layers = ctx.family.layer_modules(model, ctx.space, config)
                cost, module, relu = next(x for x in layers if entry_key(x[0]) == key)
                programs.append(_layer_program(module, relu, cost, batch, device, ctx))
                bar.update(start + len(programs), info="compiling")
            for (key, _), timing in zip(chunk, time_programs(programs, m.repeats, max_rounds=m.max_repeats,
                                                              rel_tol=m.stable_rel)):
                table[key] = timing.median_ms
                append_jsonl(path, {"key": key, "ms": timing.median_ms, "iqr_ms": timing.iqr_ms})
    return table


def ensure_tables(ctx: Context, model: nnx.Module | None = None, *, quiet: bool = False) -> None:
    """Complete the table of every latency target when the experiment predicts latency with `lut`
    (measure does it; fit does it too, for a run measured before `lut` was chosen)."""
    if ctx.exp.predictors.latency == "lut":
        for metric, device, batch in ctx.exp.measure.latency_targets():
            measure_table(ctx, model, metric, device, batch, quiet=quiet)


class LatencyTable:
    """Looked-up layer times; a key the table lacks is estimated from its kind's entries (log time
    against log MACs and bits), so configs beyond the enumerated ones still get a prediction."""

    def __init__(self, entries: dict[str, float]):
        if not entries:
            raise NasError("the per-layer latency table is empty (run `nas measure`)")
        self.entries = dict(entries)
        self._fits: dict[str, np.ndarray] = {}

    def _estimate(self, cost: LayerCost) -> float:
        kind = cost.kind
        if kind not in self._fits:
            rows, y = [], []
            for key, ms in self.entries.items():
                k, shape, w, a = key.split("|")
                if k == kind:
                    macs = float(np.prod([int(v) for v in shape.split("x") if v]))
                    rows.append([1.0, np.log1p(macs), int(w[1:]) < 32, int(a[1:]) < 32])
                    y.append(np.log(ms))
            if not rows:
                raise NasError(f"the per-layer latency table has no '{kind}' layer to estimate from")
            self._fits[kind] = np.linalg.lstsq(np.array(rows, float), np.array(y), rcond=None)[0]
        coef = self._fits[kind]
        return float(np.exp(coef @ [1.0, np.log1p(np.prod(cost.key)), cost.bits < 32, cost.a_bits < 32]))

    def time_ms(self, cost: LayerCost) -> float:
        """The table's time for one layer (estimated when the table lacks its key)."""
        ms = self.entries.get(entry_key(cost))
        return ms if ms is not None else self._estimate(cost)


@functools.lru_cache(maxsize=8)
def _cached_table(path: Path, mtime_ns: int) -> LatencyTable:
    return LatencyTable({r["key"]: r["ms"] for r in read_jsonl(path)})


def load_table(ctx: Context, metric: str) -> LatencyTable:
    """The measured table of latency target `metric` (read once per file version: search calls often)."""
    path = table_path(ctx, metric)
    if not path.is_file():
        raise NasError(f"no per-layer latency table at {path} (run `nas measure`)")
    return _cached_table(path, path.stat().st_mtime_ns)


def lut_features(ctx: Context, metric: str, configs: Sequence[Config],
                 table: LatencyTable | None = None) -> tuple[list[str], np.ndarray]:
    """Summed table time first (the lut predictor's base), then the per-slot table times."""
    table = table or load_table(ctx, metric)
    slots = ctx.family.cost_slots(ctx.space)
    index = {slot: k for k, slot in enumerate(slots)}
    X = np.zeros((len(configs), 1 + len(slots)))
    for i, config in enumerate(configs):
        for cost in ctx.family.layer_costs(ctx.space, config):
            X[i, 1 + index[cost.slot]] = table.time_ms(cost)
        X[i, 0] = X[i, 1:].sum()
    return ["lut_sum"] + [f"lut.{slot}" for slot in slots], X

