"""Headless OpenGL backend: moderngl on an EGL context (Mesa llvmpipe on CPU machines, or a GPU).

The GL context is created lazily by the renderer object and owned by it (no module-level state);
meshes are uploaded once per ``ObjectModel.content_hash`` and framebuffers once per image size.
The projection (``scene.gl_projection``) puts pixel ``(u, v)`` on the OpenCV image point
``(u + s, v + s)`` (s = ``scene.sample_offset``, 0 = OpenCV pixel centres); GL's half-pixel
centres are accounted for in it. Depth is the camera-frame z written by the fragment shader into a
float32 colour attachment (not the non-linear depth buffer, which only orders fragments): meshes
are uploaded in double precision and each fragment intersects its pixel ray with its triangle's
plane in double precision, so depth and perspective-correct barycentrics are exact to float32
rounding and agree with the numba backend. Instance and triangle ids go to an integer attachment,
barycentrics to a float attachment, for the shared deferred shading.

On a machine without a display, EGL needs ``EGL_PLATFORM=surfaceless``: the context creation sets
it in the process environment when it is not already set.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from repro.render.base import BaseRenderer, Raster
from repro.render.scene import RenderInstance, RenderScene, gl_projection
from repro.types import ObjectModel

log = logging.getLogger(__name__)

_VERTEX_SHADER = """
#version 410
uniform dmat3 u_R;      // model -> OpenCV camera rotation
uniform dvec3 u_t;      // translation (mm)
uniform mat4 u_proj;    // OpenCV camera frame -> clip space
in dvec3 in_v0;         // meshes are uploaded de-indexed; every vertex carries its triangle
in dvec3 in_v1;
in dvec3 in_v2;
flat out dvec3 f_v0;    // triangle in the camera frame: a vertex, the plane normal and the
flat out dvec3 f_n;     // gradients of the 2nd / 3rd barycentric coordinate
flat out dvec3 f_g1;
flat out dvec3 f_g2;
flat out int f_tri;
void main() {
    dvec3 v0 = u_R * in_v0 + u_t;
    dvec3 v1 = u_R * in_v1 + u_t;
    dvec3 v2 = u_R * in_v2 + u_t;
    dvec3 e1 = v1 - v0;
    dvec3 e2 = v2 - v0;
    dvec3 n = cross(e1, e2);
    double nn = max(dot(n, n), 1e-300);
    f_v0 = v0;
    f_n = n;
    f_g1 = cross(e2, n) / nn;
    f_g2 = cross(n, e1) / nn;
    f_tri = gl_VertexID / 3;
    int k = gl_VertexID % 3;
    dvec3 p = k == 0 ? v0 : (k == 1 ? v1 : v2);
    gl_Position = u_proj * vec4(vec3(p), 1.0);
}
"""

_FRAGMENT_SHADER = """
#version 410
uniform int u_inst;
uniform dmat3 u_Kinv;
uniform double u_offset;  // sample offset minus GL's half-pixel centre
flat in dvec3 f_v0;
flat in dvec3 f_n;
flat in dvec3 f_g1;
flat in dvec3 f_g2;
flat in int f_tri;
layout(location = 0) out float o_depth;
layout(location = 1) out ivec2 o_ids;
layout(location = 2) out vec2 o_bary;
void main() {
    // Intersect the pixel ray with the triangle's plane in double precision: exact z and
    // perspective-correct barycentrics, the same computation as the numba backend.
    dvec3 ray = u_Kinv * dvec3(double(gl_FragCoord.x) + u_offset, double(gl_FragCoord.y) + u_offset, 1.0);
    ray /= ray.z;
    double z = dot(f_n, f_v0) / dot(f_n, ray);
    dvec3 d = z * ray - f_v0;
    o_depth = float(z);
    o_ids = ivec2(u_inst + 1, f_tri + 1);  // 0 = background after the clear
    o_bary = vec2(float(dot(f_g1, d)), float(dot(f_g2, d)));
}
"""


class EGLUnavailableError(RuntimeError):
    """No usable EGL / OpenGL 4.1 context (missing libEGL or Mesa drivers, or moderngl)."""


@dataclass
class _Target:
    fbo: Any
    cover_fbo: Any
    attachments: tuple[Any, ...]


class EGLRenderer(BaseRenderer):
    """Rasterize with OpenGL 4.1 (for double-precision vertex attributes) through moderngl's EGL
    backend.

    ``max_meshes`` bounds the GPU mesh cache (least recently used models are released). Not
    thread-safe: use one renderer per thread (a GL context is current in one thread at a time).
    """

    name = "egl"

    def __init__(self, max_meshes: int = 256, max_targets: int = 4) -> None:
        self.max_meshes = max_meshes
        self.max_targets = max_targets
        self._ctx: Any = None
        self._prog: Any = None
        self._meshes: OrderedDict[str, tuple[Any, Any, int]] = OrderedDict()
        self._targets: OrderedDict[tuple[int, int], _Target] = OrderedDict()

    @property
    def context(self) -> Any:
        """The moderngl context, created on first use."""
        if self._ctx is None:
            ctx = self._create_context()
            try:
                self._prog = ctx.program(vertex_shader=_VERTEX_SHADER, fragment_shader=_FRAGMENT_SHADER)
            except Exception as exc:
                ctx.release()
                raise EGLUnavailableError(f"the OpenGL driver cannot build the shaders: {exc}") from None
            self._ctx = ctx
        return self._ctx

    @staticmethod
    def _create_context() -> Any:
        os.environ.setdefault("EGL_PLATFORM", "surfaceless")
        try:
            import moderngl
        except ImportError as exc:
            raise EGLUnavailableError(f"moderngl is not installed ({exc})") from None
        try:
            ctx = moderngl.create_context(standalone=True, backend="egl", require=410)
        except Exception as exc:
            raise EGLUnavailableError(f"cannot create an EGL OpenGL context: {exc}") from None
        log.debug("EGL context: %s / %s", ctx.info.get("GL_RENDERER"), ctx.info.get("GL_VERSION"))
        return ctx

    def close(self) -> None:
        """Release all GL objects and the context (idempotent)."""
        if self._ctx is None:
            return
        with self._ctx:
            for vbo, vao, _ in self._meshes.values():
                vao.release()
                vbo.release()
            for target in self._targets.values():
                _release_target(target)
            self._prog.release()
        self._meshes.clear()
        self._targets.clear()
        self._ctx.release()
        self._ctx = self._prog = None

    def _mesh(self, model: ObjectModel) -> tuple[Any, int]:
        key = model.content_hash
        if key in self._meshes:
            self._meshes.move_to_end(key)
        else:
            tri = model.vertices[model.faces]  # (F, 3 corners, 3)
            per_vertex = np.repeat(tri.reshape(-1, 1, 9), 3, axis=1)  # every corner carries its triangle
            vbo = self.context.buffer(np.ascontiguousarray(per_vertex, dtype=np.float64).tobytes())
            vao = self.context.vertex_array(self._prog, [(vbo, "3f8 3f8 3f8", "in_v0", "in_v1", "in_v2")])
            self._meshes[key] = (vbo, vao, 3 * len(tri))
            while len(self._meshes) > self.max_meshes:
                _, (old_vbo, old_vao, _) = self._meshes.popitem(last=False)
                old_vao.release()
                old_vbo.release()
        _, vao, n = self._meshes[key]
        return vao, n

    def _target(self, width: int, height: int) -> _Target:
        key = (width, height)
        if key in self._targets:
            self._targets.move_to_end(key)
            return self._targets[key]
        ctx = self.context
        size = (width, height)
        depth = ctx.renderbuffer(size, 1, dtype="f4")
        ids = ctx.renderbuffer(size, 2, dtype="i4")
        bary = ctx.renderbuffer(size, 2, dtype="f4")
        zbuf = ctx.depth_renderbuffer(size)
        cover = ctx.renderbuffer(size, 1, dtype="f4")
        target = _Target(fbo=ctx.framebuffer([depth, ids, bary], zbuf),
                         cover_fbo=ctx.framebuffer([cover]),
                         attachments=(depth, ids, bary, zbuf, cover))
        self._targets[key] = target
        while len(self._targets) > self.max_targets:
            _release_target(self._targets.popitem(last=False)[1])
        return target

    def _draw(self, inst: RenderInstance, index: int) -> None:
        vao, n = self._mesh(inst.model)
        self._prog["u_R"].write(np.ascontiguousarray(inst.R.T, dtype=np.float64).tobytes())
        self._prog["u_t"].write(np.ascontiguousarray(inst.t, dtype=np.float64).tobytes())
        self._prog["u_inst"].value = index
        vao.render(vertices=n)

    def _rasterize(self, scene: RenderScene, barycentrics: bool, coverage: bool) -> Raster:
        import moderngl

        ctx = self.context
        H, W = scene.size
        near, far = scene.clip_range()
        target = self._target(W, H)
        proj = gl_projection(scene.camera, near, far, scene.sample_offset)
        self._prog["u_proj"].write(proj.T.astype(np.float32).tobytes())
        Kinv = np.linalg.inv(scene.camera.K)
        self._prog["u_Kinv"].write(np.ascontiguousarray(Kinv.T, dtype=np.float64).tobytes())
        self._prog["u_offset"].value = float(scene.sample_offset) - 0.5
        ctx.disable(moderngl.CULL_FACE | moderngl.BLEND)

        target.fbo.use()
        ctx.enable(moderngl.DEPTH_TEST)
        ctx.depth_func = "<"
        target.fbo.clear(0.0, 0.0, 0.0, 0.0, depth=1.0)
        for k, inst in enumerate(scene.instances):
            self._draw(inst, k)
        depth = np.frombuffer(target.fbo.read(components=1, dtype="f4", attachment=0),
                              np.float32).reshape(H, W).copy()
        ids = np.frombuffer(target.fbo.read(components=2, dtype="i4", attachment=1),
                            np.int32).reshape(H, W, 2) - 1
        bary = None
        if barycentrics:
            bary = np.frombuffer(target.fbo.read(components=2, dtype="f4", attachment=2),
                                 np.float32).reshape(H, W, 2).copy()

        cover = None
        if coverage:
            cover = np.zeros((len(scene.instances), H, W), bool)
            target.cover_fbo.use()
            ctx.disable(moderngl.DEPTH_TEST)
            for k, inst in enumerate(scene.instances):
                box = _screen_box(scene, inst, near)
                if box is None:
                    continue
                x0, y0, x1, y1 = box
                viewport = (x0, y0, x1 - x0, y1 - y0)
                target.cover_fbo.clear(0.0, 0.0, 0.0, 0.0, viewport=viewport)
                self._draw(inst, k)
                crop = np.frombuffer(target.cover_fbo.read(viewport=viewport, components=1, dtype="f4"),
                                     np.float32).reshape(y1 - y0, x1 - x0)
                cover[k, y0:y1, x0:x1] = crop > 0
        return Raster(depth=depth, instance=np.ascontiguousarray(ids[..., 0]),
                      triangle=np.ascontiguousarray(ids[..., 1]), barycentrics=bary, coverage=cover)

    def _rasterize_many(self, scenes: Sequence[RenderScene], barycentrics: bool,
                        coverage: bool) -> list[Raster]:
        with self.context:
            return [self._rasterize(s, barycentrics, coverage) for s in scenes]


def _release_target(target: _Target) -> None:
    target.fbo.release()
    target.cover_fbo.release()
    for att in target.attachments:
        att.release()


def _screen_box(scene: RenderScene, inst: RenderInstance, near: float) -> tuple[int, int, int, int] | None:
    """Pixel box ``(x0, y0, x1, y1)`` (exclusive end) bounding the instance's projection, or None."""
    H, W = scene.size
    vc = inst.camera_vertices()
    if len(vc) == 0:
        return None
    if vc[:, 2].min() < near:
        return 0, 0, W, H
    uv = vc @ scene.camera.K.T
    uv = uv[:, :2] / uv[:, 2:3] - scene.sample_offset
    x0 = max(int(np.floor(uv[:, 0].min())) - 1, 0)
    y0 = max(int(np.floor(uv[:, 1].min())) - 1, 0)
    x1 = min(int(np.ceil(uv[:, 0].max())) + 2, W)
    y1 = min(int(np.ceil(uv[:, 1].max())) + 2, H)
    if x0 >= x1 or y0 >= y1:
        return None
    return x0, y0, x1, y1
