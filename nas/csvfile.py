"""CSV tables as users bring them (from a spreadsheet, a script, a device log): rows with the file's own
line numbers, and numbers spelled the way such files spell them."""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

from nas.errors import NasError

# A plain decimal number: float() alone also takes "1_0" (as 10) and non-ASCII digits ("１").
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|[+-]?(inf|infinity|nan)", re.IGNORECASE | re.ASCII)


def read_rows(path: str | Path) -> list[tuple[int, list[str]]]:
    """(line number in the file, fields) of every row that is not blank, the header first."""
    try:
        # utf-8-sig: spreadsheets start the file with a byte-order mark that would join the first column's name.
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            return [(reader.line_num, r) for r in reader if any(cell.strip() for cell in r)]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise NasError(f"{path}: not a readable CSV file ({e})".splitlines()[0]) from None


# How spreadsheets and data frames write a missing value (not "none" or "-": those can be real choices).
MISSING = frozenset({"na", "n/a", "#n/a", "null"})


def parse_number(cell: str) -> float | None:
    """The cell's value when it spells a number (inf and nan included), else None."""
    text = cell.strip()
    return float(text) if _NUMBER.fullmatch(text) else None


@dataclass(frozen=True)
class CsvRows:
    """A CSV file's header, its rows of text and each row's line in the file (for messages)."""

    path: str
    header: list[str]
    rows: list[list[str]]
    lines: list[int]

    def column(self, name: str) -> list[str]:
        """One column's text values (NasError naming the column if absent)."""
        if name not in self.header:
            raise NasError(f"{self.path}: no column {name!r} (columns: {', '.join(self.header)})")
        j = self.header.index(name)
        return [r[j] for r in self.rows]

    def nameless(self, used: list[str], how: str) -> None:
        """NasError when a column with no name (a data frame's index, a trailing comma) is among `used`."""
        if "" in used:
            raise NasError(f"{self.path}: header column {self.header.index('') + 1} has no name; name it, or {how}")

    def where(self, name: str, i: int) -> str:
        """'FILE: column NAME line N' of the i-th row, for messages."""
        return f"{self.path}: column {name!r} line {self.lines[i]}"


def read_csv(path: str | Path) -> CsvRows:
    """The file's rows, blank ones skipped (NasError naming the file if unreadable or empty)."""
    rows = read_rows(path)
    header, body = (rows[0][1], rows[1:]) if rows else ([], [])
    if not body:  # blank lines are skipped, so a header plus blank lines is as empty as a bare header
        raise NasError(f"{path}: needs a header and at least one row (it has no rows)")
    names = [h.strip() for h in header]  # "lat" and "lat " would be one column to a reader of the file
    twice = next((c for c in names if c and names.count(c) > 1), None)  # nameless ones: refused where used
    if twice is not None:  # which of the two would --target or the encoding mean?
        raise NasError(f"{path}: column {twice!r} appears twice in the header")
    for line, r in body:
        if len(r) != len(header):
            raise NasError(f"{path}: line {line} has {len(r)} fields, the header has {len(header)}")
    # Spaces around names and values ("lat, 0.3, int8") are the writer's layout, not part of them:
    # kept, " int8" and "int8" would be two categories.
    return CsvRows(str(path), names, [[c.strip() for c in r] for _, r in body], [line for line, _ in body])
