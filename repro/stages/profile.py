"""Stage ``profile``: a runtime profile of a method on a dataset.

    python -m repro.stages.profile method=oracle dataset=synth_default profile.frames=20

Runs the method in this process on the first ``profile.warmup + profile.frames`` frames with
targets (scene order), discards the warm-up frames and writes ``results/<m>/<d>/profile.json``:
per stage (the method's own stages, ``total`` = the predict call, ``io`` = reading the frame)
median, p90, max and mean seconds, ``frames_per_second``, onboarding time, ``peak_rss_mb`` (the
process' maximum resident set size; also before the frames), ``device`` and ``threads``; and
``profile_frames.csv`` (seconds per measured frame), which dvc.yaml declares as a plot.
"""

from __future__ import annotations

import logging
import os
import resource
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from repro.data.base import PoseDataset
from repro.fileio import atomic_write_json, atomic_write_text
from repro.fingerprint import dataset_fingerprint
from repro.inference import Onboarder
from repro.interface import PoseMethod
from repro.stages.app import StageContext, run_stage
from repro.stages.common import build_method, open_run_dataset, resolve_run
from repro.stages.config import to_plain
from repro.tracking import device_info

log = logging.getLogger(__name__)

PROFILE, PROFILE_FRAMES = "profile.json", "profile_frames.csv"


def peak_rss_mb() -> float:
    """This process' maximum resident set size so far, in MiB (ru_maxrss: KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def stage_stats(samples: Sequence[float]) -> dict[str, float]:
    a = np.asarray(samples, dtype=np.float64)
    return {"median": float(np.median(a)), "p90": float(np.percentile(a, 90)), "max": float(a.max()),
            "mean": float(a.mean()), "n": len(a)}


def profile_method(method: PoseMethod, dataset: PoseDataset, *, warmup: int, frames: int,
                   cache_dir: Path | None = None, clock: Callable[[], float] = time.perf_counter) -> dict[str, Any]:
    """Time ``warmup + frames`` frames with targets; stats over the last ``frames``."""
    caps = method.capabilities
    uses_gt = caps.uses_ground_truth
    onboard = Onboarder(method, cache_dir, clock)
    onboard_seconds = onboard.ensure(dataset)
    rss_before = peak_rss_mb()
    per_frame: list[dict[str, Any]] = []
    sequence: object = object()
    it = iter(dataset.iter_frames(with_gt=uses_gt, load_masks=uses_gt))
    while len(per_frame) < warmup + frames:
        t0 = clock()
        try:
            frame, targets = next(it)
        except StopIteration:
            break
        io = clock() - t0
        if not (targets.instances or targets.categories or targets.any_object or frame.category_gt):
            continue
        if frame.sequence_id != sequence:
            sequence = frame.sequence_id
            method.reset(frame.sequence_id)
        t0 = clock()
        pred = method.predict(frame if uses_gt else frame.without_annotations(), targets)
        wall = clock() - t0
        per_frame.append({"scene_id": frame.scene_id, "im_id": frame.im_id, "io": io,
                          **pred.timings, "total": pred.timings.get("total", wall)})
    measured = per_frame[warmup:] if len(per_frame) > warmup else per_frame
    if not measured:
        raise ValueError(f"{dataset.name}: no frame with targets to profile")
    stages = sorted({k for f in measured for k in f if k not in ("scene_id", "im_id")})
    total = sum(f["total"] for f in measured)
    return {
        "method": method.name, "dataset": dataset.name, "warmup": len(per_frame) - len(measured),
        "n_frames": len(measured),
        "stages": {s: stage_stats([f[s] for f in measured if s in f]) for s in stages},
        "frames_per_second": len(measured) / total if total > 0 else None,
        "onboard_seconds": onboard_seconds,
        "peak_rss_mb": peak_rss_mb(), "peak_rss_before_frames_mb": rss_before,
        "memory_source": "resource.getrusage(RUSAGE_SELF).ru_maxrss",
        "frames": measured,
    }


def thread_info() -> dict[str, Any]:
    """``threads``: the compute threads (torch's intra-op threads when torch is loaded, else
    ``OMP_NUM_THREADS`` or the CPU count, numpy's BLAS default), with the details."""
    detail: dict[str, Any] = {"cpu_count": os.cpu_count() or 1,
                              **{k.lower(): os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
                                 if k in os.environ}}
    torch = sys.modules.get("torch")
    if torch is not None:
        detail["torch_threads"] = int(torch.get_num_threads())
        detail["torch_interop_threads"] = int(torch.get_num_interop_threads())
        threads = detail["torch_threads"]
    else:
        omp = os.environ.get("OMP_NUM_THREADS", "")
        threads = int(omp) if omp.isdigit() else detail["cpu_count"]
    return {"threads": threads, "thread_info": detail}


def write_profile(out_dir: Path, prof: Mapping[str, Any], extra: Mapping[str, Any]) -> tuple[Path, Path]:
    frames = prof["frames"]
    lines = ["frame,scene_id,im_id,seconds"] + [f"{i},{f['scene_id']},{f['im_id']},{f['total']!r}"
                                                for i, f in enumerate(frames)]
    csv = atomic_write_text(out_dir / PROFILE_FRAMES, "\n".join(lines) + "\n")
    body = {k: v for k, v in prof.items() if k != "frames"}
    return atomic_write_json(out_dir / PROFILE, {**body, **extra}), csv


def profile(ctx: StageContext) -> dict[str, Any]:
    """Run the stage; returns the profile (without the per-frame list)."""
    run = resolve_run(ctx.cfg, ctx.root, ctx.overrides)
    pcfg = to_plain(ctx.cfg.get("profile")) or {}
    params = {**run.params(), "profile": pcfg}
    with ctx.tracked(f"profile {run.key}", params, tags=run.tags(),
                     dataset_hash=dataset_fingerprint(run.dataset_root)) as tracked:
        dataset = open_run_dataset(run)
        with build_method(run) as method:
            prof = profile_method(method, dataset, warmup=int(pcfg.get("warmup", 2)),
                                  frames=int(pcfg.get("frames", 10)),
                                  cache_dir=ctx.path(ctx.cfg.paths.onboarding_cache))
        dev = device_info()
        extra = {"method": run.method.name, "method_class": run.method.method_class,
                 "dataset": run.dataset.name, "device": dev["device"], "cpu": dev["cpu"], **thread_info(),
                 "preset": run.method.preset}
        path, csv = write_profile(run.results_dir, prof, extra)
        tracked.log_metrics({"frames_per_second": prof["frames_per_second"] or 0.0,
                             "peak_rss_mb": prof["peak_rss_mb"], "onboard_seconds": prof["onboard_seconds"],
                             **{f"{s}.median": v["median"] for s, v in prof["stages"].items()},
                             **{f"{s}.p90": v["p90"] for s, v in prof["stages"].items()}})
        tracked.log_artifact(path, "profile")
        tracked.log_artifact(csv, "profile")
    log.info("%s: %.1f frames/s, peak RSS %.0f MiB", run.key, prof["frames_per_second"] or 0.0,
             prof["peak_rss_mb"])
    return {k: v for k, v in prof.items() if k != "frames"}


def main() -> None:
    run_stage("profile", profile)


if __name__ == "__main__":
    main()
