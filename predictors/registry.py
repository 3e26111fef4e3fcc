"""The one registry of predictor kinds and a factory over it."""

from __future__ import annotations

import inspect
from typing import Any

from .base import Predictor
from .gbm import GBMPredictor
from .gp import GPPredictor
from .lut import LUTPredictor
from .mlp import MLPEnsemblePredictor
from .ridge import RidgePredictor

PREDICTORS: dict[str, type[Predictor]] = {
    cls.kind: cls for cls in (RidgePredictor, MLPEnsemblePredictor, GBMPredictor, GPPredictor, LUTPredictor)
}
# Kinds whose first feature column must be a summed per-layer latency: latency only, never auto-picked.
NEEDS_LAYER_TABLE = (LUTPredictor.kind,)


def make(kind: str, *, seed: int | None = None, **options: Any) -> Predictor:
    """Build an unfitted predictor of the named kind; `seed` reaches the kinds whose fit is random."""
    try:
        cls = PREDICTORS[kind]
    except (KeyError, TypeError):
        known = ", ".join(sorted(PREDICTORS))
        raise ValueError(f"unknown predictor kind {kind!r}; known: {known}") from None
    if seed is not None and "seed" in inspect.signature(cls).parameters:
        options["seed"] = seed
    return cls(**options)
