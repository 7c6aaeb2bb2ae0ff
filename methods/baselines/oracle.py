"""The ground-truth oracle: returns annotated poses, optionally degraded.

It is the "ground truth" upper-bound row of the paper tables and exercises the whole path
(inference, results files, evaluation, reports) without any learned part. Noise and dropped
detections are drawn from a generator seeded by (seed, scene, image, instance), so a frame's
output does not depend on the order frames are processed in.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from repro.interface import Capabilities, PoseMethod, Provenance
from repro.types import CategoryEstimate, Frame, GTInstance, PoseEstimate, Prediction, Targets


def _rotation_noise(rng: np.random.Generator, sigma_deg: float) -> np.ndarray:
    """A rotation about a uniformly random axis by an angle ~ N(0, sigma)."""
    if sigma_deg <= 0:
        return np.eye(3)
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = np.deg2rad(rng.normal(0.0, sigma_deg))
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)


class OracleMethod(PoseMethod):
    """Ground-truth poses (upper bound), with optional seeded noise and dropped detections.

    Config: ``rot_noise_deg`` (std of the rotation angle), ``trans_noise_mm`` (std per axis; metres
    are derived for category level), ``drop_prob`` (probability to drop an instance).
    Scores are the GT visible fractions, so the most visible instances rank first.
    """

    name = "oracle"
    capabilities = Capabilities(tasks=("instance", "category"), inputs=frozenset(),
                                outputs=frozenset({"pose", "mask", "box", "category"}),
                                uses_ground_truth=True, timing_keys=("oracle",))

    def __init__(self, cfg: Mapping[str, Any] | None = None, seed: int = 0) -> None:
        super().__init__(cfg, seed)
        self.rot_noise_deg = float(self.cfg.get("rot_noise_deg", 0.0))
        self.trans_noise_mm = float(self.cfg.get("trans_noise_mm", 0.0))
        self.drop_prob = float(self.cfg.get("drop_prob", 0.0))
        if not 0.0 <= self.drop_prob <= 1.0:
            raise ValueError(f"oracle: drop_prob must be in [0, 1], got {self.drop_prob}")
        if self.rot_noise_deg < 0 or self.trans_noise_mm < 0:
            raise ValueError("oracle: noise levels must be non-negative")

    def provenance(self) -> Provenance:
        noisy = self.rot_noise_deg or self.trans_noise_mm or self.drop_prob
        return Provenance(preset="noisy" if noisy else "exact", weights="none",
                          notes="ground-truth upper bound")

    def _rng(self, frame: Frame, inst: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, frame.scene_id, frame.im_id, inst])

    def predict(self, frame: Frame, targets: Targets) -> Prediction:
        start = time.perf_counter()
        if frame.gt is None and frame.category_gt is None:
            raise ValueError("oracle needs the frame's ground truth; the runner passes it only to methods "
                             "declaring uses_ground_truth (is the dataset annotated?)")
        estimates = self._instances(frame, targets) if frame.gt is not None else []
        categories = self._categories(frame, targets) if frame.category_gt is not None else []
        elapsed = time.perf_counter() - start
        return Prediction(estimates=estimates, category_estimates=categories, timings={"oracle": elapsed})

    def _instances(self, frame: Frame, targets: Targets) -> list[PoseEstimate]:
        chosen: list[GTInstance] = []
        by_obj: dict[int, list[GTInstance]] = {}
        for g in frame.gt or ():
            by_obj.setdefault(g.obj_id, []).append(g)
        if targets.any_object:
            chosen = list(frame.gt or ())
        for t in targets.instances:
            ranked = sorted(by_obj.get(t.obj_id, []), key=lambda g: -g.visib_fract)
            chosen += ranked[:t.inst_count]
        out = []
        for g in chosen:
            rng = self._rng(frame, g.gt_id)
            if rng.random() < self.drop_prob:
                continue
            R = _rotation_noise(rng, self.rot_noise_deg) @ g.R
            t = g.t + rng.normal(0.0, self.trans_noise_mm, 3) if self.trans_noise_mm else g.t
            box = tuple(float(v) for v in g.bbox_visib) if g.bbox_visib is not None else None
            out.append(PoseEstimate(obj_id=g.obj_id, R=R, t=t, score=g.visib_fract, mask=g.mask_visib, box=box))
        return out

    def _categories(self, frame: Frame, targets: Targets) -> list[CategoryEstimate]:
        wanted = set(targets.categories)
        out = []
        for g in frame.category_gt or ():
            if wanted and g.class_id not in wanted:
                continue
            rng = self._rng(frame, g.inst_id)
            if rng.random() < self.drop_prob:
                continue
            RT = g.RT.copy()
            RT[:3, :3] = _rotation_noise(rng, self.rot_noise_deg) @ RT[:3, :3]
            if self.trans_noise_mm:
                RT[:3, 3] += rng.normal(0.0, self.trans_noise_mm / 1000.0, 3)
            box = tuple(float(v) for v in g.bbox) if g.bbox is not None else None
            out.append(CategoryEstimate(class_id=g.class_id, RT=RT, scales=g.scales, score=1.0, mask=g.mask, box=box))
        return out
