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
    """Static inference BatchNorm, folded to one scale and one shift per channel (what a deployment
    stores: 2 floats per channel, as the families' size model counts)."""

    def __init__(self, scale: jax.Array, shift: jax.Array):
        self.scale, self.bias = nnx.Param(scale), nnx.Param(shift)

    def __call__(self, x: jax.Array) -> jax.Array:
        """x * scale + shift (the stored statistics already folded in)."""
        return x * self.scale[...] + self.bias[...]


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

    def extract(self, width: int, input_bias: jax.Array | None = None) -> PlainBatchNorm:
        """The static layer for the first `width` channels with the stored (calibrated) statistics
        folded in, and the preceding layer's bias (`input_bias`) too when given."""
        factor = jax.lax.rsqrt(self.var[...][:width] + self.eps) * self.scale[...][:width]
        shift = self.bias[...][:width] - self.mean[...][:width] * factor
        if input_bias is not None:
            shift = shift + input_bias * factor
        return PlainBatchNorm(factor, shift)


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
