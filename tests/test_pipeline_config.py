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
    assert plan["train"] == {}
    assert set(plan["runs"]) == {"oracle-synth_default", "oracle-synth_nocs_default",
                                 "registrar_gtmask-synth_default"}  # instance level only: no category task
    assert plan["infer"]["registrar_gtmask-synth_default"]["predictions"] == "estimates.csv"
    methods = yaml.safe_load((ROOT / "params.yaml").read_text())["methods"]
    assert methods["oracle"]["preset"] == "noisy"


def test_every_builtin_method_is_in_the_default_experiment_or_excluded_with_a_reason():
    cfg = compose(root=ROOT)
    listed = set(cfg.methods)
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
    assert _shape(smoke) == _shape(default)
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


def test_plan_runs_methods_on_datasets_of_their_task_and_trains_trainable_ones(monkeypatch):
    import repro.registry

    real = repro.registry.get_method_class
    fakes = {"cat_only": _CategoryOnly, "learner": _Trainable}
    monkeypatch.setattr(repro.registry, "get_method_class", lambda n: fakes[n] if n in fakes else real(n))
    cfg = compose(["+method@methods.cat_only=oracle", "methods.cat_only.name=cat_only",
                   "+method@methods.learner=oracle", "methods.learner.name=learner"], root=ROOT)
    plan = pipeline_plan(cfg, ROOT)
    assert set(plan["runs"]) == {"oracle-synth_default", "oracle-synth_nocs_default", "cat_only-synth_nocs_default",
                                 "learner-synth_default", "registrar_gtmask-synth_default"}
    assert plan["infer"]["learner-synth_default"]["model"] == "artifacts/checkpoints/learner/synth_default"
    assert plan["infer"]["learner-synth_default"]["predictions"] == "estimates.csv"
    ckpt = "artifacts/checkpoints/learner/synth_default"
    assert plan["train"] == {"learner-synth_default": {
        "method": "learner", "dataset": "synth_default", "root": "datasets/synth_default",
        "code": plan["infer"]["learner-synth_default"]["code"], "checkpoint": ckpt}}
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
