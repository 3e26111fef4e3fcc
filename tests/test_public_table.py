"""The public-benchmark reader (benchmarks/nas_bench_graph.py): pickled tables read without unpickling."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from conftest import load_benchmark
from nas.tabular import bench_search, load_table

nbg = load_benchmark("nas_bench_graph")


def _bench() -> dict:
    """A small table shaped like NAS-Bench-Graph's: int key -> metrics, params as NumPy scalars."""
    rng = np.random.default_rng(0)
    keys = [0, 1, 12, 8888, 10000, 31361, 88887]
    return {k: {"valid_perf": float(rng.uniform(0.5, 0.9)), "perf": float(rng.uniform(0.5, 0.9)),
                "latency": float(rng.uniform(1e-3, 1e-2)), "para": np.float64(rng.uniform(0.1, 2.0))} for k in keys}


@pytest.mark.parametrize("protocol", [3, 4, 5])
def test_read_bench_rebuilds_the_table(protocol: int) -> None:
    bench = _bench()
    got = nbg.read_bench(pickle.dumps(bench, protocol=protocol))
    assert got.keys() == bench.keys()
    for k, row in bench.items():
        assert got[k] == {m: float(v) for m, v in row.items()}
        assert type(got[k]["para"]) is float  # a plain float, no NumPy object was built


def test_read_bench_other_containers_and_byte_order() -> None:
    big_endian = np.array([1.5], ">f8")[0]
    data = {"a": [1, 2.5, "x", None, True], "b": (np.float32(0.25), 3), "c": big_endian}
    assert b">" in pickle.dumps(data, protocol=3)  # the dtype's byte order is in the stream
    got = nbg.read_bench(pickle.dumps(data, protocol=3))
    assert got == {"a": [1, 2.5, "x", None, True], "b": (0.25, 3), "c": 1.5}


class _Payload:
    """Unpickling this would call os.system: the reader must refuse, not run it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        import os

        return os.system, (f"touch {self.marker}",)


def test_read_bench_refuses_other_classes_without_running_them(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    data = pickle.dumps({0: {"valid_perf": _Payload(marker)}}, protocol=3)
    with pytest.raises(ValueError, match="system"):
        nbg.read_bench(data)
    assert not marker.exists()
    with pytest.raises(ValueError, match="float scalar"):
        nbg.read_bench(pickle.dumps({"x": np.int64(3)}, protocol=4))  # an int scalar is not a float
    with pytest.raises(ValueError):
        nbg.read_bench(b"\x80\x03}q\x00")  # truncated: no STOP


def test_decode_key_spells_the_architecture() -> None:
    assert nbg.decode_key(0) == ("0-0-0-0", "gat", "gat", "gat", "gat")
    assert nbg.decode_key(31361) == ("0-0-1-2", "gcn", "cheb", "graph", "gcn")
    assert nbg.decode_key(88888) == ("0-1-2-3", "skip", "skip", "skip", "skip")
    for bad in (9, 90000, 1099):  # an op digit of 9 (no such op), a link index of 9
        with pytest.raises(ValueError, match=str(bad)):
            nbg.decode_key(bad)


def test_written_table_is_searchable(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    assert nbg.write_csv(_bench(), path) == 7
    table = load_table(path, nbg.OBJECTIVES, (), nbg.CHOICES)
    assert table.space.names == nbg.CHOICES and len(table.configs) == 7
    at = [i for i, c in enumerate(table.configs) if table.space.describe(tuple(int(v) for v in c))["link"] == "0-0-1-2"]
    assert len(at) == 1  # key 31361
    assert table.metrics["latency_ms"][at[0]] == pytest.approx(1000 * _bench()[31361]["latency"], rel=1e-5)
    out = bench_search(path, nbg.OBJECTIVES, (), 7, "refit", 0, nbg.CHOICES, table=table)
    assert out["hv_ratio"] == pytest.approx(1.0)  # every listed row evaluated: the exhaustive front
