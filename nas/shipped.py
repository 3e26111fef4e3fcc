"""Loading what `nas export` shipped, with jax and numpy only: the StableHLO artefact, else the packed
npz/orbax params (the general-module layout of CNN and transformer members rebuilds its subnet, so
that one needs this project). Each file is checked against the SHA-256 that metrics.json recorded
when it was written: a flipped byte in a serialised module can still deserialise and then compute
wrong numbers without any error."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nas import packing
from nas.errors import NasError
from nas.io import read_json

ARTIFACT = "model.jaxexport"
METRICS = "metrics.json"
DIGESTS = "sha256"  # metrics.json key: {relative file path: hex digest} of the shipped files
# The files each way of loading reads (a folder: every file under it).
LOADED = {"stablehlo": (ARTIFACT,), "npz": (packing.MANIFEST, packing.PARAMS_NPZ),
          "orbax": (packing.MANIFEST, packing.PARAMS_ORBAX)}


def file_digests(folder: Path, names: Iterable[str]) -> dict[str, str]:
    """{relative path: SHA-256} of the named files of `folder`, every file under a named folder included."""
    out = {}
    for name in names:
        path = folder / name
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path] if path.is_file() else []
        for f in files:
            out[f.relative_to(folder).as_posix()] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def _check_digests(folder: Path, recorded: dict[str, str], how: str) -> None:
    wanted = {rel: digest for rel, digest in recorded.items()
              if any(rel == name or rel.startswith(name + "/") for name in LOADED[how])}
    for rel, digest in wanted.items():
        path = folder / rel
        if not path.is_file():
            raise NasError(f"{path}: missing (metrics.json lists it among the exported files)")
        if hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            raise NasError(f"{path}: its SHA-256 differs from the one metrics.json recorded at export "
                           "(the file is damaged or comes from another export)")


def _forms_there(folder: Path) -> list[str]:
    there = [h for h, names in LOADED.items() if (folder / names[-1]).exists()]
    if not there:
        raise NasError(f"{folder}: no {ARTIFACT}, {packing.PARAMS_NPZ} or {packing.PARAMS_ORBAX} to load")
    return there


def _refuse_unrecorded(folder: Path, forms: list[str], recorded: dict[str, str]) -> None:
    # When metrics.json recorded digests (every export since they were added), a form's file it did not
    # record was copied in from elsewhere, another member say: loaded, it would run unchecked.
    if not recorded:
        return
    for name in dict.fromkeys(n for h in forms for n in LOADED[h]):
        if not any(rel == name or rel.startswith(name + "/") for rel in recorded):
            raise NasError(f"{folder / name}: not among the files metrics.json recorded at export (copied in "
                           "from another member?); remove it")


def _non_finite(obj: Any) -> str | None:
    # Depth first without recursion: metrics.json nested just within the JSON parser's depth would
    # pass Python's recursion limit in a recursive scan.
    stack = [(obj, "")]
    while stack:
        value, where = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            return where or "a value"
        items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        stack.extend((v, f"{where}.{k}" if where else str(k)) for k, v in reversed(list(items)))
    return None


def read_metrics(folder: Path) -> dict[str, Any]:
    """An exported member's metrics.json, checked: an object with a `measured` object, finite numbers."""
    path = folder / METRICS
    if not path.is_file():
        raise NasError(f"{path}: missing or not a file: {folder} is not a whole exported member "
                       "(`nas export` writes metrics.json into each member's folder)")
    metrics = read_json(path, "exported metrics")  # a NasError when not JSON
    if not isinstance(metrics, dict) or not isinstance(metrics.get("measured"), dict):
        raise NasError(f"{path}: not an exported member's metrics (expected an object with a 'measured' object)")
    bad = _non_finite(metrics)
    if bad:
        raise NasError(f"{path}: {bad} is not a finite number")
    digests = metrics.get(DIGESTS, {})
    if not isinstance(digests, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in digests.items()):
        raise NasError(f"{path}: '{DIGESTS}' must map file names to hex digests")
    return metrics


def load_params(folder: Path, fmt: str) -> Callable[[jax.Array], jax.Array]:
    """A jitted raw-features -> logits function from the npz or orbax params of an exported folder."""
    manifest = read_json(folder / packing.MANIFEST, "export manifest")
    if isinstance(manifest, dict) and manifest.get("format") == "jaxnas-state":
        try:  # rebuilds the subnet: needs flax and this project's supernets
            from nas.state_export import load_state_member
        except ImportError as e:
            raise NasError(f"{folder}: the {fmt} form of a {manifest.get('family')} member rebuilds its subnet, which "
                           f"needs flax and this project's supernets ({e}); its {ARTIFACT} needs only jax") from None
        return load_state_member(folder, fmt)
    loader = packing.load_npz if fmt == "npz" else packing.load_orbax
    return jax.jit(packing.make_forward(*loader(folder)))


def _deserialize(path: Path) -> jax.export.Exported:
    try:
        exported = jax.export.deserialize(bytearray(path.read_bytes()))
        exported.mlir_module()  # parses the module inside, which deserialize leaves to the first call
    except Exception as e:  # jax/flatbuffers/MLIR raise many kinds; all mean "unreadable"
        raise NasError(f"{path}: not a readable jax.export artefact ({e})".splitlines()[0]) from None
    # What `nas export` writes: one float32 (b, features) input with a symbolic batch, one output. Another
    # signature (a file from elsewhere, an export without recorded digests) fails here, not at the call.
    avals = exported.in_avals
    if (exported.in_tree.num_leaves != 1 or len(avals) != 1 or len(exported.out_avals) != 1
            or avals[0].ndim != 2 or avals[0].dtype != jnp.float32 or isinstance(avals[0].shape[0], int)
            or not isinstance(avals[0].shape[1], int) or avals[0].shape[1] < 1):
        got = ", ".join(f"{a.dtype}[{', '.join(map(str, a.shape))}]" for a in avals)
        raise NasError(f"{path}: not an exported member's artefact (expects ({got}); `nas export` writes one "
                       "float32 (batch, features) input with any batch size)")
    return exported


def _on_a_platform_of(exported: jax.export.Exported) -> Callable[[Any], jax.Array] | None:
    """`exported.call`, run on a device of a platform it was lowered for (not only the default one);
    None when this machine has none of them."""
    if jax.export.default_export_platform() in exported.platforms:
        return exported.call
    for platform in exported.platforms:
        try:
            device = jax.devices(platform)[0]
        except RuntimeError:  # no such backend here
            continue

        def call(x: Any, device: jax.Device = device) -> jax.Array:
            with jax.default_device(device):
                return exported.call(x)

        return call
    return None


def checked_input(fn: Callable[[jax.Array], jax.Array], features: int) -> Callable[[Any], jax.Array]:
    """`fn` behind a check of its input: a batch of raw feature rows (b >= 1, `features` columns) of real
    numbers, cast to float32; anything else is a one-line NasError rather than an error from inside XLA."""

    def call(x: Any) -> jax.Array:
        if not isinstance(x, jax.Array):
            try:
                x = np.asarray(x)
            except ValueError as e:  # ragged nested lists
                raise NasError(f"exported model input: not an array ({e})".splitlines()[0]) from None
        # floats (bfloat16 too) and integers; not bool, complex, strings or objects
        if not (jnp.issubdtype(x.dtype, jnp.floating) or jnp.issubdtype(x.dtype, jnp.integer)):
            raise NasError(f"exported model input: expected real numbers, got dtype {x.dtype}")
        if x.ndim != 2 or x.shape[1] != features or x.shape[0] < 1:
            raise NasError(f"exported model input: expected shape (batch >= 1, {features}), got {tuple(x.shape)}")
        return fn(x.astype(jnp.float32))

    return call


def load_exported(folder: str | Path, fmt: str | None = None) -> tuple[Callable[[Any], jax.Array], dict[str, Any]]:
    """(callable, metrics) of one exported member: the StableHLO artefact when it runs on this machine, else the
    packed npz/orbax params; `fmt` ("stablehlo", "npz" or "orbax") names the form to load instead."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NasError(f"{folder}: no such exported-model folder")
    if fmt is not None and fmt not in LOADED:
        raise NasError(f"format {fmt!r}: expected one of {', '.join(LOADED)}")
    forms = _forms_there(folder)
    metrics = read_metrics(folder)
    recorded = metrics.get(DIGESTS) or {}
    _refuse_unrecorded(folder, forms, recorded)
    if fmt is not None:
        if fmt not in forms:
            raise NasError(f"{folder}: holds no {fmt} form (it holds {', '.join(forms)})")
        forms = [fmt]
    how = forms[0]
    _check_digests(folder, recorded, how)
    if how == "stablehlo":
        path = folder / ARTIFACT
        exported = _deserialize(path)
        call = _on_a_platform_of(exported)
        if call is not None:
            return checked_input(call, int(exported.in_avals[0].shape[1])), metrics
        if len(forms) == 1:
            raise NasError(f"{path}: exported for {', '.join(exported.platforms)}, which this machine lacks "
                           f"(jax backend: {jax.default_backend()}); export it where it is to run, or with "
                           "--format npz too")
        # A member exported for a GPU, loaded on a CPU host: its params run anywhere jax does.
        how = forms[1]
        _check_digests(folder, recorded, how)
    fn = load_params(folder, how)  # checks the manifest (its input record included)
    # The feature count from the manifest, which the digests cover and the forward was built from;
    # metrics.json holds the digests, so nothing checks its own copy of the input record.
    features = packing.check_input(read_json(folder / packing.MANIFEST, "export manifest"), folder / packing.MANIFEST)
    recorded = _input_features(metrics)
    if recorded is not None and recorded != features:
        raise NasError(f"{folder / METRICS}: input.features is {recorded}, but {packing.MANIFEST} (which the "
                       f"params were exported with) says {features}")
    return checked_input(fn, features), metrics


def _input_features(record: Any) -> int | None:
    """The feature count an exported file records under "input", or None."""
    inp = record.get("input") if isinstance(record, dict) else None
    features = inp.get("features") if isinstance(inp, dict) else None
    return features if isinstance(features, int) and not isinstance(features, bool) and features > 0 else None
