"""Stage ``infer``: run a method over a dataset, scene shard by scene shard, resumably.

    python -m repro.stages.infer method=oracle dataset=synth_default [launcher=joblib] [overrides]

Writes ``results/<method key>/<dataset>/`` (``estimates.csv`` / ``segmentation.json`` /
``category.json``, ``timings.csv``, ``run.json``; shards under ``shards/``) and logs an MLflow run.
A trainable method's training-time scores (``scores_*.json`` in its checkpoint folder) are copied
into the results folder, replacing ones an earlier run left there.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from repro.fingerprint import dataset_fingerprint, path_fingerprint
from repro.inference import (
    Onboarder,
    ShardRecord,
    merge_shards,
    pending_scenes,
    read_shard_record,
    run_fingerprint,
    run_shard,
    run_shards,
    write_run_json,
)
from repro.launch import LauncherConfig, launch_shards
from repro.stages.app import StageContext, run_stage
from repro.stages.common import (
    RunSpec,
    build_method,
    copy_train_scores,
    dataset_record,
    job_config,
    open_run_dataset,
    resolve_run,
)
from repro.stages.config import to_plain

log = logging.getLogger(__name__)


def _fingerprint(run: RunSpec, method: Any, dataset: Any, max_frames: int | None) -> str:
    extra: dict[str, Any] = {"checkpoint": path_fingerprint(run.checkpoint_dir)} if method.capabilities.trainable \
        else {}
    if run.dataset.targets:
        extra["targets"] = run.dataset.targets
    return run_fingerprint(method, dataset, max_frames=max_frames, extra=extra)


def infer(ctx: StageContext) -> dict[str, Any]:
    """Run the stage; returns the run's summary metrics."""
    cfg = ctx.cfg
    run = resolve_run(cfg, ctx.root, ctx.overrides)
    icfg = to_plain(cfg.get("infer")) or {}
    launcher = LauncherConfig.from_mapping(to_plain(cfg.get("launcher")))
    max_frames = icfg.get("max_frames")
    if max_frames is not None and not launcher.local:
        raise ValueError("infer.max_frames caps frames across scenes in order: use it with launcher=local")
    with build_method(run) as method:
        dataset = open_run_dataset(run)
        scenes = [int(s) for s in icfg.get("scenes") or dataset.scene_ids()]
        fp = _fingerprint(run, method, dataset, max_frames)
        out = run.results_dir
        resume = bool(icfg.get("resume", True))
        start = time.perf_counter()
        params = {**run.params(), "infer": icfg, "launcher": launcher.name}
        with ctx.tracked(f"infer {run.key}", params, tags=run.tags(),
                         dataset_hash=dataset_fingerprint(run.dataset_root)) as tracked:
            if launcher.local:
                records, reused = run_shards(method, dataset, out, scenes, fingerprint=fp, resume=resume,
                                             cache_dir=ctx.path(cfg.paths.onboarding_cache), max_frames=max_frames,
                                             progress=bool(icfg.get("progress", True)))
            else:
                pending = pending_scenes(out, scenes, fp) if resume else scenes
                reused = len(scenes) - len(pending)
                shard = {"stage": "infer", "fingerprint": fp, "root": str(ctx.root)}
                launch_shards(ctx.root, job_config(cfg, run), shard, pending, launcher,
                              ctx.path("artifacts/launch") / "infer" / run.method.name / run.dataset.name)
                records = _collect(out, scenes, fp)
            files = merge_shards(out, records)
            train_scores = copy_train_scores(run, trainable=method.capabilities.trainable)
            wall = time.perf_counter() - start
            write_run_json(out, method, dataset, records, fingerprint=fp, wall_seconds=wall, run_info={
                "method": run.method.name, "method_class": run.method.method_class,
                "params": dict(run.method.params), "preset": run.method.preset, "seed": run.seed,
                "dataset": dataset_record(run, dataset), "launcher": launcher.name,
                "checkpoint": str(run.checkpoint_dir) if method.capabilities.trainable else None,
                "train_scores": [p.name for p in train_scores]})
            n_frames = sum(r.n_frames for r in records)
            seconds = sum(r.seconds for r in records)
            metrics = {"n_frames": n_frames, "n_estimates": sum(r.n_estimates for r in records), "seconds": seconds,
                       "frames_per_second": n_frames / seconds if seconds > 0 else 0.0, "wall_seconds": wall,
                       "shards_run": len(records) - reused, "shards_reused": reused}
            tracked.log_metrics(metrics)
            for path in (*files.values(), *train_scores, out / "run.json"):
                tracked.log_artifact(path, "results")
    log.info("%s: %d frames in %d shards (%d reused) -> %s", run.key, n_frames, len(records), reused, out)
    return metrics


def _collect(out: Path, scenes: list[int], fingerprint: str) -> list[ShardRecord]:
    records = []
    for s in scenes:
        r = read_shard_record(out, s)
        if r is None or r.fingerprint != fingerprint:
            raise RuntimeError(f"shard of scene {s} missing after the launcher finished ({out})")
        records.append(r)
    return records


def infer_shard(cfg: DictConfig) -> None:
    """One launched job: the shard of scene ``cfg.shard.scene`` (skipped when already done)."""
    root = Path(cfg.shard.root)
    run = resolve_run(cfg, root)
    scene = int(cfg.shard.scene)
    fp = str(cfg.shard.fingerprint)
    done = read_shard_record(run.results_dir, scene)
    if done is not None and done.fingerprint == fp:
        return
    dataset = open_run_dataset(run)
    cache = Path(cfg.paths.onboarding_cache)
    with build_method(run) as method:
        onboarder = Onboarder(method, cache if cache.is_absolute() else root / cache)
        record = run_shard(method, dataset, run.results_dir, scene, fingerprint=fp, onboarder=onboarder)
    log.info("%s scene %d: %d frames in %.2f s", run.key, scene, record.n_frames, record.seconds)


def main() -> None:
    run_stage("infer", infer)


if __name__ == "__main__":
    main()
