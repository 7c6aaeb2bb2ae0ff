"""MLflow tracking of stage runs (SQLite store) and the `repro ui` server."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from repro.tracking import TrackingConfig, flatten, stage_run, tracking_uri


def test_uri_defaults_to_the_project_sqlite_file_and_env_wins(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking_uri(tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert tracking_uri(tmp_path, TrackingConfig(uri="sqlite:////x.db")) == "sqlite:////x.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////elsewhere.db")
    assert tracking_uri(tmp_path, TrackingConfig(uri="sqlite:////x.db")) == "sqlite:////elsewhere.db"


def test_flatten_nested_params():
    assert flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": {}}) == {"a.b": 1, "a.c.d": [1, 2], "e": {}}


def test_stage_run_logs_params_metrics_tags_and_artifacts(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "scores.json").write_text('{"AR": 0.5}\n')
    cfg = TrackingConfig(experiment="t")
    with stage_run(tmp_path, cfg, stage="evaluate", run_name="evaluate x", params={"method": {"name": "oracle"}},
                   tags={"method": "oracle"}, dataset_hash="abc") as run:
        run.log_metrics({"bop19": {"AR": 0.5, "nan": float("nan")}, "flag": True})
        run.log_artifact(tmp_path / "scores.json", "scores")
        run.log_artifact(tmp_path / "missing.json")
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "true"
    client = MlflowClient(tracking_uri(tmp_path))
    (r,) = client.search_runs([client.get_experiment_by_name("t").experiment_id])
    assert r.info.status == "FINISHED" and r.info.run_name == "evaluate x"
    assert r.data.params == {"method.name": "oracle"}
    assert r.data.metrics == {"bop19.AR": 0.5}
    for key in ("stage", "git.commit", "dataset.hash", "device", "version.mlflow", "version.numpy"):
        assert key in r.data.tags, key
    assert r.data.tags["stage"] == "evaluate" and r.data.tags["dataset.hash"] == "abc"
    assert [a.path for a in client.list_artifacts(r.info.run_id, "scores")] == ["scores/scores.json"]
    assert (tmp_path / "mlruns").is_dir()


def test_failed_stage_marks_the_run_failed_and_disabled_tracking_writes_nothing(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(ValueError), stage_run(tmp_path, TrackingConfig(experiment="t"), stage="infer", run_name="x",
                                              params={}):
        raise ValueError("boom")
    client = MlflowClient(tracking_uri(tmp_path))
    (r,) = client.search_runs([client.get_experiment_by_name("t").experiment_id])
    assert r.info.status == "FAILED"
    other = tmp_path / "off"
    other.mkdir()
    with stage_run(other, TrackingConfig(enabled=False), stage="infer", run_name="x", params={"a": 1}) as run:
        run.log_metrics({"m": 1.0})
        assert not run.active
    assert not (other / "mlflow.db").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
def test_repro_ui_serves_the_rest_api_on_localhost_and_stops_its_process_group(tmp_path):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "config.yaml").write_text("defaults: []\n")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    log = (tmp_path / "ui.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "repro", "ui", "--port", str(port)], cwd=tmp_path, env=env,
                            stderr=log, start_new_session=True)
    pgid = None
    try:
        deadline, body = time.monotonic() + 90, None
        while pgid is None:
            assert time.monotonic() < deadline and proc.poll() is None, (tmp_path / "ui.log").read_text()
            m = re.search(r"server process group (\d+)", (tmp_path / "ui.log").read_text())
            pgid = int(m.group(1)) if m else None
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search?max_results=10"
        while body is None:
            assert proc.poll() is None, "repro ui exited early"
            assert time.monotonic() < deadline, "the MLflow server did not answer within 90 s"
            try:
                with urllib.request.urlopen(url, timeout=5) as resp:
                    body = json.loads(resp.read())
            except OSError:
                time.sleep(0.5)
        assert "experiments" in body
        assert (tmp_path / "mlflow.db").is_file()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        deadline = time.monotonic() + 20
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _group_alive(pgid), "the server's process group outlived repro ui"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        if pgid is not None and _group_alive(pgid):
            os.killpg(pgid, signal.SIGKILL)
        log.close()


def test_repro_ui_rejects_a_bad_port():
    from click.testing import CliRunner

    from repro.cli import cli

    res = CliRunner().invoke(cli, ["ui", "--port", "0"])
    assert res.exit_code == 2 and "--port" in res.stderr


def test_artifact_upload_can_be_switched_off(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with stage_run(tmp_path, TrackingConfig(experiment="t", log_artifacts=False), stage="report", run_name="r",
                   params={}) as run:
        run.log_artifact(Path(__file__))
        assert run.active
    assert MlflowClient(tracking_uri(tmp_path)).list_artifacts(run.run_id) == []
