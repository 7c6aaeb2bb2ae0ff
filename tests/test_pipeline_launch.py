"""Scale-out through Hydra launchers: shards launched as jobs merge to the single-process result."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from test_inference_resume import make_two_scene_dataset

from repro.inference import ESTIMATES, SEGMENTATION
from repro.results import read_bop_csv, read_coco_results
from repro.stages.app import StageContext
from repro.stages.config import compose, to_plain

ROOT = Path(__file__).resolve().parent.parent

needs = pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in ("hydra_plugins.hydra_submitit_launcher",
                                                  "hydra_plugins.hydra_joblib_launcher")),
    reason="hydra-submitit-launcher / hydra-joblib-launcher not installed")


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> tuple[Path, Path]:
    """(project folder for results, two-scene dataset)."""
    base = tmp_path_factory.mktemp("proj")
    return base, make_two_scene_dataset(base / "datasets" / "two")


def stage_cfg(dataset: Path, launcher: str, results: str = "results"):
    cfg = to_plain(compose(["tracking=none", f"launcher={launcher}", f"paths.results={results}"], root=ROOT))
    cfg.pop("pipeline")
    cfg["datasets"]["two"] = {"name": "two", "format": "bop", "root": str(dataset), "split": "test",
                              "train_split": "train_pbr", "synth": None}
    cfg["method"], cfg["dataset"] = "oracle", "two"
    cfg["infer"]["progress"] = False
    return OmegaConf.create(cfg)


def _rows(path: Path) -> list[tuple]:
    return [(r.scene_id, r.im_id, r.obj_id, r.score, r.R.tolist(), r.t.tolist()) for r in read_bop_csv(path)]


def _segm(path: Path) -> list[dict]:
    out = []
    for r in read_coco_results(path):
        d = r.to_json()
        d.pop("time")
        out.append(d)
    return out


@needs
def test_submitit_local_two_shard_inference_equals_single_process(project):
    from repro.stages.infer import infer

    root, dataset = project
    local = infer(StageContext("infer", stage_cfg(dataset, "local", "results_local"), root))
    launched = infer(StageContext("infer", stage_cfg(dataset, "submitit_local", "results_submitit"), root))
    assert launched["shards_run"] == 2 and launched["n_frames"] == local["n_frames"] == 4
    a, b = root / "results_local" / "oracle" / "two", root / "results_submitit" / "oracle" / "two"
    assert _rows(a / ESTIMATES) == _rows(b / ESTIMATES)
    assert _segm(a / SEGMENTATION) == _segm(b / SEGMENTATION)
    assert any((root / "artifacts" / "launch" / "infer" / "oracle" / "two" / "jobs" / ".submitit").iterdir())
    again = infer(StageContext("infer", stage_cfg(dataset, "submitit_local", "results_submitit"), root))
    assert (again["shards_run"], again["shards_reused"]) == (0, 2)


@needs
def test_joblib_sharded_evaluation_equals_single_process(project):
    from repro.stages.evaluate import evaluate
    from repro.stages.infer import infer

    root, dataset = project
    infer(StageContext("infer", stage_cfg(dataset, "local", "results_eval"), root))
    out = root / "results_eval" / "oracle" / "two"
    evaluate(StageContext("evaluate", stage_cfg(dataset, "local", "results_eval"), root))
    local = json.loads((out / "scores_bop.json").read_text())
    summary = evaluate(StageContext("evaluate", stage_cfg(dataset, "joblib", "results_eval"), root))
    sharded = json.loads((out / "scores_bop.json").read_text())
    assert sorted((out / "shards").glob("scene_*/eval_bop.npz"))
    for s in (local, sharded):
        s.pop("eval_time_s")
    assert sharded == local
    assert summary["bop19"]["bop19_average_recall"] == local["bop19_average_recall"]
    assert "coco_segm" in summary and (out / "scores_coco_segm.json").is_file()


def test_stage_runs_directly_with_hydra_overrides(project, tmp_path):
    """`python -m repro.stages.infer method=... dataset=...` composes conf/ (here a copy with one more
    dataset config) and applies method.* overrides on top of the experiment's settings."""
    import shutil
    import subprocess
    import sys

    dataset = project[1]
    proj = tmp_path / "proj"
    shutil.copytree(ROOT / "conf", proj / "conf")
    (proj / "conf" / "dataset" / "two.yaml").write_text(
        f"name: two\nformat: bop\nroot: {dataset}\nsplit: test\ntrain_split: train_pbr\nsynth: null\n")
    cmd = [sys.executable, "-m", "repro.stages.infer", "method=oracle", "dataset=two", "tracking=none",
           "method.preset=exact", "method.params.drop_prob=1.0", "infer.progress=false"]
    res = subprocess.run(cmd, cwd=proj, capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    run = json.loads((proj / "results" / "oracle" / "two" / "run.json").read_text())
    assert run["preset"] == "exact" and run["params"]["drop_prob"] == 1.0
    assert run["n_frames"] == 4 and run["n_estimates"] == 0
    assert not (proj / "outputs").exists() and not (proj / ".hydra").exists()
