"""The conformance kit every method passes (like scikit-learn's ``check_estimator``).

``check_pose_method(factory, dataset)`` runs a method on a few frames of a dataset and checks what
the harness relies on: output types and shapes, units (mm vs metres), rotation orthonormality,
declared timing keys, determinism under a fixed seed, statelessness (or reset semantics for video
methods), and the save/load round trip of trainable methods.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from repro.data.base import PoseDataset
from repro.interface import Capabilities, PoseMethod
from repro.types import NOCS_CLASSES, CategoryEstimate, Frame, PoseEstimate, Prediction, Targets

log = logging.getLogger(__name__)

ROT_TOL = 1e-6
"""Maximum deviation of R^T R from the identity accepted from a method."""


class ConformanceError(AssertionError):
    """A method broke the ``PoseMethod`` contract; the message says which check and where."""


@dataclass
class ConformanceReport:
    method: str
    n_frames: int
    n_estimates: int
    checks: list[str] = field(default_factory=list)


def _fail(check: str, msg: str) -> None:
    raise ConformanceError(f"[{check}] {msg}")


def _check_rotation(R: np.ndarray, where: str) -> None:
    if R.shape != (3, 3) or not np.all(np.isfinite(R)):
        _fail("rotation", f"{where}: R must be a finite 3x3 matrix, got shape {R.shape}")
    dev = np.abs(R.T @ R - np.eye(3)).max()
    if dev > ROT_TOL or np.linalg.det(R) <= 0:
        _fail("rotation", f"{where}: R is not a rotation (|R^T R - I| = {dev:.2e}, det = {np.linalg.det(R):.4f})")


def _check_box_mask(est: PoseEstimate | CategoryEstimate, frame: Frame, where: str) -> None:
    if est.mask is not None and est.mask.shape != (frame.camera.height, frame.camera.width):
        _fail("mask", f"{where}: mask shape {est.mask.shape} != image {frame.camera.height}x{frame.camera.width}")
    if est.box is not None and (len(est.box) != 4 or not np.all(np.isfinite(est.box))):
        _fail("box", f"{where}: box must be 4 finite numbers, got {est.box}")


def _check_prediction(pred: Prediction, frame: Frame, targets: Targets, caps: Capabilities,
                      obj_ids: set[int]) -> None:
    where = f"scene {frame.scene_id} image {frame.im_id}"
    if not isinstance(pred, Prediction):
        _fail("types", f"{where}: predict returned {type(pred).__name__}, expected Prediction")
    allowed = set(targets.obj_ids) if targets.instances else obj_ids
    for i, est in enumerate(pred.estimates):
        w = f"{where} estimate {i}"
        if not isinstance(est, PoseEstimate):
            _fail("types", f"{w}: expected PoseEstimate, got {type(est).__name__}")
        _check_rotation(est.R, w)
        if est.t.shape != (3,) or not np.all(np.isfinite(est.t)):
            _fail("translation", f"{w}: t must be 3 finite numbers (mm)")
        if not np.isfinite(est.score):
            _fail("score", f"{w}: score must be finite, got {est.score}")
        if est.obj_id not in allowed:
            _fail("targets", f"{w}: obj_id {est.obj_id} is not a target of the frame ({sorted(allowed)})")
        _check_box_mask(est, frame, w)
    for i, est in enumerate(pred.category_estimates):
        w = f"{where} category estimate {i}"
        if not isinstance(est, CategoryEstimate):
            _fail("types", f"{w}: expected CategoryEstimate, got {type(est).__name__}")
        if not 1 <= est.class_id <= len(NOCS_CLASSES):
            _fail("category", f"{w}: class_id {est.class_id} outside 1..{len(NOCS_CLASSES)}")
        if not np.all(np.isfinite(est.RT)) or not np.allclose(est.RT[3], [0, 0, 0, 1]):
            _fail("category", f"{w}: RT must be finite with last row [0, 0, 0, 1]")
        if not est.scale > 0:
            _fail("category", f"{w}: RT 3x3 block must have a positive determinant (scale)")
        _check_rotation(est.R, w)
        if np.any(est.scales <= 0):
            _fail("category", f"{w}: scales must be positive, got {est.scales.tolist()}")
        if np.linalg.norm(est.t) > 100:
            _fail("units", f"{w}: |t| = {np.linalg.norm(est.t):.1f} m; category level is in metres")
        _check_box_mask(est, frame, w)
    if pred.estimates and "instance" not in caps.tasks and "tracking" not in caps.tasks:
        _fail("task", f"{where}: instance estimates from a method without the instance task")
    if pred.category_estimates and "category" not in caps.tasks:
        _fail("task", f"{where}: category estimates from a method without the category task")
    if not pred.timings:
        _fail("timings", f"{where}: Prediction.timings is empty; report seconds per stage")
    for k, v in pred.timings.items():
        if not np.isfinite(v) or v < 0:
            _fail("timings", f"{where}: timing {k!r} = {v} is not a non-negative number of seconds")
    missing = set(caps.timing_keys) - set(pred.timings)
    if missing:
        _fail("timings", f"{where}: declared timing keys {sorted(missing)} missing")


def _check_units(preds: Sequence[Prediction], frames: Sequence[Frame]) -> None:
    """Estimated depths must be on the scale of the annotated ones (mm at instance level)."""
    est = [e.t[2] for p in preds for e in p.estimates]
    gt = [g.t[2] for f in frames for g in (f.gt or ())]
    if est and gt:
        ratio = float(np.median(np.abs(est)) / max(np.median(np.abs(gt)), 1e-9))
        if not 0.2 <= ratio <= 5.0:
            _fail("units", f"median |t_z| of estimates is {ratio:.3g}x that of the ground truth; "
                           "instance-level translations are in millimetres")


def _same(a: Sequence[Prediction], b: Sequence[Prediction], check: str, what: str) -> None:
    for i, (p, q) in enumerate(zip(a, b, strict=True)):
        if len(p.estimates) != len(q.estimates) or len(p.category_estimates) != len(q.category_estimates):
            _fail(check, f"frame {i}: {what}: different numbers of estimates")
        pairs = [(e.obj_id, f.obj_id, e.R, f.R, e.t, f.t, e.score, f.score)
                 for e, f in zip(p.estimates, q.estimates, strict=True)]
        pairs += [(e.class_id, f.class_id, e.RT, f.RT, e.scales, f.scales, e.score, f.score)
                  for e, f in zip(p.category_estimates, q.category_estimates, strict=True)]
        for ia, ib, ra, rb, ta, tb, sa, sb in pairs:
            if ia != ib or not (np.allclose(ra, rb, rtol=1e-6, atol=1e-6) and np.allclose(ta, tb, rtol=1e-6, atol=1e-6)
                                and np.isclose(sa, sb, rtol=1e-6, atol=1e-6)):
                _fail(check, f"frame {i}: {what}: outputs differ")


def _select_frames(dataset: PoseDataset, n_frames: int, with_gt: bool) -> tuple[list[Frame], list[Targets]]:
    """The first ``n_frames`` frames with targets, taken from one scene (a sequence)."""
    frames, targets = [], []
    for sid in dataset.scene_ids():
        frames, targets = [], []
        for f, t in dataset.iter_frames([sid], with_gt=True, load_masks=with_gt):
            if t.instances or t.categories or t.any_object or f.category_gt:
                frames.append(f)
                targets.append(t)
            if len(frames) == n_frames:
                return frames, targets
    if not frames:
        raise ConformanceError(f"dataset {dataset.name!r} has no frame with targets to test on")
    return frames, targets


def check_pose_method(factory: Callable[..., PoseMethod], dataset: PoseDataset, *, n_frames: int = 3,
                      seed: int = 0, workdir: str | Path | None = None) -> ConformanceReport:
    """Run the conformance checks; raise ``ConformanceError`` on the first violation.

    ``factory(seed=...)`` must return a fresh, ready-to-onboard method (trained or not).
    """
    with contextlib.ExitStack() as created:  # every instance made here is closed at the end

        def make() -> PoseMethod:
            m = factory(seed=seed)
            if isinstance(m, PoseMethod):
                created.callback(m.close)
            return m

        method = make()
        if not isinstance(method, PoseMethod):
            _fail("types", f"factory returned {type(method).__name__}, not a PoseMethod")
        caps = method.capabilities
        if not isinstance(caps, Capabilities) or not isinstance(method.name, str) or not method.name:
            _fail("types", "a method needs a non-empty str `name` and a Capabilities `capabilities`")
        report = ConformanceReport(method=method.name, n_frames=0, n_estimates=0)
        frames, targets = _select_frames(dataset, n_frames, caps.uses_ground_truth)
        inputs = frames if caps.uses_ground_truth else [f.without_annotations() for f in frames]
        obj_ids = set(dataset.objects())

        def run(m: PoseMethod, order: Sequence[int]) -> list[Prediction]:
            m.reset(inputs[order[0]].sequence_id)
            out: list[Prediction] = [Prediction()] * len(inputs)
            for i in order:
                out[i] = m.predict(inputs[i], targets[i])
            return out

        method.onboard(dataset.objects())
        forward = list(range(len(inputs)))
        first = run(method, forward)
        for pred, frame, tg in zip(first, frames, targets, strict=True):
            _check_prediction(pred, frame, tg, caps, obj_ids)
        report.checks += ["types", "rotation", "translation", "score", "targets", "timings", "category"]
        _check_units(first, frames)
        report.checks.append("units")

        again = make()
        again.onboard(dataset.objects())
        _same(first, run(again, forward), "determinism", "a second instance with the same seed")
        report.checks.append("determinism")

        if caps.is_video:
            _same(first, run(method, forward), "reset", "the sequence replayed after reset()")
            report.checks.append("reset")
        else:
            _same(first, run(method, forward[::-1]), "stateless", "frames in reverse order (a single-frame method "
                  "must not keep state between frames)")
            report.checks.append("stateless")

        if caps.trainable:
            with tempfile.TemporaryDirectory(dir=workdir) as tmp:
                method.save(tmp)
                loaded = make()
                loaded.load(tmp)
                loaded.onboard(dataset.objects())
                _same(first, run(loaded, forward), "save_load", "a fresh instance after save()/load()")
            report.checks.append("save_load")

        report.n_frames = len(frames)
        report.n_estimates = sum(len(p.estimates) + len(p.category_estimates) for p in first)
        if report.n_estimates == 0:
            log.warning("%s produced no estimates on %d frames of %s", method.name, len(frames), dataset.name)
        return report
