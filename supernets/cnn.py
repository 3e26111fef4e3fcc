"""CNN family: MobileNetV2-style inverted-residual stages with per-block expand width and kernel
size, per-stage depth and per-block bit-widths (LSQ), BatchNorm recalibrated per subnet."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from nas.errors import ConfigError
from search_spaces import Config, Dimension, SearchSpace
from supernets.conv import ElasticConv
from supernets.costs import CostMixin, LayerCost, LutUnit, macs_under
from supernets.linear import ElasticLinear
from supernets.norm import ElasticBatchNorm
from supernets.sorting import Permutation, apply_to_model, l1_order
from supernets.spec import MAX_LAYERS, MAX_SIZE, known_keys, per_layer, per_layer_bits, positive_int, space_table

MODEL_KEYS = {"family", "stem", "stages", "max_expand", "max_kernel", "zero_init_residual", "space"}
STAGE_KEYS = {"channels", "max_depth", "stride"}
SPACE_KEYS = {"depth", "expand", "bits"}
OPTIONAL_SPACE_KEYS = {"kernel", "act_bits"}
ACT_RANGE = 6.0  # inputs after ReLU6 lie in [0, 6]


def relu6(x: jax.Array) -> jax.Array:
    """ReLU clipped at 6 (bounded activations quantise well)."""
    return jnp.clip(x, 0.0, 6.0)


def spatial(size: int, stride: int) -> int:
    """Output size of a symmetric-'same' convolution."""
    return (size - 1) // stride + 1


class ConvBN(nnx.Module):
    """Elastic convolution followed by elastic BatchNorm (and optionally ReLU6)."""

    def __init__(self, cin: int, cout: int, k: int, *, stride: int = 1, depthwise: bool = False,
                 signed_input: bool = False, relu: bool = True, zero_init: bool = False, rngs: nnx.Rngs):
        self.conv = ElasticConv(cin, cout, k, stride=stride, depthwise=depthwise, signed_input=signed_input,
                                act_range=ACT_RANGE, rngs=rngs)
        self.bn = ElasticBatchNorm(cout, zero_init=zero_init)
        self.relu = relu

    def __call__(self, x: jax.Array, *, in_width: Any, out_width: Any, w_bits: Any, a_bits: Any, mode: str,
                 kernel_size: Any = None) -> jax.Array:
        """conv -> BN (-> ReLU6) on the active channels."""
        y = self.conv(x, in_width=in_width, out_width=out_width, w_bits=w_bits, a_bits=a_bits,
                      kernel_size=kernel_size)
        y = self.bn(y, width=out_width, mode=mode)
        return relu6(y) if self.relu else y

    def extract(self, in_width: int, out_width: int, w_bits: int, a_bits: int,
                kernel_size: int | None = None) -> PlainConvBN:
        """Static conv + BN with the calibrated statistics; the conv's bias, if any, folded into the BN."""
        bias = self.conv.bias[...][:out_width] if self.conv.use_bias else None
        return PlainConvBN(self.conv.extract(in_width, out_width, w_bits, a_bits, kernel_size, bias=False),
                           self.bn.extract(out_width, input_bias=bias), self.relu)


class PlainConvBN(nnx.Module):
    """Static conv -> BN (-> ReLU6)."""

    def __init__(self, conv: nnx.Module, bn: nnx.Module, relu: bool):
        self.conv, self.bn, self.relu = conv, bn, relu

    def __call__(self, x: jax.Array) -> jax.Array:
        """Forward."""
        y = self.bn(self.conv(x))
        return relu6(y) if self.relu else y


class InvertedResidual(nnx.Module):
    """expand 1x1 -> depthwise kxk -> project 1x1 (linear), with a skip when shapes allow."""

    def __init__(self, cin: int, cout: int, hidden: int, k: int, stride: int, *, zero_init: bool,
                 rngs: nnx.Rngs, signed_input: bool = True):
        self.cin, self.cout, self.stride = cin, cout, stride
        self.residual = stride == 1 and cin == cout
        # A block's input is the previous block's linear (signed) output; only after the stem is it ReLU6'd.
        self.expand = ConvBN(cin, hidden, 1, signed_input=signed_input, rngs=rngs)
        self.dw = ConvBN(hidden, hidden, k, stride=stride, depthwise=True, rngs=rngs)
        # Zero-initialised last BN scale: each residual block starts as the identity (stable deep nets).
        self.project = ConvBN(hidden, cout, 1, relu=False, zero_init=zero_init and self.residual, rngs=rngs)

    def __call__(self, x: jax.Array, *, hidden: Any, kernel: Any, w_bits: Any, a_bits: Any,
                 mode: str) -> jax.Array:
        """Block output for this expand width, kernel size and bits."""
        q = {"w_bits": w_bits, "a_bits": a_bits, "mode": mode}
        h = self.expand(x, in_width=self.cin, out_width=hidden, **q)
        h = self.dw(h, in_width=hidden, out_width=hidden, kernel_size=kernel, **q)
        y = self.project(h, in_width=hidden, out_width=self.cout, **q)
        return x + y if self.residual else y

    def extract(self, hidden: int, kernel: int, w_bits: int, a_bits: int) -> PlainBlock:
        """The static block."""
        q = {"w_bits": w_bits, "a_bits": a_bits}
        return PlainBlock(self.expand.extract(self.cin, hidden, **q),
                          self.dw.extract(hidden, hidden, kernel_size=kernel, **q),
                          self.project.extract(hidden, self.cout, **q), self.residual)


class PlainBlock(nnx.Module):
    """Static inverted-residual block."""

    def __init__(self, expand: nnx.Module, dw: nnx.Module, project: nnx.Module, residual: bool):
        self.expand, self.dw, self.project, self.residual = expand, dw, project, residual

    def __call__(self, x: jax.Array) -> jax.Array:
        """Forward."""
        y = self.project(self.dw(self.expand(x)))
        return x + y if self.residual else y


def global_pool(x: jax.Array) -> jax.Array:
    """Mean over the spatial axes of NHWC."""
    return x.mean(axis=(1, 2))


class SlimmableCNN(nnx.Module):
    """Inverted-residual supernet; `active` picks depth per stage, expand width, kernel and bits per block."""

    def __init__(self, meta: Mapping[str, Any], *, zero_init: bool, rngs: nnx.Rngs):
        self.input_shape = tuple(meta["input_shape"])
        h, w, c = self.input_shape
        self.stem_width = meta["stem"]
        self.stem = ConvBN(c, self.stem_width, 3, signed_input=True, rngs=rngs)
        blocks, cin = [], self.stem_width
        for stage in meta["stages"]:
            for b in range(stage["max_depth"]):
                stride = stage["stride"] if b == 0 else 1
                blocks.append(InvertedResidual(cin, stage["channels"], cin * meta["max_expand"],
                                               meta["max_kernel"], stride, zero_init=zero_init, rngs=rngs,
                                               signed_input=bool(blocks)))
                cin = stage["channels"]
        self.blocks = nnx.List(blocks)
        self.slots = tuple((s, b) for s, stage in enumerate(meta["stages"]) for b in range(stage["max_depth"]))
        self.head = ElasticLinear(cin, meta["n_classes"], signed_input=True, act_range=ACT_RANGE, rngs=rngs)
        self.last_channels, self.n_classes = cin, meta["n_classes"]

    def __call__(self, x: jax.Array, *, active: Mapping[str, jax.Array], mode: str = "eval") -> jax.Array:
        """Logits of the subnet `active` (see CNNFamily.active for the arrays)."""
        x = x.reshape((x.shape[0], *self.input_shape))
        x = self.stem(x, in_width=self.input_shape[-1], out_width=self.stem_width, w_bits=active["stem_bits"][0],
                      a_bits=active["stem_bits"][1], mode=mode)
        for k, ((s, b), block) in enumerate(zip(self.slots, self.blocks)):
            y = block(x, hidden=active["hidden"][k], kernel=active["kernel"][k], w_bits=active["bits"][k],
                      a_bits=active["abits"][k], mode=mode)
            # Blocks past the stage's depth are skipped (they are residual, so skipping = identity).
            x = jnp.where(b < active["depth"][s], y, x) if b > 0 else y
        return self.head(global_pool(x), in_width=self.last_channels, out_width=self.n_classes,
                         w_bits=active["head_bits"][0], a_bits=active["head_bits"][1])


class PlainCNN(nnx.Module):
    """The extracted, static CNN."""

    def __init__(self, input_shape: Sequence[int], stem: nnx.Module, blocks: Sequence[nnx.Module],
                 head: nnx.Module):
        self.input_shape = tuple(input_shape)
        self.stem, self.blocks, self.head = stem, nnx.List(list(blocks)), head

    def __call__(self, x: jax.Array) -> jax.Array:
        """Logits from flat inputs."""
        x = self.stem(x.reshape((x.shape[0], *self.input_shape)))
        for block in self.blocks:
            x = block(x)
        return self.head(global_pool(x))


def _image_shape(input_shape: tuple[int, ...] | None, n_features: int) -> tuple[int, int, int]:
    if input_shape is None or len(input_shape) != 3:
        raise ConfigError("model.family", f"family 'cnn' needs image inputs (H, W, C); the data has shape "
                                          f"{tuple(input_shape) if input_shape else (n_features,)}")
    return tuple(int(v) for v in input_shape)  # type: ignore[return-value]


def _stages(model: Mapping[str, Any]) -> list[dict[str, int]]:
    stages = model.get("stages")
    if not isinstance(stages, list) or not stages or not all(isinstance(s, dict) for s in stages):
        raise ConfigError("model.stages", "expected one or more [[model.stages]] tables")
    out = []
    for i, stage in enumerate(stages):
        known_keys(stage, STAGE_KEYS, f"model.stages[{i}]", "cnn")
        out.append({k: positive_int(stage, k, f"model.stages[{i}]", 1 if k == "stride" else None,
                                      MAX_LAYERS if k == "max_depth" else MAX_SIZE)
                    for k in sorted(STAGE_KEYS)})
        if out[-1]["stride"] > 2:
            raise ConfigError(f"model.stages[{i}].stride", f"must be 1 or 2, got {out[-1]['stride']}")
    return out


class CNNFamily(CostMixin):
    """The inverted-residual CNN family (MobileNetV2/V3-style stages)."""

    name = "cnn"

    def config_batching(self, backend: str) -> str:
        """Configs of a step run in a loop on the CPU (vmapped per-config convolutions are slow there)."""
        return "loop" if backend == "cpu" else "vmap"

    def parse_space(self, model: Mapping[str, Any], n_features: int, n_classes: int,
                    input_shape: tuple[int, ...] | None = None) -> SearchSpace:
        """Build the search space from `[model]`, raising ConfigError on bad keys/values."""
        known_keys(model, MODEL_KEYS, "model", self.name)
        image = _image_shape(input_shape, n_features)
        stages = _stages(model)
        stem = positive_int(model, "stem")
        max_expand = positive_int(model, "max_expand")
        max_kernel = positive_int(model, "max_kernel", default=3)
        if max_kernel % 2 == 0:
            raise ConfigError("model.max_kernel", f"must be odd, got {max_kernel}")
        zero_init = model.get("zero_init_residual", True)
        if not isinstance(zero_init, bool):
            raise ConfigError("model.zero_init_residual", f"expected true or false, got {zero_init!r}")
        space = space_table(model, SPACE_KEYS, OPTIONAL_SPACE_KEYS, self.name)
        depths = per_layer(space["depth"], len(stages), "model.space.depth")
        for i, (d, stage) in enumerate(zip(depths, stages)):
            if d[-1] > stage["max_depth"]:
                # One list for every stage, and a stage that could take the value: each may have its own.
                shared = isinstance(space["depth"], list) and all(isinstance(v, int) for v in space["depth"])
                fits = any(d[-1] <= other["max_depth"] for other in stages)
                hint = " (a list per stage, e.g. [[1, 2], [1]], gives each its own choices)" \
                    if shared and fits and len(stages) > 1 else ""
                raise ConfigError("model.space.depth", f"{d[-1]} exceeds stage {i} max_depth={stage['max_depth']}"
                                  + hint)
        n_blocks = sum(s["max_depth"] for s in stages)
        expands = per_layer(space["expand"], n_blocks, "model.space.expand")
        if max(e[-1] for e in expands) > max_expand:
            raise ConfigError("model.space.expand", f"a choice exceeds model.max_expand={max_expand}")
        kernels = per_layer(space.get("kernel", [max_kernel]), n_blocks, "model.space.kernel")
        for k in kernels:
            if any(v % 2 == 0 or v > max_kernel for v in k):
                raise ConfigError("model.space.kernel", f"sizes must be odd and <= model.max_kernel={max_kernel}")
        bits = per_layer_bits(space["bits"], n_blocks + 2, "model.space.bits")
        abits = per_layer_bits(space["act_bits"], n_blocks + 2, "model.space.act_bits") if "act_bits" in space \
            else None
        dims = [Dimension(f"depth.{s}", depths[s]) for s in range(len(stages))]
        dims.append(Dimension("bits.stem", bits[0]))
        if abits:
            dims.append(Dimension("abits.stem", abits[0]))
        k = 0
        for s, stage in enumerate(stages):
            for b in range(stage["max_depth"]):
                gate = (f"depth.{s}", b) if b >= depths[s][0] else (None, 0)
                k += 1
                dims.append(Dimension(f"expand.{s}.{b}", expands[k - 1], *gate))
                dims.append(Dimension(f"kernel.{s}.{b}", kernels[k - 1], *gate))
                dims.append(Dimension(f"bits.{s}.{b}", bits[k], *gate))
                if abits:
                    dims.append(Dimension(f"abits.{s}.{b}", abits[k], *gate))
        dims.append(Dimension("bits.head", bits[-1]))
        if abits:
            dims.append(Dimension("abits.head", abits[-1]))
        meta = {"family": self.name, "n_features": n_features, "n_classes": n_classes, "input_shape": list(image),
                "stem": stem, "stages": stages, "max_expand": max_expand, "max_kernel": max_kernel,
                "zero_init_residual": zero_init}
        return SearchSpace(tuple(dims), meta)

    # -- models ---------------------------------------------------------------------------
    def build(self, space: SearchSpace, *, rngs: nnx.Rngs) -> SlimmableCNN:
        """The supernet for `space`, freshly initialised."""
        return SlimmableCNN(space.meta, zero_init=space.meta["zero_init_residual"], rngs=rngs)

    def blocks(self, space: SearchSpace, config: Config) -> list[dict[str, int]]:
        """Every block slot in order: stage, index, in/out channels, stride, and (if active) its choices."""
        out, cin = [], space.meta["stem"]
        for s, stage in enumerate(space.meta["stages"]):
            for b in range(stage["max_depth"]):
                out.append({"stage": s, "block": b, "cin": cin, "cout": stage["channels"],
                            "stride": stage["stride"] if b == 0 else 1, "active": b < config[f"depth.{s}"],
                            "hidden": cin * config[f"expand.{s}.{b}"], "kernel": config[f"kernel.{s}.{b}"],
                            "bits": config[f"bits.{s}.{b}"], "abits": config.get(f"abits.{s}.{b}",
                                                                                 config[f"bits.{s}.{b}"])})
                cin = stage["channels"]
        return out

    def active(self, space: SearchSpace, configs: Sequence[Config]) -> dict[str, np.ndarray]:
        """Stacked arrays: depth (n, S), hidden/kernel/bits/abits (n, blocks), stem_bits/head_bits (n, 2)."""
        rows = [self.blocks(space, c) for c in configs]
        pair = lambda c, name: [c[f"bits.{name}"], c.get(f"abits.{name}", c[f"bits.{name}"])]  # noqa: E731
        n_stages = len(space.meta["stages"])
        return {
            "depth": np.array([[c[f"depth.{s}"] for s in range(n_stages)] for c in configs], np.int32),
            **{key: np.array([[blk[key] for blk in r] for r in rows], np.int32)
               for key in ("hidden", "kernel", "bits", "abits")},
            "stem_bits": np.array([pair(c, "stem") for c in configs], np.int32),
            "head_bits": np.array([pair(c, "head") for c in configs], np.int32),
        }

    def extract(self, model: SlimmableCNN, space: SearchSpace, config: Config) -> PlainCNN:
        """The static subnet for `config` (BN statistics as last calibrated)."""
        config = space.validate(config)
        c_in = space.meta["input_shape"][-1]
        stem = model.stem.extract(c_in, model.stem_width, config["bits.stem"], config.get("abits.stem",
                                                                                          config["bits.stem"]))
        blocks = [block.extract(b["hidden"], b["kernel"], b["bits"], b["abits"])
                  for block, b in zip(model.blocks, self.blocks(space, config)) if b["active"]]
        head = model.head.extract(model.last_channels, model.n_classes, config["bits.head"],
                                  config.get("abits.head", config["bits.head"]))
        return PlainCNN(space.meta["input_shape"], stem, blocks, head)

    # -- channel importance sorting (supernets.sorting) ------------------------------------------
    def channel_permutations(self, model: SlimmableCNN, space: SearchSpace) -> list[Permutation]:
        """Each block's expand (hidden) channels ordered by the L1 norm of their expand-conv filter: the
        expand conv's outputs, LSQ steps and BN, the depthwise conv and its BN, and the project conv's
        inputs follow. Block outputs (the residual stream) keep their order."""
        perms: list[Permutation] = []
        for k, block in enumerate(model.blocks):
            order = l1_order(block.expand.conv.kernel[...], axis=3)
            for part in ("expand", "dw"):
                base = ("blocks", k, part)
                perms += [Permutation(base + ("conv", "kernel"), 3, order),
                          Permutation(base + ("conv", "bias"), 0, order),
                          Permutation(base + ("conv", "w_steps"), 1, order)]
                perms += [Permutation(base + ("bn", name), 0, order) for name in ("scale", "bias", "mean", "var")]
            perms.append(Permutation(("blocks", k, "project", "conv", "kernel"), 2, order))
        return perms

    def sort_channels(self, model: SlimmableCNN, space: SearchSpace) -> None:
        """Sort the hidden channels in place (the largest subnet's function is unchanged)."""
        apply_to_model(model, self.channel_permutations(model, space))

    # -- per-unit latency table (nas.lut) -------------------------------------------------------
    def lut_units(self, space: SearchSpace, config: Config) -> list[LutUnit]:
        """The units timed alone, nn-Meter style fused kernels: the stem (conv + BN + ReLU6), each
        active inverted-residual block as a whole (skip included), global pooling + the head.

        Shapes start with the unit's input (H, W, C); a block adds hidden and output channels,
        kernel, stride and whether its input is signed (the first block reads the ReLU6'd stem,
        which changes its 8-bit integer path).
        """
        m, costs = space.meta, self.layer_costs(space, config)
        h, w, c = m["input_shape"]
        units = [LutUnit("stem", "stem", (h, w, c, m["stem"], 3), config["bits.stem"],
                         config.get("abits.stem", config["bits.stem"]), macs_under(costs, "stem"))]
        first = True
        for b in self.blocks(space, config):
            if not b["active"]:
                continue
            slot = f"s{b['stage']}.b{b['block']}"
            shape = (h, w, b["cin"], b["hidden"], b["cout"], b["kernel"], b["stride"], int(not first))
            units.append(LutUnit(slot, "block", shape, b["bits"], b["abits"], macs_under(costs, slot)))
            h, w, first = spatial(h, b["stride"]), spatial(w, b["stride"]), False
        units.append(LutUnit("head", "head", (h, w, m["stages"][-1]["channels"], m["n_classes"]), config["bits.head"],
                             config.get("abits.head", config["bits.head"]), macs_under(costs, "head")))
        return units

    def unit_modules(self, subnet: PlainCNN, space: SearchSpace,
                     config: Config) -> list[tuple[LutUnit, nnx.Module, tuple[int, ...]]]:
        """`lut_units` with the extracted subnet's modules (run in order on inputs reshaped to the
        image, they are `subnet`) and the per-example input shape (H, W, C) of each."""
        modules = [subnet.stem, *subnet.blocks, nnx.Sequential(global_pool, subnet.head)]
        return [(u, mod, u.shape[:3]) for u, mod in zip(self.lut_units(space, config), modules, strict=True)]

    # -- exact costs ----------------------------------------------------------------------
    def layer_costs(self, space: SearchSpace, config: Config) -> list[LayerCost]:
        """Per-layer costs: stem, then expand / depthwise / project of each active block, then the head."""
        m = space.meta
        h, w, c = m["input_shape"]
        sb, sa = config["bits.stem"], config.get("abits.stem", config["bits.stem"])
        costs = [LayerCost("stem", "conv", h * w * 9 * c * m["stem"], 9 * c * m["stem"], sb, sa, m["stem"],
                           2 * m["stem"], h * w * c, h * w * m["stem"], (h, w, c, m["stem"], 3, 1))]
        for b in self.blocks(space, config):
            if not b["active"]:
                continue
            slot, hid, k, bits, abits = f"s{b['stage']}.b{b['block']}", b["hidden"], b["kernel"], b["bits"], b["abits"]
            ho, wo = spatial(h, b["stride"]), spatial(w, b["stride"])
            # A residual block's input stays live until the sum: besides the depthwise and project layers'
            # own tensors (the expand layer reads it, so it is already counted there).
            skip = h * w * b["cin"] if b["stride"] == 1 and b["cin"] == b["cout"] else 0
            costs += [
                LayerCost(f"{slot}.expand", "conv", h * w * b["cin"] * hid, b["cin"] * hid, bits, abits, hid, 2 * hid,
                          h * w * b["cin"], h * w * hid, (h, w, b["cin"], hid, 1, 1)),
                LayerCost(f"{slot}.dw", "dwconv", ho * wo * k * k * hid, k * k * hid, bits, abits, hid, 2 * hid,
                          h * w * hid, ho * wo * hid, (h, w, hid, hid, k, b["stride"]), act_inner=skip),
                LayerCost(f"{slot}.project", "conv", ho * wo * hid * b["cout"], hid * b["cout"], bits, abits, b["cout"],
                          2 * b["cout"], ho * wo * hid, ho * wo * b["cout"], (ho, wo, hid, b["cout"], 1, 1),
                          act_inner=skip),
            ]
            h, w = ho, wo
        last = m["stages"][-1]["channels"]
        hb, ha = config["bits.head"], config.get("abits.head", config["bits.head"])
        costs.append(LayerCost("head", "dense", last * m["n_classes"], last * m["n_classes"], hb, ha, m["n_classes"],
                               m["n_classes"], last, m["n_classes"], (last, m["n_classes"])))
        return costs
