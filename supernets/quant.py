"""Fake quantisation with traced bit-widths and a straight-through estimator."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

FLOAT_BITS = 32
SUPPORTED_BITS = (2, 3, 4, 5, 6, 7, 8, FLOAT_BITS)


class QuantParam(nnx.Param):
    """A quantiser parameter (activation clip range): tagged so optimisers can skip weight decay."""


def round_ste(x: jax.Array) -> jax.Array:
    """Round in the forward pass, identity gradient in the backward pass."""
    return x + jax.lax.stop_gradient(jnp.round(x) - x)


def _levels(bits: jax.Array, signed: bool) -> jax.Array:
    """Largest integer level: 2^(b-1)-1 for signed (symmetric), 2^b-1 for unsigned."""
    b = jnp.asarray(bits, jnp.float32)
    return jnp.exp2(b - 1.0) - 1.0 if signed else jnp.exp2(b) - 1.0


def quantize_weight(w: jax.Array, bits: jax.Array | int) -> jax.Array:
    """Symmetric per-output-channel fake quantisation of a (in, out) kernel; 32 bits = float."""
    if isinstance(bits, int) and bits >= FLOAT_BITS:
        return w
    qmax = _levels(bits, signed=True)
    scale = jnp.max(jnp.abs(w), axis=0, keepdims=True) / qmax
    scale = jnp.where(scale > 0, scale, 1.0)
    q = jnp.clip(round_ste(w / scale), -qmax, qmax) * scale
    return jnp.where(jnp.asarray(bits) >= FLOAT_BITS, w, q)


def quantize_activation(x: jax.Array, bits: jax.Array | int, clip: jax.Array, *, signed: bool) -> jax.Array:
    """Uniform fake quantisation of activations in [-clip, clip] (signed) or [0, clip]; 32 bits = float."""
    if isinstance(bits, int) and bits >= FLOAT_BITS:
        return x
    qmax = _levels(bits, signed=signed)
    clip = jnp.abs(clip) + 1e-8
    scale = clip / qmax
    lo = -clip if signed else jnp.zeros_like(clip)
    q = round_ste(jnp.clip(x, lo, clip) / scale) * scale
    return jnp.where(jnp.asarray(bits) >= FLOAT_BITS, x, q)
