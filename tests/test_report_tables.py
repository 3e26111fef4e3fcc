"""`nas report`: the hypervolume-per-round table holds each round's own numbers in their columns; the Pareto
panels draw each budget on its own metric's panel and plot a re-measured subnet at its latest measurement."""

from __future__ import annotations

import json
import re
from pathlib import Path

import matplotlib.axes
import pytest
from test_report import make_run

from nas.report import render_report


def _cells(table: str) -> list[list[str]]:
    return [re.findall(r"<td[^>]*>([^<]*)</td>", row) for row in table.split("</tr>") if "<td" in row]


def test_each_round_row_shows_its_trials_measured_front_size_and_hypervolume(tmp_path: Path) -> None:
    page = render_report(make_run(tmp_path, rounds=True))
    section = page[page.index("<h2>Hypervolume per round"):]
    table = section[section.index("<table>"):section.index("</table>")]
    assert "<th>round</th><th>trials</th><th>measured</th><th>front size</th><th>hypervolume</th>" in table
    assert [row[:5] for row in _cells(table)] == [["0", "200", "40", "5", "0.5"], ["1", "400", "50", "6", "0.6"],
                                                  ["2", "600", "60", "7", "0.7"]]


def test_budgets_go_on_their_own_panel_and_a_re_measured_subnet_is_plotted_once_at_its_last_values(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = make_run(tmp_path, rounds=False)
    table = [json.loads(line) for line in (run / "measure" / "table.jsonl").read_text().splitlines()]
    first = table[0]
    again = {**first, "latency_ms": 123.0, "size_kb": 77.0}  # validated later: the same subnet timed again
    (run / "search" / "validated.jsonl").write_text(json.dumps(again) + "\n")
    lines: list[tuple[matplotlib.axes.Axes, float]] = []
    points: list[tuple[matplotlib.axes.Axes, list[float]]] = []
    axvline, scatter = matplotlib.axes.Axes.axvline, matplotlib.axes.Axes.scatter

    def spy_line(ax: matplotlib.axes.Axes, x: float = 0, *args: object, **kwargs: object) -> object:
        lines.append((ax, x))
        return axvline(ax, x, *args, **kwargs)

    def spy_points(ax: matplotlib.axes.Axes, x: object, y: object, *args: object, **kwargs: object) -> object:
        if kwargs.get("label") == "measured subnets (val)":
            points.append((ax, list(x)))
        return scatter(ax, x, y, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "axvline", spy_line)
    monkeypatch.setattr(matplotlib.axes.Axes, "scatter", spy_points)
    render_report(run)
    drawn = sorted((ax.get_xlabel().replace("\\", ""), x) for ax, x in lines)
    assert drawn == [("peak_act_kb", 3.5), ("size_kb", 32.0)]
    plotted = {ax.get_xlabel().replace("\\", ""): xs for ax, xs in points}
    assert 123.0 in plotted["latency_ms"] and first["latency_ms"] not in plotted["latency_ms"]
    # one point per distinct subnet of the table: the re-measured one counted once
    assert len(plotted["latency_ms"]) == len({json.dumps(r["config"], sort_keys=True) for r in table})
