"""Supernet training: sandwich rule + in-place distillation, one compiled step for every config,
orbax checkpoints so a killed run resumes and ends with the same weights."""

from __future__ import annotations

import math
import sys
import time
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from nas.batching import over_configs, resolve
from nas.checkpoint import CheckpointStore
from nas.config import TrainConfig
from nas.context import Context
from nas.data import load_data
from nas.errors import StageError
from nas.interrupts import raise_if_interrupted
from nas.io import append_jsonl, file_digest, jsonl_line, read_jsonl, write_bytes, write_json
from nas.progress import progress
from search_spaces import SearchSpace, is_bit_width
from supernets.sorting import permute_like, permute_state


def sandwich_configs(ctx: Context, step: int, n_random: int, smallest_bits: str = "min",
                     uniform_bits: float = 0.0) -> list[dict[str, int]]:
    """Largest, smallest and `n_random` random configs; random draws seeded by (seed, step).

    With `smallest_bits="random"` the smallest architecture runs at random per-layer bit-widths: the
    lowest bits everywhere would otherwise be the only precision its weights are ever trained at.
    With `"both"` it runs twice, at the lowest bits (the space's true lower bound, drawn by "random"
    only once in choices^layers steps) and at random bits: one config more per step.
    With `uniform_bits=p` each random subnet, with probability p, runs all its layers at one bit-width:
    drawn per layer, all-low-bit subnets (the ones that lose most to quantisation) are rarely trained."""
    rng = np.random.default_rng([ctx.exp.seed, step, 1])
    smallest = [ctx.space.smallest()]
    if smallest_bits in ("random", "both"):
        bits_rng = np.random.default_rng([ctx.exp.seed, step, 3])
        drawn = ctx.space.canonical({**smallest[0], **{d.name: int(bits_rng.choice(d.choices))
                                                      for d in ctx.space.dimensions if is_bit_width(d.name)}})
        smallest = smallest + [drawn] if smallest_bits == "both" else [drawn]
    randoms = [ctx.space.sample(rng) for _ in range(n_random)]
    if uniform_bits > 0:
        randoms = [_one_bit_width(ctx.space, c, np.random.default_rng([ctx.exp.seed, step, 4, i]), uniform_bits)
                   for i, c in enumerate(randoms)]
    return [ctx.space.largest(), *smallest, *randoms]


def _one_bit_width(space: SearchSpace, config: dict[str, int], rng: np.random.Generator, p: float) -> dict[str, int]:
    """With probability `p`, `config` with every bit-width set to one common choice (where a layer has it)."""
    if rng.random() >= p:
        return config
    common = sorted({b for d in space.dimensions if is_bit_width(d.name) for b in d.choices})
    bits = int(rng.choice(common))
    return space.canonical({**config, **{d.name: bits for d in space.dimensions
                                         if is_bit_width(d.name) and bits in d.choices}})


def batch_indices(seed: int, step: int, n: int, batch: int) -> np.ndarray:
    """Example indices for `step`, a pure function of (seed, step) so resumed runs see the same data: the
    steps take consecutive slices of a stream of shuffled epochs, so every example is seen once per epoch."""
    batch = min(batch, n)
    start = step * batch
    parts = []
    while batch > 0:  # a batch that straddles two epochs takes the end of one and the start of the next
        epoch, offset = divmod(start, n)
        part = _epoch_order(seed, epoch, n)[offset:offset + batch]
        parts.append(part)
        start, batch = start + len(part), batch - len(part)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


@lru_cache(maxsize=2)
def _epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    # Drawn independently per step before, 10 % of the examples went unseen over two epochs' steps. Tag 5:
    # [seed, k, 3] is step k's bit-width stream, and epoch k's order started from the same state (review).
    order = np.random.default_rng([seed, epoch, 5]).permutation(n)
    order.setflags(write=False)  # shared by the epoch's steps
    return order


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

    # adamw decays the weights apart from the gradient (decoupled); adam and sgd add the decay to the
    # gradient (L2), as PyTorch's weight_decay does for them. It was read by adamw alone.
    l2 = optax.add_decayed_weights(cfg.weight_decay, mask=decay_mask)
    base = {
        "adamw": lambda: optax.adamw(lr, weight_decay=cfg.weight_decay, mask=decay_mask),
        "adam": lambda: optax.chain(l2, optax.adam(lr)),
        "sgd": lambda: optax.chain(l2, optax.sgd(lr, momentum=0.9)),
    }[cfg.optimizer]()
    return optax.chain(optax.clip_by_global_norm(cfg.grad_clip), base) if cfg.grad_clip > 0 else base


def distill_divergence(teacher_logits: jax.Array, student_logits: jax.Array, cfg: TrainConfig) -> jax.Array:
    """Per-student divergence from the (stop-gradient) teacher: KL, or AlphaNet's max of two alpha-divergences."""
    t = cfg.distill_temperature
    log_p = jax.nn.log_softmax(jax.lax.stop_gradient(teacher_logits) / t)
    log_q = jax.nn.log_softmax(student_logits / t)
    p = jnp.exp(log_p)
    if cfg.distill_loss == "kl":
        div = (p * (log_p - log_q)).sum(-1)
    else:
        # Clipped log-ratio keeps (q/p)^(1-alpha) finite where the teacher is nearly sure (AlphaNet's rationale).
        ratio = jnp.clip(log_q - log_p, -10.0, 10.0)
        div = jnp.stack([(p * (jnp.exp((1.0 - a) * ratio) - 1.0)).sum(-1) / (a * (a - 1.0))
                         for a in cfg.distill_alpha]).max(axis=0)
    return div.mean(-1) * t**2


def sandwich_loss(graphdef: Any, params: Any, rest: Any, x: jax.Array, y: jax.Array, active: dict[str, jax.Array],
                  cfg: TrainConfig, batching: str = "vmap") -> tuple[jax.Array, jax.Array]:
    """Label loss on the largest (config 0) or on all; the others also learn its soft outputs (in-place KD)."""
    model = nnx.merge(graphdef, params, rest)
    logits = over_configs(lambda a: model(x, active=a, mode="train"), active, batching)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, y[None, :]).mean(axis=1)
    label = ce.sum() if cfg.label_loss == "all" else ce[0]
    if not cfg.distill:  # without a teacher every subnet learns from the labels
        return ce.sum(), ce
    div = distill_divergence(logits[0], logits[1:], cfg)
    # "mean" keeps the largest's label loss a fixed share of the total however many students there are.
    return label + (div.mean() if cfg.distill_reduce == "mean" else div.sum()), ce


@partial(jax.jit, static_argnums=(0, 1, 2), static_argnames=("batching",), donate_argnums=(3, 4))
def train_step(graphdef: Any, tx: optax.GradientTransformation, cfg: TrainConfig, params: Any, opt_state: Any,
               rest: Any, x: jax.Array, y: jax.Array, active: dict[str, jax.Array],
               batching: str = "vmap") -> tuple[Any, Any, jax.Array, jax.Array]:
    """One sandwich step; configs are traced arrays, so this compiles once for every subnet."""
    (loss, ce), grads = jax.value_and_grad(sandwich_loss, argnums=1, has_aux=True)(
        graphdef, params, rest, x, y, active, cfg, batching
    )
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss, ce


def sort_due(cfg: TrainConfig, done: int) -> bool:
    """Whether channels are sorted after step `done`: every `sort_every` steps, or once when warm-up ends."""
    if cfg.channel_sorting == "none":
        return False
    return done % cfg.sort_every == 0 if cfg.sort_every else done == max(cfg.warmup_steps, 1)


def sort_channels(ctx: Context, graphdef: Any, params: Any, rest: Any, opt_state: Any) -> tuple[Any, Any, Any]:
    """(params, rest, opt_state) with the family's channel permutations applied to all three: Adam's
    moments move with their parameters, so the next step is the permuted version of the unsorted one."""
    perms = ctx.family.channel_permutations(nnx.merge(graphdef, params, rest), ctx.space)
    return permute_state(params, perms), permute_state(rest, perms), permute_like(opt_state, params, perms)


def init_state(ctx: Context) -> tuple[Any, Any, Any, Any, optax.GradientTransformation]:
    """Fresh supernet (graphdef, params, other state such as BN statistics), optimiser state and optimiser."""
    model = ctx.family.build(ctx.space, rngs=nnx.Rngs(ctx.exp.seed))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tx = make_optimizer(ctx.exp.train)
    return graphdef, params, rest, tx.init(params), tx


def data_parallel_shardings(cfg: TrainConfig, n_examples: int) -> tuple[Any, Any] | None:
    """(batch sharding, replicated sharding) over all local devices, or None on one device (with a note why)."""
    devices = jax.local_devices()
    if not cfg.data_parallel or len(devices) < 2:
        return None
    # The batch that is split is the one batch_indices draws: all the examples when they are fewer.
    batch = min(cfg.batch_size, n_examples)
    if batch % len(devices):
        why = (f"train.batch_size {cfg.batch_size}" if batch == cfg.batch_size else
               f"all {n_examples} training examples, fewer than train.batch_size {cfg.batch_size}")
        print(f"note: training on one device: a batch of {batch} ({why}) does not split evenly over "
              f"{len(devices)} devices", file=sys.stderr)
        return None
    mesh = jax.sharding.Mesh(np.array(devices), ("data",))
    spec = jax.sharding.PartitionSpec
    return jax.sharding.NamedSharding(mesh, spec("data")), jax.sharding.NamedSharding(mesh, spec())


@jax.jit
def _all_finite(tree: Any) -> jax.Array:
    return jnp.all(jnp.asarray([jnp.isfinite(a).all() for a in jax.tree.leaves(tree)]))


def _finite(tree: Any) -> bool:
    """Whether every value of a tree of float arrays is finite."""
    return bool(_all_finite(tree))


def train(ctx: Context, *, quiet: bool = False) -> dict[str, Any]:
    """Train the supernet (resuming from the newest checkpoint) and stamp the stage done."""
    cfg = ctx.exp.train
    ckpt_dir = ctx.begin("train") / "ckpt"  # checkpoints from other settings would resume the wrong run

    splits = load_data(ctx.exp.data)
    path = ctx.exp.data.path
    if path is not None and file_digest(path) != ctx.data_digest(path):
        # The stamp will name the data the stage began with (its fingerprint): not what was loaded.
        raise StageError(f"data file {path} changed as the train stage began; run it again")
    graphdef, params, rest, opt_state, tx = init_state(ctx)
    store = CheckpointStore(ckpt_dir, keep=2)
    start = 0
    restored = store.restore_latest({"params": params, "opt_state": opt_state}, fallback=True,
                                    redo="run `nas train --force` to train from the start")
    if restored is not None:
        start, state = restored
        params, opt_state = state["params"], state["opt_state"]
    batching = resolve(cfg.sandwich_batching, ctx.family)
    shardings = data_parallel_shardings(cfg, len(splits.x_train))
    if shardings is not None:
        # Parameters replicated, each batch split across devices: XLA all-reduces the gradients.
        params, opt_state, rest = jax.device_put((params, opt_state, rest), shardings[1])
    put = (lambda a: jax.device_put(a, shardings[0])) if shardings is not None else jnp.asarray
    log = ctx.path("train", "log.jsonl")
    trim_log(log, start)
    t0, loss = time.time(), float("nan")
    with progress(f"train {ctx.exp.name}", total=cfg.steps, completed=start, quiet=quiet) as bar:
        for step in range(start, cfg.steps):
            raise_if_interrupted()  # a Ctrl-C swallowed in a gc callback stops here, between steps
            configs = sandwich_configs(ctx, step, cfg.sandwich_random, cfg.smallest_bits, cfg.uniform_bits)
            active = {k: jnp.asarray(v) for k, v in ctx.family.active(ctx.space, configs).items()}
            idx = batch_indices(ctx.exp.seed, step, len(splits.x_train), cfg.batch_size)
            params, opt_state, loss_a, ce = train_step(
                graphdef, tx, cfg, params, opt_state, rest, put(splits.x_train[idx]), put(splits.y_train[idx]), active,
                batching=batching,
            )
            done = step + 1
            saving = done % cfg.checkpoint_every == 0 or done == cfg.steps
            reporting = done % 50 == 0 or done == cfg.steps
            if (saving or reporting) and not math.isfinite(float(loss_a)):  # before a checkpoint could keep it
                raise StageError(f"training diverged: the loss is {float(loss_a)} at step {done}; lower "
                               f"train.learning_rate (now {cfg.learning_rate:g}) or check the train section")
            if sort_due(cfg, done):  # before this step's checkpoint, so a resumed run replays it exactly
                params, rest, opt_state = sort_channels(ctx, graphdef, params, rest, opt_state)
            if saving and not _finite(params):  # a finite loss is that of the weights before this update
                raise StageError(f"training diverged: a weight is not a finite number after step {done}; lower "
                                 f"train.learning_rate (now {cfg.learning_rate:g}) or check the train section")
            if saving:
                # Logged before the save: a run killed between the two resumes from the step before and
                # logs this one again (trim_log); saved first, a resume past it had no loss to report.
                loss = float(loss_a)
                append_jsonl(log, {"step": done, "loss": loss, "ce_largest": float(ce[0]),
                                   "ce_smallest": float(ce[1]), "elapsed_s": time.time() - t0})
                store.save(done, {"params": params, "opt_state": opt_state})
            bar.update(done, info=f"loss {float(loss_a):.3f}" if reporting else None)
    store.wait()
    if start >= cfg.steps:  # resumed after its last save (killed before its stamp): the loss it logged
        loss = next((r["loss"] for r in reversed(read_jsonl(log)) if isinstance(r, dict) and "loss" in r), loss)
    summary = {"steps": cfg.steps, "resumed_from": start, "final_loss": loss, "wall_s": round(time.time() - t0, 2),
               "devices": 1 if shardings is None else len(jax.local_devices())}
    write_json(ctx.path("train", "summary.json"), summary)
    ctx.mark_done("train", summary)
    return summary


def trim_log(log: Path, start: int) -> None:
    """Keep the training log's rows up to step `start`, where training resumes: later ones were logged
    by a run killed before it saved them, or past a checkpoint found corrupt, and are logged again."""
    if not log.is_file():
        return
    rows = read_jsonl(log)
    kept = [r for r in rows if isinstance(r, dict) and isinstance(r.get("step"), int) and r["step"] <= start]
    if len(kept) != len(rows):
        write_bytes(log, b"".join(jsonl_line(r) for r in kept))


def load_supernet(ctx: Context) -> nnx.Module:
    """The trained supernet from the newest checkpoint of the train stage."""
    ctx.require("train")
    graphdef, params, rest, opt_state, _ = init_state(ctx)
    restored = CheckpointStore(ctx.path("train", "ckpt")).restore_latest(
        {"params": params, "opt_state": opt_state}, redo="re-run `nas train --force`")
    if restored is None:
        from nas.errors import CheckpointError

        raise CheckpointError(f"no checkpoint in {ctx.path('train', 'ckpt')}")
    # Statistics are not checkpointed: every subnet is recalibrated before it is evaluated.
    return nnx.merge(graphdef, restored[1]["params"], rest)
