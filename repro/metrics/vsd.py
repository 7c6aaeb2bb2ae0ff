"""VSD and CUS from depth renders, and per-image batched rendering for them.

VSD (Visible Surface Discrepancy, Hodan et al. ECCV'18 / ECCVW'16) follows bop_toolkit's
``pose_error.vsd`` operation by operation:

1. depth images (test, rendered estimate, rendered GT) become distance images
   (``repro.render.verify.depth_to_distance``: integer pixel coordinates, as
   ``misc.depth_im_to_dist_im_fast``);
2. visibility masks in ``bop19`` mode (missing test depth counts as visible):
   ``visib_gt`` from the GT render, ``visib_est`` from the estimate's render, plus the pixels of
   ``visib_gt`` the estimate covers;
3. per tau: ``(#{inter: |d_gt - d_est| (/ diameter) >= tau} + |union| - |inter|) / |union|``
   (``step`` cost) or the truncated linear cost ``min(1, dist / tau)`` (``tlinear``); 1 when the
   union is empty.

CUS (Complement over Union of the rendered silhouettes) is ``1 - |M_est & M_gt| / |M_est | M_gt|``;
the mask IoU (STORM Table 3's "IoU mean") is ``|M_est & M_gt| / |M_est | M_gt|`` of the same full-object
silhouettes (not the visible parts), 0 when both are empty.

Only pixels where either render is non-zero contribute, so the computation runs on the bounding
box of the two silhouettes; the selected pixels keep their row-major order, which keeps every sum
bit-identical to the full-image computation. Renders come from ``repro.render`` with
``sample_offset=0.5`` (bop_toolkit's renderers sample pixel (u, v) at (u + 0.5, v + 0.5)); all
estimates and GT poses of an image go to the renderer in one ``render_batch`` call.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from repro.render.verify import depth_to_distance, visible_mask_bop19

VSD_COSTS = ("step", "tlinear")


@dataclass(frozen=True)
class VsdParams:
    """VSD settings; the defaults are BOP19's (delta 15 mm; taus 0.05..0.5 x diameter; step cost)."""

    delta: float = 15.0
    taus: tuple[float, ...] = tuple(np.arange(0.05, 0.51, 0.05).tolist())
    normalized_by_diameter: bool = True
    cost_type: str = "step"

    def __post_init__(self) -> None:
        if self.cost_type not in VSD_COSTS:
            raise ValueError(f"unknown VSD cost {self.cost_type!r}; choose from {', '.join(VSD_COSTS)}")
        object.__setattr__(self, "taus", tuple(float(t) for t in self.taus))


def distance_factors(K: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel ``(x - cx) / fx`` and ``(y - cy) / fy`` (H, W), as ``depth_to_distance`` uses them."""
    xs, ys = np.meshgrid(np.arange(width), np.arange(height))
    return (xs - K[0, 2]) / np.float64(K[0, 0]), (ys - K[1, 2]) / np.float64(K[1, 1])


def _distance(depth: np.ndarray, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """``depth_to_distance`` on a crop, given the crop of its per-pixel factors (same arithmetic)."""
    return np.sqrt((px * depth) ** 2 + (py * depth) ** 2 + depth.astype(np.float64) ** 2)


def _box(*masks: np.ndarray) -> tuple[slice, slice] | None:
    """Row and column slices bounding the union of the masks; None if all are empty."""
    union = np.logical_or.reduce(masks)
    rows = np.flatnonzero(union.any(axis=1))
    if len(rows) == 0:
        return None
    cols = np.flatnonzero(union.any(axis=0))
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def vsd_from_distances(dist_test: np.ndarray, dist_est: np.ndarray, dist_gt: np.ndarray, diameter: float,
                       params: VsdParams) -> np.ndarray:
    """VSD per tau (``len(params.taus)``,) from the three distance images (any common crop)."""
    visib_gt = visible_mask_bop19(dist_test, dist_gt, params.delta)
    visib_est = visible_mask_bop19(dist_test, dist_est, params.delta)
    visib_est = np.logical_or(visib_est, np.logical_and(visib_gt, dist_est > 0))
    inter = np.logical_and(visib_gt, visib_est)
    union_count = int(np.logical_or(visib_gt, visib_est).sum())
    if union_count == 0:
        return np.ones(len(params.taus))
    comp_count = union_count - int(inter.sum())
    dists = np.abs(dist_gt[inter] - dist_est[inter])
    if params.normalized_by_diameter:
        dists /= diameter
    out = np.empty(len(params.taus))
    if params.cost_type == "step":
        ordered = np.sort(dists)
        above = len(ordered) - np.searchsorted(ordered, np.asarray(params.taus), side="left")
        for k, n_above in enumerate(above.tolist()):
            out[k] = (n_above + comp_count) / float(union_count)
    else:
        for k, tau in enumerate(params.taus):
            costs = dists / tau
            costs[costs > 1.0] = 1.0
            out[k] = (np.sum(costs) + comp_count) / float(union_count)
    return out


def vsd_from_depth(depth_test: np.ndarray, depth_est: np.ndarray, depth_gt: np.ndarray, K: np.ndarray,
                   diameter: float, params: VsdParams = VsdParams()) -> np.ndarray:
    """VSD per tau from full-size depth images (mm): the test image and the two renders."""
    K = np.asarray(K, dtype=np.float64)
    box = _box(depth_est > 0, depth_gt > 0)
    if box is None:
        return np.ones(len(params.taus))
    dist_test = depth_to_distance(depth_test, K)[box]
    px, py = distance_factors(K, depth_test.shape[1], depth_test.shape[0])
    return vsd_from_distances(dist_test, _distance(depth_est[box], px[box], py[box]),
                              _distance(depth_gt[box], px[box], py[box]), diameter, params)


def cus_from_depth(depth_est: np.ndarray, depth_gt: np.ndarray) -> float:
    """CUS: ``1 - |inter| / |union|`` of the rendered silhouettes (1 when both are empty)."""
    mask_est, mask_gt = depth_est > 0, depth_gt > 0
    union = float(np.logical_or(mask_gt, mask_est).sum())
    if union == 0:
        return 1.0
    return 1.0 - np.logical_and(mask_gt, mask_est).sum() / union


def mask_iou_from_depth(depth_est: np.ndarray, depth_gt: np.ndarray) -> float:
    """IoU of the rendered silhouettes ``|inter| / |union|`` (0 when both are empty)."""
    mask_est, mask_gt = depth_est > 0, depth_gt > 0
    union = int(np.logical_or(mask_gt, mask_est).sum())
    if union == 0:
        return 0.0
    return int(np.logical_and(mask_gt, mask_est).sum()) / float(union)


@dataclass(frozen=True)
class ImagePairs:
    """The (estimate, GT) pairs of one image whose errors need renders.

    ``est_obj``/``est_R``/``est_t`` describe each distinct estimate, ``gt_obj``/``gt_R``/``gt_t`` each
    distinct GT instance; ``pair_est`` and ``pair_gt`` index them per pair.
    """

    K: np.ndarray
    width: int
    height: int
    est_obj: np.ndarray
    est_R: np.ndarray
    est_t: np.ndarray
    gt_obj: np.ndarray
    gt_R: np.ndarray
    gt_t: np.ndarray
    pair_est: np.ndarray
    pair_gt: np.ndarray


def image_render_errors(renderer, objects: dict, pairs: ImagePairs, depth_test: np.ndarray | None,
                        diameters: dict[int, float], params: VsdParams | None, want_cus: bool,
                        sample_offset: float = 0.5, want_iou: bool = False
                        ) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """VSD (n_pairs, n_taus), CUS (n_pairs,) and mask IoU (n_pairs,) of every pair of one image.

    Every needed estimate and GT pose is rendered alone (the toolkit renders each object by
    itself) in one ``render_batch`` call. ``params=None`` skips VSD (then ``depth_test`` may be
    None); ``want_cus=False`` skips CUS, ``want_iou=False`` the IoU (None in their place).
    """
    from repro.render.scene import RenderInstance, RenderScene
    from repro.types import CameraIntrinsics

    n = len(pairs.pair_est)
    vsd = np.empty((n, len(params.taus))) if params is not None else None
    cus = np.empty(n) if want_cus else None
    iou = np.empty(n) if want_iou else None
    if n == 0:
        return vsd, cus, iou
    cam = CameraIntrinsics(pairs.K, pairs.width, pairs.height)
    est_ids = np.unique(pairs.pair_est)
    gt_ids = np.unique(pairs.pair_gt)
    scenes = [RenderScene(cam, (RenderInstance(objects[int(pairs.est_obj[i])], pairs.est_R[i], pairs.est_t[i]),),
                          sample_offset=sample_offset) for i in est_ids]
    scenes += [RenderScene(cam, (RenderInstance(objects[int(pairs.gt_obj[g])], pairs.gt_R[g], pairs.gt_t[g]),),
                           sample_offset=sample_offset) for g in gt_ids]
    results = renderer.render_batch(scenes, {"depth"})
    depth_est = {int(i): r.depth for i, r in zip(est_ids, results[:len(est_ids)], strict=True)}
    depth_gt = {int(g): r.depth for g, r in zip(gt_ids, results[len(est_ids):], strict=True)}
    if params is not None:
        if depth_test is None:
            raise ValueError("VSD needs the test depth image")
        dist_test = depth_to_distance(depth_test, pairs.K)
        px, py = distance_factors(pairs.K, pairs.width, pairs.height)
    for k in range(n):
        de, dg = depth_est[int(pairs.pair_est[k])], depth_gt[int(pairs.pair_gt[k])]
        if cus is not None:
            cus[k] = cus_from_depth(de, dg)
        if iou is not None:
            iou[k] = mask_iou_from_depth(de, dg)
        if vsd is not None:
            box = _box(de > 0, dg > 0)
            if box is None:
                vsd[k] = 1.0
                continue
            vsd[k] = vsd_from_distances(dist_test[box], _distance(de[box], px[box], py[box]),
                                        _distance(dg[box], px[box], py[box]),
                                        diameters[int(pairs.gt_obj[pairs.pair_gt[k]])], params)
    return vsd, cus, iou

