"""One registry from family name to family object (no `if name == ...` chains elsewhere)."""

from __future__ import annotations

from typing import Any

from nas.errors import ConfigError
from supernets.cnn import CNNFamily
from supernets.mlp import MLPFamily
from supernets.transformer import TransformerFamily

FAMILIES: dict[str, Any] = {"mlp": MLPFamily(), "cnn": CNNFamily(), "transformer": TransformerFamily()}


def get_family(name: Any) -> Any:
    """The family registered as `name` (ConfigError naming `model.family` if unknown)."""
    if name is None:
        raise ConfigError("model.family", f"missing (one of {sorted(FAMILIES)})")
    if not isinstance(name, str) or name not in FAMILIES:
        raise ConfigError("model.family", f"unknown family {name!r} (known: {sorted(FAMILIES)})")
    return FAMILIES[name]
