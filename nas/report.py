"""`nas report RUN_DIR`: one self-contained HTML page summarising a run.

Everything is inline (CSS in a <style> block, plots as base64 PNG data URIs) so the page can be
mailed or attached to an issue and still render. Only plain JSON files of the run directory are
read: no jax import, nothing loaded with pickle. Optional inputs that are missing are skipped;
unreadable ones are reported as a note on the page instead of failing the whole report.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import math
import re
import shlex
import statistics
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nas.errors import NasError, StageError
from nas.io import finite_number, read_jsonl, write_bytes
from nas.metrics import METRICS
from nas.plot import figure, panels

PLOTTABLE = 1e300  # a metric value beyond this is a damaged file's (matplotlib's axes overflow on ~1e308)


def _num(v: Any) -> float | None:
    """`v` as a finite float within ±PLOTTABLE, or None: the project's rule for a metric value
    (nas.io.finite_number), bounded so that no value shown or plotted overflows on the way."""
    f = finite_number(v)
    return f if f is not None and abs(f) <= PLOTTABLE else None

STAGES = ("train", "measure", "fit", "search", "export")
# Metric names may carry a suffix such as "latency_ms@b1", so the name is anything up to the operator.
BUDGET_RE = re.compile(r"^\s*(.+?)\s*(<=|>=|<|>|=)\s*([-+]?(?:[0-9.]+(?:[eE][-+]?[0-9]+)?|inf))\s*$")
# Member/row keys that are bookkeeping of a measurement, not a metric worth a column.
_NOT_METRICS = ("iqr", "iters", "repeats", "outliers", "compile_s", "_std", "_logstd", "attempts", "session_scale")
HOLDOUT_FIELDS = ("n", "mape", "kendall_tau", "spearman", "within_10pct", "within_5pct", "rmse", "coverage_90")

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;max-width:1200px;
 padding:0 1em;color:#222;line-height:1.4}
h1{margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:right;vertical-align:top}
th{background:#f4f4f4}td.l,th.l{text-align:left}
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:.9em}
pre{background:#f6f8fa;padding:.8em;overflow-x:auto;border-radius:4px}
.pred{color:#777}.note{color:#a15c00}.muted{color:#777}
img{max-width:100%;height:auto;display:block;margin:.6em 0}
.kv td:first-child{text-align:left;font-weight:600}
"""


# ----------------------------------------------------------------------------- reading


def _read_optional(path: Path, notes: list[str], expect: type | None = None) -> Any:
    """Parsed JSON of an optional file; None when missing, None plus a note when unreadable or, given
    `expect` (dict or list), of another shape."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as e:
        notes.append(f"{path} could not be read ({type(e).__name__}: {e}); its section is skipped")
        return None
    if expect is not None and not isinstance(data, expect):
        # A wrongly-shaped file is as unusable as a corrupt one: a note, not a crash in a section.
        shape = "an object" if expect is dict else "a list"
        notes.append(f"{path} is not {shape} (it is a JSON {type(data).__name__}); its section is skipped")
        return None
    return data


def _read_rows(path: Path, notes: list[str], *, required: bool = False) -> list[dict[str, Any]]:
    """Rows of a JSON-lines file (non-dict lines dropped); damage becomes a note. Once its stage is
    stamped the file is whole: a torn last line, or (`required`) no file, is damage, not work cut short
    (the page counted the rows left without a word)."""
    stamped = (path.parent / "stamp.json").is_file()
    if required and stamped and not path.is_file():
        notes.append(f"{path} is missing, though its stage finished; the subnets it held are left out")
        return []
    try:
        return [r for r in read_jsonl(path, complete=stamped) if isinstance(r, dict)]
    except (StageError, OSError, UnicodeDecodeError) as e:
        try:  # only its last line torn: the other rows are shown
            rows = [r for r in read_jsonl(path) if isinstance(r, dict)]
            notes.append(f"{e}; the rest of its rows are shown")
            return rows
        except (StageError, OSError, UnicodeDecodeError):
            notes.append(f"{path} could not be read ({e}); its rows are left out")
            return []


def front_to_show(run_dir: Path, notes: list[str]) -> dict[str, Any]:
    """The exported front when it is the export of the current search; else the search's measured front
    (members without a name, "exported": False), with a note saying why. An export that cannot be told
    current or not (its search's stamp unreadable) is shown with a note; one that cannot be read is
    replaced by the search's front."""
    from nas.query import export_staleness, load_front, search_failure, search_stamp_unreadable

    front = None
    searched = (run_dir / "search" / "stamp.json").is_file()  # a search that finished (and is not running again)
    if (run_dir / "export" / "front.json").is_file():
        try:
            front = load_front(run_dir, metrics=())  # a member without an accuracy is still drawn
        except StageError as e:
            why = f"the export cannot be read ({e})"
        else:
            stale = export_staleness(run_dir, front)
            if stale is None:
                return {**front, "exported": True}
            if search_stamp_unreadable(run_dir):
                notes.append(f"the export is shown, but {stale}")
                return {**front, "exported": True}
            if not searched:
                notes.append(f"the export is shown, but {stale}" if search_failure(run_dir) else
                             f"the export is shown, but {stale}: the search is being run again, or was stopped")
                return {**front, "exported": True}
            why = f"the export is out of date: {stale}"
    else:
        why = "the run has not been exported yet"
    stamp = _read_optional(run_dir / "search" / "stamp.json", notes, dict)
    # A search/front.json without the search's stamp is an earlier search's, left by one running again.
    rows = _read_optional(run_dir / "search" / "front.json", notes, list) if searched else None
    if not isinstance(rows, list):
        if (run_dir / "search" / "front.json").is_file() and notes:
            hint = notes[-1].split("; its section")[0]  # why the search's front cannot be read
        elif (run_dir / "search").is_dir() and (run_dir / "fit" / "stamp.json").is_file():
            # A run whose search found no subnet meeting the budgets (or failed, or is running): `nas run`
            # would not "make both", it would stop at the same search.
            hint = ("the search has not finished: it found no subnet meeting the budgets, failed or was stopped "
                    f"(`nas search EXPERIMENT --run-dir {run_dir}` says which; relax the budgets if none met them)")
        else:
            hint = f"is it a run directory? `nas run EXPERIMENT --run-dir {run_dir}` makes both"
        raise StageError(f"{run_dir}: no finished search (search/front.json) and no current export ({why}); {hint}")
    members = [{**r, "name": None} for r in rows if isinstance(r, dict)]
    notes.append(f"{why}: this page shows the search's measured front (search/front.json); `nas export` exports it")
    objectives, budgets = (stamp or {}).get("objectives"), (stamp or {}).get("budgets")
    if not all(isinstance(v, list) and all(isinstance(x, str) for x in v) for v in (objectives, budgets)):
        objectives, budgets = _experiment_goals(run_dir, notes)  # a stamp written before it named them
    return {"experiment": run_dir.name, "objectives": objectives, "budgets": budgets, "members": members,
            "exported": False, "why": why}


def _experiment_goals(run_dir: Path, notes: list[str]) -> tuple[list[str], list[str]]:
    """(objective metrics, budget texts) of the run's experiment; empty with a note if unreadable."""
    try:
        exp = _run_experiment(run_dir)
    except (NasError, TypeError, OSError) as e:
        notes.append(f"objectives and budgets unknown: the run's experiment file cannot be read ({e})")
        return [], []
    return [o.metric for o in exp.objectives], [str(b) for b in exp.budgets]


# ----------------------------------------------------------------------------- helpers



def _fmt(v: Any, digits: int = 4) -> str:
    """Compact display text of a value: thousands separators for ints, `digits` significant figures."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        if v.is_integer() and abs(v) >= 1e3:
            return f"{int(v):,}"
        return f"{v:.{digits}g}"
    if isinstance(v, (dict, list)):
        return json.dumps(v, separators=(",", ":"))
    return str(v)


def _dict(v: Any) -> dict[str, Any]:
    """`v` if it is an object of a parsed JSON file, else {} (a damaged entry reads as an empty one)."""
    return v if isinstance(v, dict) else {}


def _e(v: Any) -> str:
    """HTML-escaped display text of any value."""
    return html.escape(_fmt(v))


def _run_experiment(run_dir: Path) -> Any:
    """The run's experiment (NasError, TypeError or OSError when it cannot be read)."""
    from nas.config import load_experiment
    from nas.query import run_experiment

    path, source = run_experiment(run_dir)
    return load_experiment(path, source.parent)


def _objective_directions(run_dir: Path) -> dict[str, str]:
    """The run's experiment's objective directions (one may override a metric's natural one); {} if unreadable."""
    try:
        return {o.metric: o.direction for o in _run_experiment(run_dir).objectives}
    except (NasError, TypeError, OSError):
        return {}  # the natural directions, as the run files name metrics only


def _maximised(front: dict[str, Any], metric: str) -> bool:
    """Whether the run's search maximised `metric`: its experiment's direction, else the natural one."""
    directions = front.get("directions") or {}
    return directions[metric] == "maximize" if metric in directions else _is_maximised(metric)


def _is_maximised(metric: str) -> bool:
    """Whether larger is better for `metric` (accuracy-like); unknown metrics are costs."""
    base = metric.split("@")[0]
    if base in METRICS:
        return METRICS[base].direction == "maximize"
    return base.startswith("accuracy")


def parse_budget(text: str) -> tuple[str, str, float] | None:
    """'size_kb <= 32' -> ('size_kb', '<=', 32.0); '=' means the metric's natural limit; None if unparsable."""
    m = BUDGET_RE.match(str(text))
    if not m:
        return None
    name, op, value = m.groups()
    try:
        limit = float(value)
    except ValueError:  # the pattern's [0-9.]+ also matches "1.2.3"
        return None
    if op == "=":
        op = ">=" if _is_maximised(name) else "<="
    # A strict bound draws the same line as a weak one.
    return name, op if op.endswith("=") else op + "=", limit


def compact_config(config: Any) -> str:
    """'depth=1 width=16 bits=4/out:2': groups 'prefix.i' keys, drops layers beyond the active depth (and
    blocks 'prefix.S.B' beyond their stage's 'depth.S')."""
    if not isinstance(config, dict):
        return _fmt(config)
    depth = config.get("depth") if isinstance(config.get("depth"), int) else None
    groups: dict[str, list[str]] = {}
    for key, value in config.items():
        prefix, dot, suffix = str(key).partition(".")
        if not dot:
            groups.setdefault(prefix, []).append(_fmt(value))
            continue
        if suffix.isascii() and suffix.isdigit():  # int() refuses other scripts' digits ("²")
            # Inactive layers are spelled at their largest choice (one canonical config per
            # subnet); showing them would suggest layers the subnet does not have.
            if depth is not None and int(suffix) >= depth:
                continue
            groups.setdefault(prefix, []).append(_fmt(value))
        elif not _past_stage_depth(config, suffix):
            groups.setdefault(prefix, []).append(f"{suffix}:{_fmt(value)}")
    return " ".join(f"{k}={'/'.join(v)}" for k, v in groups.items())


def _past_stage_depth(config: dict[str, Any], suffix: str) -> bool:
    # 'S.B' of a staged net (the CNN): block B of stage S, inactive from B = depth.S on.
    stage, dot, block = suffix.partition(".")
    depth = config.get(f"depth.{stage}")
    return bool(dot) and block.isascii() and block.isdigit() and isinstance(depth, int) and int(block) >= depth


def _metric_keys(records: Iterable[dict[str, Any]]) -> list[str]:
    """Numeric keys of `records` that are metrics (not accuracy, not measurement bookkeeping)."""
    keys: dict[str, None] = {}
    for r in records:
        for k, v in r.items():
            if _num(v) is None or k in ("accuracy", "test_accuracy") or any(s in k for s in _NOT_METRICS):
                continue
            keys[k] = None
    return list(keys)


def _dedupe(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per subnet (validated rows re-measure configs the table may already hold; the last wins)."""
    seen: dict[str, dict[str, Any]] = {}
    for r in rows:
        key = r.get("key")
        if not isinstance(key, str) or not key:  # a damaged row's key may be a list (unhashable) or a number
            key = json.dumps(r.get("config"), sort_keys=True)
        seen[key] = r
    return list(seen.values())


def _png(fig: Any) -> str:
    """`fig` as a data:image/png;base64 URI."""
    buf = io.BytesIO()
    # No Software/date metadata: the same run gives the same bytes.
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _tex(text: Any) -> str:
    """`text` for a matplotlib label: '$' escaped, or a name such as 'a$\\frac$' is parsed as mathtext
    (and fails to draw, ending the report); a lone surrogate shown as its escape (matplotlib raised)."""
    return str(text).encode("utf-8", "backslashreplace").decode("utf-8").replace("$", r"\$")


def _img(uri: str, alt: str) -> str:
    """An <img> tag for a data URI."""
    return f'<img src="{uri}" alt="{html.escape(alt)}">'


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], left: Sequence[int] = (0,), cls: str = "") -> str:
    """An HTML table; `header` is plain text (escaped here), cells are already-escaped HTML."""
    c = f' class="{cls}"' if cls else ""
    head = "".join(f'<th{" class=l" if i in left else ""}>{html.escape(h)}</th>' for i, h in enumerate(header))
    body = "".join(
        "<tr>" + "".join(f'<td{" class=l" if i in left else ""}>{cell}</td>' for i, cell in enumerate(r)) + "</tr>"
        for r in rows
    )
    return f"<table{c}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _kv(pairs: Iterable[tuple[str, Any]]) -> str:
    """A two-column key/value table."""
    return _table(["", ""], [(html.escape(k), _e(v)) for k, v in pairs], left=(0, 1), cls="kv")


# ----------------------------------------------------------------------------- sections


def _header(run_dir: Path, front: dict[str, Any], measured: Sequence[dict[str, Any]],
            notes: list[str]) -> tuple[str, str]:
    """(experiment name, HTML) of the header: run facts, objectives, budgets, device, timing, stage times;
    `measured` = the measure table's rows then the validated ones."""
    run = _read_optional(run_dir / "run.json", notes, dict) or {}
    device = _read_optional(run_dir / "measure" / "device.json", notes, dict)
    name = str(run.get("name") or front.get("experiment") or run_dir.name)
    # measure/device.json holds one profile per latency metric ({"latency_ms": {..., "date": ...}}).
    profiles = {k: v for k, v in (device or {}).items() if isinstance(v, dict)}
    dates = sorted(str(p["date"]) for p in profiles.values() if isinstance(p.get("date"), str))
    date = run.get("date") or (dates[-1] if dates else None)
    if not date:
        # The front's file is the last written, so its mtime is when the run finished.
        shown = run_dir / ("export" if front.get("exported", True) else "search") / "front.json"
        date = datetime.fromtimestamp(shown.stat().st_mtime, UTC).isoformat(timespec="seconds")
    objectives = [str(o) for o in front.get("objectives") or []]
    budgets = [str(b) for b in front.get("budgets") or []]
    out = [f"<h1>{html.escape(name)}</h1>",
           f'<p class="muted">report generated {html.escape(datetime.now(UTC).isoformat(timespec="seconds"))}'
           f" from <code>{html.escape(str(run_dir))}</code></p>"]
    facts = [("experiment", name), ("experiment file", run.get("experiment")), ("date", date),
             ("space size", run.get("space_size")),
             ("objectives", ", ".join(f"{o} {'↑' if _maximised(front, o) else '↓'}" for o in objectives) or "—"),
             ("budgets", ", ".join(budgets) or "none"),
             ("exported subnets", len(front["members"]) if front.get("exported", True) else f"none ({front['why']})")]
    out.append(_kv(facts))
    for metric, profile in profiles.items():
        out.append(f"<h3>Device profile of {html.escape(metric)} (measure/device.json)</h3>")
        out.append(_kv(profile.items()))
    agreement = _read_optional(run_dir / "measure" / "repeatability.json", notes, dict)
    if isinstance(agreement, dict) and len(agreement) > 1:
        out.append(f"<h3>Timing repeatability (measure/repeatability.json: {_e(agreement.get('configs'))} subnets "
                   "timed again in an independent pass)</h3>")
        rows = []
        for k, v in agreement.items():
            if isinstance(v, dict):
                raw = v.get("unanchored") if isinstance(v.get("unanchored"), dict) else {}
                rows.append((html.escape(k), _e(v.get("within_5pct")), _e(v.get("within_10pct")),
                             _e(v.get("median_rel_diff")), _e(raw.get("within_10pct")), _e(v.get("session_scale"))))
        out.append(_table(["latency", "within ±5 %", "within ±10 %", "median relative difference",
                           "within ±10 % before the anchor scale", "anchor scale"], rows))
    anchored = _anchoring_rows(measured)
    if anchored:
        out.append("<h3>Anchored timing (rows timed against reference subnets; re-timed = after a slow spell)</h3>")
        out.append(_table(["latency", "rows anchored", "rows re-timed", "scale min", "scale max"], anchored))
    stamps = [s for s in STAGES if (run_dir / s / "stamp.json").is_file()]
    stamps += sorted(p.parent.name for p in run_dir.glob("*/stamp.json") if p.parent.name not in STAGES)
    times = []
    for stage in stamps:
        stamp = _read_optional(run_dir / stage / "stamp.json", notes, dict)
        times.append((stage, _num(stamp.get("wall_s")) if isinstance(stamp, dict) else None))
    if times:
        total = sum(t for _, t in times if t is not None)
        rows = [(html.escape(s), _e(t)) for s, t in times] + [("<b>total</b>", f"<b>{_e(round(total, 2))}</b>")]
        out.append("<h3>Stage wall times</h3>")
        out.append(_table(["stage", "wall s"], rows))
    return name, "\n".join(out)


def _anchoring_rows(rows: Sequence[dict[str, Any]]) -> list[tuple[str, ...]]:
    """Per latency metric: rows timed with anchors, how many needed a retry, their scale range (HTML cells)."""
    out = []
    scale_keys = sorted({k for r in rows for k in r if k.startswith("latency_session_scale")})
    for key in scale_keys:
        at = key[len("latency_session_scale"):]
        scales = [float(r[key]) for r in rows if _num(r.get(key)) is not None]
        if not scales:  # only damaged values under this key: nothing to show
            continue
        retried = sum(1 for r in rows if key in r and (_num(r.get(f"latency_attempts{at}")) or 1) > 1)
        out.append((html.escape(f"latency_ms{at}"), _e(len(scales)), _e(retried),
                    _e(round(min(scales), 3)), _e(round(max(scales), 3))))
    return out


def _budget_lines(budgets: Sequence[str]) -> list[tuple[str, str, float, str]]:
    """Parsed budgets as (metric, op, value, original text); unparsable ones are left out."""
    parsed = []
    for text in budgets:
        b = parse_budget(text)
        if b is not None:
            parsed.append((*b, str(text)))
    return parsed


def _pareto(name: str, front: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """Accuracy against each cost objective (and each budgeted cost): measured subnets, front, budgets."""
    members = front["members"]
    budgets = _budget_lines(front.get("budgets") or [])
    costs = [o for o in front.get("objectives") or [] if not _maximised(front, str(o))]
    costs += [m for m, _, _, _ in budgets if not _maximised(front, m) and m not in costs]
    # A cost only gets a panel when some subnet has a value for it (e.g. an extra metric not measured).
    costs = [c for c in costs if any(_num(r.get(c)) is not None for r in [*rows, *members])] or [
        c for c in ("latency_ms", "size_kb") if any(_num(r.get(c)) is not None for r in [*rows, *members])]
    exported = front.get("exported", True)
    label = "exported front" if exported else "measured front"
    head = (f"<h2>Pareto front</h2><p>{len(rows)} measured subnets (measure/table.jsonl + search/validated.jsonl), "
            f"{len(members)} {'exported' if exported else 'on the search front, not exported'}; budgets dashed.</p>")
    if not costs:
        return head + '<p class="note">no cost metric with values to plot.</p>'
    fig, axes = panels(len(costs), width=5.0, height=3.9)
    for ax, metric in zip(axes, costs):
        pts = [(_num(r.get(metric)), _num(r.get("accuracy"))) for r in rows]
        pts = [(x, y) for x, y in pts if x is not None and y is not None]
        fpts = [(_num(m.get(metric)), _num(m.get("accuracy")), _num(m.get("test_accuracy"))) for m in members]
        fpts = [p for p in fpts if p[0] is not None]
        if pts:
            ax.scatter(*zip(*pts), s=10, c="0.72", label="measured subnets (val)")
        if fpts:
            ax.scatter([p[0] for p in fpts if p[1] is not None], [p[1] for p in fpts if p[1] is not None],
                       s=32, c="C3", zorder=3, label=f"{label} (val)")
            ax.scatter([p[0] for p in fpts if p[2] is not None], [p[2] for p in fpts if p[2] is not None],
                       s=20, marker="x", c="C0", zorder=3, label=f"{label} (test)")
        for bm, _op, value, text in budgets:
            if bm == metric:
                ax.axvline(value, ls="--", c="k", lw=1, label=f"budget {_tex(text)}")
            elif _is_maximised(bm) and bm.startswith("accuracy"):
                ax.axhline(value, ls="--", c="C2", lw=1, label=f"budget {_tex(text)}")
        xs = [p[0] for p in pts] + [p[0] for p in fpts]
        # Costs span orders of magnitude across widths and depths; log only where it is valid.
        if xs and min(xs) > 0 and max(xs) / min(xs) > 20:
            ax.set_xscale("log")
        ax.set_xlabel(_tex(metric))
        ax.set_ylabel("accuracy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(f"{_tex(name)}: accuracy vs cost")
    return head + _img(_png(fig), "Pareto plot: accuracy against each cost objective")


def _quality(run_dir: Path, members: list[dict[str, Any]], notes: list[str], what: str = "exported front") -> str:
    """Predictor held-out quality table (fit/quality.json) and predicted-vs-measured plots of the front."""
    out = ["<h2>Predictor quality</h2>"]
    # Round r > 0 searched with predictors refitted on every row measured before it (search/round<r>).
    sources = [("fit", run_dir / "fit" / "quality.json")] + [
        (f"round {r} refit", run_dir / "search" / f"round{r}" / "quality.json")
        for r in sorted(int(p.name[5:]) for p in (run_dir / "search").glob("round*")
                        if p.is_dir() and p.name[5:].isascii() and p.name[5:].isdigit())]
    rows, extra, read_any = [], [], False
    for label, path in sources:
        if not path.is_file():
            continue
        quality = _read_optional(path, notes, dict)
        if not isinstance(quality, dict):
            read_any = True  # a note says why it is left out
            continue
        read_any = True
        for k, v in quality.items():
            if isinstance(v, dict) and "kind" in v and isinstance(v.get("holdout"), dict):
                h = v["holdout"]
                rows.append([label, html.escape(k), _e(v["kind"]), *(_e(h.get(f)) for f in HOLDOUT_FIELDS),
                             _e(v.get("macs_proxy_kendall_tau"))])
            elif label == "fit" and not isinstance(v, (dict, list)) and k not in ("id", "fingerprint"):
                extra.append((k, v))
    if rows:
        out.append(_table(["predictors", "metric", "predictor", *HOLDOUT_FIELDS, "MACs-proxy τ"], rows,
                          left=(0, 1, 2)))
        out.append('<p class="muted">Held-out rows, predictor fitted on the rest; MACs-proxy τ is the Kendall '
                   "τ of ranking by MACs alone, the baseline a latency predictor has to beat."
                   + (" Each member's predictions below are those of the round that proposed it."
                      if len({r[0] for r in rows}) > 1 else "") + "</p>")
    if extra:
        out.append(_kv(extra))
    if not read_any:
        out.append('<p class="note">no fit/quality.json: predictor quality not recorded.</p>')
    # A measure-table row's prediction is in-sample (every predictor was fitted on the table): only the
    # others, predicted by the round that proposed them before they were measured, show predictor quality.
    predicted = [m for m in members if isinstance(m.get("predicted"), dict) and m.get("source") != "table"]
    in_sample = sum(isinstance(m.get("predicted"), dict) and m.get("source") == "table" for m in members)
    scatters = []
    for metric in _metric_keys([m["predicted"] for m in predicted]) + (
            ["accuracy"] if any(_num(m["predicted"].get("accuracy")) is not None for m in predicted) else []):
        pairs = [(_num(m.get(metric)), _num(m["predicted"].get(metric)), _num(m["predicted"].get(f"{metric}_std")))
                 for m in predicted]
        pairs = [p for p in pairs if p[0] is not None and p[1] is not None]
        # Exact metrics (size, MACs) are "predicted" by counting: a y = x plot of them says nothing.
        if pairs and any(abs(a - b) > 1e-9 * max(abs(a), 1.0) for a, b, _ in pairs):
            scatters.append((metric, pairs))
    scatters.sort(key=lambda p: p[0] != "accuracy")
    if scatters:
        fig, axes = panels(len(scatters), width=4.2, height=4.0)
        for ax, (metric, pairs) in zip(axes, scatters):
            meas, pred = [p[0] for p in pairs], [p[1] for p in pairs]
            std = [abs(p[2] or 0.0) for p in pairs]  # a damaged file's negative std: matplotlib refuses it
            ax.errorbar(meas, pred, yerr=std if any(std) else None, fmt="o", ms=4, c="C3", ecolor="0.6", lw=1)
            lo, hi = min(meas + pred), max(meas + pred)
            ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="y = x")
            mape = statistics.fmean(abs(b - a) / abs(a) for a, b in zip(meas, pred) if a) if any(meas) else math.nan
            ax.set_title(f"{_tex(metric)}: MAPE {mape:.3f} (n={len(pairs)})", fontsize=10)
            ax.set_xlabel(f"measured {_tex(metric)}")
            ax.set_ylabel(f"predicted {_tex(metric)}")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, loc="upper left")
        fig.suptitle(f"{what}: predicted vs measured")
        out.append(f"<h3>Predicted vs measured ({html.escape(what)})</h3>")
        out.append(f'<p class="muted">{len(predicted)} member(s) predicted before they were measured'
                   + (f"; {in_sample} from the measure table, which the predictors were fitted on, left out"
                      if in_sample else "") + ".</p>")
        out.append(_img(_png(fig), f"predicted against measured metrics of the {what}"))
    else:
        out.append(f'<p class="muted">no member of the {html.escape(what)} carries predicted metrics that differ '
                   "from its measured ones.</p>")
    return "\n".join(out)


def _rounds(run_dir: Path, notes: list[str]) -> str:
    """Hypervolume (and predictor quality) per refit round from search/rounds.json, if present."""
    out = ["<h2>Hypervolume per round</h2>"]
    rounds = _read_optional(run_dir / "search" / "rounds.json", notes, list)
    if not (run_dir / "search" / "stamp.json").is_file():
        out.append(f"<p>no finished search in {html.escape(str(run_dir / 'search'))}</p>")
        return "\n".join(out)
    if not isinstance(rounds, list) or not rounds:
        # A finished search writes a row per round, a single round too: none is a missing or damaged file
        # (it read "single round (no refit loop)" for a two-round search whose file was deleted).
        if not (run_dir / "search" / "rounds.json").is_file():
            out.append("<p>not shown: search/rounds.json is missing (`nas search` or `nas run` writes it again)</p>")
        elif not isinstance(rounds, list):
            out.append("<p>not shown: search/rounds.json cannot be read (see the notes)</p>")
        else:
            out.append("<p>not shown: search/rounds.json lists no round</p>")
        return "\n".join(out)
    rounds = [r for r in rounds if isinstance(r, dict)]
    pq_metrics: dict[str, None] = {}
    for r in rounds:
        if isinstance(r.get("predictor_quality"), dict):
            pq_metrics.update(dict.fromkeys(r["predictor_quality"]))
    header = ["round", "trials", "measured", "front size", "hypervolume"]
    for m in pq_metrics:
        header += [f"{m} τ of the refit", f"{m} MAPE of the refit"]
    rows = []
    for r in rounds:
        pq = r.get("predictor_quality") if isinstance(r.get("predictor_quality"), dict) else {}
        cells = [_e(r.get(k)) for k in ("round", "trials", "measured", "front_size", "hypervolume")]
        for m in pq_metrics:
            q = pq.get(m) if isinstance(pq.get(m), dict) else {}
            cells += [_e(q.get("kendall_tau")), _e(q.get("mape"))]
        rows.append(cells)
    hv = [(_num(r.get("round")), _num(r.get("hypervolume"))) for r in rounds]
    # A round is a count: a damaged one (2.5, 1e300) would make no tick range (or an endless one).
    hv = [p for p in hv if p[0] is not None and p[1] is not None and p[0].is_integer() and abs(p[0]) < 1e9]
    if hv:
        from matplotlib.ticker import MaxNLocator

        fig, axes = figure(2 if pq_metrics else 1, width=5.0, height=3.5)
        for a in axes[0]:
            a.xaxis.set_major_locator(MaxNLocator(integer=True))  # rounds are counts, not a continuum
        ax = axes[0][0]
        ax.plot(*zip(*hv), "o-", c="C3")
        ax.set_xlabel("round")
        ax.set_ylabel("hypervolume")
        ax.grid(alpha=0.3)
        if pq_metrics:
            ax2 = axes[0][1]
            for i, m in enumerate(pq_metrics):
                taus = [(_num(r.get("round")), _num(q.get("kendall_tau"))) for r in rounds
                        for q in [_dict(_dict(r.get("predictor_quality")).get(m))]]
                taus = [p for p in taus if p[0] is not None and p[1] is not None]
                if taus:
                    ax2.plot(*zip(*taus), "o-", c=f"C{i}", label=_tex(m))
            ax2.set_xlabel("round")
            ax2.set_ylabel("held-out τ of the refit after the round")
            ax2.grid(alpha=0.3)
            if ax2.get_lines():  # every tau null (a NaN written as null): no line, and legend() warns
                ax2.legend(fontsize=7)
            else:
                ax2.text(0.5, 0.5, "no τ recorded", ha="center", va="center", transform=ax2.transAxes)
        first, last = int(min(p[0] for p in hv)), int(max(p[0] for p in hv))
        if last - first < 12:  # a locator puts fractional ticks around a single round
            for a in axes[0]:
                a.set_xticks(range(first, last + 1))
                a.set_xlim(first - 0.5, last + 0.5)
        out.append(_img(_png(fig), "hypervolume per round"))
    out.append(_table(header, rows, left=()))
    if pq_metrics:
        out.append('<p class="muted">τ and MAPE of a round: held-out quality of the predictors refitted on every '
                   "row measured up to the end of that round, which the next round searches with.</p>")
    return "\n".join(out)


def _members(front: dict[str, Any]) -> str:
    """Every exported member: compact config, val/test accuracy, costs, predictions side by side."""
    members = front["members"]
    objectives = [str(o) for o in front.get("objectives") or [] if not _is_maximised(str(o))]
    costs = list(dict.fromkeys([*objectives, *(c for c in ("latency_ms", "size_kb", "macs")), *_metric_keys(members)]))
    costs = [c for c in costs if any(_num(m.get(c)) is not None for m in members)]

    def has_prediction(metric: str) -> bool:
        # Only metrics a model predicts get a column; for counted ones the prediction is the value.
        pairs = [(_num(m.get(metric)), _num((m.get("predicted") or {}).get(metric))) for m in members
                 if isinstance(m.get("predicted"), dict)]
        return any(a is not None and b is not None and abs(a - b) > 1e-9 * max(abs(a), 1.0) for a, b in pairs)

    cols: list[tuple[str, str, bool]] = [("accuracy", "val acc", False)]
    if has_prediction("accuracy"):
        cols.append(("accuracy", "pred", True))
    cols.append(("test_accuracy", "test acc", False))
    for c in costs:
        cols.append((c, c, False))
        if has_prediction(c):
            cols.append((c, "pred", True))
    rows = []
    for m in members:
        pred = m.get("predicted") if isinstance(m.get("predicted"), dict) else {}
        cells = [html.escape(str(m.get("name") or "—")),
                 f'<code title="{html.escape(json.dumps(m.get("config"), sort_keys=True))}">'
                 f"{html.escape(compact_config(m.get('config')))}</code>"]
        for key, _, is_pred in cols:
            if is_pred:
                v, std = pred.get(key), _num(pred.get(f"{key}_std"))
                text = _e(v) + (f" ± {_e(std)}" if std else "")
                cells.append(f'<span class="pred">{text}</span>')
            else:
                cells.append(_e(m.get(key)))
        rows.append(cells)
    title = ("<h2>Exported subnets</h2><p>" if front.get("exported", True) else
             f"<h2>Measured front (not exported)</h2><p>{html.escape(front['why'])}: no test accuracy yet. ")
    return (title + "Accuracy on the validation split (which the search saw) and on the test "
            "split (which it never saw); <span class=pred>pred</span> columns are the predictors' values. "
            "Hover a config for all of it.</p>"
            + _table(["name", "config", *(label for _, label, _ in cols)], rows, left=(0, 1)))


def _round_up(value: float, digits: int = 3) -> str:
    """`value` (> 0) rounded up to `digits` significant figures, as short text."""
    if not 1e-300 < value < 1e300:  # beyond, the step underflows to 0 or the rounding overflows
        return f"{value:.{digits}g}"
    step = 10.0 ** (math.floor(math.log10(value)) - digits + 1)
    # Re-parse the rounded text so float noise (0.0070300000001) does not print; :g keeps it short.
    rounded = float(f"{math.ceil(value / step - 1e-9) * step:.{digits}g}")
    return f"{rounded:g}"


def _usage(run_dir: Path, front: dict[str, Any]) -> str:
    """How to query the front and open the Optuna study."""
    members = front["members"]
    # One member's own costs, rounded up, make an example budget the query can answer (independent
    # medians per metric might not be met by any single subnet).
    ranked = sorted((m for m in members if _num(m.get("accuracy")) is not None), key=lambda m: m["accuracy"])
    example = ranked[len(ranked) // 2] if ranked else {}
    budgets = []
    for metric in [str(o) for o in front.get("objectives") or [] if not _is_maximised(str(o))]:
        value = _num(example.get(metric))
        if value is not None and value > 0:
            budgets.append(f"--budget {metric}={_round_up(value)}")
    run = shlex.quote(str(run_dir))
    first = []
    from nas.query import search_failure

    if search_failure(run_dir):  # the queries below are refused until a search succeeds
        first = ["# the last search failed (see the note above): nas query refuses this export until one "
                 "succeeds; change the budgets, then nas run"]
    elif not front.get("exported", True):
        source = (_read_optional(run_dir / "run.json", [], dict) or {}).get("experiment") or "EXPERIMENT.toml"
        first = [f"nas export {shlex.quote(str(source))} --run-dir {run}   "
                 "# export this front; nas query answers from it"]
    # The same member's accuracy, rounded down: an accuracy the front meets (a fixed 0.95 often was not).
    accuracy = _num(example.get("accuracy"))
    accuracy_floor = f"{math.floor(accuracy * 100) / 100:g}" if accuracy is not None else "0.5"
    lines = [*first, f"nas query {run} {' '.join(budgets) or '--budget latency_ms=0.05'}".rstrip(),
             f"nas query {run} --budget 'accuracy>={accuracy_floor}'",
             f"nas query {run} --from predictors {' '.join(budgets) or '--budget latency_ms=0.05'} --measure"
             "   # best of the whole space",
             f"nas query {run} --predict config.json   # metrics of any config of the space"]
    db, journal = run_dir / "search" / "study.db", run_dir / "search" / "study.journal"
    if db.is_file():
        url = "sqlite:///" + str(db.absolute())
        lines.append(f"optuna-dashboard {shlex.quote(url)}   # pip install optuna-dashboard")
    elif journal.is_file():
        lines.append(f"optuna-dashboard {shlex.quote(str(journal))}   # pip install optuna-dashboard")
    else:
        lines.append(f"# no Optuna study in {run_dir / 'search'}")
    return "<h2>How to use</h2><pre>" + html.escape("\n".join(lines)) + "</pre>"


# ----------------------------------------------------------------------------- entry points


def render_report(run_dir: str | Path) -> str:
    """The report page of `run_dir` as an HTML string (StageError if it has neither search results nor an export)."""
    from nas.query import check_run_dir

    check_run_dir(run_dir)
    run_dir = Path(run_dir)
    notes: list[str] = []
    front = {**front_to_show(run_dir, notes), "directions": _objective_directions(run_dir)}
    measured = (_read_rows(run_dir / "measure" / "table.jsonl", notes, required=True)
                + _read_rows(run_dir / "search" / "validated.jsonl", notes))
    rows = _dedupe(measured)
    name, header = _header(run_dir, front, measured, notes)
    what = "exported front" if front["exported"] else "measured front"
    sections = [header, _pareto(name, front, rows), _quality(run_dir, front["members"], notes, what),
                _rounds(run_dir, notes), _members(front), _usage(run_dir, front)]
    if notes:
        sections.append("<h2>Notes</h2><ul>" + "".join(f'<li class="note">{html.escape(n)}</li>' for n in notes)
                        + "</ul>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(name)} — nas report</title><style>{CSS}</style></head><body>\n"
            + "\n".join(sections) + "\n</body></html>\n")


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the run's self-contained report (default RUN_DIR/report.html) atomically; return its path."""
    path = Path(out) if out is not None else Path(run_dir) / "report.html"
    if path.suffix.lower() not in (".html", ".htm") and not path.is_dir():  # a folder: write_bytes names it
        # An HTML page under another name (report.md) opens as text or not at all.
        raise NasError(f"--out {path}: the report is one self-contained HTML page; give a path ending in .html")
    # "replace": a lone surrogate is valid JSON ("\ud800") in a damaged name, and no UTF-8.
    write_bytes(path, render_report(run_dir).encode("utf-8", "replace"))
    return path


def add_report_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add the `report` subcommand (positional run_dir, optional --out) to a subparsers object."""
    p = subparsers.add_parser("report", help="write a self-contained HTML report of a run (RUN_DIR/report.html)")
    p.add_argument("run_dir", help="run directory, e.g. runs/quickstart")
    p.add_argument("--out", metavar="PATH", help="where to write the page (default: RUN_DIR/report.html)")


def run_report(args: argparse.Namespace) -> int:
    """Handler of `nas report`: write the page, print its path, return 0."""
    print(write_report(args.run_dir, getattr(args, "out", None)))
    return 0
