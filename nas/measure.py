"""Measure subnets: validation accuracy (supernet, equal to the extracted net), latency of the
EXTRACTED subnet compiled by XLA for the target device, and exact size. Resumable row by row."""

from __future__ import annotations

import json
import os
import reprlib
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from nas.batching import over_configs, resolve
from nas.calibrate import calibration_inputs, extract_subnet
from nas.config import MeasureConfig
from nas.context import Context
from nas.data import load_data
from nas.errors import ConfigError, StageError
from nas.interrupts import raise_if_interrupted
from nas.io import append_jsonl, finite_number, read_json, read_jsonl, write_bytes, write_json
from nas.latency import (
    Program,
    Timing,
    compile_program,
    device_profile,
    spread_by_rank,
    target_device,
    time_reference,
    time_with_anchors,
    use_compilation_cache,
)
from nas.progress import progress
from search_spaces import Config, config_key
from supernets.lowbit import use_integer_kernels

ACCURACY_CHUNK = 16  # most configs evaluated per vmapped call: one compile serves every chunk
TIMING_CHUNK = 32  # configs compiled, then timed in interleaved rounds, before their rows are written


def even_slices(n: int, most: int) -> tuple[int, int]:
    """(size, count) of the fewest slices of at most `most` that cover `n` items, sized as evenly as
    possible (at least one slice, of at least one item)."""
    count = max(1, -(-n // max(most, 1)))
    return max(1, -(-n // count)), count


def accuracy_plan(n_examples: int, calibration: int, in_flight: int) -> tuple[int, int, int]:
    """(configs per call, examples per slice, slices): configs x max(slice, calibration images) stays
    within `in_flight` examples (at least one config and one example per call), slices even."""
    configs = int(np.clip(in_flight // max(calibration, 1), 1, ACCURACY_CHUNK))
    return configs, *even_slices(n_examples, in_flight // configs)


@partial(jax.jit, static_argnums=(0, 1))
def _correct(graphdef: Any, batching: str, state: Any, active: dict[str, jax.Array], xs: jax.Array, ys: jax.Array,
             valid: jax.Array, x_cal: jax.Array | None) -> jax.Array:
    """Examples each stacked config gets right over (slices, slice, ...) inputs; one compile per supernet."""

    def count(a: dict[str, jax.Array]) -> jax.Array:
        m = nnx.merge(graphdef, state, copy=True)  # merged per config: calibration writes this copy only
        if x_cal is not None:
            m(x_cal, active=a, mode="calibrate")
        calibrated_def, calibrated_state = nnx.split(m)

        def right(batch: tuple[jax.Array, jax.Array, jax.Array]) -> jax.Array:
            xb, yb, vb = batch
            logits = nnx.merge(calibrated_def, calibrated_state)(xb, active=a)
            return jnp.sum((logits.argmax(-1) == yb) & vb)

        # Slices one after another: a whole validation set at once, times every config in the call,
        # asked 30 GB for 400 CIFAR-sized images on a MobileNet supernet (benchmarks/RESULTS.md).
        return jax.lax.map(right, (xs, ys, valid)).sum()

    return over_configs(count, active, batching, unroll=False)


def accuracy_many(ctx: Context, model: nnx.Module, configs: Sequence[Config], x: np.ndarray,
                  y: np.ndarray) -> np.ndarray:
    """Accuracy of each config on (x, y), with the masked supernet vmapped over configs (each
    config's statistics recalibrated first, see nas.calibrate), `measure.eval_batch_size` examples
    in flight at most."""
    graphdef, state = nnx.split(model)
    x_cal = calibration_inputs(ctx, model)
    batching = resolve(ctx.exp.train.sandwich_batching, ctx.family)
    per_call, per_slice, slices = accuracy_plan(len(x), 0 if x_cal is None else len(x_cal),
                                                ctx.exp.measure.eval_batch_size)
    pad = slices * per_slice - len(x)
    xs = jnp.asarray(np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)]).reshape(slices, per_slice,
                                                                                            *x.shape[1:]))
    ys = jnp.asarray(np.concatenate([y, np.zeros(pad, y.dtype)]).reshape(slices, per_slice))
    valid = jnp.asarray((np.arange(slices * per_slice) < len(x)).reshape(slices, per_slice))
    out = []
    for i in range(0, len(configs), per_call):
        chunk = list(configs[i : i + per_call])
        padded = chunk + [chunk[-1]] * (per_call - len(chunk))
        right = _correct(graphdef, batching, state, ctx.family.active(ctx.space, padded), xs, ys, valid, x_cal)
        out.extend((np.asarray(right)[: len(chunk)] / max(len(x), 1)).tolist())
    return np.array(out, np.float64)


COUNTED = ("size_kb", "macs", "flops", "peak_act_kb")  # what exact_metrics gives each row


def exact_metrics(ctx: Context, config: Config) -> dict[str, float]:
    """Metrics counted, not measured: size at the chosen bit-widths and MACs."""
    macs = ctx.family.macs(ctx.space, config)
    return {"size_kb": ctx.family.size_bytes(ctx.space, config) / 1024.0, "macs": macs, "flops": 2 * macs,
            "peak_act_kb": ctx.family.peak_activation_bytes(ctx.space, config) / 1024.0}


def deployed_form(ctx: Context, module: nnx.Module) -> nnx.Module:
    """The extracted module as it is timed: on int8 kernels (what the integer export runs) unless
    `measure.kernels = "fake"` keeps the float fake-quant arithmetic."""
    return use_integer_kernels(module) if ctx.exp.measure.kernels == "int" else module


def subnet_program(ctx: Context, model: nnx.Module, config: Config, device: jax.Device,
                   batch_size: int | None = None, host_calls: bool | None = None) -> Program:
    """The extracted subnet of `config`, compiled in a timing loop (default: the measurement batch), and
    alone for host calls when `host_calls` (default: [measure] end_to_end)."""
    m = ctx.exp.measure
    graphdef, params = nnx.split(deployed_form(ctx, extract_subnet(ctx, model, config)))
    shape = (batch_size or m.batch_size, ctx.space.meta["n_features"])
    x = np.random.default_rng(0).uniform(0, 1, shape).astype(np.float32)
    return compile_program(lambda p, v: nnx.merge(graphdef, p)(v), params, jnp.asarray(x), device=device,
                           warmup=m.warmup, min_time_ms=m.min_time_ms,
                           host_calls=m.end_to_end if host_calls is None else host_calls)


def compilation_cache_folder(ctx: Context) -> Path | None:
    """The persistent XLA cache's folder (beside the runs unless configured; None when "off"),
    created, or ConfigError when it cannot be written: jax only warns, then compiles every subnet anew."""
    where = ctx.exp.measure.compile_cache
    if where == "off":
        return None
    folder = Path(where) if where else ctx.run_dir.parent / ".xla-cache"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        if where:
            raise ConfigError("measure.compile_cache", f"{str(folder)!r} cannot hold the XLA cache "
                              f"({e.strerror or e}); name another folder, or \"off\"") from None
        # Not the user's setting: a read-only or full disk under the runs, which the stage cannot write either.
        raise StageError(f"cannot write {folder}, the XLA cache beside the run directory ({e.strerror or e}): "
                         f"{ctx.run_dir.parent} must be writable to run a stage (or set measure.compile_cache "
                         "to another folder)") from None
    return folder


def enable_compilation_cache(ctx: Context) -> None:
    """Point XLA's persistent cache at the experiment's folder (see `compilation_cache_folder`)."""
    folder = compilation_cache_folder(ctx)
    if folder is not None:
        use_compilation_cache(folder)


def compile_subnets(ctx: Context, model: nnx.Module, configs: Sequence[Config], device: jax.Device, batch: int,
                    on_compiled: Callable[[int], None] = lambda n: None,
                    host_calls: bool | None = None) -> list[Program]:
    """Each config's extracted subnet compiled in a timing loop for `device` (see `subnet_program`)."""
    programs = []
    for config in configs:
        raise_if_interrupted()  # a Ctrl-C swallowed in a gc callback stops here, between compiles
        programs.append(subnet_program(ctx, model, config, device, batch, host_calls))
        on_compiled(len(programs))
    return programs


def time_subnets(ctx: Context, model: nnx.Module, configs: Sequence[Config], device: jax.Device, batch: int,
                 on_compiled: Callable[[int], None] = lambda n: None,
                 anchors: Sequence[tuple[Program, float]] = (), as_reference: bool = False) -> list[Any]:
    """Compile each config's extracted subnet for `device`, then time them all in interleaved rounds:
    with `anchors`, in the reference's units (`nas.latency.time_with_anchors`); `as_reference`: twice,
    keeping the faster median (`nas.latency.time_reference`)."""
    programs = compile_subnets(ctx, model, configs, device, batch, on_compiled)
    return time_chunk(ctx.exp.measure, programs, anchors, as_reference=as_reference, e2e=ctx.exp.measure.end_to_end)


def time_chunk(m: MeasureConfig, programs: list[Program], anchors: Sequence[tuple[Program, float]] = (), *,
               as_reference: bool = False, e2e: bool = False) -> list[Timing]:
    """One chunk of compiled programs timed with the [measure] settings: twice as a reference, else in the
    units of `anchors` (timed again while they disagree); whole subnets and layer-table units alike."""
    options = dict(max_rounds=m.max_repeats, rel_tol=m.stable_rel, e2e=e2e)
    if as_reference:
        return time_reference(programs, m.repeats, **options)
    return time_with_anchors(programs, anchors, m.repeats, retries=m.anchor_retries, tolerance=m.anchor_tolerance,
                             **options)


def pick_anchors(rows: Sequence[dict[str, Any]], n: int, metric: str = "latency_ms") -> list[dict[str, Any]]:
    """Up to `n` rows timed for `metric`, spread evenly by rank over its range (re-timed by later chunks)."""
    timed = [r for r in rows if metric in r]
    return [timed[i] for i in spread_by_rank([r[metric] for r in timed], n)]


def measure_configs(ctx: Context, model: nnx.Module, configs: Sequence[Config], x_val: np.ndarray | None,
                    y_val: np.ndarray | None, *, on_row: Callable[[dict[str, Any]], None], quiet: bool = False,
                    label: str = "measure", reference: Sequence[dict[str, Any]] = ()) -> list[dict[str, Any]]:
    """One table row per config (accuracy, latency on every target, size), handed to `on_row` a chunk at a time.

    Chunks are timed one after another, each in its own interleaved rounds, and the machine's speed
    moves between them (one chunk of the quickstart's table ran 38 % slow, benchmarks/RESULTS.md). So
    every chunk re-times `measure.anchors` rows of a reference in the same rounds, is timed again
    while they disagree with it (`anchor_retries`, `anchor_tolerance`) and is expressed in its units
    (`latency_session_scale`). The reference: the `reference` rows (an earlier session's table) when
    given, else this call's first chunk, timed twice for it (`nas.latency.time_reference`).
    With `x_val` None the rows hold no accuracy (latency-only benchmarks on an untrained supernet).
    """
    enable_compilation_cache(ctx)
    cfg = ctx.exp.measure
    targets = [(metric, target_device(device, cfg.device_setting(metric)), batch)
               for metric, device, batch in cfg.latency_targets()]
    anchors: dict[str, list[tuple[Program, float]]] = {}
    rows: list[dict[str, Any]] = []
    with progress(label, total=len(configs), quiet=quiet) as bar:
        for start in range(0, len(configs), TIMING_CHUNK):
            chunk = list(configs[start : start + TIMING_CHUNK])
            accs = accuracy_many(ctx, model, chunk, x_val, y_val) if x_val is not None else [None] * len(chunk)
            chunk_rows = [{"key": config_key(c), "config": c, **({} if a is None else {"accuracy": float(a)}),
                           **exact_metrics(ctx, c)} for c, a in zip(chunk, accs)]
            for metric, device, batch in targets:
                if metric not in anchors and reference:  # compiled once, timed again with every chunk
                    picked = pick_anchors(reference, cfg.anchors, metric)
                    programs = compile_subnets(ctx, model, [r["config"] for r in picked], device, batch,
                                               host_calls=False)  # an anchor's host time is never used
                    anchors[metric] = [(p, r[metric]) for p, r in zip(programs, picked)]
                timings = time_subnets(ctx, model, chunk, device, batch,
                                       lambda n, m=metric, s=start: bar.update(s + n, info=f"compiling {m}"),
                                       anchors=anchors.get(metric, []), as_reference=not reference and cfg.anchors > 0)
                for row, timing in zip(chunk_rows, timings):
                    row.update(timing.as_row(metric))
            for row in chunk_rows:
                on_row(row)
                rows.append(row)
            reference = reference or chunk_rows
            bar.update(start + len(chunk), info=f"{len(rows)} measured")
    return rows


def sample_configs(ctx: Context) -> list[Config]:
    """Largest, smallest and `measure.samples` distinct random configs (seeded)."""
    rng = np.random.default_rng([ctx.exp.measure.seed, 7])
    picked = {config_key(c): c for c in (ctx.space.largest(), ctx.space.smallest())}
    target = min(ctx.exp.measure.samples + len(picked), ctx.space.size())
    while len(picked) < target:
        c = ctx.space.sample(rng)
        picked.setdefault(config_key(c), c)
    return list(picked.values())


def repeatability(ctx: Context, model: nnx.Module, rows: Sequence[dict[str, Any]], *, count: int | None = None,
                  quiet: bool = False) -> dict[str, Any]:
    """Time the first `count` (default `measure.repeatability`) rows again in an independent pass (fresh
    compiles, later in time) and report, per latency target, the share whose medians agree within ±5 / ±10 %.

    The pass is timed like every later timing session of the harness (front validation, refit
    rounds): in the table's units through anchors, here drawn only from the *other* rows so that no
    checked row vouches for itself. The headline shares are of those numbers, the ones a later
    session reports; `unanchored` gives the same shares before the anchor scale (machine drift
    between the sessions included)."""
    rows = list(rows)
    checked = rows[: ctx.exp.measure.repeatability if count is None else count]
    out: dict[str, Any] = {"configs": len(checked)}
    if len(checked) < 2:
        return out

    def shares(now: np.ndarray, first: np.ndarray) -> dict[str, float]:
        rel = np.abs(now - first) / first
        return {"within_5pct": float(np.mean(rel <= 0.05)), "within_10pct": float(np.mean(rel <= 0.10)),
                "median_rel_diff": float(np.median(rel))}

    with progress("repeatability", total=len(checked), quiet=quiet) as bar:
        for metric, device, batch in ctx.exp.measure.latency_targets():
            dev = target_device(device, ctx.exp.measure.device_setting(metric))
            picked = pick_anchors(rows[len(checked):], ctx.exp.measure.anchors, metric)
            anchors = list(zip(compile_subnets(ctx, model, [r["config"] for r in picked], dev, batch, host_calls=False),
                               [r[metric] for r in picked]))
            timings = time_subnets(ctx, model, [r["config"] for r in checked], dev, batch,
                                   lambda n, m=metric: bar.update(n, info=f"recompiling {m}"), anchors=anchors)
            first = np.array([r[metric] for r in checked])
            now = np.array([t.median_ms for t in timings])
            scale = timings[0].session_scale or 1.0
            out[metric] = {**shares(now, first), "anchors": len(anchors), "session_scale": scale,
                           "unanchored": shares(now / scale, first)}
    return out


POOR_REPEATABILITY = 0.5  # share within +-10 % below which the latencies are said to be unreliable


def repeatability_notes(ctx: Context, agreement: dict[str, Any]) -> list[str]:
    """A plain warning per latency target whose second timing pass mostly disagreed with the first:
    predictors fitted on such latencies learn noise, and nothing later would say so."""
    notes = []
    for metric, _, _ in ctx.exp.measure.latency_targets():
        share = (agreement.get(metric) or {}).get("within_10pct")
        if isinstance(share, float) and share < POOR_REPEATABILITY:
            notes.append(f"{metric}: a second timing pass agreed within ±10 % for only {share:.0%} of "
                         f"{agreement['configs']} subnets (measure/repeatability.json): the machine was busy, or "
                         f"measure.min_time_ms ({ctx.exp.measure.min_time_ms:g}) is too short to amortise "
                         "per-call overhead (10 ms gave 88-98 % on a 2-core CPU)")
    return notes


def measure(ctx: Context, *, quiet: bool = False) -> dict[str, Any]:
    """The measure stage: resumes from its partial table, renames it complete, stamps done."""
    from nas.train import load_supernet

    cfg = ctx.exp.measure
    # A missing device is said before anything is loaded or begun (the stage's folder emptied).
    devices = {metric: (target_device(device, cfg.device_setting(metric)), batch)
               for metric, device, batch in cfg.latency_targets()}
    enable_compilation_cache(ctx)  # before the device profile, which records whether it is on
    model = load_supernet(ctx)
    splits = load_data(ctx.exp.data)
    folder = ctx.begin("measure")
    partial, final = folder / "table.partial.jsonl", folder / "table.jsonl"
    if final.is_file() and not partial.exists():
        # A whole table of these inputs without its stamp (a crash between the rename below and the stamp,
        # an output removed since): its rows are resumed like a partial table's, not all measured again.
        os.replace(final, partial)
    profiles = {metric: {"batch_size": batch, **device_profile(dev)} for metric, (dev, batch) in devices.items()}
    forget_other_machines_work(folder, profiles)
    write_json(folder / "device.json", profiles)
    earlier = resumable_rows(ctx, partial)
    done = {r["key"] for r in earlier}
    todo = [c for c in sample_configs(ctx) if config_key(c) not in done]
    t0 = time.time()
    # A resumed stage times in another session than its first rows: anchors put all in their units.
    measure_configs(ctx, model, todo, splits.x_val, splits.y_val, on_row=lambda r: append_jsonl(partial, r),
                    quiet=quiet, reference=earlier)
    rows = read_jsonl(partial)
    from nas.lut import ensure_tables  # nas.lut times layers with this module's deployed form

    ensure_tables(ctx, model, quiet=quiet)
    agreement = repeatability(ctx, model, rows, quiet=quiet)
    write_json(ctx.path("measure", "repeatability.json"), agreement)
    for note in repeatability_notes(ctx, agreement):
        print(f"note: {note}", file=sys.stderr)
    summary = {"rows": len(rows), "resumed_rows": len(done), "wall_s": round(time.time() - t0, 2),
               "accuracy_range": [min(r["accuracy"] for r in rows), max(r["accuracy"] for r in rows)],
               "latency_ms_range": [min(r["latency_ms"] for r in rows), max(r["latency_ms"] for r in rows)],
               "repeatability": agreement}
    os.replace(partial, final)  # after everything that could still fail: the rows stay resumable till then
    ctx.mark_done("measure", summary)
    return summary


def load_table(ctx: Context) -> list[dict[str, Any]]:
    """The measurement table of a finished measure stage (StageError naming the first bad row)."""
    ctx.require("measure")
    path = ctx.path("measure", "table.jsonl")
    rows = read_measured_rows(ctx, path, "nas measure --force", complete=True)
    first: dict[str, int] = {}
    for i, row in enumerate(rows, start=1):  # the stage writes each subnet once; a copied line is an edit
        if first.setdefault(row["key"], i) != i:
            raise StageError(f"{path} line {i}: repeats the subnet of line {first[row['key']]} (it would sit "
                             "in the fit's training and held-out rows at once); re-run `nas measure --force`")
    stamp = read_json(ctx.path("measure", "stamp.json"), "measure stamp")
    expected = stamp.get("rows") if isinstance(stamp, dict) else None
    if isinstance(expected, int) and len(rows) != expected:  # whole lines lost after the stage ended
        raise StageError(f"{path}: {len(rows)} rows, but the measure stage wrote {expected} "
                         "(re-run `nas measure --force`)")
    return rows


def read_measured_rows(ctx: Context, path: Path, redo: str, *, complete: bool = False) -> list[dict[str, Any]]:
    """Rows of a JSON-lines file of measured subnets, each checked (StageError naming the first bad
    row and the command `redo` that writes the file again); `complete` as in `read_jsonl`."""
    return check_measured_rows(ctx, read_jsonl(path, complete=complete, redo=redo if complete else None), path, redo)


def check_measured_rows(ctx: Context, rows: Any, path: Path, redo: str, unit: str = "line") -> list[dict[str, Any]]:
    """`rows` (read from `path`) if it is a list of measured subnets, else a StageError naming the file,
    the first bad row (`unit` and number) and the command `redo` that writes the file again."""
    from nas.features import predicted_metrics

    if not isinstance(rows, list):
        raise StageError(f"{path}: expected a list of measured subnets (re-run `{redo}`)")
    needed = predicted_metrics(ctx)
    for i, row in enumerate(rows, start=1):
        problem = row_problem(ctx, row, needed)
        if problem:
            raise StageError(f"{path} {unit} {i}: {problem}; re-run `{redo}`")
    return rows


def row_problem(ctx: Context, row: Any, needed: Sequence[str]) -> str | None:
    """What makes `row` no measured subnet of this space with the `needed` metrics (None if nothing)."""
    if not isinstance(row, dict) or not isinstance(row.get("key"), str):
        return "expected an object with a 'key' and a 'config'"
    try:
        ctx.space.validate(row.get("config"))
    except ConfigError as e:
        return str(e)
    if config_key(row["config"]) != row["key"]:
        return "its config is not the one its key names"
    for metric in needed:
        value = finite_number(row.get(metric))
        if value is None:
            return f"{metric} is {reprlib.repr(row.get(metric))}, expected a finite number"
        if not _plausible(metric, value):
            return f"{metric} is {value!r}, which no measurement gives ({_PLAUSIBLE[metric.partition('@')[0]]})"
    # The counted ones too: a row lacking one passed here and broke the search after its trials.
    for metric in COUNTED:
        value = finite_number(row.get(metric))
        if value is None or value < 0:
            return f"{metric} is {reprlib.repr(row.get(metric))}, expected a count >= 0 (its config's)"
    return None


# What a timing depends on besides the subnet: a partial table taken where any of them differed is
# not resumed (the date and the compilation cache's folder change nothing).
_MACHINE = ("batch_size", "device", "platform", "host", "cpu_count", "jax", "jaxlib", "xla_flags")


def machine_changes(folder: Path, profiles: dict[str, dict[str, Any]]) -> list[str]:
    """How the machine and software `profiles` describe differ from those `folder`'s device.json records
    ("metric: field old -> new", sorted); none when it is missing or damaged (nothing to compare with)."""
    try:
        before = json.loads((folder / "device.json").read_text())
    except (OSError, ValueError, RecursionError):
        return []
    if not isinstance(before, dict):
        return []
    return sorted({f"{metric}: {field} {old.get(field)!r} -> {now.get(field)!r}"
                   for metric, now in profiles.items() if isinstance(old := before.get(metric), dict)
                   for field in _MACHINE if old.get(field) != now.get(field)})


def forget_other_machines_work(folder: Path, profiles: dict[str, dict[str, Any]]) -> None:
    """Remove the partial latency work of `folder` (the subnet table, the layer tables) when its
    device.json says it was timed on another machine or software than `profiles` describe: anchors
    rescale one machine's drift between sessions, not one device's times into another's (latency is
    not proportional across devices), so a copied run directory resumed elsewhere starts over."""
    changed = machine_changes(folder, profiles)
    partial_work = [f for f in (folder / "table.partial.jsonl", *folder.glob("lut*.jsonl")) if f.is_file()]
    if not changed or not partial_work:
        return
    for f in partial_work:
        f.unlink()
    print(f"note: the partial measurements in {folder} were taken elsewhere ({changed[0]}"
          f"{f' and {len(changed) - 1} more' if len(changed) > 1 else ''}); they are measured again here, "
          "as latencies of two machines are not mixed", file=sys.stderr)


def resumable_rows(ctx: Context, partial: Path) -> list[dict[str, Any]]:
    """The rows of a partial table a resumed stage can build on: a damaged one (a line cut or edited
    since, a value no measurement gives) is dropped, said once, and measured again."""
    from nas.features import predicted_metrics

    if not partial.is_file():
        return []
    needed, kept, dropped, repeated = predicted_metrics(ctx), {}, 0, 0
    for line in partial.read_bytes().decode("utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except (ValueError, RecursionError):  # an integer of over 4,300 digits, or nested past the parser
            row = None
        if row_problem(ctx, row, needed) is not None or row["key"] != config_key(row["config"]):
            dropped += 1
        elif row["key"] in kept:
            # A row written twice (a copy, or a crash between append and rename) would be a
            # subnet measured twice in the table.
            repeated += 1
        else:
            kept[row["key"]] = row
    if dropped:
        print(f"note: {dropped} damaged row(s) of {partial} dropped; those subnets are measured again",
              file=sys.stderr)
    if repeated:
        print(f"note: {repeated} repeated row(s) of {partial} dropped; the first of each is kept",
              file=sys.stderr)
    if dropped or repeated:
        write_bytes(partial, b"".join((json.dumps(r) + "\n").encode() for r in kept.values()))
    return list(kept.values())


# Past this a latency is an edit, not a timing: its logarithm's square (the predictors standardise
# it) or a sum of such rows is inf, and fit and query end in a traceback.
MAX_MS = 1e150
# What a measured value must satisfy, by metric (latency_ms@TARGET as latency_ms).
_PLAUSIBLE = {"accuracy": "a fraction in [0, 1]", "latency_ms": f"a time above 0 and at most {MAX_MS:g} ms"}


def _plausible(metric: str, value: float) -> bool:
    base = metric.partition("@")[0]
    if base == "accuracy":
        return 0.0 <= value <= 1.0
    if base == "latency_ms":
        return 0.0 < value <= MAX_MS
    return value >= 0.0
