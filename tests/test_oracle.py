"""The oracle baseline: exact GT, seeded degradation, and the lossless CSV round trip."""

from __future__ import annotations

import numpy as np
import pytest

from repro.inference import run_inference
from repro.registry import create_method
from repro.results import read_bop_csv
from repro.testing import check_pose_method
from repro.types import CameraIntrinsics, CategoryGT, Frame, Targets


@pytest.mark.parametrize("cfg", [{}, {"rot_noise_deg": 3.0, "trans_noise_mm": 5.0, "drop_prob": 0.3}])
def test_oracle_passes_conformance(goldtoy_dataset, cfg):
    report = check_pose_method(lambda seed: create_method("oracle", cfg, seed=seed), goldtoy_dataset)
    assert report.n_estimates > 0


def test_exact_oracle_returns_most_visible_target_instances(goldtoy_dataset):
    oracle = create_method("oracle")
    for frame, targets in goldtoy_dataset.iter_frames(only_targets=True):
        pred = oracle.predict(frame, targets)
        assert len(pred.estimates) == targets.n_instances
        for t in targets.instances:
            gts = sorted((g for g in frame.gt if g.obj_id == t.obj_id), key=lambda g: -g.visib_fract)
            got = [e for e in pred.estimates if e.obj_id == t.obj_id]
            for e, g in zip(got, gts[:t.inst_count], strict=True):
                np.testing.assert_array_equal(e.R, g.R)
                np.testing.assert_array_equal(e.t, g.t)
                assert e.score == g.visib_fract


def test_noise_statistics_and_drop_rate(goldtoy_dataset):
    frames = list(goldtoy_dataset.iter_frames(only_targets=True))
    oracle = create_method("oracle", {"rot_noise_deg": 4.0, "trans_noise_mm": 10.0, "drop_prob": 0.25}, seed=3)
    angles, shifts, kept, total = [], [], 0, 0
    for rep in range(20):
        oracle.seed = rep
        for frame, targets in frames:
            pred = oracle.predict(frame, targets)
            total += targets.n_instances
            kept += len(pred.estimates)
            for e in pred.estimates:
                g = min(frame.gt, key=lambda g: np.linalg.norm(g.t - e.t) if g.obj_id == e.obj_id else np.inf)
                cos = (np.trace(e.R @ g.R.T) - 1) / 2
                angles.append(np.degrees(np.arccos(np.clip(cos, -1, 1))))
                shifts.extend(e.t - g.t)
    assert abs(kept / total - 0.75) < 0.05
    assert abs(np.std(shifts) - 10.0) < 1.0
    # |N(0, 4)| has mean 4 * sqrt(2 / pi)
    assert abs(np.mean(angles) - 4.0 * np.sqrt(2 / np.pi)) < 0.4


def test_category_oracle():
    K = np.array([[591.0, 0, 322.5], [0, 590.2, 244.1], [0, 0, 1]])
    RT = np.eye(4)
    RT[:3, :3] *= 0.2
    RT[:3, 3] = [0.05, -0.02, 0.8]
    gt = CategoryGT(inst_id=1, class_id=6, RT=RT, scales=[0.6, 0.5, 0.6], handle_visible=False, bbox=(10, 20, 30, 40))
    frame = Frame(rgb=np.zeros((480, 640, 3), np.uint8), camera=CameraIntrinsics(K, 640, 480), scene_id=1, im_id=0,
                  category_gt=(gt,))
    pred = create_method("oracle").predict(frame, Targets(categories=(6,)))
    (est,) = pred.category_estimates
    np.testing.assert_array_equal(est.RT, RT)
    assert est.scale == pytest.approx(0.2) and est.class_id == 6
    noisy = create_method("oracle", {"trans_noise_mm": 10.0}).predict(frame, Targets(categories=(6,)))
    assert 0 < np.linalg.norm(noisy.category_estimates[0].t - RT[:3, 3]) < 0.1
    assert create_method("oracle").predict(frame, Targets(categories=(1,))).category_estimates == ()


def test_oracle_needs_ground_truth(goldtoy_dataset):
    frame, targets = next(goldtoy_dataset.iter_frames(with_gt=False))
    with pytest.raises(ValueError, match="needs the frame's ground truth"):
        create_method("oracle").predict(frame, targets)


def test_oracle_csv_round_trip_is_lossless(goldtoy_dataset, tmp_path):
    oracle = create_method("oracle", {"rot_noise_deg": 2.0, "trans_noise_mm": 1.5}, seed=7)
    res = run_inference(oracle, goldtoy_dataset, tmp_path, progress=False)
    rows = read_bop_csv(res.files["estimates"])
    expected = [(f.scene_id, f.im_id, e) for f, t in goldtoy_dataset.iter_frames(only_targets=True)
                for e in oracle.predict(f, t).estimates]
    assert len(rows) == len(expected) == 56
    for row, (sid, iid, e) in zip(rows, expected, strict=True):
        assert (row.scene_id, row.im_id, row.obj_id, row.score) == (sid, iid, e.obj_id, e.score)
        np.testing.assert_array_equal(row.R, e.R)
        np.testing.assert_array_equal(row.t, e.t)
    times = {(r.scene_id, r.im_id): r.time for r in rows}
    assert len(times) == 8 and all(v >= 0 for v in times.values())
