"""LSQ's initial steps: 2 mean|w| / sqrt(Qp) per output channel and bit-width (Esser et al.), act range / levels."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from supernets.quant import LSQ_BITS, lsq_act_steps, lsq_weight_steps


def test_initial_weight_steps_are_twice_the_mean_magnitude_over_root_qp() -> None:
    w = np.random.default_rng(0).normal(size=(3, 3, 4, 6)).astype(np.float32)  # a conv kernel, 6 outputs
    got = np.asarray(lsq_weight_steps(jnp.asarray(w)))
    mean_abs = np.abs(w.reshape(-1, 6)).mean(axis=0)
    want = np.stack([2 * mean_abs / np.sqrt(2.0 ** (b - 1) - 1) for b in LSQ_BITS])
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_initial_activation_steps_split_the_range_into_the_levels() -> None:
    for signed in (True, False):
        levels = [2.0 ** (b - 1) - 1 if signed else 2.0**b - 1 for b in LSQ_BITS]
        np.testing.assert_allclose(np.asarray(lsq_act_steps(6.0, signed)), [6.0 / q for q in levels], rtol=1e-6)
