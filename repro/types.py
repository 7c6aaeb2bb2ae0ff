"""Typed records that flow between the stages of the harness.

Instance level follows BOP (millimetres, model-to-camera ``R``/``t``); category level follows
NOCS/REAL275 (metres, 4x4 ``RT`` with the object scale folded into the rotation block).
Arrays are validated and normalised (dtype, shape, read-only) on construction so that a
malformed record fails where it is made, not three stages later.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

NOCS_CLASSES: tuple[str, ...] = ("bottle", "bowl", "camera", "can", "laptop", "mug")
"""Category names by class id 1..6 (index 0 is background in the NOCS code)."""

Task = Literal["instance", "category", "tracking"]


def _array(value, name: str, shape: tuple[int | None, ...], dtype=np.float64) -> np.ndarray:
    """Return ``value`` as a read-only array of ``dtype`` with the given shape (None = any)."""
    arr = np.array(value, dtype=dtype, copy=True)
    if arr.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, arr.shape, strict=True)):
        want = "x".join("N" if s is None else str(s) for s in shape)
        raise ValueError(f"{name}: expected shape {want}, got {arr.shape}")
    arr.setflags(write=False)
    return arr


def _finite(arr: np.ndarray, name: str) -> None:
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: contains non-finite values")


@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole intrinsics ``K`` (3x3, pixels, OpenCV convention) and the image size."""

    K: np.ndarray
    width: int
    height: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "K", _array(self.K, "K", (3, 3)))
        _finite(self.K, "K")
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"image size must be positive, got {self.width}x{self.height}")

    @property
    def fx(self) -> float:
        return float(self.K[0, 0])

    @property
    def fy(self) -> float:
        return float(self.K[1, 1])

    @property
    def cx(self) -> float:
        return float(self.K[0, 2])

    @property
    def cy(self) -> float:
        return float(self.K[1, 2])


@dataclass(frozen=True)
class ContinuousSymmetry:
    """A continuous rotational symmetry: rotation about ``axis`` through ``offset`` (mm)."""

    axis: np.ndarray
    offset: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "axis", _array(self.axis, "axis", (3,)))
        object.__setattr__(self, "offset", _array(self.offset, "offset", (3,)))
        if not np.isclose(np.linalg.norm(self.axis), 1.0, atol=1e-6):
            raise ValueError(f"symmetry axis must be a unit vector, got {self.axis.tolist()}")


@dataclass(frozen=True)
class ObjectModel:
    """A 3D object model in BOP units (mm) with the metadata of ``models_info.json``.

    ``symmetries_discrete`` are 4x4 transformations (t in mm) exactly as BOP stores them.
    ``content_hash`` identifies the geometry and metadata, so caches (templates, onboarding)
    can be keyed by it.
    """

    obj_id: int
    vertices: np.ndarray
    faces: np.ndarray
    diameter: float
    normals: np.ndarray | None = None
    colors: np.ndarray | None = None
    uv: np.ndarray | None = None
    texture: np.ndarray | None = None
    symmetries_discrete: tuple[np.ndarray, ...] = ()
    symmetries_continuous: tuple[ContinuousSymmetry, ...] = ()
    name: str = ""
    description: str = ""
    path: str = ""
    content_hash: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "obj_id", int(self.obj_id))
        set_(self, "vertices", _array(self.vertices, "vertices", (None, 3)))
        _finite(self.vertices, f"obj {self.obj_id} vertices")
        set_(self, "faces", _array(self.faces, "faces", (None, 3), dtype=np.int64))
        if len(self.faces) and (self.faces.min() < 0 or self.faces.max() >= len(self.vertices)):
            raise ValueError(f"obj {self.obj_id}: face index out of range")
        if self.normals is not None:
            set_(self, "normals", _array(self.normals, "normals", (len(self.vertices), 3)))
        if self.colors is not None:
            set_(self, "colors", _array(self.colors, "colors", (len(self.vertices), 3)))
        if self.uv is not None:
            set_(self, "uv", _array(self.uv, "uv", (len(self.vertices), 2)))
        if self.texture is not None:
            set_(self, "texture", _array(self.texture, "texture", (None, None, 3), dtype=np.uint8))
        if not np.isfinite(self.diameter) or self.diameter <= 0:
            raise ValueError(f"obj {self.obj_id}: diameter must be positive, got {self.diameter}")
        set_(self, "diameter", float(self.diameter))
        set_(self, "symmetries_discrete",
             tuple(_array(s, "symmetries_discrete", (4, 4)) for s in self.symmetries_discrete))
        set_(self, "symmetries_continuous", tuple(self.symmetries_continuous))
        if not self.content_hash:
            set_(self, "content_hash", self._hash())

    def _hash(self) -> str:
        h = hashlib.sha256()
        h.update(np.int64(self.obj_id).tobytes())
        for arr in (self.vertices, self.faces, self.normals, self.colors, self.uv, self.texture):
            h.update(b"|" if arr is None else np.ascontiguousarray(arr).tobytes())
        h.update(np.float64(self.diameter).tobytes())
        for s in self.symmetries_discrete:
            h.update(s.tobytes())
        for c in self.symmetries_continuous:
            h.update(c.axis.tobytes() + c.offset.tobytes())
        return h.hexdigest()[:16]

    @property
    def bbox_min(self) -> np.ndarray:
        return self.vertices.min(axis=0)

    @property
    def bbox_size(self) -> np.ndarray:
        return self.vertices.max(axis=0) - self.vertices.min(axis=0)

    @property
    def is_symmetric(self) -> bool:
        return bool(self.symmetries_discrete or self.symmetries_continuous)

    def sample_points(self, n: int, seed: int) -> np.ndarray:
        """Area-weighted uniform surface samples (n, 3), deterministic for ``seed``."""
        rng = np.random.default_rng(seed)
        tri = self.vertices[self.faces]
        area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
        if area.sum() <= 0:
            raise ValueError(f"obj {self.obj_id}: mesh has zero surface area")
        idx = rng.choice(len(tri), size=n, p=area / area.sum())
        u, v = rng.random(n), rng.random(n)
        flip = u + v > 1
        u[flip], v[flip] = 1 - u[flip], 1 - v[flip]
        t = tri[idx]
        return t[:, 0] + u[:, None] * (t[:, 1] - t[:, 0]) + v[:, None] * (t[:, 2] - t[:, 0])


@dataclass(frozen=True)
class GTInstance:
    """One annotated object instance of a frame (BOP ``scene_gt`` + ``scene_gt_info``).

    Only methods that declare ``uses_ground_truth`` (upper-bound baselines) ever see these.
    """

    gt_id: int
    obj_id: int
    R: np.ndarray
    t: np.ndarray
    visib_fract: float = 1.0
    bbox_obj: tuple[int, int, int, int] | None = None
    bbox_visib: tuple[int, int, int, int] | None = None
    px_count_all: int | None = None
    px_count_visib: int | None = None
    mask: np.ndarray | None = None
    mask_visib: np.ndarray | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "R", _array(self.R, "R", (3, 3)))
        object.__setattr__(self, "t", _array(self.t, "t", (3,)))


@dataclass(frozen=True)
class CategoryGT:
    """One annotated instance at category level (NOCS conventions: metres, RT with scale folded
    into the 3x3 block). ``bbox`` is (x, y, w, h) pixels like every box in these types; the NOCS
    files' (y1, x1, y2, x2) order is converted by the NOCS reader and results IO."""

    inst_id: int
    class_id: int
    RT: np.ndarray
    scales: np.ndarray
    handle_visible: bool = True
    model_id: str = ""
    bbox: tuple[int, int, int, int] | None = None
    mask: np.ndarray | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "RT", _array(self.RT, "RT", (4, 4)))
        object.__setattr__(self, "scales", _array(self.scales, "scales", (3,)))


@dataclass(frozen=True)
class Frame:
    """One image (optionally with depth) and where it sits in the dataset.

    ``depth`` is in millimetres (BOP) as float32; ``sequence_id``/``sequence_index`` place the frame
    in a video (``sequence_id`` defaults to the scene). ``video`` is True when the frame belongs to
    a video sequence whose consecutive frames are temporally adjacent, so trackers may track; False
    for independent images (e.g. BOP test images of static scenes). ``gt`` and ``category_gt`` hold
    annotations and are stripped by the runner unless the method is a declared ground-truth baseline.
    """

    rgb: np.ndarray
    camera: CameraIntrinsics
    scene_id: int
    im_id: int
    depth: np.ndarray | None = None
    sequence_id: int | None = None
    sequence_index: int | None = None
    dataset: str = ""
    gt: tuple[GTInstance, ...] | None = None
    category_gt: tuple[CategoryGT, ...] | None = None
    video: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "video", bool(self.video))
        rgb = np.asarray(self.rgb)
        if rgb.ndim == 2:
            rgb = np.repeat(rgb[:, :, None], 3, axis=2)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"rgb must be HxWx3 uint8, got {rgb.shape} {rgb.dtype}")
        if rgb.shape[:2] != (self.camera.height, self.camera.width):
            raise ValueError(f"rgb size {rgb.shape[1]}x{rgb.shape[0]} differs from camera "
                             f"{self.camera.width}x{self.camera.height}")
        object.__setattr__(self, "rgb", rgb)
        if self.depth is not None:
            depth = np.asarray(self.depth, dtype=np.float32)
            if depth.shape != rgb.shape[:2]:
                raise ValueError(f"depth shape {depth.shape} differs from rgb {rgb.shape[:2]}")
            object.__setattr__(self, "depth", depth)
        if self.sequence_id is None:
            object.__setattr__(self, "sequence_id", self.scene_id)
        if self.sequence_index is None:
            object.__setattr__(self, "sequence_index", self.im_id)

    @property
    def K(self) -> np.ndarray:
        return self.camera.K

    @property
    def key(self) -> tuple[int, int]:
        return (self.scene_id, self.im_id)

    def without_annotations(self) -> Frame:
        """The same frame with ground truth removed (what a regular method receives)."""
        return Frame(rgb=self.rgb, camera=self.camera, scene_id=self.scene_id, im_id=self.im_id,
                     depth=self.depth, sequence_id=self.sequence_id,
                     sequence_index=self.sequence_index, dataset=self.dataset, video=self.video)


@dataclass(frozen=True)
class InstanceTarget:
    """BOP test target: estimate ``inst_count`` instances of ``obj_id`` in the frame."""

    obj_id: int
    inst_count: int = 1


@dataclass(frozen=True)
class Targets:
    """What to estimate in one frame: BOP instance targets, category ids, or (BOP24-style
    ``any_object``) every instance of every dataset object."""

    instances: tuple[InstanceTarget, ...] = ()
    categories: tuple[int, ...] = ()
    any_object: bool = False

    @property
    def obj_ids(self) -> tuple[int, ...]:
        return tuple(t.obj_id for t in self.instances)

    @property
    def n_instances(self) -> int:
        return sum(t.inst_count for t in self.instances)


@dataclass(frozen=True)
class PoseEstimate:
    """An instance-level estimate: model-to-camera ``R`` (3x3) and ``t`` (mm), with a score.

    ``mask`` (HxW bool, visible part) and ``box`` (x, y, w, h in pixels) are optional outputs of
    methods that also segment or detect.
    """

    obj_id: int
    R: np.ndarray
    t: np.ndarray
    score: float = 1.0
    mask: np.ndarray | None = None
    box: tuple[float, float, float, float] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "obj_id", int(self.obj_id))
        object.__setattr__(self, "R", _array(self.R, "R", (3, 3)))
        object.__setattr__(self, "t", _array(self.t, "t", (3,)))
        object.__setattr__(self, "score", float(self.score))
        if self.mask is not None:
            mask = np.asarray(self.mask, dtype=bool)
            if mask.ndim != 2:
                raise ValueError(f"mask must be HxW, got {mask.shape}")
            object.__setattr__(self, "mask", mask)
        if self.box is not None:
            object.__setattr__(self, "box", tuple(float(v) for v in self.box))


@dataclass(frozen=True)
class CategoryEstimate:
    """A category-level estimate in NOCS form: class id, 4x4 ``RT`` (metres, scale folded into
    the 3x3 block), NOCS-space box ``scales`` and a score; ``box`` is (x, y, w, h) pixels."""

    class_id: int
    RT: np.ndarray
    scales: np.ndarray
    score: float = 1.0
    mask: np.ndarray | None = None
    box: tuple[float, float, float, float] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "class_id", int(self.class_id))
        object.__setattr__(self, "RT", _array(self.RT, "RT", (4, 4)))
        object.__setattr__(self, "scales", _array(self.scales, "scales", (3,)))
        object.__setattr__(self, "score", float(self.score))
        if self.mask is not None:
            object.__setattr__(self, "mask", np.asarray(self.mask, dtype=bool))

    @property
    def scale(self) -> float:
        """The isotropic object scale (cube root of det of the 3x3 block), as NOCS derives it."""
        return float(np.cbrt(np.linalg.det(self.RT[:3, :3])))

    @property
    def R(self) -> np.ndarray:
        return self.RT[:3, :3] / self.scale

    @property
    def t(self) -> np.ndarray:
        return self.RT[:3, 3]


@dataclass(frozen=True)
class Prediction:
    """What ``PoseMethod.predict`` returns for one frame.

    ``timings`` maps stage names (e.g. ``detection``, ``coarse``, ``refinement``) to seconds; the
    harness adds ``total`` (wall time of the call) when the method does not report it.
    """

    estimates: tuple[PoseEstimate, ...] = ()
    category_estimates: tuple[CategoryEstimate, ...] = ()
    timings: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "estimates", tuple(self.estimates))
        object.__setattr__(self, "category_estimates", tuple(self.category_estimates))
        object.__setattr__(self, "timings", {str(k): float(v) for k, v in dict(self.timings).items()})

    @property
    def total_time(self) -> float:
        """Seconds for the frame: ``total`` if reported, else the sum of the stages."""
        if "total" in self.timings:
            return self.timings["total"]
        return float(sum(self.timings.values()))
