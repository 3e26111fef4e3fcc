"""Every experiment file shipped under experiments/ validates, and each family has a CPU and a GPU-sized one."""

from __future__ import annotations

from pathlib import Path

import pytest

from nas.cli import main

EXPERIMENTS = sorted((Path(__file__).resolve().parents[1] / "experiments").glob("*.toml"))


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_shipped_experiment_validates(path: Path) -> None:
    assert main(["validate", str(path)]) == 0


def test_each_family_has_a_cpu_and_a_gpu_sized_experiment() -> None:
    from nas.config import load_experiment

    by_device: dict[str, set[str]] = {"cpu": set(), "gpu": set()}
    for path in EXPERIMENTS:
        exp = load_experiment(path)
        by_device[exp.measure.device].add(exp.model["family"])
    assert by_device["cpu"] == by_device["gpu"] == {"mlp", "cnn", "transformer"}
