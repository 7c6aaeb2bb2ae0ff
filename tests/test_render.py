"""Renderer tests: analytic scenes for every backend present, backend agreement, gradients,
viewpoints, and re-rendering the golden BOP data (bop_toolkit / vispy / llvmpipe)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from repro.render import (
    RenderInstance,
    RenderScene,
    get_renderer,
    nvdiffrast_available,
    pixel_rays,
    render_instance_masks,
    render_poses,
    stack_results,
)
from repro.render.scene import Light
from repro.render.viewpoints import (
    fibonacci_sphere,
    icosphere,
    inplane_rotations,
    look_at,
    rotation_about_z,
    viewpoint_poses,
)
from repro.types import CameraIntrinsics, ObjectModel

K = np.array([[572.4114, 0.0, 325.2611], [0.0, 573.57043, 242.04899], [0.0, 0.0, 1.0]])
CAM = CameraIntrinsics(K, 640, 480)
SMALL = CameraIntrinsics(np.array([[300.0, 0.0, 79.5], [0.0, 300.0, 59.5], [0.0, 0.0, 1.0]]), 160, 120)


# --------------------------------------------------------------------------- fixtures / models


def _egl_ok() -> bool:
    try:
        r = get_renderer("egl")
        _ = r.context
        r.close()
        return True
    except Exception:
        return False


def _numba_ok() -> bool:
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


EGL_OK = _egl_ok()
NUMBA_OK = _numba_ok()
BACKENDS = [
    pytest.param("egl", marks=pytest.mark.skipif(not EGL_OK, reason="no EGL/OpenGL 4.1 context")),
    pytest.param("numba", marks=pytest.mark.skipif(not NUMBA_OK, reason="numba not installed")),
    pytest.param("nvdiffrast", marks=[
        pytest.mark.gpu, pytest.mark.skipif(not nvdiffrast_available(), reason="needs nvdiffrast + CUDA")]),
]
needs_egl_and_numba = pytest.mark.skipif(not (EGL_OK and NUMBA_OK), reason="needs the egl and numba backends")


@pytest.fixture(scope="module")
def renderers():
    made: dict[str, object] = {}
    yield made
    for r in made.values():
        r.close()


@pytest.fixture(params=BACKENDS)
def renderer(request, renderers):
    name = request.param
    if name not in renderers:
        renderers[name] = get_renderer(name)
    return renderers[name]


def plane_model(half: float = 100.0, obj_id: int = 1, color=(0.8, 0.6, 0.4)) -> ObjectModel:
    """Square in the model's z = 0 plane, normal +z towards... -z faces the camera at R = I."""
    V = np.array([[-half, -half, 0], [half, -half, 0], [half, half, 0], [-half, half, 0]], float)
    F = np.array([[0, 2, 1], [0, 3, 2]])
    N = np.tile([0.0, 0.0, -1.0], (4, 1))
    return ObjectModel(obj_id, V, F, 2 * np.sqrt(2) * half, normals=N, colors=np.tile(color, (4, 1)))


def rect_model(x0, x1, y0, y1, obj_id: int = 7) -> ObjectModel:
    V = np.array([[x0, y0, 0], [x1, y0, 0], [x1, y1, 0], [x0, y1, 0]], float)
    return ObjectModel(obj_id, V, np.array([[0, 2, 1], [0, 3, 2]]), 1.0)


def box_model(size=(60.0, 40.0, 30.0), obj_id: int = 3) -> ObjectModel:
    import trimesh

    m = trimesh.creation.box(extents=size)
    return ObjectModel(obj_id, m.vertices, m.faces, float(np.linalg.norm(size)))


def sphere_model(radius: float = 50.0, level: int = 5, obj_id: int = 5) -> ObjectModel:
    import trimesh

    m = trimesh.creation.icosphere(subdivisions=level, radius=radius)
    return ObjectModel(obj_id, m.vertices, m.faces, 2 * radius, normals=m.vertex_normals)


def blob_model(seed: int, obj_id: int = 9) -> ObjectModel:
    """A random closed, non-convex mesh: a bumpy icosphere."""
    import trimesh

    rng = np.random.default_rng(seed)
    m = trimesh.creation.icosphere(subdivisions=3, radius=1.0)
    d = m.vertices
    r = 40.0 * (1.0 + 0.35 * np.sin(3 * d[:, 0] + rng.uniform(0, 6)) * np.cos(2 * d[:, 1] + rng.uniform(0, 6)))
    return ObjectModel(obj_id, d * r[:, None] * rng.uniform(0.6, 1.4, 3), m.faces, 120.0)


def rot(axis, angle) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    axis = np.asarray(axis, float)
    return Rotation.from_rotvec(axis / np.linalg.norm(axis) * angle).as_matrix()


def ray_plane_depth(camera: CameraIntrinsics, R: np.ndarray, t: np.ndarray, offset: float = 0.0) -> np.ndarray:
    """z of the intersection of every pixel ray with the plane R @ (z=0 plane) + t."""
    n = R[:, 2]
    return (n @ t) / (pixel_rays(camera, offset) @ n)


# --------------------------------------------------------------------------- analytic scenes


def test_plane_fronto_parallel_depth_is_exact(renderer):
    t = np.array([3.0, -2.0, 700.0])
    res = renderer.render(RenderScene(CAM, (RenderInstance(plane_model(), np.eye(3), t),)),
                          {"depth", "ids", "normals"})
    covered = res.depth > 0
    assert covered.sum() > 20_000
    assert np.abs(res.depth[covered] - 700.0).max() <= 1e-3
    assert (res.instance_ids[covered] == 0).all() and (res.instance_ids[~covered] == -1).all()
    assert (res.obj_ids[covered] == 1).all() and (res.obj_ids[~covered] == 0).all()
    # Coverage = pixel centres inside the projected square (edges are not on pixel centres here).
    u = np.arange(CAM.width)
    v = np.arange(CAM.height)
    xs = (u - K[0, 2]) * 700.0 / K[0, 0]
    ys = (v - K[1, 2]) * 700.0 / K[1, 1]
    inside = (np.abs(ys - t[1])[:, None] < 100.0) & (np.abs(xs - t[0])[None, :] < 100.0)
    assert (covered == inside).all()
    np.testing.assert_allclose(res.normals[covered], np.tile([0, 0, -1.0], (covered.sum(), 1)), atol=1e-6)


def test_plane_tilted_depth_matches_ray_casting(renderer):
    R = rot([1.0, 0.4, 0.1], 1.1)
    t = np.array([-20.0, 15.0, 650.0])
    for offset in (0.0, 0.5):
        res = renderer.render(RenderScene(CAM, (RenderInstance(plane_model(150.0), R, t),), sample_offset=offset),
                              {"depth"})
        covered = res.depth > 0
        assert covered.sum() > 20_000
        expected = ray_plane_depth(CAM, R, t, offset)
        assert np.abs(res.depth[covered] - expected[covered]).max() <= 2e-3


def test_sphere_depth_and_silhouette(renderer):
    r, z = 50.0, 400.0
    res = renderer.render(RenderScene(CAM, (RenderInstance(sphere_model(r), np.eye(3), [0, 0, z]),)),
                          {"depth", "normals"})
    covered = res.depth > 0
    d = pixel_rays(CAM)
    # Ray / sphere: |s d - c|^2 = r^2 -> nearest s.
    c = np.array([0, 0, z])
    a = (d * d).sum(-1)
    b = d @ c
    disc = b * b - a * (c @ c - r * r)
    hit = disc > 0
    s = np.where(hit, (b - np.sqrt(np.clip(disc, 0, None))) / a, 0.0)
    cos_inc = np.where(hit, np.sqrt(np.clip(disc, 0, None)) / (np.sqrt(a) * r), 0.0)
    frontal = covered & hit & (cos_inc > 0.3)
    err = res.depth[frontal] - s[frontal]
    assert err.min() >= -1e-3  # the inscribed mesh is never in front of the sphere
    assert err.max() <= 0.1  # tessellation error of a level-5 icosphere
    area = np.pi * K[0, 0] * K[1, 1] * r * r / (z * z - r * r)  # exact perspective silhouette (ellipse)
    assert abs(covered.sum() - area) / area < 0.01
    p = s[frontal, None] * d[frontal] - c  # analytic normals
    cos = (res.normals[frontal] * p / r).sum(-1)
    assert cos.min() > 0.999


def _pixel_centres_in_convex_polygon(poly: np.ndarray, w: int, h: int) -> np.ndarray:
    from scipy.spatial import ConvexHull

    hull = poly[ConvexHull(poly).vertices]  # counter-clockwise
    uu, vv = np.meshgrid(np.arange(w, dtype=float), np.arange(h, dtype=float))
    inside = np.ones((h, w), bool)
    for a, b in zip(hull, np.roll(hull, -1, axis=0), strict=True):
        inside &= (b[0] - a[0]) * (vv - a[1]) - (b[1] - a[1]) * (uu - a[0]) >= 0
    return inside


def test_cube_mask_and_ids_match_projected_polygon(renderer):
    from scipy.spatial import ConvexHull

    model = box_model()
    R, t = rot([0.3, 1.0, 0.2], 0.8), np.array([15.0, -10.0, 500.0])
    res = renderer.render(RenderScene(CAM, (RenderInstance(model, R, t),)), {"depth", "ids", "masks"})
    corners = model.vertices @ R.T + t
    uv = corners @ K.T
    uv = uv[:, :2] / uv[:, 2:]
    expected = _pixel_centres_in_convex_polygon(uv, CAM.width, CAM.height)
    mask = res.visible_mask(0)
    assert (mask != expected).sum() <= 2  # only pixel centres exactly on an edge may differ
    area = ConvexHull(uv).volume
    assert abs(mask.sum() - area) / area < 0.01
    assert set(np.unique(res.obj_ids[mask])) == {3}
    assert res.triangle_ids[mask].min() >= 0 and res.triangle_ids[mask].max() < len(model.faces)
    assert (res.triangle_ids[~mask] == -1).all()


def test_occlusion_ordering_and_masks(renderer):
    near_box, far_plane = box_model(obj_id=2), plane_model(120.0, obj_id=4)
    scene = RenderScene(CAM, (RenderInstance(far_plane, np.eye(3), [0, 0, 700]),
                              RenderInstance(near_box, rot([1, 1, 0], 0.5), [10, 5, 450])))
    res = renderer.render(scene, {"depth", "ids", "masks", "full_masks"})
    visible, full = res.visible_masks, res.full_masks
    assert not (visible[0] & visible[1]).any()
    assert (full[0] & full[1]).any()
    assert (visible <= full).all()
    assert ((visible[0] | visible[1]) == (res.depth > 0)).all()
    overlap = full[0] & full[1]
    assert (res.instance_ids[overlap] == 1).all()  # the nearer box wins
    alone = [renderer.render(scene.single(i), {"depth"}).depth for i in range(2)]
    np.testing.assert_array_equal(full[0], alone[0] > 0)
    np.testing.assert_array_equal(full[1], alone[1] > 0)
    stacked = np.where(alone[0] > 0, alone[0], np.inf)
    stacked = np.minimum(stacked, np.where(alone[1] > 0, alone[1], np.inf))
    np.testing.assert_allclose(res.depth, np.where(np.isinf(stacked), 0, stacked), atol=1e-4)
    vis2, full2 = render_instance_masks(renderer, scene)
    np.testing.assert_array_equal(vis2, visible)
    np.testing.assert_array_equal(full2, full)


@pytest.mark.parametrize("offset", [0.0, 0.5])
def test_pixel_centre_convention(renderer, offset):
    """A small square whose projected edges lie halfway between sample points covers exactly the
    pixels whose sample point (u + offset, v + offset) lies inside."""
    z = 500.0
    lo_u, hi_u, lo_v, hi_v = (10.5, 13.5, 20.5, 22.5) if offset == 0.0 else (10.0, 13.0, 20.0, 22.0)

    def to_x(u): return (u - K[0, 2]) * z / K[0, 0]
    def to_y(v): return (v - K[1, 2]) * z / K[1, 1]

    model = rect_model(to_x(lo_u), to_x(hi_u), to_y(lo_v), to_y(hi_v))
    res = renderer.render(RenderScene(CAM, (RenderInstance(model, np.eye(3), [0, 0, z]),), sample_offset=offset),
                          {"depth"})
    expected = np.zeros((CAM.height, CAM.width), bool)
    first_u, first_v = int(np.ceil(lo_u - offset)), int(np.ceil(lo_v - offset))
    expected[first_v:first_v + int(hi_v - lo_v), first_u:first_u + int(hi_u - lo_u)] = True
    np.testing.assert_array_equal(res.depth > 0, expected)
    np.testing.assert_allclose(res.depth[expected], z, atol=1e-4)


def test_near_and_far_clipping(renderer):
    R = rot([1, 0, 0], 1.3)  # a steep plane crossing the near plane
    t = np.array([0.0, 0.0, 120.0])
    res = renderer.render(RenderScene(CAM, (RenderInstance(plane_model(200.0), R, t),), near=100.0, far=200.0),
                          {"depth"})
    covered = res.depth > 0
    assert covered.any()
    assert res.depth[covered].min() >= 100.0 - 1e-3 and res.depth[covered].max() <= 200.0 + 1e-3
    expected = ray_plane_depth(CAM, R, t)
    assert np.abs(res.depth[covered] - expected[covered]).max() < 2e-3
    inside = (expected > 100.5) & (expected < 199.5) & ray_plane_hits(R, t, 200.0)
    assert covered[inside].mean() > 0.999


def ray_plane_hits(R, t, half):
    d = pixel_rays(CAM)
    z = ray_plane_depth(CAM, R, t)
    p = z[..., None] * d - t
    local = p @ R
    return (np.abs(local[..., 0]) < half - 1) & (np.abs(local[..., 1]) < half - 1)


def test_rgb_shading_and_background(renderer):
    scene = RenderScene(CAM, (RenderInstance(plane_model(color=(0.8, 0.6, 0.4)), np.eye(3), [0, 0, 600]),),
                        background=(0.0, 0.0, 1.0), light=Light(direction=(0, 0, 1), ambient=0.2, diffuse=0.5))
    res = renderer.render(scene, {"rgb", "depth"})
    covered = res.depth > 0
    expected = np.round(np.array([0.8, 0.6, 0.4]) * 0.7 * 255).astype(np.uint8)
    assert (res.rgb[covered] == expected).all()
    assert (res.rgb[~covered] == [0, 0, 255]).all()
    side = RenderScene(CAM, scene.instances, light=Light(direction=(1, 0, 0), ambient=0.2, diffuse=0.5))
    dark = renderer.render(side, {"rgb"}).rgb
    assert (dark[covered] == np.round(np.array([0.8, 0.6, 0.4]) * 0.2 * 255).astype(np.uint8)).all()


def test_texture_sampling(renderer):
    tex = np.zeros((8, 8, 3), np.uint8)
    tex[:4] = [255, 0, 0]  # top rows of the texture image = v near 1
    tex[4:] = [0, 255, 0]
    base = plane_model(100.0)
    uv = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], float)
    model = ObjectModel(8, base.vertices, base.faces, base.diameter, normals=base.normals, uv=uv, texture=tex)
    res = renderer.render(RenderScene(CAM, (RenderInstance(model, np.eye(3), [0, 0, 600]),),
                                      light=Light(ambient=1.0, diffuse=0.0)), {"rgb", "xyz", "depth"})
    # model y = +100 is v = 1 (red), drawn at image rows below the centre (camera y points down).
    row_red = round(K[1, 2] + K[1, 1] * 80 / 600)
    row_green = round(K[1, 2] - K[1, 1] * 80 / 600)
    col = round(K[0, 2])
    assert tuple(res.rgb[row_red, col]) == (255, 0, 0)
    assert tuple(res.rgb[row_green, col]) == (0, 255, 0)
    covered = res.depth > 0
    xyz_cam = res.xyz[covered] + [0, 0, 600]
    d = pixel_rays(CAM)[covered]
    np.testing.assert_allclose(xyz_cam, d * res.depth[covered, None], atol=2e-3)


def test_batch_and_determinism(renderer):
    model = box_model()
    R = np.stack([rot([0, 1, 0], a) for a in (0.1, 0.7, 1.3)])
    t = np.array([[0, 0, 400.0], [20, 0, 500.0], [-30, 10, 600.0]])
    batch = render_poses(renderer, model, SMALL, R, t, {"depth", "ids"})
    single = [renderer.render(RenderScene(SMALL, (RenderInstance(model, r, tt),)), {"depth", "ids"})
              for r, tt in zip(R, t, strict=True)]
    np.testing.assert_array_equal(stack_results(batch, "depth"), stack_results(single, "depth"))
    np.testing.assert_array_equal(stack_results(batch, "triangle_ids"), stack_results(single, "triangle_ids"))
    again = render_poses(renderer, model, SMALL, R, t, {"depth", "ids"})
    np.testing.assert_array_equal(stack_results(again, "depth"), stack_results(batch, "depth"))
    assert stack_results(batch, "depth").shape == (3, SMALL.height, SMALL.width)


def test_empty_scene(renderer):
    res = renderer.render(RenderScene(SMALL), {"depth", "ids", "rgb", "full_masks"})
    assert (res.depth == 0).all() and (res.instance_ids == -1).all()
    assert res.full_masks.shape == (0, SMALL.height, SMALL.width)


# --------------------------------------------------------------------------- backends


@needs_egl_and_numba
def test_backends_agree_on_random_meshes(renderers):
    egl = renderers.setdefault("egl", get_renderer("egl"))
    cpu = renderers.setdefault("numba", get_renderer("numba"))
    rng = np.random.default_rng(7)
    n_cover = n_same = n_cover_diff = 0
    for trial in range(6):
        insts = tuple(RenderInstance(blob_model(10 * trial + k, obj_id=k + 1),
                                     rot(rng.normal(size=3), rng.uniform(0, 3)),
                                     [rng.uniform(-80, 80), rng.uniform(-60, 60), rng.uniform(300, 800)])
                      for k in range(3))
        scene = RenderScene(CAM, insts, sample_offset=float(rng.choice([0.0, 0.5])))
        a, b = (r.render(scene, {"depth", "ids", "barycentrics", "full_masks"}) for r in (egl, cpu))
        both = (a.depth > 0) & (b.depth > 0)
        same = both & (a.instance_ids == b.instance_ids) & (a.triangle_ids == b.triangle_ids)
        n_cover += int(both.sum())
        n_same += int(same.sum())
        n_cover_diff += int(((a.depth > 0) != (b.depth > 0)).sum())
        assert np.abs(a.depth[same] - b.depth[same]).max() <= 0.01
        assert np.abs(a.barycentrics[same] - b.barycentrics[same]).max() <= 1e-4
        assert (a.full_masks != b.full_masks).sum() <= 3
    assert n_cover > 100_000
    assert n_same / n_cover > 0.9999
    assert n_cover_diff / n_cover < 1e-4


def test_auto_backend_falls_back_to_numba(monkeypatch, caplog):
    from repro.render import egl as egl_mod

    def broken(*_a, **_k):
        raise egl_mod.EGLUnavailableError("simulated: no libEGL")

    monkeypatch.setattr(egl_mod.EGLRenderer, "_create_context", staticmethod(broken))
    with caplog.at_level(logging.WARNING, logger="repro.render.factory"):
        r = get_renderer("auto")
    assert r.name == "numba"
    assert "falling back" in caplog.text


def test_get_renderer_rejects_unknown_backend():
    with pytest.raises(ValueError, match="unknown render backend"):
        get_renderer("vulkan")
    with pytest.raises(ValueError, match="unknown render outputs"):
        get_renderer("numba").render(RenderScene(SMALL), {"depth", "albedo"})


def test_egl_reuses_context_and_meshes():
    if not EGL_OK:
        pytest.skip("no EGL")
    r = get_renderer("egl")
    model = box_model()
    scene = RenderScene(SMALL, (RenderInstance(model, np.eye(3), [0, 0, 400]),))
    r.render(scene)
    ctx = r.context
    r.render(RenderScene(SMALL, (RenderInstance(model, rot([0, 1, 0], 0.3), [0, 0, 450]),)))
    assert r.context is ctx and len(r._meshes) == 1
    r.close()
    r.close()


# --------------------------------------------------------------------------- differentiable path


def _diff_setup(renderer):
    from repro.render.differentiable import DifferentiableRenderer, axis_angle_to_matrix

    model = blob_model(3)
    dr = DifferentiableRenderer(renderer)
    rotvec = torch.tensor([[0.4, -0.3, 0.2]], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([[5.0, -4.0, 450.0]], dtype=torch.float64, requires_grad=True)
    tri_map = dr.rasterize(model, SMALL, axis_angle_to_matrix(rotvec.detach()), t.detach())
    return dr, model, rotvec, t, tri_map, axis_angle_to_matrix


@pytest.mark.skipif(not (EGL_OK or NUMBA_OK), reason="needs a CPU backend")
def test_gradients_match_finite_differences():
    dr, model, rotvec, t, tri_map, so3 = _diff_setup(get_renderer("numba" if NUMBA_OK else "egl"))
    target = dr.interpolate(model, so3(torch.tensor([[0.42, -0.28, 0.21]], dtype=torch.float64)),
                            torch.tensor([[6.0, -3.0, 455.0]], dtype=torch.float64), tri_map, ["depth"])["depth"]

    def losses(rv, tt):
        out = dr.interpolate(model, so3(rv), tt, tri_map, ["depth", "xyz", "normals", "rgb"])
        return [out["depth"].sum(), ((out["depth"] - target) ** 2).mean(),
                out["normals"][..., 2].sum() + out["rgb"].sum()]

    for i, loss in enumerate(losses(rotvec, t)):
        g_rot, g_t = torch.autograd.grad(loss, [rotvec, t], retain_graph=True, allow_unused=True)
        g_t = torch.zeros_like(t) if g_t is None else g_t  # face normals do not depend on t
        h = 1e-6
        for param, grad in ((rotvec, g_rot), (t, g_t)):
            for j in range(3):
                e = torch.zeros_like(param)
                e[0, j] = h
                args_p = (rotvec.detach() + e, t.detach()) if param is rotvec else (rotvec.detach(), t.detach() + e)
                args_m = (rotvec.detach() - e, t.detach()) if param is rotvec else (rotvec.detach(), t.detach() - e)
                fd = (losses(*args_p)[i] - losses(*args_m)[i]) / (2 * h)
                assert abs(float(grad[0, j]) - float(fd)) <= 1e-5 * max(1.0, abs(float(fd))), (i, j)


@pytest.mark.skipif(not (EGL_OK or NUMBA_OK), reason="needs a CPU backend")
def test_differentiable_interpolation_matches_rendering():
    r = get_renderer("numba" if NUMBA_OK else "egl")
    dr, model, rotvec, t, tri_map, so3 = _diff_setup(r)
    out = dr.interpolate(model, so3(rotvec), t, tri_map, ["depth", "xyz", "mask"])
    R = so3(rotvec).detach().numpy()[0]
    res = r.render(RenderScene(SMALL, (RenderInstance(model, R, t.detach().numpy()[0]),)), {"depth", "xyz"})
    np.testing.assert_allclose(out["depth"].detach().numpy()[0], res.depth, atol=2e-3)
    np.testing.assert_allclose(out["xyz"].detach().numpy()[0], res.xyz, atol=2e-3)
    assert (out["mask"].numpy()[0] > 0).sum() == (res.depth > 0).sum()
    out["depth"].sum().backward()
    assert torch.isfinite(t.grad).all() and float(t.grad[0, 2]) > 0


def test_axis_angle_round_trip_and_small_angles():
    from repro.render.differentiable import axis_angle_to_matrix, matrix_to_axis_angle

    rv = np.array([0.3, -1.2, 0.5])
    R = axis_angle_to_matrix(torch.tensor(rv)).numpy()
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(matrix_to_axis_angle(R), rv, atol=1e-12)
    zero = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    axis_angle_to_matrix(zero)[0, 1].backward()
    np.testing.assert_allclose(zero.grad.numpy(), [0, 0, -1.0], atol=1e-12)


# --------------------------------------------------------------------------- viewpoints


def test_icosphere_counts_and_uniformity():
    for level, n in ((0, 12), (1, 42), (2, 162), (3, 642)):
        pts = icosphere(level)
        assert pts.shape == (n, 3)
        np.testing.assert_allclose(np.linalg.norm(pts, axis=1), 1.0, atol=1e-12)
        np.testing.assert_allclose(pts.mean(axis=0), 0.0, atol=1e-12)
        assert len(np.unique(np.round(pts, 9), axis=0)) == n
    np.testing.assert_array_equal(icosphere(1)[:12], icosphere(0))


def test_fibonacci_sphere():
    pts = fibonacci_sphere(16)
    assert pts.shape == (16, 3)
    np.testing.assert_allclose(np.linalg.norm(pts, axis=1), 1.0, atol=1e-12)
    assert np.linalg.norm(pts.mean(axis=0)) < 0.1
    dots = pts @ pts.T - 2 * np.eye(16)
    assert dots.max() < 0.8  # no two views closer than ~37 degrees
    np.testing.assert_allclose(np.linalg.norm(fibonacci_sphere(1000).mean(axis=0)), 0.0, atol=2e-3)


def test_fibonacci_sphere_zone():
    for n in (1, 7, 16, 42):
        i = np.arange(n, dtype=np.float64)
        np.testing.assert_array_equal(fibonacci_sphere(n)[:, 2], 1.0 - (2.0 * i + 1.0) / n)  # the whole sphere
        np.testing.assert_array_equal(fibonacci_sphere(n, -1.0, 1.0), fibonacci_sphere(n))
    pts = fibonacci_sphere(12, min_z=0.15, max_z=0.85)
    np.testing.assert_allclose(np.linalg.norm(pts, axis=1), 1.0, atol=1e-12)
    assert pts[:, 2].min() > 0.15 and pts[:, 2].max() < 0.85
    assert np.all(np.diff(pts[:, 2]) < 0)  # from max_z down to min_z
    np.testing.assert_allclose(np.diff(pts[:, 2]), -0.7 / 12, atol=1e-12)  # even in z: even in area
    with pytest.raises(ValueError):
        fibonacci_sphere(4, min_z=0.5, max_z=0.2)


def test_look_at_conventions():
    eye = np.array([300.0, -400.0, 200.0])
    R, t = look_at(eye)
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
    assert np.isclose(np.linalg.det(R), 1.0)
    np.testing.assert_allclose(t, [0, 0, np.linalg.norm(eye)], atol=1e-9)  # origin on the optical axis
    np.testing.assert_allclose(R @ eye + t, 0, atol=1e-9)  # camera centre at eye
    up_cam = R @ np.array([0, 0, 1.0])
    assert up_cam[1] < 0 and abs(up_cam[0]) < 1e-12  # world up is image up (-y), no roll
    for pole in ([0, 0, 500.0], [0, 0, -500.0]):
        Rp, tp = look_at(pole)
        np.testing.assert_allclose(Rp @ Rp.T, np.eye(3), atol=1e-12)
        np.testing.assert_allclose(tp, [0, 0, 500.0], atol=1e-9)
    with pytest.raises(ValueError):
        look_at([0, 0, 0])


def test_look_at_target_up_and_roll():
    eye, target = np.array([0.0, -500.0, 300.0]), np.array([10.0, 20.0, 5.0])
    R, t = look_at(eye, target)
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(R @ target + t, [0, 0, np.linalg.norm(target - eye)], atol=1e-9)
    assert (R @ np.array([0, 0, 1.0]))[1] < 0  # world up is image up
    # another up vector: world +x appears as image up
    Rx, _ = look_at(eye, target, up=(1.0, 0.0, 0.0))
    up_cam = Rx @ np.array([1.0, 0.0, 0.0])
    assert up_cam[1] < 0 and abs(up_cam[0]) < 1e-12
    # roll: R' = Rz(roll) @ R, the image content turns from +x towards +y
    roll = 0.3
    Rr, tr = look_at(eye, target, roll=roll)
    np.testing.assert_allclose(Rr, rotation_about_z(roll) @ R, atol=1e-15)
    np.testing.assert_allclose(tr, -Rr @ eye, atol=1e-12)
    p = R @ (target + 100.0 * R[0]) + t  # a point on the image's +x axis before the roll
    pr = Rr @ (target + 100.0 * R[0]) + tr
    np.testing.assert_allclose(pr[:2], 100.0 * np.array([np.cos(roll), np.sin(roll)]), atol=1e-9)
    assert p[1] == pytest.approx(0.0, abs=1e-9)
    np.testing.assert_array_equal(look_at(eye, target, roll=0.0)[0], R)


def test_viewpoint_poses_render_object_at_centre():
    Rs, ts = viewpoint_poses(icosphere(1), 500.0, inplane=4)
    assert Rs.shape == (42 * 4, 3, 3) and ts.shape == (42 * 4, 3)
    np.testing.assert_allclose(ts, np.tile([0, 0, 500.0], (168, 1)), atol=1e-9)
    np.testing.assert_allclose(np.einsum("nij,nkj->nik", Rs, Rs), np.broadcast_to(np.eye(3), Rs.shape), atol=1e-12)
    rolls = inplane_rotations(4)
    np.testing.assert_allclose(Rs[1], rolls[1] @ Rs[0], atol=1e-12)


# --------------------------------------------------------------------------- golden BOP data


@pytest.mark.skipif(not (EGL_OK or NUMBA_OK), reason="needs a CPU backend")
def test_golden_bop_rerender(goldtoy):
    from repro.render.verify import verify_dataset

    summary = verify_dataset(goldtoy, backend="auto")
    assert summary["n_gt"] == 64
    assert summary["depth_within_1mm"] >= 0.995
    assert summary["mask_iou_min"] >= 0.99
    assert summary["visib_fract_max_abs_diff"] <= 0.01


@pytest.mark.skipif(not NUMBA_OK, reason="numba not installed")
def test_golden_bop_rerender_numba_one_scene(goldtoy):
    from repro.render.verify import verify_dataset

    summary = verify_dataset(goldtoy, backend="numba", scene_ids=[3])
    assert summary["depth_within_1mm"] >= 0.995
    assert summary["mask_iou_min"] >= 0.99
    assert summary["visib_fract_max_abs_diff"] <= 0.01


def test_gt_info_inside_image_shortcut_matches_canvas(renderer, monkeypatch):
    """Objects entirely inside the image are annotated from an image-size render; the 3x canvas
    gives the same depth, masks and scene_gt_info for them."""
    from repro.render import verify

    model = box_model()
    poses = [(model, rot([1, 2, 0.5], 0.7), [15.0, -10.0, 600.0]), (model, rot([0, 1, 1], 2.0), [-40.0, 25.0, 650.0])]
    scene = RenderScene.from_poses(SMALL, poses, sample_offset=verify.BOP_SAMPLE_OFFSET)
    depth = renderer.render(scene, {"depth"}).depth.astype(np.float64)
    assert all(verify._inside_image(m, np.asarray(R), np.asarray(t), SMALL) for m, R, t in poses)
    direct = verify.compute_gt_info(renderer, SMALL, depth, poses)
    monkeypatch.setattr(verify, "_inside_image", lambda *args: False)
    canvas = verify.compute_gt_info(renderer, SMALL, depth, poses)
    for a, b in zip(direct, canvas, strict=True):
        assert a.info == b.info
        np.testing.assert_array_equal(a.mask, b.mask)
        np.testing.assert_array_equal(a.mask_visib, b.mask_visib)
        np.testing.assert_allclose(a.depth, b.depth, atol=1e-3)
    assert 0.0 < direct[1].visib_fract < 1.0 or 0.0 < direct[0].visib_fract < 1.0  # they overlap


def test_unoccluded_pixel_counts_include_truncated_parts(renderer):
    from repro.render import unoccluded_pixel_counts

    model = plane_model(50.0)
    # Centred on the left image border: about half of the square is outside the image.
    x = (0.0 - SMALL.cx) * 600.0 / SMALL.fx
    scene = RenderScene(SMALL, (RenderInstance(model, np.eye(3), [x, 0.0, 600.0]),))
    inside = renderer.render(scene, {"full_masks"}).full_masks[0].sum()
    total = unoccluded_pixel_counts(renderer, scene)[0]
    side = 100.0 * SMALL.fx / 600.0
    assert abs(total - side * side) <= 2 * side + 1
    assert abs(inside - total / 2) <= side


# --------------------------------------------------------------------------- nvdiffrast plumbing


def _fake_nvdiffrast():
    """A tiny CPU stand-in for ``nvdiffrast.torch`` (brute-force rasterize, identity antialias) that
    follows its documented conventions, to exercise the backend's tensor plumbing without CUDA."""
    import types

    def rasterize(glctx, pos, tri, resolution, ranges=None, grad_db=True):
        H, W = resolution
        p = pos.detach().double().numpy()
        tris = tri.numpy()
        out = np.zeros((p.shape[0], H, W, 4), np.float32)
        uu, vv = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
        for b in range(p.shape[0]):
            ndc = p[b, :, :3] / p[b, :, 3:]
            x, y = (ndc[:, 0] + 1) * W / 2, (ndc[:, 1] + 1) * H / 2
            zbuf = np.full((H, W), np.inf)
            for f, (i0, i1, i2) in enumerate(tris):
                d = (x[i1] - x[i0]) * (y[i2] - y[i0]) - (y[i1] - y[i0]) * (x[i2] - x[i0])
                if d == 0:
                    continue
                w1 = ((uu - x[i0]) * (y[i2] - y[i0]) - (vv - y[i0]) * (x[i2] - x[i0])) / d
                w2 = ((x[i1] - x[i0]) * (vv - y[i0]) - (y[i1] - y[i0]) * (uu - x[i0])) / d
                inside = (w1 >= 0) & (w2 >= 0) & (w1 + w2 <= 1)
                z = ndc[i0, 2] + w1 * (ndc[i1, 2] - ndc[i0, 2]) + w2 * (ndc[i2, 2] - ndc[i0, 2])
                win = inside & (z < zbuf) & (np.abs(z) <= 1)
                zbuf[win] = z[win]
                out[b, win, 2] = z[win]
                out[b, win, 3] = f + 1
        return torch.from_numpy(out), torch.zeros((p.shape[0], H, W, 0))

    dr = types.ModuleType("nvdiffrast.torch")
    dr.RasterizeCudaContext = lambda device=None: object()
    dr.rasterize = rasterize
    dr.antialias = lambda color, rast, pos, tri, **kw: color
    pkg = types.ModuleType("nvdiffrast")
    pkg.torch = dr
    return pkg, dr


@pytest.mark.skipif(not NUMBA_OK, reason="compares with the numba backend")
def test_nvdiffrast_backend_plumbing_with_fake_rasterizer(monkeypatch, renderers):
    import sys

    pkg, dr = _fake_nvdiffrast()
    monkeypatch.setitem(sys.modules, "nvdiffrast", pkg)
    monkeypatch.setitem(sys.modules, "nvdiffrast.torch", dr)
    from repro.render.cuda import NvdiffrastRenderer

    cam = CameraIntrinsics(np.array([[60.0, 0, 19.5], [0, 60.0, 14.5], [0, 0, 1]]), 40, 30)
    box, plane = box_model(obj_id=2), plane_model(120.0, obj_id=4)
    scenes = [RenderScene(cam, (RenderInstance(plane, np.eye(3), [0, 0, 700.0]),
                                RenderInstance(box, rot([1, 1, 0], a), [10, 5, 450.0])), sample_offset=0.25)
              for a in (0.3, 0.9)]
    outs = {"depth", "ids", "barycentrics", "full_masks", "rgb"}
    fake = NvdiffrastRenderer(device="cpu", antialias=True).render_batch(scenes, outs)
    ref = renderers.setdefault("numba", get_renderer("numba")).render_batch(scenes, outs)
    for a, b in zip(fake, ref, strict=True):
        same = (a.instance_ids == b.instance_ids) & (a.triangle_ids == b.triangle_ids) & (b.instance_ids >= 0)
        assert same.sum() >= 0.99 * (b.instance_ids >= 0).sum()
        np.testing.assert_allclose(a.depth[same], b.depth[same], atol=1e-3)
        np.testing.assert_allclose(a.barycentrics[same], b.barycentrics[same], atol=1e-4)
        np.testing.assert_array_equal(a.obj_ids[same], b.obj_ids[same])
        assert (a.full_masks != b.full_masks).sum() <= 2
        assert a.rgb.shape == (30, 40, 3) and a.rgb.dtype == np.uint8


def test_render_package_imports_without_optional_backends():
    import importlib

    for name in ("repro.render", "repro.render.egl", "repro.render.cpu", "repro.render.cuda",
                 "repro.render.viewpoints", "repro.render.verify"):
        importlib.import_module(name)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-1000, 1000, allow_nan=False), min_size=3, max_size=3).filter(
    lambda e: np.linalg.norm(e) > 1.0))
def test_look_at_properties(eye):
    R, t = look_at(eye)
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-9)
    assert np.isclose(np.linalg.det(R), 1.0)
    np.testing.assert_allclose(t[:2], 0.0, atol=1e-6)  # the origin projects to the principal point
    assert t[2] > 0
    up = R @ np.array([0.0, 0.0, 1.0])
    assert up[1] <= 1e-9 and abs(up[0]) < 1e-9  # world up points up in the image, never rolled
