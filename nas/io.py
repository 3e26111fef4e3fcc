"""Atomic writes (temp name, then rename) and plain JSON reading with clear errors."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

from nas.errors import NasError, StageError

_UMASK = os.umask(0)
os.umask(_UMASK)


def json_safe(obj: Any) -> Any:
    """JSON-safe copy: NaN/inf become None, numpy scalars and arrays become Python values."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "tolist"):
        return json_safe(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def finite_number(v: Any) -> float | None:
    """`v` as a finite float, or None (bools and non-numbers are not metric values)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    try:
        v = float(v)
    except OverflowError:  # an integer beyond float's range (JSON allows any number of digits)
        return None
    return v if math.isfinite(v) else None


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` so readers see either the old file or the whole new one."""
    path = Path(path)
    if path.is_dir():
        raise NasError(f"{path}: is a folder, expected the path of a file to write")
    make_dir(path.parent)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; results are meant to be shared
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and not isinstance(e.__context__, KeyboardInterrupt):
            # The file being written, not its temp twin, nor nothing at all (a full disk names no file).
            raise OSError(e.errno, e.strerror, str(path)) from None
        raise


def make_dir(path: str | Path) -> None:
    """mkdir -p, with a clear error when a file stands where a folder of the path should be."""
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise NasError(f"cannot create folder {path}: a file is in the way (it or one of its parents)") from None


_DIGESTS: dict[tuple[str, int, int], str] = {}


def remove_path(path: str | Path) -> None:
    """Delete a file, a symbolic link (never what it points to) or a folder tree; nothing when absent.
    shutil.rmtree refuses a link, and callers that ignored its errors kept a linked stage folder whole."""
    p = Path(path)
    if p.is_symlink() or p.is_file():
        p.unlink(missing_ok=True)
    elif p.is_dir():
        shutil.rmtree(p)


def file_digest(path: str | Path) -> str:
    """"sha256:<hex>" of a file's content (kept per path, size and modification time: data files are big)."""
    st = os.stat(path)
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = f"sha256:{sha256_hex(path)}"
    return _DIGESTS[key]


def sha256_hex(path: str | Path) -> str:
    """The SHA-256 of a file's content, read now (no cache), in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_json(path: str | Path, obj: Any) -> None:
    """Atomically write `obj` as indented JSON."""
    write_bytes(path, (json.dumps(json_safe(obj), indent=2, allow_nan=False) + "\n").encode())


def read_json(path: str | Path, what: str) -> Any:
    """Read a JSON file, raising StageError naming `what` if it is missing or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise StageError(f"{what} not found at {path} (run the stage that makes it first)")
    try:
        return json.loads(path.read_text())
    except (ValueError, RecursionError) as e:
        raise StageError(f"{what} at {path} is corrupt ({type(e).__name__}: {e})".splitlines()[0]) from None


def jsonl_line(obj: Any) -> bytes:
    """`obj` as one line of a JSON-lines file, as the project writes them."""
    return (json.dumps(json_safe(obj), allow_nan=False) + "\n").encode()


def append_jsonl(path: str | Path, obj: Any) -> None:
    """Append one JSON line and flush it to disk (the resumable log of a long stage)."""
    line = jsonl_line(obj)
    with open(path, "a+b", buffering=0) as f:  # one write call per line: other appenders never see half of it
        if _whole_last_row(f):
            # Only its newline is missing (a write cut just before it, an editor that strips it): readers
            # took the row as measured, so cutting it would lose it for good (a review lost one this way).
            line = b"\n" + line
        else:
            cut_torn_line(f)
        f.write(line)
        os.fsync(f.fileno())


def _unterminated_tail(f: BinaryIO) -> tuple[int, int] | None:
    """(start, end) of the file's last line when it lacks its newline, else None."""
    end = f.seek(0, os.SEEK_END)
    if not end or os.pread(f.fileno(), 1, end - 1) == b"\n":
        return None
    cut = end
    while cut > 0:  # back to the last newline, a block at a time (a journal can be large)
        start = max(0, cut - 65536)
        at = os.pread(f.fileno(), cut - start, start).rfind(b"\n")
        if at >= 0:
            return start + at + 1, end
        cut = start
    return 0, end


def _whole_last_row(f: BinaryIO) -> bool:
    """Whether the file's last line lacks only its newline: it parses as a JSON object."""
    tail = _unterminated_tail(f)
    if tail is None:
        return False
    try:
        return isinstance(json.loads(os.pread(f.fileno(), tail[1] - tail[0], tail[0])), dict)
    except (ValueError, RecursionError):
        return False


def cut_torn_line(f: BinaryIO) -> bool:
    """Cut a torn last line (a crash mid-write) from a line-based file open for reading and writing,
    or the next line would be glued to it and the file corrupt in the middle, for good. Whether it cut."""
    tail = _unterminated_tail(f)
    if tail is None:
        return False
    f.truncate(tail[0])
    f.seek(0, os.SEEK_END)
    return True


def read_jsonl(path: str | Path, *, complete: bool = False, redo: str | None = None) -> list[Any]:
    """Rows of a JSON-lines file; a torn last line (crash mid-write) is dropped, unless the file is
    `complete` (renamed into place when its stage ended), where it means the file was damaged (`redo`:
    the command that writes it again, named in the error instead of removing the line)."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise StageError(f"{path}: not UTF-8 text (byte {e.start}); remove the file to redo the work it records") \
            from None
    for i, line in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except (ValueError, RecursionError):  # nested past the parser; an int of over 4,300 digits
            if complete or i != len(lines) - 1:
                # A stamped file's rows are counted: removing a line leaves it short, not redone.
                fix = f"re-run `{redo}`" if redo else "remove that line, or the file, to redo the work it records"
                raise StageError(f"{path} line {i + 1} is corrupt (not JSON); {fix}") from None
    return rows


def check_out_path(out: str | Path, option: str = "--out", *, source: str | Path | None = None,
                   source_is: str = "") -> None:
    """Refuse an --out that cannot become a file before any work is done (a folder, or under a file), or
    that is the input `source` itself (`source_is`: what to say it is, and why that is refused)."""
    out = Path(out)
    if out.is_dir():
        raise NasError(f"{option} {out}: is a folder; give a file name")
    check_parents(out, option)
    if source is not None and out.resolve() == Path(source).resolve():
        raise NasError(f"{option} {out}: is {source_is}")


def check_parents(out: Path, option: str) -> None:
    """Refuse a path to be created whose nearest existing parent is not a folder one can create in
    (NasError naming `option`)."""
    for parent in out.parents:  # missing folders are created; the nearest existing one must be a folder
        if parent.exists():
            if not parent.is_dir():
                raise NasError(f"{option} {out}: {parent} is not a folder")
            # Tried, not inferred from permission bits (root passes those; /proc and read-only mounts
            # refuse anyway): a query's --export found out only after measuring its answer.
            try:
                os.rmdir(tempfile.mkdtemp(prefix=".nas-probe-", dir=parent))
            except OSError as e:
                raise NasError(f"{option} {out}: cannot create anything in {parent} ({e.strerror})") from None
            break
