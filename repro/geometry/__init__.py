"""Geometry toolkit for pose methods: rotations, camera maths, PnP/Kabsch/Umeyama with RANSAC, LM, ICP.

Units follow BOP (mm; model-to-camera ``R``, ``t``; OpenCV pixel convention). Everything exported
here is numpy/scipy/OpenCV; the torch parts load only when used: ``repro.geometry.torch_ops``
(batched differentiable rotation conversions, projection) and ``repro.geometry.lm``
(``refine_pose_lm``, ``LMConfig``, ``LMResult``, also reachable lazily as attributes of this package).
"""

from __future__ import annotations

import importlib
from typing import Any

from repro.geometry.camera import (
    crop_camera,
    crop_K,
    crop_resize_affine,
    crop_resize_camera,
    crop_resize_K,
    depth_to_points,
    depth_to_xyz,
    normals_from_depth,
    normals_from_xyz,
    project_points,
    resize_camera,
    resize_K,
    transform_points,
)
from repro.geometry.icp import DEFAULT_ICP, ICPConfig, ICPResult, estimate_normals, icp, icp_projective
from repro.geometry.rotations import (
    axis_angle_to_matrix,
    geodesic_distance,
    is_rotation,
    matrix_to_axis_angle,
    matrix_to_quaternion,
    matrix_to_rotation_6d,
    project_to_so3,
    quaternion_to_matrix,
    random_rotation,
    random_rotations,
    rotation_6d_to_matrix,
    rotation_with_angle,
    skew,
)
from repro.geometry.solvers import (
    DEFAULT_PNP_RANSAC,
    DEFAULT_RIGID_RANSAC,
    PnPResult,
    RansacConfig,
    RegistrationResult,
    kabsch,
    kabsch_ransac,
    pnp_ransac,
    pnp_refine_lm,
    reprojection_errors,
    required_iterations,
    umeyama,
    umeyama_ransac,
)

_LAZY_SUBMODULES = ("torch_ops", "lm")
_LAZY_LM = ("refine_pose_lm", "LMConfig", "LMResult")


def __getattr__(name: str) -> Any:
    """Load the torch-based parts on first access (keeps ``import repro.geometry`` torch-free)."""
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _LAZY_LM:
        return getattr(importlib.import_module(f"{__name__}.lm"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_ICP",
    "DEFAULT_PNP_RANSAC",
    "DEFAULT_RIGID_RANSAC",
    "ICPConfig",
    "ICPResult",
    "PnPResult",
    "RansacConfig",
    "RegistrationResult",
    "axis_angle_to_matrix",
    "crop_K",
    "crop_camera",
    "crop_resize_K",
    "crop_resize_affine",
    "crop_resize_camera",
    "depth_to_points",
    "depth_to_xyz",
    "estimate_normals",
    "geodesic_distance",
    "icp",
    "icp_projective",
    "is_rotation",
    "kabsch",
    "kabsch_ransac",
    "matrix_to_axis_angle",
    "matrix_to_quaternion",
    "matrix_to_rotation_6d",
    "normals_from_depth",
    "normals_from_xyz",
    "pnp_ransac",
    "pnp_refine_lm",
    "project_points",
    "project_to_so3",
    "quaternion_to_matrix",
    "random_rotation",
    "random_rotations",
    "reprojection_errors",
    "required_iterations",
    "resize_K",
    "resize_camera",
    "rotation_6d_to_matrix",
    "rotation_with_angle",
    "skew",
    "transform_points",
    "umeyama",
    "umeyama_ransac",
]
