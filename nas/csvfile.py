"""CSV tables as users bring them (from a spreadsheet, a script, a device log): rows with the file's own
line numbers, and numbers spelled the way such files spell them."""

from __future__ import annotations

import csv
import re
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


def parse_number(cell: str) -> float | None:
    """The cell's value when it spells a number (inf and nan included), else None."""
    text = cell.strip()
    return float(text) if _NUMBER.fullmatch(text) else None
