"""The choice space as data: named integer dimensions, gated by depth, with an exact JSON form."""

from __future__ import annotations

import functools
import itertools
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nas.errors import ConfigError

Config = dict[str, int]


@dataclass(frozen=True)
class Dimension:
    """One named choice; inactive when `gate` dimension's value is <= `gate_below`."""

    name: str
    choices: tuple[int, ...]
    gate: str | None = None
    gate_below: int = 0

    def __post_init__(self) -> None:
        # A list (what JSON and TOML give) is unhashable, and the space's counts are cached per dimension.
        object.__setattr__(self, "choices", tuple(self.choices))

    def active(self, config: Mapping[str, int]) -> bool:
        """Whether this dimension matters for `config` (e.g. a layer beyond the depth does not)."""
        return self.gate is None or config[self.gate] > self.gate_below

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form for JSON."""
        d: dict[str, Any] = {"name": self.name, "choices": list(self.choices)}
        if self.gate is not None:
            d["gate"] = self.gate
            d["gate_below"] = self.gate_below
        return d


@dataclass(frozen=True)
class SearchSpace:
    """An ordered set of dimensions; configs are flat dicts name -> int in canonical form."""

    dimensions: tuple[Dimension, ...]
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "dimensions", tuple(self.dimensions))
        names = [d.name for d in self.dimensions]
        position = {n: i for i, n in enumerate(names)}
        if len(position) != len(names):
            raise ConfigError("space", f"duplicate dimension names in {names}")
        for d in self.dimensions:
            if not d.choices:
                raise ConfigError(d.name, "empty choice list")
            if list(d.choices) != sorted(set(d.choices)):
                raise ConfigError(d.name, f"choices must be distinct and ascending, got {list(d.choices)}")
            if d.gate is not None and position.get(d.gate, len(names)) >= position[d.name]:
                raise ConfigError(d.name, f"gate {d.gate!r} must be an earlier dimension")

    # -- lookups -------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        """Dimension names in order."""
        return [d.name for d in self.dimensions]

    def dim(self, name: str) -> Dimension:
        """The dimension called `name`."""
        for d in self.dimensions:
            if d.name == name:
                return d
        raise KeyError(name)

    # -- configs -------------------------------------------------------------------------
    def canonical(self, config: Mapping[str, int]) -> Config:
        """Same subnet, one spelling: inactive dimensions are set to their largest choice."""
        out = {}
        for d in self.dimensions:
            out[d.name] = int(config[d.name]) if d.active({**config, **out}) else d.choices[-1]
        return out

    def validate(self, config: Mapping[str, Any]) -> Config:
        """Check `config` lies in the space and return its canonical form (ConfigError if not); the
        dimensions a config leaves inactive (layers past its depth) may be left out."""
        if not isinstance(config, Mapping):
            raise ConfigError("config", f"expected a mapping of dimension -> int, got {type(config).__name__}")
        unknown = sorted(set(config) - set(self.names))
        if unknown:
            raise ConfigError(f"config.{unknown[0]}", "unknown dimension")
        config = dict(config)
        for d in self.dimensions:
            if d.name not in config:
                if d.gate is not None and d.gate in config and not d.active(config):
                    config[d.name] = d.choices[-1]  # a layer past the depth: nothing to say about it
                    continue
                raise ConfigError(f"config.{d.name}", "missing")
            v = config[d.name]
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise ConfigError(f"config.{d.name}", f"expected an int, got {v!r}")
            if int(v) not in d.choices:  # given for an inactive layer too: a typo there is still one
                raise ConfigError(f"config.{d.name}", f"{v} is not one of {list(d.choices)}")
        return self.canonical(config)

    def largest(self) -> Config:
        """Every dimension at its largest choice."""
        return {d.name: d.choices[-1] for d in self.dimensions}

    def smallest(self) -> Config:
        """Every dimension at its smallest choice (canonical)."""
        return self.canonical({d.name: d.choices[0] for d in self.dimensions})

    def sample(self, rng: np.random.Generator) -> Config:
        """A uniformly random choice per dimension (canonical form)."""
        return self.canonical({d.name: int(rng.choice(d.choices)) for d in self.dimensions})

    def suggest(self, trial: Any) -> Config:
        """Ask an Optuna trial for every dimension (always all of them, so samplers see a fixed set)."""
        raw = {d.name: trial.suggest_categorical(d.name, list(d.choices)) for d in self.dimensions}
        return self.canonical(raw)

    def gate_settings(self) -> Iterator[tuple[Config, list[Dimension]]]:
        """Each distinct setting of the gate dimensions, as a canonical config with every other dimension
        at its largest choice, and the dimensions that setting leaves active (besides the gates)."""
        gates = [d for d in self.dimensions if any(o.gate == d.name for o in self.dimensions)]
        for values in itertools.product(*[g.choices for g in gates]):
            partial = dict(zip([g.name for g in gates], values))
            # An inactive gate is pinned to its largest choice in canonical form: count it once.
            if any(not g.active(partial) and partial[g.name] != g.choices[-1] for g in gates):
                continue
            base = {**self.largest(), **partial}
            yield base, [d for d in self.dimensions if d.name not in partial and d.active(base)]

    def size(self) -> int:
        """Number of distinct subnets (canonical configs), counted gate by gate: a dimension is active by its
        own gate's value alone, so each gate's subtree counts apart (a walk over every setting of the gates
        took 2^stages steps: a 40-stage CNN never finished `nas validate`)."""
        children: dict[str, list[Dimension]] = {d.name: [] for d in self.dimensions}
        for d in self.dimensions:
            if d.gate is not None:
                children[d.gate].append(d)

        @functools.cache
        def count(d: Dimension, active: bool) -> int:
            # Inactive, a dimension is pinned to its largest choice (canonical form): one value.
            values = d.choices if active else d.choices[-1:]
            return sum(math.prod(count(c, c.active({d.name: v})) for c in children[d.name]) for v in values)

        return math.prod(count(d, True) for d in self.dimensions if d.gate is None)

    def enumerate(self, limit: int = 1_000_000) -> list[Config]:
        """Every distinct canonical config (refuses spaces larger than `limit`)."""
        if (size := self.size()) > limit:
            raise ConfigError("space", f"{size} configs is more than the enumeration limit {limit}")
        # Per gate setting, only the dimensions it leaves active: the raw product of every dimension
        # can be many times the number of distinct subnets.
        return [{**base, **dict(zip([d.name for d in free], combo))}
                for base, free in self.gate_settings()
                for combo in itertools.product(*[d.choices for d in free])]

    # -- features ------------------------------------------------------------------------
    def feature_names(self) -> list[str]:
        """Names of the columns of `encode`."""
        return list(self.names)

    def encode(self, config: Mapping[str, int]) -> np.ndarray:
        """Feature vector: each value scaled by its dimension's largest choice, 0 where inactive."""
        return np.array(
            # A largest choice of 0 (every choice <= 0) divides by 1.
            [config[d.name] / (d.choices[-1] or 1) if d.active(config) else 0.0 for d in self.dimensions],
            dtype=np.float64,
        )

    def encode_many(self, configs: list[Mapping[str, int]]) -> np.ndarray:
        """Stacked `encode` of several configs, shape (n, n_features)."""
        return np.stack([self.encode(c) for c in configs]) if configs else np.zeros((0, len(self.dimensions)))

    # -- JSON ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain-data form with an exact round trip through `from_dict`."""
        return {"dimensions": [d.to_dict() for d in self.dimensions], "meta": dict(self.meta)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SearchSpace:
        """Inverse of `to_dict` (ConfigError for values it never writes, rather than coercing them)."""
        if not isinstance(data, Mapping) or not isinstance(data.get("dimensions"), list):
            raise ConfigError("space", "expected a table with a list of dimensions")
        if not isinstance(data.get("meta", {}), Mapping):
            raise ConfigError("space.meta", f"expected a table, got {data['meta']!r}")
        dims = []
        for i, d in enumerate(data["dimensions"]):
            where = f"space.dimensions[{i}]"
            if not isinstance(d, dict) or not isinstance(d.get("name"), str):
                raise ConfigError(where, f"expected a table with a string name, got {d!r}")
            choices, gate, below = d.get("choices"), d.get("gate"), d.get("gate_below", 0)
            if not isinstance(choices, list) or not all(_is_int(c) for c in choices):
                raise ConfigError(f"{where}.choices", f"expected a list of integers, got {choices!r}")
            if not (gate is None or isinstance(gate, str)) or not _is_int(below):
                raise ConfigError(where, f"expected a string gate and an integer gate_below, got {gate!r}, {below!r}")
            dims.append(Dimension(d["name"], tuple(int(c) for c in choices), gate, int(below)))
        return cls(tuple(dims), dict(data.get("meta", {})))


def _is_int(v: Any) -> bool:
    """An integer as JSON holds one (not a bool, which Python counts as an int)."""
    return isinstance(v, int | np.integer) and not isinstance(v, bool)


def is_bit_width(name: str) -> bool:
    """Whether a search dimension is a bit-width (weights `bits.*` or activations `abits.*`)."""
    return name.startswith(("bits.", "abits."))


def config_key(config: Mapping[str, int]) -> str:
    """The canonical JSON text of a config: one string per subnet, usable as a dict key."""
    return json.dumps({k: int(v) for k, v in config.items()}, sort_keys=True, separators=(",", ":"))

