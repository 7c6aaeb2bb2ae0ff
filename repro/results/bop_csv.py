"""BOP19 pose results CSV: ``scene_id,im_id,obj_id,score,R,t,time``.

One row per pose estimate; ``R`` is 9 numbers (row-major) and ``t`` 3 numbers (mm), each
separated by single spaces; ``time`` is the wall time for the whole image in seconds (the same on
every row of an image, -1 if unknown). Floats are written with ``repr`` so that a write -> read
round trip is bit-exact.

Reading is strict, because a silently misread results file yields plausible but wrong scores:
every problem is a :class:`~repro.errors.DataFormatError` naming the file, the 1-based line and
the field. Well-formed files take a vectorised path; only when that path finds something wrong
is the file re-scanned line by line to locate the first problem.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from repro.errors import DataFormatError
from repro.fileio import atomic_write_text
from repro.types import PoseEstimate

BOP_CSV_HEADER = "scene_id,im_id,obj_id,score,R,t,time"
BOP_CSV_FIELDS: tuple[str, ...] = tuple(BOP_CSV_HEADER.split(","))
DEFAULT_ROT_TOL = 1e-3
TIME_TOL = 1e-3
"""Times of one image may differ by at most this much (seconds), as in bop_toolkit's checker."""

_INT64_MAX = 2**63 - 1
# Anything outside this set (letters of nan/inf, underscores, tabs, ...) sends the reader down the
# line-by-line path, which then reports it precisely.
_UNUSUAL_CHARS = re.compile(r"[^0-9eE.+\-, \n]")


def _readonly(arr: np.ndarray) -> np.ndarray:
    arr.setflags(write=False)
    return arr


def _owned_array(value, name: str, shape: tuple[int, ...], dtype=np.float64) -> np.ndarray:
    """``value`` as a read-only array of ``dtype`` and ``shape``; copies unless already read-only."""
    arr = np.asarray(value, dtype=dtype)
    if arr.size == 0:
        arr = arr.reshape(shape)
    if arr.shape != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {arr.shape}")
    if arr.flags.writeable:
        arr = _readonly(arr.copy())
    return arr


@dataclass(frozen=True, eq=False)
class BopResultRow:
    """One pose estimate of a BOP results CSV (``R`` 3x3, ``t`` mm, ``time`` s per image).

    Construction only normalises types and shapes; value checks (finite, orthonormal ``R``,
    non-negative ids, consistent times) happen in :func:`write_bop_csv` and :func:`read_bop_csv`,
    so that an invalid row can be built, inspected and reported rather than crash where it is made.
    """

    scene_id: int
    im_id: int
    obj_id: int
    score: float
    R: np.ndarray
    t: np.ndarray
    time: float = -1.0

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        for name in ("scene_id", "im_id", "obj_id"):
            set_(self, name, operator.index(getattr(self, name)))
        set_(self, "score", float(self.score))
        set_(self, "time", float(self.time))
        set_(self, "R", _owned_array(self.R, "R", (3, 3)))
        set_(self, "t", _owned_array(self.t, "t", (3,)))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BopResultRow):
            return NotImplemented
        return (
            (self.scene_id, self.im_id, self.obj_id) == (other.scene_id, other.im_id, other.obj_id)
            and _same_float(self.score, other.score)
            and _same_float(self.time, other.time)
            and np.array_equal(self.R, other.R)
            and np.array_equal(self.t, other.t)
        )

    __hash__ = None  # type: ignore[assignment]


def _same_float(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


@dataclass(frozen=True, eq=False)
class BopResultArrays:
    """The columns of a BOP results CSV as read-only arrays (n rows); what the metrics consume."""

    scene_id: np.ndarray
    im_id: np.ndarray
    obj_id: np.ndarray
    score: np.ndarray
    R: np.ndarray
    t: np.ndarray
    time: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.score)
        for name in ("scene_id", "im_id", "obj_id"):
            arr = np.asarray(getattr(self, name))
            if arr.size and not np.issubdtype(arr.dtype, np.integer):
                raise TypeError(f"{name}: expected integers, got dtype {arr.dtype}")
            object.__setattr__(self, name, _owned_array(arr, name, (n,), np.int64))
        for name, shape in (("score", (n,)), ("R", (n, 3, 3)), ("t", (n, 3)), ("time", (n,))):
            object.__setattr__(self, name, _owned_array(getattr(self, name), name, shape, np.float64))

    def __len__(self) -> int:
        return len(self.score)

    def rows(self) -> list[BopResultRow]:
        """Per-row records; ``R``/``t`` are read-only views into these arrays (no copies)."""
        return [
            BopResultRow(s, i, o, sc, r, t, tm)
            for s, i, o, sc, r, t, tm in zip(
                self.scene_id.tolist(), self.im_id.tolist(), self.obj_id.tolist(), self.score.tolist(),
                self.R, self.t, self.time.tolist(), strict=True)
        ]

    @classmethod
    def from_rows(cls, rows: Sequence[BopResultRow]) -> BopResultArrays:
        return cls(
            scene_id=np.array([r.scene_id for r in rows], dtype=np.int64),
            im_id=np.array([r.im_id for r in rows], dtype=np.int64),
            obj_id=np.array([r.obj_id for r in rows], dtype=np.int64),
            score=np.array([r.score for r in rows], dtype=np.float64),
            R=np.array([r.R for r in rows], dtype=np.float64),
            t=np.array([r.t for r in rows], dtype=np.float64),
            time=np.array([r.time for r in rows], dtype=np.float64),
        )


def bop_rows_from_estimates(scene_id: int, im_id: int, estimates: Iterable[PoseEstimate],
                            time: float = -1.0) -> list[BopResultRow]:
    """Rows for the estimates of one image; ``time`` is the image's wall time (s, -1 unknown)."""
    return [BopResultRow(scene_id, im_id, e.obj_id, e.score, e.R, e.t, time) for e in estimates]


# --------------------------------------------------------------------------------------------
# Value checks shared by the reader and the writer


def _first_value_problem(a: BopResultArrays, rot_tol: float, require_consistent_time: bool,
                         where: Callable[[int], str]) -> tuple[int, str, str] | None:
    """The first row (in order) with a bad value, as ``(index, field, message)``, or None.

    ``where(i)`` names row ``i`` in cross-references (a line of the file, or a row being written).
    """
    n = len(a)
    if n == 0:
        return None
    r_finite = np.isfinite(a.R).all(axis=(1, 2))
    R = np.where(r_finite[:, None, None], a.R, np.eye(3))
    orth_err = np.abs(R @ R.transpose(0, 2, 1) - np.eye(3)).max(axis=(1, 2))
    det = np.linalg.det(R)
    tm = a.time
    first = _first_of_image(a.scene_id, a.im_id)
    finite_tm = np.where(np.isfinite(tm), tm, 0.0)
    checks: list[tuple[str, str, np.ndarray]] = [
        ("scene_id", "id", a.scene_id < 0),
        ("im_id", "id", a.im_id < 0),
        ("obj_id", "id", a.obj_id < 0),
        ("score", "finite", ~np.isfinite(a.score)),
        ("R", "finite", ~r_finite),
        ("R", "rotation", (orth_err > rot_tol) | (det < 0)),
        ("t", "finite", ~np.isfinite(a.t).all(axis=1)),
        ("time", "time", ~np.isfinite(tm) | ((tm < 0) & (tm != -1.0))),
    ]
    if require_consistent_time:
        checks.append(("time", "consistent", np.abs(finite_tm - finite_tm[first]) > TIME_TOL))
    bad = np.logical_or.reduce([mask for _, _, mask in checks])
    if not bad.any():
        return None
    i = int(np.argmax(bad))
    name, kind = next((name, kind) for name, kind, mask in checks if mask[i])
    value = getattr(a, name)[i].tolist()
    if kind == "id":
        message = f"{name} must be >= 0, got {value}"
    elif kind == "finite":
        message = f"{name} must be finite, got {value}"
    elif kind == "rotation" and orth_err[i] > rot_tol:
        message = (f"R is not orthonormal: max |R R^T - I| = {orth_err[i]:.3g} exceeds the tolerance "
                   f"rot_tol={rot_tol:g}")
    elif kind == "rotation":
        message = f"R is a reflection, not a rotation (det = {det[i]:.6g}); rot_tol={rot_tol:g}"
    elif kind == "time":
        message = f"time must be finite seconds >= 0, or -1 if unknown; got {value!r}"
    else:
        j = int(first[i])
        message = (f"time {value!r} differs from {tm[j].tolist()!r} given on {where(j)} for the same image "
                   f"(scene_id {a.scene_id[i].tolist()}, im_id {a.im_id[i].tolist()}); "
                   "a results file has one time per image")
    return i, name, message


def _first_of_image(scene_id: np.ndarray, im_id: np.ndarray) -> np.ndarray:
    """For each row, the index of the first row of the same (scene_id, im_id)."""
    keys = np.stack([scene_id, im_id], axis=1)
    _, inverse = np.unique(keys, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    first = np.full(inverse.max() + 1, len(inverse), dtype=np.int64)
    np.minimum.at(first, inverse, np.arange(len(inverse)))
    return first[inverse]


# --------------------------------------------------------------------------------------------
# Writing


def _fmt_floats(values: np.ndarray) -> str:
    return " ".join(map(repr, values.ravel().tolist()))


def write_bop_csv(path: str | Path, rows: Iterable[BopResultRow] | BopResultArrays, *,
                  rot_tol: float = DEFAULT_ROT_TOL, require_consistent_time: bool = True) -> Path:
    """Validate ``rows`` and write them atomically as a BOP19 results CSV (lossless floats).

    Raises ``ValueError`` naming the row and field before anything is written if a row would not
    read back (non-finite value, negative id, ``R`` not a rotation within ``rot_tol``, times of one
    image differing), so a failed write never leaves a file behind.
    """
    arrays = rows if isinstance(rows, BopResultArrays) else BopResultArrays.from_rows(list(rows))
    problem = _first_value_problem(arrays, rot_tol, require_consistent_time, lambda i: f"row {i}")
    if problem is not None:
        i, name, message = problem
        raise ValueError(f"{path}: row {i}: field '{name}': {message}")
    lines = [BOP_CSV_HEADER]
    for s, i, o, sc, r, t, tm in zip(arrays.scene_id.tolist(), arrays.im_id.tolist(), arrays.obj_id.tolist(),
                                     arrays.score.tolist(), arrays.R, arrays.t, arrays.time.tolist(),
                                     strict=True):
        lines.append(f"{s},{i},{o},{sc!r},{_fmt_floats(r)},{_fmt_floats(t)},{tm!r}")
    return atomic_write_text(path, "\n".join(lines) + "\n")


# --------------------------------------------------------------------------------------------
# Reading


class _LineError(Exception):
    """A problem in one line, before the file and line number are attached."""

    def __init__(self, field: str | None, message: str):
        super().__init__(message)
        self.field = field
        self.message = message


def read_csv_lines(path: str | Path, header: str, what: str) -> list[str]:
    """The data lines of a strict CSV file with the given ``header`` (line k is line k + 2).

    Accepts LF or CRLF line ends and an optional final newline; rejects an empty file, a missing
    or different header, non-UTF-8 bytes and blank lines, each with the file and line.
    """
    path = Path(path)
    data = path.read_bytes()
    if not data:
        raise DataFormatError(path, f"empty file; a {what} starts with the header line '{header}'", line=1)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataFormatError(path, f"not UTF-8 text: byte 0x{data[exc.start]:02x} ({exc.reason})",
                              line=line) from None
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    lines = [ln[:-1] if ln.endswith("\r") else ln for ln in lines]
    _check_header(path, lines[0] if lines else "", header, what)
    for k, ln in enumerate(lines[1:]):
        if not ln.strip():
            raise DataFormatError(path, "blank line (only a final newline may end the file)", line=k + 2)
    return lines[1:]


def _check_header(path: Path, got: str, header: str, what: str) -> None:
    if got == header:
        return
    if got.startswith("\ufeff"):
        hint = "the file starts with a UTF-8 byte-order mark; save it without BOM"
    elif "".join(got.split()) == header:
        hint = "the header has extra whitespace"
    elif got[:1].isdigit() or got[:1] == "-":
        hint = "the header line is missing (the first line looks like data)"
    elif got.lower() == header.lower():
        hint = "column names are case-sensitive"
    else:
        hint = f"got {got[:80]!r}"
    raise DataFormatError(path, f"bad header for a {what}: expected exactly '{header}'; {hint}",
                          line=1, field="header")


def parse_id(text: str, name: str) -> int:
    """A non-negative decimal integer with nothing around it."""
    if text.isascii() and text.isdigit():
        value = int(text)
        if value > _INT64_MAX:
            raise _LineError(name, f"{name} {text} is too large")
        return value
    if text[:1] == "-" and text[1:].isascii() and text[1:].isdigit():
        raise _LineError(name, f"{name} must be >= 0, got {text}")
    raise _LineError(name, f"{name} must be a non-negative integer, got {text!r}")


def parse_float(text: str, name: str) -> float:
    """A float literal with nothing around it (no whitespace, no underscores)."""
    if not text:
        raise _LineError(name, f"{name} is empty")
    if text != text.strip() or "_" in text:
        raise _LineError(name, f"{name}: {text!r} is not a plain number")
    try:
        return float(text)
    except ValueError:
        raise _LineError(name, f"{name}: {text!r} is not a number") from None


def _parse_vector(text: str, name: str, n: int) -> list[float]:
    parts = text.split()
    if not parts:
        raise _LineError(name, f"{name} is empty; expected {n} numbers separated by spaces")
    if len(parts) != n:
        raise _LineError(name, f"{name}: expected {n} numbers, got {len(parts)}")
    values = []
    for k, p in enumerate(parts):
        try:
            values.append(parse_float(p, f"{name}[{k}]"))
        except _LineError as err:
            raise _LineError(name, err.message) from None
    return values


def _parse_line(line: str) -> tuple[int, int, int, float, list[float], list[float], float]:
    fields = line.split(",")
    if len(fields) != len(BOP_CSV_FIELDS):
        raise _LineError(None, f"expected {len(BOP_CSV_FIELDS)} comma-separated fields "
                               f"({BOP_CSV_HEADER}), got {len(fields)}")
    s, i, o, score, R, t, time = fields
    return (parse_id(s, "scene_id"), parse_id(i, "im_id"), parse_id(o, "obj_id"),
            parse_float(score, "score"), _parse_vector(R, "R", 9), _parse_vector(t, "t", 3),
            parse_float(time, "time"))


def _columns(scene_id, im_id, obj_id, score, R, t, time) -> BopResultArrays:
    n = len(score)
    return BopResultArrays(
        scene_id=np.asarray(scene_id, dtype=np.int64), im_id=np.asarray(im_id, dtype=np.int64),
        obj_id=np.asarray(obj_id, dtype=np.int64), score=np.asarray(score, dtype=np.float64),
        R=np.asarray(R, dtype=np.float64).reshape(n, 3, 3), t=np.asarray(t, dtype=np.float64).reshape(n, 3),
        time=np.asarray(time, dtype=np.float64),
    )


def _parse_fast(lines: list[str]) -> BopResultArrays | None:
    """Vectorised parse of well-formed lines; None at the first sign of trouble.

    It only accepts what :func:`_parse_line` accepts, so falling back is always safe.
    """
    if not lines:
        return _columns([], [], [], [], [], [], [])
    if _UNUSUAL_CHARS.search("\n".join(lines)):
        return None
    split = [ln.split(",") for ln in lines]
    if any(len(f) != 7 for f in split):
        return None
    s, i, o, score, R, t, time = zip(*split, strict=True)
    if not all(x.isdigit() for col in (s, i, o) for x in col):
        return None
    if any(" " in x or not x for col in (score, time) for x in col):
        return None
    if any(x.count(" ") != 8 for x in R) or any(x.count(" ") != 2 for x in t):
        return None
    r_tok = " ".join(R).split(" ")
    t_tok = " ".join(t).split(" ")
    if "" in r_tok or "" in t_tok:
        return None
    n = len(lines)
    try:
        ids = [np.fromiter(map(int, col), np.int64, n) for col in (s, i, o)]
        return _columns(*ids, np.fromiter(map(float, score), np.float64, n),
                        np.fromiter(map(float, r_tok), np.float64, 9 * n),
                        np.fromiter(map(float, t_tok), np.float64, 3 * n),
                        np.fromiter(map(float, time), np.float64, n))
    except (ValueError, OverflowError):
        return None


def _parse_slow(path: Path, lines: list[str]) -> BopResultArrays:
    parsed = []
    for k, line in enumerate(lines):
        try:
            parsed.append(_parse_line(line))
        except _LineError as err:
            raise DataFormatError(path, err.message, line=k + 2, field=err.field) from None
    if not parsed:
        return _columns([], [], [], [], [], [], [])
    return _columns(*zip(*parsed, strict=True))


def read_bop_csv_arrays(path: str | Path, *, rot_tol: float = DEFAULT_ROT_TOL,
                        require_consistent_time: bool = True) -> BopResultArrays:
    """Read and validate a BOP19 results CSV into column arrays (fast for large files).

    Raises :class:`DataFormatError` (file, line, field) for any malformed line or value: see
    :func:`read_bop_csv`. A header-only file gives zero rows.
    """
    path = Path(path)
    lines = read_csv_lines(path, BOP_CSV_HEADER, "BOP19 results CSV")
    arrays = _parse_fast(lines)
    if arrays is None:
        arrays = _parse_slow(path, lines)
    problem = _first_value_problem(arrays, rot_tol, require_consistent_time, lambda i: f"line {i + 2}")
    if problem is not None:
        i, name, message = problem
        raise DataFormatError(path, message, line=i + 2, field=name)
    return arrays


def read_bop_csv(path: str | Path, *, rot_tol: float = DEFAULT_ROT_TOL,
                 require_consistent_time: bool = True) -> list[BopResultRow]:
    """Read and strictly validate a BOP19 results CSV.

    Errors (all :class:`DataFormatError` with file, 1-based line and field): empty file, missing
    or different header, non-UTF-8 bytes, blank lines, a wrong number of fields, ids that are not
    non-negative integers, a non-finite or non-numeric score/time, ``R`` not 9 or ``t`` not 3
    finite numbers separated by single spaces, ``R`` not a rotation (``max|R R^T - I| > rot_tol``
    or ``det < 0``), a negative time other than -1, and (when ``require_consistent_time``) rows of
    one image whose times differ by more than 1 ms, which bop_toolkit's checker rejects.
    """
    return read_bop_csv_arrays(path, rot_tol=rot_tol, require_consistent_time=require_consistent_time).rows()
