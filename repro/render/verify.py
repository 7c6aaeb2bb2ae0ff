"""Re-render the GT objects of a BOP dataset and compare with what the dataset stores.

This is ``repro data verify``: it checks that our renderer (and the dataset's poses, intrinsics
and models) reproduce the stored depth images, full masks (``mask/``) and ``visib_fract`` of
``scene_gt_info.json``. The visibility recomputation follows bop_toolkit's ``calc_gt_info.py``:
each object rendered alone on a 3x larger canvas (so truncated parts count in ``px_count_all``),
depth converted to distance images with integer pixel coordinates
(``misc.depth_im_to_dist_im_fast``), and the ``bop19`` visibility test of
``visibility.estimate_visib_mask_gt``: visible where the object is rendered and the stored
distance is missing (0) or not nearer than the rendered one by more than ``delta``.

``sample_offset`` defaults to 0.5 because BOP's annotations are made with bop_toolkit's OpenGL
renderers, which sample pixel ``(u, v)`` at the image point ``(u + 0.5, v + 0.5)``; with the OpenCV
convention (0.0) silhouettes shift by half a pixel and mask IoUs of small objects drop.
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
from repro.render.scene import RenderInstance, RenderScene
from repro.types import Frame, ObjectModel

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


def verify_frame(frame: Frame, objects: dict[int, ObjectModel], renderer: Renderer, *,
                 sample_offset: float = 0.5, delta: float = 15.0) -> VerifyStats:
    """Compare one frame's stored depth, masks and visib_fract with renders of its GT objects."""
    if frame.gt is None or frame.depth is None:
        raise ValueError(f"frame {frame.key} needs ground truth and depth to be verified")
    cam = frame.camera
    big = large_canvas(cam)
    W, H = cam.width, cam.height
    x0, y0 = (big.width - W) // 2, (big.height - H) // 2
    stats = VerifyStats()
    insts = [RenderInstance(objects[g.obj_id], g.R, g.t) for g in frame.gt]
    small = renderer.render_batch([RenderScene(cam, (i,), sample_offset=sample_offset) for i in insts], {"depth"})
    large = renderer.render_batch([RenderScene(big, (i,), sample_offset=sample_offset) for i in insts], {"depth"})
    stored = frame.depth
    dist_im = depth_to_distance(stored, cam.K)
    for g, r_small, r_large in zip(frame.gt, small, large, strict=True):
        stats.n_gt += 1
        depth = r_small.depth
        if g.mask_visib is not None:
            sel = g.mask_visib & (stored > 0)
            if sel.any():
                err = np.abs(depth[sel].astype(np.float64) - stored[sel])
                err[depth[sel] <= 0] = np.inf
                stats.depth_pixels += int(sel.sum())
                stats.depth_within += int((err <= DEPTH_TOLERANCE_MM).sum())
                stats.depth_abs_err_sum += float(np.minimum(err, 100.0).sum())
        if g.mask is not None and g.mask.sum() >= MIN_MASK_PIXELS:
            mine = depth > 0
            union = np.logical_or(mine, g.mask).sum()
            stats.mask_ious.append(float(np.logical_and(mine, g.mask).sum() / union) if union else 1.0)
        depth_large = r_large.depth
        depth_gt = depth_large[y0:y0 + H, x0:x0 + W]
        px_all = int((depth_large > 0).sum())
        visib = visible_mask_bop19(dist_im, depth_to_distance(depth_gt, cam.K), delta)
        visib_fract = float(visib.sum()) / px_all if px_all > 0 else 0.0
        stats.visib_fract_diffs.append(visib_fract - g.visib_fract)
        if g.px_count_all is not None:
            stats.px_count_all_diffs.append(px_all - int(g.px_count_all))
    return stats


def verify_bop_scene(dataset, scene_id: int, renderer: Renderer, *, sample_offset: float = 0.5,
                     delta: float = 15.0) -> VerifyStats:
    """Verify every image of one scene of a ``BopDataset`` (see the module docstring)."""
    objects = dataset.objects()
    stats = VerifyStats()
    for frame, _ in dataset.iter_frames([scene_id], with_gt=True, load_masks=True):
        stats = stats.merge(verify_frame(frame, objects, renderer, sample_offset=sample_offset, delta=delta))
    return stats


def verify_dataset(dataset_dir: str | Path, *, split: str = "test", scene_ids: Sequence[int] | None = None,
                   renderer: Renderer | None = None, backend: str = "auto", sample_offset: float = 0.5,
                   delta: float = 15.0) -> dict[str, Any]:
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
