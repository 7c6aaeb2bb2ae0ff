"""The inference runner: scene shards, resume after a failure or a SIGKILL, deterministic merge."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from repro.data import open_dataset
from repro.inference import (
    ESTIMATES,
    SEGMENTATION,
    TIMINGS,
    merge_shards,
    read_shard_record,
    run_fingerprint,
    run_inference,
    run_shards,
    shard_dir,
)
from repro.registry import create_method
from repro.results import read_timings_csv

NOISY = {"rot_noise_deg": 2.0, "trans_noise_mm": 4.0, "drop_prob": 0.05}
MERGED = (ESTIMATES, SEGMENTATION)


def two_scene_config():
    """A tiny synthetic BOP config: 2 test scenes x 2 images (about a second to generate)."""
    from repro.data.synth import get_preset
    from repro.data.synth.presets import OnboardingConfig, SplitConfig, VideoConfig

    return replace(get_preset("smoke"), name="two", objects=("mug", "soda_can", "block"), width=160, height=120,
                   test=SplitConfig(2, 2, n_objects=(2, 3), n_distractors=(0, 1)),
                   train=SplitConfig(1, 1, n_objects=(2, 2), n_distractors=(0, 0)),
                   video=VideoConfig(1, 2, n_objects=(2, 2), n_distractors=(0, 0)),
                   onboarding=OnboardingConfig(n_views=2, n_static=1))


def make_two_scene_dataset(path: Path) -> Path:
    from repro.data.synth import generate_bop_dataset

    os.environ.setdefault("EGL_PLATFORM", "surfaceless")
    generate_bop_dataset(path, two_scene_config(), seed=0, progress=False)
    return path


@pytest.fixture(scope="module")
def two_scenes(tmp_path_factory) -> Path:
    return make_two_scene_dataset(tmp_path_factory.mktemp("data") / "two")


def zero_clock() -> float:
    return 0.0


class FailingDataset:
    """Delegates to a dataset but raises after ``after`` frames (a crash in the middle of a run)."""

    def __init__(self, inner, after: int) -> None:
        self.inner, self.after, self.seen = inner, after, 0
        self.root, self.name, self.format = inner.root, inner.name, inner.format
        self.split = inner.split

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def iter_frames(self, scene_ids: Sequence[int] | None = None, **kw) -> Iterator:
        for item in self.inner.iter_frames(scene_ids, **kw):
            if self.seen >= self.after:
                raise RuntimeError("simulated crash")
            self.seen += 1
            yield item


def _oracle():
    return create_method("oracle", NOISY, seed=3)


def _timing_keys(path: Path) -> list[tuple[int, int, str]]:
    return [(r.scene_id, r.im_id, r.stage) for r in read_timings_csv(path)]


def test_resume_after_a_crash_is_byte_identical(two_scenes, tmp_path):
    ds = open_dataset(two_scenes)
    ref = run_inference(_oracle(), ds, tmp_path / "ref", clock=zero_clock, progress=False)
    assert ref.n_frames == 4 and ref.shards_run == 2
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_inference(_oracle(), FailingDataset(ds, after=3), tmp_path / "run", clock=zero_clock, progress=False)
    out = tmp_path / "run"
    assert read_shard_record(out, 1) is not None and read_shard_record(out, 2) is None
    assert not (out / ESTIMATES).exists()
    res = run_inference(_oracle(), ds, out, clock=zero_clock, progress=False)
    assert (res.shards_reused, res.shards_run, res.n_frames) == (1, 1, 4)
    for name in MERGED:
        assert (out / name).read_bytes() == (tmp_path / "ref" / name).read_bytes(), name
    assert _timing_keys(out / TIMINGS) == _timing_keys(tmp_path / "ref" / TIMINGS)
    run = json.loads((out / "run.json").read_text())
    assert run["n_frames"] == 4 and run["scenes"] == [1, 2] and run["fingerprint"] == ref_fp(ds)


def ref_fp(ds) -> str:
    return run_fingerprint(_oracle(), ds)


def test_changed_config_or_no_resume_recomputes(two_scenes, tmp_path):
    ds = open_dataset(two_scenes)
    run_inference(_oracle(), ds, tmp_path, progress=False)
    again = run_inference(_oracle(), ds, tmp_path, progress=False)
    assert (again.shards_run, again.shards_reused) == (0, 2)
    other = create_method("oracle", {**NOISY, "drop_prob": 0.5}, seed=3)
    assert run_fingerprint(other, ds) != run_fingerprint(_oracle(), ds)
    assert run_inference(other, ds, tmp_path, progress=False).shards_run == 2
    assert run_inference(other, ds, tmp_path, progress=False, resume=False).shards_run == 2


def test_merge_order_does_not_depend_on_shard_order(two_scenes, tmp_path):
    ds = open_dataset(two_scenes)
    ref = tmp_path / "ref"
    run_inference(_oracle(), ds, ref, clock=zero_clock, progress=False)
    fp = run_fingerprint(_oracle(), ds)
    records, _ = run_shards(_oracle(), ds, tmp_path / "rev", [2, 1], fingerprint=fp, clock=zero_clock, progress=False)
    merge_shards(tmp_path / "rev", sorted(records, key=lambda r: r.scene_id))
    for name in MERGED:
        assert (tmp_path / "rev" / name).read_bytes() == (ref / name).read_bytes()


def test_max_frames_caps_frames_across_scenes(two_scenes, tmp_path):
    ds = open_dataset(two_scenes)
    res = run_inference(_oracle(), ds, tmp_path, max_frames=3, progress=False)
    assert res.n_frames == 3
    assert [read_shard_record(tmp_path, s).n_frames for s in (1, 2)] == [2, 1]
    assert {r.scene_id for r in read_timings_csv(tmp_path / TIMINGS)} == {1, 2}


_KILL_SCRIPT = """
import sys, time
from pathlib import Path
from repro.data import open_dataset
from repro.inference import run_inference
from repro.registry import create_method

ds, out, marker = open_dataset(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])

class Stalling:
    def __init__(self, inner):
        self.inner = inner
        self.root, self.name, self.format, self.split = inner.root, inner.name, inner.format, inner.split
    def __getattr__(self, name):
        return getattr(self.inner, name)
    def iter_frames(self, scene_ids=None, **kw):
        for frame, targets in self.inner.iter_frames(scene_ids, **kw):
            if frame.scene_id == 2:
                marker.write_text("stalled")
                time.sleep(600)
            yield frame, targets

method = create_method("oracle", {"rot_noise_deg": 2.0, "trans_noise_mm": 4.0, "drop_prob": 0.05}, seed=3)
run_inference(method, Stalling(ds), out, clock=lambda: 0.0, progress=False)
"""


def test_sigkilled_run_resumes_without_redoing_finished_shards(two_scenes, tmp_path):
    from repro.metrics.bop19 import evaluate_bop

    out, marker = tmp_path / "run", tmp_path / "stalled"
    proc = subprocess.Popen([sys.executable, "-c", _KILL_SCRIPT, str(two_scenes), str(out), str(marker)])
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert proc.poll() is None, "the run ended before it stalled"
            assert time.monotonic() < deadline, "the run did not reach scene 2"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    first = read_shard_record(out, 1)
    assert first is not None and read_shard_record(out, 2) is None
    done_mtime = (shard_dir(out, 1) / "done.json").stat().st_mtime_ns
    ds = open_dataset(two_scenes)
    res = run_inference(_oracle(), ds, out, clock=zero_clock, progress=False)
    assert (res.shards_reused, res.shards_run) == (1, 1)
    assert (shard_dir(out, 1) / "done.json").stat().st_mtime_ns == done_mtime
    ref = tmp_path / "ref"
    run_inference(_oracle(), ds, ref, clock=zero_clock, progress=False)
    for name in MERGED:
        assert (out / name).read_bytes() == (ref / name).read_bytes()
    scores = [evaluate_bop(two_scenes, d / ESTIMATES, errors="mssd,mspd,ad", progress=False) for d in (out, ref)]
    for s in scores:
        s.pop("eval_time_s")
    assert scores[0] == scores[1]
