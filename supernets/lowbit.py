"""Real low-precision execution of extracted (deployment) layers.

Extracted quantised layers (`QuantDense`, `QuantLinear`, `QuantConv`) compute in float on
fake-quantised values by default (`kernels = "fake"`): the bits change the size, not the speed.
`use_integer_kernels` returns a copy of an extracted model whose quantised layers hold their
weights as int8 codes and compute with them. Per layer, the rule is:

- ``"int"`` (integer path): weight bits <= 8 and input bits <= 8, and the operation has a fast
  integer kernel (dense/linear layers, regular convolutions; NOT depthwise convolutions, where
  XLA's CPU int8 grouped convolution measured ~4x slower than float). The input is quantised to
  int8 codes, `dot_general` / `conv_general_dilated` runs int8 x int8 with an int32 result
  (`preferred_element_type`), which is rescaled in fp32 by (input step x per-output-channel
  weight scale) before the bias. Input codes must fit int8:
    * signed inputs: codes in [-(2^(b-1)-1), 2^(b-1)-1], always fit;
    * unsigned inputs up to 7 bits: codes 0..127, fit as they are;
    * unsigned 8-bit inputs: codes 0..255 are shifted by -128 into int8 and the shift is undone
      exactly in int32 by adding 128 x (sum of the weight codes over the contracted axes), a
      per-output-channel constant stored beside the codes (`InputOffsetSum`). A uint8 x int8
      `dot_general` is accepted by XLA, but its CPU backend converts both operands to int32 and
      loses the int8 kernel, so it is not used.
- ``"weight"`` (weight-only path): weight bits <= 8 but float inputs (32 bits), or a depthwise
  convolution: int8 codes are stored and converted to fp32 inside the jitted function; the
  per-output-channel scale is applied to the (smaller) output instead of the kernel.
- ``"fake"``: float weights (32 bits) stay as they are.

The integer path computes the same numbers as the fake-quant path up to fp32 rounding of the
rescale (the integer products and sums are exact), ~1e-6 relative.
"""

from __future__ import annotations

from typing import Any, Protocol

import jax
import jax.numpy as jnp
from flax import nnx

from supernets.quant import FLOAT_BITS, QuantParam

KERNELS = ("fake", "int", "weight")
INT8_MAX = 127
UNSIGNED_SHIFT = 128  # unsigned 8-bit input codes 0..255 run as (code - 128) in int8


class InputOffsetSum(nnx.Variable):
    """Per-output-channel int32 constant `shift * sum(weight codes)` that undoes an input shift."""


class LowBitLayer(Protocol):
    """What an extracted quantised layer provides so that it can run on integer kernels."""

    kernel: nnx.Param
    bias: nnx.Param | None  # None: no bias (a BatchNorm that follows holds it)
    a_step: nnx.Param | None  # None at float input bits
    w_bits: int
    a_bits: int
    signed_input: bool
    kernels: str

    def weight_codes(self) -> tuple[jax.Array, jax.Array]:
        """(int8 codes shaped like the kernel, fp32 scale per output channel): kernel == codes * scale."""
        ...

    def input_codes(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(integer-valued float codes, step): the layer's fake-quantised input == codes * step."""
        ...

    def apply_kernel(self, x: jax.Array, kernel: jax.Array, preferred: Any = None, shift: int = 0) -> jax.Array:
        """The layer's linear operation (dot or convolution) without the bias.

        `preferred`: accumulation dtype (int32 for int8 operands); `shift`: inputs are codes - shift,
        so any padding must hold -shift (a convolution's border), not 0.
        """
        ...


def integer_dot(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """(..., in) x (in, out) with an int32 result: the contraction XLA maps to its int8 kernel."""
    dims = (((x.ndim - 1,), (0,)), ((), ()))
    return jax.lax.dot_general(x, kernel, dims, preferred_element_type=jnp.int32)


def kernel_mode(layer: LowBitLayer, *, weight_only: bool = True) -> str:
    """Which path `layer` takes under `use_integer_kernels` (the rule in the module docstring)."""
    if layer.w_bits > 8:
        return "fake"
    if layer.a_bits <= 8 and getattr(layer, "integer_operands", True):
        return "int"
    return "weight" if weight_only else "fake"


def input_shift(layer: LowBitLayer) -> int:
    """0, or 128 for unsigned 8-bit inputs (codes 0..255 do not fit int8)."""
    return UNSIGNED_SHIFT if not layer.signed_input and 2**layer.a_bits - 1 > INT8_MAX else 0


def to_integer(layer: LowBitLayer, *, weight_only: bool = True) -> None:
    """Switch one layer (of a copy: this mutates it) to its integer or weight-only path."""
    if kernel_mode(layer, weight_only=weight_only) != "fake" and layer.kernels == "fake":
        adopt_codes(layer, *layer.weight_codes(), weight_only=weight_only)


def adopt_codes(layer: LowBitLayer, codes: jax.Array, scale: jax.Array, *, weight_only: bool = True) -> None:
    """Switch one layer (mutated) to its integer or weight-only path on the given weight codes.

    `codes` (int8, shaped like the kernel) and `scale` (per output channel) must satisfy
    kernel == codes * scale; they replace the layer's kernel as they are, so an exporter can run
    the integers it stores (unpacked inside a traced graph) rather than re-deriving them.
    """
    mode = kernel_mode(layer, weight_only=weight_only)
    if mode == "fake" or layer.kernels != "fake":
        return
    layer.kernel = nnx.Param(codes)
    layer.w_scale = QuantParam(scale)
    shift = input_shift(layer) if mode == "int" else 0
    if shift:
        summed = jnp.sum(codes.astype(jnp.int32), axis=tuple(range(codes.ndim - 1)))
        layer.input_offset = InputOffsetSum(shift * summed)
    layer.kernels = mode


def use_integer_kernels(module: nnx.Module, *, weight_only: bool = True) -> nnx.Module:
    """A copy of an extracted model whose quantised layers run on int8 weights (the original is untouched).

    Call this on the output of `family.extract(...)` before jitting/timing it. Layers with weight
    and input bits <= 8 compute int8 x int8 -> int32 (see the module docstring for the rule on
    unsigned 8-bit inputs and depthwise convolutions); layers with <= 8-bit weights and float
    inputs keep int8 weights and dequantise them inside the compiled function (`weight_only=False`
    leaves those on the fake-quant path); float layers are unchanged. Outputs equal the
    fake-quant model's up to fp32 rounding (~1e-6 relative).

    Args:
      module: an extracted model (any nesting of `QuantDense`, `QuantLinear`, `QuantConv`).
      weight_only: also switch layers with float inputs to int8 weight storage.

    Returns:
      The converted copy; its parameters (`nnx.split`) hold int8 kernels where converted.
    """
    out = nnx.clone(module)
    layers = [node for _, node in nnx.iter_graph(out) if isinstance(node, nnx.Module) and hasattr(node, "kernels")]
    for layer in layers:
        to_integer(layer, weight_only=weight_only)
    return out


def kernel_modes(module: nnx.Module) -> dict[str, str]:
    """{layer path: "fake" | "int" | "weight"} of every quantised layer in `module`: which kernel path each runs."""
    return {".".join(map(str, path)): node.kernels for path, node in nnx.iter_graph(module)
            if isinstance(node, nnx.Module) and hasattr(node, "kernels")}


def low_bit_forward(layer: LowBitLayer, x: jax.Array) -> jax.Array:
    """Forward of a layer on its "int" or "weight" path (called from the layer's `__call__`)."""
    kernel, scale = layer.kernel[...], layer.w_scale[...]
    bias = 0.0 if layer.bias is None else layer.bias[...]
    if layer.kernels == "weight":
        if layer.a_bits < FLOAT_BITS:
            codes, step = layer.input_codes(x)
            x = codes * step
        return layer.apply_kernel(x, kernel.astype(jnp.float32)) * scale + bias
    codes, step = layer.input_codes(x)
    shift = input_shift(layer)
    acc = layer.apply_kernel((codes - shift).astype(jnp.int8), kernel, jnp.int32, shift)
    if shift:
        acc = acc + layer.input_offset[...]
    return acc.astype(jnp.float32) * (step * scale) + bias


def weight_codes_from_steps(kernel: jax.Array, step: jax.Array) -> jax.Array:
    """int8 codes of a kernel that lies on the grid `q * step` (step per output channel, last axis)."""
    return jnp.rint(kernel / step).astype(jnp.int8)

