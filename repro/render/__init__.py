"""Rendering of object models in BOP poses: depth, ids, masks, normals, colour; differentiable
interpolation for render-and-compare; viewpoint sampling; verification against BOP data.

Backends (``get_renderer``): ``egl`` (OpenGL via moderngl, headless; default), ``numba`` (CPU
rasterizer, no system libraries; automatic fallback), ``nvdiffrast`` (CUDA). Importing this
package loads none of them.
"""

from repro.render.base import BaseRenderer, Raster, Renderer
from repro.render.factory import BACKENDS, get_renderer, nvdiffrast_available
from repro.render.helpers import large_canvas, render_instance_masks, render_poses, unoccluded_pixel_counts
from repro.render.scene import (
    BOP_SAMPLE_OFFSET,
    DEFAULT_OUTPUTS,
    OUTPUTS,
    Light,
    RenderInstance,
    RenderResult,
    RenderScene,
    gl_projection,
    pixel_rays,
    stack_results,
)

__all__ = [
    "BACKENDS",
    "BOP_SAMPLE_OFFSET",
    "DEFAULT_OUTPUTS",
    "OUTPUTS",
    "BaseRenderer",
    "Light",
    "Raster",
    "RenderInstance",
    "RenderResult",
    "RenderScene",
    "Renderer",
    "get_renderer",
    "gl_projection",
    "large_canvas",
    "nvdiffrast_available",
    "pixel_rays",
    "render_instance_masks",
    "render_poses",
    "stack_results",
    "unoccluded_pixel_counts",
]
