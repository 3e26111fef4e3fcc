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
import optax
import pytest
from flax import nnx

from conftest import REPO
from nas.errors import ConfigError
from search_spaces import SearchSpace, is_bit_width
from supernets import get_family
from supernets.cnn import ACT_RANGE
from supernets.conv import ElasticConv
from supernets.norm import ElasticBatchNorm
from supernets.quant import LSQ_BITS, lsq_act_steps

FAMILY = get_family("cnn")
SHAPE = (8, 8, 1)
STAGES = [{"channels": 8, "max_depth": 2, "stride": 1}, {"channels": 12, "max_depth": 2, "stride": 2}]
MODEL = {"family": "cnn", "stem": 8, "max_expand": 3, "max_kernel": 5, "stages": STAGES,
         "space": {"depth": [1, 2], "expand": [1, 2, 3], "kernel": [3, 5], "bits": [2, 4, 8, 32]}}
SPACE = FAMILY.parse_space(MODEL, 64, 10, SHAPE)
BLOCK_CIN = [8, 8, 8, 12]  # input channels of the four block slots (stem 8, stage widths 8 and 12)
SLOTS = [(0, 0), (0, 1), (1, 0), (1, 1)]

MODEL_TOML = """
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
"""

# End to end: a smaller model (every distinct layer shape and every program costs a compile).
SMALL_MODEL_TOML = """
[model]
family = "cnn"
stem = 4
max_expand = 2
max_kernel = 3

[[model.stages]]
channels = 4
max_depth = 2
stride = 1

[[model.stages]]
channels = 4
max_depth = 1
stride = 2

[model.space]
depth = [[1, 2], [1]]
expand = [1, 2]
kernel = [1, 3]
bits = [4, 32]
"""

EXPERIMENT = """
name = "{name}"
seed = 0

[data]
dataset = "digits"
normalize = "standardize"
{model}
[train]
steps = {steps}
batch_size = 32
learning_rate = 3e-3
warmup_steps = 5
sandwich_random = {sandwich_random}
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


def write_cnn(folder: Path, name: str = "tinycnn", steps: int = 30, model: str = MODEL_TOML,
              sandwich_random: int = 1) -> Path:
    """A tiny CNN experiment on digits (by default the model table is MODEL) in `folder`."""
    path = folder / f"{name}.toml"
    path.write_text(EXPERIMENT.format(name=name, steps=steps, model=model, sandwich_random=sandwich_random))
    return path


E2E_TEST = "test_nas_run_end_to_end"


@pytest.fixture(scope="module", autouse=True)
def background_run(request, tmp_path_factory):
    """`nas run` of the small CNN experiment, started when this module starts (only if the end-to-end
    test is selected), so that its subprocess overlaps the in-process tests; that test waits for it."""
    if not any(item.name == E2E_TEST and item.module is request.module for item in request.session.items):
        yield None
        return
    folder = tmp_path_factory.mktemp("cnn_e2e")
    # Sandwich of two: on the CPU the CNN's train step runs its configs unrolled, each one more to compile.
    exp = write_cnn(folder, steps=30, model=SMALL_MODEL_TOML, sandwich_random=0)
    run_dir = folder / "run"
    with open(folder / "stdout.txt", "w") as out, open(folder / "stderr.txt", "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "nas.cli", "run", str(exp), "--run-dir", str(run_dir),
                                 "--quiet"], cwd=REPO, stdout=out, stderr=err,
                                env={**os.environ, "PYTHONPATH": str(REPO)})
    yield proc, folder, run_dir
    if proc.poll() is None:
        proc.kill()
        proc.wait()


# -- configs and helpers ------------------------------------------------------------------
def _with(config: dict, prefix: str, value: int) -> dict:
    """`config` with every dimension starting with `prefix` set to `value` (canonical)."""
    return SPACE.canonical({**config, **{k: value for k in config if k.startswith(prefix)}})


def _configs() -> dict[str, dict]:
    rng = np.random.default_rng(5)
    big = SPACE.largest()
    mixed = dict(big)
    for k, b in zip([k for k in big if is_bit_width(k)], [2, 8, 4, 32, 8, 2]):
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


def _random_supernet(seed: int = 1) -> nnx.Module:
    """FAMILY.build's supernet (its structure, from nnx.eval_shape) with random parameters drawn by numpy.

    Eager jax initialisers compile once per parameter shape (~15 s for this model on a busy 2-core CPU),
    and the test wants non-trivial values anyway: He-normal kernels, LSQ steps from their init rule
    perturbed but kept positive, BN scales around 1 (the zero-initialised residual ones would make
    every residual block the identity), random BN/conv/linear biases; statistics at init (0, 1).
    """
    abstract = nnx.eval_shape(lambda: FAMILY.build(SPACE, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)
    rng = np.random.default_rng(seed)
    flat = list(nnx.to_flat_state(state))
    values: dict[tuple, np.ndarray] = {}
    for path, var in flat:  # kernels first: weight steps derive from them
        if path[-1] == "kernel":
            shape = var.get_value().shape
            values[path] = rng.normal(0.0, np.sqrt(2.0 / np.prod(shape[:-1])), shape)
    qp_w = np.array([2.0 ** (b - 1) - 1 for b in LSQ_BITS])
    for path, var in flat:
        shape, name = var.get_value().shape, path[-1]
        if name == "w_steps":
            kernel = values[path[:-1] + ("kernel",)]
            mean_abs = np.abs(kernel.reshape(-1, shape[-1])).mean(0)
            values[path] = 2.0 * mean_abs[None, :] / np.sqrt(qp_w)[:, None] * np.exp(rng.normal(0.0, 0.25, shape))
        elif name == "a_steps":
            layer = abstract.stem.conv if path[:2] == ("stem", "conv") else None
            signed = bool(layer is not None and layer.signed_input)
            values[path] = np.asarray(lsq_act_steps(ACT_RANGE, signed)) * np.exp(rng.normal(0.0, 0.25, shape))
        elif name == "scale":
            values[path] = rng.normal(1.0, 0.3, shape)
        elif name in ("bias", "mean"):
            values[path] = rng.normal(0.0, 0.2, shape) if name == "bias" else np.zeros(shape)
        elif name == "var":
            values[path] = np.ones(shape)
        assert path in values, path
    for path, var in flat:
        var.set_value(jnp.asarray(values[path], jnp.float32))
    return nnx.merge(graphdef, state)


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    from nas.context import prepare

    folder = tmp_path_factory.mktemp("cnn_ctx")
    context = prepare(write_cnn(folder), run_dir=folder / "run")
    assert context.space == SPACE  # the TOML table is MODEL: the test supernet fits this context
    return context


class Net:
    """The random supernet as (graphdef, state), a jitted eval-mode forward, and calibration
    through nas.calibrate (one compiled program each, shared by every config)."""

    def __init__(self, ctx) -> None:
        from nas.data import load_data

        self.ctx = ctx
        self.graphdef, self.state = nnx.split(_random_supernet())
        self.splits = load_data(ctx.exp.data)
        self.x = jnp.asarray(self.splits.x_val[:32])  # evaluation inputs (calibration uses training images)
        graphdef = self.graphdef
        self._forward = jax.jit(lambda state, x, active: nnx.merge(graphdef, state)(x, active=active, mode="eval"))
        # Fixed statistics (the largest subnet's) for the elasticity tests: eval is then a pure function
        # of the weights and the choices.
        self.fixed = self.calibrated(SPACE.largest())

    def model(self, state: nnx.State | None = None) -> nnx.Module:
        """A model over a copy of `state` (default: the random, uncalibrated one)."""
        return nnx.merge(self.graphdef, _copy(self.state if state is None else state))

    def calibrated(self, config: dict, state: nnx.State | None = None) -> nnx.State:
        """`state` with its statistics recalibrated for `config` by nas.calibrate.calibrated."""
        from nas.calibrate import calibrated

        return nnx.state(calibrated(self.ctx, self.model(state), config))

    def forward(self, active, state: nnx.State | None = None, x=None) -> jax.Array:
        """Eval-mode logits (default: with the fixed statistics)."""
        active = _one(active) if "depth.0" in active else active
        return self._forward(self.fixed if state is None else state, self.x if x is None else x, active)

    def eval_calibrated(self, config: dict) -> tuple[jax.Array, nnx.State]:
        """(eval-mode logits after calibration for `config`, the calibrated state)."""
        state = self.calibrated(config)
        return self.forward(config, state), state


@pytest.fixture(scope="module")
def net(ctx) -> Net:
    return Net(ctx)


def _stats(state: nnx.State) -> list[np.ndarray]:
    return [np.asarray(v[...]) for _, v in nnx.to_flat_state(state) if isinstance(v, nnx.BatchStat)]


def _same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


# -- extraction ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(CONFIGS))
def test_extract_equals_calibrated_supernet(net: Net, name: str) -> None:
    config = CONFIGS[name]
    expected, state = net.eval_calibrated(config)
    plain = FAMILY.extract(net.model(state), SPACE, config)
    got = _jit_call(plain, net.x)
    assert got.shape == (32, 10)
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
        assert block.dw.bn.scale[...].shape == (hid,) and block.project.bn.bias[...].shape == (spec["cout"],)
        assert block.expand.conv.bias is None  # folded into the BatchNorm's shift, as the statistics are
        assert block.residual == (spec["stride"] == 1 and spec["cin"] == spec["cout"])
        assert (block.dw.conv.w_bits, block.dw.conv.a_bits) == (spec["bits"], spec["bits"])
    assert plain.head.kernel[...].shape == (12, 10)


def test_extracted_kernel_is_the_centre_crop(net: Net) -> None:
    config = _with(_with(SPACE.largest(), "kernel", 3), "bits", 32)
    model = net.model(net.calibrated(config))
    plain = FAMILY.extract(model, SPACE, config)
    for block, full in zip(plain.blocks, model.blocks):
        big = np.asarray(full.dw.conv.kernel[...])  # the 5x5 supernet kernel; float bits: no quantisation
        np.testing.assert_array_equal(np.asarray(block.dw.conv.kernel[...]), big[1:4, 1:4])


@pytest.mark.parametrize("dtype", [jnp.int32, jnp.bfloat16])
def test_an_extracted_subnet_takes_integer_and_bfloat16_inputs_as_the_supernet_does(net: Net, dtype) -> None:
    # At float input bits the stem's convolution got the raw dtype beside a float32 kernel: a TypeError.
    config = _with(SPACE.largest(), "bits", 32)
    plain = FAMILY.extract(net.model(net.calibrated(config)), SPACE, config)
    x = jnp.asarray(np.random.default_rng(0).integers(0, 5, (3, 64)), jnp.float32)
    np.testing.assert_array_equal(np.asarray(plain(x.astype(dtype))), np.asarray(plain(x)))


# -- kernel size, depth and bits elasticity (eval mode, fixed statistics) ----------------------
def _ring_state(net: Net, fill, blocks: tuple[int, ...] = (0, 1, 2, 3)) -> nnx.State:
    """The fixed-statistics state with the outer ring of the 5x5 depthwise kernels of `blocks` := fill(shape)."""
    model = net.model(net.fixed)
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
    base3, base5 = net.forward(three), net.forward(five)
    # The outer ring does not take part in a kernel-3 subnet ...
    np.testing.assert_array_equal(np.asarray(net.forward(three, noisy)), np.asarray(base3))
    # ... but does in a kernel-5 one, and kernel 3 is kernel 5 with that ring zero.
    assert not np.allclose(net.forward(five, noisy), base5, atol=1e-3)
    assert not np.allclose(base3, base5, atol=1e-3)
    assert float(jnp.max(jnp.abs(net.forward(five, zeroed) - base3))) <= 1e-5
    # Kernel size is a per-block choice: block s1.b0 at 3 ignores its own ring, the others use theirs.
    one_block = {**five, "kernel.1.0": 3}
    noisy_s1b0 = _ring_state(net, lambda shape: rng.normal(0.0, 3.0, shape), blocks=(2,))
    base_one = net.forward(one_block)
    assert not np.allclose(base_one, base5, atol=1e-3)
    np.testing.assert_array_equal(np.asarray(net.forward(one_block, noisy_s1b0)), np.asarray(base_one))
    assert not np.allclose(net.forward(five, noisy_s1b0), base5, atol=1e-3)


def test_depth_ignores_blocks_beyond_it(net: Net) -> None:
    config = SPACE.canonical({**SPACE.largest(), "depth.0": 1, "depth.1": 1, "bits.0.0": 4})
    base = net.forward(config)
    other = _one(config)
    # Blocks 1 and 3 lie past their stage's depth: change everything about them.
    for key, value in (("hidden", jnp.array([8, 12])), ("kernel", 3), ("bits", 2), ("abits", 2)):
        other[key] = other[key].at[jnp.array([1, 3])].set(value)
    assert not np.array_equal(np.asarray(other["hidden"]), np.asarray(_one(config)["hidden"]))
    np.testing.assert_array_equal(np.asarray(net.forward(other)), np.asarray(base))
    # Their parameters do not matter either.
    model = net.model(net.fixed)
    for i in (1, 3):
        for layer in (model.blocks[i].expand, model.blocks[i].project):
            layer.bn.scale[...] = layer.bn.scale[...] * 3.0 + 1.0
    np.testing.assert_array_equal(np.asarray(net.forward(config, nnx.state(model))), np.asarray(base))
    for deeper in ({**config, "depth.0": 2}, {**config, "depth.1": 2}):
        assert not np.allclose(net.forward(deeper), base, atol=1e-3)
        assert not np.allclose(net.forward(deeper, nnx.state(model)), net.forward(deeper), atol=1e-3)
    assert len(FAMILY.extract(net.model(net.fixed), SPACE, config).blocks) == 2
    # The space gates the dimensions of those blocks: canonical form pins them.
    assert SPACE.dim("expand.0.1").gate == "depth.0" and SPACE.dim("expand.0.0").gate is None
    assert SPACE.canonical({**config, "expand.1.1": 1})["expand.1.1"] == 3


def test_bits_change_outputs_and_levels(net: Net) -> None:
    big = SPACE.largest()
    two = CONFIGS["all_2bit"]
    out_float = net.forward(big)
    assert not np.allclose(net.forward(two), out_float, atol=1e-3)
    # One block's bits alone change the output.
    assert not np.allclose(net.forward({**big, "bits.1.0": 2}), out_float, atol=1e-3)
    plain = FAMILY.extract(net.model(net.calibrated(two)), SPACE, two)
    kernels = [plain.stem.conv.kernel[...]] + [layer.conv.kernel[...] for block in plain.blocks
                                                for layer in (block.expand, block.dw, block.project)]
    for kernel in kernels + [plain.head.kernel[...]]:
        k = np.asarray(kernel).reshape(-1, kernel.shape[-1])
        counts = [len(np.unique(k[:, c])) for c in range(k.shape[1])]
        assert 2 <= max(counts) <= 3  # {-s, 0, +s} per output channel, and not all zero
    four = _with(big, "bits", 4)
    dw4 = np.asarray(FAMILY.extract(net.model(net.fixed), SPACE, four).blocks[3].dw.conv.kernel[...])
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


# -- BatchNorm recalibration -----------------------------------------------------------------
def test_batchnorm_modes() -> None:
    bn = ElasticBatchNorm(6)
    scale, shift = np.linspace(0.5, 1.5, 6), np.linspace(-0.3, 0.3, 6)
    bn.scale[...] = jnp.asarray(scale, jnp.float32)
    bn.bias[...] = jnp.asarray(shift, jnp.float32)
    graphdef, state = nnx.split(bn)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(2.0, 3.0, (4, 5, 5, 6)) * (np.arange(6) < 4), jnp.float32)  # zero past width 4
    x_other = jnp.asarray(rng.normal(-1.0, 0.5, (4, 5, 5, 6)) * (np.arange(6) < 4), jnp.float32)

    @partial(jax.jit, static_argnames="mode")
    def run(state, x, mode):
        m = nnx.merge(graphdef, state)
        return m(x, width=4, mode=mode), nnx.state(m)

    y_train, after_train = run(state, x, "train")
    assert _same(_stats(after_train), _stats(state))  # train mode never writes statistics
    y_cal, calibrated = run(state, x, "calibrate")
    np.testing.assert_array_equal(np.asarray(y_cal), np.asarray(y_train))  # calibrate = batch statistics ...
    mean, var = np.asarray(calibrated["mean"][...]), np.asarray(calibrated["var"][...])
    np.testing.assert_allclose(mean[:4], np.asarray(x).mean((0, 1, 2))[:4], rtol=1e-5)  # ... over N, H, W
    np.testing.assert_allclose(var[:4], np.asarray(x).var((0, 1, 2))[:4], rtol=1e-4)
    y_eval, after_eval = run(calibrated, x_other, "eval")  # eval = the stored ones, on any batch
    expected = (np.asarray(x_other) - mean) / np.sqrt(var + 1e-5) * scale + shift
    np.testing.assert_allclose(np.asarray(y_eval)[..., :4], expected[..., :4], rtol=1e-4, atol=1e-4)
    assert np.all(np.asarray(y_eval)[..., 4:] == 0) and np.all(np.asarray(y_train)[..., 4:] == 0)
    assert _same(_stats(after_eval), _stats(calibrated))  # eval never writes
    y_same, _ = run(calibrated, x, "eval")
    np.testing.assert_allclose(np.asarray(y_same), np.asarray(y_train), atol=1e-5)
    plain = nnx.merge(graphdef, calibrated).extract(4)
    np.testing.assert_allclose(np.asarray(plain(x_other[..., :4])), np.asarray(y_eval)[..., :4], atol=1e-5)
    with pytest.raises(ValueError, match="mode"):
        bn(x, width=4, mode="inference")


def _recording(tx: optax.GradientTransformation) -> optax.GradientTransformation:
    """`tx`, with the raw gradients of the last update kept in its state (to inspect train_step's)."""

    def init(params):
        return jax.tree.map(lambda a: jnp.asarray(np.zeros(a.shape, np.float32)), params), tx.init(params)

    def update(grads, state, params=None):
        updates, inner = tx.update(grads, state[1], params)
        return updates, (grads, inner)

    return optax.GradientTransformation(init, update)


def _quantised_sandwich() -> list[dict]:
    """Three configs with every block active and every layer quantised (2, 4 and 8 bits)."""
    rng = np.random.default_rng(4)
    return [_with({**SPACE.sample(rng), "depth.0": 2, "depth.1": 2}, "bits", b) for b in (2, 4, 8)]


@pytest.fixture(scope="module")
def trained(net: Net):
    """nas.train.train_step (sandwich vmapped over 3 configs, train mode) on the random supernet:
    first a probe step on the quantised sandwich (its raw gradients recorded, its update dropped),
    then 3 sandwich steps on digits. One compiled program must serve them all."""
    from nas.train import batch_indices, make_optimizer, sandwich_configs, train_step

    ctx = net.ctx
    cfg = ctx.exp.train
    graphdef, params, rest = nnx.split(net.model(), nnx.Param, ...)
    own = lambda tree: jax.tree.map(lambda a: jnp.asarray(np.array(a)), tree)  # noqa: E731 - train_step donates
    tx = _recording(make_optimizer(cfg))
    opt_state = jax.jit(tx.init)(params)  # one compile, not one per parameter shape
    splits = net.splits
    compiled_before = train_step._cache_size()

    def step(params, opt_state, n, configs):
        idx = batch_indices(ctx.exp.seed, n, len(splits.x_train), cfg.batch_size)
        return train_step(graphdef, tx, cfg, params, opt_state, rest, jnp.asarray(splits.x_train[idx]),
                          jnp.asarray(splits.y_train[idx]), _active(configs), batching="vmap")

    _, probe_state, probe_loss, _ = step(own(params), own(opt_state), 0, _quantised_sandwich())
    history, losses, params = [], [float(probe_loss)], own(params)
    for n in range(3):
        configs = sandwich_configs(ctx, n, cfg.sandwich_random)
        params, opt_state, loss, _ = step(params, opt_state, n, configs)
        history.append(configs)
        losses.append(float(loss))
    return {"model": nnx.merge(graphdef, params, _copy(rest)), "history": history, "losses": losses,
            "compiles": train_step._cache_size() - compiled_before, "probe_grads": probe_state[0]}


def test_one_compile_serves_every_config(net: Net, trained) -> None:
    assert trained["compiles"] == 1  # four sandwiches of different configs, one program
    for config in [SPACE.smallest(), CONFIGS["mixed"], CONFIGS["all_float"], CONFIGS["random0"]]:
        net.forward(config)
    assert net._forward._cache_size() == 1  # the eval forward, jitted over (state, x, active), as well
    assert len({json.dumps(h[-1], sort_keys=True) for h in trained["history"]}) == 3  # different random configs
    assert all(np.isfinite(trained["losses"])) and len(set(trained["losses"])) == 4
    model = trained["model"]
    assert _same(_stats(nnx.state(model)), _stats(net.state))  # training never writes statistics
    changed = [not np.array_equal(np.asarray(a[...]), np.asarray(b[...]))
               for (_, a), (_, b) in zip(nnx.to_flat_state(nnx.state(model, nnx.Param)),
                                         nnx.to_flat_state(nnx.state(net.model(), nnx.Param)))]
    assert sum(changed) > len(changed) // 2  # the steps did train


def test_gradients_finite_and_nonzero_under_vmap(trained) -> None:
    seen = {"w_steps": 0, "a_steps": 0, "scale": 0, "kernel": 0}
    for path, g in nnx.to_flat_state(trained["probe_grads"]):
        g = np.asarray(g[...])
        assert np.all(np.isfinite(g)), path
        if path[-1] in seen:
            assert np.abs(g).sum() > 0, path  # every layer is active and quantised in the probe sandwich
            seen[path[-1]] += 1
    # stem + 3 convs per block + head are quantised; stem + 3 BNs per block normalise.
    assert seen == {"w_steps": 1 + 3 * 4 + 1, "a_steps": 1 + 3 * 4 + 1, "scale": 1 + 3 * 4, "kernel": 1 + 3 * 4 + 1}


def test_calibrated_accuracy_ignores_history(net: Net) -> None:
    from nas.calibrate import calibrated

    ctx = net.ctx
    a, b = CONFIGS["random2"], CONFIGS["largest"]
    model = net.model()
    alone = np.asarray(net.forward(a, nnx.state(calibrated(ctx, model, a))))
    after_b = calibrated(ctx, model, b)
    assert not _same(_stats(nnx.state(after_b)), _stats(nnx.state(calibrated(ctx, model, a))))
    # B's statistics are wrong for A: A must not be evaluated on them ...
    assert not np.allclose(net.forward(a, nnx.state(after_b)), alone, atol=1e-3)
    # ... and once recalibrated, A does not remember B (nor an earlier calibration of itself).
    np.testing.assert_allclose(net.forward(a, nnx.state(calibrated(ctx, after_b, a))), alone, rtol=0, atol=1e-6)
    twice = calibrated(ctx, calibrated(ctx, model, a), a)
    np.testing.assert_allclose(net.forward(a, nnx.state(twice)), alone, rtol=0, atol=1e-6)
    # `calibrated` returns a new model: the one passed in keeps its (initial) statistics.
    assert _same(_stats(nnx.state(model)), _stats(net.state))


def test_recalibration_after_training_ignores_calibration_order(net: Net, trained) -> None:
    from nas.calibrate import calibrated, extract_subnet

    ctx = net.ctx
    model, history = trained["model"], trained["history"]
    c1, c2 = history[-1][0], history[-1][-1]  # the last step's largest and its random config
    target = CONFIGS["random3"]
    assert len({json.dumps(c, sort_keys=True) for c in (c1, c2, target)}) == 3
    one_two = calibrated(ctx, calibrated(ctx, model, c1), c2)
    two_one = calibrated(ctx, calibrated(ctx, model, c2), c1)
    assert not _same(_stats(nnx.state(one_two)), _stats(nnx.state(two_one)))
    got_12 = np.asarray(net.forward(target, nnx.state(calibrated(ctx, one_two, target))))
    got_21 = np.asarray(net.forward(target, nnx.state(calibrated(ctx, two_one, target))))
    alone = np.asarray(net.forward(target, nnx.state(calibrated(ctx, model, target))))
    np.testing.assert_allclose(got_12, got_21, rtol=0, atol=1e-6)
    np.testing.assert_allclose(got_12, alone, rtol=0, atol=1e-6)
    # The extracted subnet (recalibrated by extract_subnet) agrees too.
    plain = extract_subnet(ctx, one_two, target)
    assert float(np.max(np.abs(np.asarray(_jit_call(plain, net.x)) - alone))) <= 1e-4


def test_uncalibrated_eval_differs(net: Net, trained) -> None:
    from nas.calibrate import calibrated, calibration_inputs, has_statistics

    ctx = net.ctx
    model = trained["model"]
    assert has_statistics(model)
    assert calibration_inputs(ctx, model).shape == (64, 64)  # measure.calibration_samples training images
    config = CONFIGS["random4"]
    assert all(np.all(s == 0) or np.all(s == 1) for s in _stats(nnx.state(model)))  # at init: mean 0, var 1
    initial = np.asarray(net.forward(config, nnx.state(model)))
    recal = np.asarray(net.forward(config, nnx.state(calibrated(ctx, model, config))))
    assert float(np.max(np.abs(initial - recal))) > 1e-2


def test_accuracy_many_equals_extracted_accuracy(net: Net, trained) -> None:
    from nas.calibrate import extract_subnet
    from nas.measure import accuracy_many

    ctx = net.ctx
    model, history = trained["model"], trained["history"]
    configs = [SPACE.largest(), SPACE.smallest(), CONFIGS["mixed"], CONFIGS["random5"], history[0][-1]]
    x, y = net.splits.x_val, net.splits.y_val
    many = accuracy_many(ctx, model, configs, x, y)
    assert many.shape == (len(configs),)
    one_by_one = []
    for config in configs:
        logits = _jit_call(extract_subnet(ctx, model, config), jnp.asarray(x))
        one_by_one.append(float((np.asarray(logits).argmax(-1) == y).mean()))
    np.testing.assert_allclose(many, one_by_one, rtol=0, atol=0.1 / len(y))  # the same count (float32 mean)
    assert len(set(one_by_one)) > 1  # the configs are told apart


def test_accuracy_in_small_slices_counts_the_same(net: Net, trained) -> None:
    """measure.eval_batch_size bounds the examples in flight: fewer configs per call and the
    validation set in uneven slices (the last one padded) give the very same counts."""
    from dataclasses import replace

    from nas.measure import accuracy_many, accuracy_plan

    ctx, model = net.ctx, trained["model"]
    configs = [SPACE.largest(), SPACE.smallest(), CONFIGS["mixed"], CONFIGS["random5"]]
    x, y = net.splits.x_val, net.splits.y_val
    assert len(x) == 288
    assert accuracy_plan(len(x), 64, 130) == (2, 58, 5)  # 2 of 4 configs per call, the last slice padded
    small = replace(ctx, exp=replace(ctx.exp, measure=replace(ctx.exp.measure, eval_batch_size=130)))
    np.testing.assert_array_equal(np.round(accuracy_many(small, model, configs, x, y) * len(y)),
                                  np.round(accuracy_many(ctx, model, configs, x, y) * len(y)))


def test_the_accuracy_plan_keeps_the_examples_in_flight_within_the_setting() -> None:
    from nas.measure import ACCURACY_CHUNK, accuracy_plan

    assert accuracy_plan(1000, 0, 4096) == (ACCURACY_CHUNK, 250, 4)  # no statistics: every config, even slices
    assert accuracy_plan(100, 0, 4096) == (ACCURACY_CHUNK, 100, 1)
    assert accuracy_plan(10_000, 1024, 4096) == (4, 1000, 10)  # calibration images count too
    assert accuracy_plan(10, 8192, 4096) == (1, 10, 1)  # more calibration images than the setting: one config
    assert accuracy_plan(7, 0, 4) == (4, 1, 7)
    for n, cal, flight in [(999, 64, 300), (7, 0, 1), (5000, 512, 513), (50, 0, 20)]:
        per_call, per_slice, slices = accuracy_plan(n, cal, flight)
        assert per_call * max(per_slice, cal) <= max(flight, cal) and per_slice * slices >= n > per_slice * (slices - 1)


def test_quantised_block_inputs_keep_their_sign(net: Net) -> None:
    model = net.model()
    consumers = [block.expand.conv for block in list(model.blocks)[1:]] + [model.head]
    assert all(layer.signed_input for layer in consumers)


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
    # Stage 0's residual blocks hold their 8x8x8 input beside the depthwise layer's 8x8x24 in and out (the
    # skip was left out); stage 1's first block (stride 2) has no skip.
    assert FAMILY.peak_activation_bytes(SPACE, big) == 4 * (64 * 24 + 64 * 24 + 64 * 8)
    assert [c.act_inner for c in costs] == [0] + [0, 64 * 8, 64 * 8] * 2 + [0, 0, 0] + [0, 16 * 12, 16 * 12] + [0]


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


def test_a_shared_depth_list_beyond_one_stage_points_to_per_stage_lists() -> None:
    deeper = [dict(STAGES[0]), dict(STAGES[1], max_depth=3)]  # stage 1 could take 3, stage 0 cannot
    with pytest.raises(ConfigError, match=r"exceeds stage 0 max_depth=2 \(a list per stage, e\.g\. \[\[1, 2"):
        FAMILY.parse_space(_bad({"stages": deeper}, space={"depth": [1, 3]}), 64, 10, SHAPE)
    with pytest.raises(ConfigError, match=r"exceeds stage 0 max_depth=2$"):  # no stage takes 3: no such hint
        FAMILY.parse_space(_bad(space={"depth": [1, 3]}), 64, 10, SHAPE)
    with pytest.raises(ConfigError, match=r"exceeds stage 1 max_depth=2$"):
        FAMILY.parse_space(_bad(space={"depth": [[1, 2], [1, 2, 3]]}), 64, 10, SHAPE)


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


def test_zero_init_residual_only_on_skip_blocks() -> None:
    # A one-channel model: FAMILY.build compiles its initialisers once per parameter shape.
    table = {"family": "cnn", "stem": 1, "max_expand": 1, "max_kernel": 1,
             "stages": [{"channels": 1, "max_depth": 2}, {"channels": 2, "max_depth": 1, "stride": 2}],
             "space": {"depth": [[1, 2], [1]], "expand": [1], "bits": [32]}}
    model = FAMILY.build(FAMILY.parse_space(table, 64, 2, SHAPE), rngs=nnx.Rngs(0))
    assert [b.residual for b in model.blocks] == [True, True, False]
    assert [float(b.project.bn.scale[...][0]) for b in model.blocks] == [0.0, 0.0, 1.0]  # skip blocks start as identity
    assert float(model.blocks[0].expand.bn.scale[...][0]) == 1.0
    off = FAMILY.build(FAMILY.parse_space({**table, "zero_init_residual": False}, 64, 2, SHAPE), rngs=nnx.Rngs(0))
    assert all(float(b.project.bn.scale[...][0]) == 1.0 for b in off.blocks)
    assert isinstance(model.blocks[0].dw.conv, ElasticConv) and model.blocks[0].dw.conv.depthwise


# -- end to end --------------------------------------------------------------------------------
def test_nas_run_end_to_end(background_run) -> None:
    proc, folder, run_dir = background_run
    proc.wait(timeout=600)
    stderr = (folder / "stderr.txt").read_text()
    for stage in ("train", "measure", "fit", "search"):
        assert (run_dir / stage / "stamp.json").is_file(), (stage, stderr[-3000:])
    assert json.loads((run_dir / "train" / "summary.json").read_text())["steps"] == 30
    table = [json.loads(line) for line in (run_dir / "measure" / "table.jsonl").read_text().splitlines()]
    assert len(table) == 10 and all(0.0 <= r["accuracy"] <= 1.0 and r["latency_ms"] > 0 for r in table)
    assert proc.returncode == 0, stderr[-3000:]
    assert "done" in (folder / "stdout.txt").read_text()
    members = sorted(p for p in (run_dir / "export").iterdir() if p.is_dir())
    assert 1 <= len(members) <= 2
    for member in members:
        assert (member / "config.json").is_file() and (member / "model.jaxexport").is_file()
        assert (member / "params.npz").is_file()  # formats default: stablehlo and npz
        metrics = json.loads((member / "metrics.json").read_text())
        assert metrics["export_max_abs_diff"] <= 1e-3
        assert metrics["params_bytes"] == metrics["predicted_size_bytes"]  # size on disk is the size searched on
