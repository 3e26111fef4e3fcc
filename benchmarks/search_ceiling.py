"""How high can any search go on the generated tables? hv_ratio of two strategies that know each
table's noise-free metrics, the ceiling against which benchmarks/search_quality.py's figures read.

    .venv/bin/python benchmarks/search_ceiling.py              # both tables, 100 and 300 evals, ~3 min
    .venv/bin/python benchmarks/search_ceiling.py --tables cell --table-seed 7

- "layers": evaluate configs in order of their noise-free non-dominated layers (the noise-free
  front first, then the front of the rest, ...). It never looks at what it measured.
- "ehvi": sequential; each pick maximises the expected hypervolume gain over the noise (the
  generators' own noise law, common random draws) given the noisy values measured so far, among
  the best `--candidates` configs by noise-free layers.

- "refit-exact" (`--refit-exact`): the project's refit loop itself (`nas.tabular.run_refit`, default
  options: initial design, batches, local search around the front) with the noise-free table as
  its surrogate, through `RefitOptions(model=...)`; `--model-error E ...` adds to that surrogate a
  fixed per-config Gaussian error of E times the metric's sd over the table (E = 0.2: R^2 0.96),
  to see how good a model refit needs. Search seeds 0 .. `--seeds` - 1. `--exact-metrics accuracy`
  takes only the named metrics from the table and the others from refit's own kernel model
  (`nas.tabular.kernel_surrogate`): which metric's model error costs the hypervolume.

All are scored like search_quality.py: the measured (noisy) front against the whole table's.
A search whose model were exact could reach "ehvi"; the gap to it is what the model costs.
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from search_quality import ACC_NOISE, CHOICES, GENERATORS, LAT_NOISE, OBJECTIVES, OPS, write_table  # noqa: E402

from nas.hypervolume import hypervolume, nondominated_mask  # noqa: E402
from nas.tabular import RefitOptions, Surrogate, Table, bench_search, kernel_surrogate, load_table  # noqa: E402


def _signed(metrics: dict[str, np.ndarray]) -> np.ndarray:
    return np.stack([-metrics["accuracy"], metrics["latency_ms"]], axis=1)  # both minimised


def front_hv(points: np.ndarray, lo: np.ndarray, span: np.ndarray) -> float:
    """Hypervolume of the front of signed points normalised to [lo, lo + span], reference (1, 1)."""
    P = (points - lo) / span
    return hypervolume(P[nondominated_mask(P)], np.ones(2))


def layer_order(points: np.ndarray, k: int) -> np.ndarray:
    """Indices of the first k points by non-dominated layers (ties inside a layer in index order)."""
    rest, order = np.arange(len(points)), []
    while len(order) < k and len(rest):
        mask = nondominated_mask(points[rest])
        order.extend(rest[mask].tolist())
        rest = rest[~mask]
    return np.array(order[:k], np.int64)


def _staircase_hv(F: np.ndarray) -> np.ndarray:
    """Hypervolume to (1, 1) of 2-D staircases F (..., n, 2): x ascending, y non-increasing."""
    x, y = F[..., 0], F[..., 1]
    x_next = np.concatenate([x[..., 1:], np.ones(x.shape[:-1] + (1,))], axis=-1)
    return np.sum(np.clip(x_next - x, 0, None) * np.clip(1 - y, 0, None), axis=-1)


def ehvi_picks(clean: np.ndarray, noisy: np.ndarray, lo: np.ndarray, span: np.ndarray, k: int,
               candidates: int, draws: int, seed: int) -> np.ndarray:
    """Sequential expected-hypervolume picks on the noise-free values; observes the noisy ones."""
    rng = np.random.default_rng(seed)
    cand = layer_order(clean, candidates)
    acc_draw = rng.normal(0, ACC_NOISE, draws)
    lat_draw = rng.lognormal(0, LAT_NOISE, draws)
    # Every candidate's possible outcomes, normalised like the scoring: (c, draws, 2).
    outcomes = np.empty((len(cand), draws, 2))
    outcomes[..., 0] = (clean[cand, 0][:, None] - acc_draw[None, :] - lo[0]) / span[0]
    outcomes[..., 1] = (clean[cand, 1][:, None] * lat_draw[None, :] - lo[1]) / span[1]
    box = np.prod(np.clip(1 - outcomes, 0, None), axis=-1)
    measured = (noisy - lo) / span
    free = np.ones(len(cand), bool)
    chosen: list[int] = []
    front = np.zeros((0, 2))
    for _ in range(k):
        if len(front):
            F = front[np.argsort(front[:, 0])]
            covered = _staircase_hv(np.maximum(F[None, None], outcomes[:, :, None, :]))
        else:
            covered = 0.0
        gain = np.where(free, (box - covered).mean(axis=1), -np.inf)
        i = int(np.argmax(gain))
        free[i] = False
        chosen.append(int(cand[i]))
        pts = measured[chosen]
        front = pts[nondominated_mask(pts)]
    return np.array(chosen, np.int64)


def exact_surrogate(table: Table, clean: dict[str, np.ndarray], error: float, seed: int) -> Surrogate:
    """The noise-free metrics as refit's model, plus a fixed per-config error of `error` sds."""
    radix = len(OPS) ** np.arange(len(CHOICES))[::-1]  # _all_archs order: first edge most significant
    op_id = [np.array([OPS.index(v) for v in vals]) for vals in table.space.values]
    rng = np.random.default_rng(seed)
    wrong = {m: clean[m] + rng.normal(0, error * clean[m].std(), len(clean[m])) for m in clean}

    def surrogate(metric: str, configs: np.ndarray, y: np.ndarray, pool: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        arch = sum(op_id[k][pool[:, k]] * radix[k] for k in range(len(CHOICES)))
        return wrong[metric][arch], np.zeros(len(pool))

    return surrogate


def refit_exact(name: str, table_seed: int, evals: list[int], errors: list[float], seeds: int,
                exact_metrics: tuple[str, ...] = ("accuracy", "latency_ms")) -> dict:
    """hv_ratio of refit's own loop with a (perturbed) noise-free surrogate for `exact_metrics` (refit's
    kernel model for the other metrics), per error and budget."""
    import tempfile

    clean = GENERATORS[name](table_seed, noise=False)
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = write_table(Path(tmp) / f"{name}.csv", GENERATORS[name](table_seed))
        table = load_table(path, OBJECTIVES, (), CHOICES)
        for error in errors:
            out[error] = {}
            for k in evals:
                ratios = []
                for s in range(seeds):
                    exact, learned = exact_surrogate(table, clean, error, s), kernel_surrogate(table.space)
                    model = lambda m, *a, exact=exact, learned=learned: (  # noqa: E731
                        exact if m in exact_metrics else learned)(m, *a)
                    options = RefitOptions(model=model, kappa=0.0)
                    ratios.append(bench_search(path, OBJECTIVES, (), k, "refit", s, table=table,
                                               refit_options=options)["hv_ratio"])
                out[error][k] = {"hv_ratio": round(float(np.mean(ratios)), 4), "min": round(float(np.min(ratios)), 4)}
                print(f"{name:9s} evals={k:5d} refit-exact ({'+'.join(exact_metrics)}), model error {error:.2f} sd: "
                      f"hv_ratio {np.mean(ratios):.4f} (min {np.min(ratios):.4f})", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    """Print the ceiling hv_ratio of both strategies per table and budget; last line JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tables", nargs="+", default=list(GENERATORS), choices=list(GENERATORS))
    ap.add_argument("--table-seed", type=int, default=2026)
    ap.add_argument("--evals", type=int, nargs="+", default=[100, 300])
    ap.add_argument("--candidates", type=int, default=2000, help="ehvi picks among this many (noise-free layers)")
    ap.add_argument("--draws", type=int, default=24, help="noise draws per candidate for the expectation")
    ap.add_argument("--seeds", type=int, default=3, help="noise-draw seeds of ehvi, search seeds of refit-exact")
    ap.add_argument("--refit-exact", action="store_true", help="also refit's loop with the noise-free surrogate")
    ap.add_argument("--model-error", type=float, nargs="+", default=[0.0, 0.1, 0.2],
                    help="refit-exact: surrogate error in sds of each metric")
    ap.add_argument("--exact-metrics", nargs="+", default=["accuracy", "latency_ms"],
                    choices=["accuracy", "latency_ms"],
                    help="refit-exact: the metrics taken from the table; the others from refit's kernel model")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    out: dict = {"table_seed": args.table_seed, "evals": args.evals, "tables": {}}
    for name in args.tables:
        noisy = _signed(GENERATORS[name](args.table_seed))
        clean = _signed(GENERATORS[name](args.table_seed, noise=False))
        lo, span = noisy.min(axis=0), np.ptp(noisy, axis=0)
        ratio = lambda rows: front_hv(noisy[rows], lo, span) / front_hv(noisy, lo, span)  # noqa: B023
        layers = layer_order(clean, max(args.evals))
        runs = [ehvi_picks(clean, noisy, lo, span, max(args.evals), args.candidates, args.draws, s)
                for s in range(args.seeds)]
        res = {}
        for k in args.evals:
            ehvi = [ratio(r[:k]) for r in runs]
            res[k] = {"layers": round(ratio(layers[:k]), 4), "ehvi": round(float(np.mean(ehvi)), 4),
                      "ehvi_min": round(float(np.min(ehvi)), 4)}
            print(f"{name:9s} evals={k:5d} layers {res[k]['layers']:.4f}  ehvi {res[k]['ehvi']:.4f} "
                  f"(min {res[k]['ehvi_min']:.4f})", flush=True)
        if args.refit_exact:
            res["refit_exact"] = refit_exact(name, args.table_seed, args.evals, args.model_error, args.seeds,
                                             tuple(args.exact_metrics))
        out["tables"][name] = res
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
