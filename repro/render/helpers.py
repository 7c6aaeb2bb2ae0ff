"""Convenience calls on top of any ``Renderer``: instance masks and many poses of one model."""

from __future__ import annotations

from collections.abc import Collection

import numpy as np

from repro.render.base import Renderer
from repro.render.scene import DEFAULT_OUTPUTS, RenderInstance, RenderResult, RenderScene
from repro.types import CameraIntrinsics, ObjectModel


def render_instance_masks(renderer: Renderer, scene: RenderScene) -> tuple[np.ndarray, np.ndarray]:
    """Visible (occlusion-aware) and full (unoccluded) masks per instance, each (N, H, W) bool.

    Full masks are what BOP's ``mask/`` holds (each object rendered alone); their pixel counts on a
    canvas large enough for truncated objects give ``px_count_all``.
    """
    result = renderer.render(scene, outputs={"masks", "full_masks"})
    return result.visible_masks, result.full_masks


def large_canvas(camera: CameraIntrinsics, factor: int = 3) -> CameraIntrinsics:
    """The image placed in the middle of a ``factor`` times larger canvas (as calc_gt_info.py does)."""
    K = camera.K.copy()
    off = (factor - 1) // 2
    K[0, 2] += off * camera.width
    K[1, 2] += off * camera.height
    return CameraIntrinsics(K, factor * camera.width, factor * camera.height)


def unoccluded_pixel_counts(renderer: Renderer, scene: RenderScene, factor: int = 3) -> np.ndarray:
    """BOP's ``px_count_all`` per instance: silhouette pixels on a ``factor`` x larger canvas, so
    the parts of truncated objects outside the image count too."""
    result = renderer.render(scene.with_camera(large_canvas(scene.camera, factor)), outputs={"full_masks"})
    return result.full_masks.reshape(len(scene.instances), -1).sum(axis=1)


def render_poses(renderer: Renderer, model: ObjectModel, camera: CameraIntrinsics, R: np.ndarray,
                 t: np.ndarray, outputs: Collection[str] = DEFAULT_OUTPUTS,
                 **scene_kwargs) -> list[RenderResult]:
    """Render one model alone in each of B poses (``R`` (B, 3, 3), ``t`` (B, 3) mm).

    The batch API for render-and-compare and template rendering; ``stack_results`` turns the
    list into (B, ...) arrays. ``scene_kwargs`` go to every ``RenderScene`` (light, near, ...).
    """
    R = np.asarray(R, dtype=np.float64).reshape(-1, 3, 3)
    t = np.asarray(t, dtype=np.float64).reshape(-1, 3)
    if len(R) != len(t):
        raise ValueError(f"got {len(R)} rotations but {len(t)} translations")
    scenes = [RenderScene(camera, (RenderInstance(model, r, tt),), **scene_kwargs) for r, tt in zip(R, t, strict=True)]
    return renderer.render_batch(scenes, outputs)
