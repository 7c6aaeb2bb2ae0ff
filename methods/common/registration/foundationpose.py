"""The FoundationPose plugin slot: NVlabs FoundationPose (Wen et al., CVPR 2024) behind ``PoseRegistrar``.

FoundationPose is not vendored. It is used when present locally: either a checkout of
github.com/NVlabs/FoundationPose (``code_dir``, with its ``estimater.py`` and compiled extensions)
or an installed package named ``package`` (default ``foundationpose``) exposing ``FoundationPose``,
``ScorePredictor`` and ``PoseRefinePredictor``; plus the published weights (refiner run
``2023-10-28-18-33-37``, scorer run ``2024-01-11-20-02-45``, each ``model_best.pth`` + ``config.yml``)
under ``weights_dir`` (default ``<code_dir>/weights``, where the upstream code reads them), nvdiffrast
and a CUDA device. Otherwise construction raises ``FoundationPoseUnavailableError`` listing everything
that is missing.

FoundationPose works in metres; this wrapper converts to and from BOP millimetres. Its scores are
unbounded logits, so ``RegistrationOutput.score`` is the render-and-compare score of the returned
pose (same scale as ``RenderCompareRegistrar``) and the network's score is kept in ``info``.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from methods.common.registration.base import PoseLike, RegistrationOutput, as_pose
from methods.common.registration.render_compare import RenderCompareConfig, RenderCompareRegistrar
from repro.geometry import axis_angle_to_matrix
from repro.types import ObjectModel

log = logging.getLogger(__name__)

REFINER_RUN = "2023-10-28-18-33-37"
SCORER_RUN = "2024-01-11-20-02-45"
WEIGHT_FILES = ("model_best.pth", "config.yml")


class FoundationPoseUnavailableError(RuntimeError):
    """FoundationPose (code, weights, nvdiffrast or CUDA) is not available on this machine."""


@dataclass(frozen=True)
class FoundationPoseConfig:
    """Where FoundationPose lives and how it runs.

    ``code_dir``: a FoundationPose checkout (used instead of ``package`` when set);
    ``weights_dir``: the folder holding the two weight runs (default ``<code_dir>/weights``);
    ``register_iterations`` / ``track_iterations``: refiner iterations (upstream demo: 5 / 2);
    ``symmetry_step_deg``: sampling of continuous symmetries for the hypothesis clustering;
    ``score_backend``: render backend of the render-and-compare score reported with each pose.
    """

    code_dir: str | None = None
    weights_dir: str | None = None
    package: str = "foundationpose"
    register_iterations: int = 5
    track_iterations: int = 2
    symmetry_step_deg: float = 10.0
    score_backend: str = "auto"
    seed: int = 0


def _weights_dir(cfg: FoundationPoseConfig) -> Path | None:
    if cfg.weights_dir:
        return Path(cfg.weights_dir).expanduser()
    if cfg.code_dir:
        return Path(cfg.code_dir).expanduser() / "weights"
    return None


def foundationpose_missing(cfg: FoundationPoseConfig) -> list[str]:
    """What prevents using FoundationPose with ``cfg`` (empty when everything is present)."""
    missing = []
    if cfg.code_dir:
        code = Path(cfg.code_dir).expanduser()
        if not (code / "estimater.py").is_file():
            missing.append(f"FoundationPose code not found: no {code / 'estimater.py'} "
                           "(code_dir must be a checkout of github.com/NVlabs/FoundationPose)")
    elif importlib.util.find_spec(cfg.package) is None:
        missing.append(f"the `{cfg.package}` package is not importable (install it, or set code_dir to a "
                       "checkout of github.com/NVlabs/FoundationPose)")
    weights = _weights_dir(cfg)
    if weights is None:
        missing.append(f"FoundationPose weights: weights_dir is not set (it must hold {REFINER_RUN}/ and "
                       f"{SCORER_RUN}/ with {' and '.join(WEIGHT_FILES)})")
    else:
        absent = [str(weights / run / f) for run in (REFINER_RUN, SCORER_RUN) for f in WEIGHT_FILES
                  if not (weights / run / f).is_file()]
        if absent:
            missing.append(f"FoundationPose weights not found: {', '.join(absent)}")
        if cfg.code_dir and weights.resolve() != (Path(cfg.code_dir).expanduser() / "weights").resolve():
            missing.append(f"upstream FoundationPose reads its weights from {Path(cfg.code_dir) / 'weights'}, "
                           f"not weights_dir={weights} (link them there)")
    if importlib.util.find_spec("nvdiffrast") is None:
        missing.append("nvdiffrast is not installed (FoundationPose renders with nvdiffrast)")
    else:
        import torch

        if not torch.cuda.is_available():
            missing.append("no CUDA device (FoundationPose runs on CUDA only)")
    return missing


@contextlib.contextmanager
def _on_path(directory: str | None) -> Iterator[None]:
    """Make ``directory`` importable during the block (FoundationPose's modules import each other
    as top-level modules)."""
    if not directory:
        yield
        return
    path = str(Path(directory).expanduser().resolve())
    added = path not in sys.path
    if added:
        sys.path.insert(0, path)
    try:
        yield
    finally:
        if added and path in sys.path:
            sys.path.remove(path)


def _symmetry_tfs(model: ObjectModel, step_deg: float) -> np.ndarray:
    """Symmetry transformations (N, 4, 4) in metres, identity first: the discrete ones and the
    continuous ones sampled every ``step_deg`` (FoundationPose clusters its hypotheses with them)."""
    tfs = [np.eye(4)]
    for S in model.symmetries_discrete:
        T = np.array(S, dtype=np.float64)
        T[:3, 3] /= 1000.0
        tfs.append(T)
    for c in model.symmetries_continuous:
        for a in np.deg2rad(np.arange(step_deg, 360.0, step_deg)):
            T = np.eye(4)
            T[:3, :3] = axis_angle_to_matrix(c.axis * float(a))
            T[:3, 3] = (c.offset - T[:3, :3] @ c.offset) / 1000.0
            tfs.append(T)
    return np.array(tfs)


class FoundationPoseRegistrar:
    """``PoseRegistrar`` wrapping FoundationPose (see the module docstring).

    Raises ``FoundationPoseUnavailableError`` on construction when code, weights, nvdiffrast or CUDA
    are missing. One FoundationPose estimator is kept per model (keyed by ``content_hash``).
    """

    def __init__(self, config: FoundationPoseConfig | None = None) -> None:
        self.config = config or FoundationPoseConfig()
        missing = foundationpose_missing(self.config)
        if missing:
            raise FoundationPoseUnavailableError("FoundationPose registrar unavailable: " + "; ".join(missing))
        with _on_path(self.config.code_dir):
            module = importlib.import_module("estimater" if self.config.code_dir else self.config.package)
            try:
                self._cls = module.FoundationPose
                scorer, refiner = module.ScorePredictor(), module.PoseRefinePredictor()
            except AttributeError as exc:
                raise FoundationPoseUnavailableError(f"FoundationPose registrar unavailable: {module.__name__} "
                                                     f"lacks the FoundationPose API ({exc})") from None
        import nvdiffrast.torch as dr

        self._scorer, self._refiner = scorer, refiner
        self._glctx = dr.RasterizeCudaContext()
        self._estimators: dict[str, Any] = {}
        self._debug_dir = tempfile.mkdtemp(prefix="foundationpose-")
        self._score = RenderCompareRegistrar(RenderCompareConfig(backend=self.config.score_backend,
                                                                 seed=self.config.seed))

    def close(self) -> None:
        self._estimators.clear()
        self._score.close()
        shutil.rmtree(self._debug_dir, ignore_errors=True)

    def _estimator(self, model: ObjectModel) -> Any:
        est = self._estimators.get(model.content_hash)
        if est is None:
            import trimesh

            colors = None if model.colors is None else np.clip(model.colors * 255.0, 0, 255).astype(np.uint8)
            mesh = trimesh.Trimesh(vertices=model.vertices / 1000.0, faces=model.faces, vertex_colors=colors,
                                   process=False)
            with _on_path(self.config.code_dir):
                est = self._cls(model_pts=mesh.vertices, model_normals=mesh.vertex_normals, mesh=mesh,
                                symmetry_tfs=_symmetry_tfs(model, self.config.symmetry_step_deg),
                                scorer=self._scorer, refiner=self._refiner, glctx=self._glctx, debug=0,
                                debug_dir=self._debug_dir)
            self._estimators[model.content_hash] = est
        return est

    @staticmethod
    def _to_mm(pose: Any) -> tuple[np.ndarray, np.ndarray]:
        T = np.asarray(pose.detach().cpu().numpy() if hasattr(pose, "detach") else pose, dtype=np.float64)
        T = T.reshape(4, 4)
        return T[:3, :3], T[:3, 3] * 1000.0

    def register(self, rgb: np.ndarray, depth: np.ndarray, mask: np.ndarray, K: np.ndarray,
                 model: ObjectModel) -> RegistrationOutput:
        start = time.perf_counter()
        est = self._estimator(model)
        pose = est.register(K=np.asarray(K, dtype=np.float64), rgb=np.asarray(rgb),
                            depth=np.asarray(depth, dtype=np.float32) / 1000.0, ob_mask=np.asarray(mask, bool),
                            iteration=self.config.register_iterations)
        R, t = self._to_mm(pose)
        mid = time.perf_counter()
        score = self._score.score_pose(rgb, depth, mask, K, model, (R, t))
        end = time.perf_counter()
        fp_score = float(np.asarray(est.scores[0].detach().cpu() if hasattr(est.scores, "detach") else est.scores[0]))
        timings = {"foundationpose": mid - start, "score": end - mid, "total": end - start}
        return RegistrationOutput(R, t, score, timings, {"foundationpose_score": fp_score})

    def track(self, rgb: np.ndarray, depth: np.ndarray, K: np.ndarray, model: ObjectModel,
              prev_pose: PoseLike | RegistrationOutput) -> RegistrationOutput:
        import torch

        start = time.perf_counter()
        est = self._estimator(model)
        R, t = as_pose(prev_pose)
        T = np.eye(4)
        T[:3, :3], T[:3, 3] = R, t / 1000.0
        centre = np.eye(4)
        centre[:3, 3] = est.model_center
        est.pose_last = torch.as_tensor(T @ centre, dtype=torch.float, device="cuda")
        pose = est.track_one(rgb=np.asarray(rgb), depth=np.asarray(depth, dtype=np.float32) / 1000.0,
                             K=np.asarray(K, dtype=np.float64), iteration=self.config.track_iterations)
        R, t = self._to_mm(pose)
        mid = time.perf_counter()
        score = self._score.score_pose(rgb, depth, None, K, model, (R, t))
        end = time.perf_counter()
        timings = {"foundationpose": mid - start, "score": end - mid, "total": end - start}
        return RegistrationOutput(R, t, score, timings)
