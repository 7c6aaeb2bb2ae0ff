"""CPU rasterizer in numba: needs no GL, EGL or GPU (the fallback backend).

It mimics what GL (Mesa llvmpipe) does, so that its images agree with the ``egl`` backend:
vertex window coordinates are computed in float32 from the same projection matrix and snapped to
1/256 pixel before the coverage test (llvmpipe's 8 sub-pixel bits), a
pixel is covered when its sample point lies inside the triangle with Direct3D's top-left rule in
image coordinates (what llvmpipe applies with the row order ``gl_projection`` sets up), triangles
are clipped against the near plane, and the nearest fragment wins with the earlier one kept on
ties (``GL_LESS``). Depth and barycentrics are exact: the pixel ray is intersected with the
triangle's plane in float64, which is the perspective-correct interpolation GL approximates.
"""

from __future__ import annotations

import numpy as np

from repro.render.base import BaseRenderer, Raster
from repro.render.scene import RenderScene, gl_projection


class NumbaRenderer(BaseRenderer):
    """Z-buffer rasterizer on the CPU (numba), same conventions as the ``egl`` backend.

    The kernel is compiled on first use (cached on disk by numba afterwards).
    """

    name = "numba"

    def __init__(self) -> None:
        self._kernel = None

    def _raster_kernel(self):
        if self._kernel is None:
            from repro.render._cpu_kernels import raster_mesh

            self._kernel = raster_mesh
        return self._kernel

    def _rasterize(self, scene: RenderScene, barycentrics: bool, coverage: bool) -> Raster:
        kernel = self._raster_kernel()
        H, W = scene.size
        near, far = scene.clip_range()
        P = gl_projection(scene.camera, near, far, scene.sample_offset).astype(np.float32)
        Kinv = np.linalg.inv(scene.camera.K)
        zbuf = np.full((H, W), np.inf)
        ibuf = np.full((H, W), -1, np.int32)
        tbuf = np.full((H, W), -1, np.int32)
        bbuf = np.zeros((H, W, 2) if barycentrics else (1, 1, 2), np.float32)
        n = len(scene.instances)
        cover = np.zeros((n, H, W) if coverage else (max(n, 1), 1, 1), np.bool_)
        for k, inst in enumerate(scene.instances):
            vc = np.ascontiguousarray(inst.camera_vertices())
            faces = np.ascontiguousarray(inst.model.faces)
            kernel(vc, faces, P, Kinv, float(scene.sample_offset), near, far, k, zbuf, ibuf, tbuf, bbuf,
                   barycentrics, cover[k], coverage)
        empty = ibuf < 0
        depth = np.where(empty, 0.0, zbuf).astype(np.float32)
        bary = None
        if barycentrics:
            bbuf[empty] = 0.0
            bary = bbuf
        return Raster(depth=depth, instance=ibuf, triangle=tbuf, barycentrics=bary,
                      coverage=cover if coverage else None)
