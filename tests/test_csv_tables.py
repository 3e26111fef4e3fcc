"""Bring-your-own CSV tables: numbers only where the whole cell spells one, a byte-order mark and blank
rows as layout, messages at the file's own line numbers, spreadsheet NA markers as missing values; and
the CV `--kind auto` ranks kinds by scoring each on rows it was not fitted on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nas.byo import cv_score, fit_table, target_values
from nas.csvfile import parse_number, read_csv
from nas.errors import NasError


def _write(path: Path, text: str, bom: bool = False) -> Path:
    path.write_bytes(("\ufeff" if bom else "").encode() + text.encode())
    return path


@pytest.mark.parametrize("cell", ["12abc", "1_0", "1.5 ms", "0x10", "--1"])
def test_a_cell_is_a_number_only_when_all_of_it_spells_one(cell: str) -> None:
    assert parse_number(cell) is None


def test_a_byte_order_mark_is_not_part_of_the_first_column_name(tmp_path: Path) -> None:
    t = read_csv(_write(tmp_path / "t.csv", "lat,width\n1.5,8\n", bom=True))
    assert t.header == ["lat", "width"] and t.column("lat") == ["1.5"]


def test_rows_of_empty_cells_are_skipped_and_lines_are_the_files_own(tmp_path: Path) -> None:
    t = read_csv(_write(tmp_path / "t.csv", "lat,width\n1.5,8\n,\n\n2.5,x\n"))
    assert t.rows == [["1.5", "8"], ["2.5", "x"]]
    with pytest.raises(NasError, match=r"column 'width' line 5: 'x' is not a finite number"):
        target_values(t, "width")


@pytest.mark.parametrize("marker", ["NA", "#N/A", "null", "n/a"])
def test_a_spreadsheet_missing_marker_in_a_numeric_column_is_refused(tmp_path: Path, marker: str) -> None:
    table = _write(tmp_path / "t.csv", f"width,lat\n8,1.0\n16,2.0\n{marker},3.0\n32,4.0\n")
    with pytest.raises(NasError, match=rf"column 'width' line 4: '{marker}' is not a finite number"):
        fit_table(table, "lat", kind="ridge", out=tmp_path / "p.json")


def test_cv_scores_a_kind_on_rows_it_was_not_fitted_on() -> None:
    # Pure noise: out of fold nothing predicts it; fitted on the held-out rows too, boosted trees recall them.
    rng = np.random.default_rng(0)
    X, y = rng.uniform(0, 1, (40, 3)), np.exp(rng.normal(0, 1, 40))
    assert cv_score("gbm", X, y, True) > 0.5
