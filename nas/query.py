"""Best exported subnet for a budget, from the run's exported front: plain JSON, no jax import."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
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


def query(run_dir: str | Path, budgets: Mapping[str, float] | list[str]) -> dict[str, Any]:
    """The most accurate (validation) exported subnet meeting every budget.

    `budgets` is a list of 'METRIC<=VALUE' strings or a mapping metric -> limit in the metric's
    natural direction. Raises NoFeasibleError when none meets them.
    """
    items = list(budgets) if not isinstance(budgets, Mapping) else [f"{k}={v}" for k, v in budgets.items()]
    limits = [parse_budget(b) for b in items]
    front = load_front(run_dir)
    members = front["members"]

    def ok(m: Mapping[str, Any]) -> bool:
        return all(m[n] <= v if op == "<=" else m[n] >= v for n, op, v in limits)

    fits = [m for m in members if ok(m)]
    described = ", ".join(f"{n} {op} {v:g}" for n, op, v in limits) or "none"
    if not fits:
        closest = {n: min(m[n] for m in members) if op == "<=" else max(m[n] for m in members) for n, op, _ in limits}
        raise NoFeasibleError(f"no exported subnet meets {described} (best on the front: "
                              + ", ".join(f"{k}={v:.4g}" for k, v in closest.items()) + ")")
    best = max(fits, key=lambda m: m["accuracy"])
    folder = Path(run_dir) / "export" / best["name"]
    return {"budgets": described, "candidates": len(fits), "of": len(members), "path": str(folder), **best}


def predict_config(run_dir: str | Path, config: Mapping[str, Any]) -> dict[str, Any]:
    """Predicted metrics (with uncertainty) of a config, from the run's fitted predictors."""
    from nas.context import prepare
    from nas.io import read_json
    from nas.oracle import Oracle

    source = read_json(Path(run_dir) / "run.json", "run description")["experiment"]
    ctx = prepare(source, run_dir=run_dir)
    canonical = ctx.space.validate(config)
    values = Oracle(ctx).evaluate([canonical])
    return {"config": canonical, **{k: float(v[0]) for k, v in values.items()}}
