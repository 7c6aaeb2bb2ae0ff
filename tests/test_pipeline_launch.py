"""Scale-out through Hydra launchers: shards launched as jobs merge to the single-process result."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import replace
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


def _trained_oracle_class():
    from methods.baselines.oracle import OracleMethod

    class TrainedOracle(OracleMethod):
        """The oracle as a trainable method: its checkpoint holds a count and training-time scores."""

        name = "trained_oracle"
        capabilities = replace(OracleMethod.capabilities, trainable=True)

        def fit(self, train_data, cfg=None):
            self.n_scenes = len(train_data.scene_ids())

        def save(self, directory):
            d = Path(directory)
            (d / "weights.json").write_text(json.dumps({"n_scenes": self.n_scenes}))
            (d / "scores_tom.json").write_text(json.dumps({"accuracy": 0.9, "variants": {"cosine": {"accuracy": 0.8}}}))
            (d / "scores_train.json").write_text(json.dumps({"loss": 0.5}))
            (d / "scores_bop.json").write_text("{}")  # an evaluation file name: never copied into results

        def load(self, directory):
            self.n_scenes = json.loads((Path(directory) / "weights.json").read_text())["n_scenes"]

    return TrainedOracle


@pytest.fixture()
def trained_oracle(monkeypatch):
    import repro.registry

    cls = _trained_oracle_class()
    real = repro.registry.get_method_class
    monkeypatch.setattr(repro.registry, "get_method_class", lambda n: cls if n == cls.name else real(n))
    return cls


def variants_cfg(dataset: Path, results: str) -> dict:
    """An experiment with named variants of the oracle (one trainable), the two-scene dataset, its
    video split (checkpoints from ``two``) and a copy restricted to scene 1 by a targets file."""
    cfg = to_plain(compose(["tracking=none", "launcher=local", f"paths.results={results}",
                            f"paths.checkpoints={results}_ckpt"], root=ROOT))
    cfg.pop("pipeline")
    two = {"name": "two", "format": "bop", "root": str(dataset), "split": "test", "train_split": "train_pbr",
           "synth": None}
    cfg["datasets"].update({
        "two": two, "two_video": {**two, "split": "video", "train_from": "two", "targets": "video_targets_bop19.json"},
        "two_scene1": {**two, "targets": "scene1_targets.json"}})
    oracle = cfg["methods"]["oracle"]
    cfg["methods"].update({
        "oracle_exact": {**oracle, "preset": "exact"},
        "learner": {**oracle, "name": "trained_oracle", "preset": "exact"},
        "learner_shared": {**oracle, "name": "trained_oracle", "preset": "noisy", "checkpoint_from": "learner"}})
    cfg["infer"]["progress"] = False
    cfg["eval"]["bop_errors"] = ["mssd", "mspd"]
    return cfg


def _ctx(stage: str, cfg: dict, root: Path, method: str, dataset: str) -> StageContext:
    return StageContext(stage, OmegaConf.create({**cfg, "method": method, "dataset": dataset}), root)


def test_variants_share_checkpoints_and_copy_training_scores(project, trained_oracle):
    from repro.stages.infer import infer
    from repro.stages.train import train

    root, dataset = project
    cfg = variants_cfg(dataset, "results_variants")
    results, ckpt = root / "results_variants", root / "results_variants_ckpt"
    assert infer(_ctx("infer", cfg, root, "oracle_exact", "two"))["n_frames"] == 4
    run = json.loads((results / "oracle_exact" / "two" / "run.json").read_text())
    assert (run["method"], run["method_class"], run["preset"]) == ("oracle_exact", "oracle", "exact")
    assert run["train_scores"] == [] and not (results / "oracle" / "two").exists()

    train(_ctx("train", cfg, root, "learner", "two"))
    assert json.loads((ckpt / "learner" / "two" / "weights.json").read_text()) == {"n_scenes": 1}
    with pytest.raises(ValueError, match="'learner_shared' trains nothing"):
        train(_ctx("train", cfg, root, "learner_shared", "two"))
    assert not (ckpt / "learner_shared").exists()

    out = results / "learner_shared" / "two"
    out.mkdir(parents=True)
    (out / "scores_stale.json").write_text("{}")  # left by an earlier run
    (out / "scores_bop.json").write_text('{"kept": true}')  # the evaluate stage's
    infer(_ctx("infer", cfg, root, "learner_shared", "two"))
    run = json.loads((out / "run.json").read_text())
    assert (run["method"], run["method_class"]) == ("learner_shared", "trained_oracle")
    assert run["checkpoint"] == str(ckpt / "learner" / "two")
    assert run["train_scores"] == ["scores_tom.json", "scores_train.json"]
    assert sorted(p.name for p in out.glob("scores_*.json")) == ["scores_bop.json", "scores_tom.json",
                                                                 "scores_train.json"]
    assert (out / "scores_tom.json").read_bytes() == (ckpt / "learner" / "two" / "scores_tom.json").read_bytes()
    assert json.loads((out / "scores_bop.json").read_text()) == {"kept": True}


def test_train_from_and_targets_restrict_what_runs(project, trained_oracle):
    from repro.stages.evaluate import evaluate
    from repro.stages.infer import infer
    from repro.stages.train import train

    root, dataset = project
    cfg = variants_cfg(dataset, "results_targets")
    ckpt = root / "results_targets_ckpt"
    with pytest.raises(ValueError, match=r"dataset 'two_video' trains nothing.*'two'"):
        train(_ctx("train", cfg, root, "learner", "two_video"))
    train(_ctx("train", cfg, root, "learner", "two"))
    assert sorted(p.name for p in ckpt.iterdir()) == ["learner"]
    video = infer(_ctx("infer", cfg, root, "learner", "two_video"))
    run = json.loads((root / "results_targets" / "learner" / "two_video" / "run.json").read_text())
    assert run["checkpoint"] == str(ckpt / "learner" / "two") and run["dataset"]["split"] == "video"
    assert video["n_frames"] == 2 and run["dataset"]["targets_file"] == "video_targets_bop19.json"

    targets = json.loads((dataset / "test_targets_bop19.json").read_text())
    (dataset / "scene1_targets.json").write_text(json.dumps([t for t in targets if t["scene_id"] == 1]))
    try:
        assert infer(_ctx("infer", cfg, root, "oracle_exact", "two_scene1"))["n_frames"] == 2
        evaluate(_ctx("evaluate", cfg, root, "oracle_exact", "two_scene1"))
        scores = json.loads((root / "results_targets" / "oracle_exact" / "two_scene1" / "scores_bop.json").read_text())
        assert scores["n_target_images"] == 2 and scores["bop19_average_recall_mssd"] == 1.0
        coco = json.loads((root / "results_targets" / "oracle_exact" / "two_scene1" / "scores_coco_segm.json")
                          .read_text())
        assert coco["AP"] > 0.9
    finally:
        (dataset / "scene1_targets.json").unlink()
