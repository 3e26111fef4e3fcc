"""Every metric of a batch of configs without training or timing: predictors for predicted
metrics (mean and std), exact counts for the rest."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

import predictors
from nas.context import Context
from nas.errors import PredictorFileError
from nas.features import features, predicted_metrics
from nas.fit import predictor_path
from nas.measure import exact_metrics
from nas.metrics import METRICS
from search_spaces import Config

CHUNK = 4096  # configs per predictor call


class Oracle:
    """Loads fitted predictors once (default: the fit stage's); `evaluate` is then cheap and batched."""

    def __init__(self, ctx: Context, folder: Path | None = None):
        if folder is None:
            ctx.require("fit")
        self.ctx = ctx
        self.models, self.paths = {}, {}
        for metric in predicted_metrics(ctx):
            names, _ = features(ctx, metric, [ctx.space.largest()])
            self.paths[metric] = path = predictor_path(folder or ctx.path("fit"), metric)
            self.models[metric], _ = predictors.load(path, feature_names=names)

    def evaluate(self, configs: Sequence[Config]) -> dict[str, np.ndarray]:
        """metric -> values for each config; predicted metrics also give `<metric>_std`, and those
        predicted in log space (latency) `<metric>_logstd`, the std of the log, for their quantiles."""
        if len(configs) > CHUNK:
            # A degree-2 ridge's design matrix over a whole space would not fit in memory
            # (transformer space: 9,180 features x 367,902 configs = 25 GiB).
            parts = [self.evaluate(configs[i:i + CHUNK]) for i in range(0, len(configs), CHUNK)]
            return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        out: dict[str, np.ndarray] = {}
        for metric, model in self.models.items():
            _, X = features(self.ctx, metric, configs)
            try:
                fitted_mean, fitted_std = model.predict_fitted(X)
            except PredictorFileError as e:
                raise PredictorFileError(f"{self.paths[metric]}: {e}") from None
            mean, std = model.to_target(fitted_mean, fitted_std)
            if not (np.isfinite(mean).all() and np.isfinite(std).all() and np.isfinite(fitted_std).all()):
                raise PredictorFileError(f"{self.paths[metric]}: predicts a value that is not a finite number "
                                         f"for {metric} (refit with `nas fit --force`)")
            out[metric], out[f"{metric}_std"] = mean, std
            if model.log_target:
                out[f"{metric}_logstd"] = fitted_std
        exact = [exact_metrics(self.ctx, c) for c in configs]
        for name in METRICS:
            if name not in out:
                out[name] = np.array([e[name] for e in exact], np.float64)
        return out
