"""Elastic ViT-style transformer family: depth, heads, FFN width, embedding width and bits per layer.

Pre-LayerNorm encoder over non-overlapping patches (image (H, W, C) or sequence (L, C)), mean
pooling, LayerNorm, linear head. Every choice is a prefix of the largest weights (heads, FFN units
MatFormer style, embedding features), so one set of weights serves every subnet and the extracted
model is the leading slice of each kernel."""

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
from supernets.attention import ElasticAttention, PlainAttention
from supernets.costs import CostMixin, LayerCost, LutUnit, macs_under
from supernets.dense import prefix_mask
from supernets.linear import ElasticLinear, QuantLinear
from supernets.norm import MODES, ElasticLayerNorm, PlainLayerNorm
from supernets.quant import FLOAT_BITS
from supernets.sorting import Permutation, apply_to_model, l1_order
from supernets.spec import MAX_LAYERS, choice_list, known_keys, per_layer, per_layer_bits, positive_int, space_table

MODEL_KEYS = {"family", "max_depth", "embed", "heads", "head_dim", "ffn", "patch", "space"}
SPACE_KEYS = {"depth", "heads", "ffn", "bits"}
OPTIONAL_SPACE_KEYS = {"embed", "act_bits"}


def token_shape(input_shape: Sequence[int] | None, n_features: int) -> tuple[int, ...]:
    """(H, W, C) for an image, (L, C) for a sequence; a flat input is a 1-channel sequence."""
    shape = tuple(int(s) for s in (input_shape or (n_features,)))
    if len(shape) == 1:
        shape = (shape[0], 1)
    if len(shape) not in (2, 3):
        raise ConfigError("model.family", f"transformer needs (H, W, C) or (L, C) inputs, got {list(shape)}")
    if math.prod(shape) != n_features:
        raise ConfigError("model.family", f"input shape {list(shape)} does not hold {n_features} features")
    return shape


def patchify(x: jax.Array, shape: Sequence[int], patch: int) -> jax.Array:
    """Flat (batch, features) -> (batch, tokens, patch_dim) non-overlapping patches in row-major order."""
    b = x.shape[0]
    if len(shape) == 3:
        h, w, c = shape
        x = x.reshape(b, h // patch, patch, w // patch, patch, c).transpose(0, 1, 3, 2, 4, 5)
        return x.reshape(b, (h // patch) * (w // patch), patch * patch * c)
    length, c = shape
    return x.reshape(b, length // patch, patch * c)


def _layout(shape: Sequence[int], patch: int) -> tuple[int, int]:
    """(tokens, patch_dim) of `shape` cut into patches."""
    spatial, c = shape[:-1], shape[-1]
    return math.prod(s // patch for s in spatial), patch ** len(spatial) * c


class TransformerLayer(nnx.Module):
    """One pre-LN encoder layer: x + Attn(LN(x)), then x + FFN(LN(x)), all widths traced."""

    def __init__(self, embed: int, heads: int, head_dim: int, ffn: int, *, rngs: nnx.Rngs):
        self.ln1 = ElasticLayerNorm(embed)
        self.attn = ElasticAttention(embed, heads, head_dim, rngs=rngs)
        self.ln2 = ElasticLayerNorm(embed)
        self.ffn1 = ElasticLinear(embed, ffn, signed_input=True, rngs=rngs)
        # GELU outputs are >= -0.17: unsigned levels spend every code on the useful range.
        self.ffn2 = ElasticLinear(ffn, embed, signed_input=False, rngs=rngs)

    def __call__(self, x: jax.Array, *, embed_width: jax.Array | int, heads: jax.Array | int,
                 ffn: jax.Array | int, w_bits: jax.Array | int, a_bits: jax.Array | int) -> jax.Array:
        """(batch, tokens, embed) -> same shape, zero past `embed_width`."""
        bits = dict(w_bits=w_bits, a_bits=a_bits)
        x = x + self.attn(self.ln1(x, width=embed_width), embed_width=embed_width, heads=heads, **bits)
        h = jax.nn.gelu(self.ffn1(self.ln2(x, width=embed_width), in_width=embed_width, out_width=ffn, **bits))
        return x + self.ffn2(h, in_width=ffn, out_width=embed_width, **bits)

    def extract(self, embed_width: int, heads: int, ffn: int, w_bits: int, a_bits: int) -> PlainLayer:
        """The static layer for these widths and bits."""
        return PlainLayer(self.ln1.extract(embed_width), self.attn.extract(embed_width, heads, w_bits, a_bits),
                          self.ln2.extract(embed_width), self.ffn1.extract(embed_width, ffn, w_bits, a_bits),
                          self.ffn2.extract(ffn, embed_width, w_bits, a_bits))


class PlainLayer(nnx.Module):
    """A static encoder layer of an extracted subnet."""

    def __init__(self, ln1: PlainLayerNorm, attn: PlainAttention, ln2: PlainLayerNorm, ffn1: QuantLinear,
                 ffn2: QuantLinear):
        self.ln1, self.attn, self.ln2, self.ffn1, self.ffn2 = ln1, attn, ln2, ffn1, ffn2

    def __call__(self, x: jax.Array) -> jax.Array:
        """(batch, tokens, embed) -> same shape."""
        x = x + self.attn(self.ln1(x))
        return x + self.ffn2(jax.nn.gelu(self.ffn1(self.ln2(x))))


class TransformerSupernet(nnx.Module):
    """The largest transformer; `active` (traced arrays for one config) picks the subnet."""

    def __init__(self, shape: Sequence[int], patch: int, n_classes: int, max_depth: int, embed: int, heads: int,
                 head_dim: int, ffn: int, *, rngs: nnx.Rngs):
        self.shape, self.patch, self.n_classes, self.max_embed = tuple(shape), patch, n_classes, embed
        tokens, self.patch_dim = _layout(self.shape, patch)
        self.embed = ElasticLinear(self.patch_dim, embed, signed_input=True, rngs=rngs)
        self.pos = nnx.Param(0.02 * jax.random.normal(rngs.params(), (tokens, embed), jnp.float32))
        self.layers = nnx.List([TransformerLayer(embed, heads, head_dim, ffn, rngs=rngs) for _ in range(max_depth)])
        self.norm = ElasticLayerNorm(embed)
        self.head = ElasticLinear(embed, n_classes, signed_input=True, rngs=rngs)

    def __call__(self, x: jax.Array, *, active: Mapping[str, jax.Array], mode: str = "eval") -> jax.Array:
        """Logits of one subnet; `active` = depth (), embed (), heads (L,), ffn (L,), w_bits/a_bits (L+2,).

        No batch statistics anywhere, so every mode computes the same thing.
        """
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        width, w_bits, a_bits = active["embed"], active["w_bits"], active["a_bits"]
        tokens = patchify(x, self.shape, self.patch)
        h = self.embed(tokens, in_width=self.patch_dim, out_width=width, w_bits=w_bits[0], a_bits=a_bits[0])
        h = h + self.pos[...] * prefix_mask(width, self.max_embed)
        for i, layer in enumerate(self.layers):
            new = layer(h, embed_width=width, heads=active["heads"][i], ffn=active["ffn"][i],
                        w_bits=w_bits[i + 1], a_bits=a_bits[i + 1])
            # Every layer runs (one compile for every depth); past the depth it leaves h unchanged.
            h = jnp.where(i < active["depth"], new, h)
        pooled = self.norm(h.mean(axis=1), width=width)
        return self.head(pooled, in_width=width, out_width=self.n_classes, w_bits=w_bits[-1], a_bits=a_bits[-1])


class PatchEmbed(nnx.Module):
    """Patches -> embedding + positions: the first unit of an extracted subnet, timed alone for the
    per-unit latency table (it holds the subnet's own `embed` layer and `pos` parameter)."""

    def __init__(self, shape: Sequence[int], patch: int, embed: QuantLinear, pos: nnx.Param):
        self.shape, self.patch, self.embed, self.pos = tuple(shape), patch, embed, pos

    def __call__(self, x: jax.Array) -> jax.Array:
        """Flat (batch, features) -> (batch, tokens, embed)."""
        return self.embed(patchify(x, self.shape, self.patch)) + self.pos[...]


def pool_tokens(h: jax.Array) -> jax.Array:
    """Mean over the tokens: (batch, tokens, embed) -> (batch, embed)."""
    return h.mean(axis=1)


class PlainTransformer(nnx.Module):
    """The extracted, static transformer: only the active layers, heads and features."""

    def __init__(self, shape: Sequence[int], patch: int, embed: QuantLinear, pos: jax.Array,
                 layers: Sequence[PlainLayer], norm: PlainLayerNorm, head: QuantLinear):
        self.shape, self.patch = tuple(shape), patch
        self.embed, self.pos = embed, nnx.Param(pos)
        self.layers = nnx.List(list(layers))
        self.norm, self.head = norm, head

    def __call__(self, x: jax.Array) -> jax.Array:
        """Logits of flat (batch, features) inputs."""
        h = self.embed(patchify(x, self.shape, self.patch)) + self.pos[...]
        for layer in self.layers:
            h = layer(h)
        return self.head(self.norm(pool_tokens(h)))


def _bits(meta: Mapping[str, Any], config: Config) -> tuple[list[int], list[int]]:
    """(weight bits, input bits) of the embedding, every layer, then the head."""
    names = ["embed", *(str(i) for i in range(meta["max_depth"])), "head"]
    w = [config[f"bits.{n}"] for n in names]
    a = [config[f"abits.{n}"] for n in names] if meta["act_bits"] else w
    return w, a


class TransformerFamily(CostMixin):
    """The elastic-transformer family: parses its space, builds, extracts and costs subnets."""

    name = "transformer"

    def parse_space(self, model: Mapping[str, Any], n_features: int, n_classes: int,
                    input_shape: tuple[int, ...] | None = None) -> SearchSpace:
        """Build the search space from the `[model]` table, raising ConfigError on bad keys/values."""
        known_keys(model, MODEL_KEYS, "model", self.name)
        L = positive_int(model, "max_depth", maximum=MAX_LAYERS)
        sizes = {k: positive_int(model, k) for k in ("embed", "heads", "head_dim", "ffn", "patch")}
        shape, patch = token_shape(input_shape, n_features), sizes["patch"]
        if any(s % patch for s in shape[:-1]):
            raise ConfigError("model.patch", f"patch {patch} does not divide the input {list(shape[:-1])}")
        space = space_table(model, SPACE_KEYS, OPTIONAL_SPACE_KEYS, self.name)
        depths = choice_list(space["depth"], "model.space.depth")
        if depths[-1] > L:
            raise ConfigError("model.space.depth", f"{depths[-1]} exceeds model.max_depth={L}")
        heads = _bounded(per_layer(space["heads"], L, "model.space.heads"), sizes["heads"], "heads")
        ffn = _bounded(per_layer(space["ffn"], L, "model.space.ffn"), sizes["ffn"], "ffn")
        embeds = None  # absent: the embedding width is fixed at its maximum
        if "embed" in space:
            embeds = _bounded([choice_list(space["embed"], "model.space.embed")], sizes["embed"], "embed")[0]
        # Bit lists in execution order: the embedding, each layer, the head.
        bits = per_layer_bits(space["bits"], L + 2, "model.space.bits")
        abits = per_layer_bits(space["act_bits"], L + 2, "model.space.act_bits") if "act_bits" in space else None

        dims = _dimensions(depths, embeds, heads, ffn, bits, abits)
        tokens, patch_dim = _layout(shape, patch)
        meta = {"family": self.name, "n_features": n_features, "n_classes": n_classes,
                "input_shape": [int(v) for v in (input_shape or (n_features,))], "token_shape": list(shape),
                "patch": patch, "tokens": tokens, "patch_dim": patch_dim, "max_depth": L, "max_embed": sizes["embed"],
                "max_heads": sizes["heads"], "head_dim": sizes["head_dim"], "max_ffn": sizes["ffn"],
                "act_bits": abits is not None}
        return SearchSpace(tuple(dims), meta)

    # -- models ---------------------------------------------------------------------------
    def build(self, space: SearchSpace, *, rngs: nnx.Rngs) -> TransformerSupernet:
        """The supernet for `space`, freshly initialised."""
        m = space.meta
        return TransformerSupernet(m["token_shape"], m["patch"], m["n_classes"], m["max_depth"], m["max_embed"],
                                   m["max_heads"], m["head_dim"], m["max_ffn"], rngs=rngs)

    def active(self, space: SearchSpace, configs: Sequence[Config]) -> dict[str, np.ndarray]:
        """Stacked arrays: depth, embed (n,); heads, ffn (n, L); w_bits, a_bits (n, L+2)."""
        m, L = space.meta, space.meta["max_depth"]
        bits = [_bits(m, c) for c in configs]
        return {
            "depth": np.array([c["depth"] for c in configs], np.int32),
            "embed": np.array([c.get("embed", m["max_embed"]) for c in configs], np.int32),
            "heads": np.array([[c[f"heads.{i}"] for i in range(L)] for c in configs], np.int32),
            "ffn": np.array([[c[f"ffn.{i}"] for i in range(L)] for c in configs], np.int32),
            "w_bits": np.array([w for w, _ in bits], np.int32).reshape(len(configs), L + 2),
            "a_bits": np.array([a for _, a in bits], np.int32).reshape(len(configs), L + 2),
        }

    def extract(self, model: TransformerSupernet, space: SearchSpace, config: Config) -> PlainTransformer:
        """The plain subnet for `config`: leading features/heads/units, `depth` layers, weights quantised."""
        config = space.validate(config)
        m = space.meta
        e = config.get("embed", m["max_embed"])
        w, a = _bits(m, config)
        layers = [model.layers[i].extract(e, config[f"heads.{i}"], config[f"ffn.{i}"], w[i + 1], a[i + 1])
                  for i in range(config["depth"])]
        return PlainTransformer(m["token_shape"], m["patch"], model.embed.extract(m["patch_dim"], e, w[0], a[0]),
                                jax.lax.stop_gradient(model.pos[...][:, :e]), layers, model.norm.extract(e),
                                model.head.extract(e, m["n_classes"], w[-1], a[-1]))

    # -- channel importance sorting (supernets.sorting) ------------------------------------------
    def channel_permutations(self, model: TransformerSupernet, space: SearchSpace) -> list[Permutation]:
        """Each layer's FFN hidden units ordered by the L1 norm of their ffn1 column (its bias and LSQ
        steps follow, and ffn2's rows). Heads and the embedding (the residual stream) keep their order."""
        perms: list[Permutation] = []
        for i, layer in enumerate(model.layers):
            order = l1_order(layer.ffn1.kernel[...], axis=1)
            perms += [Permutation(("layers", i, "ffn1", "kernel"), 1, order),
                      Permutation(("layers", i, "ffn1", "bias"), 0, order),
                      Permutation(("layers", i, "ffn1", "w_steps"), 1, order),
                      Permutation(("layers", i, "ffn2", "kernel"), 0, order)]
        return perms

    def sort_channels(self, model: TransformerSupernet, space: SearchSpace) -> None:
        """Sort the FFN hidden units in place (the largest subnet's function is unchanged)."""
        apply_to_model(model, self.channel_permutations(model, space))

    # -- per-unit latency table (nas.lut) -------------------------------------------------------
    def lut_units(self, space: SearchSpace, config: Config) -> list[LutUnit]:
        """The units timed alone, nn-Meter style: patch embedding (+ positions), each encoder layer
        as a whole (attention, FFN, norms, residuals), token pooling + norm + head. Shapes:
        (tokens, patch_dim, embed), (tokens, embed, heads, head_dim, ffn), (tokens, embed, classes)."""
        m, costs = space.meta, self.layer_costs(space, config)
        T, e = m["tokens"], config.get("embed", m["max_embed"])
        w, a = _bits(m, config)
        units = [LutUnit("embed", "embed", (T, m["patch_dim"], e), w[0], a[0], macs_under(costs, "embed"))]
        for i in range(config["depth"]):
            shape = (T, e, config[f"heads.{i}"], m["head_dim"], config[f"ffn.{i}"])
            units.append(LutUnit(f"layer.{i}", "layer", shape, w[i + 1], a[i + 1], macs_under(costs, f"layer.{i}")))
        units.append(LutUnit("head", "head", (T, e, m["n_classes"]), w[-1], a[-1], macs_under(costs, "norm", "head")))
        return units

    def unit_modules(self, subnet: PlainTransformer, space: SearchSpace,
                     config: Config) -> list[tuple[LutUnit, nnx.Module, tuple[int, ...]]]:
        """`lut_units` with the extracted subnet's modules (run in order, they are `subnet`) and the
        per-example input shape of each: flat features, then (tokens, embed)."""
        m = space.meta
        modules = [PatchEmbed(subnet.shape, subnet.patch, subnet.embed, subnet.pos), *subnet.layers,
                   nnx.Sequential(pool_tokens, subnet.norm, subnet.head)]
        units = self.lut_units(space, config)
        shapes = [(m["n_features"],)] + [u.shape[:2] for u in units[1:]]
        return list(zip(units, modules, shapes, strict=True))

    # -- exact costs ----------------------------------------------------------------------
    def layer_costs(self, space: SearchSpace, config: Config) -> list[LayerCost]:
        """Per-layer costs in execution order; MACs count matmuls only (norms, softmax, GELU are 0)."""
        m = space.meta
        T, P, hd, f = m["tokens"], m["patch_dim"], m["head_dim"], FLOAT_BITS
        e = config.get("embed", m["max_embed"])
        w, a = _bits(m, config)

        def dense(slot: str, kind: str, rows: int, i: int, o: int, b: int, ab: int, extra: int = 0,
                  skip: int = 0) -> LayerCost:
            return LayerCost(slot, kind, rows * i * o, i * o, b, ab, o, o + extra, rows * i, rows * o, (rows, i, o),
                             act_inner=skip)

        def norm(slot: str, rows_in: int, rows_out: int) -> LayerCost:
            return LayerCost(slot, "norm", 0, 0, f, f, e, 2 * e, rows_in * e, rows_out * e, (rows_in, e))

        costs = [dense("embed", "embed", T, P, e, w[0], a[0], extra=T * e)]  # + position embedding
        for i in range(config["depth"]):
            inner, ffn, b, ab = config[f"heads.{i}"] * hd, config[f"ffn.{i}"], w[i + 1], a[i + 1]
            costs += [norm(f"layer.{i}.ln1", T, T)]
            # The residual stream (T x embed) stays live beside every layer between a norm and its sum.
            skip = T * e
            costs += [dense(f"layer.{i}.{n}", "dense", T, e, inner, b, ab, skip=skip) for n in ("q", "k", "v")]
            # QK^T and AV: T*T*head_dim MACs each per head, in float, no weights. The heads x T x T scores
            # are live too: past T = 32 they outweigh q, k, v and the output (review: T = 256 held 8x more).
            heads = config[f"heads.{i}"]
            costs.append(LayerCost(f"layer.{i}.attn", "attention", 2 * T * T * inner, 0, f, f, inner, 0,
                                   3 * T * inner, T * inner, (T, heads, hd), act_inner=heads * T * T + skip))
            costs += [dense(f"layer.{i}.proj", "dense", T, inner, e, b, ab, skip=skip), norm(f"layer.{i}.ln2", T, T),
                      dense(f"layer.{i}.ffn1", "dense", T, e, ffn, b, ab, skip=skip),
                      dense(f"layer.{i}.ffn2", "dense", T, ffn, e, b, ab, skip=skip)]
        # The final norm reads the token mean (pooling has no MACs) and writes one vector.
        costs += [norm("norm", T, 1), dense("head", "dense", 1, e, m["n_classes"], w[-1], a[-1])]
        return costs


def _bounded(choices: list[tuple[int, ...]], most: int, name: str) -> list[tuple[int, ...]]:
    """`choices` if none exceeds model.`name` (ConfigError naming model.space.`name` otherwise)."""
    for i, c in enumerate(choices):
        if c[-1] > most:
            # One list given for every layer is copied per layer: naming a layer would point at one.
            where = f" (layer {i})" if len(set(choices)) > 1 else ""
            raise ConfigError(f"model.space.{name}", f"choice {c[-1]}{where} exceeds model.{name}={most}")
    return choices


def _dimensions(depths: tuple[int, ...], embeds: tuple[int, ...] | None, heads: list[tuple[int, ...]],
                ffn: list[tuple[int, ...]], bits: list[tuple[int, ...]],
                abits: list[tuple[int, ...]] | None) -> list[Dimension]:
    """depth, [embed], bits.embed, per layer heads.i / ffn.i / bits.i (gated by depth), bits.head; abits.* twins."""
    dims = [Dimension("depth", depths)] + ([Dimension("embed", embeds)] if embeds else [])

    def with_bits(name: str, k: int, gate: tuple[str | None, int]) -> list[Dimension]:
        out = [Dimension(f"bits.{name}", bits[k], *gate)]
        return out + ([Dimension(f"abits.{name}", abits[k], *gate)] if abits else [])

    dims += with_bits("embed", 0, (None, 0))
    for i in range(len(heads)):
        # Layers every depth choice includes are always active; later ones only when depth > i.
        gate = ("depth", i) if depths[0] <= i else (None, 0)
        dims += [Dimension(f"heads.{i}", heads[i], *gate), Dimension(f"ffn.{i}", ffn[i], *gate)]
        dims += with_bits(str(i), i + 1, gate)
    return dims + with_bits("head", len(heads) + 1, (None, 0))
