"""The ``Renderer`` protocol and what all backends share.

Every backend only *rasterizes*: per pixel the nearest instance, its triangle, the camera-frame z
and (when asked) perspective-correct barycentrics, plus unoccluded coverage per instance. Normals,
colours and model coordinates are then shaded here, once, from triangle ids and barycentrics, so
all backends produce the same images up to rasterization (the split nvdiffrast makes between
``rasterize`` and ``interpolate``).
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from repro.render.scene import (
    DEFAULT_OUTPUTS,
    RenderResult,
    RenderScene,
    check_outputs,
    pixel_rays,
)
from repro.types import ObjectModel

log = logging.getLogger(__name__)

_ID_OUTPUTS = frozenset({"ids", "masks", "barycentrics", "normals", "rgb", "xyz"})
_SHADED = frozenset({"normals", "rgb", "xyz"})


@runtime_checkable
class Renderer(Protocol):
    """Renders ``RenderScene``s; see ``repro.render.scene.OUTPUTS`` for the output names."""

    name: str

    def render(self, scene: RenderScene, outputs: Collection[str] = DEFAULT_OUTPUTS) -> RenderResult: ...

    def render_batch(self, scenes: Sequence[RenderScene],
                     outputs: Collection[str] = DEFAULT_OUTPUTS) -> list[RenderResult]: ...

    def close(self) -> None: ...


@dataclass(frozen=True, eq=False)
class Raster:
    """What a backend rasterizes for one scene.

    ``depth`` float32 (0 = empty), ``instance`` / ``triangle`` int32 (-1 = empty),
    ``barycentrics`` float32 (H, W, 2) weights of the triangle's vertices 1 and 2 (or ``None``),
    ``coverage`` (N, H, W) bool unoccluded silhouettes (or ``None``); ``backend_data`` whatever
    the backend needs again in ``_finish``.
    """

    depth: np.ndarray
    instance: np.ndarray
    triangle: np.ndarray
    barycentrics: np.ndarray | None = None
    coverage: np.ndarray | None = None
    backend_data: Any = None


class BaseRenderer(abc.ABC):
    """Turns a backend's ``Raster`` into a ``RenderResult``; backends implement ``_rasterize``."""

    name: str = "base"

    @abc.abstractmethod
    def _rasterize(self, scene: RenderScene, barycentrics: bool, coverage: bool) -> Raster:
        """Rasterize ``scene``; compute barycentrics / per-instance coverage only when asked."""

    def _rasterize_many(self, scenes: Sequence[RenderScene], barycentrics: bool,
                        coverage: bool) -> list[Raster]:
        """Rasterize several scenes; backends override this to batch the work."""
        return [self._rasterize(s, barycentrics, coverage) for s in scenes]

    def render(self, scene: RenderScene, outputs: Collection[str] = DEFAULT_OUTPUTS) -> RenderResult:
        """Render one scene (see ``RenderResult`` for the outputs)."""
        return self.render_batch([scene], outputs)[0]

    def render_batch(self, scenes: Sequence[RenderScene],
                     outputs: Collection[str] = DEFAULT_OUTPUTS) -> list[RenderResult]:
        """Render several scenes (e.g. many pose hypotheses) with one call."""
        outs = check_outputs(outputs)
        want_bary = bool(outs & (_SHADED | {"barycentrics"}))
        rasters = self._rasterize_many(list(scenes), want_bary, "full_masks" in outs)
        return [self._finish(scene, raster, _assemble(scene, raster, outs), outs)
                for scene, raster in zip(scenes, rasters, strict=True)]

    def _finish(self, scene: RenderScene, raster: Raster, result: RenderResult,
                outputs: Collection[str]) -> RenderResult:
        """Backend-specific post-processing of a result (e.g. antialiasing); identity here."""
        return result

    def close(self) -> None:
        """Release backend resources (idempotent); nothing to release here."""
        return None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _assemble(scene: RenderScene, raster: Raster, outs: frozenset[str]) -> RenderResult:
    n = len(scene.instances)
    fields: dict[str, np.ndarray | int | None] = {"n_instances": n}
    if "depth" in outs:
        fields["depth"] = raster.depth
    if outs & _ID_OUTPUTS:
        fields["instance_ids"] = raster.instance
        fields["triangle_ids"] = raster.triangle
        lut = np.array([0] + [inst.model.obj_id for inst in scene.instances], dtype=np.int32)
        fields["obj_ids"] = lut[raster.instance + 1]
    if "barycentrics" in outs:
        fields["barycentrics"] = raster.barycentrics
    if "full_masks" in outs:
        fields["full_masks"] = raster.coverage
    if outs & _SHADED:
        fields.update(shade(scene, raster, outs & _SHADED))
    return RenderResult(**fields)


def shade(scene: RenderScene, raster: Raster, outputs: Collection[str]) -> dict[str, np.ndarray]:
    """Deferred shading: normals (camera frame), rgb (uint8) and xyz (model frame, mm).

    Works on the covered pixels only (flat lists), then scatters into images.
    """
    if raster.barycentrics is None:
        raise ValueError("shading needs barycentrics from the rasterizer")
    H, W = raster.instance.shape
    want = set(outputs)
    inst_flat = raster.instance.ravel()
    pix = np.flatnonzero(inst_flat >= 0)
    order = np.argsort(inst_flat[pix], kind="stable")
    pix = pix[order]
    bounds = np.searchsorted(inst_flat[pix], np.arange(len(scene.instances) + 1))
    tri_all = raster.triangle.ravel()[pix]
    bary_all = raster.barycentrics.reshape(-1, 2)[pix].astype(np.float64)
    w_all = np.column_stack([1.0 - bary_all.sum(axis=1), bary_all])
    M = len(pix)
    normals = np.zeros((M, 3)) if want & {"normals", "rgb"} else None
    xyz = np.zeros((M, 3)) if "xyz" in want else None
    albedo = np.zeros((M, 3)) if "rgb" in want else None
    for k, inst in enumerate(scene.instances):
        sl = slice(bounds[k], bounds[k + 1])
        if sl.start == sl.stop:
            continue
        model = inst.model
        fv = model.faces[tri_all[sl]]
        w = w_all[sl]
        if xyz is not None:
            xyz[sl] = _interp(model.vertices, fv, w)
        if normals is not None:
            if model.normals is not None:
                n_model = _interp(model.normals, fv, w)
            else:
                v = model.vertices[fv]
                n_model = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])
            n_cam = n_model @ inst.R.T
            normals[sl] = n_cam / np.maximum(np.linalg.norm(n_cam, axis=1, keepdims=True), 1e-12)
        if albedo is not None:
            albedo[sl] = _albedo(model, fv, w)

    def image(values: np.ndarray, fill: np.ndarray | float = 0.0, dtype=np.float32) -> np.ndarray:
        img = np.empty((H * W, values.shape[1]), dtype)
        img[:] = fill
        img[pix] = values
        return img.reshape(H, W, values.shape[1])

    out: dict[str, np.ndarray] = {}
    if "normals" in want:
        out["normals"] = image(normals)
    if xyz is not None:
        out["xyz"] = image(xyz)
    if albedo is not None:
        light = scene.light
        lambert = np.clip(-(normals @ light.direction), 0.0, None)
        weight = np.minimum(light.ambient + light.diffuse * lambert, 1.0)
        colour = np.round(np.clip(albedo * weight[:, None], 0.0, 1.0) * 255.0)
        bg = np.round(np.clip(np.asarray(scene.background), 0.0, 1.0) * 255.0)
        out["rgb"] = image(colour, bg, np.uint8)
    return out


def _interp(attr: np.ndarray, fv: np.ndarray, w: np.ndarray) -> np.ndarray:
    return np.einsum("nk,nkc->nc", w, attr[fv])


def _albedo(model: ObjectModel, fv: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Surface colour in 0..1: texture (bilinear, repeat, v up as in OBJ/PLY) > vertex colours > grey."""
    if model.texture is not None and model.uv is not None:
        uv = _interp(model.uv, fv, w)
        tex = model.texture.astype(np.float32) / 255.0
        th, tw = tex.shape[:2]
        x = uv[:, 0] * tw - 0.5
        y = (1.0 - uv[:, 1]) * th - 0.5
        x0, y0 = np.floor(x), np.floor(y)
        fx, fy = (x - x0)[:, None], (y - y0)[:, None]
        x0 = x0.astype(np.int64)
        y0 = y0.astype(np.int64)

        def at(yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
            return tex[np.mod(yy, th), np.mod(xx, tw)]

        return ((1 - fy) * ((1 - fx) * at(y0, x0) + fx * at(y0, x0 + 1))
                + fy * ((1 - fx) * at(y0 + 1, x0) + fx * at(y0 + 1, x0 + 1)))
    if model.colors is not None:
        return _interp(model.colors, fv, w)
    return np.full((len(fv), 3), 0.5)


def surface_barycentrics(scene: RenderScene, instance: np.ndarray, triangle: np.ndarray,
                         pixels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact perspective-correct barycentrics and z from the pixel rays (float64).

    For each covered pixel, intersects its ray with the plane of its triangle. Used by backends
    whose rasterizer does not return barycentrics, and to check those that do. Returns
    ``(bary (M, 2), z (M,))`` for the flat pixel indices ``pixels`` (default: all covered).
    """
    flat_inst = instance.ravel()
    if pixels is None:
        pixels = np.nonzero(flat_inst >= 0)[0]
    rays = pixel_rays(scene.camera, scene.sample_offset).reshape(-1, 3)[pixels]
    bary = np.zeros((len(pixels), 2))
    z = np.zeros(len(pixels))
    for k, inst in enumerate(scene.instances):
        sel = np.nonzero(flat_inst[pixels] == k)[0]
        if len(sel) == 0:
            continue
        v = inst.camera_vertices()[inst.model.faces[triangle.ravel()[pixels[sel]]]]
        b, s = ray_triangle(rays[sel], v[:, 0], v[:, 1], v[:, 2])
        bary[sel], z[sel] = b, s
    return bary, z


def ray_triangle(d: np.ndarray, v0: np.ndarray, v1: np.ndarray, v2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ray ``s * d`` (from the origin) against triangles: barycentrics of v1, v2 and ``s``.

    Solves ``s d = v0 + b1 (v1 - v0) + b2 (v2 - v0)`` by Cramer's rule; with ``d_z = 1``, ``s`` is z.
    """
    e1, e2 = v1 - v0, v2 - v0
    p = np.cross(d, e2)
    det = np.einsum("ij,ij->i", e1, p)
    det = np.where(np.abs(det) < 1e-300, 1e-300, det)
    tvec = -v0
    b1 = np.einsum("ij,ij->i", tvec, p) / det
    q = np.cross(tvec, e1)
    b2 = np.einsum("ij,ij->i", d, q) / det
    s = np.einsum("ij,ij->i", e2, q) / det
    return np.column_stack([b1, b2]), s
