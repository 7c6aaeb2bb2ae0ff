"""Run a method over a dataset and write its results files, scene by scene, resumably.

Frames go scene by scene; each scene is one *shard*. The method is onboarded once per object set
(``onboard`` gets a cache folder keyed by :func:`repro.interface.objects_hash`, so shards running in
other processes reuse what it keeps there) and reset at the start of every sequence and every shard.
Methods that are not declared ground-truth baselines receive frames with the annotations removed.

Each shard is written atomically to ``out_dir/shards/scene_XXXXXX/`` (``estimates.csv``,
``segmentation.json``, ``category.json``, ``timings.csv``) and marked complete by ``done.json``,
written last with the run's fingerprint. A killed run restarts where it stopped: shards whose
``done.json`` carries the same fingerprint are not recomputed. The merged files in ``out_dir``
(``estimates.csv`` BOP19 CSV for BOP datasets, ``segmentation.json`` BOP22 COCO when the method
outputs masks, ``category.json`` for NOCS datasets, ``timings.csv`` seconds per frame and stage,
``run.json`` what ran) concatenate the shards in scene order, so they do not depend on how the
shards were scheduled. Shards of one run may be computed by several processes
(:func:`run_shards`, one call per process) and merged once (:func:`merge_shards`).
"""

from __future__ import annotations

import logging
import platform
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from repro.data.base import PoseDataset
from repro.fileio import atomic_write_json, read_json
from repro.fingerprint import config_fingerprint, dataset_fingerprint, path_fingerprint
from repro.interface import PoseMethod, objects_hash
from repro.results import (
    BopResultRow,
    CategoryImageResult,
    CocoResult,
    TimingRow,
    bop_rows_from_estimates,
    category_image_from_estimates,
    coco_results_from_estimates,
    read_bop_csv,
    read_category_results,
    read_coco_results,
    read_timings_csv,
    timing_rows,
    write_bop_csv,
    write_category_results,
    write_coco_results,
    write_timings_csv,
)
from repro.types import Frame, Targets

log = logging.getLogger(__name__)

SHARDS_DIR = "shards"
DONE_FILE = "done.json"
ESTIMATES, SEGMENTATION, CATEGORY, TIMINGS, RUN = (
    "estimates.csv", "segmentation.json", "category.json", "timings.csv", "run.json")
RESULT_FILES = (ESTIMATES, SEGMENTATION, CATEGORY, TIMINGS)
RUNNER_VERSION = 1
Clock = Callable[[], float]


@dataclass
class InferenceResult:
    """Where the results went and how much was done."""

    out_dir: Path
    files: dict[str, Path] = field(default_factory=dict)
    n_frames: int = 0
    n_estimates: int = 0
    seconds: float = 0.0
    shards_run: int = 0
    shards_reused: int = 0

    def summary(self) -> dict[str, Any]:
        return {"out_dir": str(self.out_dir), "files": {k: str(v) for k, v in self.files.items()},
                "n_frames": self.n_frames, "n_estimates": self.n_estimates, "seconds": round(self.seconds, 3),
                "shards_run": self.shards_run, "shards_reused": self.shards_reused}


@dataclass(frozen=True)
class ShardRecord:
    """The ``done.json`` of a finished shard."""

    scene_id: int
    fingerprint: str
    n_frames: int
    n_estimates: int
    seconds: float
    load_seconds: float
    onboard_seconds: float
    files: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"scene_id": self.scene_id, "fingerprint": self.fingerprint, "n_frames": self.n_frames,
                "n_estimates": self.n_estimates, "seconds": self.seconds, "load_seconds": self.load_seconds,
                "onboard_seconds": self.onboard_seconds, "files": list(self.files),
                "runner_version": RUNNER_VERSION}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ShardRecord:
        return cls(int(d["scene_id"]), str(d["fingerprint"]), int(d["n_frames"]), int(d["n_estimates"]),
                   float(d["seconds"]), float(d.get("load_seconds", 0.0)), float(d.get("onboard_seconds", 0.0)),
                   tuple(d["files"]))


def output_files(dataset_format: str, outputs: frozenset[str] | set[str]) -> tuple[str, ...]:
    """The results files a run writes: by dataset layout (BOP: pose CSV, NOCS: category JSON) and
    whether the method outputs masks (BOP22 segmentation JSON)."""
    if dataset_format == "nocs":
        return CATEGORY, TIMINGS
    return (ESTIMATES, SEGMENTATION, TIMINGS) if "mask" in outputs else (ESTIMATES, TIMINGS)


def shard_dir(out_dir: str | Path, scene_id: int) -> Path:
    return Path(out_dir) / SHARDS_DIR / f"scene_{int(scene_id):06d}"


def read_shard_record(out_dir: str | Path, scene_id: int) -> ShardRecord | None:
    """The shard's completion record, or None when it is missing or unreadable (then it reruns)."""
    path = shard_dir(out_dir, scene_id) / DONE_FILE
    try:
        return ShardRecord.from_json(read_json(path))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring unreadable %s (%s); the shard reruns", path, exc)
        return None


def _module_path(name: str) -> Path:
    """A package's folder or a module's file."""
    import importlib

    mod = importlib.import_module(name)
    dirs = [Path(p) for p in getattr(mod, "__path__", []) if Path(p).is_dir()]
    return dirs[0] if dirs else Path(mod.__file__ or name)


def method_code_paths(method: PoseMethod | type[PoseMethod]) -> list[Path]:
    """Source that determines a method's outputs: its top-level method package (``methods/<pkg>``,
    or its own top-level package for plug-ins), ``methods/common`` and this runner."""
    cls = method if isinstance(method, type) else type(method)
    parts = cls.__module__.split(".")
    top = ".".join(parts[:2]) if parts[0] == "methods" and len(parts) > 1 else parts[0]
    paths = [_module_path(top), Path(__file__)]
    if parts[0] == "methods":
        paths.append(_module_path("methods") / "common")
    return paths


def run_fingerprint(method: PoseMethod, dataset: PoseDataset, *, max_frames: int | None = None,
                    extra: Mapping[str, Any] | None = None) -> str:
    """What a shard's content depends on: method, config, seed, code, dataset content and split."""
    info = {"method": method.name, "cfg": method.cfg, "seed": method.seed, "max_frames": max_frames,
            "code": path_fingerprint(method_code_paths(method), suffixes=(".py",)),
            "dataset": dataset_fingerprint(dataset.root), "format": dataset.format,
            "split": getattr(dataset, "split", None), "subset": getattr(dataset, "subset", None),
            "runner": RUNNER_VERSION, **(extra or {})}
    return config_fingerprint(info)


class Onboarder:
    """Onboards a method once per object set, with a cache folder keyed by the objects' hash."""

    def __init__(self, method: PoseMethod, cache_root: Path | None, clock: Clock = time.perf_counter) -> None:
        self.method = method
        self.cache_root = cache_root
        self.clock = clock
        self.current: str | None = None
        self.seconds = 0.0

    def ensure(self, dataset: PoseDataset) -> float:
        """Onboard ``dataset.objects()`` unless already done in this process; returns the seconds spent."""
        objects = dataset.objects()
        key = objects_hash(objects.values())
        if key == self.current:
            return 0.0
        cache = None
        if self.cache_root is not None:
            cache = self.cache_root / self.method.name / config_fingerprint(self.method.cfg) / key
            cache.mkdir(parents=True, exist_ok=True)
        t0 = self.clock()
        self.method.onboard(objects, cache_dir=cache)
        spent = self.clock() - t0
        self.current = key
        self.seconds += spent
        log.info("%s onboarded %d objects (set %s) in %.2f s", self.method.name, len(objects), key, spent)
        return spent


def _scene_size(dataset: PoseDataset, scene_id: int) -> int | None:
    """Number of images of a scene, when the reader can tell cheaply (for progress bars)."""
    try:
        if hasattr(dataset, "scene"):
            return len(dataset.scene(scene_id).im_ids)  # type: ignore[attr-defined]
        if hasattr(dataset, "image_ids"):
            return len(dataset.image_ids(scene_id))  # type: ignore[attr-defined]
    except Exception:  # a size is only a progress hint
        return None
    return None


def _has_targets(frame: Frame, targets: Targets) -> bool:
    return bool(targets.instances or targets.categories or targets.any_object or frame.category_gt)


@dataclass
class _ShardBuffers:
    bop: list[BopResultRow] = field(default_factory=list)
    coco: list[CocoResult] = field(default_factory=list)
    category: list[CategoryImageResult] = field(default_factory=list)
    timings: list[TimingRow] = field(default_factory=list)
    n_frames: int = 0
    n_estimates: int = 0
    load_seconds: float = 0.0


def _timed_frames(frames: Iterator[tuple[Frame, Targets]], clock: Clock,
                  bufs: _ShardBuffers) -> Iterator[tuple[Frame, Targets]]:
    while True:
        t0 = clock()
        try:
            item = next(frames)
        except StopIteration:
            return
        bufs.load_seconds += clock() - t0
        yield item


def run_shard(method: PoseMethod, dataset: PoseDataset, out_dir: str | Path, scene_id: int, *, fingerprint: str,
              onboarder: Onboarder, max_frames: int | None = None, clock: Clock = time.perf_counter,
              bar: tqdm | None = None) -> ShardRecord:
    """Predict every frame with targets of one scene and write the shard atomically (done.json last)."""
    caps = method.capabilities
    uses_gt = caps.uses_ground_truth
    files = output_files(dataset.format, caps.outputs)
    start = clock()
    onboard_seconds = onboarder.ensure(dataset)
    bufs = _ShardBuffers()
    sequence: object = object()
    frames = dataset.iter_frames([scene_id], with_gt=uses_gt, load_masks=uses_gt)
    for frame, targets in _timed_frames(iter(frames), clock, bufs):
        if bar is not None:
            bar.update(1)
        if not _has_targets(frame, targets):
            continue
        if max_frames is not None and bufs.n_frames >= max_frames:
            break
        if frame.sequence_id != sequence:
            sequence = frame.sequence_id
            method.reset(frame.sequence_id)
        t0 = clock()
        pred = method.predict(frame if uses_gt else frame.without_annotations(), targets)
        wall = clock() - t0
        stage_times = {**pred.timings, "total": pred.timings.get("total", wall)}
        image_time = stage_times["total"]
        if ESTIMATES in files:
            bufs.bop += bop_rows_from_estimates(frame.scene_id, frame.im_id, pred.estimates, image_time)
        if SEGMENTATION in files:
            bufs.coco += coco_results_from_estimates(frame.scene_id, frame.im_id,
                                                     [e for e in pred.estimates if e.mask is not None], image_time)
        if CATEGORY in files:
            bufs.category.append(category_image_from_estimates(frame.scene_id, frame.im_id,
                                                               pred.category_estimates, image_time))
        bufs.timings += timing_rows(frame.scene_id, frame.im_id, stage_times)
        bufs.n_frames += 1
        bufs.n_estimates += len(pred.estimates) + len(pred.category_estimates)
    d = shard_dir(out_dir, scene_id)
    d.mkdir(parents=True, exist_ok=True)
    (d / DONE_FILE).unlink(missing_ok=True)
    if ESTIMATES in files:
        write_bop_csv(d / ESTIMATES, bufs.bop)
    if SEGMENTATION in files:
        write_coco_results(d / SEGMENTATION, bufs.coco)
    if CATEGORY in files:
        write_category_results(d / CATEGORY, bufs.category)
    write_timings_csv(d / TIMINGS, bufs.timings)
    record = ShardRecord(scene_id=int(scene_id), fingerprint=fingerprint, n_frames=bufs.n_frames,
                         n_estimates=bufs.n_estimates, seconds=clock() - start, load_seconds=bufs.load_seconds,
                         onboard_seconds=onboard_seconds, files=files)
    atomic_write_json(d / DONE_FILE, record.to_json())
    return record


def pending_scenes(out_dir: str | Path, scene_ids: Sequence[int], fingerprint: str) -> list[int]:
    """Scenes without a finished shard of this fingerprint."""
    done = {s for s in scene_ids if (r := read_shard_record(out_dir, s)) is not None and r.fingerprint == fingerprint}
    return [s for s in scene_ids if s not in done]


def run_shards(method: PoseMethod, dataset: PoseDataset, out_dir: str | Path, scene_ids: Sequence[int], *,
               fingerprint: str, resume: bool = True, cache_dir: str | Path | None = None,
               max_frames: int | None = None, clock: Clock = time.perf_counter,
               progress: bool = True) -> tuple[list[ShardRecord], int]:
    """Compute the shards of ``scene_ids`` in order in this process; returns (records, number reused).

    With ``resume``, finished shards of the same fingerprint are kept; ``max_frames`` caps the frames
    over all scenes (in order), counting those of kept shards.
    """
    onboarder = Onboarder(method, Path(cache_dir) if cache_dir is not None else None, clock)
    pending = set(pending_scenes(out_dir, scene_ids, fingerprint) if resume else scene_ids)
    sizes = [_scene_size(dataset, s) for s in pending]
    total = sum(sizes) if all(n is not None for n in sizes) else None  # type: ignore[arg-type]
    records: list[ShardRecord] = []
    reused = 0
    budget = max_frames
    with tqdm(total=total, desc=f"{method.name} on {dataset.name}", unit="frame", disable=not progress,
              leave=False) as bar:
        for s in scene_ids:
            if budget is not None and budget <= 0:
                break
            if s not in pending:
                record = read_shard_record(out_dir, s)
                assert record is not None
                reused += 1
            else:
                bar.set_postfix_str(f"scene {s}")
                if not resume:
                    shutil.rmtree(shard_dir(out_dir, s), ignore_errors=True)
                record = run_shard(method, dataset, out_dir, s, fingerprint=fingerprint, onboarder=onboarder,
                                   max_frames=budget, clock=clock, bar=bar)
            records.append(record)
            if budget is not None:
                budget -= record.n_frames
    return records, reused


def merge_shards(out_dir: str | Path, records: Sequence[ShardRecord]) -> dict[str, Path]:
    """Concatenate the shards (in the order given) into the run's results files, atomically.

    Result files of this kind that the shards do not have are removed, so a folder never mixes
    outputs of different runs.
    """
    out = Path(out_dir)
    files = records[0].files if records else (TIMINGS,)
    if any(r.files != files for r in records):
        raise ValueError(f"{out}: shards disagree on their files ({sorted({r.files for r in records})})")
    dirs = [shard_dir(out, r.scene_id) for r in records]
    written: dict[str, Path] = {}
    if ESTIMATES in files:
        written["estimates"] = write_bop_csv(out / ESTIMATES, [r for d in dirs for r in read_bop_csv(d / ESTIMATES)])
    if SEGMENTATION in files:
        written["segmentation"] = write_coco_results(
            out / SEGMENTATION, [r for d in dirs for r in read_coco_results(d / SEGMENTATION)])
    if CATEGORY in files:
        written["category"] = write_category_results(
            out / CATEGORY, [r for d in dirs for r in read_category_results(d / CATEGORY)])
    written["timings"] = write_timings_csv(out / TIMINGS, [r for d in dirs for r in read_timings_csv(d / TIMINGS)])
    for name in RESULT_FILES:
        if name not in files:
            (out / name).unlink(missing_ok=True)
    return written


def write_run_json(out_dir: str | Path, method: PoseMethod, dataset: PoseDataset, records: Sequence[ShardRecord],
                   *, fingerprint: str, wall_seconds: float, run_info: Mapping[str, Any] | None = None) -> Path:
    """``run.json``: what ran on what (method, provenance, capabilities, dataset, counts, machine)."""
    prov = method.provenance()
    return atomic_write_json(Path(out_dir) / RUN, {
        "method": method.name, "capabilities": method.capabilities.to_dict(),
        "provenance": {"preset": prov.preset, "weights": prov.weights, "backbone": prov.backbone,
                       "notes": prov.notes, "label": prov.label()},
        "dataset": dataset.info(), "n_frames": sum(r.n_frames for r in records),
        "n_estimates": sum(r.n_estimates for r in records), "seconds": sum(r.seconds for r in records),
        "wall_seconds": wall_seconds, "load_seconds": sum(r.load_seconds for r in records),
        "onboard_seconds": sum(r.onboard_seconds for r in records), "fingerprint": fingerprint,
        "scenes": [r.scene_id for r in records], "machine": platform.node(), "python": platform.python_version(),
        **(run_info or {}),
    })


def run_inference(method: PoseMethod, dataset: PoseDataset, out_dir: str | Path, *,
                  scene_ids: Sequence[int] | None = None, max_frames: int | None = None,
                  run_info: dict[str, Any] | None = None, progress: bool = True, resume: bool = True,
                  cache_dir: str | Path | None = None, fingerprint: str | None = None,
                  clock: Clock = time.perf_counter) -> InferenceResult:
    """Predict every frame with targets, shard by shard (resuming finished shards), then merge.

    ``fingerprint`` defaults to :func:`run_fingerprint`; ``cache_dir`` is the onboarding cache root;
    ``clock`` times frames and stages (inject a fake one for reproducible ``time`` fields).
    """
    out = InferenceResult(out_dir=Path(out_dir))
    start = time.perf_counter()
    scenes = list(scene_ids) if scene_ids is not None else list(dataset.scene_ids())
    fp = fingerprint or run_fingerprint(method, dataset, max_frames=max_frames)
    records, reused = run_shards(method, dataset, out_dir, scenes, fingerprint=fp, resume=resume,
                                 cache_dir=cache_dir, max_frames=max_frames, clock=clock, progress=progress)
    out.files = merge_shards(out_dir, records)
    out.seconds = time.perf_counter() - start
    out.files["run"] = write_run_json(out_dir, method, dataset, records, fingerprint=fp, wall_seconds=out.seconds,
                                      run_info=run_info)
    out.n_frames = sum(r.n_frames for r in records)
    out.n_estimates = sum(r.n_estimates for r in records)
    out.shards_reused = reused
    out.shards_run = len(records) - reused
    log.info("%s on %s: %d frames, %d estimates in %.1f s (%d shards run, %d reused)", method.name, dataset.name,
             out.n_frames, out.n_estimates, out.seconds, out.shards_run, out.shards_reused)
    return out
