"""How far each predictor's std can be trusted, on synthetic data with a known noise law: the share of
new rows inside the 90 % band (coverage_90, 0.90 when calibrated) by training-set size, with each config
measured several times, and the one-sided confidence bound `nas query --confidence` checks on a
log-normal target (latency).

    .venv/bin/python benchmarks/std_calibration.py [--seeds 4]    # about 1 minute on 2 cores

Last line: one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from statistics import NormalDist

import numpy as np

from nas.budget_query import _as_checked
from predictors import make
from predictors.metrics import coverage

KINDS = ("ridge", "gp", "gbm", "mlp_ensemble")


def _task(rng: np.random.Generator) -> Callable[[np.ndarray], np.ndarray]:
    """A smooth 5-feature target with one interaction (noise 0.1 is added by the callers)."""
    w = rng.normal(size=5)
    return lambda X: np.sin(X @ w) + 0.3 * X[:, 0] * X[:, 1]


def coverage_by_rows(rows: int, repeats: int, seeds: int) -> dict[str, float]:
    """Mean coverage_90 on 1,000 new configs per kind, fitted on `rows` configs measured `repeats` times."""
    out: dict[str, list[float]] = {k: [] for k in KINDS}
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        f = _task(rng)
        X = np.repeat(rng.normal(size=(rows, 5)), repeats, axis=0)
        y = f(X) + 0.1 * rng.normal(size=len(X))
        new = rng.normal(size=(1000, 5))
        y_new = f(new) + 0.1 * rng.normal(size=len(new))
        for kind in KINDS:
            out[kind].append(coverage(y_new, *make(kind).fit(X, y).predict(new)))
    return {k: round(float(np.mean(v)), 3) for k, v in out.items()}


def log_normal_bounds(seeds: int) -> dict[str, dict[str, float]]:
    """Share of new latencies at or under the bound checked at each confidence (a ridge in log space,
    fitted on exact log-normal data, log-std 0.3): as checked now, and as mean + z std (before)."""
    out: dict[str, dict[str, float]] = {}
    for confidence in (0.9, 0.95, 0.99):
        z = NormalDist().inv_cdf(confidence)
        now, before = [], []
        for seed in range(seeds):
            rng = np.random.default_rng(seed)
            X = rng.normal(size=(6000, 3))
            y = np.exp(X @ np.array([0.5, -0.2, 0.1]) + 0.3 * rng.normal(size=len(X)))
            model = make("ridge", degree=1, log_target=True).fit(X[:2000], y[:2000])
            mean, std = model.predict(X[2000:])
            _, log_std = model.predict_fitted(X[2000:])
            values = {"latency_ms": mean, "latency_ms_std": std, "latency_ms_logstd": log_std}
            now.append(np.mean(y[2000:] <= _as_checked(values, "latency_ms", "<=", z)))
            before.append(np.mean(y[2000:] <= mean + z * std))
        out[str(confidence)] = {"now": round(float(np.mean(now)), 3),
                                "mean_plus_z_std": round(float(np.mean(before)), 3)}
    return out


def main() -> None:
    """Print the tables and the JSON line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=4)
    args = ap.parse_args()
    result: dict[str, object] = {"coverage_90_by_rows": {}, "coverage_90_repeats": {}}
    for rows in (5, 10, 20, 40, 120, 200):
        result["coverage_90_by_rows"][rows] = row = coverage_by_rows(rows, 1, args.seeds)
        print(f"{rows:4d} distinct rows: " + "  ".join(f"{k} {v:.3f}" for k, v in row.items()), flush=True)
    result["coverage_90_repeats"] = row = coverage_by_rows(30, 4, args.seeds)
    print("30 configs x 4 repeats: " + "  ".join(f"{k} {v:.3f}" for k, v in row.items()), flush=True)
    result["log_normal_bound_met"] = bounds = log_normal_bounds(args.seeds)
    for c, v in bounds.items():
        print(f"confidence {c}: bound met by {v['now']:.3f} (mean + z std: {v['mean_plus_z_std']:.3f})")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
