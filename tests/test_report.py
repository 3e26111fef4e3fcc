"""`nas report`: a self-contained HTML page built from a fake run directory (no training)."""

from __future__ import annotations

import argparse
import base64
import json
import random
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from nas.errors import StageError
from nas.report import add_report_parser, compact_config, parse_budget, run_report, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DATA_URI = re.compile(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


def _write(path: Path, obj: Any) -> None:
    """Write `obj` as JSON, creating folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _config(rng: random.Random) -> dict[str, int]:
    """A random MLP config of the quickstart-like space."""
    return {"depth": rng.choice([1, 2]), "width.0": rng.choice([16, 32, 64]), "bits.0": rng.choice([4, 8, 32]),
            "width.1": rng.choice([16, 32, 64]), "bits.1": rng.choice([4, 8, 32]), "bits.out": rng.choice([4, 8])}


def _row(rng: random.Random) -> dict[str, Any]:
    """A plausible measured row, with the extra metrics some devices add."""
    macs = rng.randint(1000, 20000)
    return {"config": _config(rng), "accuracy": rng.uniform(0.85, 0.98),
            "latency_ms": macs * 2e-6 + rng.random() * 1e-3,
            "latency_iqr_ms": 1e-3, "size_kb": macs / 1000, "macs": macs, "latency_ms@b1": macs * 1e-6,
            "peak_act_kb": rng.uniform(0.5, 4.0)}


def make_run(root: Path, *, rounds: bool, export: bool = True) -> Path:
    """A run directory holding every file the report reads, with plausible values."""
    rng = random.Random(0)
    run = root / "runs" / "fake"
    _write(run / "run.json", {"experiment": "/x/experiments/fake.toml", "name": "fake<run>", "space_size": 33680})
    # One profile per latency metric, as nas.measure writes it (a flat profile here hid that the report
    # never found the date in it).
    _write(run / "measure" / "device.json", {"latency_ms": {"device": "cpu", "platform": "cpu", "jax": "0.0",
                                                            "cpu_count": 2, "date": "2026-11-23T13:58:27+00:00"}})
    for i, stage in enumerate(("train", "measure", "fit", "search", "export")):
        _write(run / stage / "stamp.json", {"fingerprint": "ab", "wall_s": 1.5 + i})
    (run / "measure" / "table.jsonl").write_text("".join(json.dumps(_row(rng)) + "\n" for _ in range(40)))
    # Validated rows were timed later, against anchors from the table; one chunk needed a retry.
    validated = [{**_row(rng), "latency_session_scale": 0.97 + 0.01 * i, "latency_attempts": 3 if i < 2 else 1}
                 for i in range(10)]
    (run / "search" / "validated.jsonl").write_text("".join(json.dumps(r) + "\n" for r in validated))
    (run / "search" / "study.journal").write_text("")
    _write(run / "fit" / "quality.json", {
        "rows": 40, "train_rows": 32, "holdout_rows": 8,
        "accuracy": {"kind": "gbm", "holdout": {"n": 8, "mape": 0.0067, "kendall_tau": 0.758, "spearman": 0.91,
                                                "within_10pct": 1.0, "within_5pct": 1.0, "rmse": 0.008}},
        "latency_ms": {"kind": "ridge", "holdout": {"n": 8, "mape": 0.173, "kendall_tau": 0.81, "spearman": 0.94,
                                                    "within_10pct": 0.34, "within_5pct": 0.22, "rmse": 0.0072},
                       "macs_proxy_kendall_tau": 0.7546},
        "wall_s": 0.36})
    members = []
    for i in range(5):
        r = _row(rng)
        predicted = None if i == 2 else {
            "accuracy": r["accuracy"] - 0.004, "accuracy_std": 0.0, "latency_ms": r["latency_ms"] * 1.1,
            "latency_ms_std": r["latency_ms"] * 0.2, "size_kb": r["size_kb"], "macs": float(r["macs"])}
        members.append({"name": f"{i:02d}_member{i}", "config": r["config"], "accuracy": r["accuracy"],
                        "test_accuracy": r["accuracy"] + 0.005, "latency_ms": r["latency_ms"],
                        "size_kb": r["size_kb"], "macs": r["macs"], "peak_act_kb": r["peak_act_kb"],
                        "predicted": predicted, "source": "table" if i == 0 else "search"})
    if export:
        _write(run / "export" / "front.json", {
            "experiment": "fake<run>", "objectives": ["accuracy", "latency_ms", "size_kb"],
            "budgets": ["size_kb <= 32", "peak_act_kb <= 3.5"], "members": members})
    if rounds:
        _write(run / "search" / "rounds.json", [
            {"round": k, "trials": 200 * (k + 1), "measured": 40 + 10 * k, "front_size": 5 + k,
             "hypervolume": 0.5 + 0.1 * k,
             "predictor_quality": {"latency_ms": {"kendall_tau": 0.7 + 0.05 * k, "mape": 0.2 - 0.02 * k}}}
            for k in range(3)])
        for k in (1, 2):  # the predictors rounds 1 and 2 searched with, refitted on the rows measured before
            _write(run / "search" / f"round{k}" / "quality.json", {
                "accuracy": {"kind": "gp", "holdout": {"n": 10, "mape": 0.01, "kendall_tau": 0.1 + 0.011 * k}}})
    return run


def _pngs(page: str) -> list[bytes]:
    """The decoded bytes of every embedded PNG of a page."""
    return [base64.b64decode(b) for b in DATA_URI.findall(page)]


def test_report_contents_with_rounds(tmp_path: Path) -> None:
    run = make_run(tmp_path, rounds=True)
    path = write_report(run)
    assert path == run / "report.html"
    page = path.read_text()
    front = json.loads((run / "export" / "front.json").read_text())
    for m in front["members"]:
        assert m["name"] in page
    # Every piece of text is escaped: the name with angle brackets and the budget operator.
    assert "fake&lt;run&gt;" in page and "fake<run>" not in page
    assert "size_kb &lt;= 32" in page and "peak_act_kb &lt;= 3.5" in page
    assert "33,680" in page and "Device profile of latency_ms" in page and "Stage wall times" in page
    assert "2026-11-23T13:58:27+00:00" in page and "cpu_count" in page  # the profile's date, not a file time
    anchored = page[page.index("Anchored timing"):].split("</table>")[0]
    assert "latency_ms" in anchored and re.findall(r"<td>([^<]*)</td>", anchored) == ["10", "2", "0.97", "1.06"]
    # Pareto, predicted-vs-measured and hypervolume figures, all real PNGs and nothing external.
    pngs = _pngs(page)
    assert len(pngs) == 3 and all(p.startswith(PNG_MAGIC) for p in pngs)
    assert "Predicted vs measured" in page and "predicted against measured" in page
    # A measure-table member's prediction is in-sample (the predictors were fitted on it): left out, said so.
    assert "3 member(s) predicted before they were measured; 1 from the measure table" in page
    assert "kendall_tau" in page and "0.7546" in page and "ridge" in page and "gbm" in page
    assert "Hypervolume per round" in page and "<th>hypervolume</th>" in page and "latency_ms τ of the refit" in page
    # Each round's predictors: the fit stage's and the refits rounds 1 and 2 searched with.
    quality = page[page.index("<h2>Predictor quality"):page.index("<h2>Hypervolume per round")]
    assert all(s in quality for s in ("<td class=l>fit</td>", "round 1 refit", "round 2 refit", "0.111", "0.122"))
    assert "single round" not in page
    assert "optuna-dashboard runs/fake/search/study.journal" in page.replace(str(tmp_path) + "/", "")
    assert "nas query" in page and "--budget latency_ms=" in page
    assert not re.search(r'(src|href)="(https?:)?//', page)


def test_report_example_budgets_are_ones_the_front_meets(tmp_path: Path) -> None:
    run = make_run(tmp_path, rounds=True)
    path = run / "export" / "front.json"
    front = json.loads(path.read_text())
    for m in front["members"]:  # a front of modest accuracies, like the quickstart's (0.34-0.65)
        m["accuracy"] = round(0.3 + 0.4 * m["accuracy"] - 0.2, 4)
    path.write_text(json.dumps(front))
    page = write_report(run).read_text()
    floor = float(re.search(r"--budget &#x27;accuracy&gt;=([0-9.]+)&#x27;", page).group(1))
    assert 0 < floor <= max(m["accuracy"] for m in front["members"])  # a fixed 0.95 was not


def test_report_without_rounds_and_sqlite(tmp_path: Path) -> None:
    run = make_run(tmp_path, rounds=False)
    (run / "search" / "study.db").write_bytes(b"")
    (run / "fit" / "quality.json").unlink()
    page = write_report(run, tmp_path / "out" / "r.html").read_text()
    # A finished search writes rounds.json, one round too: without it the page says so, not "single round".
    assert "search/rounds.json is missing" in page and "single round" not in page
    assert "<th>hypervolume</th>" not in page
    assert f"sqlite:///{(run / 'search' / 'study.db').absolute()}" in page
    assert "no fit/quality.json" in page
    assert len(_pngs(page)) == 2 and not (run / "report.html").exists()


def test_report_skips_missing_optional_files(tmp_path: Path) -> None:
    run = make_run(tmp_path, rounds=False)
    for rel in ("run.json", "measure/device.json", "measure/table.jsonl", "search/validated.jsonl",
                "train/stamp.json", "search/study.journal"):
        (run / rel).unlink()
    (run / "search" / "rounds.json").write_text("{not json")
    page = write_report(run).read_text()
    assert "00_member0" in page and "search/rounds.json cannot be read" in page and "single round" not in page
    assert "rounds.json could not be read" in page
    assert all(p.startswith(PNG_MAGIC) for p in _pngs(page))


def test_report_with_every_tau_null_draws_no_empty_legend(tmp_path: Path) -> None:
    """A NaN tau is written as null: with all of them null matplotlib warned "No artists with labels"."""
    import warnings

    run = make_run(tmp_path, rounds=True)
    rounds = json.loads((run / "search" / "rounds.json").read_text())
    for r in rounds:
        r["predictor_quality"]["latency_ms"]["kendall_tau"] = None
    _write(run / "search" / "rounds.json", rounds)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert "Hypervolume per round" in write_report(run).read_text()


def test_report_notes_a_damaged_or_missing_measure_table(tmp_path: Path) -> None:
    """Once measured (stamped), a torn last line or a missing table is damage: the page counted the rows
    left ("14 measured subnets" beside a rounds table saying 15) without a note (review)."""
    run = make_run(tmp_path, rounds=True)
    table = run / "measure" / "table.jsonl"
    def count(page: str) -> int:
        return int(re.search(r"(\d+) measured subnets", page).group(1))

    rows = [json.loads(x) for x in table.read_text().splitlines()]
    validated = [json.loads(x) for x in (run / "search" / "validated.jsonl").read_text().splitlines()]
    whole = write_report(run).read_text()
    assert count(whole) == len({json.dumps(r["config"], sort_keys=True) for r in rows + validated})
    assert "is corrupt" not in whole and "is missing" not in whole
    table.write_text(table.read_text()[:-40])
    page = write_report(run).read_text()
    assert count(page) == len({json.dumps(r["config"], sort_keys=True) for r in rows[:-1] + validated})
    assert "the rest of its rows are shown" in page
    assert "table.jsonl line 40 is corrupt" in page
    table.unlink()
    page = write_report(run).read_text()
    assert count(page) == len({json.dumps(r["config"], sort_keys=True) for r in validated})
    assert "table.jsonl is missing, though its stage finished" in page


def test_report_without_search_results_or_export_raises(tmp_path: Path) -> None:
    run = make_run(tmp_path, rounds=True, export=False)
    with pytest.raises(StageError, match="no finished search .* and no current export"):
        write_report(run)
    assert not (run / "report.html").exists()
    with pytest.raises(StageError, match="no such folder, so not a run directory"):
        write_report(tmp_path / "not-a-run")


def _search_front(run: Path) -> list[dict[str, Any]]:
    """The search's measured front and a stamp that names its objectives and budgets."""
    rng = random.Random(1)
    rows = [{**_row(rng), "key": f"k{i}", "predicted": {"accuracy": 0.9, "latency_ms": 0.01}} for i in range(4)]
    _write(run / "search" / "front.json", rows)
    _write(run / "search" / "stamp.json", {"fingerprint": "ab", "id": "search-2", "wall_s": 3.0,
                                           "objectives": ["accuracy", "latency_ms"], "budgets": ["size_kb <= 32"]})
    return rows


def test_report_of_a_run_not_exported_shows_the_measured_front(tmp_path: Path) -> None:
    run = make_run(tmp_path, rounds=True, export=False)
    _search_front(run)
    page = write_report(run).read_text()
    assert "Measured front (not exported)" in page and "the run has not been exported yet" in page
    assert "nas export /x/experiments/fake.toml --run-dir" in page and "size_kb &lt;= 32" in page
    assert "Exported subnets" not in page and len(_pngs(page)) >= 2


def test_report_of_an_out_of_date_export_shows_the_current_search(tmp_path: Path) -> None:
    from nas.query import query

    run = make_run(tmp_path, rounds=True)
    _search_front(run)
    front = json.loads((run / "export" / "front.json").read_text())
    _write(run / "export" / "front.json", {**front, "search_stamp": "search-1"})  # exported before the last search
    page = write_report(run).read_text()
    assert "the export is out of date" in page and "00_member0" not in page
    with pytest.raises(StageError, match="out of date: the search ran again"):
        query(run, ["size_kb<=32"])
    _write(run / "export" / "front.json", {**front, "search_stamp": "search-2"})  # the export of this search
    page = write_report(run).read_text()
    assert "Exported subnets" in page and "00_member0" in page and "out of date" not in page
    # An export folder shipped without the run's search cannot be told stale: it is answered from.
    _write(run / "export" / "front.json", {**front, "search_stamp": "search-1"})
    for m in front["members"]:
        (run / "export" / m["name"]).mkdir()
    shutil.rmtree(run / "search")
    assert query(run, ["size_kb<=32"])["name"] in {m["name"] for m in front["members"]}


def test_cli_parser_and_handler(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = make_run(tmp_path, rounds=True)
    parser = argparse.ArgumentParser(prog="nas")
    add_report_parser(parser.add_subparsers(dest="command", required=True))
    assert run_report(parser.parse_args(["report", str(run)])) == 0
    assert capsys.readouterr().out.strip() == str(run / "report.html")
    out = tmp_path / "elsewhere.html"
    assert run_report(parser.parse_args(["report", str(run), "--out", str(out)])) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert "04_member4" in out.read_text()
    from nas.cli import main

    assert main(["report", str(run), "--out", str(tmp_path / "report.md")]) == 2  # an HTML page named .md
    assert "give a path ending in .html" in capsys.readouterr().err
    assert not (tmp_path / "report.md").exists()


def test_helpers() -> None:
    assert parse_budget("size_kb <= 32") == ("size_kb", "<=", 32.0)
    assert parse_budget("latency_ms@b1<0.5") == ("latency_ms@b1", "<=", 0.5)
    assert parse_budget("accuracy=0.9") == ("accuracy", ">=", 0.9)
    assert parse_budget("nonsense") is None
    config = {"depth": 1, "width.0": 16, "bits.0": 2, "width.1": 128, "bits.1": 32, "bits.out": 4}
    assert compact_config(config) == "depth=1 width=16 bits=2/out:4"
    staged = {"depth.0": 1, "depth.1": 2, "bits.stem": 8, "bits.0.0": 4, "bits.0.1": 32, "bits.1.0": 2,
              "bits.1.1": 8, "bits.head": 4}
    assert compact_config(staged) == "depth=1/2 bits=stem:8/0.0:4/1.0:2/1.1:8/head:4"


def test_report_shows_an_export_whose_search_stamp_is_damaged(tmp_path: Path) -> None:
    run = make_run(tmp_path, rounds=False)
    front = json.loads((run / "export" / "front.json").read_text())
    _write(run / "export" / "front.json", {**front, "search_stamp": "abc"})
    (run / "search" / "front.json").write_text(json.dumps(front["members"][:2]))
    (run / "search" / "stamp.json").write_text("[1, 2]")
    page = write_report(run).read_text()
    assert all(m["name"] in page for m in front["members"]) and "stamp.json is unreadable" in page


def test_report_shows_the_search_front_when_the_export_is_corrupt(tmp_path: Path) -> None:
    run = make_run(tmp_path, rounds=False)
    members = json.loads((run / "export" / "front.json").read_text())["members"]
    (run / "export" / "front.json").write_text('{"members": [')
    (run / "search" / "front.json").write_text(json.dumps([{**m, "name": None} for m in members[:2]]))
    page = write_report(run).read_text()
    assert "the export cannot be read" in page and "search/front.json" in page
    assert members[0]["name"] not in page  # the search's rows, not the export's names
    # An empty member list (no export writes one; `nas query` refuses it) is not shown as "0 exported".
    (run / "export" / "front.json").write_text(json.dumps({"members": []}))
    page = write_report(run).read_text()
    assert "the export cannot be read" in page and "0 exported" not in page


def test_report_arrows_follow_the_experiments_directions(tmp_path: Path) -> None:
    # An objective's direction may override its metric's natural one; the run files name metrics only,
    # and the report guessed: size_kb maximised was drawn as a cost, "size_kb ↓".
    run = make_run(tmp_path, rounds=False)
    text = (Path(__file__).resolve().parents[1] / "experiments" / "quickstart.toml").read_text()
    objectives = ('[[objectives]]\nmetric = "accuracy"\n\n[[objectives]]\nmetric = "latency_ms"\n\n'
                  '[[objectives]]\nmetric = "size_kb"\ndirection = "maximize"\n')
    (run / "experiment.toml").write_text(text.split("[[objectives]]")[0] + objectives)
    page = write_report(run).read_text()
    assert "accuracy ↑, latency_ms ↓, size_kb ↑" in page
    (run / "experiment.toml").unlink()  # unreadable: the natural directions
    assert "accuracy ↑, latency_ms ↓, size_kb ↓" in write_report(run).read_text()


def test_report_of_a_search_running_again_shows_the_last_export(tmp_path: Path) -> None:
    # A search run again removes its stamp first and leaves the last search's front.json until it ends:
    # that file was shown as "the search's measured front" beside "no finished search".
    run = make_run(tmp_path, rounds=False)
    _search_front(run)
    front = json.loads((run / "export" / "front.json").read_text())
    _write(run / "export" / "front.json", {**front, "search_stamp": "search-1"})
    (run / "search" / "stamp.json").unlink()
    page = write_report(run).read_text()
    assert "00_member0" in page and "the search is being run again, or was stopped" in page
    (run / "export" / "front.json").unlink()
    with pytest.raises(StageError, match="no finished search"):
        write_report(run)


def test_report_of_damaged_values_is_written_not_a_traceback(tmp_path: Path) -> None:
    run = make_run(tmp_path, rounds=True)
    front = json.loads((run / "export" / "front.json").read_text())
    members = front["members"]
    members[0]["predicted"]["latency_ms_std"] = -0.5  # matplotlib refuses a negative error bar
    members[1]["config"] = {**members[1]["config"], "width.\u00b2": 16}  # a digit int() refuses
    members[3]["name"] = "\ud800member"  # a lone surrogate: valid JSON, no UTF-8
    members[4]["latency_ms"], members[4]["accuracy"] = 5e-324, 1.7e308  # the usage lines' rounding
    _write(run / "export" / "front.json", {**front, "budgets": ["size_kb <= 1.2.3", "size_kb <= 32"]})
    rounds = json.loads((run / "search" / "rounds.json").read_text())
    rounds[1]["hypervolume"] = 1.7e308  # axes limits overflow
    _write(run / "search" / "rounds.json", rounds)
    (run / "search" / "round\u00b2").mkdir()
    # Lone surrogates in the figures' text (the run's name, a metric key): matplotlib raised a TypeError.
    _write(run / "run.json", {**json.loads((run / "run.json").read_text()), "name": "fake\ud800"})
    members[1]["x\udc80"], members[1]["predicted"]["x\udc80"] = 2.0, 1.0
    _write(run / "export" / "front.json", {**front, "budgets": ["size_kb <= 1.2.3", "size_kb <= 32"]})
    page = write_report(run).read_bytes().decode("utf-8")
    assert "01_member1" in page and "?member" in page and "size_kb &lt;= 32" in page
