"""Channel importance sorting (OFA): the largest subnet's function is unchanged, importances end up
non-increasing so width prefixes keep the strongest channels, Adam's moments move with their
parameters, a sorted `nas train` resumes to the same weights, and families without the hook refuse it."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from conftest import REPO, write_tiny
from nas.checkpoint import CheckpointStore
from nas.cli import main
from nas.context import prepare
from nas.errors import ConfigError
from nas.train import init_state, sort_channels
from search_spaces import is_bit_width
from supernets import get_family
from supernets.sorting import l1_importance, permute_state

MLP = get_family("mlp")
CNN = get_family("cnn")
TRANSFORMER = get_family("transformer")
CNN_MODEL = {"family": "cnn", "stem": 4, "max_expand": 3, "max_kernel": 3, "zero_init_residual": False,
             "stages": [{"channels": 4, "max_depth": 2, "stride": 1}, {"channels": 6, "max_depth": 2, "stride": 2}],
             "space": {"depth": [1, 2], "expand": [1, 2, 3], "bits": [8, 32]}}


def _mlp_space(depths: list[int]):
    table = {"family": "mlp", "max_depth": 3, "max_width": 12,
             "space": {"depth": depths, "width": [4, 8, 12], "bits": [8, 32]}}
    return MLP.parse_space(table, 6, 3)


def _randomise(model: nnx.Module, seed: int = 0) -> None:
    """Non-trivial values everywhere (BN scales/biases and biases would otherwise be 1 and 0)."""
    rng = np.random.default_rng(seed)
    state = nnx.state(model, nnx.Param)
    state = jax.tree.map(lambda a: jnp.asarray(np.asarray(a) + 0.3 * np.abs(rng.normal(size=a.shape)), a.dtype),
                         state)
    nnx.update(model, state)


def _one(family, space, config) -> dict[str, jax.Array]:
    return {k: jnp.asarray(v[0]) for k, v in family.active(space, [config]).items()}


def _with_bits(space, config: dict, bits: int) -> dict:
    return space.canonical({**config, **{k: bits for k in config if is_bit_width(k)}})


def _run(model: nnx.Module, x: jax.Array, active: dict, mode: str) -> jax.Array:
    graphdef, state = nnx.split(model)

    def f(s, x, a):
        m = nnx.merge(graphdef, s)
        return m(x, active=a, mode=mode), nnx.state(m)

    y, state = jax.jit(f)(state, x, active)
    nnx.update(model, state)
    return y


# -- the largest subnet is unchanged ------------------------------------------------------------
@pytest.mark.parametrize("bits", [32, 8])
def test_mlp_largest_unchanged(bits: int) -> None:
    space = _mlp_space([3])
    model = MLP.build(space, rngs=nnx.Rngs(0))
    _randomise(model)
    x = jnp.asarray(np.random.default_rng(1).normal(size=(16, 6)), jnp.float32)
    active = _one(MLP, space, _with_bits(space, space.largest(), bits))
    before = _run(model, x, active, "eval")
    MLP.sort_channels(model, space)
    np.testing.assert_allclose(_run(model, x, active, "eval"), before, atol=1e-5)


@pytest.mark.parametrize("depths", [[2, 3], [1, 2], [2]])  # max_depth 3: [1, 2] and [2] never run layer 2
def test_mlp_every_depth_at_full_width_unchanged(depths: list[int]) -> None:
    """Layers that can feed the (shared) head stay unsorted, so shallower subnets keep their function."""
    space = _mlp_space(depths)
    model = MLP.build(space, rngs=nnx.Rngs(0))
    _randomise(model)
    x = jnp.asarray(np.random.default_rng(1).normal(size=(16, 6)), jnp.float32)
    configs = [space.canonical({**space.largest(), "depth": d}) for d in depths]
    before = [_run(model, x, _one(MLP, space, c), "eval") for c in configs]
    kernel0 = np.asarray(model.hidden[0].kernel[...])
    MLP.sort_channels(model, space)
    if 1 not in depths:  # layer 0 never feeds the head: sorted
        assert not np.array_equal(kernel0, model.hidden[0].kernel[...])
    for c, b in zip(configs, before):
        np.testing.assert_allclose(_run(model, x, _one(MLP, space, c), "eval"), b, atol=1e-5)


@pytest.mark.parametrize("bits", [32, 8])
def test_cnn_largest_unchanged(bits: int) -> None:
    space = CNN.parse_space(CNN_MODEL, 64, 3, (8, 8, 1))
    model = CNN.build(space, rngs=nnx.Rngs(0))
    _randomise(model)
    x = jnp.asarray(np.random.default_rng(1).normal(size=(8, 64)), jnp.float32)
    active = _one(CNN, space, _with_bits(space, space.largest(), bits))
    before_train = _run(model, x, active, "train")
    _run(model, x, active, "calibrate")
    before_eval = _run(model, x, active, "eval")
    kernel = np.asarray(model.blocks[0].expand.conv.kernel[...])
    CNN.sort_channels(model, space)
    assert not np.array_equal(kernel, model.blocks[0].expand.conv.kernel[...])
    np.testing.assert_allclose(_run(model, x, active, "eval"), before_eval, atol=1e-5)  # stored statistics moved
    np.testing.assert_allclose(_run(model, x, active, "train"), before_train, atol=1e-5)


# -- importances sorted, prefixes keep the best -------------------------------------------------
def test_importances_non_increasing_and_prefix_keeps_top() -> None:
    space = _mlp_space([3])
    model = MLP.build(space, rngs=nnx.Rngs(0))
    kernels = [np.asarray(layer.kernel[...]) for layer in model.hidden]
    MLP.sort_channels(model, space)
    for k, layer in enumerate(model.hidden):
        imp = l1_importance(layer.kernel[...], axis=1)
        assert np.all(np.diff(imp) <= 0)
        top = np.argsort(-l1_importance(kernels[k], axis=1), kind="stable")[:4]
        # The width-4 prefix holds the four strongest units (their producing columns; inputs follow layer k-1's order).
        np.testing.assert_allclose(np.sort(l1_importance(kernels[k][:, top], 1)), np.sort(imp[:4]), rtol=1e-6)

    cnn_space = CNN.parse_space(CNN_MODEL, 64, 3, (8, 8, 1))
    cnn = CNN.build(cnn_space, rngs=nnx.Rngs(0))
    CNN.sort_channels(cnn, cnn_space)
    for block in cnn.blocks:
        assert np.all(np.diff(l1_importance(block.expand.conv.kernel[...], axis=3)) <= 0)


# -- optimiser moments move with their parameters ----------------------------------------------
def test_adam_step_after_sorting_is_the_permuted_step() -> None:
    space = _mlp_space([3])
    ctx = SimpleNamespace(family=MLP, space=space)
    graphdef, params, rest = nnx.split(MLP.build(space, rngs=nnx.Rngs(0)), nnx.Param, ...)
    tx = optax.adam(1e-2)
    x = jnp.asarray(np.random.default_rng(1).normal(size=(16, 6)), jnp.float32)
    active = _one(MLP, space, space.largest())

    @jax.jit
    def step(params, opt_state):
        def loss(p):
            return jnp.square(nnx.merge(graphdef, p, rest)(x, active=active) - 1.0).mean()

        updates, opt_state = tx.update(jax.grad(loss)(params), opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    params, opt_state = step(params, tx.init(params))  # non-zero moments
    s_params, _, s_opt = sort_channels(ctx, graphdef, params, rest, opt_state)
    mu = s_opt[0].mu
    order_kernel = np.asarray(s_params["hidden"][0]["kernel"][...])
    # The kernel's first moment was permuted exactly like the kernel.
    perm = [np.flatnonzero((np.asarray(params["hidden"][0]["kernel"][...]).T == col).all(1))[0]
            for col in order_kernel.T]
    old_mu = np.asarray(opt_state[0].mu["hidden"][0]["kernel"][...])
    np.testing.assert_array_equal(mu["hidden"][0]["kernel"][...], old_mu[:, perm])
    # One more step: sorting then stepping = stepping then sorting (by the same permutations).
    stepped_sorted, _ = step(s_params, s_opt)
    stepped, _ = step(params, opt_state)
    perms = MLP.channel_permutations(nnx.merge(graphdef, params, rest), space)
    expected = permute_state(stepped, perms)
    for a, b in zip(jax.tree.leaves(stepped_sorted), jax.tree.leaves(expected)):
        np.testing.assert_allclose(a, b, atol=1e-6)


# -- `nas train` with sorting, resumed -----------------------------------------------------------
def _sorted_tiny(folder: Path) -> Path:
    path = write_tiny(folder, steps=12, checkpoint_every=4)
    text = path.read_text().replace("depth = [1, 2]", "depth = [2]")
    path.write_text(text.replace("[train]\n", '[train]\nchannel_sorting = "l1"\nsort_every = 3\n'))
    return path


def _final(exp: Path, run_dir: Path):
    ctx = prepare(exp, run_dir=run_dir)
    _, params, _, opt_state, _ = init_state(ctx)
    return CheckpointStore(run_dir / "train" / "ckpt").restore_latest({"params": params, "opt_state": opt_state})


def test_sorted_training_runs_and_resumes(tmp_path: Path) -> None:
    exp = _sorted_tiny(tmp_path)
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    assert main(["train", str(exp), "--run-dir", str(full), "--quiet"]) == 0
    assert main(["train", str(exp), "--run-dir", str(resumed), "--quiet"]) == 0
    shutil.rmtree(resumed / "train" / "ckpt" / "12")  # as if killed after step 8's checkpoint
    (resumed / "train" / "stamp.json").unlink()
    assert main(["train", str(exp), "--run-dir", str(resumed), "--quiet"]) == 0
    (step_a, a), (step_b, b) = _final(exp, full), _final(exp, resumed)
    assert step_a == step_b == 12
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    # Sorted at step 12 (the last): the hidden layers' importances are non-increasing.
    for k in range(2):
        imp = l1_importance(a["params"]["hidden"][k]["kernel"][...], axis=1)
        assert np.all(np.diff(imp) <= 0)


def test_family_without_the_hook_refuses_sorting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = (REPO / "experiments" / "transformer.toml").read_text()
    path = tmp_path / "t.toml"
    path.write_text(text.replace("[train]\n", '[train]\nchannel_sorting = "l1"\n'))
    prepare(path, run_dir=tmp_path / "run")  # the transformer sorts its FFN units
    monkeypatch.delattr(type(TRANSFORMER), "sort_channels")
    with pytest.raises(ConfigError, match="train.channel_sorting"):
        prepare(path, run_dir=tmp_path / "run")


@pytest.mark.parametrize("bits", [32, 8])
def test_transformer_largest_unchanged(bits: int) -> None:
    table = {"family": "transformer", "max_depth": 2, "embed": 8, "heads": 2, "head_dim": 4, "ffn": 12, "patch": 2,
             "space": {"depth": [1, 2], "embed": [8], "heads": [1, 2], "ffn": [4, 8, 12], "bits": [8, 32]}}
    space = TRANSFORMER.parse_space(table, 16, 3, (4, 4, 1))
    model = TRANSFORMER.build(space, rngs=nnx.Rngs(0))
    _randomise(model)
    x = jnp.asarray(np.random.default_rng(1).normal(size=(4, 16)), jnp.float32)
    active = _one(TRANSFORMER, space, _with_bits(space, space.largest(), bits))
    before = _run(model, x, active, "eval")
    kernel = np.asarray(model.layers[0].ffn1.kernel[...])
    TRANSFORMER.sort_channels(model, space)
    assert not np.array_equal(kernel, model.layers[0].ffn1.kernel[...])
    np.testing.assert_allclose(_run(model, x, active, "eval"), before, atol=1e-5)
    for layer in model.layers:
        assert np.all(np.diff(l1_importance(layer.ffn1.kernel[...], axis=1)) <= 0)
