"""Per-frame, per-stage timings CSV (long format): ``scene_id,im_id,stage,seconds``.

One row per (image, stage), e.g. ``detection``, ``coarse``, ``refinement``, ``total``; the report
stage pivots it into runtime profiles. Written atomically; read strictly with located errors.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from repro.errors import DataFormatError
from repro.fileio import atomic_write_text
from repro.results.bop_csv import _LineError, parse_float, parse_id, read_csv_lines

TIMINGS_CSV_HEADER = "scene_id,im_id,stage,seconds"
_STAGE = re.compile(r'[^\s,"]+')


@dataclass(frozen=True)
class TimingRow:
    """Seconds spent in one stage of the method on one image."""

    scene_id: int
    im_id: int
    stage: str
    seconds: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "scene_id", operator.index(self.scene_id))
        object.__setattr__(self, "im_id", operator.index(self.im_id))
        object.__setattr__(self, "stage", str(self.stage))
        object.__setattr__(self, "seconds", float(self.seconds))


def timing_rows(scene_id: int, im_id: int, timings: Mapping[str, float]) -> list[TimingRow]:
    """Rows for one image from a ``Prediction.timings`` mapping (stage -> seconds)."""
    return [TimingRow(scene_id, im_id, stage, seconds) for stage, seconds in timings.items()]


def timings_by_image(rows: Iterable[TimingRow]) -> dict[tuple[int, int], dict[str, float]]:
    """``{(scene_id, im_id): {stage: seconds}}`` in first-seen order."""
    out: dict[tuple[int, int], dict[str, float]] = {}
    for r in rows:
        out.setdefault((r.scene_id, r.im_id), {})[r.stage] = r.seconds
    return out


def _row_problem(row: TimingRow) -> tuple[str, str] | None:
    for name in ("scene_id", "im_id"):
        if getattr(row, name) < 0:
            return name, f"must be >= 0, got {getattr(row, name)}"
    if not _STAGE.fullmatch(row.stage):
        return "stage", f"must be a non-empty name without whitespace, commas or quotes, got {row.stage!r}"
    if not math.isfinite(row.seconds) or row.seconds < 0:
        return "seconds", f"must be finite and >= 0, got {row.seconds!r}"
    return None


def write_timings_csv(path: str | Path, rows: Iterable[TimingRow]) -> Path:
    """Validate and write timings atomically; ``ValueError`` (row, field) before anything is written.

    ``seconds`` are written with ``repr`` (lossless); a stage may appear once per image.
    """
    rows = list(rows)
    seen: dict[tuple[int, int, str], int] = {}
    for i, row in enumerate(rows):
        problem = _row_problem(row)
        if problem is None:
            j = seen.setdefault((row.scene_id, row.im_id, row.stage), i)
            if j != i:
                problem = "stage", f"duplicate stage {row.stage!r} for the image; first at row {j}"
        if problem is not None:
            raise ValueError(f"{path}: row {i}: field '{problem[0]}': {problem[1]}")
    lines = [TIMINGS_CSV_HEADER, *(f"{r.scene_id},{r.im_id},{r.stage},{r.seconds!r}" for r in rows)]
    return atomic_write_text(path, "\n".join(lines) + "\n")


def read_timings_csv(path: str | Path) -> list[TimingRow]:
    """Read and validate a timings CSV.

    Errors (all :class:`DataFormatError` with file, line and field): empty file, wrong header,
    non-UTF-8 bytes, blank lines, a wrong number of fields, bad ids, a bad stage name, seconds not
    a finite number >= 0, a stage repeated for the same image.
    """
    path = Path(path)
    rows: list[TimingRow] = []
    seen: dict[tuple[int, int, str], int] = {}
    for k, line in enumerate(read_csv_lines(path, TIMINGS_CSV_HEADER, "timings CSV")):
        lineno = k + 2
        fields = line.split(",")
        try:
            if len(fields) != 4:
                raise _LineError(None, f"expected 4 comma-separated fields ({TIMINGS_CSV_HEADER}), "
                                       f"got {len(fields)}")
            row = TimingRow(parse_id(fields[0], "scene_id"), parse_id(fields[1], "im_id"), fields[2],
                            parse_float(fields[3], "seconds"))
            problem = _row_problem(row)
            if problem is not None:
                raise _LineError(*problem)
        except _LineError as err:
            raise DataFormatError(path, err.message, line=lineno, field=err.field) from None
        first = seen.setdefault((row.scene_id, row.im_id, row.stage), lineno)
        if first != lineno:
            message = (f"duplicate stage {row.stage!r} for image (scene_id {row.scene_id}, "
                       f"im_id {row.im_id}); first on line {first}")
            raise DataFormatError(path, message, line=lineno, field="stage")
        rows.append(row)
    return rows
