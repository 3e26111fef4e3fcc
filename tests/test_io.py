"""The resumable JSON-lines logs: a line torn by a crash is dropped, and the next append still works."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nas.errors import StageError
from nas.io import append_jsonl, read_jsonl


def test_an_append_after_a_torn_last_line_leaves_a_readable_file(tmp_path: Path) -> None:
    log = tmp_path / "table.partial.jsonl"
    for i in range(3):
        append_jsonl(log, {"key": f"k{i}", "value": i})
    whole = log.read_bytes()
    log.write_bytes(whole[:-9])  # a crash (or a full disk) mid-write: the last line lost its end
    assert [r["key"] for r in read_jsonl(log)] == ["k0", "k1"]
    append_jsonl(log, {"key": "k3", "value": 3})  # before: glued to the torn line, corrupt for good
    assert [r["key"] for r in read_jsonl(log)] == ["k0", "k1", "k3"]
    assert log.read_text().endswith('"value": 3}\n')


def test_an_append_after_a_torn_only_line(tmp_path: Path) -> None:
    log = tmp_path / "measured.jsonl"
    log.write_text('{"key": "half')
    assert read_jsonl(log) == []
    append_jsonl(log, {"key": "k"})
    assert read_jsonl(log) == [{"key": "k"}]
    empty = tmp_path / "new.jsonl"
    append_jsonl(empty, [1])
    assert empty.read_text() == "[1]\n"


def test_a_corrupt_line_in_the_middle_says_how_to_go_on(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in ({"a": 1}, "x")).replace('"x"', "{oops"))
    log.write_text(log.read_text() + '{"b": 2}\n')
    with pytest.raises(StageError, match=r"log.jsonl line 2 is corrupt \(not JSON\); remove that line, or the file"):
        read_jsonl(log)


HUGE = "1" + "0" * 5000  # valid JSON past the 4,300-digit limit of int(): a ValueError, not a JSONDecodeError


def test_an_integer_of_thousands_of_digits_is_a_damaged_file_not_a_traceback(tmp_path: Path) -> None:
    from nas.io import finite_number, read_json

    assert finite_number(10**400) is None and finite_number(10**300) == 1e300
    stamp = tmp_path / "stamp.json"
    stamp.write_text('{"id": ' + HUGE + "}")
    with pytest.raises(StageError, match="is corrupt"):
        read_json(stamp, "the stamp")
    log = tmp_path / "log.jsonl"
    log.write_text('{"a": 1}\n{"a": ' + HUGE + '}\n{"a": 2}\n')
    with pytest.raises(StageError, match=r"log.jsonl line 2 is corrupt \(not JSON\)"):
        read_jsonl(log)
    log.write_text('{"a": 1}\n{"a": ' + HUGE + "}\n")  # as the last line of a log still being written: dropped
    assert read_jsonl(log) == [{"a": 1}]


def test_a_scan_for_non_finite_metrics_goes_deeper_than_the_recursion_limit() -> None:
    from nas.shipped import _non_finite

    deep: list = [float("nan")]
    for _ in range(5000):
        deep = [deep]
    assert _non_finite({"measured": {"x": 1.0}, "extra": deep}) == "extra" + ".0" * 5001
    assert _non_finite({"measured": {"a": [1, {"b": float("inf")}]}}) == "measured.a.1.b"
    assert _non_finite({"measured": {"a": 1.0}}) is None


def test_an_append_after_a_whole_row_without_its_newline_keeps_that_row(tmp_path: Path) -> None:
    # read_jsonl takes such a row as written (a resumed measure counted it done); cutting it as torn
    # lost a measured subnet for good (review: 81 rows stamped of 82).
    log = tmp_path / "rows.jsonl"
    log.write_text('{"key": "k0"}\n{"key": "k1"}')
    assert [r["key"] for r in read_jsonl(log)] == ["k0", "k1"]
    append_jsonl(log, {"key": "k2"})
    assert [r["key"] for r in read_jsonl(log, complete=True)] == ["k0", "k1", "k2"]
    log.write_text('{"key": "k0"}\n{"key": "k1", "val')  # torn mid-row: still cut
    append_jsonl(log, {"key": "k2"})
    assert [r["key"] for r in read_jsonl(log, complete=True)] == ["k0", "k2"]
