"""Training cadence: checkpoints every `checkpoint_every` steps and always at the last step (a step count
that is not a multiple too), and channel sorting once, right after the last warm-up step."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from conftest import write_tiny
from nas.cli import main
from nas.config import TrainConfig
from nas.train import sort_due


def test_the_last_step_is_checkpointed_when_it_is_not_a_multiple_of_the_interval(tmp_path: Path,
                                                                                   capsys: pytest.CaptureFixture[str]
                                                                                   ) -> None:
    exp = write_tiny(tmp_path, steps=7, checkpoint_every=3)
    run = tmp_path / "run"
    assert main(["train", str(exp), "--run-dir", str(run), "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    logged = [json.loads(line)["step"] for line in (run / "train" / "log.jsonl").read_text().splitlines()]
    assert logged == [3, 6, 7]
    assert sorted(int(p.name) for p in (run / "train" / "ckpt").iterdir() if p.name.isdigit()) == [6, 7]
    assert summary["final_loss"] == json.loads((run / "train" / "log.jsonl").read_text().splitlines()[-1])["loss"]


def _sorting(warmup: int, every: int = 0) -> TrainConfig:
    base = TrainConfig(steps=50, batch_size=8, optimizer="adamw", learning_rate=1e-3, weight_decay=0.0,
                       warmup_steps=warmup, schedule="cosine", grad_clip=0.0, sandwich_random=2, distill=True,
                       distill_temperature=1.0, checkpoint_every=10)
    return dataclasses.replace(base, channel_sorting="l1", sort_every=every)


def test_channels_are_sorted_once_right_after_warm_up() -> None:
    assert [d for d in range(1, 50) if sort_due(_sorting(5), d)] == [5]
    assert [d for d in range(1, 50) if sort_due(_sorting(0), d)] == [1]  # no warm-up: after the first step
    assert [d for d in range(1, 50) if sort_due(_sorting(5, every=20), d)] == [20, 40]
    assert not any(sort_due(dataclasses.replace(_sorting(5), channel_sorting="none"), d) for d in range(1, 50))
