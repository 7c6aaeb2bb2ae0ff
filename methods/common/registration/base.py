"""The ``PoseRegistrar`` interface: pose registration from a mask + depth + 3D model, and
frame-to-frame tracking from a previous pose (the role FoundationPose plays in STORM).

Units follow BOP: model-to-camera ``R`` (3x3) and ``t`` (mm), depth in mm, ``K`` 3x3 pixels.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from repro.types import ObjectModel

PoseLike = np.ndarray | tuple[np.ndarray, np.ndarray]
"""A model-to-camera pose: a 4x4 matrix, or an ``(R, t)`` pair (t in mm), or a ``RegistrationOutput``."""


class RegistrationError(RuntimeError):
    """Registration is impossible for this input (e.g. an empty mask or no depth on the object)."""


@dataclass(frozen=True, eq=False)
class RegistrationOutput:
    """A registered or tracked pose with its score and a per-stage timing breakdown.

    ``score`` is in [0, 1], higher is better: a depth-weighted IoU between the rendered model and the
    observation (see ``RenderCompareRegistrar``), so a verifier can threshold it to detect failures.
    ``timings`` maps stage names to seconds (``total`` included); ``info`` holds diagnostics
    (e.g. ``n_hypotheses``, ``visible_fraction``).
    """

    R: np.ndarray
    t: np.ndarray
    score: float
    timings: Mapping[str, float] = field(default_factory=dict)
    info: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        R = np.array(self.R, dtype=np.float64).reshape(3, 3)
        t = np.array(self.t, dtype=np.float64).reshape(3)
        R.setflags(write=False)
        t.setflags(write=False)
        object.__setattr__(self, "R", R)
        object.__setattr__(self, "t", t)
        object.__setattr__(self, "score", float(self.score))
        object.__setattr__(self, "timings", {str(k): float(v) for k, v in dict(self.timings).items()})
        object.__setattr__(self, "info", {str(k): float(v) for k, v in dict(self.info).items()})

    @property
    def pose(self) -> np.ndarray:
        """The 4x4 model-to-camera transformation (mm)."""
        T = np.eye(4)
        T[:3, :3], T[:3, 3] = self.R, self.t
        return T


def as_pose(pose: PoseLike | RegistrationOutput) -> tuple[np.ndarray, np.ndarray]:
    """``(R, t)`` float64 from a 4x4 matrix, an ``(R, t)`` pair or a ``RegistrationOutput``."""
    if isinstance(pose, RegistrationOutput):
        return pose.R.copy(), pose.t.copy()
    if isinstance(pose, tuple):
        R, t = pose
        return np.array(R, dtype=np.float64).reshape(3, 3), np.array(t, dtype=np.float64).reshape(3)
    T = np.asarray(pose, dtype=np.float64)
    if T.shape != (4, 4):
        raise ValueError(f"a pose must be 4x4 or an (R, t) pair, got shape {T.shape}")
    return T[:3, :3].copy(), T[:3, 3].copy()


@runtime_checkable
class PoseRegistrar(Protocol):
    """Registers an object's pose from a segmentation mask, and tracks it from frame to frame.

    ``rgb`` HxWx3 uint8, ``depth`` HxW mm (0 = missing), ``mask`` HxW bool (the object's visible
    pixels), ``K`` 3x3, ``model`` the object's mesh (mm). Implementations own their resources
    (renderer, networks) and release them in ``close``.
    """

    def register(self, rgb: np.ndarray, depth: np.ndarray, mask: np.ndarray, K: np.ndarray,
                 model: ObjectModel) -> RegistrationOutput: ...

    def track(self, rgb: np.ndarray, depth: np.ndarray, K: np.ndarray, model: ObjectModel,
              prev_pose: PoseLike | RegistrationOutput) -> RegistrationOutput: ...

    def close(self) -> None: ...
