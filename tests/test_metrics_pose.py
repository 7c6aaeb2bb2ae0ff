"""Pose error functions against bop_toolkit's own outputs (golden ``pose_error_cases.json``), the
VSD formula against the toolkit's renders, and properties (symmetry invariance, ADD-S <= ADD,
zero error at the GT pose)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from repro.data.ply import load_ply
from repro.fileio import read_image
from repro.metrics import pose_errors as pe
from repro.metrics.symmetry import SymmetrySet, rotation_matrix, symmetry_transformations

RTOL = 1e-9
ATOL = 1e-12


@pytest.fixture(scope="module")
def cases(golden_dir):
    return json.loads((golden_dir / "bop" / "pose_error_cases.json").read_text())


@pytest.fixture(scope="module")
def models_info(golden_dir):
    return json.loads((golden_dir / "bop" / "dataset" / "goldtoy" / "models_eval" / "models_info.json").read_text())


@pytest.fixture(scope="module")
def points(golden_dir, cases):
    return {int(o): load_ply(golden_dir / "bop" / p).vertices for o, p in cases["models"].items()}


def _syms(models_info, obj_id: int, name: str) -> SymmetrySet:
    if name == "identity":
        return SymmetrySet.identity()
    return symmetry_transformations(models_info[str(obj_id)], float(name))


def test_symmetry_transformations_bit_identical(cases, models_info):
    for obj, sets in cases["symmetry_transformations"].items():
        for step, transforms in sets.items():
            mine = symmetry_transformations(models_info[obj], float(step))
            assert len(mine) == len(transforms)
            assert np.array_equal(mine.R, np.array([x["R"] for x in transforms]))
            assert np.array_equal(mine.t, np.array([x["t"] for x in transforms]).reshape(-1, 3))
    # ceil(pi / 0.01) = 315 rotations per continuous symmetry, times the discrete ones (+ identity)
    assert len(symmetry_transformations(models_info["6"], 0.01)) == 315
    assert len(symmetry_transformations(models_info["2"], 0.01)) == 630


def test_rotation_matrix_is_a_rotation():
    R = rotation_matrix(0.7, [1.0, 2.0, 2.0])
    assert np.allclose(R @ R.T, np.eye(3), atol=1e-15)
    assert np.allclose(R @ (np.array([1.0, 2.0, 2.0]) / 3.0), np.array([1.0, 2.0, 2.0]) / 3.0)


def _batch(cs):
    return (np.array([c["R_e"] for c in cs]), np.array([c["t_e"] for c in cs]).reshape(-1, 3),
            np.array([c["R_g"] for c in cs]), np.array([c["t_g"] for c in cs]).reshape(-1, 3),
            np.array([c["K"] for c in cs]))


def _compute(error, Re, te, Rg, tg, K, pts, syms) -> np.ndarray:
    if error == "re":
        return pe.re(Re, Rg)
    if error == "te":
        return pe.te(te, tg)
    if error in ("mspd", "proj"):
        return pe.mspd(Re, te, Rg, tg, K, pts, syms) if error == "mspd" else pe.proj(Re, te, Rg, tg, K, pts)
    if error == "mssd":
        return pe.mssd(Re, te, Rg, tg, pts, syms)
    return getattr(pe, error)(Re, te, Rg, tg, pts)


@pytest.mark.parametrize("error", ["add", "adi", "mssd", "mspd", "re", "te", "proj"])
def test_pose_errors_match_toolkit_cases(cases, models_info, points, error):
    """Every one of the 330 direct toolkit calls, batched per (object, symmetry set)."""
    groups: dict[tuple[int, str], list] = {}
    for c in cases["cases"]:
        groups.setdefault((c["obj_id"], c["syms"]), []).append(c)
    n = 0
    for (obj, syms_name), cs in groups.items():
        Re, te, Rg, tg, K = _batch(cs)
        pts, syms = points[obj], _syms(models_info, obj, syms_name)
        got = _compute(error, Re, te, Rg, tg, K, pts, syms)
        want = np.array([c["outputs"][error] for c in cs])
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=f"{error} obj {obj} syms {syms_name}")
        n += len(cs)
    assert n == 330


def test_single_pose_inputs_broadcast(cases, points):
    c = cases["cases"][5]
    args = (np.array(c["R_e"]), np.array(c["t_e"]), np.array(c["R_g"]), np.array(c["t_g"]))
    assert pe.add(*args, points[c["obj_id"]]).shape == (1,)
    np.testing.assert_allclose(pe.add(*args, points[c["obj_id"]])[0], c["outputs"]["add"], rtol=RTOL)


def test_vsd_formula_reproduces_toolkit_from_its_renders(golden_dir, cases):
    """The 30 VSD calls recomputed from the toolkit's own depth renders: bit-identical."""
    from repro.metrics.vsd import VsdParams, vsd_from_depth

    renders = np.load(golden_dir / "bop" / "vsd_case_renders.npz")
    costs = set()
    for c in cases["vsd_cases"]:
        depth = read_image(golden_dir / "bop" / c["depth_image"]).astype(np.float32) * np.float32(c["depth_scale"])
        key_est, key_gt = c["renders_npz_keys"]
        params = VsdParams(c["delta"], tuple(c["taus"]), c["normalized_by_diameter"], c["cost_type"])
        got = vsd_from_depth(depth, renders[key_est], renders[key_gt], np.array(c["K"]), c["diameter"], params)
        assert np.array_equal(got, np.array(c["outputs"]["vsd"])), c["case_id"]
        costs.add(c["cost_type"])
    assert costs == {"step", "tlinear"}


def test_sphere_shortcut_predicates(cases):
    for c in cases["vsd_cases"]:
        ok = pe.sphere_projections_overlap(np.array(c["t_e"]), np.array(c["t_g"]), 0.5 * c["diameter"])
        assert bool(ok[0]) == c["sphere_projections_overlap"]
    assert not pe.spheres_overlap(np.zeros(3), np.array([0.0, 0.0, 10.0]), 10.0)[0]
    assert pe.spheres_overlap(np.zeros(3), np.array([0.0, 0.0, 9.0]), 10.0)[0]


def test_cus_from_depth():
    from repro.metrics.vsd import cus_from_depth

    a = np.zeros((4, 4), np.float32)
    b = np.zeros((4, 4), np.float32)
    assert cus_from_depth(a, b) == 1.0
    a[:2, :2] = 1.0
    b[:2, :] = 1.0
    assert cus_from_depth(a, b) == pytest.approx(0.5)


def test_distance_on_crops_equals_verify_helper(golden_dir):
    """The cropped distance images VSD uses are bit-identical to ``depth_to_distance``."""
    from repro.metrics.vsd import _distance, distance_factors
    from repro.render.verify import depth_to_distance

    depth = read_image(golden_dir / "bop" / "dataset" / "goldtoy" / "test" / "000003" / "depth" / "000001.png")
    depth = depth.astype(np.float32) * np.float32(0.1)
    K = np.array([[571.9, 0.0, 326.2], [0.0, 573.1, 240.3], [0.0, 0.0, 1.0]])
    full = depth_to_distance(depth, K)
    px, py = distance_factors(K, depth.shape[1], depth.shape[0])
    box = (slice(37, 301), slice(120, 513))
    assert np.array_equal(_distance(depth[box], px[box], py[box]), full[box])


def test_torch_path_matches_numpy(cases, models_info, points):
    pytest.importorskip("torch")
    cs = [c for c in cases["cases"] if c["obj_id"] == 6 and c["syms"] == "0.1"][:8]
    Re, te, Rg, tg, K = _batch(cs)
    syms = _syms(models_info, 6, "0.1")
    for kind in ("add", "adi", "mssd", "mspd", "proj"):
        got = pe.point_errors_torch(kind, Re, te, Rg, tg, points[6], K=K, syms=syms, device="cpu")
        want = np.array([c["outputs"][kind] for c in cs])
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9, err_msg=kind)


@pytest.mark.gpu
def test_cuda_path_matches_numpy(cases, models_info, points):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("CUDA not available")
    for obj in (1, 2, 6):
        cs = [c for c in cases["cases"] if c["obj_id"] == obj and c["syms"] == "0.01"]
        Re, te, Rg, tg, K = _batch(cs)
        syms = _syms(models_info, obj, "0.01")
        for kind in ("add", "adi", "mssd", "mspd", "proj"):
            got = pe.point_errors_torch(kind, Re, te, Rg, tg, points[obj], K=K, syms=syms, device="cuda")
            want = np.array([c["outputs"][kind] for c in cs])
            np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9, err_msg=f"{kind} obj {obj}")


def test_branch_and_bound_equals_exhaustive(models_info, points):
    """The pruned MSSD/MSPD search returns exactly the exhaustive minimum."""
    rng = np.random.default_rng(3)
    K = np.array([[572.4, 0.0, 325.3], [0.0, 573.6, 242.0], [0.0, 0.0, 1.0]])
    for obj in (2, 6):
        syms = symmetry_transformations(models_info[str(obj)])
        Rg = np.stack([_rot(rng.normal(size=4)) for _ in range(6)])
        tg = np.column_stack([rng.normal(0, 40, 6), rng.normal(0, 40, 6), rng.uniform(500, 900, 6)])
        Re = np.stack([r @ _rot(np.array([1.0, *rng.normal(0, 0.1, 3)])) for r in Rg])
        te = tg + rng.normal(0, 8, (6, 3))
        pts = points[obj]
        brute_s = [min(np.linalg.norm((pts @ Re[i].T + te[i]) - (pts @ (Rg[i] @ syms.R[s]).T + Rg[i] @ syms.t[s]
                                                                  + tg[i]), axis=1).max() for s in range(len(syms)))
                   for i in range(6)]
        every = np.arange(len(pts))  # a "subset" of all points switches the pruning off
        assert np.array_equal(pe.mssd(Re, te, Rg, tg, pts, syms), pe.mssd(Re, te, Rg, tg, pts, syms, subset=every))
        np.testing.assert_allclose(pe.mssd(Re, te, Rg, tg, pts, syms), brute_s, rtol=1e-12)
        np.testing.assert_array_equal(pe.mspd(Re, te, Rg, tg, K, pts, syms),
                                      pe.mspd(Re, te, Rg, tg, K, pts, syms, subset=every))


# --------------------------------------------------------------------------- properties


def _rot(q: np.ndarray) -> np.ndarray:
    q = np.asarray(q, dtype=np.float64)
    q = q / np.linalg.norm(q)
    w, x, y, z = q
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


quats = st.lists(st.floats(-1.0, 1.0), min_size=4, max_size=4).filter(lambda q: np.linalg.norm(q) > 0.1)
trans = st.tuples(st.floats(-150.0, 150.0), st.floats(-150.0, 150.0), st.floats(400.0, 1200.0))
K_GOLD = np.array([[572.4114, 0.0, 325.2611], [0.0, 573.57043, 242.04899], [0.0, 0.0, 1.0]])


@settings(max_examples=40, deadline=None)
@given(obj=st.sampled_from([2, 3, 6, 9]), q_g=quats, t_g=trans, q_e=quats, t_e=trans, pick=st.integers(0, 10**6))
def test_errors_invariant_under_symmetries(models_info, points, obj, q_g, t_g, q_e, t_e, pick):
    """MSSD and MSPD do not change when the GT pose is composed with a listed symmetry, and the
    symmetric pose itself has zero MSSD/MSPD and a small ADD-S."""
    syms = symmetry_transformations(models_info[str(obj)])
    s = pick % len(syms)
    Rg, tg = _rot(q_g), np.array(t_g)
    Rgs, tgs = Rg @ syms.R[s], Rg @ syms.t[s] + tg
    Re, te = _rot(q_e), np.array(t_e)
    pts = points[obj]
    for fn in (lambda a, b: pe.mssd(Re, te, a, b, pts, syms), lambda a, b: pe.mspd(Re, te, a, b, K_GOLD, pts, syms)):
        x, y = fn(Rg, tg)[0], fn(Rgs, tgs)[0]
        assert abs(x - y) <= 1e-9 + 1e-12 * abs(x)
    assert pe.mssd(Rgs, tgs, Rg, tg, pts, syms)[0] <= 1e-9
    assert pe.mspd(Rgs, tgs, Rg, tg, K_GOLD, pts, syms)[0] <= 1e-9
    assert pe.adi(Rgs, tgs, Rg, tg, pts)[0] <= 0.01 * float(models_info[str(obj)]["diameter"])


@settings(max_examples=40, deadline=None)
@given(obj=st.sampled_from([1, 2, 3, 4, 6, 9]), q_g=quats, t_g=trans, q_e=quats, t_e=trans)
def test_adds_at_most_add_and_zero_at_gt(models_info, points, obj, q_g, t_g, q_e, t_e):
    pts = points[obj]
    syms = symmetry_transformations(models_info[str(obj)])
    Rg, tg, Re, te = _rot(q_g), np.array(t_g), _rot(q_e), np.array(t_e)
    assert pe.adi(Re, te, Rg, tg, pts)[0] <= pe.add(Re, te, Rg, tg, pts)[0] + 1e-9
    assert pe.mssd(Re, te, Rg, tg, pts, syms)[0] <= pe.mssd(Re, te, Rg, tg, pts)[0] + 1e-9
    for value in (pe.add(Rg, tg, Rg, tg, pts), pe.adi(Rg, tg, Rg, tg, pts), pe.mssd(Rg, tg, Rg, tg, pts, syms),
                  pe.mspd(Rg, tg, Rg, tg, K_GOLD, pts, syms), pe.proj(Rg, tg, Rg, tg, K_GOLD, pts), pe.te(tg, tg)):
        assert value[0] == 0.0
    assert pe.re(Rg, Rg)[0] < 1e-5


def test_vsd_zero_for_gt_pose_and_one_when_disjoint():
    from repro.metrics.vsd import vsd_from_depth

    depth = np.zeros((20, 30), np.float32)
    depth[5:15, 5:20] = 500.0
    render = np.zeros_like(depth)
    render[6:12, 6:12] = 499.0
    K = np.array([[500.0, 0.0, 15.0], [0.0, 500.0, 10.0], [0.0, 0.0, 1.0]])
    assert np.array_equal(vsd_from_depth(depth, render, render, K, 100.0), np.zeros(10))
    other = np.zeros_like(depth)
    other[16:19, 22:28] = 499.0
    assert np.array_equal(vsd_from_depth(depth, other, render, K, 100.0), np.ones(10))


def test_mask_iou_from_depth():
    from repro.metrics.vsd import cus_from_depth, mask_iou_from_depth

    a = np.zeros((4, 4), np.float32)
    b = np.zeros((4, 4), np.float32)
    assert mask_iou_from_depth(a, b) == 0.0
    a[:2, :2] = 1.0
    b[:2, :] = 1.0
    assert mask_iou_from_depth(a, b) == 0.5
    assert mask_iou_from_depth(a, a) == 1.0
    b[:] = 0.0
    b[2:, 2:] = 1.0
    assert mask_iou_from_depth(a, b) == 0.0 and cus_from_depth(a, b) == 1.0
