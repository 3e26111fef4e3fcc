"""Elastic transformer: extracted subnets equal the supernet, one compile serves every config,
depth/bits behave, LSQ steps learn, bad tables are refused, costs are exact."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nas.errors import ConfigError
from search_spaces import SearchSpace
from supernets import get_family
from supernets.linear import ElasticLinear
from supernets.norm import ElasticLayerNorm

FAMILY = get_family("transformer")
SHAPE = (8, 8, 1)
MODEL = {"family": "transformer", "max_depth": 3, "embed": 32, "heads": 4, "head_dim": 8, "ffn": 64, "patch": 2,
         "space": {"depth": [1, 2, 3], "heads": [1, 2, 4], "ffn": [16, 32, 64], "bits": [2, 4, 8, 32],
                   "embed": [16, 24, 32], "act_bits": [2, 4, 8, 32]}}
SPACE = FAMILY.parse_space(MODEL, 64, 10, SHAPE)


def _with(space: SearchSpace, config: dict, prefix: str, value: int) -> dict:
    """`config` with every dimension starting with `prefix` set to `value`."""
    return space.canonical({**config, **{k: value for k in config if k.startswith(prefix)}})


def _configs(space: SearchSpace) -> dict[str, dict]:
    rng = np.random.default_rng(5)
    big = space.largest()
    mixed = dict(big)
    for k, b in zip([k for k in big if "bits" in k], [2, 8, 4, 32, 8, 2, 32, 4, 2, 8]):
        mixed[k] = b
    return {
        "largest": big,
        "smallest": space.smallest(),
        "all_4bit": _with(space, _with(space, big, "bits", 4), "abits", 4),
        "all_float_small": _with(space, _with(space, space.smallest(), "bits", 32), "abits", 32),
        "mixed": mixed,
        **{f"random{i}": space.sample(rng) for i in range(3)},
    }


def _active(space: SearchSpace, configs: list[dict]) -> dict[str, jax.Array]:
    return {k: jnp.asarray(v) for k, v in FAMILY.active(space, configs).items()}


def _one(space: SearchSpace, config: dict) -> dict[str, jax.Array]:
    return {k: v[0] for k, v in _active(space, [config]).items()}


def _jit_call(module: nnx.Module, *args, **kwargs) -> jax.Array:
    """`module(*args, **kwargs)` compiled as one program (much faster than op-by-op on CPU)."""
    graphdef, state = nnx.split(module)
    return jax.jit(lambda s, *a: nnx.merge(graphdef, s)(*a, **kwargs))(state, *args)


def _perturb(model: nnx.Module) -> None:
    """Non-trivial biases and norm parameters, as after training."""
    keys = iter(jax.random.split(jax.random.key(1), 200))
    for _, node in nnx.iter_graph(model):
        if isinstance(node, (ElasticLinear, ElasticLayerNorm)):
            node.bias[...] = 0.1 * jax.random.normal(next(keys), node.bias[...].shape)
        if isinstance(node, ElasticLayerNorm):
            node.scale[...] = 1.0 + 0.2 * jax.random.normal(next(keys), node.scale[...].shape)


@pytest.fixture(scope="module")
def setup():
    model = FAMILY.build(SPACE, rngs=nnx.Rngs(0))
    _perturb(model)
    graphdef, state = nnx.split(model)
    fwd = jax.jit(lambda s, x, a: nnx.merge(graphdef, s)(x, active=a))
    x = jnp.asarray(np.random.default_rng(0).normal(0.0, 1.0, (16, 64)), jnp.float32)
    return model, lambda a: fwd(state, x, a), x


@pytest.mark.parametrize("name", list(_configs(SPACE)))
def test_extract_equals_supernet(setup, name: str) -> None:
    model, fwd, x = setup
    config = _configs(SPACE)[name]
    expected = fwd(_one(SPACE, config))
    plain = FAMILY.extract(model, SPACE, config)
    got = _jit_call(plain, x)
    assert got.shape == (16, 10)
    assert float(jnp.max(jnp.abs(got - expected))) <= 1e-4
    # Static shapes: only the active layers, heads, units and features.
    e = config["embed"]
    assert len(plain.layers) == config["depth"]
    assert plain.embed.kernel[...].shape == (4, e) and plain.pos[...].shape == (16, e)
    for i, layer in enumerate(plain.layers):
        inner = config[f"heads.{i}"] * 8
        assert layer.attn.q.kernel[...].shape == (e, inner)
        assert layer.attn.proj.kernel[...].shape == (inner, e)
        assert layer.ffn1.kernel[...].shape == (e, config[f"ffn.{i}"])
    assert plain.head.kernel[...].shape == (e, 10)


def test_sequence_input_without_shape() -> None:
    model_table = {**MODEL, "max_depth": 1, "embed": 8, "heads": 2, "head_dim": 4, "ffn": 8, "patch": 4,
                   "space": {"depth": [1], "heads": [1, 2], "ffn": [4, 8], "bits": [4, 32]}}
    space = FAMILY.parse_space(model_table, 64, 3)
    assert space.meta["token_shape"] == [64, 1] and space.meta["tokens"] == 16 and space.meta["patch_dim"] == 4
    model = FAMILY.build(space, rngs=nnx.Rngs(2))
    x = jnp.asarray(np.random.default_rng(1).normal(size=(4, 64)), jnp.float32)
    config = {**space.smallest(), "bits.0": 4}
    expected = _jit_call(model, x, active=_one(space, config), mode="train")  # no batch statistics: any mode
    diff = _jit_call(FAMILY.extract(model, space, config), x) - expected
    assert float(jnp.max(jnp.abs(diff))) <= 1e-4


@pytest.fixture(scope="module")
def grad_fn(setup):
    """A jitted (loss, grads) of a vmapped sandwich of 3 configs, counting its traces."""
    model, _, x = setup
    graphdef, params = nnx.split(model, nnx.Param)
    y = jnp.arange(16) % 10
    traces = []

    @jax.jit
    def loss_and_grads(params, active):
        traces.append(1)

        def loss(p):
            m = nnx.merge(graphdef, p)
            logits = jax.vmap(lambda a: m(x, active=a))(active)
            return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[None, :, None], axis=-1))

        return jax.value_and_grad(loss)(params)

    return lambda configs: loss_and_grads(params, _active(SPACE, configs)), loss_and_grads, traces


def test_one_compile_serves_every_config(grad_fn) -> None:
    run, jitted, traces = grad_fn
    rng = np.random.default_rng(3)
    losses = [float(run([SPACE.largest(), SPACE.smallest(), SPACE.sample(rng)])[0]) for _ in range(3)]
    assert len(traces) == 1 and jitted._cache_size() == 1
    assert len(set(losses)) == 3  # the random configs did change the subnet


def test_depth_ignores_layers_beyond_it(setup) -> None:
    model, fwd, _ = setup
    config = {**SPACE.largest(), "depth": 1}
    base = fwd(_one(SPACE, config))
    other = _one(SPACE, config)
    # Change heads, FFN width and bits of the layers past the depth: nothing may change.
    other["heads"] = other["heads"].at[1:].set(1)
    other["ffn"] = other["ffn"].at[1:].set(16)
    other["w_bits"] = other["w_bits"].at[2:-1].set(2)
    assert np.array_equal(np.asarray(fwd(other)), np.asarray(base))
    assert not np.allclose(fwd(_one(SPACE, {**config, "depth": 2})), base)
    assert len(FAMILY.extract(model, SPACE, config).layers) == 1


def test_bits_change_outputs_and_levels(setup) -> None:
    model, fwd, _ = setup
    two = _with(SPACE, _with(SPACE, SPACE.largest(), "bits", 2), "abits", 2)
    assert not np.allclose(fwd(_one(SPACE, two)), fwd(_one(SPACE, SPACE.largest())), atol=1e-3)
    plain = FAMILY.extract(model, SPACE, two)
    for kernel in (plain.layers[0].attn.q.kernel[...], plain.layers[2].ffn2.kernel[...], plain.head.kernel[...]):
        k = np.asarray(kernel)
        assert all(len(np.unique(k[:, c])) <= 3 for c in range(k.shape[1]))


def test_lsq_steps_get_finite_gradients_under_vmap(grad_fn) -> None:
    run, _, _ = grad_fn
    rng = np.random.default_rng(4)
    configs = [_with(SPACE, _with(SPACE, {**SPACE.sample(rng), "depth": 3}, "bits", b), "abits", b) for b in (2, 4, 8)]
    loss, grads = run(configs)
    assert np.isfinite(float(loss))
    steps = {"w_steps": 0, "a_steps": 0}
    for path, g in nnx.to_flat_state(grads):
        g = np.asarray(g[...])
        assert np.all(np.isfinite(g)), path
        if path[-1] in steps:
            assert np.abs(g).sum() > 0, path  # every layer is quantised in these configs
            steps[path[-1]] += 1
    assert steps == {"w_steps": 2 + 3 * 6, "a_steps": 2 + 3 * 6}


@pytest.mark.parametrize(("change", "key"), [
    ({"dropout": 0.1}, "model.dropout"),
    ({"patch": 3}, "model.patch"),
    ({"head_dim": 0}, "model.head_dim"),
    ({"space": {**MODEL["space"], "heads": [2, 8]}}, "model.space.heads"),
    ({"space": {**MODEL["space"], "ffn": [[16], [32], [128]]}}, "model.space.ffn"),
    ({"space": {**MODEL["space"], "embed": [16, 48]}}, "model.space.embed"),
    ({"space": {**MODEL["space"], "bits": [4, 9]}}, "model.space.bits"),
    ({"space": {**MODEL["space"], "act_bits": [1]}}, "model.space.act_bits"),
    ({"space": {**MODEL["space"], "depth": [4]}}, "model.space.depth"),
    ({"space": {k: v for k, v in MODEL["space"].items() if k != "ffn"}}, "model.space.ffn"),
])
def test_parse_errors_name_the_key(change: dict, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        FAMILY.parse_space({**MODEL, **change}, 64, 10, SHAPE)
    assert err.value.key == key


def test_a_choice_list_for_every_layer_names_no_layer() -> None:
    with pytest.raises(ConfigError, match=r"choice 8 exceeds model\.heads") as err:
        FAMILY.parse_space({**MODEL, "space": {**MODEL["space"], "heads": [2, 8]}}, 64, 10, SHAPE)
    assert "layer" not in str(err.value)
    with pytest.raises(ConfigError, match=r"choice 128 \(layer 2\) exceeds model\.ffn"):
        FAMILY.parse_space({**MODEL, "space": {**MODEL["space"], "ffn": [[16], [32], [128]]}}, 64, 10, SHAPE)


def test_missing_key_and_dimensions() -> None:
    with pytest.raises(ConfigError) as err:
        FAMILY.parse_space({k: v for k, v in MODEL.items() if k != "heads"}, 64, 10, SHAPE)
    assert err.value.key == "model.heads"
    plain_table = {**MODEL, "space": {k: v for k, v in MODEL["space"].items() if k not in ("embed", "act_bits")}}
    space = FAMILY.parse_space(plain_table, 64, 10, SHAPE)
    assert space.names == ["depth", "bits.embed", "heads.0", "ffn.0", "bits.0", "heads.1", "ffn.1", "bits.1",
                           "heads.2", "ffn.2", "bits.2", "bits.head"]
    assert space.dim("heads.0").gate is None and space.dim("bits.2").gate == "depth"
    active = FAMILY.active(space, [space.largest(), space.smallest()])
    assert np.array_equal(active["a_bits"], active["w_bits"]) and active["embed"].tolist() == [32, 32]
    assert SearchSpace.from_dict(json.loads(json.dumps(SPACE.to_dict()))) == SPACE
    assert {"family", "n_features", "n_classes", "input_shape"} <= set(SPACE.meta)


def test_layer_costs_exact() -> None:
    T, P, E, inner, F, L, C = 16, 4, 32, 4 * 8, 64, 3, 10
    per_layer = 3 * T * E * inner + 2 * T * T * inner + T * inner * E + 2 * T * E * F
    big = SPACE.largest()
    assert FAMILY.macs(SPACE, big) == T * P * E + L * per_layer + E * C
    costs = FAMILY.layer_costs(SPACE, big)
    assert FAMILY.cost_slots(SPACE) == [c.slot for c in costs]
    assert len({c.slot for c in costs}) == len(costs)
    attn = next(c for c in costs if c.slot == "layer.0.attn")
    assert (attn.kind, attn.weights, attn.macs) == ("attention", 0, 2 * T * T * inner)
    embed = costs[0]
    assert (embed.kind, embed.weights, embed.float_params, embed.act_in) == ("embed", P * E, E + T * E, 64)
    small = FAMILY.layer_costs(SPACE, SPACE.smallest())
    assert len(small) == len(costs) - 2 * 9  # one layer of 9 entries instead of three
    sizes = [FAMILY.size_bytes(SPACE, _with(SPACE, _with(SPACE, big, "bits", b), "abits", b)) for b in (2, 4, 8, 32)]
    assert sizes == sorted(sizes) and len(set(sizes)) == 4
    # The peak holds attention's heads x T x T scores besides q, k, v and the output (left out, T = 256 held
    # 8x more than counted), and is the largest layer's: here the attention's.
    # Every layer between a norm and its residual sum holds the T x E stream too (it was left out).
    assert attn.act_inner == 4 * T * T + T * E
    layer0 = [c.act_inner for c in costs if c.slot.startswith("layer.0.")]  # ln1 q k v attn proj ln2 ffn1 ffn2
    assert layer0 == [0, T * E, T * E, T * E, 4 * T * T + T * E, T * E, 0, T * E, T * E]
    assert FAMILY.peak_activation_bytes(SPACE, big) == 4 * (max(3 * T * inner + T * inner + 4 * T * T, T * E + T * F)
                                                            + T * E)
    long = FAMILY.parse_space({**MODEL, "patch": 1}, 64, 10, SHAPE)  # 64 tokens: the scores dominate
    assert FAMILY.peak_activation_bytes(long, long.largest()) == 4 * (4 * 64 * inner + 4 * 64 * 64 + 64 * E)
