"""Runtime profiles: per-stage statistics after warm-up, ``profile.json`` files and pytest-benchmark runs."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from repro.errors import DataFormatError
from repro.fileio import read_json
from repro.results import TimingRow, timings_by_image

DEFAULT_WARMUP = 3


@dataclass(frozen=True)
class StageStats:
    """Seconds spent in one stage per frame (after warm-up)."""

    stage: str
    n: int
    mean: float
    median: float
    p90: float
    max: float


@dataclass(frozen=True)
class RuntimeProfile:
    """How fast one run was: per-stage statistics, throughput and the machine it ran on."""

    stages: tuple[StageStats, ...]
    fps: float | None
    peak_memory_mb: float | None
    device: str
    threads: int | None
    warmup_skipped: int
    source: str

    def stage(self, name: str) -> StageStats | None:
        return next((s for s in self.stages if s.stage == name), None)


def warmup_frames(n_frames: int, warmup: int | None = None) -> int:
    """How many leading frames to skip: ``warmup`` (default 3), but never more than half of them."""
    want = DEFAULT_WARMUP if warmup is None else max(0, warmup)
    return min(want, max(0, (n_frames - 1) // 2))


def frames_after_warmup(rows: Iterable[TimingRow], warmup: int | None = None) -> tuple[list[dict[str, float]], int]:
    """Per-frame ``{stage: seconds}`` in file order without the warm-up frames, and how many were skipped.

    A frame without a ``total`` stage gets the sum of its stages as total.
    """
    frames = list(timings_by_image(rows).values())
    skip = warmup_frames(len(frames), warmup)
    out = []
    for f in frames[skip:]:
        f = dict(f)
        f.setdefault("total", float(sum(f.values())))
        out.append(f)
    return out, skip


def _stats(stage: str, values: Sequence[float]) -> StageStats:
    arr = np.asarray(values, dtype=np.float64)
    return StageStats(stage, len(values), float(arr.mean()), float(np.median(arr)), float(np.percentile(arr, 90)),
                      float(arr.max()))


def profile_from_timings(rows: Sequence[TimingRow], warmup: int | None = None, *, device: str = "-",
                         threads: int | None = None, peak_memory_mb: float | None = None) -> RuntimeProfile | None:
    """Per-stage statistics computed from a timings CSV (``None`` without frames)."""
    frames, skip = frames_after_warmup(rows, warmup)
    if not frames:
        return None
    stages: dict[str, list[float]] = {}
    for f in frames:
        for stage, sec in f.items():
            stages.setdefault(stage, []).append(sec)
    order = sorted(stages, key=lambda s: (s == "total", list(stages).index(s)))
    total = sum(f["total"] for f in frames)
    return RuntimeProfile(stages=tuple(_stats(s, stages[s]) for s in order),
                          fps=len(frames) / total if total > 0 else None, peak_memory_mb=peak_memory_mb,
                          device=device, threads=threads, warmup_skipped=skip,
                          source=f"timings.csv ({len(frames)} frames after {skip} warm-up)")


def _number(data: Mapping[str, Any], keys: Sequence[str], path: Path, where: str) -> float | None:
    for k in keys:
        if k in data and data[k] is not None:
            v = data[k]
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise DataFormatError(path, f"must be a finite number, got {v!r}", field=f"{where}{k}")
            return float(v)
    return None


def profile_from_json(path: Path, data: Any) -> RuntimeProfile:
    """A ``profile.json`` (per-stage ``median``/``p90``/``max`` seconds, ``fps``, peak memory, device, threads)."""
    if not isinstance(data, dict):
        raise DataFormatError(path, "profile must be a JSON object")
    stages_raw = data.get("stages", data.get("per_stage"))
    if not isinstance(stages_raw, dict) or not stages_raw:
        raise DataFormatError(path, "needs a non-empty 'stages' object {stage: {median, p90, max}}", field="stages")
    stages = []
    for name, st in stages_raw.items():
        if not isinstance(st, dict):
            raise DataFormatError(path, "must be an object with median/p90/max seconds", field=f"stages.{name}")
        w = f"stages.{name}."
        median = _number(st, ("median", "median_s", "p50"), path, w)
        if median is None:
            raise DataFormatError(path, "missing the median seconds", field=f"stages.{name}")
        mean = _number(st, ("mean", "mean_s"), path, w)
        p90 = _number(st, ("p90", "p90_s"), path, w)
        mx = _number(st, ("max", "max_s"), path, w)
        n = _number(st, ("n", "count"), path, w)
        stages.append(StageStats(str(name), int(n or 0), mean if mean is not None else median, median,
                                 p90 if p90 is not None else median, mx if mx is not None else median))
    stages.sort(key=lambda s: s.stage == "total")
    mem = _number(data, ("peak_memory_mb", "peak_rss_mb", "peak_mem_mb"), path, "")
    if mem is None:
        b = _number(data, ("peak_memory_bytes", "peak_rss_bytes", "peak_memory"), path, "")
        mem = b / 2**20 if b is not None else None
    threads = _number(data, ("threads", "num_threads", "torch_threads"), path, "")
    fps = _number(data, ("fps", "frames_per_second"), path, "")
    warm = _number(data, ("warmup", "warmup_frames", "warmup_skipped"), path, "")
    total = next((s for s in stages if s.stage == "total"), None)
    if fps is None and total is not None and total.mean > 0:
        fps = 1.0 / total.mean
    device = str(data.get("device") or "-")
    if device.startswith("cpu") and isinstance(data.get("cpu"), str) and data["cpu"]:
        device = f"{device} ({data['cpu']})"
    n = _number(data, ("n_frames",), path, "")
    counted = f"{int(n)} frames after {int(warm or 0)} warm-up" if n is not None else f"{int(warm or 0)} warm-up"
    return RuntimeProfile(stages=tuple(stages), fps=fps, peak_memory_mb=mem, device=device,
                          threads=int(threads) if threads is not None else None,
                          warmup_skipped=int(warm or 0), source=f"{path.name} ({counted})")


@dataclass(frozen=True)
class BenchmarkResult:
    """One pytest-benchmark measurement (seconds)."""

    name: str
    group: str
    median: float
    mean: float
    stddev: float
    min: float
    max: float
    rounds: int
    ops: float | None
    datetime: str
    machine: str
    commit: str
    file: str


def _benchmark_files(paths: Sequence[Path]) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        if p.is_file() and p.suffix == ".json":
            files.append(p)
        elif p.is_dir():
            files.extend(sorted(q for q in p.rglob("*.json") if q.is_file()))
    return files


def load_benchmarks(paths: Sequence[Path]) -> tuple[BenchmarkResult, ...]:
    """pytest-benchmark JSON results under ``paths`` (files or folders); the newest run of each benchmark."""
    latest: dict[str, BenchmarkResult] = {}
    for f in _benchmark_files(paths):
        data = read_json(f)
        if not isinstance(data, dict) or "benchmarks" not in data:
            continue
        if not isinstance(data["benchmarks"], list):
            raise DataFormatError(f, "'benchmarks' must be a list", field="benchmarks")
        when = str(data.get("datetime", ""))
        machine = str((data.get("machine_info") or {}).get("node", "")) if isinstance(data.get("machine_info"),
                                                                                       dict) else ""
        commit = str((data.get("commit_info") or {}).get("id", ""))[:10] if isinstance(data.get("commit_info"),
                                                                                      dict) else ""
        for i, b in enumerate(data["benchmarks"]):
            if not isinstance(b, dict) or not isinstance(b.get("stats"), dict):
                raise DataFormatError(f, "must be an object with 'stats'", field=f"benchmarks[{i}]")
            st = b["stats"]
            vals = {k: _number(st, (k,), f, f"benchmarks[{i}].stats.") for k in ("median", "mean", "stddev", "min",
                                                                                    "max", "ops", "rounds")}
            if vals["median"] is None:
                raise DataFormatError(f, "missing stats.median", field=f"benchmarks[{i}]")
            name = str(b.get("fullname") or b.get("name") or f"benchmark {i}")
            res = BenchmarkResult(name=name, group=str(b.get("group") or ""), median=vals["median"],
                                  mean=vals["mean"] or vals["median"], stddev=vals["stddev"] or 0.0,
                                  min=vals["min"] or vals["median"], max=vals["max"] or vals["median"],
                                  rounds=int(vals["rounds"] or 0), ops=vals["ops"], datetime=when, machine=machine,
                                  commit=commit, file=str(f))
            if name not in latest or latest[name].datetime <= when:
                latest[name] = res
    return tuple(sorted(latest.values(), key=lambda r: (r.group, r.name)))
