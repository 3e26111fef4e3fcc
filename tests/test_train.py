"""Training: loss goes down, a `kill -9` mid-run resumes to the same final weights."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from conftest import REPO, write_tiny
from nas.checkpoint import CheckpointStore
from nas.context import prepare
from nas.train import init_state


def _nas(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "nas.cli", *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})


def _final_params(experiment: Path, run_dir: Path):
    ctx = prepare(experiment, run_dir=run_dir)
    _, params, _, opt_state, _ = init_state(ctx)
    step, state = CheckpointStore(run_dir / "train" / "ckpt").restore_latest({"params": params, "opt_state": opt_state})
    return step, jax.tree.leaves(state["params"])


def _checkpoint_steps(folder: Path) -> list[int]:
    return sorted(int(p.name) for p in folder.glob("*") if p.name.isdigit()) if folder.is_dir() else []


def test_kill_9_then_resume_matches_uninterrupted(tmp_path: Path) -> None:
    exp = write_tiny(tmp_path, steps=1500, checkpoint_every=100)
    killed, clean = tmp_path / "killed", tmp_path / "clean"

    proc = _nas("train", str(exp), "--run-dir", str(killed), "--quiet")
    deadline = time.time() + 120
    while not _checkpoint_steps(killed / "train" / "ckpt") and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    steps_at_kill = _checkpoint_steps(killed / "train" / "ckpt")
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert steps_at_kill and steps_at_kill[-1] < 1500
    assert not (killed / "train" / "stamp.json").exists()

    resumed = _nas("train", str(exp), "--run-dir", str(killed), "--quiet")
    uninterrupted = _nas("train", str(exp), "--run-dir", str(clean), "--quiet")
    out_r, err_r = resumed.communicate(timeout=300)
    out_c, err_c = uninterrupted.communicate(timeout=300)
    assert resumed.returncode == 0, err_r
    assert uninterrupted.returncode == 0, err_c
    summary = json.loads(out_r.strip().splitlines()[-1])
    assert summary["resumed_from"] >= steps_at_kill[-1] > 0
    assert json.loads(out_c.strip().splitlines()[-1])["resumed_from"] == 0

    step_a, a = _final_params(exp, killed)
    step_b, b = _final_params(exp, clean)
    assert step_a == step_b == 1500
    for x, y in zip(a, b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_training_lowers_the_loss_and_stamps_the_stage(tmp_path: Path) -> None:
    from nas.train import train

    ctx = prepare(write_tiny(tmp_path, steps=200, checkpoint_every=50), run_dir=tmp_path / "run")
    summary = train(ctx, quiet=True)
    log = [json.loads(line) for line in (tmp_path / "run" / "train" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [50, 100, 150, 200]
    assert log[-1]["ce_largest"] < 0.6 * log[0]["ce_largest"]
    assert ctx.is_current("train") and summary["steps"] == 200
    # How often it checkpoints does not change the weights: the stage stays current; the steps do.
    for sub in ("b", "c"):
        (tmp_path / sub).mkdir()
    again = prepare(write_tiny(tmp_path / "b", steps=200, checkpoint_every=25), run_dir=tmp_path / "run")
    assert again.is_current("train")
    # A run stamped before checkpoint_every stopped being an input (its fingerprint hashed it) stays current.
    stamp = json.loads((tmp_path / "run" / "train" / "stamp.json").read_text())
    stamp["fingerprint"] = ctx.fingerprint("train", legacy=True)
    (tmp_path / "run" / "train" / "stamp.json").write_text(json.dumps(stamp))
    assert ctx.fingerprint("train", legacy=True) != ctx.fingerprint("train") and ctx.is_current("train")
    assert not prepare(write_tiny(tmp_path / "c", steps=150, checkpoint_every=50), run_dir=tmp_path / "run").is_current(
        "train")


def test_smallest_bits_random_varies_only_the_smallest_subnets_bit_widths(tmp_path: Path) -> None:
    from nas.train import sandwich_configs
    from search_spaces import is_bit_width

    ctx = prepare(write_tiny(tmp_path), run_dir=tmp_path / "run")
    smallest = ctx.space.smallest()
    arch = {k: v for k, v in smallest.items() if not is_bit_width(k)}
    seen = set()
    for step in range(40):
        low = sandwich_configs(ctx, step, 2, "min")
        rand = sandwich_configs(ctx, step, 2, "random")
        assert low[1] == smallest and rand[0] == low[0] == ctx.space.largest()
        assert rand[2:] == low[2:]  # the random subnets are the same draws in both modes
        assert {k: v for k, v in rand[1].items() if not is_bit_width(k)} == arch
        assert ctx.space.validate(rand[1]) == rand[1]
        seen.add(tuple(sorted((k, v) for k, v in rand[1].items() if is_bit_width(k))))
    assert len(seen) > 5  # many bit assignments, not only the lowest
    assert ctx.exp.train.smallest_bits == "min"  # the default keeps the classic sandwich


def test_smallest_bits_both_trains_the_smallest_at_the_lowest_and_at_random_bits(tmp_path: Path) -> None:
    from nas.train import sandwich_configs

    ctx = prepare(write_tiny(tmp_path), run_dir=tmp_path / "run")
    for step in range(10):
        both = sandwich_configs(ctx, step, 2, "both")
        rand = sandwich_configs(ctx, step, 2, "random")
        assert len(both) == 5 and both[0] == ctx.space.largest()
        assert both[1] == ctx.space.smallest()  # the lowest bits every step, not once in choices^layers
        assert both[2] == rand[1] and both[3:] == rand[2:]  # the same random-bits smallest and random draws


def test_smallest_bits_is_read_from_the_experiment_and_checked(tmp_path: Path) -> None:
    import pytest

    from nas.errors import ConfigError

    exp = write_tiny(tmp_path)
    text = exp.read_text()
    exp.write_text(text.replace("[train]", '[train]\nsmallest_bits = "random"', 1))
    assert prepare(exp, run_dir=tmp_path / "a").exp.train.smallest_bits == "random"
    exp.write_text(text.replace("[train]", '[train]\nsmallest_bits = "lowest"', 1))
    with pytest.raises(ConfigError, match="smallest_bits"):
        prepare(exp, run_dir=tmp_path / "b")
    exp.write_text(text.replace("[train]", '[train]\nuniform_bits = 1.5', 1))
    with pytest.raises(ConfigError, match="uniform_bits"):
        prepare(exp, run_dir=tmp_path / "c")
    exp.write_text(text.replace("[train]", '[train]\ndistill_reduce = "max"', 1))
    with pytest.raises(ConfigError, match="distill_reduce"):
        prepare(exp, run_dir=tmp_path / "d")


def test_distill_reduce_mean_averages_the_students_divergences(tmp_path: Path) -> None:
    import dataclasses

    import jax.numpy as jnp

    from nas.data import load_data
    from nas.train import sandwich_configs, sandwich_loss

    ctx = prepare(write_tiny(tmp_path), run_dir=tmp_path / "run")
    graphdef, params, rest, _, _ = init_state(ctx)
    splits = load_data(ctx.exp.data)
    x, y = jnp.asarray(splits.x_train[:32]), jnp.asarray(splits.y_train[:32])
    configs = sandwich_configs(ctx, 0, 3)
    active = {k: jnp.asarray(v) for k, v in ctx.family.active(ctx.space, configs).items()}
    losses = {}
    for reduce in ("sum", "mean"):
        cfg = dataclasses.replace(ctx.exp.train, distill=True, label_loss="largest", distill_reduce=reduce)
        loss, ce = sandwich_loss(graphdef, params, rest, x, y, active, cfg)
        losses[reduce] = float(loss) - float(ce[0])  # the students' part
    assert losses["sum"] > 0
    np.testing.assert_allclose(losses["sum"], (len(configs) - 1) * losses["mean"], rtol=1e-5)


def test_uniform_bits_gives_some_random_subnets_one_bit_width(tmp_path: Path) -> None:
    from nas.train import sandwich_configs
    from search_spaces import is_bit_width

    ctx = prepare(write_tiny(tmp_path), run_dir=tmp_path / "run")

    def active_bits(config: dict) -> set[int]:
        depth = config["depth"]
        return {v for k, v in config.items() if is_bit_width(k) and (k == "bits.out" or int(k.split(".")[1]) < depth)}

    uniform, total = 0, 0
    for step in range(60):
        plain = sandwich_configs(ctx, step, 3)
        mixed = sandwich_configs(ctx, step, 3, uniform_bits=0.5)
        assert mixed[:2] == plain[:2]
        for a, b in zip(plain[2:], mixed[2:]):
            assert {k: v for k, v in a.items() if not is_bit_width(k)} == {k: v for k, v in b.items()
                                                                           if not is_bit_width(k)}
            assert ctx.space.validate(b) == b
            total += 1
            uniform += len(active_bits(b)) == 1 and b != a
    assert 0.3 * total < uniform < 0.7 * total  # about half, drawn afresh
    assert all(sandwich_configs(ctx, s, 3, uniform_bits=0.0) == sandwich_configs(ctx, s, 3) for s in range(5))


def test_forced_train_trains_again_from_step_zero(tmp_path: Path, capsys) -> None:
    """--force on a finished stage retrains (it used to resume at the last step, train nothing and print
    NaN, which is not JSON); how often it checkpoints is not an input of the stage."""
    from nas.cli import main

    exp = write_tiny(tmp_path, steps=20, checkpoint_every=10)
    run = tmp_path / "run"
    assert main(["train", str(exp), "--run-dir", str(run), "--quiet"]) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main(["train", str(exp), "--run-dir", str(run), "--quiet"]) == 0  # current: nothing to do
    capsys.readouterr()
    assert main(["train", str(exp), "--run-dir", str(run), "--force", "--quiet"]) == 0
    forced = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert forced["resumed_from"] == 0 and np.isfinite(forced["final_loss"])
    assert forced["final_loss"] == first["final_loss"]  # same seed, same steps: the same training


def test_a_resume_falls_back_past_a_corrupt_checkpoint(tmp_path: Path, capsys) -> None:
    """Killed before its stamp: a resume with nothing left to train reports the loss it logged (it wrote
    null over the summary); with the newest checkpoint corrupt too, it resumes from the one before
    (it was a dead end) and ends as the uninterrupted run did."""
    from nas.cli import main

    exp = write_tiny(tmp_path, steps=20, checkpoint_every=10)
    run = tmp_path / "run"
    assert main(["train", str(exp), "--run-dir", str(run), "--quiet"]) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    (run / "train" / "stamp.json").unlink()
    assert main(["train", str(exp), "--run-dir", str(run), "--quiet"]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["resumed_from"] == 20 and again["final_loss"] == first["final_loss"]
    (run / "train" / "stamp.json").unlink()
    for f in (run / "train" / "ckpt" / "20").rglob("*"):
        if f.is_file() and "ocdbt" in str(f.parent):
            f.write_bytes(b"\0garbage" * 16)
    assert main(["train", str(exp), "--run-dir", str(run), "--quiet"]) == 0
    out, err = capsys.readouterr()
    resumed = json.loads(out.strip().splitlines()[-1])
    assert f"checkpoint {run.absolute() / 'train' / 'ckpt'}/20 is unreadable or corrupt" in err
    assert "resuming from step 10" in err and len(list((run / "train" / "ckpt.unreadable").iterdir())) == 1
    assert resumed["resumed_from"] == 10 and resumed["final_loss"] == first["final_loss"]


def test_weight_decay_is_read_by_every_optimizer() -> None:
    # It was read by adamw alone: adam and sgd ignored train.weight_decay without a word.
    import dataclasses

    import jax.numpy as jnp
    import pytest

    from nas.config import load_experiment
    from nas.train import make_optimizer

    base = dataclasses.replace(load_experiment(REPO / "experiments" / "quickstart.toml").train,
                               warmup_steps=0, grad_clip=0.0, schedule="constant", learning_rate=0.1)
    params = {"layer": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}}
    zero = jax.tree.map(jnp.zeros_like, params)
    for optimizer in ("adamw", "adam", "sgd"):
        moved = {}
        for wd in (0.0, 0.5):
            tx = make_optimizer(dataclasses.replace(base, optimizer=optimizer, weight_decay=wd))
            updates, _ = tx.update(zero, tx.init(params), params)
            moved[wd] = float(jnp.abs(updates["layer"]["kernel"]).sum())
            assert float(jnp.abs(updates["layer"]["bias"]).sum()) == 0.0  # kernels only
        assert moved[0.0] == 0.0 and moved[0.5] > 0.0, (optimizer, moved)
        if optimizer == "sgd":  # L2: lr x wd x weight on the first step
            assert moved[0.5] == pytest.approx(4 * 0.1 * 0.5)


def test_a_diverging_loss_stops_training_with_one_line(tmp_path: Path, capsys) -> None:
    # A typo such as 3e3 for 3e-3 trained to a NaN loss, and every later stage ran on it.
    from nas.cli import main

    exp = write_tiny(tmp_path, steps=20, checkpoint_every=20)
    exp.write_text(exp.read_text().replace("[train]\n", "[train]\nlearning_rate = 1e30\n"))
    assert main(["train", str(exp), "--run-dir", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "training diverged" in err and "train.learning_rate" in err and len(err.strip().splitlines()) == 1
    assert _checkpoint_steps(tmp_path / "run" / "train" / "ckpt") == []  # no NaN checkpoint kept


def test_weights_made_non_finite_by_an_update_are_never_checkpointed(tmp_path: Path, monkeypatch, capsys) -> None:
    # The loss checked is that of the weights before the step's update: an update that overflows (a finite
    # loss, an infinite gradient) was saved, and every resume started from it.
    import nas.train
    from nas.cli import main

    real = nas.train.train_step
    calls = []

    def poisoning(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        params, *rest = real(*args, **kwargs)
        calls.append(1)
        if len(calls) == 2:
            params = jax.tree.map(lambda a: a.at[(0,) * a.ndim].set(jnp.inf) if a.size else a, params)
        return (params, *rest)

    monkeypatch.setattr(nas.train, "train_step", poisoning)
    exp = write_tiny(tmp_path, steps=8, checkpoint_every=1)
    assert main(["train", str(exp), "--run-dir", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "training diverged: a weight is not a finite number after step 2" in err and len(err.splitlines()) == 1
    assert _checkpoint_steps(tmp_path / "run" / "train" / "ckpt") == [1]
    # A learning rate beyond float32 became inf inside the schedule.
    exp.write_text(exp.read_text().replace("[train]\n", "[train]\nlearning_rate = 1e39\n"))
    assert main(["validate", str(exp)]) == 2
    assert "train.learning_rate" in capsys.readouterr().err


def test_batches_see_every_example_once_per_epoch() -> None:
    # Drawn independently per step before: over two epochs' steps 10 % of a 1,150-example set went unseen.
    from nas.train import batch_indices

    n, batch = 1150, 128  # not a multiple: batches straddle epochs
    stream = np.concatenate([batch_indices(3, s, n, batch) for s in range(3 * n // batch + 1)])
    for epoch in range(3):
        assert sorted(stream[epoch * n:(epoch + 1) * n].tolist()) == list(range(n))
    assert not np.array_equal(stream[:n], stream[n:2 * n])  # each epoch shuffled anew
    assert np.array_equal(batch_indices(3, 17, n, batch), stream[17 * batch:18 * batch])  # a pure function of step
    assert sorted(batch_indices(3, 5, 10, 64).tolist()) == list(range(10))  # a batch beyond the data: all of it


def test_the_epoch_order_and_the_bit_width_draws_are_separate_streams() -> None:
    """Epoch k's data order and step k's bit-width draws were both seeded [seed, k, 3] (review)."""
    import numpy as np

    from nas.train import _epoch_order

    for k in range(3):
        bits_stream = np.random.default_rng([0, k, 3])
        assert not np.array_equal(_epoch_order(0, k, 50), bits_stream.permutation(50))
