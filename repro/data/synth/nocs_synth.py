"""Synthetic category-level dataset in the official NOCS layout (REAL275-like), rendered offline.

Six categories (class ids 1..6 = bottle, bowl, camera, can, laptop, mug) are built procedurally
with intra-class variation of shape and size at real scale (metres), arranged on a textured table
inside a textured room, and filmed by a camera that moves smoothly around the static arrangement
(one video sequence per scene folder), with REAL275 intrinsics.

Conventions (checked against the NOCS evaluation, ``../shared/golden/nocs/README.md``):

* Canonical object frame (NOCS): y up; the object is centred at the centre of its tight
  axis-aligned bounding box. bottle, bowl and can are surfaces of revolution about the y axis
  through the origin; the mug body is revolved about an axis parallel to y (offset along -x,
  because the bbox centre moves towards the handle) and the handle points along +x. The camera's
  lens points along +z (viewfinder on top, +y). The laptop's hinge is at -z, the keyboard and the
  screen face +z (the user sits at +z).
* NOCS normalisation: ``s`` = diagonal of the tight bbox in metres; a model point ``x`` (metres,
  canonical frame) has NOCS coordinate ``x / s + 0.5``, so the object lies inside the unit cube
  centred at 0.5. ``scales`` (``gt_scales``) = bbox size / ``s``, the NOCS-space box extents
  (``norm(scales) == 1``).
* Pose: ``RT = [[s * R, t], [0, 0, 0, 1]]`` (``gt_RTs``), ``R`` canonical-to-camera rotation,
  ``t`` the bbox centre in the OpenCV camera frame (metres): a camera point is
  ``s * R @ (nocs - 0.5) + t``, exactly what the NOCS evaluation assumes (``get_3d_bbox(scales)``
  transformed by ``RT``; symmetric classes rotated about the object's own y axis).
* Mug handle visibility (``gt_handle_visibility``): with the handle's triangles known, the handle
  counts as visible (1) when its pixels in the final image (self-occlusion by the body and
  occlusion by other objects included) number at least ``handle_min_pixels`` and at least
  ``handle_min_fraction`` of the pixels of the handle rendered alone at the same pose; otherwise 0
  (e.g. a handle hidden behind the body or cut off by the image border). Non-mugs always get 1.
* Pixel sampling: everything is rendered with the OpenCV convention (``sample_offset=0``: pixel
  ``(u, v)`` samples the image point ``(u, v)``), not with bop_toolkit's
  ``repro.render.BOP_SAMPLE_OFFSET`` that the synthetic BOP data follows; the NOCS evaluation has
  no renderer-based metric, so nothing re-renders these images and must match them.
* Camera path: ``repro.render.viewpoints.look_at`` with world z up and a small roll (radians).

Layout (``<out>/``, read by ``repro.data.nocs.NocsDataset``)::

    real/test/scene_N/XXXX_{color,depth,mask,coord}.png, XXXX_meta.txt   N = 1.., XXXX = 0000..
    real/train/scene_N/...
    gts_json/real_test.json, gts_json/real_train.json     GT (gt_class_ids, gt_RTs, gt_scales,
                                                          gt_handle_visibility, gt_bboxes, gt_inst_ids)
    obj_models/real_{test,train}/<model>.obj               NOCS-normalised meshes (x / s, centred)
    obj_models/real_{test,train}/models_info.json          class, metric size and diagonal per model
    camera.json                                            REAL275 intrinsics (depth_scale 1: mm)
    synth_nocs.json, README.md                             generator settings, dataset card

The coord PNG background is black (NOCS value (0, 0, 1) as the official files store it); the mask
holds the instance id (1..) per pixel and 255 elsewhere (table, room and distractors included);
depth is the rendered z in millimetres (uint16, no sensor noise). Every file is a deterministic
function of (preset, seed, renderer backend).
"""

from __future__ import annotations

import colorsys
import logging
import math
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from repro.data.nocs import (
    BACKGROUND_ID,
    REAL275_CAMERA,
    default_gt_path,
    mask_bbox,
    write_camera_json,
    write_nocs_frame,
    write_nocs_gt_json,
)
from repro.data.synth import shapes
from repro.data.synth.shapes import Mesh
from repro.fileio import atomic_write_json, atomic_write_text, read_json
from repro.render import Light, RenderInstance, RenderScene, get_renderer
from repro.render.base import BaseRenderer
from repro.render.viewpoints import look_at
from repro.types import NOCS_CLASSES, CameraIntrinsics, ObjectModel

logger = logging.getLogger(__name__)

__all__ = [
    "CLASS_IDS",
    "PRESETS",
    "SYMMETRIC_CLASSES",
    "CategoryMesh",
    "NocsSynthConfig",
    "NocsView",
    "PlacedObject",
    "generate_nocs_dataset",
    "make_category_mesh",
    "nocs_rt",
    "render_nocs_view",
]

CLASS_IDS: dict[str, int] = {name: i + 1 for i, name in enumerate(NOCS_CLASSES)}
SYMMETRIC_CLASSES: frozenset[str] = frozenset({"bottle", "bowl", "can"})
"""Classes the NOCS evaluation treats as symmetric about y (mugs only with a hidden handle)."""

SUBSET = "real"
SPLITS: tuple[str, ...] = ("test", "train")
MARKER = "synth_nocs.json"
_SPLIT_CODE = {"test": 1, "train": 2}
_SEGMENTS = 48  # multiple of 4: revolved vertex sets are symmetric under x/z flips -> bbox centred on the axis
_NEAR_MM, _FAR_MM = 50.0, 8000.0
_ZUP_TO_YUP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
"""Rotation taking the z-up building frame of revolved parts to the y-up NOCS frame."""
_YUP_TO_WORLD = _ZUP_TO_YUP.T
"""Canonical (y up) to world (z up, table plane z = 0)."""


# --------------------------------------------------------------------------- configuration

@dataclass(frozen=True)
class NocsSynthConfig:
    """What to generate. Ranges are ``(low, high)``; lengths in metres, angles in degrees."""

    name: str = "default"
    test_scenes: int = 4
    train_scenes: int = 6
    frames_per_scene: int = 8
    width: int = 640
    height: int = 480
    extra_objects: tuple[int, int] = (0, 2)
    """Objects beyond one per class in every scene (repeated classes, new shapes)."""
    distractors: tuple[int, int] = (0, 2)
    """Unannotated clutter (boxes, spheres, cylinders): in depth and colour, background in the mask."""
    distance_m: tuple[float, float] = (0.55, 1.2)
    elevation_deg: tuple[float, float] = (22.0, 65.0)
    sweep_deg: tuple[float, float] = (30.0, 100.0)
    """Azimuth covered by the camera over one sequence."""
    arrangement_radius_m: tuple[float, float] = (0.15, 0.24)
    handle_min_fraction: float = 0.2
    handle_min_pixels: int = 10
    rgb_noise: tuple[float, float] = (1.0, 3.0)
    """Std of Gaussian colour noise (8-bit levels), drawn per frame."""
    write_models: bool = True

    def __post_init__(self) -> None:
        if min(self.test_scenes, self.train_scenes) < 0 or self.test_scenes + self.train_scenes == 0:
            raise ValueError("need a non-negative number of scenes per split and at least one scene")
        if self.frames_per_scene < 1 or self.width < 16 or self.height < 16:
            raise ValueError("frames_per_scene must be >= 1 and the image at least 16x16")
        for name in ("extra_objects", "distractors"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(f"{name} must be a range 0 <= low <= high, got {(lo, hi)}")
        if len(NOCS_CLASSES) + self.extra_objects[1] > 254:
            raise ValueError("too many objects per scene for 8-bit instance ids")


PRESETS: dict[str, NocsSynthConfig] = {
    "smoke": NocsSynthConfig(name="smoke", test_scenes=1, train_scenes=1, frames_per_scene=3),
    "default": NocsSynthConfig(name="default", test_scenes=4, train_scenes=6, frames_per_scene=8),
    "large": NocsSynthConfig(name="large", test_scenes=6, train_scenes=18, frames_per_scene=40),
}


def _resolve_config(preset: str | NocsSynthConfig) -> NocsSynthConfig:
    if isinstance(preset, NocsSynthConfig):
        return preset
    if preset not in PRESETS:
        raise ValueError(f"unknown NOCS synth preset {preset!r}; choose from {', '.join(PRESETS)}")
    return PRESETS[preset]


def _camera(cfg: NocsSynthConfig) -> CameraIntrinsics:
    """REAL275 intrinsics, resampled (pixel centres kept) when the image size is not 640x480."""
    if (cfg.width, cfg.height) == (REAL275_CAMERA.width, REAL275_CAMERA.height):
        return REAL275_CAMERA
    K = REAL275_CAMERA.K.copy()
    for row, factor in ((0, cfg.width / REAL275_CAMERA.width), (1, cfg.height / REAL275_CAMERA.height)):
        K[row, row] *= factor
        K[row, 2] = (K[row, 2] + 0.5) * factor - 0.5
    return CameraIntrinsics(K=K, width=cfg.width, height=cfg.height)


# --------------------------------------------------------------------------- category meshes

@dataclass(frozen=True, eq=False)
class CategoryMesh:
    """One object instance in its canonical NOCS frame (metres, y up, centred at the bbox centre).

    ``handle_faces`` marks the mug handle's triangles (all False for other classes).
    """

    class_name: str
    name: str
    mesh: Mesh
    handle_faces: np.ndarray

    @property
    def class_id(self) -> int:
        return CLASS_IDS[self.class_name]

    @property
    def size(self) -> np.ndarray:
        """Tight bbox extents (metres)."""
        lo, hi = self.mesh.bounds
        return hi - lo

    @property
    def diagonal(self) -> float:
        """The NOCS scale ``s``: length of the bbox diagonal (metres)."""
        return float(np.linalg.norm(self.size))

    @property
    def scales(self) -> np.ndarray:
        """NOCS-space box extents, ``size / diagonal``."""
        return self.size / self.diagonal

    @property
    def footprint_radius(self) -> float:
        """Largest horizontal distance of a vertex from the y axis (for placement on a table)."""
        v = self.mesh.vertices
        return float(np.sqrt(v[:, 0] ** 2 + v[:, 2] ** 2).max())

    def to_model(self, obj_id: int) -> ObjectModel:
        """The mesh as a renderable ``ObjectModel`` in millimetres."""
        return _to_model(self.mesh, obj_id, self.name)

    def handle_model(self, obj_id: int) -> ObjectModel | None:
        """The handle triangles alone (millimetres), or None without a handle."""
        if not self.handle_faces.any():
            return None
        faces = self.mesh.faces[self.handle_faces]
        used = np.unique(faces)
        remap = np.full(self.mesh.n_vertices, -1, np.int64)
        remap[used] = np.arange(len(used))
        part = Mesh(self.mesh.vertices[used], remap[faces],
                    None if self.mesh.colors is None else self.mesh.colors[used],
                    normals=None if self.mesh.normals is None else self.mesh.normals[used])
        return _to_model(part, obj_id, self.name + "_handle")


def _to_model(mesh: Mesh, obj_id: int, name: str) -> ObjectModel:
    v = mesh.vertices * 1000.0
    lo, hi = v.min(axis=0), v.max(axis=0)
    normals = mesh.normals if mesh.normals is not None else shapes.vertex_normals(mesh)
    return ObjectModel(obj_id=obj_id, vertices=v, faces=mesh.faces, diameter=float(np.linalg.norm(hi - lo)),
                       normals=normals, colors=mesh.colors, name=name)


def _centred(class_name: str, name: str, mesh: Mesh, handle_faces: np.ndarray | None = None) -> CategoryMesh:
    lo, hi = mesh.bounds
    mesh = shapes.transform(mesh, t=-(lo + hi) / 2.0)
    hf = np.zeros(mesh.n_faces, bool) if handle_faces is None else np.asarray(handle_faces, bool)
    return CategoryMesh(class_name, name, mesh, hf)


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _hsv(rng: np.random.Generator, s: tuple[float, float] = (0.3, 0.9),
         v: tuple[float, float] = (0.3, 0.95)) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(rng.random(), _u(rng, *s), _u(rng, *v)))


def _grey(rng: np.random.Generator, lo: float, hi: float) -> np.ndarray:
    return np.full(3, _u(rng, lo, hi))


def _label(mesh: Mesh, z0: float, z1: float, texture: np.ndarray) -> Mesh:
    """Wrap ``texture`` around a revolved (z-up) mesh between heights ``z0`` and ``z1``."""
    z = mesh.vertices[:, 2]
    uv = np.column_stack([mesh.uv[:, 0], np.clip((z - z0) / (z1 - z0), 0.0, 1.0)])
    tex = shapes.apply_texture(replace(mesh, uv=uv), texture).colors
    band = (z >= z0 - 1e-9) & (z <= z1 + 1e-9)
    colors = np.where(band[:, None], tex, mesh.colors)
    return replace(mesh, colors=colors)


def _yup(mesh: Mesh) -> Mesh:
    return shapes.transform(mesh, R=_ZUP_TO_YUP)


def _bottle(rng: np.random.Generator, name: str) -> CategoryMesh:
    H = _u(rng, 0.15, 0.30)
    R = _u(rng, 0.026, 0.045) * (0.8 + 0.4 * (H - 0.15) / 0.15)
    style = int(rng.integers(3))  # 0 wine (long neck), 1 water (short neck), 2 round shoulder
    h_cap = _u(rng, 0.012, 0.028)
    body_frac = (_u(rng, 0.45, 0.6), _u(rng, 0.62, 0.75), _u(rng, 0.5, 0.68))[style]
    h_body = H * body_frac
    h_sh = H * (_u(rng, 0.08, 0.14), _u(rng, 0.12, 0.2), _u(rng, 0.15, 0.22))[style]
    r_neck = R * _u(rng, 0.28, 0.45)
    r_cap = r_neck * _u(rng, 1.0, 1.25)
    power = (1.0, 1.5, 0.6)[style]
    prof = [(0.0, 0.0), (R * 0.9, 0.0), (R, 0.006), (R, h_body)]
    for s in np.linspace(0.0, 1.0, 9)[1:]:
        f = (3 * s ** 2 - 2 * s ** 3) ** power
        prof.append((R - (R - r_neck) * f, h_body + s * h_sh))
    prof += [(r_neck, H - h_cap), (r_cap, H - h_cap), (r_cap, H), (0.0, H)]
    mesh = shapes.revolve(prof, _SEGMENTS, max_edge=0.006)
    glass = np.array(colorsys.hsv_to_rgb(rng.choice([0.1, 0.3, 0.38, 0.58, 0.0]), _u(rng, 0.3, 0.8),
                                         _u(rng, 0.2, 0.7)))
    cap = _hsv(rng)
    mesh = shapes.color_by(mesh, shapes.band_colors([H - h_cap - 1e-6], [glass, cap]))
    if rng.random() < 0.8:
        z0 = _u(rng, 0.1, 0.3) * h_body
        z1 = min(h_body, z0 + _u(rng, 0.3, 0.6) * h_body)
        mesh = _label(mesh, z0, z1, shapes.procedural_texture(rng, "label", 128))
    return _centred("bottle", name, _yup(mesh))


def _bowl(rng: np.random.Generator, name: str) -> CategoryMesh:
    R = _u(rng, 0.06, 0.11)
    D = R * _u(rng, 0.35, 0.65)
    w = _u(rng, 0.003, 0.009)
    r_foot = R * _u(rng, 0.3, 0.55)
    h_foot = _u(rng, 0.003, 0.01)
    p = _u(rng, 1.4, 3.0)
    h_in = h_foot + _u(rng, 0.003, 0.008)
    prof = [(0.0, 0.0), (r_foot, 0.0), (r_foot, h_foot)]
    for s in np.linspace(0.0, 1.0, 14)[1:]:
        prof.append((r_foot + (R - r_foot) * s ** (1.0 / p), h_foot + (D - h_foot) * s))
    r_in = R - w
    for s in np.linspace(1.0, 0.0, 14)[1:]:
        prof.append((r_in * s ** (1.0 / p), h_in + (D - h_in) * s))
    mesh = shapes.revolve(prof, _SEGMENTS, max_edge=0.008)
    outer, inner = _hsv(rng, (0.1, 0.8), (0.5, 0.95)), _hsv(rng, (0.0, 0.3), (0.7, 1.0))
    r_at = np.hypot(mesh.vertices[:, 0], mesh.vertices[:, 1])
    z = mesh.vertices[:, 2]
    n = mesh.normals
    inside = (n[:, 2] > 0) & (r_at < r_in + 1e-6) & (z > h_foot + 1e-6)
    mesh = replace(mesh, colors=np.where(inside[:, None], inner, outer))
    return _centred("bowl", name, _yup(mesh))


def _can(rng: np.random.Generator, name: str) -> CategoryMesh:
    R = _u(rng, 0.026, 0.045)
    H = max(_u(rng, 0.06, 0.165), 1.1 * R)
    lip = min(0.008, 0.1 * H)
    prof = [(0.0, 0.003), (R * 0.82, 0.0), (R, lip), (R, H - lip), (R * 0.9, H), (R * 0.84, H - 0.003),
            (0.0, H - 0.003)]
    mesh = shapes.revolve(prof, _SEGMENTS, max_edge=0.006)
    metal = _grey(rng, 0.55, 0.85)
    mesh = shapes.paint(mesh, metal)
    mesh = _label(mesh, lip, H - lip, shapes.procedural_texture(rng, str(rng.choice(["label", "stripes"])), 128))
    return _centred("can", name, _yup(mesh))


def _mug(rng: np.random.Generator, name: str) -> CategoryMesh:
    R_top = _u(rng, 0.034, 0.05)
    R_bot = R_top * _u(rng, 0.78, 1.02)
    H = _u(rng, 0.07, 0.115)
    w = _u(rng, 0.0035, 0.006)
    b = _u(rng, 0.006, 0.012)
    prof = [(0.0, 0.0), (R_bot, 0.0), (R_top, H), (R_top - w, H), (R_bot - w, b), (0.0, b)]
    body = shapes.revolve(prof, _SEGMENTS, max_edge=0.006)
    tube = _u(rng, 0.0035, 0.0065)
    a = H * _u(rng, 0.24, 0.36)
    stretch = _u(rng, 0.8, 1.25)  # handle height / width
    half_h = min(a * stretch, 0.5 * H - tube - 0.004)
    z_c = min(max(H * _u(rng, 0.45, 0.58), half_h + tube + 0.003), H - half_h - tube - 0.003)
    handle = shapes.torus_arc(a, tube, -np.pi / 2 - 0.25, np.pi / 2 + 0.25, major_segments=28,
                              minor_segments=12)
    r_wall = R_bot + (R_top - R_bot) * z_c / H
    handle = shapes.transform(handle, scale=(1.0, 1.0, half_h / a))
    handle = shapes.transform(handle, t=(r_wall - 0.25 * tube + a * math.sin(0.25), 0.0, z_c))
    colour = _hsv(rng, (0.0, 0.9), (0.35, 1.0))
    body = shapes.paint(body, colour)
    if rng.random() < 0.5:
        body = _label(body, H * 0.25, H * 0.8, shapes.procedural_texture(rng, "label", 128))
    handle = shapes.paint(handle, colour)
    mesh = shapes.merge(body, handle)
    flags = np.r_[np.zeros(body.n_faces, bool), np.ones(handle.n_faces, bool)]
    return _centred("mug", name, _yup(mesh), flags)


def _camera_obj(rng: np.random.Generator, name: str) -> CategoryMesh:
    bw, bh, bd = _u(rng, 0.09, 0.14), _u(rng, 0.055, 0.09), _u(rng, 0.03, 0.06)
    body_col = rng.choice([_grey(rng, 0.05, 0.2), _grey(rng, 0.6, 0.85), _hsv(rng, (0.3, 0.8), (0.3, 0.8))])
    body = shapes.paint(shapes.box((bw, bh, bd)), body_col)
    lr = bh * _u(rng, 0.25, 0.4)
    ll = _u(rng, 0.015, 0.07)
    lx = bw * _u(rng, -0.15, 0.15)
    ly = bh * _u(rng, -0.12, 0.05)
    lens = shapes.paint(shapes.cylinder(lr, ll, _SEGMENTS, center=(lx, ly, bd / 2 + ll / 2)),
                        _grey(rng, 0.02, 0.15))
    ring = shapes.paint(shapes.cylinder(lr * 1.08, ll * 0.25, _SEGMENTS, center=(lx, ly, bd / 2 + ll * 0.6)),
                        _grey(rng, 0.3, 0.9))
    glass = shapes.paint(shapes.cylinder(lr * 0.75, 0.002, _SEGMENTS, center=(lx, ly, bd / 2 + ll + 0.001)),
                         np.array([0.05, 0.08, 0.2]))
    pr = bh * _u(rng, 0.18, 0.3)
    plen = bd * _u(rng, 0.6, 0.95)
    prism = shapes.revolve([(0.0, -plen / 2), (pr, -plen / 2), (pr, plen / 2), (0.0, plen / 2)], 3, smooth=False)
    prism = shapes.transform(prism, R=shapes.rotation_about((0, 0, 1), np.pi / 2),
                             t=(lx + bw * _u(rng, -0.1, 0.1), bh / 2 + pr * 0.45, 0.0))
    prism = shapes.paint(prism, body_col * 0.8)
    button = shapes.paint(shapes.cylinder(bw * 0.06, 0.006, 16), _grey(rng, 0.1, 0.9))
    button = shapes.transform(button, R=_ZUP_TO_YUP, t=(bw * 0.32, bh / 2 + 0.003, bd * 0.1))
    return _centred("camera", name, shapes.merge(body, lens, ring, glass, prism, button))


def _laptop(rng: np.random.Generator, name: str) -> CategoryMesh:
    W, D = _u(rng, 0.28, 0.38), _u(rng, 0.19, 0.26)
    tb, tl = _u(rng, 0.012, 0.022), _u(rng, 0.004, 0.009)
    d_lid = D * _u(rng, 0.9, 1.0)
    alpha = math.radians(_u(rng, 60.0, 130.0))
    shell = rng.choice([_grey(rng, 0.05, 0.25), _grey(rng, 0.55, 0.85)])
    base = shapes.paint(shapes.box((W, tb, D), center=(0.0, tb / 2, 0.0), max_edge=0.02), shell)
    keys = shapes.paint(shapes.box((W * 0.85, 0.001, D * 0.45), center=(0.0, tb + 0.0005, -D * 0.08)),
                        _grey(rng, 0.05, 0.3))
    lid = shapes.paint(shapes.box((W, tl, d_lid), center=(0.0, tl / 2, d_lid / 2), max_edge=0.02), shell)
    screen = shapes.paint(shapes.box((W * 0.9, 0.001, d_lid * 0.85), center=(0.0, -0.0005, d_lid * 0.5)),
                          _hsv(rng, (0.2, 0.8), (0.05, 0.35)))
    R_lid = shapes.rotation_about((1, 0, 0), -alpha)
    hinge = np.array([0.0, tb, -D / 2])
    lid_all = shapes.transform(shapes.merge(lid, screen), R=R_lid, t=hinge)
    return _centred("laptop", name, shapes.merge(base, keys, lid_all))


_BUILDERS = {"bottle": _bottle, "bowl": _bowl, "camera": _camera_obj, "can": _can, "laptop": _laptop, "mug": _mug}


def make_category_mesh(category: str | int, rng: np.random.Generator, name: str = "") -> CategoryMesh:
    """A new random instance of ``category`` (class name or id 1..6) in its canonical NOCS frame."""
    cls = NOCS_CLASSES[category - 1] if isinstance(category, int | np.integer) else str(category)
    if cls not in _BUILDERS:
        raise ValueError(f"unknown NOCS category {category!r}; choose from {', '.join(NOCS_CLASSES)}")
    return _BUILDERS[cls](rng, name or cls)


# --------------------------------------------------------------------------- rendering one view

def nocs_rt(diagonal: float, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``[[s * R, t], [0, 0, 0, 1]]``: NOCS (centred) to camera metres."""
    RT = np.eye(4)
    RT[:3, :3] = diagonal * np.asarray(R, dtype=np.float64)
    RT[:3, 3] = t
    return RT


@dataclass(frozen=True, eq=False)
class PlacedObject:
    """An annotated instance in a view: ``R`` canonical-to-camera, ``t`` bbox centre (camera, metres)."""

    inst_id: int
    obj: CategoryMesh
    R: np.ndarray
    t: np.ndarray
    model: ObjectModel | None = None
    handle: ObjectModel | None = None

    def render_model(self) -> ObjectModel:
        return self.model if self.model is not None else self.obj.to_model(self.inst_id)

    def handle_model(self) -> ObjectModel | None:
        return self.handle if self.handle is not None else self.obj.handle_model(self.inst_id)


@dataclass(frozen=True, eq=False)
class NocsView:
    """One rendered image with its NOCS annotations (all arrays in the writer's formats).

    ``gt`` holds one dict per instance with at least one visible pixel, by ascending instance id:
    ``inst_id, class_id, RT, scales, handle_visibility, bbox (y1, x1, y2, x2), n_pixels``;
    ``handle_pixels`` maps a mug's instance id to ``(visible, alone)`` handle pixel counts.
    """

    color: np.ndarray
    depth_mm: np.ndarray
    mask: np.ndarray
    coord: np.ndarray
    gt: tuple[dict[str, Any], ...]
    handle_pixels: dict[int, tuple[int, int]]


def render_nocs_view(renderer: BaseRenderer, camera: CameraIntrinsics, objects: Sequence[PlacedObject], *,
                     background: Sequence[RenderInstance] = (), light: Light | None = None,
                     rng: np.random.Generator | None = None, rgb_noise: float = 0.0,
                     handle_min_fraction: float = 0.2, handle_min_pixels: int = 10) -> NocsView:
    """Render annotated ``objects`` (plus unannotated ``background`` instances, poses in mm) and
    derive colour, depth (mm), instance mask, NOCS map and per-instance GT."""
    insts = [RenderInstance(o.render_model(), o.R, np.asarray(o.t, dtype=np.float64) * 1000.0) for o in objects]
    scene = RenderScene(camera, (*insts, *background), light=light or Light(), near=_NEAR_MM, far=_FAR_MM)
    res = renderer.render(scene, {"depth", "ids", "rgb", "xyz"})
    H, W = camera.height, camera.width
    ids = res.instance_ids
    mask = np.full((H, W), BACKGROUND_ID, np.uint8)
    coord = np.zeros((H, W, 3), np.float64)
    coord[..., 2] = 1.0
    handle_scenes, handle_owner = [], []
    for k, o in enumerate(objects):
        hm = o.handle_model()
        if hm is not None:
            handle_scenes.append(RenderScene(camera, (RenderInstance(hm, insts[k].R, insts[k].t),),
                                             near=_NEAR_MM, far=_FAR_MM))
            handle_owner.append(k)
    alone = {k: int((r.depth > 0).sum()) for k, r in
             zip(handle_owner, renderer.render_batch(handle_scenes, {"depth"}) if handle_scenes else [], strict=True)}
    gt: list[dict[str, Any]] = []
    handle_pixels: dict[int, tuple[int, int]] = {}
    for k, o in enumerate(objects):
        sel = ids == k
        n_px = int(sel.sum())
        mask[sel] = o.inst_id
        coord[sel] = np.clip(res.xyz[sel].astype(np.float64) / (1000.0 * o.obj.diagonal) + 0.5, 0.0, 1.0)
        visible = 1
        if k in alone:
            n_vis = int(o.obj.handle_faces[res.triangle_ids[sel]].sum())
            handle_pixels[o.inst_id] = (n_vis, alone[k])
            visible = int(n_vis >= max(handle_min_pixels, handle_min_fraction * alone[k]))
        if n_px == 0:
            continue
        gt.append({"inst_id": o.inst_id, "class_id": o.obj.class_id, "RT": nocs_rt(o.obj.diagonal, o.R, o.t),
                   "scales": o.obj.scales, "handle_visibility": visible, "bbox": mask_bbox(sel), "n_pixels": n_px})
    gt.sort(key=lambda g: g["inst_id"])
    color = res.rgb
    if rgb_noise > 0 and rng is not None:
        noisy = color.astype(np.float32) + rng.normal(0.0, rgb_noise, color.shape).astype(np.float32)
        color = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    depth_mm = np.clip(np.rint(res.depth.astype(np.float64)), 0, 65535).astype(np.uint16)
    return NocsView(color=color, depth_mm=depth_mm, mask=mask, coord=coord, gt=tuple(gt),
                    handle_pixels=handle_pixels)


# --------------------------------------------------------------------------- scenes

@dataclass(frozen=True, eq=False)
class _SceneObject:
    inst_id: int
    obj: CategoryMesh
    R_w: np.ndarray
    t_w: np.ndarray
    model: ObjectModel
    handle: ObjectModel | None


@dataclass(frozen=True, eq=False)
class _Scene:
    objects: tuple[_SceneObject, ...]
    background: tuple[tuple[ObjectModel, np.ndarray, np.ndarray], ...]
    """Unannotated models with their model-to-world pose (R, t metres)."""
    centre: np.ndarray
    light_dir_w: np.ndarray
    ambient: float
    diffuse: float


def _rot_z(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _textured(mesh: Mesh, texture: np.ndarray, obj_id: int, name: str, uv_repeat: float = 1.0) -> ObjectModel:
    v = mesh.vertices * 1000.0
    lo, hi = v.min(axis=0), v.max(axis=0)
    normals = mesh.normals if mesh.normals is not None else shapes.vertex_normals(mesh)
    return ObjectModel(obj_id=obj_id, vertices=v, faces=mesh.faces, diameter=float(np.linalg.norm(hi - lo)),
                       normals=normals, uv=mesh.uv * uv_repeat, texture=texture, name=name)


def _environment(rng: np.random.Generator) -> list[tuple[ObjectModel, np.ndarray, np.ndarray]]:
    """Table (top at z = 0) and the room around it, in world coordinates (metres)."""
    kinds = ("noise", "stripes", "checker", "blobs")
    tx, ty = _u(rng, 1.1, 2.0), _u(rng, 0.8, 1.4)
    top = shapes.plane(tx, ty)
    top_tex = shapes.procedural_texture(rng, str(rng.choice(kinds)), 256)
    sides = shapes.box((tx, ty, 0.04), center=(0.0, 0.0, -0.0205))
    side_col = shapes.procedural_texture(rng, "noise", 64)
    room = shapes.transform(shapes.box((6.0, 6.0, 3.2)), scale=-1.0, t=(0.0, 0.0, 0.85))
    room_tex = shapes.procedural_texture(rng, str(rng.choice(kinds)), 256)
    offset = np.array([_u(rng, -0.15, 0.15), _u(rng, -0.1, 0.1), 0.0])
    eye = np.eye(3)
    return [
        (_textured(top, top_tex, 1001, "table_top", uv_repeat=max(tx, ty) / _u(rng, 0.25, 0.6)), eye, offset),
        (_textured(sides, side_col, 1002, "table_sides"), eye, offset),
        (_textured(room, room_tex, 1003, "room", uv_repeat=_u(rng, 2.0, 5.0)), eye, np.zeros(3)),
    ]


def _distractor(rng: np.random.Generator) -> Mesh:
    kind = int(rng.integers(3))
    if kind == 0:
        mesh = shapes.box((_u(rng, 0.04, 0.15), _u(rng, 0.03, 0.12), _u(rng, 0.04, 0.15)), max_edge=0.01)
    elif kind == 1:
        mesh = _yup(shapes.cylinder(_u(rng, 0.02, 0.05), _u(rng, 0.02, 0.12), 24))
    else:
        mesh = shapes.icosphere(_u(rng, 0.02, 0.05), 2)
    tex = shapes.procedural_texture(rng, str(rng.choice(["blobs", "label", "checker"])), 64)
    return shapes.apply_texture(mesh, tex) if mesh.uv is not None else shapes.paint(mesh, _hsv(rng))


def _place(rng: np.random.Generator, radii: Sequence[float], arrangement: float) -> list[np.ndarray]:
    """Non-overlapping (x, y) positions for footprints of the given radii, largest first."""
    order = np.argsort(-np.asarray(radii), kind="stable")
    for _ in range(40):
        placed: dict[int, np.ndarray] = {}
        for i in order:
            for _try in range(300):
                r = arrangement * math.sqrt(rng.random())
                a = rng.uniform(0.0, 2.0 * np.pi)
                p = np.array([r * math.cos(a), r * math.sin(a)])
                if all(np.linalg.norm(p - q) >= radii[i] + radii[j] + 0.006 for j, q in placed.items()):
                    placed[i] = p
                    break
            else:
                break
        if len(placed) == len(radii):
            return [placed[i] for i in range(len(radii))]
        arrangement *= 1.1
    raise RuntimeError("could not place the objects without overlap")


def _make_scene(rng: np.random.Generator, cfg: NocsSynthConfig, split: str, scene_id: int) -> _Scene:
    classes = list(NOCS_CLASSES)
    n_extra = int(rng.integers(cfg.extra_objects[0], cfg.extra_objects[1] + 1))
    classes += [str(c) for c in rng.choice([c for c in NOCS_CLASSES if c != "laptop"], size=n_extra)]
    classes = [classes[i] for i in rng.permutation(len(classes))]
    objs = [make_category_mesh(c, rng, f"{c}_{split}_s{scene_id:02d}_{k + 1:02d}") for k, c in enumerate(classes)]
    n_dis = int(rng.integers(cfg.distractors[0], cfg.distractors[1] + 1))
    dis = [_centred("bottle", f"distractor_{k}", _distractor(rng)) for k in range(n_dis)]
    everything = objs + dis
    radii = [o.footprint_radius for o in everything]
    pos = _place(rng, radii, _u(rng, *cfg.arrangement_radius_m))
    placed = []
    background = _environment(rng)
    for k, (o, p) in enumerate(zip(everything, pos, strict=True)):
        R_w = _rot_z(rng.uniform(0.0, 2.0 * np.pi)) @ _YUP_TO_WORLD
        t_w = np.array([p[0], p[1], o.size[1] / 2.0 + 2e-4])
        if k < len(objs):
            placed.append(_SceneObject(k + 1, o, R_w, t_w, o.to_model(k + 1), o.handle_model(k + 1)))
        else:
            background.append((o.to_model(2000 + k), R_w, t_w))
    centre = np.mean([o.t_w for o in placed], axis=0)
    az, el = rng.uniform(0.0, 2.0 * np.pi), math.radians(_u(rng, 35.0, 80.0))
    light = -np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
    return _Scene(tuple(placed), tuple(background), centre, light, _u(rng, 0.25, 0.5), _u(rng, 0.5, 0.85))


def _trajectory(rng: np.random.Generator, cfg: NocsSynthConfig, scene: _Scene,
                camera: CameraIntrinsics) -> list[tuple[np.ndarray, np.ndarray]]:
    """A smooth camera path around the arrangement (all object centres in view when possible)."""
    n = cfg.frames_per_scene
    tau = np.linspace(0.0, 1.0, n) if n > 1 else np.zeros(1)
    centres = np.array([o.t_w for o in scene.objects])
    best: list[tuple[np.ndarray, np.ndarray]] = []
    best_score = -1
    for attempt in range(40):
        d_hi = cfg.distance_m[1]
        d_lo = min(cfg.distance_m[0] + 0.02 * attempt, d_hi)  # back off a little after each failure
        d0 = _u(rng, d_lo, d_hi)
        e0 = _u(rng, *cfg.elevation_deg)
        a0 = rng.uniform(0.0, 2.0 * np.pi)
        sweep = math.radians(_u(rng, *cfg.sweep_deg)) * (1 if rng.random() < 0.5 else -1)
        amp_d, amp_e, amp_r = _u(rng, 0.0, 0.12), _u(rng, 0.0, 10.0), math.radians(_u(rng, 0.0, 5.0))
        ph = rng.uniform(0.0, 2.0 * np.pi, 3)
        drift = rng.uniform(-0.03, 0.03, 3)
        target0 = scene.centre + np.array([*rng.uniform(-0.03, 0.03, 2), _u(rng, 0.0, 0.05)])
        poses = []
        for s in tau:
            d = float(np.clip(d0 + amp_d * math.sin(np.pi * s + ph[0]), *cfg.distance_m))
            e = math.radians(float(np.clip(e0 + amp_e * math.sin(np.pi * s + ph[1]), *cfg.elevation_deg)))
            a = a0 + sweep * s
            target = target0 + drift * s
            eye = target + d * np.array([math.cos(e) * math.cos(a), math.cos(e) * math.sin(a), math.sin(e)])
            poses.append(look_at(eye, target, roll=amp_r * math.sin(2 * np.pi * s + ph[2])))
        score = 0
        for R, t in poses:
            pc = centres @ R.T + t
            uv = pc[:, :2] / pc[:, 2:3] * [camera.fx, camera.fy] + [camera.cx, camera.cy]
            inside = (pc[:, 2] > 0.2) & (uv[:, 0] > 8) & (uv[:, 0] < camera.width - 8) \
                & (uv[:, 1] > 8) & (uv[:, 1] < camera.height - 8)
            score += int(inside.sum())
        if score > best_score:
            best, best_score = poses, score
        if score == len(poses) * len(centres):
            break
    if best_score < len(best) * len(centres):
        logger.debug("camera path keeps %d of %d object centres in view", best_score, len(best) * len(centres))
    return best


def _render_scene(renderer: BaseRenderer, camera: CameraIntrinsics, cfg: NocsSynthConfig, scene: _Scene,
                  poses: Sequence[tuple[np.ndarray, np.ndarray]], rng: np.random.Generator):
    for R_cw, t_cw in poses:
        objects = [PlacedObject(o.inst_id, o.obj, R_cw @ o.R_w, R_cw @ o.t_w + t_cw, o.model, o.handle)
                   for o in scene.objects]
        background = [RenderInstance(m, R_cw @ R, (R_cw @ t + t_cw) * 1000.0) for m, R, t in scene.background]
        light = Light(direction=R_cw @ scene.light_dir_w, ambient=scene.ambient, diffuse=scene.diffuse)
        yield render_nocs_view(renderer, camera, objects, background=background, light=light, rng=rng,
                               rgb_noise=_u(rng, *cfg.rgb_noise), handle_min_fraction=cfg.handle_min_fraction,
                               handle_min_pixels=cfg.handle_min_pixels)


# --------------------------------------------------------------------------- files

def _obj_text(obj: CategoryMesh) -> str:
    """Wavefront OBJ of the NOCS-normalised mesh (``x / s``, centred), vertex colours appended."""
    v = obj.mesh.vertices / obj.diagonal
    c = obj.mesh.colors if obj.mesh.colors is not None else np.full((len(v), 3), 0.5)
    lines = [f"# {obj.name}: class {obj.class_name}, NOCS-normalised (divide by diagonal {obj.diagonal:.6f} m)"]
    lines += [f"v {p[0]:.6f} {p[1]:.6f} {p[2]:.6f} {q[0]:.4f} {q[1]:.4f} {q[2]:.4f}" for p, q in zip(v, c, strict=True)]
    lines += [f"f {a + 1} {b + 1} {d + 1}" for a, b, d in obj.mesh.faces]
    return "\n".join(lines) + "\n"


def _check_out_dir(out: Path) -> None:
    """Refuse to write into a non-empty folder that is not an earlier output of this generator;
    clear the outputs of an earlier run."""
    if not out.exists():
        return
    if not out.is_dir():
        raise NotADirectoryError(f"output path exists and is not a directory: {out}")
    entries = list(out.iterdir())
    if not entries:
        return
    marker = out / MARKER
    if not marker.is_file() or read_json(marker).get("generator") != __name__:
        raise FileExistsError(f"{out} is not empty and holds no earlier NOCS synthetic dataset ({MARKER}); "
                              "choose an empty or new folder")
    for name in ("real", "gts_json", "obj_models"):
        if (out / name).is_dir():
            shutil.rmtree(out / name)
    for name in ("camera.json", "README.md", MARKER):
        (out / name).unlink(missing_ok=True)


def _card(cfg: NocsSynthConfig, seed: int, renderer_name: str, stats: dict[str, Any]) -> str:
    rows = "\n".join(
        f"| {split} | {s['n_scenes']} | {s['n_images']} | {s['n_gt']} | "
        + " | ".join(str(s["per_class"][c]) for c in NOCS_CLASSES) + " |" for split, s in stats.items())
    return f"""# Synthetic NOCS-layout dataset (preset `{cfg.name}`, seed {seed})

**This dataset is synthetic.** Every image is rendered from procedurally generated meshes; no
real photograph, scanned object or ShapeNet model is involved. It mimics the *layout and
conventions* of REAL275 (NOCS, CVPR 2019) so that the same readers and the official category-level
evaluation run on it, but numbers measured on it are not comparable with numbers on REAL275 or
CAMERA25. Use it for tests, debugging and offline smoke runs of the pipeline.

## What it contains
* Six categories (class ids 1..6 = {", ".join(NOCS_CLASSES)}),
  every instance a new random shape at real size in metres: bottles (revolved profiles,
  neck/shoulder styles, 0.15-0.30 m tall), bowls (thick-walled, rim radius 6-11 cm), cameras
  (box body, cylindrical lens, prism viewfinder), cans (radius 2.6-4.5 cm, height 6-16.5 cm),
  laptops (lid angle 60-130 degrees), mugs (tapered body and a torus-arc handle of varying size).
* Every scene holds one object of each class plus {cfg.extra_objects[0]}-{cfg.extra_objects[1]} repeated classes
  and {cfg.distractors[0]}-{cfg.distractors[1]} unannotated distractors, on a textured table in a textured room,
  under a random directional light.
* Each scene folder is a video sequence: the camera moves smoothly around the static arrangement
  at {cfg.distance_m[0]}-{cfg.distance_m[1]} m, elevation {cfg.elevation_deg[0]:g}-{cfg.elevation_deg[1]:g} degrees,
  sweeping {cfg.sweep_deg[0]:g}-{cfg.sweep_deg[1]:g} degrees of azimuth over {cfg.frames_per_scene} frames.
* REAL275 intrinsics (`camera.json`), {cfg.width}x{cfg.height} images, renderer backend `{renderer_name}`.

| split | scenes | images | GT objects | {" | ".join(NOCS_CLASSES)} |
|---|---|---|---|{"---|" * len(NOCS_CLASSES)}
{rows}

## Layout (official NOCS layout; `repro.data.nocs.NocsDataset(root, "real", split)` reads it)
```
real/{{test,train}}/scene_N/XXXX_color.png   RGB
                         XXXX_depth.png   uint16 millimetres (rendered, noise-free)
                         XXXX_mask.png    instance id per pixel, 255 = background
                         XXXX_coord.png   NOCS map (8-bit, z stored flipped as in the release)
                         XXXX_meta.txt    "inst_id class_id model_name" per instance of the scene
gts_json/real_{{test,train}}.json             ground truth (repro-nocs-gt-v1)
obj_models/real_{{test,train}}/*.obj          NOCS-normalised meshes; models_info.json has metric sizes
camera.json, {MARKER}
```

## Conventions
* NOCS frame: y up, origin at the tight bbox centre; bottle/bowl/can symmetric about y; mug handle
  along +x; camera lens along +z; laptop hinge at -z, screen facing +z.
* NOCS map = model point / bbox diagonal + 0.5; `gt_scales` = bbox size / diagonal;
  `gt_RTs` = `[[s R, t], [0, 0, 0, 1]]` with `s` the diagonal in metres, so a camera point (metres)
  is `s R (nocs - 0.5) + t`; `gt_bboxes` are `(y1, x1, y2, x2)`, end exclusive.
* `gt_handle_visibility` of a mug is 0 when fewer than {cfg.handle_min_pixels} pixels or less than
  {cfg.handle_min_fraction:.0%} of the pixels of its handle rendered alone at the same pose are visible in
  the image (self-occlusion and occlusion included); 1 otherwise and for every other class.
  GT lists the instances with at least one visible pixel, by instance id.

## How it was made
`repro data synth --kind nocs --preset {cfg.name} --seed {seed}`
(`repro.data.synth.nocs_synth.generate_nocs_dataset`). The same preset, seed and renderer backend
give byte-identical files; the settings are in `{MARKER}`.
"""


def generate_nocs_dataset(out_dir: str | Path, preset: str | NocsSynthConfig = "default", seed: int = 0,
                          renderer: BaseRenderer | None = None) -> dict[str, Any]:
    """Write a synthetic NOCS-layout dataset to ``out_dir`` and return a JSON-able summary.

    ``preset`` is ``smoke``, ``default``, ``large`` or a ``NocsSynthConfig``; ``renderer`` defaults
    to ``get_renderer("auto")`` (closed again at the end). An existing ``out_dir`` must be empty or
    an earlier output of this generator (whose files are then replaced).
    """
    cfg = _resolve_config(preset)
    seed = int(seed)
    out = Path(out_dir)
    _check_out_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    own = renderer is None
    rnd = get_renderer("auto") if renderer is None else renderer
    camera = _camera(cfg)
    start = time.perf_counter()
    stats: dict[str, Any] = {}
    n_total = (cfg.test_scenes + cfg.train_scenes) * cfg.frames_per_scene
    logger.info("generating NOCS synthetic dataset (preset %s, seed %d, %d images) in %s with %s",
                cfg.name, seed, n_total, out, rnd.name)
    try:
        with tqdm(total=n_total, desc="nocs synth", unit="img", disable=None) as bar:
            for split in SPLITS:
                n_scenes = cfg.test_scenes if split == "test" else cfg.train_scenes
                if n_scenes == 0:
                    continue
                stats[f"{SUBSET}/{split}"] = _generate_split(out, split, n_scenes, cfg, seed, rnd, camera, bar)
    finally:
        if own:
            rnd.close()
    write_camera_json(out, camera)
    atomic_write_json(out / MARKER, {"generator": __name__, "seed": seed, "config": asdict(cfg),
                                     "renderer": rnd.name, "subset": SUBSET})
    atomic_write_text(out / "README.md", _card(cfg, seed, rnd.name, stats))
    seconds = time.perf_counter() - start
    summary = {"format": "nocs", "kind": "nocs", "root": str(out), "preset": cfg.name, "seed": seed,
               "renderer": rnd.name, "subset": SUBSET, "splits": stats,
               "n_images": sum(s["n_images"] for s in stats.values()),
               "n_gt": sum(s["n_gt"] for s in stats.values()), "seconds": round(seconds, 3)}
    logger.info("wrote %d images, %d GT objects in %.1f s", summary["n_images"], summary["n_gt"], seconds)
    return summary


def _generate_split(out: Path, split: str, n_scenes: int, cfg: NocsSynthConfig, seed: int, renderer: BaseRenderer,
                    camera: CameraIntrinsics, bar: tqdm) -> dict[str, Any]:
    images: list[dict[str, Any]] = []
    per_class = dict.fromkeys(NOCS_CLASSES, 0)
    models: dict[str, Any] = {}
    n_hidden_handles = 0
    for scene_id in range(1, n_scenes + 1):
        rng = np.random.default_rng([seed, _SPLIT_CODE[split], scene_id])
        scene = _make_scene(rng, cfg, split, scene_id)
        poses = _trajectory(rng, cfg, scene, camera)
        meta = [(o.inst_id, o.obj.class_id, o.obj.name) for o in scene.objects]
        for im_id, view in enumerate(_render_scene(renderer, camera, cfg, scene, poses, rng)):
            write_nocs_frame(out, SUBSET, split, scene_id, im_id, color=view.color, depth_mm=view.depth_mm,
                             mask=view.mask, coord=view.coord, meta=meta)
            images.append({
                "scene_id": scene_id, "im_id": im_id,
                "gt_class_ids": [g["class_id"] for g in view.gt],
                "gt_RTs": [g["RT"] for g in view.gt],
                "gt_scales": [g["scales"] for g in view.gt],
                "gt_handle_visibility": [g["handle_visibility"] for g in view.gt],
                "gt_bboxes": [list(g["bbox"]) for g in view.gt],
                "gt_inst_ids": [g["inst_id"] for g in view.gt],
            })
            for g in view.gt:
                per_class[NOCS_CLASSES[g["class_id"] - 1]] += 1
                n_hidden_handles += int(g["handle_visibility"] == 0)
            bar.update(1)
        if cfg.write_models:
            folder = out / "obj_models" / f"{SUBSET}_{split}"
            for o in scene.objects:
                atomic_write_text(folder / f"{o.obj.name}.obj", _obj_text(o.obj))
                models[o.obj.name] = {"class_id": o.obj.class_id, "class": o.obj.class_name,
                                      "diagonal_m": o.obj.diagonal, "size_m": o.obj.size.tolist(),
                                      "scales": o.obj.scales.tolist()}
    if cfg.write_models:
        atomic_write_json(out / "obj_models" / f"{SUBSET}_{split}" / "models_info.json", models)
    write_nocs_gt_json(default_gt_path(out, SUBSET, split), images, subset=SUBSET, split=split)
    n_gt = sum(per_class.values())
    logger.info("%s/%s: %d scenes, %d images, %d GT objects (%d mugs with hidden handle)", SUBSET, split,
                n_scenes, len(images), n_gt, n_hidden_handles)
    return {"n_scenes": n_scenes, "n_images": len(images), "n_gt": n_gt, "per_class": per_class,
            "n_hidden_handles": n_hidden_handles}
