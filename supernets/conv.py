"""Elastic 2-D convolution (regular or depthwise, NHWC) with LSQ multi-bit quantisation.

One kernel of the largest size serves every kernel-size choice (a smaller kernel is its centre,
OFA style) and every prefix of input/output channels. Padding is symmetric ((k-1)/2 per side), so
a centre crop computes exactly what the masked large kernel computes, for any stride."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from supernets.dense import prefix_mask
from supernets.linear import lsq_codes, quantize_input
from supernets.lowbit import low_bit_forward, weight_codes_from_steps
from supernets.quant import QuantParam, bit_row, lsq_act_steps, lsq_quantize, lsq_weight_steps, step_param


def conv(x: jax.Array, kernel: jax.Array, stride: int, groups: int, preferred: object = None,
         pad_value: int = 0) -> jax.Array:
    """NHWC convolution with symmetric 'same' padding for an odd kernel.

    `preferred` is the accumulation type (int32 for int8 operands); a nonzero `pad_value` pads with
    that value explicitly (shifted integer inputs, whose zero is not 0).
    """
    if preferred is None and x.dtype != kernel.dtype:
        # Promoted as a matmul promotes (integer or bfloat16 inputs); XLA's convolution takes one dtype.
        dtype = jnp.result_type(x.dtype, kernel.dtype)
        x, kernel = x.astype(dtype), kernel.astype(dtype)
    pad = (kernel.shape[0] - 1) // 2
    if pad_value and pad:
        x = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), constant_values=pad_value)
        pad = 0
    return jax.lax.conv_general_dilated(x, kernel, (stride, stride), [(pad, pad), (pad, pad)],
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups,
                                        preferred_element_type=preferred)


def centre_mask(size: int, kernel_size: jax.Array | int) -> jax.Array:
    """(size, size) mask of the centred `kernel_size` x `kernel_size` window."""
    off = jnp.abs(jnp.arange(size) - size // 2)
    inside = off <= (jnp.asarray(kernel_size) - 1) // 2
    return (inside[:, None] & inside[None, :]).astype(jnp.float32)


class QuantConv(nnx.Module):
    """A static convolution: kernel already quantised, input quantised with a fixed step.

    `kernels` is "fake" unless `supernets.lowbit.use_integer_kernels` switched a copy to int8
    weights; depthwise convolutions never take the int8 x int8 path (`integer_operands`): XLA's
    CPU grouped int8 convolution is slower than float, so they get weight-only int8 storage.
    """

    def __init__(self, kernel: jax.Array, bias: jax.Array | None, w_step: jax.Array, a_step: jax.Array, *, stride: int,
                 depthwise: bool, w_bits: int, a_bits: int, signed_input: bool):
        self.kernel = nnx.Param(kernel)
        self.bias = None if bias is None else nnx.Param(bias)  # none when a BatchNorm follows (folded there)
        self.w_step = step_param(w_step, w_bits)
        self.a_step = step_param(a_step, a_bits)
        self.stride, self.depthwise = stride, depthwise
        self.w_bits, self.a_bits, self.signed_input = w_bits, a_bits, signed_input
        self.kernels = "fake"
        self.integer_operands = not depthwise

    def __call__(self, x: jax.Array) -> jax.Array:
        """Quantise the input, convolve, add the bias."""
        if self.kernels != "fake":
            return low_bit_forward(self, x)
        x = quantize_input(self, x)
        y = conv(x, self.kernel[...], self.stride, x.shape[-1] if self.depthwise else 1)
        return y if self.bias is None else y + self.bias[...]

    # -- low-bit protocol (supernets.lowbit) ------------------------------------------------
    def weight_codes(self) -> tuple[jax.Array, jax.Array]:
        """(int8 codes, per-output-channel step): kernel == codes * w_step."""
        return weight_codes_from_steps(self.kernel[...], self.w_step[...]), self.w_step[...]

    def input_codes(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(codes, step) with codes * step == lsq_quantize(x, ...)."""
        return lsq_codes(x, self.a_bits, self.a_step[...], self.signed_input)

    def apply_kernel(self, x: jax.Array, kernel: jax.Array, preferred: object = None, shift: int = 0) -> jax.Array:
        """The convolution (int32 accumulation when `preferred` is int32; borders padded with -shift)."""
        return conv(x, kernel, self.stride, x.shape[-1] if self.depthwise else 1, preferred, -shift)


class ElasticConv(nnx.Module):
    """Convolution holding the largest kernel; any kernel size (centre), channel prefix and bits.

    Depthwise: one filter per channel, `in_width` must equal `out_width`.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1,
                 depthwise: bool = False, signed_input: bool = False, act_range: float = 4.0,
                 use_bias: bool = False, rngs: nnx.Rngs):
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel size must be odd, got {kernel_size}")
        if depthwise and in_channels != out_channels:
            raise ValueError("a depthwise convolution keeps the channel count")
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.stride, self.depthwise, self.signed_input, self.use_bias = stride, depthwise, signed_input, use_bias
        shape = (kernel_size, kernel_size, 1 if depthwise else in_channels, out_channels)
        kernel = nnx.initializers.he_normal(in_axis=(0, 1, 2), out_axis=3)(rngs.params(), shape, jnp.float32)
        self.kernel = nnx.Param(kernel)
        self.bias = nnx.Param(jnp.zeros((out_channels,), jnp.float32))
        self.w_steps = QuantParam(lsq_weight_steps(kernel))
        self.a_steps = QuantParam(lsq_act_steps(act_range, signed_input))

    def _weight(self, in_mask: jax.Array, kernel_size: jax.Array | int, w_bits: jax.Array | int) -> jax.Array:
        w = self.kernel[...] * centre_mask(self.kernel_size, kernel_size)[:, :, None, None]
        if not self.depthwise:
            w = w * in_mask[None, None, :, None]
        return lsq_quantize(w, w_bits, self.w_steps[...][bit_row(w_bits)], signed=True, n_elements=w.size)

    def __call__(self, x: jax.Array, *, in_width: jax.Array | int, out_width: jax.Array | int,
                 w_bits: jax.Array | int, a_bits: jax.Array | int, kernel_size: jax.Array | int | None = None
                 ) -> jax.Array:
        """`x` is NHWC with zeros past channel `in_width`; the output is zero past `out_width`."""
        in_mask = prefix_mask(in_width, self.in_channels)
        ks = self.kernel_size if kernel_size is None else kernel_size
        x = lsq_quantize(x, a_bits, self.a_steps[...][bit_row(a_bits)], signed=self.signed_input,
                         n_elements=self.in_channels) * in_mask
        y = conv(x, self._weight(in_mask, ks, w_bits), self.stride, self.in_channels if self.depthwise else 1)
        if self.use_bias:
            y = y + self.bias[...]
        return y * prefix_mask(out_width, self.out_channels)

    def extract(self, in_width: int, out_width: int, w_bits: int, a_bits: int,
                kernel_size: int | None = None, *, bias: bool = True) -> QuantConv:
        """The static convolution for these channels, kernel size and bits (without its bias when
        not `bias`: the caller folds it into what follows)."""
        ks = self.kernel_size if kernel_size is None else kernel_size
        full = prefix_mask(self.in_channels, self.in_channels)
        w = jax.lax.stop_gradient(self._weight(full, ks, w_bits))
        lo = (self.kernel_size - ks) // 2
        w = w[lo : lo + ks, lo : lo + ks, :, :out_width] if self.depthwise else w[lo : lo + ks, lo : lo + ks,
                                                                                     :in_width, :out_width]
        kept_bias = self.bias[...][:out_width] if self.use_bias and bias else None
        return QuantConv(w, kept_bias, jnp.abs(self.w_steps[...][bit_row(w_bits)][:out_width]) + 1e-8,
                         self.a_steps[...][bit_row(a_bits)], stride=self.stride, depthwise=self.depthwise,
                         w_bits=w_bits, a_bits=a_bits, signed_input=self.signed_input)
