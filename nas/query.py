"""Best exported subnet for a budget, from the run's exported front: plain JSON, no jax import."""

from __future__ import annotations

import json
import math
import numbers
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nas.errors import ConfigError, NasError, NoFeasibleError, StageError
from nas.metrics import METRICS, limit_problem, metric_info

# The value is anything after the operator, so 'size_kb=abc' is told its value is not a number.
BUDGET = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*(?:@[A-Za-z0-9_.-]+)?)\s*(<=|>=|=)\s*(\S.*?)\s*$")


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
        percent = value.endswith("%") and re.fullmatch(r"[0-9.]+", value[:-1].strip())
        raise NasError(f"--budget {text!r}: {value!r} is not a number"
                       + (" (a percentage? give a fraction, e.g. 0.95)" if percent else "")) from None
    if not math.isfinite(limit):
        raise NasError(f"--budget {text!r}: {value!r} is not a finite number")
    problem = limit_problem(name, limit)
    if problem:
        raise NasError(f"--budget {text!r}: {problem}")
    if op == "=":
        op = ">=" if info.direction == "maximize" else "<="
    return name, op, limit


def parse_budgets(budgets: Mapping[str, float] | Sequence[str]) -> list[tuple[str, str, float]]:
    """'METRIC<=VALUE' strings, or a mapping metric -> limit in the metric's natural direction, parsed;
    one limit per metric and side, and no empty range (an input error, not a budget nothing meets)."""
    if isinstance(budgets, Mapping):
        for k, v in budgets.items():
            if not isinstance(k, str) or metric_info(k) is None:
                raise NasError(f"budget {k!r}: not a metric name (known: {', '.join(METRICS)}, latency_ms@TARGET); "
                               "a mapping gives each metric's limit in its natural direction")
            if isinstance(v, bool) or not isinstance(v, numbers.Real):
                raise NasError(f"budget {k}: {v!r} is not a number")
        items = [f"{k}={_as_float(v)!r}" for k, v in budgets.items()]
    elif isinstance(budgets, (str, bytes)) or not isinstance(budgets, Sequence):
        raise NasError(f"budgets: expected a list of 'METRIC<=VALUE' strings or a mapping metric -> limit, "
                       f"got {type(budgets).__name__}")
    else:
        items = list(budgets)
        for b in items:
            if not isinstance(b, str):
                raise NasError(f"budget {b!r}: expected a 'METRIC<=VALUE' string")
    limits = [parse_budget(b) for b in items]
    sides: dict[tuple[str, str], float] = {}
    for name, op, limit in limits:
        if (name, op) in sides:
            raise NasError(f"--budget: {name} {op} given twice ({limit_text(sides[name, op])} and "
                           f"{limit_text(limit)}); give one")
        sides[name, op] = limit
    for (name, op), limit in sides.items():
        if op == ">=" and (name, "<=") in sides and limit > sides[name, "<="]:
            raise NasError(f"--budget: {name} >= {limit_text(limit)} and {name} <= "
                           f"{limit_text(sides[name, '<='])} leave no value")
    return limits


def _as_float(value: numbers.Real) -> float:
    try:
        return float(value)
    except OverflowError:  # an int past float range: as "1e999" reads, not a finite number
        return math.inf


def meets(row: Mapping[str, Any], limits: Sequence[tuple[str, str, float]]) -> bool:
    """Whether a row of metrics meets every parsed budget."""
    return all(row[n] <= v if op == "<=" else row[n] >= v for n, op, v in limits)


def describe_nearest(nearest: Sequence[tuple[str, str, float, float]]) -> str:
    """(metric, side, the value nearest to meeting that limit, the limit) per budget, as text: 'size_kb min 2.1';
    said so when each is met by some subnet (the values come from different subnets, none meeting all)."""
    text = ", ".join(f"{n} {'min' if op == '<=' else 'max'} {nearest_text(v, limit)}" for n, op, v, limit in nearest)
    each_met = len(nearest) > 1 and all(v <= limit if op == "<=" else v >= limit for _, op, v, limit in nearest)
    return text + ("; each budget is met by some subnet, never all by one" if each_met else "")


def nearest_text(value: float, limit: float) -> str:
    """`value` to 4 significant digits, or as many more as it takes to read on its own side of `limit`
    (0.40625 against a limit of 0.40624 is '0.40625', not '0.4062', which would seem to meet it)."""
    for digits in range(4, 18):
        text = f"{value:.{digits}g}"
        if (float(text) < limit) == (value < limit) and (float(text) > limit) == (value > limit):
            return text
    return repr(value)


def describe_budgets(limits: Sequence[tuple[str, str, float]]) -> str:
    """Parsed budgets as text, e.g. 'latency_ms <= 0.05, size_kb <= 8' ('none' when there are none)."""
    return ", ".join(f"{n} {op} {limit_text(v)}" for n, op, v in limits) or "none"


def limit_text(value: float) -> str:
    """A budget limit as given: 15 significant digits (":g" cut 0.0123456789 to 0.0123457), never "-0"."""
    return f"{value + 0.0:.15g}"


def _non_finite(value: Any, where: str) -> tuple[str, float] | None:
    """(key path, value) of the first NaN or infinity in a parsed JSON value, or None."""
    if isinstance(value, float):
        return None if math.isfinite(value) else (where, value)
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for k, v in items:
        found = _non_finite(v, f"{where}.{k}")
        if found:
            return found
    return None


def _member_problem(member: Any, metrics: Sequence[str]) -> str | None:
    """What is wrong with a front member (not an object, no name, a metric not a finite number), or None."""
    if not isinstance(member, dict):
        return f"is a JSON {type(member).__name__}, not an object"
    if not isinstance(member.get("name"), str) or not member["name"]:
        return "has no name"
    name = member["name"]
    for key in metrics:
        if key not in member:
            return f"({name}) has no {key!r}"
        v = member[key]
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            return f"({name}) has {key!r} = {json.dumps(v)[:40]}, not a number"
    # Python's json reads NaN, Infinity and 1e999; the answer is printed as JSON, which has no such values.
    for key, v in member.items():
        found = _non_finite(v, key)
        if found:
            return f"({name}) has {found[0]!r} = {found[1]}, not a finite number"
    return None


def check_members(path: str | Path, members: Sequence[Any], metrics: Sequence[str]) -> None:
    """StageError naming the first member of the front at `path` that is not an object with a name and
    finite numbers for `metrics`."""
    for i, member in enumerate(members):
        problem = _member_problem(member, metrics)
        if problem:
            raise StageError(f"exported front {path} is corrupt (member {i} {problem}); run `nas export --force`")


def export_staleness(run_dir: str | Path, front: Mapping[str, Any]) -> str | None:
    """Why `front` (RUN/export/front.json) is not the export of the run's current search, or None
    (also when that cannot be told: an export written before front.json named its search, or copied
    without the run's search folder)."""
    recorded = front.get("search_stamp")
    if recorded is None or not (Path(run_dir) / "search").is_dir():
        return None  # an export written before the field, or an export folder shipped without its search
    if search_stamp_unreadable(run_dir):
        return f"it cannot be told current: its search's stamp {Path(run_dir) / 'search' / 'stamp.json'} is " \
               "unreadable (`nas run` searches again, resuming the study, and exports)"
    if _stamp(run_dir, "search").get("id") != recorded:
        failure = search_failure(run_dir)
        if failure:
            return f"the search failed after it was exported ({failure})"
        return "the search ran again (or failed) after it was exported"
    for before, stage in zip(STAGE_ORDER, STAGE_ORDER[1:]):  # a retrain, a new measurement or fit since
        after = _stamp(run_dir, stage).get("after")
        if after is not None and after != _stamp(run_dir, before).get("id"):
            if not _stamp(run_dir, before):  # not "ran again": it may be deleted or damaged as well
                return (f"it cannot be told current: stage '{before}' has no readable stamp "
                        f"({Path(run_dir) / before / 'stamp.json'}: deleted, damaged, or its re-run failed)")
            return f"stage '{before}' ran again after the search it was exported from"
    return None


STAGE_ORDER = ("train", "measure", "fit", "search")  # as nas.context.STAGES (not imported: it imports jax)


def search_failure(run_dir: str | Path) -> str | None:
    """Why the run's last search failed (RUN/search/failed.json, nas.pipeline), or None."""
    try:
        error = json.loads((Path(run_dir) / "search" / "failed.json").read_text()).get("error")
    except (OSError, ValueError, RecursionError, AttributeError):
        return None
    return error if isinstance(error, str) and error else None


def search_stamp_unreadable(run_dir: str | Path) -> bool:
    """Whether RUN/search/stamp.json exists but is not a readable JSON object (damaged after the run)."""
    return (Path(run_dir) / "search" / "stamp.json").is_file() and not _stamp(run_dir, "search")


def _stamp(run_dir: str | Path, stage: str) -> dict[str, Any]:
    """A stage's stamp as written, or {} when absent or unreadable."""
    try:
        stamp = json.loads((Path(run_dir) / stage / "stamp.json").read_text())
    except (OSError, ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
        return {}
    return stamp if isinstance(stamp, dict) else {}


def runs_inside(folder: Path) -> list[Path]:
    """run.json files of runs in the immediate subfolders of `folder`."""
    found = []
    try:
        candidates = list(folder.glob("*/run.json"))
    except OSError:
        return []
    for p in candidates:
        try:  # one subfolder it cannot enter must not hide the others (review)
            if p.is_file():
                found.append(p)
        except OSError:
            continue
    return sorted(found)


def check_run_dir(run_dir: str | Path) -> None:
    """StageError when `run_dir` is not a folder (an experiment file given in its place, a typo)."""
    path = Path(run_dir)
    if path.is_dir():
        if not (path / "run.json").is_file():
            inside = runs_inside(path)
            if inside:  # the runs root: its "no exported front at runs/export/front.json" said nothing of this
                raise StageError(f"{run_dir} is a folder of runs, not a run (no run.json): name one of them, "
                                 f"e.g. {inside[0].parent}")
        return
    hint = " (that is an experiment file: the run's folder is runs/<its name>, or its --run-dir)" \
        if path.suffix.lower() == ".toml" else ""
    raise StageError(f"{run_dir}: {'not a folder' if path.exists() else 'no such folder'}, so not a run "
                     f"directory{hint}")


def load_front(run_dir: str | Path, metrics: Sequence[str] = ("accuracy",)) -> dict[str, Any]:
    """The exported front of a run directory, every member an object with a name, numbers for `metrics` and
    no NaN; its objectives and budgets, when given, lists of strings."""
    check_run_dir(run_dir)
    path = Path(run_dir) / "export" / "front.json"
    if not path.is_file():
        raise StageError(f"no exported front at {path} (run `nas export` or `nas run` first)")
    try:
        front = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as e:
        raise StageError(f"exported front {path} is corrupt ({type(e).__name__}: {e})") from None
    if not isinstance(front, dict) or not isinstance(front.get("members"), list) or not front["members"]:
        raise StageError(f"exported front {path} is corrupt (no list of members); run `nas export --force`")
    check_members(path, front["members"], metrics)
    for key in ("objectives", "budgets"):
        value = front.get(key)
        if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise StageError(f"exported front {path} is corrupt ({key!r} is not a list of strings); "
                             "run `nas export --force`")
    return front


def query(run_dir: str | Path, budgets: Mapping[str, float] | Sequence[str]) -> dict[str, Any]:
    """The most accurate (validation) exported subnet meeting every budget.

    `budgets` is a list of 'METRIC<=VALUE' strings or a mapping metric -> limit in the metric's
    natural direction. Raises NoFeasibleError when none meets them.
    """
    limits = parse_budgets(budgets)
    front = load_front(run_dir)
    stale = export_staleness(run_dir, front)
    if stale:
        if search_failure(run_dir):  # exporting again fails the same way: the budgets are what to change
            advice = "; change the experiment's budgets (or widen its space), then `nas run`"
        elif search_stamp_unreadable(run_dir):
            advice = ""
        else:
            advice = "; run `nas export` (or `nas run`) to export the current search"
        raise StageError(f"the exported front of {run_dir} is out of date: {stale}{advice}")
    members = front["members"]
    # A metric no member has is a budget this front cannot answer; one some lack is a damaged front
    # (check_members below names the member).
    missing = sorted({n for n, _, _ in limits if not any(isinstance(m, dict) and n in m for m in members)})
    if missing:
        have = sorted(k for k in members[0] if metric_info(k) is not None)
        raise NasError(f"--budget {missing[0]}: the exported front of {run_dir} has no such measurement "
                       f"(it has: {', '.join(have)})")
    check_members(Path(run_dir) / "export" / "front.json", members, [n for n, _, _ in limits])

    fits = [m for m in members if meets(m, limits)]
    described = describe_budgets(limits)
    if not fits:
        # Per limit: the front's value nearest to meeting it (lowest under a <=, highest under a >=).
        closest = [(n, op, min(m[n] for m in members) if op == "<=" else max(m[n] for m in members), limit)
                   for n, op, limit in limits]
        # The export is a handful of points; the predictors cover the whole space (review: users missed it).
        raise NoFeasibleError(f"no exported subnet meets {described} (best on the front: "
                              f"{describe_nearest(closest)}); `nas query {run_dir} --from predictors` with the "
                              "same budgets searches the whole space")
    best = max(fits, key=lambda m: m["accuracy"])
    folder = member_folder(run_dir, best)
    return {"budgets": described, "candidates": len(fits), "of": len(members), "path": str(folder), **best}


def member_folder(run_dir: str | Path, member: Mapping[str, Any]) -> Path:
    """The export folder of a front member, which must be a folder of its own under RUN/export."""
    front = Path(run_dir) / "export" / "front.json"
    name = member.get("name")
    if not isinstance(name, str) or not name or name in (".", "..") or Path(name).name != name or "\\" in name:
        raise StageError(f"exported front {front} is corrupt (member name {name!r} is not a folder name); "
                         "run `nas export --force`")
    folder = front.parent / name
    if not folder.is_dir():
        raise StageError(f"exported member {folder} is missing (front.json lists it); run `nas export --force`")
    return folder


def run_experiment(run_dir: str | Path) -> tuple[Path, Path]:
    """(the experiment file a run's stages last ran with, the file run.json names): the first is the
    run's own copy RUN/experiment.toml, whatever became of the other since (moved, deleted, edited:
    an edited space would be searched with predictors fitted on another); relative data paths are
    from the second's folder."""
    from nas.io import read_json

    check_run_dir(run_dir)
    path = Path(run_dir) / "run.json"
    run = read_json(path, "run description")
    source = run.get("experiment") if isinstance(run, dict) else None
    if not isinstance(source, str) or not source:
        raise StageError(f"run description {path} is corrupt (expected an object whose 'experiment' is the path "
                         "of the experiment file); run `nas run` again")
    copy = Path(run_dir) / "experiment.toml"
    if copy.is_file():
        return copy, Path(source)
    if not Path(source).is_file():
        raise StageError(f"{path}'s experiment {source} is not found (moved or deleted since the run?), "
                         f"nor is the run's copy of it, {copy}")
    return Path(source), Path(source)


def run_context(run_dir: str | Path) -> Any:
    """The Context of an existing run directory, from the experiment its stages last ran with."""
    from nas.context import prepare

    experiment, source = run_experiment(run_dir)
    try:
        return prepare(experiment, run_dir=run_dir, data_base=source.parent)
    except NasError as e:
        moved = isinstance(e, ConfigError) and e.key == "data.path" and experiment != source and source.is_file()
        if not moved:
            # Otherwise 'model.space.bits: ...' would not say which file is at fault.
            raise StageError(f"the run's experiment {experiment} is invalid: {e}") from None
    # The data file moved since the run, and the experiment file's path to it: the run's experiment
    # with the data path the file names now (data counts by its content: nas.context).
    try:
        return prepare(_with_data_path_of(experiment, source), run_dir=run_dir)
    except NasError as e:
        raise StageError(f"the run's experiment {experiment}, with the data path of {source}, is invalid: {e}") \
            from None


def _with_data_path_of(experiment: Path, source: Path) -> Any:
    """The experiment `experiment` with [data] path as `source` gives it (relative paths from its folder)."""
    import tomllib

    from nas.config import parse_experiment

    try:
        raw, live = tomllib.loads(experiment.read_text()), tomllib.loads(source.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError("", f"cannot be read ({e})") from None
    data, path = raw.get("data"), (live.get("data") or {}).get("path") if isinstance(live.get("data"), dict) else None
    if isinstance(data, dict) and path is not None:
        raw = {**raw, "data": {**data, "path": path}}
    return parse_experiment(raw, experiment.resolve(), source.parent)


def predict_config(run_dir: str | Path, config: Mapping[str, Any]) -> dict[str, Any]:
    """Predicted metrics (with uncertainty) of a config, from the run's fitted predictors."""
    from nas.oracle import Oracle
    from nas.search import latest_predictors

    ctx = run_context(run_dir)
    try:
        canonical = ctx.space.validate(config)
    except ConfigError as e:
        # Say whose space it is: the run's, not the experiment file as it may read today.
        raise ConfigError(e.key, f"{str(e).split(': ', 1)[-1]} (in the space of the run's experiment, "
                                 f"{ctx.exp.source})") from None
    values = Oracle(ctx, latest_predictors(ctx)).evaluate([canonical])
    return {"config": canonical, **{k: float(v[0]) for k, v in values.items()}}
