"""Elastic linear layer with LSQ multi-bit quantisation (weights per output channel, inputs per
tensor, one learned step per bit-width), over the last axis of any (..., features) input."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from supernets.dense import prefix_mask
from supernets.lowbit import LowBitLayer, integer_dot, low_bit_forward, weight_codes_from_steps
from supernets.quant import (
    FLOAT_BITS,
    QuantParam,
    bit_row,
    lsq_act_steps,
    lsq_levels,
    lsq_quantize,
    lsq_weight_steps,
    step_param,
)


class QuantLinear(nnx.Module):
    """A static linear layer: kernel already quantised (q * step), inputs quantised with a fixed step.

    `kernels` is "fake" unless `supernets.lowbit.use_integer_kernels` switched a copy to int8 weights.
    """

    def __init__(self, kernel: jax.Array, bias: jax.Array, w_step: jax.Array, a_step: jax.Array, *,
                 w_bits: int, a_bits: int, signed_input: bool):
        self.kernel = nnx.Param(kernel)
        self.bias = nnx.Param(bias)
        self.w_step = step_param(w_step, w_bits)  # kept so an exporter can recover the integers exactly
        self.a_step = step_param(a_step, a_bits)
        self.w_bits, self.a_bits, self.signed_input = w_bits, a_bits, signed_input
        self.kernels = "fake"

    def __call__(self, x: jax.Array) -> jax.Array:
        """Quantise the input, multiply by the kernel, add the bias."""
        if self.kernels != "fake":
            return low_bit_forward(self, x)
        return quantize_input(self, x) @ self.kernel[...] + self.bias[...]

    # -- low-bit protocol (supernets.lowbit) ------------------------------------------------
    def weight_codes(self) -> tuple[jax.Array, jax.Array]:
        """(int8 codes, per-output-channel step): kernel == codes * w_step."""
        return weight_codes_from_steps(self.kernel[...], self.w_step[...]), self.w_step[...]

    def input_codes(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(codes, step) with codes * step == lsq_quantize(x, ...): same ops, same rounding."""
        return lsq_codes(x, self.a_bits, self.a_step[...], self.signed_input)

    def apply_kernel(self, x: jax.Array, kernel: jax.Array, preferred: object = None, shift: int = 0) -> jax.Array:
        """x @ kernel over the last axis (int32 accumulation when `preferred` is int32)."""
        return x @ kernel if preferred is None else integer_dot(x, kernel)


def quantize_input(layer: LowBitLayer, x: jax.Array) -> jax.Array:
    """A static layer's (`QuantLinear`, `QuantConv`) input quantisation; float inputs pass unchanged."""
    if layer.a_bits >= FLOAT_BITS:
        return x
    return lsq_quantize(x, layer.a_bits, layer.a_step[...], signed=layer.signed_input, n_elements=x.shape[-1])


def lsq_codes(x: jax.Array, bits: int, step: jax.Array, signed: bool) -> tuple[jax.Array, jax.Array]:
    """Integer-valued codes and step of LSQ input quantisation with static bits (forward of lsq_quantize)."""
    lo, hi = lsq_levels(bits, signed)
    s = jnp.abs(step) + 1e-8
    return jnp.round(jnp.clip(x / s, lo, hi)), s


class ElasticLinear(nnx.Module):
    """Linear layer holding the largest kernel; runs any prefix of in/out features at any bits."""

    def __init__(self, in_features: int, out_features: int, *, signed_input: bool, rngs: nnx.Rngs,
                 act_range: float = 4.0, use_bias: bool = True, kernel_init: nnx.Initializer | None = None):
        init = kernel_init or nnx.initializers.lecun_normal()
        self.in_features, self.out_features = in_features, out_features
        self.signed_input, self.use_bias = signed_input, use_bias
        kernel = init(rngs.params(), (in_features, out_features), jnp.float32)
        self.kernel = nnx.Param(kernel)
        self.bias = nnx.Param(jnp.zeros((out_features,), jnp.float32))
        self.w_steps = QuantParam(lsq_weight_steps(kernel))
        self.a_steps = QuantParam(lsq_act_steps(act_range, signed_input))

    def _weight(self, in_mask: jax.Array, w_bits: jax.Array | int) -> jax.Array:
        w = self.kernel[...] * in_mask[:, None]
        return lsq_quantize(w, w_bits, self.w_steps[...][bit_row(w_bits)], signed=True, n_elements=w.size)

    def __call__(self, x: jax.Array, *, in_width: jax.Array | int, out_width: jax.Array | int,
                 w_bits: jax.Array | int, a_bits: jax.Array | int) -> jax.Array:
        """`x` is (..., in_features) with zeros past `in_width`; the output is zero past `out_width`."""
        in_mask = prefix_mask(in_width, self.in_features)
        x = lsq_quantize(x, a_bits, self.a_steps[...][bit_row(a_bits)], signed=self.signed_input,
                         n_elements=self.in_features) * in_mask
        y = x @ self._weight(in_mask, w_bits)
        if self.use_bias:
            y = y + self.bias[...]
        return y * prefix_mask(out_width, self.out_features)

    def extract(self, in_width: int, out_width: int, w_bits: int, a_bits: int) -> QuantLinear:
        """The static layer for these widths and bits (weights quantised once, here)."""
        full = prefix_mask(self.in_features, self.in_features)
        w = jax.lax.stop_gradient(self._weight(full, w_bits))[:in_width, :out_width]
        bias = self.bias[...][:out_width] if self.use_bias else jnp.zeros((out_width,), jnp.float32)
        return QuantLinear(w, bias, jnp.abs(self.w_steps[...][bit_row(w_bits)][:out_width]) + 1e-8,
                           self.a_steps[...][bit_row(a_bits)], w_bits=w_bits, a_bits=a_bits,
                           signed_input=self.signed_input)
