"""Tabular mode at its edges, from a fuzzing review: a 2-row table, every spelling of "no value", metrics
of any scale, and a converged sampler that keeps proposing what it has seen."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import numpy as np
import pytest
from test_csv_tables import _write

from nas.tabular import bench_search, load_table


def test_refit_on_a_two_row_table_evaluates_both_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The warm start (largest and smallest net) took both rows; drawing the initial design from no rows
    # left crashed with a traceback.
    from nas.cli import main

    path = _write(tmp_path / "t.csv", "a,b,acc,lat\n1,1,0.9,3\n2,2,0.8,1\n")
    assert main(["bench-search", str(path), "--objective", "acc:max", "--objective", "lat:min", "--evals", "3"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["evals"] == 2 and result["front_size"] == 2 and result["hv_ratio"] == pytest.approx(1.0)


def test_every_spelling_of_no_value_is_one_value_of_a_column_of_numbers(tmp_path: Path) -> None:
    # Blank and NA cells of a layer below the depth are one inactive layer: rows 1 and 2 are one config.
    path = _write(tmp_path / "t.csv", "depth,w1,w2,acc,lat\n1,8,,0.70,1.0\n1,8,NA,0.71,1.1\n1,16,nan,0.75,1.5\n"
                                      "2,8,8,0.80,2.0\n2,16,16,0.90,3.0\n")
    table = load_table(path, ["acc:max", "lat:min"])
    assert len(table.space.values[2]) == 3  # 8, 16 and "no value"
    assert len(table.configs) == 4 and table.duplicates == 1
    assert table.space.describe(tuple(table.configs[0]))["w2"] == ""  # the first spelling names the value
    # A column of text keeps its cells as spelled ("none" may be an operation).
    text = _write(tmp_path / "ops.csv", "op,acc,lat\nnone,0.1,1\nNA,0.2,2\n,0.3,3\n")
    assert len(load_table(text, ["acc:max", "lat:min"]).space.values[0]) == 3


def _scaled_table(path: Path, scale: float) -> Path:
    rs = random.Random(11)
    lines = ["a,b,c,acc,lat"]
    for a, b, c in itertools.product(range(6), repeat=3):
        acc, lat = rs.random() * 0.3 + (a + b) / 20, (a + c) / 10 + rs.random() * 0.2
        lines.append(f"{a},{b},{c},{acc * scale!r},{lat * scale!r}")
    return _write(path, "\n".join(lines) + "\n")


def test_refit_searches_alike_whatever_the_metrics_scale(tmp_path: Path) -> None:
    # A fixed floor of 1e-30 on the model's signal variance made the std of metrics near 1e-16 wider than
    # their range: hv_ratio 0.99 at scale 1, 0.89-0.94 at 1e-16; near 1e-200 leave-one-out errors
    # underflowed to 0 and the model's selection kept its defaults.
    ratios = {scale: [bench_search(_scaled_table(tmp_path / f"t{i}.csv", scale), ["acc:max", "lat:min"], (), 40,
                                   "refit", seed)["hv_ratio"] for seed in range(2)]
              for i, scale in enumerate((1.0, 1e-16, 1e-20, 1e-200, 1e20, 1e140))}
    for scale, r in ratios.items():
        np.testing.assert_allclose(r, ratios[1.0], atol=1e-9, err_msg=f"scale {scale}")


def test_a_converged_tpe_gets_a_fresh_config_after_a_few_repeats(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # Each repeat of a seen config is a trial, and TPE's asks slow as the study grows: waiting for 100
    # repeats before a fresh config took 232 s for 498 evaluations of a 625-config space of 22 rows.
    import optuna

    studies = []
    create = optuna.create_study

    def spy(*args, **kwargs):
        studies.append(create(*args, **kwargs))
        return studies[-1]

    monkeypatch.setattr(optuna, "create_study", spy)
    rs = random.Random(0)
    rows = rs.sample(list(itertools.product(range(5), repeat=4)), 22)
    path = _write(tmp_path / "t.csv", "a,b,c,d,m0,m1\n" + "".join(
        f"{a},{b},{c},{d},{rs.random()},{rs.random()}\n" for a, b, c, d in rows))
    assert bench_search(path, ["m0:min", "m1:min"], (), 200, "tpe", seed=0)["evals"] == 200
    seen: set[tuple] = set()
    run = longest = 0
    for trial in studies[0].trials:
        config = tuple(sorted(trial.params.items()))
        run = run + 1 if config in seen else 0
        longest = max(longest, run)
        seen.add(config)
    assert longest <= 3  # 14 before
