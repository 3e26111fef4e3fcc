"""Predictor quality and learning curves on a finished run: held-out Kendall tau, MAPE and share
within +-10 % of each predictor kind against the number of measured subnets it was fitted on.

    .venv/bin/python benchmarks/predictor_quality.py            # 1000 subnets, n = 25..300, 5 seeds
    .venv/bin/python benchmarks/predictor_quality.py --quick    # 400 subnets, n = 25..100, 2 seeds, < 3 min
    .venv/bin/python benchmarks/predictor_quality.py --measure-latency 200   # + 200 newly timed subnets

Accuracy: the run's table rows plus random distinct subnets up to `--subnets`, all evaluated on the
validation split (what the predictors are fitted on) and on the test split; a fixed held-out set
is scored against validation accuracy. The noise ceiling is tau between the held-out subnets'
validation and test accuracy: how consistently the measurement itself ranks them.
Latency: the run's table rows (plus `--measure-latency N` subnets timed now with
nas.measure.measure_configs), a held-out fifth; the MACs proxy's tau is reported beside.
Subnet measurements are cached in the output folder. Writes accuracy.png and latency.png there;
the last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import predictors  # noqa: E402
from nas.context import Context, prepare  # noqa: E402
from nas.features import FEATURE_SETS, features  # noqa: E402
from nas.fit import LOG_TARGET  # noqa: E402
from nas.io import append_jsonl, read_jsonl  # noqa: E402
from search_spaces import Config, config_key  # noqa: E402

# (label, kind, feature sets or None for the metric's own, see nas.features.METRIC_FEATURES).
ACCURACY_KINDS: tuple[tuple[str, str, tuple[str, ...] | None], ...] = (
    ("ridge", "ridge", None),
    ("gbm", "gbm", None),
    ("mlp_ensemble", "mlp_ensemble", None),
    ("gp", "gp", None),
    ("gbm (arch only)", "gbm", ("arch",)),  # the encoding used before issue 6, for comparison
)
# Latency kinds, fitted on features(ctx, "latency_ms", ...); another kind is one more name here.
# "lut" times every layer of the space alone first (nas.lut.measure_table, kept in the run's measure folder).
LATENCY_KINDS: tuple[str, ...] = ("ridge", "gbm", "mlp_ensemble", "lut")


def sample_extra(ctx: Context, known: Sequence[Config], total: int, seed: int) -> list[Config]:
    """Distinct random configs not in `known`, so that known + extra has `total` configs."""
    rng = np.random.default_rng([seed, 6])
    seen = {config_key(c) for c in known}
    extra: dict[str, Config] = {}
    target = min(total, ctx.space.size()) - len(seen)
    while len(extra) < target:
        c = ctx.space.sample(rng)
        if config_key(c) not in seen:
            extra.setdefault(config_key(c), c)
    return list(extra.values())


def accuracy_rows(ctx: Context, table: list[dict[str, Any]], total: int, cache: Path, seed: int) -> list[dict]:
    """Validation and test accuracy of the table's configs plus random ones, up to `total` (cached)."""
    from nas.data import load_data
    from nas.measure import accuracy_many
    from nas.train import load_supernet

    configs = [r["config"] for r in table]
    configs += sample_extra(ctx, configs, total, seed)
    done = {r["key"]: r for r in read_jsonl(cache)} if cache.exists() else {}
    todo = [c for c in configs if config_key(c) not in done]
    if todo:
        model, splits = load_supernet(ctx), load_data(ctx.exp.data)
        val = accuracy_many(ctx, model, todo, splits.x_val, splits.y_val)
        test = accuracy_many(ctx, model, todo, splits.x_test, splits.y_test)
        for c, a, t in zip(todo, val, test):
            row = {"key": config_key(c), "config": c, "accuracy": float(a), "test_accuracy": float(t)}
            append_jsonl(cache, row)
            done[row["key"]] = row
    return [done[config_key(c)] for c in configs]


def latency_rows(ctx: Context, table: list[dict[str, Any]], n_new: int, cache: Path, seed: int) -> list[dict]:
    """The table's rows plus `n_new` subnets timed now (cached), each with latency_ms and macs."""
    rows = [r for r in table if "latency_ms" in r]
    if n_new <= 0:
        return rows
    done = read_jsonl(cache) if cache.exists() else []
    configs = sample_extra(ctx, [r["config"] for r in rows], len(rows) + n_new, seed + 1)
    keys = {r["key"] for r in done}
    todo = [c for c in configs if config_key(c) not in keys]
    if todo:
        from nas.data import load_data
        from nas.measure import measure_configs
        from nas.train import load_supernet

        splits = load_data(ctx.exp.data)
        done += measure_configs(ctx, load_supernet(ctx), todo, splits.x_val, splits.y_val, reference=rows,
                                on_row=lambda r: append_jsonl(cache, r), label="time")
    wanted = {config_key(c) for c in configs}
    return rows + [r for r in done if r["key"] in wanted]


def learning_curve(X_of: Callable[[Any], np.ndarray], y: np.ndarray, entries: Sequence[tuple],
                   train_pool: np.ndarray, hold: np.ndarray, sizes: Sequence[int], seeds: int,
                   log_target: bool) -> dict[str, dict[str, dict[str, float]]]:
    """Per entry label, per training size: mean (and tau's std) of the held-out scores over seeds."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for label, kind, sets in entries:
        X = X_of(sets)
        curve = {}
        for n in sizes:
            scores = []
            for s in range(seeds):
                idx = np.random.default_rng([s, n]).choice(train_pool, n, replace=False)
                model = predictors.make(kind, log_target=log_target).fit(X[idx], y[idx])
                scores.append(model.score(X[hold], y[hold]))
            taus = [sc["kendall_tau"] for sc in scores]
            curve[str(n)] = {"kendall_tau": float(np.mean(taus)), "kendall_tau_std": float(np.std(taus)),
                             "mape": float(np.mean([sc["mape"] for sc in scores])),
                             "within_10pct": float(np.mean([sc["within_10pct"] for sc in scores]))}
        out[label] = curve
        best = curve[str(sizes[-1])]
        print(f"  {label:<16} n={sizes[-1]:<4} tau {best['kendall_tau']:.3f}  MAPE {best['mape']:.4f}", flush=True)
    return out


def plot(curves: dict[str, Any], title: str, path: Path, refs: dict[str, float]) -> None:
    """Tau vs n and MAPE vs n, one line per kind; `refs` are horizontal reference lines on tau."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_tau, ax_mape) = plt.subplots(1, 2, figsize=(8.5, 3.4), dpi=90)
    for label, curve in curves.items():
        ns = [int(n) for n in curve]
        ax_tau.errorbar(ns, [curve[n]["kendall_tau"] for n in curve], [curve[n]["kendall_tau_std"] for n in curve],
                        marker="o", ms=3, capsize=2, label=label)
        ax_mape.plot(ns, [100 * curve[n]["mape"] for n in curve], marker="o", ms=3, label=label)
    for (name, value), style in zip(refs.items(), ("--", ":")):
        if value is not None and math.isfinite(value):
            ax_tau.axhline(value, color="gray", ls=style, lw=1, label=f"{name} {value:.2f}")
    ax_tau.set(xscale="log", xlabel="measured subnets fitted on", ylabel="held-out Kendall tau", title=title)
    ax_mape.set(xscale="log", xlabel="measured subnets fitted on", ylabel="held-out MAPE (%)", title=title)
    ticks = sorted({int(n) for curve in curves.values() for n in curve})
    for ax in (ax_tau, ax_mape):
        ax.grid(alpha=0.3)
        ax.set_xticks(ticks, [str(n) for n in ticks])
        ax.minorticks_off()
    ax_tau.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def split(n: int, n_hold: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train pool, held-out) row indices."""
    order = np.random.default_rng([seed, 13]).permutation(n)
    return order[n_hold:], order[:n_hold]


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Both learning curves, their plots and the summary dict."""
    ctx = prepare(Path(args.run) / "experiment.toml", run_dir=args.run)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # Read as written, even if the measure stage's settings changed since (its rows stay valid data).
    table = read_jsonl(ctx.path("measure", "table.jsonl"))
    if not ctx.is_current("measure"):
        print(f"note: {ctx.path('measure')} is stale for the current settings; using its rows as they are")
    summary: dict[str, Any] = {"run": str(args.run), "seeds": args.seeds}

    t0 = time.time()
    rows = accuracy_rows(ctx, table, args.subnets, out / "accuracy.jsonl", args.seed)
    configs = [r["config"] for r in rows]
    y = np.array([r["accuracy"] for r in rows])
    y_test = np.array([r["test_accuracy"] for r in rows])
    pool, hold = split(len(rows), args.holdout, args.seed)
    sizes = [n for n in args.sizes if n <= len(pool)]
    ceiling = predictors.kendall_tau(y[hold], y_test[hold])
    print(f"accuracy: {len(rows)} subnets ({time.time() - t0:.0f} s), {len(hold)} held out; "
          f"tau(val, test accuracy) of the held-out = {ceiling:.3f}", flush=True)
    cached = {sets: (features(ctx, "accuracy", configs)[1] if sets is None
                     else np.hstack([FEATURE_SETS[s](ctx, configs)[1] for s in sets]))
              for _, _, sets in ACCURACY_KINDS}
    acc = learning_curve(cached.__getitem__, y, ACCURACY_KINDS, pool, hold, sizes, args.seeds, LOG_TARGET["accuracy"])
    summary["accuracy"] = {"subnets": len(rows), "holdout": len(hold), "noise_ceiling_tau_val_test": ceiling,
                           "tied_pair_share": tied_pairs(y[hold]), "kinds": acc}
    plot(acc, "accuracy (validation split)", out / "accuracy.png", {"tau(val acc, test acc)": ceiling})

    lat_rows = latency_rows(ctx, table, args.measure_latency, out / "latency.jsonl", args.seed)
    y_lat = np.array([r["latency_ms"] for r in lat_rows])
    macs = np.array([r["macs"] for r in lat_rows], np.float64)
    X_lat = features(ctx, "latency_ms", [r["config"] for r in lat_rows])[1]
    n_hold = max(10, min(args.holdout, len(lat_rows) // 5))
    pool, hold = split(len(lat_rows), n_hold, args.seed)
    lat_sizes = [n for n in args.sizes if n <= len(pool)]
    proxy = predictors.kendall_tau(y_lat[hold], macs[hold])
    print(f"latency: {len(lat_rows)} subnets, {len(hold)} held out; MACs proxy tau {proxy:.3f}", flush=True)
    X_kind = {kind: X_lat for kind in LATENCY_KINDS}
    if "lut" in X_kind:
        from nas.lut import load_table, lut_features, measure_table

        m = ctx.exp.measure
        t_lut = time.time()
        measure_table(ctx, None, "latency_ms", m.device, m.batch_size)
        table_ms = load_table(ctx, "latency_ms")  # with each entry's MACs (the estimate of a missing key)
        print(f"layer table: {len(table_ms.entries)} layers ({time.time() - t_lut:.0f} s)", flush=True)
        X_kind["lut"] = np.hstack([lut_features(ctx, "latency_ms", [r["config"] for r in lat_rows], table_ms)[1],
                                   X_lat])
        summary["lut_layers"] = len(table_ms.entries)
        summary["lut_sum_kendall_tau"] = predictors.kendall_tau(y_lat[hold], X_kind["lut"][hold, 0])
    entries = [(k, k, k) for k in LATENCY_KINDS]
    if "lut" in X_kind:  # the same learned models with the table sum as one more feature
        entries += [(f"{k}+table", k, "lut") for k in ("gbm", "mlp_ensemble")]
    lat = learning_curve(X_kind.__getitem__, y_lat, entries, pool, hold, lat_sizes,
                         args.seeds, LOG_TARGET["latency_ms"])
    summary["latency_ms"] = {"subnets": len(lat_rows), "measured_now": len(lat_rows) - len(table),
                             "lut_layers": summary.pop("lut_layers", None),
                             "lut_sum_kendall_tau": summary.pop("lut_sum_kendall_tau", None),
                             "holdout": len(hold), "macs_proxy_kendall_tau": proxy, "kinds": lat}
    plot(lat, "latency_ms (run's CPU table)", out / "latency.png", {"MACs proxy": proxy})
    summary["wall_s"] = round(time.time() - t0, 1)
    return summary


def tied_pairs(y: np.ndarray) -> float:
    """Share of pairs with equal values (quantised accuracies tie; tau-b discounts those pairs)."""
    _, counts = np.unique(y, return_counts=True)
    return float((counts * (counts - 1)).sum() / max(len(y) * (len(y) - 1), 1))


def main() -> None:
    """Parse the arguments, run, print the JSON summary as the last line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/quickstart", help="finished run directory")
    parser.add_argument("--out", default="runs/predictor-quality", help="folder for plots and cached measurements")
    parser.add_argument("--subnets", type=int, default=1000,
                        help="subnets with measured accuracy (the table's rows included)")
    parser.add_argument("--holdout", type=int, default=200, help="held-out subnets (latency: at most a fifth)")
    parser.add_argument("--sizes", type=lambda s: [int(v) for v in s.split(",")], default=[25, 50, 100, 200, 300])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0, help="seed of the subnet sample and the held-out split")
    parser.add_argument("--measure-latency", type=int, default=0, metavar="N", help="time N extra subnets now")
    parser.add_argument("--quick", action="store_true", help="400 subnets, n up to 100, 2 seeds")
    args = parser.parse_args()
    if args.quick:
        args.subnets, args.holdout, args.sizes, args.seeds = min(args.subnets, 400), 100, [25, 50, 100], 2
    summary = run(args)
    print(json.dumps(finite_json(summary)))


def finite_json(value: Any) -> Any:
    """nan/inf -> None, recursively (JSON has no nan)."""
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


if __name__ == "__main__":
    main()
