"""End to end: a fresh copy of the project runs the smoke experiment with DVC (`dvc exp run -S
experiment=smoke`, DVC's own Hydra composition), then `dvc repro` is a no-op; MLflow holds a run per
stage; the results follow the layout contract the report builder reads."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
COPY = ("dvc.yaml", "params.yaml", ".dvcignore", "conf", "repro", "methods")
RUNS = {"oracle-synth_smoke": "bop", "oracle-synth_nocs_smoke": "nocs"}
VARIANT = ("-S", "+method@methods.oracle_exact=oracle", "-S", "methods.oracle_exact.preset=exact",
           "-S", "+methods.oracle_exact.datasets=[synth_smoke]")
"""A named variant of the oracle restricted to one dataset, added on the command line."""
ALL_RUNS = [*RUNS, "registrar_gtmask-synth_smoke", "oracle_exact-synth_smoke", "oracle-synth_smoke_video",
            "registrar_gtmask-synth_smoke_video", "storm-synth_smoke", "storm-synth_smoke_video",
            "storm_notom-synth_smoke_video"]  # every (method entry, dataset)
TRAINED = ["storm-synth_smoke"]  # every train stage (synth_smoke_video trains from synth_smoke)

pytestmark = pytest.mark.slow


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update({"PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}", "DVC_NO_ANALYTICS": "1",
                "MLFLOW_DISABLE_TELEMETRY": "true", "EGL_PLATFORM": "surfaceless", "GIT_AUTHOR_NAME": "test",
                "GIT_AUTHOR_EMAIL": "test@example.com", "GIT_COMMITTER_NAME": "test",
                "GIT_COMMITTER_EMAIL": "test@example.com"})
    return env


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, check=False)
    assert res.returncode == 0, f"{' '.join(cmd)} failed:\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}"
    return res


def _dvc(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return _run([sys.executable, "-m", "dvc", *args], cwd)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A fresh git + DVC project with the pipeline's files, after `dvc exp run -S experiment=smoke`."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    proj = tmp_path_factory.mktemp("project")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.nbi", "*.nbc")
    for name in COPY:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, proj / name, ignore=ignore)
        else:
            shutil.copy2(src, proj / name)
    (proj / ".gitignore").write_text("/datasets/\n/results/\n/reports/\n/artifacts/\n/mlflow.db\n/mlruns/\n"
                                     "__pycache__/\n")
    _run(["git", "init", "-q"], proj)
    _dvc("init", "-q", cwd=proj)
    shutil.copy2(ROOT / ".dvc" / "config", proj / ".dvc" / "config")
    _run(["git", "add", "-A"], proj)
    _run(["git", "commit", "-qm", "pipeline"], proj)
    t0 = time.monotonic()
    _dvc("exp", "run", "-S", "experiment=smoke", *VARIANT, cwd=proj)
    (proj / "pipeline_seconds.txt").write_text(f"{time.monotonic() - t0:.1f}\n")
    return proj


def test_smoke_pipeline_writes_the_results_layout(project):
    for key, fmt in RUNS.items():
        method, dataset = key.split("-", 1)
        out = project / "results" / method / dataset
        run = json.loads((out / "run.json").read_text())
        assert run["method"] == "oracle" and run["provenance"]["preset"] == "noisy"
        assert {"preset", "weights", "backbone", "notes", "label"} <= set(run["provenance"])
        assert run["capabilities"]["uses_ground_truth"] is True
        assert run["dataset"]["format"] == fmt and run["dataset"]["name"] == dataset
        assert run["n_frames"] > 0 and run["seconds"] >= 0 and run["machine"]
        assert (out / "timings.csv").read_text().startswith("scene_id,im_id,stage,seconds\n")
        profile = json.loads((out / "profile.json").read_text())
        assert {"median", "p90", "max"} <= set(profile["stages"]["total"])
        assert profile["frames_per_second"] > 0 and profile["peak_rss_mb"] > 0
        assert profile["device"] == "cpu" and isinstance(profile["threads"], int)
        metrics = json.loads((out / "metrics.json").read_text())
        if fmt == "bop":
            scores = json.loads((out / "scores_bop.json").read_text())
            for err in ("vsd", "mssd", "mspd"):
                assert 0.5 < scores[f"bop19_average_recall_{err}"] <= 1.0
            for k in ("recall_ad", "recall_add", "recall_adi", "recall_proj"):
                assert k in scores
            assert json.loads((out / "scores_coco_segm.json").read_text())["AP"] > 0.5
            assert metrics["bop19"]["bop19_average_recall"] == scores["bop19_average_recall"]
            assert (out / "estimates.csv").is_file() and not (out / "category.json").exists()
        else:
            scores = json.loads((out / "scores_nocs.json").read_text())
            assert scores["IoU50"] > 50 and metrics["nocs"]["IoU50"] == scores["IoU50"]
            assert (out / "category.json").is_file() and not (out / "estimates.csv").exists()
        assert sorted(p.name for p in (out / "shards").iterdir()) == ["scene_000001"]


def test_named_variant_runs_under_its_key_on_its_datasets_only(project):
    out = project / "results" / "oracle_exact" / "synth_smoke"
    run = json.loads((out / "run.json").read_text())
    assert (run["method"], run["method_class"], run["provenance"]["preset"]) == ("oracle_exact", "oracle", "exact")
    assert json.loads((out / "scores_bop.json").read_text())["bop19_average_recall"] == 1.0
    assert not (project / "results" / "oracle_exact" / "synth_nocs_smoke").exists()


def test_report_index_is_built(project):
    html = (project / "reports" / "index.html").read_text()
    assert "oracle" in html and "registrar_gtmask" in html
    for paper in ("STORM", "GS-Pose", "Co-op", "SeqPose"):
        assert paper in html, paper


def test_dvc_tracks_metrics_and_plots(project):
    shown = json.loads(_dvc("metrics", "show", "--json", cwd=project).stdout)
    files = next(iter(shown.values()))["data"]
    assert files["results/oracle/synth_smoke/metrics.json"]["data"]["bop19"]["bop19_average_recall"] > 0.5
    assert "nocs" in files["results/oracle/synth_nocs_smoke/metrics.json"]["data"]
    stages = _dvc("stage", "list", cwd=project).stdout
    for name in ("data@synth_smoke", "infer_segm@oracle-synth_smoke", "infer@oracle-synth_nocs_smoke",
                 "evaluate_segm@oracle-synth_smoke", "evaluate@oracle-synth_nocs_smoke",
                 "profile@oracle-synth_smoke", "report"):
        assert name in stages


def test_second_repro_is_a_quick_no_op(project):
    t0 = time.monotonic()
    res = _dvc("repro", cwd=project)
    elapsed = time.monotonic() - t0
    assert "Data and pipelines are up to date" in res.stdout, res.stdout
    assert elapsed < 10.0, f"no-op dvc repro took {elapsed:.1f} s"
    assert "Running stage" not in res.stdout


def test_mlflow_holds_a_run_per_stage_with_params_metrics_and_artifacts(project):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    exp = client.get_experiment_by_name("pose-repro/smoke")
    assert exp is not None
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    by_name = {r.info.run_name: r for r in runs}
    expected = ["data synth_smoke", "data synth_nocs_smoke", "report", *(f"train {k}" for k in TRAINED)]
    for key in ALL_RUNS:
        expected += [f"infer {key}", f"evaluate {key}", f"profile {key}"]
    assert sorted(expected) == sorted(by_name), sorted(by_name)
    for name in expected:
        r = by_name[name]
        assert r.info.status == "FINISHED", name
        assert r.data.params and r.data.metrics, name
        assert r.data.tags["stage"] == name.split()[0] and "git.commit" in r.data.tags, name
        assert client.list_artifacts(r.info.run_id), name
    infer = by_name["infer oracle-synth_smoke"]
    assert infer.data.params["method.preset"] == "noisy" and "dataset.hash" in infer.data.tags
    assert infer.data.metrics["n_frames"] > 0
    assert by_name["evaluate oracle-synth_smoke"].data.metrics["bop19.bop19_average_recall"] > 0.5
