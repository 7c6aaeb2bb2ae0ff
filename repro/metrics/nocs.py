"""NOCS category-level evaluation (REAL275 / CAMERA25): 3D IoU AP and rotation/translation AP.

A vectorised reimplementation of ``compute_degree_cm_mAP`` of hughw19/NOCS_CVPR2019 ``utils.py``
with every convention of the original kept, quirks included (see
``../shared/golden/nocs/README.md``), so that published REAL275/CAMERA25 numbers are comparable:

* 3D "IoU" of the per-corner bounds: the corners (3x8) transformed by ``RT`` are reduced with
  ``amax/amin(axis=0)``, i.e. over (x, y, z) of each corner, giving two 8-D boxes (issue #47).
* Symmetry: bottle/bowl/can, and mugs whose GT handle is not visible, take the best IoU over the
  PREDICTION rotated about its own y axis in 20 steps (the maximum starts at 0, NaN never wins);
  their rotation error is the angle between the y axes. Handle visibility counts for mugs only.
* IoU overlaps are stored as float32; a prediction (score-descending) scans GTs by descending IoU,
  skips matched ones, stops at the first IoU < threshold and matches only if IoU > threshold.
* Pose: ``arccos`` without clipping (an argument just above 1 gives NaN); GTs are scanned by
  ascending degree + cm (NaN last); a pair qualifies if ``not (deg > d or cm > s)`` (inclusive, NaN
  qualifies). ``use_matches_for_pose`` keeps only the predictions and GTs matched at IoU
  ``iou_pose_thres`` (per image and class) and matches them again.
* AP: VOC all-point interpolation with float32 recall; a class with predictions but no GT gets NaN
  and makes the mean NaN (plain mean, no nanmean); a class with neither gets 0.

Bit-exactness: cube roots and arccos use the C library (``math``) instead of numpy's SIMD versions,
which differ by an ulp on some CPUs and turn "exact" predictions from 0 degrees into NaN. The
matrix products go through ``np.matmul`` / ``np.linalg.det`` exactly as the original calls them.

``exact=True`` is a NON-STANDARD variant (``protocol: "exact (non-standard)"``): the true volume IoU
of the two oriented boxes (convex polytope intersection) and ``arccos`` clipped to [-1, 1];
everything else is unchanged. Its numbers must not be compared with published ones.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from repro.errors import DataFormatError
from repro.results.category import CategoryImageResult, read_category_results
from repro.types import NOCS_CLASSES

log = logging.getLogger(__name__)

SYNSET_NAMES: tuple[str, ...] = ("BG", *NOCS_CLASSES)
SYMMETRIC_CLASSES: tuple[str, ...] = ("bottle", "bowl", "can")
"""Classes symmetric about their y axis (plus mugs whose handle is not visible)."""
PROTOCOL_NOCS = "nocs"
PROTOCOL_EXACT = "exact (non-standard)"
N_SYMMETRY_STEPS = 20
DEFAULT_IOU_THRESHOLDS: tuple[float, ...] = tuple(np.linspace(0, 1, 101).tolist())
DEFAULT_DEGREE_THRESHOLDS: tuple[float, ...] = tuple(range(61))
DEFAULT_SHIFT_THRESHOLDS: tuple[float, ...] = tuple(i / 2 for i in range(31))
DEGREE_ALL, SHIFT_ALL = 360, 100
"""Appended to the degree / shift lists, as the original does ("10 deg" alone = shift 100)."""

#: Headline keys (percent): IoU threshold, or (degree, cm) where 360 / 100 mean "any".
SUMMARY_IOU_KEYS: dict[str, float] = {"IoU25": 0.25, "IoU50": 0.5, "IoU75": 0.75}
SUMMARY_POSE_KEYS: dict[str, tuple[float, float]] = {
    "5deg2cm": (5, 2), "5deg5cm": (5, 5), "10deg2cm": (10, 2), "10deg5cm": (10, 5), "10deg10cm": (10, 10),
    "10deg": (10, SHIFT_ALL), "10cm": (DEGREE_ALL, 10), "5deg": (5, SHIFT_ALL), "5cm": (DEGREE_ALL, 5),
}
SUMMARY_KEYS: tuple[str, ...] = (*SUMMARY_IOU_KEYS, *SUMMARY_POSE_KEYS)

# Corner order of the original get_3d_bbox, as signs of (x, y, z) half extents.
_CORNER_SIGNS = np.array([[1, 1, 1], [1, 1, -1], [-1, 1, 1], [-1, 1, -1],
                          [1, -1, 1], [1, -1, -1], [-1, -1, 1], [-1, -1, -1]], dtype=np.float64)
# The 12 edges of that box as pairs of corner indices (corners differing in one sign).
_BOX_EDGES = np.array([(a, b) for a in range(8) for b in range(a + 1, 8)
                       if np.count_nonzero(_CORNER_SIGNS[a] != _CORNER_SIGNS[b]) == 1])
_EXACT_EPS = 1e-9
_Decide = Callable[[int], tuple[np.ndarray, np.ndarray]]
_MATCH_CHUNK = 1 << 22


def _y_rotations(n: int = N_SYMMETRY_STEPS) -> np.ndarray:
    """The original's ``y_rotation_matrix(2*pi*i/n)`` for i = 0..n-1, as an (n, 4, 4) stack."""
    out = np.zeros((n, 4, 4))
    for i in range(n):
        theta = 2 * math.pi * i / float(n)
        c, s = np.cos(theta), np.sin(theta)
        out[i] = [[c, 0, s, 0], [0, 1, 0, 0], [-s, 0, c, 0], [0, 0, 0, 1]]
    return out


# --------------------------------------------------------------------------------------------
# Pair level


def _libm(fn: Any, x: np.ndarray) -> np.ndarray:
    """Apply a ``math`` function elementwise (NaN outside its domain), reproducible across CPUs."""
    def one(v: float) -> float:
        try:
            return fn(v)
        except ValueError:
            return math.nan
    flat = np.asarray(x, dtype=np.float64).ravel().tolist()
    return np.array([one(v) for v in flat], dtype=np.float64).reshape(np.shape(x))


def _rt_errors(pred_RTs: np.ndarray, gt_RTs: np.ndarray, symmetric: np.ndarray,
               clip: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Degree and cm errors of (K, 4, 4) pose pairs as ``compute_RT_degree_cm_symmetry``."""
    k = len(pred_RTs)
    if k == 0:
        return np.zeros(0), np.zeros(0)
    a1, a2 = pred_RTs[:, :3, :3], gt_RTs[:, :3, :3]
    r1 = a1 / _libm(math.cbrt, np.linalg.det(a1))[:, None, None]
    r2 = a2 / _libm(math.cbrt, np.linalg.det(a2))[:, None, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        y1, y2 = r1[:, :, 1], r2[:, :, 1]
        dot = (y1[:, 0] * y2[:, 0] + y1[:, 1] * y2[:, 1]) + y1[:, 2] * y2[:, 2]
        n1 = np.sqrt((y1[:, 0] * y1[:, 0] + y1[:, 1] * y1[:, 1]) + y1[:, 2] * y1[:, 2])
        n2 = np.sqrt((y2[:, 0] * y2[:, 0] + y2[:, 1] * y2[:, 1]) + y2[:, 2] * y2[:, 2])
        cos_sym = dot / (n1 * n2)
        r = np.matmul(r1, r2.transpose(0, 2, 1))
        cos_full = ((r[:, 0, 0] + r[:, 1, 1]) + r[:, 2, 2] - 1) / 2
    cos = np.where(symmetric, cos_sym, cos_full)
    if clip:
        cos = np.clip(cos, -1.0, 1.0)
    degree = _libm(math.acos, cos) * (180 / np.pi)
    d = pred_RTs[:, :3, 3] - gt_RTs[:, :3, 3]
    cm = np.sqrt((d[:, 0] * d[:, 0] + d[:, 1] * d[:, 1]) + d[:, 2] * d[:, 2]) * 100
    return degree, cm


def _corners_h(scales: np.ndarray) -> np.ndarray:
    """Homogeneous box corners (K, 4, 8) of ``get_3d_bbox(scales)``."""
    xyz = _CORNER_SIGNS.T[None] * (scales / 2)[:, :, None]
    return np.concatenate([xyz, np.ones((len(scales), 1, 8))], axis=1)


def _transform(RTs: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """``transform_coordinates_3d``: (..., 4, 4) @ (..., 4, 8), divided by w -> (..., 3, 8)."""
    out = np.matmul(RTs, corners)
    return out[..., :3, :] / out[..., 3:, :]


def _quirk_iou(b1: np.ndarray, b2: np.ndarray) -> np.ndarray:
    """The original's asymmetric_3d_iou of transformed corners (..., 3, 8): per-corner bounds."""
    max1, min1 = b1.max(axis=-2), b1.min(axis=-2)
    max2, min2 = b2.max(axis=-2), b2.min(axis=-2)
    ext = np.minimum(max1, max2) - np.maximum(min1, min2)
    inter = np.where(ext.min(axis=-1) < 0, 0.0, np.prod(ext, axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return inter / (np.prod(max1 - min1, axis=-1) + np.prod(max2 - min2, axis=-1) - inter)


def _box_frame(RTs: np.ndarray, scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre (..., 3) and full edge vectors as columns (..., 3, 3) of the boxes ``RT`` x ``scales``."""
    return RTs[..., :3, 3], RTs[..., :3, :3] * scales[..., None, :]


def _local(points: np.ndarray, centre: np.ndarray, inv_edges: np.ndarray) -> np.ndarray:
    """Coordinates (..., n, 3) of points in a box's frame, where the box is [-1/2, 1/2]^3."""
    return np.einsum("...ij,...nj->...ni", inv_edges, points - centre[..., None, :])


def _edge_face_points(loc: np.ndarray, world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Intersections of the 12 edges of box A with the 6 faces of box B.

    ``loc``/``world``: A's corners (K, 8, 3) in B's frame and in the world. Returns points
    (K, 72, 3) and their validity (K, 72).
    """
    a, b = loc[:, _BOX_EDGES[:, 0]], loc[:, _BOX_EDGES[:, 1]]             # (K, 12, 3)
    wa, wb = world[:, _BOX_EDGES[:, 0]], world[:, _BOX_EDGES[:, 1]]
    pts, oks = [], []
    for axis in range(3):
        for side in (-0.5, 0.5):
            den = b[..., axis] - a[..., axis]
            with np.errstate(invalid="ignore", divide="ignore"):
                t = (side - a[..., axis]) / den
            ok = (den != 0) & (t >= -_EXACT_EPS) & (t <= 1 + _EXACT_EPS)
            t = np.where(ok, t, 0.0)
            p_loc = a + t[..., None] * (b - a)
            others = [o for o in range(3) if o != axis]
            ok &= (np.abs(p_loc[..., others]) <= 0.5 + _EXACT_EPS).all(axis=-1)
            pts.append(wa + t[..., None] * (wb - wa))
            oks.append(ok)
    return np.concatenate(pts, axis=1), np.concatenate(oks, axis=1)


def _exact_iou(RT1: np.ndarray, RT2: np.ndarray, s1: np.ndarray, s2: np.ndarray) -> np.ndarray:
    """True volume IoU of oriented boxes (K pairs): vertices of the intersection polytope, then hull."""
    from scipy.spatial import ConvexHull, QhullError

    k = len(RT1)
    c1, e1 = _box_frame(RT1, s1)
    c2, e2 = _box_frame(RT2, s2)
    v1, v2 = np.abs(np.linalg.det(e1)), np.abs(np.linalg.det(e2))
    w1 = c1[:, None, :] + np.einsum("kij,nj->kni", e1, _CORNER_SIGNS / 2)
    w2 = c2[:, None, :] + np.einsum("kij,nj->kni", e2, _CORNER_SIGNS / 2)
    inter = np.zeros(k)
    solid = (v1 > 0) & (v2 > 0) & np.isfinite(v1) & np.isfinite(v2)
    radius1 = np.linalg.norm(w1 - c1[:, None], axis=-1).max(axis=-1, initial=0.0)
    radius2 = np.linalg.norm(w2 - c2[:, None], axis=-1).max(axis=-1, initial=0.0)
    near = solid & (np.linalg.norm(c1 - c2, axis=-1) <= radius1 + radius2)
    idx = np.flatnonzero(near)
    if len(idx):
        inv1, inv2 = np.linalg.inv(e1[idx]), np.linalg.inv(e2[idx])
        l1in2 = _local(w1[idx], c2[idx], inv2)
        l2in1 = _local(w2[idx], c1[idx], inv1)
        p12, ok12 = _edge_face_points(l1in2, w1[idx])
        p21, ok21 = _edge_face_points(l2in1, w2[idx])
        pts = np.concatenate([w1[idx], w2[idx], p12, p21], axis=1)
        ok = np.concatenate([(np.abs(l1in2) <= 0.5 + _EXACT_EPS).all(-1),
                             (np.abs(l2in1) <= 0.5 + _EXACT_EPS).all(-1), ok12, ok21], axis=1)
        for row, kk in enumerate(idx):
            cand = pts[row][ok[row]]
            if len(cand) < 4:
                continue
            try:
                inter[kk] = ConvexHull(cand).volume
            except QhullError:
                inter[kk] = 0.0
        inter = np.minimum(inter, np.minimum(v1, v2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return inter / (v1 + v2 - inter)


def _pair_iou(pred_RTs: np.ndarray, gt_RTs: np.ndarray, pred_scales: np.ndarray, gt_scales: np.ndarray,
              symmetric: np.ndarray, exact: bool) -> np.ndarray:
    """IoU of K pairs as ``compute_3d_iou_new`` (symmetric pairs: max over the rotated prediction)."""
    out = np.zeros(len(pred_RTs))
    sym = np.asarray(symmetric, dtype=bool)
    for mask, rot in ((~sym, None), (sym, _y_rotations())):
        idx = np.flatnonzero(mask)
        if not len(idx):
            continue
        p_rt, g_rt, p_s, g_s = pred_RTs[idx], gt_RTs[idx], pred_scales[idx], gt_scales[idx]
        if rot is not None:
            p_rt = np.matmul(p_rt[:, None], rot[None])                  # (n, 20, 4, 4)
        if exact:
            shape = p_rt.shape[:-2]
            rep = 1 if rot is None else len(rot)
            ious = _exact_iou(p_rt.reshape(-1, 4, 4), np.repeat(g_rt, rep, axis=0),
                              np.repeat(p_s, rep, axis=0), np.repeat(g_s, rep, axis=0)).reshape(shape)
        else:
            b1 = _transform(p_rt, _corners_h(p_s) if rot is None else _corners_h(p_s)[:, None])
            b2 = _transform(g_rt, _corners_h(g_s))
            ious = _quirk_iou(b1, b2 if rot is None else b2[:, None])
        if rot is not None:
            ious = np.where(ious > 0, ious, 0.0).max(axis=1)               # max(0, ...) ignoring NaN
        out[idx] = ious
    return out


def _names(value: str | int | Sequence[str | int] | np.ndarray, n: int, what: str) -> list[str]:
    """Class names (names or ids 1..6), broadcast to n."""
    items = [value] * n if isinstance(value, str | int | np.integer) else list(value)
    if len(items) != n:
        raise ValueError(f"{what}: expected {n} entries, got {len(items)}")
    out = []
    for v in items:
        name = SYNSET_NAMES[int(v)] if isinstance(v, int | np.integer) else str(v)
        if name not in SYNSET_NAMES:
            raise ValueError(f"{what}: unknown class {v!r}; expected one of {SYNSET_NAMES[1:]} or ids 1..6")
        out.append(name)
    return out


def _pair_inputs(pred_RT: Any, gt_RT: Any, *scales: Any) -> tuple[bool, list[np.ndarray]]:
    """Float arrays of one pair (4x4 poses, 3-vectors) or of N pairs, with a leading pair axis."""
    arrays = [np.asarray(a, dtype=np.float64) for a in (pred_RT, gt_RT, *scales)]
    single = arrays[0].ndim == 2
    if single:
        arrays = [a[None] for a in arrays]
    n = len(arrays[0])
    want = [(n, 4, 4), (n, 4, 4), *[(n, 3)] * len(scales)]
    if [a.shape for a in arrays] != want:
        raise ValueError(f"expected poses 4x4 and scales 3 (or stacks of N), got {[a.shape for a in arrays]}")
    return single, arrays


def _symmetric(names_gt: Sequence[str], handle_visibility: np.ndarray, names_pred: Sequence[str] | None = None
               ) -> np.ndarray:
    """The original's symmetry test; with ``names_pred`` both names must agree (IoU), else GT only."""
    if names_pred is None:
        names_pred = names_gt
    return np.array([(a == b and a in SYMMETRIC_CLASSES) or (a == b == "mug" and hv == 0)
                     for a, b, hv in zip(names_pred, names_gt, handle_visibility, strict=True)], dtype=bool)


def compute_3d_iou(pred_RT: Any, gt_RT: Any, pred_scales: Any, gt_scales: Any, handle_visibility: Any,
                   class_name_pred: str | int | Sequence[str | int], class_name_gt: str | int | Sequence[str | int],
                   *, exact: bool = False) -> float | np.ndarray:
    """3D IoU of a (pred, GT) pair as NOCS ``compute_3d_iou_new``, or of N pairs (stacks of 4x4).

    Symmetric search (prediction rotated about its y axis) when both classes are the same
    bottle/bowl/can, or both mug with ``handle_visibility == 0``. ``exact=True``: true oriented-box
    IoU (non-standard). Returns a float (NaN for a degenerate union) or an (N,) array.
    """
    single, (p, g, ps, gs) = _pair_inputs(pred_RT, gt_RT, pred_scales, gt_scales)
    n = len(p)
    hv = np.broadcast_to(np.asarray(handle_visibility), (n,))
    sym = _symmetric(_names(class_name_gt, n, "class_name_gt"), hv, _names(class_name_pred, n, "class_name_pred"))
    iou = _pair_iou(p, g, ps, gs, sym, exact)
    return float(iou[0]) if single else iou


def compute_rt_errors(pred_RT: Any, gt_RT: Any, class_name: str | int | Sequence[str | int],
                      handle_visibility: Any = 1, *, clip: bool = False
                      ) -> tuple[float, float] | tuple[np.ndarray, np.ndarray]:
    """Rotation error (degrees) and translation error (cm) as ``compute_RT_degree_cm_symmetry``.

    ``class_name`` (or id) and ``handle_visibility`` are the GT's: bottle/bowl/can and mugs without a
    visible handle compare only the y axes. No clipping of the arccos argument unless ``clip``
    (NaN where it leaves [-1, 1] by rounding). Accepts single 4x4 poses or stacks of N.
    """
    single, (p, g) = _pair_inputs(pred_RT, gt_RT)
    n = len(p)
    hv = np.broadcast_to(np.asarray(handle_visibility), (n,))
    deg, cm = _rt_errors(p, g, _symmetric(_names(class_name, n, "class_name"), hv), clip)
    return (float(deg[0]), float(cm[0])) if single else (deg, cm)


# --------------------------------------------------------------------------------------------
# Matching and AP


def _greedy(order: np.ndarray, pred_ok: np.ndarray, gt_ok: np.ndarray, decide: _Decide,
            n_thr: int) -> tuple[np.ndarray, np.ndarray]:
    """Greedy one-to-one matching of G groups at T thresholds at once.

    ``order`` (G, P, N): the GT scan order of each prediction (predictions in match order);
    ``decide(i)`` gives ``(decisive, take)`` (G, T, N) for prediction i and each GT: the scan ends at
    the first unmatched decisive GT in scan order and matches it when ``take``. Returns TP flags of
    the predictions (G, P, T) and matched flags of the GTs (G, N, T).
    """
    g_n, p_n, n_n = order.shape
    matched = np.zeros((g_n, n_thr, n_n), dtype=bool)
    tp = np.zeros((g_n, p_n, n_thr), dtype=bool)
    rank = np.argsort(order, axis=-1)                       # scan position of each GT
    for i in range(p_n):
        decisive, take = decide(i)
        cand = ~matched & gt_ok[:, None, :] & decisive                      # (G, T, N)
        key = np.where(cand, rank[:, i, None, :], n_n)
        first = cand & (key == key.min(axis=2, initial=n_n)[..., None])     # the first one scanned
        hit = (first & take).any(axis=2) & pred_ok[:, i, None]
        matched |= first & hit[..., None]
        tp[:, i, :] = hit
    return tp, matched.transpose(0, 2, 1)


def _buckets(pred_ok: np.ndarray, gt_ok: np.ndarray, n_thr: int) -> list[tuple[np.ndarray, int, int]]:
    """Groups of equal (predictions, GTs) counts, in chunks that keep the (G, T, N) temporaries small.

    Tables are left-aligned, so slicing a bucket to ``[:, :P]`` / ``[:, :N]`` drops only padding.
    """
    n_pred, n_gt = pred_ok.sum(axis=1), gt_ok.sum(axis=1)
    keys = n_pred * (int(n_gt.max(initial=0)) + 1) + n_gt
    out = []
    for key in np.unique(keys):
        idx = np.flatnonzero(keys == key)
        p, n = int(n_pred[idx[0]]), int(n_gt[idx[0]])
        if p and n:
            step = max(1, _MATCH_CHUNK // (n * n_thr))
            out += [(idx[a:a + step], p, n) for a in range(0, len(idx), step)]
    return out


def _iou_matches(iou32: np.ndarray, pred_ok: np.ndarray, gt_ok: np.ndarray,
                 thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``compute_3d_matches`` of all groups at all thresholds: TP (G, P, T) and matched GTs (G, N, T).

    GTs are scanned by descending float32 IoU (``argsort(...)[::-1]``: NaN first, ties by
    descending index); stop at IoU < thr, match at IoU > thr, skip equal and NaN.
    """
    g_n, p_n, n_n = iou32.shape
    tp = np.zeros((g_n, p_n, len(thresholds)), dtype=bool)
    matched = np.zeros((g_n, n_n, len(thresholds)), dtype=bool)
    thr = np.asarray(thresholds, dtype=np.float64)[:, None]
    for idx, p, n in _buckets(pred_ok, gt_ok, len(thresholds)):
        vals = iou32[idx, :p, :n].astype(np.float64)
        order = np.argsort(vals, axis=-1, kind="stable")[..., ::-1]

        def decide(i: int, vals: np.ndarray = vals) -> tuple[np.ndarray, np.ndarray]:
            v = vals[:, i, None, :]
            return (v < thr) | (v > thr), v > thr

        tp[idx, :p], matched[idx, :n] = _greedy(order, pred_ok[idx, :p], gt_ok[idx, :n], decide, len(thresholds))
    return tp, matched


def _pose_matches(deg: np.ndarray, cm: np.ndarray, pred_ok: np.ndarray, gt_ok: np.ndarray,
                  degree_list: np.ndarray, shift_list: np.ndarray, shape_ok: tuple[np.ndarray, np.ndarray]
                  ) -> np.ndarray:
    """``compute_match_from_degree_cm`` of all groups at every (degree, shift) pair: TP (G, P, D*S).

    GTs are scanned by ascending degree + cm (NaN last); a pair qualifies unless deg > d or cm > s.
    ``pred_ok``/``gt_ok`` select the candidates; ``shape_ok`` are the full tables (for bucketing).
    """
    d_thr = np.repeat(degree_list, len(shift_list))[:, None]
    s_thr = np.tile(shift_list, len(degree_list))[:, None]
    tp = np.zeros((*deg.shape[:2], len(d_thr)), dtype=bool)
    for idx, p, n in _buckets(*shape_ok, len(d_thr)):
        d, c = deg[idx, :p, :n], cm[idx, :p, :n]
        order = np.argsort(d + c, axis=-1, kind="stable")

        def decide(i: int, d: np.ndarray = d, c: np.ndarray = c) -> tuple[np.ndarray, np.ndarray]:
            ok = ~(d[:, i, None, :] > d_thr) & ~(c[:, i, None, :] > s_thr)
            return ok, ok

        tp[idx, :p] = _greedy(order, pred_ok[idx, :p], gt_ok[idx, :n], decide, len(d_thr))[0]
    return tp


def _row_sums(terms: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per row, ``np.sum(terms[row][mask[row]])`` with numpy's own (pairwise) summation order."""
    rows, cols = np.nonzero(mask)
    flat = terms[rows, cols]
    counts = np.bincount(rows, minlength=len(terms))
    starts = np.cumsum(counts) - counts
    out = np.zeros(len(terms))
    for k in np.unique(counts[counts > 0]):
        sel = np.flatnonzero(counts == k)
        out[sel] = flat[starts[sel, None] + np.arange(k)].sum(axis=1)
    return out


def _voc_ap(tp: np.ndarray, scores: np.ndarray, n_gt: int) -> np.ndarray:
    """``compute_ap_from_matches_scores`` for each row of ``tp`` (T, M): all-point AP, float32 recall."""
    n_rows, m = tp.shape
    tp = tp[:, np.argsort(scores, kind="stable")[::-1]]
    out = np.zeros(n_rows)
    step = max(1, _MATCH_CHUNK // 2 // max(m, 1))
    for a in range(0, n_rows, step):
        cum = np.cumsum(tp[a:a + step], axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = cum / (np.arange(m) + 1)
            recall = (cum.astype(np.float32) / np.float32(n_gt)).astype(np.float64)
        zeros, ones = np.zeros((len(cum), 1)), np.ones((len(cum), 1))
        p = np.concatenate([zeros, precision, zeros], axis=1)
        r = np.concatenate([zeros, recall, ones], axis=1)
        p = np.maximum.accumulate(p[:, ::-1], axis=1)[:, ::-1]
        out[a:a + step] = _row_sums((r[:, 1:] - r[:, :-1]) * p[:, 1:], r[:, :-1] != r[:, 1:])
    return out


def _image_arrays(image: Mapping[str, Any] | CategoryImageResult) -> dict[str, np.ndarray]:
    """The arrays the metric reads from one image (dict with the official keys, or a result record)."""
    def get(key: str, shape: tuple[int, ...], dtype: type) -> np.ndarray:
        value = image.get(key) if isinstance(image, Mapping) else getattr(image, key, None)
        arr = np.zeros([max(d, 0) for d in shape]) if value is None else np.asarray(value)
        try:
            return arr.astype(dtype).reshape(shape)
        except ValueError:
            raise ValueError(f"{key}: expected shape {shape}, got {arr.shape}") from None

    out = {key: get(key, (-1,), np.int64) for key in ("gt_class_ids", "pred_class_ids")}
    n_gt, n_pred = len(out["gt_class_ids"]), len(out["pred_class_ids"])
    for prefix, n in (("gt", n_gt), ("pred", n_pred)):
        out[f"{prefix}_RTs"] = get(f"{prefix}_RTs", (n, 4, 4), np.float64)
        out[f"{prefix}_scales"] = get(f"{prefix}_scales", (n, 3), np.float64)
        bad = (out[f"{prefix}_class_ids"] < 1) | (out[f"{prefix}_class_ids"] > len(NOCS_CLASSES))
        if bad.any():
            raise ValueError(f"{prefix}_class_ids: class ids must be in 1..{len(NOCS_CLASSES)}")
    hv = image.get("gt_handle_visibility") if isinstance(image, Mapping) else image.gt_handle_visibility
    out["gt_handle_visibility"] = np.ones(n_gt, np.int64) if hv is None else get("gt_handle_visibility", (n_gt,),
                                                                                   np.int64)
    out["pred_scores"] = get("pred_scores", (n_pred,), np.float64)
    boxes = image.get("pred_bboxes") if isinstance(image, Mapping) else image.pred_bboxes
    if boxes is not None and n_pred and not get("pred_bboxes", (n_pred, 4), np.float64).any(axis=1).all():
        raise ValueError("a prediction has an all-zero pred_bboxes row; the official evaluation (trim_zeros) "
                         "would silently drop it")
    return out


def _groups(images: Sequence[dict[str, np.ndarray]]) -> dict[str, Any]:
    """Concatenate images and index every (image, class) group with a GT or a prediction.

    Returns global arrays plus, per group, its class and padded (G, P) / (G, N) index tables of
    its predictions (score-descending) and GTs (in image order); -1 pads.
    """
    keep = [im for im in images if len(im["gt_class_ids"]) or len(im["pred_class_ids"])]
    template = _image_arrays({})
    cat = {k: np.concatenate([v, *(im[k] for im in keep)]) for k, v in template.items()}
    gt_img = np.concatenate([np.full(len(im["gt_class_ids"]), i) for i, im in enumerate(keep)] or [np.zeros(0, int)])
    pr_img = np.concatenate([np.full(len(im["pred_class_ids"]), i) for i, im in enumerate(keep)]
                            or [np.zeros(0, int)])
    gt_cls, pr_cls = cat["gt_class_ids"].astype(np.int64), cat["pred_class_ids"].astype(np.int64)
    n_cls = len(SYNSET_NAMES)
    gt_key, pr_key = gt_img.astype(np.int64) * n_cls + gt_cls, pr_img.astype(np.int64) * n_cls + pr_cls
    keys, inverse = np.unique(np.concatenate([gt_key, pr_key]), return_inverse=True)
    gt_grp, pr_grp = inverse[: len(gt_key)], inverse[len(gt_key):]
    # GTs in image order within a group; predictions by descending score (ties: later first, as
    # np.argsort(...)[::-1] on small arrays).
    gt_order = np.argsort(gt_grp, kind="stable")
    pr_rank = np.argsort(cat["pred_scores"], kind="stable")[::-1]
    pr_order = pr_rank[np.argsort(pr_grp[pr_rank], kind="stable")]

    def table(order: np.ndarray, grp: np.ndarray) -> np.ndarray:
        counts = np.bincount(grp, minlength=len(keys))
        width = int(counts.max(initial=0))
        tab = np.full((len(keys), width), -1, dtype=np.int64)
        starts = np.cumsum(counts) - counts
        g = grp[order]
        tab[g, np.arange(len(order)) - starts[g]] = order
        return tab

    return {"cat": cat, "cls": keys % n_cls, "gt": table(gt_order, gt_grp), "pred": table(pr_order, pr_grp),
            "n_images": len(keep)}


def _group_pairs(grp: dict[str, Any], exact: bool) -> dict[str, np.ndarray]:
    """IoU (float32), degree and cm of every (pred, GT) pair of each group, as (G, P, N) arrays (NaN pads)."""
    cat, pred_tab, gt_tab = grp["cat"], grp["pred"], grp["gt"]
    g_n, p_n, n_n = len(grp["cls"]), pred_tab.shape[1], gt_tab.shape[1]
    pi = np.broadcast_to(pred_tab[:, :, None], (g_n, p_n, n_n))
    gi = np.broadcast_to(gt_tab[:, None, :], (g_n, p_n, n_n))
    valid = (pi >= 0) & (gi >= 0)
    p, g = pi[valid], gi[valid]
    cls = cat["gt_class_ids"][g]
    # compute_degree_cm_mAP sets handle visibility to 1 for every class but mug.
    hv = np.where(cls == SYNSET_NAMES.index("mug"), cat["gt_handle_visibility"][g], 1)
    names = [SYNSET_NAMES[c] for c in cls.tolist()]
    sym = _symmetric(names, hv)
    iou = _pair_iou(cat["pred_RTs"][p], cat["gt_RTs"][g], cat["pred_scales"][p], cat["gt_scales"][g], sym, exact)
    deg, cm = _rt_errors(cat["pred_RTs"][p], cat["gt_RTs"][g], sym, clip=exact)
    out = {}
    for name, values, dtype in (("iou", iou, np.float32), ("deg", deg, np.float64), ("cm", cm, np.float64)):
        arr = np.full((g_n, p_n, n_n), np.nan, dtype=dtype)
        arr[valid] = values
        out[name] = arr
    return out


# --------------------------------------------------------------------------------------------
# Evaluation


def compute_nocs_aps(images: Sequence[Mapping[str, Any] | CategoryImageResult], *,
                     iou_thresholds: Sequence[float] = DEFAULT_IOU_THRESHOLDS,
                     degree_thresholds: Sequence[float] = DEFAULT_DEGREE_THRESHOLDS,
                     shift_thresholds: Sequence[float] = DEFAULT_SHIFT_THRESHOLDS,
                     iou_pose_thres: float = 0.1, use_matches_for_pose: bool = True,
                     exact: bool = False) -> dict[str, Any]:
    """The raw AP arrays of ``compute_degree_cm_mAP`` for per-image GT + predictions.

    ``images``: dicts with the official keys (``gt_class_ids, gt_RTs, gt_scales,
    gt_handle_visibility, pred_class_ids, pred_scores, pred_RTs, pred_scales``; ``pred_bboxes`` is
    only checked for all-zero rows) or :class:`CategoryImageResult` records. A missing
    ``gt_handle_visibility`` means visible. ``iou_pose_thres`` need not be one of
    ``iou_thresholds`` (the original asserts that it is; the result is the same). The degree and
    shift lists get 360 and 100 appended, as in the original. Returns ``iou_aps`` (8, T) and
    ``pose_aps`` (8, D+1, S+1) (rows: 0 = BG, always 0; 1..6 classes; 7 = mean), the three
    threshold lists, ``n_images_evaluated`` (images with neither GT nor predictions are skipped, as
    in the original) and the GT / prediction counts per class.
    """
    iou_thr = np.asarray(iou_thresholds, dtype=np.float64).reshape(-1)
    degree_list = np.asarray([*degree_thresholds, DEGREE_ALL], dtype=np.float64)
    shift_list = np.asarray([*shift_thresholds, SHIFT_ALL], dtype=np.float64)
    arrays = [_image_arrays(im) for im in images]
    grp = _groups(arrays)
    pairs = _group_pairs(grp, exact)
    pred_ok, gt_ok = grp["pred"] >= 0, grp["gt"] >= 0
    thresholds = np.append(iou_thr, iou_pose_thres) if use_matches_for_pose else iou_thr
    iou_tp, iou_matched = _iou_matches(pairs["iou"], pred_ok, gt_ok, thresholds)
    if use_matches_for_pose:
        pose_pred_ok, pose_gt_ok = iou_tp[:, :, -1], iou_matched[:, :, -1]
        iou_tp = iou_tp[:, :, :-1]
    else:
        pose_pred_ok, pose_gt_ok = pred_ok, gt_ok
    pose_tp = _pose_matches(pairs["deg"], pairs["cm"], pose_pred_ok, pose_gt_ok, degree_list, shift_list,
                            (pred_ok, gt_ok))
    scores = grp["cat"]["pred_scores"][np.maximum(grp["pred"], 0)]
    n_rows = len(SYNSET_NAMES) + 1
    iou_aps = np.zeros((n_rows, len(iou_thr)))
    pose_aps = np.zeros((n_rows, len(degree_list), len(shift_list)))
    for cls in range(1, len(SYNSET_NAMES)):
        sel = grp["cls"] == cls
        ok = pred_ok[sel]
        iou_aps[cls] = _voc_ap(iou_tp[sel][ok].T, scores[sel][ok], int(gt_ok[sel].sum()))
        ok = pose_pred_ok[sel]
        pose_aps[cls] = _voc_ap(pose_tp[sel][ok].T, scores[sel][ok],
                                int(pose_gt_ok[sel].sum())).reshape(len(degree_list), len(shift_list))
    iou_aps[-1] = np.mean(iou_aps[1:-1], axis=0)
    pose_aps[-1] = np.mean(pose_aps[1:-1], axis=0)
    return {"iou_aps": iou_aps, "pose_aps": pose_aps, "iou_thres_list": iou_thr.tolist(),
            "degree_thres_list": [*degree_thresholds, DEGREE_ALL], "shift_thres_list": [*shift_thresholds, SHIFT_ALL],
            "n_images_evaluated": grp["n_images"],
            "gt_per_class": {n: int(np.sum(grp["cat"]["gt_class_ids"] == i)) for i, n in enumerate(SYNSET_NAMES) if i},
            "pred_per_class": {n: int(np.sum(grp["cat"]["pred_class_ids"] == i))
                               for i, n in enumerate(SYNSET_NAMES) if i}}


def _index(values: Sequence[float], target: float, what: str) -> int:
    hits = np.flatnonzero(np.isclose(np.asarray(values, dtype=np.float64), target, rtol=0, atol=1e-9))
    if not len(hits):
        raise ValueError(f"{what} thresholds must contain {target} for the summary keys, got {list(values)}")
    return int(hits[0])


def nocs_summary(iou_aps: np.ndarray, pose_aps: np.ndarray, iou_thres_list: Sequence[float],
                 degree_thres_list: Sequence[float], shift_thres_list: Sequence[float]) -> dict[str, Any]:
    """The headline numbers (percent) of the AP arrays: mean over classes and ``per_class``."""
    cols: dict[str, tuple[int, ...]] = {
        key: (_index(iou_thres_list, thr, "IoU"),) for key, thr in SUMMARY_IOU_KEYS.items()}
    for key, (d, s) in SUMMARY_POSE_KEYS.items():
        cols[key] = (_index(degree_thres_list, d, "degree"), _index(shift_thres_list, s, "shift"))

    def row(r: int) -> dict[str, float]:
        return {key: float((iou_aps if len(c) == 1 else pose_aps)[(r, *c)] * 100) for key, c in cols.items()}

    return {**row(len(SYNSET_NAMES)), "per_class": {name: row(i) for i, name in enumerate(SYNSET_NAMES) if i}}


def _load_dataset_gt(dataset_dir: str | Path, subset: str | None, split: str | None) -> tuple[Any, str]:
    """The GT JSON of a NOCS dataset folder (``gts_json/<subset>_<split>.json``), or a GT JSON file."""
    from repro.data.nocs import SUBSETS, NocsDataset, load_nocs_gt_json
    from repro.errors import DatasetNotFoundError

    path = Path(dataset_dir)
    if path.is_file():
        return load_nocs_gt_json(path), str(path)
    found = []
    for sub in (subset,) if subset else SUBSETS:
        try:
            ds = NocsDataset(path, subset=sub, split=split)
        except DatasetNotFoundError:
            if subset:
                raise
            continue
        if ds.has_gt:
            found.append(ds)
    if not found:
        raise DatasetNotFoundError(f"no NOCS ground truth under {path}: expected gts_json/<subset>_<split>.json "
                                   "(convert the official pickles with repro.data.nocs.convert_nocs_gt_pickles)")
    if len(found) > 1:
        raise ValueError(f"{path} has ground truth for {[d.subset for d in found]}: pass subset=")
    gt = found[0].ground_truth()
    return gt, str(found[0].gt_path)


def _gt_from_dataset(preds: Sequence[CategoryImageResult], dataset_dir: str | Path, subset: str | None,
                     split: str | None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Pair predictions with dataset GT by (scene_id, im_id); GT images without predictions count as missed."""
    gt, source = _load_dataset_gt(dataset_dir, subset, split)
    by_image = gt.by_image()
    pred_by_image = {(p.scene_id, p.im_id): p for p in preds}
    unknown = sorted(set(pred_by_image) - set(by_image))
    if preds and len(unknown) == len(pred_by_image):
        raise DataFormatError(source, f"none of the {len(preds)} predicted images (scene_id, im_id) has ground "
                                      f"truth here, e.g. {unknown[0]}: wrong dataset, subset or split?")
    if unknown:
        log.warning("%d predicted images have no ground truth in %s and are ignored, e.g. %s",
                    len(unknown), source, unknown[:3])
    images, missing = [], 0
    for key in sorted(by_image):
        entry = dict(by_image[key])
        pred = pred_by_image.get(key)
        for name in ("pred_class_ids", "pred_scores", "pred_RTs", "pred_scales", "pred_bboxes"):
            entry.pop(name, None)
            if pred is not None:
                entry[name] = getattr(pred, name)
        missing += pred is None
        images.append(entry)
    if missing:
        log.info("%d of %d ground-truth images have no predictions (all their objects count as missed)",
                 missing, len(by_image))
    info = {"gt_source": source, "n_images_without_predictions": missing,
            "n_predicted_images_without_gt": len(unknown)}
    return images, info


def evaluate_nocs(results_json: str | Path | Sequence[CategoryImageResult], *,
                  dataset_dir: str | Path | None = None, use_matches_for_pose: bool = True,
                  exact: bool = False, iou_pose_thres: float = 0.1, subset: str | None = None,
                  split: str | None = None, iou_thresholds: Sequence[float] = DEFAULT_IOU_THRESHOLDS,
                  degree_thresholds: Sequence[float] = DEFAULT_DEGREE_THRESHOLDS,
                  shift_thresholds: Sequence[float] = DEFAULT_SHIFT_THRESHOLDS) -> dict[str, Any]:
    """NOCS category-level scores of a results file (``repro eval nocs``).

    ``results_json``: a path (or records from :func:`read_category_results`) in the official layout
    with GT and predictions side by side, or predictions only (``repro-category-v1``). Without
    ``dataset_dir`` every image must carry its GT. With ``dataset_dir`` (a NOCS dataset folder, or
    a GT JSON file) the GT comes from there (``gts_json/<subset>_<split>.json``; ``subset`` is found
    automatically when only one has GT) and any GT in the results is ignored: images are matched by
    (scene_id, im_id); a GT image without predictions counts as all missed; a predicted image
    without GT is ignored with a warning (an error when none of them has GT).

    Returns percent scores (``IoU25 ... 10cm``, ``5deg``, ``5cm``: mean over the 6 classes, NaN when
    a class has predictions but no GT, as the original), ``per_class``, the raw ``iou_aps`` /
    ``pose_aps`` (fractions, rows BG, 6 classes, mean) with their threshold lists, counts, and
    ``protocol`` (``"nocs"``, or ``"exact (non-standard)"`` for ``exact=True``).
    """
    source = str(results_json) if isinstance(results_json, str | Path) else "<records>"
    records = read_category_results(results_json) if isinstance(results_json, str | Path) else list(results_json)
    info: dict[str, Any] = {"results": source}
    if dataset_dir is not None:
        if any(r.has_gt for r in records):
            log.warning("%s carries ground truth; using the ground truth of %s instead", source, dataset_dir)
        images, extra = _gt_from_dataset(records, dataset_dir, subset, split)
        info.update(extra)
    else:
        without = [r for r in records if not r.has_gt]
        if without:
            raise DataFormatError(source, f"{len(without)} of {len(records)} images have no ground truth (first: "
                                          f"scene_id {without[0].scene_id}, im_id {without[0].im_id}); pass "
                                          "dataset_dir for a predictions-only file")
        images = list(records)
        info["gt_source"] = source
    raw = compute_nocs_aps(images, iou_thresholds=iou_thresholds, degree_thresholds=degree_thresholds,
                           shift_thresholds=shift_thresholds, iou_pose_thres=iou_pose_thres,
                           use_matches_for_pose=use_matches_for_pose, exact=exact)
    summary = nocs_summary(raw["iou_aps"], raw["pose_aps"], raw["iou_thres_list"], raw["degree_thres_list"],
                           raw["shift_thres_list"])
    counts = {
        "n_images": len(images), "n_images_empty": len(images) - raw["n_images_evaluated"],
        "n_gt": sum(raw["gt_per_class"].values()), "n_pred": sum(raw["pred_per_class"].values()),
        "gt_per_class": raw["gt_per_class"], "pred_per_class": raw["pred_per_class"],
    }
    no_gt = [n for n, c in counts["gt_per_class"].items() if c == 0 and counts["pred_per_class"][n] > 0]
    if no_gt:
        log.warning("classes with predictions but no ground truth get AP NaN (and so does the mean): %s", no_gt)
    result = {
        "protocol": PROTOCOL_EXACT if exact else PROTOCOL_NOCS,
        **{k: summary[k] for k in SUMMARY_KEYS},
        "per_class": summary["per_class"],
        "use_matches_for_pose": bool(use_matches_for_pose), "iou_pose_thres": float(iou_pose_thres),
        **counts, **info,
        "iou_thres_list": raw["iou_thres_list"], "degree_thres_list": raw["degree_thres_list"],
        "shift_thres_list": raw["shift_thres_list"],
        "iou_aps": raw["iou_aps"].tolist(), "pose_aps": raw["pose_aps"].tolist(),
    }
    log.info("NOCS %s: IoU50 %.1f, 5deg5cm %.1f, 10deg10cm %.1f (%d images)", result["protocol"],
             result["IoU50"], result["5deg5cm"], result["10deg10cm"], counts["n_images"])
    return result
