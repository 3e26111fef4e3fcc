"""Channel importance sorting (once-for-all): reorder hidden channels so width prefixes keep the strongest.

A family describes one sort as a list of `Permutation`s (a state path, an axis, an index order); the
same list is applied to the model's parameters, its other state (BatchNorm statistics) and every
optimiser-state subtree shaped like the parameters (Adam's mu and nu), so training continues as if
the channels had always been in that order."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


class Permutation(NamedTuple):
    """Reorder the array at state path `path` along `axis` by `order` (new index i takes old order[i])."""

    path: tuple[Any, ...]
    axis: int
    order: np.ndarray


def l1_importance(w: jax.Array, axis: int) -> np.ndarray:
    """The L1 importance of each channel along `axis`: the L1 norm over the other axes."""
    w = np.abs(np.asarray(w, np.float64))
    return w.sum(axis=tuple(a for a in range(w.ndim) if a != axis % w.ndim))


def l1_order(w: jax.Array, axis: int) -> np.ndarray:
    """Channel order along `axis`, most important first (ties keep their order)."""
    return np.argsort(-l1_importance(w, axis), kind="stable")


def _key(entry: Any) -> Any:
    for attr in ("key", "name", "idx"):
        if hasattr(entry, attr):
            return getattr(entry, attr)
    raise TypeError(f"unexpected pytree key {entry!r}")


def permute_state(state: Any, perms: Sequence[Permutation]) -> Any:
    """A copy of `state` (an nnx.State or any pytree with the same paths) with `perms` applied."""
    by_path: dict[tuple[Any, ...], list[Permutation]] = {}
    for p in perms:
        by_path.setdefault(tuple(p.path), []).append(p)

    def apply(path: Any, leaf: Any) -> Any:
        keys = tuple(_key(e) for e in path)
        if keys and keys[-1] == "value":  # nnx Variables flatten to their `.value`
            keys = keys[:-1]
        for p in by_path.get(keys, ()):
            leaf = jnp.take(leaf, jnp.asarray(p.order), axis=p.axis)
        return leaf

    return jax.tree_util.tree_map_with_path(apply, state)


def permute_like(tree: Any, params: Any, perms: Sequence[Permutation]) -> Any:
    """Apply `perms` to every subtree of `tree` (e.g. an optax state) with the structure of `params`."""
    target = jax.tree_util.tree_structure(params)

    def shaped_like(node: Any) -> bool:
        return jax.tree_util.tree_structure(node) == target

    return jax.tree_util.tree_map(lambda n: permute_state(n, perms) if shaped_like(n) else n, tree,
                                  is_leaf=shaped_like)


def apply_to_model(model: nnx.Module, perms: Sequence[Permutation]) -> None:
    """Permute the model's state in place."""
    nnx.update(model, permute_state(nnx.state(model), perms))


def extend(order: np.ndarray, size: int) -> np.ndarray:
    """`order` over the first len(order) of `size` channels, the rest left in place."""
    return np.concatenate([order, np.arange(len(order), size)])
