"""The timing harness: per-call times from K iterations inside one compiled program."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from nas.latency import (
    _looped,
    compile_program,
    device_profile,
    loop_count,
    target_device,
    time_function,
    time_programs,
    time_reference,
    time_with_anchors,
    use_compilation_cache,
)


def _matmul(params: jax.Array, x: jax.Array) -> jax.Array:
    return jnp.tanh(x @ params)


def test_time_function_reports_a_per_call_time_from_a_calibrated_loop() -> None:
    device = target_device("cpu")
    w = jnp.ones((64, 64), jnp.float32) * 0.01
    # 5 ms, not 1: on a loaded machine one call of this microsecond program once took over 1 ms.
    t = time_function(_matmul, w, jnp.ones((32, 64), jnp.float32), device=device, repeats=5, min_time_ms=5.0)
    assert t.median_ms > 0 and t.iqr_ms >= 0 and t.repeats == 5 and t.compile_s > 0
    # The loop count was raised until one timing lasted at least min_time_ms.
    assert t.iterations > 1 and t.median_ms * t.iterations >= 1.0  # load spikes during calibration: slack


def test_the_timing_loop_repeats_work_on_the_parameters_alone_every_iteration() -> None:
    """An int8 weight's dequantisation depends on the parameters only: XLA hoisted it out of the loop,
    so weight-only int8 layers were timed 2.3x too fast. The loop must carry the int8 weights, not a
    dequantised copy made once before it."""
    def dequant_matmul(params: tuple[jax.Array, jax.Array], x: jax.Array) -> jax.Array:
        w, scale = params
        return x @ (w.astype(jnp.float32) * scale)

    params = (jnp.ones((256, 384), jnp.int8), jnp.float32(0.1))
    hlo = _looped(dequant_matmul).lower(params, jnp.ones((1, 256)), jnp.int32(1)).compile().as_text()
    loops = [line for line in hlo.splitlines() if " while(" in line]
    assert loops and all("s8[256,384]" in line and "f32[256,384]" not in line for line in loops)


def test_bigger_work_takes_longer_in_interleaved_rounds() -> None:
    device = target_device("cpu")
    small = compile_program(_matmul, jnp.ones((16, 16)) * 0.01, jnp.ones((8, 16)), device=device, min_time_ms=1.0)
    big = compile_program(_matmul, jnp.ones((512, 512)) * 0.01, jnp.ones((256, 512)), device=device,
                          min_time_ms=1.0)
    t_small, t_big = time_programs([small, big], rounds=5)
    # 256x512x512 vs 8x16x16 multiply-adds: a factor of 32,768 in work; timing must see some of it.
    assert t_big.median_ms > 10 * t_small.median_ms


def test_device_profile_names_the_device_and_versions() -> None:
    profile = device_profile(target_device("cpu"))
    assert profile["platform"] == "cpu" and profile["jax"] == jax.__version__ and profile["date"]


class _Scripted:
    """A stand-in Program whose loop timings follow a script: the harness's logic without the clock."""

    def __init__(self, per_iter_ms: list[float], iterations: int = 10) -> None:
        self.script = list(per_iter_ms)
        self.iterations = iterations
        self.calls = 1
        self.compile_s = 0.0
        self.seen = 0

    def run(self, n: int) -> float:
        ms = self.script[min(self.seen, len(self.script) - 1)]
        self.seen += 1
        return ms * n / 1e3

    def run_calls(self, n: int) -> float:
        return 0.5 * n / 1e3


def test_stable_programs_stop_after_the_minimum_rounds_and_noisy_ones_get_more() -> None:
    steady = _Scripted([1.0] * 40)
    noisy = _Scripted([1.0, 2.0, 0.5, 3.0, 1.2, 0.4, 2.5] * 6)
    t_steady, t_noisy = time_programs([steady, noisy], rounds=5, max_rounds=30, rel_tol=0.02)
    assert t_steady.repeats == 5 and t_steady.median_ms == 1.0 and t_steady.iqr_ms == 0.0
    assert t_noisy.repeats == 30


def test_a_far_outlier_is_dropped_and_counted() -> None:
    t = time_programs([_Scripted([1.0, 1.01, 0.99, 1.0, 50.0, 1.02, 0.98])], rounds=7)[0]
    assert t.outliers == 1 and abs(t.median_ms - 1.0) < 0.011 and t.iqr_ms < 0.05


def test_end_to_end_time_is_reported_only_when_asked() -> None:
    assert time_programs([_Scripted([1.0] * 5)], rounds=3)[0].e2e_ms is None
    t = time_programs([_Scripted([1.0] * 5)], rounds=3, e2e=True)[0]
    assert t.e2e_ms == 0.5 and t.as_row("latency_ms@b1")["latency_e2e_ms@b1"] == 0.5


def test_loop_count_is_not_cut_short_by_one_slow_run() -> None:
    # Every third run is descheduled (100x slower): judging on one run would stop the doubling at n=1.
    calls = {"k": 0}

    def run(n: int) -> float:
        calls["k"] += 1
        return (0.1 if calls["k"] % 3 == 1 else 1e-3 * n) / 1e3

    assert loop_count(run, min_time_ms=0.01) == 16


def test_single_calls_and_loop_agree_on_a_fixed_function_in_order_of_magnitude() -> None:
    device = target_device("cpu")
    t = time_function(_matmul, jnp.ones((128, 128)) * 0.01, jnp.ones((64, 128)), device=device, repeats=5,
                      min_time_ms=1.0, e2e=True)
    # A single call also pays the host dispatch, so it can only be slower than a loop iteration.
    assert t.e2e_ms is not None and t.e2e_ms > 0.5 * t.median_ms


def test_a_program_without_host_calls_is_looped_only_and_has_no_end_to_end_time() -> None:
    # Table units and anchors never use a single-call program: it was compiled and calibrated all the same.
    prog = compile_program(_matmul, jnp.ones((32, 32)) * 0.01, jnp.ones((8, 32)), device=target_device("cpu"),
                           min_time_ms=0.5, host_calls=False)
    assert prog.single is None and prog.calls == 0 and prog.iterations >= 1
    t = time_programs([prog], rounds=3, e2e=True)[0]
    assert t.e2e_ms is None and t.median_ms > 0


def test_compiled_programs_land_in_the_persistent_cache(tmp_path) -> None:
    use_compilation_cache(tmp_path)
    try:
        compile_program(lambda w, x: jnp.sin(x @ w) * 3.0, jnp.ones((24, 24)), jnp.ones((4, 24)),
                        device=target_device("cpu"), min_time_ms=0.1)
        assert any(tmp_path.iterdir())
        assert device_profile(target_device("cpu"))["compilation_cache"] == str(tmp_path)
    finally:
        jax.config.update("jax_compilation_cache_dir", None)


def test_anchors_rescale_a_session_to_the_reference_units() -> None:
    # This session runs everything 2x faster than the reference one: anchors timed now at 1.0 and
    # 3.0 ms were 2.0 and 6.0 ms then, so a program timed now at 0.5 ms is 1.0 ms in table units.
    anchors = [(_Scripted([1.0] * 5), 2.0), (_Scripted([3.0] * 5), 6.0), (_Scripted([2.0] * 5), 40.0)]
    (t,) = time_with_anchors([_Scripted([0.5] * 5)], anchors, rounds=3)
    # The median ratio, so one anchor that ran unlike the others (20x) does not move the scale.
    assert t.session_scale == 2.0 and t.median_ms == 1.0 and t.iqr_ms == 0.0
    assert t.as_row("latency_ms@b1")["latency_session_scale@b1"] == 2.0
    (plain,) = time_with_anchors([_Scripted([0.5] * 5)], [], rounds=3)
    assert plain.session_scale is None and "latency_session_scale" not in plain.as_row()


def test_pick_anchors_spreads_over_the_latency_range() -> None:
    from nas.measure import pick_anchors

    rows = [{"key": str(i), "latency_ms": float(ms)} for i, ms in enumerate([5, 1, 9, 3, 7, 2, 8, 4, 6])]
    rows.append({"key": "untimed"})
    assert [r["latency_ms"] for r in pick_anchors(rows, 3)] == [1.0, 5.0, 9.0]
    assert len(pick_anchors(rows, 50)) == 9 and pick_anchors(rows, 0) == [] and pick_anchors([], 4) == []
    assert pick_anchors(rows, 2, "latency_ms@b1") == []


def test_a_chunk_timed_in_a_slow_spell_is_timed_again() -> None:
    # The first set of rounds runs 1.5x slow (anchors and subnet alike); the second is quiet.
    anchor = _Scripted([1.5] * 3 + [1.0] * 3)
    (t,) = time_with_anchors([_Scripted([3.0] * 3 + [2.0] * 3)], [(anchor, 1.0)], rounds=3, retries=2, tolerance=0.05)
    assert t.attempts == 2 and t.session_scale == 1.0 and t.median_ms == 2.0
    assert t.as_row()["latency_attempts"] == 2
    # Always slow: every retry is spent, and the attempt closest to the reference is kept, scaled.
    always = _Scripted([1.6] * 3 + [1.25] * 3 + [1.5] * 3)
    (t,) = time_with_anchors([_Scripted([4.0] * 3 + [2.5] * 3 + [3.0] * 3)], [(always, 1.0)], rounds=3, retries=2)
    assert t.attempts == 3 and t.session_scale == 0.8 and t.median_ms == 2.0


def test_a_reference_keeps_the_faster_of_two_timings() -> None:
    slow_first, slow_second = _Scripted([2.0] * 3 + [1.0] * 3), _Scripted([1.0] * 3 + [2.0] * 3)
    assert [t.median_ms for t in time_reference([slow_first, slow_second], rounds=3)] == [1.0, 1.0]
