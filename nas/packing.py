"""Integer storage of quantised subnets: dense b-bit packing, a JSON layer manifest, and a small
pure-jax forward over the packed arrays (no supernet code needed to run a shipped model).

Layout of the packed tree (flat names, as in params.npz), for layer k with bit-width b:
  b = 32:   layers.k.kernel float32 (in, out); layers.k.bias float32 (out,)
  b = 8:    layers.k.kernel int8 (in, out)
  b = 2..7: layers.k.kernel uint8 (ceil(in*out*b/8),): the row-major (in, out) integers as b-bit
            two's complement, concatenated into a little-endian bit stream (value i holds bits
            i*b .. i*b+b-1, bit 0 of a byte first)
  b < 32:   plus layers.k.scale float32 (out,) (weight = q * scale, per output channel),
            layers.k.act_clip float32 () (input fake-quant range), layers.k.bias float32 (out,)

The forward of a quantised layer runs on integers: input codes (int8; unsigned 8-bit codes shifted
by -128, undone by a per-channel int32 constant) x weight codes (int8) -> int32, rescaled in fp32.
"""

from __future__ import annotations

import json
import math
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nas.errors import NasError
from nas.io import finite_number

FLOAT_BITS = 32
PACKED_BITS = (2, 3, 4, 5, 6, 7, 8, FLOAT_BITS)  # the layout above (this module imports no supernet code)
MANIFEST_FORMAT = "jaxnas-packed"
MANIFEST_VERSION = 1
MANIFEST = "manifest.json"
PARAMS_NPZ = "params.npz"
PARAMS_ORBAX = "params.orbax"


# -- bit packing (numpy) ----------------------------------------------------------------------
def qmax(bits: int) -> int:
    """Largest level of symmetric signed `bits`-bit weights: 2^(b-1) - 1."""
    return 2 ** (bits - 1) - 1


def pack_bits(q: np.ndarray, bits: int) -> np.ndarray:
    """Signed integers in [-2^(b-1), 2^(b-1)-1] -> uint8 bit stream of ceil(n*b/8) bytes."""
    if not 1 <= bits <= 8:
        raise ValueError(f"pack_bits: bits must be 1..8, got {bits}")
    flat = np.asarray(q).astype(np.int64).ravel()
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    if flat.size and (flat.min() < lo or flat.max() > hi):
        raise ValueError(f"pack_bits: values outside [{lo}, {hi}] for {bits} bits")
    u = (flat & ((1 << bits) - 1)).astype(np.uint8)
    planes = (u[:, None] >> np.arange(bits, dtype=np.uint8)) & 1  # (n, b), least significant bit first
    return np.packbits(planes.ravel(), bitorder="little")


def unpack_bits(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    """Inverse of pack_bits: `count` signed integers (int8) from a uint8 bit stream."""
    packed = np.asarray(packed, np.uint8).ravel()
    if packed.size != math.ceil(count * bits / 8):
        raise ValueError(f"unpack_bits: {packed.size} bytes cannot hold exactly {count} x {bits}-bit values")
    planes = np.unpackbits(packed, count=count * bits, bitorder="little").reshape(count, bits).astype(np.int16)
    u = (planes << np.arange(bits, dtype=np.int16)).sum(axis=1)
    return np.where(u >= 1 << (bits - 1), u - (1 << bits), u).astype(np.int8)


def integer_weights(kernel: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """(q int8, per-output-channel float32 scale) with q * scale == kernel bit for bit.

    The kernel must already lie on the symmetric grid (QuantDense kernels do: quantize_weight).
    The scale is recovered as max|w| / qmax; float rounding can put it an ulp or two away from the
    one training used, so neighbours are tried and the first exact one per channel is kept.
    """
    k = np.asarray(kernel, np.float32)
    m = np.float32(qmax(bits))
    peak = np.max(np.abs(k), axis=0)
    base = np.where(peak > 0, peak / m, np.float32(1.0)).astype(np.float32)
    scale, q = base.copy(), np.zeros(k.shape, np.int8)
    done = np.zeros(k.shape[1], bool)
    for step in (0, 1, -1, 2, -2, 3, -3):
        cand = base.copy()
        for _ in range(abs(step)):
            cand = np.nextafter(cand, np.float32(np.inf) if step > 0 else np.float32(0)).astype(np.float32)
        qc = np.clip(np.round(k / cand), -m, m)
        exact = np.all(qc.astype(np.float32) * cand == k, axis=0) & ~done
        scale[exact], q[:, exact] = cand[exact], qc[:, exact].astype(np.int8)
        done |= exact
        if done.all():
            return q, scale
    bad = int(np.flatnonzero(~done)[0])
    raise ValueError(f"kernel channel {bad} is not on a {bits}-bit symmetric grid")


# -- packed trees ------------------------------------------------------------------------------
def pack_layer(kernel: np.ndarray, bias: np.ndarray, act_clip: np.ndarray, bits: int) -> dict[str, np.ndarray]:
    """One layer's arrays as stored: integers packed at `bits` (+ scale, clip), or float32."""
    kernel = np.asarray(kernel, np.float32)
    out = {"bias": np.asarray(bias, np.float32)}
    if bits >= FLOAT_BITS:
        return {"kernel": kernel, **out}
    q, scale = integer_weights(kernel, bits)
    stored = q if bits == 8 else pack_bits(q, bits)
    return {"kernel": stored, "scale": scale, "act_clip": np.asarray(act_clip, np.float32).reshape(()), **out}


def unpack_kernel(arrays: Mapping[str, np.ndarray], layer: Mapping[str, Any]) -> np.ndarray:
    """The float32 (in, out) kernel of one packed layer (numpy; exact)."""
    n_in, n_out, bits = layer["in"], layer["out"], layer["bits"]
    kernel = np.asarray(arrays["kernel"])
    if bits >= FLOAT_BITS:
        return kernel.astype(np.float32)
    q = kernel.astype(np.int8) if bits == 8 else unpack_bits(kernel, bits, n_in * n_out)
    return q.reshape(n_in, n_out).astype(np.float32) * np.asarray(arrays["scale"], np.float32)


def make_manifest(layers: Sequence[Mapping[str, Any]], shift: np.ndarray, scale: np.ndarray) -> dict[str, Any]:
    """The JSON description a packed tree needs to run: layer shapes, bits, input normalisation."""
    return {
        "format": MANIFEST_FORMAT, "version": MANIFEST_VERSION,
        "input": {"features": int(np.asarray(shift).size), "dtype": "float32",
                  "shift": [float(v) for v in np.asarray(shift, np.float32)],
                  "scale": [float(v) for v in np.asarray(scale, np.float32)],
                  "note": "x_norm = (x_raw - shift) / scale"},
        "layers": [{"in": int(s["in"]), "out": int(s["out"]), "bits": int(s["bits"]),
                    "signed_input": bool(s["signed_input"]), "relu_after": i < len(layers) - 1}
                   for i, s in enumerate(layers)],
        "layout": "see nas/packing.py: b=8 int8; b<8 little-endian two's-complement bit stream, row-major "
                  "(in, out); weight = q * scale[out]; inputs of b<32 layers fake-quantised to b bits in "
                  "[-act_clip, act_clip] (signed_input) or [0, act_clip]",
    }


def flatten(tree: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """[{name: array}] per layer -> {'layers.k.name': array} (the npz names)."""
    return {f"layers.{k}.{name}": a for k, layer in enumerate(tree) for name, a in layer.items()}


def unflatten(flat: Mapping[str, np.ndarray], n_layers: int) -> list[dict[str, np.ndarray]]:
    """Inverse of flatten; raises KeyError naming a missing layer."""
    tree: list[dict[str, np.ndarray]] = [{} for _ in range(n_layers)]
    for key, a in flat.items():
        _, k, name = key.split(".", 2)
        if not 0 <= int(k) < n_layers:
            raise KeyError(f"{key} is stored, but the manifest lists {n_layers} layers")
        tree[int(k)][name] = a
    for k, layer in enumerate(tree):
        if "kernel" not in layer or "bias" not in layer:
            raise KeyError(f"layers.{k}.kernel/bias")
    return tree


def raw_bytes(tree: Sequence[Mapping[str, np.ndarray]]) -> int:
    """Bytes of the stored arrays themselves (what the family's size_bytes predicts)."""
    return sum(int(a.nbytes) for layer in tree for a in layer.values())


# -- forward (pure jax) ------------------------------------------------------------------------
def bit_offsets(index: jax.Array, bits: int) -> tuple[jax.Array, jax.Array]:
    """(byte, bit within it) where value `index` of a `bits`-bit stream starts, in int32 without forming
    index * bits (which wraps past 2^31 / bits values, e.g. 307M at 7 bits: a layer the spaces allow).
    8 values fill exactly `bits` bytes, so index = 8g + r starts at byte g*bits + (r*bits >> 3)."""
    group, rest = index >> 3, (index & 7) * bits
    return group * bits + (rest >> 3), rest & 7


def codes_in_graph(arrays: Mapping[str, np.ndarray], layer: Mapping[str, Any]) -> jax.Array:
    """The (in, out) int8 weight codes of a quantised layer, unpacked inside the traced graph."""
    n_in, n_out, bits = layer["in"], layer["out"], layer["bits"]
    stored = jnp.asarray(arrays["kernel"])
    if bits == 8:
        q = stored
    else:
        # Value i spans at most two bytes (b <= 7): read both, shift, mask, sign-extend.
        p = jnp.concatenate([stored.astype(jnp.int32), jnp.zeros((1,), jnp.int32)])
        byte, offset = bit_offsets(jnp.arange(n_in * n_out, dtype=jnp.int32), bits)
        word = p[byte] | (p[byte + 1] << 8)
        u = (word >> offset) & ((1 << bits) - 1)
        q = jnp.where(u >= 1 << (bits - 1), u - (1 << bits), u)
    return q.reshape(n_in, n_out).astype(jnp.int8)


def _input_codes(x: jax.Array, bits: int, clip: jax.Array, signed: bool) -> tuple[jax.Array, jax.Array]:
    """(integer-valued codes, step) of the input fake quantisation: the same float ops as supernets.quant."""
    levels = jnp.float32(2.0 ** (bits - 1) - 1.0 if signed else 2.0 ** bits - 1.0)
    clip = jnp.abs(clip) + 1e-8
    step = clip / levels
    lo = -clip if signed else jnp.zeros_like(clip)
    return jnp.round(jnp.clip(x, lo, clip) / step), step


def input_shift(bits: int, signed: bool) -> int:
    """Unsigned 8-bit input codes (0..255) run as code - 128 so that they fit int8; else 0."""
    return 0 if signed or bits < 8 else 128


def _integer_layer(h: jax.Array, arrays: Mapping[str, np.ndarray], layer: Mapping[str, Any],
                   offset: np.ndarray | None) -> jax.Array:
    """int8 input codes x int8 weight codes -> int32, rescaled in fp32 (as supernets.lowbit's "int" path)."""
    bits, signed = layer["bits"], layer["signed_input"]
    codes, step = _input_codes(h, bits, jnp.asarray(arrays["act_clip"]), signed)
    shift = input_shift(bits, signed)
    dims = (((1,), (0,)), ((), ()))
    acc = jax.lax.dot_general((codes - shift).astype(jnp.int8), codes_in_graph(arrays, layer), dims,
                              preferred_element_type=jnp.int32)
    if offset is not None:
        acc = acc + jnp.asarray(offset)
    return acc.astype(jnp.float32) * (step * jnp.asarray(arrays["scale"])) + jnp.asarray(arrays["bias"])


def input_offset(arrays: Mapping[str, np.ndarray], layer: Mapping[str, Any]) -> np.ndarray | None:
    """int32 (out,) = shift x column sums of the weight codes, undoing the input shift; None if no shift."""
    bits, shift = layer["bits"], input_shift(layer["bits"], layer["signed_input"])
    if bits >= FLOAT_BITS or not shift:
        return None
    kernel = np.asarray(arrays["kernel"])
    q = kernel.astype(np.int8) if bits == 8 else unpack_bits(kernel, bits, layer["in"] * layer["out"])
    return (shift * q.reshape(layer["in"], layer["out"]).astype(np.int32).sum(axis=0)).astype(np.int32)


def unknown_where_input_is(x: jax.Array, y: jax.Array) -> jax.Array:
    """`y` with NaN in every row whose input row `x` holds a NaN or infinity, as the float model answers.

    Integer kernels round a NaN input to code 0 (the middle of the range for unsigned inputs), so a
    quantised model answered a row with a missing value with confident finite logits.
    """
    bad = ~jnp.isfinite(x).reshape(x.shape[0], -1).all(axis=1)
    return jnp.where(bad.reshape((-1,) + (1,) * (y.ndim - 1)), jnp.nan, y)


def make_forward(tree: Sequence[Mapping[str, np.ndarray]],
                 manifest: Mapping[str, Any]) -> Callable[[jax.Array], jax.Array]:
    """raw features -> logits from the packed tree: normalise, then per layer apply.

    Quantised layers compute on integers (int8 x int8 -> int32, then one fp32 rescale per output
    channel), float layers in float; the result equals the fake-quantised float model's up to
    fp32 rounding of the rescale.
    """
    shift = np.asarray(manifest["input"]["shift"], np.float32)
    scale = np.asarray(manifest["input"]["scale"], np.float32)
    layers = manifest["layers"]
    offsets = [input_offset(arrays, layer) for arrays, layer in zip(tree, layers)]

    def forward(x: jax.Array) -> jax.Array:
        h = (x - jnp.asarray(shift)) / jnp.asarray(scale)
        for arrays, layer, offset in zip(tree, layers, offsets):
            if layer["bits"] < FLOAT_BITS:
                h = _integer_layer(h, arrays, layer, offset)
            else:
                h = h @ jnp.asarray(arrays["kernel"]) + jnp.asarray(arrays["bias"])
            if layer["relu_after"]:
                h = jax.nn.relu(h)
        return unknown_where_input_is(x, h)

    return forward


# -- files -------------------------------------------------------------------------------------
def _unreadable(path: Path, what: str, e: Exception) -> NasError:
    """One-line error naming the file and the reason."""
    return NasError(f"{path}: missing or not a readable {what} ({type(e).__name__}: {e})".splitlines()[0])


def read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of an exported folder, checked; NasError naming the file otherwise."""
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as e:
        raise _unreadable(path, "manifest", e) from None
    _check_manifest(manifest, path)
    return manifest


def is_int(v: Any) -> bool:
    """An int that is not a bool (JSON true would pass isinstance(v, int))."""
    return isinstance(v, int) and not isinstance(v, bool)


def check_input(manifest: Mapping[str, Any], path: Path) -> int:
    """A manifest's `input` (features, and the normalisation's shift and scale), checked; the feature count."""
    inp = manifest.get("input")
    if not isinstance(inp, dict):
        raise NasError(f"{path}: 'input' must be an object")
    n = inp.get("features")
    if not is_int(n) or n < 1:
        raise NasError(f"{path}: input.features must be an int >= 1, got {n!r}")
    for key in ("shift", "scale"):
        values = inp.get(key)
        if not isinstance(values, list) or len(values) != n or any(finite_number(v) is None for v in values):
            raise NasError(f"{path}: input.{key} must be a list of {n} finite numbers (input.features)")
        with np.errstate(over="ignore"):  # applied in float32: 1e300 is inf there, and 1e-320 is 0
            as_used = np.asarray(values, np.float64).astype(np.float32)
        if not np.isfinite(as_used).all():
            raise NasError(f"{path}: input.{key} holds a value beyond float32's range")
        if key == "scale" and (as_used == 0).any():  # x_norm = (x - shift) / scale
            raise NasError(f"{path}: input.scale has a zero (in float32)")
    return n


def _check_manifest(manifest: Any, path: Path) -> None:
    """Types and consistency of a manifest's fields, so a damaged one is named here, not mid-forward
    (the arrays are checked against its layers by _check_tree)."""
    if not isinstance(manifest, dict):
        raise NasError(f"{path}: not a {MANIFEST_FORMAT} manifest (top level is not an object)")
    if manifest.get("format") != MANIFEST_FORMAT or manifest.get("version") != MANIFEST_VERSION:
        raise NasError(f"{path}: not a {MANIFEST_FORMAT} v{MANIFEST_VERSION} manifest")
    n = check_input(manifest, path)
    layers = manifest.get("layers")
    if not isinstance(layers, list) or not layers:
        raise NasError(f"{path}: 'layers' must be a non-empty list of layer objects")
    width = n  # each layer takes what the one before gives, the first the raw features
    for k, layer in enumerate(layers):
        where = f"{path}: layers[{k}]"
        if not isinstance(layer, dict):
            raise NasError(f"{where} must be an object")
        for key in ("in", "out"):
            if not is_int(layer.get(key)) or layer[key] < 1:
                raise NasError(f"{where}.{key} must be an int >= 1, got {layer.get(key)!r}")
        if not is_int(layer.get("bits")) or layer["bits"] not in PACKED_BITS:
            raise NasError(f"{where}.bits must be one of {', '.join(map(str, PACKED_BITS))}, "
                           f"got {layer.get('bits')!r}")
        for key in ("signed_input", "relu_after"):
            if not isinstance(layer.get(key), bool):
                raise NasError(f"{where}.{key} must be true or false, got {layer.get(key)!r}")
        if layer["in"] != width:
            what = "input.features" if k == 0 else f"layers[{k - 1}].out"
            raise NasError(f"{where}.in is {layer['in']} but {what} is {width}")
        width = layer["out"]


def _check_tree(tree: list[dict[str, np.ndarray]], manifest: Mapping[str, Any], path: Path) -> None:
    """Array shapes and dtypes must match the manifest, so a damaged file fails here, not mid-forward."""
    for k, (arrays, layer) in enumerate(zip(tree, manifest["layers"])):
        n_in, n_out, bits = layer["in"], layer["out"], layer["bits"]
        want = {"bias": ((n_out,), np.float32)}
        if bits >= FLOAT_BITS:
            want["kernel"] = ((n_in, n_out), np.float32)
        else:
            packed = ((math.ceil(n_in * n_out * bits / 8),), np.uint8)
            want["kernel"] = ((n_in, n_out), np.int8) if bits == 8 else packed
            want["scale"] = ((n_out,), np.float32)
            want["act_clip"] = ((), np.float32)
        for name, (shape, dtype) in want.items():
            a = arrays.get(name)
            if a is None or a.shape != shape or a.dtype != dtype:
                got = "missing" if a is None else f"{a.dtype}{list(a.shape)}"
                raise NasError(f"{path}: layers.{k}.{name} is {got}, expected {np.dtype(dtype)}{list(shape)}")
            if dtype == np.float32 and not np.isfinite(a).all():
                raise NasError(f"{path}: layers.{k}.{name} holds a value that is not a finite number")


def save_npz(path: Path, tree: Sequence[Mapping[str, np.ndarray]]) -> None:
    """Uncompressed npz (so its size on disk is the honest array bytes plus the zip container)."""
    np.savez(path, **flatten(tree))


def load_npz(folder: Path) -> tuple[list[dict[str, np.ndarray]], dict[str, Any]]:
    """(packed tree, manifest) of an exported folder; NasError naming the file if damaged."""
    manifest = read_manifest(folder)
    path = folder / PARAMS_NPZ
    if not zipfile.is_zipfile(path):  # else np.load would report a non-npz file as "pickled data"
        raise NasError(f"{path}: missing or not an npz (zip) file")
    try:
        with np.load(path, allow_pickle=False) as data:
            flat = {k: data[k] for k in data.files}
        tree = unflatten(flat, len(manifest["layers"]))
    except (OSError, ValueError, KeyError, IndexError, EOFError, zipfile.BadZipFile) as e:
        raise _unreadable(path, "packed-params npz", e) from None
    _check_tree(tree, manifest, path)
    return tree, manifest


def save_orbax(path: Path, tree: Sequence[Mapping[str, np.ndarray]]) -> None:
    """The packed tree as an orbax checkpoint folder (same names as the npz, nested by layer)."""
    import orbax.checkpoint as ocp

    nested = {"layers": {str(k): dict(layer) for k, layer in enumerate(tree)}}
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(Path(path).absolute(), nested)


def load_orbax(folder: Path) -> tuple[list[dict[str, np.ndarray]], dict[str, Any]]:
    """(packed tree, manifest) from params.orbax/; NasError naming the folder if damaged."""
    import orbax.checkpoint as ocp

    manifest = read_manifest(folder)
    path = (folder / PARAMS_ORBAX).absolute()
    try:
        restored = ocp.PyTreeCheckpointer().restore(path)
        tree = [{name: np.asarray(a) for name, a in restored["layers"][str(k)].items()}
                for k in range(len(manifest["layers"]))]
    except Exception as e:  # orbax raises many kinds; all mean "unreadable" to the user
        raise _unreadable(path, "orbax checkpoint", e) from None
    _check_tree(tree, manifest, path)
    return tree, manifest
