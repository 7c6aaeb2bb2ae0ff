"""BOP22 COCO AP (repro.metrics.coco): parity with bop_toolkit's eval_bop22_coco.py on the golden
set, the fork's ``ignore`` semantics on stock pycocotools, and small cases with known AP."""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import repro.metrics.coco as mc
from repro.data.bop import BopDataset
from repro.errors import DataFormatError, DatasetNotFoundError
from repro.metrics.coco import COCO_SCORE_KEYS, build_coco_gt, coco_detections, coco_stats, evaluate_coco
from repro.results.coco import CocoResult, mask_to_rle

GOLDEN_FILES = {
    "segm": {"ann_type": "segm"},
    "bbox": {"ann_type": "bbox"},
    "bbox_modal": {"ann_type": "bbox", "bbox_type": "modal"},
}
H, W = 60, 80
Box = tuple[int, int, int, int]


def _stock_cocoeval() -> type:
    from pycocotools.cocoeval import COCOeval

    return COCOeval


# --------------------------------------------------------------------------------------------
# Golden parity


@pytest.fixture(scope="module")
def golden_results(golden_dir: Path) -> Path:
    return golden_dir / "bop" / "results" / "goldsegm_goldtoy-test.json"


def _golden_scores(golden_dir: Path, name: str) -> dict[str, float]:
    path = golden_dir / "bop" / "eval" / "goldsegm_goldtoy-test" / f"scores_bop22_coco_{name}.json"
    return json.loads(path.read_text())


@pytest.mark.parametrize("name", list(GOLDEN_FILES))
def test_golden_parity(name: str, goldtoy: Path, golden_dir: Path, golden_results: Path) -> None:
    expected = _golden_scores(golden_dir, name)
    scores = evaluate_coco(goldtoy, golden_results, **GOLDEN_FILES[name])
    assert set(scores) == set(expected) == set(COCO_SCORE_KEYS)
    assert all(type(v) is float for v in scores.values())
    diffs = {k: abs(scores[k] - expected[k]) for k in expected}
    assert max(diffs.values()) <= 1e-6, diffs


@pytest.mark.parametrize("name", list(GOLDEN_FILES))
def test_stock_pycocotools_without_fix_differs(name: str, goldtoy: Path, golden_dir: Path,
                                               golden_results: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stock COCOeval overwrites the GT ``ignore`` flag with ``iscrowd``: the golden numbers change."""
    expected = _golden_scores(golden_dir, name)
    monkeypatch.setattr(mc, "_bop_cocoeval_class", _stock_cocoeval)
    stock = evaluate_coco(goldtoy, golden_results, **GOLDEN_FILES[name])
    assert abs(stock["AP"] - expected["AP"]) > 5e-3
    assert abs(stock["AP_small"] - expected["AP_small"]) > 5e-2
    assert stock["AR100"] != pytest.approx(expected["AR100"], abs=1e-3)


def test_golden_merged_ids(goldtoy_dataset: BopDataset) -> None:
    gt, image_ids = build_coco_gt(goldtoy_dataset)
    assert image_ids == {(1, 0): 0, (1, 1): 1, (1, 2): 2, (1, 3): 3, (1, 4): 4, (3, 0): 5, (3, 1): 6, (3, 3): 8}
    assert sorted(im["id"] for im in gt["images"]) == [0, 1, 2, 3, 4, 5, 6, 8]
    assert len(gt["annotations"]) == 58
    assert [a["id"] for a in gt["annotations"]] == list(range(1, 41)) + list(range(42, 60))
    assert sum(bool(a["ignore"]) for a in gt["annotations"]) == 2


def test_golden_quiet(goldtoy: Path, golden_results: Path, capsys: pytest.CaptureFixture[str],
                      caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="repro.metrics.coco"):
        evaluate_coco(goldtoy, golden_results, ann_type="bbox")
    assert capsys.readouterr().out == ""
    assert "Average Precision" in caplog.text
    assert "6 result(s) ignored (non-target image)" in caplog.text


# --------------------------------------------------------------------------------------------
# A tiny dataset written by hand: rectangles on 80x60 images


def _rect(box: Box) -> np.ndarray:
    x, y, w, h = box
    m = np.zeros((H, W), bool)
    m[y:y + h, x:x + w] = True
    return m


def _write_toy(root: Path, scenes: Mapping[int, Mapping[int, Sequence[tuple[int, Box, bool]]]],
               targets: Sequence[tuple[int, int]] | None = None,
               modal: Mapping[int, Mapping[int, Sequence[Box]]] | None = None, iscrowd_as_ignore: bool = False) -> Path:
    """Scenes {scene: {im: [(obj_id, box, ignore)]}} as scene_gt_coco.json (and _modal) files plus a
    targets file (default: every image; listed in the given order); returns the dataset root."""
    targets = list(targets) if targets is not None else [(s, i) for s, ims in scenes.items() for i in ims]
    for s, ims in scenes.items():
        for name, boxes_of in (("scene_gt_coco.json", None), ("scene_gt_coco_modal.json", modal)):
            anns, cats = [], set()
            for im_id, gts in ims.items():
                for k, (obj, box, ignore) in enumerate(gts):
                    bbox = list(boxes_of[s][im_id][k]) if boxes_of else list(box)
                    anns.append({"id": len(anns) + 1, "image_id": im_id, "category_id": obj, "bbox": bbox,
                                 "area": int(_rect(box).sum()), "segmentation": mask_to_rle(_rect(box)),
                                 "iscrowd": int(ignore) if iscrowd_as_ignore else 0, "ignore": ignore,
                                 "height": H, "width": W})
                    cats.add(obj)
            coco = {"images": [{"id": i, "height": H, "width": W, "file_name": f"rgb/{i:06d}.png"} for i in ims],
                    "annotations": anns, "categories": [{"id": c, "name": str(c)} for c in sorted(cats)]}
            d = root / "test" / f"{s:06d}"
            d.mkdir(parents=True, exist_ok=True)
            (d / name).write_text(json.dumps(coco))
    rows = []
    for s, i in targets:
        counts: dict[int, int] = {}
        for obj, _, ignore in scenes[s][i]:
            counts[obj] = counts.get(obj, 0) + (not ignore)
        rows += [{"scene_id": s, "im_id": i, "obj_id": o, "inst_count": n} for o, n in counts.items() if n]
    (root / "test_targets_bop19.json").write_text(json.dumps(rows))
    return root


def _det(scene: int, im: int, obj: int, score: float, box: Box, *, mask: Box | None = None,
         time: float = 0.5) -> CocoResult:
    return CocoResult(scene, im, obj, score, box, mask_to_rle(_rect(mask or box)), time)


@pytest.fixture
def one_gt(tmp_path: Path) -> Path:
    return _write_toy(tmp_path, {1: {0: [(1, (10, 10, 20, 20), False)]}})


@pytest.mark.parametrize("ann_type", ["segm", "bbox"])
def test_perfect_detection(one_gt: Path, ann_type: str) -> None:
    s = evaluate_coco(one_gt, [_det(1, 0, 1, 0.9, (10, 10, 20, 20), time=0.25)], ann_type=ann_type)
    for k in ("AP", "AP50", "AP75", "AP_small", "AR1", "AR10", "AR100", "AR_small"):
        assert s[k] == pytest.approx(1.0, abs=1e-12), k
    assert s["AP_medium"] == s["AP_large"] == s["AR_medium"] == s["AR_large"] == -1.0
    assert s["average_time_per_image"] == 0.25


def test_detection_on_ignored_gt_is_not_a_false_positive(tmp_path: Path) -> None:
    root = _write_toy(tmp_path, {1: {0: [(1, (5, 5, 20, 20), False), (1, (40, 20, 25, 25), True)]}})
    dets = [_det(1, 0, 1, 0.9, (40, 20, 25, 25)), _det(1, 0, 1, 0.5, (5, 5, 20, 20))]
    s = evaluate_coco(root, dets)
    assert s["AP"] == pytest.approx(1.0) and s["AR100"] == pytest.approx(1.0)
    only_ignored = evaluate_coco(root, dets[:1])
    assert only_ignored["AP"] == 0.0 and only_ignored["AR100"] == 0.0


def test_small_detection_inside_ignored_gt_uses_plain_iou(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """IoU with an ignored GT stays a plain IoU (the fork keeps iscrowd = 0): a small box inside a large
    ignored GT does not match it and is a false positive. Marking ignored GTs as crowd instead (IoU =
    intersection / detection area) would swallow it and give AP 1."""
    gts = {1: {0: [(1, (5, 5, 20, 20), False), (1, (30, 5, 45, 50), True)]}}
    dets = [_det(1, 0, 1, 0.9, (40, 20, 10, 10)), _det(1, 0, 1, 0.5, (5, 5, 20, 20))]
    s = evaluate_coco(_write_toy(tmp_path / "a", gts), dets)
    assert s["AP"] == pytest.approx(0.5) and s["AR100"] == pytest.approx(1.0)
    monkeypatch.setattr(mc, "_bop_cocoeval_class", _stock_cocoeval)
    crowd = evaluate_coco(_write_toy(tmp_path / "b", gts, iscrowd_as_ignore=True), dets)
    assert crowd["AP"] == pytest.approx(1.0)


def test_duplicate_detection_lowers_precision(tmp_path: Path) -> None:
    root = _write_toy(tmp_path, {1: {0: [(1, (10, 10, 20, 20), False)], 1: [(1, (30, 20, 20, 20), False)]}})
    dets = [_det(1, 0, 1, 0.9, (10, 10, 20, 20)), _det(1, 0, 1, 0.8, (10, 10, 20, 20)),
            _det(1, 1, 1, 0.7, (30, 20, 20, 20))]
    s = evaluate_coco(root, dets)
    # TP, FP, TP: precision 1 up to recall 0.5 (51 thresholds), then 2/3 (50 thresholds)
    assert s["AP"] == pytest.approx((51 + 50 * 2 / 3) / 101, abs=1e-12)
    assert s["AR100"] == pytest.approx(1.0)
    assert evaluate_coco(root, [dets[0], dets[2]])["AP"] == pytest.approx(1.0)


def test_detection_area_is_box_area_also_for_segm(tmp_path: Path) -> None:
    """``loadRes`` semantics: a detection's area is bbox w*h, so an unmatched detection with a small mask
    but a large box is outside the 'small' range and ignored there."""
    root = _write_toy(tmp_path, {1: {0: [(1, (5, 5, 20, 20), False)]}})
    dets = [_det(1, 0, 1, 0.9, (40, 5, 35, 35), mask=(50, 10, 10, 10)), _det(1, 0, 1, 0.5, (5, 5, 20, 20))]
    s = evaluate_coco(root, dets, ann_type="segm")
    assert s["AP"] == pytest.approx(0.5)
    assert s["AP_small"] == pytest.approx(1.0)


def test_only_target_images_and_known_scenes(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    scenes = {1: {0: [(1, (10, 10, 20, 20), False)], 1: [(1, (10, 10, 20, 20), False)]}}
    root = _write_toy(tmp_path, scenes, targets=[(1, 0)])
    dets = [_det(1, 0, 1, 0.5, (10, 10, 20, 20), time=1.0),
            _det(1, 1, 1, 0.9, (50, 30, 20, 20), time=2.0),   # FP in a non-target image
            _det(7, 0, 1, 0.9, (50, 30, 20, 20), time=3.0),   # unknown scene
            _det(1, 0, 5, 0.9, (50, 30, 20, 20), time=1.0)]   # unknown category
    with caplog.at_level(logging.INFO, logger="repro.metrics.coco"):
        s = evaluate_coco(root, dets)
    assert s["AP"] == pytest.approx(1.0)
    assert s["average_time_per_image"] == pytest.approx(2.0)  # every image in the results, as bop_toolkit
    assert "1 result(s) ignored (unknown scene)" in caplog.text
    assert "1 result(s) ignored (non-target image)" in caplog.text
    assert "1 result(s) ignored (unknown category)" in caplog.text


def test_scene_merge_order_and_offsets(tmp_path: Path) -> None:
    scenes = {2: {0: [(1, (5, 5, 20, 20), False)], 1: [(2, (30, 5, 20, 20), False)]},
              5: {0: [(1, (40, 30, 20, 20), False)], 2: [(2, (10, 30, 20, 20), False)], 3: [(1, (0, 0, 9, 9), False)]}}
    root = _write_toy(tmp_path, scenes, targets=[(5, 0), (5, 2), (2, 0), (2, 1)])
    gt, image_ids = build_coco_gt(BopDataset(root))
    assert image_ids == {(5, 0): 0, (5, 2): 2, (2, 0): 3, (2, 1): 4}
    assert [(a["id"], a["image_id"]) for a in gt["annotations"]] == [(1, 0), (2, 2), (4, 3), (5, 4)]
    dets = [_det(2, 0, 1, 0.9, (5, 5, 20, 20)), _det(2, 1, 2, 0.8, (30, 5, 20, 20)),
            _det(5, 0, 1, 0.7, (40, 30, 20, 20)), _det(5, 2, 2, 0.6, (10, 30, 20, 20))]
    assert evaluate_coco(root, dets)["AP"] == pytest.approx(1.0)


def test_modal_boxes(tmp_path: Path) -> None:
    gts = {1: {0: [(1, (10, 10, 30, 30), False)]}}
    root = _write_toy(tmp_path, gts, modal={1: {0: [(10, 10, 15, 30)]}})
    det = [_det(1, 0, 1, 0.9, (10, 10, 15, 30))]
    assert evaluate_coco(root, det, ann_type="bbox", bbox_type="modal")["AP"] == pytest.approx(1.0)
    assert evaluate_coco(root, det, ann_type="bbox")["AP50"] == pytest.approx(1.0)
    assert evaluate_coco(root, det, ann_type="bbox")["AP75"] == 0.0


def test_no_results_and_unknown_times(one_gt: Path) -> None:
    s = evaluate_coco(one_gt, [])
    assert s["AP"] == 0.0 and s["AR100"] == 0.0 and s["average_time_per_image"] == -1.0
    dets = [_det(1, 0, 1, 0.9, (10, 10, 20, 20), time=-1)]
    assert evaluate_coco(one_gt, dets)["average_time_per_image"] == -1.0


def test_coco_stats_twice_on_the_same_ground_truth(tmp_path: Path) -> None:
    """``COCOeval._prepare`` edits the GT dicts in place; the kept ``ignore`` flags survive a second run."""
    root = _write_toy(tmp_path, {1: {0: [(1, (5, 5, 20, 20), False), (1, (40, 20, 25, 25), True)]}})
    results = [_det(1, 0, 1, 0.9, (40, 20, 25, 25)), _det(1, 0, 1, 0.5, (5, 5, 20, 20))]
    dataset = BopDataset(root)
    gt, image_ids = build_coco_gt(dataset)
    dets = coco_detections(results, dataset, gt, image_ids)
    assert [(d["id"], d["image_id"], d["area"]) for d in dets] == [(1, 0, 625.0), (2, 0, 400.0)]
    first = coco_stats(gt, copy.deepcopy(dets), "segm")
    assert coco_stats(gt, copy.deepcopy(dets), "segm") == first
    assert first["AP"] == pytest.approx(1.0)


# --------------------------------------------------------------------------------------------
# Bad input


def test_bad_arguments(one_gt: Path) -> None:
    with pytest.raises(ValueError, match="ann_type"):
        evaluate_coco(one_gt, [], ann_type="keypoints")
    with pytest.raises(ValueError, match="bbox_type"):
        evaluate_coco(one_gt, [], bbox_type="tight")


def test_malformed_results_file(one_gt: Path, tmp_path: Path) -> None:
    good = _det(1, 0, 1, 0.9, (10, 10, 20, 20)).to_json()
    cases = {
        "notjson.json": "[{",
        "notlist.json": json.dumps({"results": []}),
        "nobbox.json": json.dumps([{k: v for k, v in good.items() if k != "bbox"}]),
        "badrle.json": json.dumps([{**good, "segmentation": {"size": [H, W], "counts": [1, 2]}}]),
        "times.json": json.dumps([good, {**good, "category_id": 2, "time": 9.0}]),
    }
    for name, text in cases.items():
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(DataFormatError, match=name):
            evaluate_coco(one_gt, path)


def test_segm_needs_masks_of_the_image_size(one_gt: Path) -> None:
    box_only = CocoResult(1, 0, 1, 0.9, (10, 10, 20, 20), None, 0.1)
    with pytest.raises(DataFormatError, match="ann_type='bbox'"):
        evaluate_coco(one_gt, [box_only])
    assert evaluate_coco(one_gt, [box_only], ann_type="bbox")["AP"] == pytest.approx(1.0)
    wrong = CocoResult(1, 0, 1, 0.9, (10, 10, 20, 20), mask_to_rle(np.ones((H + 1, W), bool)), 0.1)
    with pytest.raises(DataFormatError, match=r"\[0\]\.segmentation"):
        evaluate_coco(one_gt, [wrong])


def test_missing_coco_ground_truth(one_gt: Path) -> None:
    (one_gt / "test" / "000001" / "scene_gt_coco_modal.json").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"calc_gt_coco\.py --bbox_type modal"):
        evaluate_coco(one_gt, [], ann_type="bbox", bbox_type="modal")


# --------------------------------------------------------------------------------------------
# Without ignore flags the fix is a no-op: identical to stock COCOeval


_box = st.tuples(st.integers(0, 60), st.integers(0, 40), st.integers(1, 20), st.integers(1, 20))


@settings(max_examples=25, deadline=None)
@given(gts=st.lists(st.tuples(st.integers(0, 2), st.integers(1, 2), _box), min_size=1, max_size=8),
       dets=st.lists(st.tuples(st.integers(0, 2), st.integers(1, 2), _box, st.floats(0.01, 1.0)), max_size=10))
def test_fix_is_noop_without_ignore_flags(gts: list, dets: list) -> None:
    def dataset() -> dict:
        return {"images": [{"id": i, "height": H, "width": W} for i in range(3)],
                "categories": [{"id": 1}, {"id": 2}],
                "annotations": [{"id": k + 1, "image_id": i, "category_id": c, "bbox": list(b), "area": b[2] * b[3],
                                 "iscrowd": 0} for k, (i, c, b) in enumerate(gts)]}

    def detections() -> list:
        return [{"id": k + 1, "image_id": i, "category_id": c, "bbox": list(b), "area": b[2] * b[3], "iscrowd": 0,
                 "score": s} for k, (i, c, b, s) in enumerate(dets)]

    fixed = coco_stats(dataset(), detections(), "bbox")
    with mock.patch.object(mc, "_bop_cocoeval_class", _stock_cocoeval):
        stock = coco_stats(dataset(), detections(), "bbox")
    assert fixed == stock
