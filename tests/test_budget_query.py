"""nas.budget_query.best_predicted: which subnet it answers (pinned after mutation testing found it unpinned)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import fake_predictors, write_tiny


def _score(c: dict) -> int:
    return int(sum(int(v) for v in c.values()))


def test_best_predicted_is_the_most_accurate_subnet_meeting_the_budget(tmp_path: Path, monkeypatch) -> None:
    import nas.budget_query as bq
    from nas.context import prepare

    def evaluate(configs: list) -> dict[str, np.ndarray]:
        # Accuracy rises with the config's "score"; size_kb IS the score (exact: no std).
        s = np.array([_score(c) for c in configs], np.float64)
        n = len(configs)
        return {"accuracy": 0.5 + s / 1000, "accuracy_std": np.full(n, 0.01), "latency_ms": np.ones(n),
                "latency_ms_std": np.full(n, 0.1), "size_kb": s, "macs": s, "flops": 2 * s, "peak_act_kb": s}

    ctx = prepare(write_tiny(tmp_path), run_dir=tmp_path / "run")
    fake_predictors(monkeypatch, tmp_path / "fit", evaluate)
    scores = sorted({_score(c) for c in ctx.space.enumerate(10**6)})
    limit = scores[len(scores) // 2]  # a value some subnet has exactly: it meets "size_kb <= limit"
    n_feasible = sum(_score(c) <= limit for c in ctx.space.enumerate(10**6))
    res = bq.best_predicted(ctx, [f"size_kb<={limit}"], top=3)
    assert res["predicted"]["size_kb"] == limit  # on the limit is within it, and it is the most accurate there
    assert res["predicted"]["accuracy"] == pytest.approx(0.5 + limit / 1000)
    assert res["feasible"] == n_feasible
    assert all(o["predicted"]["size_kb"] <= limit for o in res["others"])
    # More picks asked than subnets meet the budget: only those that meet it are listed.
    low = scores[0]
    few = sum(_score(c) == low for c in ctx.space.enumerate(10**6))
    res = bq.best_predicted(ctx, [f"size_kb<={low}"], top=few + 5)
    assert 1 + len(res["others"]) == few == res["feasible"]
    assert all(o["predicted"]["size_kb"] == low for o in res["others"])


def test_a_log_normal_prediction_is_checked_at_its_upper_quantile(tmp_path: Path, monkeypatch) -> None:
    import nas.budget_query as bq
    from nas.context import prepare
    from nas.errors import NoFeasibleError

    def evaluate(configs: list) -> dict[str, np.ndarray]:  # latency in log space: median 1.0 ms, log-std 0.1
        n = len(configs)
        return {"accuracy": np.full(n, 0.5), "accuracy_std": np.full(n, 0.01), "latency_ms": np.ones(n),
                "latency_ms_logstd": np.full(n, 0.1), **{k: np.ones(n) for k in ("size_kb", "macs", "flops",
                                                                                   "peak_act_kb")}}

    ctx = prepare(write_tiny(tmp_path), run_dir=tmp_path / "run")
    fake_predictors(monkeypatch, tmp_path / "fit", evaluate)
    assert bq.best_predicted(ctx, ["latency_ms<=1.05"])["predicted"]["latency_ms"] == 1.0  # the median meets it
    # At 0.99 every subnet is checked at exp(2.33 * 0.1) = 1.26 ms: above the limit, not below it.
    with pytest.raises(NoFeasibleError, match=r"latency_ms min 1\.26"):
        bq.best_predicted(ctx, ["latency_ms<=1.05"], confidence=0.99)
