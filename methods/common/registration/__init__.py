"""Pose registration and tracking from a mask + depth + 3D model (the role FoundationPose plays in STORM).

- ``PoseRegistrar``: the interface (``register(rgb, depth, mask, K, model)``,
  ``track(rgb, depth, K, model, prev_pose)``, ``close()``), returning ``RegistrationOutput``
  (``R``, ``t`` mm, ``score`` in [0, 1], ``timings``).
- ``RenderCompareRegistrar`` / ``RenderCompareConfig``: the CPU implementation (viewpoint x in-plane
  hypotheses, batched render-and-compare scoring, ICP refinement, projective-ICP tracking).
- ``FoundationPoseRegistrar`` / ``FoundationPoseConfig``: wraps NVlabs FoundationPose when its code and
  weights are present locally; otherwise construction raises ``FoundationPoseUnavailableError``
  naming what is missing.
- ``create_registrar(name, cfg, seed)``: build one by name (``render_compare`` | ``foundationpose``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from methods.common.registration.base import (
    PoseLike,
    PoseRegistrar,
    RegistrationError,
    RegistrationOutput,
    as_pose,
)
from methods.common.registration.foundationpose import (
    FoundationPoseConfig,
    FoundationPoseRegistrar,
    FoundationPoseUnavailableError,
    foundationpose_missing,
)
from methods.common.registration.render_compare import RenderCompareConfig, RenderCompareRegistrar

REGISTRARS: tuple[str, ...] = ("render_compare", "foundationpose")


def _config(cls: type, cfg: Mapping[str, Any] | None, seed: int) -> Any:
    cfg = dict(cfg or {})
    known = {f.name for f in fields(cls)}
    unknown = set(cfg) - known
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown keys {sorted(unknown)}; known: {sorted(known)}")
    cfg.setdefault("seed", seed)
    return cls(**cfg)


def create_registrar(name: str = "render_compare", cfg: Mapping[str, Any] | None = None,
                     seed: int = 0) -> PoseRegistrar:
    """A registrar by name with its config mapping (keys of the config dataclass) and a seed."""
    if name == "render_compare":
        return RenderCompareRegistrar(_config(RenderCompareConfig, cfg, seed))
    if name == "foundationpose":
        return FoundationPoseRegistrar(_config(FoundationPoseConfig, cfg, seed))
    raise ValueError(f"unknown registrar {name!r}; choose from {', '.join(REGISTRARS)}")


__all__ = [
    "REGISTRARS",
    "FoundationPoseConfig",
    "FoundationPoseRegistrar",
    "FoundationPoseUnavailableError",
    "PoseLike",
    "PoseRegistrar",
    "RegistrationError",
    "RegistrationOutput",
    "RenderCompareConfig",
    "RenderCompareRegistrar",
    "as_pose",
    "create_registrar",
    "foundationpose_missing",
]
