"""The one registry of predictor kinds and a factory over it."""

from __future__ import annotations

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


def make(kind: str, **options: Any) -> Predictor:
    """Build an unfitted predictor of the named kind with the given options."""
    try:
        cls = PREDICTORS[kind]
    except (KeyError, TypeError):
        known = ", ".join(sorted(PREDICTORS))
        raise ValueError(f"unknown predictor kind {kind!r}; known: {known}") from None
    return cls(**options)
