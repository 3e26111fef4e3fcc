"""Fake quantisation with traced bit-widths and a straight-through estimator."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

FLOAT_BITS = 32
SUPPORTED_BITS = (2, 3, 4, 5, 6, 7, 8, FLOAT_BITS)


class QuantParam(nnx.Param):
    """A quantiser parameter (activation clip range): tagged so optimisers can skip weight decay."""


def step_param(step: jax.Array, bits: int) -> QuantParam | None:
    """A static layer's quantiser step, or None at float bits (nothing to store, nothing used)."""
    return QuantParam(step) if bits < FLOAT_BITS else None


def round_ste(x: jax.Array) -> jax.Array:
    """Round in the forward pass, identity gradient in the backward pass."""
    return x + jax.lax.stop_gradient(jnp.round(x) - x)


def _static_bits(bits: jax.Array | int) -> int | None:
    """`bits` when known before tracing (an int), checked against SUPPORTED_BITS; None when traced."""
    if isinstance(bits, (int, np.integer)) and not isinstance(bits, bool):
        if int(bits) not in SUPPORTED_BITS:
            # 1 signed bit has no level but 0: every scale was max|w| / 0 and the output NaN (review).
            raise ValueError(f"bits must be one of {SUPPORTED_BITS}, got {int(bits)}")
        return int(bits)
    return None


def _levels(bits: jax.Array, signed: bool) -> jax.Array:
    """Largest integer level: 2^(b-1)-1 for signed (symmetric), 2^b-1 for unsigned."""
    b = jnp.asarray(bits, jnp.float32)
    return jnp.exp2(b - 1.0) - 1.0 if signed else jnp.exp2(b) - 1.0


def quantize_weight(w: jax.Array, bits: jax.Array | int) -> jax.Array:
    """Symmetric per-output-channel fake quantisation of a (in, out) kernel at `bits` (one of
    SUPPORTED_BITS; traced bit-widths are not checked); 32 bits = float."""
    if _static_bits(bits) == FLOAT_BITS:
        return w
    qmax = _levels(bits, signed=True)
    scale = jnp.max(jnp.abs(w), axis=0, keepdims=True) / qmax
    scale = jnp.where(scale > 0, scale, 1.0)
    q = jnp.clip(round_ste(w / scale), -qmax, qmax) * scale
    return jnp.where(jnp.asarray(bits) >= FLOAT_BITS, w, q)


def quantize_activation(x: jax.Array, bits: jax.Array | int, clip: jax.Array, *, signed: bool) -> jax.Array:
    """Uniform fake quantisation of activations in [-clip, clip] (signed) or [0, clip] at `bits` (one of
    SUPPORTED_BITS; traced bit-widths are not checked); 32 bits = float."""
    if _static_bits(bits) == FLOAT_BITS:
        return x
    qmax = _levels(bits, signed=signed)
    clip = jnp.abs(clip) + 1e-8
    scale = clip / qmax
    lo = -clip if signed else jnp.zeros_like(clip)
    q = round_ste(jnp.clip(x, lo, clip) / scale) * scale
    return jnp.where(jnp.asarray(bits) >= FLOAT_BITS, x, q)


# -- LSQ: learned step sizes, one per bit-width (and per output channel for weights) -------------
LSQ_BITS = tuple(b for b in SUPPORTED_BITS if b < FLOAT_BITS)  # rows of a step table


def bit_row(bits: jax.Array | int) -> jax.Array:
    """Row of a step table for `bits` (float bits map to a valid row whose result is discarded)."""
    return jnp.clip(jnp.asarray(bits) - LSQ_BITS[0], 0, len(LSQ_BITS) - 1)


@jax.custom_vjp
def _scale_grad(x: jax.Array, scale: jax.Array) -> jax.Array:
    """Exactly the identity forward (so extracted layers compute the same bits); gradient times `scale`."""
    return x


def _scale_grad_fwd(x: jax.Array, scale: jax.Array) -> tuple[jax.Array, jax.Array]:
    return x, scale


def _scale_grad_bwd(scale: jax.Array, g: jax.Array) -> tuple[jax.Array, jax.Array]:
    return g * scale, jnp.zeros_like(scale)


_scale_grad.defvjp(_scale_grad_fwd, _scale_grad_bwd)


def lsq_levels(bits: jax.Array | int, signed: bool) -> tuple[jax.Array, jax.Array]:
    """(lowest, highest) integer level: symmetric signed [-(2^(b-1)-1), 2^(b-1)-1] or unsigned [0, 2^b-1]."""
    qp = _levels(bits, signed)
    return (-qp if signed else jnp.zeros_like(qp)), qp


def lsq_quantize(x: jax.Array, bits: jax.Array | int, step: jax.Array, *, signed: bool,
                 n_elements: int) -> jax.Array:
    """LSQ fake quantisation: round(clip(x / step)) * step with STE; 32 bits = float.

    `step` broadcasts against `x` (a scalar for activations, one per output channel for weights);
    its gradient is scaled by 1 / sqrt(n_elements * qp) as in LSQ, so that step sizes learn at the
    pace of the weights whatever the tensor size and bit-width.
    """
    if isinstance(bits, int) and bits >= FLOAT_BITS:
        return x
    lo, hi = lsq_levels(bits, signed)
    s = _scale_grad(jnp.abs(step) + 1e-8, jax.lax.rsqrt(jnp.float32(n_elements) * hi))
    q = round_ste(jnp.clip(x / s, lo, hi)) * s
    return jnp.where(jnp.asarray(bits) >= FLOAT_BITS, x, q)


def lsq_weight_steps(w: jax.Array) -> jax.Array:
    """LSQ initial weight steps, a (len(LSQ_BITS), out) table: 2 mean|w| / sqrt(qp) per channel."""
    mean_abs = jnp.mean(jnp.abs(w.reshape(-1, w.shape[-1])), axis=0)
    qp = jnp.asarray([2.0 ** (b - 1) - 1 for b in LSQ_BITS])
    return 2.0 * mean_abs[None, :] / jnp.sqrt(qp)[:, None]


def lsq_act_steps(act_range: float, signed: bool) -> jax.Array:
    """Initial activation steps, one per bit-width: the expected range split into the levels."""
    levels = [2.0 ** (b - 1) - 1 if signed else 2.0**b - 1 for b in LSQ_BITS]  # plain floats: callable under jit
    return jnp.asarray([act_range / q for q in levels], jnp.float32)
