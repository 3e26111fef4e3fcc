"""Per-layer latency lookup table, measured once per device: every distinct unit (kind, shape,
weight and input bits) the space can produce is extracted, compiled alone at the target batch and
timed with the same harness as whole subnets. `lut_features` turns a config into its per-slot
table times and their sum, the input of the `lut` latency predictor.

Families take part through two methods. `family.lut_units(space, config)` lists the config's
units (`supernets.costs.LutUnit`: slot, kind, shape, bits, MACs), cheaply and without a model;
a unit is a fused kernel in nn-Meter's sense (MLP: a dense layer with its ReLU; CNN: the stem,
each inverted-residual block, pooling + head; transformer: the patch embedding, each encoder
layer, pooling + norm + head) and its `key` is what its time depends on, so equal blocks in
different slots share one entry. `family.unit_modules(subnet, space, config)` pairs those units
with the modules of the extracted (recalibrated) subnet and their per-example input shapes;
run in order, each on the previous output reshaped to its input shape, they compute the subnet.
This module uses nothing else of a family."""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from nas.calibrate import extract_subnet
from nas.context import Context
from nas.errors import NasError, StageError
from nas.io import append_jsonl, finite_number, read_jsonl
from nas.latency import compile_program, device_profile, spread_by_rank, target_device
from nas.measure import MAX_MS, deployed_form, machine_changes, time_chunk
from nas.progress import progress
from search_spaces import Config, config_key
from supernets.costs import LutUnit

ENUMERATION_SAMPLES = 4096  # random configs scanned for unit keys, besides largest and smallest
CHUNK = 32  # units compiled, then timed in interleaved rounds, before their entries are written
# Both time the units a table lacks: measure while its stage is unfinished, fit (forced) once it is done.
REPAIR = "`nas measure` times the missing units, or `nas fit --force` once the run is measured"
_checked: set[tuple[Path, int]] = set()  # table versions found whole


def entry_key(unit: LutUnit) -> str:
    """Table key of a unit: what its time depends on (kind, shape, bits), not where it sits."""
    return unit.key


def supports_lut(family: Any) -> bool:
    """Whether the family lists its units and hands out their extracted modules (`lut_units`, `unit_modules`)."""
    return all(callable(getattr(family, name, None)) for name in ("lut_units", "unit_modules"))


def lut_slots(ctx: Context) -> list[str]:
    """Every unit slot a config can use, in order (the largest config uses them all)."""
    return [u.slot for u in ctx.family.lut_units(ctx.space, ctx.space.largest())]


def table_path(ctx: Context, metric: str) -> Path:
    """Where the table of latency target `metric` (e.g. latency_ms@b1) is kept."""
    return ctx.path("measure", f"lut{metric[len('latency_ms'):]}.jsonl")


def space_layers(ctx: Context) -> dict[str, Config]:
    """Every unit key the space produces (found on largest, smallest and seeded random configs),
    each with one config that contains it (keys of one config are adjacent)."""
    rng = np.random.default_rng([ctx.exp.measure.seed, 23])
    found: dict[str, Config] = {}
    configs = [ctx.space.largest(), ctx.space.smallest()] + [ctx.space.sample(rng) for _ in range(ENUMERATION_SAMPLES)]
    for config in configs:
        for unit in ctx.family.lut_units(ctx.space, config):
            found.setdefault(entry_key(unit), config)
    return found


def unit_modules(ctx: Context, model: nnx.Module, config: Config) -> list[tuple[LutUnit, nnx.Module, tuple[int, ...]]]:
    """The units of `config` with the modules of its extracted, recalibrated subnet and input shapes."""
    return ctx.family.unit_modules(extract_subnet(ctx, model, config), ctx.space, config)


def _unit_program(ctx: Context, module: nnx.Module, input_shape: tuple[int, ...], batch: int,
                  device: jax.Device) -> Any:
    graphdef, params = nnx.split(deployed_form(ctx, module))
    x = jnp.asarray(np.random.default_rng(0).uniform(0, 1, (batch, *input_shape)).astype(np.float32))
    m = ctx.exp.measure
    return compile_program(lambda p, v: nnx.merge(graphdef, p)(v), params, x, device=device, warmup=m.warmup,
                           min_time_ms=m.min_time_ms, host_calls=False)  # a unit's time is its loop's


def measure_table(ctx: Context, model: nnx.Module | None, metric: str, device_kind: str, batch: int, *,
                  quiet: bool = False) -> dict[str, float]:
    """Time every unit key of the space not yet in the table of `metric` (resumable), return key -> ms;
    the supernet is loaded only when something is left to time and no `model` is given."""
    if not supports_lut(ctx.family):
        raise NasError(f"predictors.latency = 'lut': family '{ctx.family.name}' cannot time its units alone")
    path = table_path(ctx, metric)
    table, _ = read_lut(path)
    todo = units_left(ctx, table)
    if not todo:
        return table
    if model is None:
        from nas.train import load_supernet

        model = load_supernet(ctx)
    device = target_device(device_kind, ctx.exp.measure.device_setting(metric))
    _refuse_another_machine(ctx, metric, device, batch)
    m = ctx.exp.measure
    extracted: tuple[str, list[tuple[LutUnit, nnx.Module, tuple[int, ...]]]] = ("", [])

    def program(key: str, config: Config) -> tuple[LutUnit, Any]:
        nonlocal extracted
        if extracted[0] != config_key(config):  # one extraction serves the keys of its config
            extracted = (config_key(config), unit_modules(ctx, model, config))
        unit, module, shape = next(x for x in extracted[1] if entry_key(x[0]) == key)
        return unit, _unit_program(ctx, module, shape, batch, device)

    # A resumed table is finished in another session than its first rows: some of those rows, re-timed
    # with every chunk, put the new ones in their units (as nas.measure does for whole subnets).
    layers = space_layers(ctx)
    timed = [k for k in table if k in layers]
    anchors = [(program(timed[i], layers[timed[i]])[1], table[timed[i]])
               for i in spread_by_rank([table[k] for k in timed], m.anchors)] if timed and m.anchors else []
    with progress(f"layer table {metric}", total=len(todo), quiet=quiet) as bar:
        for start in range(0, len(todo), CHUNK):
            chunk, programs, units = todo[start : start + CHUNK], [], []
            for key, config in chunk:
                unit, compiled = program(key, config)
                programs.append(compiled)
                units.append(unit)
                bar.update(start + len(programs), info="compiling")
            timings = time_chunk(m, programs, anchors, as_reference=not anchors and m.anchors > 0)
            for unit, timing in zip(units, timings):
                table[unit.key] = timing.median_ms
                append_jsonl(path, {"key": unit.key, "ms": timing.median_ms, "iqr_ms": timing.iqr_ms,
                                    "macs": unit.macs})
            if not anchors and m.anchors:
                # Later chunks re-time some of the first chunk's units and take its units (see
                # nas.measure.measure_configs: the machine's speed moves between chunks).
                keep = spread_by_rank([t.median_ms for t in timings], m.anchors)
                anchors = [(programs[i], timings[i].median_ms) for i in keep]
    return table


def units_left(ctx: Context, table: dict[str, float]) -> list[tuple[str, Config]]:
    """The unit keys of the space (each with a config that has it) that `table` has no time for."""
    return [(k, c) for k, c in space_layers(ctx).items() if k not in table]


def check_tables_machine(ctx: Context) -> None:
    """NasError when a layer table with units left to time was begun on another machine or XLA setup
    (said before `nas fit --force` removes the fit folder, not after)."""
    if ctx.exp.predictors.latency != "lut" or not supports_lut(ctx.family):
        return
    for metric, device_kind, batch in ctx.exp.measure.latency_targets():
        if units_left(ctx, read_lut(table_path(ctx, metric))[0]):
            device = target_device(device_kind, ctx.exp.measure.device_setting(metric))
            _refuse_another_machine(ctx, metric, device, batch)


def _refuse_another_machine(ctx: Context, metric: str, device: jax.Device, batch: int) -> None:
    # The table's correction is fitted on the whole-subnet latencies measure took: units timed on another
    # machine or XLA setup (`nas fit` run elsewhere, say) would mix two machines' times unseen.
    changed = machine_changes(ctx.path("measure"), {metric: {"batch_size": batch, **device_profile(device)}})
    if changed:
        raise NasError(f"the per-layer latency table has units left to time, but the run was measured on another "
                       f"machine or setup ({'; '.join(changed)}); finish it where it was measured, or run "
                       "`nas measure --force` here")


def ensure_tables(ctx: Context, model: nnx.Module | None = None, *, quiet: bool = False) -> None:
    """Complete the table of every latency target when the experiment predicts latency with `lut`
    (measure does it; fit does it too, for a run measured before `lut` was chosen)."""
    if ctx.exp.predictors.latency == "lut":
        for metric, device, batch in ctx.exp.measure.latency_targets():
            measure_table(ctx, model, metric, device, batch, quiet=quiet)


class LatencyTable:
    """Looked-up unit times; a key the table lacks is estimated from its kind's entries (log time
    against log MACs and whether weights / inputs are quantised), so configs beyond the enumerated
    ones still get a prediction. `macs` gives each entry's MACs (a dense entry may lack it: the product
    of its shape, for tables written before entries recorded them)."""

    def __init__(self, entries: dict[str, float], macs: dict[str, int] | None = None):
        if not entries:
            raise NasError("the per-layer latency table is empty (run `nas measure`)")
        self.entries, macs = dict(entries), macs or {}
        lacking = [k for k in self.entries if k not in macs and not k.startswith("dense|")]
        if lacking:  # only a dense unit's shape is its MACs (a CNN key's holds stride and flags too)
            raise NasError(f"per-layer latency table entry {lacking[0]}: its MACs are needed (not a dense unit)")
        self.macs = {k: int(macs[k]) if k in macs else shape_macs(k)
                     for k in self.entries}
        self._fits: dict[str, np.ndarray] = {}

    @staticmethod
    def _row(macs: float, w_bits: int, a_bits: int) -> list[float]:
        return [1.0, np.log1p(macs), float(w_bits < 32), float(a_bits < 32)]

    def _estimate(self, unit: LutUnit) -> float:
        kind = unit.kind
        if kind not in self._fits:
            rows, y = [], []
            for key, ms in self.entries.items():
                k, _, w, a = key.split("|")
                if k == kind:
                    rows.append(self._row(self.macs[key], int(w[1:]), int(a[1:])))
                    y.append(np.log(ms))
            if not rows:
                raise NasError(f"the per-layer latency table has no '{kind}' unit to estimate from")
            self._fits[kind] = np.linalg.lstsq(np.array(rows, float), np.array(y), rcond=None)[0]
        return float(np.exp(self._fits[kind] @ self._row(unit.macs, unit.bits, unit.a_bits)))

    def time_ms(self, unit: LutUnit) -> float:
        """The table's time for one unit (estimated when the table lacks its key)."""
        ms = self.entries.get(entry_key(unit))
        return ms if ms is not None else self._estimate(unit)


UNIT_KEY = re.compile(r"\w+\|(?:\d+(?:x\d+)*)?\|w\d+\|a\d+")  # LutUnit.key: kind|shape|w<bits>|a<bits>
MAX_MACS = 10**18  # far past any one layer's; bounds what the log-MACs fit reads (10**400 broke it)


def shape_macs(key: str) -> int:
    """The MACs a dense unit's key gives: the product of its shape (exact: numpy's int64 product wraps)."""
    dims = [v for v in key.split("|")[1].split("x") if v]
    if any(len(v) > 18 for v in dims):  # past MAX_MACS already, and int() refuses over 4,300 digits
        return MAX_MACS + 1
    return math.prod(int(v) for v in dims)


def read_lut(path: Path) -> tuple[dict[str, float], dict[str, int]]:
    """(key -> ms, key -> MACs) of a per-layer table file, each row checked (StageError naming the line)."""
    ms, macs = {}, {}
    for i, row in enumerate(read_jsonl(path), start=1):
        t = finite_number(row.get("ms")) if isinstance(row, dict) else None
        if (t is None or not 0 < t <= MAX_MS or not isinstance(row.get("key"), str)
                or not UNIT_KEY.fullmatch(row["key"])):
            raise StageError(f"{path} line {i}: expected an object with a 'key' (KIND|AxB...|wBITS|aBITS) and a "
                             f"time 'ms' above 0 and at most {MAX_MS:g} (remove the line, or the file; {REPAIR})")
        macs_i = row.get("macs", shape_macs(row["key"]) if row["key"].startswith("dense|") else 0)
        if not isinstance(macs_i, int) or isinstance(macs_i, bool) or not 0 <= macs_i <= MAX_MACS:
            shown = "above 1e+18" if isinstance(macs_i, int) and macs_i > MAX_MACS else repr(macs_i)[:40]
            raise StageError(f"{path} line {i}: the MACs are {shown}, expected a count from 0 to {MAX_MACS:.0e} "
                             f"(remove the line, or the file; {REPAIR})")
        if "macs" not in row and not row["key"].startswith("dense|"):
            continue  # written before entries recorded MACs, which only a dense key's shape gives: timed again
        ms[row["key"]] = t
        if "macs" in row:
            macs[row["key"]] = row["macs"]
    return ms, macs


@functools.lru_cache(maxsize=8)
def _cached_table(path: Path, mtime_ns: int) -> LatencyTable:
    return LatencyTable(*read_lut(path))


def load_table(ctx: Context, metric: str) -> LatencyTable:
    """The measured table of latency target `metric`, which must hold every unit of the space (read and
    checked once per file version: search calls often)."""
    path = table_path(ctx, metric)
    if not path.is_file():
        raise StageError(f"no per-layer latency table at {path} ({REPAIR})")
    version = (path, path.stat().st_mtime_ns)
    table = _cached_table(*version)
    if version not in _checked:
        # A table cut or edited after its stage finished would have its lost units estimated, silently
        # moving predicted latency (by up to 16 % in a review's test): refused instead.
        missing = [k for k in space_layers(ctx) if k not in table.entries]
        if missing:
            raise StageError(f"{path} lacks {len(missing)} unit(s) of the space, e.g. {missing[0]} (cut or edited "
                             f"since it was written; {REPAIR})")
        _checked.add(version)
    return table


def lut_features(ctx: Context, metric: str, configs: Sequence[Config],
                 table: LatencyTable | None = None) -> tuple[list[str], np.ndarray]:
    """Summed table time first (the lut predictor's base), then the per-slot table times (0 where unused)."""
    table = table or load_table(ctx, metric)
    slots = lut_slots(ctx)
    index = {slot: k for k, slot in enumerate(slots)}
    X = np.zeros((len(configs), 1 + len(slots)))
    for i, config in enumerate(configs):
        for unit in ctx.family.lut_units(ctx.space, config):
            X[i, 1 + index[unit.slot]] = table.time_ms(unit)
        X[i, 0] = X[i, 1:].sum()
    return ["lut_sum"] + [f"lut.{slot}" for slot in slots], X

