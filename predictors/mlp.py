"""An ensemble of small numpy MLPs; the spread across members is the uncertainty."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from nas.errors import PredictorFileError

from ._arrays import read_array, read_sigma
from .base import CV_FOLDS, Predictor, check_positive_float, check_positive_int, out_of_fold_rms

Layer = tuple[np.ndarray, np.ndarray]


def _forward(layers: list[Layer], Z: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Return the output (n,) and the post-activation inputs of every layer."""
    acts = [Z]
    h = Z
    for W, b in layers[:-1]:
        h = np.tanh(h @ W + b)
        acts.append(h)
    W, b = layers[-1]
    return (h @ W + b)[:, 0], acts


def _init(rng: np.random.Generator, sizes: list[int]) -> list[Layer]:
    # Glorot-normal suits tanh; a zero output bias matches the centred target.
    return [
        (rng.normal(0.0, np.sqrt(2.0 / (a + b)), size=(a, b)), np.zeros(b))
        for a, b in zip(sizes[:-1], sizes[1:], strict=True)
    ]


def _train(
    layers: list[Layer], Z: np.ndarray, t: np.ndarray, epochs: int, lr: float, wd: float, huber: float
) -> list[Layer]:
    """Full-batch Adam on the Huber loss with decoupled weight decay.

    The Huber loss (quadratic within ``huber`` standardised units of the
    target, linear beyond; 0 means plain squared error) caps the pull of any
    single row. Measured tables contain the odd outlier (a latency timed 40x
    too slow); under squared error a net of this size memorises it and bends
    its whole neighbourhood toward it, which a log target then turns into
    predictions off by orders of magnitude.
    """
    params = [p for layer in layers for p in layer]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    b1, b2, eps = 0.9, 0.999, 1e-8
    n = len(t)
    for step in range(1, epochs + 1):
        out, acts = _forward(layers, Z)
        resid = out - t
        if huber > 0:
            resid = np.clip(resid, -huber, huber)
        delta = (2.0 / n) * resid[:, None]
        grads: list[np.ndarray] = []
        for k in range(len(layers) - 1, -1, -1):
            W, _ = layers[k]
            gW = acts[k].T @ delta
            gb = delta.sum(axis=0)
            grads = [gW, gb, *grads]
            if k:
                delta = (delta @ W.T) * (1.0 - acts[k] ** 2)
        # Cosine decay lets the late steps settle instead of oscillating.
        step_lr = lr * 0.5 * (1.0 + np.cos(np.pi * (step - 1) / epochs))
        for i, (p, g) in enumerate(zip(params, grads, strict=True)):
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            mhat = m[i] / (1 - b1**step)
            vhat = v[i] / (1 - b2**step)
            if p.ndim == 2:
                p *= 1.0 - step_lr * wd
            p -= step_lr * mhat / (np.sqrt(vhat) + eps)
    return layers


class MLPEnsemblePredictor(Predictor):
    """Ensemble of tanh MLPs from different seeds; std is the member spread combined with the
    out-of-fold error of single members (5-fold; members agree with each other far more closely than
    with fresh measurements, so their spread alone was 3-5x narrower than the held-out error).

    Deterministic for a given ``seed``. Each member is trained full-batch
    with Adam, cosine learning-rate decay and decoupled weight decay on a
    Huber loss (see ``_train``).

    ``weight_decay`` is decoupled (AdamW-style): each step shrinks weights by
    ``lr * weight_decay``, so it must be O(1) to regularise at all with lr
    around 1e-2 (1e-3 shrank weights by 0.3% over a whole run, leaving ~2k
    parameters free to interpolate 100-odd noisy rows).
    """

    kind = "mlp_ensemble"

    def __init__(
        self,
        *,
        n_members: int = 5,
        hidden: list[int] | tuple[int, ...] = (32, 32),
        epochs: int = 600,
        lr: float = 0.01,
        weight_decay: float = 1.0,
        huber_delta: float = 1.0,
        seed: int = 0,
        log_target: bool = False,
    ) -> None:
        super().__init__(log_target=log_target)
        self.n_members = check_positive_int("n_members", n_members)
        if not isinstance(hidden, (list, tuple)) or not hidden:
            raise ValueError(f"hidden must be a non-empty list of ints, got {hidden!r}")
        self.hidden = [check_positive_int("hidden size", h) for h in hidden]
        self.epochs = check_positive_int("epochs", epochs)
        self.lr = check_positive_float("lr", lr)
        self.weight_decay = check_positive_float("weight_decay", weight_decay, allow_zero=True)
        self.huber_delta = check_positive_float("huber_delta", huber_delta, allow_zero=True)
        self.seed = check_positive_int("seed", seed, minimum=0)
        self.members: list[list[Layer]] = []
        self.sigma = 0.0

    def _options(self) -> dict[str, Any]:
        return {
            "n_members": self.n_members,
            "hidden": list(self.hidden),
            "epochs": self.epochs,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "huber_delta": self.huber_delta,
            "seed": self.seed,
        }

    def _sizes(self, n_features: int) -> list[int]:
        return [n_features, *self.hidden, 1]

    def _fit(self, Z: np.ndarray, t: np.ndarray) -> None:
        # The first n_members children are the members' seeds as before; the rest seed the fold nets.
        seeds = np.random.SeedSequence(self.seed).spawn(self.n_members + CV_FOLDS)
        sizes = self._sizes(Z.shape[1])

        def net(s: np.random.SeedSequence, Zs: np.ndarray, ts: np.ndarray) -> list[Layer]:
            return _train(_init(np.random.default_rng(s), sizes), Zs, ts, self.epochs, self.lr, self.weight_decay,
                          self.huber_delta)

        self.members = [net(s, Z, t) for s in seeds[: self.n_members]]
        # One net per fold (not a whole ensemble: 5x cheaper, and a single net's error slightly
        # over-states the ensemble mean's, the safe side for a budget met "with confidence").
        fold_seeds = seeds[self.n_members:]
        self.sigma = out_of_fold_rms(Z, t, min(CV_FOLDS, len(t) // 2), self.seed + 1, lambda k, train, held: _forward(
            net(fold_seeds[k], Z[train], t[train]), Z[held])[0])

    def _predict(self, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        outs = np.stack([_forward(layers, Z)[0] for layers in self.members])
        return outs.mean(axis=0), np.sqrt(outs.var(axis=0) + self.sigma**2)

    def _params(self) -> dict[str, Any]:
        return {"members": [[{"W": W.tolist(), "b": b.tolist()} for W, b in layers] for layers in self.members],
                "sigma": self.sigma}

    def _load_params(self, params: Mapping[str, Any], n_features: int) -> None:
        members = params.get("members")
        if not isinstance(members, list) or len(members) != self.n_members:
            raise PredictorFileError(f"model 'members' must be a list of {self.n_members} networks")
        self.sigma = read_sigma(params)  # files written before it was kept: the member spread alone, as then
        sizes = self._sizes(n_features)
        self.members = []
        for i, layers in enumerate(members):
            if not isinstance(layers, list) or len(layers) != len(sizes) - 1:
                raise PredictorFileError(f"model member {i} must have {len(sizes) - 1} layers")
            self.members.append(
                [
                    (
                        read_array(layer, "W", (a, b), where=f"members[{i}][{k}]"),
                        read_array(layer, "b", (b,), where=f"members[{i}][{k}]"),
                    )
                    for k, (layer, a, b) in enumerate(zip(layers, sizes[:-1], sizes[1:], strict=True))
                ]
            )
