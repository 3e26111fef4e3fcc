"""Experiment files: TOML parsed into frozen dataclasses; every bad key or value is a ConfigError."""

from __future__ import annotations

import difflib
import math
import numbers
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from nas.errors import ConfigError, count_text, dotted, table_error
from nas.metrics import METRICS, latency_metric, limit_problem

_MISSING = object()


class _Table:
    """Reads one TOML table, checking types and ranges; `done()` rejects keys nobody asked for."""

    def __init__(self, raw: Any, path: str):
        if not isinstance(raw, dict):
            raise table_error(path, raw)
        self.raw, self.path, self.seen = raw, path, set()

    def key(self, name: str) -> str:
        return dotted(self.path, name)

    def get(self, name: str, kind: type | tuple[type, ...], default: Any = _MISSING,
            check: Callable[[Any], bool] | None = None, rule: str = "") -> Any:
        self.seen.add(name)
        if name not in self.raw:
            if default is _MISSING:
                raise ConfigError(self.key(name), f"missing{self._typo_of(name)}")
            return default
        v = self.raw[name]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds and isinstance(v, int) and not isinstance(v, bool):
            if abs(v) > 1e300:  # an integer past float range (a 400-digit TOML number)
                raise ConfigError(self.key(name), f"an integer of {v.bit_length()} bits is out of range")
            v = float(v)
        if isinstance(v, bool) and bool not in kinds or not isinstance(v, kinds):
            names = "/".join(k.__name__ for k in kinds)
            raise ConfigError(self.key(name), f"expected {names}, got {v!r}")
        if check is not None and not check(v):
            shown = f"an integer of {v.bit_length()} bits" if isinstance(v, int) and v.bit_length() > 64 else repr(v)
            raise ConfigError(self.key(name), f"{shown} is invalid: {rule}")
        return v

    def choice(self, name: str, options: Mapping[str, Any] | tuple[str, ...], default: Any = _MISSING) -> str:
        return self.get(name, str, default, lambda v: v in options, f"expected one of {sorted(options)}")

    def sub(self, name: str, required: bool = True) -> _Table:
        self.seen.add(name)
        if name not in self.raw and not required:
            return _Table({}, self.key(name))
        if name not in self.raw:
            raise ConfigError(self.key(name), f"missing table{self._typo_of(name)}")
        return _Table(self.raw[name], self.key(name))

    def _typo_of(self, name: str) -> str:
        # `step = 2000` for `steps`, `[tarin]` for `[train]`: name the typo, not only what it left missing.
        typo = difflib.get_close_matches(name, [k for k in self.raw if isinstance(k, str)], 1, 0.75)
        return f" (is {typo[0]!r} a misspelling of it?)" if typo else ""

    def done(self, known: Sequence[str] = ()) -> None:
        """Refuse keys nobody asked for (`known`: ones that will be asked for later, for the hint)."""
        unknown = sorted(set(self.raw) - self.seen - set(known))
        if unknown:
            near = difflib.get_close_matches(unknown[0], [*self.seen, *known], 1, 0.75)
            hint = f" (a misspelling of {near[0]!r}?)" if near else ""
            raise ConfigError(self.key(unknown[0]), f"unknown key{hint}")


FLOAT32_MAX = 3.4028234663852886e38
FLOAT32_TINY = 1.1754943508222875e-38  # the smallest normal float32: below it a temperature divides by 0
IN_FLOAT32 = "within float32's range (training computes in float32; beyond it the loss is NaN)"


def _in_float32(lo: float) -> Callable[[Any], bool]:
    """A check of a float setting training uses in float32: finite, >= lo, <= FLOAT32_MAX."""
    return lambda v: math.isfinite(v) and lo <= v <= FLOAT32_MAX


def _finite(v: Any) -> bool:
    # An int is finite however large: math.isfinite(10**400) raises OverflowError (a traceback).
    return isinstance(v, int) or math.isfinite(v)


def _positive(v: Any) -> bool:
    return _finite(v) and v > 0


def _non_negative(v: Any) -> bool:
    return _finite(v) and v >= 0


def _upto(hi: float, lo: float = 1) -> tuple[Callable[[Any], bool], str]:
    """(check, rule) of a count or size in lo..hi: beyond a sane hi a typo only shows later, as an
    out-of-memory traceback or a hang (`measure.batch_size = 2**40`)."""
    return (lambda v: _finite(v) and lo <= v <= hi), f"must be in {int(lo):,}..{int(hi):,}"


MAX_BATCH = 65_536  # examples per training step or timed call
MAX_COUNT = 1_000_000  # subnets measured, calibration images, trials per round, front members measured or exported
MAX_WORKERS = 256  # processes one `nas search` starts on this machine (each imports JAX); more: more machines
SEED_TEXT = "must be in 0..4294967295"  # NumPy, JAX and Optuna all take 32-bit seeds


def is_seed(v: Any) -> bool:
    """Whether `v` is an int a seed can be (0..2**32-1)."""
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**32


def _fraction(v: float) -> bool:
    return 0.0 < v < 0.5


@dataclass(frozen=True)
class DataConfig:
    """Which data set and how it is split; search and predictors only see validation."""

    dataset: str
    path: Path | None
    val_fraction: float
    test_fraction: float
    normalize: str
    split_seed: int


@dataclass(frozen=True)
class TrainConfig:
    """Supernet training: sandwich rule with in-place distillation, AdamW, warm-up + cosine."""

    steps: int
    batch_size: int
    optimizer: str
    learning_rate: float
    weight_decay: float
    warmup_steps: int
    schedule: str
    grad_clip: float
    sandwich_random: int
    distill: bool
    distill_temperature: float
    checkpoint_every: int
    distill_loss: str = "kl"
    distill_alpha: tuple[float, ...] = (-0.5, 0.5)
    label_loss: str = "largest"
    data_parallel: bool = True
    sandwich_batching: str = "auto"
    channel_sorting: str = "none"
    sort_every: int = 0
    smallest_bits: str = "min"
    distill_reduce: str = "sum"
    uniform_bits: float = 0.0


@dataclass(frozen=True)
class LatencyTarget:
    """An extra place to time subnets: metric latency_ms@NAME, on `device` at `batch_size`."""

    name: str
    device: str
    batch_size: int


@dataclass(frozen=True)
class MeasureConfig:
    """Which subnets to measure and how to time them."""

    samples: int
    device: str
    batch_size: int
    repeats: int
    warmup: int
    min_time_ms: float
    seed: int
    targets: tuple[LatencyTarget, ...] = ()
    calibration_samples: int = 512
    eval_batch_size: int = 4096  # examples in flight when scoring accuracy, over every config in the call
    max_repeats: int = 0  # extra rounds, up to this many, for subnets whose median is not yet stable
    stable_rel: float = 0.02  # "stable": the median's 95 % interval within this share of it
    end_to_end: bool = True  # also time single calls from the host (latency_e2e_ms)
    repeatability: int = 16  # subnets timed again in an independent pass, to report agreement
    compile_cache: str = ""  # persistent XLA cache folder ("" = .xla-cache beside the runs, "off" = none)
    kernels: str = "int"  # "int": <= 8-bit layers run int8 kernels as exported; "fake": float on fake-quant values
    anchors: int = 8  # reference rows re-timed with every later chunk of subnets and every later session
    anchor_retries: int = 2  # a chunk whose anchors disagree with the reference is timed again, up to this often
    anchor_tolerance: float = 0.05  # "disagree": median(reference / now) more than this share away from 1

    def latency_targets(self) -> list[tuple[str, str, int]]:
        """(metric, device, batch) of every latency measured: the main one first."""
        return [(latency_metric(None), self.device, self.batch_size)] + [
            (latency_metric(t.name), t.device, t.batch_size) for t in self.targets
        ]

    def device_setting(self, metric: str) -> str:
        """The setting that names the device a latency metric is timed on (for errors about it)."""
        extra = [i for i, t in enumerate(self.targets) if latency_metric(t.name) == metric]
        return f"measure.targets[{extra[0]}].device" if extra else "measure.device"

    def metrics(self) -> list[str]:
        """Names of every metric a measured row has (objectives and budgets may use these)."""
        return list(METRICS) + [latency_metric(t.name) for t in self.targets]


MIN_TRAIN_ROWS = 4  # measured subnets a predictor is fitted on, besides the held-out ones


@dataclass(frozen=True)
class PredictorsConfig:
    """Predictor kinds per predicted metric and the held-out share for their quality report."""

    accuracy: str
    latency: str
    holdout: float
    seed: int

    def held_out(self, n: int) -> int:
        """How many of `n` measured subnets are held out to score the predictors (at least 2)."""
        return max(2, int(round(self.holdout * n)))

    def min_subnets(self) -> int:
        """The fewest measured subnets the predictors can be fitted and scored on."""
        n = MIN_TRAIN_ROWS
        while n - self.held_out(n) < MIN_TRAIN_ROWS:
            n += 1
        return n


@dataclass(frozen=True)
class SearchConfig:
    """The Optuna study over the predictors, and how much of its front gets measured for real."""

    sampler: str
    trials: int
    seed: int
    storage: str
    population_size: int
    validate_top: int
    rounds: int = 1
    workers: int = 1
    warm_start: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True)
class Objective:
    """A metric to optimise and its direction."""

    metric: str
    direction: str

    def __post_init__(self) -> None:
        # Read as "maximize or else minimise" everywhere: `Objective("acc", "max")` (the command line's
        # spelling) minimised accuracy and scored the worst front as hv_ratio 1.0 (review).
        if self.direction not in ("maximize", "minimize"):
            raise ValueError(f"Objective({self.metric!r}): direction must be 'maximize' or 'minimize', "
                             f"got {self.direction!r}")


def _exact(x: float) -> str:
    # ":g" where it reads back as the same number (8, 0.05), else the shortest exact text: ":g"
    # alone printed a limit of 0.03739999 as 0.0374, which a row of 0.0374 seems to meet.
    text = f"{x:g}"
    return text if float(text) == x else repr(float(x))


@dataclass(frozen=True)
class Budget:
    """A hard limit: metric <= max (or >= min)."""

    metric: str
    max: float | None = None
    min: float | None = None

    def __post_init__(self) -> None:
        # One-sided everywhere it is read (violation, str, table and refit masks take max when set): a
        # two-sided Budget built through the API was checked on both sides by some and on one by others.
        if (self.max is None) == (self.min is None):
            raise ValueError(f"Budget({self.metric!r}): give exactly one of max or min (a range is two budgets)")
        # A NaN limit met no row and was reported as a budget nothing meets; a string broke in numpy (review).
        limit = self.max if self.max is not None else self.min
        try:
            finite = not isinstance(limit, bool) and isinstance(limit, numbers.Real) and math.isfinite(limit)
        except OverflowError:  # an integer past float's range
            finite = False
        if not finite:
            shown = repr(limit) if len(repr(limit)) <= 40 else f"{repr(limit)[:30]}... ({len(repr(limit))} characters)"
            raise ValueError(f"Budget({self.metric!r}): the limit must be a finite number, got {shown}")

    def satisfied(self, value: float) -> bool:
        """Whether `value` meets the limit."""
        return (self.max is None or value <= self.max) and (self.min is None or value >= self.min)

    def violation(self, value: float) -> float:
        """How far `value` is outside the limit (<= 0 when feasible), as Optuna constraints want."""
        return value - self.max if self.max is not None else self.min - value

    def __str__(self) -> str:
        if self.max is not None:
            return f"{self.metric} <= {_exact(self.max)}"
        return f"{self.metric} >= {_exact(self.min)}"


@dataclass(frozen=True)
class ExportConfig:
    """How many front members to export, in which formats, and whether to draw the Pareto plot."""

    max_models: int
    plot: bool
    formats: tuple[str, ...] = ("stablehlo", "npz")


@dataclass(frozen=True)
class Experiment:
    """A whole experiment file, validated; `model` is the family's raw table (the family checks it)."""

    name: str
    seed: int
    data: DataConfig
    model: Mapping[str, Any]
    train: TrainConfig
    measure: MeasureConfig
    predictors: PredictorsConfig
    search: SearchConfig
    objectives: tuple[Objective, ...]
    budgets: tuple[Budget, ...]
    export: ExportConfig
    source: Path
    text: str = field(default="", compare=False, repr=False)  # the file as parsed (the run keeps a copy)

    def section(self, name: str) -> Any:
        """The dataclass (or raw table) of a section, for stage fingerprints."""
        return getattr(self, name)


DATASETS = ("digits", "mnist1d", "npz")
NORMALIZE = ("minmax", "standardize", "none")
OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = ("cosine", "linear", "constant")
DISTILL_LOSSES = ("kl", "alpha")  # alpha: AlphaNet's max of two alpha-divergences
LABEL_LOSSES = ("largest", "all")
DISTILL_REDUCE = ("sum", "mean")  # "mean": the students' divergences averaged, so the teacher's share stays fixed
# "random": the smallest architecture gets fresh per-layer bits each step; "both": it runs at the lowest
# bits and at fresh random ones
SMALLEST_BITS = ("min", "random", "both")
CHANNEL_SORTING = ("none", "l1")  # "l1": OFA-style importance sort so width prefixes keep the strongest channels
BATCHING_MODES = ("auto", "vmap", "loop")  # nas.batching.MODES (config must not import jax)


def _alphas(v: list[Any]) -> bool:
    ok = all(isinstance(a, (int, float)) and not isinstance(a, bool) and abs(a) <= FLOAT32_MAX and math.isfinite(a)
             for a in v)
    return ok and 1 <= len(v) <= 4 and all(float(a) not in (0.0, 1.0) for a in v)
SAMPLERS = ("nsga2", "nsga3", "tpe", "random")
STORAGES = ("journal", "sqlite")
DATABASE_URLS = ("postgresql://", "postgresql+psycopg://", "postgresql+psycopg2://", "mysql://", "mysql+pymysql://")
DEVICES = ("cpu", "gpu")


def _data(t: _Table, base: Path) -> DataConfig:
    dataset = t.choice("dataset", DATASETS)
    path = None
    if dataset != "npz" and "path" in t.raw:  # a documented key: say why it is refused, not "unknown key"
        raise ConfigError(t.key("path"), f'is read only with dataset = "npz" (here {dataset!r})')
    if dataset == "npz":
        raw = t.get("path", str)
        candidates = [base / raw, Path.cwd() / raw] if not Path(raw).is_absolute() else [Path(raw)]
        path = next((p.resolve() for p in candidates if p.is_file()), None)
        if path is None:
            raise ConfigError(t.key("path"), f"data file {raw!r} not found (looked in {base} and {Path.cwd()})")
    cfg = DataConfig(
        dataset=dataset,
        path=path,
        val_fraction=t.get("val_fraction", float, 0.2, _fraction, "must be in (0, 0.5)"),
        test_fraction=t.get("test_fraction", float, 0.2, _fraction, "must be in (0, 0.5)"),
        normalize=t.choice("normalize", NORMALIZE, "minmax"),
        split_seed=t.get("split_seed", int, 0, is_seed, SEED_TEXT),
    )
    t.done()
    return cfg


# What only in-place distillation reads (without it every subnet learns from the labels alone).
DISTILL_ONLY = ("distill_loss", "distill_alpha", "distill_temperature", "distill_reduce", "label_loss")


def _train(t: _Table) -> TrainConfig:
    cfg = TrainConfig(
        steps=t.get("steps", int, check=lambda v: 0 < v < 2**31, rule="must be in 1..2147483647 (a 32-bit step count)"),
        batch_size=t.get("batch_size", int, 128, *_upto(MAX_BATCH)),
        optimizer=t.choice("optimizer", OPTIMIZERS, "adamw"),
        learning_rate=t.get("learning_rate", float, 3e-3, lambda v: _positive(v) and v <= FLOAT32_MAX,
                            "must be > 0 and within float32's range (the schedule computes in float32)"),
        weight_decay=t.get("weight_decay", float, 1e-4, _in_float32(0.0), f"must be >= 0 and {IN_FLOAT32}"),
        warmup_steps=t.get("warmup_steps", int, 0, _non_negative, "must be >= 0"),
        schedule=t.choice("schedule", SCHEDULES, "cosine"),
        grad_clip=t.get("grad_clip", float, 1.0, _in_float32(0.0), f"must be >= 0 (0 = off) and {IN_FLOAT32}"),
        sandwich_random=t.get("sandwich_random", int, 2, lambda v: 0 <= v <= 64, "must be 0-64"),
        distill=t.get("distill", bool, True),
        distill_temperature=t.get("distill_temperature", float, 1.0, _in_float32(FLOAT32_TINY),
                                  f"must be > 0 and {IN_FLOAT32}"),
        checkpoint_every=t.get("checkpoint_every", int, 200, *_upto(2**31 - 1)),
        distill_loss=t.choice("distill_loss", DISTILL_LOSSES, "kl"),
        distill_alpha=tuple(float(a) for a in t.get("distill_alpha", list, [-0.5, 0.5], _alphas,
                                  "expected a list of 1-4 numbers within float32's range, none of them 0 or 1")),
        label_loss=t.choice("label_loss", LABEL_LOSSES, "largest"),
        data_parallel=t.get("data_parallel", bool, True),
        sandwich_batching=t.choice("sandwich_batching", BATCHING_MODES, "auto"),
        channel_sorting=t.choice("channel_sorting", CHANNEL_SORTING, "none"),
        sort_every=t.get("sort_every", int, 0, _non_negative, "must be >= 0 (0 = once, at the end of warm-up)"),
        smallest_bits=t.choice("smallest_bits", SMALLEST_BITS, "min"),
        distill_reduce=t.choice("distill_reduce", DISTILL_REDUCE, "sum"),
        uniform_bits=t.get("uniform_bits", float, 0.0, lambda v: 0.0 <= v <= 1.0, "must be in [0, 1]"),
    )
    if cfg.warmup_steps >= cfg.steps:
        raise ConfigError(t.key("warmup_steps"), f"{count_text(cfg.warmup_steps)} must be below "
                          f"train.steps={cfg.steps}")
    # A setting read by nothing in this configuration: say so, not ignore it (a typo'd intent).
    unread = [(k, "distill = true", "false") for k in DISTILL_ONLY if not cfg.distill]
    unread += [("distill_alpha", 'distill_loss = "alpha"', repr(cfg.distill_loss))] * (cfg.distill_loss != "alpha")
    unread += [("sort_every", "a channel_sorting other than \"none\"", '"none"')] * (cfg.channel_sorting == "none")
    for key, needs, here in unread:
        if key in t.raw:
            raise ConfigError(t.key(key), f"is read only with {needs} (here {here})")
    t.done()
    return cfg


def _measure(t: _Table, seed: int) -> MeasureConfig:
    cfg = MeasureConfig(
        samples=t.get("samples", int, 100, lambda v: 4 <= v <= MAX_COUNT,
                      f"must be in 4..{MAX_COUNT:,} (fit holds some out, fits on the rest)"),
        device=t.choice("device", DEVICES, "cpu"),
        batch_size=t.get("batch_size", int, 1, *_upto(MAX_BATCH)),
        repeats=t.get("repeats", int, 7, *_upto(1000, 3)),
        warmup=t.get("warmup", int, 2, *_upto(1000)),
        min_time_ms=t.get("min_time_ms", float, 5.0, lambda v: 0 < v <= 60_000, "must be in (0, 60000] ms"),
        seed=t.get("seed", int, seed, is_seed, SEED_TEXT),
        targets=_targets(t.get("targets", list, [])),
        calibration_samples=t.get("calibration_samples", int, 512, *_upto(MAX_COUNT)),
        eval_batch_size=t.get("eval_batch_size", int, 4096, *_upto(MAX_BATCH)),
        max_repeats=t.get("max_repeats", int, 0, *_upto(1000, 0)),
        stable_rel=t.get("stable_rel", float, 0.02, _positive, "must be > 0"),
        end_to_end=t.get("end_to_end", bool, True),
        repeatability=t.get("repeatability", int, 16, *_upto(MAX_COUNT, 0)),
        compile_cache=t.get("compile_cache", str, "", lambda v: "\0" not in v, "a folder path (no NUL character)"),
        kernels=t.choice("kernels", ("int", "fake"), "int"),
        anchors=t.get("anchors", int, 8, *_upto(1000, 0)),
        anchor_retries=t.get("anchor_retries", int, 2, *_upto(100, 0)),
        anchor_tolerance=t.get("anchor_tolerance", float, 0.05, _positive, "must be > 0"),
    )
    t.done()
    return cfg


TARGET_NAME = re.compile(r"^[A-Za-z0-9_]+$")


def _targets(raw: list) -> tuple[LatencyTarget, ...]:
    out = []
    for i, item in enumerate(raw):
        t = _Table(item, f"measure.targets[{i}]")
        out.append(LatencyTarget(
            name=t.get("name", str, check=lambda v: bool(TARGET_NAME.fullmatch(v)), rule="letters, digits, '_'"),
            device=t.choice("device", DEVICES),
            batch_size=t.get("batch_size", int, _MISSING, *_upto(MAX_BATCH)),
        ))
        t.done()
    names = [x.name for x in out]
    if len(set(names)) != len(names):
        raise ConfigError("measure.targets", f"target name listed twice in {names}")
    return tuple(out)


def _predictors(t: _Table, seed: int) -> PredictorsConfig:
    from predictors import NEEDS_LAYER_TABLE, PREDICTORS  # the registry is the single list of kinds

    cfg = PredictorsConfig(
        accuracy=t.choice("accuracy", tuple(k for k in PREDICTORS if k not in NEEDS_LAYER_TABLE), "ridge"),
        latency=t.choice("latency", tuple(PREDICTORS), "ridge"),
        holdout=t.get("holdout", float, 0.2, _fraction, "must be in (0, 0.5)"),
        seed=t.get("seed", int, seed, is_seed, SEED_TEXT),
    )
    t.done()
    return cfg


def _search(t: _Table, seed: int) -> SearchConfig:
    cfg = SearchConfig(
        sampler=t.choice("sampler", SAMPLERS, "nsga2"),
        trials=t.get("trials", int, 1000, *_upto(100 * MAX_COUNT)),
        seed=t.get("seed", int, seed, is_seed, SEED_TEXT),
        storage=t.get("storage", str, "journal", lambda v: v in STORAGES or v.startswith(DATABASE_URLS),
                      f"expected one of {list(STORAGES)} or a database URL ({', '.join(DATABASE_URLS)}...)"),
        population_size=t.get("population_size", int, 50, *_upto(MAX_COUNT, 2)),
        validate_top=t.get("validate_top", int, 40, *_upto(MAX_COUNT)),
        rounds=t.get("rounds", int, 1, *_upto(1000)),
        workers=t.get("workers", int, 1, lambda v: 1 <= v <= MAX_WORKERS, f"must be in 1..{MAX_WORKERS}"),
        warm_start=tuple(_warm_start(t.get("warm_start", list, []), t.key("warm_start"))),
    )
    t.done()
    return cfg


def _warm_start(raw: list, key: str) -> list[Mapping[str, Any]]:
    """Configs to try first (checked against the space once it is known)."""
    for i, c in enumerate(raw):
        if not isinstance(c, dict):
            raise ConfigError(f"{key}[{i}]", f"expected a table of dimension = value, got {c!r}")
    return raw


def _objectives(raw: Any, known: list[str]) -> tuple[Objective, ...]:
    if not isinstance(raw, list) or not raw:
        raise ConfigError("objectives", "expected a non-empty array of tables [[objectives]]")
    out = []
    for i, item in enumerate(raw):
        t = _Table(item, f"objectives[{i}]")
        metric = t.choice("metric", known)
        direction = t.choice("direction", ("maximize", "minimize"), METRICS[metric.partition("@")[0]].direction)
        t.done()
        out.append(Objective(metric, direction))
    names = [o.metric for o in out]
    if len(set(names)) != len(names):
        raise ConfigError("objectives", f"metric listed twice in {names}")
    return tuple(out)


def _budgets(raw: Any, known: list[str]) -> tuple[Budget, ...]:
    if not isinstance(raw, list):
        raise ConfigError("budgets", "expected an array of tables [[budgets]]")
    out = []
    for i, item in enumerate(raw):
        t = _Table(item, f"budgets[{i}]")
        metric = t.choice("metric", known)
        hi = t.get("max", float, None, math.isfinite, "must be a finite number")
        lo = t.get("min", float, None, math.isfinite, "must be a finite number")
        t.done()  # first: a misspelled "mxa" is named as such, not taken for a missing limit
        if (hi is None) == (lo is None):
            raise ConfigError(t.key("max"), "give exactly one of max or min")
        side = "max" if lo is None else "min"
        problem = limit_problem(metric, hi if lo is None else lo)
        if problem:
            raise ConfigError(t.key(side), problem)
        out.append(Budget(metric, hi, lo))
        # An empty range is an input error (as `nas query --budget` says), not a budget no subnet meets
        # that a whole run's training and search would find out only at its end.
        for j, other in enumerate(out[:-1]):
            low, high = (lo, other.max) if lo is not None else (other.min, hi)
            if other.metric == metric and low is not None and high is not None and low > high:
                raise ConfigError(t.key(side), f"{metric} >= {low:g} and {metric} <= {high:g} (with budgets[{j}]) "
                                  "leave no value")
    return tuple(out)


NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
TOP_KEYS = ("name", "seed", "data", "model", "train", "measure", "predictors", "search", "objectives", "budgets",
            "export")


def parse_experiment(raw: Mapping[str, Any], source: Path, data_base: Path | None = None) -> Experiment:
    """Validate a parsed TOML document into an Experiment (ConfigError names the first bad key);
    relative data paths are looked up in `data_base` (default: the source's folder) and the cwd."""
    top = _Table(dict(raw), "")
    # First: a misspelled section (`[measurement]`) would otherwise show only as a symptom of its absence,
    # e.g. an objective naming a latency target that section defines.
    top.done(TOP_KEYS)
    name = top.get("name", str, check=lambda v: bool(NAME.fullmatch(v)) and len(v) <= 100,
                   rule="letters, digits, '_', '-', '.', at most 100 characters")
    seed = top.get("seed", int, 0, is_seed, SEED_TEXT)
    data = _data(top.sub("data"), data_base or source.parent)
    top.seen.add("model")
    model = raw.get("model")
    if not isinstance(model, dict):
        raise table_error("model", model)
    measure = _measure(top.sub("measure", required=False), seed)
    exp = Experiment(
        name=name,
        seed=seed,
        data=data,
        model=model,
        train=_train(top.sub("train")),
        measure=measure,
        predictors=_predictors(top.sub("predictors", required=False), seed),
        search=_search(top.sub("search", required=False), seed),
        objectives=_objectives(raw.get("objectives"), measure.metrics()),
        budgets=_budgets(raw.get("budgets", []), measure.metrics()),
        export=_export(top.sub("export", required=False)),
        source=source,
    )
    top.seen.update({"objectives", "budgets"})
    top.done()
    _check_enough_measured(exp)
    return exp


def _check_enough_measured(exp: Experiment) -> None:
    """Refuse, before any training, a measure.samples the predictors' hold-out leaves too few rows to fit on."""
    measured, need = exp.measure.samples + 2, exp.predictors.min_subnets()  # + the largest and the smallest
    if measured < need:
        raise ConfigError("measure.samples", f"{exp.measure.samples} (+ the largest and smallest subnets) is too few "
                          f"for predictors.holdout = {exp.predictors.holdout:g}: the fit needs {need} measured subnets "
                          f"(at least {MIN_TRAIN_ROWS} fitted on, {exp.predictors.held_out(need)} held out); give "
                          f"samples >= {need - 2} or a smaller holdout")


def _export(t: _Table) -> ExportConfig:
    cfg = ExportConfig(
        max_models=t.get("max_models", int, 10, *_upto(MAX_COUNT)),
        plot=t.get("plot", bool, True),
        formats=_formats(t.get("formats", list, ["stablehlo", "npz"]), t.key("formats")),
    )
    t.done()
    return cfg


EXPORT_FORMATS = ("stablehlo", "orbax", "npz")


def _formats(value: list, key: str) -> tuple[str, ...]:
    """Validated, de-duplicated export formats."""
    if not value:
        raise ConfigError(key, "empty list: give at least one of " + ", ".join(EXPORT_FORMATS))
    for v in value:
        if v not in EXPORT_FORMATS:
            raise ConfigError(key, f"unknown export format {v!r} (known: {', '.join(EXPORT_FORMATS)})")
    return tuple(dict.fromkeys(value))


def load_experiment(path: str | Path, data_base: Path | None = None, text: str | None = None) -> Experiment:
    """Read and validate an experiment TOML file (relative data paths from `data_base`, default its folder;
    `text`: the file's text as read before, parsed instead of the file as it reads now)."""
    path = Path(path)
    if text is None and path.is_dir():
        inside = Path(path) / "experiment.toml"
        hint = f" (a run directory? its experiment is {str(inside)!r})" if inside.is_file() else ""
        raise ConfigError("", f"experiment file {str(path)!r} is a folder, not a TOML file{hint}")
    if text is None and not path.exists():  # not is_file(): a pipe (/dev/stdin, <(...)) reads as well
        raise ConfigError("", f"experiment file {str(path)!r} not found")
    try:
        text = path.read_text() if text is None else text
        raw = tomllib.loads(text.removeprefix("\ufeff"))  # a byte-order mark, as Windows editors write
    except ValueError as e:  # TOMLDecodeError, UnicodeDecodeError, and an integer of over 4,300 digits
        # Python's own text for the last advises sys.set_int_max_str_digits(): say what is in the file.
        why = "an integer of more than 4,300 digits" if "4300 digits" in str(e) else str(e)
        raise ConfigError("", f"{path}: not valid TOML ({why})") from None
    except RecursionError:
        raise ConfigError("", f"{path}: not valid TOML (nested too deeply)") from None
    return replace(parse_experiment(raw, path.resolve(), data_base), text=text)
