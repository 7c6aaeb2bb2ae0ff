"""BOP19 evaluation against bop_toolkit's outputs on the golden ``goldtoy`` set: every per-estimate
error (``errors_*.json``), every score file, ``scores_bop19.json``; matching properties; API."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from repro.metrics.bop19 import (
    ERRORS,
    BopEvalConfig,
    BopEvaluator,
    average_time_per_image,
    evaluate_bop,
    match_group,
    voc_auc,
    write_errors_table,
)

log = logging.getLogger(__name__)

EXACT = ("mssd", "mspd", "ad", "add", "adi", "proj")
RENDERED = ("vsd", "cus")


@pytest.fixture(scope="module")
def bop_dir(golden_dir) -> Path:
    return golden_dir / "bop"


@pytest.fixture(scope="module")
def result(bop_dir):
    with BopEvaluator(bop_dir / "dataset" / "goldtoy", config=BopEvalConfig(errors=ERRORS)) as ev:
        return ev.evaluate(bop_dir / "results" / "goldpose_goldtoy-test.csv", progress=False)


@pytest.fixture(scope="module")
def eval_dir(bop_dir) -> Path:
    return bop_dir / "eval" / "goldpose_goldtoy-test"


def _error_dirs(eval_dir: Path) -> list[tuple[str, int | None, Path]]:
    """(error name, tau index or None, folder) for every toolkit error folder."""
    taus = np.arange(0.05, 0.51, 0.05)
    out = []
    for d in sorted(p for p in eval_dir.iterdir() if p.name.startswith("error=")):
        name = re.match(r"error=(\w+?)_ntop", d.name).group(1)
        tau = re.search(r"tau=([\d.]+)", d.name)
        out.append((name, int(np.argmin(np.abs(taus - float(tau.group(1))))) if tau else None, d))
    return out


def _pair_index(result) -> dict[tuple[int, int, int, int, int], int]:
    p = result.pairs
    keys = zip(p.scene_id.tolist(), p.im_id.tolist(), p.obj_id.tolist(), p.est_id.tolist(), p.gt_id.tolist(),
               strict=True)
    return {k: i for i, k in enumerate(keys)}


def test_every_per_estimate_error(result, eval_dir, record_property):
    """Every value of every errors_*.json: exact for the point errors (1e-9 relative, inf where the
    toolkit shortcuts), VSD/CUS through our renderer: differences counted and bounded."""
    index = _pair_index(result)
    est = result.estimates
    ests = {(int(s), int(i), int(o), int(e)): float(sc) for s, i, o, e, sc in zip(
        est["scene_id"], est["im_id"], est["obj_id"], est["est_id"], est["score"], strict=True)}
    rendered_diffs: dict[str, list[float]] = {e: [] for e in RENDERED}
    n_values = 0
    for name, tau_i, folder in _error_dirs(eval_dir):
        values = result.pairs.errors[name]
        seen_ests, seen_pairs = set(), 0
        for f in sorted(folder.glob("errors_*.json")):
            for entry in json.loads(f.read_text()):
                key = (entry["scene_id"], entry["im_id"], entry["obj_id"], entry["est_id"])
                seen_ests.add(key)
                assert entry["score"] == ests[key]
                for gt_id, (want,) in entry["errors"].items():
                    k = index[(*key, int(gt_id))]
                    got = values[k, tau_i] if tau_i is not None else values[k]
                    assert result.pairs.gt_visib_fract[k] == entry["gt_visib_fracts"][gt_id]
                    seen_pairs += 1
                    n_values += 1
                    if name in EXACT:
                        if np.isinf(want):
                            assert got == want, (name, key, gt_id)
                        else:
                            assert got == pytest.approx(want, rel=1e-9, abs=1e-12), (name, key, gt_id)
                    else:
                        rendered_diffs[name].append(abs(got - want))
        assert seen_ests == set(ests), folder.name
        assert seen_pairs == len(result.pairs)
    for name, diffs in rendered_diffs.items():
        d = np.asarray(diffs)
        n_big = int((d > 1e-6).sum())
        msg = f"{name}: {n_big} of {len(d)} per-estimate values differ by > 1e-6 (max {d.max():.3g})"
        log.info(msg)
        print(msg)
        record_property(f"{name}_values_differing", n_big)
        record_property(f"{name}_max_abs_diff", float(d.max()))
        # a different rasterizer moves edge pixels: a few values may change by ~1/|union|
        assert n_big <= 0.05 * len(d)
        assert d.max() <= 0.02
    assert n_values == 17 * len(result.pairs)


def test_every_score_file(result, eval_dir):
    """Every scores_th=*.json: identical records for the point errors, recall within 0.01 and the same
    counts for VSD/CUS."""
    n_files = 0
    for name, tau_i, folder in _error_dirs(eval_dir):
        ths = BopEvalConfig().thresholds[name]
        for f in sorted(folder.glob("scores_th=*.json")):
            want = json.loads(f.read_text())
            th = float(re.search(r"th=([\d.]+)_", f.name).group(1))
            i = int(np.argmin(np.abs(np.asarray(ths) - th)))
            got = result.scores[name][tau_i][i] if tau_i is not None else result.scores[name][i]
            n_files += 1
            for key in ("gt_count", "targets_count"):
                assert got[key] == want[key]
            if name in EXACT:
                assert got["tp_count"] == want["tp_count"]
                for key in ("recall", "mean_obj_recall", "mean_scene_recall"):
                    assert got[key] == pytest.approx(want[key], rel=1e-9, abs=1e-12), (f.name, key)
                assert got["obj_recalls"] == pytest.approx(want["obj_recalls"], rel=1e-9, abs=1e-12)
                assert got["scene_recalls"] == pytest.approx(want["scene_recalls"], rel=1e-9, abs=1e-12)
            else:
                assert abs(got["recall"] - want["recall"]) <= 0.01, (folder.name, f.name)
    assert n_files == 100 + 10 + 10 + 5


def test_scores_bop19(result, eval_dir):
    want = json.loads((eval_dir / "scores_bop19.json").read_text())
    s = result.summary
    for key in ("bop19_average_recall_mssd", "bop19_average_recall_mspd", "bop19_average_time_per_image"):
        assert s[key] == pytest.approx(want[key], rel=1e-9, abs=1e-12), key
    assert abs(s["bop19_average_recall_vsd"] - want["bop19_average_recall_vsd"]) <= 0.01
    assert abs(s["bop19_average_recall"] - want["bop19_average_recall"]) <= 0.01 / 3
    log.info("AR_vsd %r (toolkit %r), AR %r (toolkit %r)", s["bop19_average_recall_vsd"],
             want["bop19_average_recall_vsd"], s["bop19_average_recall"], want["bop19_average_recall"])


def test_default_threshold_recalls(result, bop_dir):
    want = json.loads((bop_dir / "golden_summary.json").read_text())["default_threshold_recalls"]
    for name in ("ad", "add", "adi", "proj"):
        assert result.summary[f"recall_{name}"] == pytest.approx(want[name], rel=1e-9), name
    assert abs(result.summary["recall_cus"] - want["cus"]) <= 0.01


def test_recall_lists_and_per_object(result, bop_dir):
    golden = json.loads((bop_dir / "golden_summary.json").read_text())["recalls_per_error_and_threshold"]
    mssd = [golden["error=mssd_ntop=-1"][f"scores_th={t:.3f}_min-visib=-1.000.json"]["recall"]
            for t in np.arange(0.05, 0.51, 0.05)]
    assert result.summary["recalls_mssd"] == pytest.approx(mssd, rel=1e-9)
    assert len(result.summary["recalls_vsd"]) == 10 and all(len(r) == 10 for r in result.summary["recalls_vsd"])
    per_obj = result.summary["per_object_recall_mssd"]
    assert set(per_obj) == {"1", "2", "3", "4", "6", "9"}
    for o, v in per_obj.items():
        recs = [golden["error=mssd_ntop=-1"][f"scores_th={t:.3f}_min-visib=-1.000.json"]["obj_recalls"][o]
                for t in np.arange(0.05, 0.51, 0.05)]
        assert v == pytest.approx(np.mean(recs), rel=1e-12)


def test_summary_is_the_cli_contract(result):
    from repro.fileio import dumps_json

    s = result.summary
    for key in ("bop19_average_recall", "bop19_average_recall_vsd", "bop19_average_recall_mssd",
                "bop19_average_recall_mspd", "bop19_average_time_per_image", "per_object_recall_vsd",
                "recall_ad", "recall_add", "recall_adi", "recall_proj", "recall_cus", "auc_add", "auc_adi"):
        assert key in s, key
    assert 0.0 <= s["auc_adi"] <= 1.0 and s["auc_add"] <= s["auc_adi"]
    assert json.loads(dumps_json(s))["targets_count"] == 56


def test_errors_table(result, tmp_path):
    csv_path = write_errors_table(tmp_path / "errors.csv", result)
    lines = csv_path.read_text().splitlines()
    n_scalar = len([e for e in result.pairs.errors if not e.startswith("raw_") and e != "vsd"])
    assert lines[0].startswith("scene_id,im_id,obj_id,est_id,score,gt_id")
    assert len(lines) == 1 + len(result.pairs) * (n_scalar + 10)
    rows = json.loads(write_errors_table(tmp_path / "errors.json", result).read_text())
    assert len(rows) == len(lines) - 1
    assert {r["error"] for r in rows} == set(ERRORS)


def test_only_point_errors_import_neither_torch_nor_renderer(bop_dir):
    code = (
        "import sys\n"
        "from repro.metrics.bop19 import evaluate_bop\n"
        f"s = evaluate_bop({str(bop_dir / 'dataset' / 'goldtoy')!r}, "
        f"{str(bop_dir / 'results' / 'goldpose_goldtoy-test.csv')!r}, errors='mssd,mspd,ad', progress=False)\n"
        "assert s['bop19_average_recall'] is None and s['recall_ad'] > 0\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'moderngl', 'numba')"
        " or m.startswith('repro.render')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_workers_give_the_same_scores(bop_dir):
    kwargs = {"errors": "vsd,mssd,mspd", "progress": False}
    one = evaluate_bop(bop_dir / "dataset" / "goldtoy", bop_dir / "results" / "goldpose_goldtoy-test.csv", **kwargs)
    two = evaluate_bop(bop_dir / "dataset" / "goldtoy", bop_dir / "results" / "goldpose_goldtoy-test.csv",
                       workers=2, **kwargs)
    for key in one:
        if key not in ("eval_time_s", "renderer"):
            assert one[key] == two[key], key


@pytest.mark.gpu
def test_cuda_device_gives_the_same_scores(bop_dir):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("CUDA not available")
    args = (bop_dir / "dataset" / "goldtoy", bop_dir / "results" / "goldpose_goldtoy-test.csv")
    cpu = evaluate_bop(*args, errors="mssd,mspd,add,adi,proj", progress=False)
    gpu = evaluate_bop(*args, errors="mssd,mspd,add,adi,proj", device="cuda", progress=False)
    for key in ("bop19_average_recall_mssd", "bop19_average_recall_mspd", "recall_add", "recall_adi", "recall_proj"):
        assert gpu[key] == pytest.approx(cpu[key], rel=1e-9), key


def test_bop_toolkit_backend_agrees(bop_dir):
    pytest.importorskip("bop_toolkit_lib")
    args = (bop_dir / "dataset" / "goldtoy", bop_dir / "results" / "goldpose_goldtoy-test.csv")
    ours = evaluate_bop(*args, errors="mssd,mspd,ad", progress=False)
    theirs = evaluate_bop(*args, errors="mssd,mspd,ad", progress=False, backend="bop_toolkit")
    for key in ("bop19_average_recall_mssd", "bop19_average_recall_mspd", "recall_ad", "auc_ad",
                "per_object_recall_mssd", "bop19_average_time_per_image"):
        assert theirs[key] == pytest.approx(ours[key], rel=1e-9), key


def test_bad_inputs():
    with pytest.raises(ValueError, match="unknown pose error"):
        BopEvalConfig(errors=("mssd", "nope"))
    with pytest.raises(ValueError, match="backend"):
        evaluate_bop(".", "x.csv", backend="other")


def test_average_time_per_image():
    from repro.results.bop_csv import BopResultArrays

    def arrays(times, keys):
        n = len(times)
        return BopResultArrays(scene_id=np.array([k[0] for k in keys]), im_id=np.array([k[1] for k in keys]),
                               obj_id=np.ones(n, int), score=np.ones(n), R=np.tile(np.eye(3), (n, 1, 1)),
                               t=np.zeros((n, 3)), time=np.array(times, float))

    assert average_time_per_image(arrays([0.5, 0.5, 1.0], [(1, 0), (1, 0), (1, 1)])) == 0.75
    assert average_time_per_image(arrays([-1.0, -1.0], [(1, 0), (1, 1)])) == -1.0


def test_voc_auc_definition():
    # sorted errors 0.01, 0.02 (+ one miss) of 3: accuracy 1/3 from 0.01, 2/3 from 0.02 (right steps)
    want = (0.01 * 1 / 3 + 0.01 * 2 / 3 + 0.08 * 2 / 3) * 10
    assert voc_auc(np.array([0.02, np.inf, 0.01])) == pytest.approx(want, rel=1e-12)
    assert voc_auc(np.zeros(4)) == pytest.approx(1.0)
    assert voc_auc(np.array([0.2, np.inf])) == 0.0
    assert np.isnan(voc_auc(np.array([])))


# --------------------------------------------------------------------------- matching properties


def _reference_match(errors: np.ndarray, th: float, valid: np.ndarray) -> np.ndarray:
    """Plain transcription of pose_matching.match_poses for one threshold."""
    matched = np.zeros(errors.shape[1], bool)
    for e in errors:
        best, best_err = -1, th
        for g, err in enumerate(e):
            if valid[g] and not matched[g] and err < best_err:
                best, best_err = g, err
        if best >= 0:
            matched[best] = True
    return matched


matrices = st.integers(1, 4).flatmap(lambda n_e: st.integers(1, 4).flatmap(lambda n_g: st.tuples(
    st.lists(st.lists(st.sampled_from([0.0, 0.1, 0.2, 0.3, 0.35, 0.5, np.inf]), min_size=n_g, max_size=n_g),
             min_size=n_e, max_size=n_e),
    st.lists(st.booleans(), min_size=n_g, max_size=n_g))))


@settings(max_examples=200, deadline=None)
@given(data=matrices)
def test_matching_equals_toolkit_loop_and_recall_is_monotone(data):
    errors, valid = np.array(data[0], dtype=float), np.array(data[1], dtype=bool)
    th = np.array([0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 1.0])
    matched, merr = match_group(errors, th, valid)
    for k, t in enumerate(th):
        assert np.array_equal(matched[k], _reference_match(errors, t, valid))
    tp = matched.sum(axis=1)
    assert np.all(np.diff(tp) >= 0)
    assert np.all(np.isinf(merr[~matched])) and np.all(merr[matched] < np.repeat(th, errors.shape[1]).reshape(
        len(th), -1)[matched])


# --------------------------------------------------------------------------- STORM AUC and mask IoU


def test_storm_recall_auc_analytic():
    from repro.metrics.bop19 import STORM_AUC_THRESHOLDS, storm_average_recall, storm_recall_auc

    th = np.asarray(STORM_AUC_THRESHOLDS)
    assert len(th) == 100 and th[0] == 0.0 and th[-1] == 0.1
    # errors halfway between thresholds: recall(th_j) = j / 99 is linear, so the area is exactly 1/2
    mids = (th[1:] + th[:-1]) / 2
    assert storm_recall_auc(mids) == pytest.approx(0.5, abs=1e-12)
    # strict rule (as BOP's recall): recall at threshold 0 is 0 even for perfect poses
    assert storm_recall_auc(np.zeros(5)) == pytest.approx(1.0 - 0.5 / 99, abs=1e-12)
    assert storm_recall_auc(np.zeros(5), inclusive=True) == pytest.approx(1.0, abs=1e-12)
    # misses count as failures: half perfect, half missed
    assert storm_recall_auc(np.array([0.0, np.inf])) == pytest.approx(0.5 * (1.0 - 0.5 / 99), abs=1e-12)
    assert storm_recall_auc(np.array([np.inf, 0.2, 0.1])) == 0.0
    # one error at 0.05 (a grid point? no: 0.05 lies between th[49] and th[50]): recall 1 from th[50]
    want = (0.1 - th[50]) + 0.5 * (th[50] - th[49])
    assert storm_recall_auc(np.array([0.05])) == pytest.approx(want / 0.1, abs=1e-12)
    assert np.isnan(storm_recall_auc(np.array([])))
    assert storm_average_recall({"1": 0.2, "2": 0.4}, {"1": 0.6, "2": 1.0}) == pytest.approx((0.4 + 0.7) / 2)


@pytest.fixture(scope="module")
def box_case(tmp_path_factory):
    """A thin 100 x 100 x 1 mm plate facing the camera at 1 m (f = 500 px: a 50 px square), four
    single-target images: estimate at the GT pose, shifted 20 mm (10 px) and 4 mm (2 px) along x,
    and no estimate (a miss)."""
    from repro.data.bop import BopImage, BopWriter
    from repro.data.synth import shapes as S
    from repro.results.bop_csv import BopResultRow, write_bop_csv
    from repro.types import CameraIntrinsics, GTInstance, InstanceTarget, Targets

    root = tmp_path_factory.mktemp("iou") / "plate"
    model = S.mesh_to_model(S.paint(S.box((100.0, 100.0, 1.0), max_edge=20.0), (0.5, 0.5, 0.5)), 1, name="plate")
    K = np.array([[500.0, 0, 100.0], [0, 500.0, 100.0], [0, 0, 1]])
    writer = BopWriter(root)
    writer.write_models([model])
    writer.write_camera(CameraIntrinsics(K, 200, 200))
    t_gt = np.array([0.0, 0.0, 1000.0])
    images = [BopImage(im_id=i, rgb=np.zeros((200, 200, 3), np.uint8), K=K,
                       gt=[GTInstance(gt_id=0, obj_id=1, R=np.eye(3), t=t_gt)], gt_info=[{"visib_fract": 1.0}])
              for i in range(4)]
    writer.write_scene("test", 1, images)
    writer.write_targets({(1, i): Targets(instances=(InstanceTarget(1, 1),)) for i in range(4)})
    shifts = {0: 0.0, 1: 20.0, 2: 4.0}
    rows = [BopResultRow(1, i, 1, 1.0, np.eye(3), t_gt + np.array([dx, 0.0, 0.0]), 0.1) for i, dx in shifts.items()]
    csv = write_bop_csv(root.parent / "res_plate-test.csv", rows)
    return root, csv, model


def test_mask_iou_error_on_a_shifted_plate(box_case):
    root, csv, _ = box_case
    with BopEvaluator(root, config=BopEvalConfig(errors=("iou", "cus"))) as ev:
        res = ev.evaluate(csv, progress=False)
    iou = res.pairs.errors["iou"]
    assert iou[0] == 1.0
    assert iou[1] == pytest.approx(40 / 60, abs=0.02)  # 50 px squares overlapping by 40 columns
    assert iou[2] == pytest.approx(48 / 52, abs=0.02)
    np.testing.assert_allclose(iou, 1.0 - res.pairs.errors["cus"], atol=1e-12)
    s = res.summary
    assert s["mean_mask_iou"] == pytest.approx((iou[0] + iou[1] + iou[2] + 0.0) / 4, abs=1e-12)
    assert s["recall_iou"] == 0.75 and s["threshold_iou"] == 0.5
    assert s["per_object_mean_mask_iou"] == {"1": pytest.approx(s["mean_mask_iou"])}
    assert s["bop19_average_recall"] is None
    strict = BopEvalConfig(errors=("iou",), thresholds={"iou": (float(iou[2]), float(np.nextafter(iou[2], 2)))})
    with BopEvaluator(root, config=strict) as ev:
        assert ev.evaluate(csv, progress=False).summary["recall_iou"] == [0.5, 0.25]  # IoU >= threshold


def test_storm_ar_keys_on_the_plate(box_case):
    from repro.metrics.bop19 import storm_recall_auc

    root, csv, model = box_case
    s = evaluate_bop(root, csv, errors="add,adi", progress=False)
    d = model.diameter
    assert 20.0 / d > 0.1 > 4.0 / d
    want_add = storm_recall_auc(np.array([0.0, np.inf, 4.0 / d, np.inf]))
    assert s["per_object_auc_add_storm"] == {"1": pytest.approx(want_add, abs=1e-12)}
    assert s["auc_add_storm"] == pytest.approx(want_add, abs=1e-12)
    assert s["recall_add"] == 0.5
    adi = s["auc_adi_storm"]
    assert want_add <= adi <= 0.75 and s["per_object_auc_adi_storm"] == {"1": pytest.approx(adi)}
    assert s["ar_storm"] == pytest.approx((want_add + adi) / 2, abs=1e-12)
    only_add = evaluate_bop(root, csv, errors="add", progress=False)
    assert "ar_storm" not in only_add and only_add["auc_add_storm"] == s["auc_add_storm"]


def test_storm_ar_on_golden_set_is_consistent(result):
    s = result.summary
    per_add, per_adi = s["per_object_auc_add_storm"], s["per_object_auc_adi_storm"]
    assert set(per_add) == set(per_adi) and per_add
    assert s["ar_storm"] == pytest.approx(np.mean([(per_add[k] + per_adi[k]) / 2 for k in per_add]), abs=1e-12)
    assert 0.0 <= s["auc_add_storm"] <= s["auc_adi_storm"] <= 1.0
    assert 0.0 < s["mean_mask_iou"] <= 1.0 and s["recall_iou"] == s["recall_cus"]


def test_iou_is_not_a_toolkit_error(bop_dir):
    with pytest.raises(ValueError, match="iou"):
        evaluate_bop(bop_dir / "dataset" / "goldtoy", bop_dir / "results" / "goldpose_goldtoy-test.csv",
                     errors="iou", progress=False, backend="bop_toolkit")
