"""The pipeline's Hydra configuration: params.yaml is conf/ composed, the derived stage plan, stage selections."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from repro.interface import Capabilities, PoseMethod
from repro.registry import BUILTIN_METHODS
from repro.stages.compose import PLUGINS_PATH, compose_params_text
from repro.stages.config import compose, pipeline_plan, stage_pair

ROOT = Path(__file__).resolve().parent.parent


def test_params_yaml_is_the_composition_of_conf():
    assert (ROOT / "params.yaml").read_text(encoding="utf-8") == compose_params_text(root=ROOT), (
        "params.yaml is out of date with conf/: run `python -m repro.stages.compose`")


def test_default_experiment_runs_each_method_on_the_datasets_of_its_task():
    plan = yaml.safe_load((ROOT / "params.yaml").read_text())["pipeline"]
    assert set(plan["data"]) == {"synth_default", "synth_nocs_default"}
    assert plan["infer_segm"]["oracle-synth_default"]["predictions"] == "estimates.csv"
    assert plan["infer"]["oracle-synth_nocs_default"]["predictions"] == "category.json"
    assert plan["infer"]["oracle-synth_nocs_default"]["scores"] == "scores_nocs.json"
    assert set(plan["train"]) == {"storm-synth_default", "storm_nolang-synth_default", "storm_hsfa0-synth_default",
                                  "storm_hsfa7-synth_default"}  # synth_video trains from synth_default
    assert set(plan["runs"]) == {
        "oracle-synth_default", "oracle-synth_video", "oracle-synth_nocs_default", "registrar_gtmask-synth_default",
        "registrar_gtmask-synth_video", "storm-synth_default", "storm-synth_video", "storm_cosseg-synth_default",
        "storm_cosseg-synth_video", "storm_notom-synth_video", "storm_perframe-synth_video",
        "storm_unaligned-synth_default",
        "storm_cad-synth_default", "storm_nolang-synth_default", "storm_hsfa0-synth_default",
        "storm_hsfa7-synth_default"}  # instance level only: no category task
    assert plan["infer"]["registrar_gtmask-synth_default"]["predictions"] == "estimates.csv"
    assert plan["infer_segm"]["storm-synth_default"]["model"] == "artifacts/checkpoints/storm/synth_default"
    for shared in ("storm-synth_video", "storm_cosseg-synth_default", "storm_notom-synth_video",
                   "storm_perframe-synth_video"):
        assert plan["runs"][shared]["model"] == "artifacts/checkpoints/storm/synth_default"
    methods = yaml.safe_load((ROOT / "params.yaml").read_text())["methods"]
    assert methods["oracle"]["preset"] == "noisy"


def test_every_builtin_method_is_in_the_default_experiment_or_excluded_with_a_reason():
    cfg = compose(root=ROOT)
    listed = {str(entry.get("name") or key) for key, entry in cfg.methods.items()}  # registered classes
    excluded = dict(cfg.experiment.excluded_methods or {})
    missing = sorted(set(BUILTIN_METHODS) - listed - set(excluded))
    assert not missing, (f"registered methods {missing} are not in conf/experiment/default.yaml: add "
                         "`- /method@methods.NAME: NAME` to its defaults (and to smoke.yaml), or list them under "
                         "experiment.excluded_methods with a reason; then run `python -m repro.stages.compose`")
    assert all(isinstance(r, str) and r for r in excluded.values())


def _shape(plan: dict) -> dict:
    return {group: sorted((e["method"], e.get("predictions")) for e in entries.values())
            for group, entries in plan.items() if group != "data"}


def test_smoke_experiment_has_the_default_graph_on_smoke_data():
    default = pipeline_plan(compose(root=ROOT), ROOT)
    smoke_cfg = compose(["experiment=smoke"], root=ROOT)
    smoke = pipeline_plan(smoke_cfg, ROOT)
    smoke_shape, default_shape = _shape(smoke), _shape(default)
    for group, entries in smoke_shape.items():  # the smoke graph is a sub-graph of the default one
        assert set(entries) <= set(default_shape[group]), group
    classes = {str(e.get("name") or k) for k, e in smoke_cfg.methods.items()}
    assert set(BUILTIN_METHODS) <= classes
    assert {d["preset"] for d in smoke["data"].values()} == {"smoke"}
    assert {d["kind"] for d in smoke["data"].values()} == {d["kind"] for d in default["data"].values()}


class _CategoryOnly(PoseMethod):
    name = "cat_only"
    capabilities = Capabilities(tasks=("category",), outputs=frozenset({"category"}))

    def predict(self, frame, targets):
        raise AssertionError("the planner reads capabilities only; predict is never called")


class _Trainable(PoseMethod):
    name = "learner"
    capabilities = Capabilities(tasks=("instance",), outputs=frozenset({"pose"}), trainable=True)

    def predict(self, frame, targets):
        raise AssertionError("the planner reads capabilities only; predict is never called")


def _no_storm(entries: dict) -> set[str]:
    """Stage keys without the default experiment's STORM entries (these tests add their own methods)."""
    return {k for k in entries if not k.startswith("storm")}


def test_plan_runs_methods_on_datasets_of_their_task_and_trains_trainable_ones(monkeypatch):
    import repro.registry

    real = repro.registry.get_method_class
    fakes = {"cat_only": _CategoryOnly, "learner": _Trainable}
    monkeypatch.setattr(repro.registry, "get_method_class", lambda n: fakes[n] if n in fakes else real(n))
    cfg = compose(["+method@methods.cat_only=oracle", "methods.cat_only.name=cat_only",
                   "+method@methods.learner=oracle", "methods.learner.name=learner"], root=ROOT)
    plan = pipeline_plan(cfg, ROOT)
    assert _no_storm(plan["runs"]) == {"oracle-synth_default", "oracle-synth_nocs_default", "oracle-synth_video",
                                       "cat_only-synth_nocs_default", "learner-synth_default", "learner-synth_video",
                                       "registrar_gtmask-synth_default", "registrar_gtmask-synth_video"}
    assert plan["infer"]["learner-synth_default"]["model"] == "artifacts/checkpoints/learner/synth_default"
    assert plan["infer"]["learner-synth_default"]["predictions"] == "estimates.csv"
    ckpt = "artifacts/checkpoints/learner/synth_default"
    assert _no_storm(plan["train"]) == {"learner-synth_default"}
    assert plan["train"]["learner-synth_default"] == {
        "method": "learner", "dataset": "synth_default", "root": "datasets/synth_default",
        "code": plan["infer"]["learner-synth_default"]["code"], "checkpoint": ckpt}
    restricted = pipeline_plan(compose(["method=oracle", "dataset=synth_nocs_default"], root=ROOT), ROOT)
    assert set(restricted["runs"]) == {"oracle-synth_nocs_default"}
    assert set(restricted["data"]) == {"synth_nocs_default"}


def test_stage_selection_uses_the_experiment_settings_then_command_line_overrides():
    base = ["method=oracle", "dataset=synth_default"]
    method, dataset = stage_pair(compose(base, root=ROOT), base)
    assert method.preset == "noisy" and method.params["rot_noise_deg"] == 2.0
    assert dataset.root == "datasets/synth_default" and dataset.level == "instance"
    ov = [*base, "method.preset=exact", "dataset.split=test_other"]
    method, dataset = stage_pair(compose(ov, root=ROOT), ov)
    assert method.preset == "exact" and method.params["rot_noise_deg"] == 0.0 and dataset.split == "test_other"
    ov = ["method=registrar_gtmask", "dataset=synth_default"]
    method, _ = stage_pair(compose(ov, root=ROOT), ov)
    assert method.name == "registrar_gtmask"
    with pytest.raises(ValueError, match="say which method"):
        stage_pair(compose(["dataset=synth_default"], root=ROOT))


def test_launched_jobs_get_the_stage_settings_pinned():
    from omegaconf import OmegaConf

    from repro.stages.common import job_config, resolve_run

    ov = ["method=oracle", "dataset=synth_default", "method.preset=exact", "method.params.drop_prob=0.25"]
    run = resolve_run(compose(ov, root=ROOT), ROOT, ov)
    assert run.method.preset == "exact" and run.method.params["drop_prob"] == 0.25
    job = OmegaConf.create(job_config(compose(ov, root=ROOT), run))
    assert "pipeline" not in job and job.method == "oracle"
    assert resolve_run(job, ROOT) == run


def test_params_mode_selects_by_name(tmp_path):
    from repro.stages.app import load_params

    cfg = load_params(ROOT / "params.yaml", ["method=oracle", "dataset=synth_nocs_default", "seed=7"])
    method, dataset = stage_pair(cfg)
    assert (method.name, dataset.format, cfg.seed) == ("oracle", "nocs", 7)
    with pytest.raises(ValueError, match="key=value"):
        load_params(ROOT / "params.yaml", ["oops"])


def test_dvc_hydra_composition_finds_the_resolver_through_the_plugin(tmp_path):
    """What `dvc exp run -S ...` does, in a fresh process that never registered the resolver itself."""
    out = tmp_path / "params.yaml"
    code = textwrap.dedent(f"""
        from dvc.utils.hydra import compose_and_dump
        compose_and_dump({str(out)!r}, {str(ROOT / 'conf')!r}, None, "config", {str(PLUGINS_PATH)!r},
                         ["experiment=smoke", "methods.oracle.preset=exact"])
    """)
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
    params = yaml.safe_load(out.read_text())
    assert set(params["pipeline"]["data"]) == {"synth_smoke", "synth_nocs_smoke"}
    assert params["methods"]["oracle"]["preset"] == "exact"


def _select(cfg, method: str, dataset: str):
    """The config as a stage run in --params mode sees it: ``method`` / ``dataset`` name entries."""
    from omegaconf import OmegaConf

    OmegaConf.set_struct(cfg, False)
    cfg.method, cfg.dataset = method, dataset
    return cfg


def _with_learner(monkeypatch):
    import repro.registry

    real = repro.registry.get_method_class
    monkeypatch.setattr(repro.registry, "get_method_class", lambda n: _Trainable if n == "learner" else real(n))


def test_named_variants_run_the_registered_class_under_their_key():
    from repro.stages.config import method_entries

    cfg = compose(["+method@methods.oracle_exact=oracle", "methods.oracle_exact.preset=exact"], root=ROOT)
    entries = method_entries(cfg)
    assert (entries["oracle_exact"].method_class, entries["oracle_exact"].preset) == ("oracle", "exact")
    assert entries["oracle"].method_class == "oracle" and entries["oracle"].preset == "noisy"
    plan = pipeline_plan(cfg, ROOT)
    run = plan["infer_segm"]["oracle_exact-synth_default"]
    assert (run["method"], run["out"]) == ("oracle_exact", "results/oracle_exact/synth_default")
    assert "oracle_exact-synth_nocs_default" in plan["runs"]
    method, _ = stage_pair(_select(cfg, "oracle_exact", "synth_default"))
    assert (method.name, method.method_class, method.params["rot_noise_deg"]) == ("oracle_exact", "oracle", 0.0)


def test_entry_datasets_restrict_its_runs_and_must_be_in_the_experiment():
    base = ["+method@methods.oracle_exact=oracle"]
    plan = pipeline_plan(compose([*base, "+methods.oracle_exact.datasets=[synth_nocs_default]"], root=ROOT), ROOT)
    assert [k for k in plan["runs"] if k.startswith("oracle_exact")] == ["oracle_exact-synth_nocs_default"]
    assert "oracle-synth_default" in plan["runs"]
    with pytest.raises(ValueError, match=r"method entry 'oracle_exact': datasets lmo not in the experiment"):
        pipeline_plan(compose([*base, "+methods.oracle_exact.datasets=[lmo]"], root=ROOT), ROOT)


def test_checkpoint_from_shares_the_other_entrys_checkpoint(monkeypatch):
    _with_learner(monkeypatch)
    base = ["+method@methods.learner=oracle", "methods.learner.name=learner",
            "+method@methods.learner_fast=oracle", "methods.learner_fast.name=learner"]
    plan = pipeline_plan(compose([*base, "+methods.learner_fast.checkpoint_from=learner"], root=ROOT), ROOT)
    assert _no_storm(plan["train"]) == {"learner-synth_default"}
    assert plan["infer"]["learner_fast-synth_default"]["model"] == "artifacts/checkpoints/learner/synth_default"
    assert plan["infer"]["learner_fast-synth_default"]["out"] == "results/learner_fast/synth_default"
    only_fast = _select(compose([*base, "+methods.learner_fast.checkpoint_from=learner"], root=ROOT),
                        "learner_fast", "synth_default")
    alone = pipeline_plan(only_fast, ROOT)
    assert set(alone["runs"]) == {"learner_fast-synth_default"}
    assert set(alone["train"]) == {"learner-synth_default"}  # the checkpoint it loads is still made
    with pytest.raises(ValueError, match=r"'learner_fast': checkpoint_from 'nobody' is not a method entry"):
        pipeline_plan(compose([*base, "+methods.learner_fast.checkpoint_from=nobody"], root=ROOT), ROOT)
    with pytest.raises(ValueError, match=r"'learner_fast': checkpoint_from 'oracle' is not trainable"):
        pipeline_plan(compose([*base, "+methods.learner_fast.checkpoint_from=oracle"], root=ROOT), ROOT)


def test_train_from_dataset_uses_the_other_datasets_checkpoint(monkeypatch):
    _with_learner(monkeypatch)
    base = ["+method@methods.learner=oracle", "methods.learner.name=learner"]
    plan = pipeline_plan(compose(base, root=ROOT), ROOT)
    assert _no_storm(plan["train"]) == {"learner-synth_default"}
    video = plan["infer"]["learner-synth_video"]
    assert video["model"] == "artifacts/checkpoints/learner/synth_default"
    assert video["root"] == "datasets/synth_default" and video["out"] == "results/learner/synth_video"
    assert set(plan["data"]) == {"synth_default", "synth_nocs_default"}  # the video split is not generated
    only = pipeline_plan(compose([*base, "dataset=synth_video"], root=ROOT), ROOT)
    assert _no_storm(only["train"]) == {"learner-synth_default"} and set(only["data"]) == {"synth_default"}
    assert _no_storm(only["runs"]) == {"learner-synth_video", "oracle-synth_video", "registrar_gtmask-synth_video"}
    with pytest.raises(ValueError, match=r"dataset 'synth_video': train_from 'lmo' is not a dataset"):
        pipeline_plan(compose([*base, "datasets.synth_video.train_from=lmo"], root=ROOT), ROOT)


def test_dataset_targets_and_checkpoint_paths_resolve_per_run(monkeypatch):
    from repro.stages.common import resolve_run

    _with_learner(monkeypatch)
    ov = ["+method@methods.learner=oracle", "methods.learner.name=learner",
          "+method@methods.learner_fast=oracle", "methods.learner_fast.name=learner",
          "+methods.learner_fast.checkpoint_from=learner"]
    cfg = _select(compose(ov, root=ROOT), "learner_fast", "synth_video")
    run = resolve_run(cfg, ROOT)
    assert run.checkpoint_dir == ROOT / "artifacts" / "checkpoints" / "learner" / "synth_default"
    assert run.results_dir == ROOT / "results" / "learner_fast" / "synth_video"
    assert run.dataset.targets == "video_drop_targets_bop19.json" and run.dataset.train_from == "synth_default"
    assert run.tags() == {"method": "learner_fast", "method_class": "learner", "dataset": "synth_video"}
    with pytest.raises(ValueError, match="BOP feature"):
        cfg.datasets.synth_nocs_default.targets = "x.json"
        cfg.dataset = "synth_nocs_default"
        resolve_run(cfg, ROOT)
