"""Integer kernels of extracted layers: same outputs as the fake-quant path, really int8 operands."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from nas import packing
from supernets.conv import ElasticConv
from supernets.dense import ElasticDense
from supernets.linear import ElasticLinear
from supernets.lowbit import kernel_modes, use_integer_kernels
from supernets.mlp import MLPFamily

RTOL, ATOL = 1e-4, 1e-5


def _x(shape: tuple[int, ...], seed: int = 1) -> jax.Array:
    return 2.0 * jax.random.normal(jax.random.key(seed), shape)  # wide enough to hit the clip range


def _same(fake: nnx.Module, x: jax.Array, mode: str) -> nnx.Module:
    """Convert, check the mode, int8 storage and outputs; returns the converted copy."""
    fast = use_integer_kernels(fake)
    assert fast.kernels == mode and fast.kernel[...].dtype == jnp.int8
    assert fake.kernels == "fake" and fake.kernel[...].dtype == jnp.float32  # the original is untouched
    np.testing.assert_allclose(np.asarray(_run(fast, x)), np.asarray(_run(fake, x)), rtol=RTOL, atol=ATOL)
    return fast


@nnx.jit
def _run(model: nnx.Module, x: jax.Array) -> jax.Array:
    return model(x)  # one compile per layer instead of one per eager op


@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("bits", [2, 4, 8])
def test_dense_integer_equals_fake(bits: int, signed: bool) -> None:
    layer = ElasticDense(24, 20, signed_input=signed, rngs=nnx.Rngs(bits)).extract(24, 20, bits)
    _same(layer, _x((16, 24)), "int")


@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("a_bits", ["same", 32])
@pytest.mark.parametrize("bits", [2, 4, 8])
def test_linear_integer_and_weight_only_equal_fake(bits: int, a_bits: int | str, signed: bool) -> None:
    a = bits if a_bits == "same" else a_bits
    elastic = ElasticLinear(24, 20, signed_input=signed, rngs=nnx.Rngs(bits))
    _same(elastic.extract(20, 12, bits, a), _x((2, 5, 20)), "int" if a <= 8 else "weight")  # token axis too


def test_weight_only_can_be_left_on_fake() -> None:
    layer = ElasticLinear(8, 8, signed_input=True, rngs=nnx.Rngs(0)).extract(8, 8, 4, 32)
    assert use_integer_kernels(layer, weight_only=False).kernels == "fake"
    floats = ElasticLinear(8, 8, signed_input=True, rngs=nnx.Rngs(0)).extract(8, 8, 32, 8)
    assert use_integer_kernels(floats).kernels == "fake"  # float weights: nothing to gain


@pytest.mark.parametrize("depthwise", [False, True])
@pytest.mark.parametrize(("w_bits", "a_bits", "signed"), [(8, 8, False), (4, 4, True), (2, 8, True), (4, 32, False)])
def test_conv_integer_equals_fake(depthwise: bool, w_bits: int, a_bits: int, signed: bool) -> None:
    conv = ElasticConv(12, 12, 5, stride=2, depthwise=depthwise, signed_input=signed, rngs=nnx.Rngs(w_bits))
    mode = "int" if a_bits <= 8 and not depthwise else "weight"
    # Unsigned 8-bit inputs are shifted by -128: the border must be padded with -128, not 0.
    _same(conv.extract(12, 12, w_bits, a_bits, kernel_size=3), _x((2, 7, 7, 12)), mode)


def _dot_dtypes(fn, *args) -> list[tuple[str, ...]]:
    """(lhs, rhs, out) dtypes of every dot_general / convolution in the jaxpr of fn(*args)."""
    found = []

    def walk(jaxpr) -> None:
        for eqn in jaxpr.eqns:
            if eqn.primitive.name in ("dot_general", "conv_general_dilated"):
                found.append(tuple(str(v.aval.dtype) for v in (*eqn.invars, *eqn.outvars)))
            for sub in eqn.params.values():  # pjit / loops / custom_vjp bodies
                if hasattr(sub, "jaxpr"):
                    walk(sub.jaxpr if hasattr(sub.jaxpr, "eqns") else sub.jaxpr.jaxpr)

    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return found


def test_integer_path_runs_int8_operands() -> None:
    fake = ElasticDense(16, 8, signed_input=False, rngs=nnx.Rngs(0)).extract(16, 8, 8)
    graphdef, state = nnx.split(use_integer_kernels(fake))
    fn = lambda s, x: nnx.merge(graphdef, s)(x)
    x = _x((4, 16))
    assert _dot_dtypes(fn, state, x) == [("int8", "int8", "int32")]
    hlo = jax.jit(fn).lower(state, x).compile().as_text()
    assert "s8[16,8]" in hlo and "s32[4,8]" in hlo  # int8 kernel in, int32 accumulator out
    weight_only = use_integer_kernels(ElasticLinear(16, 8, signed_input=True, rngs=nnx.Rngs(0)).extract(16, 8, 4, 32))
    g, s = nnx.split(weight_only)
    assert s["kernel"][...].dtype == jnp.int8
    assert _dot_dtypes(lambda s, x: nnx.merge(g, s)(x), s, x) == [("float32", "float32", "float32")]


def _tiny_trained_mlp() -> tuple[MLPFamily, object, object, jax.Array]:
    family = MLPFamily()
    space = family.parse_space({"family": "mlp", "max_depth": 2, "max_width": 32,
                                "space": {"depth": [1, 2], "width": [8, 16, 32], "bits": [2, 4, 8, 32]}}, 12, 4)
    model = family.build(space, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (128, 12))
    y = jnp.argmax(x[:, :4] + 0.5 * x[:, 4:8], axis=1)
    active = {k: jnp.asarray(v[0]) for k, v in family.active(space, [space.largest()]).items()}
    opt = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)

    @nnx.jit
    def step(model: nnx.Module, opt: nnx.Optimizer) -> None:
        loss = lambda m: optax.softmax_cross_entropy_with_integer_labels(m(x, active=active), y).mean()
        opt.update(model, nnx.grad(loss)(model))

    for _ in range(30):
        step(model, opt)
    return family, space, model, x


def test_extracted_mlp_subnets_agree_in_both_modes() -> None:
    family, space, model, x = _tiny_trained_mlp()
    configs = [{"depth": 2, "width.0": 32, "bits.0": 8, "width.1": 16, "bits.1": 8, "bits.out": 8},
               {"depth": 2, "width.0": 16, "bits.0": 4, "width.1": 8, "bits.1": 2, "bits.out": 32},
               {"depth": 1, "width.0": 8, "bits.0": 2, "width.1": 8, "bits.1": 2, "bits.out": 4}]
    for config in configs:
        fake = family.extract(model, space, config)
        fast = use_integer_kernels(fake)
        modes = list(kernel_modes(fast).values())
        assert modes == ["fake" if config[k] == 32 else "int"
                         for k in [f"bits.{i}" for i in range(config["depth"])] + ["bits.out"]]
        a, b = np.asarray(_run(fake, x)), np.asarray(_run(fast, x))
        np.testing.assert_allclose(b, a, rtol=RTOL, atol=ATOL)
        np.testing.assert_array_equal(b.argmax(1), a.argmax(1))


def test_packed_forward_runs_int8() -> None:
    rng = np.random.default_rng(0)
    tree, shapes = [], []
    for n_in, n_out, bits, signed in [(6, 5, 4, True), (5, 3, 8, False)]:
        scale = rng.uniform(0.01, 0.1, n_out).astype(np.float32)
        q = rng.integers(-packing.qmax(bits), packing.qmax(bits) + 1, (n_in, n_out))
        q[0] = packing.qmax(bits)  # min-max grid: every channel reaches the top level
        kernel = (q.astype(np.float32) * scale).astype(np.float32)
        tree.append(packing.pack_layer(kernel, rng.normal(size=n_out), np.float32(2.0), bits))
        shapes.append({"in": n_in, "out": n_out, "bits": bits, "signed_input": signed})
    forward = packing.make_forward(tree, packing.make_manifest(shapes, np.zeros(6), np.ones(6)))
    x = jnp.asarray(rng.normal(size=(3, 6)), jnp.float32)
    assert _dot_dtypes(forward, x) == [("int8", "int8", "int32")] * 2
    # Reference: fake-quantised inputs times the float kernels.
    h = x
    for k, (arrays, s) in enumerate(zip(tree, shapes)):
        levels = 2.0 ** (s["bits"] - 1) - 1 if s["signed_input"] else 2.0 ** s["bits"] - 1
        step = (2.0 + 1e-8) / levels
        h = jnp.round(jnp.clip(h, -2.0 if s["signed_input"] else 0.0, 2.0) / step) * step
        h = h @ packing.unpack_kernel(arrays, s) + arrays["bias"]
        h = jax.nn.relu(h) if k == 0 else h
    np.testing.assert_allclose(np.asarray(forward(x)), np.asarray(h), rtol=RTOL, atol=ATOL)
    # A NaN input rounds to integer code 0; the row must still answer NaN, as the float model does.
    y = np.asarray(jax.jit(forward)(x.at[1, 3].set(jnp.nan)))
    assert np.isnan(y[1]).all() and np.isfinite(y[[0, 2]]).all()
