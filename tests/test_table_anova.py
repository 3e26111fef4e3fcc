"""The ANOVA diagnostic of benchmarks/table_anova.py: shares by interaction order on functions of known order."""

from __future__ import annotations

import itertools

import numpy as np

from conftest import load_benchmark

table_anova = load_benchmark("table_anova")


def test_shares_of_functions_of_known_order() -> None:
    rng = np.random.default_rng(0)
    A = np.array(list(itertools.product(range(3), repeat=4)))
    f, g = rng.normal(size=(4, 3)), rng.normal(size=(3, 3))
    main = f[np.arange(4), A].sum(axis=1)
    g -= g.mean(axis=0, keepdims=True) + g.mean(axis=1, keepdims=True) - g.mean()  # a pure pairwise term
    pair = g[A[:, 1], A[:, 3]]
    assert np.allclose(table_anova.order_shares(main, 4, 3), [0, 1, 0, 0, 0])
    assert np.allclose(table_anova.order_shares(pair, 4, 3), [0, 0, 1, 0, 0])
    mixed = table_anova.order_shares(main + pair, 4, 3)
    assert np.isclose(sum(mixed), 1) and np.isclose(mixed[1], main.var() / (main + pair).var())
