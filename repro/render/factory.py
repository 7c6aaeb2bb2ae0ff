"""Choosing a rendering backend: ``get_renderer("auto" | "egl" | "numba" | "nvdiffrast")``."""

from __future__ import annotations

import logging
from typing import Literal

from repro.render.base import BaseRenderer

log = logging.getLogger(__name__)

Backend = Literal["auto", "egl", "numba", "nvdiffrast"]
BACKENDS: tuple[str, ...] = ("egl", "numba", "nvdiffrast")


def nvdiffrast_available() -> bool:
    """True when ``nvdiffrast.torch`` imports and torch sees a CUDA device."""
    try:
        import nvdiffrast.torch  # noqa: F401
        import torch
    except Exception:
        return False
    return bool(torch.cuda.is_available())


def get_renderer(backend: Backend | str = "auto", **kwargs) -> BaseRenderer:
    """A renderer for ``backend``; keyword arguments go to the backend's constructor.

    ``auto`` picks ``nvdiffrast`` when it imports and CUDA is available, else ``egl`` when an EGL
    context can be created (checked by creating it, which the returned renderer then reuses),
    else the ``numba`` CPU rasterizer, logging why it fell back.
    """
    if backend == "auto":
        if nvdiffrast_available():
            log.info("rendering with nvdiffrast (CUDA)")
            return _make("nvdiffrast", **kwargs)
        from repro.render.egl import EGLUnavailableError

        renderer = _make("egl", **kwargs)
        try:
            _ = renderer.context
        except EGLUnavailableError as exc:
            log.warning("EGL rendering unavailable (%s); falling back to the numba CPU rasterizer", exc)
            return _make("numba")
        return renderer
    if backend not in BACKENDS:
        raise ValueError(f"unknown render backend {backend!r}; choose from auto, {', '.join(BACKENDS)}")
    return _make(backend, **kwargs)


def _make(backend: str, **kwargs) -> BaseRenderer:
    if backend == "egl":
        from repro.render.egl import EGLRenderer

        return EGLRenderer(**kwargs)
    if backend == "numba":
        from repro.render.cpu import NumbaRenderer

        return NumbaRenderer(**kwargs)
    from repro.render.cuda import NvdiffrastRenderer

    return NvdiffrastRenderer(**kwargs)
