"""CUDA backend on nvdiffrast: ``rasterize`` -> exact depth/barycentrics -> optional ``antialias``.

nvdiffrast takes clip-space positions; ``gl_projection`` gives them with the same pixel convention
as the ``egl`` backend (nvdiffrast, like GL, puts pixel centres at half-integers in window
coordinates and stores image row 0 at clip y = -1, which ``gl_projection`` maps to image row 0,
so no flip is needed). From the rasterizer only coverage and triangle ids are used: depth and
perspective-correct barycentrics are recomputed in float64 by intersecting the pixel rays with
the triangles (what ``dr.interpolate`` does in float32), so depth agrees with the other backends
to float precision. With ``antialias=True`` the ``rgb`` output goes through ``dr.antialias``.

Scenes of a batch that show the same models in the same order at the same image size are
rasterized in one call (nvdiffrast's instanced mode): e.g. many pose hypotheses of one object.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from typing import Any

import numpy as np

from repro.render.base import BaseRenderer, Raster
from repro.render.scene import RenderResult, RenderScene, gl_projection, pixel_rays

log = logging.getLogger(__name__)


class NvdiffrastRenderer(BaseRenderer):
    """Rasterize with nvdiffrast's CUDA rasterizer (``dr.RasterizeCudaContext``).

    ``device``: a CUDA device; the context is created on first use and owned by the renderer.
    ``max_batch`` bounds the number of scenes rasterized in one call.
    """

    name = "nvdiffrast"

    def __init__(self, device: str = "cuda", antialias: bool = False, max_batch: int = 64) -> None:
        self.device = device
        self.antialias = antialias
        self.max_batch = max_batch
        self._glctx: Any = None
        self._meshes: dict[str, tuple[Any, Any]] = {}

    def _context(self) -> Any:
        if self._glctx is None:
            import nvdiffrast.torch as dr
            import torch

            if str(self.device).startswith("cuda") and not torch.cuda.is_available():
                raise RuntimeError("the nvdiffrast backend needs a CUDA device")
            self._glctx = dr.RasterizeCudaContext(device=self.device)
        return self._glctx

    def close(self) -> None:
        self._glctx = None
        self._meshes.clear()

    def _mesh(self, model) -> tuple[Any, Any]:
        import torch

        key = model.content_hash
        if key not in self._meshes:
            self._meshes[key] = (
                torch.as_tensor(np.array(model.vertices), dtype=torch.float64, device=self.device),
                torch.as_tensor(np.array(model.faces), dtype=torch.int64, device=self.device),
            )
        return self._meshes[key]

    def _rasterize(self, scene: RenderScene, barycentrics: bool, coverage: bool) -> Raster:
        return self._rasterize_group([scene], barycentrics, coverage)[0]

    def _rasterize_many(self, scenes: Sequence[RenderScene], barycentrics: bool,
                        coverage: bool) -> list[Raster]:
        out: list[Raster | None] = [None] * len(scenes)
        groups: dict[tuple, list[int]] = {}
        for i, s in enumerate(scenes):
            key = (s.size, tuple(inst.model.content_hash for inst in s.instances))
            groups.setdefault(key, []).append(i)
        for idx in groups.values():
            for start in range(0, len(idx), self.max_batch):
                chunk = idx[start:start + self.max_batch]
                for i, r in zip(chunk, self._rasterize_group([scenes[i] for i in chunk], barycentrics, coverage),
                                strict=True):
                    out[i] = r
        return out  # type: ignore[return-value]

    def _rasterize_group(self, scenes: Sequence[RenderScene], barycentrics: bool, coverage: bool) -> list[Raster]:
        """Scenes with the same models (in order) and image size, in nvdiffrast's instanced mode."""
        import nvdiffrast.torch as dr
        import torch

        glctx = self._context()
        dev = self.device
        H, W = scenes[0].size
        B = len(scenes)
        n_inst = len(scenes[0].instances)
        if n_inst == 0:
            return [Raster(depth=np.zeros((H, W), np.float32), instance=np.full((H, W), -1, np.int32),
                           triangle=np.full((H, W), -1, np.int32),
                           barycentrics=np.zeros((H, W, 2), np.float32) if barycentrics else None,
                           coverage=np.zeros((0, H, W), bool) if coverage else None) for _ in scenes]
        meshes = [self._mesh(inst.model) for inst in scenes[0].instances]
        v_counts = [len(v) for v, _ in meshes]
        f_counts = [len(f) for _, f in meshes]
        v_off = np.concatenate([[0], np.cumsum(v_counts)])
        f_off = np.concatenate([[0], np.cumsum(f_counts)])
        faces = torch.cat([f + int(v_off[k]) for k, (_, f) in enumerate(meshes)])
        tri32 = faces.to(torch.int32).contiguous()

        R = torch.as_tensor(np.stack([[i.R for i in s.instances] for s in scenes]), dtype=torch.float64, device=dev)
        t = torch.as_tensor(np.stack([[i.t for i in s.instances] for s in scenes]), dtype=torch.float64, device=dev)
        cam = torch.cat([torch.einsum("bij,vj->bvi", R[:, k], v) + t[:, k, None, :]
                         for k, (v, _) in enumerate(meshes)], dim=1)  # (B, V, 3) float64
        proj = torch.as_tensor(np.stack([gl_projection(s.camera, *s.clip_range(), s.sample_offset) for s in scenes]),
                               dtype=torch.float64, device=dev)
        cam_h = torch.cat([cam, torch.ones_like(cam[..., :1])], dim=-1)
        pos = torch.einsum("bij,bvj->bvi", proj, cam_h).to(torch.float32).contiguous()

        rast, _ = dr.rasterize(glctx, pos, tri32, resolution=[H, W], grad_db=False)
        tri_global = rast[..., 3].to(torch.int64) - 1  # (B, H, W)
        f_off_t = torch.as_tensor(f_off, dtype=torch.int64, device=dev)
        inst = torch.searchsorted(f_off_t[1:], tri_global, right=True)
        covered = tri_global >= 0
        inst = torch.where(covered, inst, torch.full_like(inst, -1))
        local = torch.where(covered, tri_global - f_off_t[inst.clamp_min(0)], torch.full_like(inst, -1))

        # Exact z and barycentrics (float64) from the pixel rays and the seen triangles.
        from repro.render.differentiable import ray_triangle_torch

        pix = torch.nonzero(covered.reshape(-1)).squeeze(1)
        b_idx = torch.div(pix, H * W, rounding_mode="floor")
        rays = torch.stack([torch.as_tensor(pixel_rays(s.camera, s.sample_offset), dtype=torch.float64, device=dev)
                            for s in scenes]).reshape(B * H * W, 3)[pix]
        fv = faces[tri_global.reshape(-1)[pix]]
        v = cam[b_idx[:, None], fv]  # (M, 3, 3)
        bary, z = ray_triangle_torch(rays, v[:, 0], v[:, 1], v[:, 2])
        depth = torch.zeros(B * H * W, dtype=torch.float64, device=dev).index_put((pix,), z).reshape(B, H, W)
        bary_img = None
        if barycentrics:
            bary_img = torch.zeros(B * H * W, 2, dtype=torch.float64, device=dev).index_put((pix,), bary)
            bary_img = bary_img.reshape(B, H, W, 2).to(torch.float32).cpu().numpy()

        cover = None
        if coverage:
            cover = np.zeros((B, n_inst, H, W), bool)
            for k in range(n_inst):
                sub = (tri32[int(f_off[k]):int(f_off[k + 1])]).contiguous()
                r_k, _ = dr.rasterize(glctx, pos, sub, resolution=[H, W], grad_db=False)
                cover[:, k] = (r_k[..., 3] > 0).cpu().numpy()

        depth_np = depth.to(torch.float32).cpu().numpy()
        inst_np = inst.to(torch.int32).cpu().numpy()
        local_np = local.to(torch.int32).cpu().numpy()
        return [Raster(depth=depth_np[b], instance=inst_np[b], triangle=local_np[b],
                       barycentrics=None if bary_img is None else bary_img[b],
                       coverage=None if cover is None else cover[b],
                       backend_data=(rast[b:b + 1], pos[b:b + 1], tri32))
                for b in range(B)]

    def _finish(self, scene: RenderScene, raster: Raster, result: RenderResult,
                outputs: Collection[str]) -> RenderResult:
        """Antialias ``rgb`` with ``dr.antialias`` when enabled."""
        if not (self.antialias and result.rgb is not None and raster.backend_data is not None):
            return result
        import dataclasses

        import nvdiffrast.torch as dr
        import torch

        rast, pos, tri = raster.backend_data
        color = torch.as_tensor(result.rgb, dtype=torch.float32, device=self.device)[None] / 255.0
        aa = dr.antialias(color.contiguous(), rast, pos, tri)[0]
        rgb = (aa.clamp(0, 1) * 255.0).round().to(torch.uint8).cpu().numpy()
        return dataclasses.replace(result, rgb=rgb)
