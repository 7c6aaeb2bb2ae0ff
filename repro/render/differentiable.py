"""Differentiable rendering for render-and-compare: rasterize with any backend, interpolate in torch.

The split is the one nvdiffrast makes. Rasterization (which triangle is seen at which pixel) is
piecewise constant in the pose and done without gradients by any ``Renderer``. Given the triangle
ids, everything else is a smooth function of the pose: for each covered pixel the ray through it is
intersected with its triangle's plane in the camera frame, which gives z and perspective-correct
barycentrics in closed form, and attributes (depth, model coordinates, normals, colour) are
interpolated with them. Gradients therefore reach the rotation and translation (e.g. an
axis-angle vector) exactly, for fixed visibility; silhouette gradients (pixels changing triangle)
are not modelled, as in nvdiffrast without ``antialias``.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import numpy as np
import torch

from repro.render.base import Renderer
from repro.render.scene import RenderInstance, RenderScene, pixel_rays
from repro.types import CameraIntrinsics, ObjectModel

ATTRIBUTES = frozenset({"depth", "mask", "xyz", "normals", "rgb"})


def axis_angle_to_matrix(rotvec: torch.Tensor) -> torch.Tensor:
    """Rodrigues' formula for (..., 3) axis-angle vectors -> (..., 3, 3), smooth at zero angle."""
    theta2 = (rotvec * rotvec).sum(-1, keepdim=True)
    small = theta2 < 1e-8
    theta2_safe = torch.where(small, torch.ones_like(theta2), theta2)
    theta = torch.sqrt(theta2_safe)
    a = torch.where(small, 1.0 - theta2 / 6.0, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24.0, (1.0 - torch.cos(theta)) / theta2_safe)
    x, y, z = rotvec.unbind(-1)
    zero = torch.zeros_like(x)
    skew = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(*rotvec.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=rotvec.dtype, device=rotvec.device).expand_as(skew)
    return eye + a[..., None] * skew + b[..., None] * (skew @ skew)


def matrix_to_axis_angle(R: np.ndarray) -> np.ndarray:
    """Inverse of ``axis_angle_to_matrix`` for a single rotation (numpy, float64)."""
    from scipy.spatial.transform import Rotation

    return Rotation.from_matrix(np.asarray(R, dtype=np.float64)).as_rotvec()


def ray_triangle_torch(d: torch.Tensor, v0: torch.Tensor, v1: torch.Tensor,
                       v2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Intersect rays ``s * d`` from the origin with triangles (all (M, 3)).

    Returns barycentrics of v1 and v2 (M, 2) and ``s`` (M,) — the camera z when ``d_z = 1``.
    Differentiable in the vertices.
    """
    e1, e2 = v1 - v0, v2 - v0
    p = torch.cross(d, e2, dim=-1)
    det = (e1 * p).sum(-1)
    tiny = torch.finfo(det.dtype).tiny
    det = torch.where(det.abs() < tiny, torch.full_like(det, tiny), det)
    tvec = -v0
    q = torch.cross(tvec, e1, dim=-1)
    b1 = (tvec * p).sum(-1) / det
    b2 = (d * q).sum(-1) / det
    s = (e2 * q).sum(-1) / det
    return torch.stack([b1, b2], dim=-1), s


@dataclass(frozen=True, eq=False)
class TriangleMap:
    """The non-differentiable part: which triangle covers which pixel, for B poses of one model.

    ``triangles`` (B, H, W) int64 face index (-1 = background); ``camera`` and ``sample_offset``
    define the pixel rays.
    """

    triangles: torch.Tensor
    camera: CameraIntrinsics
    sample_offset: float = 0.0

    @property
    def mask(self) -> torch.Tensor:
        return self.triangles >= 0


class DifferentiableRenderer:
    """Render-and-compare helper: ``rasterize`` (any backend, no gradients) then ``interpolate``
    (torch, gradients to ``R``/``t``). ``render`` does both with a detached pose.
    """

    def __init__(self, renderer: Renderer, dtype: torch.dtype = torch.float64,
                 device: str | torch.device = "cpu") -> None:
        self.renderer = renderer
        self.dtype = dtype
        self.device = torch.device(device)
        self._models: dict[str, dict[str, torch.Tensor | None]] = {}

    def rasterize(self, model: ObjectModel, camera: CameraIntrinsics, R: np.ndarray | torch.Tensor,
                  t: np.ndarray | torch.Tensor, sample_offset: float = 0.0, **scene_kwargs) -> TriangleMap:
        """Triangle ids for B poses (``R`` (B, 3, 3), ``t`` (B, 3) mm) with the wrapped renderer."""
        R = _numpy(R).reshape(-1, 3, 3)
        t = _numpy(t).reshape(-1, 3)
        scenes = [RenderScene(camera, (RenderInstance(model, r, tt),), sample_offset=sample_offset, **scene_kwargs)
                  for r, tt in zip(R, t, strict=True)]
        results = self.renderer.render_batch(scenes, outputs={"ids"})
        tris = np.stack([np.where(r.instance_ids == 0, r.triangle_ids, -1) for r in results])
        return TriangleMap(torch.as_tensor(tris, dtype=torch.int64, device=self.device), camera, sample_offset)

    def interpolate(self, model: ObjectModel, R: torch.Tensor, t: torch.Tensor, tri_map: TriangleMap,
                    attributes: Collection[str] = ("depth", "mask"), light_direction=(0.0, 0.0, 1.0),
                    ambient: float = 0.3, diffuse: float = 0.7) -> dict[str, torch.Tensor]:
        """Attributes at the pixels of ``tri_map`` for poses ``R`` (B, 3, 3), ``t`` (B, 3) (tensors).

        Returns (B, H, W[, C]) tensors: ``depth`` (z, mm, 0 = background), ``mask`` (float 0/1, no
        gradient), ``xyz`` (model coordinates, mm), ``normals`` (camera frame, unit), ``rgb``
        (0..1 floats, ambient + Lambertian as in ``Light``).
        """
        unknown = set(attributes) - ATTRIBUTES
        if unknown:
            raise ValueError(f"unknown attributes {sorted(unknown)}; choose from {sorted(ATTRIBUTES)}")
        R = R.to(self.dtype).reshape(-1, 3, 3)
        t = t.to(self.dtype).reshape(-1, 3)
        B, H, W = tri_map.triangles.shape
        if len(R) != B or len(t) != B:
            raise ValueError(f"{len(R)} rotations / {len(t)} translations for {B} rasterized poses")
        m = self._model_tensors(model)
        flat = tri_map.triangles.reshape(-1)
        pix = torch.nonzero(flat >= 0).squeeze(1)
        batch = torch.div(pix, H * W, rounding_mode="floor")
        tri = flat[pix]
        rays = torch.as_tensor(pixel_rays(tri_map.camera, tri_map.sample_offset), dtype=self.dtype,
                               device=self.device).reshape(-1, 3)[pix % (H * W)]
        fv = m["faces"][tri]
        verts = m["vertices"][fv]  # (M, 3, 3) model frame
        Rb, tb = R[batch], t[batch]
        cam = torch.einsum("mij,mkj->mki", Rb, verts) + tb[:, None, :]
        bary, z = ray_triangle_torch(rays, cam[:, 0], cam[:, 1], cam[:, 2])
        w = torch.cat([1.0 - bary.sum(-1, keepdim=True), bary], dim=-1)

        out: dict[str, torch.Tensor] = {}
        n_pix = B * H * W

        def scatter(values: torch.Tensor) -> torch.Tensor:
            shape = (n_pix, *values.shape[1:])
            img = torch.zeros(shape, dtype=values.dtype, device=self.device).index_put((pix,), values)
            return img.reshape(B, H, W, *values.shape[1:])

        want = set(attributes)
        if "depth" in want:
            out["depth"] = scatter(z)
        if "mask" in want:
            out["mask"] = tri_map.mask.to(self.dtype)
        if "xyz" in want:
            out["xyz"] = scatter(torch.einsum("mk,mkc->mc", w, verts))
        normals = None
        if want & {"normals", "rgb"}:
            if m["normals"] is not None:
                n_model = torch.einsum("mk,mkc->mc", w, m["normals"][fv])
            else:
                n_model = torch.cross(verts[:, 1] - verts[:, 0], verts[:, 2] - verts[:, 0], dim=-1)
            n_cam = torch.einsum("mij,mj->mi", Rb, n_model)
            normals = n_cam / n_cam.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            if "normals" in want:
                out["normals"] = scatter(normals)
        if "rgb" in want:
            colors = m["colors"]
            albedo = (torch.einsum("mk,mkc->mc", w, colors[fv]) if colors is not None
                      else torch.full((len(pix), 3), 0.5, dtype=self.dtype, device=self.device))
            d = torch.as_tensor(light_direction, dtype=self.dtype, device=self.device)
            d = d / d.norm()
            lambert = (-(normals @ d)).clamp_min(0.0)
            shade = (ambient + diffuse * lambert).clamp_max(1.0)
            out["rgb"] = scatter(albedo * shade[:, None])
        return out

    def render(self, model: ObjectModel, camera: CameraIntrinsics, R: torch.Tensor, t: torch.Tensor,
               attributes: Collection[str] = ("depth", "mask"), sample_offset: float = 0.0,
               **kwargs) -> dict[str, torch.Tensor]:
        """Rasterize at the detached pose, then interpolate with gradients to ``R``/``t``."""
        tri_map = self.rasterize(model, camera, R.detach(), t.detach(), sample_offset)
        return self.interpolate(model, R, t, tri_map, attributes, **kwargs)

    def _model_tensors(self, model: ObjectModel) -> dict[str, torch.Tensor | None]:
        key = model.content_hash
        if key not in self._models:
            def tensor(a):
                return None if a is None else torch.as_tensor(np.array(a), dtype=self.dtype, device=self.device)

            self._models[key] = {
                "vertices": tensor(model.vertices),
                "faces": torch.as_tensor(np.array(model.faces), dtype=torch.int64, device=self.device),
                "normals": tensor(model.normals),
                "colors": tensor(model.colors),
            }
        return self._models[key]


def _numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().to(torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)
