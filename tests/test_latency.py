"""The timing harness: per-call times from K iterations inside one compiled program."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from nas.latency import compile_program, device_profile, target_device, time_function, time_programs


def _matmul(params: jax.Array, x: jax.Array) -> jax.Array:
    return jnp.tanh(x @ params)


def test_time_function_reports_a_per_call_time_from_a_calibrated_loop() -> None:
    device = target_device("cpu")
    w = jnp.ones((64, 64), jnp.float32) * 0.01
    t = time_function(_matmul, w, jnp.ones((32, 64), jnp.float32), device=device, repeats=5, min_time_ms=1.0)
    assert t.median_ms > 0 and t.iqr_ms >= 0 and t.repeats == 5 and t.compile_s > 0
    # The loop count was raised until one timing lasted at least min_time_ms.
    assert t.iterations > 1 and t.median_ms * t.iterations >= 0.5


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
