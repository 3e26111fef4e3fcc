"""The best subnet of the whole space for a budget, asked of a run's predictors (not only of its
exported front): every config when the space is small enough, else an evolutionary search on the
predictors; optionally measured for real before you trust it."""

from __future__ import annotations

import hashlib
import io
import json
import numbers
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np

from nas.context import STAGES, Context
from nas.errors import NasError, NoFeasibleError, count_text
from nas.io import append_jsonl, check_parents, finite_number, read_jsonl, write_bytes
from nas.metrics import METRICS, metric_info
from nas.query import describe_budgets, describe_nearest, meets, parse_budgets, run_context
from search_spaces import Config, config_key

ENUMERATE_MAX = 1_000_000
ENUMERATE_SECONDS = 20.0  # score every subnet if the first population says it takes at most this long
POPULATION = 4096
CHILDREN = 2048
GENERATIONS = 10
ELITE = 64

Limit = tuple[str, str, float]


def _as_checked(values: Mapping[str, np.ndarray], name: str, op: str, z: float) -> np.ndarray:
    """Metric `name` as a budget `op` checks it: a predicted one at its quantile z std against the limit
    (of the log for one predicted in log space, a log-normal), a counted one as it is."""
    against = z if op == "<=" else -z
    if f"{name}_logstd" in values:
        return values[name] * np.exp(against * values[f"{name}_logstd"])
    return values[name] + (against * values[f"{name}_std"] if f"{name}_std" in values else 0.0)


def _margins(values: Mapping[str, np.ndarray], limits: Sequence[Limit], z: float) -> np.ndarray:
    """Per config and budget, how far inside (>= 0) or outside (< 0) the budget it is, relative to the limit.

    A predicted metric is taken at its quantile z standard deviations against the budget (`_as_checked`),
    so a config passes with the requested confidence under the predictor's normal (or log-normal) spread."""
    cols = []
    for name, op, limit in limits:
        v = _as_checked(values, name, op, z)
        slack = limit - v if op == "<=" else v - limit
        cols.append(slack / max(abs(limit), 1e-12))
    return np.stack(cols, axis=1) if cols else np.zeros((len(next(iter(values.values()))), 0))


def _mutants(ctx: Context, parents: Sequence[Config], n: int, rng: np.random.Generator) -> list[Config]:
    """n children, each a parent with one or two dimensions set to a random choice (canonical form)."""
    dims = ctx.space.dimensions
    out = []
    for i in rng.integers(0, len(parents), size=n):
        child = dict(parents[i])
        for j in rng.choice(len(dims), size=int(rng.integers(1, 3)), replace=False):
            child[dims[j].name] = int(rng.choice(dims[j].choices))
        out.append(ctx.space.canonical(child))
    return out


SCORES_VERSION = 2  # bump when what the oracle returns for a config changes


def _scores_key(ctx: Context, folder: Path) -> str:
    """What the cached scores depend on: the predictor files and layer tables the oracle reads (by
    content), the space, the metrics, and this cache's version."""
    from nas.lut import table_path

    # Names relative to the run and the code's folder, not absolute paths: a moved or copied run keeps its cache.
    run, repo = ctx.run_dir.resolve(), Path(__file__).parents[1]
    h = hashlib.sha256(json.dumps([SCORES_VERSION, _relative(folder, run), ctx.space.to_dict()],
                                  sort_keys=True).encode())
    # The code that turns configs into features, predictions and exact counts: any edit recomputes.
    code = [p for pkg in ("nas", "predictors", "supernets", "search_spaces") for p in sorted((repo / pkg).glob("*.py"))]
    files = code + sorted(folder.glob("*.json")) + [table_path(ctx, m) for m, _, _ in ctx.exp.measure.latency_targets()]
    for path in files:
        h.update(_relative(path, run, repo).encode() + (path.read_bytes() if path.is_file() else b"<none>"))
    return h.hexdigest()


def _relative(path: Path, *bases: Path) -> str:
    """`path` relative to the first of `bases` it lies under, else as resolved."""
    resolved = path.resolve()
    base = next((b for b in bases if resolved.is_relative_to(b)), None)
    return resolved.relative_to(base).as_posix() if base is not None else str(resolved)


def _load_scores(ctx: Context, path: Path, key: str) -> tuple[np.ndarray, dict[str, np.ndarray]] | None:
    """(configs as a grid of choices, metric -> values) cached for every subnet, or None when absent,
    stale or unreadable (then recomputed)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["key"]) != key or list(data["names"]) != ctx.space.names:
                return None
            return data["configs"], {k[2:]: data[k] for k in data.files if k.startswith("v:")}
    except Exception:  # a cache: any damage means "compute again", never an error
        return None


def _save_scores(ctx: Context, path: Path, key: str, scored: _Scored) -> None:
    buf = io.BytesIO()
    np.savez(buf, key=np.array(key), names=np.array(ctx.space.names), configs=scored.grid(),
             **{f"v:{k}": v for k, v in scored.arrays().items()})
    write_bytes(path, buf.getvalue())


class _Scored:
    """Every config evaluated so far with its predicted metrics, budget margins and objective."""

    def __init__(self, ctx: Context, oracle: Any, limits: Sequence[Limit], objective: str, z: float):
        self.ctx, self.oracle, self.limits, self.objective, self.z = ctx, oracle, limits, objective, z
        self.sign = -1.0 if metric_info(objective).direction == "maximize" else 1.0  # smaller is better
        self.configs: list[Config] = []
        self.rows: list[np.ndarray] = []  # the configs as choices in the space's dimension order, in chunks
        self.keys: set[str] | None = set()
        self.values: dict[str, list[np.ndarray]] = {}

    def add(self, configs: Sequence[Config]) -> None:
        """Evaluate the configs not seen before."""
        if self.keys is None:
            self.keys = {config_key(c) for c in self.configs}
        new = []
        for c in configs:
            k = config_key(c)
            if k not in self.keys:
                self.keys.add(k)
                new.append(c)
        if not new:
            return
        self.configs.extend(new)
        self.rows.append(np.array([[c[n] for n in self.ctx.space.names] for c in new], np.int64))
        for name, v in self.oracle.evaluate(new).items():  # in chunks of nas.oracle.CHUNK
            self.values.setdefault(name, []).append(np.asarray(v, np.float64))

    def restore(self, grid: np.ndarray, values: dict[str, np.ndarray]) -> None:
        """Take configs (a grid of choices) and their values from the cache instead of the oracle."""
        names = self.ctx.space.names
        self.configs = [dict(zip(names, row)) for row in grid.tolist()]
        self.rows, self.keys = [grid], None  # keys only when configs are added later
        self.values = {k: [v] for k, v in values.items()}

    def grid(self) -> np.ndarray:
        """(configs, dimensions) choices of every config evaluated, in order."""
        return np.concatenate(self.rows) if self.rows else np.zeros((0, len(self.ctx.space.names)), np.int64)

    def arrays(self) -> dict[str, np.ndarray]:
        """metric -> values of every config evaluated, in order."""
        return {k: np.concatenate(v) for k, v in self.values.items()}

    def ranking(self) -> tuple[np.ndarray, np.ndarray]:
        """(feasible mask, order best first): feasible by objective, then the rest by worst margin."""
        values = self.arrays()
        margins = _margins(values, self.limits, self.z)
        worst = margins.min(axis=1) if margins.shape[1] else np.zeros(len(self.configs))
        ok = worst >= 0
        score = np.where(ok, self.sign * values[self.objective], np.inf)
        # Ties (exact counts such as size or MACs tie often) go to the config with the smaller choices,
        # in the space's dimension order: the answer never depends on the order configs were scored in.
        return ok, np.lexsort((*self.grid().T[::-1], -worst, score))


def _score_space(ctx: Context, scored: _Scored, cache: Path, key: str, rng: np.random.Generator) -> str:
    """Score every subnet when that is quick (kept in `cache` under `key`), else an evolutionary
    search on the predictors; returns how."""
    size = ctx.space.size()
    t_start = time.perf_counter()
    scored.add([ctx.space.largest(), ctx.space.smallest(), *map(ctx.space.canonical, ctx.exp.search.warm_start),
                *(ctx.space.sample(rng) for _ in range(min(POPULATION, size)))])
    per_config = (time.perf_counter() - t_start) / len(scored.configs)
    # Every subnet when that is quick (the quickstart's 33,680: ~3 s); scoring costs 10x more per
    # config for the transformer (exact counts in Python), so its 367,902 would take ~5 minutes.
    if size <= ENUMERATE_MAX and size * per_config <= ENUMERATE_SECONDS:
        scored.add(ctx.space.enumerate(limit=ENUMERATE_MAX))
        try:
            _save_scores(ctx, cache, key, scored)
        except (OSError, NasError):
            pass  # a cache: a run directory this query cannot write to still gets its answer
        return "every subnet"
    for _ in range(GENERATIONS):
        _, order = scored.ranking()
        scored.add(_mutants(ctx, [scored.configs[i] for i in order[:ELITE]], CHILDREN, rng))
    return f"evolution ({GENERATIONS} generations)"


def best_predicted(ctx: Context, budgets: Sequence[str] | Mapping[str, float], *, objective: str = "accuracy",
                   confidence: float = 0.5, top: int = 1, seed: int = 0) -> dict[str, Any]:
    """The configs the predictors rate best on `objective` among those meeting every budget."""
    from nas.oracle import Oracle
    from nas.search import latest_predictors

    t0 = time.perf_counter()
    limits = parse_budgets(budgets)
    # The Python API's arguments too: a string or None was a TypeError, numpy's int64 refused.
    if isinstance(confidence, bool) or not isinstance(confidence, numbers.Real) or not 0.0 < confidence < 1.0:
        raise NasError(f"--confidence {confidence!r}: expected a probability strictly between 0 and 1")
    if isinstance(top, bool) or not isinstance(top, numbers.Integral) or top < 1:
        raise NasError(f"--top {top!r}: expected a positive integer")
    top = int(top)
    if not isinstance(objective, str) or metric_info(objective) is None:
        raise NasError(f"--objective {objective!r}: unknown metric (known: {', '.join(METRICS)}, latency_ms@TARGET)")
    folder = latest_predictors(ctx)
    # Every subnet's scores are kept in RUN/query/scores.npz until the predictor files change, so a
    # later query (another budget, objective or confidence) loads no predictor and only ranks.
    cache, key = ctx.path("query", "scores.npz"), _scores_key(ctx, folder)
    cached = _load_scores(ctx, cache, key)
    oracle = None if cached is not None else Oracle(ctx, folder)
    # What Oracle.evaluate returns, besides the stds.
    spreads = ("_std", "_logstd")
    available = set(oracle.models) | set(METRICS) if oracle else {k for k in cached[1] if not k.endswith(spreads)}
    for name in [objective, *(n for n, _, _ in limits)]:
        if name not in available:
            known = ", ".join(sorted(available))
            raise NasError(f"metric {name!r} is not predicted or counted by this run (it has: {known})")
    scored = _Scored(ctx, oracle, limits, objective, NormalDist().inv_cdf(confidence))
    size = ctx.space.size()
    if cached is not None:
        scored.restore(*cached)
        method = "every subnet (scores cached)"
    else:
        method = _score_space(ctx, scored, cache, key, np.random.default_rng(seed))
    ok, order = scored.ranking()
    values = scored.arrays()
    described = describe_budgets(limits)
    if not ok.any():
        # Each metric as the budget was checked, at its quantile against the limit: at a confidence
        # above 0.5 the best mean can meet the limit, and showing it would contradict "no subnet meets".
        best = []
        for n, op, limit in limits:
            checked = _as_checked(values, n, op, scored.z)
            best.append((n, op, checked.min() if op == "<=" else checked.max(), limit))
        shifted = scored.z and any(f"{n}_std" in values for n, _, _ in limits)  # counted metrics have no std
        how = f" (predicted values shifted {scored.z:.3g} std against their limits)" if shifted else ""
        n = len(scored.configs)
        # An evolutionary search tried part of the space: a subnet it never scored may meet the budgets.
        who, searched = ("no subnet of the space", f"{n:,} searched") if n >= size else \
            ("no subnet searched", f"only {n:,} of the space's {count_text(size)} searched, by {method}")
        raise NoFeasibleError(f"{who} is predicted to meet {described} at confidence {confidence:g} "
                              f"({searched}; best predicted{how}: {describe_nearest(best)})")

    def entry(i: int) -> dict[str, Any]:
        return {"config": scored.configs[i], "predicted": {k: float(v[i]) for k, v in values.items()}}

    picks = [int(i) for i in order[: min(top, int(ok.sum()))]]
    return {"budgets": described, "objective": objective, "confidence": float(confidence), "source": "predictors",
            "predictors": str(folder), "searched": len(scored.configs), "space_size": size, "method": method,
            "feasible": int(ok.sum()), **entry(picks[0]), "others": [entry(i) for i in picks[1:]],
            "query_ms": round((time.perf_counter() - t0) * 1e3, 1)}


def measured_row(ctx: Context, config: Config, *, quiet: bool = True) -> dict[str, Any]:
    """The measurement of a config: the run's own (measure table, validated front) or an earlier
    query's, else measured now and cached in RUN/query/measured.jsonl."""
    from nas.data import load_data
    from nas.features import predicted_metrics
    from nas.measure import load_table, measure_configs, row_problem
    from nas.search import measured_rows
    from nas.train import load_supernet
    from nas.workers import file_lock

    key = config_key(config)
    cache = ctx.path("query", "measured.jsonl")
    # Rows name the measurement they were timed against: after a retrain or a new measure stage
    # they describe another supernet, or other units, and are measured again.
    session = ctx.stamp_id("measure")
    needed = predicted_metrics(ctx)

    def current(rows: list[Any]) -> dict[str, dict[str, Any]]:
        # A line that is JSON but no measured row of its key (not an object, no key, a config that is not
        # the key's: an export would ship another subnet) is dropped: that subnet is measured again.
        return {r["key"]: r for r in rows if row_problem(ctx, r, needed) is None and r.get("measure_id") == session}

    known = {**current(read_jsonl(cache)), **measured_rows(ctx)}  # the run's own rows first
    if key not in known:
        cache.parent.mkdir(parents=True, exist_ok=True)
        # One measuring query at a time: two at once would time the same subnet twice, each slowed by
        # the other on the shared cores, and cache both.
        with file_lock(ctx.path("query", "measure.lock")):
            rows = read_jsonl(cache)
            kept = current(rows)
            known = {**kept, **measured_rows(ctx)}
            if key not in known:
                if len(kept) < len(rows):  # rows of an earlier measure stage: dropped for good
                    write_bytes(cache, "".join(json.dumps(r) + "\n" for r in kept.values()).encode())
                splits = load_data(ctx.exp.data)
                measure_configs(ctx, load_supernet(ctx), [config], splits.x_val, splits.y_val, quiet=quiet,
                                on_row=lambda r: append_jsonl(cache, {**r, "measure_id": session}),
                                label="measure answer",
                                reference=load_table(ctx))
                known = current(read_jsonl(cache))
    return known[key]


def with_measurement(answer: dict[str, Any], row: dict[str, Any],
                     budgets: Sequence[str] | Mapping[str, float]) -> dict[str, Any]:
    """The answer with its measured row's numbers and whether the measured subnet meets the budgets too."""
    # Only finite numbers: the answer is printed as JSON, and NaN is not JSON.
    measured = {k: v for k, v in row.items() if finite_number(v) is not None}
    limits = parse_budgets(budgets)
    ok = all(n in measured for n, _, _ in limits) and meets(measured, limits)  # unmeasured: not shown to meet it
    return {**answer, "measured": measured, "measured_meets_budgets": ok}


def run_budgets_left_out(ctx: Context, budgets: Sequence[str] | Mapping[str, float]) -> list[str]:
    """The run's own [[budgets]] on metrics the query's budgets do not name (a predictors query applies only
    the budgets it is given: an experiment's memory limit was left out without a word; review)."""
    named = {name for name, _, _ in parse_budgets(budgets)}
    return [str(b) for b in ctx.exp.budgets if b.metric not in named]


def query_predictors(run_dir: str | Path | Context, budgets: Sequence[str] | Mapping[str, float], *,
                     objective: str = "accuracy", confidence: float = 0.5, top: int = 1,
                     measure: bool = False, export: str | Path | None = None) -> dict[str, Any]:
    """`best_predicted` on a run directory (or its Context, `nas.query.run_context`); `measure`: measured
    for real (`measured_row`); `export`: also written to that new folder like an exported front member
    (measured first)."""
    from nas.export import export_one

    ctx = run_dir if isinstance(run_dir, Context) else run_context(run_dir)
    if export is not None and (Path(export).exists() or Path(export).is_symlink()):
        raise NasError(f"--export {export}: already exists; choose a new folder")
    if export is not None:
        check_parents(Path(export), "--export")
        # The stages replace or empty their folders (`nas export` the whole of RUN/export): a subnet
        # shipped into one would be deleted, without a word, by the next `nas run` or `nas export`.
        target = Path(export).resolve()
        for folder in (*STAGES, "query"):
            if target.is_relative_to(ctx.path(folder).resolve()):
                raise NasError(f"--export {export}: inside the run's {folder}/ folder, which the run's stages "
                               f"replace or empty; choose a folder outside {ctx.path(folder)}")
    answer = best_predicted(ctx, budgets, objective=objective, confidence=confidence, top=top)
    if not (measure or export is not None):
        return answer
    row = measured_row(ctx, answer["config"])
    answer = with_measurement(answer, row, budgets)
    if export is not None:
        row = {**row, "predicted": answer["predicted"], "source": "nas query --from predictors"}
        metrics = export_one(ctx, row, Path(export))
        answer = {**answer, "exported": str(export), "test_accuracy": metrics["measured"]["test_accuracy"]}
    return answer
