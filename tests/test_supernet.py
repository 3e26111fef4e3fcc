"""Slimmable MLP: extracted subnets equal the supernet, quantisation behaves, one compile serves all."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from search_spaces import is_bit_width
from supernets import SUPPORTED_BITS, get_family, quantize_activation, quantize_weight

FAMILY = get_family("mlp")
MODEL = {"family": "mlp", "max_depth": 3, "max_width": 48,
         "space": {"depth": [1, 2, 3], "width": [8, 24, 48], "bits": [2, 4, 8, 32]}}


@pytest.fixture(scope="module")
def setup():
    space = FAMILY.parse_space(MODEL, 64, 10)
    model = FAMILY.build(space, rngs=nnx.Rngs(0))
    # Non-trivial clip ranges and biases, as after training.
    for layer in [*model.hidden, model.head]:
        layer.act_clip[...] = jnp.asarray(1.7, jnp.float32)
        layer.bias[...] = jax.random.normal(jax.random.key(1), layer.bias[...].shape) * 0.1
    x = jnp.asarray(np.random.default_rng(0).normal(0.5, 0.5, (128, 64)), jnp.float32)
    return space, model, x


def _configs(space):
    rng = np.random.default_rng(5)
    floats = {k: 32 for k in space.largest() if is_bit_width(k)}
    return {
        "largest": space.largest(),
        "smallest": space.smallest(),
        "largest_4bit": {**space.largest(), **{k: 4 for k in floats}},
        "smallest_float": space.canonical({**space.smallest(), **floats}),
        **{f"random{i}": space.sample(rng) for i in range(8)},
    }


@pytest.mark.parametrize("name", list(_configs(FAMILY.parse_space(MODEL, 64, 10))))
def test_extract_equals_supernet(setup, name: str) -> None:
    space, model, x = setup
    config = _configs(space)[name]
    active = {k: jnp.asarray(v[0]) for k, v in FAMILY.active(space, [config]).items()}
    expected = model(x, active=active)
    plain = FAMILY.extract(model, space, config)
    got = plain(x)
    assert got.shape == (128, 10)
    assert float(jnp.max(jnp.abs(got - expected))) <= 1e-5
    # Static shapes: the extracted layers hold only the active channels.
    assert plain.layers[0].kernel[...].shape == (64, config["width.0"])
    assert len(plain.layers) == config["depth"] + 1


def test_plain_parameter_names_match_supernet(setup) -> None:
    space, model, _ = setup
    plain = FAMILY.extract(model, space, space.largest())
    names = lambda m: {str(p[-1]) for p, _ in nnx.to_flat_state(nnx.state(m, nnx.Param))}  # noqa: E731
    assert names(plain) == names(model) == {"kernel", "bias", "act_clip"}


@pytest.mark.parametrize("bits", [b for b in SUPPORTED_BITS if b < 32])
def test_weight_quantisation_levels(bits: int) -> None:
    w = jax.random.normal(jax.random.key(0), (256, 4))
    q = np.asarray(quantize_weight(w, bits))
    for col in range(4):
        assert len(np.unique(q[:, col])) <= 2 ** bits - 1
    assert np.max(np.abs(q - np.asarray(w))) <= np.max(np.abs(np.asarray(w))) / (2 ** (bits - 1) - 1)


def test_float_bits_are_identity_and_traced_bits_match_static() -> None:
    x = jax.random.normal(jax.random.key(0), (64,)) * 3
    assert jnp.array_equal(quantize_activation(x, 32, jnp.asarray(2.0), signed=True), x)
    for b in (2, 4, 8):
        static = quantize_activation(x, b, jnp.asarray(2.0), signed=True)
        traced = jax.jit(lambda b_: quantize_activation(x, b_, jnp.asarray(2.0), signed=True))(jnp.int32(b))
        assert jnp.array_equal(static, traced)
        assert len(np.unique(np.asarray(static))) <= 2 ** b - 1


@pytest.mark.parametrize("bits", [0, 1, 9, 16, np.int64(1)])
def test_static_bits_outside_the_supported_set_are_refused(bits) -> None:
    # 1 signed bit has no level but 0: the output was all NaN; 0 bits put every weight at -0.5 (review).
    w = jax.random.normal(jax.random.key(0), (8, 2))
    with pytest.raises(ValueError, match=r"bits must be one of \(2, 3, 4, 5, 6, 7, 8, 32\)"):
        quantize_weight(w, bits)
    with pytest.raises(ValueError, match="bits must be one of"):
        quantize_activation(w, bits, jnp.asarray(1.0), signed=False)
    assert np.isfinite(np.asarray(quantize_weight(w, np.int64(2)))).all()


def test_straight_through_gradient_reaches_weights_and_clip() -> None:
    w = jax.random.normal(jax.random.key(0), (16, 4))
    gw = jax.grad(lambda w: quantize_weight(w, 4).sum())(w)
    assert float(jnp.abs(gw).sum()) > 0
    x = jnp.linspace(-3, 3, 50)
    # Weighted by x: a plain sum of a symmetric input has zero gradient by symmetry.
    gc = jax.grad(lambda c: (x * quantize_activation(x, 4, c, signed=True)).sum())(jnp.asarray(1.0))
    assert float(jnp.abs(gc)) > 0


def test_one_compile_serves_every_config(setup) -> None:
    import optax

    from nas.config import TrainConfig
    from nas.train import train_step

    cfg = TrainConfig(steps=4, batch_size=128, optimizer="adamw", learning_rate=1e-3, weight_decay=0.0,
                      warmup_steps=0, schedule="constant", grad_clip=0.0, sandwich_random=2, distill=True,
                      distill_temperature=1.0, checkpoint_every=4)
    space, model, x = setup
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tx = optax.adamw(1e-3)
    opt_state = tx.init(params)
    y = jnp.zeros((128,), jnp.int32)
    rng = np.random.default_rng(0)
    before = train_step._cache_size()
    for _ in range(4):
        configs = [space.largest(), space.smallest(), space.sample(rng), space.sample(rng)]
        active = {k: jnp.asarray(v) for k, v in FAMILY.active(space, configs).items()}
        params, opt_state, loss, _ = train_step(graphdef, tx, cfg, params, opt_state, rest, x, y, active)
        assert np.isfinite(float(loss))
    assert train_step._cache_size() == before + 1


@pytest.mark.parametrize(("bits", "signed"), [(4, True), (2, False), (8, True)])
def test_lsq_step_gradient_is_the_lsq_one_scaled_by_its_tensor_size(bits: int, signed: bool) -> None:
    """d/ds of round(clip(x/s)) * s is round(x/s) - x/s inside the range and the level at a clip, times
    1/sqrt(n * qp): what lets steps learn at the weights' pace (mutation testing found it unpinned)."""
    from supernets.quant import lsq_levels, lsq_quantize

    x = np.random.default_rng(bits).normal(size=50).astype(np.float32) * 2.0
    step = np.float32(0.3)
    grad = jax.grad(lambda s: jnp.sum(lsq_quantize(jnp.asarray(x), bits, s, signed=signed, n_elements=50)))(step)
    lo, hi = (float(v) for v in lsq_levels(bits, signed))
    v = x.astype(np.float64) / float(step)
    per_element = np.where(v <= lo, lo, np.where(v >= hi, hi, np.round(v) - v))
    np.testing.assert_allclose(float(grad), per_element.sum() / np.sqrt(50 * hi), rtol=1e-4)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_activation_quantisation_lands_on_its_grid(bits: int) -> None:
    """Unsigned codes are 0..2^b-1 steps of clip/(2^b-1), negatives clipped to 0; signed ones are
    -(2^(b-1)-1)..2^(b-1)-1 steps of clip/(2^(b-1)-1) (mutation testing found the unsigned floor unpinned)."""
    x = jnp.linspace(-3.0, 3.0, 241)
    for signed, qmax in ((False, 2**bits - 1), (True, 2 ** (bits - 1) - 1)):
        q = np.asarray(quantize_activation(x, bits, jnp.asarray(2.0), signed=signed), np.float64)
        codes = q / (2.0 / qmax)
        np.testing.assert_allclose(codes, np.round(codes), atol=1e-4)
        assert codes.min() == pytest.approx(0.0 if not signed else -qmax, abs=1e-4)
        assert codes.max() == pytest.approx(qmax, abs=1e-4)
        inside = np.abs(np.asarray(x)) < 1.9 if signed else (np.asarray(x) > 0) & (np.asarray(x) < 1.9)
        assert np.abs(q - np.asarray(x))[inside].max() <= 1.0 / qmax + 1e-6  # within half a step of clip/qmax
