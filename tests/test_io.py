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
