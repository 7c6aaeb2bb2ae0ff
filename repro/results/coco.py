"""COCO-style 2D detection/segmentation results as BOP22 writes them.

A JSON list of objects with ``scene_id, image_id, category_id, score, bbox [x, y, w, h],
segmentation {size: [h, w], counts: str}, time``; ``counts`` is pycocotools' compressed RLE as a
UTF-8 string. ``segmentation`` may be absent for detection-only (bbox) results; other keys are
kept in ``extra`` and written back unchanged.

Reading is strict: every problem is a :class:`~repro.errors.DataFormatError` naming the file and
the field as ``[i].key`` (``i`` = position in the list).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from repro.errors import DataFormatError
from repro.fileio import atomic_write_text, read_json
from repro.types import PoseEstimate

COCO_RESULT_KEYS: tuple[str, ...] = ("scene_id", "image_id", "category_id", "score", "bbox",
                                     "segmentation", "time")
_REQUIRED = ("scene_id", "image_id", "category_id", "score", "bbox", "time")
TIME_TOL = 1e-3


@dataclass(frozen=True)
class CocoResult:
    """One detection/segmentation of a BOP22 COCO results file.

    ``bbox`` is (x, y, w, h) in pixels; ``segmentation`` is a compressed RLE dict
    ``{"size": [h, w], "counts": str}`` or None (detection only); ``time`` is the image's wall time
    in seconds (-1 if unknown); ``extra`` holds any other keys found in the file.
    """

    scene_id: int
    image_id: int
    category_id: int
    score: float
    bbox: tuple[float, float, float, float]
    segmentation: Mapping[str, Any] | None = None
    time: float = -1.0
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        for name in ("scene_id", "image_id", "category_id"):
            set_(self, name, int(getattr(self, name)))
        set_(self, "score", float(self.score))
        set_(self, "time", float(self.time))
        set_(self, "bbox", tuple(float(v) for v in self.bbox))
        if self.segmentation is not None:
            counts = self.segmentation["counts"]
            set_(self, "segmentation", {
                "size": [int(v) for v in self.segmentation["size"]],
                "counts": counts.decode("utf-8") if isinstance(counts, bytes) else counts,
            })
        set_(self, "extra", dict(self.extra))
        clash = set(self.extra) & set(COCO_RESULT_KEYS)
        if clash:
            raise ValueError(f"extra keys clash with result fields: {sorted(clash)}")

    def to_json(self) -> dict[str, Any]:
        """The JSON object for this result (plain Python types)."""
        obj: dict[str, Any] = {
            "scene_id": self.scene_id, "image_id": self.image_id, "category_id": self.category_id,
            "score": self.score, "bbox": list(self.bbox), "time": self.time,
        }
        if self.segmentation is not None:
            obj["segmentation"] = {"size": list(self.segmentation["size"]),
                                   "counts": self.segmentation["counts"]}
        obj.update(self.extra)
        return obj

    def mask(self) -> np.ndarray:
        """The decoded segmentation (HxW bool); an error for detection-only results."""
        if self.segmentation is None:
            raise ValueError("this result has no segmentation")
        return rle_to_mask(self.segmentation)


# --------------------------------------------------------------------------------------------
# RLE helpers


def mask_to_rle(mask: np.ndarray) -> dict[str, Any]:
    """Compressed RLE of an HxW mask as BOP22 stores it: ``{"size": [h, w], "counts": str}``."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be HxW, got shape {mask.shape}")
    rle = mask_utils.encode(np.asfortranarray(mask.astype(bool).astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("utf-8")}


def rle_to_mask(rle: Mapping[str, Any]) -> np.ndarray:
    """Decode a compressed RLE (``counts`` as str or bytes) to an HxW bool mask."""
    problem = _rle_problem(rle)
    if problem is not None:
        raise ValueError(f"invalid RLE: {problem}")
    counts = rle["counts"]
    h, w = rle["size"]
    data = {"size": [int(h), int(w)], "counts": counts.encode("utf-8") if isinstance(counts, str) else counts}
    return mask_utils.decode(data).astype(bool)


def mask_bbox(mask: np.ndarray) -> tuple[float, float, float, float]:
    """Tight (x, y, w, h) box of the mask's pixels (all zero for an empty mask), as pycocotools."""
    rle = mask_utils.encode(np.asfortranarray(np.asarray(mask, dtype=bool).astype(np.uint8)))
    x, y, w, h = mask_utils.toBbox(rle).tolist()
    return (float(x), float(y), float(w), float(h))


def _decode_counts(counts: str) -> list[int]:
    """Run lengths of a compressed RLE string (pycocotools' ``rleFrString``), checked as it goes."""
    runs: list[int] = []
    p, n = 0, len(counts)
    while p < n:
        x, k, more = 0, 0, True
        while more:
            if p >= n:
                raise ValueError("counts string ends in the middle of a number")
            c = ord(counts[p]) - 48
            if not 0 <= c < 64:
                raise ValueError(f"invalid character {counts[p]!r} at position {p} of counts")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(runs) > 2:
            x += runs[-2]
        if x < 0:
            raise ValueError(f"negative run length at run {len(runs)}")
        runs.append(x)
    return runs


def _rle_problem(rle: Any) -> str | None:
    if not isinstance(rle, Mapping):
        return f"expected an object {{size, counts}}, got {type(rle).__name__}"
    missing = [k for k in ("size", "counts") if k not in rle]
    if missing:
        return f"missing {missing}"
    unknown = sorted(set(rle) - {"size", "counts"})
    if unknown:
        return f"unknown keys {unknown}"
    size = rle["size"]
    if (not isinstance(size, list | tuple) or len(size) != 2
            or not all(_is_int(v) and v > 0 for v in size)):
        return f"size must be [height, width] of positive integers, got {size!r}"
    counts = rle["counts"]
    if isinstance(counts, list):
        return "counts is an uncompressed RLE list; BOP22 results use compressed RLE strings"
    if isinstance(counts, bytes):
        try:
            counts = counts.decode("ascii")
        except UnicodeDecodeError:
            return "counts must be ASCII"
    if not isinstance(counts, str):
        return f"counts must be a string, got {type(counts).__name__}"
    try:
        runs = _decode_counts(counts)
    except ValueError as exc:
        return str(exc)
    h, w = size
    if sum(runs) != h * w:
        return f"counts cover {sum(runs)} pixels but size {h}x{w} has {h * w}"
    return None


# --------------------------------------------------------------------------------------------
# Validation of JSON objects (shared by reader and writer)


def _is_int(v: Any) -> bool:
    return isinstance(v, int | np.integer) and not isinstance(v, bool | np.bool_)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool | np.bool_)


def _result_problem(obj: Any) -> tuple[str | None, str] | None:
    """The first problem of one result object as ``(key, message)``, or None."""
    if not isinstance(obj, Mapping):
        return None, f"expected an object, got {type(obj).__name__}"
    for key in _REQUIRED:
        if key not in obj:
            return key, "missing"
    for key in ("scene_id", "image_id", "category_id"):
        v = obj[key]
        if not _is_int(v):
            return key, f"must be an integer, got {v!r}"
        if v < 0:
            return key, f"must be >= 0, got {v}"
    if not _is_number(obj["score"]) or not math.isfinite(obj["score"]):
        return "score", f"must be a finite number, got {obj['score']!r}"
    bbox = obj["bbox"]
    if not isinstance(bbox, list | tuple) or len(bbox) != 4:
        return "bbox", f"must be [x, y, w, h], got {bbox!r}"
    if not all(_is_number(v) and math.isfinite(v) for v in bbox):
        return "bbox", f"must be 4 finite numbers, got {bbox!r}"
    if bbox[2] < 0 or bbox[3] < 0:
        return "bbox", f"width and height must be >= 0, got {bbox!r}"
    tm = obj["time"]
    if not _is_number(tm) or not math.isfinite(tm) or (tm < 0 and tm != -1):
        return "time", f"must be finite seconds >= 0, or -1 if unknown; got {tm!r}"
    if "segmentation" in obj:
        problem = _rle_problem(obj["segmentation"])
        if problem is not None:
            return "segmentation", problem
    return None


def _results_problem(objs: list[Any], require_consistent_time: bool) -> tuple[int, str | None, str] | None:
    """The first problem of a results list as ``(index, key, message)``, or None."""
    seen: dict[tuple[int, int], int] = {}
    for i, obj in enumerate(objs):
        problem = _result_problem(obj)
        if problem is not None:
            return (i, *problem)
        key = (obj["scene_id"], obj["image_id"])
        j = seen.setdefault(key, i)
        if j == i:
            continue
        first = objs[j]
        if require_consistent_time and abs(obj["time"] - first["time"]) > TIME_TOL:
            return i, "time", (f"time {obj['time']!r} differs from {first['time']!r} at [{j}] for the same "
                               f"image (scene_id {key[0]}, image_id {key[1]}); one time per image")
        if ("segmentation" in obj and "segmentation" in first
                and list(obj["segmentation"]["size"]) != list(first["segmentation"]["size"])):
            return i, "segmentation", (f"size {obj['segmentation']['size']} differs from "
                                       f"{first['segmentation']['size']} at [{j}] for the same image")
    return None


# --------------------------------------------------------------------------------------------
# Reading and writing


def write_coco_results(path: str | Path, results: Iterable[CocoResult], *,
                       require_consistent_time: bool = True) -> Path:
    """Validate and write results atomically, one object per line like bop_toolkit's ``save_json``.

    Raises ``ValueError`` naming the result index and field before anything is written.
    """
    objs = [r.to_json() for r in results]
    problem = _results_problem(objs, require_consistent_time)
    if problem is not None:
        i, key, message = problem
        raise ValueError(f"{path}: result [{i}]" + (f".{key}" if key else "") + f": {message}")
    body = ",\n".join("  " + json.dumps(o, sort_keys=True, allow_nan=False) for o in objs)
    return atomic_write_text(path, "[\n" + body + ("\n" if objs else "") + "]\n")


def read_coco_results(path: str | Path, *, require_consistent_time: bool = True) -> list[CocoResult]:
    """Read and strictly validate a BOP22 COCO results JSON.

    Errors (all :class:`DataFormatError` naming the file and ``[i].key``): invalid JSON (with its
    line), a top level that is not a list, an element that is not an object, missing keys, ids that
    are not non-negative integers, a non-finite score, a bbox that is not 4 finite numbers with
    ``w, h >= 0``, a bad time, an RLE whose size/counts are malformed or do not cover ``h * w``
    pixels, and (when ``require_consistent_time``) results of one image with different times.
    """
    path = Path(path)
    data = read_json(path)
    if not isinstance(data, list):
        raise DataFormatError(path, f"expected a JSON list of results (BOP22 COCO format), "
                                    f"got {type(data).__name__}")
    problem = _results_problem(data, require_consistent_time)
    if problem is not None:
        i, key, message = problem
        raise DataFormatError(path, message, field=f"[{i}]" + (f".{key}" if key else ""))
    out = []
    for obj in data:
        extra = {k: v for k, v in obj.items() if k not in COCO_RESULT_KEYS}
        out.append(CocoResult(obj["scene_id"], obj["image_id"], obj["category_id"], obj["score"],
                              tuple(obj["bbox"]), obj.get("segmentation"), obj["time"], extra))
    return out


def coco_result_from_estimate(estimate: PoseEstimate, scene_id: int, image_id: int,
                              time: float = -1.0) -> CocoResult:
    """A COCO result for an estimate that carries a mask and/or a box.

    The segmentation comes from ``estimate.mask``; the box is ``estimate.box`` or, when missing,
    the tight box of the mask. ``category_id`` is the object id, as in BOP22.
    """
    if estimate.mask is None and estimate.box is None:
        raise ValueError(f"estimate of obj {estimate.obj_id} has neither a mask nor a box")
    segmentation = None if estimate.mask is None else mask_to_rle(estimate.mask)
    bbox = estimate.box if estimate.box is not None else mask_bbox(estimate.mask)
    return CocoResult(scene_id, image_id, estimate.obj_id, estimate.score, bbox, segmentation, time)


def coco_results_from_estimates(scene_id: int, image_id: int, estimates: Iterable[PoseEstimate],
                                time: float = -1.0) -> list[CocoResult]:
    """COCO results for the estimates of one image that have a mask or a box (others skipped)."""
    return [coco_result_from_estimate(e, scene_id, image_id, time)
            for e in estimates if e.mask is not None or e.box is not None]
