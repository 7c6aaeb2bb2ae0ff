"""STORM reference images: object-centred square crops with masks, a description and (when known) poses.

Two sources (paper section 3, "Reference Images Preparation" and appendix C):

* ``render_references``: the object's model rendered from ``n_views`` near-uniform spherical viewpoints
  (a Fibonacci sphere; 16 in the paper's training set-up), camera looking at the bounding-box centre at
  a distance at which the bounding sphere fills the view; each render is cropped square around the
  object and resized.
* ``load_static_references``: user-provided clean images on a plain background
  (``onboarding_static/obj_OOOOOO/ref_XXXX_rgb.png`` + optional ``ref_XXXX_mask.png`` + ``refs.json``,
  written by ``repro.data.synth``); masks are the given ones, else "simple background colour
  thresholding" (``mask_from_background``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from repro.errors import DataFormatError
from repro.fileio import read_image, read_json
from repro.render import Light, RenderInstance, RenderScene, get_renderer
from repro.render.base import Renderer
from repro.render.viewpoints import fibonacci_sphere, look_at
from repro.types import CameraIntrinsics, ObjectModel

log = logging.getLogger(__name__)

STATIC_DIR = "onboarding_static"


@dataclass(frozen=True, eq=False)
class ReferenceSet:
    """Reference views of one object.

    ``images`` (V, S, S, 3) uint8 RGB object-centred square crops; ``masks`` (V, S, S) bool;
    ``description`` the text prompt (description, else name); ``poses`` (V, 4, 4) model-to-camera
    (mm) of the uncropped views, or ``None``; ``source`` where the views came from.
    """

    obj_id: int
    images: np.ndarray
    masks: np.ndarray
    description: str
    poses: np.ndarray | None
    source: str

    def __post_init__(self) -> None:
        imgs = np.asarray(self.images)
        masks = np.asarray(self.masks).astype(bool)
        if imgs.ndim != 4 or imgs.shape[-1] != 3 or imgs.shape[1] != imgs.shape[2] or imgs.dtype != np.uint8:
            raise ValueError(f"images must be (V, S, S, 3) uint8, got {imgs.shape} {imgs.dtype}")
        if masks.shape != imgs.shape[:3]:
            raise ValueError(f"masks must be (V, S, S) = {imgs.shape[:3]}, got {masks.shape}")
        if self.poses is not None and np.asarray(self.poses).shape != (len(imgs), 4, 4):
            raise ValueError(f"poses must be ({len(imgs)}, 4, 4), got {np.asarray(self.poses).shape}")
        object.__setattr__(self, "obj_id", int(self.obj_id))
        object.__setattr__(self, "images", imgs)
        object.__setattr__(self, "masks", masks)

    @property
    def n_views(self) -> int:
        return int(self.images.shape[0])

    @property
    def size(self) -> int:
        return int(self.images.shape[1])


# --------------------------------------------------------------------------- masks and crops


def estimate_background_color(rgb: np.ndarray, border: int = 2) -> np.ndarray:
    """The median colour (float, 0..255) of the ``border``-pixel frame of an HxWx3 image."""
    img = np.asarray(rgb)
    b = max(1, min(border, img.shape[0] // 2, img.shape[1] // 2))
    frame = np.concatenate(
        [img[:b].reshape(-1, 3), img[-b:].reshape(-1, 3), img[:, :b].reshape(-1, 3), img[:, -b:].reshape(-1, 3)]
    )
    return np.median(frame.astype(np.float64), axis=0)


def mask_from_background(
    rgb: np.ndarray, bg_color: Sequence[float] | np.ndarray | None = None, tol: float = 12.0
) -> np.ndarray:
    """Foreground mask of an image on a plain background: pixels whose colour differs from the background
    by more than ``tol`` (max absolute channel difference, 0..255 scale).

    ``bg_color`` is an RGB triple, in 0..255 or (all values <= 1) 0..1; ``None`` estimates it as the
    median of the image border.
    """
    img = np.asarray(rgb)
    if img.ndim != 3 or img.shape[-1] != 3:
        raise ValueError(f"expected an HxWx3 image, got {img.shape}")
    if bg_color is None:
        bg = estimate_background_color(img)
    else:
        bg = np.asarray(bg_color, dtype=np.float64).reshape(3)
        if bg.max() <= 1.0:
            bg = bg * 255.0
    diff = np.abs(img.astype(np.float64) - bg).max(axis=-1)
    return diff > tol


def square_box(mask: np.ndarray, margin: float = 0.1) -> tuple[int, int, int] | None:
    """``(x0, y0, side)`` of the square centred on the mask's bounding box, ``1 + 2 margin`` times its
    longer side (may extend past the image); ``None`` for an empty mask."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    side = max(2, math.ceil(max(x1 - x0, y1 - y0) * (1.0 + 2.0 * margin)))
    cx, cy = 0.5 * (x0 + x1), 0.5 * (y0 + y1)
    return round(cx - side / 2), round(cy - side / 2), side


def crop_square(
    rgb: np.ndarray,
    mask: np.ndarray,
    size: int,
    *,
    margin: float = 0.1,
    fill: Sequence[int] | np.ndarray = (0, 0, 0),
) -> tuple[np.ndarray, np.ndarray]:
    """Crop a square around the mask (padding outside the image with ``fill``) and resize to ``size``.

    Image: area interpolation when shrinking, linear when enlarging; mask: nearest. An empty mask
    crops the centred largest square.
    """
    h, w = mask.shape
    box = square_box(mask, margin)
    if box is None:
        side = min(h, w)
        box = ((w - side) // 2, (h - side) // 2, side)
    x0, y0, side = box
    pad = max(0, -x0, -y0, x0 + side - w, y0 + side - h)
    fill_arr = np.asarray(fill, dtype=np.uint8).reshape(3)
    if pad:
        big = np.empty((h + 2 * pad, w + 2 * pad, 3), dtype=np.uint8)
        big[:] = fill_arr
        big[pad : pad + h, pad : pad + w] = rgb
        bigm = np.zeros((h + 2 * pad, w + 2 * pad), dtype=bool)
        bigm[pad : pad + h, pad : pad + w] = mask
        rgb, mask, x0, y0 = big, bigm, x0 + pad, y0 + pad
    crop = np.ascontiguousarray(rgb[y0 : y0 + side, x0 : x0 + side])
    cm = np.ascontiguousarray(mask[y0 : y0 + side, x0 : x0 + side]).astype(np.uint8)
    interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    out = cv2.resize(crop, (size, size), interpolation=interp)
    out_m = cv2.resize(cm, (size, size), interpolation=cv2.INTER_NEAREST).astype(bool)
    return out, out_m


# --------------------------------------------------------------------------- rendered references


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random rotation matrix (QR of a Gaussian matrix with the sign fix)."""
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def reference_viewpoints(n_views: int, seed: int | None = None) -> np.ndarray:
    """``n_views`` near-uniform unit directions (Fibonacci sphere), randomly rotated when ``seed`` is given."""
    dirs = fibonacci_sphere(n_views)
    if seed is not None:
        dirs = dirs @ random_rotation(np.random.default_rng(seed)).T
    return dirs


def render_references(
    model: ObjectModel,
    *,
    n_views: int = 16,
    size: int = 224,
    renderer: Renderer | None = None,
    background: Sequence[float] = (0.0, 0.0, 0.0),
    seed: int | None = None,
    render_size: int | None = None,
    fill: float = 0.85,
    margin: float = 0.08,
) -> ReferenceSet:
    """Render ``model`` (vertex colours / texture) from ``n_views`` spherical viewpoints and crop each view.

    Viewpoints: ``reference_viewpoints(n_views, seed)`` (the plain Fibonacci sphere for ``seed=None``),
    camera at the distance where the bounding sphere spans ``fill`` of the half field of view, looking
    at the bounding-box centre with model z up. Renders are ``render_size`` (default ``2 * size``)
    square, then cropped around the object (``margin``) and resized to ``size``. ``background`` RGB
    0..1. ``renderer`` defaults to a fresh ``get_renderer('auto')`` (closed afterwards).
    """
    if n_views < 1:
        raise ValueError(f"n_views must be >= 1, got {n_views}")
    rs = int(render_size or 2 * size)
    f = rs * 1.2
    camera = CameraIntrinsics(np.array([[f, 0.0, (rs - 1) / 2], [0.0, f, (rs - 1) / 2], [0.0, 0.0, 1.0]]), rs, rs)
    centre = 0.5 * (model.vertices.min(axis=0) + model.vertices.max(axis=0))
    rho = float(np.linalg.norm(model.vertices - centre, axis=1).max())
    distance = rho / math.sin(fill * math.atan(rs / (2.0 * f)))
    own = renderer is None
    r = get_renderer("auto") if renderer is None else renderer
    fill_rgb = np.clip(np.round(np.asarray(background, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)
    images, masks, poses = [], [], []
    try:
        for d in reference_viewpoints(n_views, seed):
            R, t = look_at(centre + distance * d, centre)
            scene = RenderScene(
                camera,
                (RenderInstance(model, R, t),),
                background=tuple(background),
                light=Light(direction=(0.3, 0.4, 1.0), ambient=0.4, diffuse=0.6),
            )
            res = r.render(scene, {"ids", "rgb"})
            mask = res.instance_ids == 0
            img, m = crop_square(res.rgb, mask, size, margin=margin, fill=fill_rgb)
            images.append(img)
            masks.append(m)
            T = np.eye(4)
            T[:3, :3], T[:3, 3] = R, t
            poses.append(T)
    finally:
        if own:
            r.close()
    return ReferenceSet(
        obj_id=model.obj_id,
        images=np.stack(images),
        masks=np.stack(masks),
        description=model.description or model.name,
        poses=np.stack(poses),
        source=f"rendered:{n_views} views (seed={seed})",
    )


# --------------------------------------------------------------------------- static references


def load_static_references(
    folder: str | Path,
    obj_id: int,
    size: int = 224,
    *,
    tol: float = 12.0,
    margin: float = 0.08,
    max_views: int | None = None,
) -> ReferenceSet:
    """Read the user-provided references of ``obj_id``.

    ``folder`` is a dataset root (``<root>/onboarding_static/obj_OOOOOO``), an ``onboarding_static``
    folder, or the object folder itself. Uses ``ref_XXXX_mask.png`` when present, else background
    thresholding with ``refs.json``'s ``background_rgb`` (or the border colour). Missing files raise
    ``FileNotFoundError`` naming them.
    """
    base = Path(folder)
    name = f"obj_{int(obj_id):06d}"
    candidates = [base / STATIC_DIR / name, base / name, base]
    obj_dir = next((c for c in candidates if (c / "refs.json").is_file() or any(c.glob("ref_*_rgb.png"))), None)
    if obj_dir is None:
        raise FileNotFoundError(
            f"static references of object {obj_id} not found: expected {candidates[0] / 'refs.json'} "
            f"and ref_XXXX_rgb.png images (looked in {', '.join(str(c) for c in candidates)})"
        )
    meta_path = obj_dir / "refs.json"
    meta = read_json(meta_path) if meta_path.is_file() else {}
    if not isinstance(meta, dict):
        raise DataFormatError(meta_path, "expected a JSON object")
    entries = meta.get("refs")
    if entries:
        ids = [int(e["ref_id"]) for e in entries]
    else:
        ids = sorted(int(p.name.split("_")[1]) for p in obj_dir.glob("ref_*_rgb.png"))
    if not ids:
        raise FileNotFoundError(f"no reference images ref_XXXX_rgb.png in {obj_dir}")
    if max_views is not None:
        ids = ids[:max_views]
    bg = meta.get("background_rgb")
    fill = np.zeros(3, np.uint8) if bg is None else np.clip(np.round(np.asarray(bg) * 255), 0, 255).astype(np.uint8)
    images, masks = [], []
    for k in ids:
        rgb_path = obj_dir / f"ref_{k:04d}_rgb.png"
        if not rgb_path.is_file():
            raise FileNotFoundError(f"reference image missing: {rgb_path}")
        bgr = read_image(rgb_path, cv2.IMREAD_COLOR)
        rgb = np.ascontiguousarray(bgr[:, :, ::-1])
        mask_path = obj_dir / f"ref_{k:04d}_mask.png"
        if mask_path.is_file():
            m = read_image(mask_path, cv2.IMREAD_GRAYSCALE) > 127
        else:
            m = mask_from_background(rgb, bg, tol)
        if m.shape != rgb.shape[:2]:
            raise DataFormatError(mask_path, f"mask size {m.shape} differs from the image's {rgb.shape[:2]}")
        img, cm = crop_square(rgb, m, size, margin=margin, fill=fill)
        images.append(img)
        masks.append(cm)
    poses = None
    if entries and all("cam_R_m2c" in e and "cam_t_m2c" in e for e in entries):
        by_id = {int(e["ref_id"]): e for e in entries}
        ps = []
        for k in ids:
            T = np.eye(4)
            T[:3, :3] = np.asarray(by_id[k]["cam_R_m2c"], dtype=np.float64).reshape(3, 3)
            T[:3, 3] = np.asarray(by_id[k]["cam_t_m2c"], dtype=np.float64).reshape(3)
            ps.append(T)
        poses = np.stack(ps)
    description = str(meta.get("description") or meta.get("name") or "")
    return ReferenceSet(
        obj_id=int(obj_id),
        images=np.stack(images),
        masks=np.stack(masks),
        description=description,
        poses=poses,
        source=f"static:{obj_dir}",
    )
