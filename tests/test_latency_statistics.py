"""The timing harness's statistics without a clock: which samples count as far outliers, when a median
is stable enough to stop, and that an anchor scale rescales the spread along with the median."""

from __future__ import annotations

from test_latency import _Scripted

from nas.latency import time_programs, time_with_anchors


def test_a_sample_within_three_iqr_of_the_quartiles_is_kept() -> None:
    # Quartiles 1.03 and 1.09: 1.25 lies 2.7 IQR above the upper one, inside the 3-IQR fence.
    t = time_programs([_Scripted([1.0, 1.02, 1.04, 1.06, 1.08, 1.10, 1.25])], rounds=7)[0]
    assert t.outliers == 0 and abs(t.median_ms - 1.06) < 1e-9


def test_a_median_stable_to_its_95_percent_interval_needs_no_more_rounds() -> None:
    # IQR 1 % of the median over 9 rounds: the interval 1.57 IQR / sqrt(9) is 0.52 %, within a 1 % tolerance.
    script = [0.985, 0.99, 0.995, 1.0, 1.0, 1.005, 1.01, 1.015, 1.0] * 4
    t = time_programs([_Scripted(script)], rounds=9, max_rounds=30, rel_tol=0.01)[0]
    assert t.repeats == 9


def test_the_anchor_scale_rescales_the_spread_with_the_median() -> None:
    # This session runs 2x faster than the reference: a program spread over IQR 0.4 ms now spreads 0.8 in table units.
    anchor = (_Scripted([1.0] * 5), 2.0)
    (t,) = time_with_anchors([_Scripted([1.0, 1.2, 1.4, 1.6, 1.8])], [anchor], rounds=5)
    assert t.session_scale == 2.0
    assert abs(t.median_ms - 2.8) < 1e-9 and abs(t.iqr_ms - 0.8) < 1e-9
