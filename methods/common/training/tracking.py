"""Metric tracking behind a small protocol: a no-op default and an MLflow implementation.

``MlflowLogger`` talks to an explicit tracking URI through ``MlflowClient`` (no ``mlflow.set_tracking_uri``,
no active-run stack), so several loggers, stores and runs can coexist in one process. Use a SQLite store
(``sqlite:///path/mlflow.db``); MLflow's file store is deprecated. Metrics are buffered and written in
batches; ``flush`` is called by the trainer at every checkpoint, so what the store holds matches what
a resumed run will not log again.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Protocol, runtime_checkable

log = logging.getLogger(__name__)

_MAX_PARAM_LEN = 6000
_MAX_BATCH = 1000


@runtime_checkable
class MetricsLogger(Protocol):
    """Where training curves go: scalar metrics per step, run parameters once, flush, close."""

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None: ...

    def log_params(self, params: Mapping[str, Any]) -> None: ...

    def flush(self) -> None: ...

    def close(self, status: str = "FINISHED") -> None: ...


class NullLogger:
    """Discards everything (the default tracker)."""

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        return None

    def log_params(self, params: Mapping[str, Any]) -> None:
        return None

    def flush(self) -> None:
        return None

    def close(self, status: str = "FINISHED") -> None:
        return None


class MlflowLogger:
    """Logs to one MLflow run on an explicit store.

    ``run_id`` continues an existing run (e.g. a resumed training); otherwise a run named ``run_name``
    is created in ``experiment`` (created when missing, with ``artifact_location`` if given) and
    terminated by ``close``. Non-finite metric values are skipped with a warning (MLflow rejects NaN
    in some stores and they break plots).
    """

    def __init__(
        self,
        tracking_uri: str,
        *,
        experiment: str = "pose-repro",
        run_id: str | None = None,
        run_name: str | None = None,
        tags: Mapping[str, str] | None = None,
        artifact_location: str | None = None,
        buffer_size: int = 200,
    ):
        from mlflow.tracking import MlflowClient

        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.buffer_size = max(1, int(buffer_size))
        self._buffer: list[Any] = []
        self._closed = False
        if run_id is not None:
            self.run_id = run_id
            self.client.get_run(run_id)
            self._owns_run = False
        else:
            exp = self.client.get_experiment_by_name(experiment)
            exp_id = (
                exp.experiment_id
                if exp is not None
                else self.client.create_experiment(experiment, artifact_location=artifact_location)
            )
            run = self.client.create_run(exp_id, run_name=run_name, tags=dict(tags or {}))
            self.run_id = run.info.run_id
            self._owns_run = True
        log.info("MLflow run %s at %s", self.run_id, tracking_uri)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        for key, value in metrics.items():
            v = float(value)
            if not math.isfinite(v):
                log.warning("MLflow: skipping non-finite metric %s=%s at step %d", key, v, step)
                continue
            self._buffer.append(Metric(key=key, value=v, timestamp=now, step=int(step)))
        if len(self._buffer) >= self.buffer_size:
            self.flush()

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = []
        for key, value in params.items():
            text = str(value)
            if len(text) > _MAX_PARAM_LEN:
                log.warning("MLflow: truncating parameter %s to %d characters", key, _MAX_PARAM_LEN)
                text = text[:_MAX_PARAM_LEN]
            items.append(Param(key, text))
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def flush(self) -> None:
        while self._buffer:
            chunk, self._buffer = self._buffer[:_MAX_BATCH], self._buffer[_MAX_BATCH:]
            self.client.log_batch(self.run_id, metrics=chunk)

    def close(self, status: str = "FINISHED") -> None:
        """Flush; terminate the run with ``status`` if this logger created it. Idempotent."""
        if self._closed:
            return
        self.flush()
        if self._owns_run:
            self.client.set_terminated(self.run_id, status=status)
        self._closed = True

    def __enter__(self) -> MlflowLogger:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close("FINISHED" if exc_type is None else "FAILED")
