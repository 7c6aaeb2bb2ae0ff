"""Pose registration and tracking (methods.common.registration) and the registrar_gtmask baseline."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial import cKDTree

from methods.baselines.registrar_gtmask import RegistrarGTMask
from methods.common.registration import (
    FoundationPoseConfig,
    FoundationPoseRegistrar,
    FoundationPoseUnavailableError,
    PoseRegistrar,
    RegistrationError,
    RegistrationOutput,
    RenderCompareConfig,
    RenderCompareRegistrar,
    as_pose,
    create_registrar,
)
from methods.common.registration.foundationpose import REFINER_RUN, SCORER_RUN
from repro.data.bop import BopDataset
from repro.data.synth import build_object, generate_bop_dataset
from repro.geometry import axis_angle_to_matrix, geodesic_distance
from repro.render import Light, RenderInstance, RenderScene
from repro.testing import check_pose_method
from repro.types import CameraIntrinsics, ObjectModel

log = logging.getLogger(__name__)

CAMERA = CameraIntrinsics(np.array([[572.0, 0.0, 319.5], [0.0, 572.0, 239.5], [0.0, 0.0, 1.0]]), 640, 480)
FAST = {"registrar_config": {"view_level": 1, "top_k": 6, "polish_k": 2}}
"""A lighter registrar for the contract checks (the accuracy tests use the defaults)."""


# --------------------------------------------------------------------------- fixtures and helpers



@pytest.fixture(scope="module")
def registrar(renderer):
    return RenderCompareRegistrar(RenderCompareConfig(), renderer=renderer)


@pytest.fixture(scope="module")
def smoke_dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("registration") / "smoke"
    generate_bop_dataset(root, "smoke", seed=0, progress=False)
    return root


def _backdrop(z: float) -> ObjectModel:
    """A 2 m square facing the camera at depth ``z`` (the wall behind the object)."""
    v = np.array([[-1000.0, -1000.0, z], [1000.0, -1000.0, z], [1000.0, 1000.0, z], [-1000.0, 1000.0, z]])
    return ObjectModel(obj_id=999, vertices=v, faces=np.array([[0, 1, 2], [0, 2, 3]]), diameter=2900.0,
                       colors=np.full((4, 3), 0.35))


def _frame(renderer, model: ObjectModel, R: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """rgb, depth (mm) and visible mask of ``model`` at ``R, t`` in front of a wall."""
    scene = RenderScene(CAMERA, (RenderInstance(model, R, t),
                                 RenderInstance(_backdrop(float(t[2]) + 300.0), np.eye(3), np.zeros(3))),
                        light=Light(direction=(0.3, 0.5, 1.0)))
    res = renderer.render(scene, {"depth", "ids", "rgb"})
    return res.rgb, res.depth.astype(np.float32), res.instance_ids == 0


def _errors(out: RegistrationOutput, R: np.ndarray, t: np.ndarray) -> tuple[float, float]:
    return float(np.rad2deg(geodesic_distance(out.R, R))), float(np.linalg.norm(out.t - t))


def _add_s(R_e, t_e, R_g, t_g, model: ObjectModel) -> float:
    """ADD for asymmetric models, ADD-S for models with symmetries (mm)."""
    pe = model.vertices @ np.asarray(R_e).T + t_e
    pg = model.vertices @ np.asarray(R_g).T + t_g
    if model.is_symmetric:
        return float(cKDTree(pe).query(pg)[0].mean())
    return float(np.linalg.norm(pe - pg, axis=1).mean())


def _rot(axis: list[float], deg: float) -> np.ndarray:
    a = np.asarray(axis, dtype=np.float64)
    return axis_angle_to_matrix(a / np.linalg.norm(a) * np.deg2rad(deg))


POSE_A = (_rot([1.0, 0.4, -0.2], 130.0), np.array([35.0, -20.0, 640.0]))
POSE_B = (_rot([-0.3, 1.0, 0.5], 70.0), np.array([-60.0, 40.0, 720.0]))


# --------------------------------------------------------------------------- registration


@pytest.mark.parametrize("pose", [POSE_A, POSE_B], ids=["a", "b"])
def test_register_recovers_asymmetric_pose(renderer, registrar, pose):
    model, _ = build_object("l_bracket", 1)
    R, t = pose
    rgb, depth, mask = _frame(renderer, model, R, t)
    out = registrar.register(rgb, depth, mask, CAMERA.K, model)
    rot, trans = _errors(out, R, t)
    assert rot < 5.0 and trans < 5.0, f"{rot:.2f} deg, {trans:.2f} mm"
    assert 0.9 < out.score <= 1.0
    assert set(out.timings) >= {"coarse", "icp", "rescore", "total"}


def test_register_textured_box_uses_colour(renderer, registrar):
    """A box is geometrically symmetric; only its print tells the flips apart."""
    model, _ = build_object("cereal_box", 1)
    assert not model.is_symmetric
    R, t = POSE_B
    rgb, depth, mask = _frame(renderer, model, R, t)
    out = registrar.register(rgb, depth, mask, CAMERA.K, model)
    rot, trans = _errors(out, R, t)
    assert rot < 5.0 and trans < 5.0, f"{rot:.2f} deg, {trans:.2f} mm"
    assert out.info["colour_ncc"] > 0.5


def test_register_with_depth_holes(renderer, registrar):
    model, _ = build_object("l_bracket", 1)
    R, t = POSE_A
    rgb, depth, mask = _frame(renderer, model, R, t)
    rng = np.random.default_rng(3)
    ys, xs = np.nonzero(mask)
    yy, xx = np.mgrid[0:CAMERA.height, 0:CAMERA.width]
    for i in rng.choice(len(xs), size=12, replace=False):
        depth[(yy - ys[i]) ** 2 + (xx - xs[i]) ** 2 <= rng.uniform(3, 8) ** 2] = 0.0
    missing = 1.0 - (depth[mask] > 0).mean()
    assert missing > 0.1
    out = registrar.register(rgb, depth, mask, CAMERA.K, model)
    rot, trans = _errors(out, R, t)
    assert rot < 5.0 and trans < 5.0, f"{rot:.2f} deg, {trans:.2f} mm with {missing:.0%} depth missing"


@pytest.mark.parametrize("key", ["soda_can", "block"])
def test_register_symmetric_objects_by_adds(renderer, registrar, key):
    model, _ = build_object(key, 2)
    assert model.is_symmetric
    R, t = POSE_A
    rgb, depth, mask = _frame(renderer, model, R, t)
    out = registrar.register(rgb, depth, mask, CAMERA.K, model)
    err = _add_s(out.R, out.t, R, t, model)
    assert err < 0.02 * model.diameter, f"ADD-S {err:.2f} mm"


def test_register_rejects_unusable_input(renderer, registrar):
    model, _ = build_object("block", 2)
    rgb, depth, mask = _frame(renderer, model, *POSE_A)
    with pytest.raises(RegistrationError, match="mask has 0 pixels"):
        registrar.register(rgb, depth, np.zeros_like(mask), CAMERA.K, model)
    with pytest.raises(RegistrationError, match="have depth"):
        registrar.register(rgb, np.zeros_like(depth), mask, CAMERA.K, model)
    with pytest.raises(ValueError, match="mask shape"):
        registrar.register(rgb, depth, mask[:10], CAMERA.K, model)


def test_determinism_and_call_order(renderer):
    model, _ = build_object("mug", 1)
    rgb, depth, mask = _frame(renderer, model, *POSE_B)
    other, _ = build_object("soda_can", 2)
    rgb2, depth2, mask2 = _frame(renderer, other, *POSE_A)
    first = RenderCompareRegistrar(RenderCompareConfig(seed=7), renderer=renderer)
    second = RenderCompareRegistrar(RenderCompareConfig(seed=7), renderer=renderer)
    a = first.register(rgb, depth, mask, CAMERA.K, model)
    second.register(rgb2, depth2, mask2, CAMERA.K, other)
    b = second.register(rgb, depth, mask, CAMERA.K, model)
    assert np.array_equal(a.R, b.R) and np.array_equal(a.t, b.t) and a.score == b.score


# --------------------------------------------------------------------------- tracking


def test_track_follows_small_motion(renderer, registrar):
    model, _ = build_object("drill", 1)
    R0, t0 = POSE_A
    R1 = _rot([0.2, 1.0, 0.3], 6.0) @ R0
    t1 = t0 + np.array([9.0, -6.0, 12.0])
    rgb, depth, _ = _frame(renderer, model, R1, t1)
    out = registrar.track(rgb, depth, CAMERA.K, model, (R0, t0))
    rot, trans = _errors(out, R1, t1)
    assert rot < 1.0 and trans < 2.0, f"{rot:.2f} deg, {trans:.2f} mm"
    assert out.score > 0.9 and out.info["visible_fraction"] > 0.9
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R0, t0
    assert np.allclose(registrar.track(rgb, depth, CAMERA.K, model, T).t, out.t)


def test_track_scores_lost_objects_low(renderer, registrar):
    model, _ = build_object("drill", 1)
    R0, t0 = POSE_A
    rgb, depth, _ = _frame(renderer, model, R0, t0 + np.array([400.0, 0.0, 0.0]))
    assert registrar.track(rgb, depth, CAMERA.K, model, (R0, t0)).score < 0.3
    behind = registrar.track(rgb, depth, CAMERA.K, model, (R0, np.array([0.0, 0.0, -500.0])))
    assert behind.score == 0.0 and behind.info["visible_fraction"] == 0.0


# --------------------------------------------------------------------------- interface


def test_interface_and_factory(registrar):
    assert isinstance(registrar, PoseRegistrar)
    out = RegistrationOutput(np.eye(3), [1.0, 2.0, 3.0], 0.5, {"total": 0.1})
    assert out.pose.shape == (4, 4) and out.pose[2, 3] == 3.0
    for pose in (out, out.pose, (out.R, out.t)):
        R, t = as_pose(pose)
        assert np.array_equal(R, np.eye(3)) and np.array_equal(t, [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="4x4"):
        as_pose(np.eye(3))
    reg = create_registrar("render_compare", {"inplane": 8, "view_level": 1}, seed=3)
    assert isinstance(reg, RenderCompareRegistrar) and reg.config.seed == 3 and reg.n_hypotheses == 42 * 8
    with pytest.raises(ValueError, match="unknown keys"):
        create_registrar("render_compare", {"nonsense": 1})
    with pytest.raises(ValueError, match="unknown registrar"):
        create_registrar("magic")
    with pytest.raises(ValueError):
        RenderCompareConfig(top_k=10, candidates=5)


def test_foundationpose_slot_names_what_is_missing(tmp_path):
    with pytest.raises(FoundationPoseUnavailableError, match=r"`foundationpose` package is not importable") as exc:
        FoundationPoseRegistrar(FoundationPoseConfig())
    assert "weights_dir is not set" in str(exc.value)

    code = tmp_path / "FoundationPose"
    code.mkdir()
    with pytest.raises(FoundationPoseUnavailableError) as exc:
        create_registrar("foundationpose", {"code_dir": str(code)})
    msg = str(exc.value)
    assert str(code / "estimater.py") in msg
    assert str(code / "weights" / REFINER_RUN / "model_best.pth") in msg
    assert str(code / "weights" / SCORER_RUN / "config.yml") in msg

    (code / "estimater.py").write_text("")
    for run in (REFINER_RUN, SCORER_RUN):
        (code / "weights" / run).mkdir(parents=True)
        for name in ("model_best.pth", "config.yml"):
            (code / "weights" / run / name).write_text("")
    import importlib.util

    if importlib.util.find_spec("nvdiffrast") is None:
        with pytest.raises(FoundationPoseUnavailableError, match="nvdiffrast is not installed") as exc:
            FoundationPoseRegistrar(FoundationPoseConfig(code_dir=str(code)))
        assert "estimater.py" not in str(exc.value) and "weights not found" not in str(exc.value)

    method = RegistrarGTMask({"registrar": "foundationpose"})
    with pytest.raises(FoundationPoseUnavailableError):
        method.onboard({})


# --------------------------------------------------------------------------- the baseline


def test_conformance_golden(goldtoy_dataset):
    report = check_pose_method(functools.partial(RegistrarGTMask, FAST), goldtoy_dataset)
    assert "reset" in report.checks and report.n_estimates > 0


def test_conformance_smoke_video(smoke_dataset):
    ds = BopDataset(smoke_dataset, split="video", targets="video_targets_bop19.json")
    report = check_pose_method(functools.partial(RegistrarGTMask, FAST), ds)
    assert "reset" in report.checks and report.n_estimates > 0


def test_baseline_tracks_consecutive_frames(smoke_dataset):
    ds = BopDataset(smoke_dataset, split="video", targets="video_targets_bop19.json")
    frames = [(f, t) for f, t in ds.iter_frames(load_masks=True)][:3]
    for mode, expect_tracking in (("auto", True), (False, False)):
        method = RegistrarGTMask({**FAST, "track": mode})
        method.onboard(ds.objects())
        method.reset(frames[0][0].sequence_id)
        preds = [method.predict(f, t) for f, t in frames]
        assert preds[0].timings["tracking"] == 0.0 and preds[0].timings["registration"] > 0.0
        assert (sum(p.timings["tracking"] for p in preds[1:]) > 0.0) == expect_tracking
        method.close()
    assert method.provenance().notes == "ground-truth mask + pose estimator upper bound"
    with pytest.raises(ValueError, match="track must be"):
        RegistrarGTMask({"track": "sometimes"})


def _recall(dataset: BopDataset, min_visib: float = 0.5) -> tuple[float, dict[str, list[bool]]]:
    """ADD(S) < 0.1 d recall of registrar_gtmask (registration only) over the target GT instances with
    visib_fract >= ``min_visib`` (a GT counts as found when an estimate of its object is within the
    threshold), and the hits per object kind."""
    method = RegistrarGTMask({"track": False})
    objects = dataset.objects()
    method.onboard(objects)
    kinds = {i: str(info.get("kind", i)) for i, info in dataset.models_info.items()}
    hits: dict[str, list[bool]] = {}
    for frame, targets in dataset.iter_frames(load_masks=True, only_targets=True):
        pred = method.predict(frame, targets)
        for g in frame.gt:
            if g.obj_id not in targets.obj_ids or g.visib_fract < min_visib:
                continue
            model = objects[g.obj_id]
            errors = [_add_s(e.R, e.t, g.R, g.t, model) for e in pred.estimates if e.obj_id == g.obj_id]
            hits.setdefault(kinds[g.obj_id], []).append(min(errors, default=np.inf) < 0.1 * model.diameter)
    method.close()
    recall = float(np.mean([h for v in hits.values() for h in v]))
    log.info("ADD(S)@0.1d on %s (visib >= %.2f): %.1f%%; per kind %s", dataset.name, min_visib, 100 * recall,
             {k: f"{100 * np.mean(v):.0f}% of {len(v)}" for k, v in hits.items()})
    return recall, hits


def test_accuracy_smoke(smoke_dataset):
    recall, hits = _recall(BopDataset(smoke_dataset))
    assert sum(len(v) for v in hits.values()) >= 10
    assert recall >= 0.9


@pytest.mark.slow
def test_accuracy_golden(goldtoy_dataset):
    recall, _ = _recall(goldtoy_dataset)
    assert recall >= 0.9
