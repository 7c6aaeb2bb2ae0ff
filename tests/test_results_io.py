"""Results IO: BOP19 CSV, BOP22 COCO JSON, category JSON, timings CSV.

Round trips must be lossless; malformed files must fail with a DataFormatError that names the
file and the line (CSV) or ``[i].field`` (JSON); failing writes must leave no file.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from repro.errors import DataFormatError
from repro.results import (
    BOP_CSV_HEADER,
    BopResultArrays,
    BopResultRow,
    CategoryImageResult,
    CocoResult,
    TimingRow,
    bop_rows_from_estimates,
    category_image_from_estimates,
    coco_result_from_estimate,
    mask_to_rle,
    read_bop_csv,
    read_bop_csv_arrays,
    read_category_results,
    read_coco_results,
    read_timings_csv,
    rle_to_mask,
    timing_rows,
    timings_by_image,
    write_bop_csv,
    write_category_results,
    write_coco_results,
    write_timings_csv,
)
from repro.types import CategoryEstimate, PoseEstimate

pytestmark = pytest.mark.filterwarnings(  # pycocotools' RLE wrapper under numpy 2
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")

HYPO = settings(max_examples=30, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="session")
def golden_csv(golden_dir: Path) -> Path:
    return golden_dir / "bop" / "results" / "goldpose_goldtoy-test.csv"


@pytest.fixture(scope="session")
def golden_coco(golden_dir: Path) -> Path:
    return golden_dir / "bop" / "results" / "goldsegm_goldtoy-test.json"


@pytest.fixture(scope="session")
def golden_nocs(golden_dir: Path) -> Path:
    return golden_dir / "nocs" / "inputs.json"


def _rotation(q) -> np.ndarray:
    """Rotation matrix of a (not necessarily unit, non-zero) quaternion."""
    w, x, y, z = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def _random_rows(n: int, seed: int = 0) -> list[BopResultRow]:
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(n):
        im = k // 3
        rows.append(BopResultRow(1 + im // 4, im, int(rng.integers(1, 30)), float(rng.random()),
                                 _rotation(rng.normal(size=4)), rng.normal(size=3) * 300,
                                 0.1 * (im + 1)))
    return rows


def _assert_located(err: DataFormatError, path: Path, *, line: int | None = None, field: str | None = None):
    assert str(path) in str(err)
    if line is not None:
        assert err.line == line, str(err)
        assert f"{path}:{line}" in str(err)
    if field is not None:
        assert err.field == field, str(err)
        assert f"'{field}'" in str(err)


# ============================================================================================
# BOP19 CSV


def test_bop_golden_reads(golden_csv: Path):
    rows = read_bop_csv(golden_csv)
    assert len(rows) == 68
    first = rows[0]
    assert (first.scene_id, first.im_id, first.obj_id, first.score, first.time) == (1, 0, 1, 0.7519, 0.359)
    assert first.R.shape == (3, 3) and first.t.shape == (3,)
    assert first.t[2] == 700.8517035798353
    # independent naive parse agrees bit for bit
    lines = golden_csv.read_text().splitlines()[1:]
    naive_R = np.array([[float(v) for v in ln.split(",")[4].split()] for ln in lines]).reshape(-1, 3, 3)
    assert np.array_equal(np.stack([r.R for r in rows]), naive_R)
    times: dict[tuple[int, int], set[float]] = {}
    for r in rows:
        times.setdefault((r.scene_id, r.im_id), set()).add(r.time)
    assert all(len(v) == 1 for v in times.values())


def test_bop_golden_round_trip_is_lossless(golden_csv: Path, tmp_path: Path):
    a = read_bop_csv_arrays(golden_csv)
    out = write_bop_csv(tmp_path / "est.csv", read_bop_csv(golden_csv))
    b = read_bop_csv_arrays(out)
    for name in ("scene_id", "im_id", "obj_id", "score", "R", "t", "time"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and np.array_equal(x, y), name
        assert x.tobytes() == y.tobytes(), name
    assert read_bop_csv(out) == read_bop_csv(golden_csv)
    text = out.read_text()
    assert text.startswith(BOP_CSV_HEADER + "\n") and text.endswith("\n")
    again = write_bop_csv(tmp_path / "again.csv", b)
    assert again.read_text() == text


def test_bop_tolerates_near_orthonormal_and_respects_rot_tol(tmp_path: Path):
    rows = _random_rows(3)
    noisy = BopResultRow(1, 0, 5, 0.5, rows[0].R + 1e-9, [0, 0, 500], rows[0].time)
    path = write_bop_csv(tmp_path / "a.csv", [*rows, noisy])
    assert read_bop_csv(path)[-1] == noisy
    scaled = BopResultRow(1, 0, 5, 0.5, rows[0].R * 1.0004, [0, 0, 500], rows[0].time)
    path = write_bop_csv(tmp_path / "b.csv", [*rows, scaled])
    assert len(read_bop_csv(path)) == 4
    with pytest.raises(DataFormatError, match=r"rot_tol=0\.0001") as exc:
        read_bop_csv(path, rot_tol=1e-4)
    _assert_located(exc.value, path, line=5, field="R")


def test_bop_header_only_crlf_and_no_final_newline(tmp_path: Path):
    p = tmp_path / "r.csv"
    p.write_text(BOP_CSV_HEADER + "\n")
    assert read_bop_csv(p) == []
    assert len(read_bop_csv_arrays(p)) == 0
    write_bop_csv(p, _random_rows(4))
    text = p.read_text()
    p.write_bytes(text.rstrip("\n").replace("\n", "\r\n").encode())
    assert read_bop_csv(p) == _random_rows(4)
    p.write_text(text.rstrip("\n"))  # bop_toolkit's save_bop_results writes no final newline
    assert read_bop_csv(p) == _random_rows(4)


def test_bop_inconsistent_time_can_be_allowed(tmp_path: Path):
    p = tmp_path / "r.csv"
    lines = (BOP_CSV_HEADER + "\n" + "1,0,1,0.5,1 0 0 0 1 0 0 0 1,0 0 100,0.5\n"
             + "1,0,2,0.5,1 0 0 0 1 0 0 0 1,0 0 100,0.75\n")
    p.write_text(lines)
    with pytest.raises(DataFormatError, match="given on line 2") as exc:
        read_bop_csv(p)
    _assert_located(exc.value, p, line=3, field="time")
    assert [r.time for r in read_bop_csv(p, require_consistent_time=False)] == [0.5, 0.75]


def test_bop_rows_from_estimates(tmp_path: Path):
    R = _rotation([1, 2, 3, 4])
    ests = [PoseEstimate(3, R, [1.0, 2.0, 3.0], score=0.25), PoseEstimate(7, np.eye(3), [0, 0, 9])]
    rows = bop_rows_from_estimates(2, 11, ests, time=0.125)
    assert [(r.scene_id, r.im_id, r.obj_id, r.score, r.time) for r in rows] == [
        (2, 11, 3, 0.25, 0.125), (2, 11, 7, 1.0, 0.125)]
    back = read_bop_csv(write_bop_csv(tmp_path / "r.csv", rows))
    assert back == rows and np.array_equal(back[0].R, R)


_GOOD_LINE = "1,0,2,0.5,1 0 0 0 1 0 0 0 1,10 20 500,0.25"
_BAD_ROT = " ".join(map(repr, (_rotation([1, 2, 3, 4]) * 1.01).ravel().tolist()))

# name -> (file bytes, expected line, expected field, message fragment)
BOP_MALFORMED: dict[str, tuple[bytes, int, str | None, str]] = {
    "empty_file": (b"", 1, None, "empty file"),
    "missing_header": (f"{_GOOD_LINE}\n".encode(), 1, "header", "header line is missing"),
    "wrong_header": (b"scene,im,obj,score,R,t,time\n", 1, "header", "expected exactly"),
    "header_whitespace": (b"scene_id, im_id, obj_id, score, R, t, time\n", 1, "header", "whitespace"),
    "header_bom": (("\ufeff" + BOP_CSV_HEADER + "\n").encode(), 1, "header", "byte-order mark"),
    "too_few_fields": (b"1,0,2,0.5,1 0 0 0 1 0 0 0 1,10 20 500\n", 3, None, "7 comma-separated"),
    "too_many_fields": (f"{_GOOD_LINE},x\n".encode(), 3, None, "got 8"),
    "float_id": (b"1.0,0,2,0.5,1 0 0 0 1 0 0 0 1,10 20 500,0.25\n", 3, "scene_id", "non-negative integer"),
    "negative_id": (b"1,0,-2,0.5,1 0 0 0 1 0 0 0 1,10 20 500,0.25\n", 3, "obj_id", ">= 0"),
    "padded_id": (b"1, 0,2,0.5,1 0 0 0 1 0 0 0 1,10 20 500,0.25\n", 3, "im_id", "non-negative integer"),
    "score_nan": (b"1,0,2,nan,1 0 0 0 1 0 0 0 1,10 20 500,0.25\n", 3, "score", "finite"),
    "score_text": (b"1,0,2,high,1 0 0 0 1 0 0 0 1,10 20 500,0.25\n", 3, "score", "not a number"),
    "score_empty": (b"1,0,2,,1 0 0 0 1 0 0 0 1,10 20 500,0.25\n", 3, "score", "empty"),
    "score_underscore": (b"1,0,2,1_0,1 0 0 0 1 0 0 0 1,10 20 500,0.25\n", 3, "score", "plain number"),
    "R_eight_numbers": (b"1,0,2,0.5,1 0 0 0 1 0 0 0,10 20 500,0.25\n", 3, "R", "expected 9 numbers"),
    "R_ten_numbers": (b"1,0,2,0.5,1 0 0 0 0 1 0 0 0 1,10 20 500,0.25\n", 3, "R", "expected 9 numbers"),
    "R_inf": (b"1,0,2,0.5,1 0 0 0 1 0 0 0 inf,10 20 500,0.25\n", 3, "R", "finite"),
    "R_not_orthonormal": (f"1,0,2,0.5,{_BAD_ROT},10 20 500,0.25\n".encode(), 3, "R", "rot_tol=0.001"),
    "R_reflection": (b"1,0,2,0.5,-1 0 0 0 1 0 0 0 1,10 20 500,0.25\n", 3, "R", "det"),
    "t_two_numbers": (b"1,0,2,0.5,1 0 0 0 1 0 0 0 1,10 20,0.25\n", 3, "t", "expected 3 numbers"),
    "t_nan": (b"1,0,2,0.5,1 0 0 0 1 0 0 0 1,10 nan 500,0.25\n", 3, "t", "finite"),
    "time_inf": (b"1,0,2,0.5,1 0 0 0 1 0 0 0 1,10 20 500,inf\n", 3, "time", "finite"),
    "time_negative": (b"1,0,2,0.5,1 0 0 0 1 0 0 0 1,10 20 500,-2\n", 3, "time", "-1 if unknown"),
    "time_inconsistent": (b"1,0,1,0.5,1 0 0 0 1 0 0 0 1,10 20 500,0.5\n", 3, "time", "differs from 0.25"),
    "blank_line_middle": (f"\n{_GOOD_LINE}\n".encode(), 3, None, "blank line"),
    "trailing_blank_line": (b"\n", 3, None, "blank line"),
    "non_utf8": (b"1,0,2,0.5,1 0 0 0 1 0 0 0 1,10 20 500,0.25\xff\n", 3, None, "not UTF-8"),
}


@pytest.mark.parametrize("kind", sorted(BOP_MALFORMED))
def test_bop_malformed_is_located(kind: str, tmp_path: Path):
    data, line, field, fragment = BOP_MALFORMED[kind]
    p = tmp_path / f"{kind}.csv"
    if line == 1:
        p.write_bytes(data)
    else:  # header, one good line, then the bad content on line 3
        p.write_bytes(f"{BOP_CSV_HEADER}\n{_GOOD_LINE}\n".encode() + data)
    with pytest.raises(DataFormatError, match=None) as exc:
        read_bop_csv(p)
    assert fragment in exc.value.message, str(exc.value)
    _assert_located(exc.value, p, line=line, field=field)


finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
quaternions = st.lists(st.floats(-1, 1), min_size=4, max_size=4).filter(lambda q: np.linalg.norm(q) > 0.1)


@st.composite
def bop_row_lists(draw):
    n_images = draw(st.integers(1, 4))
    image_times = [draw(st.one_of(st.just(-1.0), st.floats(0, 1e4))) for _ in range(n_images)]
    rows = []
    for _ in range(draw(st.integers(0, 12))):
        k = draw(st.integers(0, n_images - 1))
        rows.append(BopResultRow(
            scene_id=k // 2, im_id=k, obj_id=draw(st.integers(0, 2**40)), score=draw(finite),
            R=_rotation(draw(quaternions)), t=draw(st.lists(finite, min_size=3, max_size=3)),
            time=image_times[k]))
    return rows


@HYPO
@given(rows=bop_row_lists())
def test_bop_random_rows_round_trip_exactly(rows: list[BopResultRow], tmp_path: Path):
    p = write_bop_csv(tmp_path / "r.csv", rows)
    back = read_bop_csv(p)
    assert back == rows
    for a, b in zip(back, rows, strict=True):
        assert a.R.tobytes() == b.R.tobytes() and a.t.tobytes() == b.t.tobytes()
        assert math.copysign(1, a.score) == math.copysign(1, b.score)  # -0.0 survives


CORRUPTIONS: dict[str, list[str]] = {
    "scene_id": ["-3", "x", "1.0", "", " 1", "1e3"],
    "im_id": ["-1", "0x1", "٣"],
    "obj_id": ["-7", "2.5", "nan"],
    "score": ["nan", "inf", "-inf", "abc", "", "0.5 ", "1,5"],
    "R": ["1 0 0 0 1 0 0 0", "1 0 0 0 1 0 0 0 1 0", "2 0 0 0 2 0 0 0 2", "1 0 0 0 1 0 0 0 nan",
          "-1 0 0 0 -1 0 0 0 -1", "1 0 0 0 1 0 0 0 1;"],
    "t": ["1 2", "1 2 3 4", "1 inf 3", "1\t2", "1 2 e"],
    "time": ["inf", "nan", "-0.5", "soon"],
}
_FIELD_INDEX = {name: k for k, name in enumerate(BOP_CSV_HEADER.split(","))}


@HYPO
@given(n=st.integers(1, 15), data=st.data())
def test_bop_random_corruption_is_reported_at_its_line(n: int, data, tmp_path: Path):
    p = write_bop_csv(tmp_path / "r.csv", _random_rows(n, seed=n))
    lines = p.read_text().split("\n")
    idx = data.draw(st.integers(0, n - 1), label="row")
    name = data.draw(st.sampled_from(sorted(CORRUPTIONS)), label="field")
    bad = data.draw(st.sampled_from(CORRUPTIONS[name]), label="value")
    fields = lines[idx + 1].split(",")
    fields[_FIELD_INDEX[name]] = bad
    lines[idx + 1] = ",".join(fields)
    p.write_text("\n".join(lines))
    with pytest.raises(DataFormatError) as exc:
        read_bop_csv(p)
    expected_field = None if "," in bad else name
    _assert_located(exc.value, p, line=idx + 2, field=expected_field)


def test_bop_write_validates_before_writing(tmp_path: Path):
    p = tmp_path / "out" / "r.csv"
    rows = _random_rows(5)
    bad = BopResultRow(rows[2].scene_id, rows[2].im_id, 3, float("nan"), rows[2].R, rows[2].t, rows[2].time)
    with pytest.raises(ValueError, match=r"row 5: field 'score'"):
        write_bop_csv(p, [*rows, bad])
    assert not p.exists()
    assert not p.parent.exists() or not any(p.parent.iterdir())
    write_bop_csv(p, rows)
    before = p.read_bytes()
    for broken in (
        BopResultRow(1, 0, 3, 0.5, np.eye(3) * 2, [0, 0, 1], rows[0].time),
        BopResultRow(1, 0, -3, 0.5, np.eye(3), [0, 0, 1], rows[0].time),
        BopResultRow(1, 0, 3, 0.5, np.eye(3), [0, 0, np.inf], rows[0].time),
        BopResultRow(1, 0, 3, 0.5, np.eye(3), [0, 0, 1], 99.0),
    ):
        with pytest.raises(ValueError):
            write_bop_csv(p, [*rows, broken])
    assert p.read_bytes() == before  # a failed write leaves the previous file untouched
    assert sorted(x.name for x in p.parent.iterdir()) == ["r.csv"]


def test_bop_large_file_reads_fast(tmp_path: Path):
    n = 100_000
    rng = np.random.default_rng(1)
    q = rng.normal(size=(n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    R = np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
                  2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
                  2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], axis=1).reshape(n, 3, 3)
    im = np.arange(n) // 10
    arrays = BopResultArrays(scene_id=im // 100, im_id=im, obj_id=rng.integers(1, 30, n), score=rng.random(n),
                             R=R, t=rng.normal(size=(n, 3)) * 500, time=im * 0.001)
    p = write_bop_csv(tmp_path / "big.csv", arrays)
    start = time.perf_counter()
    back = read_bop_csv_arrays(p)
    assert time.perf_counter() - start < 3.0
    assert np.array_equal(back.R, R) and np.array_equal(back.time, arrays.time)
    lines = p.read_text().split("\n")
    lines[77_777] = lines[77_777].replace(",", ",x", 1)
    p.write_text("\n".join(lines))
    with pytest.raises(DataFormatError) as exc:
        read_bop_csv_arrays(p)
    assert exc.value.line == 77_778 and exc.value.field == "im_id"


# ============================================================================================
# BOP22 COCO JSON


def test_coco_golden_reads_and_round_trips(golden_coco: Path, tmp_path: Path):
    results = read_coco_results(golden_coco)
    assert len(results) == 79
    raw = json.loads(golden_coco.read_text())
    for r, obj in zip(results, raw, strict=True):
        assert r.segmentation is not None and r.segmentation["size"] == [480, 640]
        assert isinstance(r.segmentation["counts"], str)
        assert r.bbox == tuple(float(v) for v in obj["bbox"])
    masks = [r.mask() for r in results]
    assert all(m.shape == (480, 640) and m.dtype == bool for m in masks)
    assert all(m.any() for m in masks)
    out = write_coco_results(tmp_path / "segm.json", results)
    back = read_coco_results(out)
    assert back == results
    assert all(np.array_equal(a.mask(), m) for a, m in zip(back, masks, strict=True))
    assert json.loads(out.read_text())[0].keys() == raw[0].keys()


@HYPO
@given(h=st.integers(1, 40), w=st.integers(1, 40), seed=st.integers(0, 2**32 - 1),
       density=st.floats(0, 1))
def test_rle_round_trip(h: int, w: int, seed: int, density: float):
    mask = np.random.default_rng(seed).random((h, w)) < density
    rle = mask_to_rle(mask)
    assert rle["size"] == [h, w] and isinstance(rle["counts"], str)
    assert np.array_equal(rle_to_mask(rle), mask)


def test_coco_from_estimate_and_detection_only(tmp_path: Path):
    mask = np.zeros((48, 64), dtype=bool)
    mask[10:20, 30:35] = True
    est = PoseEstimate(4, np.eye(3), [0, 0, 100], score=0.75, mask=mask)
    res = coco_result_from_estimate(est, scene_id=2, image_id=9, time=0.5)
    assert res.bbox == (30.0, 10.0, 5.0, 10.0) and res.category_id == 4
    det = coco_result_from_estimate(PoseEstimate(5, np.eye(3), [0, 0, 1], box=(1, 2, 3, 4)), 2, 9, 0.5)
    assert det.segmentation is None
    back = read_coco_results(write_coco_results(tmp_path / "r.json", [res, det]))
    assert back == [res, det]
    assert np.array_equal(back[0].mask(), mask)
    with pytest.raises(ValueError, match="neither a mask nor a box"):
        coco_result_from_estimate(PoseEstimate(5, np.eye(3), [0, 0, 1]), 2, 9)


_GOOD_SEG = mask_to_rle(np.eye(6, 8, dtype=bool))
_GOOD_COCO = {"scene_id": 1, "image_id": 0, "category_id": 2, "score": 0.5, "bbox": [1, 2, 3, 4],
              "segmentation": _GOOD_SEG, "time": 0.25}


def _coco_variant(**changes) -> dict:
    obj = json.loads(json.dumps(_GOOD_COCO))
    for k, v in changes.items():
        if v is _DROP:
            del obj[k]
        else:
            obj[k] = v
    return obj


_DROP = object()

# name -> (JSON text, expected field, message fragment)
COCO_MALFORMED: dict[str, tuple[str, str | None, str]] = {
    "top_level_object": (json.dumps({"results": []}), None, "expected a JSON list"),
    "element_not_object": (json.dumps([_GOOD_COCO, [1, 2]]), "[1]", "expected an object"),
    "missing_score": (json.dumps([_coco_variant(score=_DROP)]), "[0].score", "missing"),
    "missing_time": (json.dumps([_coco_variant(time=_DROP)]), "[0].time", "missing"),
    "float_category": (json.dumps([_coco_variant(category_id=2.5)]), "[0].category_id", "integer"),
    "bool_image_id": (json.dumps([_coco_variant(image_id=True)]), "[0].image_id", "integer"),
    "negative_scene": (json.dumps([_coco_variant(scene_id=-1)]), "[0].scene_id", ">= 0"),
    "score_nan": (json.dumps([_GOOD_COCO, _coco_variant(score=math.nan)]), "[1].score", "finite"),
    "score_string": (json.dumps([_coco_variant(score="0.5")]), "[0].score", "finite number"),
    "bbox_three": (json.dumps([_coco_variant(bbox=[1, 2, 3])]), "[0].bbox", "[x, y, w, h]"),
    "bbox_negative_w": (json.dumps([_coco_variant(bbox=[1, 2, -3, 4])]), "[0].bbox", ">= 0"),
    "rle_list_counts": (json.dumps([_coco_variant(segmentation={"size": [6, 8], "counts": [0, 48]})]),
                        "[0].segmentation", "uncompressed"),
    "rle_bad_char": (json.dumps([_coco_variant(segmentation={"size": [6, 8], "counts": "ab~"})]),
                     "[0].segmentation", "invalid character"),
    "rle_wrong_size": (json.dumps([_coco_variant(segmentation={**_GOOD_SEG, "size": [6, 9]})]),
                       "[0].segmentation", "cover 48 pixels"),
    "rle_zero_size": (json.dumps([_coco_variant(segmentation={**_GOOD_SEG, "size": [0, 8]})]),
                      "[0].segmentation", "positive"),
    "time_inconsistent": (json.dumps([_GOOD_COCO, _coco_variant(time=0.5)]), "[1].time", "differs"),
    "time_negative": (json.dumps([_coco_variant(time=-3)]), "[0].time", "-1 if unknown"),
}


@pytest.mark.parametrize("kind", sorted(COCO_MALFORMED))
def test_coco_malformed_is_located(kind: str, tmp_path: Path):
    text, field, fragment = COCO_MALFORMED[kind]
    p = tmp_path / f"{kind}.json"
    p.write_text(text)
    with pytest.raises(DataFormatError) as exc:
        read_coco_results(p)
    assert fragment in exc.value.message, str(exc.value)
    _assert_located(exc.value, p, field=field)


def test_coco_invalid_json_names_line(tmp_path: Path):
    p = tmp_path / "r.json"
    p.write_text("[\n  " + json.dumps(_GOOD_COCO) + ",\n  {\"scene_id\": 1,,}\n]\n")
    with pytest.raises(DataFormatError, match="invalid JSON") as exc:
        read_coco_results(p)
    _assert_located(exc.value, p, line=3)


def test_coco_write_validates_before_writing(tmp_path: Path):
    p = tmp_path / "r.json"
    good = CocoResult(1, 0, 2, 0.5, (1, 2, 3, 4), _GOOD_SEG, 0.25)
    for bad in (CocoResult(1, 0, 2, math.nan, (1, 2, 3, 4), _GOOD_SEG, 0.25),
                CocoResult(1, 0, 2, 0.5, (1, 2, 3, 4), {"size": [5, 5], "counts": "0"}, 0.25),
                CocoResult(1, 0, 2, 0.5, (1, 2, 3, 4), _GOOD_SEG, 0.75)):
        with pytest.raises(ValueError, match=r"result \[1\]"):
            write_coco_results(p, [good, bad])
        assert not p.exists()
    assert list(tmp_path.iterdir()) == []


# ============================================================================================
# Category-level JSON


def test_category_reads_nocs_golden_inputs(golden_nocs: Path):
    images = read_category_results(golden_nocs)
    assert len(images) == 40
    assert sum(im.n_gt for im in images) == 140
    assert sum(im.n_pred for im in images) == 189
    raw = json.loads(golden_nocs.read_text())["images"]
    for im, obj in zip(images, raw, strict=True):
        assert im.im_id == obj["image_id"] and im.scene_id == 0 and im.time == -1.0
        assert im.has_gt and im.gt_handle_visibility is not None and im.gt_bboxes is not None
        assert im.pred_RTs.shape == (im.n_pred, 4, 4) and im.gt_RTs.shape == (im.n_gt, 4, 4)
        assert np.array_equal(im.pred_RTs, np.array(obj["pred_RTs"]).reshape(-1, 4, 4))
        assert im.extra["note"] == obj["note"] and im.extra["pred_tags"] == obj["pred_tags"]
    assert images[27].n_gt == 0 and images[27].n_pred == 0  # the 'empty' image keeps (0, 4, 4) shapes
    assert images[27].pred_RTs.shape == (0, 4, 4)


def test_category_round_trip_is_lossless(golden_nocs: Path, tmp_path: Path):
    images = read_category_results(golden_nocs)
    out = write_category_results(tmp_path / "cat.json", images)
    back = read_category_results(out)
    assert back == images
    assert json.loads(out.read_text())["format"] == "repro-category-v1"
    assert write_category_results(tmp_path / "again.json", back).read_text() == out.read_text()


_POSES = st.tuples(quaternions, st.floats(0.01, 2), st.lists(finite, min_size=3, max_size=3))


@st.composite
def category_images(draw):
    images = []
    for k in range(draw(st.integers(0, 4))):
        m = draw(st.integers(0, 4))
        rts = []
        for q, s, t in (draw(_POSES) for _ in range(m)):
            rt = np.eye(4)
            rt[:3, :3] = s * _rotation(q)
            rt[:3, 3] = t
            rts.append(rt)
        images.append(CategoryImageResult(
            scene_id=draw(st.integers(0, 5)), im_id=k,
            pred_class_ids=draw(st.lists(st.integers(1, 6), min_size=m, max_size=m)),
            pred_scores=draw(st.lists(finite, min_size=m, max_size=m)),
            pred_RTs=np.array(rts).reshape(m, 4, 4),
            pred_scales=draw(st.lists(st.lists(st.floats(0.001, 10), min_size=3, max_size=3),
                                      min_size=m, max_size=m)),
            pred_bboxes=[[0.5, 1, 100.25, 200] for _ in range(m)],
            time=draw(st.one_of(st.just(-1.0), st.floats(0, 100))),
        ))
    return images


@HYPO
@given(images=category_images())
def test_category_random_round_trip(images: list[CategoryImageResult], tmp_path: Path):
    back = read_category_results(write_category_results(tmp_path / "c.json", images))
    assert back == images
    assert all(b.pred_RTs.tobytes() == a.pred_RTs.tobytes() for a, b in zip(back, images, strict=True))


def test_category_from_estimates(tmp_path: Path):
    rt = np.eye(4)
    rt[:3, :3] *= 0.2
    rt[:3, 3] = [0.1, -0.05, 0.9]
    mask = np.zeros((30, 40), dtype=bool)
    mask[5:9, 10:20] = True
    ests = [CategoryEstimate(6, rt, [0.5, 0.4, 0.3], score=0.9, box=(10, 20, 30, 40)),
            CategoryEstimate(1, rt, [0.2, 0.9, 0.2], score=0.4, mask=mask)]
    img = category_image_from_estimates(3, 7, ests, time=0.2)
    assert img.pred_bboxes.tolist() == [[20, 10, 60, 40], [5, 10, 9, 20]]
    assert not img.has_gt
    assert read_category_results(write_category_results(tmp_path / "c.json", [img])) == [img]
    with pytest.raises(ValueError, match="neither a box"):
        category_image_from_estimates(3, 7, [CategoryEstimate(2, rt, [1, 1, 1])])


_RT = [[0.2, 0, 0, 0.1], [0, 0.2, 0, 0], [0, 0, 0.2, 1.0], [0, 0, 0, 1]]
_GOOD_IMAGE = {"scene_id": 1, "im_id": 4, "time": 0.5, "pred_class_ids": [1, 6], "pred_scores": [0.9, 0.2],
               "pred_RTs": [_RT, _RT], "pred_scales": [[1, 1, 1], [0.5, 0.5, 0.5]],
               "pred_bboxes": [[1, 2, 30, 40], [5, 6, 70, 80]],
               "gt_class_ids": [6], "gt_RTs": [_RT], "gt_scales": [[1, 1, 1]]}


def _cat_file(*images, fmt="repro-category-v1") -> str:
    top: dict = {"images": list(images)}
    if fmt is not None:
        top["format"] = fmt
    return json.dumps(top)


def _img(**changes) -> dict:
    obj = json.loads(json.dumps(_GOOD_IMAGE))
    for k, v in changes.items():
        if v is _DROP:
            del obj[k]
        else:
            obj[k] = v
    return obj


# name -> (JSON text, expected field, message fragment)
CATEGORY_MALFORMED: dict[str, tuple[str, str | None, str]] = {
    "top_level_list": (json.dumps([_GOOD_IMAGE]), None, "expected a JSON object"),
    "unknown_format": (_cat_file(_GOOD_IMAGE, fmt="nocs-v0"), "format", "unknown format"),
    "wrong_synsets": (json.dumps({"synset_names": ["BG", "mug"], "images": []}), "synset_names", "synset"),
    "images_missing": (json.dumps({"format": "repro-category-v1"}), "images", "missing"),
    "image_not_object": (_cat_file(_GOOD_IMAGE, 3), "images[1]", "expected an object"),
    "missing_time": (_cat_file(_img(time=_DROP)), "images[0].time", "missing"),
    "missing_pred_scores": (_cat_file(_img(pred_scores=_DROP)), "images[0].pred_scores", "missing"),
    "RT_3x4": (_cat_file(_img(pred_RTs=[_RT[:3], _RT])), "images[0].pred_RTs", "has length 3"),
    "RT_string": (_cat_file(_img(pred_RTs=[_RT, "eye"])), "images[0].pred_RTs", "has str"),
    "scales_two": (_cat_file(_img(pred_scales=[[1, 1], [1, 1]])), "images[0].pred_scales", "M x 3"),
    "length_mismatch": (_cat_file(_img(pred_scores=[0.9])), "images[0].pred_scores", "has 1 entries"),
    "class_id_7": (_cat_file(_img(pred_class_ids=[1, 7])), "images[0].pred_class_ids", "1..6"),
    "class_id_float": (_cat_file(_img(gt_class_ids=[6.0])), "images[0].gt_class_ids", "integer"),
    "class_id_bool": (_cat_file(_img(pred_class_ids=[True, 2])), "images[0].pred_class_ids", "integer"),
    "null_in_RT": (_cat_file(_GOOD_IMAGE, _img(im_id=5, gt_RTs=[[*_RT[:2], [0, 0, None, 1], _RT[3]]])),
                   "images[1].gt_RTs", "not finite"),
    "RT_last_row": (_cat_file(_img(pred_RTs=[_RT, [*_RT[:3], [0, 0, 1, 1]]])), "images[0].pred_RTs",
                    "last row"),
    "zero_bbox": (_cat_file(_img(pred_bboxes=[[1, 2, 30, 40], [0, 0, 0, 0]])), "images[0].pred_bboxes",
                  "trim_zeros"),
    "gt_partial": (_cat_file(_img(gt_RTs=_DROP)), "images[0].gt_RTs", "required when any gt_"),
    "handle_visibility_2": (_cat_file(_img(gt_handle_visibility=[2])), "images[0].gt_handle_visibility",
                            "0 or 1"),
    "duplicate_image": (_cat_file(_GOOD_IMAGE, _GOOD_IMAGE), "images[1].im_id", "duplicate"),
    "negative_im_id": (_cat_file(_img(im_id=-4)), "images[0].im_id", ">= 0"),
    "time_nan": (_cat_file(_img(time=math.nan)), "images[0].time", "finite"),
}


@pytest.mark.parametrize("kind", sorted(CATEGORY_MALFORMED))
def test_category_malformed_is_located(kind: str, tmp_path: Path):
    text, field, fragment = CATEGORY_MALFORMED[kind]
    p = tmp_path / f"{kind}.json"
    p.write_text(text)
    with pytest.raises(DataFormatError) as exc:
        read_category_results(p)
    assert fragment in exc.value.message, str(exc.value)
    _assert_located(exc.value, p, field=field)


def test_category_official_layout_defaults_and_valid_sample(tmp_path: Path):
    p = tmp_path / "c.json"
    p.write_text(_cat_file(_GOOD_IMAGE))
    [img] = read_category_results(p)
    assert img.gt_handle_visibility is None and img.n_gt == 1 and img.n_pred == 2
    official = _img(scene_id=_DROP, im_id=_DROP, time=_DROP, image_id=12)
    p.write_text(json.dumps({"synset_names": ["BG", "bottle", "bowl", "camera", "can", "laptop", "mug"],
                             "images": [official]}))
    [img] = read_category_results(p)
    assert (img.scene_id, img.im_id, img.time, img.extra) == (0, 12, -1.0, {})


def test_category_write_rejects_duplicates_before_writing(tmp_path: Path):
    img = read_category_results(_write(tmp_path / "in.json", _cat_file(_GOOD_IMAGE)))[0]
    p = tmp_path / "out.json"
    with pytest.raises(ValueError, match="duplicate"):
        write_category_results(p, [img, img])
    assert not p.exists()
    with pytest.raises(ValueError, match="pred_class_ids"):
        CategoryImageResult(0, 0, [9], [0.5], [np.eye(4)], [[1, 1, 1]], [[1, 1, 2, 2]])


def _write(p: Path, text: str) -> Path:
    p.write_text(text)
    return p


# ============================================================================================
# Timings CSV


def test_timings_round_trip(tmp_path: Path):
    rows = [*timing_rows(1, 0, {"detection": 0.0123, "refinement": 1 / 3, "total": 0.5}),
            *timing_rows(1, 1, {"detection": 0.0, "total": 1e-7})]
    p = write_timings_csv(tmp_path / "timings.csv", rows)
    assert p.read_text().splitlines()[0] == "scene_id,im_id,stage,seconds"
    back = read_timings_csv(p)
    assert back == rows
    assert timings_by_image(back)[(1, 0)]["refinement"] == 1 / 3


TIMINGS_MALFORMED: dict[str, tuple[bytes, int, str | None, str]] = {
    "empty": (b"", 1, None, "empty file"),
    "wrong_header": (b"scene_id,im_id,stage,time\n", 1, "header", "expected exactly"),
    "columns": (b"scene_id,im_id,stage,seconds\n1,0,total\n", 2, None, "4 comma-separated"),
    "bad_id": (b"scene_id,im_id,stage,seconds\n1,a,total,0.5\n", 2, "im_id", "integer"),
    "stage_space": (b"scene_id,im_id,stage,seconds\n1,0,coarse pose,0.5\n", 2, "stage", "whitespace"),
    "stage_empty": (b"scene_id,im_id,stage,seconds\n1,0,,0.5\n", 2, "stage", "non-empty"),
    "negative_seconds": (b"scene_id,im_id,stage,seconds\n1,0,total,-0.5\n", 2, "seconds", ">= 0"),
    "nan_seconds": (b"scene_id,im_id,stage,seconds\n1,0,total,nan\n", 2, "seconds", "finite"),
    "duplicate": (b"scene_id,im_id,stage,seconds\n1,0,total,0.5\n1,0,total,0.6\n", 3, "stage", "line 2"),
    "blank": (b"scene_id,im_id,stage,seconds\n\n1,0,total,0.5\n", 2, None, "blank line"),
}


@pytest.mark.parametrize("kind", sorted(TIMINGS_MALFORMED))
def test_timings_malformed_is_located(kind: str, tmp_path: Path):
    data, line, field, fragment = TIMINGS_MALFORMED[kind]
    p = tmp_path / "t.csv"
    p.write_bytes(data)
    with pytest.raises(DataFormatError) as exc:
        read_timings_csv(p)
    assert fragment in exc.value.message, str(exc.value)
    _assert_located(exc.value, p, line=line, field=field)


def test_timings_write_validates_before_writing(tmp_path: Path):
    p = tmp_path / "t.csv"
    for bad in ([TimingRow(1, 0, "total", math.inf)], [TimingRow(1, 0, "a,b", 1.0)],
                [TimingRow(1, 0, "total", 1.0), TimingRow(1, 0, "total", 2.0)]):
        with pytest.raises(ValueError):
            write_timings_csv(p, bad)
    assert not p.exists()


def test_bop_csv_accepts_any_whitespace_inside_vectors(tmp_path):
    """bop_toolkit splits R and t on any whitespace; CSVs from other tools may use tabs or runs of spaces."""
    p = tmp_path / "ws.csv"
    p.write_text("scene_id,im_id,obj_id,score,R,t,time\n1,0,2,0.5,1  0 0\t0 1 0 0 0 1, 10 20  500 ,0.25\n")
    (row,) = read_bop_csv(p)
    np.testing.assert_array_equal(row.R, np.eye(3))
    np.testing.assert_array_equal(row.t, [10, 20, 500])
