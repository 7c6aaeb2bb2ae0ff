"""MLflow tracking of pipeline stages, and the ``repro ui`` server.

Every stage run (data, train, infer, evaluate, profile, report) is one MLflow run with the
resolved config as params, its numbers as metrics, its outputs as artifacts and tags saying what
made it (git commit, dataset content hash, package versions, device). The store is a SQLite file
in the project (``mlflow.db``; MLflow's file store is deprecated) unless ``MLFLOW_TRACKING_URI``
says otherwise. Runs are written through an ``MlflowClient`` on an explicit URI: no global MLflow
state, no active-run stack.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_DB = "mlflow.db"
TELEMETRY_ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "DVC_NO_ANALYTICS": "1"}
VERSIONED_PACKAGES = ("pose-repro", "numpy", "torch", "mlflow", "dvc", "hydra-core", "omegaconf",
                      "opencv-python-headless")
_MAX_PARAM_LEN = 6000


def quiet_telemetry(env: dict[str, str] | os._Environ[str] | None = None) -> None:
    """Switch MLflow telemetry and DVC analytics off in ``env`` (default: this process)."""
    target = os.environ if env is None else env
    target.update(TELEMETRY_ENV)


@dataclass(frozen=True)
class TrackingConfig:
    """``conf/tracking/*.yaml``: whether to track, the store URI (None: the project's SQLite file),
    the MLflow experiment name, where new experiments keep artifacts, whether to upload files."""

    enabled: bool = True
    uri: str | None = None
    experiment: str = "pose-repro"
    artifact_root: str = "mlruns"
    log_artifacts: bool = True

    @classmethod
    def from_mapping(cls, d: Mapping[str, Any] | None) -> TrackingConfig:
        d = dict(d or {})
        return cls(enabled=bool(d.get("enabled", True)), uri=d.get("uri"), experiment=str(d.get("experiment",
                   "pose-repro")), artifact_root=str(d.get("artifact_root", "mlruns")),
                   log_artifacts=bool(d.get("log_artifacts", True)))


def tracking_uri(root: Path, cfg: TrackingConfig | None = None) -> str:
    """``MLFLOW_TRACKING_URI`` when set, else the config's ``uri``, else ``sqlite:///<root>/mlflow.db``."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    if cfg is not None and cfg.uri:
        return cfg.uri
    return f"sqlite:///{(Path(root) / DEFAULT_DB).resolve()}"


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as ``a.b.c`` keys (lists stay values)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def git_commit(root: Path) -> tuple[str, bool | None]:
    """(commit, dirty) of the project checkout; ("unknown", None) outside git."""
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown", None
    return commit, bool(status.strip())


def package_versions(names: tuple[str, ...] = VERSIONED_PACKAGES) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for n in names:
        try:
            out[n] = version(n)
        except PackageNotFoundError:
            out[n] = "not installed"
    return out


def device_info() -> dict[str, Any]:
    """The compute device (CUDA when torch is loaded and sees a GPU, else CPU) and CPU facts."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info: dict[str, Any] = {"device": "cpu", "cpu": cpu, "cpu_count": os.cpu_count() or 1}
    torch = sys.modules.get("torch")
    if torch is not None:
        info["torch_threads"] = int(torch.get_num_threads())
        if torch.cuda.is_available():
            info["device"] = f"cuda:{torch.cuda.get_device_name(0)}"
    return info


def provenance_tags(root: Path, *, dataset_hash: str | None = None) -> dict[str, str]:
    """Tags every stage run carries: git commit, dataset content hash, package versions, device."""
    commit, dirty = git_commit(root)
    dev = device_info()
    tags = {"git.commit": commit, "git.dirty": str(dirty).lower() if dirty is not None else "unknown",
            "device": dev["device"], "cpu": str(dev["cpu"]), "machine": platform.node(),
            "python": platform.python_version(),
            **{f"version.{k}": v for k, v in package_versions().items()}}
    if dataset_hash:
        tags["dataset.hash"] = dataset_hash
    return tags


class StageRun:
    """One MLflow run; methods are no-ops when tracking is off (``client`` None)."""

    def __init__(self, client: Any | None, run_id: str | None, *, log_files: bool = True) -> None:
        self.client = client
        self.run_id = run_id
        self.log_files = log_files

    @property
    def active(self) -> bool:
        return self.client is not None

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        if not self.active:
            return
        items = [Param(k, str(v)[:_MAX_PARAM_LEN]) for k, v in sorted(flatten(params).items())]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i:i + 100])

    def log_metrics(self, metrics: Mapping[str, Any], step: int = 0) -> None:
        """Finite numbers only (nested mappings flattened; anything else skipped)."""
        from mlflow.entities import Metric

        if not self.active:
            return
        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in sorted(flatten(metrics).items())
                 if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)]
        for i in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[i:i + 1000])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        if self.active and tags:
            self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Upload a file or a folder (skipped when absent or when artifact logging is off)."""
        path = Path(path)
        if not (self.active and self.log_files and path.exists()):
            return
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path)
        else:
            self.client.log_artifact(self.run_id, str(path), artifact_path)


@contextlib.contextmanager
def stage_run(root: Path, cfg: TrackingConfig, *, stage: str, run_name: str, params: Mapping[str, Any],
              tags: Mapping[str, Any] | None = None, dataset_hash: str | None = None) -> Iterator[StageRun]:
    """A tracked run around a stage: params and provenance tags first, FINISHED or FAILED at the end.

    Tracking failures never fail the stage: they are logged and the run continues untracked.
    """
    quiet_telemetry()
    if not cfg.enabled:
        yield StageRun(None, None)
        return
    try:
        from mlflow.tracking import MlflowClient

        uri = tracking_uri(root, cfg)
        client = MlflowClient(tracking_uri=uri)
        exp = client.get_experiment_by_name(cfg.experiment)
        exp_id = exp.experiment_id if exp is not None else client.create_experiment(
            cfg.experiment, artifact_location=(Path(root) / cfg.artifact_root).resolve().as_uri())
        all_tags = {**provenance_tags(root, dataset_hash=dataset_hash), "stage": stage, **(tags or {})}
        run = client.create_run(exp_id, run_name=run_name, tags={k: str(v) for k, v in all_tags.items()})
        tracked = StageRun(client, run.info.run_id, log_files=cfg.log_artifacts)
        tracked.log_params(params)
        log.info("MLflow run %s (%s) in %s", run.info.run_id, run_name, uri)
    except Exception as exc:  # tracking must not break the pipeline
        log.warning("MLflow tracking disabled for this stage: %s: %s", type(exc).__name__, exc)
        yield StageRun(None, None)
        return
    status = "FAILED"
    try:
        yield tracked
        status = "FINISHED"
    finally:
        try:
            client.set_terminated(tracked.run_id, status=status)
        except Exception as exc:
            log.warning("MLflow: could not close run %s: %s", tracked.run_id, exc)


# --------------------------------------------------------------------------- repro ui


def _stop_group(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """Terminate the server's whole process group (SIGTERM, then SIGKILL after ``timeout``)."""
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        return
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            proc.poll()
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


def serve_ui(root: Path, *, port: int = 5000, cfg: TrackingConfig | None = None) -> int:
    """Run ``mlflow server`` on 127.0.0.1 for the project's store until it exits or we are
    signalled (SIGINT, SIGTERM, SIGHUP); its whole process group is stopped on the way out.
    Returns 0 when stopped by a signal, else the server's exit code."""
    cfg = cfg or TrackingConfig()
    env = dict(os.environ)
    quiet_telemetry(env)
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    artifacts = (Path(root) / cfg.artifact_root).resolve()
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", tracking_uri(root, cfg),
           "--default-artifact-root", artifacts.as_uri(), "--host", "127.0.0.1", "--port", str(port),
           "--workers", "1"]
    proc = subprocess.Popen(cmd, env=env, cwd=root, start_new_session=True)
    log.warning("MLflow UI at http://127.0.0.1:%d (server process group %d); Ctrl-C stops it", port, proc.pid)
    stop = {"signal": 0}

    def _on_signal(signum: int, _frame: Any) -> None:
        stop["signal"] = signum

    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        while proc.poll() is None and not stop["signal"]:
            time.sleep(0.2)
    finally:
        _stop_group(proc)
        for s, h in previous.items():
            signal.signal(s, h)
    return 0 if stop["signal"] else (proc.returncode or 0)
