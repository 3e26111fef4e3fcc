"""Latency of a compiled function: K iterations inside one XLA program (a data-dependent
fori_loop), so host dispatch noise is amortised; warm-up, repeats, median and IQR."""

from __future__ import annotations

import datetime
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nas.errors import NasError


@dataclass(frozen=True)
class Timing:
    """Per-call device time of one compiled subnet."""

    median_ms: float
    iqr_ms: float
    repeats: int
    iterations: int
    compile_s: float

    def as_row(self, metric: str = "latency_ms") -> dict[str, float]:
        """Columns for the measurement table; `latency_ms@T` gives `latency_iqr_ms@T` etc."""
        at = metric[len("latency_ms"):]
        return {metric: self.median_ms, f"latency_iqr_ms{at}": self.iqr_ms, f"latency_iters{at}": self.iterations,
                f"latency_repeats{at}": self.repeats, f"compile_s{at}": self.compile_s}


def target_device(kind: str) -> jax.Device:
    """The first jax device of platform `kind` ("cpu" or "gpu"), or a clear error."""
    try:
        return jax.devices(kind)[0]
    except RuntimeError:
        raise NasError(f"measure.device: no '{kind}' device here (jax backend: {jax.default_backend()})") from None


def device_profile(device: jax.Device) -> dict[str, Any]:
    """What the timings were taken on, stored beside every measurement."""
    return {
        "device": str(device.device_kind),
        "platform": device.platform,
        "jax": jax.__version__,
        "jaxlib": getattr(jax.lib, "__version__", None) or __import__("jaxlib").__version__,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def _looped(fn: Callable[[Any, jax.Array], jax.Array]) -> Callable:
    def run(params: Any, x: jax.Array, n: jax.Array) -> jax.Array:
        def body(_: jax.Array, carry: jax.Array) -> jax.Array:
            # Feeding a scalar of the output back into the input stops XLA from hoisting the call.
            return carry + 1e-12 * jnp.mean(fn(params, carry))
        return jax.lax.fori_loop(0, n, body, x)
    return jax.jit(run)


@dataclass
class Program:
    """One compiled, looped subnet with its inputs on the device and its loop count."""

    compiled: Any
    params: Any
    x: jax.Array
    compile_s: float
    iterations: int = 1

    def run(self, n: int) -> float:
        """Seconds for `n` iterations inside one call."""
        t = time.perf_counter()
        self.compiled(self.params, self.x, jnp.int32(n)).block_until_ready()
        return time.perf_counter() - t


def compile_program(fn: Callable[[Any, jax.Array], jax.Array], params: Any, x: jax.Array, *,
                    device: jax.Device, warmup: int = 2, min_time_ms: float = 2.0) -> Program:
    """Compile `fn(params, x)` in a loop for `device`, warm it up and pick the loop count."""
    params, x = jax.device_put((params, x), device)
    t0 = time.perf_counter()
    compiled = _looped(fn).lower(params, x, jnp.int32(1)).compile()
    prog = Program(compiled, params, x, round(time.perf_counter() - t0, 4))
    for _ in range(warmup):
        prog.run(1)
    n = 1
    while (elapsed := prog.run(n)) * 1e3 < min_time_ms and n < 1 << 24:
        n *= max(2, min(16, int(min_time_ms / max(elapsed * 1e3, 1e-3))))
    prog.iterations = n
    return prog


def time_programs(programs: list[Program], rounds: int) -> list[Timing]:
    """Median per-call time of each program over `rounds` interleaved rounds.

    Interleaving (every program once per round) spreads slow drifts of the machine over all
    programs instead of loading them onto whichever was timed during the slow spell.
    """
    samples = np.zeros((rounds, len(programs)))
    for r in range(rounds):
        for i, p in enumerate(programs):
            samples[r, i] = p.run(p.iterations) / p.iterations * 1e3
    q1, med, q3 = np.percentile(samples, [25, 50, 75], axis=0)
    return [Timing(float(med[i]), float(q3[i] - q1[i]), rounds, p.iterations, p.compile_s)
            for i, p in enumerate(programs)]


def time_function(fn: Callable[[Any, jax.Array], jax.Array], params: Any, x: jax.Array, *, device: jax.Device,
                  repeats: int = 7, warmup: int = 2, min_time_ms: float = 2.0) -> Timing:
    """Median per-call time of one function `fn(params, x)` compiled for `device`."""
    prog = compile_program(fn, params, x, device=device, warmup=warmup, min_time_ms=min_time_ms)
    return time_programs([prog], repeats)[0]
