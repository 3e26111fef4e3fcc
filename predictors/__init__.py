"""Predictors from architecture features to accuracy or latency, with JSON files."""

from .base import Predictor
from .gbm import GBMPredictor
from .io import load, save
from .metrics import kendall_tau, mape, rmse, score, spearman, within
from .mlp import MLPEnsemblePredictor
from .registry import PREDICTORS, make
from .ridge import RidgePredictor

__all__ = [
    "Predictor",
    "PREDICTORS",
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
]
