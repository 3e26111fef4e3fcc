"""Latency of a compiled function: K iterations inside one XLA program (a data-dependent
fori_loop), so host dispatch noise is amortised; warm-up, interleaved rounds until the median is
stable, far outliers dropped, median and IQR; optionally the end-to-end time of single calls from
the host; a persistent compilation cache."""

from __future__ import annotations

import datetime
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nas.errors import NasError


@dataclass(frozen=True)
class Timing:
    """Per-call time of one compiled subnet: device time (looped) and, when taken, host end-to-end."""

    median_ms: float
    iqr_ms: float
    repeats: int
    iterations: int
    compile_s: float
    outliers: int = 0
    e2e_ms: float | None = None
    session_scale: float | None = None  # set when rescaled to a reference session (see time_with_anchors)
    attempts: int = 1  # sets of rounds timed (time_with_anchors retries, time_reference)

    def as_row(self, metric: str = "latency_ms") -> dict[str, float]:
        """Columns for the measurement table; `latency_ms@T` gives `latency_iqr_ms@T` etc."""
        at = metric[len("latency_ms"):]
        row = {metric: self.median_ms, f"latency_iqr_ms{at}": self.iqr_ms, f"latency_iters{at}": self.iterations,
               f"latency_repeats{at}": self.repeats, f"latency_outliers{at}": self.outliers,
               f"compile_s{at}": self.compile_s}
        if self.e2e_ms is not None:
            row[f"latency_e2e_ms{at}"] = self.e2e_ms
        if self.session_scale is not None:
            row[f"latency_session_scale{at}"] = self.session_scale
        if self.attempts > 1:
            row[f"latency_attempts{at}"] = self.attempts
        return row


def use_compilation_cache(folder: str | os.PathLike[str]) -> None:
    """Keep XLA executables in `folder` across processes, so re-measuring a subnet skips its compile."""
    if jax.config.jax_compilation_cache_dir == os.fspath(folder):
        return
    try:  # the cache object keeps its first folder; drop it so the new one is used (private, hence guarded)
        from jax._src import compilation_cache

        compilation_cache.reset_cache()
    except (ImportError, AttributeError):
        pass
    jax.config.update("jax_compilation_cache_dir", os.fspath(folder))
    # Subnets compile in well under a second; the default thresholds would cache none of them.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)


def target_device(kind: str, key: str = "measure.device") -> jax.Device:
    """The first jax device of platform `kind` ("cpu" or "gpu"), or a clear error naming the setting `key`."""
    try:
        return jax.devices(kind)[0]
    except RuntimeError:
        raise NasError(f"{key}: no '{kind}' device here (jax backend: {jax.default_backend()})") from None


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
        "compilation_cache": jax.config.jax_compilation_cache_dir,
    }


def _looped(fn: Callable[[Any, jax.Array], jax.Array]) -> Callable:
    def run(params: Any, x: jax.Array, n: jax.Array) -> jax.Array:
        def body(_: jax.Array, carry: jax.Array) -> jax.Array:
            # Feeding a scalar of the output back into the input stops XLA from hoisting the call;
            # the barrier stops it hoisting work on the parameters alone (an int8 weight's
            # dequantisation), which a real call pays every time: without it weight-only int8
            # layers were timed 2.3x too fast.
            p, c = jax.lax.optimization_barrier((params, carry))
            return c + 1e-12 * jnp.mean(fn(p, c))
        return jax.lax.fori_loop(0, n, body, x)
    return jax.jit(run)


@dataclass
class Program:
    """One compiled subnet, looped and single-call, with its inputs on the device and its loop count."""

    compiled: Any
    single: Any  # None when compiled without host calls
    params: Any
    x: jax.Array
    compile_s: float
    iterations: int = 1
    calls: int = 1

    def run(self, n: int) -> float:
        """Seconds for `n` iterations inside one call."""
        t = time.perf_counter()
        self.compiled(self.params, self.x, jnp.int32(n)).block_until_ready()
        return time.perf_counter() - t

    def run_calls(self, n: int) -> float:
        """Seconds for `n` separate calls from the host, each waited for (what a Python caller pays)."""
        t = time.perf_counter()
        for _ in range(n):
            self.single(self.params, self.x).block_until_ready()
        return time.perf_counter() - t


def loop_count(run: Callable[[int], float], min_time_ms: float, tries: int = 3) -> int:
    """Smallest power of two `n` for which `run(n)` lasts at least `min_time_ms`, judged on the
    fastest of `tries` runs: one descheduled run must not stop the doubling early (a loop of 1
    would then time mostly the ~0.7 ms per-call overhead of this CPU instead of the subnet)."""
    n = 1
    while n < 1 << 24:
        if min(run(n) for _ in range(tries)) * 1e3 >= min_time_ms:
            return n
        n *= 2
    return n


def compile_program(fn: Callable[[Any, jax.Array], jax.Array], params: Any, x: jax.Array, *,
                    device: jax.Device, warmup: int = 2, min_time_ms: float = 2.0, host_calls: bool = True) -> Program:
    """Compile `fn(params, x)` in a loop (and, with `host_calls`, alone, for end-to-end host timing) for
    `device`, warm it up and pick the loop counts."""
    params, x = jax.device_put((params, x), device)
    t0 = time.perf_counter()
    compiled = _looped(fn).lower(params, x, jnp.int32(1)).compile()
    compile_s = round(time.perf_counter() - t0, 4)
    # Table units, anchors and end_to_end = false never time single calls: compiling and calibrating them
    # was a quarter of compile_program's time on MLP-sized units (review).
    single = jax.jit(fn).lower(params, x).compile() if host_calls else None
    prog = Program(compiled, single, params, x, compile_s)
    for _ in range(warmup):
        prog.run(1)
        if host_calls:
            prog.run_calls(1)
    # A loop must be mostly iterations: with min_time_ms near the fixed cost of a call (~0.2-0.7 ms
    # here), one descheduled-free call of a 5 us subnet already lasted 0.3 ms and was "timed" at 1
    # iteration, 40x its real time. So it runs at least 4x an empty loop's call (n = 0).
    empty_ms = min(prog.run(0) for _ in range(3)) * 1e3
    prog.iterations = loop_count(prog.run, max(min_time_ms, 4 * empty_ms))
    # Host-side samples are noisier by nature; a quarter of the budget keeps them cheap.
    prog.calls = loop_count(prog.run_calls, min_time_ms / 4) if host_calls else 0
    return prog


def _robust(samples: np.ndarray) -> tuple[float, float, int]:
    """Median and IQR after dropping far outliers (beyond 3 IQR from the quartiles), and how many."""
    q1, q3 = np.percentile(samples, [25, 75])
    keep = samples[(samples >= q1 - 3 * (q3 - q1)) & (samples <= q3 + 3 * (q3 - q1))]
    k1, med, k3 = np.percentile(keep, [25, 50, 75])
    return float(med), float(k3 - k1), int(len(samples) - len(keep))


def _unstable(samples: np.ndarray, rel_tol: float) -> bool:
    """Whether the median's 95 % interval (about 1.57 IQR / sqrt(n)) is wider than `rel_tol` of it."""
    med, iqr, _ = _robust(samples)
    return 1.57 * iqr / np.sqrt(len(samples)) > rel_tol * med


def time_programs(programs: list[Program], rounds: int, *, max_rounds: int | None = None,
                  rel_tol: float = 0.02, e2e: bool = False) -> list[Timing]:
    """Median per-call time of each program over interleaved rounds, with more rounds (up to
    `max_rounds`) for programs whose median is not yet stable to `rel_tol`.

    Interleaving (every program once per round) spreads slow drifts of the machine over all
    programs instead of loading them onto whichever was timed during the slow spell.
    """
    max_rounds = max(rounds, max_rounds or rounds)
    device: list[list[float]] = [[] for _ in programs]
    host: list[list[float]] = [[] for _ in programs]
    todo = list(range(len(programs)))
    for r in range(max_rounds):
        for i in todo:
            p = programs[i]
            device[i].append(p.run(p.iterations) / p.iterations * 1e3)
            if e2e and p.calls:  # 0: compiled without host calls
                host[i].append(p.run_calls(p.calls) / p.calls * 1e3)
        if r + 1 >= rounds:
            todo = [i for i in todo if _unstable(np.array(device[i]), rel_tol)]
            if not todo:
                break
    out = []
    for i, p in enumerate(programs):
        med, iqr, dropped = _robust(np.array(device[i]))
        e2e_ms = _robust(np.array(host[i]))[0] if host[i] else None
        out.append(Timing(med, iqr, len(device[i]), p.iterations, p.compile_s, dropped, e2e_ms))
    return out


def time_with_anchors(programs: list[Program], anchors: Sequence[tuple[Program, float]], rounds: int, *,
                      retries: int = 0, tolerance: float = 0.05, **kwargs: Any) -> list[Timing]:
    """Time `programs` in the same interleaved rounds as anchor programs of known reference time and
    express them in the reference's units (times median(reference / now), `session_scale`).

    On this shared 2-core CPU the machine slows down in spells of some seconds (other load): one
    chunk of 32 subnets then ran 35-53 % slow, unevenly across subnets (ratio IQR 0.4-0.6), so no
    scale repairs it. The anchors see such a spell (their scale left 1 by 17 %, against 0.3-1.3 %
    in quiet chunks): then the whole set is timed again, up to `retries` times, and the attempt whose
    anchors came closest to the reference is kept (`attempts` says how many were made). Host
    end-to-end times are left as measured: they are what a caller paid.
    """
    if not anchors:
        return time_programs(programs, rounds, **kwargs)
    reference = np.array([ms for _, ms in anchors], np.float64)
    best: tuple[float, list[Timing]] = (np.inf, [])
    attempts = 0
    while attempts <= retries and abs(np.log(best[0])) > np.log1p(tolerance):
        timed = time_programs([p for p, _ in anchors] + list(programs), rounds, **kwargs)
        attempts += 1
        scale = float(np.median(reference / np.array([t.median_ms for t in timed[: len(anchors)]])))
        if abs(np.log(scale)) < abs(np.log(best[0])):
            best = (scale, timed[len(anchors):])
    scale, chosen = best
    return [replace(t, median_ms=t.median_ms * scale, iqr_ms=t.iqr_ms * scale, session_scale=scale,
                    attempts=attempts) for t in chosen]


def spread_by_rank(values: Sequence[float], n: int) -> list[int]:
    """Indices of up to `n` values spread evenly by rank from the smallest to the largest (anchor picks)."""
    order = np.argsort(np.asarray(values, np.float64), kind="stable")
    if n <= 0 or not len(order):
        return []
    return [int(order[i]) for i in sorted({round(x) for x in np.linspace(0, len(order) - 1, min(n, len(order)))})]


def time_reference(programs: list[Program], rounds: int, **kwargs: Any) -> list[Timing]:
    """Time `programs` in two independent sets of interleaved rounds and keep each one's faster median:
    a reference that later timings are scaled to must not come from a slow spell (load only ever
    adds time), and nothing earlier can vouch for it."""
    first, second = time_programs(programs, rounds, **kwargs), time_programs(programs, rounds, **kwargs)
    return [replace(min(a, b, key=lambda t: t.median_ms), attempts=2) for a, b in zip(first, second)]


def time_function(fn: Callable[[Any, jax.Array], jax.Array], params: Any, x: jax.Array, *, device: jax.Device,
                  repeats: int = 7, warmup: int = 2, min_time_ms: float = 2.0, e2e: bool = False) -> Timing:
    """Median per-call time of one function `fn(params, x)` compiled for `device`."""
    prog = compile_program(fn, params, x, device=device, warmup=warmup, min_time_ms=min_time_ms)
    return time_programs([prog], repeats, e2e=e2e)[0]
