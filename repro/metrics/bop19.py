"""BOP19 pose evaluation: bop_toolkit's ``eval_bop19_pose.py`` (errors, matching, scores) in one
process, with the same numbers.

What is evaluated (``eval_calc_errors.py``): for every target ``(scene, image, object, inst_count)``
of the targets file, the estimates of that object in that image (CSV file order gives ``est_id``),
sorted by score in decreasing order (stable: ties keep file order), the first ``n_top`` of them
(``n_top=-1``: ``inst_count``; 0: all). Each is compared with *every* GT instance of the object in
the image. Shortcuts: MSSD/AD/ADD/ADI are ``inf`` when ``||t_e - t_g|| >= diameter``; VSD (every
tau) and CUS are 1 when the projected bounding spheres do not overlap. Estimates of objects that
are not targets of their image, of images without targets and of unknown objects are ignored.

Matching and scores (``eval_calc_scores.py``, ``pose_matching.py``, ``score.py``): with
``visib_gt_min=-1`` the ``inst_count`` most visible GT instances of each target object (stable sort
by ``visib_fract``) are valid, the others ignored. Errors are normalised (MSSD/AD* by the diameter,
MSPD by ``640 / image width``); per (image, object) the estimates, in decreasing score order, are
greedily matched to the valid, not yet matched GT with the smallest error strictly below the
threshold. ``recall = tp / targets`` (targets = valid GT instances), also per object (every object
of ``models_info``) and per scene. BOP19: VSD (delta 15 mm, or 5 for ITODD; taus 0.05..0.5 x
diameter; thresholds 0.05..0.5), MSSD (0.05..0.5 x diameter), MSPD (5..50 px x 640 / width);
``bop19_average_recall`` is the mean of the three average recalls. Other errors at the toolkit's
default thresholds: ``ad``/``add``/``adi`` 0.1 x diameter (``ad`` = ADI for objects with any
symmetry in ``models_info``, else ADD), ``proj`` 5 px, ``cus`` 0.5.

AUC (``auc_add``, ``auc_adi``, ``auc_ad``), PoseCNN / YCB-Video-toolbox style: every valid target GT
instance gets the error (m) of the estimate matched to it by the greedy matching above with a 0.1 m
threshold (errors without the sphere shortcut), or inf; then the toolbox's ``VOCap``: errors above
0.1 m become inf, accuracy(d_i) = i / n over the sorted finite errors, the area under that step
curve from 0 to 0.1 m (right-step rule: each step counts from the previous error; the last
accuracy extends to 0.1 m), times 10, so it lies in [0, 1].

STORM-style AUC (``auc_add_storm``, ``auc_adi_storm``, ``ar_storm``), as STORM's public code computes
its "AR": the same valid target GT instances as ``recall_add`` get the diameter-normalised error
(with the sphere shortcut) of the estimate matched to them at the largest threshold 0.1 x diameter,
or inf; per object, the recall ``#{e < t} / n`` (strict, as BOP's recall) at the 100 thresholds
``np.linspace(0, 0.1, 100)``, integrated with the trapezoid rule and divided by 0.1
(``storm_recall_auc``); ``ar_storm`` is the mean over objects with targets of
``(AUC_ADD + AUC_ADD-S) / 2``, ``auc_*_storm`` the means over objects. The strict rule makes the
recall at threshold 0 always 0, so even perfect poses score ``1 - 0.5 / 99`` (~0.995); at 0.1 the
recall equals ``recall_add``/``recall_adi`` (default threshold).

Mask IoU (``iou``, optional, rendered): per (estimate, GT) pair the IoU of the object's full
silhouettes rendered at the estimated and at the GT pose (0 when the projected bounding spheres do
not overlap); greedy matching takes the highest IoU; ``recall_iou`` counts valid targets matched
with IoU >= 0.5 (``thresholds['iou']`` are IoU values), ``mean_mask_iou`` is the mean matched IoU
over all valid targets (0 for misses), also per object (``per_object_mean_mask_iou``).

``evaluate_bop`` returns the ``repro eval bop`` JSON object (see ``DESIGN.md``); ``BopEvaluator``
gives the per-threshold score records and the per-estimate errors too (``write_errors_table``).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from repro.data.bop import BopDataset
from repro.errors import DataFormatError
from repro.fileio import atomic_write_json, atomic_write_text, read_json
from repro.metrics import pose_errors as pe
from repro.metrics.symmetry import SymmetrySet, is_symmetric, symmetry_transformations
from repro.types import ObjectModel

log = logging.getLogger(__name__)

ERRORS: tuple[str, ...] = ("vsd", "mssd", "mspd", "ad", "add", "adi", "proj", "cus", "iou")
BOP19_ERRORS: tuple[str, ...] = ("vsd", "mssd", "mspd")
RENDER_ERRORS = frozenset({"vsd", "cus", "iou"})
POINT_ERRORS = frozenset({"mssd", "mspd", "ad", "add", "adi", "proj"})
DIAMETER_NORMALISED = frozenset({"ad", "add", "adi", "mssd"})
WIDTH_NORMALISED = frozenset({"mspd"})
SPHERE_SHORTCUT = frozenset({"ad", "add", "adi", "mssd"})
AUC_ERRORS = frozenset({"ad", "add", "adi"})
AUC_MAX_M = 0.1
STORM_AUC_THRESHOLDS: tuple[float, ...] = tuple(np.linspace(0.0, 0.1, 100).tolist())
"""Diameter-normalised thresholds of the STORM-style ADD/ADD-S AUC (``storm_recall_auc``)."""
VSD_DELTAS = {"itodd": 5.0}
"""VSD delta per dataset where it differs from 15 mm (bop_toolkit's ``vsd_deltas``)."""


def default_thresholds() -> dict[str, tuple[float, ...]]:
    """Correctness thresholds per error: BOP19 for vsd/mssd/mspd, eval_calc_scores defaults else;
    ``iou`` thresholds are minimum IoUs (correct when IoU >= threshold)."""
    th = tuple(np.arange(0.05, 0.51, 0.05).tolist())
    return {"vsd": th, "mssd": th, "mspd": tuple(float(x) for x in np.arange(5, 51, 5)),
            "ad": (0.1,), "add": (0.1,), "adi": (0.1,), "proj": (5.0,), "cus": (0.5,), "iou": (0.5,)}


@dataclass(frozen=True)
class BopEvalConfig:
    """Evaluation settings; the defaults are those of ``eval_bop19_pose.py``.

    ``vsd_delta=None`` takes the toolkit's per-dataset value (15 mm; 5 mm for ITODD).
    ``thresholds`` overrides the correctness thresholds per error (``default_thresholds``).
    """

    errors: tuple[str, ...] = BOP19_ERRORS
    n_top: int = -1
    visib_gt_min: float = -1.0
    vsd_delta: float | None = None
    vsd_taus: tuple[float, ...] = tuple(np.arange(0.05, 0.51, 0.05).tolist())
    vsd_normalized_by_diameter: bool = True
    vsd_cost: str = "step"
    max_sym_disc_step: float = 0.01
    thresholds: Mapping[str, tuple[float, ...]] = field(default_factory=default_thresholds)
    renderer_backend: str = "auto"
    device: str = "cpu"
    sample_offset: float = 0.5

    def __post_init__(self) -> None:
        errors = tuple(dict.fromkeys(e.strip().lower() for e in self.errors if e.strip()))
        unknown = [e for e in errors if e not in ERRORS]
        if unknown or not errors:
            raise ValueError(f"unknown pose error(s) {unknown or errors}; choose from {', '.join(ERRORS)}")
        object.__setattr__(self, "errors", errors)
        th = {**default_thresholds(), **{k: tuple(float(x) for x in v) for k, v in self.thresholds.items()}}
        object.__setattr__(self, "thresholds", th)
        object.__setattr__(self, "vsd_taus", tuple(float(t) for t in self.vsd_taus))
        if self.n_top < -1:
            raise ValueError(f"n_top must be -1 (inst_count), 0 (all) or positive, got {self.n_top}")


# --------------------------------------------------------------------------- inputs


@dataclass
class ImageTask:
    """One target image: its camera, GT instances, the evaluated estimates and the (est, GT) pairs.

    Estimates are in evaluation order (targets in file order, then decreasing score); ``est_row``
    is the row in the results CSV, ``est_id`` the index among the CSV rows of the same
    (scene, image, object). Pairs index ``est_*`` and ``gt_*``.
    """

    scene_id: int
    im_id: int
    K: np.ndarray
    width: int
    height: int
    gt_obj: np.ndarray
    gt_R: np.ndarray
    gt_t: np.ndarray
    gt_visib: np.ndarray
    gt_valid: np.ndarray
    est_row: np.ndarray
    est_obj: np.ndarray
    est_id: np.ndarray
    est_score: np.ndarray
    est_R: np.ndarray
    est_t: np.ndarray
    pair_est: np.ndarray
    pair_gt: np.ndarray


def _valid_gt(gt_obj: np.ndarray, visib: np.ndarray, targets: Mapping[int, int], visib_gt_min: float) -> np.ndarray:
    """Which GT instances count (eval_calc_scores): the ``inst_count`` most visible of each target
    object when ``visib_gt_min < 0``, else target objects with ``visib_fract >= visib_gt_min``."""
    if visib_gt_min >= 0:
        return np.array([int(o) in targets and v >= visib_gt_min for o, v in zip(gt_obj, visib, strict=True)],
                        dtype=bool)
    valid = np.zeros(len(gt_obj), bool)
    to_add = dict(targets)
    for g in np.argsort(-visib, kind="stable"):
        o = int(gt_obj[g])
        if to_add.get(o, 0) > 0:
            valid[g] = True
            to_add[o] -= 1
    return valid


def _group_rows(arrays) -> dict[tuple[int, int, int], np.ndarray]:
    """CSV row indices per (scene, image, object), in file order."""
    groups: dict[tuple[int, int, int], list[int]] = {}
    for i, key in enumerate(zip(arrays.scene_id.tolist(), arrays.im_id.tolist(), arrays.obj_id.tolist(),
                                strict=True)):
        groups.setdefault(key, []).append(i)
    return {k: np.asarray(v, dtype=np.int64) for k, v in groups.items()}


def _targets(dataset: BopDataset) -> dict[tuple[int, int], dict[int, int]]:
    """(scene, image) -> {obj_id: inst_count} in targets-file order (a repeated entry overrides)."""
    out: dict[tuple[int, int], dict[int, int]] = {}
    path = dataset.targets_path
    if path is not None:
        raw = read_json(path)
        if not isinstance(raw, list):
            raise DataFormatError(path, "expected a list of targets")
        for i, t in enumerate(raw):
            try:
                key = (int(t["scene_id"]), int(t["im_id"]))
                out.setdefault(key, {})[int(t["obj_id"])] = int(t["inst_count"])
            except (KeyError, TypeError, ValueError) as exc:
                raise DataFormatError(path, f"BOP19 targets need scene_id, im_id, obj_id and inst_count ({exc})",
                                      field=f"[{i}]") from None
        return out
    for key, targets in dataset.target_map.items():
        out[key] = {t.obj_id: t.inst_count for t in targets.instances}
    return out


def build_tasks(dataset: BopDataset, arrays, config: BopEvalConfig) -> list[ImageTask]:
    """The target images with their evaluated estimates and (estimate, GT) pairs."""
    rows_by_key = _group_rows(arrays)
    tasks = []
    for (scene_id, im_id), targets in _targets(dataset).items():
        cam, _ = dataset.camera(scene_id, im_id)
        gts = dataset.gt_instances(scene_id, im_id)
        gt_obj = np.array([g.obj_id for g in gts], dtype=np.int64)
        visib = np.array([g.visib_fract for g in gts], dtype=np.float64)
        rows, est_ids = [], []
        for obj_id, inst_count in targets.items():
            cand = rows_by_key.get((scene_id, im_id, obj_id))
            if cand is None:
                continue
            order = np.argsort(-arrays.score[cand], kind="stable")
            n = {-1: inst_count, 0: len(order)}.get(config.n_top, config.n_top)
            rows.append(cand[order[:n]])
            est_ids.append(order[:n])
        est_row = np.concatenate(rows) if rows else np.empty(0, np.int64)
        est_obj = arrays.obj_id[est_row]
        pair_est, pair_gt = [], []
        for e, o in enumerate(est_obj.tolist()):
            for g in np.flatnonzero(gt_obj == o).tolist():
                pair_est.append(e)
                pair_gt.append(g)
        tasks.append(ImageTask(
            scene_id=scene_id, im_id=im_id, K=cam.K, width=cam.width, height=cam.height, gt_obj=gt_obj,
            gt_R=np.array([g.R for g in gts]).reshape(-1, 3, 3), gt_t=np.array([g.t for g in gts]).reshape(-1, 3),
            gt_visib=visib, gt_valid=_valid_gt(gt_obj, visib, targets, config.visib_gt_min),
            est_row=est_row, est_obj=est_obj,
            est_id=np.concatenate(est_ids) if est_ids else np.empty(0, np.int64),
            est_score=arrays.score[est_row], est_R=arrays.R[est_row], est_t=arrays.t[est_row],
            pair_est=np.asarray(pair_est, dtype=np.int64), pair_gt=np.asarray(pair_gt, dtype=np.int64)))
    return tasks


def average_time_per_image(arrays) -> float:
    """Mean of the per-image times over the (scene, image) pairs of the CSV (first row's time of
    each image), -1 when any time is negative (unknown), as ``check_consistent_timings``."""
    if len(arrays.time) == 0 or (arrays.time < 0).any():
        return -1.0
    times: dict[tuple[int, int], float] = {}
    for key, tm in zip(zip(arrays.scene_id.tolist(), arrays.im_id.tolist(), strict=True), arrays.time.tolist(),
                       strict=True):
        times.setdefault(key, tm)
    return float(np.mean(list(times.values())))


# --------------------------------------------------------------------------- error engine


@dataclass(frozen=True)
class EngineSpec:
    """What a worker process needs to rebuild an error engine (picklable)."""

    root: str
    split: str
    models_dir: str | None
    sensor: str | None
    config: BopEvalConfig


def targets_name(root: Path, targets_file: str | Path | None) -> str:
    """The targets file for ``BopDataset``: a name in the dataset root (default
    ``test_targets_bop19.json``) or a path to a file elsewhere (made absolute)."""
    if targets_file is None:
        return "test_targets_bop19.json"
    path = Path(targets_file)
    if not (Path(root) / path).is_file() and path.is_file():
        return str(path.resolve())
    return str(targets_file)


def models_dir_for(root: Path) -> str | None:
    """``models_eval`` when the dataset has it (the toolkit evaluates on those meshes)."""
    return "models_eval" if (Path(root) / "models_eval" / "models_info.json").is_file() else None


class ErrorEngine:
    """Computes the errors of image tasks; owns the per-object caches and the renderer."""

    def __init__(self, dataset: BopDataset, config: BopEvalConfig) -> None:
        self.dataset = dataset
        self.config = config
        self._info = {int(k): v for k, v in read_json(dataset.models_path / "models_info.json").items()}
        self._models: dict[int, ObjectModel] = {}
        self._syms: dict[int, SymmetrySet] = {}
        self._subsets: dict[int, np.ndarray] = {}
        self._renderer: Any = None
        self.vsd_delta = config.vsd_delta if config.vsd_delta is not None else VSD_DELTAS.get(dataset.name, 15.0)

    @classmethod
    def from_spec(cls, spec: EngineSpec) -> ErrorEngine:
        ds = BopDataset(Path(spec.root), split=spec.split, models_dir=spec.models_dir, sensor=spec.sensor,
                        targets=None)
        return cls(ds, spec.config)

    @property
    def obj_ids(self) -> list[int]:
        """Every object of ``models_info.json`` (the toolkit's ``dp_model['obj_ids']``)."""
        return sorted(self._info)

    def diameter(self, obj_id: int) -> float:
        return float(self._info[obj_id]["diameter"])

    def symmetric(self, obj_id: int) -> bool:
        return is_symmetric(self._info[obj_id])

    def model(self, obj_id: int) -> ObjectModel:
        if obj_id not in self._models:
            self._models[obj_id] = self.dataset.object_model(obj_id)
        return self._models[obj_id]

    def points(self, obj_id: int) -> np.ndarray:
        return self.model(obj_id).vertices

    def symmetries(self, obj_id: int) -> SymmetrySet:
        if obj_id not in self._syms:
            self._syms[obj_id] = symmetry_transformations(self._info[obj_id], self.config.max_sym_disc_step)
        return self._syms[obj_id]

    def subset(self, obj_id: int) -> np.ndarray:
        if obj_id not in self._subsets:
            self._subsets[obj_id] = pe.farthest_point_indices(self.points(obj_id))
        return self._subsets[obj_id]

    @property
    def renderer(self) -> Any:
        if self._renderer is None:
            from repro.render import get_renderer

            self._renderer = get_renderer(self.config.renderer_backend)
            log.info("VSD/CUS rendering with the %s backend", getattr(self._renderer, "name", "?"))
        return self._renderer

    @property
    def renderer_name(self) -> str | None:
        """Backend name of the renderer, if one was created."""
        return None if self._renderer is None else getattr(self._renderer, "name", type(self._renderer).__name__)

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    # -- point errors
    def _point(self, kind: str, obj_id: int, Re, te, Rg, tg, K) -> np.ndarray:
        pts = self.points(obj_id)
        if self.config.device != "cpu" and kind in ("add", "adi", "mssd", "mspd", "proj"):
            syms = self.symmetries(obj_id) if kind in ("mssd", "mspd") else None
            return pe.point_errors_torch(kind, Re, te, Rg, tg, pts, K=K, syms=syms, device=self.config.device)
        if kind == "add":
            return pe.add(Re, te, Rg, tg, pts)
        if kind == "adi":
            return pe.adi(Re, te, Rg, tg, pts)
        if kind == "proj":
            return pe.proj(Re, te, Rg, tg, K, pts)
        if kind == "mssd":
            return pe.mssd(Re, te, Rg, tg, pts, self.symmetries(obj_id), self.subset(obj_id))
        if kind == "mspd":
            return pe.mspd(Re, te, Rg, tg, K, pts, self.symmetries(obj_id), self.subset(obj_id))
        raise ValueError(kind)

    def compute(self, tasks: Sequence[ImageTask], progress: bool = False) -> list[dict[str, np.ndarray]]:
        """Errors of every pair of every task: ``{error: (n_pairs,)}`` (VSD: (n_pairs, n_taus)),
        with the toolkit's shortcuts applied; ``raw_add``/``raw_adi``/``raw_ad`` hold the AD* errors
        without the shortcut (for the AUC)."""
        from tqdm.auto import tqdm

        errors = self.config.errors
        counts = [len(t.pair_est) for t in tasks]
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        n = int(offsets[-1])
        out: dict[str, np.ndarray] = {}
        if n and POINT_ERRORS & set(errors):
            obj = np.concatenate([t.est_obj[t.pair_est] for t in tasks])
            Re = np.concatenate([t.est_R[t.pair_est] for t in tasks])
            te = np.concatenate([t.est_t[t.pair_est] for t in tasks])
            Rg = np.concatenate([t.gt_R[t.pair_gt] for t in tasks])
            tg = np.concatenate([t.gt_t[t.pair_gt] for t in tasks])
            K = np.concatenate([np.broadcast_to(t.K, (c, 3, 3)) for t, c in zip(tasks, counts, strict=True)])
            base = set(errors) & {"mssd", "mspd", "add", "adi", "proj"}
            raw: dict[str, np.ndarray] = {}
            for o in tqdm(np.unique(obj).tolist(), desc="point errors", unit="obj", disable=not progress,
                          leave=False):
                sel = np.flatnonzero(obj == o)
                kinds = base | ({"adi" if self.symmetric(o) else "add"} if "ad" in errors else set())
                for k in sorted(kinds):
                    raw.setdefault(k, np.full(n, np.nan))[sel] = self._point(k, o, Re[sel], te[sel], Rg[sel],
                                                                            tg[sel], K[sel])
            overlap = pe.spheres_overlap(te, tg, np.array([self.diameter(int(o)) for o in obj]))
            if "ad" in errors:
                sym = np.array([self.symmetric(int(o)) for o in obj], dtype=bool)
                raw["ad"] = np.where(sym, raw.get("adi", np.full(n, np.nan)), raw.get("add", np.full(n, np.nan)))
            for k in errors:
                if k in POINT_ERRORS:
                    out[k] = np.where(overlap, raw[k], np.inf) if k in SPHERE_SHORTCUT else raw[k]
                if k in AUC_ERRORS:
                    out[f"raw_{k}"] = raw[k]
        if RENDER_ERRORS & set(errors):
            out.update(self._render_errors(tasks, offsets, progress))
        for k in errors:
            out.setdefault(k, np.empty((0, len(self.config.vsd_taus)) if k == "vsd" else 0))
            if k in AUC_ERRORS:
                out.setdefault(f"raw_{k}", np.empty(0))
        return [{k: v[offsets[i]:offsets[i + 1]] for k, v in out.items()} for i in range(len(tasks))]

    def _render_errors(self, tasks: Sequence[ImageTask], offsets: np.ndarray, progress: bool) -> dict[str, np.ndarray]:
        from tqdm.auto import tqdm

        from repro.metrics.vsd import ImagePairs, VsdParams, image_render_errors

        want_vsd, want_cus = "vsd" in self.config.errors, "cus" in self.config.errors
        want_iou = "iou" in self.config.errors
        params = VsdParams(self.vsd_delta, self.config.vsd_taus, self.config.vsd_normalized_by_diameter,
                           self.config.vsd_cost) if want_vsd else None
        n = int(offsets[-1])
        vsd = np.ones((n, len(self.config.vsd_taus))) if want_vsd else None
        cus = np.ones(n) if want_cus else None
        iou = np.zeros(n) if want_iou else None
        for i, task in enumerate(tqdm(tasks, desc="VSD/CUS", unit="img", disable=not progress, leave=False)):
            if len(task.pair_est) == 0:
                continue
            radius = 0.5 * np.array([self.diameter(int(o)) for o in task.gt_obj[task.pair_gt]])
            ok = pe.sphere_projections_overlap(task.est_t[task.pair_est], task.gt_t[task.pair_gt], radius)
            sel = np.flatnonzero(ok)
            if len(sel) == 0:
                continue
            depth = None
            if want_vsd:
                depth = self.dataset.load_frame(task.scene_id, task.im_id, with_gt=False).depth
                if depth is None:
                    raise DataFormatError(self.dataset.scene(task.scene_id).path,
                                          f"VSD needs the depth image of image {task.im_id}")
            pairs = ImagePairs(K=task.K, width=task.width, height=task.height, est_obj=task.est_obj,
                               est_R=task.est_R, est_t=task.est_t, gt_obj=task.gt_obj, gt_R=task.gt_R,
                               gt_t=task.gt_t, pair_est=task.pair_est[sel], pair_gt=task.pair_gt[sel])
            objects = {int(o): self.model(int(o)) for o in np.unique(task.est_obj)}
            diameters = {o: self.diameter(o) for o in objects}
            v, c, u = image_render_errors(self.renderer, objects, pairs, depth, diameters, params, want_cus,
                                          self.config.sample_offset, want_iou=want_iou)
            rows = offsets[i] + sel
            if vsd is not None:
                vsd[rows] = v
            if cus is not None:
                cus[rows] = c
            if iou is not None:
                iou[rows] = u
        out = {}
        if vsd is not None:
            out["vsd"] = vsd
        if cus is not None:
            out["cus"] = cus
        if iou is not None:
            out["iou"] = iou
        return out


def _compute_in_worker(spec: EngineSpec, tasks: list[ImageTask]) -> list[dict[str, np.ndarray]]:
    """Worker-process entry (top level, so spawn can pickle it): a fresh engine per chunk."""
    engine = ErrorEngine.from_spec(spec)
    try:
        return engine.compute(tasks)
    finally:
        engine.close()


def _split_tasks(tasks: Sequence[ImageTask], parts: int) -> list[list[ImageTask]]:
    """Contiguous chunks of about equal numbers of pairs."""
    weights = np.array([max(1, len(t.pair_est)) for t in tasks], dtype=np.float64)
    cum = np.cumsum(weights)
    cuts = np.searchsorted(cum, cum[-1] * np.arange(1, parts) / parts, side="right") if len(cum) else []
    bounds = [0, *sorted(set(int(c) for c in cuts)), len(tasks)]
    return [list(tasks[a:b]) for a, b in itertools.pairwise(bounds) if b > a]


# --------------------------------------------------------------------------- matching and scores


@dataclass
class PairTable:
    """All (estimate, GT) pairs with their errors, in evaluation order (one row per pair)."""

    scene_id: np.ndarray
    im_id: np.ndarray
    obj_id: np.ndarray
    est_id: np.ndarray
    score: np.ndarray
    gt_id: np.ndarray
    gt_visib_fract: np.ndarray
    gt_valid: np.ndarray
    errors: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.scene_id)


@dataclass
class BopEvalResult:
    """Everything an evaluation produced: the summary (``repro eval bop`` JSON), the toolkit-style
    score record of every (error, threshold[, tau]) (``scores[error][i]``; VSD:
    ``scores['vsd'][tau_index][threshold_index]``), the pair errors and the evaluated estimates."""

    summary: dict[str, Any]
    scores: dict[str, list[Any]]
    pairs: PairTable
    estimates: dict[str, np.ndarray]


def match_group(errors: np.ndarray, thresholds: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Greedy matching of one (image, object): ``errors`` (n_est, n_gt) with the estimates in
    decreasing score order, for every threshold at once.

    Each estimate takes the valid, unmatched GT with the smallest error strictly below the threshold
    (the first such GT on ties), as ``pose_matching.match_poses``. Returns ``matched`` (n_th, n_gt)
    bool and the matched error (n_th, n_gt; inf where unmatched).
    """
    n_t, n_g = len(thresholds), errors.shape[1]
    free = np.broadcast_to(valid, (n_t, n_g)).copy()
    err = np.full((n_t, n_g), np.inf)
    rows = np.arange(n_t)
    for e in errors:
        cand = np.where(free & (e[None, :] < thresholds[:, None]), e[None, :], np.inf)
        j = np.argmin(cand, axis=1)
        ok = np.isfinite(cand[rows, j])
        free[rows[ok], j[ok]] = False
        err[rows[ok], j[ok]] = e[j[ok]]
    return valid[None, :] & ~free, err


@dataclass
class _Layout:
    """GT instances of the target images and the groups of estimates to match."""

    gt_scene: np.ndarray
    gt_im: np.ndarray
    gt_obj: np.ndarray
    gt_valid: np.ndarray
    gt_image: np.ndarray
    groups: list[tuple[np.ndarray, np.ndarray, np.ndarray]]
    """Per (image, object): pair indices (n_est, n_gt) into the pair table, GT indices (n_gt,) and
    their validity."""


def _layout(tasks: Sequence[ImageTask]) -> _Layout:
    gt_scene, gt_im, gt_obj, gt_valid, gt_image = [], [], [], [], []
    groups = []
    gt_off = 0
    pair_off = 0
    for i, t in enumerate(tasks):
        G = len(t.gt_obj)
        gt_scene.append(np.full(G, t.scene_id))
        gt_im.append(np.full(G, t.im_id))
        gt_obj.append(t.gt_obj)
        gt_valid.append(t.gt_valid)
        gt_image.append(np.full(G, i))
        for o in dict.fromkeys(t.est_obj.tolist()):
            ests = np.flatnonzero(t.est_obj == o)
            gts = np.flatnonzero(t.gt_obj == o)
            if len(gts) == 0:
                continue
            # pairs of an estimate are consecutive, one per GT of its object in GT order
            first = np.searchsorted(t.pair_est, ests)
            idx = pair_off + first[:, None] + np.arange(len(gts))[None, :]
            groups.append((idx, gt_off + gts, np.asarray(t.gt_valid[gts])))
        gt_off += G
        pair_off += len(t.pair_est)
    return _Layout(_cat(gt_scene, np.int64), _cat(gt_im, np.int64), _cat(gt_obj, np.int64), _cat(gt_valid, bool),
                   _cat(gt_image, np.int64), groups)


def _cat(parts: Sequence[np.ndarray], dtype) -> np.ndarray:
    return np.concatenate(parts).astype(dtype) if len(parts) else np.empty(0, dtype)


def match_all(layout: _Layout, errors: np.ndarray, thresholds: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """``match_group`` over every group: matched (n_th, n_gt_total) and matched errors."""
    th = np.asarray(thresholds, dtype=np.float64)
    n_gt = len(layout.gt_obj)
    matched = np.zeros((len(th), n_gt), bool)
    merr = np.full((len(th), n_gt), np.inf)
    singles = [g for g in layout.groups if g[0].shape == (1, 1)]
    if singles:
        pidx = np.array([g[0][0, 0] for g in singles])
        gidx = np.array([g[1][0] for g in singles])
        ok = layout.gt_valid[gidx][None, :] & (errors[pidx][None, :] < th[:, None])
        matched[:, gidx] = ok
        merr[:, gidx] = np.where(ok, errors[pidx][None, :], np.inf)
    for idx, gts, valid in layout.groups:
        if idx.shape == (1, 1):
            continue
        m, e = match_group(errors[idx], th, valid)
        matched[:, gts] = m
        merr[:, gts] = e
    return matched, merr


def localization_scores(layout: _Layout, matched: np.ndarray, scene_ids: Sequence[int], obj_ids: Sequence[int],
                        n_top: int) -> list[dict[str, Any]]:
    """``score.calc_localization_scores`` for each row of ``matched`` (one per threshold)."""
    valid = layout.gt_valid
    if n_top > 0:
        keys = np.stack([layout.gt_obj, layout.gt_image], axis=1)[valid]
        uniq, counts = np.unique(keys, axis=0, return_counts=True)
        scene_of_image = {int(i): int(s) for i, s in zip(layout.gt_image, layout.gt_scene, strict=True)}
        tars_os: dict[tuple[int, int], int] = {}
        for (o, im), c in zip(uniq.tolist(), counts.tolist(), strict=True):
            k = (o, scene_of_image[im])
            tars_os[k] = tars_os.get(k, 0) + min(n_top, c)
    else:
        tars_os = {}
        for o, s in zip(layout.gt_obj[valid].tolist(), layout.gt_scene[valid].tolist(), strict=True):
            tars_os[(o, s)] = tars_os.get((o, s), 0) + 1
    obj_tars = {o: sum(c for (oo, _), c in tars_os.items() if oo == o) for o in obj_ids}
    scene_tars = {s: sum(c for (_, ss), c in tars_os.items() if ss == s) for s in scene_ids}
    tars = sum(tars_os.values())
    out = []
    tp_all = matched & valid[None, :]
    for tp in tp_all:
        obj_tp = {o: int(np.count_nonzero(tp & (layout.gt_obj == o))) for o in obj_ids}
        scene_tp = {s: int(np.count_nonzero(tp & (layout.gt_scene == s))) for s in scene_ids}
        obj_recalls = {str(o): _recall(obj_tp[o], obj_tars[o]) for o in obj_ids}
        scene_recalls = {str(s): _recall(scene_tp[s], scene_tars[s]) for s in scene_ids}
        out.append({
            "recall": _recall(int(tp.sum()), tars),
            "obj_recalls": obj_recalls,
            "mean_obj_recall": float(np.mean(list(obj_recalls.values()))) if obj_recalls else 0.0,
            "scene_recalls": scene_recalls,
            "mean_scene_recall": float(np.mean(list(scene_recalls.values()))) if scene_recalls else 0.0,
            "gt_count": len(layout.gt_obj),
            "targets_count": int(tars),
            "tp_count": int(tp.sum()),
        })
    return out


def _recall(tp: int, targets: int) -> float:
    return 0.0 if targets == 0 else tp / float(targets)


def voc_auc(errors_m: np.ndarray, max_m: float = AUC_MAX_M) -> float:
    """PoseCNN / YCB-Video toolbox ``VOCap`` area (in [0, 1]) of accuracy vs threshold up to ``max_m``.

    ``errors_m``: one error per GT instance (metres; inf = missed). 0 when no error is within
    ``max_m`` (where the toolbox fails), NaN without instances.
    """
    d = np.sort(np.asarray(errors_m, dtype=np.float64))
    n = len(d)
    if n == 0:
        return float("nan")
    d[d > max_m] = np.inf
    acc = np.cumsum(np.ones(n)) / n
    keep = np.isfinite(d)
    d, acc = d[keep], acc[keep]
    if len(d) == 0:
        return 0.0
    mrec = np.concatenate([[0.0], d, [max_m]])
    mpre = np.concatenate([[0.0], acc, [acc[-1]]])
    mpre = np.maximum.accumulate(mpre)
    i = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(np.sum((mrec[i] - mrec[i - 1]) * mpre[i]) * (1.0 / max_m))


def storm_recall_auc(errors: np.ndarray, thresholds: Sequence[float] = STORM_AUC_THRESHOLDS, *,
                     inclusive: bool = False) -> float:
    """Area under the recall-vs-threshold curve, normalised to [0, 1] (STORM's AUC).

    ``errors``: one diameter-normalised error per target (inf = missed); recall at threshold ``t``
    is ``mean(errors < t)`` (``inclusive``: ``<=``); the area is ``np.trapezoid`` over
    ``thresholds`` divided by their range (0.1 for the default ``linspace(0, 0.1, 100)``).
    NaN without targets.
    """
    e = np.asarray(errors, dtype=np.float64).ravel()
    th = np.asarray(thresholds, dtype=np.float64)
    if e.size == 0:
        return float("nan")
    hit = e[None, :] <= th[:, None] if inclusive else e[None, :] < th[:, None]
    return float(np.trapezoid(hit.mean(axis=1), th) / (th[-1] - th[0]))


def storm_average_recall(per_object_add: Mapping[str, float], per_object_adi: Mapping[str, float]) -> float:
    """STORM's "AR": mean over objects of ``(AUC_ADD + AUC_ADD-S) / 2`` (objects present in both)."""
    keys = [k for k in per_object_add if k in per_object_adi]
    if not keys:
        return float("nan")
    return float(np.mean([(per_object_add[k] + per_object_adi[k]) / 2.0 for k in keys]))


def storm_summary(matched: Mapping[str, np.ndarray], gt_obj: np.ndarray, gt_valid: np.ndarray) -> dict[str, Any]:
    """``auc_{add,adi}_storm`` and ``per_object_auc_{add,adi}_storm`` from the matched normalised
    errors per GT instance (inf = unmatched), and ``ar_storm`` when both errors are present."""
    out: dict[str, Any] = {}
    per: dict[str, dict[str, float]] = {}
    for err, merr in matched.items():
        objs = sorted({int(o) for o in gt_obj[gt_valid]})
        per[err] = {str(o): storm_recall_auc(merr[gt_valid & (gt_obj == o)]) for o in objs}
        out[f"per_object_auc_{err}_storm"] = per[err]
        out[f"auc_{err}_storm"] = float(np.mean(list(per[err].values()))) if per[err] else float("nan")
    if "add" in per and "adi" in per:
        out["ar_storm"] = storm_average_recall(per["add"], per["adi"])
    return out


def mask_iou_summary(matched_iou: np.ndarray, gt_obj: np.ndarray, gt_valid: np.ndarray) -> dict[str, Any]:
    """``mean_mask_iou`` over the valid GT instances (unmatched count 0) and per object."""
    v = matched_iou[gt_valid]
    return {"mean_mask_iou": float(np.mean(v)) if len(v) else float("nan"),
            "per_object_mean_mask_iou": {str(o): float(np.mean(matched_iou[gt_valid & (gt_obj == o)]))
                                         for o in sorted({int(o) for o in gt_obj[gt_valid]})}}


# --------------------------------------------------------------------------- evaluator


class BopEvaluator:
    """BOP19 pose evaluation of results CSVs against one BOP dataset split.

    Owns the dataset reader and the error engine (models, symmetry sets, renderer), so several
    results files can be evaluated without reloading them. Use as a context manager or ``close()``.
    """

    def __init__(self, dataset_dir: str | Path, *, split: str = "test", targets_file: str | None = None,
                 models_dir: str | None = None, sensor: str | None = None,
                 config: BopEvalConfig | None = None) -> None:
        root = Path(dataset_dir)
        self.config = config or BopEvalConfig()
        self.models_dir = models_dir if models_dir is not None else models_dir_for(root)
        self.dataset = BopDataset(root, split=split, sensor=sensor, models_dir=self.models_dir,
                                  targets=targets_name(root, targets_file))
        self.engine = ErrorEngine(self.dataset, self.config)

    def close(self) -> None:
        self.engine.close()

    def __enter__(self) -> BopEvaluator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _spec(self) -> EngineSpec:
        return EngineSpec(str(self.dataset.root), self.dataset.split, self.models_dir, self.dataset.sensor,
                          self.config)

    def compute_errors(self, tasks: Sequence[ImageTask], workers: int = 1,
                       progress: bool = False) -> list[dict[str, np.ndarray]]:
        """Errors per task, in this process or in ``workers`` spawned processes (chunks of images)."""
        if workers <= 1 or len(tasks) < 2:
            return self.engine.compute(tasks, progress)
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        from tqdm.auto import tqdm

        chunks = _split_tasks(tasks, workers)
        spec = self._spec()
        out: list[dict[str, np.ndarray]] = []
        with ProcessPoolExecutor(max_workers=min(workers, len(chunks)),
                                 mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(_compute_in_worker, spec, chunk) for chunk in chunks]
            for fut in tqdm(futures, desc="errors", unit="chunk", disable=not progress, leave=False):
                out.extend(fut.result())
        return out

    def evaluate(self, results_csv: str | Path, *, workers: int = 1, progress: bool = True) -> BopEvalResult:
        """Evaluate one BOP19 results CSV (see the module docstring)."""
        from repro.results.bop_csv import read_bop_csv_arrays

        t0 = time.perf_counter()
        arrays = read_bop_csv_arrays(results_csv)
        tasks = build_tasks(self.dataset, arrays, self.config)
        n_pairs = sum(len(t.pair_est) for t in tasks)
        log.info("evaluating %s: %d rows, %d target images, %d estimates, %d pairs, errors %s",
                 results_csv, len(arrays.score), len(tasks), sum(len(t.est_row) for t in tasks), n_pairs,
                 ",".join(self.config.errors))
        per_task = self.compute_errors(tasks, workers, progress)
        pairs = _pair_table(tasks, per_task, self.config)
        estimates = _estimate_table(tasks)
        result = self.score(tasks, pairs, estimates)
        result.summary.update({
            "bop19_average_time_per_image": average_time_per_image(arrays),
            "n_rows": len(arrays.score),
            "eval_time_s": time.perf_counter() - t0,
            "renderer": self.engine.renderer_name,
        })
        log.info("BOP19 AR %s (vsd %s, mssd %s, mspd %s) in %.2f s", result.summary.get("bop19_average_recall"),
                 result.summary.get("bop19_average_recall_vsd"), result.summary.get("bop19_average_recall_mssd"),
                 result.summary.get("bop19_average_recall_mspd"), result.summary["eval_time_s"])
        return result

    def score(self, tasks: Sequence[ImageTask], pairs: PairTable, estimates: dict[str, np.ndarray]) -> BopEvalResult:
        """Matching and scores from the pair errors (``eval_calc_scores.py`` for every threshold)."""
        cfg = self.config
        layout = _layout(tasks)
        obj_ids = self.engine.obj_ids
        scene_ids = self.dataset.scene_ids()
        width = np.concatenate([np.full(len(t.pair_est), float(t.width)) for t in tasks]) if tasks else np.empty(0)
        diam = np.array([self.engine.diameter(int(o)) for o in pairs.obj_id], dtype=np.float64)
        scores: dict[str, list[Any]] = {}
        matched_err: dict[str, np.ndarray] = {}
        storm_err: dict[str, np.ndarray] = {}
        matched_iou: np.ndarray | None = None
        for err in cfg.errors:
            values = pairs.errors[err]
            th = cfg.thresholds[err]
            if err == "iou":
                # matched on 1 - IoU (smallest first); IoU >= t  <=>  1 - IoU <= 1 - t
                th = tuple(float(np.nextafter(1.0 - t, np.inf)) for t in th)
                values = 1.0 - values
                _, merr = match_all(layout, values, (np.nextafter(1.0, np.inf),))
                matched_iou = np.where(np.isfinite(merr[0]), 1.0 - merr[0], 0.0)
            if err == "vsd":
                scores[err] = [localization_scores(layout, match_all(layout, values[:, k], th)[0], scene_ids,
                                                   obj_ids, cfg.n_top) for k in range(values.shape[1])]
                continue
            if err in DIAMETER_NORMALISED:
                values = values / diam
            elif err in WIDTH_NORMALISED:
                values = (640.0 / width) * values
            scores[err] = localization_scores(layout, match_all(layout, values, th)[0], scene_ids, obj_ids, cfg.n_top)
            if err in AUC_ERRORS:
                _, merr = match_all(layout, pairs.errors[f"raw_{err}"] / 1000.0, (AUC_MAX_M,))
                matched_err[err] = merr[0]
            if err in ("add", "adi"):
                storm_err[err] = match_all(layout, values, (STORM_AUC_THRESHOLDS[-1],))[1][0]
        summary = summarize(scores, cfg, obj_ids, scene_ids)
        summary.update(storm_summary(storm_err, layout.gt_obj, layout.gt_valid))
        if matched_iou is not None:
            summary.update(mask_iou_summary(matched_iou, layout.gt_obj, layout.gt_valid))
        for err, merr in matched_err.items():
            valid = layout.gt_valid
            summary[f"auc_{err}"] = voc_auc(merr[valid])
            summary[f"per_object_auc_{err}"] = {
                str(o): voc_auc(merr[valid & (layout.gt_obj == o)]) for o in obj_ids
                if np.any(valid & (layout.gt_obj == o))}
        summary.update({"n_target_images": len(tasks), "n_evaluated_estimates": len(estimates["est_id"]),
                        "n_pairs": len(pairs), "dataset": self.dataset.name, "split": self.dataset.split,
                        "vsd_delta": self.engine.vsd_delta if "vsd" in cfg.errors else None, "backend": "repro"})
        return BopEvalResult(summary=summary, scores=scores, pairs=pairs, estimates=estimates)


def _pair_table(tasks: Sequence[ImageTask], per_task: Sequence[dict[str, np.ndarray]],
                config: BopEvalConfig) -> PairTable:
    def cat(fn, dt) -> np.ndarray:
        parts = [fn(t) for t in tasks]
        return np.concatenate(parts).astype(dt) if parts else np.empty(0, dt)

    names = [*config.errors, *(f"raw_{e}" for e in config.errors if e in AUC_ERRORS)]
    empty = {k: np.empty((0, len(config.vsd_taus)) if k == "vsd" else 0) for k in names}
    errors = {k: np.concatenate([empty[k], *(p[k] for p in per_task)]) for k in names}
    return PairTable(
        scene_id=cat(lambda t: np.full(len(t.pair_est), t.scene_id), np.int64),
        im_id=cat(lambda t: np.full(len(t.pair_est), t.im_id), np.int64),
        obj_id=cat(lambda t: t.est_obj[t.pair_est], np.int64),
        est_id=cat(lambda t: t.est_id[t.pair_est], np.int64),
        score=cat(lambda t: t.est_score[t.pair_est], np.float64),
        gt_id=cat(lambda t: t.pair_gt, np.int64),
        gt_visib_fract=cat(lambda t: t.gt_visib[t.pair_gt], np.float64),
        gt_valid=cat(lambda t: t.gt_valid[t.pair_gt], bool),
        errors=errors)


def _estimate_table(tasks: Sequence[ImageTask]) -> dict[str, np.ndarray]:
    def cat(fn, dt) -> np.ndarray:
        parts = [fn(t) for t in tasks]
        return np.concatenate(parts).astype(dt) if parts else np.empty(0, dt)

    return {"scene_id": cat(lambda t: np.full(len(t.est_row), t.scene_id), np.int64),
            "im_id": cat(lambda t: np.full(len(t.est_row), t.im_id), np.int64),
            "obj_id": cat(lambda t: t.est_obj, np.int64), "est_id": cat(lambda t: t.est_id, np.int64),
            "score": cat(lambda t: t.est_score, np.float64), "row": cat(lambda t: t.est_row, np.int64)}


def _mean_recalls(records: Sequence[dict[str, Any]], key: str) -> dict[str, float]:
    names = records[0][key].keys() if records else []
    return {k: float(np.mean([r[key][k] for r in records])) for k in names}


def summarize(scores: Mapping[str, list[Any]], config: BopEvalConfig, obj_ids: Sequence[int],
              scene_ids: Sequence[int]) -> dict[str, Any]:
    """The ``repro eval bop`` JSON object from toolkit-style score records (``BopEvalResult.scores``).

    Average recalls are ``np.mean`` over the recalls in the toolkit's order (VSD: tau-major), so
    they equal ``scores_bop19.json`` to the last bit.
    """
    out: dict[str, Any] = {"errors": list(config.errors)}
    ar: dict[str, float] = {}
    for err, recs in scores.items():
        flat = [r for row in recs for r in row] if err == "vsd" else list(recs)
        recalls = [r["recall"] for r in flat]
        th = list(config.thresholds[err])
        if err in BOP19_ERRORS:
            ar[err] = float(np.mean(recalls))
            out[f"bop19_average_recall_{err}"] = ar[err]
            out[f"recalls_{err}"] = [[r["recall"] for r in row] for row in recs] if err == "vsd" else recalls
            out[f"thresholds_{err}"] = th
        else:
            out[f"recall_{err}"] = recalls[0] if len(recalls) == 1 else recalls
            out[f"threshold_{err}"] = th[0] if len(th) == 1 else th
        out[f"per_object_recall_{err}"] = _mean_recalls(flat, "obj_recalls")
        out[f"per_scene_recall_{err}"] = _mean_recalls(flat, "scene_recalls")
        out[f"mean_obj_recall_{err}"] = float(np.mean([r["mean_obj_recall"] for r in flat]))
        if flat:
            out["targets_count"] = flat[0]["targets_count"]
            out["gt_count"] = flat[0]["gt_count"]
    if "vsd" in scores:
        out["vsd_taus"] = list(config.vsd_taus)
    if all(e in ar for e in BOP19_ERRORS):
        out["bop19_average_recall"] = float(np.mean([ar["vsd"], ar["mssd"], ar["mspd"]]))
    else:
        out["bop19_average_recall"] = None
        for e in BOP19_ERRORS:
            out.setdefault(f"bop19_average_recall_{e}", None)
    out["obj_ids"] = [int(o) for o in obj_ids]
    out["scene_ids"] = [int(s) for s in scene_ids]
    return out


# --------------------------------------------------------------------------- public API


def evaluate_bop(dataset_dir: str | Path, results_csv: str | Path, *, errors: Sequence[str] | str = BOP19_ERRORS,
                 split: str = "test", targets_file: str | None = None, workers: int = 1,
                 renderer_backend: str = "auto", device: str = "cpu", progress: bool = True,
                 backend: str = "repro", errors_table: str | Path | None = None,
                 config: BopEvalConfig | None = None) -> dict[str, Any]:
    """Evaluate a BOP19 results CSV against the BOP dataset at ``dataset_dir``; returns the
    ``repro eval bop`` JSON object (``bop19_average_recall[_vsd|_mssd|_mspd]``,
    ``bop19_average_time_per_image``, per-threshold ``recalls_*``, ``per_object_recall_*``,
    ``recall_ad|add|adi|proj|cus|iou``, ``auc_add|adi|ad`` when requested, ``auc_add_storm``,
    ``auc_adi_storm``, ``ar_storm`` with add and adi, ``mean_mask_iou`` with iou, counts).

    ``errors``: names or a comma-separated string. ``targets_file``: a file name in the dataset
    root (default ``test_targets_bop19.json``) or a path. ``workers``: processes over images (spawn).
    ``device='cuda'``: point errors in torch float64 on the GPU. ``backend='bop_toolkit'`` runs
    bop_toolkit_lib's own functions instead (same keys; needs ``bop_toolkit_lib``).
    ``errors_table``: also write the per-estimate errors (CSV or JSON by suffix).
    """
    if isinstance(errors, str):
        errors = [e for e in errors.split(",") if e.strip()]
    cfg = replace(config or BopEvalConfig(), errors=tuple(errors), renderer_backend=renderer_backend, device=device)
    if backend == "bop_toolkit":
        from repro.metrics.bop_toolkit_backend import evaluate_with_bop_toolkit

        return evaluate_with_bop_toolkit(dataset_dir, results_csv, config=cfg, split=split, targets_file=targets_file,
                                         progress=progress)
    if backend != "repro":
        raise ValueError(f"unknown evaluation backend {backend!r}; choose repro or bop_toolkit")
    with BopEvaluator(dataset_dir, split=split, targets_file=targets_file, config=cfg) as ev:
        result = ev.evaluate(results_csv, workers=workers, progress=progress)
    if errors_table is not None:
        write_errors_table(errors_table, result)
    return result.summary


def errors_table_rows(result: BopEvalResult) -> list[dict[str, Any]]:
    """One row per (estimate, GT, error[, tau]): scene_id, im_id, obj_id, est_id, score, gt_id,
    gt_visib_fract, gt_valid, error, tau (VSD only, else None), value (inf for the shortcuts; for
    ``iou`` the IoU itself, higher is better, 0 for the shortcut)."""
    p = result.pairs
    rows = []
    names = [e for e in p.errors if not e.startswith("raw_")]
    base = [{"scene_id": int(s), "im_id": int(i), "obj_id": int(o), "est_id": int(e), "score": float(sc),
             "gt_id": int(g), "gt_visib_fract": float(v), "gt_valid": bool(ok)}
            for s, i, o, e, sc, g, v, ok in zip(p.scene_id, p.im_id, p.obj_id, p.est_id, p.score, p.gt_id,
                                               p.gt_visib_fract, p.gt_valid, strict=True)]
    taus = result.summary.get("vsd_taus") or []
    for name in names:
        values = p.errors[name]
        for k, b in enumerate(base):
            if values.ndim == 2:
                rows.extend({**b, "error": name, "tau": float(tau), "value": float(values[k, j])}
                            for j, tau in enumerate(taus))
            else:
                rows.append({**b, "error": name, "tau": None, "value": float(values[k])})
    return rows


def write_errors_table(path: str | Path, result: BopEvalResult) -> Path:
    """Write the per-estimate errors (``errors_table_rows``) as CSV, or JSON when ``path`` ends in
    ``.json``; atomically."""
    path = Path(path)
    rows = errors_table_rows(result)
    if path.suffix.lower() == ".json":
        return atomic_write_json(path, rows, indent=None)
    cols = ["scene_id", "im_id", "obj_id", "est_id", "score", "gt_id", "gt_visib_fract", "gt_valid", "error", "tau",
            "value"]
    lines = [",".join(cols)]
    for r in rows:
        lines.append(",".join("" if r[c] is None else (repr(r[c]) if isinstance(r[c], float) else str(r[c]))
                              for c in cols))
    return atomic_write_text(path, "\n".join(lines) + "\n")
