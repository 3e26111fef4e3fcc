"""Elastic normalisation layers.

BatchNorm in a weight-sharing supernet: running averages mix statistics of every subnet trained,
so they fit none. Here training always normalises with the batch's own statistics, and before a
subnet is evaluated its statistics are recalibrated (mode "calibrate" on training images stores
them; mode "eval" uses what was stored). A subnet's accuracy then depends only on its weights and
the calibration images, never on which configs were trained last."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from supernets.dense import prefix_mask

MODES = ("train", "calibrate", "eval")


class PlainBatchNorm(nnx.Module):
    """Static inference BatchNorm with fixed statistics (same formula as the elastic one)."""

    def __init__(self, scale: jax.Array, bias: jax.Array, mean: jax.Array, var: jax.Array, eps: float):
        self.scale, self.bias = nnx.Param(scale), nnx.Param(bias)
        self.mean, self.var = nnx.BatchStat(mean), nnx.BatchStat(var)
        self.eps = eps

    def __call__(self, x: jax.Array) -> jax.Array:
        """Normalise with the stored statistics."""
        return (x - self.mean[...]) * jax.lax.rsqrt(self.var[...] + self.eps) * self.scale[...] + self.bias[...]


class ElasticBatchNorm(nnx.Module):
    """BatchNorm over the last axis for any channel prefix; statistics recalibrated per subnet."""

    def __init__(self, channels: int, *, zero_init: bool = False, eps: float = 1e-5):
        self.channels, self.eps = channels, eps
        self.scale = nnx.Param(jnp.zeros((channels,)) if zero_init else jnp.ones((channels,)))
        self.bias = nnx.Param(jnp.zeros((channels,)))
        self.mean = nnx.BatchStat(jnp.zeros((channels,)))
        self.var = nnx.BatchStat(jnp.ones((channels,)))

    def __call__(self, x: jax.Array, *, width: jax.Array | int, mode: str) -> jax.Array:
        """Normalise (batch statistics in train/calibrate, stored ones in eval); zero past `width`."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if mode == "eval":
            mean, var = self.mean[...], self.var[...]
        else:
            axes = tuple(range(x.ndim - 1))
            mean = x.mean(axes)
            var = jnp.square(x - mean).mean(axes)
            if mode == "calibrate":
                self.mean[...], self.var[...] = mean, var
        y = (x - mean) * jax.lax.rsqrt(var + self.eps) * self.scale[...] + self.bias[...]
        return y * prefix_mask(width, self.channels)

    def extract(self, width: int) -> PlainBatchNorm:
        """The static layer for the first `width` channels with the stored (calibrated) statistics."""
        return PlainBatchNorm(self.scale[...][:width], self.bias[...][:width], self.mean[...][:width],
                              self.var[...][:width], self.eps)


class PlainLayerNorm(nnx.Module):
    """Static LayerNorm over the last axis."""

    def __init__(self, scale: jax.Array, bias: jax.Array, eps: float):
        self.scale, self.bias, self.eps = nnx.Param(scale), nnx.Param(bias), eps

    def __call__(self, x: jax.Array) -> jax.Array:
        """Normalise each position over its features."""
        mean = x.mean(-1, keepdims=True)
        var = jnp.square(x - mean).mean(-1, keepdims=True)
        return (x - mean) * jax.lax.rsqrt(var + self.eps) * self.scale[...] + self.bias[...]


class ElasticLayerNorm(nnx.Module):
    """LayerNorm over the first `width` features only (statistics ignore the masked tail)."""

    def __init__(self, features: int, *, eps: float = 1e-5):
        self.features, self.eps = features, eps
        self.scale = nnx.Param(jnp.ones((features,)))
        self.bias = nnx.Param(jnp.zeros((features,)))

    def __call__(self, x: jax.Array, *, width: jax.Array | int) -> jax.Array:
        """Normalise over the active features; zero past `width`."""
        mask = prefix_mask(width, self.features)
        n = jnp.maximum(mask.sum(), 1.0)
        mean = (x * mask).sum(-1, keepdims=True) / n
        var = (jnp.square(x - mean) * mask).sum(-1, keepdims=True) / n
        return ((x - mean) * jax.lax.rsqrt(var + self.eps) * self.scale[...] + self.bias[...]) * mask

    def extract(self, width: int) -> PlainLayerNorm:
        """The static LayerNorm of the first `width` features."""
        return PlainLayerNorm(self.scale[...][:width], self.bias[...][:width], self.eps)
