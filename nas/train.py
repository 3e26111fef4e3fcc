"""Supernet training: sandwich rule + in-place distillation, one compiled step for every config,
orbax checkpoints so a killed run resumes and ends with the same weights."""

from __future__ import annotations

import time
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from nas.checkpoint import CheckpointStore
from nas.config import TrainConfig
from nas.context import Context
from nas.data import load_data
from nas.io import append_jsonl, write_json
from nas.progress import progress


def sandwich_configs(ctx: Context, step: int, n_random: int) -> list[dict[str, int]]:
    """Largest, smallest and `n_random` random configs; random draws seeded by (seed, step)."""
    rng = np.random.default_rng([ctx.exp.seed, step, 1])
    return [ctx.space.largest(), ctx.space.smallest()] + [ctx.space.sample(rng) for _ in range(n_random)]


def batch_indices(seed: int, step: int, n: int, batch: int) -> np.ndarray:
    """Example indices for `step`, a pure function of (seed, step) so resumed runs see the same data."""
    rng = np.random.default_rng([seed, step, 2])
    return rng.choice(n, size=min(batch, n), replace=False)


def make_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
    """AdamW (or Adam/SGD) with warm-up + schedule and global-norm clipping; decay on kernels only."""
    decay_steps = max(cfg.steps - cfg.warmup_steps, 1)
    tail = {
        "cosine": optax.cosine_decay_schedule(cfg.learning_rate, decay_steps),
        "linear": optax.linear_schedule(cfg.learning_rate, 0.0, decay_steps),
        "constant": optax.constant_schedule(cfg.learning_rate),
    }[cfg.schedule]
    warm = optax.linear_schedule(0.0, cfg.learning_rate, max(cfg.warmup_steps, 1))
    lr = optax.join_schedules([warm, tail], [cfg.warmup_steps]) if cfg.warmup_steps else tail

    def decay_mask(params: Any) -> Any:
        # Biases and quantiser clips are not decayed: shrinking them changes the function, not capacity.
        return jax.tree_util.tree_map_with_path(lambda path, _: "kernel" in jax.tree_util.keystr(path), params)

    base = {
        "adamw": lambda: optax.adamw(lr, weight_decay=cfg.weight_decay, mask=decay_mask),
        "adam": lambda: optax.adam(lr),
        "sgd": lambda: optax.sgd(lr, momentum=0.9),
    }[cfg.optimizer]()
    return optax.chain(optax.clip_by_global_norm(cfg.grad_clip), base) if cfg.grad_clip > 0 else base


def sandwich_loss(graphdef: Any, params: Any, x: jax.Array, y: jax.Array, active: dict[str, jax.Array],
                  *, distill: bool, temperature: float) -> tuple[jax.Array, jax.Array]:
    """Label loss on the largest (config 0); the others learn its soft outputs (in-place KD)."""
    model = nnx.merge(graphdef, params)
    logits = jax.vmap(lambda a: model(x, active=a))(active)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, y[None, :]).mean(axis=1)
    if not distill:
        return ce.sum(), ce
    teacher = jax.nn.softmax(jax.lax.stop_gradient(logits[0]) / temperature)
    student = jax.nn.log_softmax(logits[1:] / temperature)
    kl = (teacher * (jnp.log(teacher + 1e-12) - student)).sum(-1).mean(-1) * temperature**2
    return ce[0] + kl.sum(), ce


@partial(jax.jit, static_argnums=(0, 1), static_argnames=("distill", "temperature"), donate_argnums=(2, 3))
def train_step(graphdef: Any, tx: optax.GradientTransformation, params: Any, opt_state: Any, x: jax.Array,
               y: jax.Array, active: dict[str, jax.Array], *, distill: bool, temperature: float):
    """One sandwich step; configs are traced arrays, so this compiles once for every subnet."""
    (loss, ce), grads = jax.value_and_grad(sandwich_loss, argnums=1, has_aux=True)(
        graphdef, params, x, y, active, distill=distill, temperature=temperature
    )
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss, ce


def init_state(ctx: Context) -> tuple[Any, Any, Any, optax.GradientTransformation]:
    """Fresh supernet (graphdef, params), optimiser state and the optimiser."""
    model = ctx.family.build(ctx.space, rngs=nnx.Rngs(ctx.exp.seed))
    graphdef, params = nnx.split(model, nnx.Param)
    tx = make_optimizer(ctx.exp.train)
    return graphdef, params, tx.init(params), tx


def train(ctx: Context, *, quiet: bool = False) -> dict[str, Any]:
    """Train the supernet (resuming from the newest checkpoint) and stamp the stage done."""
    cfg = ctx.exp.train
    ckpt_dir = ctx.begin("train") / "ckpt"  # checkpoints from other settings would resume the wrong run

    splits = load_data(ctx.exp.data)
    graphdef, params, opt_state, tx = init_state(ctx)
    store = CheckpointStore(ckpt_dir, keep=2)
    start = 0
    restored = store.restore_latest({"params": params, "opt_state": opt_state})
    if restored is not None:
        start, state = restored
        params, opt_state = state["params"], state["opt_state"]
    x_train, y_train = jnp.asarray(splits.x_train), jnp.asarray(splits.y_train)
    log = ctx.path("train", "log.jsonl")
    t0, loss = time.time(), float("nan")
    with progress(f"train {ctx.exp.name}", total=cfg.steps, completed=start, quiet=quiet) as bar:
        for step in range(start, cfg.steps):
            configs = sandwich_configs(ctx, step, cfg.sandwich_random)
            active = {k: jnp.asarray(v) for k, v in ctx.family.active(ctx.space, configs).items()}
            idx = jnp.asarray(batch_indices(ctx.exp.seed, step, len(splits.x_train), cfg.batch_size))
            params, opt_state, loss_a, ce = train_step(
                graphdef, tx, params, opt_state, x_train[idx], y_train[idx], active,
                distill=cfg.distill, temperature=cfg.distill_temperature,
            )
            done = step + 1
            if done % cfg.checkpoint_every == 0 or done == cfg.steps:
                store.save(done, {"params": params, "opt_state": opt_state})
                loss = float(loss_a)
                append_jsonl(log, {"step": done, "loss": loss, "ce_largest": float(ce[0]),
                                   "ce_smallest": float(ce[1]), "elapsed_s": time.time() - t0})
            bar.update(done, info=f"loss {float(loss_a):.3f}" if done % 50 == 0 or done == cfg.steps else None)
    store.wait()
    summary = {"steps": cfg.steps, "resumed_from": start, "final_loss": loss, "wall_s": round(time.time() - t0, 2)}
    write_json(ctx.path("train", "summary.json"), summary)
    ctx.mark_done("train", summary)
    return summary


def load_supernet(ctx: Context) -> nnx.Module:
    """The trained supernet from the newest checkpoint of the train stage."""
    ctx.require("train")
    graphdef, params, opt_state, _ = init_state(ctx)
    restored = CheckpointStore(ctx.path("train", "ckpt")).restore_latest({"params": params, "opt_state": opt_state})
    if restored is None:
        from nas.errors import CheckpointError

        raise CheckpointError(f"no checkpoint in {ctx.path('train', 'ckpt')}")
    return nnx.merge(graphdef, restored[1]["params"])
