"""The table, its space and the oracle: all that a strategy of tabular benchmark mode may see of a
NAS-Bench-style table (nas.tabular states the rules of the comparison)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nas.config import Budget, Objective
from nas.csvfile import MISSING, parse_number, read_csv
from nas.errors import NasError

Config = tuple[int, ...]  # one value index per choice column
_INTEGER = re.compile(r"[-+]?\d+", re.ASCII)


def _absent(cell: str, number: float | None) -> bool:
    """A cell a data frame writes for no value (blank, NA, nan; `number` its parse_number): in a choice
    column, an inactive layer."""
    text = cell.strip()
    return not text or text.lower() in MISSING or (number is not None and math.isnan(number))


def _number_keys(cells: Sequence[str]) -> list[object] | None:
    """Each cell as a number (integers exact), an absent cell as its text; None unless every other cell
    is a finite number and there is one."""
    keys: list[object] = []
    for cell in cells:
        number = parse_number(cell)
        if _absent(cell, number):
            keys.append(cell)
        elif number is None or not math.isfinite(number):
            return None
        else:
            # Integers as Python ints, compared exactly (8 == 8.0 still): as floats, ids past 2**53
            # (9007199254740992 and ...993) would be one value and their rows "duplicates".
            keys.append(int(cell.strip()) if _INTEGER.fullmatch(cell.strip()) else number)
    return keys if any(not isinstance(k, str) for k in keys) else None


# --- parsing ------------------------------------------------------------------------------
def parse_objective(text: str) -> Objective:
    """'COL:max' or 'COL:min' -> Objective; NasError on a bad direction."""
    col, sep, direction = str(text).rpartition(":")
    directions = {"max": "maximize", "maximize": "maximize", "min": "minimize", "minimize": "minimize"}
    if not sep or not col.strip() or direction.strip().lower() not in directions:
        raise NasError(f"objective {text!r}: expected COLUMN:max or COLUMN:min")
    return Objective(col.strip(), directions[direction.strip().lower()])


def parse_budget(text: str) -> Budget:
    """'COL<=X' or 'COL>=X' -> Budget; NasError on anything else."""
    m = re.fullmatch(r"\s*(.+?)\s*(<=|>=)\s*(\S+)\s*", str(text))
    try:
        limit = float(m.group(3)) if m else math.nan
    except ValueError:
        limit = math.nan
    if not m or not math.isfinite(limit):
        raise NasError(f"budget {text!r}: expected COLUMN<=NUMBER or COLUMN>=NUMBER")
    return Budget(m.group(1), max=limit) if m.group(2) == "<=" else Budget(m.group(1), min=limit)


# --- the table and its space --------------------------------------------------------------
@dataclass(frozen=True)
class Space:
    """The search space: the distinct values of each choice column (no metrics)."""

    names: tuple[str, ...]
    values: tuple[tuple[str, ...], ...]

    @property
    def size(self) -> int:
        """Number of configs in the product of the choice values."""
        return math.prod(len(v) for v in self.values)

    def enumerate(self) -> np.ndarray:
        """Every config as rows of value indices, (size, n_columns)."""
        grids = np.meshgrid(*[np.arange(len(v)) for v in self.values], indexing="ij")
        return np.stack([g.ravel() for g in grids], axis=1).astype(np.int64)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """n configs drawn uniformly with replacement, (n, n_columns)."""
        return np.stack([rng.integers(len(v), size=n) for v in self.values], axis=1).astype(np.int64)

    def one_hot(self, configs: np.ndarray) -> np.ndarray:
        """One-hot features of configs (n, n_columns) -> (n, total number of values)."""
        configs = np.asarray(configs, np.int64).reshape(-1, len(self.names))
        offsets = np.cumsum([0, *[len(v) for v in self.values[:-1]]])
        X = np.zeros((len(configs), sum(len(v) for v in self.values)))
        X[np.arange(len(configs))[:, None], configs + offsets] = 1.0
        return X

    def describe(self, config: Config, typed: bool = False) -> dict[str, Any]:
        """Column -> value of a config, as spelled in the table (`typed`: numbers in a column of numbers
        as JSON numbers, 8 as an int and 8.0 as a float)."""
        if typed:
            return {n: self.typed_values(i)[c] for i, (n, c) in enumerate(zip(self.names, config, strict=True))}
        return {n: v[i] for n, v, i in zip(self.names, self.values, config, strict=True)}

    def typed_values(self, column: int) -> tuple[Any, ...]:
        """A column's values, as numbers when every one of them but absent ones (blank, NA) is a number,
        else as spelled."""
        keys = _number_keys(self.values[column])
        return self.values[column] if keys is None else tuple(keys)


@dataclass(frozen=True)
class Table:
    """A loaded table: its space, each row's config and the objective and budget columns."""

    path: str
    space: Space
    configs: np.ndarray  # (n_rows, n_choices) value indices, duplicates removed
    metrics: Mapping[str, np.ndarray]  # objective and budget columns, aligned with configs
    objectives: tuple[Objective, ...]
    budgets: tuple[Budget, ...]
    duplicates: int

    def feasible_mask(self) -> np.ndarray:
        """Rows meeting every budget."""
        ok = np.ones(len(self.configs), bool)
        for b in self.budgets:
            v = self.metrics[b.metric]
            ok &= (v <= b.max) if b.max is not None else (v >= b.min)
        return ok

    def signed(self) -> np.ndarray:
        """Objective matrix where smaller is better, (n_rows, n_objectives)."""
        return np.stack([objective_sign(o) * self.metrics[o.metric] for o in self.objectives], axis=1)


def objective_sign(o: Objective) -> float:
    """-1 for an objective to maximise, 1 to minimise: signed values are smaller-is-better."""
    return -1.0 if o.direction == "maximize" else 1.0


def load_table(path: str | Path, objectives: Sequence[str | Objective], budgets: Sequence[str | Budget] = (),
               choices: Sequence[str] | None = None) -> Table:
    """Read a CSV table; choice columns default to every column that is no objective or budget."""
    objs = tuple(o if isinstance(o, Objective) else parse_objective(o) for o in objectives)
    buds = tuple(b if isinstance(b, Budget) else parse_budget(b) for b in budgets)
    if not objs:
        raise NasError("at least one objective is needed (COLUMN:max or COLUMN:min)")
    if len(objs) > 4:
        raise NasError(f"at most 4 objectives are supported, got {len(objs)}")
    named = [o.metric for o in objs]
    if len(set(named)) != len(named):
        raise NasError(f"objective column {next(m for m in named if named.count(m) > 1)!r} is given twice")
    t = read_csv(path)
    header = t.header  # names and cells come stripped (nas.csvfile.read_csv)
    metric_cols = list(dict.fromkeys([o.metric for o in objs] + [b.metric for b in buds]))
    # By default a column named as an objective or budget is a metric only; named with --choice it
    # is both (a bit-width both chosen and capped, `bits<=4`), its values known before any lookup.
    if choices is not None:
        # Stripped as the header's names are (and objectives' and budgets'); an empty one names no column.
        choices = [str(c).strip() for c in choices]
        if "" in choices:
            raise NasError("--choice: a choice column name is empty")
    choice_cols = [h for h in header if h not in metric_cols] if choices is None else list(dict.fromkeys(choices))
    if not choice_cols:
        raise NasError(f"{path}: no choice columns (every column is an objective or budget)")
    t.nameless(choice_cols, "name the choice columns with --choice")
    for c in metric_cols + choice_cols:
        if c not in header:
            raise NasError(f"column {c!r} not in {path} (columns: {', '.join(header)})")
    where = {h: i for i, h in enumerate(header)}
    metrics = {c: _numeric_column(path, c, [r[where[c]] for r in t.rows], t.lines) for c in metric_cols}
    columns = [_choice_column([r[where[c]] for r in t.rows]) for c in choice_cols]
    values = tuple(tuple(spelled.values()) for _, spelled in columns)
    configs = np.array([codes for codes, _ in columns], np.int64).T.reshape(len(t.rows), len(choice_cols))
    # Keep the first row of each duplicated config: files are usually sorted by run, first = original.
    # The rows are kept in config order, not the file's, so a shuffled file searches the same (review).
    _, first = np.unique(configs, axis=0, return_index=True)
    return Table(str(path), Space(tuple(choice_cols), values), configs[first],
                 {c: v[first] for c, v in metrics.items()}, objs, buds, len(configs) - len(first))


# Bounds every metric of a table: the scoring's ranges (worst - best) and the refit models' squares stay
# finite (1.7e308 and -1.7e308 gave a range of inf and a hypervolume of 0.5 where 0.397 was right).
MAX_METRIC = 1e150


def _numeric_column(path: str | Path, col: str, cells: list[str], lines: list[int]) -> np.ndarray:
    out = np.empty(len(cells))
    for i, cell in enumerate(cells):
        value = parse_number(cell)
        if value is None:
            raise NasError(f"column {col!r}: {cell!r} on line {lines[i]} of {path} is not a number")
        if not math.isfinite(value):
            raise NasError(f"column {col!r}: {cell!r} on line {lines[i]} of {path} is not a finite number")
        if abs(value) > MAX_METRIC:
            raise NasError(f"column {col!r}: {cell!r} on line {lines[i]} of {path} is beyond +-{MAX_METRIC:g}")
        out[i] = value
    return out


def _choice_column(cells: list[str]) -> tuple[list[int], dict[object, str]]:
    """Each cell's value index, and each value's first spelling. In a column of numbers, 8 and 8.0 are
    one value (a width written by two scripts), else two configs with the same architecture; blank or
    NA cells (an inactive layer of a conditional table) do not make it a column of text."""
    numbers = _number_keys(cells)
    # In a column of numbers every spelling of "no value" (blank, NA, nan) is one value: one inactive
    # layer, not as many configs of one architecture as a file has spellings (review).
    keys: list[object] = list(cells) if numbers is None else ["" if isinstance(k, str) else k for k in numbers]
    spelled: dict[object, str] = {}
    for key, cell in zip(keys, cells):
        spelled.setdefault(key, cell)
    # Values numbered in their own order (numbers by value, then absent or text cells by text), not as the
    # rows first show them: the same table with its rows shuffled is the same space, seed for seed (review).
    ordered = sorted(spelled, key=lambda k: (1, k, "") if isinstance(k, str) else (0, "", k))
    spelled = {key: spelled[key] for key in ordered}
    index = {key: i for i, key in enumerate(spelled)}
    return [index[k] for k in keys], spelled


# --- the oracle ---------------------------------------------------------------------------
class Oracle:
    """The only access to a table's metrics: one row per lookup, distinct lookups counted."""

    def __init__(self, table: Table):
        # Kept in a closure so that nothing but `lookup` can reach the rows.
        rows = {tuple(int(i) for i in c): r for r, c in enumerate(table.configs)}
        cols = {m: v.copy() for m, v in table.metrics.items()}

        def read(config: Config) -> dict[str, float] | None:
            r = rows.get(config)
            return None if r is None else {m: float(v[r]) for m, v in cols.items()}

        self._read = read
        self._seen: dict[Config, dict[str, float] | None] = {}

    @property
    def evaluations(self) -> int:
        """Distinct configs looked up so far."""
        return len(self._seen)

    def seen(self, config: Sequence[int]) -> bool:
        """Whether a config was already looked up (free to ask)."""
        return tuple(int(i) for i in config) in self._seen

    def lookup(self, config: Sequence[int]) -> dict[str, float] | None:
        """Metrics of a config (None when absent from the table); a new config costs one evaluation."""
        key = tuple(int(i) for i in config)
        if key not in self._seen:
            self._seen[key] = self._read(key)
        row = self._seen[key]
        return None if row is None else dict(row)

    def history(self) -> list[tuple[Config, dict[str, float] | None]]:
        """Every config looked up, in order, with its metrics (None when absent)."""
        return [(k, None if v is None else dict(v)) for k, v in self._seen.items()]


@dataclass(frozen=True)
class Problem:
    """What a strategy may know: the space, the objectives, the budgets, the evaluation budget."""

    space: Space
    objectives: tuple[Objective, ...]
    budgets: tuple[Budget, ...]
    evals: int
    seed: int
    # The configs the table has rows for (choice columns only, no metric): a strategy may keep its
    # proposals among them. None: every config of the space may be proposed.
    rows: np.ndarray | None = None


def row_feasible(row: Mapping[str, float] | None, budgets: Sequence[Budget]) -> bool:
    """Whether a looked-up config has a row (one absent from the table is infeasible) meeting every budget."""
    return row is not None and all(b.satisfied(row[b.metric]) for b in budgets)


def unseen_random(space: Space, oracle: Oracle, rng: np.random.Generator) -> Config:
    """A random config the oracle has not looked up yet."""
    for _ in range(10_000):
        c = tuple(int(i) for i in space.sample(rng, 1)[0])
        if not oracle.seen(c):
            return c
    for c in space.enumerate():  # a nearly exhausted small space: take the first unseen one
        if not oracle.seen(c):
            return tuple(int(i) for i in c)
    raise NasError("every config of the space has been evaluated")
