"""What one refit round may propose: a config the model is unsure of counts as better by kappa posterior
stds, in every objective and against every budget (lower under a max, higher under a min), for refit's own
model and yours; with its own model, only configs predicted within the budgets, and (without a list of the
table's rows) predicted to exist."""

from __future__ import annotations

import numpy as np

from nas.config import Budget, Objective
from nas.refit import RefitOptions, Surrogate, _refit_round
from nas.table import Space

OBJS = (Objective("acc", "maximize"), Objective("lat", "minimize"))
SPACE = Space(("a", "b"), (("0", "1", "2"), ("0", "1", "2")))
# Evaluated: every combination of the first two values, an accuracy / latency trade-off.
PRESENT = [((0, 0), {"acc": 0.5, "lat": 1.0, "mem": 1.0}), ((0, 1), {"acc": 0.6, "lat": 2.0, "mem": 1.0}),
           ((1, 0), {"acc": 0.7, "lat": 3.0, "mem": 1.0}), ((1, 1), {"acc": 0.8, "lat": 4.0, "mem": 1.0})]


def _surrogate(means: dict[str, list[float]], stds: dict[str, list[float]]) -> Surrogate:
    """A model answering fixed (mean, std) per metric for a two-config pool."""
    def predict(metric: str, configs: np.ndarray, y: np.ndarray, pool: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.array(means[metric]), np.array(stds[metric])
    return predict


def test_your_models_unsure_config_counts_as_better_in_the_objectives() -> None:
    # Both pool configs predicted alike and inside the front; only the second is uncertain.
    model = _surrogate({"acc": [0.55, 0.55], "lat": [3.5, 3.5]}, {"acc": [0.0, 0.3], "lat": [0.0, 3.0]})
    pool = np.array([[2, 0], [0, 2]])
    picks = _refit_round(SPACE, OBJS, (), PRESENT, pool, 1, RefitOptions(model=model, kappa=1.0), 0, {})
    assert picks == [1]


def test_your_models_unsure_config_may_meet_a_minimum_budget() -> None:
    # mem >= 0.9: the first config's mean misses it, but one std up it is met; the second surely misses it,
    # though it is better in both objectives. Only the first may be proposed.
    model = _surrogate({"acc": [0.55, 0.9], "lat": [3.5, 0.5], "mem": [0.85, 0.85]},
                       {"acc": [0.0, 0.0], "lat": [0.0, 0.0], "mem": [0.1, 0.0]})
    pool = np.array([[2, 0], [0, 2]])
    picks = _refit_round(SPACE, OBJS, (Budget("mem", min=0.9),), PRESENT, pool, 1,
                         RefitOptions(model=model, kappa=1.0), 0, {})
    assert picks == [0]


def test_refits_own_model_prefers_the_config_it_knows_least_under_a_large_kappa() -> None:
    # (2, 2) shares no value with anything evaluated: the posterior std is largest there.
    pool = np.array([[2, 0], [0, 2], [2, 2]])
    assert _refit_round(SPACE, OBJS, (), PRESENT, pool, 1, RefitOptions(kappa=20.0), 0, {}) == [2]


def test_without_a_list_of_rows_refit_learns_where_rows_are_missing() -> None:
    # The first column's value "2" came back empty twice: (2, 2), the config the model knows least and so
    # the most promising under a large kappa, is taken for missing too, and another is proposed.
    pool = np.array([[0, 2], [1, 2], [2, 2]])
    options = RefitOptions(kappa=20.0)
    assert _refit_round(SPACE, OBJS, (), PRESENT, pool, 1, options, 0, {}) == [2]
    assert _refit_round(SPACE, OBJS, (), PRESENT, pool, 1, options, 0, {}, absent=[(2, 0), (2, 1)]) != [2]


def test_refits_own_model_proposes_only_configs_predicted_within_a_budget() -> None:
    # Latency here is 1 + 2a + b: (0, 2) is predicted near 1.5, (1, 2) near 3.5, (2, 2) unknown (near the mean,
    # 2.5). Under lat <= 2 only (0, 2) may be proposed, however promising the unknown one looks.
    pool = np.array([[0, 2], [1, 2], [2, 2]])
    options = RefitOptions(kappa=20.0)
    assert _refit_round(SPACE, OBJS, (), PRESENT, pool, 1, options, 0, {}) == [2]
    assert _refit_round(SPACE, OBJS, (Budget("lat", max=2.0),), PRESENT, pool, 1, options, 0, {}) == [0]
