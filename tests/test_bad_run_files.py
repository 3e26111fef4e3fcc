"""Damaged files of a finished run directory (export/front.json, run.json, the report's inputs): `nas query`
and `nas report` give one `error: ...` line naming the file, exit code 2 and no traceback; the report turns a
damaged optional file into a note instead. Every run directory here is written by hand (no training)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import REPO, fake_predictors, write_tiny
from nas.cli import main
from nas.errors import NasError
from nas.query import parse_budget, parse_budgets
from nas.report import render_report


def _member(i: int) -> dict[str, Any]:
    """A plausible exported front member: larger index, larger and more accurate."""
    return {"name": f"{i:02d}_m{i}", "config": {"depth": 1, "width.0": 8 * (i + 1), "bits.0": 8, "bits.out": 8},
            "accuracy": 0.8 + 0.05 * i, "test_accuracy": 0.79 + 0.05 * i, "size_kb": 1.0 + 2 * i,
            "latency_ms": 0.01 * (i + 1), "macs": 1000 * (i + 1),
            "predicted": {"accuracy": 0.8 + 0.05 * i, "accuracy_std": 0.01, "size_kb": 1.0 + 2 * i}}


def _front() -> dict[str, Any]:
    return {"experiment": "tiny", "objectives": ["accuracy", "latency_ms", "size_kb"], "budgets": ["size_kb <= 4"],
            "members": [_member(i) for i in range(3)]}


def _run_dir(tmp_path: Path, front: Any = None, *, text: str | bytes | None = None) -> Path:
    """A run directory holding only export/front.json (`front` as JSON, or `text` as is) and its members' folders."""
    run = tmp_path / "run"
    (run / "export").mkdir(parents=True)
    for i in range(3):
        (run / "export" / _member(i)["name"]).mkdir()
    path = run / "export" / "front.json"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text if text is not None else json.dumps(_front() if front is None else front))
    return run


def _fails(argv: list[str], capsys: pytest.CaptureFixture[str], *says: str) -> str:
    """Run the CLI in-process: exit code 2, one `error:` line on stderr mentioning each of `says`."""
    rc = main(argv)
    out, err = capsys.readouterr()
    assert rc == 2, f"exit code {rc}; stderr={err!r}"
    assert out == "" and err.startswith("error: ") and err.count("\n") == 1, err
    for s in says:
        assert s in err, f"{err!r} does not mention {s!r}"
    return err


def _with(index: int, key: str, value: Any) -> dict[str, Any]:
    front = _front()
    front["members"][index][key] = value
    return front


def _member_is(index: int, value: Any) -> dict[str, Any]:
    front = _front()
    front["members"][index] = value
    return front


def _nested_nan() -> dict[str, Any]:
    front = _front()
    front["members"][2]["predicted"]["size_kb"] = math.nan
    return front


# (front.json, extra query arguments, what the error line must say)
FRONTS: dict[str, tuple[Callable[[], Any], list[str], tuple[str, ...]]] = {
    "member 1 without accuracy": (lambda: {**_front(), "members": [_member(0), {"name": "01_m1"}]}, [],
                                  ("front.json", "member 1", "01_m1", "'accuracy'")),
    "string budget metric": (lambda: _with(1, "size_kb", "big"), ["--budget", "size_kb=8"],
                             ("front.json", "member 1", "'size_kb'", "not a number")),
    "null budget metric": (lambda: _with(1, "size_kb", None), ["--budget", "size_kb=8"],
                           ("front.json", "member 1", "'size_kb'", "null")),
    "bool budget metric": (lambda: _with(2, "size_kb", True), ["--budget", "size_kb=8"],
                           ("front.json", "member 2", "'size_kb'")),
    "null accuracy of member 0": (lambda: _with(0, "accuracy", None), [], ("front.json", "member 0", "'accuracy'")),
    "string accuracy": (lambda: _with(0, "accuracy", "x"), [], ("front.json", "member 0", "'accuracy'")),
    "member that is a list": (lambda: _member_is(1, [1, 2]), [], ("front.json", "member 1", "not an object")),
    "member without a name": (lambda: _with(1, "name", 7), [], ("front.json", "member 1", "no name")),
    "NaN accuracy": (lambda: _with(0, "accuracy", math.nan), [], ("front.json", "member 0", "'accuracy'", "finite")),
    "infinite size": (lambda: _with(1, "size_kb", -math.inf), [], ("front.json", "member 1", "'size_kb'", "finite")),
    "NaN in a member's predictions": (_nested_nan, [], ("front.json", "member 2", "predicted.size_kb", "finite")),
    "members not a list": (lambda: {**_front(), "members": {"0": _member(0)}}, [], ("front.json", "members")),
    "no members": (lambda: {**_front(), "members": []}, [], ("front.json", "members")),
    # The report refused these and query read past them (one load_front for both since).
    "budgets not a list": (lambda: {**_front(), "budgets": 5}, [], ("front.json", "'budgets'", "list of strings")),
    "objectives of objects": (lambda: {**_front(), "objectives": [{"metric": "size_kb"}]}, [],
                              ("front.json", "'objectives'")),
}


@pytest.mark.parametrize("name", list(FRONTS))
def test_query_of_a_damaged_front(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make, extra, says = FRONTS[name]
    # allow_nan: Python's json writes (and reads) NaN and Infinity, as a damaged file may hold them.
    run = _run_dir(tmp_path, text=json.dumps(make(), allow_nan=True))
    _fails(["query", str(run), *extra], capsys, *says)


def test_query_of_a_front_that_is_not_utf8(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _run_dir(tmp_path, text=b"\xff\xfe{not text")
    _fails(["query", str(run)], capsys, "front.json", "corrupt")


def test_query_of_a_good_front_still_answers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    front = _front()
    front["members"][0]["latency_e2e_ms"] = None  # json_safe writes a NaN it never measured as null: not used here
    run = _run_dir(tmp_path, front)
    assert main(["query", str(run), "--budget", "size_kb=4"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["name"] == "01_m1" and answer["candidates"] == 2 and answer["path"] == str(run / "export" / "01_m1")
    assert main(["query", str(run)]) == 0 and json.loads(capsys.readouterr().out)["name"] == "02_m2"


def test_damaged_front_from_a_process_has_no_traceback(tmp_path: Path) -> None:
    run = _run_dir(tmp_path, _with(1, "size_kb", "big"))
    proc = subprocess.run([sys.executable, "-m", "nas.cli", "query", str(run), "--budget", "size_kb=8"],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1 and "member 1" in proc.stderr and proc.stdout == ""


# -- run.json, read by --predict and --from predictors ---------------------------------------------
@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"depth": 1, "width.0": 8, "bits.0": 8, "bits.out": 8}))
    return path


def _with_run_json(tmp_path: Path, text: str) -> Path:
    run = _run_dir(tmp_path)
    (run / "run.json").write_text(text)
    return run


@pytest.mark.parametrize("text", ['{"experiment": 5}', '{"experiment": null}', "[1]", "{}", '"x"'])
@pytest.mark.parametrize("how", ["predict", "predictors"])
def test_query_with_a_damaged_run_json(text: str, how: str, tmp_path: Path, config_file: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    run = _with_run_json(tmp_path, text)
    ask = ["--predict", str(config_file)] if how == "predict" else ["--from", "predictors", "--budget", "size_kb=4"]
    _fails(["query", str(run), *ask], capsys, "run.json", "'experiment'")


def test_run_json_naming_a_missing_experiment(tmp_path: Path, config_file: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    run = _with_run_json(tmp_path, json.dumps({"experiment": str(tmp_path / "gone.toml")}))
    _fails(["query", str(run), "--predict", str(config_file)], capsys, "run.json", "gone.toml", "not found")


def test_run_json_naming_an_invalid_experiment(tmp_path: Path, config_file: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    exp = write_tiny(tmp_path)
    exp.write_text(exp.read_text().replace("bits = [4, 8, 32]", "bits = [64]"))
    run = _with_run_json(tmp_path, json.dumps({"experiment": str(exp)}))
    _fails(["query", str(run), "--predict", str(config_file)], capsys,
           "the run's experiment", str(exp), "model.space.bits")


def test_predict_config_outside_the_space_of_run_json_experiment(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    exp = write_tiny(tmp_path)  # as if run.json named another experiment than the run's: its space has no bits.7
    run = _with_run_json(tmp_path, json.dumps({"experiment": str(exp), "name": "tiny"}))
    config = tmp_path / "other.json"
    config.write_text(json.dumps({"depth": 1, "bits.7": 8}))
    _fails(["query", str(run), "--predict", str(config)], capsys, "config.bits.7", str(exp), "the run's experiment")


# -- nas report ------------------------------------------------------------------------------------
def _report_run(tmp_path: Path) -> Path:
    """A run directory with the files the report reads besides the front (all optional)."""
    run = _run_dir(tmp_path)
    (run / "run.json").write_text(json.dumps({"experiment": "/x/tiny.toml", "name": "tiny", "space_size": 162}))
    (run / "measure").mkdir()
    (run / "measure" / "device.json").write_text(  # one profile per latency metric, as nas.measure writes it
        json.dumps({"latency_ms": {"device": "cpu", "date": "2026-01-01T00:00:00+00:00"}}))
    (run / "measure" / "table.jsonl").write_text(
        "".join(json.dumps({**_member(i), "key": f"k{i}"}) + "\n" for i in range(3)))
    return run


@pytest.mark.parametrize(("rel", "text"), [("run.json", '"x"'), ("run.json", "[1]"),
                                           ("measure/device.json", '"x"'), ("measure/device.json", "[]"),
                                           ("fit/quality.json", "[1]"), ("search/rounds.json", '{"round": 1}'),
                                           ("train/stamp.json", "[]")])
def test_report_notes_a_wrongly_shaped_optional_file(rel: str, text: str, tmp_path: Path) -> None:
    run = _report_run(tmp_path)
    (run / rel).parent.mkdir(parents=True, exist_ok=True)
    (run / rel).write_text(text)
    page = render_report(run)
    assert "<h2>Notes</h2>" in page and f"{rel} is not" in page and "02_m2" in page


def test_report_rows_with_an_unhashable_key(tmp_path: Path) -> None:
    run = _report_run(tmp_path)
    (run / "measure" / "table.jsonl").write_text(
        "".join(json.dumps({**_member(i), "key": [i]}) + "\n" for i in range(3)))
    assert "02_m2" in render_report(run)


@pytest.mark.parametrize("key", ["objectives", "budgets"])
@pytest.mark.parametrize("value", [[[], "size_kb"], "size_kb", 5, [{"metric": "size_kb"}]])
def test_report_of_a_front_with_bad_objectives_or_budgets(key: str, value: Any, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    run = _report_run(tmp_path)
    (run / "export" / "front.json").write_text(json.dumps({**_front(), key: value}))
    _fails(["report", str(run), "--out", str(tmp_path / "r.html")], capsys, "front.json", repr(key))
    assert not (tmp_path / "r.html").exists()


def test_report_of_a_good_run_has_no_notes(tmp_path: Path) -> None:
    page = render_report(_report_run(tmp_path))
    assert "<h2>Notes</h2>" not in page and "2026-01-01" in page and "02_m2" in page


# -- --budget values -------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "says"), [("size_kb=abc", "'abc' is not a number"),
                                            ("size_kb=1e", "'1e' is not a number"),
                                            ("size_kb=1e999", "not a finite number"),
                                            ("size_kb<=inf", "not a finite number"),
                                            ("accuracy>=nan", "not a finite number"),
                                            ("size_kb<8", "expected METRIC=VALUE"),
                                            ("size_kb=-1", "never negative"),
                                            ("accuracy=95", r"a fraction in \[0, 1\].*use 0.95"),
                                            ("accuracy>=95%", r"a percentage\? give a fraction"),
                                            ("latency_ms@=1", "expected METRIC=VALUE")])
def test_budget_values(text: str, says: str) -> None:
    with pytest.raises(NasError, match=says):
        parse_budget(text)


@pytest.mark.parametrize(("texts", "says"), [(["size_kb=2", "size_kb=100"], "size_kb <= given twice"),
                                             (["accuracy>=0.9", "accuracy<=0.5"], "leave no value")])
def test_budgets_given_twice_or_leaving_no_value(texts: list[str], says: str) -> None:
    with pytest.raises(NasError, match=says):
        parse_budgets(texts)
    assert parse_budgets(["accuracy>=0.5", "accuracy<=0.9", "size_kb=2"])[1] == ("accuracy", "<=", 0.9)


@pytest.mark.parametrize(("budgets", "says"), [(None, "got NoneType"), ("size_kb=8", "got str"),
                                               ([8], "expected a 'METRIC<=VALUE' string"),
                                               ({"size_kb>": 8}, "not a metric name"),
                                               ({"accuracy<": 0.5}, "not a metric name"),
                                               ({"size_kb": "8"}, "'8' is not a number"),
                                               ({"size_kb": True}, "True is not a number"),
                                               ({"size_kb": 10**400}, "not a finite number")])
def test_budgets_from_python_that_are_no_budgets(budgets: Any, says: str) -> None:
    with pytest.raises(NasError, match=says):
        parse_budgets(budgets)
    assert parse_budgets({"size_kb": 8, "accuracy": 0.5}) == [("size_kb", "<=", 8.0), ("accuracy", ">=", 0.5)]


def test_budget_value_from_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _run_dir(tmp_path)
    _fails(["query", str(run), "--budget", "size_kb=abc"], capsys, "'abc' is not a number")
    _fails(["query", str(run), "--budget", "size_kb=nan"], capsys, "not a finite number")
    assert parse_budget(" size_kb = 1.5e1 ") == ("size_kb", "<=", 15.0)
    assert parse_budget("accuracy=0.9") == ("accuracy", ">=", 0.9)



def test_the_nearest_value_of_a_budget_nothing_meets_never_reads_as_meeting_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The smallest member is 0.40625 KiB: at 4 digits, '0.4062', which seems to meet "<= 0.40624".
    run = _run_dir(tmp_path, _with(0, "size_kb", 0.40625))
    assert main(["query", str(run), "--budget", "size_kb<=0.40624"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and "size_kb min 0.40625)" in err and err.count("\n") == 1, err
    assert main(["query", str(run), "--budget", "size_kb<=0.3"]) == 1
    assert "size_kb min 0.4062)" in capsys.readouterr().err  # 4 digits where they suffice


def test_a_predicted_budget_nothing_meets_at_a_confidence_shows_the_value_it_was_checked_at(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np

    import nas.budget_query as bq
    from nas.context import prepare
    from nas.errors import NoFeasibleError

    def evaluate(configs: list) -> dict[str, np.ndarray]:  # latency 1.0 +- 0.1 ms, accuracy 0.5 +- 0.1
        n = len(configs)
        return {"accuracy": np.full(n, 0.5), "accuracy_std": np.full(n, 0.1), "latency_ms": np.full(n, 1.0),
                "latency_ms_std": np.full(n, 0.1), **{k: np.ones(n) for k in ("size_kb", "macs", "flops",
                                                                               "peak_act_kb")}}

    ctx = prepare(write_tiny(tmp_path), run_dir=tmp_path / "run")
    fake_predictors(monkeypatch, tmp_path / "fit", evaluate)
    assert bq.best_predicted(ctx, ["latency_ms<=1.05"])["predicted"]["latency_ms"] == 1.0  # the mean meets it
    # The Python API's arguments are checked as the CLI's are (a string or None was a TypeError).
    from nas.errors import NasError

    for bad in ({"confidence": "0.9"}, {"confidence": None}, {"objective": None}, {"top": 2.0}):
        with pytest.raises(NasError, match="--confidence|--objective|--top"):
            bq.best_predicted(ctx, ["latency_ms<=1.05"], **bad)
    assert len(bq.best_predicted(ctx, ["latency_ms<=1.05"], top=np.int64(2))["others"]) == 1
    # At 0.99 (z = 2.33) every subnet is checked at 1.233 ms: that is the nearest, not the mean 1.0 ms.
    with pytest.raises(NoFeasibleError, match=r"latency_ms min 1\.23") as e:
        bq.best_predicted(ctx, ["latency_ms<=1.05"], confidence=0.99)
    assert "min 1)" not in str(e.value) and "shifted 2.33 std" in str(e.value)
    with pytest.raises(NoFeasibleError, match=r"accuracy max 0\.26") as e:
        bq.best_predicted(ctx, ["accuracy>=0.45"], confidence=0.99)
    assert "shifted 2.33 std" in str(e.value)
    # A counted metric has no std: its value is not shifted, and the line does not say it is.
    with pytest.raises(NoFeasibleError, match=r"size_kb min 1\)$") as e:
        bq.best_predicted(ctx, ["size_kb<=0.5"], confidence=0.99)
    assert "shifted" not in str(e.value)
    # A space scored only in part (an evolutionary search): the line does not speak for the whole space.
    monkeypatch.setattr(bq, "ENUMERATE_SECONDS", 0.0)
    monkeypatch.setattr(bq, "POPULATION", 1)
    monkeypatch.setattr(bq, "GENERATIONS", 0)
    (ctx.path("query", "scores.npz")).unlink()
    with pytest.raises(NoFeasibleError) as e:
        bq.best_predicted(ctx, ["latency_ms<=0.5"])
    assert not str(e.value).startswith("no subnet of the space"), e.value
    assert f"of the space's {ctx.space.size():,} searched, by evolution" in str(e.value)


def test_the_nearest_values_say_when_each_budget_alone_is_met() -> None:
    from nas.query import describe_nearest

    # Each budget's nearest value comes from another subnet: both meeting their limits read as a
    # subnet that passes, under "no subnet meets" (review).
    both = describe_nearest([("accuracy", ">=", 0.2326, 0.2), ("size_kb", "<=", 0.4375, 0.5)])
    assert both == "accuracy max 0.2326, size_kb min 0.4375; each budget is met by some subnet, never all by one"
    assert describe_nearest([("accuracy", ">=", 0.19, 0.2), ("size_kb", "<=", 0.4375, 0.5)]) == \
        "accuracy max 0.19, size_kb min 0.4375"


# -- --from predictors --measure: the run's cache of measured answers ------------------------------
def test_measured_answer_cache_with_damaged_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import nas.search
    from nas.budget_query import measured_row
    from nas.context import prepare
    from nas.measure import exact_metrics
    from search_spaces import config_key

    ctx = prepare(write_tiny(tmp_path), run_dir=tmp_path / "run")
    config = ctx.space.smallest()
    monkeypatch.setattr(nas.search, "measured_rows", lambda ctx: {})  # no measure table in this run directory
    cache = ctx.path("query", "measured.jsonl")
    cache.parent.mkdir(parents=True)
    row = {"key": config_key(config), "config": config, "accuracy": 0.9, "latency_ms": 0.01,
           **exact_metrics(ctx, config), "measure_id": ctx.stamp_id("measure")}
    cache.write_text("".join(json.dumps(r) + "\n" for r in ([1, 2], {"no": "key"}, {"key": [1]}, row)))
    assert measured_row(ctx, config) == row  # found in the cache: nothing measured
    import nas.data

    def measuring(*args: Any) -> None:
        raise RuntimeError("measures")

    monkeypatch.setattr(nas.data, "load_data", measuring)  # the first thing a measurement does
    # A row without its config, with another subnet's config (an export would ship that one) or
    # without a predicted metric is no answer: measured again.
    for damaged in ({k: v for k, v in row.items() if k != "config"}, {**row, "config": ctx.space.largest()},
                    {k: v for k, v in row.items() if k != "latency_ms"}):
        cache.write_text(json.dumps(damaged) + "\n")
        with pytest.raises(RuntimeError, match="measures"):
            measured_row(ctx, config)
    # A row timed against another measure stage (before a retrain) is not an answer for this one.
    cache.write_text(json.dumps({**row, "measure_id": "an-earlier-measure"}) + "\n")
    with pytest.raises(RuntimeError, match="measures"):
        measured_row(ctx, config)


@pytest.mark.parametrize("inside", ["export/mine", "search/x/y", "query/answer"])
def test_query_export_into_a_folder_the_stages_replace_is_refused(inside: str, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    import nas.budget_query as bq
    from nas.context import prepare

    ctx = prepare(write_tiny(tmp_path), run_dir=tmp_path / "run")
    (tmp_path / "run" / "export").mkdir(parents=True)
    monkeypatch.setattr(bq, "run_context", lambda run_dir: ctx)
    monkeypatch.setattr(bq, "best_predicted", lambda *a, **k: pytest.fail("answered before refusing --export"))
    target = tmp_path / "run" / inside
    # `nas export` (or `nas run` after a new search) replaces RUN/export whole: the subnet would be lost.
    _fails(["query", str(tmp_path / "run"), "--from", "predictors", "--budget", "size_kb=4", "--export",
            str(target)], capsys, "--export", "inside the run")
    assert not (tmp_path / "run" / inside).exists()


def test_two_queries_measure_one_answer_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading
    import time

    import nas.data
    import nas.measure
    import nas.search
    import nas.train
    from nas.budget_query import measured_row
    from nas.context import prepare
    from nas.measure import exact_metrics
    from search_spaces import config_key

    ctx = prepare(write_tiny(tmp_path), run_dir=tmp_path / "run")
    config = ctx.space.smallest()
    row = {"key": config_key(config), "config": config, "accuracy": 0.9, "latency_ms": 0.01,
           **exact_metrics(ctx, config)}
    timed: list[str] = []

    def measure(ctx: Any, model: Any, configs: list, *args: Any, on_row: Callable, **kw: Any) -> None:
        timed.append(config_key(configs[0]))
        time.sleep(0.5)  # long enough for the other query to arrive while this one measures
        on_row(row)

    monkeypatch.setattr(nas.search, "measured_rows", lambda ctx: {})
    monkeypatch.setattr(nas.measure, "measure_configs", measure)
    monkeypatch.setattr(nas.measure, "load_table", lambda ctx: [])
    monkeypatch.setattr(nas.data, "load_data", lambda spec: type("S", (), {"x_val": None, "y_val": None}))
    monkeypatch.setattr(nas.train, "load_supernet", lambda ctx: None)
    answers: list[dict] = []
    queries = [threading.Thread(target=lambda: answers.append(measured_row(ctx, config))) for _ in range(2)]
    for q in queries:
        q.start()
    for q in queries:
        q.join()
    assert all({k: v for k, v in a.items() if k != "measure_id"} == row for a in answers)
    assert len(answers) == 2 and timed == [row["key"]]  # measured once, the other query read it
    assert len(ctx.path("query", "measured.jsonl").read_text().splitlines()) == 1


def test_measured_answer_with_nan_or_missing_metrics() -> None:
    from nas.budget_query import with_measurement

    answer = with_measurement({"config": {}}, {"accuracy": math.nan, "size_kb": 2.0, "ok": True}, ["accuracy>=0.5"])
    assert answer["measured"] == {"size_kb": 2.0} and answer["measured_meets_budgets"] is False
    json.dumps(answer, allow_nan=False)
    assert with_measurement({}, {"size_kb": 2.0}, ["size_kb<=4"])["measured_meets_budgets"] is True


def test_a_budget_metric_one_member_lacks_names_that_member(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    front = _front()
    del front["members"][1]["size_kb"]
    _fails(["query", str(_run_dir(tmp_path, front)), "--budget", "size_kb=8"], capsys, "member 1", "size_kb",
           "nas export --force")
    # A metric no member has is a budget this front cannot answer, said as such.
    _fails(["query", str(tmp_path / "run"), "--budget", "peak_act_kb=8"], capsys, "has no such measurement")
