"""Refit's own surrogate: kernel ridge on configs read as a Gaussian process, its kernels built from how
much two configs share column by column (the same value; on a column of numbers, also near values), or
from the numbers themselves."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from nas.table import Space

# Length scales of the rank kernel on columns of numbers (ranks scaled to 0..1). Each is one more
# similarity the model chooses among by leave-one-out error, one-hot being the first.
ORDINAL_SCALES = (1.0, 2.0)
# Degrees of the polynomial kernel on the values themselves (the last similarity variant).
VALUE_DEGREES = (2, 3, 4)
_BLOCK = 4096  # pool rows per block of the pool-evaluated kernel


class Similarity:
    """Per-column similarity of two values, in variants: 0 is one-hot (1 for the same value, else 0);
    each further variant, on every column of numbers, is exp(-|r_a - r_b| / ell) on the values' ranks r
    scaled to 0..1 (a width of 64 is nearer 128 than 16 is), one-hot on the other columns.

    With `magnitude`, a last variant reads each column of numbers as its values themselves, scaled by
    the largest in size (0 and a flag for an inactive layer or a blank cell), other columns one-hot: its dot
    product feeds a polynomial kernel (`KernelModel`), in which a size (width x width x bits summed
    over layers) or a count of operations is a low-degree polynomial.

    Every column has one more value, index len(values), for an inactive layer (a layer below the
    depth), similar only to itself (on the magnitude variant: 0). A value that is no number in a
    column of numbers (a blank cell) is similar only to itself too (likewise). Each per-column matrix
    S is positive semi-definite, and so is S * S (element-wise), so both factor as feature maps: m =
    sum of the columns' similarities and q = sum of their squares are dot products, and the kernels
    of `KernelModel` stay positive semi-definite.
    """

    def __init__(self, space: Space, ordinal: bool = True, magnitude: bool = True):
        self.n_columns = len(space.names)
        eye = [np.eye(len(vals) + 1) for vals in space.values]
        self._maps: list[tuple[list[np.ndarray], list[np.ndarray]] | None] = [None]  # one-hot: no map needed
        self._values: list[np.ndarray] | None = None  # the magnitude variant's feature rows per column
        self._offsets = np.cumsum([0, *[len(vals) + 1 for vals in space.values[:-1]]])
        self._width = sum(len(vals) + 1 for vals in space.values)
        typed = [space.typed_values(k) for k in range(self.n_columns)]
        ranks = [_ranks(t) for t in typed]
        if not any(r is not None for r in ranks):
            return
        for ell in ORDINAL_SCALES if ordinal else ():
            sims = [e if r is None else _rank_similarity(r, ell) for e, r in zip(eye, ranks, strict=True)]
            self._maps.append(([_factor(S) for S in sims], [_factor(S * S) for S in sims]))
        if magnitude:
            self._values = [e if r is None else _value_features(t) for e, r, t in zip(eye, ranks, typed, strict=True)]

    @property
    def magnitude_variant(self) -> int | None:
        """Index of the variant that reads values as numbers (the last), None without one."""
        return None if self._values is None else len(self._maps)

    @property
    def n_variants(self) -> int:
        """How many similarities the model chooses among (1 where no column holds numbers)."""
        return len(self._maps) + (self._values is not None)

    def features(self, codes: np.ndarray, variant: int) -> tuple[np.ndarray, np.ndarray]:
        """Feature rows whose dot products give m and q for configs of value indices `codes`
        (inactive = len(values)); one-hot for variant 0, where both are the same array."""
        codes = np.asarray(codes, np.int64).reshape(-1, self.n_columns)
        if variant == self.magnitude_variant:
            assert self._values is not None
            X = np.hstack([f[codes[:, k]] for k, f in enumerate(self._values)])
            return X, X
        maps = self._maps[variant]
        if maps is None:
            X = np.zeros((len(codes), self._width))
            X[np.arange(len(codes))[:, None], codes + self._offsets] = 1.0
            return X, X
        return tuple(np.hstack([f[codes[:, k]] for k, f in enumerate(fs)]) for fs in maps)  # type: ignore[return-value]


def _ranks(typed: tuple) -> np.ndarray | None:
    """Rank of each numeric value scaled to 0..1, NaN for a value that is no number; None for a
    column with fewer than two numbers."""
    numbers = [i for i, v in enumerate(typed) if not isinstance(v, str)]
    if len(numbers) < 2:
        return None
    order = np.argsort([float(typed[i]) for i in numbers], kind="stable")
    ranks = np.full(len(typed), np.nan)
    ranks[np.array(numbers)[order]] = np.arange(len(numbers)) / (len(numbers) - 1)
    return ranks


def _value_features(typed: tuple) -> np.ndarray:
    """(L + 1, 2) rows for a column of numbers: the value over the largest in size, and a flag for no
    number (a blank cell, or index L: an inactive layer), whose value is 0 (a layer that is not there
    adds nothing to a sum of widths). Without the flag the model fitted random rows better and searched
    worse (quickstart-space tables, 100 evaluations, 10 seeds: hv_ratio 0.970 and 0.970 against 0.975
    and 0.978)."""
    out = np.zeros((len(typed) + 1, 2))
    for i, v in enumerate(typed):
        number = not isinstance(v, str) and np.isfinite(float(v))  # an "inf" choice has a rank, not a size
        out[i] = (float(v), 0.0) if number else (0.0, 1.0)
    out[-1, 1] = 1.0
    top = np.max(np.abs(out[:, 0]))
    out[:, 0] /= top if top > 0 else 1.0
    return out


def _rank_similarity(ranks: np.ndarray, ell: float) -> np.ndarray:
    """(L + 1, L + 1) similarity: Laplace kernel on ranks among numbers, identity elsewhere."""
    L = len(ranks)
    S = np.eye(L + 1)
    num = np.flatnonzero(~np.isnan(ranks))
    S[np.ix_(num, num)] = np.exp(-np.abs(ranks[num, None] - ranks[None, num]) / ell)
    return S


def _factor(S: np.ndarray) -> np.ndarray:
    """F with F @ F.T = S for a positive semi-definite S (rows indexed by value)."""
    w, U = np.linalg.eigh(S)
    return U * np.sqrt(np.clip(w, 0.0, None))


class Overlap:
    """What pairs of configs share, per similarity variant: m (sum over columns of the values'
    similarity) and q (sum of its squares), between the evaluated configs and between pool configs
    and evaluated ones. On one-hot (variant 0) m = q = the number of columns the two configs share,
    as whole numbers; the rest are computed when a model first asks for them."""

    def __init__(self, similarity: Similarity, train: np.ndarray, pool: np.ndarray | None = None):
        self.similarity = similarity
        self._codes = {"train": np.asarray(train, np.int64),
                       "pool": None if pool is None else np.asarray(pool, np.int64)}
        self._features: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}
        self._train: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    @property
    def n_variants(self) -> int:
        """Similarity variants to choose among."""
        return self.similarity.n_variants

    @property
    def n_pool(self) -> int:
        """Number of pool configs (0 without a pool)."""
        pool = self._codes["pool"]
        return 0 if pool is None else len(pool)

    def _feat(self, which: str, variant: int) -> tuple[np.ndarray, np.ndarray]:
        key = (which, variant)
        if key not in self._features:
            codes = self._codes[which]
            if codes is None:
                raise ValueError("this overlap has no pool configs")
            self._features[key] = self.similarity.features(codes, variant)
        return self._features[key]

    def _pair(self, A: tuple[np.ndarray, np.ndarray], B: tuple[np.ndarray, np.ndarray],
              variant: int) -> tuple[np.ndarray, np.ndarray]:
        if variant == 0:
            m = np.rint(A[0] @ B[0].T).astype(np.intp)
            return m, m
        m = A[0] @ B[0].T
        return m, (m if A[1] is A[0] and B[1] is B[0] else A[1] @ B[1].T)

    def train(self, variant: int) -> tuple[np.ndarray, np.ndarray]:
        """(m, q) between evaluated configs, each (n, n)."""
        if variant not in self._train:
            F = self._feat("train", variant)
            self._train[variant] = self._pair(F, F, variant)
        return self._train[variant]

    def pool_self(self, variant: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(m, q) of each pool config at `rows` with itself, each (len(rows),): the number of columns on
        every similarity variant, a config's own size on the magnitude one."""
        P = self._feat("pool", variant)
        return np.sum(P[0][rows] ** 2, axis=1), np.sum(P[1][rows] ** 2, axis=1)

    def pool(self, variant: int, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(m, q) between pool configs (those at `rows`, or all) and evaluated configs, each (N, n)."""
        P = self._feat("pool", variant)
        if rows is not None:
            P = (P[0][rows], P[1][rows])
        return self._pair(P, self._feat("train", variant), variant)


class KernelModel:
    """Kernel ridge read as a Gaussian process on configs, for mean and uncertainty over the space.

    Every kernel here is a function of m and q of `Overlap` (on one-hot, m = q = the number of columns
    two configs share):

    - degree-2 polynomial, (1 + m + w (m^2 - q) / 2) normalised to 1 at m = q = d: on one-hot, ridge on
      every value and every pair of values of different columns, in dual form (an n x n solve
      instead of a features x features one);
    - exponentiated Hamming, exp(-theta (d - m)) = the product over columns of exp(-theta (1 - s)):
      interactions of every order with geometric weights, for tables where a choice only matters given
      others (ops on dead edges of a cell). Off by default: no gain measured on generated cell tables
      (benchmarks/RESULTS.md, issue 5);
    - on the magnitude variant (columns of numbers read as numbers, `Similarity`), the polynomial
      (1 + m)^p of degree p in `VALUE_DEGREES`, divided by its mean over the evaluated configs: a
      network's size, a sum over layers of width x width x bits, is one of degree 3. Its k(x, x)
      differs from config to config.

    As a GP it gives a per-config posterior std (high where few evaluated configs share its values).
    The similarity variant, the kernel and the ridge alpha are chosen by leave-one-out error (`loo_mse`).
    (A log scale for positive metrics, chosen the same way, was tried: level on the quickstart-space table,
    worse on NAS-Bench-Graph's photo and pubmed at 300 evaluations, 0.987 / 0.946 against 0.991 / 0.956.)
    """

    _POLY_WEIGHTS = (0.0, 0.3, 1.0, 3.0)
    _THETAS = (0.5, 1.0, 1.5, 2.5)
    _ALPHAS = np.logspace(-4, 1, 16)

    def __init__(self, n_columns: int, family: str = "poly2"):
        self.d = n_columns
        self._norms: dict[tuple[str, float], float] = {}  # the magnitude kernels' divisors
        poly = [("poly", w) for w in self._POLY_WEIGHTS]
        expo = [("expo", t) for t in self._THETAS]
        self.kernels: list[tuple[str, float]] = {"poly2": poly, "hamming": expo, "mixed": poly + expo}[family]
        m = np.arange(n_columns + 1, dtype=float)
        self._tables = {k: self._formula(k, m, m) for k in self.kernels}  # on one-hot: looked up by m
        self.kernel, self.variant, self.alpha, self.n_selected = self.kernels[min(2, len(self.kernels) - 1)], 0, 0.1, 0

    def _formula(self, kernel: tuple[str, float], m: np.ndarray, q: np.ndarray) -> np.ndarray:
        form, p = kernel
        d = self.d
        if form == "value":
            K = m + 1.0
            K **= p
            K /= self._norms.get(kernel, 1.0)
            return K
        # In place: the pool's (N, n) arrays are the largest a round holds.
        if form == "poly":
            K = m * m
            K -= q
            K *= p / 2
            K += m
            K += 1.0
            K /= 1.0 + d + p * d * (d - 1) / 2
            return K
        K = m - d
        K *= p
        return np.exp(K, out=K)

    def gram(self, kernel: tuple[str, float], m: np.ndarray, q: np.ndarray) -> np.ndarray:
        """The kernel's values for pairs of overlap (m, q); k(x, x) = 1."""
        if np.issubdtype(m.dtype, np.integer):
            return self._tables[kernel][m]
        return self._formula(kernel, m, q)

    def fit(self, overlap: Overlap, y: np.ndarray) -> None:
        """Fit on the evaluated configs' overlap and targets y; re-select the kernel as n grows."""
        from scipy.linalg import cho_factor, cho_solve

        y = np.asarray(y, float)
        self.mu = float(y.mean())
        # Targets scaled to at most 1 in size: leave-one-out errors of metrics near 1e-160 underflowed to 0
        # and of metrics near 1e160 overflowed, and the selection kept its defaults (review).
        self.unit = float(np.max(np.abs(y - self.mu))) or 1.0
        t = (y - self.mu) / self.unit
        # Hyper-parameters move little between close n, and little at all past a few hundred
        # configs, where each selection (one eigendecomposition per kernel) costs the most.
        if len(y) >= 1.3 * self.n_selected and (self.n_selected == 0 or len(y) <= 500):
            best = (np.inf, self.kernel, self.variant, self.alpha)
            for variant in range(overlap.n_variants):
                m, q = overlap.train(variant)
                for kernel in self._kernels(overlap, variant, m):
                    loo = loo_mse(self.gram(kernel, m, q), t, self._ALPHAS)
                    i = int(np.argmin(loo))
                    if loo[i] < best[0]:
                        best = (float(loo[i]), kernel, variant, float(self._ALPHAS[i]))
            _, self.kernel, self.variant, self.alpha = best
            self.n_selected = len(y)
        self._kernels(overlap, self.variant, overlap.train(self.variant)[0])  # the divisor for these configs
        self.chol = cho_factor(self.gram(self.kernel, *overlap.train(self.variant)) + self.alpha * np.eye(len(y)),
                               lower=True)
        self.coef = cho_solve(self.chol, t)
        # GP signal variance (ML estimate), floored relative to the targets' spread: a fixed floor of 1e-30
        # made the std of metrics near 1e-16 wider than their whole range, and the search blind (review).
        self.scale2 = max(float(t @ self.coef) / len(y), 1e-12 * float(np.mean(t * t)), 1e-300)

    def _kernels(self, overlap: Overlap, variant: int, m: np.ndarray) -> list[tuple[str, float]]:
        """The kernels to try on a variant; on the magnitude one, their divisors set from the evaluated
        configs' self-overlap (the diagonal of m)."""
        if variant != overlap.similarity.magnitude_variant:
            return self.kernels
        diag = np.diag(m)
        out = [("value", float(p)) for p in VALUE_DEGREES]
        for kernel in out:
            self._norms[kernel] = 1.0
            self._norms[kernel] = float(np.mean(self._formula(kernel, diag, diag)))
        return out

    def _chunks(self, overlap: Overlap, rows: np.ndarray | None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The kernel between pool configs and evaluated ones, in blocks of rows, with the block's row
        indices: whole, a pool of 50,000 against 1,000 evaluated held several (N, n) arrays at once
        (1.6 GiB at peak, review)."""
        rows = np.arange(overlap.n_pool) if rows is None else np.asarray(rows)
        for s in range(0, len(rows), _BLOCK):
            block = rows[s:s + _BLOCK]
            yield block, self.gram(self.kernel, *overlap.pool(self.variant, block))

    def mean(self, overlap: Overlap, rows: np.ndarray | None = None) -> np.ndarray:
        """Posterior mean at the pool configs (those at `rows`, or all)."""
        out = [K @ self.coef for _, K in self._chunks(overlap, rows)]
        return (np.concatenate(out) if out else np.zeros(0)) * self.unit + self.mu

    def std(self, overlap: Overlap, rows: np.ndarray | None = None) -> np.ndarray:
        """Posterior std of the latent function at the pool configs (those at `rows`, or all)."""
        from scipy.linalg import solve_triangular

        out = []
        for block, K in self._chunks(overlap, rows):
            v = solve_triangular(self.chol[0], K.T, lower=True)
            value = self.kernel[0] == "value"  # the one kernel whose k(x, x) is not 1
            prior = self.gram(self.kernel, *overlap.pool_self(self.variant, block)) if value else 1.0
            out.append(np.clip(prior - np.sum(v**2, axis=0), 0.0, None))
        return self.unit * np.sqrt(self.scale2 * (np.concatenate(out) if out else np.zeros(0)))


def loo_predictions(K: np.ndarray, z: np.ndarray, alphas: np.ndarray) -> np.ndarray:
    """(alphas, n) leave-one-out predictions of targets z by mean + kernel ridge, per alpha (see
    `loo_mse`)."""
    t = z - z.mean()
    s, U = np.linalg.eigh(K)
    s = np.clip(s, 0.0, None)
    shrink = s / (s + alphas[:, None])
    # The fit is mean(z) + S (z - mean(z)), hat matrix S + (I - S) 11'/n: the diagonal holds the
    # mean's share too (without it the error is optimistic, and picked another alpha in 30 % of
    # 10-row tables against brute-force refits).
    hat = shrink @ (U**2).T + (1.0 - (shrink * U.sum(axis=0)) @ U.T) / len(t)
    return z - (t - (shrink * (U.T @ t)) @ U.T) / np.maximum(1 - hat, 1e-9)


def loo_mse(K: np.ndarray, t: np.ndarray, alphas: np.ndarray) -> np.ndarray:
    """Leave-one-out mean squared error of mean + kernel ridge on targets t, per alpha, by the
    e / (1 - h) shortcut: near, not exact (a refit without the row moves the mean too; within 2 % of
    brute-force refits on 10-row tables, whose (kernel, alpha) it picked in 56 of 60, review)."""
    return np.mean((loo_predictions(K, t, alphas) - t) ** 2, axis=1)
