"""Export of families whose extracted subnet is a general module (CNN, transformer): every variable
of the extracted model by name, quantised kernels stored as packed integers (+ their per-channel
steps), a manifest naming family, space and config. The npz/orbax form is rebuilt with this project
installed (`load_state_member`).

The forward (the StableHLO artefact, and `load_state_member`) unpacks the stored integers inside
the traced graph. With manifest ``kernels = "int"`` (written from `[measure] kernels`, the default)
every quantised layer then runs the path `supernets.lowbit.use_integer_kernels` gives it when the
subnet is timed: int8 x int8 -> int32 dots/convolutions, or int8 weight-only, on exactly the
stored codes and steps. With ``kernels = "fake"`` (and in manifests written before the field) the
codes are dequantised and the layers compute in float on the fake-quantised values.
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from nas import packing
from nas.errors import NasError, StageError
from nas.io import read_json
from search_spaces import Config, SearchSpace
from supernets.lowbit import adopt_codes

STATE_FORMAT = "jaxnas-state"
# 2: BatchNorm folded to one scale and shift per channel, no bias on a conv a BatchNorm follows, no
# steps on float layers (the stored bytes are the predicted size); 1 stored the module as trained.
STATE_VERSION = 2
KERNELS = ("int", "fake")  # manifest "kernels": what the forward runs (see the module docstring)


def _name(path: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in path)


def pack_state(plain: nnx.Module) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
    """(arrays by variable name, manifest entry per name): quantised kernels become b-bit integers."""
    owners = {path: node for path, node in nnx.iter_graph(plain)
              if isinstance(node, nnx.Module) and getattr(node, "w_bits", packing.FLOAT_BITS) < packing.FLOAT_BITS}
    arrays, entries = {}, {}
    for path, var in nnx.to_flat_state(nnx.state(plain)):
        name, value = _name(path), np.asarray(var[...], np.float32)
        owner = owners.get(tuple(path[:-1]))
        if path[-1] != "kernel" or owner is None:
            arrays[name], entries[name] = value, {"shape": list(value.shape), "bits": packing.FLOAT_BITS}
            continue
        bits, step = owner.w_bits, np.asarray(owner.w_step[...], np.float32)
        q = np.rint(value / step)
        if not np.array_equal((q.astype(np.float32) * step).astype(np.float32), value):
            raise StageError(f"{name}: kernel is not on its {bits}-bit grid (q * step != kernel)")
        q = q.astype(np.int8)
        arrays[name] = q if bits == 8 else packing.pack_bits(q, bits)
        entries[name] = {"shape": list(value.shape), "bits": bits, "step": f"{_name(path[:-1])}.w_step"}
    return arrays, entries


def _values(arrays: Mapping[str, Any], entries: Mapping[str, Mapping[str, Any]], *,
            codes: bool) -> dict[str, jax.Array]:
    """Every variable's value inside the traced graph: packed kernels as their int8 codes (`codes`),
    else dequantised to float (codes x step)."""
    out = {}
    for name, e in entries.items():
        if e["bits"] >= packing.FLOAT_BITS:
            out[name] = jnp.asarray(arrays[name])
            continue
        shape = e["shape"]
        layer = {"in": math.prod(shape[:-1]), "out": shape[-1], "bits": e["bits"]}
        q = packing.codes_in_graph({"kernel": arrays[name]}, layer)
        value = q if codes else q.astype(jnp.float32) * jnp.asarray(arrays[e["step"]])
        out[name] = value.reshape(shape)
    return out


def _quantised_layers(entries: Mapping[str, Mapping[str, Any]]) -> set[str]:
    """Names of the layers whose kernel is stored as integers."""
    return {name.rpartition(".")[0] for name, e in entries.items() if e["bits"] < packing.FLOAT_BITS}


def make_state_forward(graphdef: Any, template: Any, arrays: Mapping[str, Any], manifest: Mapping[str, Any]
                       ) -> Callable[[jax.Array], jax.Array]:
    """raw features -> logits from the packed arrays (normalisation first).

    `graphdef`/`template` are those of the extracted (fake-quant) subnet. Under manifest
    ``kernels = "int"`` each quantised layer adopts its stored codes and steps
    (`supernets.lowbit.adopt_codes`), so it computes as the timed `use_integer_kernels` copy does.
    """
    shift = np.asarray(manifest["input"]["shift"], np.float32)
    scale = np.asarray(manifest["input"]["scale"], np.float32)
    entries = manifest["arrays"]
    integer = manifest.get("kernels", "fake") == "int"
    quantised = _quantised_layers(entries)

    def forward(x: jax.Array) -> jax.Array:
        values = _values(arrays, entries, codes=integer)
        flat = [(path, var.replace(values[_name(path)])) for path, var in nnx.to_flat_state(template)]
        model = nnx.merge(graphdef, nnx.from_flat_state(flat))
        if integer:
            for path, layer in nnx.iter_graph(model):
                if _name(path) in quantised:  # its kernel holds the stored int8 codes
                    adopt_codes(layer, layer.kernel[...], layer.w_step[...])
        return packing.unknown_where_input_is(x, model((x - jnp.asarray(shift)) / jnp.asarray(scale)))

    return forward


def state_manifest(family: str, space: SearchSpace, config: Config, entries: Mapping[str, Any],
                   shift: np.ndarray, scale: np.ndarray, *, kernels: str = "int") -> dict[str, Any]:
    """What a loader needs: family, space, config, array names/shapes/bits, input normalisation, and
    `kernels` ("int": quantised layers compute on the stored integers; "fake": dequantised floats)."""
    if kernels not in KERNELS:
        raise StageError(f"state export: kernels must be one of {KERNELS}, got {kernels!r}")
    return {"format": STATE_FORMAT, "version": STATE_VERSION, "family": family, "space": space.to_dict(),
            "config": dict(config), "arrays": dict(entries), "kernels": kernels,
            "input": {"features": int(np.asarray(shift).size), "dtype": "float32",
                      "shift": [float(v) for v in np.asarray(shift, np.float32)],
                      "scale": [float(v) for v in np.asarray(scale, np.float32)],
                      "note": "x_norm = (x_raw - shift) / scale"},
            "layout": "b=8 int8, b<8 packed bit stream (see nas/packing.py), row-major over the kernel's shape; "
                      "kernel = q * <layer>.w_step (per output channel, last axis); kernels = 'int': layers "
                      "with <= 8-bit weights and inputs run int8 x int8 -> int32 (depthwise convolutions and "
                      "float inputs: int8 weights, float compute), as supernets.lowbit.use_integer_kernels"}


def save_state_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Uncompressed npz of the packed arrays."""
    np.savez(path, **arrays)


def save_state_orbax(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """The packed arrays as an orbax checkpoint (flat names)."""
    import orbax.checkpoint as ocp

    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(Path(path).absolute(), dict(arrays))


def _read_arrays(folder: Path, fmt: str | None = None) -> dict[str, np.ndarray]:
    npz, orbax_dir = folder / packing.PARAMS_NPZ, folder / packing.PARAMS_ORBAX
    try:
        if fmt == "npz" or fmt is None and npz.exists():
            if not zipfile.is_zipfile(npz):
                raise NasError(f"{npz}: not an npz (zip) file")
            with np.load(npz, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        import orbax.checkpoint as ocp

        return {k: np.asarray(v) for k, v in ocp.PyTreeCheckpointer().restore(orbax_dir.absolute()).items()}
    except NasError:
        raise
    except Exception as e:  # numpy/orbax raise many kinds; all mean "unreadable"
        raise NasError(f"{folder}: packed params unreadable ({type(e).__name__}: {e})".splitlines()[0]) from None


def _check_state_manifest(manifest: Any, path: Path) -> None:
    """Fields the loader reads, checked, so a damaged manifest is named here and not by a KeyError."""
    if not isinstance(manifest, dict) or manifest.get("format") != STATE_FORMAT:
        raise NasError(f"{path}: not a {STATE_FORMAT} v{STATE_VERSION} manifest")
    if manifest.get("version") == 1:
        raise NasError(f"{path}: a {STATE_FORMAT} v1 export (before BatchNorm folding); its StableHLO artefact "
                       "still loads with nas.load_exported, or re-export with "
                       "`nas export EXPERIMENT.toml --run-dir RUN_DIR --force`")
    if manifest.get("version") != STATE_VERSION:
        raise NasError(f"{path}: not a {STATE_FORMAT} v{STATE_VERSION} manifest")
    if manifest.get("kernels", "fake") not in KERNELS:
        raise NasError(f"{path}: kernels must be one of {KERNELS}, got {manifest.get('kernels')!r}")
    packing.check_input(manifest, path)
    arrays = manifest.get("arrays")
    if not isinstance(arrays, dict) or not arrays:
        raise NasError(f"{path}: 'arrays' must be an object naming each stored array")
    for name, e in arrays.items():
        where = f"{path}: arrays[{name!r}]"
        if not isinstance(e, dict):
            raise NasError(f"{where} must be an object")
        shape = e.get("shape")
        if not isinstance(shape, list) or not all(packing.is_int(d) and d >= 0 for d in shape):
            raise NasError(f"{where}.shape must be a list of ints >= 0, got {shape!r}")
        if not packing.is_int(e.get("bits")) or e["bits"] not in packing.PACKED_BITS:
            raise NasError(f"{where}.bits must be one of {', '.join(map(str, packing.PACKED_BITS))}, "
                           f"got {e.get('bits')!r}")
        if e["bits"] < packing.FLOAT_BITS and (not shape or e.get("step") not in arrays):
            raise NasError(f"{where}: a quantised kernel needs a shape and a 'step' naming another array")


def _check_against_subnet(manifest: Mapping[str, Any], shell: nnx.Module, template: Any, space: SearchSpace,
                          path: Path) -> None:
    """The manifest's arrays must be the rebuilt subnet's variables (names, shapes, bits), and its input
    the space's features, or the forward fails at its first call with an error from inside flax/XLA."""
    entries = manifest["arrays"]
    wanted = {_name(p): tuple(v.shape) for p, v in nnx.to_flat_state(template)}
    missing, extra = sorted(set(wanted) - set(entries)), sorted(set(entries) - set(wanted))
    if missing:
        raise NasError(f"{path}: 'arrays' lacks {missing[0]!r}, a variable of the subnet its config gives")
    if extra:
        raise NasError(f"{path}: 'arrays' names {extra[0]!r}, which the subnet its config gives does not have")
    for name, shape in wanted.items():
        if tuple(entries[name]["shape"]) != shape:
            raise NasError(f"{path}: arrays[{name!r}].shape is {entries[name]['shape']}, but the subnet its config "
                           f"gives has {list(shape)}")
    for name, e in entries.items():
        if e["bits"] < packing.FLOAT_BITS and e["step"] != f"{name.rpartition('.')[0]}.w_step":
            raise NasError(f"{path}: arrays[{name!r}].step is {e['step']!r}, not its layer's w_step")
    for p, node in nnx.iter_graph(shell):
        name = f"{_name(p)}.kernel"
        if isinstance(node, nnx.Module) and name in entries and hasattr(node, "w_bits"):
            bits = min(int(node.w_bits), packing.FLOAT_BITS)
            if entries[name]["bits"] != bits:
                raise NasError(f"{path}: arrays[{name!r}].bits is {entries[name]['bits']}, but its config gives "
                               f"{bits}")
    features = space.meta.get("n_features")
    if features is not None and manifest["input"]["features"] != features:
        raise NasError(f"{path}: input.features is {manifest['input']['features']!r}, but its space takes {features!r}")


def load_state_member(folder: Path, fmt: str | None = None) -> Callable[[jax.Array], jax.Array]:
    """A jitted raw-features -> logits function of one exported member (needs this project), from its
    `fmt` params ("npz" or "orbax"; None: the npz when there is one)."""
    from supernets import get_family

    manifest = read_json(folder / packing.MANIFEST, "export manifest")
    _check_state_manifest(manifest, folder / packing.MANIFEST)
    try:
        family = get_family(manifest["family"])
        space = SearchSpace.from_dict(manifest["space"])
        config = space.validate(manifest["config"])
        # Shapes only: the stored arrays fill it, and a manifest's space is not allocated before it is
        # checked against them (n_classes 1e12 ran out of memory building the supernet).
        shell = nnx.eval_shape(lambda: family.extract(family.build(space, rngs=nnx.Rngs(0)), space, config))
    except (KeyError, TypeError, ValueError, ArithmeticError, NasError) as e:  # ZeroDivisionError: 0 classes
        raise NasError(f"{folder / packing.MANIFEST}: cannot rebuild the subnet ({e})".splitlines()[0]) from None
    graphdef, template = nnx.split(shell)
    _check_against_subnet(manifest, shell, template, space, folder / packing.MANIFEST)
    arrays = _read_arrays(folder, fmt)
    for name, e in manifest["arrays"].items():
        a = arrays.get(name)
        n = math.prod(e["shape"])
        want = (tuple(e["shape"]), np.float32) if e["bits"] >= 32 else \
            ((tuple(e["shape"]), np.int8) if e["bits"] == 8 else ((math.ceil(n * e["bits"] / 8),), np.uint8))
        if a is None or a.shape != want[0] or a.dtype != want[1]:
            got = "missing" if a is None else f"{a.dtype}{list(a.shape)}"
            raise NasError(f"{folder}: array {name} is {got}, expected {np.dtype(want[1])}{list(want[0])}")
        if a.dtype == np.float32 and not np.isfinite(a).all():
            raise NasError(f"{folder}: array {name} holds a value that is not a finite number")
    return jax.jit(make_state_forward(graphdef, template, arrays, manifest))
