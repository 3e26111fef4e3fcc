"""Best exported subnet for a budget, from the run's exported front: plain JSON, no jax import."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nas.errors import NasError, NoFeasibleError, StageError
from nas.metrics import METRICS, metric_info

BUDGET = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_@]*)\s*(<=|>=|=)\s*([-+0-9.eE]+)\s*$")


def parse_budget(text: str) -> tuple[str, str, float]:
    """'latency_ms=0.05' -> ('latency_ms', '<=', 0.05); '=' means the metric's natural limit."""
    m = BUDGET.match(text)
    if not m:
        raise NasError(f"--budget {text!r}: expected METRIC=VALUE, METRIC<=VALUE or METRIC>=VALUE")
    name, op, value = m.groups()
    info = metric_info(name)
    if info is None:
        raise NasError(f"--budget {text!r}: unknown metric {name!r} (known: {', '.join(METRICS)}, latency_ms@TARGET)")
    try:
        limit = float(value)
    except ValueError:
        raise NasError(f"--budget {text!r}: {value!r} is not a number") from None
    if op == "=":
        op = ">=" if info.direction == "maximize" else "<="
    return name, op, limit


def parse_budgets(budgets: Mapping[str, float] | Sequence[str]) -> list[tuple[str, str, float]]:
    """'METRIC<=VALUE' strings, or a mapping metric -> limit in the metric's natural direction, parsed."""
    items = list(budgets) if not isinstance(budgets, Mapping) else [f"{k}={v}" for k, v in budgets.items()]
    return [parse_budget(b) for b in items]


def meets(row: Mapping[str, Any], limits: Sequence[tuple[str, str, float]]) -> bool:
    """Whether a row of metrics meets every parsed budget."""
    return all(row[n] <= v if op == "<=" else row[n] >= v for n, op, v in limits)


def describe_budgets(limits: Sequence[tuple[str, str, float]]) -> str:
    """Parsed budgets as text, e.g. 'latency_ms <= 0.05, size_kb <= 8' ('none' when there are none)."""
    return ", ".join(f"{n} {op} {v:g}" for n, op, v in limits) or "none"


def load_front(run_dir: str | Path) -> dict[str, Any]:
    """The exported front of a run directory."""
    path = Path(run_dir) / "export" / "front.json"
    if not path.is_file():
        raise StageError(f"no exported front at {path} (run `nas export` or `nas run` first)")
    try:
        front = json.loads(path.read_text())
        front["members"][0]["accuracy"]
    except (json.JSONDecodeError, KeyError, IndexError, TypeError) as e:
        raise StageError(f"exported front {path} is corrupt ({type(e).__name__}: {e})") from None
    return front


def query(run_dir: str | Path, budgets: Mapping[str, float] | Sequence[str]) -> dict[str, Any]:
    """The most accurate (validation) exported subnet meeting every budget.

    `budgets` is a list of 'METRIC<=VALUE' strings or a mapping metric -> limit in the metric's
    natural direction. Raises NoFeasibleError when none meets them.
    """
    limits = parse_budgets(budgets)
    front = load_front(run_dir)
    members = front["members"]
    missing = sorted({n for n, _, _ in limits if any(n not in m for m in members)})
    if missing:
        have = sorted(k for k in members[0] if metric_info(k) is not None)
        raise NasError(f"--budget {missing[0]}: the exported front of {run_dir} has no such measurement "
                       f"(it has: {', '.join(have)})")

    fits = [m for m in members if meets(m, limits)]
    described = describe_budgets(limits)
    if not fits:
        closest = {n: min(m[n] for m in members) if op == "<=" else max(m[n] for m in members) for n, op, _ in limits}
        raise NoFeasibleError(f"no exported subnet meets {described} (best on the front: "
                              + ", ".join(f"{k}={v:.4g}" for k, v in closest.items()) + ")")
    best = max(fits, key=lambda m: m["accuracy"])
    folder = Path(run_dir) / "export" / best["name"]
    return {"budgets": described, "candidates": len(fits), "of": len(members), "path": str(folder), **best}


def run_context(run_dir: str | Path) -> Any:
    """The Context of an existing run directory, from the experiment file it was run with."""
    from nas.context import prepare
    from nas.io import read_json

    source = read_json(Path(run_dir) / "run.json", "run description")["experiment"]
    return prepare(source, run_dir=run_dir)


def predict_config(run_dir: str | Path, config: Mapping[str, Any]) -> dict[str, Any]:
    """Predicted metrics (with uncertainty) of a config, from the run's fitted predictors."""
    from nas.oracle import Oracle
    from nas.search import latest_predictors

    ctx = run_context(run_dir)
    canonical = ctx.space.validate(config)
    values = Oracle(ctx, latest_predictors(ctx)).evaluate([canonical])
    return {"config": canonical, **{k: float(v[0]) for k, v in values.items()}}
