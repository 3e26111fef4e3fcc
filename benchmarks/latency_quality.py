"""Latency harness and latency predictors on one device, without training: repeatability of the
timings and held-out quality of each latency predictor kind, for every latency target of an experiment.

    .venv/bin/python benchmarks/latency_quality.py experiments/cnn_gpu.toml --subnets 60   # on the GPU
    .venv/bin/python benchmarks/latency_quality.py experiments/quickstart.toml --subnets 40 --repeat 16   # CPU smoke

Latency does not depend on the weights, so the supernet is freshly initialised (accuracy is not
measured). The largest, smallest and random distinct subnets are timed with the measure stage's
harness (`nas.measure.measure_configs`: chunks, anchors, every latency target of the experiment);
then the first `--repeat` of them are timed again in an independent pass (`nas.measure.repeatability`:
fresh compiles, anchors drawn from the other rows): the share within +-5 % / +-10 %, anchored and not.
Each latency predictor kind is then fitted on a random 80 % and scored on the rest (`--seeds` splits):
Kendall tau, MAPE, share within +-10 %, next to the MACs proxy's tau. Timings are cached in
`--out`, one file per set of timing settings (a rerun with the same ones only times what is
missing). Last line: one JSON object, also written to `--out`.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from predictor_quality import LATENCY_KINDS, finite_json, sample_extra  # noqa: E402  (script directory)
from supernet_quality import family_context, train_overrides  # noqa: E402

import predictors  # noqa: E402
from nas.config import load_experiment  # noqa: E402
from nas.features import features  # noqa: E402
from nas.fit import LOG_TARGET  # noqa: E402
from nas.io import append_jsonl, read_jsonl, write_json  # noqa: E402
from search_spaces import config_key  # noqa: E402

KINDS = tuple(k for k in LATENCY_KINDS if k != "lut")  # the layer table is opt-in (--lut): it times every layer


def fresh_supernet(ctx: Any) -> Any:
    """The experiment's supernet at its initial weights (timing does not depend on them)."""
    from flax import nnx

    from nas.train import init_state

    graphdef, params, rest, _, _ = init_state(ctx)
    return nnx.merge(graphdef, params, rest)


def timing_cache_name(ctx: Any, targets: dict[str, Any]) -> str:
    """Cache file named by what the timings depend on (model, measure settings, devices, jax), so a
    rerun with another batch, device or setting into the same `--out` never reuses other timings."""
    stable = ("device", "platform", "jax", "jaxlib", "xla_flags", "host")  # not the date
    devices = sorted((m, tuple(str(t.get(k)) for k in stable)) for m, t in targets.items())
    settings = repr((ctx.exp.model, ctx.exp.measure, devices))
    return f"timings-{hashlib.sha256(settings.encode()).hexdigest()[:12]}.jsonl"


def timed_rows(ctx: Any, model: Any, n: int, cache: Path, seed: int) -> list[dict[str, Any]]:
    """Largest, smallest and random subnets up to `n`, timed on every latency target (cached in `cache`)."""
    from nas.measure import measure_configs

    configs = [ctx.space.largest(), ctx.space.smallest()]
    configs += sample_extra(ctx, configs, n, seed)
    done = read_jsonl(cache) if cache.exists() else []
    keys = {r["key"] for r in done}
    todo = [c for c in configs if config_key(c) not in keys]
    if todo:  # a resumed cache is the reference: new chunks are put in its units through anchors
        done += measure_configs(ctx, model, todo, None, None, reference=done, label="time",
                                on_row=lambda r: append_jsonl(cache, r))
    by_key = {r["key"]: r for r in done}
    return [by_key[config_key(c)] for c in configs]


def predictor_scores(ctx: Any, rows: list[dict[str, Any]], metric: str, kinds: tuple[str, ...], seeds: int,
                     holdout: float) -> dict[str, Any]:
    """Held-out quality of each kind for `metric` over `seeds` random splits, and the MACs proxy's tau."""
    configs = [r["config"] for r in rows]
    names, X = features(ctx, metric, configs)
    y = np.array([r[metric] for r in rows], np.float64)
    macs = np.array([r["macs"] for r in rows], np.float64)
    n_hold = max(5, int(round(holdout * len(rows))))
    splits = [np.random.default_rng([s, 13]).permutation(len(rows)) for s in range(seeds)]
    out: dict[str, Any] = {
        "train_rows": len(rows) - n_hold, "holdout_rows": n_hold,
        "macs_proxy_kendall_tau": float(np.mean([predictors.kendall_tau(y[o[:n_hold]], macs[o[:n_hold]])
                                                 for o in splits])),
        "kinds": {}}
    X_of = {k: X for k in kinds}
    if "lut" in kinds:
        from nas.lut import load_table, lut_features

        X_of["lut"] = np.hstack([lut_features(ctx, metric, configs, load_table(ctx, metric))[1], X])
    for kind in kinds:
        scores = []
        for order in splits:
            hold, train = order[:n_hold], order[n_hold:]
            model = predictors.make(kind, log_target=LOG_TARGET["latency_ms"]).fit(X_of[kind][train], y[train])
            scores.append(model.score(X_of[kind][hold], y[hold]))
        out["kinds"][kind] = {key: float(np.mean([s[key] for s in scores]))
                              for key in ("kendall_tau", "mape", "within_10pct")}
        out["kinds"][kind]["kendall_tau_std"] = float(np.std([s["kendall_tau"] for s in scores]))
        best = out["kinds"][kind]
        print(f"  {metric:<16} {kind:<13} tau {best['kendall_tau']:.3f}  MAPE {best['mape']:.3f}  "
              f"within ±10% {best['within_10pct']:.2f}", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    """Time, re-time, fit; print one JSON object last."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("experiment", help="experiment TOML (its [measure] settings and latency targets are used)")
    ap.add_argument("--subnets", type=int, default=120, help="timed subnets (largest and smallest included)")
    ap.add_argument("--repeat", type=int, default=40, help="subnets timed again in the independent pass")
    ap.add_argument("--seeds", type=int, default=5, help="random train / held-out splits per predictor kind")
    ap.add_argument("--holdout", type=float, default=0.2, help="share of the subnets held out, in (0, 0.5]")
    ap.add_argument("--lut", action="store_true", help="also the per-layer lookup table kind (times every layer)")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="override an experiment setting, e.g. measure.min_time_ms=10")
    ap.add_argument("--device", default=None, help="time every target on this jax platform instead (cpu, gpu)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the subnet sample")
    ap.add_argument("--out", default=None, help="folder for the timing cache and JSON (default runs/latency-<name>)")
    args = ap.parse_args(argv)
    if not 0 < args.holdout <= 0.5:
        ap.error(f"--holdout {args.holdout}: a share of the subnets, in (0, 0.5]")
    overrides = {k if "." in k else f"measure.{k}": v for k, v in train_overrides(args.set).items()}
    out = Path(args.out or f"runs/latency-{load_experiment(args.experiment).name}")
    out.mkdir(parents=True, exist_ok=True)
    ctx = family_context(args.experiment, out / "run", overrides=overrides)
    if args.device:
        m = ctx.exp.measure
        m = dataclasses.replace(m, device=args.device,
                                targets=tuple(dataclasses.replace(t, device=args.device) for t in m.targets))
        ctx = dataclasses.replace(ctx, exp=dataclasses.replace(ctx.exp, measure=m))
    import jax

    from nas.latency import device_profile, target_device
    from nas.measure import repeatability

    t0 = time.time()
    model = fresh_supernet(ctx)
    targets = ctx.exp.measure.latency_targets()
    summary: dict[str, Any] = {
        "experiment": args.experiment, "overrides": overrides, "jax": jax.__version__,
        "targets": {metric: {"device": device, "batch_size": batch, **device_profile(target_device(device))}
                    for metric, device, batch in targets}}
    rows = timed_rows(ctx, model, args.subnets, out / timing_cache_name(ctx, summary["targets"]), args.seed)
    summary["subnets"] = len(rows)
    summary["timing_wall_s"] = round(time.time() - t0, 1)
    print(f"timed {len(rows)} subnets on {len(targets)} target(s) in {summary['timing_wall_s']} s", flush=True)
    t1 = time.time()
    summary["repeatability"] = repeatability(ctx, model, rows, count=min(args.repeat, len(rows) - 2))
    summary["repeatability_wall_s"] = round(time.time() - t1, 1)
    print(json.dumps(finite_json({**summary, "partial": True})), flush=True)  # kept if a time limit cuts the fits
    for metric, *_ in targets:
        rep = summary["repeatability"].get(metric, {})
        print(f"  {metric:<16} repeatability: within ±5% {rep.get('within_5pct', float('nan')):.2f}, "
              f"±10% {rep.get('within_10pct', float('nan')):.2f} (unanchored "
              f"{rep.get('unanchored', {}).get('within_10pct', float('nan')):.2f})", flush=True)
    kinds = KINDS
    if args.lut:
        from nas.lut import measure_table, supports_lut

        if supports_lut(ctx.family):
            t2 = time.time()
            ctx.path("measure").mkdir(parents=True, exist_ok=True)  # the tables' folder in the scratch run
            for metric, device, batch in targets:
                measure_table(ctx, model, metric, device, batch)
            summary["lut_wall_s"] = round(time.time() - t2, 1)
            kinds = (*KINDS, "lut")
    summary["predictors"] = {metric: predictor_scores(ctx, rows, metric, kinds, args.seeds, args.holdout)
                             for metric, *_ in targets}
    summary["wall_s"] = round(time.time() - t0, 1)
    summary = finite_json(summary)
    write_json(out / "latency_quality.json", summary)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
