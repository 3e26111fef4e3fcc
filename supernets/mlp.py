"""Slimmable MLP family: per-layer width, elastic depth, per-layer bit-width (weights and inputs)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from nas.errors import ConfigError
from search_spaces import Config, Dimension, SearchSpace
from supernets.costs import CostMixin, LayerCost, LutUnit
from supernets.dense import ElasticDense, QuantDense
from supernets.sorting import Permutation, apply_to_model, extend, l1_order
from supernets.spec import MAX_LAYERS, choice_list, known_keys, per_layer, per_layer_bits, positive_int, space_table

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

    def __call__(self, x: jax.Array, *, active: Mapping[str, jax.Array], mode: str = "eval") -> jax.Array:
        """Logits of the subnet `active` = {"depth": (), "width": (L,), "bits": (L+1,)} (no statistics: any mode)."""
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


class MLPFamily(CostMixin):
    """The slimmable-MLP family: parses its space from the experiment and builds/extracts models."""

    name = "mlp"
    dense_packing = True  # exports as nas.packing's dense-layer layout (loadable without this project)

    def parse_space(self, model: Mapping[str, Any], n_features: int, n_classes: int,
                    input_shape: tuple[int, ...] | None = None) -> SearchSpace:
        """Build the search space from the `[model]` table, raising ConfigError on bad keys/values."""
        known_keys(model, MODEL_KEYS, "model", self.name)
        max_depth = positive_int(model, "max_depth", maximum=MAX_LAYERS)
        max_width = positive_int(model, "max_width")
        space = space_table(model, SPACE_KEYS, set(), self.name)
        depths = choice_list(space["depth"], "model.space.depth")
        if depths[-1] > max_depth:
            raise ConfigError("model.space.depth", f"{depths[-1]} exceeds model.max_depth={max_depth}")
        widths = per_layer(space["width"], max_depth, "model.space.width")
        for i, w in enumerate(widths):
            if w[-1] > max_width:
                raise ConfigError("model.space.width", f"width {w[-1]} (layer {i}) exceeds model.max_width={max_width}")
        bits = per_layer_bits(space["bits"], max_depth + 1, "model.space.bits")
        dims = [Dimension("depth", depths)]
        for i in range(max_depth):
            gate = ("depth", i) if depths[0] <= i else (None, 0)
            dims.append(Dimension(f"width.{i}", widths[i], *gate))
            dims.append(Dimension(f"bits.{i}", bits[i], *gate))
        dims.append(Dimension("bits.out", bits[max_depth]))
        meta = {"family": self.name, "n_features": n_features, "n_classes": n_classes, "max_depth": max_depth,
                "input_shape": list(input_shape or (n_features,)),
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

    # -- channel importance sorting (supernets.sorting) ------------------------------------------
    def channel_permutations(self, model: SlimmableMLP, space: SearchSpace) -> list[Permutation]:
        """Each hidden layer's output units ordered by the L1 norm of their kernel column; the next
        layer's kernel rows follow. The head's rows are shared by every depth (layer `depth - 1`
        feeds it), so a layer that can feed the head is sorted only when no other layer can."""
        feeds_head = {d - 1 for d in space.dim("depth").choices}
        deepest = max(space.dim("depth").choices)  # layers past it (max_depth above every choice) never run
        perms: list[Permutation] = []
        for k, layer in enumerate(model.hidden[:deepest]):
            if k in feeds_head and feeds_head != {k}:
                continue
            order = l1_order(layer.kernel[...], axis=1)
            perms += [Permutation(("hidden", k, "kernel"), 1, order), Permutation(("hidden", k, "bias"), 0, order)]
            if k + 1 < deepest:
                perms.append(Permutation(("hidden", k + 1, "kernel"), 0, order))
            else:
                perms.append(Permutation(("head", "kernel"), 0, extend(order, model.head_in)))
        return perms

    def sort_channels(self, model: SlimmableMLP, space: SearchSpace) -> None:
        """Sort the hidden units in place (the largest subnet's function is unchanged)."""
        apply_to_model(model, self.channel_permutations(model, space))

    # -- per-unit latency table (nas.lut) -------------------------------------------------------
    def lut_units(self, space: SearchSpace, config: Config) -> list[LutUnit]:
        """The units timed alone: each hidden dense layer with its ReLU, then the head (keys as
        `dense|in x out|w|a`, so the layer tables measured before units existed stay valid)."""
        return [LutUnit(c.slot, "dense", c.key, c.bits, c.a_bits, c.macs) for c in self.layer_costs(space, config)]

    def unit_modules(self, subnet: PlainMLP, space: SearchSpace,
                     config: Config) -> list[tuple[LutUnit, nnx.Module, tuple[int, ...]]]:
        """`lut_units` with the extracted subnet's modules (run in order, they are `subnet`) and the
        per-example input shape of each."""
        layers = list(subnet.layers)
        modules = [nnx.Sequential(layer, jax.nn.relu) for layer in layers[:-1]] + layers[-1:]
        return [(u, mod, (u.shape[0],)) for u, mod in zip(self.lut_units(space, config), modules, strict=True)]

    # -- exact costs ----------------------------------------------------------------------
    def layer_costs(self, space: SearchSpace, config: Config) -> list[LayerCost]:
        """Per-layer costs (hidden layers, then the head); weights and input share the layer's bits."""
        m, costs, in_width = space.meta, [], space.meta["n_features"]
        outs = [(f"hidden.{k}", config[f"width.{k}"], config[f"bits.{k}"]) for k in range(config["depth"])]
        for slot, o, b in outs + [("head", m["n_classes"], config["bits.out"])]:
            costs.append(LayerCost(slot, "dense", in_width * o, in_width * o, b, b, o, o, in_width, o, (in_width, o)))
            in_width = o
        return costs
