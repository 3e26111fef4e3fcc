"""Data-parallel training over several (forced) CPU devices: the batch is split across devices,
parameters are replicated, and training ends with the same weights as on one device (BatchNorm
statistics included: they are computed over the whole global batch, not per device).

The device count is fixed when jax starts, so every run is a subprocess with its own XLA_FLAGS;
they run concurrently (one fixture) to keep the wall time down."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from conftest import REPO, write_tiny
from nas.checkpoint import CheckpointStore
from nas.context import prepare
from nas.train import make_optimizer

STEPS = 6

# Float bit-widths and, for the CNN, plain SGD: the two runs differ by float summation order only,
# and these keep that difference at float noise. (With quantisation a rounding flip, and with Adam
# a parameter whose gradient is itself float noise -- e.g. the bias of a residual block's last BN,
# which the next block's BN cancels exactly -- turn 1e-7 into 1e-3 without anything being wrong.)
CNN = """
name = "{name}"
seed = 0

[data]
dataset = "digits"
normalize = "standardize"

[model]
family = "cnn"
stem = 4
max_expand = 2
max_kernel = 3

[[model.stages]]
channels = 8
max_depth = 1
stride = 2

[model.space]
depth = [1]
expand = [1, 2]
bits = [32]

[train]
steps = {steps}
batch_size = 32
optimizer = "sgd"
learning_rate = 0.05
warmup_steps = 1
sandwich_random = 0
checkpoint_every = {steps}

[[objectives]]
metric = "accuracy"

[[objectives]]
metric = "size_kb"
"""


def _env(devices: int) -> dict[str, str]:
    """This process's environment with XLA_FLAGS replaced: `devices` host (CPU) devices."""
    flags = f"--xla_force_host_platform_device_count={devices} --xla_cpu_multi_thread_eigen=false"
    return {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)}


def _start(args: list[str], devices: int, log: Path) -> subprocess.Popen:
    """A subprocess with its output in files (pipes could fill up while the others run)."""
    with open(log.with_suffix(".out"), "w") as out, open(log.with_suffix(".err"), "w") as err:
        return subprocess.Popen([sys.executable, *args], cwd=REPO, stdout=out, stderr=err, env=_env(devices))


SHARDINGS_CHECK = textwrap.dedent("""
    import dataclasses, json, sys
    import jax
    from nas.context import prepare
    from nas.train import data_parallel_shardings
    cfg = prepare(sys.argv[1]).exp.train
    out = {"devices": len(jax.local_devices())}
    for name, c in {"default": cfg, "off": dataclasses.replace(cfg, data_parallel=False),
                    "odd_batch": dataclasses.replace(cfg, batch_size=63)}.items():
        s = data_parallel_shardings(c, 10_000)
        out[name] = None if s is None else [s[0].mesh.size, str(s[0].spec), str(s[1].spec)]
    print(json.dumps(out))
""")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, dict]:
    """`nas train` of the tiny MLP and a tiny CNN on 2 devices and on 1, the MLP on 2 devices with
    train.data_parallel = false, and a direct look at data_parallel_shardings on 2 devices."""
    folder = tmp_path_factory.mktemp("data_parallel")
    mlp = write_tiny(folder, "mlp", steps=STEPS, checkpoint_every=STEPS)
    mlp.write_text(mlp.read_text().replace("bits = [4, 8, 32]", "bits = [32]").replace("warmup_steps = 5",
                                                                                      "warmup_steps = 2"))
    off = folder / "mlp_off.toml"
    off.write_text(mlp.read_text().replace('name = "mlp"', 'name = "mlp_off"')
                   .replace("[train]\n", "[train]\ndata_parallel = false\n"))
    cnn = folder / "cnn.toml"
    cnn.write_text(CNN.format(name="cnn", steps=STEPS))
    plan = {"mlp_2": (mlp, 2), "mlp_1": (mlp, 1), "mlp_off": (off, 2), "cnn_2": (cnn, 2), "cnn_1": (cnn, 1)}
    procs = {name: _start(["-m", "nas.cli", "train", str(exp), "--run-dir", str(folder / name), "--quiet"],
                          devices, folder / name)
             for name, (exp, devices) in plan.items()}
    procs["shardings"] = _start(["-c", SHARDINGS_CHECK, str(mlp)], 2, folder / "shardings")
    out = {}
    try:
        for name, proc in procs.items():
            proc.wait(timeout=600)
            log = folder / name
            out[name] = {"rc": proc.returncode, "stdout": log.with_suffix(".out").read_text(),
                         "stderr": log.with_suffix(".err").read_text(), "run_dir": folder / name,
                         "experiment": plan[name][0] if name in plan else None}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return out


def _ok(run: dict) -> dict:
    assert run["rc"] == 0, run["stderr"][-3000:]
    return json.loads((run["run_dir"] / "train" / "summary.json").read_text())


def _final_params(run: dict) -> tuple[int, dict[tuple, np.ndarray]]:
    """(step, flat params) of the newest checkpoint, restored in this (one-device) process."""
    ctx = prepare(run["experiment"], run_dir=run["run_dir"])
    abstract = nnx.eval_shape(lambda: ctx.family.build(ctx.space, rngs=nnx.Rngs(0)))  # no initialiser compiles
    params = nnx.state(abstract, nnx.Param)
    opt_state = jax.eval_shape(make_optimizer(ctx.exp.train).init, params)
    # Restore onto this process's one device, whatever topology the checkpoint was saved from.
    here = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    like = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=here),
                        {"params": params, "opt_state": opt_state})
    step, state = CheckpointStore(run["run_dir"] / "train" / "ckpt").restore_latest(like)
    return step, {path: np.asarray(v[...]) for path, v in nnx.to_flat_state(state["params"])}


def _max_diff(a: dict[tuple, np.ndarray], b: dict[tuple, np.ndarray]) -> float:
    assert a.keys() == b.keys()
    return max(float(np.max(np.abs(a[k] - b[k]))) for k in a)


@pytest.mark.parametrize("family", ["mlp", "cnn"])
def test_two_devices_train_like_one(runs, family: str) -> None:
    two, one = runs[f"{family}_2"], runs[f"{family}_1"]
    assert _ok(two)["devices"] == 2
    assert _ok(one)["devices"] == 1
    step_2, params_2 = _final_params(two)
    step_1, params_1 = _final_params(one)
    assert step_2 == step_1 == STEPS
    assert _max_diff(params_2, params_1) <= 1e-4
    if family == "mlp":  # the agreement is not vacuous: training moved the weights (cheap to rebuild for the MLP)
        ctx = prepare(one["experiment"], run_dir=one["run_dir"])
        init = nnx.state(ctx.family.build(ctx.space, rngs=nnx.Rngs(ctx.exp.seed)), nnx.Param)
        assert _max_diff(params_1, {path: np.asarray(v[...]) for path, v in nnx.to_flat_state(init)}) > 1e-3


def test_data_parallel_false_keeps_one_device(runs) -> None:
    off, one = runs["mlp_off"], runs["mlp_1"]
    assert _ok(off)["devices"] == 1  # two devices visible, data parallelism switched off
    _, params_off = _final_params(off)
    _, params_1 = _final_params(one)
    assert _max_diff(params_off, params_1) <= 1e-6  # the same single-device computation


def test_data_parallel_shardings(runs) -> None:
    run = runs["shardings"]
    assert run["rc"] == 0, run["stderr"][-3000:]
    result = json.loads(run["stdout"].strip().splitlines()[-1])
    assert result["devices"] == 2
    assert result["default"][0] == 2 and "data" in result["default"][1] and "data" not in result["default"][2]
    assert result["off"] is None  # train.data_parallel = false
    assert result["odd_batch"] is None  # a batch that does not split evenly stays on one device
