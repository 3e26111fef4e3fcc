"""The optimiser `make_optimizer` builds from [train]: linear warm-up from 0, then the schedule decays over
the steps left after warm-up (cosine or linear, to 0 at the last step); SGD's momentum is 0.9."""

from __future__ import annotations

import jax.numpy as jnp
import pytest

from nas.config import TrainConfig
from nas.train import make_optimizer


def _cfg(**changes: object) -> TrainConfig:
    base = dict(steps=12, batch_size=8, optimizer="adam", learning_rate=0.1, weight_decay=0.0, warmup_steps=4,
                schedule="cosine", grad_clip=0.0, sandwich_random=2, distill=True, distill_temperature=1.0,
                checkpoint_every=4)
    base.update(changes)
    return TrainConfig(**base)


def _step_sizes(cfg: TrainConfig, n: int) -> list[float]:
    """|update| of each of n steps on a constant unit gradient: Adam's bias-corrected step is the learning rate."""
    params = {"kernel": jnp.zeros(1)}
    grads = {"kernel": jnp.ones(1)}
    tx = make_optimizer(cfg)
    state, out = tx.init(params), []
    for _ in range(n):
        updates, state = tx.update(grads, state, params)
        out.append(float(jnp.abs(updates["kernel"][0])))
    return out


def test_warm_up_rises_linearly_from_zero_then_cosine_decays_over_the_remaining_steps() -> None:
    lr = _step_sizes(_cfg(), 13)
    assert lr[:5] == pytest.approx([0.0, 0.025, 0.05, 0.075, 0.1], abs=1e-5)  # warm-up: 4 steps up to the peak
    # cosine over the 8 steps after warm-up: half way at step 4 + 4, zero at the last step (12)
    assert lr[6] == pytest.approx(0.1 * (1 + 2**-0.5) / 2, rel=1e-4)
    assert lr[8] == pytest.approx(0.05, rel=1e-4)
    assert lr[12] == pytest.approx(0.0, abs=1e-5)


def test_linear_schedule_decays_in_a_straight_line_to_zero() -> None:
    lr = _step_sizes(_cfg(schedule="linear"), 13)
    assert [lr[4], lr[6], lr[8], lr[12]] == pytest.approx([0.1, 0.075, 0.05, 0.0], abs=1e-5)


def test_without_warm_up_the_first_step_takes_the_full_rate() -> None:
    lr = _step_sizes(_cfg(warmup_steps=0, schedule="constant"), 3)
    assert lr == pytest.approx([0.1, 0.1, 0.1], rel=1e-4)


def test_sgd_carries_momentum_0_9() -> None:
    lr = _step_sizes(_cfg(optimizer="sgd", warmup_steps=0, schedule="constant"), 3)
    assert lr == pytest.approx([0.1, 0.19, 0.271], rel=1e-4)  # velocity 1, 1.9, 2.71 times the rate
