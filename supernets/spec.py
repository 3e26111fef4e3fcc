"""Reading a family's `[model]` table: choice lists, per-layer lists, bit-widths, positive ints.

Every family parses its own keys with these, so a bad value is reported the same way everywhere
(ConfigError naming the key)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nas.errors import ConfigError, count_text, dotted, table_error
from supernets.quant import SUPPORTED_BITS


def choice_list(value: Any, key: str) -> tuple[int, ...]:
    """A non-empty list of distinct positive ints, sorted."""
    if not isinstance(value, list):
        raise ConfigError(key, f"expected a list of ints, got {value!r}")
    if not value:
        raise ConfigError(key, "empty choice list")
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(key, f"expected ints, got {v!r}")
        if v < 1:
            raise ConfigError(key, f"choices must be positive, got {v}")
    if len(set(value)) != len(value):
        raise ConfigError(key, f"duplicate choices in {value}")
    return tuple(sorted(value))


def per_layer(value: Any, n: int, key: str) -> list[tuple[int, ...]]:
    """One list (same for every layer) or a list of `n` lists (one per layer)."""
    if isinstance(value, list) and value and all(isinstance(v, list) for v in value):
        if len(value) != n:
            raise ConfigError(key, f"expected {n} per-layer lists, got {len(value)}")
        return [choice_list(v, f"{key}[{i}]") for i, v in enumerate(value)]
    return [choice_list(value, key)] * n


def per_layer_bits(value: Any, n: int, key: str) -> list[tuple[int, ...]]:
    """Per-layer bit-width choices (one list for all layers, or one per layer), all supported."""
    return [check_bits(b, key) for b in per_layer(value, n, key)]


def check_bits(bits: tuple[int, ...], key: str) -> tuple[int, ...]:
    """`bits` if every one is a supported bit-width (32 = float)."""
    bad = [b for b in bits if b not in SUPPORTED_BITS]
    if bad:
        raise ConfigError(key, f"unsupported bit-width {bad[0]} (supported: {list(SUPPORTED_BITS)})")
    return bits


MAX_SIZE = 1 << 20  # any width, channel count or patch: beyond it a typo, not a model that fits in memory
MAX_LAYERS = 1024  # layers of a network (max_depth); every layer is a searched dimension or more


def positive_int(table: Mapping[str, Any], key: str, prefix: str = "model", default: int | None = None,
                 maximum: int = MAX_SIZE) -> int:
    """table[key] as an int in 1..maximum (`default` when absent and a default is given)."""
    v = table.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ConfigError(f"{prefix}.{key}", f"expected a positive int, got {v!r}")
    if v > maximum:
        raise ConfigError(f"{prefix}.{key}", f"{count_text(v)} is more than this project supports ({maximum:,})")
    return v


def known_keys(table: Mapping[str, Any], known: set[str], prefix: str, family: str) -> None:
    """Refuse keys a family does not read (a typo must not be silently ignored)."""
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(dotted(prefix, unknown[0]), f"unknown key for family {family!r} (known: {sorted(known)})")


def space_table(model: Mapping[str, Any], required: set[str], optional: set[str], family: str) -> Mapping[str, Any]:
    """The `[model.space]` table, with its required keys present and no unknown ones."""
    space = model.get("space")
    if not isinstance(space, dict):
        raise table_error("model.space", space)
    known_keys(space, required | optional, "model.space", family)
    for k in sorted(required):
        if k not in space:
            raise ConfigError(f"model.space.{k}", "missing")
    return space
