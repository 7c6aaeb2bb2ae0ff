"""numba kernels of the CPU rasterizer (see ``repro.render.cpu``); imports numba at load time."""

from __future__ import annotations

import math

import numpy as np
from numba import njit

SUBPIXEL = 256.0
"""Fixed-point resolution of vertex positions (llvmpipe uses 8 sub-pixel bits)."""


@njit(cache=True, inline="always")
def _fill(ax, ay, bx, by, cx_, cy_, W, H, tri, inst, v0, nrm, nd0, g1, g2, Kinv, off, far,
          zbuf, ibuf, tbuf, bbuf, want_bary, cover, want_cover):
    # Snap to the fixed-point grid (exact integers in float64 for |coords| < 2^18 px).
    Ax = np.rint(ax * SUBPIXEL)
    Ay = np.rint(ay * SUBPIXEL)
    Bx = np.rint(bx * SUBPIXEL)
    By = np.rint(by * SUBPIXEL)
    Cx = np.rint(cx_ * SUBPIXEL)
    Cy = np.rint(cy_ * SUBPIXEL)
    area = (Bx - Ax) * (Cy - Ay) - (By - Ay) * (Cx - Ax)
    if area == 0.0:
        return
    if area < 0.0:
        Bx, By, Cx, Cy = Cx, Cy, Bx, By
    xmin = max(math.ceil(min(Ax, Bx, Cx) / SUBPIXEL), 0)
    xmax = min(math.floor(max(Ax, Bx, Cx) / SUBPIXEL), W - 1)
    ymin = max(math.ceil(min(Ay, By, Cy) / SUBPIXEL), 0)
    ymax = min(math.floor(max(Ay, By, Cy) / SUBPIXEL), H - 1)
    if xmin > xmax or ymin > ymax:
        return
    # Edge P->Q: E(S) = (Qx-Px)(Sy-Py) - (Qy-Py)(Sx-Px) > 0 inside. Top-left rule (y down):
    # with this orientation a top edge has dy == 0 and dx > 0, a left edge has dy < 0; pixels
    # exactly on such edges are covered (E >= 0), on the others not (E > 0).
    e0dx, e0dy = Bx - Ax, By - Ay
    e1dx, e1dy = Cx - Bx, Cy - By
    e2dx, e2dy = Ax - Cx, Ay - Cy
    b0 = 0.0 if (e0dy < 0.0 or (e0dy == 0.0 and e0dx > 0.0)) else -1.0
    b1 = 0.0 if (e1dy < 0.0 or (e1dy == 0.0 and e1dx > 0.0)) else -1.0
    b2 = 0.0 if (e2dy < 0.0 or (e2dy == 0.0 and e2dx > 0.0)) else -1.0
    step0 = -e0dy * SUBPIXEL
    step1 = -e1dy * SUBPIXEL
    step2 = -e2dy * SUBPIXEL
    for j in range(ymin, ymax + 1):
        sy = j * SUBPIXEL
        sx = xmin * SUBPIXEL
        w0 = e0dx * (sy - Ay) - e0dy * (sx - Ax) + b0
        w1 = e1dx * (sy - By) - e1dy * (sx - Bx) + b1
        w2 = e2dx * (sy - Cy) - e2dy * (sx - Cx) + b2
        yv = j + off
        for i in range(xmin, xmax + 1):
            if w0 >= 0.0 and w1 >= 0.0 and w2 >= 0.0:
                xu = i + off
                dx = Kinv[0, 0] * xu + Kinv[0, 1] * yv + Kinv[0, 2]
                dy = Kinv[1, 0] * xu + Kinv[1, 1] * yv + Kinv[1, 2]
                dz = Kinv[2, 0] * xu + Kinv[2, 1] * yv + Kinv[2, 2]
                dx /= dz
                dy /= dz
                den = nrm[0] * dx + nrm[1] * dy + nrm[2]
                if den != 0.0:
                    z = nd0 / den
                    if z > 0.0 and z <= far:
                        if want_cover:
                            cover[j, i] = True
                        if z < zbuf[j, i]:
                            zbuf[j, i] = z
                            ibuf[j, i] = inst
                            tbuf[j, i] = tri
                            if want_bary:
                                px = z * dx - v0[0]
                                py = z * dy - v0[1]
                                pz = z - v0[2]
                                bbuf[j, i, 0] = g1[0] * px + g1[1] * py + g1[2] * pz
                                bbuf[j, i, 1] = g2[0] * px + g2[1] * py + g2[2] * pz
            w0 += step0
            w1 += step1
            w2 += step2

@njit(cache=True)
def raster_mesh(vc, faces, P, Kinv, off, near, far, inst, zbuf, ibuf, tbuf, bbuf, want_bary,
                cover, want_cover):
    """Rasterize one mesh (camera-frame vertices ``vc``) into the buffers; see ``repro.render.cpu``.

    ``P`` is the float32 GL projection (``gl_projection``); vertex window coordinates are computed
    with it in float32 like GL's vertex stage (without near clipping) so that coverage decisions
    at triangle edges match llvmpipe's bit for bit in almost all cases.
    """
    H, W = zbuf.shape
    half_w = np.float32(0.5 * W)
    half_h = np.float32(0.5 * H)
    half = np.float32(0.5)
    one = np.float32(1.0)
    nrm = np.empty(3)
    g1 = np.empty(3)
    g2 = np.empty(3)
    pxs = np.empty(4)
    pys = np.empty(4)
    poly = np.empty((4, 3))
    for f in range(faces.shape[0]):
        v0 = vc[faces[f, 0]]
        v1 = vc[faces[f, 1]]
        v2 = vc[faces[f, 2]]
        zmin = min(v0[2], v1[2], v2[2])
        zmax = max(v0[2], v1[2], v2[2])
        if zmax < near or zmin > far:
            continue
        e1x, e1y, e1z = v1[0] - v0[0], v1[1] - v0[1], v1[2] - v0[2]
        e2x, e2y, e2z = v2[0] - v0[0], v2[1] - v0[1], v2[2] - v0[2]
        nrm[0] = e1y * e2z - e1z * e2y
        nrm[1] = e1z * e2x - e1x * e2z
        nrm[2] = e1x * e2y - e1y * e2x
        nn = nrm[0] * nrm[0] + nrm[1] * nrm[1] + nrm[2] * nrm[2]
        if nn == 0.0:
            continue
        nd0 = nrm[0] * v0[0] + nrm[1] * v0[1] + nrm[2] * v0[2]
        if want_bary:
            # b1 = ((e2 x n) / |n|^2) . (P - v0), b2 = ((n x e1) / |n|^2) . (P - v0)
            g1[0] = (e2y * nrm[2] - e2z * nrm[1]) / nn
            g1[1] = (e2z * nrm[0] - e2x * nrm[2]) / nn
            g1[2] = (e2x * nrm[1] - e2y * nrm[0]) / nn
            g2[0] = (nrm[1] * e1z - nrm[2] * e1y) / nn
            g2[1] = (nrm[2] * e1x - nrm[0] * e1z) / nn
            g2[2] = (nrm[0] * e1y - nrm[1] * e1x) / nn
        # Clip against z >= near (Sutherland-Hodgman, one plane: 3 -> at most 4 vertices).
        n_poly = 0
        for k in range(3):
            a = vc[faces[f, k]]
            b = vc[faces[f, (k + 1) % 3]]
            a_in = a[2] >= near
            b_in = b[2] >= near
            if a_in:
                poly[n_poly, 0], poly[n_poly, 1], poly[n_poly, 2] = a[0], a[1], a[2]
                n_poly += 1
            if a_in != b_in:
                s = (near - a[2]) / (b[2] - a[2])
                poly[n_poly, 0] = a[0] + s * (b[0] - a[0])
                poly[n_poly, 1] = a[1] + s * (b[1] - a[1])
                poly[n_poly, 2] = near
                n_poly += 1
        for k in range(n_poly):
            x = np.float32(poly[k, 0])
            y = np.float32(poly[k, 1])
            z = np.float32(poly[k, 2])
            xc = P[0, 0] * x + P[0, 1] * y + P[0, 2] * z
            yc = P[1, 0] * x + P[1, 1] * y + P[1, 2] * z
            iw = one / z
            pxs[k] = (xc * iw) * half_w + half_w - half
            pys[k] = (yc * iw) * half_h + half_h - half
        for k in range(1, n_poly - 1):
            _fill(pxs[0], pys[0], pxs[k], pys[k], pxs[k + 1], pys[k + 1], W, H, f, inst, v0, nrm,
                  nd0, g1, g2, Kinv, off, far, zbuf, ibuf, tbuf, bbuf, want_bary, cover, want_cover)
