"""Render-and-compare registration and ICP tracking on CPU (no learned parts).

``register`` (mask + depth + model):

1. Templates (once per model): the model rendered from every icosphere viewpoint, centred on the
   optical axis of a virtual camera (range, albedo and the mean visible surface point).
2. Hypotheses: viewpoints x in-plane rotations, turned to be seen along the ray of the median
   masked depth point; each is translated so that its mean visible surface point lands on the mean
   of the observed masked points.
3. Coarse scoring in a low-resolution square crop around the mask: each hypothesis' template is
   mapped into the crop by the homography of its in-plane rotation, scale and ray rotation (its range
   shifted to the hypothesis' distance), aligned along z (median depth residual) and in the image
   (centroid of the unoccluded silhouette vs the mask, ``align_iterations`` times: under occlusion
   a step only halves the offset), and scored by render-and-compare (below).
   The ``candidates`` best are mapped again at their aligned translation, with colour.
4. The ``top_k`` best, at least ``nms_deg`` apart, are refined by point-to-plane ICP of the observed
   masked points against surface samples of the model.
5. The refined poses are rendered (one batched call, full model) in a finer crop and re-scored. The
   ``polish_k`` best distinct ones (candidates that converged together count once) are polished
   ``polish_rounds`` times: aligned along z (median depth residual) and moved by the whole-pixel
   image shift + depth that maximises the score (hill climbing; fixes slides the point fit cannot see,
   e.g. a mug along its axis or a bracket along a face), then ICP again; a last shift and re-score,
   and the best pose is returned.

``track`` (depth + model + previous pose): render at the previous pose, projective point-to-plane
ICP of the rendered visible surface against the observed depth inside the dilated silhouette;
``track_rounds`` times, each round after the first starting with the same image/depth alignment as
above against the pixels whose observed point lies within ``track_support`` x diameter of the model
surface (a stand-in for the mask; it stops slides along flat faces that point-to-plane ICP cannot
see); then a mask-free re-score.

The score is a depth-weighted IoU: mask pixels covered by the render count with weight
``1 - (depth residual / tau)^2`` (flat near 0, so sub-millimetre noise does not outweigh
shape; mask pixels without depth count with ``hole_weight``), over the union of
the mask and the rendered silhouette, where rendered pixels hidden behind a closer observed surface
outside the mask (occlusion) and pixels outside the image are left out. Without a mask (tracking)
it is the agreement fraction of the rendered pixels that are not occluded. For models with colour,
it is multiplied by ``1 - colour_weight * (1 - ncc) / 2`` with ``ncc`` the normalised
cross-correlation of the rendered albedo and the observed colour on the agreeing pixels.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any

import cv2
import numpy as np
from scipy.spatial import cKDTree

from methods.common.registration.base import PoseLike, RegistrationError, RegistrationOutput, as_pose
from methods.common.registration.mesh import surface_samples
from repro.geometry import (
    ICPConfig,
    axis_angle_to_matrix,
    crop_resize_camera,
    depth_to_points,
    depth_to_xyz,
    icp,
    icp_projective,
    project_to_so3,
)
from repro.render import Light, render_poses, stack_results
from repro.render.viewpoints import icosphere, inplane_angles, viewpoint_poses
from repro.types import CameraIntrinsics, ObjectModel

log = logging.getLogger(__name__)

_ALBEDO = Light(ambient=1.0, diffuse=0.0)


@dataclass(frozen=True)
class RenderCompareConfig:
    """Settings of ``RenderCompareRegistrar``. Depth tolerances (``*_tolerance``), ICP distances
    (``icp_*``, ``polish_start``, ``track_icp_start``) and ``track_support`` are fractions of the object
    diameter; names ending in ``_mm`` / ``_px`` are millimetres / pixels.

    Hypotheses: ``view_level`` (icosphere level: 42 views at 1, 162 at 2) x ``inplane`` rotations;
    templates are ``template_size`` pixels, rendered at ``template_distance`` x the model radius.
    Crops: at most ``coarse_size`` / ``refine_size`` / ``track_size`` pixels (square; smaller crops
    keep their native resolution), ``crop_scale`` x the mask's box side (at least the projected
    diameter); tracking crops the previous pose's projected box grown by ``track_margin`` per side and
    associates depth inside the silhouette dilated by ``track_dilate`` of its size. ``candidates``:
    coarse hypotheses re-scored with colour; ``top_k`` refined by ICP; ``polish_k`` polished.
    ``colour_weight``: weight of the colour term (models whose vertex colours vary by more than
    ``min_colour_std``); ``hole_weight``: credit of a covered mask pixel without depth.
    """

    backend: str = "auto"
    view_level: int = 2
    inplane: int = 12
    template_size: int = 96
    template_distance: float = 8.0
    coarse_size: int = 64
    refine_size: int = 256
    track_size: int = 160
    crop_scale: float = 1.3
    align_iterations: int = 1
    candidates: int = 48
    top_k: int = 16
    nms_deg: float = 15.0
    coarse_tolerance: float = 0.1
    depth_tolerance: float = 0.03
    min_tolerance_mm: float = 3.0
    hole_weight: float = 0.5
    colour_weight: float = 0.3
    min_colour_std: float = 0.03
    obs_points: int = 600
    model_points: int = 6000
    icp_iterations: int = 40
    icp_start: float = 0.15
    icp_end: float = 0.015
    icp_decay: float = 0.85
    min_icp_end_mm: float = 1.0
    polish_k: int = 4
    polish_rounds: int = 2
    polish_start: float = 0.06
    polish_iterations: int = 25
    polish_shift_px: int = 2
    polish_shift_steps: int = 4
    track_rounds: int = 3
    track_iterations: int = 20
    track_margin: float = 0.25
    track_dilate: float = 0.1
    track_icp_start: float = 0.1
    track_icp_decay: float = 0.75
    track_support: float = 0.05
    min_mask_pixels: int = 10
    min_depth_points: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        if self.view_level < 0 or self.inplane < 1:
            raise ValueError("view_level must be >= 0 and inplane >= 1")
        if min(self.coarse_size, self.refine_size, self.track_size, self.template_size) < 16:
            raise ValueError("crop and template sizes must be at least 16 pixels")
        if self.top_k < 1 or self.candidates < self.top_k or self.track_rounds < 0:
            raise ValueError("need 1 <= top_k <= candidates and track_rounds >= 0")
        if not 0.0 <= self.colour_weight <= 1.0 or not 0.0 <= self.hole_weight <= 1.0:
            raise ValueError("colour_weight and hole_weight must be in [0, 1]")
        if self.crop_scale < 1.0 or self.template_distance < 2.0:
            raise ValueError("crop_scale must be >= 1 and template_distance >= 2")
        if not 0.0 < self.icp_end <= self.icp_start or not 0.0 < self.icp_decay <= 1.0:
            raise ValueError("need 0 < icp_end <= icp_start and 0 < icp_decay <= 1")


@dataclass(frozen=True, eq=False)
class _Templates:
    """The model seen from each viewpoint (rotation ``R`` (V, 3, 3), in-plane angle 0) by a virtual
    camera ``K`` with the model's box centre at distance ``distance`` on the optical axis: ``range``
    (V, T, T) mm from the camera centre (0 = background), ``albedo`` (V, T, T, 3) or None, and
    ``centroid`` (V, 3) the mean visible surface point in model coordinates."""

    R: np.ndarray
    K: np.ndarray
    distance: float
    range: np.ndarray
    albedo: np.ndarray | None
    centroid: np.ndarray


@dataclass(frozen=True, eq=False)
class _Prepared:
    """What the registrar derives once per model (keyed by ``content_hash``)."""

    model: ObjectModel
    centre: np.ndarray
    radius: float
    points: np.ndarray
    normals: np.ndarray
    textured: bool
    templates: _Templates
    tree: cKDTree


@dataclass(frozen=True, eq=False)
class _View:
    """The observation cropped to a square box and resized: depth (mm, 0 = none), rgb in [0, 1],
    the object mask (``None`` when tracking) and which pixels lie inside the image."""

    camera: CameraIntrinsics
    depth: np.ndarray
    rgb: np.ndarray
    inside: np.ndarray
    mask: np.ndarray | None = None


@dataclass(frozen=True, eq=False)
class _Scores:
    score: np.ndarray
    geometric: np.ndarray
    colour: np.ndarray
    visible: np.ndarray = field(default_factory=lambda: np.zeros(0))


class RenderCompareRegistrar:
    """Pose registration and tracking by render-and-compare plus ICP (see the module docstring).

    Owns a renderer created on first use (``backend`` of the config) and released by ``close``.
    Deterministic: the only randomness (point subsampling) comes from ``config.seed``, re-seeded at
    every call, so a result does not depend on the calls made before.
    """

    def __init__(self, config: RenderCompareConfig | None = None, *, renderer: Any = None) -> None:
        self.config = config or RenderCompareConfig()
        self._renderer = renderer
        self._owns_renderer = renderer is None
        self._prepared: dict[str, _Prepared] = {}
        R, _ = viewpoint_poses(icosphere(self.config.view_level), 1.0, self.config.inplane)
        self._hypotheses = R

    # -- resources
    @property
    def renderer(self) -> Any:
        if self._renderer is None:
            from repro.render import get_renderer

            self._renderer = get_renderer(self.config.backend)
        return self._renderer

    def close(self) -> None:
        """Release the renderer (when the registrar created it); the registrar can be used again."""
        if self._renderer is not None and self._owns_renderer:
            self._renderer.close()
            self._renderer = None

    def __enter__(self) -> RenderCompareRegistrar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def n_hypotheses(self) -> int:
        return len(self._hypotheses)

    def prepare(self, model: ObjectModel) -> None:
        """Precompute the per-model data (templates, surface samples); otherwise done on first use."""
        self._prepare(model)

    def _prepare(self, model: ObjectModel) -> _Prepared:
        prep = self._prepared.get(model.content_hash)
        if prep is None:
            cfg = self.config
            centre = 0.5 * (model.vertices.min(axis=0) + model.vertices.max(axis=0))
            radius = float(np.linalg.norm(model.vertices - centre, axis=1).max())
            points, normals = surface_samples(model, cfg.model_points, cfg.seed)
            textured = model.colors is not None and float(model.colors.std(axis=0).max()) > cfg.min_colour_std
            prep = _Prepared(model, centre, radius, points, normals, textured,
                             self._templates(model, centre, radius, textured), cKDTree(points))
            self._prepared[model.content_hash] = prep
            log.debug("registrar: obj %d prepared (%d templates, textured=%s)", model.obj_id,
                      len(prep.templates.R), textured)
        return prep

    def _templates(self, model: ObjectModel, centre: np.ndarray, radius: float, textured: bool) -> _Templates:
        cfg = self.config
        size = cfg.template_size
        dist = cfg.template_distance * radius
        f = 0.45 * size * dist / radius
        K = np.array([[f, 0.0, 0.5 * size - 0.5], [0.0, f, 0.5 * size - 0.5], [0.0, 0.0, 1.0]])
        camera = CameraIntrinsics(K, size, size)
        R, _ = viewpoint_poses(icosphere(cfg.view_level), 1.0, 1)
        t = np.array([0.0, 0.0, dist])[None] - R @ centre
        outputs = {"depth", "xyz", "rgb"} if textured else {"depth", "xyz"}
        results = render_poses(self.renderer, model, camera, R, t, outputs, light=_ALBEDO,
                               near=dist - 1.5 * radius, far=dist + 1.5 * radius)
        depth = stack_results(results, "depth").astype(np.float32)
        ranges = depth * _ray_norms(K, size)[None]
        centroid = np.array([r.xyz[r.depth > 0].mean(axis=0) if (r.depth > 0).any() else centre for r in results])
        albedo = stack_results(results, "rgb").astype(np.float32) / 255.0 if textured else None
        return _Templates(R, K, dist, ranges.astype(np.float32), albedo, centroid)

    def _warp(self, prep: _Prepared, camera: CameraIntrinsics, R_ray: np.ndarray, idx: np.ndarray, t: np.ndarray,
              colour: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """Depth (n, S, S) (and albedo) of hypotheses ``idx`` at translations ``t`` in the crop ``camera``,
        mapped from their templates (see the module docstring)."""
        tpl = prep.templates
        S = camera.width
        J = self.config.inplane
        view, roll = idx // J, idx % J
        R = R_ray @ self._hypotheses[idx]
        c = (R @ prep.centre + t) @ R_ray
        dist = np.linalg.norm(c, axis=1)
        angles = inplane_angles(J)[roll]
        scale = tpl.distance / c[:, 2]
        A = np.zeros((len(idx), 3, 3))
        A[:, 0, 0] = A[:, 1, 1] = scale * np.cos(angles)
        A[:, 1, 0] = scale * np.sin(angles)
        A[:, 0, 1] = -A[:, 1, 0]
        A[:, 0, 2], A[:, 1, 2], A[:, 2, 2] = c[:, 0] / c[:, 2], c[:, 1] / c[:, 2], 1.0
        H = camera.K @ R_ray @ A @ np.linalg.inv(tpl.K)
        norms = _ray_norms(camera.K, S)
        depth = np.zeros((len(idx), S, S), np.float32)
        albedo = np.zeros((len(idx), S, S, 3), np.float32) if colour and tpl.albedo is not None else None
        for k in range(len(idx)):
            r = cv2.warpPerspective(tpl.range[view[k]], H[k], (S, S), flags=cv2.INTER_NEAREST)
            depth[k] = np.where(r > 0, (r + (dist[k] - tpl.distance)) / norms, 0.0)
            if albedo is not None:
                albedo[k] = cv2.warpPerspective(tpl.albedo[view[k]], H[k], (S, S), flags=cv2.INTER_LINEAR)
        return depth, albedo

    # -- registration
    def register(self, rgb: np.ndarray, depth: np.ndarray, mask: np.ndarray, K: np.ndarray,
                 model: ObjectModel) -> RegistrationOutput:
        """Register ``model`` in the observation from its visible ``mask`` (see the module docstring)."""
        cfg = self.config
        start = time.perf_counter()
        rgb, depth, camera = _inputs(rgb, depth, K)
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != depth.shape:
            raise ValueError(f"mask shape {mask.shape} differs from depth {depth.shape}")
        if int(mask.sum()) < cfg.min_mask_pixels:
            raise RegistrationError(f"obj {model.obj_id}: mask has {int(mask.sum())} pixels "
                                    f"(< min_mask_pixels={cfg.min_mask_pixels})")
        points, _ = depth_to_points(depth, camera.K, mask)
        if len(points) < cfg.min_depth_points:
            raise RegistrationError(f"obj {model.obj_id}: only {len(points)} masked pixels have depth "
                                    f"(< min_depth_points={cfg.min_depth_points})")
        prep = self._prepare(model)
        rng = np.random.default_rng(cfg.seed)
        anchor = np.median(points, axis=0)
        R_ray = _rotation_z_to(anchor / np.linalg.norm(anchor))
        box = _mask_box(mask, camera, float(anchor[2]), model.diameter, cfg.crop_scale)

        # coarse: every hypothesis from its template, aligned, scored; the best again with colour
        view = _crop_view(rgb, depth, mask, camera, box, cfg.coarse_size)
        idx = np.arange(len(self._hypotheses))
        R = R_ray @ self._hypotheses
        J = cfg.inplane
        t = _robust_mean(points, anchor, prep.radius)[None] - np.einsum("bij,bj->bi", R,
                                                                        prep.templates.centroid[idx // J])
        tau = max(cfg.min_tolerance_mm, cfg.coarse_tolerance * model.diameter)
        Dr, _ = self._warp(prep, view.camera, R_ray, idx, t, False)
        for _ in range(cfg.align_iterations):
            Dr, t = _align(Dr, t, view, tau)
        geometric = self._scores(Dr, None, view, tau, False).score
        cand = np.argsort(-geometric, kind="stable")[:cfg.candidates]
        Dr, Cr = self._warp(prep, view.camera, R_ray, cand, t[cand], prep.textured)
        coarse = self._scores(Dr, Cr, view, tau, prep.textured)
        picks = cand[_diverse_top(coarse.score, R[cand], cfg.top_k, cfg.nms_deg)]
        t_coarse = time.perf_counter()

        # refine: ICP of the observed points against the model surface
        source = _subsample(_icp_points(depth, camera.K, mask, points), cfg.obs_points, rng)
        end_mm = max(cfg.icp_end * model.diameter, cfg.min_icp_end_mm)
        icp_cfg = ICPConfig(method="point_to_plane", max_iterations=cfg.icp_iterations,
                            distance_start=max(cfg.icp_start * model.diameter, 4.0 * end_mm), distance_end=end_mm,
                            distance_decay=cfg.icp_decay)
        R_ref, t_ref = _stack([_icp_to_model(source, prep, R[i], t[i], icp_cfg) for i in picks])
        t_refine = time.perf_counter()

        # re-score with the full model in a finer crop; polish the best: silhouette/depth alignment + ICP
        view = _crop_view(rgb, depth, mask, camera, box, cfg.refine_size)
        tau = max(cfg.min_tolerance_mm, cfg.depth_tolerance * model.diameter)
        Dr, Cr = self._render(prep.model, view.camera, R_ref, t_ref, prep.textured)
        final = self._scores(Dr, Cr, view, tau, prep.textured)
        if cfg.polish_k > 0 and cfg.polish_rounds > 0:
            top = _distinct_top(final.score, R_ref, t_ref, cfg.polish_k, 5.0, 0.05 * model.diameter)
            Rp, tp = R_ref[top], t_ref[top]
            polish_cfg = replace(icp_cfg, distance_start=max(cfg.polish_start * model.diameter, end_mm),
                                 max_iterations=cfg.polish_iterations)
            for k in range(cfg.polish_rounds + 1):
                Dr, _ = self._render(prep.model, view.camera, Rp, tp, False)
                tp = self._shift_to_best(Dr, tp, view, tau)
                if k < cfg.polish_rounds:
                    Rp, tp = _stack([_icp_to_model(source, prep, Rp[j], tp[j], polish_cfg) for j in range(len(top))])
            Dr, Cr = self._render(prep.model, view.camera, Rp, tp, prep.textured)
            polished = self._scores(Dr, Cr, view, tau, prep.textured)
            R_ref, t_ref = np.concatenate([R_ref, Rp]), np.concatenate([t_ref, tp])
            final = _Scores(*(np.concatenate([getattr(final, f), getattr(polished, f)])
                              for f in ("score", "geometric", "colour", "visible")))
        best = int(np.argmax(final.score))
        end = time.perf_counter()
        timings = {"coarse": t_coarse - start, "icp": t_refine - t_coarse, "rescore": end - t_refine,
                   "total": end - start}
        info = {"n_hypotheses": len(R), "n_refined": len(picks), "coarse_score": float(coarse.score.max()),
                "geometric_score": float(final.geometric[best]), "colour_ncc": float(final.colour[best])}
        return RegistrationOutput(R_ref[best], t_ref[best], float(final.score[best]), timings, info)

    # -- tracking
    def track(self, rgb: np.ndarray, depth: np.ndarray, K: np.ndarray, model: ObjectModel,
              prev_pose: PoseLike | RegistrationOutput) -> RegistrationOutput:
        """Follow ``model`` from ``prev_pose`` to this frame (see the module docstring).

        The score is mask-free (agreement of the rendered and observed depth where the object is not
        occluded); an object that left the image or lies behind the camera gets score 0.
        """
        cfg = self.config
        start = time.perf_counter()
        rgb, depth, camera = _inputs(rgb, depth, K)
        prep = self._prepare(model)
        R, t = as_pose(prev_pose)
        box = _pose_box(camera, prep, R, t, 1.0 + 2.0 * cfg.track_margin)
        if box is None:
            end = time.perf_counter()
            return RegistrationOutput(R, t, 0.0, {"icp": 0.0, "score": 0.0, "total": end - start},
                                      {"visible_fraction": 0.0})
        view = _crop_view(rgb, depth, None, camera, box, cfg.track_size)
        rng = np.random.default_rng(cfg.seed)
        icp_cfg = ICPConfig(method="point_to_plane", max_iterations=cfg.track_iterations,
                            distance_start=max(cfg.track_icp_start * model.diameter, 4.0 * cfg.min_icp_end_mm),
                            distance_end=max(cfg.icp_end * model.diameter, cfg.min_icp_end_mm),
                            distance_decay=cfg.track_icp_decay)
        tau = max(cfg.min_tolerance_mm, cfg.depth_tolerance * model.diameter)
        near = cfg.track_support * model.diameter
        xyz = depth_to_xyz(view.depth, view.camera.K)
        region = None
        for k in range(cfg.track_rounds):
            if k > 0 and near > 0 and region is not None:
                support = _supported(xyz, region & (view.depth > 0), prep, R, t, near)
                if support.any():
                    Dr, _ = self._render(prep.model, view.camera, R[None], t[None], False)
                    t = _align(Dr, t[None], replace(view, mask=support), tau)[1][0]
            res = render_poses(self.renderer, prep.model, view.camera, R[None], t[None], {"depth", "xyz"})[0]
            sil = res.depth > 0
            if int(sil.sum()) < cfg.min_depth_points:
                break
            region = _dilate(sil, cfg.track_dilate)
            source = _subsample(res.xyz[sil].astype(np.float64), cfg.obs_points, rng)
            out = icp_projective(source, view.depth, view.camera.K, R, t, mask=region, config=icp_cfg)
            if not out.success:
                break
            R, t = project_to_so3(out.R), out.t
        t_icp = time.perf_counter()
        Dr, Cr = self._render(prep.model, view.camera, R[None], t[None], prep.textured)
        s = self._scores(Dr, Cr, view, tau, prep.textured)
        end = time.perf_counter()
        return RegistrationOutput(R, t, float(s.score[0]),
                                  {"icp": t_icp - start, "score": end - t_icp, "total": end - start},
                                  {"visible_fraction": float(s.visible[0]), "geometric_score": float(s.geometric[0]),
                                   "colour_ncc": float(s.colour[0])})

    def score_pose(self, rgb: np.ndarray, depth: np.ndarray, mask: np.ndarray | None, K: np.ndarray,
                   model: ObjectModel, pose: PoseLike | RegistrationOutput) -> float:
        """The registration score of a given pose (with a mask) or the tracking score (``mask=None``):
        what a verifier thresholds to accept a tracked pose."""
        cfg = self.config
        rgb, depth, camera = _inputs(rgb, depth, K)
        prep = self._prepare(model)
        R, t = as_pose(pose)
        if mask is not None:
            mask = np.asarray(mask, dtype=bool)
            if not mask.any():
                return 0.0
            box = _union_box(_mask_box(mask, camera, float(t[2]), model.diameter, cfg.crop_scale),
                             _pose_box(camera, prep, R, t, cfg.crop_scale))
        else:
            box = _pose_box(camera, prep, R, t, cfg.crop_scale)
            if box is None:
                return 0.0
        view = _crop_view(rgb, depth, mask, camera, box, cfg.refine_size)
        Dr, Cr = self._render(prep.model, view.camera, R[None], t[None], prep.textured)
        tau = max(cfg.min_tolerance_mm, cfg.depth_tolerance * model.diameter)
        return float(self._scores(Dr, Cr, view, tau, prep.textured).score[0])

    def _shift_to_best(self, Dr: np.ndarray, t: np.ndarray, view: _View, tau: float) -> np.ndarray:
        """Translations of renders ``Dr`` (n, S, S) moved onto the observation: along z by the median
        depth residual, then by the whole-pixel image shift (each followed by its own median depth
        residual, so that slides along inclined faces are reachable) that maximises the geometric score:
        hill climbing in ``+-polish_shift_px`` windows, robust to occlusion where centroids are not."""
        cfg = self.config
        Dr, t = _align_depth(Dr, t, view)
        S = Dr.shape[1]
        r = cfg.polish_shift_px
        offsets = np.array([(dx, dy) for dy in range(-r, r + 1) for dx in range(-r, r + 1)])
        out = t.copy()
        for j in range(len(Dr)):
            pos, dz = np.zeros(2, dtype=np.int64), 0.0
            for _ in range(cfg.polish_shift_steps):
                cand = pos[None] + offsets
                cand = cand[np.abs(cand).max(axis=1) < S]
                shifted = np.stack([_shift_image(Dr[j], int(dx), int(dy)) for dx, dy in cand])
                shifted, moved = _align_depth(shifted, np.zeros((len(cand), 3)), view)
                k = int(np.argmax(self._scores(shifted, None, view, tau, False).geometric))
                if np.array_equal(cand[k], pos):
                    break
                pos, dz = cand[k], float(moved[k, 2])
            out[j] = out[j] + _pixel_shift_mm(view.camera.K, float(out[j, 2]), int(pos[0]), int(pos[1]))
            out[j, 2] += dz
        return out

    # -- rendering and scoring
    def _render(self, model: ObjectModel, camera: CameraIntrinsics, R: np.ndarray, t: np.ndarray,
                colour: bool) -> tuple[np.ndarray, np.ndarray | None]:
        outputs = {"depth", "rgb"} if colour else {"depth"}
        results = render_poses(self.renderer, model, camera, R, t, outputs, light=_ALBEDO)
        depth = stack_results(results, "depth").astype(np.float32)
        rgb = stack_results(results, "rgb").astype(np.float32) / 255.0 if colour else None
        return depth, rgb

    def _scores(self, Dr: np.ndarray, Cr: np.ndarray | None, view: _View, tau: float, textured: bool) -> _Scores:
        """Render-and-compare scores of B renders (depth ``Dr`` (B, S, S), albedo ``Cr``) vs a view."""
        cfg = self.config
        sil = (Dr > 0) & view.inside[None]
        Do = view.depth[None]
        valid = view.depth > 0
        w = np.clip(1.0 - np.square((Dr - Do) / np.float32(tau)), 0.0, None)
        if view.mask is not None:
            M = view.mask
            agree = sil & (M & valid)[None]
            support = np.where(agree, w, 0.0).sum(axis=(1, 2)) + cfg.hole_weight * (sil & (M & ~valid)[None]).sum(
                axis=(1, 2))
            occluded = sil & (~M & valid)[None] & (Do < Dr - tau)
            union = (M[None] | (sil & ~occluded)).sum(axis=(1, 2))
            geometric = support / np.maximum(union, 1)
        else:
            agree = sil & valid[None]
            occluded = agree & (Do < Dr - tau)
            support = np.where(agree, w, 0.0).sum(axis=(1, 2))
            geometric = support / np.maximum((agree & ~occluded).sum(axis=(1, 2)), 1)
        n_sil = sil.sum(axis=(1, 2))
        visible = (sil & ~occluded).sum(axis=(1, 2)) / np.maximum(n_sil, 1)
        colour = np.zeros(len(Dr))
        score = geometric.astype(np.float64)
        if textured and Cr is not None and cfg.colour_weight > 0:
            colour = _masked_ncc(Cr, view.rgb, agree & (w > 0), cfg.min_colour_std)
            score = score * (1.0 - cfg.colour_weight * (1.0 - colour) / 2.0)
        return _Scores(score, geometric.astype(np.float64), colour, visible.astype(np.float64))


# --------------------------------------------------------------------------- helpers


def _inputs(rgb: np.ndarray, depth: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray, CameraIntrinsics]:
    depth = np.asarray(depth, dtype=np.float32)
    if depth.ndim != 2:
        raise ValueError(f"depth must be HxW (mm), got shape {depth.shape}")
    rgb = np.asarray(rgb)
    if rgb.shape[:2] != depth.shape or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"rgb must be HxWx3 with the depth's size {depth.shape}, got {rgb.shape}")
    depth = np.where(np.isfinite(depth), depth, 0.0).astype(np.float32)
    H, W = depth.shape
    return rgb, depth, CameraIntrinsics(np.asarray(K, dtype=np.float64), W, H)


def _rotation_z_to(ray: np.ndarray) -> np.ndarray:
    """The smallest rotation taking the optical axis (0, 0, 1) to the unit vector ``ray``."""
    axis = np.cross([0.0, 0.0, 1.0], ray)
    s = float(np.linalg.norm(axis))
    if s < 1e-12:
        return np.eye(3)
    return axis_angle_to_matrix(axis / s * np.arctan2(s, float(ray[2])))


def _ray_norms(K: np.ndarray, size: int) -> np.ndarray:
    """Length of ``K^-1 [u, v, 1]`` per pixel of a square image (z = range / norm)."""
    u, v = np.meshgrid(np.arange(size, dtype=np.float64), np.arange(size, dtype=np.float64))
    rays = np.stack([u, v, np.ones_like(u)], axis=-1) @ np.linalg.inv(K).T
    return np.linalg.norm(rays / rays[..., 2:3], axis=-1).astype(np.float32)


def _mask_box(mask: np.ndarray, camera: CameraIntrinsics, z: float, diameter: float,
              scale: float) -> tuple[int, int, int]:
    """Square crop ``(x0, y0, side)`` around the mask: ``scale`` x its box side, at least the
    object's projected diameter at depth ``z``."""
    ys, xs = np.nonzero(mask)
    cx, cy = 0.5 * (xs.min() + xs.max()), 0.5 * (ys.min() + ys.max())
    side = max(scale * (max(xs.max() - xs.min(), ys.max() - ys.min()) + 1),
               camera.fx * diameter / max(z, 1.0), 16.0)
    return _square(cx, cy, side)


def _square(cx: float, cy: float, side: float) -> tuple[int, int, int]:
    s = int(np.ceil(side))
    return int(np.floor(cx - 0.5 * s + 0.5)), int(np.floor(cy - 0.5 * s + 0.5)), s


def _pose_box(camera: CameraIntrinsics, prep: _Prepared, R: np.ndarray, t: np.ndarray,
              scale: float) -> tuple[int, int, int] | None:
    """Square crop around the projected bounding box of the model at ``R, t`` (x ``scale``), or
    ``None`` when the object is behind the camera or entirely outside the image."""
    lo, hi = prep.model.vertices.min(axis=0), prep.model.vertices.max(axis=0)
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    cam = corners @ R.T + t
    if np.any(cam[:, 2] <= 1.0):
        return None
    uv = cam @ camera.K.T
    uv = uv[:, :2] / uv[:, 2:3]
    (u0, v0), (u1, v1) = uv.min(axis=0), uv.max(axis=0)
    if u1 < 0 or v1 < 0 or u0 > camera.width - 1 or v0 > camera.height - 1:
        return None
    return _square(0.5 * (u0 + u1), 0.5 * (v0 + v1), max(scale * max(u1 - u0, v1 - v0), 16.0))


def _union_box(a: tuple[int, int, int], b: tuple[int, int, int] | None) -> tuple[int, int, int]:
    if b is None:
        return a
    x0, y0 = min(a[0], b[0]), min(a[1], b[1])
    x1, y1 = max(a[0] + a[2], b[0] + b[2]), max(a[1] + a[2], b[1] + b[2])
    return _square(0.5 * (x0 + x1), 0.5 * (y0 + y1), max(x1 - x0, y1 - y0))


def _cut(img: np.ndarray, x0: int, y0: int, side: int, fill: float = 0) -> np.ndarray:
    """The ``side`` x ``side`` window at ``(x0, y0)``, padded with ``fill`` outside the image."""
    H, W = img.shape[:2]
    out = np.full((side, side, *img.shape[2:]), fill, dtype=img.dtype)
    xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x0 + side, W), min(y0 + side, H)
    if xa < xb and ya < yb:
        out[ya - y0:yb - y0, xa - x0:xb - x0] = img[ya:yb, xa:xb]
    return out


def _crop_view(rgb: np.ndarray, depth: np.ndarray, mask: np.ndarray | None, camera: CameraIntrinsics,
               box: tuple[int, int, int], size: int) -> _View:
    """Crop ``box = (x0, y0, side)`` and shrink it to ``size`` when larger (nearest for depth and masks,
    area for colour; never enlarged: nearest-upsampled depth disagrees with a render on slopes), with
    the matching intrinsics (``crop_resize_camera``)."""
    x0, y0, side = box
    size = min(size, side)
    H, W = depth.shape
    inside = np.zeros((side, side), np.uint8)
    inside[max(-y0, 0):min(H - y0, side), max(-x0, 0):min(W - x0, side)] = 1
    d = _cut(depth, x0, y0, side)
    c = _cut(rgb, x0, y0, side)
    m = _cut(mask.astype(np.uint8), x0, y0, side) if mask is not None else None
    if side != size:
        near = cv2.INTER_NEAREST_EXACT
        d = cv2.resize(d, (size, size), interpolation=near)
        inside = cv2.resize(inside, (size, size), interpolation=near)
        c = cv2.resize(c, (size, size), interpolation=cv2.INTER_AREA)
        m = cv2.resize(m, (size, size), interpolation=near) if m is not None else None
    cam = crop_resize_camera(camera, (x0, y0, side, side), (size, size))
    inside_b = inside > 0
    return _View(cam, d.astype(np.float32), c.astype(np.float32) / 255.0, inside_b,
                 None if m is None else (m > 0) & inside_b)


def _robust_mean(points: np.ndarray, anchor: np.ndarray, radius: float) -> np.ndarray:
    """Mean of the points within ``1.5 radius`` of ``anchor`` (a stray mask pixel cannot drag it)."""
    near = points[np.linalg.norm(points - anchor, axis=1) <= 1.5 * radius]
    return near.mean(axis=0) if len(near) else anchor


def _align_depth(Dr: np.ndarray, t: np.ndarray, view: _View,
                 max_samples: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Move each render along z by the median observed-minus-rendered depth where both see the object
    (over at most ``max_samples`` evenly spread mask pixels); returns the renders and translations."""
    B = len(Dr)
    flat = np.flatnonzero(view.mask & (view.depth > 0))
    flat = flat[np.linspace(0, len(flat) - 1, min(len(flat), max_samples)).astype(int)] if len(flat) else flat
    rendered = Dr.reshape(B, -1)[:, flat]
    diff = np.where(rendered > 0, view.depth.reshape(-1)[flat][None] - rendered, np.nan)
    seen = np.isfinite(diff).any(axis=1)
    dz = np.zeros(B)
    if seen.any():
        dz[seen] = np.nanmedian(diff[seen], axis=1)
    shifted = np.where(Dr > 0, Dr + dz[:, None, None].astype(np.float32), 0.0).astype(np.float32)
    return shifted, t + np.column_stack([np.zeros(B), np.zeros(B), dz])


def _shift_image(D: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """``D`` moved by ``(dx, dy)`` whole pixels, zero-filled."""
    if dx == 0 and dy == 0:
        return D
    S = D.shape[0]
    out = np.zeros_like(D)
    if abs(dx) < S and abs(dy) < S:
        out[max(dy, 0):S + min(dy, 0), max(dx, 0):S + min(dx, 0)] = D[max(-dy, 0):S + min(-dy, 0),
                                                                      max(-dx, 0):S + min(-dx, 0)]
    return out


def _pixel_shift_mm(K: np.ndarray, z: float, du: float, dv: float) -> np.ndarray:
    """The translation (mm) that moves a point at depth ``z`` by ``(du, dv)`` pixels."""
    return np.array([(du - K[0, 1] * dv / K[1, 1]) * z / K[0, 0], dv * z / K[1, 1], 0.0])


def _align(Dr: np.ndarray, t: np.ndarray, view: _View, tau: float) -> tuple[np.ndarray, np.ndarray]:
    """Move each render onto the observation: along z (``_align_depth``), then in the image by the
    whole-pixel offset between the mask's centroid and that of the render's unoccluded part.
    Returns the shifted renders and translations."""
    Dr, t = _align_depth(Dr, t, view)
    S = Dr.shape[1]
    M = view.mask
    valid = view.depth > 0
    sil = (Dr > 0) & view.inside[None]
    seen = sil & ~((~M & valid)[None] & (view.depth[None] < Dr - tau))
    ys, xs = np.mgrid[0:S, 0:S]
    n = seen.sum(axis=(1, 2))
    has = n > 0
    n = np.maximum(n, 1)
    du = np.where(has, xs[M].mean() - np.einsum("bij,ij->b", seen, xs) / n, 0.0)
    dv = np.where(has, ys[M].mean() - np.einsum("bij,ij->b", seen, ys) / n, 0.0)
    du, dv = np.rint(du).astype(np.int64), np.rint(dv).astype(np.int64)
    out = np.stack([_shift_image(Dr[b], int(du[b]), int(dv[b])) for b in range(len(Dr))])
    shift = np.stack([_pixel_shift_mm(view.camera.K, float(t[b, 2]), du[b], dv[b]) for b in range(len(Dr))])
    return out, t + shift


def _masked_ncc(Cr: np.ndarray, Co: np.ndarray, m: np.ndarray, min_std: float) -> np.ndarray:
    """Normalised cross-correlation (all channels pooled) of renders ``Cr`` (B, S, S, 3) and the
    observation ``Co`` (S, S, 3) over masks ``m`` (B, S, S); 0 where the render is uniform there."""
    mf = m.astype(np.float32)
    n = mf.sum(axis=(1, 2)).astype(np.float64)
    s_r = np.einsum("bhw,bhwc->bc", mf, Cr, dtype=np.float64)
    s_o = np.einsum("bhw,hwc->bc", mf, Co, dtype=np.float64)
    s_rr = np.einsum("bhw,bhwc,bhwc->bc", mf, Cr, Cr, dtype=np.float64)
    s_oo = np.einsum("bhw,hwc,hwc->bc", mf, Co, Co, dtype=np.float64)
    s_ro = np.einsum("bhw,bhwc,hwc->bc", mf, Cr, Co, dtype=np.float64)
    nn = np.maximum(n, 1.0)[:, None]
    var_r = np.clip(s_rr - s_r * s_r / nn, 0.0, None).sum(axis=1)
    var_o = np.clip(s_oo - s_o * s_o / nn, 0.0, None).sum(axis=1)
    cov = (s_ro - s_r * s_o / nn).sum(axis=1)
    ncc = cov / np.sqrt(var_r * var_o + 1e-12)
    informative = (n >= 16) & (var_r / np.maximum(3.0 * n, 1.0) > min_std**2)
    return np.where(informative, np.clip(ncc, -1.0, 1.0), 0.0)


def _diverse_top(scores: np.ndarray, R: np.ndarray, k: int, min_deg: float) -> list[int]:
    """Indices of the ``k`` best scores (stable order) whose rotations are pairwise at least ``min_deg`` apart."""
    order = np.argsort(-scores, kind="stable")
    cos_min = np.cos(np.deg2rad(min_deg))
    picks: list[int] = []
    for i in order:
        if picks:
            tr = np.einsum("kij,ij->k", R[picks], R[i])
            if np.any(0.5 * (tr - 1.0) > cos_min):
                continue
        picks.append(int(i))
        if len(picks) == k:
            break
    return picks


def _distinct_top(scores: np.ndarray, R: np.ndarray, t: np.ndarray, k: int, min_deg: float,
                  min_mm: float) -> np.ndarray:
    """Indices of the ``k`` best poses (stable order), skipping near-duplicates of better ones (within
    ``min_deg`` and ``min_mm``): candidates that converged to the same pose are polished once."""
    cos_min = np.cos(np.deg2rad(min_deg))
    picks: list[int] = []
    for i in np.argsort(-scores, kind="stable"):
        if picks:
            close_r = 0.5 * (np.einsum("kij,ij->k", R[picks], R[i]) - 1.0) > cos_min
            close_t = np.linalg.norm(t[picks] - t[i], axis=1) < min_mm
            if np.any(close_r & close_t):
                continue
        picks.append(int(i))
        if len(picks) == k:
            break
    return np.array(picks, dtype=np.int64)


def _icp_points(depth: np.ndarray, K: np.ndarray, mask: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Masked depth points, from the mask eroded by one pixel when that keeps at least half of them
    (boundary pixels of real sensors mix object and background depth)."""
    eroded = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    inner, _ = depth_to_points(depth, K, eroded)
    return inner if len(inner) >= max(0.5 * len(points), 10) else points


def _subsample(points: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    if len(points) <= n:
        return points
    return points[np.sort(rng.choice(len(points), size=n, replace=False))]


def _icp_to_model(source: np.ndarray, prep: _Prepared, R: np.ndarray, t: np.ndarray,
                  config: ICPConfig) -> tuple[np.ndarray, np.ndarray]:
    """Refine the pose ``R, t`` by aligning camera-frame ``source`` points onto the model surface."""
    res = icp(source, prep.points, R.T, -R.T @ t, target_normals=prep.normals, config=config)
    if not res.success:
        return R, t
    R_new = project_to_so3(res.R.T)
    return R_new, -R_new @ res.t


def _supported(xyz: np.ndarray, region: np.ndarray, prep: _Prepared, R: np.ndarray, t: np.ndarray,
               near: float) -> np.ndarray:
    """Pixels of ``region`` whose observed point lies within ``near`` mm of the model surface at ``R, t``:
    the object's observed extent as the current pose explains it (a stand-in mask when tracking)."""
    out = np.zeros(region.shape, bool)
    pts = (xyz[region] - t) @ R
    dist, _ = prep.tree.query(pts, distance_upper_bound=near)
    out[region] = np.isfinite(dist)
    return out


def _stack(poses: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    return np.array([R for R, _ in poses]), np.array([t for _, t in poses])


def _dilate(mask: np.ndarray, fraction: float) -> np.ndarray:
    """``mask`` dilated by ``fraction`` of its larger box side (at least 2 pixels)."""
    ys, xs = np.nonzero(mask)
    r = max(2, round(float(fraction * max(xs.max() - xs.min(), ys.max() - ys.min()))))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    return cv2.dilate(mask.astype(np.uint8), kernel) > 0
