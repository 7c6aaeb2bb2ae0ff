"""BOP19 evaluation delegated to bop_toolkit itself (``backend="bop_toolkit"`` of ``evaluate_bop``).

Runs bop_toolkit_lib's own functions in this process, in the order its ``eval_calc_errors.py`` and
``eval_calc_scores.py`` call them: ``inout`` to read the results, targets and annotations,
``misc.get_symmetry_transformations``, ``pose_error.*`` (with the script's shortcuts), the
toolkit's renderer for VSD/CUS, ``pose_matching.match_poses_scene`` and
``score.calc_localization_scores``. Calling the functions rather than the scripts avoids having to
register the dataset in ``dataset_params.py`` (object ids, image size) and to lay out
``$BOP_PATH``. The returned object has the same keys as the ``repro`` backend
(``repro.metrics.bop19.summarize``), so the two can be compared key by key.

Assumes the classic BOP layout (``SPLIT/SCENE/depth/IMID.png``, no sensor suffixes).
"""

from __future__ import annotations

import inspect
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from repro.metrics.bop19 import (
    AUC_ERRORS,
    AUC_MAX_M,
    DIAMETER_NORMALISED,
    VSD_DELTAS,
    WIDTH_NORMALISED,
    BopEvalConfig,
    models_dir_for,
    summarize,
    targets_name,
    voc_auc,
)

log = logging.getLogger(__name__)


def bop_toolkit_available() -> bool:
    """True when ``bop_toolkit_lib`` can be imported."""
    try:
        import bop_toolkit_lib  # noqa: F401
    except Exception:
        return False
    return True


def _toolkit_errors(err_type: str, est: dict, gt: dict, K: np.ndarray, depth: np.ndarray | None, obj_id: int,
                    models: dict, models_info: dict, syms: dict, symmetric: bool, ren: Any, vsd_delta: float,
                    config: BopEvalConfig, raw: bool = False) -> list[float]:
    """One pose error exactly as ``eval_calc_errors.py`` computes it (``raw``: AD* without the
    sphere shortcut, for the AUC)."""
    from bop_toolkit_lib import misc, pose_error

    R_e, t_e, R_g, t_g = est["R"], est["t"], gt["cam_R_m2c"], gt["cam_t_m2c"]
    diameter = models_info[obj_id]["diameter"]
    pts = models[obj_id]["pts"] if obj_id in models else None
    if err_type in ("vsd", "cus"):
        if not misc.overlapping_sphere_projections(0.5 * diameter, t_e.squeeze(), t_g.squeeze()):
            return [1.0] * len(config.vsd_taus) if err_type == "vsd" else [1.0]
        if err_type == "vsd":
            return list(pose_error.vsd(R_e, t_e, R_g, t_g, depth, K, vsd_delta, list(config.vsd_taus),
                                       config.vsd_normalized_by_diameter, diameter, ren, obj_id, config.vsd_cost))
        return [pose_error.cus(R_e, t_e, R_g, t_g, K, ren, obj_id)]
    if err_type == "mspd":
        return [pose_error.mspd(R_e, t_e, R_g, t_g, K, pts, syms[obj_id])]
    if err_type == "proj":
        return [pose_error.proj(R_e, t_e, R_g, t_g, K, pts)]
    if not raw and not np.linalg.norm(t_e - t_g) < diameter:
        return [float("inf")]
    if err_type == "mssd":
        return [pose_error.mssd(R_e, t_e, R_g, t_g, pts, syms[obj_id])]
    kind = ("adi" if symmetric else "add") if err_type == "ad" else err_type
    fn = pose_error.adi if kind == "adi" else pose_error.add
    return [fn(R_e, t_e, R_g, t_g, pts)]


def evaluate_with_bop_toolkit(dataset_dir: str | Path, results_csv: str | Path, *, config: BopEvalConfig,
                              split: str = "test", targets_file: str | None = None, renderer_type: str = "vispy",
                              progress: bool = True) -> dict[str, Any]:
    """BOP19 evaluation with bop_toolkit_lib's functions; returns the ``evaluate_bop`` keys.

    ``renderer_type`` is the toolkit's renderer for VSD/CUS (``vispy`` as in ``eval_bop19_pose.py``).
    """
    if "iou" in config.errors:
        raise ValueError("the mask IoU error 'iou' is not a bop_toolkit error; use backend='repro'")
    from bop_toolkit_lib import inout, misc, pose_matching, renderer, score
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    root = Path(dataset_dir)
    models_path = root / (models_dir_for(root) or "models")
    split_path = root / split
    models_info = inout.load_json(str(models_path / "models_info.json"), keys_to_int=True)
    obj_ids = sorted(models_info)
    scene_ids = sorted(int(p.name) for p in split_path.iterdir() if p.is_dir() and p.name.isdigit())
    symmetric = {o: bool(models_info[o].get("symmetries_discrete") or models_info[o].get("symmetries_continuous"))
                 for o in obj_ids}
    errors = config.errors
    model_tpath = str(models_path / "obj_{obj_id:06d}.ply")
    models = {}
    if set(errors) & {"ad", "add", "adi", "mssd", "mspd", "proj"}:
        models = {o: inout.load_ply(model_tpath.format(obj_id=o)) for o in obj_ids}
    syms = {o: misc.get_symmetry_transformations(models_info[o], config.max_sym_disc_step) for o in obj_ids}
    vsd_delta = config.vsd_delta if config.vsd_delta is not None else VSD_DELTAS.get(root.name, 15.0)

    targets = inout.load_json(str(root / targets_name(root, targets_file)))
    targets_org: dict[int, dict[int, dict[int, Any]]] = {}
    for t in targets:
        targets_org.setdefault(t["scene_id"], {}).setdefault(t["im_id"], {})[t["obj_id"]] = t
    ests = inout.load_bop_results(str(results_csv), version="bop19")
    ests_org: dict[int, dict[int, dict[int, list]]] = {}
    for est in ests:
        ests_org.setdefault(est["scene_id"], {}).setdefault(est["im_id"], {}).setdefault(est["obj_id"], []).append(est)
    passed, msg, times, times_available = inout.check_consistent_timings(ests, "im_id")
    if not passed:
        raise ValueError(msg)

    ren = None
    if set(errors) & {"vsd", "cus"}:
        cam = inout.load_json(str(root / "camera.json"))
        ren = renderer.create_renderer(int(cam["width"]), int(cam["height"]), renderer_type, mode="depth")
        for o in obj_ids:
            ren.add_object(o, model_tpath.format(obj_id=o))

    match_params = inspect.signature(pose_matching.match_poses_scene).parameters
    all_scores: dict[str, list[Any]] = {}
    matched_err: dict[str, list[float]] = {}
    for err_type in errors:
        kinds = [err_type] + ([f"raw_{err_type}"] if err_type in AUC_ERRORS else [])
        per_kind_matches: dict[str, list[list[dict]]] = {}
        for kind in kinds:
            raw = kind.startswith("raw_")
            ths = [[AUC_MAX_M * 1000.0]] if raw else [[th] for th in config.thresholds[err_type]]
            taus = range(len(config.vsd_taus)) if err_type == "vsd" else [None]
            matches_out: list[list[dict]] = [[] for _ in range(len(taus) * len(ths))]
            for scene_id, scene_targets in tqdm(targets_org.items(), desc=f"bop_toolkit {kind}", disable=not progress,
                                                leave=False):
                scene_dir = split_path / f"{scene_id:06d}"
                scene_gt = inout.load_scene_gt(str(scene_dir / "scene_gt.json"))
                scene_gt_info = inout.load_json(str(scene_dir / "scene_gt_info.json"), keys_to_int=True)
                scene_camera = inout.load_scene_camera(str(scene_dir / "scene_camera.json"))
                scene_errs = []
                scene_gt_valid = {}
                for im_id, im_targets in scene_targets.items():
                    im_gt, im_gt_info = scene_gt[im_id], scene_gt_info[im_id]
                    scene_gt_valid[im_id] = _valid(im_gt, im_gt_info, im_targets, config.visib_gt_min)
                    K = scene_camera[im_id]["cam_K"]
                    depth = None
                    if err_type == "vsd":
                        depth = inout.load_depth(str(scene_dir / "depth" / f"{im_id:06d}.png"))
                        depth *= scene_camera[im_id]["depth_scale"]
                    for obj_id, target in im_targets.items():
                        n_top = {-1: target["inst_count"], 0: None}.get(config.n_top, config.n_top)
                        obj_ests = ests_org.get(scene_id, {}).get(im_id, {}).get(obj_id, [])
                        ranked = sorted(enumerate(obj_ests), key=lambda x: x[1]["score"], reverse=True)[slice(0, n_top)]
                        for est_id, est in ranked:
                            errs, fracts = {}, {}
                            for gt_id, gt in enumerate(im_gt):
                                if gt["obj_id"] != obj_id:
                                    continue
                                errs[gt_id] = _toolkit_errors(err_type, est, gt, K, depth, obj_id, models, models_info,
                                                              syms, symmetric[obj_id], ren, vsd_delta, config, raw)
                                fracts[gt_id] = im_gt_info[gt_id]["visib_fract"]
                            scene_errs.append({"im_id": im_id, "obj_id": obj_id, "est_id": est_id,
                                               "score": est["score"], "errors": errs, "scene_id": scene_id,
                                               "gt_visib_fracts": fracts})
                width = float(inout.load_json(str(root / "camera.json"))["width"])
                scene_gt_curr = {im: scene_gt[im] for im in scene_targets}
                for k, tau_i in enumerate(taus):
                    errs_tau = _normalise(scene_errs, err_type, tau_i, models_info, width, raw)
                    for j, th in enumerate(ths):
                        args = [scene_id, scene_gt_curr]
                        if "scene_gt_info" in match_params:
                            args.append({im: scene_gt_info[im] for im in scene_targets})
                        args += [scene_gt_valid, errs_tau, th, config.n_top]
                        matches_out[k * len(ths) + j] += pose_matching.match_poses_scene(*args)
            per_kind_matches[kind] = matches_out
        recs = [_str_keys(score.calc_localization_scores(scene_ids, obj_ids, m, config.n_top, do_print=False))
                for m in per_kind_matches[err_type]]
        n_th = len(config.thresholds[err_type])
        all_scores[err_type] = [recs[i:i + n_th] for i in range(0, len(recs), n_th)] if err_type == "vsd" else recs
        if err_type in AUC_ERRORS:
            matched_err[err_type] = [
                (m["error"][0] / 1000.0 if m["est_id"] != -1 else float("inf"))
                for m in per_kind_matches[f"raw_{err_type}"][0] if m["valid"]]
    summary = summarize(all_scores, config, obj_ids, scene_ids)
    for err_type, values in matched_err.items():
        summary[f"auc_{err_type}"] = voc_auc(np.asarray(values))
    summary.update({
        "bop19_average_time_per_image": float(np.mean(list(times.values()))) if times_available else -1.0,
        "backend": "bop_toolkit", "renderer": renderer_type if ren is not None else None,
        "dataset": root.name, "split": split, "vsd_delta": vsd_delta if "vsd" in errors else None,
        "n_rows": len(ests), "eval_time_s": time.perf_counter() - t0})
    return summary


def _valid(im_gt: list, im_gt_info: list, im_targets: dict, visib_gt_min: float) -> list[bool]:
    """``scene_gt_valid`` of one image, as ``eval_calc_scores.py`` builds it."""
    if visib_gt_min >= 0:
        return [g["obj_id"] in im_targets and im_gt_info[i]["visib_fract"] >= visib_gt_min
                for i, g in enumerate(im_gt)]
    order = sorted(range(len(im_gt)), key=lambda i: im_gt_info[i]["visib_fract"], reverse=True)
    to_add = {o: t["inst_count"] for o, t in im_targets.items()}
    valid = [False] * len(im_gt)
    for i in order:
        o = im_gt[i]["obj_id"]
        if to_add.get(o, 0) > 0:
            valid[i] = True
            to_add[o] -= 1
    return valid


def _normalise(scene_errs: list[dict], err_type: str, tau_i: int | None, models_info: dict, width: float,
               raw: bool) -> list[dict]:
    """Per-tau selection and the diameter / image-width normalisation of ``eval_calc_scores.py``."""
    out = []
    for e in scene_errs:
        errs = {}
        for gt_id, v in e["errors"].items():
            v = [v[tau_i]] if tau_i is not None else list(v)
            if not raw and err_type in DIAMETER_NORMALISED:
                v = [x / float(models_info[e["obj_id"]]["diameter"]) for x in v]
            elif err_type in WIDTH_NORMALISED:
                v = [(640.0 / width) * x for x in v]
            errs[gt_id] = v
        out.append({**e, "errors": errs})
    return out


def _str_keys(scores: dict[str, Any]) -> dict[str, Any]:
    """Score record with string object / scene keys (as the toolkit's JSON files have them)."""
    return {**scores, "obj_recalls": {str(k): float(v) for k, v in scores["obj_recalls"].items()},
            "scene_recalls": {str(k): float(v) for k, v in scores["scene_recalls"].items()}}
