"""Many objectives and budgets: the report's panels stay legible, a missed measured budget is named."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from types import SimpleNamespace

import pytest
from test_report import _pngs, make_run

from nas.config import Budget
from nas.errors import NoFeasibleError
from nas.report import render_report


def _size(png: bytes) -> tuple[int, int]:
    """(width, height) of a PNG, from its IHDR chunk."""
    return struct.unpack(">II", png[16:24])


def test_many_cost_panels_wrap_into_rows_the_page_can_show(tmp_path: Path) -> None:
    """Five cost panels in one row made a 2500 px figure the 1200 px page showed at 48 % (5 px text)."""
    run = make_run(tmp_path, rounds=False)
    path = run / "export" / "front.json"
    front = json.loads(path.read_text())
    targets = ("b1", "b2", "b3")
    front["objectives"] = ["accuracy", "latency_ms", *(f"latency_ms@{t}" for t in targets), "size_kb"]
    front["budgets"] = ["size_kb <= 32", "peak_act_kb <= 3.5"]
    for m in front["members"]:
        for k, t in enumerate(targets):
            m[f"latency_ms@{t}"] = m["macs"] * 1e-6 * (k + 1)
            if m["predicted"]:
                m["predicted"][f"latency_ms@{t}"] = m[f"latency_ms@{t}"] * 1.2
    path.write_text(json.dumps(front))
    pareto, quality = (_size(p) for p in _pngs(render_report(run))[:2])
    # 6 cost panels (5 objectives + the budgeted peak_act_kb) and 5 predicted-vs-measured ones.
    assert pareto[0] <= 1500 and pareto[1] > 700
    assert quality[0] <= 1300 and quality[1] > 700


def _finish_search_error(monkeypatch: pytest.MonkeyPatch, budgets: tuple[Budget, ...],
                         rows: list[dict[str, float]]) -> str:
    import nas.search

    monkeypatch.setattr(nas.search, "measured_rows", lambda ctx: {str(i): r for i, r in enumerate(rows)})
    with pytest.raises(NoFeasibleError) as e:
        nas.search.finish_search(SimpleNamespace(exp=SimpleNamespace(budgets=budgets)), quiet=True)
    return str(e.value)


def test_the_measured_budget_no_subnet_meets_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every budget was listed, met ones too, without saying which one to relax or by how much."""
    budgets = (Budget("size_kb", max=3.0), Budget("peak_act_kb", max=0.5), Budget("accuracy", min=0.99))
    rows = [{"size_kb": 2.0, "peak_act_kb": 0.5, "accuracy": 0.9}, {"size_kb": 4.0, "peak_act_kb": 0.4,
                                                                    "accuracy": 0.95}]
    text = _finish_search_error(monkeypatch, budgets, rows)
    assert "accuracy >= 0.99 (closest measured: off by 0.04)" in text
    assert "size_kb" not in text and "peak_act_kb" not in text
    # Each met by some subnet (the limit itself included), never all by one: said so.
    text = _finish_search_error(monkeypatch, budgets[:2], [{"size_kb": 3.0, "peak_act_kb": 0.6},
                                                           {"size_kb": 3.5, "peak_act_kb": 0.5}])
    assert "together, though each is met by some subnet: size_kb <= 3; peak_act_kb <= 0.5" in text


@pytest.mark.parametrize("limits", [{"max": 3.0, "min": 1.0}, {}])
def test_a_budget_is_one_sided(limits: dict[str, float]) -> None:
    """Budget("size_kb", max=3, min=1) from the API was checked on both sides by `satisfied` and on the
    max side only by the search's constraint, the table's mask and refit's: refused when built."""
    with pytest.raises(ValueError, match="give exactly one of max or min"):
        Budget("size_kb", **limits)
    assert Budget("size_kb", min=1.0).violation(0.5) == 0.5 and Budget("size_kb", max=3.0).satisfied(3.0)


def test_the_exports_pareto_png_wraps_many_cost_panels_too(tmp_path: Path) -> None:
    """export/pareto.png drew every cost objective in one row: six made a 3,600 px wide figure."""
    from nas.config import Objective
    from nas.plot import pareto_plot

    costs = ["latency_ms", "size_kb", "macs", "flops", "peak_act_kb", "latency_ms@b"]
    row = {"accuracy": 0.8, "test_accuracy": 0.79, **{c: 1.0 + k for k, c in enumerate(costs)}}
    (tmp_path / "measure").mkdir()
    (tmp_path / "measure" / "table.jsonl").write_text(json.dumps(row) + "\n")
    exp = SimpleNamespace(name="x", objectives=[Objective("accuracy", "maximize")] + [Objective(c, "minimize")
                                                                                      for c in costs],
                          budgets=[Budget("size_kb", max=3.0)], measure=SimpleNamespace(device="cpu", batch_size=1))
    ctx = SimpleNamespace(exp=exp, path=lambda *parts: tmp_path.joinpath(*parts))
    pareto_plot(ctx, [row], tmp_path / "pareto.png")
    width, height = _size((tmp_path / "pareto.png").read_bytes())
    assert width <= 3 * 5.5 * 110 + 10 and height >= 2 * 4.2 * 110 - 10, (width, height)


def test_a_budget_on_another_panel_of_the_exports_plot_has_a_legend_entry(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The legend was drawn on the first panel only: size_kb <= 3 on the second panel was named nowhere."""
    import matplotlib.figure

    from nas.config import Objective
    from nas.plot import pareto_plot

    row = {"accuracy": 0.8, "test_accuracy": 0.79, "latency_ms": 1.0, "size_kb": 2.0}
    (tmp_path / "measure").mkdir()
    (tmp_path / "measure" / "table.jsonl").write_text(json.dumps(row) + "\n")
    exp = SimpleNamespace(name="x", objectives=[Objective("accuracy", "maximize"), Objective("latency_ms", "minimize"),
                                                Objective("size_kb", "minimize")],
                          budgets=[Budget("size_kb", max=3.0)], measure=SimpleNamespace(device="cpu", batch_size=1))
    ctx = SimpleNamespace(exp=exp, path=lambda *parts: tmp_path.joinpath(*parts))
    legends: list[list[str]] = []
    real = matplotlib.figure.Figure.savefig

    def savefig(fig: matplotlib.figure.Figure, *args: object, **kwargs: object) -> None:
        legends.extend([t.get_text() for t in ax.get_legend().get_texts()] if ax.get_legend() else []
                       for ax in fig.axes)
        real(fig, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
    pareto_plot(ctx, [row], tmp_path / "pareto.png")
    assert any("budget size_kb <= 3" in texts for texts in legends), legends
