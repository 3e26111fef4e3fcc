"""`nas query --from predictors` keeps every subnet's scores in RUN/query/scores.npz: a later query reuses
them, and a changed predictor file (a refit) scores the space again instead of answering from stale scores;
equal scores go to the subnet with the smaller choices, whatever order they were scored in; an evolutionary
search answers with canonical configs; budget margins are relative to each limit; the run's own budgets a
query leaves out are named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import write_tiny


def _oracle_class(calls: list[int], folder: Path) -> type:
    class Oracle:  # accuracy read from the predictor file, so a refit changes the answer
        models = {"accuracy": None, "latency_ms": None}

        def __init__(self, ctx: Any, folder_: Path) -> None:
            calls.append(1)

        def evaluate(self, configs: list) -> dict[str, np.ndarray]:
            n = len(configs)
            acc = float((folder / "accuracy.json").read_text())
            return {"accuracy": np.full(n, acc), "accuracy_std": np.zeros(n), "latency_ms": np.full(n, 1.0),
                    "latency_ms_std": np.zeros(n), **{k: np.ones(n) for k in ("size_kb", "macs", "flops",
                                                                               "peak_act_kb")}}

    return Oracle


def test_scores_are_reused_until_a_predictor_file_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import nas.budget_query as bq
    import nas.oracle
    import nas.search
    from nas.context import prepare

    folder = tmp_path / "fit"
    folder.mkdir()
    (folder / "accuracy.json").write_text("0.5")
    calls: list[int] = []
    ctx = prepare(write_tiny(tmp_path), run_dir=tmp_path / "run")
    monkeypatch.setattr(nas.search, "latest_predictors", lambda ctx: folder)
    monkeypatch.setattr(nas.oracle, "Oracle", _oracle_class(calls, folder))
    first = bq.best_predicted(ctx, ["latency_ms<=2"])
    assert first["predicted"]["accuracy"] == 0.5 and len(calls) == 1
    again = bq.best_predicted(ctx, ["latency_ms<=1.5"])
    assert again["method"] == "every subnet (scores cached)" and len(calls) == 1  # no predictor loaded
    (folder / "accuracy.json").write_text("0.75")  # the predictors refitted
    refit = bq.best_predicted(ctx, ["latency_ms<=2"])
    assert refit["predicted"]["accuracy"] == 0.75 and len(calls) == 2
    # Every subnet ties: the answer is the one with the smallest choices in dimension order.
    assert refit["config"] == min(ctx.space.enumerate(), key=lambda c: [c[n] for n in ctx.space.names])


def test_an_evolutionary_search_answers_with_canonical_configs(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import nas.budget_query as bq
    import nas.oracle
    import nas.search
    from nas.context import prepare

    folder = tmp_path / "fit"
    folder.mkdir()
    (folder / "accuracy.json").write_text("0.5")
    ctx = prepare(write_tiny(tmp_path), run_dir=tmp_path / "run")
    monkeypatch.setattr(nas.search, "latest_predictors", lambda ctx: folder)
    monkeypatch.setattr(nas.oracle, "Oracle", _oracle_class([], folder))
    monkeypatch.setattr(bq, "ENUMERATE_SECONDS", 0.0)  # too slow to score every subnet: evolve
    monkeypatch.setattr(bq, "POPULATION", 8)
    monkeypatch.setattr(bq, "CHILDREN", 64)
    answer = bq.best_predicted(ctx, ["latency_ms<=2"], top=5)
    assert answer["method"].startswith("evolution")
    for config in [answer["config"], *(o["config"] for o in answer["others"])]:
        assert ctx.space.validate(config) == config  # inactive layers at their one spelling


def test_budget_margins_are_relative_to_each_limit() -> None:
    from nas.budget_query import _margins

    values = {"latency_ms": np.array([1.0, 0.25]), "size_kb": np.array([2000.0, 500.0])}
    margins = _margins(values, [("latency_ms", "<=", 0.5), ("size_kb", "<=", 1000.0)], 0.0)
    np.testing.assert_allclose(margins, [[-1.0, -1.0], [0.5, 0.5]])  # twice the limit: -1 on either scale


def test_only_the_runs_budgets_on_metrics_the_query_leaves_out_are_named(tmp_path: Path) -> None:
    from nas.budget_query import run_budgets_left_out
    from nas.context import prepare

    budgets = '[[budgets]]\nmetric = "size_kb"\nmax = 4.0\n\n[[budgets]]\nmetric = "macs"\nmax = 5000.0'
    ctx = prepare(write_tiny(tmp_path, budgets=budgets), run_dir=tmp_path / "run")
    assert run_budgets_left_out(ctx, ["size_kb<=2"]) == ["macs <= 5000"]
    assert run_budgets_left_out(ctx, {"size_kb": 2.0, "macs": 100.0}) == []
