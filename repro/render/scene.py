"""What to render (``RenderScene``) and what comes back (``RenderResult``).

Conventions (shared by every backend):

* Poses follow BOP: ``x_cam = R @ x_model + t`` in millimetres, OpenCV camera frame (x right,
  y down, z forward).
* Pixel ``(u, v)`` (column, row) samples the image-plane point ``(u + s, v + s)`` in OpenCV
  coordinates, where ``s = scene.sample_offset``. The default ``s = 0`` is the OpenCV convention:
  integer pixel coordinates are pixel centres, so a rendered depth agrees with a ray cast through
  ``K^-1 [u, v, 1]``. ``s = 0.5`` reproduces bop_toolkit's OpenGL renderers (vispy, glumpy, cpp),
  which put GL's half-integer pixel centres on ``u + 0.5`` (``BOP_SAMPLE_OFFSET``) — use it to
  compare with depth images or masks those renderers produced.
* Depth is the camera-frame z in mm (float32, 0 = background); ``instance_ids`` index
  ``scene.instances`` (-1 = background); ``obj_ids`` hold ``ObjectModel.obj_id`` (0 = background).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from repro.types import CameraIntrinsics, ObjectModel

OUTPUTS = frozenset({"depth", "ids", "masks", "full_masks", "barycentrics", "normals", "rgb", "xyz"})
"""Output names a renderer understands.

``depth``: z in mm. ``ids``: instance index, object id and triangle id per pixel. ``masks``:
visible mask per instance. ``full_masks``: unoccluded silhouette per instance (each instance
rendered alone, as BOP's ``mask/``). ``barycentrics``: perspective-correct weights of the
triangle's 2nd and 3rd vertex. ``normals``: unit surface normal in the camera frame (vertex
normals interpolated when the model has them, face normals otherwise). ``rgb``: vertex colours or
texture with ambient + Lambertian shading, uint8. ``xyz``: the surface point in model coordinates
(mm), e.g. for correspondence or NOCS-style targets.
"""

DEFAULT_OUTPUTS: frozenset[str] = frozenset({"depth", "ids"})

BOP_SAMPLE_OFFSET = 0.5
"""The ``sample_offset`` of BOP annotations: they are made with bop_toolkit's renderer, which
samples pixel ``(u, v)`` at the image point ``(u + 0.5, v + 0.5)``. Use it for everything compared
with BOP depth images, masks or ``scene_gt_info`` (verification, VSD, synthetic BOP data)."""


def _vec3(value: Iterable[float], name: str) -> np.ndarray:
    arr = np.array(value, dtype=np.float64).reshape(-1)
    if arr.shape != (3,) or not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: expected 3 finite numbers, got {value!r}")
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class RenderInstance:
    """One object instance: the model and its model-to-camera pose (``R`` 3x3, ``t`` mm)."""

    model: ObjectModel
    R: np.ndarray
    t: np.ndarray

    def __post_init__(self) -> None:
        R = np.array(self.R, dtype=np.float64)
        if R.shape != (3, 3) or not np.all(np.isfinite(R)):
            raise ValueError(f"R: expected a finite 3x3 matrix, got shape {R.shape}")
        R.setflags(write=False)
        object.__setattr__(self, "R", R)
        object.__setattr__(self, "t", _vec3(self.t, "t"))

    @property
    def pose(self) -> np.ndarray:
        """The 4x4 model-to-camera transformation."""
        T = np.eye(4)
        T[:3, :3], T[:3, 3] = self.R, self.t
        return T

    def camera_vertices(self) -> np.ndarray:
        """Model vertices in the camera frame (float64, mm)."""
        return self.model.vertices @ self.R.T + self.t


@dataclass(frozen=True, eq=False)
class Light:
    """A directional light plus ambient term, in the camera frame.

    ``direction`` is the direction the light travels (normalised on construction); the default
    shines along the optical axis, i.e. from the camera onto the scene. A pixel's colour is
    ``albedo * min(1, ambient + diffuse * max(0, -n . direction))``.
    """

    direction: np.ndarray = field(default_factory=lambda: np.array([0.0, 0.0, 1.0]))
    ambient: float = 0.3
    diffuse: float = 0.7

    def __post_init__(self) -> None:
        d = _vec3(self.direction, "light direction")
        n = float(np.linalg.norm(d))
        if n == 0:
            raise ValueError("light direction must be non-zero")
        d = d / n
        d.setflags(write=False)
        object.__setattr__(self, "direction", d)
        if self.ambient < 0 or self.diffuse < 0:
            raise ValueError("light intensities must be non-negative")


@dataclass(frozen=True, eq=False)
class RenderScene:
    """Instances seen by one pinhole camera.

    ``near``/``far`` (mm) clip the camera-frame z; ``None`` fits them to the instances' bounding
    spheres (never nearer than ``min_near``), which keeps the GL depth buffer precise.
    ``background`` is the RGB colour (0..1) of empty pixels in ``rgb``.
    """

    camera: CameraIntrinsics
    instances: tuple[RenderInstance, ...] = ()
    background: tuple[float, float, float] = (0.0, 0.0, 0.0)
    light: Light = field(default_factory=Light)
    near: float | None = None
    far: float | None = None
    sample_offset: float = 0.0
    min_near: float = 1.0

    def __post_init__(self) -> None:
        insts = tuple(self.instances)
        if not all(isinstance(i, RenderInstance) for i in insts):
            raise TypeError("instances must be RenderInstance objects")
        object.__setattr__(self, "instances", insts)
        bg = tuple(float(c) for c in self.background)
        if len(bg) != 3:
            raise ValueError(f"background must be an RGB triple, got {self.background!r}")
        object.__setattr__(self, "background", bg)
        if self.near is not None and self.near <= 0:
            raise ValueError(f"near must be positive, got {self.near}")
        if self.near is not None and self.far is not None and self.far <= self.near:
            raise ValueError(f"far ({self.far}) must exceed near ({self.near})")

    @classmethod
    def from_poses(cls, camera: CameraIntrinsics,
                   poses: Iterable[tuple[ObjectModel, np.ndarray, np.ndarray]], **kwargs) -> RenderScene:
        """Build a scene from ``(model, R, t)`` triples."""
        return cls(camera=camera, instances=tuple(RenderInstance(m, R, t) for m, R, t in poses), **kwargs)

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)`` of the rendered images."""
        return self.camera.height, self.camera.width

    def clip_range(self) -> tuple[float, float]:
        """The ``(near, far)`` z range actually used (explicit values or fitted to the instances)."""
        near, far = self.near, self.far
        if near is None or far is None:
            zs = []
            for inst in self.instances:
                centre = 0.5 * (inst.model.vertices.min(axis=0) + inst.model.vertices.max(axis=0))
                radius = float(np.linalg.norm(inst.model.vertices - centre, axis=1).max())
                z = float(inst.R[2] @ centre + inst.t[2])
                zs.append((z - radius, z + radius))
            lo = min((a for a, _ in zs), default=self.min_near)
            hi = max((b for _, b in zs), default=2.0 * self.min_near)
            if near is None:
                near = max(lo * 0.999, self.min_near)
            if far is None:
                far = max(hi * 1.001, near * 1.01)
        return float(near), float(far)

    def with_camera(self, camera: CameraIntrinsics) -> RenderScene:
        """The same scene seen with other intrinsics / image size."""
        return replace(self, camera=camera)

    def single(self, index: int) -> RenderScene:
        """The scene with only instance ``index`` (for unoccluded renders)."""
        near, far = self.clip_range()
        return replace(self, instances=(self.instances[index],), near=near, far=far)


def check_outputs(outputs: Collection[str]) -> frozenset[str]:
    """Validate requested output names."""
    out = frozenset(outputs)
    unknown = out - OUTPUTS
    if unknown:
        raise ValueError(f"unknown render outputs {sorted(unknown)}; choose from {sorted(OUTPUTS)}")
    return out


def pixel_rays(camera: CameraIntrinsics, sample_offset: float = 0.0,
               dtype: type[np.floating] = np.float64) -> np.ndarray:
    """Camera-frame ray directions with z = 1 through every pixel sample, shape (H, W, 3)."""
    Kinv = np.linalg.inv(camera.K)
    u = np.arange(camera.width, dtype=np.float64) + sample_offset
    v = np.arange(camera.height, dtype=np.float64) + sample_offset
    uu, vv = np.meshgrid(u, v)
    pix = np.stack([uu, vv, np.ones_like(uu)], axis=-1)
    rays = pix @ Kinv.T
    return (rays / rays[..., 2:3]).astype(dtype)


def gl_projection(camera: CameraIntrinsics, near: float, far: float, sample_offset: float = 0.0) -> np.ndarray:
    """OpenGL-style 4x4 projection from OpenCV camera coordinates to clip space.

    Maps ``(x, y, z)`` (z forward) so that window coordinates equal ``(u - s + 1/2, v - s + 1/2)``
    for the OpenCV projection ``(u, v)`` and sample offset ``s``: GL samples pixel ``i`` at window
    ``i + 1/2``, hence at image coordinate ``i + s``. Row ``j`` of the read-back framebuffer is
    image row ``j`` (no flip), and NDC z runs from -1 at ``near`` to 1 at ``far``. The same matrix
    serves nvdiffrast, whose pixel centres and row order match GL's.
    """
    K = camera.K
    W, H = camera.width, camera.height
    shift = 0.5 - sample_offset
    P = np.zeros((4, 4))
    P[0, 0] = 2.0 * K[0, 0] / W
    P[0, 1] = 2.0 * K[0, 1] / W
    P[0, 2] = 2.0 * (K[0, 2] + shift) / W - 1.0
    P[1, 1] = 2.0 * K[1, 1] / H
    P[1, 2] = 2.0 * (K[1, 2] + shift) / H - 1.0
    P[2, 2] = (far + near) / (far - near)
    P[2, 3] = -2.0 * far * near / (far - near)
    P[3, 2] = 1.0
    return P


@dataclass(frozen=True, eq=False)
class RenderResult:
    """Images rendered for one ``RenderScene``; fields not requested are ``None``.

    ``instance_ids``/``obj_ids``/``triangle_ids`` are filled for any of ``ids``, ``masks``,
    ``barycentrics``, ``normals``, ``rgb``, ``xyz``. ``full_masks`` is (N, H, W) bool.
    """

    depth: np.ndarray | None = None
    instance_ids: np.ndarray | None = None
    obj_ids: np.ndarray | None = None
    triangle_ids: np.ndarray | None = None
    barycentrics: np.ndarray | None = None
    normals: np.ndarray | None = None
    rgb: np.ndarray | None = None
    xyz: np.ndarray | None = None
    full_masks: np.ndarray | None = None
    n_instances: int = 0

    @property
    def foreground(self) -> np.ndarray:
        """Pixels covered by any instance."""
        if self.instance_ids is not None:
            return self.instance_ids >= 0
        if self.depth is not None:
            return self.depth > 0
        raise ValueError("neither ids nor depth were rendered")

    def visible_mask(self, index: int) -> np.ndarray:
        """Visible (occlusion-aware) mask of instance ``index``."""
        if self.instance_ids is None:
            raise ValueError("visible masks need the 'ids' (or 'masks') output")
        return self.instance_ids == index

    @property
    def visible_masks(self) -> np.ndarray:
        """All visible masks, (N, H, W) bool, pairwise disjoint."""
        if self.instance_ids is None:
            raise ValueError("visible masks need the 'ids' (or 'masks') output")
        return self.instance_ids[None] == np.arange(self.n_instances)[:, None, None]


def stack_results(results: Sequence[RenderResult], name: str) -> np.ndarray:
    """Stack one output of several results (same image size) into a (B, ...) array."""
    arrays = [getattr(r, name) for r in results]
    if any(a is None for a in arrays):
        raise ValueError(f"output {name!r} missing from some results")
    return np.stack(arrays)
