"""Stage ``evaluate``: score a run's results with the metric engine.

    python -m repro.stages.evaluate method=oracle dataset=synth_default [launcher=joblib]

BOP datasets: ``scores_bop.json`` (BOP19 AR with VSD/MSSD/MSPD and the ADD family, Proj) and, when
the run has ``segmentation.json``, ``scores_coco_segm.json`` (BOP22 AP). NOCS datasets:
``scores_nocs.json``. BOP evaluation (poses and masks) covers the images of the dataset's ``targets``
file when it names one. Plus ``metrics.json``, the small summary DVC tracks as metrics. With a
launcher other than ``local`` the BOP pose errors (the expensive part: VSD renders) are computed per
scene shard by launched jobs (``shards/scene_XXXXXX/eval_bop.npz``) and scored here in one pass,
giving the same numbers as a single-process evaluation.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from repro.fileio import atomic_write, atomic_write_json, read_json
from repro.fingerprint import config_fingerprint, dataset_fingerprint, path_fingerprint
from repro.inference import CATEGORY, ESTIMATES, SEGMENTATION, shard_dir
from repro.launch import LauncherConfig, launch_shards
from repro.stages.app import StageContext, run_stage
from repro.stages.common import RunSpec, job_config, resolve_run
from repro.stages.config import to_plain

log = logging.getLogger(__name__)

SCORES_BOP, SCORES_COCO, SCORES_NOCS, METRICS = (
    "scores_bop.json", "scores_coco_segm.json", "scores_nocs.json", "metrics.json")
SUMMARY_KEYS = {
    "bop19": ("bop19_average_recall", "bop19_average_recall_vsd", "bop19_average_recall_mssd",
              "bop19_average_recall_mspd", "recall_ad", "recall_add", "recall_adi", "recall_proj", "recall_cus",
              "auc_add", "auc_adi", "auc_add_storm", "auc_adi_storm", "ar_storm", "mean_mask_iou", "recall_iou",
              "bop19_average_time_per_image"),
    "coco_segm": ("AP", "AP50", "AP75", "AR100"),
    "nocs": ("IoU25", "IoU50", "IoU75", "5deg2cm", "5deg5cm", "10deg2cm", "10deg5cm", "10deg10cm"),
}
TIME_KEYS = frozenset({"eval_time_s"})
"""Keys of the scores that measure how long the evaluation took (they differ between runs)."""
EVAL_SHARD, EVAL_SHARD_DONE = "eval_bop.npz", "eval_bop.json"


def _bop_config(ecfg: dict[str, Any]) -> Any:
    from repro.metrics.bop19 import BopEvalConfig

    errors = ecfg.get("bop_errors") or ["vsd", "mssd", "mspd"]
    return replace(BopEvalConfig(), errors=tuple(errors), renderer_backend=str(ecfg.get("renderer", "auto")),
                   device=str(ecfg.get("device", "cpu")))


def bop_eval_fingerprint(run: RunSpec, ecfg: dict[str, Any]) -> str:
    """What a scene's pose errors depend on: the results CSV, the dataset, the metric code and config."""
    import repro.metrics

    return config_fingerprint({
        "estimates": path_fingerprint(run.results_dir / ESTIMATES), "dataset": dataset_fingerprint(run.dataset_root),
        "split": run.dataset.split, "targets": run.dataset.targets,
        "metrics": path_fingerprint(Path(repro.metrics.__file__).parent, suffixes=(".py",)),
        "errors": list(ecfg.get("bop_errors") or []), "renderer": ecfg.get("renderer"), "device": ecfg.get("device")})


def _shard_done(run: RunSpec, scene: int, fingerprint: str) -> bool:
    try:
        return read_json(shard_dir(run.results_dir, scene) / EVAL_SHARD_DONE).get("fingerprint") == fingerprint
    except (FileNotFoundError, ValueError, AttributeError):
        return False


def compute_bop_shard(run: RunSpec, ecfg: dict[str, Any], scene: int, fingerprint: str) -> Path:
    """Pose errors of one scene's target images, saved (lossless) next to its inference shard."""
    from repro.metrics.bop19 import BopEvaluator, build_tasks
    from repro.results import read_bop_csv_arrays

    d = shard_dir(run.results_dir, scene)
    with BopEvaluator(run.dataset_root, split=run.dataset.split or "test", targets_file=run.dataset.targets,
                      config=_bop_config(ecfg)) as ev:
        arrays = read_bop_csv_arrays(run.results_dir / ESTIMATES)
        tasks = [t for t in build_tasks(ev.dataset, arrays, ev.config) if t.scene_id == scene]
        per_task = ev.compute_errors(tasks)
        renderer = ev.engine.renderer_name
    arrays_out = {f"{t.scene_id}_{t.im_id}/{k}": v for t, errs in zip(tasks, per_task, strict=True)
                  for k, v in errs.items()}
    d.mkdir(parents=True, exist_ok=True)
    (d / EVAL_SHARD_DONE).unlink(missing_ok=True)
    atomic_write(d / EVAL_SHARD, lambda f: np.savez(f, **arrays_out))
    atomic_write_json(d / EVAL_SHARD_DONE, {"scene_id": scene, "fingerprint": fingerprint, "n_images": len(tasks),
                                            "renderer": renderer})
    return d / EVAL_SHARD


def score_bop_shards(run: RunSpec, ecfg: dict[str, Any], scenes: list[int]) -> dict[str, Any]:
    """The ``evaluate_bop`` summary from the shards' pose errors (matching and scores in one pass)."""
    from repro.metrics.bop19 import BopEvaluator, _estimate_table, _pair_table, average_time_per_image, build_tasks
    from repro.results import read_bop_csv_arrays

    t0 = time.perf_counter()
    errors: dict[tuple[int, int], dict[str, np.ndarray]] = {}
    renderers = {read_json(shard_dir(run.results_dir, s) / EVAL_SHARD_DONE).get("renderer") for s in scenes}
    for s in scenes:
        with np.load(shard_dir(run.results_dir, s) / EVAL_SHARD) as z:
            for name in z.files:
                key, _, err = name.partition("/")
                sid, _, iid = key.partition("_")
                errors.setdefault((int(sid), int(iid)), {})[err] = z[name]
    with BopEvaluator(run.dataset_root, split=run.dataset.split or "test", targets_file=run.dataset.targets,
                      config=_bop_config(ecfg)) as ev:
        arrays = read_bop_csv_arrays(run.results_dir / ESTIMATES)
        tasks = build_tasks(ev.dataset, arrays, ev.config)
        missing = [(t.scene_id, t.im_id) for t in tasks if (t.scene_id, t.im_id) not in errors]
        if missing:
            raise RuntimeError(f"pose errors missing for {len(missing)} target image(s), e.g. {missing[0]}")
        per_task = [errors[(t.scene_id, t.im_id)] for t in tasks]
        result = ev.score(tasks, _pair_table(tasks, per_task, ev.config), _estimate_table(tasks))
        result.summary.update({"bop19_average_time_per_image": average_time_per_image(arrays),
                               "n_rows": len(arrays.score), "eval_time_s": time.perf_counter() - t0,
                               "renderer": next((r for r in sorted(renderers, key=str) if r), None)})
    return result.summary


def summarize(scores: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """The headline numbers of each scores file (``metrics.json``)."""
    out = {}
    for group, values in scores.items():
        keys = SUMMARY_KEYS[group]
        out[group] = {k: values[k] for k in keys if isinstance(values.get(k), int | float)
                      and not isinstance(values.get(k), bool) and math.isfinite(values[k])}
    return out


def _nocs_subset_split(split: str | None) -> tuple[str | None, str | None]:
    if not split:
        return None, None
    subset, _, sp = split.replace("_", "/", 1).partition("/")
    return subset, sp or "test"


def evaluate(ctx: StageContext) -> dict[str, dict[str, float]]:
    """Run the stage; returns the summary written to ``metrics.json``."""
    cfg = ctx.cfg
    run = resolve_run(cfg, ctx.root, ctx.overrides)
    ecfg = to_plain(cfg.get("eval")) or {}
    launcher = LauncherConfig.from_mapping(to_plain(cfg.get("launcher")))
    out = run.results_dir
    scores: dict[str, dict[str, Any]] = {}
    written: list[Path] = []
    params = {**run.params(), "eval": ecfg, "launcher": launcher.name}
    with ctx.tracked(f"evaluate {run.key}", params, tags=run.tags(),
                     dataset_hash=dataset_fingerprint(run.dataset_root)) as tracked:
        if run.dataset.format == "bop":
            scores["bop19"] = _evaluate_bop(ctx, run, ecfg, launcher)
            written.append(atomic_write_json(out / SCORES_BOP, scores["bop19"]))
            if (out / SEGMENTATION).is_file():
                from repro.metrics.coco import evaluate_coco

                scores["coco_segm"] = evaluate_coco(run.dataset_root, out / SEGMENTATION, ann_type="segm",
                                                    split=run.dataset.split or "test",
                                                    targets_file=run.dataset.targets)
                written.append(atomic_write_json(out / SCORES_COCO, scores["coco_segm"]))
            else:
                (out / SCORES_COCO).unlink(missing_ok=True)
        else:
            from repro.metrics.nocs import evaluate_nocs

            subset, split = _nocs_subset_split(run.dataset.split)
            scores["nocs"] = evaluate_nocs(out / CATEGORY, dataset_dir=run.dataset_root, subset=subset, split=split,
                                           use_matches_for_pose=bool(ecfg.get("nocs_use_matches_for_pose", True)))
            written.append(atomic_write_json(out / SCORES_NOCS, scores["nocs"]))
        summary = summarize(scores)
        written.append(atomic_write_json(out / METRICS, summary))
        tracked.log_metrics(summary)
        for path in written:
            tracked.log_artifact(path, "scores")
    log.info("%s: %s", run.key, summary)
    return summary


def _evaluate_bop(ctx: StageContext, run: RunSpec, ecfg: dict[str, Any], launcher: LauncherConfig) -> dict[str, Any]:
    from repro.metrics.bop19 import evaluate_bop

    if launcher.local:
        return evaluate_bop(run.dataset_root, run.results_dir / ESTIMATES, errors=list(ecfg.get("bop_errors") or []),
                            split=run.dataset.split or "test", targets_file=run.dataset.targets,
                            renderer_backend=str(ecfg.get("renderer", "auto")),
                            device=str(ecfg.get("device", "cpu")), progress=False)
    from repro.data.bop import BopDataset

    scenes = BopDataset(run.dataset_root, split=run.dataset.split or "test",
                        targets=run.dataset.targets or "auto").scene_ids()
    fp = bop_eval_fingerprint(run, ecfg)
    pending = [s for s in scenes if not _shard_done(run, s, fp)]
    shard = {"stage": "evaluate", "fingerprint": fp, "root": str(ctx.root)}
    launch_shards(ctx.root, job_config(ctx.cfg, run), shard, pending, launcher,
                  ctx.path("artifacts/launch") / "evaluate" / run.method.name / run.dataset.name)
    return score_bop_shards(run, ecfg, scenes)


def evaluate_shard(cfg: DictConfig) -> None:
    """One launched job: the pose errors of scene ``cfg.shard.scene`` (skipped when already done)."""
    run = resolve_run(cfg, Path(cfg.shard.root))
    scene, fp = int(cfg.shard.scene), str(cfg.shard.fingerprint)
    if not _shard_done(run, scene, fp):
        compute_bop_shard(run, to_plain(cfg.get("eval")) or {}, scene, fp)


def main() -> None:
    run_stage("evaluate", evaluate)


if __name__ == "__main__":
    main()
