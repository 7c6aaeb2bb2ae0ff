"""Reader and writer for the standard BOP dataset layout (lm, lmo, ycbv, tless, tudl, hb, icbin,
itodd and the BOP24 datasets).

Layout (``root`` = one dataset, e.g. ``$BOP_PATH/lmo``)::

    camera[_TYPE].json                 nominal intrinsics, depth_scale (optional)
    models[_eval|_cad]/obj_XXXXXX.ply  meshes in mm (+ models_info.json)
    test_targets_bop19.json            [{scene_id, im_id, obj_id, inst_count}]
    test_targets_bop24.json            [{scene_id, im_id}] (all objects in the image)
    SPLIT[_TYPE]/XXXXXX/               one folder per scene (e.g. test, test_primesense, train_pbr)
        scene_camera[_S].json  scene_gt[_S].json  scene_gt_info[_S].json
        rgb[_S]/ or gray[_S]/  depth[_S]/  mask[_S]/  mask_visib[_S]/   (_S = sensor, BOP24 multi-sensor)

Scene JSON files are read once per scene; images are read only when a frame is produced.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from repro.data.base import require_dir, require_file
from repro.data.ply import PlyMesh, load_ply, save_ply
from repro.errors import DataFormatError, DatasetNotFoundError
from repro.fileio import atomic_write_image, atomic_write_text, dumps_json, read_image, read_json
from repro.types import (
    CameraIntrinsics,
    ContinuousSymmetry,
    Frame,
    GTInstance,
    InstanceTarget,
    ObjectModel,
    Targets,
)

log = logging.getLogger(__name__)

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
TARGET_FILES = ("test_targets_bop19.json", "test_targets_bop24.json")
SEQUENCE_SIDECAR = "scene_sequence.json"
"""Per-scene video sidecar (timestamps, drop protocol) of the synthetic ``video`` split."""


# --------------------------------------------------------------------------- models


def parse_models_info(path: Path) -> dict[int, dict[str, Any]]:
    """Read ``models_info.json`` and validate the fields the harness uses (diameter, symmetries)."""
    raw = read_json(path)
    if not isinstance(raw, dict):
        raise DataFormatError(path, "expected an object mapping obj_id -> info")
    out: dict[int, dict[str, Any]] = {}
    for key, info in raw.items():
        try:
            obj_id = int(key)
        except ValueError:
            raise DataFormatError(path, f"object key {key!r} is not an integer id") from None
        if not isinstance(info, dict):
            raise DataFormatError(path, "expected an object", field=key)
        d = info.get("diameter")
        if not isinstance(d, int | float) or not np.isfinite(d) or d <= 0:
            raise DataFormatError(path, f"diameter must be a positive number, got {d!r}", field=f"{key}.diameter")
        disc = []
        for i, s in enumerate(info.get("symmetries_discrete", [])):
            arr = np.asarray(s, dtype=np.float64)
            if arr.size != 16 or not np.all(np.isfinite(arr)):
                raise DataFormatError(path, "expected 16 finite numbers (a 4x4 matrix)",
                                      field=f"{key}.symmetries_discrete[{i}]")
            disc.append(arr.reshape(4, 4))
        cont = []
        for i, s in enumerate(info.get("symmetries_continuous", [])):
            try:
                axis = np.asarray(s["axis"], dtype=np.float64)
                offset = np.asarray(s.get("offset", [0, 0, 0]), dtype=np.float64)
                cont.append(ContinuousSymmetry(axis=axis / np.linalg.norm(axis), offset=offset))
            except (KeyError, TypeError, ValueError) as exc:
                raise DataFormatError(path, f"expected {{axis: [3], offset: [3]}} ({exc})",
                                      field=f"{key}.symmetries_continuous[{i}]") from None
        out[obj_id] = {**info, "diameter": float(d), "symmetries_discrete": disc, "symmetries_continuous": cont}
    return out


def load_object_model(ply_path: Path, obj_id: int, info: Mapping[str, Any], *, load_texture: bool = True,
                      name: str = "", description: str = "") -> ObjectModel:
    """Build an ``ObjectModel`` from a PLY file and its ``models_info`` entry."""
    mesh = load_ply(ply_path)
    texture = None
    if load_texture and mesh.texture_file:
        tex_path = ply_path.parent / mesh.texture_file
        if tex_path.is_file():
            texture = read_image(tex_path)[:, :, :3][:, :, ::-1]
        else:
            log.warning("texture %s named in %s is missing; using vertex colours", tex_path, ply_path)
    return ObjectModel(obj_id=obj_id, vertices=mesh.vertices, faces=mesh.faces, diameter=info["diameter"],
                       normals=mesh.normals, colors=mesh.colors, uv=mesh.uv if texture is not None else None,
                       texture=texture, symmetries_discrete=tuple(info["symmetries_discrete"]),
                       symmetries_continuous=tuple(info["symmetries_continuous"]), name=name or info.get("name", ""),
                       description=description or info.get("description", ""), path=str(ply_path))


# --------------------------------------------------------------------------- reader


def _int_keys(path: Path, raw: Any) -> dict[int, Any]:
    if not isinstance(raw, dict):
        raise DataFormatError(path, "expected an object keyed by image id")
    try:
        return {int(k): v for k, v in raw.items()}
    except ValueError:
        raise DataFormatError(path, "image ids (keys) must be integers") from None


def _mat(path: Path, value: Any, n: int, fld: str) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64) if isinstance(value, list) else None
    if arr is None or arr.size != n or not np.all(np.isfinite(arr)):
        raise DataFormatError(path, f"expected {n} finite numbers, got {value!r}", field=fld)
    return arr


@dataclass
class _Scene:
    """Parsed JSON of one scene: camera, GT poses and GT info per image."""

    scene_id: int
    path: Path
    camera: dict[int, dict[str, Any]]
    gt: dict[int, list[dict[str, Any]]]
    gt_info: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    image_size: tuple[int, int] | None = None

    @property
    def im_ids(self) -> list[int]:
        return sorted(self.camera)


@dataclass
class BopDataset:
    """A BOP dataset split on disk.

    ``split`` is the split folder name (``test``, ``test_primesense``, ``train_pbr``, ``val``);
    ``sensor`` selects the BOP24 multi-sensor file suffix (``scene_camera_{sensor}.json``...);
    ``targets`` is a targets file name in the dataset root, ``"auto"`` (bop19, then bop24, else
    every GT object in every image) or ``None`` (every GT object).
    ``video`` marks the frames as temporally adjacent video frames (``Frame.video``): ``None``
    detects it per scene (a ``scene_sequence.json`` sidecar, as the synthetic ``video`` split has),
    True declares a real video split (e.g. YCB-V test scenes), False declares independent images.
    """

    root: Path
    split: str = "test"
    sensor: str | None = None
    models_dir: str | None = None
    targets: str | None = "auto"
    name: str = ""
    format: str = "bop"
    video: bool | None = None

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        require_dir(self.root, "BOP dataset root",
                    "point dataset_dir at one dataset folder, e.g. $BOP_PATH/lmo, with models/ and test/ inside")
        if not self.name:
            self.name = self.root.name
        self.split_dir = self.root / self.split
        if not self.split_dir.is_dir():
            have = sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("models"))
            raise DatasetNotFoundError(f"BOP split {self.split!r} not found: expected a directory at {self.split_dir}"
                                       f" (splits present: {', '.join(have) or 'none'})")
        self._scenes: dict[int, _Scene] = {}

    # -- layout helpers
    def _sfx(self, name: str) -> str:
        return f"{name}_{self.sensor}" if self.sensor else name

    @cached_property
    def _scene_dirs(self) -> dict[int, Path]:
        dirs = {int(p.name): p for p in self.split_dir.iterdir() if p.is_dir() and p.name.isdigit()}
        if not dirs:
            raise DatasetNotFoundError(f"no scene folders (six-digit names) in {self.split_dir}")
        return dict(sorted(dirs.items()))

    def scene_ids(self) -> list[int]:
        return list(self._scene_dirs)

    @cached_property
    def models_path(self) -> Path:
        names = [self.models_dir] if self.models_dir else ["models", "models_eval", "models_cad"]
        for n in names:
            if (self.root / n / "models_info.json").is_file():
                return self.root / n
        raise DatasetNotFoundError(f"object models not found: expected {self.root / names[0] / 'models_info.json'}"
                                   f" and obj_XXXXXX.ply files beside it")

    @cached_property
    def models_info(self) -> dict[int, dict[str, Any]]:
        return parse_models_info(self.models_path / "models_info.json")

    def object_model(self, obj_id: int) -> ObjectModel:
        info = self.models_info.get(obj_id)
        if info is None:
            raise KeyError(f"object {obj_id} is not in {self.models_path / 'models_info.json'}")
        ply = require_file(self.models_path / f"obj_{obj_id:06d}.ply", f"model of object {obj_id}")
        return load_object_model(ply, obj_id, info)

    def objects(self) -> dict[int, ObjectModel]:
        """Every object model of the dataset (loaded once, cached on the reader)."""
        if not hasattr(self, "_objects"):
            self._objects = {i: self.object_model(i) for i in sorted(self.models_info)}
        return self._objects

    @cached_property
    def obj_ids(self) -> list[int]:
        try:
            return sorted(self.models_info)
        except DatasetNotFoundError:
            return sorted({g["obj_id"] for s in self.scene_ids() for gts in self.scene(s).gt.values() for g in gts})

    @cached_property
    def default_camera(self) -> dict[str, Any] | None:
        for p in [self.root / "camera.json", *sorted(self.root.glob("camera_*.json"))]:
            if p.is_file():
                return read_json(p)
        return None

    def scene(self, scene_id: int) -> _Scene:
        """Parse (once) and return the JSON annotations of a scene."""
        if scene_id not in self._scenes:
            d = self._scene_dirs.get(scene_id)
            if d is None:
                raise KeyError(f"scene {scene_id} not in {self.split_dir}")
            cam_p = require_file(d / f"{self._sfx('scene_camera')}.json", "scene camera file")
            camera = _int_keys(cam_p, read_json(cam_p))
            gt_p, info_p = d / f"{self._sfx('scene_gt')}.json", d / f"{self._sfx('scene_gt_info')}.json"
            gt = _int_keys(gt_p, read_json(gt_p)) if gt_p.is_file() else {}
            info = _int_keys(info_p, read_json(info_p)) if info_p.is_file() else {}
            for im_id, gts in gt.items():
                if im_id in info and len(info[im_id]) != len(gts):
                    raise DataFormatError(info_p, f"{len(info[im_id])} entries but scene_gt has {len(gts)}",
                                          field=str(im_id))
            self._scenes[scene_id] = _Scene(scene_id, d, camera, gt, info)
        return self._scenes[scene_id]

    # -- targets
    @cached_property
    def targets_path(self) -> Path | None:
        if self.targets is None:
            return None
        if self.targets != "auto":
            return require_file(self.root / self.targets, "targets file")
        if not self.split.startswith("test"):
            return None
        return next((self.root / n for n in TARGET_FILES if (self.root / n).is_file()), None)

    @cached_property
    def target_map(self) -> dict[tuple[int, int], Targets]:
        """(scene_id, im_id) -> Targets for every image with targets."""
        path = self.targets_path
        if path is None:
            return self._targets_from_gt()
        raw = read_json(path)
        if not isinstance(raw, list):
            raise DataFormatError(path, "expected a list of targets")
        per_image: dict[tuple[int, int], list[InstanceTarget]] = {}
        open_set: set[tuple[int, int]] = set()
        for i, t in enumerate(raw):
            try:
                key = (int(t["scene_id"]), int(t["im_id"]))
                if "obj_id" in t:
                    per_image.setdefault(key, []).append(InstanceTarget(int(t["obj_id"]), int(t.get("inst_count", 1))))
                else:
                    open_set.add(key)
            except (KeyError, TypeError, ValueError) as exc:
                raise DataFormatError(path, f"bad target entry {t!r} ({exc})", field=f"[{i}]") from None
        out = {k: Targets(instances=tuple(v)) for k, v in per_image.items()}
        for k in open_set - set(out):
            out[k] = Targets(any_object=True)
        return out

    def _targets_from_gt(self) -> dict[tuple[int, int], Targets]:
        out = {}
        for sid in self.scene_ids():
            for im_id, gts in self.scene(sid).gt.items():
                counts: dict[int, int] = {}
                for g in gts:
                    counts[int(g["obj_id"])] = counts.get(int(g["obj_id"]), 0) + 1
                out[(sid, im_id)] = Targets(instances=tuple(InstanceTarget(o, n) for o, n in sorted(counts.items())))
        return out

    def targets_for(self, scene_id: int, im_id: int) -> Targets:
        return self.target_map.get((scene_id, im_id), Targets())

    # -- frames
    def is_video(self, scene_id: int) -> bool:
        """Whether the frames of a scene are video frames (the ``video`` option, else the sidecar)."""
        if self.video is not None:
            return bool(self.video)
        return (self.scene(scene_id).path / SEQUENCE_SIDECAR).is_file()

    def _image_path(self, scene: _Scene, kind: str, im_id: int) -> Path | None:
        folder = scene.path / self._sfx(kind)
        for ext in IMAGE_EXTS:
            p = folder / f"{im_id:06d}{ext}"
            if p.is_file():
                return p
        return None

    def camera(self, scene_id: int, im_id: int) -> tuple[CameraIntrinsics, float]:
        """Intrinsics of an image and its depth scale (depth png value x scale = mm)."""
        scene = self.scene(scene_id)
        path = scene.path / f"{self._sfx('scene_camera')}.json"
        entry = scene.camera.get(im_id)
        if entry is None:
            raise KeyError(f"image {im_id} not in {path}")
        K = _mat(path, entry.get("cam_K"), 9, f"{im_id}.cam_K").reshape(3, 3)
        w, h = self._image_size(scene)
        dc = self.default_camera or {}
        return CameraIntrinsics(K=K, width=w, height=h), float(entry.get("depth_scale", dc.get("depth_scale", 1.0)))

    def _image_size(self, scene: _Scene) -> tuple[int, int]:
        """(width, height) of a scene's images: read from its first image once (splits such as
        onboarding views may differ from camera.json), else camera.json's."""
        if scene.image_size is None:
            img = next((p for i in scene.im_ids[:1] for p in (self._image_path(scene, "rgb", i),
                                                              self._image_path(scene, "gray", i)) if p), None)
            if img is not None:
                h, w = read_image(img).shape[:2]
            else:
                dc = self.default_camera or {}
                if "width" not in dc or "height" not in dc:
                    raise DatasetNotFoundError(f"no rgb/gray images in {scene.path} and no width/height in "
                                               f"{self.root / 'camera.json'}")
                w, h = dc["width"], dc["height"]
            scene.image_size = (int(w), int(h))
        return scene.image_size

    def gt_instances(self, scene_id: int, im_id: int, *, load_masks: bool = False) -> tuple[GTInstance, ...]:
        scene = self.scene(scene_id)
        gt_path = scene.path / f"{self._sfx('scene_gt')}.json"
        infos = scene.gt_info.get(im_id, [])
        out = []
        for gt_id, g in enumerate(scene.gt.get(im_id, [])):
            where = f"{im_id}[{gt_id}]"
            try:
                obj_id = int(g["obj_id"])
            except (KeyError, TypeError, ValueError):
                raise DataFormatError(gt_path, "missing or non-integer obj_id", field=where) from None
            R = _mat(gt_path, g.get("cam_R_m2c"), 9, f"{where}.cam_R_m2c").reshape(3, 3)
            t = _mat(gt_path, g.get("cam_t_m2c"), 3, f"{where}.cam_t_m2c")
            info = infos[gt_id] if gt_id < len(infos) else {}
            mask = mask_visib = None
            if load_masks:
                mask, mask_visib = (self._mask(scene, kind, im_id, gt_id) for kind in ("mask", "mask_visib"))
            out.append(GTInstance(
                gt_id=gt_id, obj_id=obj_id, R=R, t=t, visib_fract=float(info.get("visib_fract", 1.0)),
                bbox_obj=tuple(info["bbox_obj"]) if "bbox_obj" in info else None,
                bbox_visib=tuple(info["bbox_visib"]) if "bbox_visib" in info else None,
                px_count_all=info.get("px_count_all"), px_count_visib=info.get("px_count_visib"),
                mask=mask, mask_visib=mask_visib))
        return tuple(out)

    def _mask(self, scene: _Scene, kind: str, im_id: int, gt_id: int) -> np.ndarray | None:
        p = scene.path / self._sfx(kind) / f"{im_id:06d}_{gt_id:06d}.png"
        return read_image(p) > 0 if p.is_file() else None

    def load_frame(self, scene_id: int, im_id: int, *, with_gt: bool = True, load_masks: bool = False) -> Frame:
        scene = self.scene(scene_id)
        camera, depth_scale = self.camera(scene_id, im_id)
        rgb_p = self._image_path(scene, "rgb", im_id) or self._image_path(scene, "gray", im_id)
        if rgb_p is None:
            raise DatasetNotFoundError(f"image {im_id}: no rgb/ or gray/ file {im_id:06d}.* in {scene.path}")
        img = read_image(rgb_p)
        if img.dtype != np.uint8:
            img = np.clip(img / (256.0 if img.dtype == np.uint16 else 1.0), 0, 255).astype(np.uint8)
        rgb = np.repeat(img[:, :, None], 3, axis=2) if img.ndim == 2 else np.ascontiguousarray(img[:, :, 2::-1])
        depth_p = self._image_path(scene, "depth", im_id)
        depth = read_image(depth_p).astype(np.float32) * np.float32(depth_scale) if depth_p else None
        return Frame(rgb=rgb, camera=camera, scene_id=scene_id, im_id=im_id, depth=depth,
                     sequence_id=scene_id, sequence_index=scene.im_ids.index(im_id), dataset=self.name,
                     video=self.is_video(scene_id),
                     gt=self.gt_instances(scene_id, im_id, load_masks=load_masks) if with_gt else None)

    def iter_frames(self, scene_ids: Sequence[int] | None = None, *, with_gt: bool = True,
                    load_masks: bool = False, only_targets: bool = False) -> Iterator[tuple[Frame, Targets]]:
        """Yield (frame, targets) scene by scene in image-id order; ``only_targets`` skips images
        without targets (what BOP evaluates)."""
        for sid in scene_ids if scene_ids is not None else self.scene_ids():
            for im_id in self.scene(sid).im_ids:
                targets = self.targets_for(sid, im_id)
                if only_targets and not targets.instances and not targets.any_object:
                    continue
                yield self.load_frame(sid, im_id, with_gt=with_gt, load_masks=load_masks), targets

    def image_keys(self) -> list[tuple[int, int]]:
        return [(s, i) for s in self.scene_ids() for i in self.scene(s).im_ids]

    def info(self) -> dict[str, Any]:
        """Summary (the ``repro data info`` JSON)."""
        keys = self.image_keys()
        n_gt = sum(len(self.scene(s).gt.get(i, [])) for s, i in keys)
        tmap = self.target_map
        return {
            "format": "bop", "name": self.name, "root": str(self.root), "split": self.split, "sensor": self.sensor,
            "n_scenes": len(self.scene_ids()), "n_images": len(keys), "n_gt": n_gt,
            "n_targets": sum(len(t.instances) for t in tmap.values()),
            "n_target_instances": sum(t.n_instances for t in tmap.values()),
            "n_target_images": len(tmap),
            "targets_file": self.targets_path.name if self.targets_path else None,
            "obj_ids": self.obj_ids, "scene_ids": self.scene_ids(),
        }


# --------------------------------------------------------------------------- writer


def dumps_bop_json(data: Mapping[Any, Any] | list) -> str:
    """JSON in the BOP style: one entry per line, keys as strings, full float precision."""
    import json

    if isinstance(data, list):
        return "[\n" + ",\n".join("  " + json.dumps(v, sort_keys=True) for v in data) + "\n]\n"
    items = [f'  "{k}": {json.dumps(v, sort_keys=True)}' for k, v in data.items()]
    return "{\n" + ",\n".join(items) + "\n}\n"


def mask_to_uncompressed_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO uncompressed RLE of a binary mask (column-major run lengths starting with zeros), the
    form bop_toolkit's ``calc_gt_coco.py`` stores in ``scene_gt_coco.json``."""
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    change = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0, *counts]
    return {"counts": counts, "size": list(mask.shape)}


def coco_gt_scene(images: Sequence[BopImage], obj_ids: Sequence[int], name: str,
                  modal: bool) -> dict[str, Any]:
    """``scene_gt_coco[_modal].json`` content as bop_toolkit's ``calc_gt_coco.py`` writes it: one
    annotation per GT with visible pixels (visible-mask RLE, area = visible pixels, box = bbox_obj
    or bbox_visib with width/height + 1 clipped to the image, ``ignore`` when visib_fract < 0.1), for every annotated
    image (the toolkit's ``use_all_gt``; evaluation selects the target images itself)."""
    cats = [{"id": int(o), "name": str(o), "supercategory": name} for o in obj_ids]
    out: dict[str, Any] = {"info": {"description": f"{name} scene GT (COCO)", "url": "", "version": "0.1.0",
                                    "year": 0, "contributor": "", "date_created": ""},
                           "licenses": [], "categories": cats, "images": [], "annotations": []}
    ann_id = 1
    for im in images:
        h, w = im.rgb.shape[:2]
        out["images"].append({"id": im.im_id, "file_name": f"rgb/{im.im_id:06d}{im.rgb_ext}", "width": w,
                              "height": h, "license": 1, "coco_url": "", "flickr_url": "", "date_captured": ""})
        for g, info, m in zip(im.gt, im.gt_info or (), im.masks_visib or (), strict=True):
            if int(info.get("px_count_visib", 0)) == 0:
                continue
            x, y, bw, bh = (int(v) for v in info["bbox_visib" if modal else "bbox_obj"])
            x1, y1, x2, y2 = max(x, 0), max(y, 0), min(x + bw + 1, w), min(y + bh + 1, h)
            out["annotations"].append({
                "id": ann_id, "image_id": im.im_id, "category_id": g.obj_id, "iscrowd": 0,
                "area": int(np.count_nonzero(m)), "bbox": [x1, y1, x2 - x1, y2 - y1],
                "segmentation": mask_to_uncompressed_rle(m), "width": w, "height": h,
                "ignore": bool(info["visib_fract"] < 0.1)})
            ann_id += 1
    return out


def _to_list(x: Any) -> Any:
    return np.asarray(x, dtype=np.float64).ravel().tolist()


@dataclass
class BopImage:
    """Everything written for one image: pixels, camera, GT and per-GT masks/infos."""

    im_id: int
    rgb: np.ndarray
    K: np.ndarray
    gt: Sequence[GTInstance] = ()
    depth_mm: np.ndarray | None = None
    depth_scale: float = 0.1
    cam_R_w2c: np.ndarray | None = None
    cam_t_w2c: np.ndarray | None = None
    masks: Sequence[np.ndarray] | None = None
    masks_visib: Sequence[np.ndarray] | None = None
    gt_info: Sequence[Mapping[str, Any]] | None = None
    rgb_ext: str = ".png"


class BopWriter:
    """Writes a dataset in the BOP layout; every file is written atomically. ``name`` (default: the
    folder name) is the dataset name recorded in the files (COCO supercategory)."""

    def __init__(self, root: str | Path, name: str | None = None) -> None:
        self.root = Path(root)
        self.name = name or self.root.name
        self.root.mkdir(parents=True, exist_ok=True)
        self.obj_ids: list[int] = []

    def write_models(self, models: Sequence[ObjectModel], *, dirs: Sequence[str] = ("models", "models_eval"),
                     extra_info: Mapping[int, Mapping[str, Any]] | None = None) -> None:
        """PLY files and models_info.json (bounding box from the vertices, as calc_model_info does)."""
        info: dict[str, Any] = {}
        self.obj_ids = sorted(m.obj_id for m in models)
        for m in models:
            lo, size = m.vertices.min(axis=0), m.vertices.max(axis=0) - m.vertices.min(axis=0)
            entry: dict[str, Any] = {"diameter": m.diameter, "min_x": lo[0], "min_y": lo[1], "min_z": lo[2],
                                     "size_x": size[0], "size_y": size[1], "size_z": size[2]}
            if m.symmetries_discrete:
                entry["symmetries_discrete"] = [_to_list(s) for s in m.symmetries_discrete]
            if m.symmetries_continuous:
                entry["symmetries_continuous"] = [{"axis": _to_list(c.axis), "offset": _to_list(c.offset)}
                                                  for c in m.symmetries_continuous]
            entry.update((extra_info or {}).get(m.obj_id, {}))
            info[str(m.obj_id)] = {k: (float(v) if isinstance(v, np.floating) else v) for k, v in entry.items()}
        for d in dirs:
            for m in models:
                texture_file = None
                if m.texture is not None and m.uv is not None:
                    texture_file = f"obj_{m.obj_id:06d}.png"
                    atomic_write_image(self.root / d / texture_file, np.ascontiguousarray(m.texture[:, :, ::-1]))
                save_ply(self.root / d / f"obj_{m.obj_id:06d}.ply",
                         PlyMesh(m.vertices, m.faces, m.normals, m.colors, m.uv if texture_file else None,
                                 texture_file), comment=m.name or "")
            atomic_write_text(self.root / d / "models_info.json", dumps_bop_json(info))

    def write_camera(self, camera: CameraIntrinsics, depth_scale: float = 0.1) -> None:
        K = camera.K
        atomic_write_text(self.root / "camera.json", dumps_bop_json({
            "cx": K[0, 2], "cy": K[1, 2], "depth_scale": depth_scale, "fx": K[0, 0], "fy": K[1, 1],
            "height": camera.height, "width": camera.width}))

    def write_scene(self, split: str, scene_id: int, images: Sequence[BopImage]) -> Path:
        """Images, depth, masks and the three scene JSON files of one scene."""
        d = self.root / split / f"{scene_id:06d}"
        scene_camera, scene_gt, scene_gt_info = {}, {}, {}
        for im in images:
            atomic_write_image(d / "rgb" / f"{im.im_id:06d}{im.rgb_ext}", np.ascontiguousarray(im.rgb[:, :, ::-1]))
            if im.depth_mm is not None:
                depth = np.round(np.asarray(im.depth_mm, np.float64) / im.depth_scale)
                if depth.max(initial=0) > np.iinfo(np.uint16).max:
                    raise ValueError(f"depth of image {im.im_id} overflows uint16 at depth_scale {im.depth_scale}")
                atomic_write_image(d / "depth" / f"{im.im_id:06d}.png", depth.astype(np.uint16))
            cam: dict[str, Any] = {"cam_K": _to_list(im.K), "depth_scale": im.depth_scale}
            if im.cam_R_w2c is not None and im.cam_t_w2c is not None:
                cam.update(cam_R_w2c=_to_list(im.cam_R_w2c), cam_t_w2c=_to_list(im.cam_t_w2c))
            scene_camera[str(im.im_id)] = cam
            scene_gt[str(im.im_id)] = [{"cam_R_m2c": _to_list(g.R), "cam_t_m2c": _to_list(g.t), "obj_id": g.obj_id}
                                       for g in im.gt]
            if im.gt_info is not None:
                scene_gt_info[str(im.im_id)] = [dict(i) for i in im.gt_info]
            for kind, masks in (("mask", im.masks), ("mask_visib", im.masks_visib)):
                for gt_id, m in enumerate(masks or ()):
                    atomic_write_image(d / kind / f"{im.im_id:06d}_{gt_id:06d}.png", np.asarray(m, np.uint8) * 255)
        atomic_write_text(d / "scene_camera.json", dumps_bop_json(scene_camera))
        atomic_write_text(d / "scene_gt.json", dumps_bop_json(scene_gt))
        if scene_gt_info:
            atomic_write_text(d / "scene_gt_info.json", dumps_bop_json(scene_gt_info))
        coco_keys = {"bbox_obj", "bbox_visib", "visib_fract", "px_count_visib"}
        if images and all(im.masks_visib is not None and im.gt_info is not None
                          and all(coco_keys <= set(i) for i in im.gt_info) for im in images):
            obj_ids = self.obj_ids or sorted({g.obj_id for im in images for g in im.gt})
            for modal, fname in ((False, "scene_gt_coco.json"), (True, "scene_gt_coco_modal.json")):
                coco = coco_gt_scene(images, obj_ids, self.name, modal)
                atomic_write_text(d / fname, dumps_json(coco, indent=None))
        return d

    def write_targets(self, targets: Mapping[tuple[int, int], Targets],
                      filename: str = "test_targets_bop19.json") -> Path:
        rows = [{"im_id": im, "inst_count": t.inst_count, "obj_id": t.obj_id, "scene_id": s}
                for (s, im), tg in sorted(targets.items()) for t in tg.instances]
        return atomic_write_text(self.root / filename, dumps_bop_json(rows))
