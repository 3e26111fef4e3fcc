"""The repeatability figure of the measure stage: per latency target, the share of re-timed subnets
within 5 / 10 % of their first time, the median relative difference, and the same before the anchor scale."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import nas.measure
from nas.context import prepare
from nas.latency import Timing

REPO = Path(__file__).resolve().parents[1]


def test_shares_compare_the_second_pass_with_the_first_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = prepare(REPO / "experiments" / "quickstart.toml", run_dir=tmp_path / "run")
    metrics = [m for m, _, _ in ctx.exp.measure.latency_targets()]
    rng = np.random.default_rng(0)
    configs = [ctx.space.largest(), ctx.space.smallest()] + [ctx.space.sample(rng) for _ in range(5)]
    # First times of 2.0 ms; the four checked rows come back 3 %, 8 %, 20 % and 50 % off, in a session
    # the anchors (the other three rows) put at 2x the reference's speed.
    rows = [{"key": str(i), "config": c, **{m: 2.0 for m in metrics}} for i, c in enumerate(configs)]
    now = [2.06, 2.16, 2.4, 1.0]
    monkeypatch.setattr(nas.measure, "compile_subnets", lambda ctx, model, configs, *a, **k: list(configs))
    monkeypatch.setattr(nas.measure, "time_subnets", lambda ctx, model, configs, *a, **k: [
        Timing(ms, 0.0, 5, 10, 0.0, session_scale=2.0) for ms in now[: len(configs)]])
    out = nas.measure.repeatability(ctx, None, rows, count=4, quiet=True)
    assert out["configs"] == 4
    for metric in metrics:
        entry = out[metric]
        assert entry["within_5pct"] == 0.25 and entry["within_10pct"] == 0.5
        assert entry["median_rel_diff"] == pytest.approx(0.14)  # of 0.03, 0.08, 0.2, 0.5
        assert entry["anchors"] == 3 and entry["session_scale"] == 2.0
        # Before the scale: half of what was reported, every subnet 40-75 % off its first time
        assert entry["unanchored"]["within_10pct"] == 0.0
        assert entry["unanchored"]["median_rel_diff"] == pytest.approx(0.4725)  # of 0.485, 0.46, 0.4, 0.75
