"""Atomic file writes and JSON reading with located errors.

Every output of the harness goes through ``atomic_write_*``: the data is written to a temporary
file in the destination folder and renamed into place, so a killed process never leaves a
half-written file under the final name. Files are not fsync'ed: that would only add protection
against power loss, at ~30 ms per file (dataset generation writes thousands).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from repro.errors import DataFormatError


def atomic_write(path: str | Path, writer: Callable[[Any], None], mode: str = "wb") -> Path:
    """Call ``writer(fileobj)`` on a temporary file next to ``path``, then rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8", "newline": ""})) as f:
            writer(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data), "wb")


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text), "w")


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def dumps_json(obj: Any, indent: int | None = 2) -> str:
    """JSON text with numpy values converted; NaN/inf become the JS tokens bop_toolkit also writes."""
    return json.dumps(obj, indent=indent, default=_jsonable, allow_nan=True) + "\n"


def atomic_write_json(path: str | Path, obj: Any, indent: int | None = 2) -> Path:
    return atomic_write_text(path, dumps_json(obj, indent))


def read_json(path: str | Path) -> Any:
    """Parse a JSON file; a syntax error is reported with the file, line and column."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise
    except UnicodeDecodeError as exc:
        raise DataFormatError(path, f"not UTF-8 text ({exc.reason})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataFormatError(path, f"invalid JSON: {exc.msg} (column {exc.colno})", line=exc.lineno) from None


def atomic_write_image(path: str | Path, image: np.ndarray) -> Path:
    """Encode an image (PNG/JPEG/TIFF by extension, OpenCV's BGR order for colour) atomically."""
    import cv2

    path = Path(path)
    ok, buf = cv2.imencode(path.suffix, image)
    if not ok:
        raise ValueError(f"could not encode image for {path}")
    return atomic_write_bytes(path, buf.tobytes())


def read_image(path: str | Path, flags: int | None = None) -> np.ndarray:
    """Read an image unchanged (16-bit depth stays 16-bit); a missing or unreadable file is an error."""
    import cv2

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED if flags is None else flags)
    if img is None:
        raise DataFormatError(path, "cannot decode image")
    return img


def is_finite_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)
