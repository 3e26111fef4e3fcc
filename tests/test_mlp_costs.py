"""The MLP family's exact costs (size_kb, macs, flops, peak_act_kb) by hand, and the bytes its packed
export stores equal to the size it predicts."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from flax import nnx

from nas import packing
from nas.measure import exact_metrics
from supernets import get_family

FAMILY = get_family("mlp")
MODEL = {"family": "mlp", "max_depth": 2, "max_width": 16,
         "space": {"depth": [1, 2], "width": [3, 16], "bits": [3, 8, 32]}}
SPACE = FAMILY.parse_space(MODEL, 5, 4)
# 5 -> 3 at 3 bits (15 weights = 45 bits: 6 bytes), 3 -> 16 at 8 bits, head 16 -> 4 in float.
CONFIG = {"depth": 2, "width.0": 3, "bits.0": 3, "width.1": 16, "bits.1": 8, "bits.out": 32}


def test_mlp_costs_by_hand() -> None:
    hidden0 = 6 + 4 * 3 + 4 * 3 + 4  # packed weights, fp32 bias, per-channel steps, input clip
    hidden1 = 48 + 4 * 16 + 4 * 16 + 4
    head = 4 * 64 + 4 * 4  # float: kernel and bias only
    assert FAMILY.size_bytes(SPACE, CONFIG) == hidden0 + hidden1 + head == 486
    assert FAMILY.macs(SPACE, CONFIG) == 5 * 3 + 3 * 16 + 16 * 4
    # Largest fp32 input + output of one layer: the head's 16 + 4 (hidden.1 has 3 + 16).
    assert FAMILY.peak_activation_bytes(SPACE, CONFIG) == 4 * (16 + 4)
    m = exact_metrics(SimpleNamespace(family=FAMILY, space=SPACE), CONFIG)
    assert m == {"size_kb": 486 / 1024, "macs": 127, "flops": 254, "peak_act_kb": 80 / 1024}


def test_packed_bytes_are_the_predicted_size_for_every_config() -> None:
    model = FAMILY.build(SPACE, rngs=nnx.Rngs(0))
    for config in [CONFIG, SPACE.smallest(), SPACE.largest(), {**SPACE.largest(), "bits.0": 3, "bits.out": 3}]:
        plain = FAMILY.extract(model, SPACE, config)
        tree = [packing.pack_layer(np.asarray(layer.kernel[...]), np.asarray(layer.bias[...]),
                                   np.asarray(layer.act_clip[...]), layer.w_bits) for layer in plain.layers]
        assert packing.raw_bytes(tree) == FAMILY.size_bytes(SPACE, config), config
