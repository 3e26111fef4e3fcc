"""Running one function over several configs inside one compiled program.

`vmap` batches the configs (one wide op per layer): best for dense/attention layers, and on GPUs.
`loop` (lax.map) runs them one after another in the same program: on the CPU, XLA turns a vmapped
convolution with per-config kernels into a grouped convolution that ran 11x slower than one config
(CNN family, 4 configs, 1336 vs 120 ms per step), so convolutional families loop there."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

MODES = ("auto", "vmap", "loop")


def resolve(mode: str, family: Any) -> str:
    """The concrete mode: `auto` asks the family (default vmap) for the current backend."""
    if mode != "auto":
        return mode
    prefer = getattr(family, "config_batching", None)
    return prefer(jax.default_backend()) if callable(prefer) else "vmap"


def over_configs(fn: Callable[[Any], Any], active: Any, mode: str, *, unroll: bool = True) -> Any:
    """fn applied to each config's slice of the stacked `active` arrays, outputs stacked.

    `unroll=False` loops with lax.map (one body, short compile: for many configs, forward only).
    """
    if mode == "loop" and not unroll:
        return jax.lax.map(fn, active)
    if mode == "loop":
        # Unrolled, not lax.map: the gradient of a scan over configs ran 2.5x slower on the CPU.
        n = jax.tree.leaves(active)[0].shape[0]
        outs = [fn(jax.tree.map(lambda a, i=i: a[i], active)) for i in range(n)]
        return jax.tree.map(lambda *xs: jax.numpy.stack(xs), *outs)
    return jax.vmap(fn)(active)
