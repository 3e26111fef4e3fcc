"""A step folder without its data, splits rounded to nothing, a batch of few examples over devices."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from conftest import REPO, write_tiny
from nas.checkpoint import CheckpointStore
from nas.context import prepare
from nas.errors import CheckpointError
from nas.train import init_state


def _params(experiment: Path, run_dir: Path) -> tuple[int, list[np.ndarray]]:
    """(step, parameter leaves) of the newest checkpoint of `run_dir`'s train stage."""
    _, params, _, opt_state, _ = init_state(prepare(experiment, run_dir=run_dir))
    step, state = CheckpointStore(run_dir / "train" / "ckpt").restore_latest({"params": params, "opt_state": opt_state})
    return step, [np.asarray(leaf) for leaf in jax.tree.leaves(state["params"])]


def test_a_step_without_its_data_folder_is_named_and_the_one_before_restores(tmp_path: Path) -> None:
    # Orbax took such a step for a multi-item checkpoint and, from then on, every good one before it too.
    tree = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(3, np.float32)}
    store = CheckpointStore(tmp_path / "ckpt")
    store.save(1, tree)
    store.save(2, jax.tree.map(lambda a: a + 1, tree))
    store.wait()
    shutil.rmtree(tmp_path / "ckpt" / "2" / "default")
    with pytest.raises(CheckpointError, match=r"ckpt/2 is unreadable or corrupt: its data folder 'default' is "
                                              r"missing; redo it"):
        CheckpointStore(tmp_path / "ckpt").restore_latest(tree, redo="redo it")
    store = CheckpointStore(tmp_path / "ckpt")
    step, restored = store.restore_latest(tree, fallback=True)
    assert step == 1 and all(np.array_equal(restored[k], tree[k]) for k in tree)
    assert [p.name.split(".")[0] for p in (tmp_path / "ckpt.unreadable").iterdir()] == ["2"]
    store.save(2, jax.tree.map(lambda a: a * 3, tree))  # what a resumed run does next, through the same store
    store.wait()
    step, restored = CheckpointStore(tmp_path / "ckpt").restore_latest(tree)
    assert step == 2 and np.array_equal(restored["w"], tree["w"] * 3)


def test_a_checkpoint_whose_bytes_changed_is_refused_not_loaded(tmp_path: Path) -> None:
    # Orbax checks nothing: one flipped byte in 20 of a step's data files loaded with other weights, silently.
    tree = {"w": np.arange(600, dtype=np.float32).reshape(20, 30), "b": np.ones(30, np.float32)}
    store = CheckpointStore(tmp_path / "ckpt", keep=2)
    for step in (1, 2, 3):  # max_to_keep drops step 1, and its digests with it
        store.save(step, jax.tree.map(lambda a, k=step: a * k, tree))
    assert sorted(p.name for p in (tmp_path / "ckpt.sha256").iterdir()) == ["2.json", "3.json"]
    data = max((p for p in (tmp_path / "ckpt" / "3").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0x10
    data.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=r"ckpt/3 is unreadable or corrupt: .* differs from when it was saved"):
        CheckpointStore(tmp_path / "ckpt").restore_latest(tree)
    step, restored = CheckpointStore(tmp_path / "ckpt").restore_latest(tree, fallback=True)
    assert step == 2 and np.array_equal(restored["w"], tree["w"] * 2)
    (tmp_path / "ckpt.sha256" / "2.json").unlink()  # written before digests were kept: restored as it is
    assert CheckpointStore(tmp_path / "ckpt").restore_latest(tree)[0] == 2


def test_a_resume_falls_back_past_a_step_without_its_data_folder(tmp_path: Path, capsys) -> None:
    """Killed before its stamp with the newest step's data gone: it resumes from the step before and ends
    with the weights of the uninterrupted run, bit for bit (it stopped with an error about the good one)."""
    from nas.cli import main

    exp = write_tiny(tmp_path, steps=20, checkpoint_every=10)
    run = tmp_path / "run"
    assert main(["train", str(exp), "--run-dir", str(run), "--quiet"]) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    step, uninterrupted = _params(exp, run)
    assert step == 20
    (run / "train" / "stamp.json").unlink()
    shutil.rmtree(run / "train" / "ckpt" / "20" / "default")
    assert main(["train", str(exp), "--run-dir", str(run), "--quiet"]) == 0
    out, err = capsys.readouterr()
    resumed = json.loads(out.strip().splitlines()[-1])
    assert (f"checkpoint {run.absolute() / 'train' / 'ckpt'}/20 is unreadable or corrupt (its data folder "
            "'default' is missing)") in err and "resuming from step 10" in err
    assert len(list((run / "train" / "ckpt.unreadable").iterdir())) == 1
    assert resumed["resumed_from"] == 10 and resumed["final_loss"] == first["final_loss"]
    # Step 20 trained twice is logged once (the first run's row is the corrupt checkpoint's).
    assert [json.loads(line)["step"] for line in (run / "train" / "log.jsonl").read_text().splitlines()] == [10, 20]
    step, again = _params(exp, run)
    assert step == 20 and len(again) == len(uninterrupted)
    for a, b in zip(again, uninterrupted):
        np.testing.assert_array_equal(a, b)
    # The folder the moved checkpoint is in is not the stage's output: deleting it, as the note invites,
    # left a listed output missing, and the next command trained (and stamped, so re-ran every later stage).
    stamp = json.loads((run / "train" / "stamp.json").read_text())
    assert not [o for o in stamp["outputs"] if "unreadable" in o], stamp["outputs"]
    shutil.rmtree(run / "train" / "ckpt.unreadable")
    assert main(["train", str(exp), "--run-dir", str(run), "--quiet"]) == 0
    assert json.loads((run / "train" / "stamp.json").read_text())["id"] == stamp["id"]


@pytest.mark.parametrize("after_save", [False, True], ids=["before_its_save", "after_its_save"])
def test_killed_around_its_last_save_it_reports_the_same_loss(tmp_path: Path, capsys, monkeypatch,
                                                              after_save: bool) -> None:
    # The checkpoint was saved before its log row: a kill between the two left a resume with nothing to
    # train reporting the loss of an earlier step (or null), and a stamp that differed from the run's.
    from nas.cli import main

    exp = write_tiny(tmp_path, steps=20, checkpoint_every=10)
    assert main(["train", str(exp), "--run-dir", str(tmp_path / "whole"), "--quiet"]) == 0
    whole = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    real = CheckpointStore.save

    def killed_at_20(self, step, tree):  # noqa: ANN001, ANN202
        if step == 20 and after_save:
            real(self, step, tree)
        if step == 20:
            raise KeyboardInterrupt
        real(self, step, tree)

    monkeypatch.setattr(CheckpointStore, "save", killed_at_20)
    run = tmp_path / "run"
    assert main(["train", str(exp), "--run-dir", str(run), "--quiet"]) == 130
    monkeypatch.setattr(CheckpointStore, "save", real)
    assert main(["train", str(exp), "--run-dir", str(run), "--quiet"]) == 0
    resumed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert resumed["resumed_from"] == (20 if after_save else 10) and resumed["final_loss"] == whole["final_loss"]
    assert [json.loads(line)["step"] for line in (run / "train" / "log.jsonl").read_text().splitlines()] == [10, 20]


def test_a_checkpoint_that_cannot_be_written_is_one_line(tmp_path: Path, capsys, monkeypatch) -> None:
    # A full disk is TensorStore's ValueError (RESOURCE_EXHAUSTED), not an OSError: a traceback of
    # hundreds of lines, exit 1, where the README promises one line and exit 2.
    import orbax.checkpoint as ocp

    from nas.cli import main

    def full(self, step, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        raise ValueError("RESOURCE_EXHAUSTED: [Errno 28] No space left on device {\"driver\": \"zarr\"}")

    monkeypatch.setattr(ocp.CheckpointManager, "save", full)
    exp = write_tiny(tmp_path, steps=20, checkpoint_every=10)
    assert main(["train", str(exp), "--run-dir", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "could not be written" in err and "No space left on device" in err, err


@pytest.mark.parametrize(("setting", "detail"), [
    ("test_fraction = 0.0002", "data.test_fraction: 0.0002 of the 1797 digits examples is 0.36, which rounds to "
                               "an empty test split"),
    ("val_fraction = 0.0002", "data.val_fraction: 0.0002 of the 1438 examples left for training and validation "
                              "(of 1797 in all) leaves an empty validation split"),
], ids=["test_fraction", "val_fraction"])
def test_a_fraction_that_rounds_to_an_empty_split_is_one_line(tmp_path: Path, capsys, setting: str,
                                                              detail: str) -> None:
    # An empty test split was a traceback (a max over no labels); an empty validation split said "too few
    # examples (1797)" without naming the setting.
    from nas.cli import main

    exp = write_tiny(tmp_path)
    exp.write_text(exp.read_text().replace('dataset = "digits"', f'dataset = "digits"\n{setting}'))
    assert main(["validate", str(exp)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(f"error: {detail}") and err.count("\n") == 1, err


def test_a_batch_of_all_the_few_examples_that_does_not_split_over_devices_trains_on_one(tmp_path: Path) -> None:
    # train.batch_size 64 splits over 2 devices, but 49 training examples make every batch 49: the check
    # passed and jax failed putting the batch on the devices.
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "data.npz", x_train=rng.random((61, 8), dtype=np.float32), y_train=np.arange(61) % 3,
             x_test=rng.random((20, 8), dtype=np.float32), y_test=np.arange(20) % 3)
    exp = write_tiny(tmp_path, steps=8, checkpoint_every=8)
    exp.write_text(exp.read_text().replace('dataset = "digits"', f'dataset = "npz"\npath = "{tmp_path / "data.npz"}"'))
    assert "batch_size = 64" in exp.read_text()  # 61 examples, 12 of them for validation: 49 to train on
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2 --xla_cpu_multi_thread_eigen=false",
           "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "nas.cli", "train", str(exp), "--run-dir", str(tmp_path / "run"),
                           "--quiet"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert ("note: training on one device: a batch of 49 (all 49 training examples, fewer than train.batch_size "
            "64) does not split evenly over 2 devices") in proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["devices"] == 1


def test_after_a_fallback_stderr_still_carries_the_progress_bars_redraws() -> None:
    import io
    import threading

    from rich.live import _RefreshThread

    from nas.checkpoint import _MainThreadOnly

    # Past a corrupt checkpoint, stderr keeps only the main thread's writes (orbax's threads print
    # pages of noise); rich's refresh thread was dropped too, and every later bar froze.
    sink = io.StringIO()
    stream = _MainThreadOnly(sink)

    class Noise(threading.Thread):
        def run(self) -> None:
            stream.write("orbax noise\n")

    class Bar(_RefreshThread):
        def __init__(self) -> None:
            threading.Thread.__init__(self, daemon=True)

        def run(self) -> None:
            stream.write("bar 3/10\n")

    for thread in (Noise(), Bar()):
        thread.start()
        thread.join()
    stream.write("main\n")
    assert sink.getvalue() == "bar 3/10\nmain\n"


def test_ctrl_c_during_a_save_lets_orbax_finish_it_before_the_interrupt_goes_on(tmp_path: Path, monkeypatch) -> None:
    # Left running into the interpreter's shutdown, orbax's commit thread printed a traceback after the
    # "interrupted" line and left <step>.orbax-checkpoint-tmp behind (review).
    tree = {"w": np.arange(6, dtype=np.float32)}
    store = CheckpointStore(tmp_path / "ckpt")
    events = []
    real_save, real_wait = store._manager.save, store._manager.wait_until_finished

    def save_then_interrupted(*args, **kwargs):
        real_save(*args, **kwargs)
        events.append("interrupt")
        raise KeyboardInterrupt  # as if Ctrl-C came while orbax's threads still commit the step

    def wait() -> None:
        events.append("wait")
        real_wait()

    monkeypatch.setattr(store._manager, "save", save_then_interrupted)
    monkeypatch.setattr(store._manager, "wait_until_finished", wait)
    with pytest.raises(KeyboardInterrupt):
        store.save(1, tree)
    assert events[-2:] == ["interrupt", "wait"]  # waited for orbax before the interrupt went on
    assert not list((tmp_path / "ckpt").glob("*orbax-checkpoint-tmp*"))
    step, restored = CheckpointStore(tmp_path / "ckpt").restore_latest(tree)
    assert step == 1 and np.array_equal(restored["w"], tree["w"])
