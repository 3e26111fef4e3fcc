"""BatchNorm recalibration per subnet: before a subnet is evaluated or extracted, its statistics are
recomputed on `measure.calibration_samples` training images (families without statistics skip it)."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from nas.config import DataConfig
from nas.context import Context
from nas.data import load_data
from search_spaces import Config


@functools.lru_cache(maxsize=4)
def _calibration_inputs(data: DataConfig, n: int, seed: int) -> np.ndarray:
    x = load_data(data).x_train
    idx = np.random.default_rng([seed, 11]).permutation(len(x))[:n]
    return x[np.sort(idx)]


def has_statistics(model: nnx.Module) -> bool:
    """Whether the supernet holds normalisation statistics that must be recalibrated per subnet."""
    return bool(jax.tree.leaves(nnx.state(model, nnx.BatchStat)))


def calibration_inputs(ctx: Context, model: nnx.Module) -> jax.Array | None:
    """The (fixed, seeded) training images statistics are computed on; None if the model has none."""
    if not has_statistics(model):
        return None
    return jnp.asarray(_calibration_inputs(ctx.exp.data, ctx.exp.measure.calibration_samples, ctx.exp.seed))


@functools.partial(jax.jit, static_argnums=0)
def _calibrate(graphdef: Any, state: Any, active: dict[str, jax.Array], x: jax.Array) -> Any:
    m = nnx.merge(graphdef, state)
    m(x, active=active, mode="calibrate")
    return nnx.state(m)


def calibrated(ctx: Context, model: nnx.Module, config: Config) -> nnx.Module:
    """`model` with its statistics recomputed for `config` (the model itself if it has none)."""
    x = calibration_inputs(ctx, model)
    if x is None:
        return model
    graphdef, state = nnx.split(model)
    active = {k: jnp.asarray(v[0]) for k, v in ctx.family.active(ctx.space, [config]).items()}
    return nnx.merge(graphdef, _calibrate(graphdef, state, active, x))


def extract_subnet(ctx: Context, model: nnx.Module, config: Config) -> nnx.Module:
    """The static subnet of `config`, with its own recalibrated statistics."""
    return ctx.family.extract(calibrated(ctx, model, config), ctx.space, config)
