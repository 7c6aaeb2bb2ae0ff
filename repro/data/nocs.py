"""Reader and writer for the official NOCS layout (REAL275 and CAMERA25, NOCS CVPR 2019 release).

Layout under a root (the release's ``data/`` folder; a folder that contains ``data/`` also works)::

    real/{train,test}/scene_N/XXXX_color.png, _depth.png, _mask.png, _coord.png, _meta.txt
    camera/{train,val}/NNNNN/XXXX_...                   (same five files per image)
    camera_full_depths/{train,val}/NNNNN/XXXX_composed.png   optional composed CAMERA depth
    obj_models/...                                      optional, unused (category level)
    gts/{real_test,val}/results_*.pkl                   official GT pickles: NEVER read here
    gts_json/<subset>_<split>.json                      GT made by ``convert_nocs_gt_pickles``
    camera.json                                         optional intrinsics (BOP keys)

Per image: colour is RGB, depth is uint16 millimetres (a 3-channel CAMERA depth is decoded as the
NOCS code does: ``G * 256 + R``), the mask holds the instance id per pixel (255 = background),
the coord PNG stores the NOCS map as 8-bit RGB with z flipped, and ``meta.txt`` has one line per
instance: ``inst_id class_id model_name`` (REAL) or ``inst_id class_id synset_id model_id``
(CAMERA; class 0 marks a distractor without ground truth).

Ground truth comes only from the project's JSON form (``repro-nocs-gt-v1``): pickles can execute
code, so they are converted once, explicitly, by ``convert_nocs_gt_pickles``.
"""

from __future__ import annotations

import logging
import pickle
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from repro.data.base import require_dir, require_file
from repro.errors import DataFormatError, DatasetNotFoundError
from repro.fileio import atomic_write_image, atomic_write_json, atomic_write_text, read_image, read_json
from repro.results.category import GT_ARRAYS, PRED_ARRAYS
from repro.types import NOCS_CLASSES, CameraIntrinsics, CategoryGT, Frame, ObjectModel, Targets

logger = logging.getLogger(__name__)

GT_FORMAT = "repro-nocs-gt-v1"
SYNSET_NAMES: tuple[str, ...] = ("BG", *NOCS_CLASSES)
SUBSETS: tuple[str, ...] = ("real", "camera")
EVAL_SPLITS: Mapping[str, str] = {"real": "test", "camera": "val"}
OFFICIAL_SPLITS: Mapping[str, tuple[str, ...]] = {"real": ("train", "test"), "camera": ("train", "val")}
BACKGROUND_ID = 255
BBOX_MATCH_TOL = 5
"""Pixels (sum of |differences| of y1,x1,y2,x2) for matching a GT box to a mask box, as SPD does."""

REAL275_CAMERA = CameraIntrinsics(
    K=[[591.0125, 0.0, 322.525], [0.0, 590.16775, 244.11084], [0.0, 0.0, 1.0]], width=640, height=480)
CAMERA25_CAMERA = CameraIntrinsics(
    K=[[577.5, 0.0, 319.5], [0.0, 577.5, 239.5], [0.0, 0.0, 1.0]], width=640, height=480)
DEFAULT_CAMERAS: Mapping[str, CameraIntrinsics] = {"real": REAL275_CAMERA, "camera": CAMERA25_CAMERA}

_SUBSET_DIRS = {"real": ("real", "Real"), "camera": ("camera", "CAMERA")}
_DATASET_NAMES = {"real": "real275", "camera": "camera25"}
_DOWNLOAD_HINT = {
    "real": "download real_{split}.zip of the NOCS release (github.com/hughw19/NOCS_CVPR2019) and "
            "unpack it into <root>/real/, or run `repro data synth --kind nocs`",
    "camera": "download camera_{split}.zip of the NOCS release (github.com/hughw19/NOCS_CVPR2019) and "
              "unpack it into <root>/camera/, or run `repro data synth --kind nocs`",
}
_SCENE_RE = {"real": re.compile(r"scene_(\d+)"), "camera": re.compile(r"(\d+)")}
_COLOR_RE = re.compile(r"(\d+)_color\.png")
_PICKLE_NAME_RE = re.compile(r"results_(?P<tag>.+?)_(?P<scene>scene_\d+|\d+)_(?P<im>\d+)\.pkl")
_IMAGE_PATH_RE = re.compile(r"(scene_\d+|\d+)[/\\](\d+)$")

# (trailing shape, integer?) of the per-image arrays of a GT JSON / NOCS result pickle: the schema of
# the category results files, with boxes as integer pixels (as in the NOCS files) and instance ids.
_GT_FIELDS: Mapping[str, tuple[tuple[int, ...], bool]] = {
    **GT_ARRAYS, "gt_bboxes": ((4,), True), "gt_inst_ids": ((), True)}
_PRED_FIELDS: Mapping[str, tuple[tuple[int, ...], bool]] = {**PRED_ARRAYS, "pred_bboxes": ((4,), True)}
_REQUIRED_GT = ("gt_class_ids", "gt_RTs", "gt_scales", "gt_handle_visibility")
_REQUIRED_PRED = ("pred_class_ids", "pred_scores", "pred_RTs", "pred_scales")
_PICKLE_EXTRA_KEYS = ("image_id", "image_path")

# Globals a NOCS result pickle may reference (numpy arrays and scalars, py2 compatibility shims).
_PICKLE_GLOBALS = frozenset({
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("_codecs", "encode"), ("collections", "OrderedDict"),
    ("__builtin__", "bytes"), ("builtins", "bytes"), ("__builtin__", "bytearray"), ("builtins", "bytearray"),
    ("copy_reg", "_reconstructor"), ("copyreg", "_reconstructor"),
    ("__builtin__", "object"), ("builtins", "object"),
    ("__builtin__", "set"), ("builtins", "set"), ("__builtin__", "frozenset"), ("builtins", "frozenset"),
})


# --------------------------------------------------------------------------- names and paths

def scene_dir_name(subset: str, scene_id: int) -> str:
    """Folder name of a scene: ``scene_N`` (REAL) or ``NNNNN`` (CAMERA)."""
    _check_subset(subset)
    return f"scene_{int(scene_id)}" if subset == "real" else f"{int(scene_id):05d}"


def nocs_frame_prefix(root: str | Path, subset: str, split: str, scene_id: int, im_id: int) -> Path:
    """``<root>/<subset>/<split>/<scene>/XXXX``: the files of an image are this plus ``_color.png`` etc."""
    return Path(root) / subset / split / scene_dir_name(subset, scene_id) / f"{int(im_id):04d}"


def default_gt_path(root: str | Path, subset: str, split: str) -> Path:
    """Where the reader looks for the GT JSON by default: ``<root>/gts_json/<subset>_<split>.json``."""
    return Path(root) / "gts_json" / f"{subset}_{split}.json"


def _file(prefix: Path, kind: str) -> Path:
    return prefix.with_name(f"{prefix.name}_{kind}")


def _check_subset(subset: str) -> None:
    if subset not in SUBSETS:
        raise ValueError(f"NOCS subset must be one of {SUBSETS}, got {subset!r}")


def _normalise_subset(subset: str, split: str | None) -> tuple[str, str]:
    """Accept ``real``/``camera`` (+ split) and the official GT folder names ``real_test``/``val``."""
    if subset not in SUBSETS:
        head, _, tail = subset.partition("_")
        if subset in ("val", "train"):
            head, tail = "camera", subset
        if head not in SUBSETS or not tail or (split is not None and split != tail):
            raise ValueError(f"NOCS subset must be 'real' or 'camera' (or 'real_test', 'camera_val', 'val'), "
                             f"got {subset!r} with split {split!r}")
        subset, split = head, tail
    return subset, split or EVAL_SPLITS[subset]


def _scene_token_to_id(token: str) -> int:
    return int(token[len("scene_"):]) if token.startswith("scene_") else int(token)


# --------------------------------------------------------------------------- meta.txt

@dataclass(frozen=True)
class MetaEntry:
    """One line of ``XXXX_meta.txt``; ``synset_id`` is set for CAMERA lines only."""

    inst_id: int
    class_id: int
    model_id: str
    synset_id: str | None = None

    @property
    def model_key(self) -> str:
        """The model name (REAL) or ``synset_id/model_id`` (CAMERA, its folder under obj_models)."""
        return self.model_id if self.synset_id is None else f"{self.synset_id}/{self.model_id}"


def read_meta(path: str | Path) -> list[MetaEntry]:
    """Parse a ``meta.txt``; a malformed line raises DataFormatError with file and line number."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataFormatError(path, f"not UTF-8 text ({exc.reason})") from None
    entries: list[MetaEntry] = []
    seen: set[int] = set()
    for lineno, line in enumerate(text.splitlines(), 1):
        words = line.split()
        if not words:
            continue
        if len(words) not in (3, 4):
            raise DataFormatError(path, "expected 'inst_id class_id model_name' (REAL) or "
                                  f"'inst_id class_id synset_id model_id' (CAMERA), got {len(words)} fields",
                                  line=lineno)
        try:
            inst_id, class_id = int(words[0]), int(words[1])
        except ValueError:
            raise DataFormatError(path, f"inst_id and class_id must be integers, got {words[0]!r} "
                                  f"{words[1]!r}", line=lineno) from None
        if not 0 < inst_id < BACKGROUND_ID:
            raise DataFormatError(path, f"must be in 1..254, got {inst_id}", line=lineno, field="inst_id")
        if not 0 <= class_id <= len(NOCS_CLASSES):
            raise DataFormatError(path, f"must be in 0..{len(NOCS_CLASSES)}, got {class_id}", line=lineno,
                                  field="class_id")
        if inst_id in seen:
            raise DataFormatError(path, f"duplicate instance {inst_id}", line=lineno, field="inst_id")
        seen.add(inst_id)
        if len(words) == 3:
            entries.append(MetaEntry(inst_id, class_id, words[2]))
        else:
            entries.append(MetaEntry(inst_id, class_id, words[3], synset_id=words[2]))
    return entries


def _meta_entry(item: MetaEntry | Sequence[Any]) -> MetaEntry:
    if isinstance(item, MetaEntry):
        return item
    if len(item) == 3:
        return MetaEntry(int(item[0]), int(item[1]), str(item[2]))
    if len(item) == 4:
        return MetaEntry(int(item[0]), int(item[1]), str(item[3]), synset_id=str(item[2]))
    raise ValueError(f"meta entry must be (inst_id, class_id, model_name) or "
                     f"(inst_id, class_id, synset_id, model_id), got {item!r}")


# --------------------------------------------------------------------------- image codecs

def encode_coord(coord: np.ndarray) -> np.ndarray:
    """NOCS map (HxWx3 float in [0, 1]) -> the 8-bit BGR array to store, exact inverse of ``decode_coord``."""
    coord = np.asarray(coord, dtype=np.float64)
    if coord.ndim != 3 or coord.shape[2] != 3:
        raise ValueError(f"coord must be HxWx3, got {coord.shape}")
    if not np.all(np.isfinite(coord)) or coord.min(initial=0) < -1e-6 or coord.max(initial=0) > 1 + 1e-6:
        raise ValueError("coord values must be finite and within [0, 1]")
    rgb = np.stack([coord[..., 0], coord[..., 1], 1.0 - coord[..., 2]], axis=-1)
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)[..., ::-1].copy()


def decode_coord(bgr: np.ndarray) -> np.ndarray:
    """The official decoding of a coord PNG read by cv2: ``[:, :, (2, 1, 0)] / 255`` then ``z = 1 - z``."""
    coord = np.asarray(bgr)[:, :, :3][:, :, (2, 1, 0)].astype(np.float32) / 255
    coord[:, :, 2] = 1 - coord[:, :, 2]
    return coord


def decode_depth(raw: np.ndarray, path: str | Path = "<depth>") -> np.ndarray:
    """uint16 depth from a NOCS depth PNG: 16-bit grey as is, 3-channel as ``G * 256 + R`` (BGR order)."""
    if raw.ndim == 3:
        return (raw[:, :, 1].astype(np.uint16) << 8) + raw[:, :, 2].astype(np.uint16)
    if raw.ndim == 2 and raw.dtype == np.uint16:
        return raw
    raise DataFormatError(path, f"expected a 16-bit or 3-channel depth PNG, got {raw.dtype} {raw.shape}")


# --------------------------------------------------------------------------- camera.json

def read_camera_json(path: str | Path) -> tuple[CameraIntrinsics, float]:
    """Intrinsics and ``depth_scale`` (PNG value x depth_scale = mm) from a BOP-style camera.json."""
    path = Path(path)
    data = read_json(path)
    if not isinstance(data, dict):
        raise DataFormatError(path, "expected a JSON object")
    values: dict[str, float] = {}
    for key in ("fx", "fy", "cx", "cy", "width", "height", "depth_scale"):
        value = data.get(key, 1.0 if key == "depth_scale" else None)
        if not isinstance(value, int | float) or isinstance(value, bool) or not np.isfinite(value):
            raise DataFormatError(path, f"expected a number, got {value!r}", field=key)
        values[key] = float(value)
    if values["depth_scale"] <= 0:
        raise DataFormatError(path, "must be positive", field="depth_scale")
    K = [[values["fx"], 0.0, values["cx"]], [0.0, values["fy"], values["cy"]], [0.0, 0.0, 1.0]]
    try:
        camera = CameraIntrinsics(K=K, width=int(values["width"]), height=int(values["height"]))
    except ValueError as exc:
        raise DataFormatError(path, str(exc)) from None
    return camera, values["depth_scale"]


def write_camera_json(root: str | Path, camera: CameraIntrinsics, *, depth_scale: float = 1.0) -> Path:
    """Write ``<root>/camera.json`` (BOP keys) so the reader uses these intrinsics, atomically."""
    data = {"cx": camera.cx, "cy": camera.cy, "depth_scale": float(depth_scale), "fx": camera.fx,
            "fy": camera.fy, "height": int(camera.height), "width": int(camera.width)}
    return atomic_write_json(Path(root) / "camera.json", data)


# --------------------------------------------------------------------------- GT JSON

@dataclass(frozen=True)
class NocsGTFile:
    """A loaded GT JSON: per-image dicts whose arrays are numpy (int32 ids/boxes, float64 otherwise).

    Each image has ``gt_class_ids`` [N], ``gt_RTs`` [N,4,4], ``gt_scales`` [N,3],
    ``gt_handle_visibility`` [N], optionally ``gt_bboxes`` [N,4] (y1, x1, y2, x2), ``gt_inst_ids``
    [N], the ``pred_*`` arrays and ``scene_id``/``im_id``; other keys are kept as they are.
    """

    path: Path
    images: tuple[dict[str, Any], ...]
    subset: str | None = None
    split: str | None = None

    @property
    def n_gt(self) -> int:
        return sum(len(im["gt_class_ids"]) for im in self.images)

    def by_image(self) -> dict[tuple[int, int], dict[str, Any]]:
        """Images keyed by ``(scene_id, im_id)`` (only those that carry both ids)."""
        return {(im["scene_id"], im["im_id"]): im for im in self.images
                if "scene_id" in im and "im_id" in im}


def _field_array(value: Any, path: Path, field: str, tail: tuple[int, ...], integer: bool) -> np.ndarray:
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError):
        raise DataFormatError(path, "not a regular array", field=field) from None
    if arr.size == 0:
        arr = np.zeros((0, *tail))
    if arr.dtype.kind not in "iufb":
        raise DataFormatError(path, f"expected numbers, got {arr.dtype.kind!r}-type values", field=field)
    if arr.ndim != 1 + len(tail) or arr.shape[1:] != tail:
        want = "x".join(["N", *map(str, tail)])
        got = "x".join(map(str, arr.shape)) or "a scalar"
        raise DataFormatError(path, f"expected shape {want}, got {got}", field=field)
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise DataFormatError(path, "contains non-finite values", field=field)
    if integer:
        if not np.all(arr == np.round(arr)):
            raise DataFormatError(path, "expected integers", field=field)
        return arr.astype(np.int32)
    return arr


def _check_id(value: Any, path: Path, field: str) -> int:
    if isinstance(value, np.integer):
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise DataFormatError(path, f"expected a non-negative integer, got {value!r}", field=field)
    return value


def _normalise_image(entry: Any, path: Path, where: str, *, require_ids: bool) -> dict[str, Any]:
    """Validate one per-image dict and return a copy with numpy arrays (errors name the field)."""
    def fname(key: str) -> str:
        return f"{where}.{key}" if where else key

    if not isinstance(entry, Mapping):
        raise DataFormatError(path, f"expected an object, got {type(entry).__name__}", field=where or None)
    out: dict[str, Any] = dict(entry)
    for key in ("scene_id", "im_id"):
        if key in entry:
            out[key] = _check_id(entry[key], path, fname(key))
        elif require_ids:
            raise DataFormatError(path, "missing (needed to place the image in the dataset)",
                                  field=fname(key))
    for fields, required in ((_GT_FIELDS, _REQUIRED_GT), (_PRED_FIELDS, _REQUIRED_PRED)):
        present = [key for key in fields if key in entry]
        if fields is _PRED_FIELDS and not present:
            continue
        for key in required:
            if key not in entry:
                raise DataFormatError(path, "missing", field=fname(key))
        n = None
        for key in present:
            tail, integer = fields[key]
            arr = _field_array(entry[key], path, fname(key), tail, integer)
            if n is not None and len(arr) != n:
                raise DataFormatError(path, f"has {len(arr)} entries, expected {n} like "
                                      f"{fname(required[0])}", field=fname(key))
            n = len(arr)
            out[key] = arr
    for key in ("gt_class_ids", "pred_class_ids"):
        if key in out and len(out[key]) and (out[key].min() < 1 or out[key].max() > len(NOCS_CLASSES)):
            raise DataFormatError(path, f"class ids must be in 1..{len(NOCS_CLASSES)}, got "
                                  f"{sorted(set(out[key].tolist()))}", field=fname(key))
    hv = out["gt_handle_visibility"]
    if len(hv) and not np.all((hv == 0) | (hv == 1)):
        raise DataFormatError(path, "must be 0 or 1", field=fname("gt_handle_visibility"))
    return out


def _check_unique(images: Iterable[dict[str, Any]], path: Path) -> None:
    seen: set[tuple[int, int]] = set()
    for i, im in enumerate(images):
        if "scene_id" in im and "im_id" in im:
            key = (im["scene_id"], im["im_id"])
            if key in seen:
                raise DataFormatError(path, f"duplicate image scene {key[0]} im {key[1]}",
                                      field=f"images[{i}]")
            seen.add(key)


def load_nocs_gt_json(path: str | Path, *, require_ids: bool = True) -> NocsGTFile:
    """Load a ``repro-nocs-gt-v1`` file, or an evaluation input like the golden ``inputs.json``.

    ``require_ids=False`` accepts images without ``scene_id``/``im_id`` (evaluation inputs keep
    ground truth and predictions side by side and need no place in a dataset).
    """
    path = Path(path)
    require_file(path, "NOCS ground truth JSON",
                 "convert the official gts/*.pkl with repro.data.nocs.convert_nocs_gt_pickles")
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataFormatError(path, "expected an object with an 'images' list", field="images")
    fmt = data.get("format")
    if fmt is not None and fmt != GT_FORMAT:
        raise DataFormatError(path, f"expected {GT_FORMAT!r}, got {fmt!r}", field="format")
    names = data.get("synset_names")
    if names is not None and tuple(names) != SYNSET_NAMES:
        raise DataFormatError(path, f"class ids must index {list(SYNSET_NAMES)}, got {names!r}",
                              field="synset_names")
    for key in ("subset", "split"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise DataFormatError(path, f"expected a string, got {data[key]!r}", field=key)
    images = tuple(_normalise_image(e, path, f"images[{i}]", require_ids=require_ids)
                   for i, e in enumerate(data["images"]))
    _check_unique(images, path)
    return NocsGTFile(path=path, images=images, subset=data.get("subset"), split=data.get("split"))


def _gt_document(images: Iterable[dict[str, Any]], subset: str | None, split: str | None,
                 path: Path, **extra: Any) -> dict[str, Any]:
    norm = [_normalise_image(e, path, f"images[{i}]", require_ids=True) for i, e in enumerate(images)]
    _check_unique(norm, path)
    norm.sort(key=lambda im: (im["scene_id"], im["im_id"]))
    return {"format": GT_FORMAT, "subset": subset, "split": split, "synset_names": list(SYNSET_NAMES),
            **extra, "images": norm}


def write_nocs_gt_json(path: str | Path, images: Iterable[Mapping[str, Any]], *, subset: str | None = None,
                       split: str | None = None) -> Path:
    """Validate per-image GT dicts (lists or arrays) and write them, sorted by image, atomically."""
    path = Path(path)
    return atomic_write_json(path, _gt_document(images, subset, split, path), indent=None)


def category_gt_entry(scene_id: int, im_id: int, gts: Sequence[CategoryGT]) -> dict[str, Any]:
    """The GT JSON dict of one image from CategoryGT records (with ``gt_inst_ids`` for exact matching)."""
    entry: dict[str, Any] = {
        "scene_id": int(scene_id), "im_id": int(im_id),
        "gt_class_ids": [int(g.class_id) for g in gts],
        "gt_RTs": [g.RT.tolist() for g in gts],
        "gt_scales": [g.scales.tolist() for g in gts],
        "gt_handle_visibility": [int(bool(g.handle_visible)) for g in gts],
        "gt_inst_ids": [int(g.inst_id) for g in gts],
    }
    if all(g.bbox is not None for g in gts):
        entry["gt_bboxes"] = [list(xywh_to_nocs_box(g.bbox)) for g in gts]
    return entry


# --------------------------------------------------------------------------- pickle conversion

class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the numpy globals NOCS result pickles need."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _PICKLE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed in a NOCS result pickle "
                                     "(pass restricted=False only for a file you trust)")


def _load_pickle(path: Path, restricted: bool) -> Any:
    with path.open("rb") as f:
        try:
            if restricted:
                return _RestrictedUnpickler(f, encoding="latin1").load()
            return pickle.load(f, encoding="latin1")
        except Exception as exc:
            raise DataFormatError(path, f"cannot unpickle: {type(exc).__name__}: {exc}") from None


def _pickle_image_key(path: Path, raw: Mapping[str, Any]) -> tuple[int, int]:
    m = _PICKLE_NAME_RE.fullmatch(path.name)
    if m:
        return _scene_token_to_id(m["scene"]), int(m["im"])
    image_path = raw.get("image_path")
    if isinstance(image_path, str):
        m2 = _IMAGE_PATH_RE.search(image_path.rstrip("/\\"))
        if m2:
            return _scene_token_to_id(m2[1]), int(m2[2])
    raise DataFormatError(path, "cannot tell scene and image: expected a name like "
                          "results_real_test_scene_1_0000.pkl or an image_path like .../scene_1/0000")


def convert_nocs_gt_pickles(src_dir: str | Path, out_path: str | Path, *, subset: str,
                            split: str | None = None, restricted: bool = True) -> Path:
    """Convert the official ``results_*.pkl`` GT (or result) pickles of a folder to the GT JSON.

    ``subset`` is ``real``/``camera`` (the official folder names ``real_test``/``val`` also work);
    the split defaults to the evaluation split. Keeps ``gt_*``, ``pred_*`` (not ``pred_masks``),
    ``image_id`` and ``image_path``. Python 2 pickles are read with ``encoding="latin1"``.
    ``restricted`` limits the globals a pickle may load to numpy's array reconstruction.
    """
    subset, split = _normalise_subset(subset, split)
    src = require_dir(Path(src_dir), "NOCS ground-truth pickle folder",
                      "gts/real_test or gts/val of gts.zip from the NOCS release")
    files = sorted(src.glob("results_*.pkl"))
    if not files:
        raise DatasetNotFoundError(f"NOCS ground-truth pickles not found: no results_*.pkl in {src}")
    logger.warning("Unpickling executes code stored in the file: only convert pickles from a trusted source "
                   "(the official NOCS release). Reading %d files from %s", len(files), src)
    images = []
    dropped: set[str] = set()
    for p in files:
        raw = _load_pickle(p, restricted)
        if not isinstance(raw, Mapping):
            raise DataFormatError(p, f"expected a dict, got {type(raw).__name__}")
        scene_id, im_id = _pickle_image_key(p, raw)
        entry: dict[str, Any] = {"scene_id": scene_id, "im_id": im_id}
        for key, value in raw.items():
            if key in _GT_FIELDS or key in _PRED_FIELDS:
                entry[key] = value
            elif key == "image_id" and isinstance(value, int | np.integer):
                entry[key] = int(value)
            elif key == "image_path" and isinstance(value, str | bytes):
                entry[key] = value.decode("latin1") if isinstance(value, bytes) else value
            else:
                dropped.add(str(key))
        images.append(_normalise_image(entry, p, "", require_ids=True))
    if dropped:
        logger.info("not kept in the GT JSON: %s", ", ".join(sorted(dropped)))
    out = Path(out_path)
    doc = _gt_document(images, subset, split, out, source=str(src))
    atomic_write_json(out, doc, indent=None)
    logger.info("wrote %s: %d images, %d GT objects", out, len(images),
                sum(len(im["gt_class_ids"]) for im in images))
    return out


# --------------------------------------------------------------------------- matching GT to instances

def nocs_box_to_xywh(box: Sequence[float]) -> tuple[int, int, int, int]:
    """NOCS ``(y1, x1, y2, x2)`` (end exclusive) to the project's ``(x, y, w, h)``."""
    y1, x1, y2, x2 = (int(v) for v in box)
    return (x1, y1, x2 - x1, y2 - y1)


def xywh_to_nocs_box(box: Sequence[float]) -> tuple[int, int, int, int]:
    """The project's ``(x, y, w, h)`` to NOCS ``(y1, x1, y2, x2)`` (end exclusive)."""
    x, y, w, h = (round(v) for v in box)
    return (y, x, y + h, x + w)


def mask_bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """``(y1, x1, y2, x2)`` of a boolean mask, end exclusive (NOCS ``extract_bboxes``); None if empty."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return None
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def match_gt_to_instances(gt_class_ids: Sequence[int], meta: Sequence[MetaEntry],
                          mask: np.ndarray | None = None, gt_bboxes: np.ndarray | None = None, *,
                          tol: int = BBOX_MATCH_TOL) -> list[int]:
    """Instance ids (meta.txt / mask) of the GT entries of one image; -1 where none is found.

    The official GT lists follow the NOCS loader: meta instances with class != 0 that appear in
    the mask, by ascending instance id. 1) If those candidates have exactly the GT class
    sequence, they match by position. 2) Otherwise, with a mask and GT boxes, each GT takes the
    first unused candidate of its class whose mask box is within ``tol`` px (sum of absolute
    differences) of the GT box, the rule SPD uses. 3) Anything else stays unmatched (-1).
    """
    present = None if mask is None else set(np.unique(mask).tolist())
    cands = sorted((m for m in meta if m.class_id != 0 and (present is None or m.inst_id in present)),
                   key=lambda m: m.inst_id)
    gt_class_ids = [int(c) for c in gt_class_ids]
    if [m.class_id for m in cands] == gt_class_ids:
        return [m.inst_id for m in cands]
    out = [-1] * len(gt_class_ids)
    if mask is None or gt_bboxes is None or len(gt_bboxes) != len(gt_class_ids):
        return out
    boxes = {m.inst_id: mask_bbox(mask == m.inst_id) for m in cands}
    used: set[int] = set()
    for i, (cls, gt_box) in enumerate(zip(gt_class_ids, np.asarray(gt_bboxes), strict=True)):
        for m in cands:
            box = boxes[m.inst_id]
            if m.class_id == cls and m.inst_id not in used and box is not None \
                    and np.abs(np.subtract(box, gt_box)).sum() <= tol:
                out[i] = m.inst_id
                used.add(m.inst_id)
                break
    return out


# --------------------------------------------------------------------------- writer

def write_nocs_frame(root: str | Path, subset: str, split: str, scene_id: int, im_id: int, *,
                     color: np.ndarray, depth_mm: np.ndarray, mask: np.ndarray, coord: np.ndarray,
                     meta: Sequence[MetaEntry | Sequence[Any]]) -> Path:
    """Write the five files of one image in the official layout, each atomically; returns the prefix.

    ``color`` HxWx3 uint8 RGB, ``depth_mm`` HxW uint16, ``mask`` HxW uint8 (255 = background),
    ``coord`` HxWx3 float in [0, 1], ``meta`` (inst_id, class_id, model_name) or
    (inst_id, class_id, synset_id, model_id) per instance. The colour image is written last, so
    a frame the reader lists (by its colour file) is complete.
    """
    color, depth_mm, mask = np.asarray(color), np.asarray(depth_mm), np.asarray(mask)
    if color.ndim != 3 or color.shape[2] != 3 or color.dtype != np.uint8:
        raise ValueError(f"color must be HxWx3 uint8, got {color.shape} {color.dtype}")
    hw = color.shape[:2]
    if depth_mm.shape != hw or depth_mm.dtype != np.uint16:
        raise ValueError(f"depth_mm must be {hw} uint16, got {depth_mm.shape} {depth_mm.dtype}")
    if mask.shape != hw or mask.dtype != np.uint8:
        raise ValueError(f"mask must be {hw} uint8, got {mask.shape} {mask.dtype}")
    if np.shape(coord)[:2] != hw:
        raise ValueError(f"coord must be {hw}x3, got {np.shape(coord)}")
    entries = [_meta_entry(e) for e in meta]
    ids = [e.inst_id for e in entries]
    if len(set(ids)) != len(ids) or any(not 0 < i < BACKGROUND_ID for i in ids):
        raise ValueError(f"meta instance ids must be unique and in 1..254, got {ids}")
    if any(not 0 <= e.class_id <= len(NOCS_CLASSES) for e in entries):
        raise ValueError(f"meta class ids must be in 0..{len(NOCS_CLASSES)}")
    words = [w for e in entries for w in (e.model_id, e.synset_id) if w is not None]
    if any(not w or any(c.isspace() for c in w) for w in words):
        raise ValueError("model names must be non-empty and contain no whitespace")
    unknown = set(np.unique(mask).tolist()) - set(ids) - {BACKGROUND_ID}
    if unknown:
        raise ValueError(f"mask has instance ids without a meta line: {sorted(unknown)}")
    coord_bgr = encode_coord(coord)
    prefix = nocs_frame_prefix(root, subset, split, scene_id, im_id)
    lines = "".join(f"{e.inst_id} {e.class_id} {e.model_id}\n" if e.synset_id is None
                    else f"{e.inst_id} {e.class_id} {e.synset_id} {e.model_id}\n" for e in entries)
    atomic_write_text(_file(prefix, "meta.txt"), lines)
    atomic_write_image(_file(prefix, "depth.png"), depth_mm)
    atomic_write_image(_file(prefix, "mask.png"), mask)
    atomic_write_image(_file(prefix, "coord.png"), coord_bgr)
    atomic_write_image(_file(prefix, "color.png"), np.ascontiguousarray(color[:, :, ::-1]))
    return prefix


# --------------------------------------------------------------------------- reader

def _find_subset_dir(root: Path, subset: str) -> Path | None:
    for base in (root, root / "data"):
        for name in _SUBSET_DIRS[subset]:
            if (base / name).is_dir():
                return base / name
    return None


class NocsDataset:
    """A split of REAL275 / CAMERA25 in the official layout, as a ``PoseDataset``.

    ``root`` is the release's ``data/`` folder (or its parent). ``split`` defaults to the
    evaluation split (``test`` for real, ``val`` for camera). Ground truth comes from ``gt_path``
    (default ``<root>/gts_json/<subset>_<split>.json``); without that file frames carry
    ``category_gt=None`` and targets come from meta.txt. ``depth_dir`` replaces the depth source
    by a tree ``<depth_dir>/<split>/<scene>/XXXX_composed.png`` (or ``_depth.png``); for CAMERA,
    ``<root>/camera_full_depths`` is used when it has the split. Intrinsics: ``camera.json`` in
    the subset folder or the root, else the published REAL275 / CAMERA25 values.
    """

    format = "nocs"

    def __init__(self, root: str | Path, subset: str = "real", split: str | None = None,
                 gt_path: str | Path | None = None, *, depth_dir: str | Path | None = None,
                 name: str | None = None):
        _check_subset(subset)
        split = split or EVAL_SPLITS[subset]
        hint = _DOWNLOAD_HINT[subset].format(split=split)
        given = Path(root)
        require_dir(given, "NOCS dataset root", hint)
        subset_dir = _find_subset_dir(given, subset)
        if subset_dir is None:
            raise DatasetNotFoundError(f"NOCS {subset} subset not found: expected a directory at "
                                       f"{given / subset} ({hint})")
        self.root: Path = subset_dir.parent
        self.subset = subset
        self.split = split
        self.split_dir = require_dir(subset_dir / split, f"NOCS {subset}/{split} split",
                                     f"official splits: {', '.join(OFFICIAL_SPLITS[subset])}; {hint}")
        suffix = "" if split == EVAL_SPLITS[subset] else f"-{split}"
        self.name: str = name or _DATASET_NAMES[subset] + suffix
        self._scene_dirs = self._find_scenes()
        if not self._scene_dirs:
            pattern = "scene_N" if subset == "real" else "NNNNN"
            raise DatasetNotFoundError(f"NOCS {subset}/{split} split has no scenes: expected {pattern}/ "
                                       f"directories in {self.split_dir} ({hint})")
        self.camera, self.depth_scale, self.camera_source = self._read_camera(subset_dir)
        self.gt_path = Path(gt_path) if gt_path is not None else default_gt_path(self.root, subset, split)
        if gt_path is not None:
            require_file(self.gt_path, "NOCS ground truth JSON")
        self.depth_dir = self._resolve_depth_dir(depth_dir)
        self._images: dict[int, list[int]] = {}
        self._gt: NocsGTFile | None = None

    def __repr__(self) -> str:
        return f"NocsDataset({str(self.root)!r}, subset={self.subset!r}, split={self.split!r})"

    # -- layout
    def _find_scenes(self) -> dict[int, Path]:
        scenes: dict[int, Path] = {}
        for d in self.split_dir.iterdir():
            m = _SCENE_RE[self.subset].fullmatch(d.name)
            if m and d.is_dir():
                sid = int(m[1])
                if sid in scenes:
                    raise DataFormatError(d, f"scene {sid} also at {scenes[sid]}")
                scenes[sid] = d
        return dict(sorted(scenes.items()))

    def _read_camera(self, subset_dir: Path) -> tuple[CameraIntrinsics, float, str]:
        for path in (subset_dir / "camera.json", self.root / "camera.json"):
            if path.is_file():
                camera, scale = read_camera_json(path)
                return camera, scale, str(path)
        return DEFAULT_CAMERAS[self.subset], 1.0, f"{_DATASET_NAMES[self.subset].upper()} default"

    def _resolve_depth_dir(self, depth_dir: str | Path | None) -> Path | None:
        if depth_dir is not None:
            return require_dir(Path(depth_dir) / self.split, "NOCS depth override",
                               "expected <depth_dir>/<split>/<scene>/XXXX_composed.png")
        auto = self.root / "camera_full_depths"
        if self.subset == "camera" and (auto / self.split).is_dir():
            logger.info("using composed CAMERA depth from %s", auto)
            return auto / self.split
        return None

    def scene_ids(self) -> list[int]:
        return list(self._scene_dirs)

    def scene_dir(self, scene_id: int) -> Path:
        scene_id = int(scene_id)
        if scene_id not in self._scene_dirs:
            where = self.split_dir / scene_dir_name(self.subset, scene_id)
            raise DatasetNotFoundError(f"NOCS {self.subset}/{self.split} scene {scene_id} not found: "
                                       f"expected a directory at {where}")
        return self._scene_dirs[scene_id]

    def image_ids(self, scene_id: int) -> list[int]:
        """Image ids of a scene (from its ``XXXX_color.png`` files), sorted."""
        scene_id = int(scene_id)
        if scene_id not in self._images:
            ids = (_COLOR_RE.fullmatch(p.name) for p in self.scene_dir(scene_id).iterdir())
            self._images[scene_id] = sorted(int(m[1]) for m in ids if m)
        return self._images[scene_id]

    def frame_prefix(self, scene_id: int, im_id: int) -> Path:
        return self.scene_dir(scene_id) / f"{int(im_id):04d}"

    def objects(self) -> Mapping[int, ObjectModel]:
        """Category-level data has no per-object CAD models for the methods: always empty."""
        return {}

    # -- per-image files
    def load_color(self, scene_id: int, im_id: int) -> np.ndarray:
        """HxWx3 uint8 RGB."""
        path = _file(self.frame_prefix(scene_id, im_id), "color.png")
        return np.ascontiguousarray(read_image(path, cv2.IMREAD_COLOR)[:, :, ::-1])

    def load_depth(self, scene_id: int, im_id: int) -> np.ndarray:
        """HxW float32 millimetres (0 = no measurement)."""
        if self.depth_dir is None:
            path = _file(self.frame_prefix(scene_id, im_id), "depth.png")
        else:
            base = self.depth_dir / self.scene_dir(scene_id).name / f"{int(im_id):04d}"
            path = _file(base, "composed.png")
            if not path.is_file():
                path = _file(base, "depth.png")
        require_file(path, f"NOCS depth of scene {scene_id} image {im_id}")
        depth = decode_depth(read_image(path), path).astype(np.float32)
        return depth * np.float32(self.depth_scale) if self.depth_scale != 1.0 else depth

    def load_mask(self, scene_id: int, im_id: int) -> np.ndarray:
        """HxW uint8 instance ids (255 = background), read as the NOCS code does (channel 2)."""
        path = require_file(_file(self.frame_prefix(scene_id, im_id), "mask.png"),
                            f"NOCS mask of scene {scene_id} image {im_id}")
        return np.ascontiguousarray(read_image(path, cv2.IMREAD_COLOR)[:, :, 2])

    def load_coord(self, scene_id: int, im_id: int) -> np.ndarray:
        """HxWx3 float32 NOCS map in [0, 1], decoded exactly as the official code does."""
        path = require_file(_file(self.frame_prefix(scene_id, im_id), "coord.png"),
                            f"NOCS coord map of scene {scene_id} image {im_id}")
        return decode_coord(read_image(path, cv2.IMREAD_COLOR))

    def load_meta(self, scene_id: int, im_id: int) -> list[MetaEntry]:
        path = require_file(_file(self.frame_prefix(scene_id, im_id), "meta.txt"),
                            f"NOCS meta.txt of scene {scene_id} image {im_id}")
        return read_meta(path)

    # -- ground truth
    @property
    def has_gt(self) -> bool:
        return self.gt_path.is_file()

    def ground_truth(self) -> NocsGTFile | None:
        """The GT JSON (loaded once and checked against subset/split), or None if there is none."""
        if self._gt is None and self.has_gt:
            gt = load_nocs_gt_json(self.gt_path)
            for key, want in (("subset", self.subset), ("split", self.split)):
                got = getattr(gt, key)
                if got is not None and got != want:
                    raise DataFormatError(self.gt_path, f"ground truth is for {key} {got!r}, "
                                          f"the dataset is {want!r}", field=key)
            self._gt = gt
        return self._gt

    def _category_gt(self, scene_id: int, im_id: int, entry: Mapping[str, Any],
                     load_masks: bool) -> tuple[CategoryGT, ...]:
        prefix = self.frame_prefix(scene_id, im_id)
        meta_path = _file(prefix, "meta.txt")
        meta = read_meta(meta_path) if meta_path.is_file() else []
        mask = None
        inst_ids = entry.get("gt_inst_ids")
        if load_masks or (inst_ids is None and _file(prefix, "mask.png").is_file()):
            mask = self.load_mask(scene_id, im_id)
        if inst_ids is None:
            inst_ids = match_gt_to_instances(entry["gt_class_ids"], meta, mask, entry.get("gt_bboxes"))
            if -1 in inst_ids:
                logger.debug("scene %d image %d: %d GT objects without a matching instance", scene_id, im_id,
                             inst_ids.count(-1))
        by_inst = {m.inst_id: m for m in meta}
        bboxes = entry.get("gt_bboxes")
        out = []
        for i, inst in enumerate(int(v) for v in inst_ids):
            m = by_inst.get(inst)
            out.append(CategoryGT(
                inst_id=inst, class_id=int(entry["gt_class_ids"][i]), RT=entry["gt_RTs"][i],
                scales=entry["gt_scales"][i], handle_visible=bool(entry["gt_handle_visibility"][i]),
                model_id=m.model_key if m else "",
                bbox=None if bboxes is None else nocs_box_to_xywh(bboxes[i]),
                mask=(mask == inst) if load_masks and mask is not None and inst >= 0 else None))
        return tuple(out)

    def iter_frames(self, scene_ids: Sequence[int] | None = None, *, with_gt: bool = True,
                    load_masks: bool = False) -> Iterator[tuple[Frame, Targets]]:
        """Yield ``(frame, targets)`` scene by scene, image ids ascending.

        Targets are the class ids of the image's GT (the meta.txt classes != 0 when the image has
        no GT entry), whether or not ``with_gt``. ``frame.category_gt`` is None when the image has
        no GT entry (or ``with_gt`` is False); masks are attached when ``load_masks``.
        """
        scenes = self.scene_ids() if scene_ids is None else [int(s) for s in scene_ids]
        for sid in scenes:
            self.scene_dir(sid)
        gt = self.ground_truth()
        if with_gt and gt is None:
            logger.warning("no NOCS ground truth at %s: frames carry no category_gt (convert the official "
                           "pickles with convert_nocs_gt_pickles)", self.gt_path)
        by_image = gt.by_image() if gt is not None else {}
        for sid in scenes:
            for im in self.image_ids(sid):
                entry = by_image.get((sid, im))
                if entry is not None:
                    classes = sorted(set(entry["gt_class_ids"].tolist()))
                else:
                    classes = sorted({m.class_id for m in self.load_meta(sid, im) if m.class_id != 0})
                category_gt = None
                if with_gt and entry is not None:
                    category_gt = self._category_gt(sid, im, entry, load_masks)
                rgb = self.load_color(sid, im)
                try:
                    frame = Frame(rgb=rgb, camera=self.camera, scene_id=sid, im_id=im,
                                  depth=self.load_depth(sid, im), dataset=self.name, category_gt=category_gt)
                except ValueError as exc:
                    raise DataFormatError(_file(self.frame_prefix(sid, im), "color.png"),
                                          f"{exc} (camera from {self.camera_source})") from None
                yield frame, Targets(categories=tuple(classes))

    def info(self) -> dict[str, Any]:
        """JSON-able summary: counts of scenes, images and GT objects per class, and the camera."""
        present = {(sid, im) for sid in self.scene_ids() for im in self.image_ids(sid)}
        gt = self.ground_truth()
        per_class = dict.fromkeys(NOCS_CLASSES, 0)
        n_gt = n_targets = n_with_gt = 0
        for key, entry in (gt.by_image() if gt is not None else {}).items():
            if key not in present:
                continue
            ids = entry["gt_class_ids"].tolist()
            n_with_gt += 1
            n_gt += len(ids)
            n_targets += len(set(ids))
            for c in ids:
                per_class[NOCS_CLASSES[c - 1]] += 1
        return {
            "format": self.format, "name": self.name, "root": str(self.root), "subset": self.subset,
            "split": self.split, "n_scenes": len(self._scene_dirs), "n_images": len(present),
            "n_images_with_gt": n_with_gt, "n_gt": n_gt, "n_targets": n_targets,
            "per_class": per_class, "classes": [c for c in NOCS_CLASSES if per_class[c]],
            "has_gt": gt is not None, "gt_path": str(self.gt_path) if gt is not None else None,
            "camera": {"fx": self.camera.fx, "fy": self.camera.fy, "cx": self.camera.cx, "cy": self.camera.cy,
                       "width": self.camera.width, "height": self.camera.height,
                       "depth_scale": self.depth_scale, "source": self.camera_source},
            "depth_dir": str(self.depth_dir) if self.depth_dir is not None else None,
        }
