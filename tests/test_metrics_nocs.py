"""NOCS category-level metric against the golden outputs of the original ``compute_degree_cm_mAP``."""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from repro.errors import DataFormatError
from repro.fileio import dumps_json
from repro.metrics.nocs import (
    PROTOCOL_EXACT,
    PROTOCOL_NOCS,
    SUMMARY_KEYS,
    compute_3d_iou,
    compute_nocs_aps,
    compute_rt_errors,
    evaluate_nocs,
)
from repro.results.category import CategoryImageResult, write_category_results
from repro.types import NOCS_CLASSES

MODES = [True, False]


def _nan_array(values: Any) -> np.ndarray:
    """Golden JSON lists with ``null`` = NaN as a float array."""
    return np.array(values, dtype=np.float64)


@pytest.fixture(scope="module")
def nocs_dir(golden_dir: Path) -> Path:
    return golden_dir / "nocs"


@pytest.fixture(scope="module")
def inputs(nocs_dir: Path) -> dict[str, Any]:
    return json.loads((nocs_dir / "inputs.json").read_text())


@pytest.fixture(scope="module")
def results(nocs_dir: Path) -> dict[bool, dict[str, Any]]:
    return {m: evaluate_nocs(nocs_dir / "inputs.json", use_matches_for_pose=m) for m in MODES}


def _rotation(axis: str, degrees: float) -> np.ndarray:
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return {"x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]), "y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
            "z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])}[axis]


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def _rt(R: np.ndarray | None = None, t: Any = (0.0, 0.0, 0.0), s: float = 1.0) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = s * (np.eye(3) if R is None else R)
    out[:3, 3] = t
    return out


# --------------------------------------------------------------------------------------------
# Golden: full outputs, summary, pairs, edge cases


@pytest.mark.parametrize("mode", MODES)
def test_golden_outputs_every_cell(mode: bool, nocs_dir: Path, results: dict[bool, dict[str, Any]]):
    gold = json.loads((nocs_dir / f"outputs_use_matches_for_pose_{mode}.json").read_text())
    res = results[mode]
    assert res["protocol"] == PROTOCOL_NOCS
    assert res["iou_thres_list"] == gold["iou_thres_list"]
    assert res["degree_thres_list"] == gold["degree_thres_list"]
    assert res["shift_thres_list"] == gold["shift_thres_list"]
    for key in ("iou_aps", "pose_aps"):
        got, want = _nan_array(res[key]), _nan_array(gold[key])
        assert got.shape == want.shape == tuple(gold[f"{key}_shape"])
        check = np.ones(want.shape, dtype=bool)
        for cell in gold["fragile_cells"][f"{key}_cells"]:
            check[tuple(cell)] = False
        np.testing.assert_allclose(got[check], want[check], rtol=0, atol=1e-12, equal_nan=True, err_msg=key)
    assert not np.isnan(_nan_array(res["pose_aps"])[:, 1:]).any()


@pytest.mark.parametrize("mode", MODES)
def test_golden_summary(mode: bool, nocs_dir: Path, results: dict[bool, dict[str, Any]]):
    gold = json.loads((nocs_dir / "summary.json").read_text())[f"use_matches_for_pose_{mode}"]
    res = results[mode]
    assert set(gold) == set(SUMMARY_KEYS)
    for key, per_class in gold.items():
        assert res[key] == pytest.approx(per_class["mean"], abs=1e-9), key
        for name in NOCS_CLASSES:
            assert res["per_class"][name][key] == pytest.approx(per_class[name], abs=1e-9), (key, name)
    assert (res["n_images"], res["n_images_empty"], res["n_gt"], res["n_pred"]) == (40, 1, 140, 189)
    json.loads(dumps_json(res))


def test_golden_pairs(nocs_dir: Path):
    pairs = json.loads((nocs_dir / "pairs.json").read_text())["pairs"]
    pred = np.array([p["pred_RT"] for p in pairs])
    gt = np.array([p["gt_RT"] for p in pairs])
    ps, gs = np.array([p["pred_scales"] for p in pairs]), np.array([p["gt_scales"] for p in pairs])
    hv = np.array([p["handle_visibility"] for p in pairs])
    names = [p["class_name"] for p in pairs]
    iou = compute_3d_iou(pred, gt, ps, gs, hv, names, names)
    nosym = compute_3d_iou(pred, gt, ps, gs, 1, "camera", "camera")
    deg, cm = compute_rt_errors(pred, gt, [p["class_id"] for p in pairs], hv)
    for got, key in ((iou, "iou_3d"), (nosym, "iou_3d_nosym"), (deg, "degree"), (cm, "cm")):
        want = _nan_array([p[key] for p in pairs])
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6, equal_nan=True, err_msg=key)
    assert np.isnan(deg).sum() > 0 and np.isnan(iou).sum() == 1
    for k in (0, len(pairs) // 2, len(pairs) - 1):  # the single-pair form gives plain floats, the same values
        p = pairs[k]
        one = compute_3d_iou(p["pred_RT"], p["gt_RT"], p["pred_scales"], p["gt_scales"], p["handle_visibility"],
                             p["class_name"], p["class_name"])
        d, c = compute_rt_errors(p["pred_RT"], p["gt_RT"], p["class_name"], p["handle_visibility"])
        assert isinstance(one, float) and isinstance(d, float) and isinstance(c, float)
        np.testing.assert_equal([one, d, c], [iou[k], deg[k], cm[k]])


@pytest.mark.parametrize("mode", MODES)
def test_golden_edge_cases(mode: bool, nocs_dir: Path):
    edge = json.loads((nocs_dir / "edge_cases.json").read_text())
    th = edge["thresholds"]
    kwargs = {"iou_thresholds": th["iou_3d_thresholds"], "degree_thresholds": th["degree_thresholds"],
              "shift_thresholds": th["shift_thresholds"], "iou_pose_thres": th["iou_pose_thres"],
              "use_matches_for_pose": mode}
    for case in edge["cases"]:
        want = case["outputs"][f"use_matches_for_pose_{mode}"]
        raw = compute_nocs_aps(case["images"], **kwargs)
        records = [CategoryImageResult(scene_id=0, im_id=i, **{k: v for k, v in im.items()})
                   for i, im in enumerate(case["images"])]
        res = evaluate_nocs(records, **kwargs)
        for key in ("iou_aps", "pose_aps"):
            for got in (raw[key], res[key]):
                np.testing.assert_array_equal(_nan_array(got), _nan_array(want[key]), err_msg=f"{case['name']} {key}")


def test_class_with_fp_but_no_gt_is_nan_not_nanmean(nocs_dir: Path, caplog: pytest.LogCaptureFixture):
    case = next(c for c in json.loads((nocs_dir / "edge_cases.json").read_text())["cases"]
                if c["name"] == "class_with_fp_but_no_gt")
    records = [CategoryImageResult(scene_id=0, im_id=i, **im) for i, im in enumerate(case["images"])]
    with caplog.at_level(logging.WARNING, logger="repro.metrics.nocs"):
        res = evaluate_nocs(records, use_matches_for_pose=False)
    assert math.isnan(res["per_class"]["camera"]["IoU50"]) and math.isnan(res["IoU50"])
    assert res["per_class"]["bottle"]["IoU50"] == 100.0
    assert "camera" in caplog.text
    assert "NaN" in dumps_json(res)


def _reference_aps(images: list[dict[str, Any]], iou_thr: list[float], deg_list: list[float],
                   shift_list: list[float], use_matches: bool) -> tuple[np.ndarray, np.ndarray]:
    """A plain-loop transcription of the README conventions (pair values from the pair functions)."""
    iou_rows: dict[int, list] = {c: [] for c in range(1, 7)}
    pose_rows: dict[int, list] = {c: [] for c in range(1, 7)}
    n_iou, n_pose = dict.fromkeys(range(1, 7), 0), dict.fromkeys(range(1, 7), 0)
    pose_grid = [(d, s) for d in deg_list for s in shift_list]
    for im in images:
        for c in range(1, 7):
            g = [j for j, k in enumerate(im["gt_class_ids"]) if k == c]
            p = sorted((i for i, k in enumerate(im["pred_class_ids"]) if k == c), key=lambda i: -im["pred_scores"][i])
            hv = [im["gt_handle_visibility"][j] if c == 6 else 1 for j in g]
            ov = np.zeros((len(p), len(g)), dtype=np.float32)
            err = np.zeros((len(p), len(g), 2))
            for a, i in enumerate(p):
                for b, j in enumerate(g):
                    ov[a, b] = compute_3d_iou(im["pred_RTs"][i], im["gt_RTs"][j], im["pred_scales"][i],
                                              im["gt_scales"][j], hv[b], c, c)
                    err[a, b] = compute_rt_errors(im["pred_RTs"][i], im["gt_RTs"][j], c, hv[b])

            def iou_match(thr: float, ov: np.ndarray = ov) -> tuple[list[int], list[int]]:
                pm, gm = [-1] * ov.shape[0], [-1] * ov.shape[1]
                for a in range(ov.shape[0]):
                    for b in np.argsort(ov[a], kind="stable")[::-1]:
                        if gm[b] > -1:
                            continue
                        if ov[a, b] < thr:
                            break
                        if ov[a, b] > thr:
                            gm[b], pm[a] = a, b
                            break
                return pm, gm

            n_iou[c] += len(g)
            iou_rows[c] += [(im["pred_scores"][i], [iou_match(t)[0][a] > -1 for t in iou_thr]) for a, i in enumerate(p)]
            keep_p, keep_g = list(range(len(p))), list(range(len(g)))
            if use_matches:
                pm, gm = iou_match(0.1)
                keep_p, keep_g = [a for a in keep_p if pm[a] > -1], [b for b in keep_g if gm[b] > -1]
            n_pose[c] += len(keep_g)
            flags = {a: [] for a in keep_p}
            for d, s in pose_grid:
                gm = dict.fromkeys(keep_g, -1)
                for a in keep_p:
                    hit = False
                    for b in sorted(keep_g, key=lambda b, a=a: (math.isnan(err[a, b].sum()), err[a, b].sum())):
                        if gm[b] > -1 or err[a, b, 0] > d or err[a, b, 1] > s:
                            continue
                        gm[b], hit = a, True
                        break
                    flags[a].append(hit)
            pose_rows[c] += [(im["pred_scores"][p[a]], flags[a]) for a in keep_p]

    def ap(rows: list, n_gt: int, n_thr: int) -> np.ndarray:
        rows = sorted(rows, key=lambda r: -r[0])
        out = []
        for t in range(n_thr):
            tp = np.array([r[1][t] for r in rows], dtype=bool)
            with np.errstate(invalid="ignore", divide="ignore"):
                prec = np.cumsum(tp) / (np.arange(len(tp)) + 1)
                rec = np.cumsum(tp).astype(np.float32) / n_gt
            prec, rec = np.concatenate([[0], prec, [0]]), np.concatenate([[0], rec, [1]])
            for i in range(len(prec) - 2, -1, -1):
                prec[i] = max(prec[i], prec[i + 1])
            idx = np.where(rec[:-1] != rec[1:])[0] + 1
            out.append(np.sum((rec[idx] - rec[idx - 1]) * prec[idx]))
        return np.array(out)

    iou_aps = np.zeros((8, len(iou_thr)))
    pose_aps = np.zeros((8, len(pose_grid)))
    for c in range(1, 7):
        iou_aps[c] = ap(iou_rows[c], n_iou[c], len(iou_thr))
        pose_aps[c] = ap(pose_rows[c], n_pose[c], len(pose_grid))
    iou_aps[7], pose_aps[7] = iou_aps[1:7].mean(axis=0), pose_aps[1:7].mean(axis=0)
    return iou_aps, pose_aps.reshape(8, len(deg_list), len(shift_list))


def _random_images(seed: int, n_images: int = 6) -> list[dict[str, Any]]:
    """Crowded random images: noisy, duplicate, exact, spun and false predictions; distinct scores."""
    rng = np.random.default_rng(seed)
    images, scores = [], iter(rng.permutation(4000) / 4000 + 1e-4)
    for _ in range(n_images):
        gt = {"gt_class_ids": [], "gt_RTs": [], "gt_scales": [], "gt_handle_visibility": []}
        pred = {"pred_class_ids": [], "pred_scores": [], "pred_RTs": [], "pred_scales": []}
        for _ in range(int(rng.integers(2, 10))):
            c = int(rng.integers(1, 7))
            rt = _rt(_random_rotation(rng), rng.normal(0, 0.08, 3) + np.array([0, 0, 0.8]), rng.uniform(0.1, 0.3))
            sc = rng.uniform(0.3, 1.0, 3)
            for key, v in zip(gt, (c, rt, sc, int(rng.integers(0, 2))), strict=True):
                gt[key].append(v)
            for _ in range(int(rng.integers(0, 4))):
                p = rt.copy()
                kind = rng.integers(0, 4)
                if kind == 1:
                    p[:3, :3] = rt[:3, :3] @ _rotation("y", float(rng.uniform(0, 360)))
                elif kind >= 2:
                    p[:3, :3] = rt[:3, :3] @ _rotation("x", float(rng.normal(0, 8))) * rng.uniform(0.9, 1.1)
                    p[:3, 3] += rng.normal(0, 0.02 * kind, 3)
                p_class = c if rng.random() > 0.1 else int(rng.integers(1, 7))
                for key, v in zip(pred, (p_class, next(scores), p, sc * rng.uniform(0.9, 1.1, 3)), strict=True):
                    pred[key].append(v)
        for _ in range(int(rng.integers(0, 3))):
            rt = _rt(_random_rotation(rng), rng.normal(0, 0.1, 3) + np.array([0, 0, 0.8]), rng.uniform(0.1, 0.3))
            for key, v in zip(pred, (int(rng.integers(1, 7)), next(scores), rt, rng.uniform(0.3, 1, 3)), strict=True):
                pred[key].append(v)
        images.append({**gt, **pred})
    return images


@pytest.mark.parametrize("mode", MODES)
def test_matches_plain_loop_reference_on_crowded_images(mode: bool):
    iou_thr, deg_thr, shift_thr = [0.0, 0.1, 0.25, 0.5, 0.75, 1.0], [0, 5, 10, 20], [0, 1, 2, 5, 10]
    for seed in range(3):
        images = _random_images(seed)
        want_iou, want_pose = _reference_aps(images, iou_thr, [*deg_thr, 360], [*shift_thr, 100], mode)
        raw = compute_nocs_aps(images, iou_thresholds=iou_thr, degree_thresholds=deg_thr, shift_thresholds=shift_thr,
                               use_matches_for_pose=mode)
        np.testing.assert_allclose(raw["iou_aps"], want_iou, rtol=0, atol=1e-12, equal_nan=True)
        np.testing.assert_allclose(raw["pose_aps"], want_pose, rtol=0, atol=1e-12, equal_nan=True)


# --------------------------------------------------------------------------------------------
# Conventions on constructed cases


def test_quirk_ignores_a_shift_that_moves_no_corner_bound():
    """With y the minimum and z the maximum of every corner, a 3 cm shift along x is invisible."""
    sc = np.array([0.2, 0.2, 0.2])
    gt, pred = _rt(t=(0.0, -0.5, 1.0)), _rt(t=(0.03, -0.5, 1.0))
    assert compute_3d_iou(pred, gt, sc, sc, 1, "camera", "camera") == 1.0
    assert compute_3d_iou(pred, gt, sc, sc, 1, "camera", "camera", exact=True) == pytest.approx(0.17 / 0.23)


def test_symmetry_rotates_the_prediction_and_follows_handle_visibility():
    sc = np.array([0.3, 0.8, 0.5])
    gt = _rt(t=(0.05, 0.02, 0.8), s=0.2)
    spun = gt.copy()
    spun[:3, :3] = gt[:3, :3] @ _rotation("y", 90)
    assert compute_3d_iou(spun, gt, sc, sc, 1, "bottle", "bottle") == pytest.approx(1.0)
    assert compute_3d_iou(spun, gt, sc, sc, 0, "mug", "mug") == pytest.approx(1.0)
    assert compute_3d_iou(spun, gt, sc, sc, 1, "mug", "mug") < 0.9      # visible handle: no search
    assert compute_3d_iou(spun, gt, sc, sc, 1, "bottle", "can") < 0.9   # different classes: no search
    assert compute_rt_errors(spun, gt, "bowl")[0] == 0.0
    assert compute_rt_errors(spun, gt, "mug", 0)[0] == 0.0
    assert compute_rt_errors(spun, gt, "mug", 1)[0] == pytest.approx(90.0)
    flipped = gt.copy()
    flipped[:3, :3] = gt[:3, :3] @ _rotation("x", 180)
    assert compute_rt_errors(flipped, gt, "can")[0] == pytest.approx(180.0)
    assert compute_rt_errors(flipped, gt, "can")[1] == 0.0


def test_arccos_is_not_clipped_unless_asked():
    R = _rotation("z", 0.3) @ _rotation("x", 0.7)
    pose = _rt(R, (0.1, 0.0, 0.7), 0.15)
    deg, _ = compute_rt_errors(np.stack([pose] * 64), np.stack([pose] * 64), "camera", 1)
    clipped, _ = compute_rt_errors(np.stack([pose] * 64), np.stack([pose] * 64), "camera", 1, clip=True)
    assert np.all(np.isnan(deg) | (deg < 1e-5))
    assert np.all(clipped < 1e-5)


def test_degenerate_union_is_nan_and_not_a_match():
    zero = np.zeros(3)
    assert math.isnan(compute_3d_iou(_rt(), _rt(), zero, zero, 1, "camera", "camera"))
    assert compute_3d_iou(_rt(), _rt(), zero, zero, 1, "bottle", "bottle") == 0.0   # symmetric max starts at 0


def test_pose_threshold_is_inclusive_and_iou_threshold_strict():
    """A 3 cm translation error passes a 3 cm threshold; an IoU equal to the threshold does not match."""
    sc = np.array([0.5, 0.5, 0.5])
    gt = _rt(t=(0.0, 0.0, 1.0), s=0.2)
    pred = _rt(t=(0.0, 0.0, 1.03), s=0.2)
    iou = compute_3d_iou(pred, gt, sc, sc, 1, "laptop", "laptop")
    image = {"gt_class_ids": [5], "gt_RTs": [gt], "gt_scales": [sc], "gt_handle_visibility": [1],
             "pred_class_ids": [5], "pred_scores": [0.9], "pred_RTs": [pred], "pred_scales": [sc]}
    cm = compute_rt_errors(pred, gt, "laptop")[1]
    raw = compute_nocs_aps([image], iou_thresholds=[float(np.float32(iou)), 0.1], degree_thresholds=[1],
                           shift_thresholds=[cm, cm - 1e-9], use_matches_for_pose=False)
    assert raw["iou_aps"][5].tolist() == [0.0, 1.0]
    assert raw["pose_aps"][5, 0, :2].tolist() == [1.0, 0.0]


# --------------------------------------------------------------------------------------------
# Exact (non-standard) IoU


def test_exact_iou_properties():
    rng = np.random.default_rng(7)
    sc = np.array([0.5, 0.8, 0.3])
    R = _random_rotation(rng)
    box = _rt(R, (0.1, -0.2, 1.0), 0.3)
    assert compute_3d_iou(box, box, sc, sc, 1, "camera", "camera", exact=True) == pytest.approx(1.0, abs=1e-12)
    far = _rt(R, (0.1, -0.2, 2.0), 0.3)
    assert compute_3d_iou(box, far, sc, sc, 1, "camera", "camera", exact=True) == 0.0
    inner = _rt(_random_rotation(rng), (0.1, -0.2, 1.0), 0.05)
    ratio = (0.05 / 0.3) ** 3
    assert compute_3d_iou(inner, box, sc, sc, 1, "camera", "camera", exact=True) == pytest.approx(ratio, rel=1e-9)
    unit = np.ones(3)
    turned = compute_3d_iou(_rt(_rotation("z", 45)), _rt(), unit, unit, 1, "camera", "camera", exact=True)
    assert turned == pytest.approx(1 / math.sqrt(2), rel=1e-12)
    n = 40
    a = np.stack([_rt(_random_rotation(rng), rng.normal(0, 0.05, 3), rng.uniform(0.1, 0.3)) for _ in range(n)])
    b = np.stack([_rt(_random_rotation(rng), rng.normal(0, 0.05, 3), rng.uniform(0.1, 0.3)) for _ in range(n)])
    sa, sb = rng.uniform(0.3, 1.0, (n, 3)), rng.uniform(0.3, 1.0, (n, 3))
    ab = compute_3d_iou(a, b, sa, sb, 1, "laptop", "laptop", exact=True)
    ba = compute_3d_iou(b, a, sb, sa, 1, "laptop", "laptop", exact=True)
    np.testing.assert_allclose(ab, ba, rtol=1e-10, atol=1e-12)
    assert np.all((ab >= 0) & (ab <= 1)) and (ab > 0).sum() > n // 2


def test_exact_iou_agrees_with_monte_carlo():
    rng = np.random.default_rng(3)
    a, b = _rt(_random_rotation(rng), (0.02, 0.0, 0.0)), _rt(_random_rotation(rng), (0.0, 0.05, 0.0))
    sa, sb = np.array([0.6, 0.4, 0.5]), np.array([0.5, 0.5, 0.3])
    exact = compute_3d_iou(a, b, sa, sb, 1, "camera", "camera", exact=True)
    pts = rng.uniform(-0.5, 0.5, (400_000, 3))

    def inside(rt: np.ndarray, s: np.ndarray) -> np.ndarray:
        return (np.abs((pts - rt[:3, 3]) @ rt[:3, :3]) <= s / 2).all(axis=1)

    ia, ib = inside(a, sa), inside(b, sb)
    assert exact == pytest.approx((ia & ib).sum() / (ia | ib).sum(), abs=0.01)


def test_exact_protocol_is_labelled(nocs_dir: Path, results: dict[bool, dict[str, Any]]):
    res = evaluate_nocs(nocs_dir / "inputs.json", exact=True)
    assert res["protocol"] == PROTOCOL_EXACT == "exact (non-standard)"
    assert results[True]["protocol"] == "nocs"
    assert res["IoU50"] != results[True]["IoU50"]
    assert not np.isnan(_nan_array(res["pose_aps"])).any()      # clipped arccos: no NaN degrees


# --------------------------------------------------------------------------------------------
# Predictions only, ground truth from a dataset


def _split_golden(inputs: dict[str, Any], tmp_path: Path, drop_pred_of: set[int] = frozenset(),
                  extra_pred_image: bool = False) -> tuple[Path, list[dict[str, Any]]]:
    """Write the golden inputs as a predictions-only file (scene 1) and return the GT images."""
    preds, gts = [], []
    for im in inputs["images"]:
        k = im["image_id"]
        gts.append({"scene_id": 1, "im_id": k, **{key: im[key] for key in
                    ("gt_class_ids", "gt_RTs", "gt_scales", "gt_handle_visibility", "gt_bboxes")}})
        if k not in drop_pred_of:
            preds.append(CategoryImageResult(scene_id=1, im_id=k, time=0.1, **{
                key: im[key] for key in ("pred_class_ids", "pred_scores", "pred_RTs", "pred_scales", "pred_bboxes")}))
    if extra_pred_image:
        im = inputs["images"][0]
        preds.append(CategoryImageResult(scene_id=9, im_id=0, **{
            key: im[key] for key in ("pred_class_ids", "pred_scores", "pred_RTs", "pred_scales", "pred_bboxes")}))
    return write_category_results(tmp_path / "preds.json", preds), gts


@pytest.mark.parametrize("mode", MODES)
def test_predictions_only_with_dataset_gt_reproduces_golden(mode: bool, inputs: dict[str, Any], tmp_path: Path,
                                                            results: dict[bool, dict[str, Any]]):
    from repro.data.nocs import default_gt_path, write_nocs_gt_json

    preds, gts = _split_golden(inputs, tmp_path)
    (tmp_path / "data" / "real" / "test" / "scene_1").mkdir(parents=True)
    write_nocs_gt_json(default_gt_path(tmp_path / "data", "real", "test"), gts, subset="real", split="test")
    for source in (tmp_path / "data", default_gt_path(tmp_path / "data", "real", "test")):
        res = evaluate_nocs(preds, dataset_dir=source, use_matches_for_pose=mode)
        assert res["iou_aps"] == results[mode]["iou_aps"] and res["pose_aps"] == results[mode]["pose_aps"]
        assert res["n_images_without_predictions"] == 0 and res["n_predicted_images_without_gt"] == 0
    with pytest.raises(DataFormatError, match="dataset_dir"):
        evaluate_nocs(preds)


def test_predictions_only_missing_and_unknown_images(inputs: dict[str, Any], tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture):
    from repro.data.nocs import write_nocs_gt_json

    dropped = {3, 17}
    preds, gts = _split_golden(inputs, tmp_path, drop_pred_of=dropped, extra_pred_image=True)
    gt_file = write_nocs_gt_json(tmp_path / "gt.json", gts)
    with caplog.at_level(logging.WARNING, logger="repro.metrics.nocs"):
        res = evaluate_nocs(preds, dataset_dir=gt_file)
    assert "no ground truth" in caplog.text
    assert res["n_images_without_predictions"] == 2 and res["n_predicted_images_without_gt"] == 1
    official = [dict(im) for im in inputs["images"]]
    for im in official:
        if im["image_id"] in dropped:
            for key in ("pred_class_ids", "pred_scores", "pred_RTs", "pred_scales", "pred_bboxes"):
                im[key] = []
    want = compute_nocs_aps(official)
    np.testing.assert_array_equal(_nan_array(res["iou_aps"]), want["iou_aps"])
    np.testing.assert_array_equal(_nan_array(res["pose_aps"]), want["pose_aps"])
    assert res["n_gt"] == 140

    wrong = write_category_results(tmp_path / "wrong.json", [CategoryImageResult(
        scene_id=5, im_id=0, **{k: inputs["images"][0][k] for k in
                                ("pred_class_ids", "pred_scores", "pred_RTs", "pred_scales", "pred_bboxes")})])
    with pytest.raises(DataFormatError, match="none of the 1 predicted images"):
        evaluate_nocs(wrong, dataset_dir=gt_file)


def test_summary_needs_its_thresholds(nocs_dir: Path):
    with pytest.raises(ValueError, match=r"must contain 0\.75"):
        evaluate_nocs(nocs_dir / "inputs.json", iou_thresholds=[0.1, 0.25, 0.5])


def test_import_is_light():
    code = ("import sys, repro.metrics.nocs; "
            "print(sorted(m for m in ('torch', 'cv2', 'scipy.spatial') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
