"""Elastic dense layer: max-size parameters, traced active widths and bits; `extract` gives a plain layer."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from supernets.lowbit import INT8_MAX, integer_dot, low_bit_forward
from supernets.quant import QuantParam, lsq_levels, quantize_activation, quantize_weight


def prefix_mask(width: jax.Array | int, size: int) -> jax.Array:
    """1.0 for the first `width` of `size` channels, 0.0 after (channels are kept as a prefix)."""
    return (jnp.arange(size) < width).astype(jnp.float32)


class QuantDense(nnx.Module):
    """A plain dense layer with static shapes and static bit-widths: what gets measured and deployed.

    `kernels` is "fake" (float kernel on the quantisation grid) unless
    `supernets.lowbit.use_integer_kernels` switched a copy to int8 weights ("int" / "weight").
    """

    def __init__(self, in_features: int, out_features: int, *, w_bits: int, a_bits: int,
                 signed_input: bool):
        self.kernel = nnx.Param(jnp.zeros((in_features, out_features), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((out_features,), jnp.float32))
        self.act_clip = QuantParam(jnp.ones((), jnp.float32))
        self.w_bits = w_bits
        self.a_bits = a_bits
        self.signed_input = signed_input
        self.kernels = "fake"

    def __call__(self, x: jax.Array) -> jax.Array:
        """Quantise the input, multiply by the (already quantised) kernel, add the bias."""
        if self.kernels != "fake":
            return low_bit_forward(self, x)
        x = quantize_activation(x, self.a_bits, self.act_clip[...], signed=self.signed_input)
        return x @ self.kernel[...] + self.bias[...]

    # -- low-bit protocol (supernets.lowbit) ------------------------------------------------
    def weight_codes(self) -> tuple[jax.Array, jax.Array]:
        """(int8 codes, per-output-channel scale) of the min-max grid `quantize_weight` put the kernel on."""
        kernel, qmax = self.kernel[...], lsq_levels(self.w_bits, signed=True)[1]
        scale = jnp.max(jnp.abs(kernel), axis=0) / qmax  # = the training scale to an ulp: codes round exactly
        scale = jnp.where(scale > 0, scale, 1.0)
        return jnp.clip(jnp.rint(kernel / scale), -INT8_MAX, INT8_MAX).astype(jnp.int8), scale

    def input_codes(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(codes, step) with codes * step == quantize_activation(x, ...): same ops, same rounding."""
        qmax = lsq_levels(self.a_bits, signed=self.signed_input)[1]
        clip = jnp.abs(self.act_clip[...]) + 1e-8
        step = clip / qmax
        lo = -clip if self.signed_input else jnp.zeros_like(clip)
        return jnp.round(jnp.clip(x, lo, clip) / step), step

    def apply_kernel(self, x: jax.Array, kernel: jax.Array, preferred: object = None, shift: int = 0) -> jax.Array:
        """x @ kernel (int32 accumulation when `preferred` is int32)."""
        return x @ kernel if preferred is None else integer_dot(x, kernel)


class ElasticDense(nnx.Module):
    """Dense layer holding the largest kernel; runs any prefix of input/output channels at any bits."""

    def __init__(self, in_features: int, out_features: int, *, signed_input: bool, rngs: nnx.Rngs,
                 act_clip_init: float = 3.0):
        self.in_features = in_features
        self.out_features = out_features
        self.signed_input = signed_input
        init = nnx.initializers.lecun_normal()
        self.kernel = nnx.Param(init(rngs.params(), (in_features, out_features), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((out_features,), jnp.float32))
        self.act_clip = QuantParam(jnp.asarray(act_clip_init, jnp.float32))

    def __call__(self, x: jax.Array, *, in_width: jax.Array | int, out_width: jax.Array | int,
                 bits: jax.Array | int) -> jax.Array:
        """`x` is (batch, in_features) with zeros past `in_width`; output zero past `out_width`."""
        in_mask = prefix_mask(in_width, self.in_features)
        out_mask = prefix_mask(out_width, self.out_features)
        x = quantize_activation(x, bits, self.act_clip[...], signed=self.signed_input) * in_mask
        w = quantize_weight(self.kernel[...] * in_mask[:, None], bits)
        return (x @ w + self.bias[...]) * out_mask

    def extract(self, in_width: int, out_width: int, bits: int) -> QuantDense:
        """A plain layer with the leading channels, weights already quantised to `bits`."""
        layer = QuantDense(in_width, out_width, w_bits=bits, a_bits=bits, signed_input=self.signed_input)
        w = self.kernel[...][:in_width, :out_width]
        layer.kernel[...] = jax.lax.stop_gradient(quantize_weight(w, bits))
        layer.bias[...] = self.bias[...][:out_width]
        layer.act_clip[...] = self.act_clip[...]
        return layer
