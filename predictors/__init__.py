"""Predictors from architecture features to accuracy or latency, with JSON files."""

from .base import Predictor
from .gbm import GBMPredictor
from .gp import GPPredictor
from .io import load, save
from .lut import LUTPredictor
from .metrics import kendall_tau, mape, rmse, score, spearman, within
from .mlp import MLPEnsemblePredictor
from .registry import NEEDS_LAYER_TABLE, PREDICTORS, make
from .ridge import RidgePredictor

__all__ = [
    "Predictor",
    "PREDICTORS",
    "NEEDS_LAYER_TABLE",
    "make",
    "save",
    "load",
    "score",
    "mape",
    "kendall_tau",
    "spearman",
    "within",
    "rmse",
    "RidgePredictor",
    "MLPEnsemblePredictor",
    "GBMPredictor",
    "GPPredictor",
    "LUTPredictor",
]
