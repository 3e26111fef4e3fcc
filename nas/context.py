"""Everything a stage needs: the validated experiment, its family and space, and the run directory."""

from __future__ import annotations

import contextlib
import hashlib
import json
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

from nas.config import Experiment, load_experiment
from nas.data import data_shape
from nas.errors import ConfigError
from nas.io import file_digest, read_json, remove_path, write_bytes, write_json
from search_spaces import SearchSpace
from supernets import get_family

# Which experiment sections each stage depends on (besides the stage before it).
STAGES = ("train", "measure", "fit", "search", "export")
STAGE_INPUTS = {
    "train": ("seed", "data", "model", "train"),
    "measure": ("measure",),
    "fit": ("predictors",),
    "search": ("search", "objectives", "budgets"),
    "export": ("export",),
}
# Settings that change how a stage works but not what it produces: a new value keeps its outputs current.
NOT_INPUTS = {"train": ("checkpoint_every",), "measure": ("compile_cache",), "search": ("workers",)}
# Files in a stage's folder that are not its outputs: a stamp need not vouch for them.
_BOOKKEEPING = ("stamp.json", "fingerprint.txt")
_STAMP_KEYS = ("fingerprint", "id", "after", "outputs")  # what mark_done adds to a stage's summary


def _defaults(section: Any, names: tuple[str, ...]) -> dict[str, Any]:
    """The dataclass defaults of `names` in a config section (those that have one)."""
    from dataclasses import MISSING, fields

    return {f.name: f.default for f in fields(section) if f.name in names and f.default is not MISSING}


@dataclass(frozen=True)
class Context:
    """A validated experiment bound to its run directory."""

    exp: Experiment
    family: Any
    space: SearchSpace
    run_dir: Path
    data_digests: dict[str, str] = field(default_factory=dict, compare=False, repr=False)
    # Stamp ids read once when a stage began (`pinned_stamp`): what it works on, whatever runs meanwhile.
    pinned: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def path(self, *parts: str) -> Path:
        """A path inside the run directory."""
        return self.run_dir.joinpath(*parts)

    def fingerprint(self, stage: str, *, legacy: bool = False, data_by_path: bool = False,
                    at_defaults: bool = False) -> str:
        """Hash of everything `stage`'s outputs depend on, chained through earlier stages. A data file
        counts by its content, so moving it keeps the run current (`data_by_path`: by its path, and
        `legacy`: with the NOT_INPUTS settings as inputs, both as computed earlier, so runs made then
        stay current; `at_defaults`: legacy with those settings at their defaults, as most runs had them)."""
        i = STAGES.index(stage)
        # Chaining through the previous stage's stamp id means re-running a stage makes every
        # later stage stale, even when the experiment file did not change.
        parts = [self.stamp_id(STAGES[i - 1])] if i else [json.dumps(self.space.to_dict(), sort_keys=True)]
        for name in STAGE_INPUTS[stage]:
            v = self.exp.section(name)
            v = [asdict(x) for x in v] if isinstance(v, tuple) else asdict(v) if is_dataclass(v) else v
            if name == stage and isinstance(v, dict) and at_defaults:
                v = {**v, **_defaults(self.exp.section(name), NOT_INPUTS.get(stage, ()))}
            elif name == stage and isinstance(v, dict) and not legacy:
                v = {k: x for k, x in v.items() if k not in NOT_INPUTS.get(stage, ())}
            if name == "data" and isinstance(v, dict) and v.get("path") and not data_by_path:
                v = {**v, "path": self.data_digest(v["path"])}
            parts.append(json.dumps(v, sort_keys=True, default=str))
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]

    def data_digest(self, path: str | Path) -> str:
        """A data file's content digest, taken once per context: a stage is stamped with the data it
        began with, even if the file changes while it runs (nas.train checks that it did not)."""
        key = str(path)
        if key not in self.data_digests:
            self.data_digests[key] = file_digest(path)
        return self.data_digests[key]

    def stamp_id(self, stage: str) -> str:
        """The unique id written when `stage` last finished ("none" if it has not), or the one a running
        stage began on (`pinned_stamp`)."""
        if stage in self.pinned:
            return self.pinned[stage]
        return self._stamp_on_disk(stage)

    def _stamp_on_disk(self, stage: str) -> str:
        try:
            return str(read_json(self.path(stage, "stamp.json"), f"{stage} stamp").get("id", "none"))
        except Exception:
            return "none"

    @contextlib.contextmanager
    def pinned_stamp(self, stage: str) -> Iterator[None]:
        """While a later stage runs, `stamp_id(stage)` is what it was when that stage began: a second process
        re-running `stage` meanwhile must not become the basis its fingerprint, stamp or study name claim
        (a measure finishing after a new train was stamped on the new weights it never measured; review)."""
        self.pinned[stage] = self._stamp_on_disk(stage)
        try:
            yield
        finally:
            del self.pinned[stage]

    def fingerprints(self, stage: str) -> set[str]:
        """The fingerprints under which `stage`'s outputs are current (today's and the earlier ones)."""
        return {self.fingerprint(stage, legacy=legacy, data_by_path=by_path, at_defaults=at_defaults)
                for legacy, at_defaults in ((False, False), (True, False), (True, True)) for by_path in (False, True)}

    def is_current(self, stage: str) -> bool:
        """Whether `stage` finished with the current inputs and every file it wrote is still there."""
        stamp = self.path(stage, "stamp.json")
        if not stamp.is_file():
            return False
        try:
            record = read_json(stamp, f"{stage} stamp")
            # A file deleted since (by hand, or a disk cleaned up) makes the stage run again rather
            # than the next stage fail on it; stamps written before outputs were listed have none.
            return (record.get("fingerprint") in self.fingerprints(stage)
                    and all(self.path(stage, name).is_file() for name in record.get("outputs", ())))
        except Exception:
            return False

    def outputs(self, stage: str) -> list[str]:
        """The files `stage` wrote, relative to its folder: not its stamp, marker, lock or temp files."""
        folder = self.path(stage)
        # Not another process's file in passing either (a temp file renamed a moment later).
        # Nor a checkpoint moved aside as unreadable (the note invites deleting it) or a save cut short.
        return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                      if p.is_file() and p.name not in _BOOKKEEPING and ".lock" not in p.name
                      and not p.name.startswith(".") and not p.name.endswith(".tmp")
                      and not any(part.endswith(".unreadable") or ".orbax-checkpoint-tmp" in part
                                  for part in p.relative_to(folder).parts[:-1]))

    def stamp_summary(self, stage: str) -> dict[str, Any]:
        """The summary `mark_done` stamped for `stage`, without the stamp's own bookkeeping."""
        stamp = read_json(self.path(stage, "stamp.json"), f"{stage} stamp")
        return {k: v for k, v in stamp.items() if k not in _STAMP_KEYS}

    def mark_done(self, stage: str, summary: dict[str, Any]) -> None:
        """Write the stage's stamp last, so a crashed stage is never taken as current."""
        i = STAGES.index(stage)
        before = STAGES[i - 1] if i else None
        if before in self.pinned and self._stamp_on_disk(before) != self.pinned[before]:
            from nas.errors import StageError

            raise StageError(f"stage '{before}' ran again in {self.run_dir} while '{stage}' ran (another process): "
                             f"'{stage}' worked on the old outputs and is not marked done; run `nas {stage}` again "
                             "(or `nas run`)")
        # "after": the stamp this one was made on, so readers that cannot parse the experiment (the
        # exported-front query) can still tell that an earlier stage ran again since.
        stamp = {"fingerprint": self.fingerprint(stage), "id": uuid.uuid4().hex,
                 "after": self.stamp_id(STAGES[i - 1]) if i else None, **summary,
                 "outputs": self.outputs(stage)}
        write_json(self.path(stage, "stamp.json"), stamp)

    def begin(self, stage: str, key: str | None = None) -> Path:
        """The stage's folder, emptied first if it holds partial work from other inputs (then resumable).

        `key` identifies the partial work when it should outlive some input changes (default: the
        stage fingerprint).
        """
        folder, fingerprint = self.path(stage), key or self.fingerprint(stage)
        accepted = {key} if key else self.fingerprints(stage)
        marker = folder / "fingerprint.txt"
        if folder.exists() and not (marker.is_file() and marker.read_text(errors="replace").strip() in accepted):
            remove_path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        write_bytes(marker, (fingerprint + "\n").encode())  # whole or not at all: a torn key empties the folder
        return folder

    def first_stale(self, stage: str) -> str | None:
        """The first of the stages up to `stage` that is not current, or None when they all are: a
        stage stamped on an earlier stage's outputs that went stale since (the space or the training
        edited) is no basis to work on, though its own inputs did not change."""
        return next((s for s in STAGES[:STAGES.index(stage) + 1] if not self.is_current(s)), None)

    def require(self, stage: str) -> None:
        """Refuse to run on outputs of an earlier stage that are missing or stale."""
        from nas.errors import StageError

        before = self.first_stale(stage)
        if before is not None:
            from nas.workers import lock_holder

            holder = lock_holder(self.path(f"{before}.lock"))
            if holder is not None:  # not "run it first": it is running, in another process
                raise StageError(f"stage '{before}' is running in {self.run_dir} (process {holder or 'unnamed'}); "
                                 "wait for it to end, then run this again")
            then = "" if before == stage else f", then the stages after it up to '{stage}'"
            raise StageError(f"stage '{before}' has no current output in {self.run_dir} "
                             f"(run `nas {before}` first{then}, or `nas run`)")


MAX_PARAMETERS = 1 << 31  # in the supernet: past it a typo in a width, then an out-of-memory traceback


def supernet_parameters(family: Any, space: Any) -> int | None:
    """How many values the supernet `family` builds for `space` holds (weights, steps, statistics),
    counted from shapes alone (nothing allocated); None when the family's build cannot run abstractly."""
    import math

    from flax import nnx

    try:
        abstract = nnx.eval_shape(lambda: family.build(space, rngs=nnx.Rngs(0)))
    except Exception:  # noqa: BLE001 - a user's family may compute on concrete values: not counted
        return None
    return sum(math.prod(v.shape) for _, v in nnx.to_flat_state(nnx.state(abstract)))


def require_sane_size(family: Any, space: Any) -> None:
    """ConfigError when the supernet, or the largest subnet, has more parameters than MAX_PARAMETERS
    (each width was within its own bound: their product is what does not fit). The supernet is built
    from the [model] maxima, which the space's choices need not reach: checking the largest subnet
    alone passed supernets of terabytes (max_depth 1024 at width 16384 with depth = [1])."""
    try:
        costs = family.layer_costs(space, space.largest())
    except (AttributeError, NotImplementedError):  # a family of the user's own, with no costs
        costs = []
    params = sum(c.weights + c.float_params for c in costs)
    if params > MAX_PARAMETERS:
        raise ConfigError("model", f"the largest subnet has {params:,} parameters, more than this project "
                          f"supports ({MAX_PARAMETERS:,}); check the widths in [model] and [model.space]")
    supernet = supernet_parameters(family, space)
    if supernet is not None and supernet > MAX_PARAMETERS:
        raise ConfigError("model", f"the supernet has {supernet:,} parameters, more than this project supports "
                          f"({MAX_PARAMETERS:,}); check the maximum widths, depths and kernels in [model]")


def prepare(experiment: str | Path | Experiment, run_dir: str | Path | None = None, runs_root: str | Path = "runs",
            data_base: Path | None = None) -> Context:
    """Validate the experiment file, or an Experiment already read (data shape and space included)
    before anything is written."""
    exp = experiment if isinstance(experiment, Experiment) else load_experiment(experiment, data_base)
    family = get_family(exp.model.get("family"))
    n_features, n_classes, input_shape = data_shape(exp.data)
    space = family.parse_space(exp.model, n_features, n_classes, input_shape)
    require_sane_size(family, space)
    if exp.predictors.latency == "lut" and not all(callable(getattr(family, m, None))
                                                   for m in ("lut_units", "unit_modules")):
        raise ConfigError("predictors.latency", f"'lut' needs units timed alone (lut_units, unit_modules), which "
                          f"family '{family.name}' does not provide (use ridge, gbm or mlp)")
    hooks = ("sort_channels", "channel_permutations")
    if exp.train.channel_sorting != "none" and not all(callable(getattr(family, m, None)) for m in hooks):
        raise ConfigError("train.channel_sorting", f"family '{family.name}' cannot sort its channels "
                          f"(no sort_channels); use \"none\"")
    for i, config in enumerate(exp.search.warm_start):
        try:
            space.validate(config)
        except ConfigError as e:
            key = f"search.warm_start[{i}].{e.key.removeprefix('config.')}"
            raise ConfigError(key, str(e).split(": ", 1)[-1]) from None
    ctx = Context(exp, family, space, Path(run_dir) if run_dir else Path(runs_root) / exp.name)
    check_counted_budgets(ctx)
    return ctx


GATE_SETTINGS = 1024  # depth settings the counted-budget check tries at most (a few ms each)


def check_counted_budgets(ctx: Context) -> None:
    """ConfigError naming a budget on a counted metric (size, MACs, FLOPs, peak activations) that no subnet
    of the space meets, found out before training rather than by the search after it. At a fixed depth
    setting every family's costs grow with width, bits, expand ratio and heads, so each setting's smallest
    (largest) subnet holds its least (most); over settings they differ (an MLP of width [[128, 256], [8, 16]]
    costs less at depth 2 than at depth 1: review). Skipped past GATE_SETTINGS settings."""
    import math

    from nas.measure import exact_metrics
    from nas.metrics import metric_info

    counted = [(i, b) for i, b in enumerate(ctx.exp.budgets)
               if getattr(metric_info(b.metric), "source", None) == "exact"]
    space = ctx.space
    gates = [d for d in space.dimensions if any(o.gate == d.name for o in space.dimensions)]
    if not counted or math.prod(len(g.choices) for g in gates) > GATE_SETTINGS:
        return
    least: dict[str, float] = {}
    most: dict[str, float] = {}
    smallest_choices = {d.name: d.choices[0] for d in space.dimensions}
    try:
        for largest, _ in space.gate_settings():  # each setting with every other dimension at its largest
            setting = {g.name: largest[g.name] for g in gates}
            low = exact_metrics(ctx, space.canonical({**smallest_choices, **setting}))
            high = exact_metrics(ctx, largest)
            for _, b in counted:
                least[b.metric] = min(least.get(b.metric, math.inf), low[b.metric])
                most[b.metric] = max(most.get(b.metric, -math.inf), high[b.metric])
    except (AttributeError, NotImplementedError):  # a family of the user's own, with no costs
        return
    for i, b in counted:
        side, word, value = ("max", "least", least[b.metric]) if b.max is not None else ("min", "most", most[b.metric])
        if not b.satisfied(value):
            raise ConfigError(f"budgets[{i}].{side}", f"no subnet of the space meets {b}: the {word} {b.metric} of "
                              f"any subnet is {value:.4g} (counted, not measured)")
