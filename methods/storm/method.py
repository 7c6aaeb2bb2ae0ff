"""STORM as a ``PoseMethod``: segment (SOM), register, track, verify (TOM), re-register on failure.

Per target object and frame:

1. First frame of a sequence (or any frame outside a video, or after a detected failure): SOM
   segments the object from its reference images (+ description), the registrar estimates the pose
   from the mask, the depth and the object's 3D model (CAD, or reconstructed from posed reference
   views), and the segmented "real crop" joins the object's memory pool.
2. Later frames of a video: the registrar tracks from the previous pose; TOM compares the crop the
   tracked pose shows with the memory pool and flags a failure below its threshold, which sends the
   object back to step 1 (``verify: none`` keeps tracking whatever happens: the baseline of Table 4).

Timings per frame: ``segmentation``, ``registration``, ``tracking``, ``verification`` (0 when a stage
did not run), summed over the frame's targets.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from methods.common.registration import PoseRegistrar, RegistrationError, RegistrationOutput, create_registrar
from methods.storm.config import StormConfig
from methods.storm.model3d import Reconstruction, build_object_model, load_onboarding_views
from methods.storm.references import ReferenceSet, load_static_references, render_references
from methods.storm.som import CosineMatchSegmenter, SegmentingObjectModule
from methods.storm.tom import (
    TrackingVerifier,
    box_crop,
    build_tracking_pairs,
    crops_on_disk,
    segmented_crop,
    split_scenes,
    train_tom_variants,
)
from repro.fileio import atomic_write_json, read_json
from repro.interface import Capabilities, PoseMethod, Provenance
from repro.render import get_renderer
from repro.types import Frame, ObjectModel, PoseEstimate, Prediction, Targets

log = logging.getLogger(__name__)

TIMING_KEYS = ("segmentation", "registration", "tracking", "verification")
CONFIG_FILE = "storm_config.json"


class NotTrainedError(RuntimeError):
    """STORM's learned parts are used before ``fit`` or ``load``."""


@dataclass
class _Track:
    """What STORM remembers of one object in the current sequence."""

    sequence_id: int | None
    sequence_index: int | None
    R: np.ndarray
    t: np.ndarray
    memory: list[torch.Tensor] = field(default_factory=list)
    failures: int = 0


def _mask_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    ys, xs = np.nonzero(mask)
    return float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)


def projected_box(model: ObjectModel, K: np.ndarray, R: np.ndarray, t: np.ndarray) -> tuple[float, float, float, float]:
    """(x, y, w, h) of the model's vertices projected at pose (R, t): the image region a tracked pose shows."""
    pts = model.vertices @ R.T + t
    z = np.maximum(pts[:, 2], 1e-6)
    u = K[0, 0] * pts[:, 0] / z + K[0, 2]
    v = K[1, 1] * pts[:, 1] / z + K[1, 2]
    return float(u.min()), float(v.min()), float(u.max() - u.min()), float(v.max() - v.min())


class StormMethod(PoseMethod):
    """STORM (Segment, Track, and Object Re-Localization from a single iMage): see the module docstring."""

    name = "storm"
    capabilities = Capabilities(tasks=("instance", "tracking"),
                                inputs=frozenset({"rgb", "depth", "cad_model", "reference_images", "video"}),
                                outputs=frozenset({"pose", "mask", "box"}), trainable=True,
                                timing_keys=TIMING_KEYS)

    def __init__(self, cfg: Mapping[str, Any] | None = None, seed: int = 0) -> None:
        super().__init__(cfg, seed)
        self.config = StormConfig.from_mapping(self.cfg)
        self._som: SegmentingObjectModule | None = None
        self.tom: TrackingVerifier | None = None
        self._trained = False
        self._cosine: CosineMatchSegmenter | None = None
        self._registrar: PoseRegistrar | None = None
        self._objects: dict[int, ObjectModel] = {}
        self._models: dict[int, Reconstruction] = {}
        self._tracks: dict[int, _Track] = {}
        self.train_summary: dict[str, Any] = {}

    # ------------------------------------------------------------------ bookkeeping
    def provenance(self) -> Provenance:
        c = self.config
        pretrained = c.preset == "paper"
        notes = [f"segmenter={c.segmenter}", f"verify={c.verify}", f"model3d={c.model3d.backend}"
                 f"{' aligned' if c.model3d.align and c.model3d.backend != 'cad' else ''}",
                 f"hsfa_layers={c.som.hsfa_layers}", f"language={c.som.language}", f"references={c.references}"]
        return Provenance(preset=c.preset, weights="pretrained" if pretrained else "from-scratch",
                          backbone=f"{c.som.backbone} + {c.som.text_encoder}", notes="; ".join(notes))

    @property
    def registrar(self) -> PoseRegistrar:
        if self._registrar is None:
            self._registrar = create_registrar(self.config.registrar, dict(self.config.registrar_config),
                                               seed=self.seed)
        return self._registrar

    def close(self) -> None:
        if self._registrar is not None:
            self._registrar.close()
        self._registrar = None

    def _require_trained(self) -> None:
        if not self._trained:
            raise NotTrainedError("storm: SOM and TOM are not trained: call fit() or load() a checkpoint first "
                                  "(`repro train --method storm` writes one)")

    # ------------------------------------------------------------------ training
    def fit(self, train_data: Any, cfg: Mapping[str, Any] | None = None) -> None:
        """Train SOM on the split's images (references rendered from the models), then TOM on tracking
        pairs built from the same split (scenes held out for the Table 5 variants' accuracy)."""
        logger = _training_logger()
        try:
            self._fit(train_data, logger)
        finally:
            logger.close()

    @property
    def som(self) -> SegmentingObjectModule:
        if self._som is None:
            raise NotTrainedError("storm: SOM is not built: call fit() or load() first")
        return self._som

    def _fit(self, train_data: Any, logger: Any) -> None:
        start = time.perf_counter()
        self._som = SegmentingObjectModule(self.config.som, seed=self.seed)
        som_summary = self._som.fit(train_data, logger=logger, progress=True)
        som_seconds = time.perf_counter() - start
        if self.config.verify == "none":
            log.info("storm: verify=none, so TOM is not trained (this variant never verifies a track)")
            self._trained = True
            self.train_summary = {"scores_train.json": self._som_scores(som_summary, som_seconds, train_data)}
            return
        tcfg = self.config.tom
        threads = torch.get_num_threads()
        if self.config.preset != "paper":
            torch.set_num_threads(1)  # TOM's small heads train several times faster single-threaded on CPU
        try:
            self._fit_tom(train_data, logger, tcfg)
        finally:
            torch.set_num_threads(threads)
        self.train_summary["scores_train.json"] = self._som_scores(som_summary, som_seconds, train_data)

    def _som_scores(self, som_summary: Mapping[str, Any], seconds: float, train_data: Any) -> dict[str, Any]:
        return {"loss": som_summary.get("ema_loss", som_summary.get("final_loss")), **_jsonable(som_summary),
                "seconds": seconds, "split": getattr(train_data, "split", None), "preset": self.config.preset}

    def _fit_tom(self, train_data: Any, logger: Any, tcfg: Any) -> None:
        rng = np.random.default_rng([self.seed, 7])
        scenes = list(train_data.scene_ids())
        train_scenes, val_scenes = split_scenes(scenes, self.config.tom_val_fraction, self.seed)
        if not val_scenes:
            log.warning("storm: the training split has one scene; TOM's accuracy is measured on its training scene")
            val_scenes = list(train_scenes)
        t0 = time.perf_counter()
        # train + val pair sets; above crop_memory_gb their crops live in memmaps removed when TOM is trained
        on_disk = crops_on_disk(tcfg, 2 * (tcfg.n_positive + tcfg.n_negative))
        with contextlib.ExitStack() as stack:
            cache = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="storm-tom-"))) if on_disk else None
            train_pairs = build_tracking_pairs(train_data, tcfg, rng, scene_ids=train_scenes,
                                               cache_dir=None if cache is None else cache / "train")
            val_pairs = build_tracking_pairs(train_data, tcfg, rng, scene_ids=val_scenes,
                                             cache_dir=None if cache is None else cache / "val")
            backbone = self.som.backbone
            self.tom = TrackingVerifier(backbone, tcfg, seed=self.seed)
            stream = not self.tom.should_precompute(train_pairs, val_pairs)
            train_features = val_features = None
            if not stream:
                train_features, val_features = self.tom.encode_pairs(train_pairs), self.tom.encode_pairs(val_pairs)
            tom_fit = self.tom.fit(train_pairs, val_pairs, logger=logger, progress=True,
                                   train_features=train_features, val_features=val_features, stream=stream)
            main_eval = self.tom.evaluate(val_pairs, features=val_features, stream=stream)
            del train_features, val_features
            main_name = "cosine" if tcfg.variant == "cosine" else (
                "no_attention" if tcfg.variant == "no_attention" else f"attention{tcfg.layers}")
            others = tuple(v for v in self.config.tom_variants if v != main_name)
            variants = {}
            if others:
                variants = train_tom_variants(backbone, train_pairs, val_pairs, tcfg, variants=others,
                                              seed=self.seed, logger=logger, progress=True)
            if main_name in self.config.tom_variants:
                variants[main_name] = {**main_eval, "fit": tom_fit}
            n_train, n_val = len(train_pairs), len(val_pairs)
            del train_pairs, val_pairs
        tom_seconds = time.perf_counter() - t0
        self._trained = True
        self.train_summary = {
            "scores_tom.json": {
                **_jsonable(main_eval), "variant": tcfg.variant, "variants": _jsonable(variants),
                "fit": _jsonable(tom_fit), "seconds": tom_seconds, "n_train_pairs": n_train,
                "n_val_pairs": n_val, "train_scenes": [int(s) for s in train_scenes],
                "val_scenes": [int(s) for s in val_scenes],
                "eval_split": f"{getattr(train_data, 'split', '?')} scenes {list(map(int, val_scenes))} (held out)",
            },
        }
        log.info("storm: trained TOM (+%d variants) in %.1f s", len(variants), tom_seconds)

    def save(self, directory: str | Path) -> None:
        self._require_trained()
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.som.save(d / "som")
        if self.tom is not None:
            self.tom.save(d / "tom")
        atomic_write_json(d / CONFIG_FILE, {"method": self.name, "config": self.config.to_dict()})
        for name, data in self.train_summary.items():
            atomic_write_json(d / name, data)

    def load(self, directory: str | Path) -> None:
        d = Path(directory)
        if not (d / CONFIG_FILE).is_file():
            raise FileNotFoundError(f"storm: no checkpoint at {d} (expected {d / CONFIG_FILE}); train one with "
                                    "`repro train --method storm`")
        self._som = SegmentingObjectModule(self.config.som, seed=self.seed, load_pretrained=False)
        self._som.load(d / "som")
        self.tom = None
        if (d / "tom").is_dir():
            self.tom = TrackingVerifier.load(d / "tom", self._som.backbone, expected=self.config.tom)
        elif self.config.verify == "tom":
            raise FileNotFoundError(f"storm: the checkpoint at {d} has no TOM (it was trained with verify=none); "
                                    "use verify=none with it or train with verify=tom")
        self.train_summary = {p.name: read_json(p) for p in sorted(d.glob("scores_*.json"))}
        self._trained = True

    # ------------------------------------------------------------------ onboarding
    def _references(self, model: ObjectModel, renderer: Any) -> ReferenceSet:
        source = self.config.references
        size = self.config.som.ref_size
        if source == "render":
            return render_references(model, n_views=self.config.som.n_refs, size=size, renderer=renderer,
                                     seed=self.seed)
        folder = Path(source) if source != "static" else _dataset_root(model) / "onboarding_static"
        return load_static_references(folder, model.obj_id, size=size)

    def onboard(self, objects: Mapping[int, ObjectModel], cache_dir: str | Path | None = None) -> None:
        self._require_trained()
        self._objects = dict(objects)
        self._models.clear()
        self._tracks.clear()
        renderer = get_renderer("auto") if self.config.references == "render" else None
        try:
            for obj_id, model in sorted(self._objects.items()):
                refs = self._references(model, renderer)
                self.som.prepare(refs)
                if self.config.segmenter == "cosine":
                    self.cosine.prepare(refs)
                views = None
                if self.config.model3d.backend != "cad":
                    views = load_onboarding_views(_dataset_root(model), obj_id,
                                                  max_views=self.config.model3d.max_views)
                rec = build_object_model(model, views, self.config.model3d, seed=self.seed)
                self._models[obj_id] = rec
                prepare = getattr(self.registrar, "prepare", None)
                if prepare is not None:
                    prepare(rec.model)
                log.info("storm: onboarded obj %d (%s model%s)", obj_id, rec.backend,
                         ", aligned" if rec.aligned else "")
        finally:
            if renderer is not None and hasattr(renderer, "close"):
                renderer.close()

    @property
    def cosine(self) -> CosineMatchSegmenter:
        if self._cosine is None:
            self._cosine = CosineMatchSegmenter(self.som.backbone, self.config.som)
        return self._cosine

    def reset(self, sequence_id: int | None = None) -> None:
        self._tracks.clear()

    # ------------------------------------------------------------------ inference
    def _may_track(self, prev: _Track | None, frame: Frame) -> bool:
        if prev is None or self.config.track == "never" or prev.sequence_id != frame.sequence_id:
            return False
        if self.config.track == "auto" and not getattr(frame, "video", False):
            return False
        if prev.sequence_index is None or frame.sequence_index is None:
            return False
        return frame.sequence_index > prev.sequence_index

    def predict(self, frame: Frame, targets: Targets) -> Prediction:
        self._require_trained()
        if frame.depth is None:
            raise ValueError("storm needs a depth image (the registrar is RGB-D)")
        timings = dict.fromkeys(TIMING_KEYS, 0.0)
        obj_ids = sorted({t.obj_id for t in targets.instances}) if not targets.any_object else sorted(self._objects)
        estimates = []
        for obj_id in obj_ids:
            if obj_id not in self._models:
                raise KeyError(f"storm: object {obj_id} was not onboarded")
            est = self._estimate(frame, obj_id, timings)
            if est is not None:
                estimates.append(est)
        return Prediction(estimates=estimates, timings=timings)

    def _estimate(self, frame: Frame, obj_id: int, timings: dict[str, float]) -> PoseEstimate | None:
        model = self._models[obj_id].model
        prev = self._tracks.get(obj_id)
        if self._may_track(prev, frame):
            assert prev is not None
            start = time.perf_counter()
            tracked = self.registrar.track(frame.rgb, frame.depth, frame.K, model, (prev.R, prev.t))
            timings["tracking"] += time.perf_counter() - start
            ok = True
            if self.config.verify == "tom":
                start = time.perf_counter()
                ok = self._verify(frame, model, tracked, prev)
                timings["verification"] += time.perf_counter() - start
            if ok:
                prev.R, prev.t = tracked.R, tracked.t
                prev.sequence_index = frame.sequence_index
                box = projected_box(model, frame.K, tracked.R, tracked.t)
                return PoseEstimate(obj_id=obj_id, R=tracked.R, t=tracked.t, score=tracked.score, box=box)
            prev.failures += 1
            log.debug("storm: TOM flagged a tracking failure of obj %d in %s; re-registering", obj_id, frame.key)
        return self._register(frame, obj_id, model, prev, timings)

    def _verify(self, frame: Frame, model: ObjectModel, tracked: RegistrationOutput, track: _Track) -> bool:
        assert self.tom is not None
        box = projected_box(model, frame.K, tracked.R, tracked.t)
        crop = box_crop(frame.rgb, box, self.config.tom.crop_size, self.config.tom.margin)
        return self.tom.verify(crop, track.memory) >= self.config.tom.threshold

    def _segment(self, frame: Frame, obj_id: int) -> Any:
        seg = self.cosine if self.config.segmenter == "cosine" else self.som
        return seg.segment(frame.rgb, obj_id)

    def _register(self, frame: Frame, obj_id: int, model: ObjectModel, prev: _Track | None,
                  timings: dict[str, float]) -> PoseEstimate | None:
        start = time.perf_counter()
        seg = self._segment(frame, obj_id)
        timings["segmentation"] += time.perf_counter() - start
        mask = np.asarray(seg.mask, dtype=bool)
        if int(mask.sum()) < max(self.config.min_mask_pixels, 1):
            self._tracks.pop(obj_id, None)
            return None
        start = time.perf_counter()
        try:
            reg = self.registrar.register(frame.rgb, frame.depth, mask, frame.K, model)
        except RegistrationError as exc:
            log.info("storm: no estimate for obj %d in %s: %s", obj_id, frame.key, exc)
            self._tracks.pop(obj_id, None)
            return None
        finally:
            timings["registration"] += time.perf_counter() - start
        if self.config.verify == "tom" and self.tom is not None:
            start = time.perf_counter()
            crop = segmented_crop(frame.rgb, mask, self.config.tom.crop_size, self.config.tom.margin)
            memory = list(prev.memory) if prev is not None and prev.sequence_id == frame.sequence_id else []
            memory = [*memory, self.tom.encode(crop[None])[0]][-self.config.memory_size:]
            timings["verification"] += time.perf_counter() - start
        else:
            memory = []
        failures = prev.failures if prev is not None else 0
        self._tracks[obj_id] = _Track(frame.sequence_id, frame.sequence_index, reg.R, reg.t, memory, failures)
        return PoseEstimate(obj_id=obj_id, R=reg.R, t=reg.t, score=float(seg.score), mask=mask, box=_mask_box(mask))


def _training_logger() -> Any:
    """The MLflow run the train stage opened (``MLFLOW_TRACKING_URI`` + ``MLFLOW_RUN_ID``), else no logging."""
    import os

    from methods.common.training import MlflowLogger, NullLogger

    uri, run_id = os.environ.get("MLFLOW_TRACKING_URI"), os.environ.get("MLFLOW_RUN_ID")
    if uri and run_id:
        return MlflowLogger(uri, run_id=run_id)
    return NullLogger()


def _dataset_root(model: ObjectModel) -> Path:
    """The BOP dataset folder a model was loaded from (``<root>/models/obj_XXXXXX.ply``)."""
    if not model.path:
        raise FileNotFoundError(f"storm: object {model.obj_id} has no file path, so its dataset's onboarding data "
                                "cannot be found; use references: render and model3d.backend: cad, or give a folder")
    return Path(model.path).resolve().parent.parent


def _jsonable(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, torch.Tensor):
        return v.detach().cpu().tolist()
    return v
