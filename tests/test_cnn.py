"""Elastic CNN: extracted subnets equal the (recalibrated) supernet, kernel/depth/bits elasticity,
BatchNorm recalibration independent of history, one compile for every config, exact costs, bad
tables refused, and `nas run` end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import REPO
from nas.errors import ConfigError
from search_spaces import SearchSpace
from supernets import get_family
from supernets.conv import ElasticConv
from supernets.norm import ElasticBatchNorm

FAMILY = get_family("cnn")
SHAPE = (8, 8, 1)
STAGES = [{"channels": 8, "max_depth": 2, "stride": 1}, {"channels": 12, "max_depth": 2, "stride": 2}]
MODEL = {"family": "cnn", "stem": 8, "max_expand": 3, "max_kernel": 5, "stages": STAGES,
         "space": {"depth": [1, 2], "expand": [1, 2, 3], "kernel": [3, 5], "bits": [2, 4, 8, 32]}}
SPACE = FAMILY.parse_space(MODEL, 64, 10, SHAPE)
BLOCK_CIN = [8, 8, 8, 12]  # input channels of the four block slots (stem 8, stage widths 8 and 12)
SLOTS = [(0, 0), (0, 1), (1, 0), (1, 1)]

EXPERIMENT = """
name = "{name}"
seed = 0

[data]
dataset = "digits"
normalize = "standardize"

[model]
family = "cnn"
stem = 8
max_expand = 3
max_kernel = 5

[[model.stages]]
channels = 8
max_depth = 2
stride = 1

[[model.stages]]
channels = 12
max_depth = 2
stride = 2

[model.space]
depth = [1, 2]
expand = [1, 2, 3]
kernel = [3, 5]
bits = [2, 4, 8, 32]

[train]
steps = {steps}
batch_size = 32
learning_rate = 3e-3
warmup_steps = 5
sandwich_random = 1
checkpoint_every = {steps}

[measure]
samples = 8
batch_size = 8
repeats = 3
warmup = 1
min_time_ms = 0.3
calibration_samples = 64

[predictors]
accuracy = "ridge"
latency = "ridge"

[search]
trials = 40
population_size = 10
validate_top = 2

[[objectives]]
metric = "accuracy"

[[objectives]]
metric = "latency_ms"

[export]
max_models = 2
"""


def write_cnn(folder: Path, name: str = "tinycnn", steps: int = 30) -> Path:
    """A tiny CNN experiment on digits (the same model table as MODEL) in `folder`."""
    path = folder / f"{name}.toml"
    path.write_text(EXPERIMENT.format(name=name, steps=steps))
    return path


# -- configs and helpers ------------------------------------------------------------------
def _with(config: dict, prefix: str, value: int) -> dict:
    """`config` with every dimension starting with `prefix` set to `value` (canonical)."""
    return SPACE.canonical({**config, **{k: value for k in config if k.startswith(prefix)}})


def _configs() -> dict[str, dict]:
    rng = np.random.default_rng(5)
    big = SPACE.largest()
    mixed = dict(big)
    for k, b in zip([k for k in big if k.startswith("bits")], [2, 8, 4, 32, 8, 2]):
        mixed[k] = b
    return {
        "largest": big,
        "smallest": SPACE.smallest(),
        "all_2bit": _with(big, "bits", 2),
        "all_4bit": _with({**SPACE.sample(rng), "depth.1": 2}, "bits", 4),
        "all_float": _with(SPACE.sample(rng), "bits", 32),
        "mixed": mixed,
        **{f"random{i}": SPACE.sample(rng) for i in range(6)},
    }


CONFIGS = _configs()


def _active(configs: list[dict]) -> dict[str, jax.Array]:
    return {k: jnp.asarray(v) for k, v in FAMILY.active(SPACE, configs).items()}


def _one(config: dict) -> dict[str, jax.Array]:
    return {k: v[0] for k, v in _active([config]).items()}


def _copy(state: nnx.State) -> nnx.State:
    """A state with fresh Variables (nnx.merge shares Variables with the state it is given)."""
    return jax.tree.map(lambda a: a, state)


def _jit_call(module: nnx.Module, *args) -> jax.Array:
    """`module(*args)` compiled as one program (much faster than op by op on CPU)."""
    graphdef, state = nnx.split(module)
    return jax.jit(lambda s, *a: nnx.merge(graphdef, s)(*a))(state, *args)


def _randomise(model: nnx.Module, seed: int = 1) -> None:
    """Non-trivial parameters, as after training: BN scales around 1 (residual ones start at 0,
    which would make every residual block the identity), BN/conv/linear biases, and LSQ steps
    perturbed but kept positive. Kernels are random (He/LeCun) from init already. Drawn with
    numpy: eager jax.random would compile once per shape."""
    rng = np.random.default_rng(seed)
    state = nnx.state(model, nnx.Param)
    for path, var in nnx.to_flat_state(state):
        v = np.asarray(var[...])
        if path[-1] in ("w_steps", "a_steps"):
            v = v * np.exp(rng.normal(0.0, 0.25, v.shape))
        elif path[-1] == "scale":
            v = rng.normal(1.0, 0.3, v.shape)
        elif path[-1] == "bias":
            v = rng.normal(0.0, 0.2, v.shape)
        var[...] = jnp.asarray(v, jnp.float32)
    nnx.update(model, state)


class Net:
    """The randomised supernet as (graphdef, state) with jitted forward and calibrate."""

    def __init__(self) -> None:
        model = FAMILY.build(SPACE, rngs=nnx.Rngs(0))
        _randomise(model)
        self.graphdef, self.state = nnx.split(model)
        rng = np.random.default_rng(0)
        self.x = jnp.asarray(rng.normal(0.0, 1.0, (16, 64)), jnp.float32)  # evaluation inputs
        self.x_cal = jnp.asarray(rng.normal(0.3, 1.2, (48, 64)), jnp.float32)  # calibration inputs
        graphdef = self.graphdef

        @partial(jax.jit, static_argnames="mode")
        def forward(state, x, active, mode):
            return nnx.merge(graphdef, state)(x, active=active, mode=mode)

        @jax.jit
        def calibrate(state, x, active):
            m = nnx.merge(graphdef, state)
            m(x, active=active, mode="calibrate")
            return nnx.state(m)

        self._forward, self._calibrate = forward, calibrate

    def model(self, state: nnx.State | None = None) -> nnx.Module:
        """A model object over a copy of `state` (default: the randomised, uncalibrated one)."""
        return nnx.merge(self.graphdef, _copy(self.state if state is None else state))

    def forward(self, active, *, mode: str, state=None, x=None) -> jax.Array:
        return self._forward(self.state if state is None else state, self.x if x is None else x, active, mode)

    def calibrated(self, active, state=None) -> nnx.State:
        """The state with BN statistics calibrated for `active` on x_cal."""
        return self._calibrate(self.state if state is None else state, self.x_cal, active)

    def eval_calibrated(self, config: dict) -> tuple[jax.Array, nnx.State]:
        """(eval-mode logits after calibration, calibrated state) of `config`."""
        active = _one(config)
        state = self.calibrated(active)
        return self.forward(active, mode="eval", state=state), state


@pytest.fixture(scope="module")
def net() -> Net:
    return Net()


def _stats(state: nnx.State) -> list[np.ndarray]:
    return [np.asarray(v[...]) for _, v in nnx.to_flat_state(state) if isinstance(v, nnx.BatchStat)]


# -- extraction ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(CONFIGS))
def test_extract_equals_calibrated_supernet(net: Net, name: str) -> None:
    config = CONFIGS[name]
    expected, state = net.eval_calibrated(config)
    plain = FAMILY.extract(net.model(state), SPACE, config)
    got = _jit_call(plain, net.x)
    assert got.shape == (16, 10)
    assert float(jnp.max(jnp.abs(got - expected))) <= 1e-4
    assert float(jnp.std(expected)) > 1e-2  # not a degenerate (constant) network
    # Static shapes: only the active blocks, each with its own widths and a cropped kernel.
    blocks = [b for b in FAMILY.blocks(SPACE, config) if b["active"]]
    assert len(blocks) == config["depth.0"] + config["depth.1"]
    assert len(plain.blocks) == len(blocks)
    assert plain.stem.conv.kernel[...].shape == (3, 3, 1, 8)
    for spec, block in zip(blocks, plain.blocks):
        s, b, hid, k = spec["stage"], spec["block"], spec["hidden"], spec["kernel"]
        assert hid == spec["cin"] * config[f"expand.{s}.{b}"] and k == config[f"kernel.{s}.{b}"]
        assert block.expand.conv.kernel[...].shape == (1, 1, spec["cin"], hid)
        assert block.dw.conv.kernel[...].shape == (k, k, 1, hid)
        assert block.project.conv.kernel[...].shape == (1, 1, hid, spec["cout"])
        assert block.dw.bn.mean[...].shape == (hid,) and block.project.bn.var[...].shape == (spec["cout"],)
        assert block.residual == (spec["stride"] == 1 and spec["cin"] == spec["cout"])
        assert (block.dw.conv.w_bits, block.dw.conv.a_bits) == (spec["bits"], spec["bits"])
    assert plain.head.kernel[...].shape == (12, 10)


def test_extracted_kernel_is_the_centre_crop(net: Net) -> None:
    config = _with(_with(SPACE.largest(), "kernel", 3), "bits", 32)
    _, state = net.eval_calibrated(config)
    model = net.model(state)
    plain = FAMILY.extract(model, SPACE, config)
    for block, full in zip(plain.blocks, model.blocks):
        big = np.asarray(full.dw.conv.kernel[...])  # 5x5 supernet kernel, float bits: no quantisation
        np.testing.assert_array_equal(np.asarray(block.dw.conv.kernel[...]), big[1:4, 1:4])


# -- kernel size, depth and bits elasticity --------------------------------------------------
def _ring_state(net: Net, fill, blocks: tuple[int, ...] = (0, 1, 2, 3)) -> nnx.State:
    """The state with the outer ring of the 5x5 depthwise kernels of `blocks` replaced by fill(shape)."""
    model = net.model()
    ring = np.ones((5, 5), bool)
    ring[1:4, 1:4] = False
    for i in blocks:
        conv = model.blocks[i].dw.conv
        k = np.asarray(conv.kernel[...]).copy()
        k[ring] = fill(k[ring].shape)
        conv.kernel[...] = jnp.asarray(k)
    return nnx.state(model)


@pytest.mark.parametrize("bits", [32, 4])
def test_kernel_three_is_the_centre_of_five(net: Net, bits: int) -> None:
    five = _with(SPACE.largest(), "bits", bits)
    three = _with(five, "kernel", 3)
    rng = np.random.default_rng(2)
    noisy = _ring_state(net, lambda shape: rng.normal(0.0, 3.0, shape))
    zeroed = _ring_state(net, np.zeros)
    base3 = net.forward(_one(three), mode="train")
    base5 = net.forward(_one(five), mode="train")
    # The outer ring does not take part in a kernel-3 subnet ...
    np.testing.assert_array_equal(np.asarray(net.forward(_one(three), mode="train", state=noisy)), np.asarray(base3))
    # ... but does in a kernel-5 one, and kernel 3 is kernel 5 with that ring zero.
    assert not np.allclose(net.forward(_one(five), mode="train", state=noisy), base5, atol=1e-3)
    assert not np.allclose(base3, base5, atol=1e-3)
    zero5 = net.forward(_one(five), mode="train", state=zeroed)
    assert float(jnp.max(jnp.abs(zero5 - base3))) <= 1e-5
    # Kernel size is a per-block choice: block s1.b0 at 3 ignores its own ring, the others use theirs.
    one_block = {**five, "kernel.1.0": 3}
    noisy_s1b0 = _ring_state(net, lambda shape: rng.normal(0.0, 3.0, shape), blocks=(2,))
    base_one = net.forward(_one(one_block), mode="train")
    assert not np.allclose(base_one, base5, atol=1e-3)
    np.testing.assert_array_equal(np.asarray(net.forward(_one(one_block), mode="train", state=noisy_s1b0)),
                                  np.asarray(base_one))
    assert not np.allclose(net.forward(_one(five), mode="train", state=noisy_s1b0), base5, atol=1e-3)


def test_depth_ignores_blocks_beyond_it(net: Net) -> None:
    config = SPACE.canonical({**SPACE.largest(), "depth.0": 1, "depth.1": 1, "bits.0.0": 4})
    base = net.forward(_one(config), mode="train")
    base_eval, _ = net.eval_calibrated(config)
    other = _one(config)
    # Blocks 1 and 3 lie past their stage's depth: change everything about them.
    for key, value in (("hidden", 8), ("kernel", 3), ("bits", 2), ("abits", 2)):
        other[key] = other[key].at[jnp.array([1, 3])].set(value if key != "hidden" else jnp.array([8, 12]))
    assert not np.array_equal(np.asarray(other["hidden"]), np.asarray(_one(config)["hidden"]))
    np.testing.assert_array_equal(np.asarray(net.forward(other, mode="train")), np.asarray(base))
    other_eval = net.forward(other, mode="eval", state=net.calibrated(other))
    np.testing.assert_array_equal(np.asarray(other_eval), np.asarray(base_eval))
    for deeper in ({**config, "depth.0": 2}, {**config, "depth.1": 2}):
        assert not np.allclose(net.forward(_one(deeper), mode="train"), base, atol=1e-3)
    assert len(FAMILY.extract(net.model(), SPACE, config).blocks) == 2
    # The space gates the dimensions of those blocks: canonical form pins them.
    assert SPACE.dim("expand.0.1").gate == "depth.0" and SPACE.dim("expand.0.0").gate is None
    assert SPACE.canonical({**config, "expand.1.1": 1})["expand.1.1"] == 3


def test_bits_change_outputs_and_levels(net: Net) -> None:
    big = SPACE.largest()
    two = CONFIGS["all_2bit"]
    out_float = net.forward(_one(big), mode="train")
    assert not np.allclose(net.forward(_one(two), mode="train"), out_float, atol=1e-3)
    # One block's bits alone change the output.
    assert not np.allclose(net.forward(_one({**big, "bits.1.0": 2}), mode="train"), out_float, atol=1e-3)
    _, state = net.eval_calibrated(two)
    plain = FAMILY.extract(net.model(state), SPACE, two)
    kernels = [plain.stem.conv.kernel[...]] + [layer.conv.kernel[...] for block in plain.blocks
                                                for layer in (block.expand, block.dw, block.project)]
    for kernel in kernels + [plain.head.kernel[...]]:
        k = np.asarray(kernel).reshape(-1, kernel.shape[-1])
        counts = [len(np.unique(k[:, c])) for c in range(k.shape[1])]
        assert max(counts) <= 3 and max(counts) >= 2  # {-s, 0, +s} per output channel, not all zero
    _, state4 = net.eval_calibrated(_with(big, "bits", 4))
    dw4 = np.asarray(FAMILY.extract(net.model(state4), SPACE, _with(big, "bits", 4)).blocks[3].dw.conv.kernel[...])
    assert 3 < max(len(np.unique(dw4[..., c])) for c in range(dw4.shape[-1])) <= 15


def test_active_stacks_choices_per_block() -> None:
    configs = [SPACE.largest(), SPACE.smallest(), CONFIGS["mixed"], CONFIGS["random0"]]
    active = FAMILY.active(SPACE, configs)
    assert set(active) == {"depth", "hidden", "kernel", "bits", "abits", "stem_bits", "head_bits"}
    assert active["depth"].shape == (4, 2) and active["stem_bits"].shape == (4, 2)
    for key in ("hidden", "kernel", "bits", "abits"):
        assert active[key].shape == (4, 4) and active[key].dtype == np.int32
    for row, c in enumerate(configs):
        assert active["depth"][row].tolist() == [c["depth.0"], c["depth.1"]]
        assert active["bits"][row].tolist() == [c[f"bits.{s}.{b}"] for s, b in SLOTS]
        assert active["kernel"][row].tolist() == [c[f"kernel.{s}.{b}"] for s, b in SLOTS]
        assert active["hidden"][row].tolist() == [cin * c[f"expand.{s}.{b}"] for cin, (s, b) in zip(BLOCK_CIN, SLOTS)]
        assert active["stem_bits"][row].tolist() == [c["bits.stem"]] * 2
        assert active["head_bits"][row].tolist() == [c["bits.head"]] * 2
    np.testing.assert_array_equal(active["abits"], active["bits"])  # no act_bits dimension: inputs follow weights
    assert active["bits"][2].tolist() == [8, 4, 32, 8]  # mixed: bits.stem=2, blocks 8 4 32 8, head 2
    assert active["hidden"][0].tolist() == [24, 24, 24, 36]
    assert active["hidden"][1].tolist() == [8, 24, 8, 36]  # smallest: blocks past the depth pinned (canonical)


# -- one compile; gradients ------------------------------------------------------------------
@pytest.fixture(scope="module")
def grad_fn(net: Net):
    """A jitted (loss, grads) of a vmapped sandwich of 3 configs in train mode, counting its traces."""
    graphdef, params, rest = nnx.split(net.model(), nnx.Param, ...)
    y = jnp.arange(16) % 10
    traces = []

    @jax.jit
    def loss_and_grads(params, active):
        traces.append(1)

        def loss(p):
            m = nnx.merge(graphdef, p, rest)
            logits = jax.vmap(lambda a: m(net.x, active=a, mode="train"))(active)
            return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[None, :, None], axis=-1))

        return jax.value_and_grad(loss)(params)

    return lambda configs: loss_and_grads(params, _active(configs)), loss_and_grads, traces


def test_one_compile_serves_every_config(grad_fn) -> None:
    run, jitted, traces = grad_fn
    rng = np.random.default_rng(3)
    losses = [float(run([SPACE.largest(), SPACE.smallest(), SPACE.sample(rng)])[0]) for _ in range(3)]
    losses.append(float(run([CONFIGS["all_2bit"], CONFIGS["mixed"], CONFIGS["all_float"]])[0]))
    assert len(traces) == 1 and jitted._cache_size() == 1
    assert len(set(losses)) == 4  # the configs did change the subnet


def test_gradients_finite_and_nonzero_under_vmap(grad_fn) -> None:
    run, _, _ = grad_fn
    rng = np.random.default_rng(4)
    configs = [_with({**SPACE.sample(rng), "depth.0": 2, "depth.1": 2}, "bits", b) for b in (2, 4, 8)]
    loss, grads = run(configs)
    assert np.isfinite(float(loss))
    seen = {"w_steps": 0, "a_steps": 0, "scale": 0, "kernel": 0}
    for path, g in nnx.to_flat_state(grads):
        g = np.asarray(g[...])
        assert np.all(np.isfinite(g)), path
        if path[-1] in seen:
            assert np.abs(g).sum() > 0, path  # every layer is active and quantised in these configs
            seen[path[-1]] += 1
    # stem + 3 convs per block + head are quantised; stem + 3 BNs per block normalise.
    assert seen == {"w_steps": 1 + 3 * 4 + 1, "a_steps": 1 + 3 * 4 + 1, "scale": 1 + 3 * 4, "kernel": 1 + 3 * 4 + 1}


# -- BatchNorm recalibration -----------------------------------------------------------------
def test_batchnorm_modes() -> None:
    bn = ElasticBatchNorm(6)
    bn.scale[...] = jnp.asarray(np.linspace(0.5, 1.5, 6), jnp.float32)
    bn.bias[...] = jnp.asarray(np.linspace(-0.3, 0.3, 6), jnp.float32)
    graphdef, state = nnx.split(bn)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(2.0, 3.0, (4, 5, 5, 6)) * (np.arange(6) < 4), jnp.float32)  # zero past width 4
    x_other = jnp.asarray(rng.normal(-1.0, 0.5, (4, 5, 5, 6)) * (np.arange(6) < 4), jnp.float32)

    @partial(jax.jit, static_argnames="mode")
    def run(state, x, mode):
        m = nnx.merge(graphdef, state)
        y = m(x, width=4, mode=mode)
        return y, nnx.state(m)

    y_train, after_train = run(state, x, "train")
    assert all(np.array_equal(a, b) for a, b in zip(_stats(after_train), _stats(state)))  # train never writes
    y_cal, calibrated = run(state, x, "calibrate")
    np.testing.assert_array_equal(np.asarray(y_cal), np.asarray(y_train))  # calibrate = batch statistics
    mean, var = np.asarray(calibrated["mean"][...]), np.asarray(calibrated["var"][...])
    np.testing.assert_allclose(mean[:4], np.asarray(x).mean((0, 1, 2))[:4], rtol=1e-5)
    np.testing.assert_allclose(var[:4], np.asarray(x).var((0, 1, 2))[:4], rtol=1e-4)
    y_eval, after_eval = run(calibrated, x_other, "eval")
    expected = (np.asarray(x_other) - mean) / np.sqrt(var + 1e-5) * np.linspace(0.5, 1.5, 6) + np.linspace(-0.3, 0.3, 6)
    np.testing.assert_allclose(np.asarray(y_eval)[..., :4], expected[..., :4], rtol=1e-4, atol=1e-4)
    assert np.all(np.asarray(y_eval)[..., 4:] == 0) and np.all(np.asarray(y_train)[..., 4:] == 0)
    assert all(np.array_equal(a, b) for a, b in zip(_stats(after_eval), _stats(calibrated)))  # eval never writes
    plain = nnx.merge(graphdef, calibrated).extract(4)
    np.testing.assert_allclose(np.asarray(plain(x_other[..., :4])), np.asarray(y_eval)[..., :4], atol=1e-5)
    with pytest.raises(ValueError, match="mode"):
        bn(x, width=4, mode="inference")


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    from nas.context import prepare

    folder = tmp_path_factory.mktemp("cnn_ctx")
    context = prepare(write_cnn(folder), run_dir=folder / "run")
    assert context.space == SPACE  # the TOML table is MODEL: the fixture's supernet fits this context
    return context


@pytest.fixture(scope="module")
def trained(ctx, net: Net):
    """The randomised supernet after a few sandwich train steps (nas.train.train_step) on digits."""
    from nas.data import load_data
    from nas.train import batch_indices, make_optimizer, sandwich_configs, train_step

    cfg = ctx.exp.train
    graphdef, params, rest = nnx.split(net.model(), nnx.Param, ...)
    params = jax.tree.map(lambda a: jnp.asarray(np.array(a)), params)  # own buffers: train_step donates them
    tx = make_optimizer(cfg)
    opt_state = tx.init(params)
    splits = load_data(ctx.exp.data)
    history = []
    for step in range(3):
        configs = sandwich_configs(ctx, step, cfg.sandwich_random)
        idx = batch_indices(ctx.exp.seed, step, len(splits.x_train), cfg.batch_size)
        params, opt_state, loss, _ = train_step(graphdef, tx, cfg, params, opt_state, rest,
                                                jnp.asarray(splits.x_train[idx]), jnp.asarray(splits.y_train[idx]),
                                                _active(configs))
        assert np.isfinite(float(loss))
        history.append(configs)
    return nnx.merge(graphdef, params, _copy(rest)), history, splits


def _eval_logits(net: Net, model: nnx.Module, config: dict, x) -> np.ndarray:
    return np.asarray(net.forward(_one(config), mode="eval", state=nnx.state(model), x=x))


def test_calibrated_accuracy_ignores_history(ctx, net: Net) -> None:
    from nas.calibrate import calibrated

    a, b = CONFIGS["random2"], CONFIGS["largest"]
    model = net.model()
    x = jnp.asarray(np.random.default_rng(9).normal(size=(16, 64)), jnp.float32)
    alone = _eval_logits(net, calibrated(ctx, model, a), a, x)
    after_b = calibrated(ctx, model, b)
    assert not all(np.array_equal(s, t) for s, t in zip(_stats(nnx.state(after_b)),
                                                        _stats(nnx.state(calibrated(ctx, model, a)))))
    # B's statistics are wrong for A: A must not be evaluated on them ...
    assert not np.allclose(_eval_logits(net, after_b, a, x), alone, atol=1e-3)
    # ... and once recalibrated, A does not remember B (nor a second calibration of itself).
    np.testing.assert_allclose(_eval_logits(net, calibrated(ctx, after_b, a), a, x), alone, rtol=0, atol=1e-6)
    twice = calibrated(ctx, calibrated(ctx, model, a), a)
    np.testing.assert_allclose(_eval_logits(net, twice, a, x), alone, rtol=0, atol=1e-6)
    # `calibrated` returns a new model: the one passed in keeps its (initial) statistics.
    assert all(np.array_equal(s, t) for s, t in zip(_stats(nnx.state(model)), _stats(net.state)))


def test_recalibration_after_training_ignores_calibration_order(ctx, net: Net, trained) -> None:
    from nas.calibrate import calibrated

    model, history, splits = trained
    c1, c2 = history[-1][0], history[-1][-1]  # the last step's largest and its random config
    target = CONFIGS["random3"]
    assert len({json.dumps(c, sort_keys=True) for c in (c1, c2, target)}) == 3
    x = jnp.asarray(splits.x_val[:64])
    one_two = calibrated(ctx, calibrated(ctx, model, c1), c2)
    two_one = calibrated(ctx, calibrated(ctx, model, c2), c1)
    assert not all(np.array_equal(s, t) for s, t in zip(_stats(nnx.state(one_two)), _stats(nnx.state(two_one))))
    got_12 = _eval_logits(net, calibrated(ctx, one_two, target), target, x)
    got_21 = _eval_logits(net, calibrated(ctx, two_one, target), target, x)
    alone = _eval_logits(net, calibrated(ctx, model, target), target, x)
    np.testing.assert_allclose(got_12, got_21, rtol=0, atol=1e-6)
    np.testing.assert_allclose(got_12, alone, rtol=0, atol=1e-6)
    # The extracted subnet of the target agrees too.
    from nas.calibrate import extract_subnet

    plain = extract_subnet(ctx, one_two, target)
    assert float(np.max(np.abs(np.asarray(_jit_call(plain, x)) - alone))) <= 1e-4


def test_uncalibrated_eval_differs(ctx, net: Net, trained) -> None:
    from nas.calibrate import calibrated, calibration_inputs, has_statistics

    model, _, splits = trained
    assert has_statistics(model)
    x_cal = calibration_inputs(ctx, model)
    assert x_cal.shape == (64, 64)
    config = CONFIGS["random4"]
    x = jnp.asarray(splits.x_val[:64])
    initial = _eval_logits(net, model, config, x)  # statistics at init: mean 0, var 1
    assert all(np.all(s == 0) or np.all(s == 1) for s in _stats(nnx.state(model)))
    recal = _eval_logits(net, calibrated(ctx, model, config), config, x)
    assert float(np.max(np.abs(initial - recal))) > 1e-2
    # Calibrated eval on the calibration images reproduces train mode (batch statistics) on them.
    train_logits = np.asarray(net.forward(_one(config), mode="train", state=nnx.state(model), x=x_cal))
    cal_logits = np.asarray(net.forward(_one(config), mode="eval", state=nnx.state(calibrated(ctx, model, config)),
                                        x=x_cal))
    np.testing.assert_allclose(cal_logits, train_logits, atol=1e-4)


def test_accuracy_many_equals_extracted_accuracy(ctx, trained) -> None:
    from nas.calibrate import extract_subnet
    from nas.measure import accuracy_many

    model, history, splits = trained
    configs = [SPACE.largest(), SPACE.smallest(), CONFIGS["all_2bit"], CONFIGS["mixed"], CONFIGS["random5"],
               history[0][-1]]
    x, y = splits.x_val, splits.y_val
    many = accuracy_many(ctx, model, configs, x, y)
    assert many.shape == (len(configs),)
    one_by_one = []
    for config in configs:
        logits = _jit_call(extract_subnet(ctx, model, config), jnp.asarray(x))
        one_by_one.append(float((np.asarray(logits).argmax(-1) == y).mean()))
    np.testing.assert_allclose(many, one_by_one, rtol=0, atol=1e-6)  # same count of 288 (float32 mean)
    assert len(set(one_by_one)) > 1  # the configs are told apart
    # Order and company in the vmapped batch do not matter either.
    again = accuracy_many(ctx, model, configs[::-1][:3], x, y)
    np.testing.assert_allclose(again, many[::-1][:3], rtol=0, atol=1e-6)


# -- costs and parsing -------------------------------------------------------------------------
def test_layer_costs_exact() -> None:
    big = SPACE.largest()
    stem = 8 * 8 * 9 * 1 * 8
    s0 = 2 * (64 * 8 * 24 + 64 * 25 * 24 + 64 * 24 * 8)  # two 8x8 blocks: expand 8->24, dw 5x5, project 24->8
    s1b0 = 64 * 8 * 24 + 16 * 25 * 24 + 16 * 24 * 12  # expand at 8x8, dw stride 2 -> 4x4, project 24->12
    s1b1 = 16 * 12 * 36 + 16 * 25 * 36 + 16 * 36 * 12
    head = 12 * 10
    assert FAMILY.macs(SPACE, big) == stem + s0 + s1b0 + s1b1 + head == 185_400
    costs = FAMILY.layer_costs(SPACE, big)
    assert FAMILY.cost_slots(SPACE) == [c.slot for c in costs]
    assert len({c.slot for c in costs}) == len(costs) == 1 + 3 * 4 + 1
    dw = next(c for c in costs if c.slot == "s1.b0.dw")
    assert (dw.kind, dw.weights, dw.macs, dw.act_in, dw.act_out) == ("dwconv", 25 * 24, 16 * 25 * 24, 64 * 24, 16 * 24)
    assert costs[0].kind == "conv" and costs[-1].kind == "dense" and costs[-1].weights == 120
    # Smallest: depth 1 per stage, expand 1, kernel 3.
    small = SPACE.smallest()
    small_macs = (stem + (64 * 8 * 8 + 64 * 9 * 8 + 64 * 8 * 8) + (64 * 8 * 8 + 16 * 9 * 8 + 16 * 8 * 12) + head)
    assert FAMILY.macs(SPACE, small) == small_macs
    assert len(FAMILY.layer_costs(SPACE, small)) == 1 + 3 * 2 + 1
    sizes = [FAMILY.size_bytes(SPACE, _with(big, "bits", b)) for b in (2, 4, 8, 32)]
    assert sizes == sorted(sizes) and len(set(sizes)) == 4
    weights = sum(c.weights for c in costs)
    floats = sum(c.float_params for c in costs)
    assert sizes[-1] == 4 * (weights + floats)  # float: every weight and BN scale/shift in fp32
    assert FAMILY.size_bytes(SPACE, {**big, "bits.1.1": 2}) < sizes[-1]
    assert FAMILY.peak_activation_bytes(SPACE, big) == 4 * (64 * 24 + 64 * 24)


def _bad(change: dict | None = None, stage: dict | None = None, space: dict | None = None) -> dict:
    stages = [dict(STAGES[0], **(stage or {})), dict(STAGES[1])]
    return {**MODEL, "stages": stages, **(change or {}), "space": {**MODEL["space"], **(space or {})}}


@pytest.mark.parametrize(("model", "key"), [
    (_bad({"width": 8}), "model.width"),
    (_bad(stage={"kernel": 3}), "model.stages[0].kernel"),
    (_bad(stage={"stride": 3}), "model.stages[0].stride"),
    (_bad(stage={"channels": 0}), "model.stages[0].channels"),
    (_bad({"stages": []}), "model.stages"),
    (_bad({"max_kernel": 4}), "model.max_kernel"),
    (_bad(space={"kernel": [3, 4]}), "model.space.kernel"),
    (_bad(space={"kernel": [3, 7]}), "model.space.kernel"),
    (_bad(space={"expand": [1, 4]}), "model.space.expand"),
    (_bad(space={"depth": [1, 3]}), "model.space.depth"),
    (_bad(space={"depth": [[1, 2], [1, 2, 3]]}), "model.space.depth"),
    (_bad(space={"bits": [2, 16]}), "model.space.bits"),
    (_bad(space={"width": [8]}), "model.space.width"),
    (_bad({"zero_init_residual": 1}), "model.zero_init_residual"),
    ({k: v for k, v in MODEL.items() if k != "stem"}, "model.stem"),
])
def test_parse_errors_name_the_key(model: dict, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        FAMILY.parse_space(model, 64, 10, SHAPE)
    assert err.value.key == key


@pytest.mark.parametrize("shape", [(64, 1), None, (64,)])
def test_non_image_data_refused(shape) -> None:
    with pytest.raises(ConfigError) as err:
        FAMILY.parse_space(MODEL, 64, 10, shape)
    assert err.value.key == "model.family" and "image" in str(err.value)


def test_space_dimensions_and_round_trip() -> None:
    assert SPACE.names[:3] == ["depth.0", "depth.1", "bits.stem"] and SPACE.names[-1] == "bits.head"
    assert SPACE.names[3:6] == ["expand.0.0", "kernel.0.0", "bits.0.0"]
    assert SPACE.dim("kernel.1.1").gate == "depth.1" and SPACE.dim("kernel.1.1").gate_below == 1
    per_block = 3 * 2 * 4  # expand x kernel x bits
    per_stage = per_block + per_block**2  # depth 1 (block 1 gated off) or depth 2
    assert SPACE.size() == 4 * per_stage**2 * 4
    assert SearchSpace.from_dict(json.loads(json.dumps(SPACE.to_dict()))) == SPACE
    meta = SPACE.meta
    assert meta["input_shape"] == [8, 8, 1] and meta["n_classes"] == 10 and meta["zero_init_residual"] is True
    per_block_space = FAMILY.parse_space({**MODEL, "space": {**MODEL["space"], "expand": [[1], [2], [3], [1, 2]]}},
                                         64, 10, SHAPE)
    assert per_block_space.dim("expand.1.1").choices == (1, 2) and per_block_space.dim("expand.0.1").choices == (2,)


def test_zero_init_residual_makes_blocks_identities() -> None:
    space = FAMILY.parse_space({**MODEL, "zero_init_residual": True}, 64, 10, SHAPE)
    model = FAMILY.build(space, rngs=nnx.Rngs(0))
    scales = {i: np.asarray(b.project.bn.scale[...]) for i, b in enumerate(model.blocks)}
    assert np.all(scales[0] == 0) and np.all(scales[1] == 0) and np.all(scales[3] == 0)
    assert np.all(scales[2] == 1)  # stride-2, 8 -> 12: no skip, so no zero init
    off = FAMILY.build(FAMILY.parse_space({**MODEL, "zero_init_residual": False}, 64, 10, SHAPE),
                       rngs=nnx.Rngs(0))
    assert all(np.all(np.asarray(b.project.bn.scale[...]) == 1) for b in off.blocks)
    assert isinstance(model.blocks[0].dw.conv, ElasticConv) and model.blocks[0].dw.conv.depthwise


# -- end to end --------------------------------------------------------------------------------
def test_nas_run_end_to_end(tmp_path: Path) -> None:
    exp = write_cnn(tmp_path, steps=30)
    run_dir = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "nas.cli", "run", str(exp), "--run-dir", str(run_dir), "--quiet"],
                          cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    for stage in ("train", "measure", "fit", "search"):
        assert (run_dir / stage / "stamp.json").is_file(), (stage, proc.stderr[-3000:])
    table = [json.loads(line) for line in (run_dir / "measure" / "table.jsonl").read_text().splitlines()]
    assert len(table) == 10 and all(0.0 <= r["accuracy"] <= 1.0 and r["latency_ms"] > 0 for r in table)
    if proc.returncode != 0 and not (run_dir / "export" / "stamp.json").exists() and "export" in proc.stderr:
        pytest.xfail(f"export of CNN subnets not implemented yet: {proc.stderr.strip().splitlines()[-1]}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    members = [p for p in (run_dir / "export").iterdir() if p.is_dir()]
    assert 1 <= len(members) <= 2
    for member in members:
        assert (member / "config.json").is_file() and (member / "metrics.json").is_file()
