"""Slimmable MLP masking and the sandwich's uniform-bits option: contracts the equality tests cannot see."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from conftest import write_tiny
from search_spaces import is_bit_width
from supernets import ElasticDense, get_family

FAMILY = get_family("mlp")
MODEL = {"family": "mlp", "max_depth": 3, "max_width": 16,
         "space": {"depth": [1, 2, 3], "width": [4, 16], "bits": [2, 4, 32]}}


def test_elastic_dense_outputs_zero_past_the_active_width_and_equals_its_extract() -> None:
    layer = ElasticDense(6, 10, signed_input=True, rngs=nnx.Rngs(0))
    layer.bias[...] = jnp.linspace(0.5, 1.5, 10)  # a non-zero bias would leak past the width
    x = jax.random.normal(jax.random.key(1), (5, 6))
    x = x * (jnp.arange(6) < 4)  # zeros past the active input width, as the layer before leaves them
    for bits in (4, 32):
        y = layer(x, in_width=4, out_width=7, bits=bits)
        assert float(jnp.abs(y[:, 7:]).max()) == 0.0
        plain = layer.extract(4, 7, bits)
        np.testing.assert_allclose(np.asarray(y[:, :7]), np.asarray(plain(x[:, :4])), atol=1e-6)


def test_only_the_first_layer_quantises_a_signed_input() -> None:
    """Hidden layers after the first (and the head) read ReLU outputs: an unsigned grid gives them twice the levels."""
    space = FAMILY.parse_space(MODEL, 5, 3)
    model = FAMILY.build(space, rngs=nnx.Rngs(0))
    assert [layer.signed_input for layer in model.hidden] == [True, False, False]
    assert model.head.signed_input is False
    plain = FAMILY.extract(model, space, space.largest())
    assert [layer.signed_input for layer in plain.layers] == [True, False, False, False]


def test_uniform_bits_probability_is_the_share_of_one_bit_width_subnets(tmp_path: Path) -> None:
    from nas.context import prepare
    from nas.train import sandwich_configs

    ctx = prepare(write_tiny(tmp_path), run_dir=tmp_path / "run")

    def one_width(c: dict) -> bool:
        return len({v for k, v in c.items() if is_bit_width(k)
                    and (k == "bits.out" or int(k.split(".")[1]) < c["depth"])}) == 1

    always = [c for s in range(20) for c in sandwich_configs(ctx, s, 3, uniform_bits=1.0)[2:]]
    assert all(one_width(c) for c in always)
    mostly = [c for s in range(40) for c in sandwich_configs(ctx, s, 3, uniform_bits=0.9)[2:]]
    assert sum(map(one_width, mostly)) > 0.75 * len(mostly)
