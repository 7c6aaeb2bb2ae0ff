"""STORM's Tracking Object Module (TOM): the tracking-loss classifier (paper section "6D Pose Estimation
and Robust Tracking", appendix D "Implementation of TOM", appendix F "Tracking Dataset", Table 5).

A *memory crop* is the segmented image of the object (pixels outside its mask set to 0, the paper's
"real crop" stored in the memory pool); a *query crop* is the plain image crop that the tracker's
current pose shows (at inference the box of the model projected at the tracked pose). Both go through
a frozen backbone; a small head says whether they show the same object, i.e. whether tracking is still
valid. Head variants (Table 5):

- ``cosine``: cosine similarity of the mean-pooled tokens; the threshold is fitted on the training
  pairs to maximise accuracy (probability ``sigmoid(COSINE_TEMPERATURE (cos - threshold))``).
- ``no_attention``: the pooled features of both crops concatenated -> FC (Linear-GELU-Linear) -> logit.
- ``attention`` (paper's TOM, ``layers`` 1 or 2): the token sequences of both crops concatenated, each
  projected to ``dim`` plus a learned segment embedding (memory / query); ``layers`` self-attention
  layers (``TransformerLayer``); LayerNorm; mean over the tokens; FC -> logit; sigmoid.

Training (appendix D): BCEWithLogits (Eq. 15), Adam lr 1e-4, batch 64, 10 epochs, 100k positive + 100k
negative pairs sampled uniformly over objects. Unspecified in the paper and chosen here: crop size 224,
head width 256 with 8 heads, 10 % margin around boxes, negatives 1/2 other object, 1/4 shifted, 1/4
random crop, positives' boxes jittered (IoU >= 0.7 with the true box) as a tracker's projection would be.

Memory: at the paper's scale (200k pairs per set, 224 px crops, DINOv2 ViT-S/14: 256 tokens x 384 dims) a
set's query crops alone take 30 GB of uint8 and their frozen-backbone tokens 79 GB of float32. So
``build_tracking_pairs`` can write the crops to ``.npy`` memmaps (``cache_dir``; STORM's training does when
``crops_on_disk``: ``crop_bytes`` above ``crop_memory_gb``), and the verifier precomputes the tokens only
while they fit in ``feature_memory_gb`` (``TrackingVerifier.should_precompute``). Otherwise it streams:
each mini-batch's crops are encoded by the frozen backbone when training, fitting the cosine threshold or
evaluating, with the same batches and seeds (same results up to float rounding).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from methods.common.backbones import FeatureExtractor
from methods.common.blocks import TransformerLayer
from methods.common.checkpoint import load_checked, read_safetensors, write_safetensors
from methods.common.rng import seeded
from methods.common.training.state import derive_seed
from repro.data.bop import BopDataset
from repro.fileio import atomic_write_json, read_json

log = logging.getLogger(__name__)

Variant = Literal["cosine", "no_attention", "attention"]
KINDS: tuple[str, ...] = ("positive", "other_object", "shifted", "random_crop")
NEGATIVE_KINDS: tuple[str, ...] = KINDS[1:]
COSINE_TEMPERATURE = 20.0
"""Slope of the cosine variant's probability around its threshold (probability 0.5 at the threshold)."""
ARCH_FIELDS: tuple[str, ...] = ("variant", "layers", "crop_size", "dim", "heads", "mlp_ratio")
"""Config fields that fix the head's parameters: a saved head only loads with the same values."""
CONFIG_FILE = "tom_config.json"
WEIGHTS_FILE = "tom_head.safetensors"
GB = 1e9
"""Bytes per GB of the ``crop_memory_gb`` / ``feature_memory_gb`` budgets."""
MEMORY_POOL_FILE = "memory_pool.npy"
QUERY_CROPS_FILE = "query_crops.npy"


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class TOMConfig:
    """TOM hyper-parameters; defaults are the paper's (see the module docstring for what it leaves open).

    ``margin``: fraction of the box's longer side added on each side of the square crop.
    ``negative_mix``: weights of (other_object, shifted, random_crop) among the negatives.
    ``shift_max_iou`` / ``random_max_iou``: IoU of a shifted / random query box with the true box stays
    below these; ``positive_min_iou``: a positive's jittered box keeps at least this IoU.
    ``crop_memory_gb``: above this estimate (``crop_bytes``) STORM's training writes the crops to disk
    memmaps; ``feature_memory_gb``: above this estimate (``TrackingVerifier.feature_bytes``) backbone
    tokens are computed per mini-batch instead of once for all crops.
    """

    variant: Variant = "attention"
    layers: int = 1
    crop_size: int = 224
    dim: int = 256
    heads: int = 8
    mlp_ratio: float = 4.0
    lr: float = 1e-4
    batch_size: int = 64
    epochs: int = 10
    n_positive: int = 100_000
    n_negative: int = 100_000
    threshold: float = 0.5
    margin: float = 0.1
    negative_mix: tuple[float, float, float] = (0.5, 0.25, 0.25)
    min_visib_fract: float = 0.1
    min_box_size: int = 16
    positive_jitter: float = 0.05
    positive_min_iou: float = 0.7
    shift_max_iou: float = 0.3
    random_max_iou: float = 0.1
    encode_batch: int = 64
    timing_calls: int = 50
    timing_warmup: int = 5
    crop_memory_gb: float = 8.0
    feature_memory_gb: float = 4.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "negative_mix", tuple(float(x) for x in self.negative_mix))
        if self.variant not in ("cosine", "no_attention", "attention"):
            raise ValueError(f"TOM variant must be cosine, no_attention or attention, got {self.variant!r}")
        if self.variant == "attention" and self.layers < 1:
            raise ValueError(f"the attention variant needs layers >= 1, got {self.layers}")
        if self.dim % self.heads:
            raise ValueError(f"TOM dim {self.dim} is not divisible by heads {self.heads}")
        if len(self.negative_mix) != 3 or min(self.negative_mix) < 0 or sum(self.negative_mix) <= 0:
            raise ValueError(f"negative_mix needs 3 non-negative weights, got {self.negative_mix}")
        if self.crop_size < 8 or self.batch_size < 1 or self.epochs < 0 or self.timing_calls < 1:
            raise ValueError("TOM crop_size >= 8, batch_size >= 1, epochs >= 0 and timing_calls >= 1 are required")
        if self.n_positive < 0 or self.n_negative < 0:
            raise ValueError("n_positive and n_negative must be >= 0")
        if self.crop_memory_gb < 0 or self.feature_memory_gb < 0:
            raise ValueError("crop_memory_gb and feature_memory_gb must be >= 0")

    @classmethod
    def from_mapping(cls, d: Mapping[str, Any]) -> TOMConfig:
        """Build from a mapping; an unknown key raises ``ValueError`` naming it."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown TOMConfig key(s): {', '.join(unknown)}; known: {', '.join(sorted(names))}")
        return cls(**dict(d))

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> TOMConfig:
        """``paper``, ``cpu`` or ``smoke`` (see ``PRESETS``), with fields replaced by ``overrides``."""
        if name not in PRESETS:
            raise ValueError(f"unknown TOM preset {name!r}; choose from {', '.join(PRESETS)}")
        return dataclasses.replace(PRESETS[name], **overrides)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["negative_mix"] = list(self.negative_mix)
        return d


PRESETS: Mapping[str, TOMConfig] = MappingProxyType(
    {
        "paper": TOMConfig(),
        # cpu: 2000 + 2000 pairs, 64 px crops, a 128-wide head with 4 heads; Adam, batch, epochs as the paper,
        # lr 1e-3: 50x fewer pairs give 630 steps instead of ~31k, and at 1e-4 the heads' training loss stays
        # near ln 2 (0.673 after 10 epochs for 1 layer), at 1e-3 it falls to 0.57.
        "cpu": TOMConfig(crop_size=64, dim=128, heads=4, n_positive=2000, n_negative=2000, lr=1e-3),
        # smoke: seconds in tests.
        "smoke": TOMConfig(crop_size=32, dim=32, heads=2, n_positive=48, n_negative=48, batch_size=16, epochs=2,
                           encode_batch=32, timing_calls=50, timing_warmup=2),
    }
)


# --------------------------------------------------------------------------- crops & boxes


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two (x, y, w, h) boxes."""
    ax, ay, aw, ah = (float(v) for v in a)
    bx, by, bw, bh = (float(v) for v in b)
    iw = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = iw * ih
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


def square_region(box_xywh: Sequence[float], margin: float) -> tuple[int, int, int]:
    """Integer square ``(x0, y0, side)`` centred on the box, side = longer box side * (1 + 2 margin)."""
    x, y, w, h = (float(v) for v in box_xywh)
    if w <= 0 or h <= 0:
        raise ValueError(f"box must have positive size, got {tuple(box_xywh)}")
    side = max(1, round(max(w, h) * (1.0 + 2.0 * margin)))
    cx, cy = x + w / 2.0, y + h / 2.0
    return round(cx - side / 2.0), round(cy - side / 2.0), side


def _cut(image: np.ndarray, x0: int, y0: int, side: int) -> np.ndarray:
    """The ``side`` x ``side`` window at (x0, y0), zero where it leaves the image."""
    h, w = image.shape[:2]
    out = np.zeros((side, side, *image.shape[2:]), dtype=image.dtype)
    sx0, sy0 = max(0, x0), max(0, y0)
    sx1, sy1 = min(w, x0 + side), min(h, y0 + side)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = image[sy0:sy1, sx0:sx1]
    return out


def _resize(crop: np.ndarray, size: int) -> np.ndarray:
    if crop.shape[0] == size:
        return np.ascontiguousarray(crop)
    interp = cv2.INTER_AREA if crop.shape[0] > size else cv2.INTER_LINEAR
    return cv2.resize(crop, (size, size), interpolation=interp)


def box_crop(rgb: np.ndarray, box_xywh: Sequence[float], size: int, margin: float = 0.1) -> np.ndarray:
    """Square crop (size, size, 3) uint8 around ``box_xywh`` (+ margin); zero padding outside the image."""
    x0, y0, side = square_region(box_xywh, margin)
    return _resize(_cut(np.asarray(rgb, dtype=np.uint8), x0, y0, side), size)


def mask_bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Tight (x, y, w, h) box of a boolean mask; ``ValueError`` for an empty mask."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        raise ValueError("empty mask has no bounding box")
    return int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)


def segmented_crop(rgb: np.ndarray, mask: np.ndarray, size: int, margin: float = 0.1) -> np.ndarray:
    """The memory pool's "real crop": square crop around the mask's box, pixels outside the mask = 0."""
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != rgb.shape[:2]:
        raise ValueError(f"mask {mask.shape} does not match the image {rgb.shape[:2]}")
    seg = np.where(mask[..., None], np.asarray(rgb, dtype=np.uint8), 0).astype(np.uint8)
    x0, y0, side = square_region(mask_bbox(mask), margin)
    return _resize(_cut(seg, x0, y0, side), size)


# --------------------------------------------------------------------------- the tracking dataset


@dataclass(frozen=True, eq=False)
class TrackingPairs:
    """Pairs (memory crop, query crop) with labels 1 = tracking valid, 0 = lost.

    Memory crops are stored once in ``memory_pool`` (M, S, S, 3) and referenced by ``memory_index``
    (N,); ``query_crops`` (N, S, S, 3); ``labels`` (N,) uint8; ``kinds`` (N,) one of ``KINDS``;
    ``obj_ids`` the memory object; ``query_obj_ids`` the object whose box the query was cut around;
    ``query_boxes`` the (x, y, w, h) box cut for the query and ``reference_boxes`` that object's true box.
    """

    memory_pool: np.ndarray
    memory_index: np.ndarray
    query_crops: np.ndarray
    labels: np.ndarray
    kinds: np.ndarray
    obj_ids: np.ndarray
    query_obj_ids: np.ndarray
    query_boxes: np.ndarray
    reference_boxes: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.labels)
        for name in ("memory_index", "query_crops", "kinds", "obj_ids", "query_obj_ids", "query_boxes",
                     "reference_boxes"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"TrackingPairs.{name} has {len(getattr(self, name))} rows, labels {n}")
        if n and (self.memory_index.min() < 0 or self.memory_index.max() >= len(self.memory_pool)):
            raise ValueError("TrackingPairs.memory_index out of range of the memory pool")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def memory_crops(self) -> np.ndarray:
        """(N, S, S, 3) memory crop of every pair."""
        return self.memory_pool[self.memory_index]

    @property
    def crop_size(self) -> int:
        return int(self.query_crops.shape[1])

    def subset(self, indices: Sequence[int] | np.ndarray) -> TrackingPairs:
        """The pairs at ``indices`` (the memory pool is shared; the selected query crops are copied into RAM)."""
        idx = np.asarray(indices, dtype=np.int64)
        return dataclasses.replace(
            self, memory_index=self.memory_index[idx], query_crops=self.query_crops[idx], labels=self.labels[idx],
            kinds=self.kinds[idx], obj_ids=self.obj_ids[idx], query_obj_ids=self.query_obj_ids[idx],
            query_boxes=self.query_boxes[idx], reference_boxes=self.reference_boxes[idx])

    def kind_counts(self) -> dict[str, int]:
        return {k: int(np.sum(self.kinds == k)) for k in KINDS}


@dataclass(frozen=True)
class _Instance:
    scene_id: int
    im_id: int
    gt_id: int
    obj_id: int
    box: tuple[float, float, float, float]
    width: int
    height: int


def split_scenes(scene_ids: Sequence[int], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Scene-level split ``(train, val)`` (sorted); at least one val scene when ``val_fraction > 0`` and
    there are two or more scenes, never all of them."""
    ids = sorted(int(s) for s in scene_ids)
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n_val = round(len(ids) * val_fraction)
    if val_fraction > 0 and len(ids) > 1:
        n_val = min(max(n_val, 1), len(ids) - 1)
    perm = np.random.default_rng(seed).permutation(len(ids))
    val = sorted(ids[i] for i in perm[:n_val])
    return [s for s in ids if s not in set(val)], val


def _instances(dataset: BopDataset, scene_ids: Sequence[int], cfg: TOMConfig) -> list[_Instance]:
    out: list[_Instance] = []
    for sid in scene_ids:
        for im_id in dataset.scene(sid).im_ids:
            camera, _ = dataset.camera(sid, im_id)
            for g in dataset.gt_instances(sid, im_id, load_masks=False):
                if g.visib_fract < cfg.min_visib_fract or g.bbox_visib is None:
                    continue
                if min(g.bbox_visib[2], g.bbox_visib[3]) < cfg.min_box_size:
                    continue
                box = g.bbox_obj if g.bbox_obj is not None and min(g.bbox_obj[2:]) > 0 else g.bbox_visib
                out.append(_Instance(sid, im_id, g.gt_id, g.obj_id, tuple(float(v) for v in box),
                                     camera.width, camera.height))
    return out


def _jittered_box(rng: np.random.Generator, box: tuple[float, ...], sigma: float, min_iou: float) -> np.ndarray:
    x, y, w, h = box
    for _ in range(50):
        s = math.exp(rng.normal(0.0, sigma))
        dx, dy = rng.normal(0.0, sigma, size=2) * np.array([w, h])
        cand = (x + w / 2 + dx - w * s / 2, y + h / 2 + dy - h * s / 2, w * s, h * s)
        if box_iou(cand, box) >= min_iou:
            return np.array(cand)
    return np.array(box, dtype=np.float64)


def _shifted_box(rng: np.random.Generator, inst: _Instance, max_iou: float) -> np.ndarray:
    """A box of about the object's size, displaced so its IoU with the true box is below ``max_iou``."""
    x, y, w, h = inst.box
    cx, cy = x + w / 2, y + h / 2
    for _ in range(200):
        s = math.exp(rng.uniform(-0.2, 0.2))
        nw, nh = w * s, h * s
        dx, dy = rng.uniform(-1.5, 1.5) * w, rng.uniform(-1.5, 1.5) * h
        ncx, ncy = cx + dx, cy + dy
        if not (0 <= ncx < inst.width and 0 <= ncy < inst.height):
            continue
        cand = (ncx - nw / 2, ncy - nh / 2, nw, nh)
        if box_iou(cand, inst.box) < max_iou:
            return np.array(cand)
    sign = 1.0 if cx < inst.width / 2 else -1.0
    return np.array((x + sign * 1.2 * w, y, w, h))


def _random_box(rng: np.random.Generator, inst: _Instance, max_iou: float, min_size: int) -> np.ndarray:
    """A random box inside the image, of a size like the object's, barely overlapping it."""
    w, h = inst.box[2], inst.box[3]
    for _ in range(200):
        side = max(min_size, max(w, h) * math.exp(rng.uniform(-0.5, 0.5)))
        aspect = math.exp(rng.uniform(-0.3, 0.3))
        bw, bh = min(side * aspect, inst.width), min(side / aspect, inst.height)
        cand = (rng.uniform(0, inst.width - bw), rng.uniform(0, inst.height - bh), bw, bh)
        if box_iou(cand, inst.box) < max_iou:
            return np.array(cand)
    return _shifted_box(rng, inst, max_iou)


def crop_bytes(cfg: TOMConfig, n_pairs: int | None = None) -> int:
    """Upper bound of the uint8 crops ``build_tracking_pairs`` holds for ``n_pairs`` pairs (default
    ``n_positive + n_negative``): a query crop per pair plus at most one memory-pool crop per pair."""
    n = cfg.n_positive + cfg.n_negative if n_pairs is None else int(n_pairs)
    return 2 * n * cfg.crop_size * cfg.crop_size * 3


def crops_on_disk(cfg: TOMConfig, n_pairs: int | None = None) -> bool:
    """Whether ``n_pairs`` pairs' crops (``crop_bytes``) exceed ``crop_memory_gb`` and belong in disk memmaps."""
    est = crop_bytes(cfg, n_pairs)
    on_disk = est > cfg.crop_memory_gb * GB
    log.info("TOM crops: %s (estimated %.3g GB %s budget crop_memory_gb=%.3g GB)",
             "on disk (memmaps)" if on_disk else "in memory", est / GB, ">" if on_disk else "<=", cfg.crop_memory_gb)
    return on_disk


def _crop_arrays(n_pool: int, n_query: int, size: int,
                 cache_dir: Path | None) -> tuple[np.ndarray, np.ndarray, Callable[[bool], None]]:
    """Zeroed (n_pool, S, S, 3) and (n_query, S, S, 3) uint8 arrays, as ``.npy`` memmaps under temporary
    names in ``cache_dir`` when given, and ``finish(ok)``: flush and rename them (``ok``) or delete them."""
    if cache_dir is None:
        pool = np.zeros((n_pool, size, size, 3), dtype=np.uint8)
        queries = np.zeros((n_query, size, size, 3), dtype=np.uint8)
        return pool, queries, lambda ok: None
    cache_dir.mkdir(parents=True, exist_ok=True)
    names = (MEMORY_POOL_FILE, QUERY_CROPS_FILE)
    partial = [cache_dir / f".{name}.{os.getpid()}.partial" for name in names]
    arrays = [np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(rows, size, size, 3))
              for path, rows in zip(partial, (n_pool, n_query), strict=True)]

    def finish(ok: bool) -> None:
        for arr in arrays:
            arr.flush()
        for path, name in zip(partial, names, strict=True):
            if ok:
                os.replace(path, cache_dir / name)
            else:
                path.unlink(missing_ok=True)

    return arrays[0], arrays[1], finish


def build_tracking_pairs(dataset: BopDataset, cfg: TOMConfig, rng: np.random.Generator,
                         scene_ids: Sequence[int] | None = None, *, progress: bool = True,
                         cache_dir: str | Path | None = None) -> TrackingPairs:
    """The tracking dataset of appendix F from a BOP split's GT visible masks.

    Instances with ``visib_fract >= min_visib_fract`` and a visible box at least ``min_box_size`` wide
    are used. Each pair draws an object uniformly, then one of its instances as the memory crop
    (segmented). Positives: a box crop of the same object in a random one of its instances (maybe the
    same image), box jittered. Negatives (``negative_mix``): a box crop of a different object; a box
    shifted around the object's box (IoU < ``shift_max_iou``); a random image crop (IoU <
    ``random_max_iou``). The plan is drawn from annotations first, then each needed image is read once.

    With ``cache_dir`` the memory pool and the query crops are ``.npy`` memmaps there (``memory_pool.npy``,
    ``query_crops.npy``, renamed from temporary names once complete, then reopened read-only); the pairs
    are the same as without it for the same ``rng``.
    """
    scene_ids = dataset.scene_ids() if scene_ids is None else list(scene_ids)
    insts = _instances(dataset, scene_ids, cfg)
    if not insts:
        raise ValueError(f"no usable instances in scenes {scene_ids} of {dataset.root} ({dataset.split})")
    by_obj: dict[int, list[int]] = {}
    for i, inst in enumerate(insts):
        by_obj.setdefault(inst.obj_id, []).append(i)
    objs = sorted(by_obj)
    mix = np.array(cfg.negative_mix, dtype=np.float64)
    if len(objs) < 2:
        mix[0] = 0.0
        if mix.sum() == 0:
            mix[1] = 1.0
    mix /= mix.sum()

    n = cfg.n_positive + cfg.n_negative
    mem_inst = np.empty(n, dtype=np.int64)
    qry_inst = np.empty(n, dtype=np.int64)
    labels = np.zeros(n, dtype=np.uint8)
    kinds = np.empty(n, dtype=object)
    qboxes = np.empty((n, 4), dtype=np.float64)
    for k in range(n):
        o = objs[rng.integers(len(objs))]
        mem_inst[k] = by_obj[o][rng.integers(len(by_obj[o]))]
        if k < cfg.n_positive:
            kind = "positive"
        else:
            kind = NEGATIVE_KINDS[rng.choice(3, p=mix)]
        if kind == "other_object":
            others = [p for p in objs if p != o]
            o2 = others[rng.integers(len(others))]
            q = by_obj[o2][rng.integers(len(by_obj[o2]))]
        else:
            q = by_obj[o][rng.integers(len(by_obj[o]))]
        inst = insts[q]
        if kind == "positive":
            qboxes[k] = _jittered_box(rng, inst.box, cfg.positive_jitter, cfg.positive_min_iou)
        elif kind == "other_object":
            qboxes[k] = _jittered_box(rng, inst.box, cfg.positive_jitter, cfg.positive_min_iou)
        elif kind == "shifted":
            qboxes[k] = _shifted_box(rng, inst, cfg.shift_max_iou)
        else:
            qboxes[k] = _random_box(rng, inst, cfg.random_max_iou, cfg.min_box_size)
        labels[k] = kind == "positive"
        kinds[k] = kind
        qry_inst[k] = q

    used_mem = np.unique(mem_inst)
    pool_slot = {int(i): s for s, i in enumerate(used_mem)}
    size = cfg.crop_size
    cache = None if cache_dir is None else Path(cache_dir)
    pool, queries, finish = _crop_arrays(len(used_mem), n, size, cache)
    per_image: dict[tuple[int, int], tuple[list[int], list[int]]] = {}
    for i in used_mem:
        per_image.setdefault((insts[i].scene_id, insts[i].im_id), ([], []))[0].append(int(i))
    for k in range(n):
        inst = insts[qry_inst[k]]
        per_image.setdefault((inst.scene_id, inst.im_id), ([], []))[1].append(k)
    try:
        for (sid, im_id), (mems, pairs) in tqdm(sorted(per_image.items()), desc="tracking pairs",
                                                disable=not progress):
            frame = dataset.load_frame(sid, im_id, with_gt=True, load_masks=bool(mems))
            masks = {g.gt_id: g.mask_visib for g in frame.gt or ()}
            for i in mems:
                mask = masks.get(insts[i].gt_id)
                if mask is None or not mask.any():
                    raise ValueError(f"scene {sid} image {im_id} gt {insts[i].gt_id}: visible mask missing or empty")
                pool[pool_slot[i]] = segmented_crop(frame.rgb, mask, size, cfg.margin)
            for k in pairs:
                queries[k] = box_crop(frame.rgb, qboxes[k], size, cfg.margin)
    except BaseException:
        finish(False)
        raise
    finish(True)
    if cache is not None:
        pool = np.load(cache / MEMORY_POOL_FILE, mmap_mode="r")
        queries = np.load(cache / QUERY_CROPS_FILE, mmap_mode="r")
    log.info("tracking pairs: %d (%d positive) from %d instances of %d objects, memory pool %d",
             n, int(labels.sum()), len(insts), len(objs), len(pool))
    return TrackingPairs(
        memory_pool=pool,
        memory_index=np.array([pool_slot[int(i)] for i in mem_inst], dtype=np.int64),
        query_crops=queries,
        labels=labels,
        kinds=kinds.astype(str),
        obj_ids=np.array([insts[i].obj_id for i in mem_inst], dtype=np.int64),
        query_obj_ids=np.array([insts[i].obj_id for i in qry_inst], dtype=np.int64),
        query_boxes=qboxes,
        reference_boxes=np.array([insts[i].box for i in qry_inst], dtype=np.float64).reshape(n, 4),
    )


# --------------------------------------------------------------------------- heads


def tom_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Eq. 15: mean binary cross-entropy with logits."""
    return F.binary_cross_entropy_with_logits(logits, labels.to(device=logits.device, dtype=logits.dtype))


def _pool(tokens: torch.Tensor) -> torch.Tensor:
    return tokens.mean(dim=1)


class CosineHead(nn.Module):
    """Cosine similarity of mean-pooled tokens, logit ``COSINE_TEMPERATURE (cos - threshold)``."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("cos_threshold", torch.zeros(()))

    def similarity(self, memory: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        return F.cosine_similarity(_pool(memory), _pool(query), dim=-1)

    def forward(self, memory: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        return COSINE_TEMPERATURE * (self.similarity(memory, query) - self.cos_threshold)


class ConcatHead(nn.Module):
    """Without attention: LayerNorm'd pooled features of both crops concatenated -> Linear-GELU-Linear."""

    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(in_dim)
        self.fc = nn.Sequential(nn.Linear(2 * in_dim, dim), nn.GELU(), nn.Linear(dim, 1))

    def forward(self, memory: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.norm(_pool(memory)), self.norm(_pool(query))], dim=-1)
        return self.fc(x).squeeze(-1)


class AttentionHead(nn.Module):
    """TOM: [memory tokens + seg0; query tokens + seg1] -> ``layers`` self-attention layers -> LayerNorm ->
    mean over tokens -> FC.

    The read-out pools every token rather than a CLS token: after one layer a CLS token only holds a
    weighted sum of single tokens, while each memory/query token has attended across the two crops, so
    pooling them lets a single layer compare the crops.
    """

    def __init__(self, in_dim: int, dim: int, heads: int, layers: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.in_norm = nn.LayerNorm(in_dim)
        self.proj = nn.Linear(in_dim, dim)
        self.segment = nn.Parameter(torch.zeros(2, dim))
        self.layers = nn.ModuleList(TransformerLayer(dim, heads, mlp_ratio=mlp_ratio) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, 1)
        nn.init.trunc_normal_(self.segment, std=0.02)

    def forward(self, memory: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        m = self.proj(self.in_norm(memory)) + self.segment[0]
        q = self.proj(self.in_norm(query)) + self.segment[1]
        x = torch.cat([m, q], dim=1)
        for layer in self.layers:
            x = layer(x)
        return self.fc(self.norm(x).mean(dim=1)).squeeze(-1)


def build_head(cfg: TOMConfig, in_dim: int) -> nn.Module:
    if cfg.variant == "cosine":
        return CosineHead()
    if cfg.variant == "no_attention":
        return ConcatHead(in_dim, cfg.dim)
    return AttentionHead(in_dim, cfg.dim, cfg.heads, cfg.layers, cfg.mlp_ratio)


def fit_threshold(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Threshold ``t`` maximising the accuracy of ``score >= t``; returns ``(t, accuracy)``.

    Candidates are midpoints between consecutive distinct sorted scores (plus both ends).
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    if len(s) == 0:
        raise ValueError("no scores to fit a threshold on")
    u = np.unique(s)
    cands = np.concatenate([[u[0] - 1e-6], (u[:-1] + u[1:]) / 2.0, [u[-1] + 1e-6]])
    pos_sorted = np.sort(s[y])
    neg_sorted = np.sort(s[~y])
    tp = len(pos_sorted) - np.searchsorted(pos_sorted, cands, side="left")
    tn = np.searchsorted(neg_sorted, cands, side="left")
    acc = (tp + tn) / len(s)
    best = int(np.argmax(acc))
    return float(cands[best]), float(acc[best])


# --------------------------------------------------------------------------- features & verifier


@dataclass(frozen=True, eq=False)
class PairFeatures:
    """Frozen-backbone tokens of a ``TrackingPairs``: ``memory`` (M, T, C) per pool crop, ``query`` (N, T, C)."""

    memory: torch.Tensor
    query: torch.Tensor


def classification_metrics(pred: np.ndarray, labels: np.ndarray, kinds: np.ndarray) -> dict[str, Any]:
    """Accuracy, precision, recall, F1 and per-kind accuracy of binary predictions."""
    pred = np.asarray(pred).astype(bool)
    y = np.asarray(labels).astype(bool)
    tp = int(np.sum(pred & y))
    fp = int(np.sum(pred & ~y))
    fn = int(np.sum(~pred & y))
    n = len(y)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    per_kind = {k: float(np.mean(pred[kinds == k] == y[kinds == k])) for k in KINDS if np.any(kinds == k)}
    return {
        "n": n,
        "n_positive": int(y.sum()),
        "accuracy": float(np.mean(pred == y)) if n else float("nan"),
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "per_kind_accuracy": per_kind,
    }


class TrackingVerifier(nn.Module):
    """Frozen backbone + TOM head: ``verify(query_crop, memory_features) -> P(tracking still valid)``."""

    def __init__(self, backbone: FeatureExtractor, cfg: TOMConfig | None = None, *, seed: int = 0):
        super().__init__()
        self.cfg = cfg or TOMConfig()
        self.seed = int(seed)
        self.backbone = backbone
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        self.backbone.eval()
        self.in_dim = int(backbone.embed_dim)
        with seeded(derive_seed(self.seed, "tom-head")):
            self.head = build_head(self.cfg, self.in_dim)

    def train(self, mode: bool = True) -> TrackingVerifier:
        super().train(mode)
        self.backbone.eval()
        return self

    @property
    def device(self) -> torch.device:
        for t in itertools.chain(self.head.parameters(), self.head.buffers()):
            return t.device
        return torch.device("cpu")

    # -- features
    @torch.no_grad()
    def encode(self, crops: np.ndarray, *, progress: bool = False) -> torch.Tensor:
        """Patch tokens (N, T, C) of uint8 crops (N, S, S, 3) (or one (S, S, 3)), batched, no grad; a
        read-only memmap is read ``encode_batch`` crops at a time."""
        crops = np.asarray(crops, dtype=np.uint8)
        if crops.ndim == 3:
            crops = crops[None]
        size = self.cfg.crop_size
        out: list[torch.Tensor] = []
        bs = self.cfg.encode_batch
        for s in tqdm(range(0, len(crops), bs), desc="TOM features", disable=not progress or len(crops) <= bs):
            chunk = crops[s : s + bs]
            x = self.backbone.preprocess(chunk if chunk.flags.writeable else np.array(chunk), size=(size, size))
            out.append(self.backbone(x).patch_tokens.float())
        if not out:
            raise ValueError("no crops to encode")
        return torch.cat(out)

    def encode_pairs(self, pairs: TrackingPairs, *, progress: bool = False) -> PairFeatures:
        """Backbone tokens of the memory pool and of the query crops (computed once; the backbone is frozen)."""
        self._check_size(pairs)
        return PairFeatures(memory=self.encode(pairs.memory_pool, progress=progress),
                            query=self.encode(pairs.query_crops, progress=progress))

    @torch.no_grad()
    def encode_rows(self, pairs: TrackingPairs, rows: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens ``(memory, query)`` of the pairs at ``rows``, encoded now (the streamed path); a memory
        crop shared by several rows is encoded once."""
        rows = np.asarray(rows, dtype=np.int64)
        slots, inverse = np.unique(pairs.memory_index[rows], return_inverse=True)
        memory = self.encode(pairs.memory_pool[slots])
        return memory[torch.as_tensor(inverse.reshape(-1), device=memory.device)], self.encode(pairs.query_crops[rows])

    def token_shape(self) -> tuple[int, int]:
        """(tokens, channels) the backbone gives for one ``crop_size`` crop."""
        size = self.cfg.crop_size
        tokens = self.encode(np.zeros((1, size, size, 3), dtype=np.uint8))
        return int(tokens.shape[1]), int(tokens.shape[2])

    def feature_bytes(self, *pairs: TrackingPairs | None) -> int:
        """Bytes of the float32 tokens ``encode_pairs`` would hold for all ``pairs`` (memory pool + queries)."""
        tokens, channels = self.token_shape()
        crops = sum(len(p.memory_pool) + len(p) for p in pairs if p is not None)
        return crops * tokens * channels * 4

    def should_precompute(self, *pairs: TrackingPairs | None) -> bool:
        """Whether the tokens of all ``pairs`` fit in ``feature_memory_gb`` (precompute them once); otherwise
        they are streamed, encoded per mini-batch. Logs the choice."""
        est = self.feature_bytes(*pairs)
        fits = est <= self.cfg.feature_memory_gb * GB
        log.info("TOM features: %s (estimated %.3g GB %s budget feature_memory_gb=%.3g GB)",
                 "precomputed" if fits else "streamed per batch", est / GB, "<=" if fits else ">",
                 self.cfg.feature_memory_gb)
        return fits

    def _check_size(self, pairs: TrackingPairs) -> None:
        if pairs.crop_size != self.cfg.crop_size:
            raise ValueError(f"pairs have {pairs.crop_size}px crops, TOM config crop_size is {self.cfg.crop_size}")

    def logits(self, memory: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        """Head logits (B,) for token batches ``memory`` (B, T, C) and ``query`` (B, T', C)."""
        return self.head(memory, query)

    @torch.no_grad()
    def pair_logits(self, features: PairFeatures, memory_index: np.ndarray, batch: int = 256) -> torch.Tensor:
        self.head.eval()
        idx = torch.as_tensor(np.asarray(memory_index), dtype=torch.long)
        out = [self.logits(features.memory[idx[s : s + batch]], features.query[s : s + batch])
               for s in range(0, len(idx), batch)]
        return torch.cat(out) if out else torch.zeros(0)

    @torch.no_grad()
    def _streamed(self, pairs: TrackingPairs, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                  progress: bool = False) -> torch.Tensor:
        """``fn(memory_tokens, query_tokens)`` over all pairs, encoding ``cfg.encode_batch`` pairs at a time."""
        self._check_size(pairs)
        bs = self.cfg.encode_batch
        out = [fn(*self.encode_rows(pairs, np.arange(s, min(s + bs, len(pairs)))))
               for s in tqdm(range(0, len(pairs), bs), desc="TOM streamed", disable=not progress)]
        return torch.cat(out) if out else torch.zeros(0)

    @torch.no_grad()
    def streamed_logits(self, pairs: TrackingPairs, *, progress: bool = False) -> torch.Tensor:
        """``pair_logits`` of all pairs without precomputed features: each batch's crops are encoded now."""
        self.head.eval()
        return self._streamed(pairs, self.logits, progress)

    # -- training
    def fit(self, train_pairs: TrackingPairs, val_pairs: TrackingPairs | None = None, logger: Any = None,
            progress: bool = True, *, train_features: PairFeatures | None = None,
            val_features: PairFeatures | None = None, stream: bool | None = None) -> dict[str, Any]:
        """Train the head (BCEWithLogits, Adam, ``batch_size``, ``epochs``) on frozen-backbone features.

        Features are the given ones, else precomputed for all crops, else (``stream=True``, or by default
        when ``should_precompute`` says they exceed ``feature_memory_gb``) encoded per mini-batch: same
        batches and seeds either way. The cosine variant fits its threshold on the training pairs instead.
        Returns losses, timings, ``features`` (``precomputed`` or ``streamed``) and, with ``val_pairs``,
        validation metrics per epoch.
        """
        t0 = time.perf_counter()
        if train_features is not None:
            stream = False
        elif stream is None:
            stream = not self.should_precompute(train_pairs, val_pairs)
        tf = vf = None
        if stream:
            self._check_size(train_pairs)
        else:
            tf = train_features or self.encode_pairs(train_pairs, progress=progress)
        if val_pairs is not None:
            vf = val_features or (None if stream else self.encode_pairs(val_pairs, progress=progress))
        t_feat = time.perf_counter() - t0
        labels = torch.as_tensor(train_pairs.labels.astype(np.float32))
        mem_idx = torch.as_tensor(train_pairs.memory_index, dtype=torch.long)

        def batch_tokens(b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            if tf is None:
                return self.encode_rows(train_pairs, b.numpy())
            return tf.memory[mem_idx[b]], tf.query[b]

        val_logits: Callable[[], torch.Tensor] | None = None
        if val_pairs is not None:
            val_logits = ((lambda: self.streamed_logits(val_pairs)) if vf is None
                          else (lambda: self.pair_logits(vf, val_pairs.memory_index)))
        history: list[dict[str, float]] = []
        t1 = time.perf_counter()
        if isinstance(self.head, CosineHead):
            if tf is None:
                sims = self._streamed(train_pairs, self.head.similarity, progress)
            else:
                with torch.no_grad():
                    sims = torch.cat([self.head.similarity(tf.memory[mem_idx[s : s + 512]], tf.query[s : s + 512])
                                      for s in range(0, len(labels), 512)])
            thr, acc = fit_threshold(sims.cpu().numpy(), train_pairs.labels)
            self.head.cos_threshold.fill_(thr)
            history.append({"epoch": 1, "train_accuracy": acc, "cos_threshold": thr})
            steps = 0
        else:
            steps = self._train_loop(batch_tokens, labels, val_logits, val_pairs, logger, progress, history)
        out: dict[str, Any] = {
            "variant": self.cfg.variant,
            "layers": self.cfg.layers,
            "steps": steps,
            "features": "streamed" if tf is None else "precomputed",
            "feature_seconds": t_feat,
            "train_seconds": time.perf_counter() - t1,
            "history": history,
        }
        if isinstance(self.head, CosineHead):
            out["cos_threshold"] = float(self.head.cos_threshold)
        if history and "loss" in history[-1]:
            out["final_loss"] = history[-1]["loss"]
        return out

    def _train_loop(self, batch_tokens: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
                    labels: torch.Tensor, val_logits: Callable[[], torch.Tensor] | None,
                    val_pairs: TrackingPairs | None, logger: Any, progress: bool,
                    history: list[dict[str, float]]) -> int:
        cfg = self.cfg
        opt = torch.optim.Adam(self.head.parameters(), lr=cfg.lr)
        n = len(labels)
        steps = 0
        bar = tqdm(total=cfg.epochs * math.ceil(n / cfg.batch_size), desc=f"TOM {cfg.variant}{cfg.layers}",
                   disable=not progress)
        for epoch in range(cfg.epochs):
            self.head.train()
            gen = torch.Generator().manual_seed(derive_seed(self.seed, "tom-epoch", epoch))
            perm = torch.randperm(n, generator=gen)
            total, count = 0.0, 0
            for s in range(0, n, cfg.batch_size):
                b = perm[s : s + cfg.batch_size]
                loss = tom_loss(self.logits(*batch_tokens(b)), labels[b])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                steps += 1
                total += float(loss.detach()) * len(b)
                count += len(b)
                bar.update(1)
            rec: dict[str, float] = {"epoch": epoch + 1, "loss": total / max(count, 1)}
            if val_logits is not None and val_pairs is not None:
                pred = torch.sigmoid(val_logits()).cpu().numpy() >= cfg.threshold
                rec["val_accuracy"] = float(np.mean(pred == val_pairs.labels.astype(bool)))
            history.append(rec)
            bar.set_postfix({k: round(v, 4) for k, v in rec.items() if k != "epoch"})
            if logger is not None:
                logger.log_metrics({f"tom/{k}": v for k, v in rec.items() if k != "epoch"}, step=epoch + 1)
        bar.close()
        self.head.eval()
        return steps

    # -- evaluation & inference
    @torch.no_grad()
    def predict_proba(self, pairs: TrackingPairs, features: PairFeatures | None = None, *,
                      stream: bool | None = None) -> np.ndarray:
        """P(tracking valid) of every pair: from ``features``, else from tokens precomputed for all pairs, else
        (``stream=True``, or by default when they exceed ``feature_memory_gb``) streamed per batch."""
        if features is None:
            if stream is None:
                stream = not self.should_precompute(pairs)
            if stream:
                return torch.sigmoid(self.streamed_logits(pairs)).cpu().numpy()
            features = self.encode_pairs(pairs)
        return torch.sigmoid(self.pair_logits(features, pairs.memory_index)).numpy()

    @torch.no_grad()
    def verify(self, query_crop: np.ndarray, memory_features: Sequence[torch.Tensor] | torch.Tensor) -> float:
        """Probability that tracking is still valid: max over the memory pool (features from ``encode``)."""
        self.head.eval()
        if isinstance(memory_features, torch.Tensor):
            mem = memory_features if memory_features.ndim == 3 else memory_features[None]
        else:
            if len(memory_features) == 0:
                raise ValueError("empty memory pool")
            mem = torch.stack([m if m.ndim == 2 else m[0] for m in memory_features])
        q = self.encode(query_crop)
        logits = self.logits(mem.to(q.device), q.expand(mem.shape[0], -1, -1))
        return float(torch.sigmoid(logits.max()))

    def time_verify(self, query_crop: np.ndarray, memory_crop: np.ndarray) -> float:
        """Mean seconds of ``verify`` against one cached memory crop (``timing_calls`` after warm-up)."""
        mem = [self.encode(memory_crop)[0]]
        for _ in range(self.cfg.timing_warmup):
            self.verify(query_crop, mem)
        t0 = time.perf_counter()
        for _ in range(self.cfg.timing_calls):
            self.verify(query_crop, mem)
        return (time.perf_counter() - t0) / self.cfg.timing_calls

    def evaluate(self, pairs: TrackingPairs, features: PairFeatures | None = None, *,
                 stream: bool | None = None) -> dict[str, Any]:
        """Accuracy, precision, recall, F1, per-kind accuracy at ``threshold`` (features as ``predict_proba``);
        seconds/ms per verified frame."""
        proba = self.predict_proba(pairs, features, stream=stream)
        out = classification_metrics(proba >= self.cfg.threshold, pairs.labels, pairs.kinds)
        spf = self.time_verify(pairs.query_crops[0], pairs.memory_pool[pairs.memory_index[0]])
        out["seconds_per_frame"] = spf
        out["ms_per_frame"] = spf * 1000.0
        return out

    # -- persistence
    def save(self, directory: str | Path) -> Path:
        """Head weights (safetensors) and config (JSON) into ``directory``; the backbone is not saved."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        write_safetensors({k: v for k, v in self.head.state_dict().items()}, d / WEIGHTS_FILE)
        atomic_write_json(d / CONFIG_FILE, {"config": self.cfg.to_dict(), "in_dim": self.in_dim,
                                             "seed": self.seed, "backbone": type(self.backbone).__name__})
        return d

    @classmethod
    def load(cls, directory: str | Path, backbone: FeatureExtractor,
             expected: TOMConfig | None = None) -> TrackingVerifier:
        """Rebuild a saved verifier on ``backbone``. ``ValueError`` if the backbone width or (with
        ``expected``) an architecture field differs from the saved config; strict weight check."""
        d = Path(directory)
        meta = read_json(d / CONFIG_FILE)
        cfg = TOMConfig.from_mapping(meta["config"])
        if int(meta["in_dim"]) != int(backbone.embed_dim):
            raise ValueError(f"TOM head in {d} was trained on {meta['in_dim']}-dim features, the backbone gives "
                             f"{backbone.embed_dim}")
        if expected is not None:
            diff = [f"{f}: saved {getattr(cfg, f)!r} vs expected {getattr(expected, f)!r}"
                    for f in ARCH_FIELDS if getattr(cfg, f) != getattr(expected, f)]
            if diff:
                raise ValueError(f"TOM head in {d} does not match the expected config: {'; '.join(diff)}")
        model = cls(backbone, cfg, seed=int(meta.get("seed", 0)))
        load_checked(model.head, read_safetensors(d / WEIGHTS_FILE), f"TOM head {d}")
        model.head.eval()
        return model


# --------------------------------------------------------------------------- Table 5


def variant_config(base: TOMConfig, name: str) -> TOMConfig:
    """``cosine``, ``no_attention`` or ``attention<k>`` (k layers) applied to ``base``."""
    if name in ("cosine", "no_attention"):
        return dataclasses.replace(base, variant=name)
    if name.startswith("attention"):
        layers = int(name[len("attention"):] or base.layers)
        return dataclasses.replace(base, variant="attention", layers=layers)
    raise ValueError(f"unknown TOM variant name {name!r}: cosine, no_attention or attention<k>")


def train_tom_variants(backbone: FeatureExtractor, train_pairs: TrackingPairs, val_pairs: TrackingPairs,
                       base_cfg: TOMConfig, variants: Sequence[str] = ("cosine", "no_attention", "attention1",
                                                                     "attention2"),
                       seed: int = 0, *, test_pairs: TrackingPairs | None = None, logger: Any = None,
                       progress: bool = True) -> dict[str, dict[str, Any]]:
    """Train every variant on the same features (Table 5): precomputed once and shared when all the pairs'
    tokens fit in ``feature_memory_gb``, else streamed per batch by each variant. Per variant its
    ``evaluate`` dict on ``val_pairs``, the ``fit`` statistics (``train_seconds``, ``final_loss``,
    ``feature_seconds`` = the shared backbone pass over all crops, 0 when streamed...) under ``fit`` and,
    with ``test_pairs``, their ``evaluate`` dict under ``test``."""
    t0 = time.perf_counter()
    first = TrackingVerifier(backbone, variant_config(base_cfg, variants[0]), seed=seed)
    stream = not first.should_precompute(train_pairs, val_pairs, test_pairs)
    tf = vf = sf = None
    if not stream:
        tf = first.encode_pairs(train_pairs, progress=progress)
        vf = first.encode_pairs(val_pairs, progress=progress)
        sf = first.encode_pairs(test_pairs, progress=progress) if test_pairs is not None else None
    t_feat = time.perf_counter() - t0
    results: dict[str, dict[str, Any]] = {}
    for name in variants:
        model = TrackingVerifier(backbone, variant_config(base_cfg, name), seed=seed)
        fit = model.fit(train_pairs, None, logger=logger, progress=progress, train_features=tf, stream=stream)
        fit["feature_seconds"] = t_feat
        res = model.evaluate(val_pairs, vf, stream=stream)
        res["fit"] = fit
        if test_pairs is not None:
            res["test"] = model.evaluate(test_pairs, sf, stream=stream)
        results[name] = res
        log.info("TOM %s: accuracy %.4f, %.2f ms/frame, trained in %.1f s", name, res["accuracy"],
                 res["ms_per_frame"], fit["train_seconds"])
    return results
