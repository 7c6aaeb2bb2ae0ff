"""Category-level results JSON (NOCS/REAL275 conventions: metres, class ids 1..6).

The project's format is ``{"format": "repro-category-v1", "images": [...]}``; each image entry has
``scene_id, im_id, time`` and the per-image keys the official NOCS evaluation consumes:
``pred_class_ids [M], pred_scores [M], pred_RTs [M][4][4], pred_scales [M][3], pred_bboxes [M][4]``
(y1, x1, y2, x2 pixels), optionally with ground truth ``gt_class_ids, gt_RTs, gt_scales,
gt_handle_visibility, gt_bboxes``. ``RT = [[s*R, t], [0, 0, 0, 1]]``.

The reader also accepts the layout of the official evaluation's inputs (top level
``{"synset_names", "images"}``, images identified by ``image_id``, no time), as in
``shared/golden/nocs/inputs.json``; ``null`` there means NaN (and is rejected as non-finite).
Unknown keys of an image entry are kept in ``extra`` and written back.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from repro.errors import DataFormatError
from repro.fileio import atomic_write_text, read_json
from repro.types import NOCS_CLASSES, CategoryEstimate

CATEGORY_FORMAT = "repro-category-v1"
NOCS_SYNSET_NAMES: tuple[str, ...] = ("BG", *NOCS_CLASSES)

# name -> (trailing shape, integer?)
PRED_ARRAYS: dict[str, tuple[tuple[int, ...], bool]] = {
    "pred_class_ids": ((), True),
    "pred_scores": ((), False),
    "pred_RTs": ((4, 4), False),
    "pred_scales": ((3,), False),
    "pred_bboxes": ((4,), False),
}
GT_ARRAYS: dict[str, tuple[tuple[int, ...], bool]] = {
    "gt_class_ids": ((), True),
    "gt_RTs": ((4, 4), False),
    "gt_scales": ((3,), False),
    "gt_handle_visibility": ((), True),
    "gt_bboxes": ((4,), False),
}
_GT_REQUIRED = ("gt_class_ids", "gt_RTs", "gt_scales")
_KNOWN_KEYS = frozenset({"scene_id", "im_id", "time", *PRED_ARRAYS, *GT_ARRAYS})
_LAST_ROW = np.array([0.0, 0.0, 0.0, 1.0])


def _normalise(value: Any, name: str, trailing: tuple[int, ...], integer: bool) -> np.ndarray:
    arr = np.asarray(value, dtype=np.int64 if integer else np.float64)
    if arr.size == 0:
        arr = arr.reshape((0, *trailing))
    if arr.ndim != 1 + len(trailing) or arr.shape[1:] != trailing:
        want = "x".join(["M", *map(str, trailing)])
        raise ValueError(f"{name}: expected shape {want}, got {arr.shape}")
    if arr.flags.writeable:
        arr = arr.copy()
        arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class CategoryImageResult:
    """Category-level predictions (and optionally ground truth) of one image, as NOCS arrays.

    Validated on construction: shapes and lengths agree, values finite, class ids in 1..6, the
    last row of every RT is [0, 0, 0, 1], no all-zero predicted box (the official evaluation's
    ``trim_zeros`` would silently drop that prediction).
    """

    scene_id: int
    im_id: int
    pred_class_ids: np.ndarray
    pred_scores: np.ndarray
    pred_RTs: np.ndarray
    pred_scales: np.ndarray
    pred_bboxes: np.ndarray
    time: float = -1.0
    gt_class_ids: np.ndarray | None = None
    gt_RTs: np.ndarray | None = None
    gt_scales: np.ndarray | None = None
    gt_handle_visibility: np.ndarray | None = None
    gt_bboxes: np.ndarray | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "scene_id", int(self.scene_id))
        set_(self, "im_id", int(self.im_id))
        set_(self, "time", float(self.time))
        for name, (trailing, integer) in {**PRED_ARRAYS, **GT_ARRAYS}.items():
            value = getattr(self, name)
            if value is None and name in PRED_ARRAYS:
                raise ValueError(f"{name} is required (use an empty list for no predictions)")
            if value is not None:
                set_(self, name, _normalise(value, name, trailing, integer))
        set_(self, "extra", dict(self.extra))
        clash = set(self.extra) & _KNOWN_KEYS
        if clash:
            raise ValueError(f"extra keys clash with result fields: {sorted(clash)}")
        problem = _image_problem({k: getattr(self, k) for k in _KNOWN_KEYS})
        if problem is not None:
            raise ValueError(f"{problem[0]}: {problem[1]}")

    @property
    def has_gt(self) -> bool:
        return self.gt_class_ids is not None

    @property
    def n_pred(self) -> int:
        return len(self.pred_class_ids)

    @property
    def n_gt(self) -> int:
        return 0 if self.gt_class_ids is None else len(self.gt_class_ids)

    def to_json(self) -> dict[str, Any]:
        """The JSON object of this image (plain Python types; gt keys only when present)."""
        obj: dict[str, Any] = {"scene_id": self.scene_id, "im_id": self.im_id, "time": self.time}
        for name in (*PRED_ARRAYS, *GT_ARRAYS):
            value = getattr(self, name)
            if value is not None:
                obj[name] = value.tolist()
        obj.update(self.extra)
        return obj

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CategoryImageResult):
            return NotImplemented
        if (self.scene_id, self.im_id, self.extra) != (other.scene_id, other.im_id, other.extra):
            return False
        if not (self.time == other.time or (math.isnan(self.time) and math.isnan(other.time))):
            return False
        for name in (*PRED_ARRAYS, *GT_ARRAYS):
            a, b = getattr(self, name), getattr(other, name)
            if (a is None) != (b is None) or (a is not None and not np.array_equal(a, b)):
                return False
        return True

    __hash__ = None  # type: ignore[assignment]


def category_image_from_estimates(scene_id: int, im_id: int, estimates: Iterable[CategoryEstimate],
                                  time: float = -1.0) -> CategoryImageResult:
    """Predictions of one image from ``CategoryEstimate`` objects.

    The NOCS box (y1, x1, y2, x2) comes from the estimate's (x, y, w, h) ``box`` or the tight box of
    its mask; an estimate with neither is an error, because the official evaluation drops
    predictions whose box is all zero.
    """
    estimates = list(estimates)
    boxes = []
    for e in estimates:
        if e.box is not None:
            x, y, w, h = e.box
        elif e.mask is not None and np.any(e.mask):
            ys, xs = np.nonzero(e.mask)
            x, y, w, h = xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1
        else:
            raise ValueError(f"category estimate (class {e.class_id}) has neither a box nor a non-empty mask")
        boxes.append([float(y), float(x), float(y + h), float(x + w)])
    return CategoryImageResult(
        scene_id, im_id,
        pred_class_ids=[e.class_id for e in estimates],
        pred_scores=[e.score for e in estimates],
        pred_RTs=[e.RT for e in estimates],
        pred_scales=[e.scales for e in estimates],
        pred_bboxes=boxes,
        time=time,
    )


# --------------------------------------------------------------------------------------------
# Validation (shared by construction and reading)


def _image_problem(d: Mapping[str, Any]) -> tuple[str, str] | None:
    """The first problem of one image's normalised arrays as ``(field, message)``, or None."""
    tm = d["time"]
    if not math.isfinite(tm) or (tm < 0 and tm != -1):
        return "time", f"must be finite seconds >= 0, or -1 if unknown; got {tm!r}"
    for prefix, names, count_key in (("pred", PRED_ARRAYS, "pred_class_ids"),
                                     ("gt", GT_ARRAYS, "gt_class_ids")):
        present = [n for n in names if d.get(n) is not None]
        if prefix == "gt":
            if not present:
                continue
            missing = [n for n in _GT_REQUIRED if d.get(n) is None]
            if missing:
                return missing[0], f"missing (required when any gt_* key is given: {list(_GT_REQUIRED)})"
        m = len(d[count_key])
        for name in present:
            arr = d[name]
            if len(arr) != m:
                return name, f"has {len(arr)} entries but {count_key} has {m}"
            if not np.isfinite(arr).all():
                j = int(np.argmax(~np.isfinite(arr.reshape(m, -1)).all(axis=1)))
                return name, f"entry [{j}] is not finite (null/NaN/inf): {arr[j].tolist()}"
        ids = d[count_key]
        bad = (ids < 1) | (ids > len(NOCS_CLASSES))
        if bad.any():
            j = int(np.argmax(bad))
            return count_key, f"entry [{j}] = {ids[j]}: class ids are 1..{len(NOCS_CLASSES)} {NOCS_CLASSES}"
        rts = d[f"{prefix}_RTs"]
        bad = ~np.isclose(rts[:, 3, :], _LAST_ROW, rtol=0, atol=1e-6).all(axis=1)
        if bad.any():
            j = int(np.argmax(bad))
            return f"{prefix}_RTs", f"entry [{j}] last row must be [0, 0, 0, 1], got {rts[j, 3].tolist()}"
    zero = ~d["pred_bboxes"].any(axis=1)
    if zero.any():
        j = int(np.argmax(zero))
        return "pred_bboxes", (f"entry [{j}] is all zero; the official NOCS evaluation (trim_zeros) "
                               "would silently drop this prediction")
    vis = d.get("gt_handle_visibility")
    if vis is not None and ((vis != 0) & (vis != 1)).any():
        j = int(np.argmax((vis != 0) & (vis != 1)))
        return "gt_handle_visibility", f"entry [{j}] = {vis[j]}; must be 0 or 1"
    return None


class _JsonError(Exception):
    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
        self.message = message


def _json_array(value: Any, name: str, trailing: tuple[int, ...], integer: bool) -> np.ndarray:
    """A JSON nested list of numbers with shape (M, *trailing) as an array; ``null`` -> NaN."""
    want = " x ".join(["M", *map(str, trailing)])
    kind = "integers" if integer else "numbers"
    flat: list[Any] = []

    def walk(v: Any, dims: tuple[int, ...], where: str) -> None:
        if not dims:
            if integer and not (isinstance(v, int) and not isinstance(v, bool)):
                raise _JsonError(name, f"element {where} must be an integer, got {v!r}")
            if not integer and not (v is None or (isinstance(v, int | float) and not isinstance(v, bool))):
                raise _JsonError(name, f"element {where} must be a number, got {v!r}")
            flat.append(math.nan if v is None else v)
            return
        if not isinstance(v, list) or len(v) != dims[0]:
            got = f"length {len(v)}" if isinstance(v, list) else type(v).__name__
            raise _JsonError(name, f"must be an {want} list of {kind}; element {where or '(top)'} has {got}")
        for k, item in enumerate(v):
            walk(item, dims[1:], f"{where}[{k}]")

    if not isinstance(value, list):
        raise _JsonError(name, f"must be an {want} list of {kind}, got {type(value).__name__}")
    for k, item in enumerate(value):
        walk(item, trailing, f"[{k}]")
    arr = np.array(flat, dtype=np.int64 if integer else np.float64)
    return arr.reshape((len(value), *trailing))


def _json_int(obj: Mapping[str, Any], key: str) -> int:
    v = obj[key]
    if not isinstance(v, int) or isinstance(v, bool):
        raise _JsonError(key, f"must be an integer, got {v!r}")
    if v < 0:
        raise _JsonError(key, f"must be >= 0, got {v}")
    return v


def _parse_image(obj: Any, official_layout: bool) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise _JsonError("", f"expected an object, got {type(obj).__name__}")
    d: dict[str, Any] = {}
    extra = {k: v for k, v in obj.items() if k not in _KNOWN_KEYS}
    if "im_id" in obj:
        d["im_id"] = _json_int(obj, "im_id")
    elif official_layout and "image_id" in obj:
        d["im_id"] = _json_int(obj, "image_id")
        del extra["image_id"]
    else:
        raise _JsonError("im_id", "missing" + (" (or image_id)" if official_layout else ""))
    if "scene_id" in obj:
        d["scene_id"] = _json_int(obj, "scene_id")
    elif official_layout:
        d["scene_id"] = 0
    else:
        raise _JsonError("scene_id", "missing")
    if "time" in obj:
        tm = obj["time"]
        if not isinstance(tm, int | float) or isinstance(tm, bool):
            raise _JsonError("time", f"must be a number, got {tm!r}")
        d["time"] = float(tm)
    elif official_layout:
        d["time"] = -1.0
    else:
        raise _JsonError("time", "missing")
    for names, required in ((PRED_ARRAYS, True), (GT_ARRAYS, False)):
        for name, (trailing, integer) in names.items():
            if name in obj:
                d[name] = _json_array(obj[name], name, trailing, integer)
            elif required:
                raise _JsonError(name, "missing")
    d["extra"] = extra
    return d


# --------------------------------------------------------------------------------------------
# Reading and writing


def read_category_results(path: str | Path) -> list[CategoryImageResult]:
    """Read and validate a category-level results file (project format or the NOCS inputs layout).

    Errors (all :class:`DataFormatError` naming the file and ``images[i].field``): invalid JSON, an
    unknown ``format``, unexpected ``synset_names``, missing keys, arrays of the wrong shape or
    type, lengths that disagree, non-finite values (``null``), class ids outside 1..6, an RT whose
    last row is not [0, 0, 0, 1], an all-zero predicted box, a bad time, duplicate images.
    """
    path = Path(path)
    data = read_json(path)
    if not isinstance(data, dict):
        raise DataFormatError(path, f"expected a JSON object with 'images', got {type(data).__name__}")
    if "format" in data:
        if data["format"] != CATEGORY_FORMAT:
            raise DataFormatError(path, f"unknown format {data['format']!r}; expected {CATEGORY_FORMAT!r}",
                                  field="format")
        official_layout = False
    else:
        official_layout = True
        names = data.get("synset_names")
        if names is not None and list(names) != list(NOCS_SYNSET_NAMES):
            raise DataFormatError(path, f"class ids are defined by synset_names {list(NOCS_SYNSET_NAMES)}, "
                                        f"got {names!r}", field="synset_names")
    images = data.get("images")
    if not isinstance(images, list):
        raise DataFormatError(path, "missing" if images is None else
                              f"must be a list, got {type(images).__name__}", field="images")
    out: list[CategoryImageResult] = []
    seen: dict[tuple[int, int], int] = {}
    for i, obj in enumerate(images):
        where = f"images[{i}]"
        try:
            d = _parse_image(obj, official_layout)
        except _JsonError as err:
            field = f"{where}.{err.field}" if err.field else where
            raise DataFormatError(path, err.message, field=field) from None
        problem = _image_problem(d)
        if problem is not None:
            raise DataFormatError(path, problem[1], field=f"{where}.{problem[0]}")
        key = (d["scene_id"], d["im_id"])
        j = seen.setdefault(key, i)
        if j != i:
            raise DataFormatError(path, f"duplicate image (scene_id {key[0]}, im_id {key[1]}); first at "
                                        f"images[{j}]", field=f"{where}.im_id")
        out.append(CategoryImageResult(**d))
    return out


def write_category_results(path: str | Path, images: Iterable[CategoryImageResult]) -> Path:
    """Write images atomically in the project format, one image per line; lossless floats.

    Records are validated when constructed; duplicate (scene_id, im_id) raise ``ValueError``
    before anything is written.
    """
    images = list(images)
    seen: dict[tuple[int, int], int] = {}
    for i, img in enumerate(images):
        j = seen.setdefault((img.scene_id, img.im_id), i)
        if j != i:
            raise ValueError(f"{path}: images[{i}]: duplicate image (scene_id {img.scene_id}, "
                             f"im_id {img.im_id}); first at images[{j}]")
    body = ",\n".join(json.dumps(img.to_json(), allow_nan=False) for img in images)
    text = f'{{"format": "{CATEGORY_FORMAT}", "images": [\n' + body + ("\n" if images else "") + "]}\n"
    return atomic_write_text(path, text)
