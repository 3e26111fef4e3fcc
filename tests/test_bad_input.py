"""Malformed experiments: every one must give exactly one `error: <key>...` line on stderr, exit
code 2, no traceback, and write nothing (no run directory, nothing anywhere under tmp_path).

Each case is the valid quickstart (experiments/quickstart.toml) with one mutation, written back
to TOML by the small serializer below. Most cases call `nas.cli.main` in-process; a few run the
real `python -m nas.cli` to check the exit code and the absence of a traceback from a process.
"""

from __future__ import annotations

import copy
import json
import math
import re
import subprocess
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import nas.pipeline
from nas.cli import main

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "experiments" / "quickstart.toml"


# -- a tiny TOML writer (str, int, float, bool, lists, tables, arrays of tables) -------------------
def _key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k)


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # JSON escapes (\n, \", \uXXXX) are valid TOML basic-string escapes
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {v!r} as TOML")


def _is_table_array(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


def to_toml(table: dict[str, Any], prefix: tuple[str, ...] = ()) -> str:
    """TOML text for `table`: plain keys first, then sub-tables, then arrays of tables."""
    lines = [f"{_key(k)} = {_value(v)}" for k, v in table.items()
             if not isinstance(v, dict) and not _is_table_array(v)]
    for k, v in table.items():
        if isinstance(v, dict):
            lines += ["", "[" + ".".join(_key(p) for p in prefix + (k,)) + "]", to_toml(v, prefix + (k,))]
    for k, v in table.items():
        if _is_table_array(v):
            for item in v:  # items are written flat; nested tables inside them become inline tables
                lines += ["", "[[" + ".".join(_key(p) for p in prefix + (k,)) + "]]"]
                lines += [f"{_key(ik)} = {_value(iv)}" for ik, iv in item.items()]
    return "\n".join(lines).strip("\n") + "\n"


def quickstart() -> dict[str, Any]:
    """A fresh copy of the valid quickstart experiment."""
    return copy.deepcopy(tomllib.loads(QUICKSTART.read_text()))


# -- npz fixtures written by the cases ---------------------------------------------------------
def _npz_arrays(n_train: int = 60, n_test: int = 20, features: int = 8) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "x_train": rng.random((n_train, features), dtype=np.float32),
        "y_train": (np.arange(n_train) % 3).astype(np.int64),
        "x_test": rng.random((n_test, features), dtype=np.float32),
        "y_test": (np.arange(n_test) % 3).astype(np.int64),
    }


def _use_npz(doc: dict, path: str) -> None:
    doc["data"]["dataset"] = "npz"
    doc["data"]["path"] = path


def npz_with(**changes: Any) -> Callable[[dict, Path], None]:
    """Mutation: dataset = "npz" pointing at a data.npz next to the experiment, arrays changed
    (a value of None drops that array)."""

    def mutate(doc: dict, folder: Path) -> None:
        arrays = _npz_arrays()
        for k, v in changes.items():
            if v is None:
                arrays.pop(k)
            else:
                arrays[k] = v
        np.savez(folder / "data.npz", **arrays)
        _use_npz(doc, "data.npz")

    return mutate


def npz_bytes(data: bytes) -> Callable[[dict, Path], None]:
    """Mutation: dataset = "npz" pointing at a file holding exactly `data`."""

    def mutate(doc: dict, folder: Path) -> None:
        (folder / "data.npz").write_bytes(data)
        _use_npz(doc, "data.npz")

    return mutate


def _damaged_compressed(doc: dict, folder: Path) -> None:
    """A compressed npz with bytes flipped inside a member's deflate stream (zlib, not zipfile, fails)."""
    np.savez_compressed(folder / "data.npz", **_npz_arrays(n_train=400))
    raw = bytearray((folder / "data.npz").read_bytes())
    start = raw.index(b"x_train.npy") + 40  # inside the deflate stream: "Error -3 while decompressing"
    raw[start:start + 8] = bytes(b ^ 0xFF for b in raw[start:start + 8])
    (folder / "data.npz").write_bytes(bytes(raw))
    _use_npz(doc, "data.npz")


def _zip_headers_changed(flag_bits: int = 0, method: int | None = None) -> Callable[[dict, Path], None]:
    """Mutation: an npz whose members' zip headers say encrypted (flag bit 0) or an unknown compression."""

    def mutate(doc: dict, folder: Path) -> None:
        np.savez(folder / "data.npz", **_npz_arrays())
        raw = bytearray((folder / "data.npz").read_bytes())
        for signature, flags_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # local and central headers
            i = raw.find(signature)
            while i >= 0:
                raw[i + flags_at] |= flag_bits
                if method is not None:
                    raw[i + flags_at + 2:i + flags_at + 4] = method.to_bytes(2, "little")
                i = raw.find(signature, i + 4)
        (folder / "data.npz").write_bytes(bytes(raw))
        _use_npz(doc, "data.npz")

    return mutate


def npy_as_npz(doc: dict, folder: Path) -> None:
    """A plain .npy array saved under the .npz name (np.load returns an array, not an archive)."""
    np.save(folder / "arr.npy", np.zeros((4, 3), np.float32))
    (folder / "data.npz").write_bytes((folder / "arr.npy").read_bytes())
    (folder / "arr.npy").unlink()
    _use_npz(doc, "data.npz")


def setting(path: str, value: Any) -> Callable[[dict, Path], None]:
    """Mutation: set the dotted `path` (list indices allowed, e.g. budgets.0.max) to `value`."""

    def mutate(doc: dict, folder: Path) -> None:
        *parents, last = path.split(".")
        node: Any = doc
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return mutate


def deleting(path: str) -> Callable[[dict, Path], None]:
    """Mutation: delete the dotted `path`."""

    def mutate(doc: dict, folder: Path) -> None:
        *parents, last = path.split(".")
        node: Any = doc
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        del node[int(last) if isinstance(node, list) else last]

    return mutate


def appending(path: str, value: Any) -> Callable[[dict, Path], None]:
    def mutate(doc: dict, folder: Path) -> None:
        doc[path].append(value)

    return mutate


@dataclass(frozen=True)
class Case:
    """One malformed experiment.

    `key` must start the message (`error: <key>`), or just appear in it when `anchored` is False;
    `detail` must also appear in the line when given. `command` is the subcommand run on it.
    """

    mutate: Callable[[dict, Path], None] | None
    key: str
    command: str = "validate"
    anchored: bool = True
    detail: str | None = None
    text: Callable[[str], str] | None = None  # edit the TOML text instead of (after) the dict
    missing_file: bool = False  # pass a path that does not exist


CASES: dict[str, Case] = {
    # top level
    "unknown_top_level_key": Case(setting("colour", "red"), "colour", "run", detail="unknown key"),
    "misspelled_required_key": Case(lambda d, _: d["train"].__setitem__("step", d["train"].pop("steps")),
                                    "train.steps", "validate", detail="is 'step' a misspelling of it?"),
    "name_with_slash": Case(setting("name", "../escape"), "name", "run"),
    "name_with_space": Case(setting("name", "quick start"), "name", "validate"),
    "name_trailing_newline": Case(setting("name", "quickstart\n"), "name", "validate"),
    "seed_string": Case(setting("seed", "0"), "seed", "train"),
    "seed_negative": Case(setting("seed", -1), "seed", "validate"),
    "seed_beyond_32_bits": Case(setting("seed", 2**32), "seed", "validate", detail="4294967295"),
    "search_seed_beyond_32_bits": Case(setting("search.seed", 2**40), "search.seed", "validate"),
    # [data]
    "data_not_a_table": Case(setting("data", "digits"), "data", "run"),
    "unknown_dataset": Case(setting("data.dataset", "mnist"), "data.dataset", "validate"),
    "val_fraction_half": Case(setting("data.val_fraction", 0.5), "data.val_fraction", "run"),
    "split_seed_negative": Case(setting("data.split_seed", -1), "data.split_seed", "validate"),
    # [model]
    "unknown_family": Case(setting("model.family", "resnet"), "model.family", "run", detail="resnet"),
    "unknown_model_key": Case(setting("model.dropout", 0.1), "model.dropout", "validate"),
    "max_width_bool": Case(setting("model.max_width", True), "model.max_width", "validate"),
    "missing_model_space": Case(deleting("model.space"), "model.space", "run", detail="missing"),
    "unknown_space_key": Case(setting("model.space.kernel", [3, 5]), "model.space.kernel", "validate"),
    "width_above_max_width": Case(setting("model.space.width", [16, 32, 256]), "model.space.width", "run",
                                  detail="256"),
    "depth_above_max_depth": Case(setting("model.space.depth", [1, 2, 3, 4]), "model.space.depth", "validate",
                                  detail="max_depth"),
    "max_depth_huge": Case(setting("model.max_depth", 10**6), "model.max_depth", "validate", detail="1,024"),
    "max_width_huge": Case(setting("model.max_width", 2**40), "model.max_width", "validate"),
    # Each width within its bound, their product not: it validated, then died out of memory.
    "parameters_beyond_memory": Case(lambda d, _: (d["model"].update(max_width=1_000_000),
                                                   d["model"]["space"].update(width=[16, 1_000_000])),
                                     "model", "validate", detail="2,000,053,000,010 parameters"),
    "space_array_of_tables": Case(None, "model.space", "validate", detail="got an array of tables [[model.space]]",
                                  text=lambda t: t.replace("[model.space]", "[[model.space]]")),
    # A key TOML must quote is quoted in the message (a newline in it cut the one line short).
    "unknown_key_with_newline": Case(setting("train.ste\nps", 3), 'train."ste\\nps"', "validate",
                                     detail="unknown key"),
    # `nas run` refuses a space too small to fit and score predictors on: so does validate (it said "ok").
    "one_subnet_space": Case(lambda d, _: d["model"]["space"].update(depth=[1], width=[16], bits=[8]),
                             "model.space", "validate", detail="1 subnet(s)"),
    "depth_zero": Case(setting("model.space.depth", [0, 1]), "model.space.depth", "validate"),
    "bits_16_unsupported": Case(setting("model.space.bits", [4, 8, 16]), "model.space.bits", "run", detail="16"),
    "bits_1_unsupported": Case(setting("model.space.bits", [1, 8]), "model.space.bits", "validate", detail="1"),
    "empty_width_list": Case(setting("model.space.width", []), "model.space.width", "validate", detail="empty"),
    "duplicate_depth_choices": Case(setting("model.space.depth", [1, 2, 2]), "model.space.depth", "run",
                                    detail="duplicate"),
    "width_float_choice": Case(setting("model.space.width", [16, 32.5]), "model.space.width", "validate"),
    "per_layer_widths_too_few": Case(setting("model.space.width", [[16, 32], [16, 32]]), "model.space.width",
                                     "run", detail="3"),
    "per_layer_widths_too_many": Case(setting("model.space.width", [[16]] * 4), "model.space.width", "validate"),
    "per_layer_width_empty_layer": Case(setting("model.space.width", [[16], [], [32]]), "model.space.width[1]",
                                        "validate"),
    "per_layer_bits_one_short": Case(setting("model.space.bits", [[8], [8], [8]]), "model.space.bits",
                                     "validate", detail="4"),
    # [train]
    "unknown_train_key": Case(setting("train.stepz", 10), "train.stepz", "run", detail="unknown key"),
    "missing_train_table": Case(deleting("train"), "train", "validate"),
    "train_steps_string": Case(setting("train.steps", "ten"), "train.steps", "run", detail="ten"),
    "train_steps_bool": Case(setting("train.steps", True), "train.steps", "validate"),
    "train_steps_beyond_32_bits": Case(setting("train.steps", 2**63 - 1), "train.steps", "validate"),
    "train_steps_float": Case(setting("train.steps", 2000.5), "train.steps", "validate"),
    "negative_learning_rate": Case(setting("train.learning_rate", -0.001), "train.learning_rate", "run"),
    "infinite_learning_rate": Case(setting("train.learning_rate", math.inf), "train.learning_rate", "validate"),
    "learning_rate_of_400_digits": Case(setting("train.learning_rate", 10**400), "train.learning_rate", "validate",
                                        detail="out of range"),
    "distill_alpha_under_kl": Case(setting("train.distill_alpha", [0.3]), "train.distill_alpha", "validate",
                                   detail='distill_loss = "alpha"'),
    "sandwich_random_of_a_hundred_million": Case(setting("train.sandwich_random", 10**8), "train.sandwich_random",
                                                 "validate"),
    "name_too_long_for_a_file": Case(setting("name", "n" * 300), "name", "validate", detail="100 characters"),
    "nested_too_deeply": Case(None, "", "validate", anchored=False, detail="nested too deeply",
                              text=lambda t: t + "x = " + "[" * 2000 + "]" * 2000 + "\n"),
    "warmup_equals_steps": Case(setting("train.warmup_steps", 2000), "train.warmup_steps", "run"),
    "warmup_above_steps": Case(setting("train.warmup_steps", 5000), "train.warmup_steps", "validate"),
    "unknown_optimizer": Case(setting("train.optimizer", "lion"), "train.optimizer", "validate"),
    "unknown_channel_sorting": Case(setting("train.channel_sorting", "xyz"), "train.channel_sorting", "validate",
                                    detail="xyz"),
    "negative_sort_every": Case(setting("train.sort_every", -1), "train.sort_every", "validate"),
    # [measure], [predictors], [search], [export]
    "measure_repeats_too_few": Case(setting("measure.repeats", 2), "measure.repeats", "measure"),
    "measure_samples_too_few": Case(setting("measure.samples", 1), "measure.samples", "validate",
                                    detail="4..1,000,000"),
    "measure_batch_absurd": Case(setting("measure.batch_size", 2**40), "measure.batch_size", "validate",
                                 detail="1..65,536"),
    "measure_eval_batch_zero": Case(setting("measure.eval_batch_size", 0), "measure.eval_batch_size", "validate",
                                    detail="1..65,536"),
    "measure_warmup_absurd": Case(setting("measure.warmup", 2**40), "measure.warmup", "validate", detail="1..1,000"),
    "unknown_predictor_kind": Case(setting("predictors.accuracy", "xgboost"), "predictors.accuracy", "run",
                                   detail="xgboost"),
    "search_workers_huge": Case(setting("search.workers", 10**6), "search.workers", "validate", detail="1..256"),
    "unknown_sampler": Case(setting("search.sampler", "grid"), "search.sampler", "search", detail="grid"),
    "export_plot_int": Case(setting("export.plot", 1), "export.plot", "export"),
    # objectives / budgets
    "objective_unknown_metric": Case(setting("objectives.1.metric", "throughput"), "objectives[1].metric", "run"),
    "objective_listed_twice": Case(appending("objectives", {"metric": "accuracy"}), "objectives", "validate",
                                   detail="twice"),
    "objective_bad_direction": Case(setting("objectives.0.direction", "up"), "objectives[0].direction", "validate"),
    "objectives_empty": Case(setting("objectives", []), "objectives", "run"),
    "budget_unknown_metric": Case(setting("budgets.0.metric", "energy_mj"), "budgets[0].metric", "run",
                                  detail="energy_mj"),
    "budget_max_and_min": Case(setting("budgets.0.min", 1.0), "budgets[0]", "validate", detail="exactly one"),
    "budget_neither_max_nor_min": Case(deleting("budgets.0.max"), "budgets[0]", "run", detail="exactly one"),
    "budget_max_string": Case(setting("budgets.0.max", "32"), "budgets[0].max", "validate"),
    "budget_max_nan": Case(setting("budgets.0.max", math.nan), "budgets[0].max", "validate"),
    "budget_misspelled_max": Case(lambda d, _: d["budgets"][0].__setitem__("mxa", d["budgets"][0].pop("max")),
                                  "budgets[0].mxa", "validate", detail="unknown key"),
    "space_too_small_to_fit": Case(lambda d, _: d["model"]["space"].update(depth=[1], width=[16], bits=[4]),
                                   "model.space", "run", detail="1 subnet(s)"),
    "budget_max_negative": Case(setting("budgets.0.max", -1.0), "budgets[0].max", "validate",
                                detail="never negative"),
    "budget_accuracy_percent": Case(appending("budgets", {"metric": "accuracy", "min": 60.0}),
                                    "budgets[1].min", "validate", detail="use 0.6"),
    # size_kb <= 32 first: a range no subnet can be in was trained and searched for, then said at the end.
    "budgets_leaving_no_value": Case(appending("budgets", {"metric": "size_kb", "min": 40.0}), "budgets[1].min",
                                     "validate", detail="leave no value"),
    "budgets_not_an_array": Case(setting("budgets", {"metric": "size_kb", "max": 32.0}), "budgets", "validate"),
    # data files
    "npz_path_missing_key": Case(setting("data.dataset", "npz"), "data.path", "run", detail="missing"),
    "path_without_npz": Case(setting("data.path", "data.npz"), "data.path", "validate",
                             detail='is read only with dataset = "npz"'),
    "npz_file_not_found": Case(lambda d, f: _use_npz(d, "no_such_data.npz"), "data.path", "run",
                               detail="no_such_data.npz"),
    "npz_lacks_y_test": Case(npz_with(y_test=None), "data.path", "run", detail="y_test"),
    "npz_corrupt_bytes": Case(npz_bytes(np.random.default_rng(1).bytes(4096)), "data.path", "validate"),
    "npz_truncated_zip": Case(npz_bytes(b"PK\x03\x04" + bytes(200)), "data.path", "run"),
    "npz_empty_file": Case(npz_bytes(b""), "data.path", "validate"),
    "npz_is_plain_npy": Case(npy_as_npz, "data.path", "validate"),
    "npz_float_labels": Case(npz_with(y_train=np.linspace(0, 2, 60)), "data.path", "validate", detail="y_train"),
    "npz_mismatched_lengths": Case(npz_with(y_test=np.zeros(7, np.int64)), "data.path", "validate",
                                   detail="x_test"),
    "npz_channels_first": Case(npz_with(x_train=np.zeros((60, 3, 8, 8), np.float32),
                                        x_test=np.zeros((20, 3, 8, 8), np.float32)), "data.path", "validate",
                               detail="transpose(0, 2, 3, 1)"),
    "npz_nan_features": Case(npz_with(x_train=np.where(np.eye(60, 8) > 0, np.nan, 0.0)), "data.path", "validate",
                             detail="NaN"),
    "npz_features_beyond_float32": Case(npz_with(x_test=np.full((20, 8), 1e39)), "data.path", "validate",
                                        detail="x_test"),
    "npz_string_features": Case(npz_with(x_train=np.full((60, 8), "a")), "data.path", "validate", detail="dtype"),
    "npz_complex_features": Case(npz_with(x_train=np.ones((60, 8), np.complex64)), "data.path", "validate",
                                 detail="dtype"),
    # Labels the class count (largest + 1) misreads, and label arrays in another usual form (review).
    "npz_one_based_labels": Case(npz_with(y_train=np.arange(60) % 3 + 1, y_test=np.arange(20) % 3 + 1), "data.path",
                                 "validate", detail="class 0 has no example in y_train"),
    "npz_class_only_in_test": Case(npz_with(y_test=np.arange(20) % 4), "data.path", "validate",
                                   detail="class 3 is in y_test but not in y_train"),
    "npz_whole_float_labels": Case(npz_with(y_train=(np.arange(60) % 3).astype(np.float64)), "data.path",
                                   "validate", detail="astype(np.int64)"),
    "npz_one_hot_labels": Case(npz_with(y_train=np.eye(3, dtype=np.int64)[np.arange(60) % 3]), "data.path",
                               "validate", detail="one-hot labels? store y.argmax(axis=1)"),
    "npz_label_beyond_classes": Case(npz_with(y_train=np.full(60, 2**40)), "data.path", "validate", detail="label"),
    "npz_one_class": Case(npz_with(y_train=np.zeros(60, np.int64), y_test=np.zeros(20, np.int64)), "data.path",
                          "validate", detail="one class"),
    "npz_one_class_in_training": Case(npz_with(y_train=np.zeros(60, np.int64)), "data.path", "validate",
                                      detail="y_train holds one class only"),
    "npz_garbage_named_npz": Case(npz_bytes(b"hello world"), "data.path", "validate", detail="not an .npz file"),
    "npz_damaged_compressed_member": Case(_damaged_compressed, "data.path", "validate", detail="decompressing"),
    "npz_offset_beyond_float32": Case(npz_with(x_train=1e8 + np.random.default_rng(0).normal(0, 0.2, (60, 8)),
                                               x_test=1e8 + np.random.default_rng(1).normal(0, 0.2, (20, 8))),
                                      "data", "validate", detail="lose their variation as float32"),
    "npz_encrypted_members": Case(_zip_headers_changed(flag_bits=1), "data.path", "validate", detail="encrypted"),
    "npz_unknown_compression": Case(_zip_headers_changed(method=99), "data.path", "validate",
                                    detail="compression method"),
    "npz_float32_range_overflows": Case(
        npz_with(x_train=np.where(np.random.default_rng(2).random((60, 8)) < 0.5, -3e38, 3e38).astype(np.float32)),
        "data", "validate", detail="overflow float32"),
    "samples_too_few_for_the_holdout": Case(lambda d, _: (d["measure"].update(samples=4),
                                                          d.setdefault("predictors", {}).update(holdout=0.45)),
                                            "measure.samples", "validate", detail="samples >= 5"),
    "distill_setting_without_distill": Case(lambda d, _: d["train"].update(distill=False, distill_temperature=2.0),
                                            "train.distill_temperature", "validate", detail="distill = true"),
    "sort_every_without_sorting": Case(setting("train.sort_every", 5), "train.sort_every", "validate",
                                       detail="channel_sorting"),
    "population_size_huge": Case(setting("search.population_size", 10**12), "search.population_size", "validate"),
    "compile_cache_with_nul": Case(setting("measure.compile_cache", "cache\0dir"), "measure.compile_cache",
                                   "validate", detail="NUL"),
    "integer_too_long_for_python": Case(None, "experiment.toml", "validate", anchored=False, detail="not valid TOML",
                                        text=lambda t: t.replace("seed = 0", "seed = 1" + "0" * 5000, 1)),
    "npz_zero_features": Case(npz_with(x_train=np.zeros((60, 0), np.float32), x_test=np.zeros((20, 0), np.float32)),
                              "data.path", "validate"),
    # the file itself
    "invalid_toml_syntax": Case(None, "experiment.toml", "run", anchored=False, detail="not valid TOML",
                                text=lambda t: t + "\n[train\nsteps = 3\n"),
    "toml_not_utf8": Case(None, "experiment.toml", "validate", anchored=False, detail="not valid TOML",
                          text=lambda t: t.replace('"quickstart"', '"quick\udcffstart"')),
    "experiment_file_missing": Case(None, "experiment.toml", "run", anchored=False, detail="not found",
                                    missing_file=True),
}

# Run as real processes too (the other cases call `main` in-process).
def _deep_unreachable_supernet(doc: dict, _: Path) -> None:
    """1,024 layers of 16,384 built (the [model] maxima) though the space only ever uses one."""
    doc["model"].update({"max_depth": 1024, "max_width": 16384})
    doc["model"]["space"].update({"depth": [1], "width": [16384]})


# Only the largest subnet was bounded: this passed `nas validate`, then `nas run` wrote the run folder and
# died allocating 2.7e11 parameters (a 1 TiB supernet).
CASES["supernet_of_a_terabyte"] = Case(_deep_unreachable_supernet, "model", "run",
                                       detail="the supernet has 274,627,068,939 parameters")
def _alpha_beyond_float32(doc: dict, _: Path) -> None:
    doc["train"].update({"distill_loss": "alpha", "distill_alpha": [1e39]})


# Float settings training computes with in float32: accepted beyond its range, then "training diverged:
# lower train.learning_rate" (review); the learning rate itself was already bounded.
CASES.update({
    "weight_decay_beyond_float32": Case(setting("train.weight_decay", 1e300), "train.weight_decay", "validate",
                                        detail="float32"),
    "grad_clip_beyond_float32": Case(setting("train.grad_clip", 1e300), "train.grad_clip", "validate",
                                     detail="float32"),
    "distill_temperature_zero_in_float32": Case(setting("train.distill_temperature", 1e-300),
                                                "train.distill_temperature", "validate", detail="float32"),
    "distill_alpha_beyond_float32": Case(_alpha_beyond_float32, "train.distill_alpha", "validate",
                                         detail="float32"),
})
def _renamed(old: str, new: str) -> Callable[[dict, Path], None]:
    def mutate(doc: dict, _: Path) -> None:
        doc[new] = doc.pop(old)

    return mutate


# A misspelled section showed as a symptom of its absence: `[measurement]` in an experiment whose objectives
# name a latency target [measure] defines said "objectives[2].metric ... is invalid"; `[tarin]` said only
# "train: missing table" (review).
CASES.update({
    "misspelled_optional_section": Case(_renamed("measure", "measurment"), "measurment", "validate",
                                        detail="unknown key (a misspelling of 'measure'?)"),
    "misspelled_required_section": Case(_renamed("train", "tarin"), "tarin", "validate",
                                        detail="unknown key (a misspelling of 'train'?)"),
    "misspelled_key_in_a_section": Case(setting("train.stepz", 10), "train.stepz", "validate",
                                        detail="unknown key (a misspelling of 'steps'?)"),
})
# A width of 400 digits was echoed in full (about 530 characters with separators).
CASES["width_of_400_digits"] = Case(setting("model.max_width", 10**400), "model.max_width", "validate",
                                    detail="about 10^400 is more than this project supports")
CASES["integer_of_5000_digits"] = Case(None, "experiment.toml", "validate", anchored=False,
                                      detail="not valid TOML (an integer of more than 4,300 digits)",
                                      text=lambda t: t.replace("steps = 2000", "steps = 1" + "0" * 5000, 1))
# Integer counts of 400 digits: math.isfinite() raised OverflowError on them (a traceback, exit 1).
CASES.update({f"{key}_of_400_digits": Case(setting(key, 10**400), key, "validate",
                                           detail="about 10^400" if key == "train.warmup_steps" else
                                           "an integer of 1329 bits")
              for key in ("train.batch_size", "train.warmup_steps", "train.checkpoint_every", "measure.repeats",
                          "measure.calibration_samples", "measure.eval_batch_size", "search.trials", "search.rounds",
                          "export.max_models")})

SUBPROCESS_CASES = ["unknown_top_level_key", "npz_lacks_y_test", "invalid_toml_syntax", "unknown_channel_sorting"]


def _tree(root: Path) -> dict[str, int]:
    """Every path under `root` with its size (-1 for folders), to see whether anything was written."""
    return {str(p.relative_to(root)): (p.stat().st_size if p.is_file() else -1) for p in sorted(root.rglob("*"))}


def _write_case(case: Case, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "experiment.toml"
    if case.missing_file:
        return path
    doc = quickstart()
    if case.mutate is not None:
        case.mutate(doc, folder)
    text = to_toml(doc)
    assert case.mutate is None or text != to_toml(quickstart()), "the mutation changed nothing"
    if case.text is not None:
        text = case.text(text)
        path.write_bytes(text.encode("utf-8", "surrogateescape"))
    else:
        path.write_text(text)
    return path


def _argv(case: Case, path: Path, runs_root: Path) -> list[str]:
    if case.command == "validate":
        return ["validate", str(path)]
    return [case.command, str(path), "--runs-root", str(runs_root), "--quiet"]


def _check(case: Case, rc: Any, out: str, err: str, before: dict, tmp_path: Path, runs_root: Path) -> None:
    assert "Traceback" not in out + err, err
    assert rc == 2, f"exit code {rc!r} (expected 2); stdout={out!r} stderr={err!r}"
    lines = err.splitlines()
    assert len(lines) == 1 and err.endswith("\n"), f"expected exactly one stderr line, got {err!r}"
    line = lines[0]
    assert line.startswith("error: ") and line[len("error: "):].strip(), line
    if case.anchored:
        assert line.startswith(f"error: {case.key}"), f"{line!r} does not name {case.key!r} first"
    else:
        assert case.key in line, f"{line!r} does not name {case.key!r}"
    if case.detail is not None:
        assert case.detail in line, f"{line!r} does not mention {case.detail!r}"
    assert out == "", f"nothing should go to stdout on error, got {out!r}"
    assert not runs_root.exists() or not any(runs_root.iterdir()), f"written under --runs-root: {_tree(runs_root)}"
    assert _tree(tmp_path) == before, "files were written or changed under tmp_path"


@pytest.fixture
def no_stages(monkeypatch: pytest.MonkeyPatch) -> None:
    """If a malformed experiment slips through validation, fail at once instead of training."""

    def stage_function(stage: str) -> Callable[..., Any]:
        pytest.fail(f"the experiment passed validation: stage {stage!r} was about to run")

    monkeypatch.setattr(nas.pipeline, "stage_function", stage_function)


# -- sanity: the harness accepts valid input, so the cases below fail only for their mutation -----
def test_writer_round_trips_quickstart() -> None:
    doc = quickstart()
    assert tomllib.loads(to_toml(doc)) == doc
    odd = {"s": 'a"b\\c\nd é', "f": [math.inf, -0.5, 1e-20], "n": [[1, 2], []], "t": {"k": True, "x y": 1}}
    assert tomllib.loads(to_toml(odd)) == odd


@pytest.mark.parametrize("data", ["as shipped", "npz"])
def test_unmutated_quickstart_validates(data: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = quickstart()
    if data == "npz":
        np.savez(tmp_path / "data.npz", **_npz_arrays())
        _use_npz(doc, "data.npz")
    path = tmp_path / "experiment.toml"
    path.write_text(to_toml(doc))
    rc = main(["validate", str(path)])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert err == "" and "ok" in out and "'quickstart'" in out
    shape = "8x1, 3 classes" if data == "npz" else "40x1, 10 classes"  # as shipped: MNIST-1D
    assert f"input {shape}, " in out, out


def test_validate_shows_the_input_as_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # An image npz in PyTorch's (N, C, H, W) layout is read as a C-high image: validate now shows it (review).
    doc = quickstart()
    arrays = _npz_arrays()
    arrays["x_train"], arrays["x_test"] = (np.zeros((n, 1, 4, 2), np.float32) + np.arange(8).reshape(1, 1, 4, 2)
                                           for n in (60, 20))
    np.savez(tmp_path / "data.npz", **arrays)
    _use_npz(doc, "data.npz")
    (tmp_path / "experiment.toml").write_text(to_toml(doc))
    assert main(["validate", str(tmp_path / "experiment.toml")]) == 0
    assert "input 1x4x2, 3 classes" in capsys.readouterr().out


# -- the malformed cases -------------------------------------------------------------------------
@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_bad_experiment_in_process(case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch, no_stages: None) -> None:
    path = _write_case(case, tmp_path / "case")
    runs_root = tmp_path / "runs"
    work = tmp_path / "cwd"  # default "runs" (and relative data paths) resolve here, not in the repo
    work.mkdir()
    monkeypatch.chdir(work)
    before = _tree(tmp_path)
    try:
        rc = main(_argv(case, path, runs_root))
    except SystemExit as e:  # argparse; not expected for these argv
        rc = e.code
    except Exception as e:  # noqa: BLE001 - the CLI would have printed a traceback
        pytest.fail(f"uncaught {type(e).__name__}: {e} (the CLI would print a traceback and exit 1)")
    out, err = capsys.readouterr()
    _check(case, rc, out, err, before, tmp_path, runs_root)


@pytest.mark.parametrize("name", SUBPROCESS_CASES)
def test_bad_experiment_subprocess(name: str, tmp_path: Path) -> None:
    case = CASES[name]
    path = _write_case(case, tmp_path / "case")
    runs_root = tmp_path / "runs"
    before = _tree(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "nas.cli", *_argv(case, path, runs_root)], check=False,
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    _check(case, proc.returncode, proc.stdout, proc.stderr, before, tmp_path, runs_root)


def test_experiment_path_that_is_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "is a folder, not a TOML file" in err and err.count("\n") == 1
    (tmp_path / "experiment.toml").write_text("")  # a run directory given where its experiment goes
    assert main(["export", str(tmp_path)]) == 2
    assert f"(a run directory? its experiment is '{tmp_path / 'experiment.toml'}')" in capsys.readouterr().err


def test_large_finite_features_are_standardised_not_zeroed(tmp_path: Path) -> None:
    from nas.config import DataConfig
    from nas.data import load_data

    arrays = _npz_arrays()
    arrays["x_train"], arrays["x_test"] = arrays["x_train"] * 1e20, arrays["x_test"] * 1e20  # float32 std: inf
    np.savez(tmp_path / "big.npz", **arrays)
    splits = load_data(DataConfig(dataset="npz", path=tmp_path / "big.npz", val_fraction=0.2, test_fraction=0.2,
                                  normalize="standardize", split_seed=0))
    assert np.allclose(splits.x_train.std(axis=0), 1, atol=1e-3) and np.isfinite(splits.x_test).all()


def test_minmax_scales_a_column_constant_in_training_like_the_others(tmp_path: Path) -> None:
    # A pixel never set in the training split kept scale 1, so test images that set it reached 255, not 1.
    from nas.config import DataConfig
    from nas.data import load_data

    rng = np.random.default_rng(0)
    x_train, x_test = (rng.integers(0, 256, (n, 4)).astype(np.float32) for n in (200, 50))
    x_train[:, 0], x_test[:5, 0] = 0, 255
    np.savez(tmp_path / "d.npz", x_train=x_train, y_train=np.arange(200) % 3, x_test=x_test, y_test=np.arange(50) % 3)
    splits = load_data(DataConfig(dataset="npz", path=tmp_path / "d.npz", val_fraction=0.2, test_fraction=0.2,
                                  normalize="minmax", split_seed=0))
    assert np.all(splits.scale == splits.scale[1]) and splits.scale[1] > 200
    assert splits.x_test.max() <= 1.0 + 1e-6 and splits.x_train[:, 0].max() == 0


@pytest.mark.parametrize("case", ["constant_float64_column", "near_constant_float32", "large_values_unnormalised"])
def test_ordinary_data_passes_the_float32_check(tmp_path: Path, case: str) -> None:
    from nas.config import DataConfig
    from nas.data import load_data

    rng = np.random.default_rng(0)
    normalize = "standardize"
    if case == "constant_float64_column":  # its float64 mean is not exactly 0.1: no "std" of 1e-17 to blow up
        x = np.c_[rng.normal(size=(200, 4)), np.full(200, 0.1)]
    elif case == "near_constant_float32":  # float32 already: nothing is rounded, whatever the spread
        x = np.c_[rng.normal(size=(200, 3)), 1000 + 6e-5 * rng.integers(0, 8, (200, 1))].astype(np.float32)
    else:  # 1e5-2e5 without normalisation: float32's relative precision, not an absolute 1e-3
        x, normalize = rng.uniform(1e5, 2e5, (200, 4)), "none"
    np.savez(tmp_path / "d.npz", x_train=x, y_train=np.arange(200) % 3, x_test=x[:20], y_test=np.arange(20) % 3)
    splits = load_data(DataConfig(dataset="npz", path=tmp_path / "d.npz", val_fraction=0.2, test_fraction=0.2,
                                  normalize=normalize, split_seed=0))
    assert np.isfinite(splits.x_train).all() and splits.x_train.dtype == np.float32


def test_a_space_too_large_to_print_is_counted_by_its_power_of_ten() -> None:
    # `nas validate` printed the size with f"{n:,}", a ValueError past Python's 4,300-digit limit.
    from nas.errors import count_text

    assert count_text(33680) == "33,680"
    assert count_text(10**5000) == "about 10^5000"


def test_a_byte_order_mark_is_not_a_syntax_error(tmp_path: Path, capsys) -> None:
    # Windows editors start UTF-8 files with one; tomllib called it "Invalid statement (at line 1, column 1)".
    path = tmp_path / "bom.toml"
    path.write_text("\ufeff" + (REPO / "experiments" / "quickstart.toml").read_text(), encoding="utf-8")
    assert main(["validate", str(path)]) == 0, capsys.readouterr().err


def test_an_experiment_read_from_a_pipe() -> None:
    """`nas validate /dev/stdin` (or `<(...)`): a pipe is no regular file, and was "not found"."""
    from conftest import REPO

    text = (REPO / "experiments" / "quickstart.toml").read_text()
    done = subprocess.run([sys.executable, "-m", "nas.cli", "validate", "/dev/stdin"], input=text, text=True,
                          capture_output=True, cwd=REPO, timeout=120)
    assert done.returncode == 0 and "ok — experiment 'quickstart'" in done.stdout, done.stderr


def test_the_one_based_hint_is_not_given_when_class_0_is_in_the_test_set(tmp_path: Path) -> None:
    # Subtracting 1 would make such a y_test negative.
    from nas.config import DataConfig
    from nas.data import load_data
    from nas.errors import DataError

    arrays = _npz_arrays()
    arrays["y_train"] = arrays["y_train"] + 1
    np.savez(tmp_path / "d.npz", **arrays)  # y_test keeps 0..2
    with pytest.raises(DataError, match="class 0 is in y_test but not in y_train") as err:
        load_data(DataConfig(dataset="npz", path=tmp_path / "d.npz", val_fraction=0.2, test_fraction=0.2,
                             normalize="standardize", split_seed=0))
    assert "subtract" not in str(err.value)
