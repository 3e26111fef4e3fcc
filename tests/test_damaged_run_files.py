"""Damaged run files and odd names: `nas report` and `nas query` answer in one line or a page, never a traceback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from test_report import _write, make_run

from nas.cli import main
from nas.report import write_report

DEEP = "[" * 100_000 + "]" * 100_000  # valid-looking, nested deeper than Python's json parser goes


@pytest.mark.parametrize("rel", ["export/front.json", "run.json", "fit/quality.json", "search/rounds.json",
                                 "measure/repeatability.json", "train/stamp.json", "measure/table.jsonl",
                                 "search/validated.jsonl"])
def test_report_of_a_deeply_nested_file_is_a_page_not_a_traceback(rel: str, tmp_path: Path) -> None:
    run = make_run(tmp_path, rounds=True)
    (run / rel).write_text(DEEP + "\n" + ("{}\n" if rel.endswith(".jsonl") else ""))  # not a torn last line
    if rel == "export/front.json":  # the export is unreadable: the search's front is shown instead
        _write(run / "search" / "front.json", [])
    page = write_report(run).read_text()
    assert "<h2>Notes</h2>" in page


@pytest.mark.parametrize("rel", ["search/stamp.json", "train/stamp.json"])
def test_query_with_a_deeply_nested_stamp_is_one_line(rel: str, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    run = make_run(tmp_path, rounds=False)
    for m in json.loads((run / "export" / "front.json").read_text())["members"]:
        (run / "export" / m["name"]).mkdir()
    stamps = {"train": "t1", "measure": "m1", "fit": "f1", "search": "s1"}
    after = {"measure": "t1", "fit": "m1", "search": "f1"}
    for stage, sid in stamps.items():
        _write(run / stage / "stamp.json", {"id": sid, "after": after.get(stage)})
    front = json.loads((run / "export" / "front.json").read_text())
    _write(run / "export" / "front.json", {**front, "search_stamp": "s1"})
    assert main(["query", str(run), "--budget", "size_kb=100"]) == 0
    capsys.readouterr()
    (run / rel).write_text(DEEP)
    assert main(["query", str(run), "--budget", "size_kb=100"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot be told current" in err and "ran again" not in err


def test_report_of_rounds_whose_predictor_quality_is_damaged(tmp_path: Path) -> None:
    run = make_run(tmp_path, rounds=True)
    _write(run / "search" / "rounds.json", [
        {"round": 0, "hypervolume": 0.5, "predictor_quality": {"latency_ms": 5}},
        {"round": 1, "hypervolume": 0.6, "predictor_quality": {"latency_ms": {"kendall_tau": 0.7}}},
        {"round": 1e300, "hypervolume": 0.7}])
    assert "hypervolume per round" in write_report(run).read_text()


def test_report_of_anchor_scales_that_are_not_numbers(tmp_path: Path) -> None:
    run = make_run(tmp_path, rounds=False)
    rows = [json.loads(line) for line in (run / "search" / "validated.jsonl").read_text().splitlines()]
    rows = [{**{k: v for k, v in r.items() if not k.startswith("latency_session")}, "latency_session_scale@b1": "x"}
            for r in rows]
    (run / "search" / "validated.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert "Anchored timing" not in write_report(run).read_text()


def test_report_of_a_run_named_with_dollars(tmp_path: Path) -> None:
    # matplotlib reads "$...$" as mathtext: "$\\frac$" failed to draw and ended the report.
    run = make_run(tmp_path, rounds=True, export=False)
    _write(run / "search" / "front.json", [])
    (run / "run.json").write_text("damaged")
    named = run.parent / "a $\\frac$ <b>run& é"
    shutil.move(run, named)
    page = write_report(named).read_text()
    assert "<h1>a $\\frac$ &lt;b&gt;run&amp; é</h1>" in page and "<b>run" not in page


def test_report_of_a_run_whose_search_found_nothing_says_so(tmp_path: Path) -> None:
    run = make_run(tmp_path, rounds=False, export=False)
    with pytest.raises(Exception, match="no finished search") as e:
        write_report(run)
    assert "is it a run directory" not in str(e.value) and "budgets" in str(e.value)


HUGE = "1" + "0" * 5000  # valid JSON that int() refuses: a ValueError the readers did not catch


def test_query_and_report_of_an_integer_of_thousands_of_digits(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    run = make_run(tmp_path, rounds=True)
    front = run / "export" / "front.json"
    front.write_text(front.read_text().replace("{", '{"junk": ' + HUGE + ", ", 1))
    assert main(["query", str(run), "--budget", "size_kb=100"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "front.json is corrupt (ValueError" in err
    _write(run / "search" / "front.json", [])
    quality = run / "fit" / "quality.json"
    quality.write_text(quality.read_text().replace("{", '{"junk": ' + HUGE + ", ", 1))
    page = write_report(run).read_text()
    assert "<h2>Notes</h2>" in page and "quality.json could not be read" in page
