"""Pose error functions of bop_toolkit (``pose_error.py``) over batches of estimates, float64.

Every function takes N estimated and N ground-truth poses (``R`` (N, 3, 3) or (3, 3), ``t``
(N, 3), (N, 3, 1) or (3,), mm) and returns an (N,) float64 array with the same values as the
toolkit's per-pose functions (bit-identical on the golden cases; in general to ~1e-13 relative,
where numpy orders a floating-point sum differently). Model points are the vertices of the
evaluation model (``models_eval``), mm.

* ``add``: mean distance of corresponding model points (Hinterstoisser ACCV'12).
* ``adi`` (ADD-S): mean distance from each GT-posed point to the nearest estimated-posed point;
  exact nearest neighbours (``scipy.spatial.cKDTree``).
* ``mssd`` / ``mspd``: maximum surface / projection distance, minimised over the symmetry set of
  ``repro.metrics.symmetry`` (BOP19). Exact: a lower bound from a few far-apart points prunes the
  symmetries that cannot win, and the survivors are evaluated on all points.
* ``re`` (deg), ``te`` (mm), ``proj`` (mean projection distance, px).

The shortcuts bop_toolkit's ``eval_calc_errors.py`` applies before calling these (infinite
MSSD/AD* when the bounding spheres do not overlap, VSD/CUS = 1 when their projections do not) are
``spheres_overlap`` and ``sphere_projections_overlap`` here; the evaluator applies them.

``point_errors_torch`` (device ``cuda`` or ``cpu``) computes the same errors by brute force in torch
float64; torch is imported only when it is called.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from repro.metrics.symmetry import SymmetrySet

CHUNK_ELEMENTS = 1 << 21
"""Rough bound on float64 3-vectors held at once by the batched computations (~50 MB)."""

BOUND_POINTS = 32
"""Points used for the symmetry lower bound of MSSD/MSPD (farthest-point sample of the model)."""


def _poses(R: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    R = np.asarray(R, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    if R.ndim == 2:
        R = R[None]
    t = t.reshape(len(R), 3) if t.size == 3 * len(R) else t.reshape(-1, 3)
    if R.shape[1:] != (3, 3) or len(t) != len(R):
        raise ValueError(f"expected R (N, 3, 3) and t (N, 3) with the same N, got {R.shape} and {t.shape}")
    return R, t


def _pairs(R_e, t_e, R_g, t_g) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    R_e, t_e = _poses(R_e, t_e)
    R_g, t_g = _poses(R_g, t_g)
    if len(R_e) != len(R_g):
        if len(R_e) == 1:
            R_e, t_e = np.broadcast_to(R_e, R_g.shape), np.broadcast_to(t_e, t_g.shape)
        elif len(R_g) == 1:
            R_g, t_g = np.broadcast_to(R_g, R_e.shape), np.broadcast_to(t_g, t_e.shape)
        else:
            raise ValueError(f"got {len(R_e)} estimated but {len(R_g)} ground-truth poses")
    return R_e, t_e, R_g, t_g


def _intrinsics(K: np.ndarray, n: int) -> np.ndarray:
    K = np.asarray(K, dtype=np.float64)
    if K.ndim == 2:
        K = np.broadcast_to(K, (n, 3, 3))
    if K.shape != (n, 3, 3):
        raise ValueError(f"K must be (3, 3) or ({n}, 3, 3), got {K.shape}")
    return K


def _points(pts: np.ndarray) -> np.ndarray:
    pts = np.ascontiguousarray(pts, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3 or len(pts) == 0:
        raise ValueError(f"model points must be a non-empty (P, 3) array, got {pts.shape}")
    return pts


def _slices(n: int, per_item: int) -> list[slice]:
    """Consecutive slices of ``range(n)`` holding about ``CHUNK_ELEMENTS / per_item`` items each."""
    step = max(1, CHUNK_ELEMENTS // max(per_item, 1))
    return [slice(s, min(n, s + step)) for s in range(0, n, step)]


def transform_points(pts: np.ndarray, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``R p + t`` for every pose and point: (N, P, 3)."""
    return np.matmul(pts, np.swapaxes(R, -1, -2)) + t[..., None, :]


def projection_matrices(K: np.ndarray, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``K [R | t]`` per pose: (..., 3, 4), as ``misc.project_pts`` builds it."""
    return np.matmul(K, np.concatenate([R, t[..., None]], axis=-1))


def project_with(pts: np.ndarray, P: np.ndarray) -> np.ndarray:
    """Image coordinates (..., P, 2) of points under projection matrices ``P`` (..., 3, 4)."""
    h = np.matmul(pts, np.swapaxes(P[..., :3], -1, -2)) + P[..., None, :, 3]
    return h[..., :2] / h[..., 2:3]


def _norm3(d: np.ndarray) -> np.ndarray:
    return np.sqrt(np.sum(d * d, axis=-1))


# --------------------------------------------------------------------------- simple errors


def re(R_e: np.ndarray, R_g: np.ndarray) -> np.ndarray:
    """Rotation error in degrees: ``acos((tr(R_e R_g^-1) - 1) / 2)`` (toolkit: inverse, not transpose)."""
    R_e = np.asarray(R_e, dtype=np.float64).reshape(-1, 3, 3)
    R_g = np.asarray(R_g, dtype=np.float64).reshape(-1, 3, 3)
    tr = np.trace(np.matmul(R_e, np.linalg.inv(R_g)), axis1=-2, axis2=-1)
    cos = np.clip(0.5 * (tr - 1.0), -1.0, 1.0)
    return 180.0 * np.arccos(cos) / np.pi


def te(t_e: np.ndarray, t_g: np.ndarray) -> np.ndarray:
    """Translation error ``||t_g - t_e||`` (mm)."""
    d = np.asarray(t_g, dtype=np.float64).reshape(-1, 3) - np.asarray(t_e, dtype=np.float64).reshape(-1, 3)
    return _norm3(d)


def spheres_overlap(t_e: np.ndarray, t_g: np.ndarray, diameter: float | np.ndarray) -> np.ndarray:
    """The toolkit's test before MSSD and AD*: ``||t_e - t_g|| < diameter`` (else the error is inf)."""
    return te(t_e, t_g) < np.asarray(diameter, dtype=np.float64)


def sphere_projections_overlap(t_e: np.ndarray, t_g: np.ndarray, radius: float | np.ndarray) -> np.ndarray:
    """``misc.overlapping_sphere_projections``: do the projected bounding spheres (radius = d/2) of
    the two poses overlap (approximately)? If not, the toolkit sets VSD and CUS to 1."""
    p1 = np.asarray(t_e, dtype=np.float64).reshape(-1, 3)
    p2 = np.asarray(t_g, dtype=np.float64).reshape(-1, 3)
    valid = (p1[:, 2] != 0) & (p2[:, 2] != 0)
    z1 = np.where(valid, p1[:, 2], 1.0)
    z2 = np.where(valid, p2[:, 2], 1.0)
    proj1 = (p1 / z1[:, None])[:, :2]
    proj2 = (p2 / z2[:, None])[:, :2]
    dist = np.sqrt(np.sum((proj1 - proj2) ** 2, axis=1))
    thresh = np.asarray(radius, dtype=np.float64) * (1.0 / z1 + 1.0 / z2)
    return valid & (dist < thresh)


def add(R_e, t_e, R_g, t_g, pts: np.ndarray) -> np.ndarray:
    """ADD: mean ``||(R_e p + t_e) - (R_g p + t_g)||`` over the model points (mm)."""
    R_e, t_e, R_g, t_g = _pairs(R_e, t_e, R_g, t_g)
    pts = _points(pts)
    out = np.empty(len(R_e))
    for sl in _slices(len(R_e), len(pts)):
        d = transform_points(pts, R_e[sl], t_e[sl]) - transform_points(pts, R_g[sl], t_g[sl])
        out[sl] = _norm3(d).mean(axis=1)
    return out


def proj(R_e, t_e, R_g, t_g, K: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Mean distance (px) of the projections of the model points (Brachmann CVPR'16)."""
    R_e, t_e, R_g, t_g = _pairs(R_e, t_e, R_g, t_g)
    pts = _points(pts)
    K = _intrinsics(K, len(R_e))
    out = np.empty(len(R_e))
    for sl in _slices(len(R_e), len(pts)):
        pe = project_with(pts, projection_matrices(K[sl], R_e[sl], t_e[sl]))
        pg = project_with(pts, projection_matrices(K[sl], R_g[sl], t_g[sl]))
        out[sl] = np.sqrt(np.sum((pe - pg) ** 2, axis=-1)).mean(axis=1)
    return out


def adi(R_e, t_e, R_g, t_g, pts: np.ndarray) -> np.ndarray:
    """ADD-S / ADI: mean distance from each GT-posed model point to its nearest estimated-posed
    model point (mm), exact nearest neighbours (a ``cKDTree`` of the estimated-posed points, as
    the toolkit builds it, so the values are identical)."""
    from scipy.spatial import cKDTree

    R_e, t_e, R_g, t_g = _pairs(R_e, t_e, R_g, t_g)
    pts = _points(pts)
    out = np.empty(len(R_e))
    for sl in _slices(len(R_e), len(pts)):
        pe = transform_points(pts, R_e[sl], t_e[sl])
        pg = transform_points(pts, R_g[sl], t_g[sl])
        for k in range(len(pe)):
            out[sl.start + k] = cKDTree(pe[k]).query(pg[k], k=1)[0].mean()
    return out


# --------------------------------------------------------------------------- symmetry-aware errors


def farthest_point_indices(pts: np.ndarray, m: int = BOUND_POINTS) -> np.ndarray:
    """Indices of ``m`` far-apart points (greedy farthest-point sampling, deterministic)."""
    pts = _points(pts)
    if len(pts) <= m:
        return np.arange(len(pts))
    centre = pts.mean(axis=0)
    idx = [int(np.argmax(np.sum((pts - centre) ** 2, axis=1)))]
    dmin = np.sum((pts - pts[idx[0]]) ** 2, axis=1)
    for _ in range(m - 1):
        k = int(np.argmax(dmin))
        idx.append(k)
        dmin = np.minimum(dmin, np.sum((pts - pts[k]) ** 2, axis=1))
    return np.asarray(idx)


MIN_SYMMETRIES_FOR_BOUND = 8
"""Below this many symmetries MSSD/MSPD are evaluated exhaustively."""

BOUND_TOLERANCE = 1e-9
"""A symmetry is skipped only when its lower bound exceeds the best value by this much (mm or px):
the bound is computed in a different (cheaper) order of operations, so it may be off by rounding
(~1e-12); with this margin the result is exactly the exhaustive minimum."""

PairMax = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``f(est_idx (B,), sym_idx (B, k)) -> (B, k)``: max over all model points of the distance of
estimate ``est_idx[b]`` to the GT transformed by symmetry ``sym_idx[b, j]``."""


def _min_over_symmetries(n: int, n_sym: int, n_pts: int, full: PairMax,
                         bound: np.ndarray | None) -> np.ndarray:
    """``min_s max_p dist(i, s, p)`` for every estimate i, exactly.

    Without ``bound`` every symmetry is evaluated. With a lower bound (n, n_sym) on each
    symmetry's maximum, symmetries are evaluated on all points in increasing order of the bound,
    in growing batches, until the next bound exceeds the best value found (branch and bound);
    the skipped ones cannot be smaller than the result.
    """
    if n == 0:
        return np.empty(0)
    if bound is None:
        out = np.empty(n)
        for sl in _slices(n, n_sym * n_pts):
            ei = np.arange(sl.start, sl.stop)
            out[sl] = full(ei, np.broadcast_to(np.arange(n_sym), (len(ei), n_sym))).min(axis=1)
        return out
    order = np.argsort(bound, axis=1, kind="stable")
    rows = np.arange(n)
    best = _batched(full, rows, order[:, :1], n_pts)[:, 0]
    pos, width = 1, 1
    while pos < n_sym:
        active = np.flatnonzero(bound[rows, order[:, pos]] < best + BOUND_TOLERANCE)
        if len(active) == 0:
            break
        width = min(2 * width, n_sym - pos)
        vals = _batched(full, active, order[active, pos:pos + width], n_pts)
        best[active] = np.minimum(best[active], vals.min(axis=1))
        pos += width
    return best


def _batched(full: PairMax, ei: np.ndarray, si: np.ndarray, n_pts: int) -> np.ndarray:
    """``full`` over rows in chunks that keep the (B, k, P, 3) intermediates bounded."""
    parts = [full(ei[sl], si[sl]) for sl in _slices(len(ei), si.shape[1] * n_pts)]
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _gt_sym_poses(R_g: np.ndarray, t_g: np.ndarray, syms: SymmetrySet, ei: np.ndarray,
                  si: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """GT poses composed with symmetries, as the toolkit does it: ``R_g S_R`` and ``R_g S_t + t_g``,
    (B, k, 3, 3) and (B, k, 3)."""
    Rg = R_g[ei][:, None]
    R = np.matmul(Rg, syms.R[si])
    t = np.matmul(Rg, syms.t[si][..., None])[..., 0] + t_g[ei][:, None, :]
    return R, t


def _symmetric_copies(pts: np.ndarray, syms: SymmetrySet) -> np.ndarray:
    """``S_R p + S_t`` for every symmetry and point, flattened to (3, S * m) (for the bounds)."""
    q = np.matmul(pts, np.swapaxes(syms.R, -1, -2)) + syms.t[:, None, :]
    return np.ascontiguousarray(q.reshape(-1, 3).T)


def _subset(pts: np.ndarray, syms: SymmetrySet, subset: np.ndarray | None) -> np.ndarray | None:
    """Bound points, or None when the exhaustive search is cheaper."""
    if len(syms) < MIN_SYMMETRIES_FOR_BOUND:
        return None
    sub = farthest_point_indices(pts) if subset is None else np.asarray(subset)
    return sub if len(sub) < len(pts) else None


def mssd(R_e, t_e, R_g, t_g, pts: np.ndarray, syms: SymmetrySet | None = None,
         subset: np.ndarray | None = None) -> np.ndarray:
    """MSSD (mm): ``min_S max_p ||(R_e p + t_e) - (R_g S) p||`` over the symmetry set ``syms``.

    ``subset`` (indices of a few far-apart points, default ``farthest_point_indices``) only speeds
    up the search for objects with many symmetries; the result does not depend on it.
    """
    R_e, t_e, R_g, t_g = _pairs(R_e, t_e, R_g, t_g)
    pts = _points(pts)
    syms = SymmetrySet.identity() if syms is None else syms

    def full(ei: np.ndarray, si: np.ndarray) -> np.ndarray:
        est = transform_points(pts, R_e[ei], t_e[ei])[:, None]
        R, t = _gt_sym_poses(R_g, t_g, syms, ei, si)
        return _norm3(est - transform_points(pts, R, t)).max(axis=-1)

    sub = _subset(pts, syms, subset)
    bound = None
    if sub is not None:
        q = _symmetric_copies(pts[sub], syms)
        bound = np.empty((len(R_e), len(syms)))
        for sl in _slices(len(R_e), q.shape[1]):
            est = transform_points(pts[sub], R_e[sl], t_e[sl])  # (B, m, 3)
            gt = (np.matmul(R_g[sl], q) + t_g[sl][:, :, None]).reshape(len(est), 3, len(syms), len(sub))
            d = np.swapaxes(est, 1, 2)[:, :, None, :] - gt
            bound[sl] = np.sqrt(np.einsum("bjsm,bjsm->bsm", d, d).max(axis=-1))
    return _min_over_symmetries(len(R_e), len(syms), len(pts), full, bound)


def mspd(R_e, t_e, R_g, t_g, K: np.ndarray, pts: np.ndarray, syms: SymmetrySet | None = None,
         subset: np.ndarray | None = None) -> np.ndarray:
    """MSPD (px): ``min_S max_p ||pi(K, R_e p + t_e) - pi(K, (R_g S) p)||`` over ``syms``."""
    R_e, t_e, R_g, t_g = _pairs(R_e, t_e, R_g, t_g)
    pts = _points(pts)
    K = _intrinsics(K, len(R_e))
    syms = SymmetrySet.identity() if syms is None else syms
    P_e = projection_matrices(K, R_e, t_e)

    def full(ei: np.ndarray, si: np.ndarray) -> np.ndarray:
        est = project_with(pts, P_e[ei])[:, None]
        R, t = _gt_sym_poses(R_g, t_g, syms, ei, si)
        gt = project_with(pts, projection_matrices(K[ei][:, None], R, t))
        return np.sqrt(np.sum((est - gt) ** 2, axis=-1)).max(axis=-1)

    sub = _subset(pts, syms, subset)
    bound = None
    if sub is not None:
        q = _symmetric_copies(pts[sub], syms)
        bound = np.empty((len(R_e), len(syms)))
        KR = np.matmul(K, R_g)
        Kt = np.matmul(K, t_g[..., None])
        for sl in _slices(len(R_e), q.shape[1]):
            est = np.swapaxes(project_with(pts[sub], P_e[sl]), 1, 2)  # (B, 2, m)
            h = (np.matmul(KR[sl], q) + Kt[sl]).reshape(len(est), 3, len(syms), len(sub))
            d = est[:, :, None, :] - h[:, :2] / h[:, 2:3]
            with np.errstate(invalid="ignore"):
                bound[sl] = np.sqrt(np.einsum("bjsm,bjsm->bsm", d, d).max(axis=-1))
    return _min_over_symmetries(len(R_e), len(syms), len(pts), full, bound)


# --------------------------------------------------------------------------- torch (GPU) path


def point_errors_torch(kind: str, R_e, t_e, R_g, t_g, pts: np.ndarray, *, K: np.ndarray | None = None,
                       syms: SymmetrySet | None = None, device: str = "cuda",
                       chunk_elements: int = 1 << 24) -> np.ndarray:
    """``add``, ``adi``, ``mssd``, ``mspd`` or ``proj`` by brute force in torch float64 on ``device``.

    Same definitions as the numpy functions (ADI by exhaustive nearest neighbours); returns numpy.
    """
    import torch

    R_e, t_e, R_g, t_g = _pairs(R_e, t_e, R_g, t_g)
    n = len(R_e)
    pts = _points(pts)
    dev = torch.device(device)

    def tt(a: np.ndarray) -> Any:
        return torch.tensor(np.array(a, dtype=np.float64), dtype=torch.float64, device=dev)

    P = tt(pts)
    Re, te_, Rg, tg = tt(R_e), tt(t_e), tt(R_g), tt(t_g)
    Ks = tt(_intrinsics(K, n)) if K is not None else None
    syms = SymmetrySet.identity() if syms is None else syms
    SR, St = tt(syms.R), tt(syms.t)
    S = len(syms) if kind in ("mssd", "mspd") else 1
    per_item = S * len(pts) * (len(pts) if kind == "adi" else 1)
    step = max(1, chunk_elements // per_item)
    out = []

    def xform(R: Any, t: Any) -> Any:
        return torch.matmul(P, R.transpose(-1, -2)) + t.unsqueeze(-2)

    def project(Kb: Any, R: Any, t: Any) -> Any:
        M = torch.matmul(Kb, torch.cat([R, t.unsqueeze(-1)], dim=-1))
        h = torch.matmul(P, M[..., :3].transpose(-1, -2)) + M[..., :, 3].unsqueeze(-2)
        return h[..., :2] / h[..., 2:3]

    with torch.no_grad():
        for s in range(0, n, step):
            sl = slice(s, min(n, s + step))
            if kind == "add":
                out.append((xform(Re[sl], te_[sl]) - xform(Rg[sl], tg[sl])).norm(dim=-1).mean(dim=-1))
            elif kind == "adi":
                d = torch.cdist(xform(Rg[sl], tg[sl]), xform(Re[sl], te_[sl]),
                                compute_mode="donot_use_mm_for_euclid_dist")
                out.append(d.min(dim=-1).values.mean(dim=-1))
            elif kind == "proj":
                if Ks is None:
                    raise ValueError("proj needs K")
                out.append((project(Ks[sl], Re[sl], te_[sl]) - project(Ks[sl], Rg[sl], tg[sl]))
                           .norm(dim=-1).mean(dim=-1))
            elif kind in ("mssd", "mspd"):
                Rgs = torch.matmul(Rg[sl].unsqueeze(1), SR)
                tgs = torch.matmul(Rg[sl].unsqueeze(1), St.unsqueeze(-1)).squeeze(-1) + tg[sl].unsqueeze(1)
                if kind == "mssd":
                    d = xform(Re[sl], te_[sl]).unsqueeze(1) - xform(Rgs, tgs)
                else:
                    if Ks is None:
                        raise ValueError("mspd needs K")
                    d = project(Ks[sl], Re[sl], te_[sl]).unsqueeze(1) - project(Ks[sl].unsqueeze(1), Rgs, tgs)
                out.append(d.norm(dim=-1).amax(dim=-1).amin(dim=-1))
            else:
                raise ValueError(f"unknown point error {kind!r}")
    if not out:
        return np.empty(0)
    return torch.cat(out).cpu().numpy().astype(np.float64)
