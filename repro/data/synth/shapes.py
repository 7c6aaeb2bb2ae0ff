"""Procedural triangle meshes for the synthetic datasets: primitives, composition and texturing.

Units are whatever the caller uses (millimetres for the BOP-style instance datasets, metres for
the NOCS-style category datasets). Every primitive returns a ``Mesh`` whose triangles are wound
counter-clockwise seen from outside (``cross(v1 - v0, v2 - v0)`` points out of the solid) and
whose smooth patches share vertices, while creases (box edges, can rims) have split vertices, so
``vertex_normals`` gives smooth shading where the surface is smooth and sharp edges elsewhere.

Appearance is stored as dense per-vertex colours, the one appearance channel that survives a
round trip through BOP PLY files written by ``BopWriter`` (it writes no texture images).
Primitives carry a UV parameterisation, so a generated texture image can be "baked" into vertex
colours with ``apply_texture``; ``max_edge`` arguments control the vertex density and hence the
texture resolution. Colours can also come from any function of the vertex positions
(``color_by``), which is how symmetric objects get appearance that respects their symmetry.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from repro.types import ContinuousSymmetry, ObjectModel

__all__ = [
    "Mesh",
    "apply_texture",
    "band_colors",
    "box",
    "color_by",
    "cone",
    "cylinder",
    "icosphere",
    "merge",
    "mesh_diameter",
    "mesh_to_model",
    "paint",
    "plane",
    "procedural_texture",
    "revolve",
    "rotation_about",
    "subdivide",
    "torus_arc",
    "transform",
    "value_noise",
    "vertex_normals",
]


# --------------------------------------------------------------------------- the mesh record


@dataclass(frozen=True, eq=False)
class Mesh:
    """A triangle mesh: ``vertices`` (N, 3) float64, ``faces`` (F, 3) int64, optional per-vertex
    ``colors`` (N, 3) in [0, 1], ``uv`` (N, 2) texture coordinates (v up) and ``normals`` (N, 3)."""

    vertices: np.ndarray
    faces: np.ndarray
    colors: np.ndarray | None = None
    uv: np.ndarray | None = None
    normals: np.ndarray | None = None

    def __post_init__(self) -> None:
        v = np.asarray(self.vertices, dtype=np.float64).reshape(-1, 3)
        f = np.asarray(self.faces, dtype=np.int64).reshape(-1, 3)
        if len(f) and (f.min() < 0 or f.max() >= len(v)):
            raise ValueError("face index out of range")
        object.__setattr__(self, "vertices", v)
        object.__setattr__(self, "faces", f)
        for name, width in (("colors", 3), ("uv", 2), ("normals", 3)):
            val = getattr(self, name)
            if val is not None:
                arr = np.asarray(val, dtype=np.float64)
                if arr.shape != (len(v), width):
                    raise ValueError(f"{name}: expected shape ({len(v)}, {width}), got {arr.shape}")
                object.__setattr__(self, name, arr)

    @property
    def n_vertices(self) -> int:
        return len(self.vertices)

    @property
    def n_faces(self) -> int:
        return len(self.faces)

    @property
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Axis-aligned bounding box ``(min, max)``."""
        return self.vertices.min(axis=0), self.vertices.max(axis=0)

    def area(self) -> float:
        tri = self.vertices[self.faces]
        return float(0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1).sum())


# --------------------------------------------------------------------------- small math helpers


def rotation_about(axis: Sequence[float], angle: float) -> np.ndarray:
    """3x3 rotation by ``angle`` radians about ``axis`` (Rodrigues)."""
    a = np.asarray(axis, dtype=np.float64)
    a = a / np.linalg.norm(a)
    K = np.array([[0.0, -a[2], a[1]], [a[2], 0.0, -a[0]], [-a[1], a[0], 0.0]])
    return np.eye(3) + math.sin(angle) * K + (1.0 - math.cos(angle)) * (K @ K)


def _triangle_areas(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    tri = v[f]
    return 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)


def vertex_normals(mesh: Mesh) -> np.ndarray:
    """Area-weighted vertex normals (unit length; zero for unused vertices)."""
    v, f = mesh.vertices, mesh.faces
    fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])  # length = 2 * area
    n = np.zeros_like(v)
    for k in range(3):
        np.add.at(n, f[:, k], fn)
    norm = np.linalg.norm(n, axis=1, keepdims=True)
    return np.divide(n, norm, out=np.zeros_like(n), where=norm > 0)


def _compact(mesh: Mesh, eps: float = 0.0) -> Mesh:
    """Drop degenerate triangles (area <= eps) and unused vertices."""
    f = mesh.faces
    if len(f):
        keep = (f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2])
        keep &= _triangle_areas(mesh.vertices, f) > eps
        f = f[keep]
    used = np.zeros(len(mesh.vertices), bool)
    used[f.ravel()] = True
    remap = np.cumsum(used) - 1
    return Mesh(mesh.vertices[used], remap[f],
                None if mesh.colors is None else mesh.colors[used],
                None if mesh.uv is None else mesh.uv[used],
                None if mesh.normals is None else mesh.normals[used])


def _grid_faces(rows: int, cols: int, offset: int = 0) -> np.ndarray:
    """Two triangles per cell of a (rows+1) x (cols+1) vertex grid indexed ``i * (cols+1) + j``;
    the normal is d(col) x d(row)."""
    i, j = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    a = i * (cols + 1) + j
    b, c, d = a + 1, a + cols + 2, a + cols + 1
    f = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3), np.stack([a, c, d], -1).reshape(-1, 3)])
    return f + offset


# --------------------------------------------------------------------------- primitives


def box(size: Sequence[float], *, center: Sequence[float] = (0.0, 0.0, 0.0), max_edge: float | None = None) -> Mesh:
    """Axis-aligned box with each face a regular grid (cells no longer than ``max_edge``).

    UVs lay the six faces out in a 3x2 atlas (faces +x, -x, +y, -y, +z, -z, row by row from the
    bottom), so one texture image gives every face different content. The grids are symmetric
    about the face centres, so the vertex set is invariant under the box's 180-degree rotations.
    """
    size = np.asarray(size, dtype=np.float64)
    half = size / 2.0
    verts, faces, uvs = [], [], []
    margin = 0.02
    for axis in range(3):
        for sign in (1.0, -1.0):
            ua, va = ((axis + 1) % 3, (axis + 2) % 3) if sign > 0 else ((axis + 2) % 3, (axis + 1) % 3)
            nu = max(1, math.ceil(size[ua] / max_edge)) if max_edge else 1
            nv = max(1, math.ceil(size[va] / max_edge)) if max_edge else 1
            s = np.linspace(0.0, 1.0, nv + 1)
            r = np.linspace(0.0, 1.0, nu + 1)
            ss, rr = np.meshgrid(s, r, indexing="ij")  # rows follow v, columns follow u
            p = np.zeros((*ss.shape, 3))
            p[..., axis] = sign * half[axis]
            p[..., ua] = -half[ua] + rr * size[ua]
            p[..., va] = -half[va] + ss * size[va]
            face_idx = 2 * axis + (0 if sign > 0 else 1)
            col, row = face_idx % 3, face_idx // 3
            uv = np.stack([(col + margin + (1 - 2 * margin) * rr) / 3.0,
                           (row + margin + (1 - 2 * margin) * ss) / 2.0], -1)
            offset = sum(len(x) for x in verts)
            verts.append(p.reshape(-1, 3))
            uvs.append(uv.reshape(-1, 2))
            # grid normal is d(u) x d(v) = +axis for sign > 0 (cyclic axes), -axis otherwise.
            faces.append(_grid_faces(nv, nu, offset))
    v = np.concatenate(verts) + np.asarray(center, dtype=np.float64)
    mesh = Mesh(v, np.concatenate(faces), uv=np.concatenate(uvs))
    return replace(mesh, normals=vertex_normals(mesh))


def plane(size_x: float, size_y: float, *, segments: int = 1, center: Sequence[float] = (0.0, 0.0, 0.0)) -> Mesh:
    """A rectangle in the z = 0 plane (normal +z), UVs spanning [0, 1]^2."""
    n = max(1, int(segments))
    t = np.linspace(0.0, 1.0, n + 1)
    yy, xx = np.meshgrid(t, t, indexing="ij")
    v = np.stack([(xx - 0.5) * size_x, (yy - 0.5) * size_y, np.zeros_like(xx)], -1).reshape(-1, 3)
    v = v + np.asarray(center, dtype=np.float64)
    uv = np.stack([xx, yy], -1).reshape(-1, 2)
    return Mesh(v, _grid_faces(n, n), uv=uv, normals=np.tile([0.0, 0.0, 1.0], (len(v), 1)))


def _split_profile(profile: np.ndarray, closed: bool, crease_deg: float) -> list[np.ndarray]:
    """Split a polyline into runs at corners sharper than ``crease_deg`` (corner points repeat)."""
    pts = profile
    if closed:
        pts = np.concatenate([pts, pts[:1]])
    d = np.diff(pts, axis=0)
    d = d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-300)
    cos_c = math.cos(math.radians(crease_deg))
    corners = [i for i in range(1, len(pts) - 1) if float(d[i - 1] @ d[i]) < cos_c]
    runs, start = [], 0
    for c in corners:
        runs.append(pts[start:c + 1])
        start = c
    runs.append(pts[start:])
    if closed and len(runs) > 1 and float(d[-1] @ d[0]) >= cos_c:
        runs[0] = np.concatenate([runs[-1], runs[0][1:]])
        runs.pop()
    return runs


def _densify(run: np.ndarray, max_edge: float | None) -> np.ndarray:
    if not max_edge:
        return run
    out = [run[:1]]
    for a, b in itertools.pairwise(run):
        n = max(1, math.ceil(float(np.linalg.norm(b - a)) / max_edge))
        out.append(a + (b - a) * (np.arange(1, n + 1)[:, None] / n))
    return np.concatenate(out)


def revolve(profile: Sequence[Sequence[float]], segments: int = 48, *, closed: bool = False,
            smooth: bool = True, crease_deg: float = 35.0, max_edge: float | None = None) -> Mesh:
    """Surface of revolution of a profile ``[(r, z), ...]`` about the z axis.

    Traverse the profile so the solid lies on its left in the (r, z) half-plane (outer walls go
    up, a bottom cap goes outwards from the axis, a top cap inwards), which makes normals point
    out. Points with r = 0 become poles. ``closed`` joins the last point to the first (a ring
    cross-section). ``smooth=False`` gives each angular sector its own vertices (flat facets,
    e.g. a hex prism with ``segments=6``). Corners sharper than ``crease_deg`` split the
    vertices; ``max_edge`` subdivides long profile edges (denser texture along the profile).
    The angular samples are ``2 pi k / segments``, so the vertex set is invariant under rotations
    by multiples of that angle and under the flip ``theta -> -theta``.
    UVs: ``u`` = angle / 2 pi, ``v`` = arc length along the whole profile, normalised.
    """
    prof = np.asarray(profile, dtype=np.float64).reshape(-1, 2)
    if len(prof) < 2:
        raise ValueError("a profile needs at least two points")
    if np.any(prof[:, 0] < 0):
        raise ValueError("profile radii must be non-negative")
    runs = [_densify(r, max_edge) for r in _split_profile(prof, closed, crease_deg)]
    total = sum(float(np.linalg.norm(np.diff(r, axis=0), axis=1).sum()) for r in runs)
    theta = 2.0 * np.pi * np.arange(segments + 1) / segments
    theta[-1] = 0.0  # exact seam (the last column repeats the first position)
    verts, faces, uvs = [], [], []
    s0 = 0.0
    for run in runs:
        seg_len = np.linalg.norm(np.diff(run, axis=0), axis=1)
        s = s0 + np.concatenate([[0.0], np.cumsum(seg_len)])
        s0 = float(s[-1])
        sectors = [(0, segments)] if smooth else [(k, 1) for k in range(segments)]
        for j0, ncols in sectors:
            cols = np.arange(j0, j0 + ncols + 1)
            th = theta[cols]
            r, z = run[:, 0][:, None], run[:, 1][:, None]
            p = np.stack([r * np.cos(th)[None], r * np.sin(th)[None], np.broadcast_to(z, (len(run), len(th)))], -1)
            u = np.broadcast_to((cols / segments)[None], (len(run), len(th)))
            vv = np.broadcast_to((s / max(total, 1e-300))[:, None], (len(run), len(th)))
            offset = sum(len(x) for x in verts)
            verts.append(p.reshape(-1, 3))
            uvs.append(np.stack([u, vv], -1).reshape(-1, 2))
            faces.append(_grid_faces(len(run) - 1, ncols, offset))
    mesh = _compact(Mesh(np.concatenate(verts), np.concatenate(faces), uv=np.concatenate(uvs)))
    return _smooth_normals_per_patch(mesh)


def _smooth_normals_per_patch(mesh: Mesh) -> Mesh:
    """Vertex normals where coincident vertices *of one patch* (a revolve seam, a pole) are
    averaged together; patches are connected components of the face graph, so split creases
    stay sharp."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    v, f = mesh.vertices, mesh.faces
    n = len(v)
    edges = np.concatenate([f[:, [0, 1]], f[:, [1, 2]]])
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    raw = np.zeros_like(v)
    for k in range(3):
        np.add.at(raw, f[:, k], fn)
    key = np.concatenate([comp[:, None].astype(np.float64), np.round(v, 9)], axis=1)
    _, group = np.unique(key, axis=0, return_inverse=True)
    group = group.ravel()
    summed = np.zeros((group.max() + 1, 3))
    np.add.at(summed, group, raw)
    out = summed[group]
    norm = np.linalg.norm(out, axis=1, keepdims=True)
    return replace(mesh, normals=np.divide(out, norm, out=np.zeros_like(out), where=norm > 0))


def cylinder(radius: float, height: float, segments: int = 48, *, capped: bool = True,
             max_edge: float | None = None, center: Sequence[float] = (0.0, 0.0, 0.0)) -> Mesh:
    """Cylinder along z, centred at ``center`` (caps included unless ``capped=False``)."""
    h = height / 2.0
    prof = [(0.0, -h), (radius, -h), (radius, h), (0.0, h)] if capped else [(radius, -h), (radius, h)]
    return transform(revolve(prof, segments, max_edge=max_edge), t=center)


def cone(radius: float, height: float, segments: int = 48, *, capped: bool = True, top_radius: float = 0.0,
         max_edge: float | None = None, center: Sequence[float] = (0.0, 0.0, 0.0)) -> Mesh:
    """Cone (or frustum when ``top_radius`` > 0) along z with its base at z = 0, apex up."""
    prof = [(0.0, 0.0)] if capped else []
    prof += [(radius, 0.0), (top_radius, height)]
    if top_radius > 0 and capped:
        prof.append((0.0, height))
    return transform(revolve(prof, segments, max_edge=max_edge), t=center)


def icosphere(radius: float = 1.0, subdivisions: int = 2, *, center: Sequence[float] = (0.0, 0.0, 0.0)) -> Mesh:
    """Geodesic sphere (icosahedron subdivided ``subdivisions`` times); UVs are spherical
    (longitude, latitude) and have a seam, so prefer ``color_by`` for its appearance."""
    t = (1.0 + 5.0 ** 0.5) / 2.0
    v = np.array([[-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0], [0, -1, t], [0, 1, t], [0, -1, -t], [0, 1, -t],
                  [t, 0, -1], [t, 0, 1], [-t, 0, -1], [-t, 0, 1]], dtype=np.float64)
    f = np.array([[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4], [11, 10, 2],
                  [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8], [3, 8, 9], [4, 9, 5],
                  [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1]], dtype=np.int64)
    mesh = Mesh(v / np.linalg.norm(v, axis=1, keepdims=True), f)
    for _ in range(subdivisions):
        mesh = subdivide(mesh)
        mesh = Mesh(mesh.vertices / np.linalg.norm(mesh.vertices, axis=1, keepdims=True), mesh.faces)
    p = mesh.vertices
    uv = np.stack([(np.arctan2(p[:, 1], p[:, 0]) / (2 * np.pi)) % 1.0, np.arccos(np.clip(-p[:, 2], -1, 1)) / np.pi], -1)
    return Mesh(p * radius + np.asarray(center, dtype=np.float64), mesh.faces, uv=uv, normals=p.copy())


def torus_arc(major_radius: float, minor_radius: float, angle_start: float = 0.0, angle_end: float = 2 * np.pi,
              *, major_segments: int = 32, minor_segments: int = 16, capped: bool = False) -> Mesh:
    """A tube of radius ``minor_radius`` swept along a circular arc of radius ``major_radius`` in
    the x-z plane, centred at the origin; angles are measured from +x towards +z (radians).
    A mug handle is an arc from -pi/2 to pi/2 moved to the side of the body. UVs: u along the
    arc, v around the tube. ``capped`` closes the tube ends with flat disks."""
    phi = np.linspace(angle_start, angle_end, major_segments + 1)
    psi = 2.0 * np.pi * np.arange(minor_segments + 1) / minor_segments
    psi[-1] = 0.0
    P, S = np.meshgrid(phi, psi, indexing="ij")  # rows: along the arc, cols: around the tube
    radial = np.stack([np.cos(P), np.zeros_like(P), np.sin(P)], -1)
    side = np.broadcast_to(np.array([0.0, 1.0, 0.0]), radial.shape)
    n = np.cos(S)[..., None] * radial - np.sin(S)[..., None] * side
    p = major_radius * radial + minor_radius * n
    uv = np.stack([(P - angle_start) / max(angle_end - angle_start, 1e-300),
                   np.arange(minor_segments + 1)[None, :] / minor_segments + 0 * P], -1)
    # the grid's normal d(psi) x d(phi) points into the tube: reverse the winding.
    mesh = Mesh(p.reshape(-1, 3), _grid_faces(major_segments, minor_segments)[:, [0, 2, 1]], uv=uv.reshape(-1, 2),
                normals=n.reshape(-1, 3))
    if capped and abs(angle_end - angle_start) < 2 * np.pi - 1e-9:
        caps = []
        for k, ang in ((0, angle_start), (major_segments, angle_end)):
            ring = p[k, :-1]
            centre = major_radius * np.array([math.cos(ang), 0.0, math.sin(ang)])
            tangent = np.array([-math.sin(ang), 0.0, math.cos(ang)]) * (1.0 if k else -1.0)
            cv = np.concatenate([centre[None], ring])
            m = len(ring)
            cf = np.array([[0, 1 + i, 1 + (i + 1) % m] for i in range(m)])
            tri = cv[cf]
            if float(np.cross(tri[0, 1] - tri[0, 0], tri[0, 2] - tri[0, 0]) @ tangent) < 0:
                cf = cf[:, [0, 2, 1]]
            caps.append(Mesh(cv, cf, uv=np.zeros((len(cv), 2)), normals=np.tile(tangent, (len(cv), 1))))
        mesh = merge(mesh, *caps)
    return mesh


def subdivide(mesh: Mesh) -> Mesh:
    """Split every triangle into four at its edge midpoints (attributes interpolated linearly;
    shared edges share their midpoint, so the mesh stays watertight)."""
    v, f = mesh.vertices, mesh.faces
    edges = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
    uniq, inv = np.unique(edges, axis=0, return_inverse=True)
    inv = inv.reshape(3, -1).T + len(v)
    a, b, c = f[:, 0], f[:, 1], f[:, 2]
    ab, bc, ca = inv[:, 0], inv[:, 1], inv[:, 2]
    nf = np.concatenate([np.stack([a, ab, ca], 1), np.stack([ab, b, bc], 1), np.stack([ca, bc, c], 1),
                         np.stack([ab, bc, ca], 1)])

    def mid(attr: np.ndarray | None) -> np.ndarray | None:
        return None if attr is None else np.concatenate([attr, 0.5 * (attr[uniq[:, 0]] + attr[uniq[:, 1]])])

    normals = mid(mesh.normals)
    if normals is not None:
        normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-300)
    return Mesh(mid(v), nf, mid(mesh.colors), mid(mesh.uv), normals)


# --------------------------------------------------------------------------- composition


def transform(mesh: Mesh, R: np.ndarray | None = None, t: Sequence[float] = (0.0, 0.0, 0.0),
              scale: float | Sequence[float] = 1.0) -> Mesh:
    """``x -> R @ (scale * x) + t``; a negative determinant flips the winding to keep normals out."""
    S = np.diag(np.broadcast_to(np.asarray(scale, dtype=np.float64), (3,)))
    A = (np.eye(3) if R is None else np.asarray(R, dtype=np.float64)) @ S
    v = mesh.vertices @ A.T + np.asarray(t, dtype=np.float64)
    faces = mesh.faces if np.linalg.det(A) > 0 else mesh.faces[:, [0, 2, 1]]
    normals = None
    if mesh.normals is not None:
        normals = mesh.normals @ np.linalg.inv(A)
        normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-300)
    return Mesh(v, faces, mesh.colors, mesh.uv, normals)


def merge(*meshes: Mesh, default_color: Sequence[float] = (0.5, 0.5, 0.5)) -> Mesh:
    """Concatenate meshes; attributes missing on some parts are filled (grey colours, zero UVs,
    computed normals)."""
    if not meshes:
        raise ValueError("merge needs at least one mesh")
    offs = np.cumsum([0] + [m.n_vertices for m in meshes])
    faces = np.concatenate([m.faces + o for m, o in zip(meshes, offs, strict=False)])
    verts = np.concatenate([m.vertices for m in meshes])
    colors = uv = normals = None
    if any(m.colors is not None for m in meshes):
        colors = np.concatenate([m.colors if m.colors is not None else np.tile(default_color, (m.n_vertices, 1))
                                 for m in meshes])
    if any(m.uv is not None for m in meshes):
        uv = np.concatenate([m.uv if m.uv is not None else np.zeros((m.n_vertices, 2)) for m in meshes])
    if any(m.normals is not None for m in meshes):
        normals = np.concatenate([m.normals if m.normals is not None else vertex_normals(m) for m in meshes])
    return Mesh(verts, faces, colors, uv, normals)


# --------------------------------------------------------------------------- appearance


def paint(mesh: Mesh, color: Sequence[float]) -> Mesh:
    """A uniform colour (RGB in [0, 1]): a textureless object."""
    return replace(mesh, colors=np.tile(np.asarray(color, dtype=np.float64), (mesh.n_vertices, 1)))


def color_by(mesh: Mesh, fn: Callable[[np.ndarray], np.ndarray]) -> Mesh:
    """Colours from a function of the vertex positions ((N, 3) -> (N, 3) in [0, 1])."""
    return replace(mesh, colors=np.clip(np.asarray(fn(mesh.vertices), dtype=np.float64), 0.0, 1.0))


def band_colors(edges: Sequence[float], colors: Sequence[Sequence[float]], axis: int = 2
                ) -> Callable[[np.ndarray], np.ndarray]:
    """A ``color_by`` function of one coordinate only: ``colors[i]`` between ``edges[i-1]`` and
    ``edges[i]`` (len(colors) == len(edges) + 1). Bands about z keep rotational symmetry."""
    e = np.asarray(edges, dtype=np.float64)
    c = np.asarray(colors, dtype=np.float64)
    if len(c) != len(e) + 1:
        raise ValueError("need one more colour than band edges")
    return lambda v: c[np.searchsorted(e, v[:, axis], side="right")]


def apply_texture(mesh: Mesh, texture: np.ndarray) -> Mesh:
    """Bake an RGB uint8 texture (H, W, 3) into vertex colours by bilinear lookup at the UVs
    (v up, repeat wrapping: the convention of the renderer's texture shading)."""
    if mesh.uv is None:
        raise ValueError("mesh has no UV coordinates to sample the texture with")
    tex = np.asarray(texture, dtype=np.float64) / 255.0
    th, tw = tex.shape[:2]
    x = mesh.uv[:, 0] * tw - 0.5
    y = (1.0 - mesh.uv[:, 1]) * th - 0.5
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    xi, yi = x0.astype(np.int64), y0.astype(np.int64)

    def at(yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
        return tex[np.mod(yy, th), np.mod(xx, tw)]

    col = ((1 - fy) * ((1 - fx) * at(yi, xi) + fx * at(yi, xi + 1))
           + fy * ((1 - fx) * at(yi + 1, xi) + fx * at(yi + 1, xi + 1)))
    return replace(mesh, colors=col)


def value_noise(rng: np.random.Generator, shape: tuple[int, int], scales: Sequence[int] = (4, 8, 16, 32),
                persistence: float = 0.55) -> np.ndarray:
    """Fractal value noise in [0, 1], (H, W) float32: random lattices of growing resolution,
    upsampled bicubically and summed with geometrically decreasing weights."""
    import cv2

    h, w = shape
    acc = np.zeros((h, w), np.float32)
    amp, total = 1.0, 0.0
    for s in scales:
        grid = rng.random((s + 1, s + 1)).astype(np.float32)
        acc += amp * cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
        total += amp
        amp *= persistence
    acc /= total
    lo, hi = float(acc.min()), float(acc.max())
    return (acc - lo) / max(hi - lo, 1e-6)


def _palette(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` saturated, well separated colours (uint8), hues spread around the colour wheel."""
    import colorsys

    h0 = rng.random()
    out = []
    for k in range(n):
        h = (h0 + k / n + 0.08 * rng.standard_normal()) % 1.0
        s = 0.55 + 0.4 * rng.random()
        v = 0.45 + 0.5 * rng.random()
        out.append([round(c * 255) for c in colorsys.hsv_to_rgb(h, s, v)])
    return np.array(out, np.uint8)


TEXTURE_KINDS = ("noise", "stripes", "checker", "blobs", "label")


def procedural_texture(rng: np.random.Generator, kind: str = "label", size: int = 256,
                       palette: np.ndarray | None = None, detail: int = 1) -> np.ndarray:
    """An RGB uint8 texture image (size x size) of one of ``TEXTURE_KINDS``.

    ``label`` (rectangles, bars like lines of text, discs, triangles on a noise backdrop) and
    ``blobs`` give many corners and blobs for feature matching; ``noise``, ``stripes`` and
    ``checker`` are also used for backgrounds and table tops. ``detail`` multiplies the number
    of features per side (noise frequencies, stripes, checker cells, blobs), for textures that
    cover a large surface once instead of repeating. Deterministic for the generator's state.
    """
    import cv2

    pal = _palette(rng, 5) if palette is None else np.asarray(palette, np.uint8)
    n = size
    if kind == "noise":
        t = value_noise(rng, (n, n), scales=tuple(detail * s for s in (4, 8, 16, 32)))[..., None]
        a, b = pal[0].astype(np.float32), pal[1].astype(np.float32)
        return np.clip(a * (1 - t) + b * t, 0, 255).astype(np.uint8)
    if kind == "stripes":
        period = n / (rng.integers(3, 12) * detail)
        ang = rng.random() * np.pi
        yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
        phase = (xx * math.cos(ang) + yy * math.sin(ang)) / period
        idx = (np.floor(phase).astype(np.int64)) % len(pal)
        img = pal[idx]
        shade = 0.85 + 0.15 * value_noise(rng, (n, n), scales=(8, 16))[..., None]
        return np.clip(img * shade, 0, 255).astype(np.uint8)
    if kind == "checker":
        k = int(rng.integers(4, 12)) * detail
        yy, xx = np.mgrid[0:n, 0:n]
        cell = ((xx * k) // n + (yy * k) // n) % 2
        img = np.where(cell[..., None] == 0, pal[0], pal[1]).astype(np.float32)
        shade = 0.9 + 0.1 * value_noise(rng, (n, n), scales=(8, 16))[..., None]
        return np.clip(img * shade, 0, 255).astype(np.uint8)
    if kind not in ("blobs", "label"):
        raise ValueError(f"unknown texture kind {kind!r}; choose from {', '.join(TEXTURE_KINDS)}")
    base = value_noise(rng, (n, n), scales=(4, 8))[..., None]
    img = np.clip(pal[0] * (0.75 + 0.25 * base), 0, 255).astype(np.uint8)
    img = np.ascontiguousarray(img)

    def col() -> tuple[int, int, int]:
        c = pal[int(rng.integers(1, len(pal)))]
        return int(c[0]), int(c[1]), int(c[2])

    if kind == "blobs":
        m = n // detail
        for _ in range(int(rng.integers(18, 30)) * detail * detail):
            centre = (int(rng.integers(0, n)), int(rng.integers(0, n)))
            axes = (int(rng.integers(m // 40 + 2, m // 8)), int(rng.integers(m // 40 + 2, m // 8)))
            cv2.ellipse(img, centre, axes, float(rng.random() * 180), 0, 360, col(), -1)
        return img
    m, k = n // detail, detail * detail  # element size and count scale with the detail
    y0 = int(rng.integers(0, n * 2 // 3))
    cv2.rectangle(img, (0, y0), (n, y0 + int(rng.integers(m // 10, m // 4))), col(), -1)
    for _ in range(int(rng.integers(4, 8)) * k):
        x0, y0 = int(rng.integers(0, n - m // 4)), int(rng.integers(0, n - m // 4))
        x1, y1 = x0 + int(rng.integers(m // 8, m // 3)), y0 + int(rng.integers(m // 10, m // 4))
        cv2.rectangle(img, (x0, y0), (x1, y1), col(), -1)
    for _ in range(int(rng.integers(8, 14)) * k):
        x0, y0 = int(rng.integers(0, n - m // 6)), int(rng.integers(0, n))
        length = int(rng.integers(m // 10, m // 3))
        thick = int(rng.integers(max(2, m // 48), max(3, m // 20)))
        cv2.line(img, (x0, y0), (x0 + length, y0), (20, 20, 20) if rng.random() < 0.5 else col(), thick)
    for _ in range(int(rng.integers(3, 6)) * k):
        centre = (int(rng.integers(0, n)), int(rng.integers(0, n)))
        cv2.circle(img, centre, int(rng.integers(m // 20, m // 7)), col(), -1)
    for _ in range(int(rng.integers(2, 4)) * k):
        c0 = rng.integers(0, n - m // 4, 2)
        pts = (c0 + rng.integers(0, m // 3, (3, 2))).astype(np.int32)
        cv2.fillPoly(img, [pts], col())
    return img


# --------------------------------------------------------------------------- to ObjectModel


def mesh_diameter(vertices: np.ndarray) -> float:
    """Largest distance between any two vertices (what bop_toolkit's ``calc_pts_diameter``
    computes), found exactly on the convex-hull vertices for large meshes."""
    pts = np.unique(np.asarray(vertices, dtype=np.float64), axis=0)
    if len(pts) > 64:
        try:
            from scipy.spatial import ConvexHull

            pts = pts[ConvexHull(pts).vertices]
        except Exception:  # degenerate (flat) point sets: fall back to all points
            pass
    best = 0.0
    for i in range(0, len(pts), 1024):
        d = np.linalg.norm(pts[i:i + 1024, None, :] - pts[None, :, :], axis=-1)
        best = max(best, float(d.max()))
    return best


def mesh_to_model(mesh: Mesh, obj_id: int, *, symmetries_discrete: Sequence[np.ndarray] = (),
                  symmetries_continuous: Sequence[ContinuousSymmetry] = (), name: str = "",
                  description: str = "", default_color: Sequence[float] = (0.6, 0.6, 0.6)) -> ObjectModel:
    """An ``ObjectModel`` whose arrays equal what a PLY round trip returns (vertices and normals
    rounded to float32, colours to 8 bits), so rendering the in-memory model and the model read
    back from ``models/`` gives the same images. Diameter per ``mesh_diameter``."""
    v = mesh.vertices.astype(np.float32).astype(np.float64)
    normals = mesh.normals if mesh.normals is not None else vertex_normals(mesh)
    normals = normals.astype(np.float32).astype(np.float64)
    colors = mesh.colors if mesh.colors is not None else np.tile(default_color, (len(v), 1))
    colors = np.clip(np.round(np.asarray(colors) * 255.0), 0, 255) / 255.0
    return ObjectModel(obj_id=obj_id, vertices=v, faces=mesh.faces, diameter=mesh_diameter(v), normals=normals,
                       colors=colors, symmetries_discrete=tuple(symmetries_discrete),
                       symmetries_continuous=tuple(symmetries_continuous), name=name, description=description)
