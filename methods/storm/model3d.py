"""STORM's 3D model from reference images (paper Eq. 2, Table 3).

The paper feeds masked reference images and their depths into SAM3D, a generative single-image
reconstructor, and evaluates pose estimation with the unaligned reconstruction, the aligned one and
the ground-truth CAD model. SAM3D's weights are not available here, so this module offers:

* ``cad``: the dataset's model unchanged (the "GT + FP" row of Table 3).
* ``fused``: a metric reconstruction from posed masked RGB-D views (TSDF fusion or a depth-refined
  visual hull, marching cubes, vertex colours averaged over the views that see a vertex). Only the
  *relative* camera poses ``T_k T_0^-1`` are used (what a capture rig or SLAM gives), so the mesh is
  built in the first camera's frame and then re-centred on its bounding box: the UNALIGNED model,
  whose frame differs from the dataset's model frame by an unknown rigid transform (as SAM3D's).
* ``sam3d``: ``Sam3dBackend``, a slot for the real network loaded from a local SAM 3D Objects
  checkout (never downloaded). Input preparation and metric scale recovery are implemented and
  tested; the network call itself cannot be exercised without the weights.

Alignment ("aligned" in Table 3) rigidly registers the reconstruction to the CAD frame: PCA-axis
hypotheses (sign/permutation) plus seeded random rotations, each refined by point-to-point ICP and
scored by a truncated symmetric chamfer distance; the best few are refined by point-to-plane ICP.
Scale stays metric unless ``align_scale`` is set.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import json
import logging
import math
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from scipy.spatial import cKDTree

from repro.data.synth.shapes import mesh_diameter
from repro.errors import DatasetNotFoundError
from repro.geometry.icp import ICPConfig, icp
from repro.geometry.rotations import geodesic_distance
from repro.geometry.solvers import umeyama
from repro.types import ObjectModel

log = logging.getLogger(__name__)

VERSION = "1"
"""Bumped when the reconstruction changes; part of ``cache_key``."""
BACKENDS = ("cad", "fused", "sam3d")
FUSIONS = ("tsdf", "visual_hull")
COLOR_MODES = ("mean", "none")
CPU_OVERRIDES: Mapping[str, Any] = {"backend": "fused"}
"""What the cpu preset changes: SAM3D weights are not available offline, so it fuses the posed views."""


# --------------------------------------------------------------------------- config / data


@dataclass(frozen=True)
class Model3DConfig:
    """Settings of the 3D-model stage (defaults = the paper preset: SAM3D, aligned).

    ``voxel_size`` (mm) wins over ``voxel_fraction`` (fraction of the fused points' bounding-box
    diagonal, ~ the diameter); ``truncation`` is the TSDF truncation in voxels; ``max_voxels`` caps
    the grid (the voxel grows when exceeded). ``pixel_offset``: pixel (u, v) shows image point
    (u + offset, v + offset) (0.5 for BOP renders). ``colors``: 'mean' averages the views that see a
    vertex, 'none' paints grey. ``align_starts``: random rotations tried besides the 24 PCA ones.
    """

    backend: str = "sam3d"
    align: bool = True
    fusion: str = "tsdf"
    voxel_size: float | None = None
    voxel_fraction: float = 0.01
    max_voxels: int = 3_000_000
    truncation: float = 4.0
    max_views: int | None = 16
    min_views: int = 1
    sam3d_dir: str | None = None
    sam3d_pipeline: str = "checkpoints/hf/pipeline.yaml"
    colors: str = "mean"
    pixel_offset: float = 0.5
    align_scale: bool = False
    align_samples: int = 3000
    align_starts: int = 24

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"model3d.backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.fusion not in FUSIONS:
            raise ValueError(f"model3d.fusion must be one of {FUSIONS}, got {self.fusion!r}")
        if self.colors not in COLOR_MODES:
            raise ValueError(f"model3d.colors must be one of {COLOR_MODES}, got {self.colors!r}")
        if self.voxel_size is not None and not self.voxel_size > 0:
            raise ValueError(f"model3d.voxel_size must be positive (mm), got {self.voxel_size}")
        if not 0 < self.voxel_fraction < 1:
            raise ValueError(f"model3d.voxel_fraction must be in (0, 1), got {self.voxel_fraction}")
        if not self.truncation >= 1:
            raise ValueError(f"model3d.truncation must be >= 1 voxel, got {self.truncation}")
        if self.min_views < 1 or (self.max_views is not None and self.max_views < self.min_views):
            raise ValueError(f"need 1 <= min_views <= max_views, got {self.min_views}, {self.max_views}")
        if self.max_voxels < 1000 or self.align_samples < 100 or self.align_starts < 0:
            raise ValueError("max_voxels >= 1000, align_samples >= 100 and align_starts >= 0 required")

    @classmethod
    def from_mapping(cls, d: Mapping[str, Any] | None) -> Model3DConfig:
        """Build from a plain mapping; an unknown key raises ``ValueError`` naming it."""
        d = dict(d or {})
        known = {f.name for f in fields(cls)}
        for key in d:
            if key not in known:
                raise ValueError(f"unknown model3d config key {key!r}; known: {', '.join(sorted(known))}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, eq=False)
class PosedView:
    """One reference view: rgb (H, W, 3) uint8, depth (H, W) float32 mm (0 = missing), mask (H, W)
    bool, K (3, 3) and the model-to-camera pose (4, 4, mm) or None when unknown."""

    rgb: np.ndarray
    depth: np.ndarray
    mask: np.ndarray
    K: np.ndarray
    pose: np.ndarray | None = None

    def __post_init__(self) -> None:
        rgb = np.asarray(self.rgb)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"rgb must be HxWx3 uint8, got {rgb.shape} {rgb.dtype}")
        depth = np.asarray(self.depth, dtype=np.float32)
        mask = np.asarray(self.mask, dtype=bool)
        if depth.shape != rgb.shape[:2] or mask.shape != rgb.shape[:2]:
            raise ValueError(f"depth {depth.shape} / mask {mask.shape} differ from rgb {rgb.shape[:2]}")
        K = np.asarray(self.K, dtype=np.float64).reshape(3, 3)
        pose = None if self.pose is None else np.asarray(self.pose, dtype=np.float64).reshape(4, 4)
        for name, arr in (("rgb", rgb), ("depth", depth), ("mask", mask), ("K", K), ("pose", pose)):
            if arr is not None:
                arr = np.array(arr, copy=True)
                arr.setflags(write=False)
                object.__setattr__(self, name, arr)


@dataclass(frozen=True, eq=False)
class Reconstruction:
    """A 3D model for pose estimation and how it relates to the dataset's model frame.

    ``T_model_from_recon`` maps ``model.vertices`` into the dataset model frame: identity when the
    model is the CAD or aligned, else the estimated alignment (``T_align``, recon -> model frame,
    estimated whenever a CAD is available; None otherwise). ``info`` holds diagnostics (chamfer to
    the CAD in mm before/after alignment, n_views, voxel size, seconds, ...).
    """

    model: ObjectModel
    backend: str
    aligned: bool
    T_model_from_recon: np.ndarray
    T_align: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class RawMesh:
    """A triangle mesh (mm) with optional per-vertex normals and colours in [0, 1]."""

    vertices: np.ndarray
    faces: np.ndarray
    normals: np.ndarray | None = None
    colors: np.ndarray | None = None


@dataclass(frozen=True, eq=False)
class Alignment:
    """Rigid (or similarity) transform recon -> CAD frame with its quality.

    ``chamfer_before``: chamfer distance (mm) between the CAD and the reconstruction as given
    (its own frame read as the model frame); ``chamfer_after``: after applying ``T``.
    """

    T: np.ndarray
    scale: float
    inlier_rmse: float
    fitness: float
    chamfer_before: float
    chamfer_after: float
    n_hypotheses: int


# --------------------------------------------------------------------------- loading


def _pose(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = t
    return T


def _spread(n: int, k: int | None) -> list[int]:
    """``k`` indices spread evenly over ``range(n)`` (all when ``k`` is None or >= n), first included."""
    if k is None or k >= n:
        return list(range(n))
    return sorted({round(float(i)) for i in np.linspace(0, n - 1, k)})


def load_onboarding_views(dataset_root: str | Path, obj_id: int, max_views: int | None = None) -> list[PosedView]:
    """Posed masked RGB-D views of ``obj_id`` from ``<root>/onboarding/<obj_id:06d>/`` (BOP layout:
    depth png x depth_scale = mm, visible masks, ``cam_R_m2c``/``cam_t_m2c``)."""
    from repro.data.bop import BopDataset

    root = Path(dataset_root)
    folder = root / "onboarding" / f"{obj_id:06d}"
    if not folder.is_dir():
        raise DatasetNotFoundError(f"no onboarding data for object {obj_id}: expected the folder {folder} "
                                   f"(posed reference views, BOP layout; see repro.data.synth)")
    ds = BopDataset(root, split="onboarding", targets=None)
    im_ids = ds.scene(obj_id).im_ids
    views = []
    for k in _spread(len(im_ids), max_views):
        frame = ds.load_frame(obj_id, im_ids[k], with_gt=True, load_masks=True)
        gts = [g for g in frame.gt or () if g.obj_id == obj_id]
        if frame.depth is None:
            raise DatasetNotFoundError(f"onboarding view {im_ids[k]} of object {obj_id} has no depth in {folder}")
        if not gts:
            raise DatasetNotFoundError(f"onboarding view {im_ids[k]} in {folder} has no pose of object {obj_id}")
        g = gts[0]
        mask = g.mask_visib if g.mask_visib is not None else g.mask
        if mask is None:
            raise DatasetNotFoundError(f"onboarding view {im_ids[k]}: no mask_visib/ or mask/ file in {folder}")
        views.append(PosedView(rgb=frame.rgb, depth=frame.depth, mask=mask, K=frame.K, pose=_pose(g.R, g.t)))
    return views


# --------------------------------------------------------------------------- geometry helpers


def backproject(view: PosedView, pixel_offset: float = 0.5) -> np.ndarray:
    """Camera-frame points (N, 3) of the masked pixels with depth."""
    v, u = np.nonzero(view.mask & (view.depth > 0))
    z = view.depth[v, u].astype(np.float64)
    K = view.K
    x = (u + pixel_offset - K[0, 2]) / K[0, 0] * z
    y = (v + pixel_offset - K[1, 2]) / K[1, 1] * z
    return np.column_stack([x, y, z])


def _project(X: np.ndarray, K: np.ndarray, shape: tuple[int, int], pixel_offset: float
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest pixel (u, v) of camera-frame points (N, 3) and whether it lies in the image (z > 0)."""
    z = X[:, 2]
    ok = z > 1e-6
    zs = np.where(ok, z, 1.0)
    u = np.rint(K[0, 0] * X[:, 0] / zs + K[0, 2] - pixel_offset).astype(np.int64)
    v = np.rint(K[1, 1] * X[:, 1] / zs + K[1, 2] - pixel_offset).astype(np.int64)
    ok &= (u >= 0) & (u < shape[1]) & (v >= 0) & (v < shape[0])
    return np.where(ok, u, 0), np.where(ok, v, 0), ok


def relative_poses(views: Sequence[PosedView]) -> list[np.ndarray]:
    """``T_k T_0^-1`` (4, 4): first camera frame -> camera k (the only pose information fusion uses)."""
    if any(v.pose is None for v in views):
        raise ValueError("fusion needs posed views (camera poses relative to the first view); got a view "
                         "with pose=None")
    T0_inv = np.linalg.inv(views[0].pose)
    return [v.pose @ T0_inv for v in views]


def face_normals_and_areas(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    tri = vertices[faces]
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    area2 = np.linalg.norm(cross, axis=1)
    return cross / np.maximum(area2, 1e-12)[:, None], 0.5 * area2


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals."""
    tri = vertices[faces]
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    n = np.zeros_like(vertices)
    for k in range(3):
        np.add.at(n, faces[:, k], cross)
    norm = np.linalg.norm(n, axis=1, keepdims=True)
    return np.where(norm > 0, n / np.maximum(norm, 1e-12), np.array([0.0, 0.0, 1.0]))


def signed_volume(vertices: np.ndarray, faces: np.ndarray) -> float:
    tri = vertices[faces]
    return float(np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6.0)


def sample_surface(vertices: np.ndarray, faces: np.ndarray, n: int, rng: np.random.Generator
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Area-weighted surface samples (n, 3) and their face normals (n, 3)."""
    fn, area = face_normals_and_areas(vertices, faces)
    if area.sum() <= 0:
        raise ValueError("mesh has zero surface area")
    idx = rng.choice(len(faces), size=n, p=area / area.sum())
    a, b = rng.random(n), rng.random(n)
    flip = a + b > 1
    a[flip], b[flip] = 1 - a[flip], 1 - b[flip]
    t = vertices[faces[idx]]
    return t[:, 0] + a[:, None] * (t[:, 1] - t[:, 0]) + b[:, None] * (t[:, 2] - t[:, 0]), fn[idx]


def chamfer_distance(a: np.ndarray, b: np.ndarray, truncate: float | None = None) -> float:
    """Symmetric chamfer distance (mm): mean of the two mean nearest-neighbour distances,
    each distance capped at ``truncate`` when given."""
    da, _ = cKDTree(b).query(a)
    db, _ = cKDTree(a).query(b)
    if truncate is not None:
        da, db = np.minimum(da, truncate), np.minimum(db, truncate)
    return 0.5 * float(da.mean() + db.mean())


def transform(points: np.ndarray, T: np.ndarray) -> np.ndarray:
    return points @ T[:3, :3].T + T[:3, 3]


# --------------------------------------------------------------------------- fusion


@dataclass(frozen=True, eq=False)
class VoxelGrid:
    """Axis-aligned grid in the first camera's frame: voxel ``(i, j, k)`` centre = origin + (i, j, k) * size."""

    origin: np.ndarray
    size: float
    shape: tuple[int, int, int]

    def centres(self) -> np.ndarray:
        axes = [self.origin[d] + self.size * np.arange(self.shape[d], dtype=np.float64) for d in range(3)]
        g = np.meshgrid(*axes, indexing="ij")
        return np.stack([a.ravel() for a in g], axis=1)


def make_grid(views: Sequence[PosedView], rel: Sequence[np.ndarray], cfg: Model3DConfig) -> VoxelGrid:
    """A grid around the back-projected masked depth of every view (robust bounds + margin)."""
    pts = []
    for v, T in zip(views, rel, strict=True):
        P = backproject(v, cfg.pixel_offset)
        if len(P):
            Tinv = np.linalg.inv(T)
            pts.append(transform(P, Tinv))
    if not pts:
        raise ValueError("no masked pixel with depth in any view: nothing to reconstruct")
    P = np.concatenate(pts)
    lo, hi = np.percentile(P, 0.05, axis=0), np.percentile(P, 99.95, axis=0)
    diag = float(np.linalg.norm(hi - lo))
    size = cfg.voxel_size if cfg.voxel_size is not None else cfg.voxel_fraction * diag
    margin = 0.05 * diag
    for _ in range(64):
        pad = margin + (cfg.truncation + 2) * size
        shape = tuple(math.ceil((hi[d] - lo[d] + 2 * pad) / size) + 1 for d in range(3))
        if math.prod(shape) <= cfg.max_voxels:
            break
        size *= 1.1
    return VoxelGrid(origin=lo - pad, size=float(size), shape=shape)


def _integrate(views: Sequence[PosedView], rel: Sequence[np.ndarray], grid: VoxelGrid, cfg: Model3DConfig
               ) -> np.ndarray:
    """A signed field on the grid, positive outside the object, zero on its surface."""
    X = grid.centres()
    n = len(X)
    trunc = cfg.truncation * grid.size
    if cfg.fusion == "tsdf":
        acc = np.zeros(n)
        weight = np.zeros(n)
    else:
        free = np.zeros(n, dtype=bool)
    for view, T in zip(views, rel, strict=True):
        Xc = transform(X, T)
        u, v, inside = _project(Xc, view.K, view.depth.shape, cfg.pixel_offset)
        d = view.depth[v, u].astype(np.float64)
        m = view.mask[v, u] & inside
        outside_sil = inside & ~view.mask[v, u]
        has_d = m & (d > 0)
        sdf = d - Xc[:, 2]
        if cfg.fusion == "tsdf":
            near = has_d & (sdf >= -trunc)
            acc[near] += np.clip(sdf[near] / trunc, -1.0, 1.0)
            weight[near] += 1.0
            acc[outside_sil] += 1.0
            weight[outside_sil] += 1.0
        else:
            free |= outside_sil | (has_d & (sdf > 0.5 * grid.size))
    if cfg.fusion == "tsdf":
        field_ = np.where(weight > 0, acc / np.maximum(weight, 1e-12), -1.0)
    else:
        from scipy.ndimage import gaussian_filter

        occ = gaussian_filter((~free).reshape(grid.shape).astype(np.float64), sigma=0.7)
        return 0.5 - occ
    return field_.reshape(grid.shape)


def _extract(field_: np.ndarray, grid: VoxelGrid) -> RawMesh:
    from skimage.measure import marching_cubes

    padded = np.pad(field_, 1, mode="constant", constant_values=1.0)
    if padded.min() >= 0 or padded.max() <= 0:
        raise ValueError("the fused volume has no surface (check masks, depth and poses)")
    verts, faces, _, _ = marching_cubes(padded, level=0.0, spacing=(grid.size,) * 3)
    verts = verts.astype(np.float64) - grid.size + grid.origin
    faces = faces.astype(np.int64)
    verts, faces = _largest_component(verts, faces)
    if signed_volume(verts, faces) < 0:
        faces = faces[:, ::-1].copy()
    return RawMesh(verts, faces, vertex_normals(verts, faces))


def _largest_component(verts: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keep the connected component with the most faces (drops floaters from mask noise)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(verts)
    rows = np.concatenate([faces[:, 0], faces[:, 1], faces[:, 2]])
    cols = np.concatenate([faces[:, 1], faces[:, 2], faces[:, 0]])
    ncomp, labels = connected_components(coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n)), directed=False)
    if ncomp == 1:
        return verts, faces
    face_lab = labels[faces[:, 0]]
    best = int(np.argmax(np.bincount(face_lab, minlength=ncomp)))
    keep_f = faces[face_lab == best]
    used = np.unique(keep_f)
    remap = np.full(n, -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    return verts[used], remap[keep_f]


def vertex_colors(vertices: np.ndarray, normals: np.ndarray | None, views: Sequence[PosedView],
                  rel: Sequence[np.ndarray], tol: float, pixel_offset: float) -> np.ndarray:
    """Per-vertex colour in [0, 1]: mean over the views where the vertex is visible (in the mask,
    at the observed depth within ``tol`` mm, facing the camera); unseen vertices copy the nearest seen."""
    acc = np.zeros((len(vertices), 3))
    cnt = np.zeros(len(vertices))
    for view, T in zip(views, rel, strict=True):
        Xc = transform(vertices, T)
        u, v, ok = _project(Xc, view.K, view.depth.shape, pixel_offset)
        d = view.depth[v, u].astype(np.float64)
        ok &= view.mask[v, u] & (d > 0) & (np.abs(d - Xc[:, 2]) < tol)
        if normals is not None:
            ok &= np.einsum("ij,ij->i", normals @ T[:3, :3].T, Xc) < 0
        acc[ok] += view.rgb[v[ok], u[ok]].astype(np.float64) / 255.0
        cnt[ok] += 1
    seen = cnt > 0
    colors = np.full((len(vertices), 3), 0.5)
    if not seen.any():
        return colors
    colors[seen] = acc[seen] / cnt[seen, None]
    if (~seen).any():
        _, j = cKDTree(vertices[seen]).query(vertices[~seen])
        colors[~seen] = colors[seen][j]
    return colors


def fuse_views(views: Sequence[PosedView], cfg: Model3DConfig) -> tuple[RawMesh, VoxelGrid]:
    """Mesh (first camera frame, mm) fused from posed masked RGB-D views, and the grid used."""
    rel = relative_poses(views)
    grid = make_grid(views, rel, cfg)
    mesh = _extract(_integrate(views, rel, grid, cfg), grid)
    colors = None
    if cfg.colors == "mean":
        tol = max(2.0 * grid.size, 0.5 * cfg.truncation * grid.size)
        colors = vertex_colors(mesh.vertices, mesh.normals, views, rel, tol, cfg.pixel_offset)
    return RawMesh(mesh.vertices, mesh.faces, mesh.normals, colors), grid


# --------------------------------------------------------------------------- SAM3D slot


class Sam3dUnavailableError(RuntimeError):
    """The SAM 3D Objects code or weights are not available locally."""


@dataclass(frozen=True, eq=False)
class Sam3dInput:
    """What SAM 3D Objects takes for one view: RGBA image (alpha = mask), the mask, and a metric
    pointmap (H, W, 3, metres, camera frame, NaN where unknown) derived from the depth."""

    rgba: np.ndarray
    mask: np.ndarray
    pointmap: np.ndarray
    K: np.ndarray


def prepare_sam3d_input(view: PosedView, pixel_offset: float = 0.5) -> Sam3dInput:
    """SAM3D input of a view: RGBA with the mask as alpha, pointmap in metres from the depth."""
    H, W = view.depth.shape
    rgba = np.concatenate([view.rgb, (view.mask * 255).astype(np.uint8)[:, :, None]], axis=2)
    vv, uu = np.mgrid[0:H, 0:W].astype(np.float64)
    z = view.depth.astype(np.float64)
    K = view.K
    pm = np.stack([(uu + pixel_offset - K[0, 2]) / K[0, 0] * z, (vv + pixel_offset - K[1, 2]) / K[1, 1] * z, z],
                  axis=-1) / 1000.0
    pm[z <= 0] = np.nan
    return Sam3dInput(rgba=rgba, mask=view.mask.copy(), pointmap=pm.astype(np.float32), K=K.copy())


def metric_scale_from_depth(points_cam: np.ndarray, view: PosedView, pixel_offset: float = 0.5) -> float:
    """Scale that makes a camera-frame reconstruction (known up to scale about the camera centre)
    agree with the observed depth: median of observed / predicted depth over the visible points
    (a z-buffer keeps the nearest point per pixel) inside the mask."""
    u, v, ok = _project(points_cam, view.K, view.depth.shape, pixel_offset)
    z = points_cam[:, 2]
    idx = np.flatnonzero(ok)
    if not len(idx):
        raise ValueError("no reconstructed point projects into the view")
    pix = v[idx] * view.depth.shape[1] + u[idx]
    zbuf = np.full(view.depth.size, np.inf)
    np.minimum.at(zbuf, pix, z[idx])
    front = idx[z[idx] <= zbuf[pix] * (1 + 1e-9)]
    d = view.depth[v[front], u[front]].astype(np.float64)
    good = view.mask[v[front], u[front]] & (d > 0)
    if good.sum() < 3:
        raise ValueError("too few visible reconstructed points over the masked depth to fix the scale")
    return float(np.median(d[good] / z[front][good]))


@contextlib.contextmanager
def _on_sys_path(path: Path) -> Iterator[None]:
    sys.path.insert(0, str(path))
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(str(path))


class Sam3dBackend:
    """SAM 3D Objects (facebookresearch/sam-3d-objects) from a local checkout with its checkpoints.

    Expected layout: ``<dir>/sam3d_objects/`` (the package), ``<dir>/notebook/inference.py`` (its
    ``Inference`` wrapper) and ``<dir>/<pipeline>`` (default ``checkpoints/hf/pipeline.yaml``). Nothing
    is downloaded. The network call (``reconstruct``) follows the repository's documented notebook
    API and is NOT tested here (no weights); input preparation and metric scaling are.
    """

    PACKAGE = "sam3d_objects"

    def __init__(self, sam3d_dir: str | Path | None, pipeline: str = "checkpoints/hf/pipeline.yaml") -> None:
        if sam3d_dir is None:
            raise Sam3dUnavailableError(
                "model3d backend 'sam3d' needs model3d.sam3d_dir: a local checkout of "
                "facebookresearch/sam-3d-objects with its checkpoints (nothing is downloaded); "
                "use backend 'fused' (posed RGB-D fusion) or 'cad' instead")
        self.root = Path(sam3d_dir).expanduser()
        if not self.root.is_dir():
            raise Sam3dUnavailableError(f"SAM 3D Objects directory not found: {self.root} (model3d.sam3d_dir)")
        self.pipeline = self.root / pipeline
        if not (self.root / self.PACKAGE).is_dir():
            raise Sam3dUnavailableError(f"package {self.PACKAGE!r} not found in {self.root}: expected "
                                        f"{self.root / self.PACKAGE}/ (a sam-3d-objects checkout)")
        if not (self.root / "notebook" / "inference.py").is_file():
            raise Sam3dUnavailableError("SAM 3D Objects inference wrapper missing: "
                                        f"{self.root / 'notebook' / 'inference.py'}")
        if not self.pipeline.is_file():
            raise Sam3dUnavailableError(f"SAM 3D Objects checkpoint config missing: {self.pipeline} "
                                        f"(download the checkpoints into {self.pipeline.parent} yourself)")
        self._inference = None

    def _load(self) -> Any:
        if self._inference is None:
            with _on_sys_path(self.root), _on_sys_path(self.root / "notebook"):
                try:
                    module = importlib.import_module("inference")
                except ImportError as exc:
                    raise Sam3dUnavailableError(f"cannot import SAM 3D Objects from {self.root}: {exc}") from exc
            self._inference = module.Inference(str(self.pipeline), compile=False)
        return self._inference

    def reconstruct(self, views: Sequence[PosedView], *, seed: int, pixel_offset: float = 0.5) -> RawMesh:
        """Mesh (mm) in the camera frame of the view with the largest mask (SAM3D is single-view),
        scaled to metric with that view's depth. Untested here (needs the weights)."""
        best = max(range(len(views)), key=lambda i: int(views[i].mask.sum()))
        inp = prepare_sam3d_input(views[best], pixel_offset)
        out = self._load()(inp.rgba, inp.mask, seed=seed, pointmap=inp.pointmap)
        mesh = out["glb"]
        verts = np.asarray(mesh.vertices, dtype=np.float64) * 1000.0
        faces = np.asarray(mesh.faces, dtype=np.int64)
        verts *= metric_scale_from_depth(verts, views[best], pixel_offset)
        if best != 0 and all(v.pose is not None for v in views):
            verts = transform(verts, np.linalg.inv(relative_poses(views)[best]))
        return RawMesh(verts, faces, vertex_normals(verts, faces))


# --------------------------------------------------------------------------- alignment


def _pca(P: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    c = P.mean(axis=0)
    _, vecs = np.linalg.eigh(np.cov((P - c).T))
    return c, vecs[:, ::-1]


def _hypotheses(src: np.ndarray, dst: np.ndarray, n_random: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Rotations mapping ``src``'s PCA frame onto ``dst``'s (24 proper sign/permutation choices) and
    ``n_random`` random rotations."""
    _, Vs = _pca(src)
    _, Vd = _pca(dst)
    out = []
    for perm in ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)):
        for signs in ((1, 1, 1), (1, -1, -1), (-1, 1, -1), (-1, -1, 1), (-1, -1, -1), (-1, 1, 1), (1, -1, 1),
                      (1, 1, -1)):
            R = Vd @ (np.eye(3)[list(perm)] * np.array(signs)[:, None]) @ Vs.T
            if np.linalg.det(R) > 0:
                out.append(R)
    q = rng.normal(size=(n_random, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    for w, x, y, z in q:
        out.append(np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                             [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                             [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]]))
    return out


def align_to_model(recon: RawMesh | ObjectModel, cad: ObjectModel, *, seed: int, n_samples: int = 3000,
                   n_random: int = 24, with_scale: bool = False, fine_distance: float | None = None) -> Alignment:
    """Register ``recon`` to ``cad`` (both mm): ``T`` maps recon coordinates into the CAD frame.

    Multi-start (PCA-axis hypotheses + random rotations, centroids matched) point-to-point ICP on a
    subsample, scored by a truncated symmetric chamfer; the best three are refined by point-to-plane
    ICP on all samples (``fine_distance`` = final inlier distance, default 1% of the diameter) and the
    best by the same score wins. ``with_scale`` finishes with a similarity fit on nearest neighbours.
    """
    rng = np.random.default_rng(seed)
    src, _ = sample_surface(np.asarray(recon.vertices, float), np.asarray(recon.faces), n_samples, rng)
    dst, dst_n = sample_surface(cad.vertices, cad.faces, n_samples, rng)
    diam = float(cad.diameter)
    trunc = 0.1 * diam
    before = chamfer_distance(src, dst)
    cs, cd = src.mean(axis=0), dst.mean(axis=0)
    sub = src[rng.choice(len(src), size=min(800, len(src)), replace=False)]
    coarse = ICPConfig(method="point_to_point", max_iterations=30, distance_start=0.3 * diam,
                       distance_end=0.03 * diam, distance_decay=0.8, rotation_tolerance=1e-4,
                       translation_tolerance=1e-2)
    dst_tree = cKDTree(dst)

    def score(R: np.ndarray, t: np.ndarray, s: float = 1.0) -> float:
        moved = s * src @ R.T + t
        da, _ = dst_tree.query(moved)
        db, _ = cKDTree(moved).query(dst)
        return 0.5 * float(np.minimum(da, trunc).mean() + np.minimum(db, trunc).mean())

    cands = []
    hyps = _hypotheses(src, dst, n_random, rng)
    for R0 in hyps:
        res = icp(sub, dst, R0, cd - R0 @ cs, config=coarse)
        cands.append((score(res.R, res.t), res.R, res.t))
    cands.sort(key=lambda c: c[0])
    fine_end = fine_distance if fine_distance is not None else 0.01 * diam
    fine = ICPConfig(method="point_to_plane", max_iterations=40, distance_start=max(0.05 * diam, 2 * fine_end),
                     distance_end=fine_end, distance_decay=0.8)
    best = None
    for _, R0, t0 in cands[:3]:
        res = icp(src, dst, R0, t0, target_normals=dst_n, config=fine)
        sc = score(res.R, res.t)
        if best is None or sc < best[0]:
            best = (sc, res)
    _, res = best
    R, t, s = res.R, res.t, 1.0
    if with_scale:
        for _ in range(10):
            moved = s * src @ R.T + t
            d, j = dst_tree.query(moved)
            keep = d < max(3 * fine_end, np.percentile(d, 90))
            s, R, t = umeyama(src[keep], dst[j[keep]], with_scale=True)
    T = np.eye(4)
    T[:3, :3] = s * R
    T[:3, 3] = t
    after = chamfer_distance(transform(src, T), dst)
    return Alignment(T=T, scale=float(s), inlier_rmse=float(res.inlier_rmse), fitness=float(res.fitness),
                     chamfer_before=before, chamfer_after=after, n_hypotheses=len(hyps))


# --------------------------------------------------------------------------- entry point


def symmetry_transforms(model: ObjectModel, n_continuous: int = 360) -> list[np.ndarray]:
    """Identity, the discrete symmetries and ``n_continuous`` steps of each continuous one (4x4)."""
    out = [np.eye(4), *[np.asarray(S) for S in model.symmetries_discrete]]
    for c in model.symmetries_continuous:
        K = np.array([[0, -c.axis[2], c.axis[1]], [c.axis[2], 0, -c.axis[0]], [-c.axis[1], c.axis[0], 0]])
        for a in np.linspace(0, 2 * np.pi, n_continuous, endpoint=False)[1:]:
            R = np.eye(3) + math.sin(a) * K + (1 - math.cos(a)) * K @ K
            out.extend(_pose(R, c.offset - R @ c.offset) @ S for S in list(out[:1 + len(model.symmetries_discrete)]))
    return out


def _view_digest(views: Sequence[PosedView]) -> str:
    h = hashlib.sha256()
    for v in views:
        for arr in (v.rgb, v.depth, v.mask, v.K, v.pose):
            h.update(b"|" if arr is None else np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()[:16]


def cache_key(cad: ObjectModel, cfg: Model3DConfig, views: Sequence[PosedView] | None) -> str:
    """A stable key for caching a reconstruction: module version, CAD hash, config, view contents."""
    payload = json.dumps({"v": VERSION, "cad": cad.content_hash, "cfg": cfg.to_dict(),
                          "views": _view_digest(views) if views else None}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def _model(cad: ObjectModel, verts: np.ndarray, faces: np.ndarray, normals: np.ndarray | None,
           colors: np.ndarray | None, symmetries: bool) -> ObjectModel:
    return ObjectModel(obj_id=cad.obj_id, vertices=verts, faces=faces, diameter=mesh_diameter(verts),
                       normals=normals, colors=colors,
                       symmetries_discrete=cad.symmetries_discrete if symmetries else (),
                       symmetries_continuous=cad.symmetries_continuous if symmetries else (),
                       name=cad.name, description=cad.description)


def build_object_model(cad: ObjectModel, views: Sequence[PosedView] | None, cfg: Model3DConfig, *,
                       seed: int) -> Reconstruction:
    """The 3D model used for pose estimation (see the module docstring for the backends).

    The unaligned model lives in a canonical frame (bounding-box centre, first camera's axes) and
    has no symmetries; the aligned one is expressed in the CAD frame and carries the CAD's symmetries.
    """
    t0 = time.perf_counter()
    eye = np.eye(4)
    if cfg.backend == "cad":
        return Reconstruction(model=cad, backend="cad", aligned=True, T_model_from_recon=eye, T_align=eye,
                              info={"n_views": 0, "chamfer_before_mm": 0.0, "chamfer_after_mm": 0.0, "seconds": 0.0})
    views = list(views or [])
    views = [views[i] for i in _spread(len(views), cfg.max_views)]
    if len(views) < cfg.min_views:
        raise ValueError(f"model3d backend {cfg.backend!r} needs at least {cfg.min_views} reference views, "
                         f"got {len(views)}")
    info: dict[str, Any] = {"n_views": len(views)}
    if cfg.backend == "fused":
        raw, grid = fuse_views(views, cfg)
        info.update(voxel_size_mm=grid.size, grid_shape=list(grid.shape), fusion=cfg.fusion)
        fine = 1.5 * grid.size
    else:
        raw = Sam3dBackend(cfg.sam3d_dir, cfg.sam3d_pipeline).reconstruct(views, seed=seed,
                                                                          pixel_offset=cfg.pixel_offset)
        fine = None
    info["seconds_reconstruct"] = time.perf_counter() - t0
    centre = 0.5 * (raw.vertices.min(axis=0) + raw.vertices.max(axis=0))
    T_recon_from_cam0 = eye.copy()
    T_recon_from_cam0[:3, 3] = -centre
    verts = raw.vertices - centre
    if views[0].pose is not None:
        T_true = np.linalg.inv(views[0].pose) @ np.linalg.inv(T_recon_from_cam0)
        info["T_model_from_recon_poses"] = T_true.tolist()
    unaligned = _model(cad, verts, raw.faces, raw.normals, raw.colors, symmetries=False)
    info.update(n_vertices=len(verts), n_faces=len(raw.faces), diameter_mm=unaligned.diameter,
                cad_diameter_mm=cad.diameter)
    al = align_to_model(unaligned, cad, seed=seed, n_samples=cfg.align_samples, n_random=cfg.align_starts,
                        with_scale=cfg.align_scale, fine_distance=fine)
    info.update(chamfer_before_mm=al.chamfer_before, chamfer_after_mm=al.chamfer_after,
                chamfer_before_rel=al.chamfer_before / cad.diameter, chamfer_after_rel=al.chamfer_after / cad.diameter,
                align_inlier_rmse_mm=al.inlier_rmse, align_fitness=al.fitness, align_scale=al.scale,
                align_hypotheses=al.n_hypotheses)
    if "T_model_from_recon_poses" in info:
        Tt = np.asarray(info["T_model_from_recon_poses"])
        errs = [(math.degrees(geodesic_distance(Ts[:3, :3], al.T[:3, :3] / al.scale)),
                 float(np.linalg.norm(Ts[:3, 3] - al.T[:3, 3]))) for Ts in (S @ Tt for S in symmetry_transforms(cad))]
        info["align_rot_err_deg"], info["align_trans_err_mm"] = errs[0]
        info["align_rot_err_sym_deg"], info["align_trans_err_sym_mm"] = min(errs)
    if cfg.align:
        R = al.T[:3, :3] / al.scale
        normals = None if raw.normals is None else raw.normals @ R.T
        model = _model(cad, transform(verts, al.T), raw.faces, normals, raw.colors, symmetries=True)
        T_model = eye
    else:
        model, T_model = unaligned, al.T
    info["seconds"] = time.perf_counter() - t0
    log.info("model3d obj %d (%s, %s): %d views, chamfer %.2f -> %.2f mm, %.1f s", cad.obj_id, cfg.backend,
             "aligned" if cfg.align else "unaligned", len(views), al.chamfer_before, al.chamfer_after, info["seconds"])
    return Reconstruction(model=model, backend=cfg.backend, aligned=cfg.align, T_model_from_recon=T_model,
                          T_align=al.T, info=info)
