"""Slimmable MLP family: per-layer width, elastic depth, per-layer bit-width (weights and inputs)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from nas.errors import ConfigError
from search_spaces import Config, Dimension, SearchSpace
from supernets.dense import ElasticDense, QuantDense
from supernets.quant import FLOAT_BITS, SUPPORTED_BITS

MODEL_KEYS = {"family", "max_depth", "max_width", "space"}
SPACE_KEYS = {"depth", "width", "bits"}


class SlimmableMLP(nnx.Module):
    """ReLU MLP holding the largest layers; `active` (traced arrays) picks depth, widths and bits."""

    def __init__(self, n_features: int, n_classes: int, max_widths: Sequence[int], *, rngs: nnx.Rngs):
        self.max_widths = tuple(int(w) for w in max_widths)
        ins = (n_features,) + self.max_widths[:-1]
        self.hidden = nnx.List(
            [ElasticDense(i, o, signed_input=(k == 0), rngs=rngs) for k, (i, o) in enumerate(zip(ins, self.max_widths))]
        )
        self.head_in = max(self.max_widths)
        self.head = ElasticDense(self.head_in, n_classes, signed_input=False, rngs=rngs)
        self.n_features = n_features
        self.n_classes = n_classes

    def __call__(self, x: jax.Array, *, active: Mapping[str, jax.Array]) -> jax.Array:
        """Logits of the subnet `active` = {"depth": (), "width": (L,), "bits": (L+1,)}."""
        depth, width, bits = active["depth"], active["width"], active["bits"]
        h, in_width = x, self.n_features
        selected = jnp.zeros((x.shape[0], self.head_in), x.dtype)
        for k, layer in enumerate(self.hidden):
            h = jax.nn.relu(layer(h, in_width=in_width, out_width=width[k], bits=bits[k]))
            in_width = width[k]
            # Layers past the active depth still run (one compile for every depth); only the
            # output of layer `depth - 1` reaches the head.
            padded = jnp.pad(h, ((0, 0), (0, self.head_in - h.shape[1])))
            selected = jnp.where(depth == k + 1, padded, selected)
        last_width = width[jnp.clip(depth - 1, 0, len(self.hidden) - 1)]
        return self.head(selected, in_width=last_width, out_width=self.n_classes, bits=bits[-1])


class PlainMLP(nnx.Module):
    """A static MLP of `QuantDense` layers: the extracted, deployable subnet."""

    def __init__(self, layers: Sequence[QuantDense]):
        self.layers = nnx.List(list(layers))

    def __call__(self, x: jax.Array) -> jax.Array:
        """Logits."""
        for layer in self.layers[:-1]:
            x = jax.nn.relu(layer(x))
        return self.layers[-1](x)


def _choice_list(value: Any, key: str) -> tuple[int, ...]:
    if not isinstance(value, list):
        raise ConfigError(key, f"expected a list of ints, got {value!r}")
    if not value:
        raise ConfigError(key, "empty choice list")
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(key, f"expected ints, got {v!r}")
        if v < 1:
            raise ConfigError(key, f"choices must be positive, got {v}")
    if len(set(value)) != len(value):
        raise ConfigError(key, f"duplicate choices in {value}")
    return tuple(sorted(value))


def _per_layer(value: Any, n: int, key: str) -> list[tuple[int, ...]]:
    """One list (same for every layer) or a list of `n` lists (one per layer)."""
    if isinstance(value, list) and value and all(isinstance(v, list) for v in value):
        if len(value) != n:
            raise ConfigError(key, f"expected {n} per-layer lists, got {len(value)}")
        return [_choice_list(v, f"{key}[{i}]") for i, v in enumerate(value)]
    return [_choice_list(value, key)] * n


def _positive_int(model: Mapping[str, Any], key: str) -> int:
    v = model.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ConfigError(f"model.{key}", f"expected a positive int, got {v!r}")
    return v


class MLPFamily:
    """The slimmable-MLP family: parses its space from the experiment and builds/extracts models."""

    name = "mlp"

    def parse_space(self, model: Mapping[str, Any], n_features: int, n_classes: int) -> SearchSpace:
        """Build the search space from the `[model]` table, raising ConfigError on bad keys/values."""
        unknown = sorted(set(model) - MODEL_KEYS)
        if unknown:
            raise ConfigError(f"model.{unknown[0]}", f"unknown key for family 'mlp' (known: {sorted(MODEL_KEYS)})")
        max_depth = _positive_int(model, "max_depth")
        max_width = _positive_int(model, "max_width")
        space = model.get("space")
        if not isinstance(space, dict):
            raise ConfigError("model.space", "missing table [model.space]")
        unknown = sorted(set(space) - SPACE_KEYS)
        if unknown:
            raise ConfigError(f"model.space.{unknown[0]}", f"unknown key (known: {sorted(SPACE_KEYS)})")
        for k in sorted(SPACE_KEYS):
            if k not in space:
                raise ConfigError(f"model.space.{k}", "missing")
        depths = _choice_list(space["depth"], "model.space.depth")
        if depths[-1] > max_depth:
            raise ConfigError("model.space.depth", f"{depths[-1]} exceeds model.max_depth={max_depth}")
        widths = _per_layer(space["width"], max_depth, "model.space.width")
        for i, w in enumerate(widths):
            if w[-1] > max_width:
                raise ConfigError("model.space.width", f"width {w[-1]} (layer {i}) exceeds model.max_width={max_width}")
        bits = _per_layer(space["bits"], max_depth + 1, "model.space.bits")
        for b in bits:
            bad = [v for v in b if v not in SUPPORTED_BITS]
            if bad:
                supported = list(SUPPORTED_BITS)
                raise ConfigError("model.space.bits", f"unsupported bit-width {bad[0]} (supported: {supported})")
        dims = [Dimension("depth", depths)]
        for i in range(max_depth):
            gate = ("depth", i) if depths[0] <= i else (None, 0)
            dims.append(Dimension(f"width.{i}", widths[i], *gate))
            dims.append(Dimension(f"bits.{i}", bits[i], *gate))
        dims.append(Dimension("bits.out", bits[max_depth]))
        meta = {"family": self.name, "n_features": n_features, "n_classes": n_classes, "max_depth": max_depth,
                "max_widths": [w[-1] for w in widths]}
        return SearchSpace(tuple(dims), meta)

    # -- models ---------------------------------------------------------------------------
    def build(self, space: SearchSpace, *, rngs: nnx.Rngs) -> SlimmableMLP:
        """The supernet for `space`, freshly initialised."""
        m = space.meta
        return SlimmableMLP(m["n_features"], m["n_classes"], m["max_widths"], rngs=rngs)

    def active(self, space: SearchSpace, configs: Sequence[Config]) -> dict[str, np.ndarray]:
        """Stacked arrays for several configs: depth (n,), width (n, L), bits (n, L+1)."""
        L = space.meta["max_depth"]
        return {
            "depth": np.array([c["depth"] for c in configs], np.int32),
            "width": np.array([[c[f"width.{i}"] for i in range(L)] for c in configs], np.int32),
            "bits": np.array([[c[f"bits.{i}"] for i in range(L)] + [c["bits.out"]] for c in configs], np.int32),
        }

    def extract(self, model: SlimmableMLP, space: SearchSpace, config: Config) -> PlainMLP:
        """The plain subnet for `config`: leading channels, depth layers, weights quantised."""
        config = space.validate(config)
        layers, in_width = [], model.n_features
        for k in range(config["depth"]):
            w = config[f"width.{k}"]
            layers.append(model.hidden[k].extract(in_width, w, config[f"bits.{k}"]))
            in_width = w
        layers.append(model.head.extract(in_width, model.n_classes, config["bits.out"]))
        return PlainMLP(layers)

    # -- exact costs ----------------------------------------------------------------------
    def layer_shapes(self, space: SearchSpace, config: Config) -> list[tuple[int, int, int]]:
        """(in, out, bits) of every active layer, the head last."""
        m = space.meta
        shapes, in_width = [], m["n_features"]
        for k in range(config["depth"]):
            shapes.append((in_width, config[f"width.{k}"], config[f"bits.{k}"]))
            in_width = config[f"width.{k}"]
        shapes.append((in_width, m["n_classes"], config["bits.out"]))
        return shapes

    def size_bytes(self, space: SearchSpace, config: Config) -> int:
        """Deployed bytes: packed weights at their bits, fp32 biases, one fp32 clip per quantised input."""
        total = 0
        for i, o, b in self.layer_shapes(space, config):
            total += math.ceil(i * o * b / 8) + 4 * o + (4 if b < FLOAT_BITS else 0)
            if b < FLOAT_BITS:
                total += 4 * o  # one fp32 weight scale per output channel
        return total

    def macs(self, space: SearchSpace, config: Config) -> int:
        """Multiply-accumulates per example."""
        return sum(i * o for i, o, _ in self.layer_shapes(space, config))

    def peak_activation_bytes(self, space: SearchSpace, config: Config) -> int:
        """Largest input + output activation of one layer, fp32, per example (what must be live at once)."""
        return max(4 * (i + o) for i, o, _ in self.layer_shapes(space, config))
