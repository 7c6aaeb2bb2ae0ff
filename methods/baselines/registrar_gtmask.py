"""Ground-truth visible masks + a pose registrar: the "ground-truth mask + pose estimator" upper bound
of STORM's Table 1 (there FoundationPose; here ``RenderCompareRegistrar`` by default).

For every target instance (the ``inst_count`` most visible GT instances of each target object) the
registrar registers the object from its GT visible mask, the depth and the object model. With
tracking on, an instance seen in the previous frame of the same sequence is tracked from its
previous pose instead; the tracked pose is verified with the GT mask (the registrar's mask-aware
score) and re-registered when the score falls below ``min_track_score`` — the role STORM's TOM
plays, with ground truth standing in for the failure classifier.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from methods.common.registration import (
    PoseRegistrar,
    RegistrationError,
    RegistrationOutput,
    RenderCompareRegistrar,
    create_registrar,
)
from repro.interface import Capabilities, PoseMethod, Provenance
from repro.types import Frame, GTInstance, ObjectModel, PoseEstimate, Prediction, Targets

log = logging.getLogger(__name__)

TRACK_MODES = ("auto", "always", "never")


@dataclass(frozen=True)
class _Track:
    sequence_id: int | None
    sequence_index: int | None
    R: np.ndarray
    t: np.ndarray


def _track_mode(value: Any) -> str:
    """``track`` config: ``auto`` (the frame right after the previous one of the sequence), ``true`` /
    ``always`` (any later frame of the sequence) or ``false`` / ``never`` (register every frame)."""
    if isinstance(value, bool):
        return "always" if value else "never"
    mode = str(value).lower()
    mode = {"true": "always", "false": "never"}.get(mode, mode)
    if mode not in TRACK_MODES:
        raise ValueError(f"registrar_gtmask: track must be true, false or one of {TRACK_MODES}, got {value!r}")
    return mode


class RegistrarGTMask(PoseMethod):
    """Pose registration (and tracking) from ground-truth visible masks: an upper bound.

    Config: ``preset`` (label), ``registrar`` (``render_compare`` | ``foundationpose``), ``registrar_config``
    (the registrar's config keys), ``track`` (``auto`` | true | false), ``min_track_score`` (re-register a
    tracked pose scoring below it against the GT mask), ``min_mask_pixels`` (smaller masks get no estimate).
    """

    name = "registrar_gtmask"
    capabilities = Capabilities(tasks=("instance", "tracking"),
                                inputs=frozenset({"rgb", "depth", "cad_model", "video"}),
                                outputs=frozenset({"pose"}), uses_ground_truth=True,
                                timing_keys=("registration", "tracking"))

    def __init__(self, cfg: Mapping[str, Any] | None = None, seed: int = 0) -> None:
        super().__init__(cfg, seed)
        self.preset = str(self.cfg.get("preset", "default"))
        self.registrar_name = str(self.cfg.get("registrar", "render_compare"))
        self.registrar_config = dict(self.cfg.get("registrar_config") or {})
        self.track = _track_mode(self.cfg.get("track", "auto"))
        self.min_track_score = float(self.cfg.get("min_track_score", 0.8))
        self.min_mask_pixels = int(self.cfg.get("min_mask_pixels", 10))
        if not 0.0 <= self.min_track_score <= 1.0:
            raise ValueError(f"registrar_gtmask: min_track_score must be in [0, 1], got {self.min_track_score}")
        self._registrar: PoseRegistrar | None = None
        self._scorer: RenderCompareRegistrar | None = None
        self._objects: dict[int, ObjectModel] = {}
        self._tracks: dict[tuple[int, int], _Track] = {}

    def provenance(self) -> Provenance:
        weights = "pretrained" if self.registrar_name == "foundationpose" else "none"
        return Provenance(preset=self.preset, weights=weights, backbone=self.registrar_name,
                          notes="ground-truth mask + pose estimator upper bound")

    @property
    def registrar(self) -> PoseRegistrar:
        if self._registrar is None:
            self._registrar = create_registrar(self.registrar_name, self.registrar_config, seed=self.seed)
        return self._registrar

    @property
    def scorer(self) -> RenderCompareRegistrar:
        """Verifies tracked poses against the GT mask (the registrar itself when it can score)."""
        if isinstance(self.registrar, RenderCompareRegistrar):
            return self.registrar
        if self._scorer is None:
            self._scorer = RenderCompareRegistrar()
        return self._scorer

    def close(self) -> None:
        """Release the registrar's resources (renderer, networks)."""
        for r in (self._registrar, self._scorer):
            if r is not None:
                r.close()
        self._registrar = self._scorer = None

    def onboard(self, objects: Mapping[int, ObjectModel], cache_dir: str | Path | None = None) -> None:
        self._objects = dict(objects)
        if isinstance(self.registrar, RenderCompareRegistrar):
            for model in self._objects.values():
                self.registrar.prepare(model)

    def reset(self, sequence_id: int | None = None) -> None:
        self._tracks.clear()

    def _instances(self, frame: Frame, targets: Targets) -> list[GTInstance]:
        by_obj: dict[int, list[GTInstance]] = {}
        for g in frame.gt or ():
            by_obj.setdefault(g.obj_id, []).append(g)
        if targets.any_object:
            return list(frame.gt or ())
        chosen = []
        for t in targets.instances:
            chosen += sorted(by_obj.get(t.obj_id, []), key=lambda g: -g.visib_fract)[:t.inst_count]
        return chosen

    def _may_track(self, prev: _Track | None, frame: Frame) -> bool:
        if prev is None or self.track == "never" or prev.sequence_id != frame.sequence_id:
            return False
        if prev.sequence_index is None or frame.sequence_index is None:
            return False
        step = frame.sequence_index - prev.sequence_index
        return step == 1 if self.track == "auto" else step >= 1

    def predict(self, frame: Frame, targets: Targets) -> Prediction:
        if frame.gt is None:
            raise ValueError("registrar_gtmask needs the frame's ground truth (visible masks); the runner passes it "
                             "only to methods declaring uses_ground_truth")
        if frame.depth is None:
            raise ValueError("registrar_gtmask needs a depth image")
        timings = {"registration": 0.0, "tracking": 0.0}
        estimates = []
        for g in self._instances(frame, targets):
            if g.mask_visib is None:
                raise ValueError(f"registrar_gtmask: GT instance {g.gt_id} of image {frame.key} has no visible mask "
                                 "(load the dataset with load_masks=True)")
            model = self._objects.get(g.obj_id)
            if model is None:
                raise KeyError(f"registrar_gtmask: object {g.obj_id} was not onboarded")
            if int(g.mask_visib.sum()) < self.min_mask_pixels:
                continue
            out = self._estimate(frame, g, model, timings)
            if out is None:
                continue
            self._tracks[(g.obj_id, g.gt_id)] = _Track(frame.sequence_id, frame.sequence_index, out.R, out.t)
            estimates.append(PoseEstimate(obj_id=g.obj_id, R=out.R, t=out.t, score=out.score))
        return Prediction(estimates=estimates, timings=timings)

    def _estimate(self, frame: Frame, g: GTInstance, model: ObjectModel,
                  timings: dict[str, float]) -> RegistrationOutput | None:
        prev = self._tracks.get((g.obj_id, g.gt_id))
        if self._may_track(prev, frame):
            start = time.perf_counter()
            tracked = self.registrar.track(frame.rgb, frame.depth, frame.K, model, (prev.R, prev.t))
            score = self.scorer.score_pose(frame.rgb, frame.depth, g.mask_visib, frame.K, model, tracked)
            timings["tracking"] += time.perf_counter() - start
            if score >= self.min_track_score:
                return RegistrationOutput(tracked.R, tracked.t, score, tracked.timings, tracked.info)
            log.debug("registrar_gtmask: track of obj %d (gt %d) in %s scored %.3f; re-registering",
                      g.obj_id, g.gt_id, frame.key, score)
        start = time.perf_counter()
        try:
            return self.registrar.register(frame.rgb, frame.depth, g.mask_visib, frame.K, model)
        except RegistrationError as exc:
            log.info("registrar_gtmask: no estimate for obj %d (gt %d) in %s: %s", g.obj_id, g.gt_id, frame.key, exc)
            return None
        finally:
            timings["registration"] += time.perf_counter() - start
