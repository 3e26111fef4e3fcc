"""In-place distillation and the sandwich draw: what the training step's loss is made of."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from conftest import write_tiny
from nas.context import prepare
from nas.train import distill_divergence, init_state, sandwich_configs, sandwich_loss


def _cfg(tmp_path: Path, **changes):
    ctx = prepare(write_tiny(tmp_path), run_dir=tmp_path / "run")
    return ctx, dataclasses.replace(ctx.exp.train, **changes)


def test_kl_distillation_is_teacher_to_student_kl_times_t_squared(tmp_path: Path) -> None:
    _, cfg = _cfg(tmp_path, distill=True, distill_loss="kl", distill_temperature=2.0)
    rng = np.random.default_rng(0)
    teacher = rng.normal(size=(6, 5)).astype(np.float32) * 3
    students = rng.normal(size=(2, 6, 5)).astype(np.float32) * 3
    got = np.asarray(distill_divergence(jnp.asarray(teacher), jnp.asarray(students), cfg))

    def log_softmax(z):
        z = z.astype(np.float64) / 2.0
        return z - np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1, keepdims=True)) - z.max(-1, keepdims=True)

    lp, lq = log_softmax(teacher)[None], log_softmax(students)
    want = (np.exp(lp) * (lp - lq)).sum(-1).mean(-1) * 2.0**2  # KL(teacher || student), per student
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_the_teacher_gets_no_gradient_from_the_distillation_term(tmp_path: Path) -> None:
    _, cfg = _cfg(tmp_path, distill=True)
    rng = np.random.default_rng(1)
    teacher = jnp.asarray(rng.normal(size=(4, 5)), jnp.float32)
    students = jnp.asarray(rng.normal(size=(2, 4, 5)), jnp.float32)
    g = jax.grad(lambda t: distill_divergence(t, students, cfg).sum())(teacher)
    assert float(jnp.abs(g).max()) == 0.0
    gs = jax.grad(lambda s: distill_divergence(teacher, s, cfg).sum())(students)
    assert float(jnp.abs(gs).max()) > 0.0


def _logits_per_config(ctx, graphdef, params, rest, x, configs):
    model = nnx.merge(graphdef, params, rest)
    out = []
    for c in configs:
        a = {k: jnp.asarray(v[0]) for k, v in ctx.family.active(ctx.space, [c]).items()}
        out.append(model(x, active=a, mode="train"))
    return jnp.stack(out)


def test_sandwich_loss_distils_every_student_from_the_largest(tmp_path: Path) -> None:
    from nas.data import load_data

    ctx, cfg = _cfg(tmp_path, distill=True, label_loss="largest", distill_reduce="sum")
    graphdef, params, rest, _, _ = init_state(ctx)
    splits = load_data(ctx.exp.data)
    x, y = jnp.asarray(splits.x_train[:32]), jnp.asarray(splits.y_train[:32])
    configs = sandwich_configs(ctx, 0, 2)
    assert configs[0] == ctx.space.largest()
    active = {k: jnp.asarray(v) for k, v in ctx.family.active(ctx.space, configs).items()}
    loss, ce = sandwich_loss(graphdef, params, rest, x, y, active, cfg)
    logits = _logits_per_config(ctx, graphdef, params, rest, x, configs)
    ce_want = optax.softmax_cross_entropy_with_integer_labels(logits, y[None, :]).mean(axis=1)
    np.testing.assert_allclose(np.asarray(ce), np.asarray(ce_want), rtol=1e-5)
    div = distill_divergence(logits[0], logits[1:], cfg)  # teacher: the largest subnet
    np.testing.assert_allclose(float(loss), float(ce_want[0] + div.sum()), rtol=1e-5)
    # Without distillation every subnet learns from the labels.
    cfg_nd = dataclasses.replace(cfg, distill=False)
    loss_nd, ce_nd = sandwich_loss(graphdef, params, rest, x, y, active, cfg_nd)
    np.testing.assert_allclose(float(loss_nd), float(np.asarray(ce_want).sum()), rtol=1e-5)


def test_random_subnets_are_redrawn_every_step(tmp_path: Path) -> None:
    ctx, _ = _cfg(tmp_path)
    draws = {tuple(sorted(sandwich_configs(ctx, step, 1)[2].items())) for step in range(20)}
    assert len(draws) > 5
    assert sandwich_configs(ctx, 3, 2) == sandwich_configs(ctx, 3, 2)  # a pure function of (seed, step)
