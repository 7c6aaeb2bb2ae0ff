"""BOP ground-truth annotation (bop_toolkit's ``calc_gt_info.py`` / ``calc_gt_masks.py``) and
``repro data verify``.

``compute_gt_info`` computes, per GT object of an image, what a BOP dataset stores: the full mask
(``mask/``), the visible mask (``mask_visib/``) and the ``scene_gt_info`` entry. It follows
bop_toolkit: each object rendered alone on a 3x larger canvas (so truncated parts count in
``px_count_all`` and ``bbox_obj``; objects whose every vertex projects inside the image are
rendered on the image itself, which gives the same pixels with a nine times smaller read-back),
depth converted to distance images with integer pixel coordinates
(``misc.depth_im_to_dist_im_fast``), and the ``bop19`` visibility test of
``visibility.estimate_visib_mask_gt``: visible where the object is rendered and the scene distance
is missing (0) or not nearer than the rendered one by more than ``delta``. The synthetic BOP
generator annotates with it.

``verify_dataset`` (``repro data verify``) re-annotates a BOP dataset from its poses, intrinsics,
models and stored depth, and compares the renders and results with the stored depth images, full
masks and ``visib_fract`` of ``scene_gt_info``.

``sample_offset`` defaults to ``BOP_SAMPLE_OFFSET`` (0.5) because BOP's annotations are made with
bop_toolkit's OpenGL renderers, which sample pixel ``(u, v)`` at the image point
``(u + 0.5, v + 0.5)``; with the OpenCV convention (0.0) silhouettes shift by half a pixel and mask
IoUs of small objects drop.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from repro.render.base import Renderer
from repro.render.helpers import large_canvas
from repro.render.scene import BOP_SAMPLE_OFFSET, RenderInstance, RenderScene
from repro.types import CameraIntrinsics, Frame, ObjectModel

log = logging.getLogger(__name__)

DEPTH_TOLERANCE_MM = 1.0
MIN_MASK_PIXELS = 100


@dataclass
class VerifyStats:
    """Accumulated comparison counts (mergeable across scenes)."""

    n_gt: int = 0
    depth_pixels: int = 0
    depth_within: int = 0
    depth_abs_err_sum: float = 0.0
    mask_ious: list[float] = field(default_factory=list)
    visib_fract_diffs: list[float] = field(default_factory=list)
    px_count_all_diffs: list[int] = field(default_factory=list)

    def merge(self, other: VerifyStats) -> VerifyStats:
        return VerifyStats(
            n_gt=self.n_gt + other.n_gt,
            depth_pixels=self.depth_pixels + other.depth_pixels,
            depth_within=self.depth_within + other.depth_within,
            depth_abs_err_sum=self.depth_abs_err_sum + other.depth_abs_err_sum,
            mask_ious=self.mask_ious + other.mask_ious,
            visib_fract_diffs=self.visib_fract_diffs + other.visib_fract_diffs,
            px_count_all_diffs=self.px_count_all_diffs + other.px_count_all_diffs,
        )

    def summary(self) -> dict[str, Any]:
        """The ``repro data verify`` JSON keys (plus counts)."""
        ious = np.asarray(self.mask_ious, dtype=np.float64)
        vf = np.abs(np.asarray(self.visib_fract_diffs, dtype=np.float64))
        px = np.abs(np.asarray(self.px_count_all_diffs, dtype=np.int64))
        return {
            "depth_within_1mm": float(self.depth_within / self.depth_pixels) if self.depth_pixels else float("nan"),
            "mask_iou_min": float(ious.min()) if len(ious) else float("nan"),
            "mask_iou_mean": float(ious.mean()) if len(ious) else float("nan"),
            "visib_fract_max_abs_diff": float(vf.max()) if len(vf) else float("nan"),
            "visib_fract_mean_abs_diff": float(vf.mean()) if len(vf) else float("nan"),
            "px_count_all_max_abs_diff": int(px.max()) if len(px) else 0,
            "depth_mean_abs_err_mm": float(self.depth_abs_err_sum / self.depth_pixels) if self.depth_pixels else 0.0,
            "n_gt": self.n_gt,
            "n_depth_pixels": self.depth_pixels,
            "n_masks_compared": len(self.mask_ious),
            "n_visib_compared": len(self.visib_fract_diffs),
        }


def depth_to_distance(depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Distance from the camera centre per pixel, as bop_toolkit computes it (integer pixel coords)."""
    h, w = depth.shape
    xs, ys = np.meshgrid(np.arange(w), np.arange(h))
    px = (xs - K[0, 2]) / np.float64(K[0, 0])
    py = (ys - K[1, 2]) / np.float64(K[1, 1])
    return np.sqrt((px * depth) ** 2 + (py * depth) ** 2 + depth.astype(np.float64) ** 2)


def visible_mask_bop19(dist_test: np.ndarray, dist_model: np.ndarray, delta: float) -> np.ndarray:
    """bop_toolkit ``visibility._estimate_visib_mask`` in ``bop19`` mode (missing depth = visible)."""
    d_diff = dist_model.astype(np.float32) - dist_test.astype(np.float32)
    return np.logical_and(np.logical_or(d_diff <= delta, dist_test == 0), dist_model > 0)


@dataclass(frozen=True, eq=False)
class GTAnnotation:
    """bop_toolkit's annotation of one GT object in one image.

    ``depth``: the object rendered alone, in the image (mm, 0 = background); ``mask``: its full
    silhouette (BOP ``mask/``); ``mask_visib``: its visible part (``mask_visib/``); ``info``: the
    ``scene_gt_info`` entry (``bbox_obj``, ``bbox_visib``, ``px_count_all``, ``px_count_valid``,
    ``px_count_visib``, ``visib_fract``).
    """

    depth: np.ndarray
    mask: np.ndarray
    mask_visib: np.ndarray
    info: dict[str, Any]

    @property
    def visib_fract(self) -> float:
        return self.info["visib_fract"]


def _mask_bbox(mask: np.ndarray, dx: int = 0, dy: int = 0) -> list[int]:
    """bop_toolkit's ``calc_2d_bbox`` of a non-empty mask: (x, y, w, h) with w = max - min,
    shifted by (-dx, -dy)."""
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    return [int(xs[0] - dx), int(ys[0] - dy), int(xs[-1] - xs[0]), int(ys[-1] - ys[0])]


def _inside_image(model: ObjectModel, R: np.ndarray, t: np.ndarray, camera: CameraIntrinsics) -> bool:
    """True when every vertex projects at least a pixel inside the image, so no pixel sample
    (offset in [0, 1]) outside the image can be covered: the silhouette is not truncated."""
    pc = model.vertices @ R.T + t
    if np.any(pc[:, 2] <= 0):
        return False
    uv = pc[:, :2] / pc[:, 2:3] * np.array([camera.fx, camera.fy]) + np.array([camera.cx, camera.cy])
    return bool(np.all(uv >= 1.0) and np.all(uv <= np.array([camera.width, camera.height]) - 2.0))


def compute_gt_info(renderer: Renderer, camera: CameraIntrinsics, scene_depth_mm: np.ndarray,
                    poses: Sequence[tuple[ObjectModel, np.ndarray, np.ndarray]], *, delta: float = 15.0,
                    sample_offset: float = BOP_SAMPLE_OFFSET) -> list[GTAnnotation]:
    """Annotations of GT objects ``(model, R, t)`` in an image with depth ``scene_depth_mm``, as
    bop_toolkit computes them (see the module docstring).

    ``scene_depth_mm`` should be the depth as stored (after quantisation). ``delta`` (mm) is the
    visibility tolerance; ``sample_offset`` the renders' pixel sampling convention.
    """
    W, H = camera.width, camera.height
    big = large_canvas(camera)
    canvas_offset = ((big.width - W) // 2, (big.height - H) // 2)
    offsets = [(0, 0) if _inside_image(m, R, t, camera) else canvas_offset for m, R, t in poses]
    scenes = [RenderScene(camera if off == (0, 0) else big, (RenderInstance(m, R, t),), sample_offset=sample_offset)
              for (m, R, t), off in zip(poses, offsets, strict=True)]
    results = renderer.render_batch(scenes, {"depth"}) if scenes else []
    dist_im = depth_to_distance(scene_depth_mm, camera.K)
    annotations = []
    for res, (ox, oy) in zip(results, offsets, strict=True):
        depth = np.ascontiguousarray(res.depth[oy:oy + H, ox:ox + W])
        dist_gt = depth_to_distance(depth, camera.K)
        mask = dist_gt > 0
        visib = visible_mask_bop19(dist_im, dist_gt, delta)
        mask_all = res.depth > 0
        px_all = int(mask_all.sum())
        px_visib = int(visib.sum())
        info: dict[str, Any] = {
            "bbox_obj": [-1, -1, -1, -1], "bbox_visib": [-1, -1, -1, -1], "px_count_all": px_all,
            "px_count_valid": int((dist_im[mask] > 0).sum()), "px_count_visib": px_visib,
            "visib_fract": float(px_visib / px_all) if px_all > 0 else 0.0}
        if px_visib > 0:
            info["bbox_obj"] = _mask_bbox(mask_all, ox, oy)
            info["bbox_visib"] = _mask_bbox(visib)
        annotations.append(GTAnnotation(depth, mask, visib, info))
    return annotations


def verify_frame(frame: Frame, objects: dict[int, ObjectModel], renderer: Renderer, *,
                 sample_offset: float = BOP_SAMPLE_OFFSET, delta: float = 15.0) -> VerifyStats:
    """Compare one frame's stored depth, masks and visib_fract with ``compute_gt_info`` of its GT."""
    if frame.gt is None or frame.depth is None:
        raise ValueError(f"frame {frame.key} needs ground truth and depth to be verified")
    stored = frame.depth
    annotations = compute_gt_info(renderer, frame.camera, stored, [(objects[g.obj_id], g.R, g.t) for g in frame.gt],
                                  delta=delta, sample_offset=sample_offset)
    stats = VerifyStats()
    for g, ann in zip(frame.gt, annotations, strict=True):
        stats.n_gt += 1
        if g.mask_visib is not None:
            sel = g.mask_visib & (stored > 0)
            if sel.any():
                err = np.abs(ann.depth[sel].astype(np.float64) - stored[sel])
                err[ann.depth[sel] <= 0] = np.inf
                stats.depth_pixels += int(sel.sum())
                stats.depth_within += int((err <= DEPTH_TOLERANCE_MM).sum())
                stats.depth_abs_err_sum += float(np.minimum(err, 100.0).sum())
        if g.mask is not None and g.mask.sum() >= MIN_MASK_PIXELS:
            union = np.logical_or(ann.mask, g.mask).sum()
            stats.mask_ious.append(float(np.logical_and(ann.mask, g.mask).sum() / union) if union else 1.0)
        stats.visib_fract_diffs.append(ann.visib_fract - g.visib_fract)
        if g.px_count_all is not None:
            stats.px_count_all_diffs.append(ann.info["px_count_all"] - int(g.px_count_all))
    return stats


def verify_bop_scene(dataset, scene_id: int, renderer: Renderer, *, sample_offset: float = BOP_SAMPLE_OFFSET,
                     delta: float = 15.0) -> VerifyStats:
    """Verify every image of one scene of a ``BopDataset`` (see the module docstring)."""
    objects = dataset.objects()
    stats = VerifyStats()
    for frame, _ in dataset.iter_frames([scene_id], with_gt=True, load_masks=True):
        stats = stats.merge(verify_frame(frame, objects, renderer, sample_offset=sample_offset, delta=delta))
    return stats


def verify_dataset(dataset_dir: str | Path, *, split: str = "test", scene_ids: Sequence[int] | None = None,
                   renderer: Renderer | None = None, backend: str = "auto",
                   sample_offset: float = BOP_SAMPLE_OFFSET, delta: float = 15.0) -> dict[str, Any]:
    """Verify a BOP dataset; returns the ``repro data verify`` JSON object.

    Keys: ``depth_within_1mm`` (fraction of stored-visible-mask pixels with stored depth > 0 whose
    rendered depth is within 1 mm), ``mask_iou_min`` / ``mask_iou_mean`` (rendered vs stored full
    masks of objects with at least 100 pixels), ``visib_fract_max_abs_diff`` (recomputed vs
    ``scene_gt_info``), plus counts and the backend used.
    """
    from repro.data.bop import BopDataset
    from repro.render.factory import get_renderer

    dataset = BopDataset(Path(dataset_dir), split=split)
    own = renderer is None
    renderer = get_renderer(backend) if renderer is None else renderer
    try:
        stats = VerifyStats()
        for sid in scene_ids if scene_ids is not None else dataset.scene_ids():
            scene_stats = verify_bop_scene(dataset, sid, renderer, sample_offset=sample_offset, delta=delta)
            log.info("scene %d: %s", sid, scene_stats.summary())
            stats = stats.merge(scene_stats)
    finally:
        if own:
            renderer.close()
    return {**stats.summary(), "backend": getattr(renderer, "name", type(renderer).__name__),
            "sample_offset": sample_offset, "delta": delta}
