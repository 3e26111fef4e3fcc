"""Exact per-layer costs of a config (what every family reports), and the totals derived from them.

Sizes count what an integer export ships: weights packed at their bit-width, one fp32 step per
output channel for quantised weights, one fp32 step per quantised input, fp32 biases/norms."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from search_spaces import Config, SearchSpace
from supernets.quant import FLOAT_BITS


@dataclass(frozen=True)
class LayerCost:
    """One layer of an extracted subnet: its work, its parameters and its activations (per example)."""

    slot: str  # stable name of the layer's position in the supernet (a predictor feature column)
    kind: str  # dense | conv | dwconv | attention | norm | embed
    macs: int
    weights: int  # quantisable weights
    bits: int  # weight bit-width
    a_bits: int  # input bit-width
    channels_out: int  # one weight step per output channel when quantised
    float_params: int  # biases, norm scales/shifts, position embeddings: always fp32
    act_in: int  # input activation elements
    act_out: int  # output activation elements
    key: tuple[int, ...] = ()  # shape descriptor for per-layer latency tables (kind-specific)
    act_inner: int = 0  # elements live beside its input and output (attention's scores, a residual's input)

    def size_bytes(self) -> int:
        """Deployed bytes of this layer."""
        total = math.ceil(self.weights * self.bits / 8) + 4 * self.float_params
        if self.bits < FLOAT_BITS and self.weights:
            total += 4 * self.channels_out
        if self.a_bits < FLOAT_BITS and self.weights:
            total += 4
        return total


@dataclass(frozen=True)
class LutUnit:
    """One unit of an extracted subnet timed alone for the per-layer latency table (nas.lut): a
    fused kernel in nn-Meter's sense (a dense layer + ReLU, a whole inverted-residual block, an
    encoder layer), whose compiled time does not depend on the units around it."""

    slot: str  # stable name of the unit's position (a predictor feature column)
    kind: str  # what it is (dense | stem | block | head | embed | layer); table entries are fitted per kind
    shape: tuple[int, ...]  # every size its time depends on (kind-specific), bits aside
    bits: int  # weight bit-width
    a_bits: int  # input bit-width
    macs: int  # multiply-accumulates per example (the table's fallback estimate scales with them)

    @property
    def key(self) -> str:
        """Table key: what the unit's time depends on (kind, shape, bits), not where it sits."""
        return f"{self.kind}|{'x'.join(map(str, self.shape))}|w{self.bits}|a{self.a_bits}"


def macs_under(costs: Sequence[LayerCost], *slots: str) -> int:
    """MACs of the layers in `slots` or nested under them (`slot.` prefix): one unit's share."""
    return sum(c.macs for c in costs if any(c.slot == s or c.slot.startswith(s + ".") for s in slots))


def total_size_bytes(costs: Sequence[LayerCost]) -> int:
    """Deployed bytes of a subnet."""
    return sum(c.size_bytes() for c in costs)


def total_macs(costs: Sequence[LayerCost]) -> int:
    """Multiply-accumulates per example."""
    return sum(c.macs for c in costs)


def peak_activation_bytes(costs: Sequence[LayerCost]) -> int:
    """Largest fp32 input + output (+ what is live beside them: attention's heads x T x T scores, a residual
    input awaiting its sum) of one layer per example (what must be live at once)."""
    return max(4 * (c.act_in + c.act_out + c.act_inner) for c in costs)


class CostMixin:
    """size_bytes / macs / peak_activation_bytes for a family that defines `layer_costs`."""

    def layer_costs(self, space: SearchSpace, config: Config) -> list[LayerCost]:
        """Per-layer costs of `config`, in execution order (each family defines it)."""
        raise NotImplementedError

    def cost_slots(self, space: SearchSpace) -> list[str]:
        """Every layer slot a config can use, in order (the largest config uses them all)."""
        return [c.slot for c in self.layer_costs(space, space.largest())]

    def size_bytes(self, space: SearchSpace, config: Config) -> int:
        """Deployed bytes of `config`."""
        return total_size_bytes(self.layer_costs(space, config))

    def macs(self, space: SearchSpace, config: Config) -> int:
        """Multiply-accumulates per example of `config`."""
        return total_macs(self.layer_costs(space, config))

    def peak_activation_bytes(self, space: SearchSpace, config: Config) -> int:
        """Peak fp32 activation bytes per example of `config`."""
        return peak_activation_bytes(self.layer_costs(space, config))
