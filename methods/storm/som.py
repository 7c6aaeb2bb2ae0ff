"""STORM's Segmenting Object Module (SOM): HSFA mask prediction from a query image, reference views and text.

Paper section 3 ("Feature Matching by Spatial Fusion", Eq. 1, "Loss Optimization" Eq. 3-4), Algorithm 1
(appendix A) and appendices C-E.

``SOM`` (the network): a shared image backbone embeds the query image and every reference view; a linear
projection maps both to the HSFA width. HSFA (``HSFA``) runs Algorithm 1 for ``n`` layers: query
self-attention; query -> reference cross-attention (layer 1 attends to the raw projected reference
embeddings, later layers to the refined ones); AdaNorm-Zero text injection (Eq. 1, statistics over the
N query tokens) on the query stream; per-reference self-attention (each view on its own); joint
self-attention over the concatenated references. Attention blocks are pre-norm residual
``TransformerLayer``s (self-attention + cross-attention + MLP for lines 2/4, self-attention + MLP for
lines 11/16). The last layer's reference refinement (lines 8-16 at j = n) cannot influence the output
and is not built. An upsampling convolutional block maps the query token grid to mask logits at the
query input resolution. ``hsfa_layers=0`` ("HSFA0: only simple attention, convolution and linear
layers") is read as one plain cross-attention from the query to the raw references (no
self-attention, no hierarchy, no text) followed by the same head.

``SegmentingObjectModule`` (the runner): ``fit`` on a BOP split with GT visible masks (positives only,
as the paper; references rendered from the object model from 16 Fibonacci-sphere viewpoints, text =
the model description), ``prepare(ReferenceSet)`` per object, ``segment(rgb, obj_id)``, ``save``/``load``
(safetensors + JSON config). ``CosineMatchSegmenter`` is the training-free feature-matching baseline.

Assumptions (the paper does not state them): batch size 8; SGD momentum 0.9 (the brief's choice; the
paper says "SGD, no weight decay"); query size 420x560 (30x40 DINOv2 patches, the 4:3 aspect of BOP
images); reference crops 224 px; HSFA width 256, 8 heads; loss sums over the batch in Eq. 3 are taken
as means (a constant rescaling); the focal term of Eq. 3 has no alpha weighting (as written).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from methods.common.augment import ResizeCenterCrop, make_sample, storm_som_augmentation
from methods.common.backbones import IMAGENET_MEAN, IMAGENET_STD, FeatureExtractor, create_feature_extractor
from methods.common.blocks import AdaNormZero, TransformerLayer
from methods.common.checkpoint import CheckpointError, load_checked, read_safetensors, write_safetensors
from methods.common.losses import dice_loss, sigmoid_focal_loss, soft_iou_loss, tversky_loss
from methods.common.rng import seeded
from methods.common.text import TextEncoder, create_text_encoder
from methods.common.training import Callback, MetricsLogger, TrainConfig, Trainer, derive_seed, make_dataloader
from methods.storm.references import ReferenceSet, render_references
from repro.fileio import atomic_write_json, read_json

log = logging.getLogger(__name__)

LossName = Literal["paper", "appendix"]
CONFIG_FILE = "som_config.json"
WEIGHTS_FILE = "som.safetensors"


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class SOMConfig:
    """SOM hyperparameters; defaults are the paper's (section 3, appendices C-D) or documented assumptions.

    The ``cpu`` preset (``SOMConfig.cpu()``) changes: backbone ``convnet_small_scratch`` (widths
    16/32/64, stride 8, 64-d, trained jointly: ``freeze_backbone=False``), text ``hashed_bow`` (trained
    jointly), HSFA width 64 / 4 heads / MLP ratio 2, query 96x128, references 32 px (16 views), batch 8,
    1200 steps with 100 warm-up steps (the paper's 5k/80k warm-up/cosine schedule scaled to a 2-3 minute
    CPU budget: about 15 steps/s at batch 4 on 2 idle cores), AdamW lr 2e-3 and gradient clip 1.0:
    with the paper's SGD (lr 0.01-0.02, momentum 0.9) a from-scratch network barely moves in a few
    hundred steps (measured: loss 1.02 -> 0.96 in 300 steps, test mIoU 0.06). ``smoke`` shrinks everything
    further for tests.
    """

    backbone: str = "dinov2_vits14_reg"
    backbone_weights: str | None = None
    backbone_overrides: tuple[tuple[str, Any], ...] = ()
    freeze_backbone: bool = True
    text_encoder: str = "clip_vit_b32"
    text_weights: str | None = None
    text_overrides: tuple[tuple[str, Any], ...] = ()
    language: bool = True
    hsfa_layers: int = 3
    dim: int = 256
    heads: int = 8
    mlp_ratio: float = 4.0
    head_channels: int = 64
    n_refs: int = 16
    query_size: tuple[int, int] = (420, 560)
    ref_size: int = 224
    ref_background: tuple[float, float, float] = (0.0, 0.0, 0.0)
    loss: LossName = "paper"
    tversky_alpha: float = 0.3
    tversky_beta: float = 0.7
    focal_gamma: float = 2.0
    lambda_tversky: float = 1.0
    lambda_focal: float = 0.2
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0
    warmup_steps: int = 5000
    max_steps: int = 80000
    grad_clip: float | None = 0.1
    batch_size: int = 8
    augment: bool = True
    mask_threshold: float = 0.5
    cosine_threshold: float = 0.5
    min_visib_fract: float = 0.1
    min_mask_pixels: int = 16
    negative_fraction: float = 0.0
    log_every: int = 50

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "query_size", (int(self.query_size[0]), int(self.query_size[1])))
        set_(self, "ref_background", tuple(float(c) for c in self.ref_background))
        for name in ("backbone_overrides", "text_overrides"):
            val = getattr(self, name)
            items = val.items() if isinstance(val, Mapping) else val
            set_(self, name, tuple(sorted((str(k), _freeze(v)) for k, v in items)))
        if self.loss not in ("paper", "appendix"):
            raise ValueError(f"loss must be 'paper' or 'appendix', got {self.loss!r}")
        if self.hsfa_layers < 0:
            raise ValueError(f"hsfa_layers must be >= 0, got {self.hsfa_layers}")
        if self.dim % self.heads:
            raise ValueError(f"dim {self.dim} is not divisible by heads {self.heads}")
        if self.n_refs < 1 or self.batch_size < 1 or self.max_steps < 1:
            raise ValueError("n_refs, batch_size and max_steps must be >= 1")
        if not 0.0 <= self.negative_fraction < 1.0:
            raise ValueError(f"negative_fraction must be in [0, 1), got {self.negative_fraction}")
        if not 0.0 < self.mask_threshold < 1.0:
            raise ValueError(f"mask_threshold must be in (0, 1), got {self.mask_threshold}")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> SOMConfig:
        """Build from a mapping; an unknown key raises ``ValueError`` naming it."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown SOMConfig key(s): {unknown}; known: {sorted(names)}")
        d = dict(data)
        for k in ("query_size", "ref_background"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["backbone_overrides"] = [list(kv) for kv in self.backbone_overrides]
        d["text_overrides"] = [list(kv) for kv in self.text_overrides]
        return json.loads(json.dumps(d))

    def replace(self, **changes: Any) -> SOMConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def preset(cls, name: str, **changes: Any) -> SOMConfig:
        """``paper``, ``cpu`` or ``smoke`` with ``changes`` applied."""
        makers = {"paper": cls.paper, "cpu": cls.cpu, "smoke": cls.smoke}
        if name not in makers:
            raise ValueError(f"unknown SOM preset {name!r}; choose from {sorted(makers)}")
        return makers[name](**changes)

    @classmethod
    def paper(cls, **changes: Any) -> SOMConfig:
        return cls(**changes)

    @classmethod
    def cpu(cls, **changes: Any) -> SOMConfig:
        """Offline CPU preset (see the class docstring for what differs from the paper)."""
        base = {
            "backbone": "convnet_small_scratch",
            "backbone_overrides": (("depth_per_stage", 1), ("embed_dim", 64), ("widths", (16, 32, 64))),
            "freeze_backbone": False,
            "text_encoder": "hashed_bow",
            "text_overrides": (("embed_dim", 64), ("num_buckets", 4096)),
            "dim": 64,
            "heads": 4,
            "mlp_ratio": 2.0,
            "head_channels": 16,
            "query_size": (96, 128),
            "ref_size": 32,
            "optimizer": "adamw",
            "lr": 2e-3,
            "warmup_steps": 100,
            "max_steps": 1200,
            "grad_clip": 1.0,
            "batch_size": 8,
            "log_every": 25,
        }
        return cls(**{**base, **changes})

    @classmethod
    def smoke(cls, **changes: Any) -> SOMConfig:
        """Tiny preset for tests (seconds)."""
        base = {
            "backbone": "convnet_small_scratch",
            "backbone_overrides": (("embed_dim", 32), ("widths", (8, 16, 32)), ("depth_per_stage", 1)),
            "freeze_backbone": False,
            "text_encoder": "hashed_bow",
            "text_overrides": (("num_buckets", 512), ("embed_dim", 16)),
            "hsfa_layers": 1,
            "dim": 32,
            "heads": 2,
            "mlp_ratio": 2.0,
            "head_channels": 16,
            "n_refs": 4,
            "query_size": (48, 64),
            "ref_size": 32,
            "lr": 0.05,
            "warmup_steps": 0,
            "max_steps": 20,
            "grad_clip": 1.0,
            "batch_size": 2,
            "log_every": 5,
        }
        return cls(**{**base, **changes})

    def train_config(self, seed: int) -> TrainConfig:
        return TrainConfig(
            optimizer=self.optimizer,
            lr=self.lr,
            momentum=self.momentum if self.optimizer == "sgd" else 0.0,
            weight_decay=self.weight_decay,
            batch_size=self.batch_size,
            max_steps=self.max_steps,
            warmup_steps=min(self.warmup_steps, self.max_steps),
            schedule="cosine",
            grad_clip_norm=self.grad_clip,
            log_every=self.log_every,
            seed=seed,
        )


def _freeze(v: Any) -> Any:
    if isinstance(v, list | tuple):
        return tuple(_freeze(x) for x in v)
    return v


PRESETS: Mapping[str, SOMConfig] = {"paper": SOMConfig(), "cpu": SOMConfig.cpu(), "smoke": SOMConfig.smoke()}


# --------------------------------------------------------------------------- losses


def som_loss(logits: torch.Tensor, target: torch.Tensor, cfg: SOMConfig) -> dict[str, torch.Tensor]:
    """The SOM training loss on mask logits and binary targets (B, 1, H, W); returns ``loss`` and its terms.

    ``paper`` (Eq. 3-4): ``lambda_T * Tversky(alpha FN, beta FP) + lambda_f * focal(gamma)`` (no alpha in
    the focal term), Tversky per sample then averaged, focal averaged over pixels. ``appendix``
    (appendix D): ``20 focal(alpha=0.25, gamma=2) + dice + IoU + 0.2 Tversky(0.5, 0.5)``.
    """
    t = target.to(logits.dtype)
    if cfg.loss == "paper":
        tv = tversky_loss(logits, t, alpha=cfg.tversky_alpha, beta=cfg.tversky_beta)
        fo = sigmoid_focal_loss(logits, t, alpha=None, gamma=cfg.focal_gamma)
        return {"loss": cfg.lambda_tversky * tv + cfg.lambda_focal * fo, "tversky": tv, "focal": fo}
    fo = sigmoid_focal_loss(logits, t, alpha=0.25, gamma=2.0)
    di = dice_loss(logits, t)
    iou = soft_iou_loss(logits, t)
    tv = tversky_loss(logits, t, alpha=0.5, beta=0.5)
    return {"loss": 20.0 * fo + di + iou + 0.2 * tv, "focal": fo, "dice": di, "iou": iou, "tversky": tv}


# --------------------------------------------------------------------------- network


def sincos_pos_embed_2d(h: int, w: int, dim: int) -> torch.Tensor:
    """Fixed 2D sine-cosine position embeddings (h w, dim) (MAE style; dim a multiple of 4)."""
    if dim % 4:
        raise ValueError(f"dim must be a multiple of 4 for 2D sin-cos embeddings, got {dim}")
    q = dim // 4
    omega = 1.0 / (10000 ** (torch.arange(q, dtype=torch.float32) / q))
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    oy = ys.reshape(-1, 1) * omega
    ox = xs.reshape(-1, 1) * omega
    return torch.cat([ox.sin(), ox.cos(), oy.sin(), oy.cos()], dim=1)


class HSFALayer(nn.Module):
    """One iteration of Algorithm 1 (lines 2-16); ``refine_refs=False`` drops lines 8-16."""

    def __init__(self, dim: int, heads: int, text_dim: int | None, mlp_ratio: float, refine_refs: bool):
        super().__init__()
        self.query_block = TransformerLayer(dim, heads, mlp_ratio=mlp_ratio, self_attention=True, cross_attention=True)
        self.text_norm = AdaNormZero(dim, text_dim or 1, stats="tokens")
        self.use_text = text_dim is not None
        self.ref_self: TransformerLayer | None = None
        self.ref_joint: TransformerLayer | None = None
        if refine_refs:
            self.ref_self = TransformerLayer(dim, heads, mlp_ratio=mlp_ratio)
            self.ref_joint = TransformerLayer(dim, heads, mlp_ratio=mlp_ratio)

    def forward(
        self, q: torch.Tensor, refs: torch.Tensor, text: torch.Tensor | None, pos: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``q`` (B, N, D), ``refs`` (B, V, T, D), ``text`` (B, Dt) or None -> updated ``(q, refs)``."""
        b, v, t, d = refs.shape
        q = self.query_block(q, refs.reshape(b, v * t, d), pos=pos)
        q = self.text_norm(q, text if self.use_text else None)
        if self.ref_self is not None and self.ref_joint is not None:
            r = self.ref_self(refs.reshape(b * v, t, d))
            refs = self.ref_joint(r.reshape(b, v * t, d)).reshape(b, v, t, d)
        return q, refs


class HSFA(nn.Module):
    """Hierarchical Spatial Fusion Attention (Algorithm 1) on projected query/reference tokens.

    ``n_layers=0``: a single cross-attention layer from the query to the raw references (HSFA0).
    """

    def __init__(self, dim: int, heads: int, n_layers: int, text_dim: int | None, mlp_ratio: float = 4.0):
        super().__init__()
        self.n_layers = n_layers
        if n_layers == 0:
            self.plain = TransformerLayer(dim, heads, mlp_ratio=mlp_ratio, self_attention=False, cross_attention=True)
            self.layers = nn.ModuleList()
        else:
            self.plain = None
            self.layers = nn.ModuleList(
                HSFALayer(dim, heads, text_dim, mlp_ratio, refine_refs=j < n_layers - 1) for j in range(n_layers)
            )
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(
        self, q: torch.Tensor, refs: torch.Tensor, text: torch.Tensor | None = None, pos: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``q`` (B, N, D) query tokens, ``refs`` (B, V, T, D) raw reference tokens -> fused query (B, N, D)."""
        if self.plain is not None:
            b, v, t, d = refs.shape
            return self.norm(self.plain(q, refs.reshape(b, v * t, d), pos=pos))
        for layer in self.layers:
            q, refs = layer(q, refs, text, pos)
        return self.norm(q)


class UpsampleHead(nn.Module):
    """Upsampling convolutional block: tokens (B, N, D) on an (h, w) grid -> logits (B, 1, H, W).

    ``ceil(log2(stride))`` stages of [x2 bilinear upsampling, conv3x3-GN-GELU], then a 1x1 conv and a
    bilinear resize to the exact input size.
    """

    def __init__(self, dim: int, channels: int, stride: int):
        super().__init__()
        n_up = max(0, math.ceil(math.log2(max(stride, 1))))
        layers: list[nn.Module] = [nn.Conv2d(dim, channels, 3, padding=1), nn.GroupNorm(_groups(channels), channels)]
        layers.append(nn.GELU())
        c = channels
        for _ in range(n_up):
            c_out = max(8, c // 2)
            layers += [
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                nn.Conv2d(c, c_out, 3, padding=1),
                nn.GroupNorm(_groups(c_out), c_out),
                nn.GELU(),
            ]
            c = c_out
        self.body = nn.Sequential(*layers)
        self.out = nn.Conv2d(c, 1, 1)

    def forward(self, tokens: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
        b, _n, d = tokens.shape
        x = tokens.transpose(1, 2).reshape(b, d, grid[0], grid[1])
        x = self.out(self.body(x))
        if tuple(x.shape[-2:]) != tuple(size):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return x


def _groups(c: int) -> int:
    return math.gcd(c, 8)


@dataclass
class ReferenceTokens:
    """Backbone tokens of an object's reference views, (1, V, T, C), cached per object at inference."""

    tokens: torch.Tensor
    grid: tuple[int, int]


class SOM(nn.Module):
    """The SOM network: backbone -> projection -> HSFA -> upsampling head.

    ``forward(query (B, 3, H, W) normalised, refs (B, V, 3, S, S) normalised, text (B, Dt) or None)``
    -> mask logits (B, 1, H, W). ``text_dim=None`` builds without language injection.
    """

    def __init__(self, cfg: SOMConfig, backbone: FeatureExtractor, text_dim: int | None):
        super().__init__()
        self.cfg = cfg
        self.backbone = backbone
        self.frozen_backbone = cfg.freeze_backbone
        if self.frozen_backbone:
            for p in self.backbone.parameters():
                p.requires_grad_(False)
            self.backbone.eval()
        c = backbone.embed_dim
        self.proj = nn.Sequential(nn.LayerNorm(c, eps=1e-6), nn.Linear(c, cfg.dim))
        self.hsfa = HSFA(cfg.dim, cfg.heads, cfg.hsfa_layers, text_dim, cfg.mlp_ratio)
        self.head = UpsampleHead(cfg.dim, cfg.head_channels, backbone.patch_size)

    def train(self, mode: bool = True) -> SOM:
        super().train(mode)
        if self.frozen_backbone:
            self.backbone.eval()
        return self

    def _features(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        if self.frozen_backbone:
            with torch.no_grad():
                out = self.backbone(images)
        else:
            out = self.backbone(images)
        return out.patch_tokens, out.grid

    def encode_references(self, refs: torch.Tensor) -> ReferenceTokens:
        """Backbone tokens of reference views (B, V, 3, S, S) -> ``ReferenceTokens`` (B, V, T, C)."""
        b, v = refs.shape[:2]
        tok, grid = self._features(refs.flatten(0, 1))
        return ReferenceTokens(tok.reshape(b, v, tok.shape[1], tok.shape[2]), grid)

    def forward(
        self,
        query: torch.Tensor,
        refs: torch.Tensor | ReferenceTokens,
        text: torch.Tensor | None = None,
    ) -> torch.Tensor:
        rt = refs if isinstance(refs, ReferenceTokens) else self.encode_references(refs)
        ref_tok = rt.tokens
        if ref_tok.shape[0] != query.shape[0]:
            ref_tok = ref_tok.expand(query.shape[0], -1, -1, -1)
        q_tok, grid = self._features(query)
        q = self.proj(q_tok)
        r = self.proj(ref_tok)
        pos = sincos_pos_embed_2d(grid[0], grid[1], self.cfg.dim).to(q).unsqueeze(0)
        fused = self.hsfa(q, r, text if self.cfg.language else None, pos)
        return self.head(fused, grid, (query.shape[-2], query.shape[-1]))


def build_backbone(cfg: SOMConfig, *, load_pretrained: bool = True, seed: int | None = None) -> FeatureExtractor:
    """The configured backbone; ``load_pretrained=False`` skips weight files (a checkpoint will fill it)."""
    weights = cfg.backbone_weights if load_pretrained else None
    return create_feature_extractor(
        cfg.backbone, weights, random_init=not load_pretrained, seed=seed, **dict(cfg.backbone_overrides)
    )


def build_text_encoder(cfg: SOMConfig, *, seed: int | None = None) -> TextEncoder:
    """The configured text encoder (pretrained weights from ``text_weights``; frozen unless ``hashed_bow``)."""
    return create_text_encoder(cfg.text_encoder, cfg.text_weights, seed=seed, **dict(cfg.text_overrides))


# --------------------------------------------------------------------------- data


def normalize_images(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] images (..., 3, H, W) -> ImageNet-normalised."""
    m = torch.tensor(IMAGENET_MEAN, dtype=x.dtype).view(3, 1, 1)
    s = torch.tensor(IMAGENET_STD, dtype=x.dtype).view(3, 1, 1)
    return (x - m) / s


def reference_tensor(ref: ReferenceSet, n_refs: int | None = None) -> torch.Tensor:
    """(V, 3, S, S) normalised reference images (the first ``n_refs`` views)."""
    imgs = ref.images if n_refs is None else ref.images[:n_refs]
    x = torch.from_numpy(np.ascontiguousarray(imgs)).permute(0, 3, 1, 2).float() / 255.0
    return normalize_images(x)


def resize_query(rgb: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """HxWx3 uint8 -> (3, h, w) float [0, 1] resized (area when shrinking) to ``size`` = (h, w)."""
    h, w = size
    interp = cv2.INTER_AREA if rgb.shape[0] > h else cv2.INTER_LINEAR
    img = cv2.resize(np.ascontiguousarray(rgb), (w, h), interpolation=interp)
    return torch.from_numpy(img).permute(2, 0, 1).float() / 255.0


@dataclass
class _Instance:
    image: int
    obj_index: int
    mask: np.ndarray  # packed bits of the (h, w) mask at query size


class SOMTrainingSet(Dataset):
    """Query samples (image, object, GT visible mask) at the query size, with appendix D augmentation.

    Images are resized to cover ``query_size`` and centre-cropped (as ``ResizeCenterCrop``) once at
    construction; augmentation (photometric + flip + affine + erasing) then runs per sample with a
    generator seeded by ``derive_seed(seed, epoch, index)``. Instances with ``visib_fract <
    min_visib_fract`` or fewer than ``min_mask_pixels`` mask pixels (at query size) are skipped. With
    ``negative_fraction > 0`` that share of extra samples pairs an image with an object absent from it
    (empty target); default 0 (the paper trains on positives).
    """

    def __init__(self, frames: Iterable[Any], obj_ids: Sequence[int], cfg: SOMConfig, seed: int):
        self.cfg = cfg
        self.seed = seed
        self.epoch = 0
        self.obj_ids = list(obj_ids)
        index = {o: i for i, o in enumerate(self.obj_ids)}
        crop = ResizeCenterCrop(cfg.query_size)
        gen = torch.Generator().manual_seed(0)
        self.images: list[torch.Tensor] = []
        self.instances: list[_Instance] = []
        present: list[set[int]] = []
        for item in frames:
            frame = item[0] if isinstance(item, tuple) else item
            img = torch.from_numpy(np.ascontiguousarray(frame.rgb)).permute(2, 0, 1).float() / 255.0
            gts = [g for g in (frame.gt or ()) if g.obj_id in index and g.mask_visib is not None]
            masks = [torch.from_numpy(np.asarray(g.mask_visib, dtype=bool)) for g in gts]
            s = crop.apply(make_sample(img, masks), gen)
            k = len(self.images)
            self.images.append((s.image.clamp(0, 1) * 255).round().to(torch.uint8))
            present.append({g.obj_id for g in (frame.gt or ())})
            for g, m in zip(gts, s.masks, strict=True):
                if g.visib_fract < cfg.min_visib_fract or int(m.sum()) < cfg.min_mask_pixels:
                    continue
                self.instances.append(_Instance(k, index[g.obj_id], np.packbits(m.numpy().astype(bool))))
        self.negatives: list[tuple[int, int]] = []
        if cfg.negative_fraction > 0:
            rng = np.random.default_rng(derive_seed(seed, "negatives"))
            n_neg = round(len(self.instances) * cfg.negative_fraction / (1 - cfg.negative_fraction))
            cands = [(k, i) for k, p in enumerate(present) for i, o in enumerate(self.obj_ids) if o not in p]
            if cands and n_neg:
                pick = rng.choice(len(cands), size=min(n_neg, len(cands)), replace=False)
                self.negatives = [cands[j] for j in sorted(pick)]
        self.augment = storm_som_augmentation(None) if cfg.augment else None
        if not self.instances:
            raise ValueError("no usable training instances (visible masks with enough pixels) in the split")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.instances) + len(self.negatives)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        h, w = self.cfg.query_size
        if i < len(self.instances):
            inst = self.instances[i]
            k, obj = inst.image, inst.obj_index
            mask = torch.from_numpy(np.unpackbits(inst.mask, count=h * w).reshape(h, w).astype(bool))
        else:
            k, obj = self.negatives[i - len(self.instances)]
            mask = torch.zeros(h, w, dtype=torch.bool)
        img = self.images[k].float() / 255.0
        if self.augment is not None:
            out = self.augment(img, mask, generator=derive_seed(self.seed, self.epoch, i))
            img, mask = out.image, out.mask  # type: ignore[assignment]
        return {
            "query": normalize_images(img.clamp(0, 1)),
            "mask": mask.unsqueeze(0).float(),  # type: ignore[union-attr]
            "obj": torch.tensor(obj, dtype=torch.long),
        }


class _LossRecorder(Callback):
    """Keeps every step's total loss (for the EMA and the curve)."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_step_end(self, trainer: Trainer, step: int, logs: Mapping[str, float]) -> None:
        self.losses.append(float(logs["loss"]))


def ema(values: Sequence[float], decay: float = 0.98) -> float:
    """Bias-corrected exponential moving average of a sequence (the paper's "EMA loss")."""
    if not values:
        return float("nan")
    m, wsum = 0.0, 0.0
    for v in values:
        m = decay * m + (1 - decay) * v
        wsum = decay * wsum + (1 - decay)
    return m / wsum


def downsample_curve(values: Sequence[float], n: int = 50) -> list[tuple[int, float]]:
    """(step, mean loss) over ``n`` equal windows."""
    if not values:
        return []
    edges = np.linspace(0, len(values), min(n, len(values)) + 1).astype(int)
    return [(int(b), float(np.mean(values[a:b]))) for a, b in itertools.pairwise(edges) if b > a]


# --------------------------------------------------------------------------- runner


@dataclass(frozen=True)
class SegmentResult:
    """``mask`` bool (H, W) at full resolution; ``score`` mean probability inside it (0 if empty);
    ``prob`` float32 (h, w) foreground probability at the model's query resolution."""

    mask: np.ndarray
    score: float
    prob: np.ndarray


def _finish_mask(prob_full: np.ndarray, threshold: float, prob_small: np.ndarray) -> SegmentResult:
    mask = prob_full > threshold
    score = float(prob_full[mask].mean()) if mask.any() else 0.0
    return SegmentResult(mask=mask, score=score, prob=prob_small.astype(np.float32))


@dataclass
class _Prepared:
    refs: torch.Tensor
    text: str
    tokens: ReferenceTokens | None = None
    text_emb: torch.Tensor | None = None


class SegmentingObjectModule:
    """Build, train and run SOM: ``fit`` -> ``prepare(ref)`` per object -> ``segment(rgb, obj_id)``.

    ``load_pretrained=False`` skips the backbone weight file (``load`` fills the network from the
    checkpoint); a pretrained (CLIP) text encoder always loads ``text_weights`` as it is not saved.
    """

    def __init__(self, cfg: SOMConfig | None = None, seed: int = 0, *, load_pretrained: bool = True):
        self.cfg = cfg or SOMConfig()
        self.seed = int(seed)
        backbone = build_backbone(self.cfg, load_pretrained=load_pretrained, seed=derive_seed(seed, "backbone"))
        self.text_encoder = build_text_encoder(self.cfg, seed=derive_seed(seed, "text"))
        if not self.trainable_text:
            self.text_encoder.requires_grad_(False).eval()
        text_dim = self._text_dim() if self.cfg.language else None
        with seeded(derive_seed(seed, "som")):
            self.model = SOM(self.cfg, backbone, text_dim)
        self._prepared: dict[int, _Prepared] = {}
        self.train_summary: dict[str, Any] | None = None

    @property
    def backbone(self) -> FeatureExtractor:
        return self.model.backbone

    @property
    def trainable_text(self) -> bool:
        return self.cfg.text_encoder == "hashed_bow"

    def _text_dim(self) -> int:
        with torch.no_grad():
            return int(self.text_encoder.encode(["object"]).shape[-1])

    def parameters(self) -> list[nn.Parameter]:
        params = [p for p in self.model.parameters() if p.requires_grad]
        if self.cfg.language and self.trainable_text:
            params += list(self.text_encoder.parameters())
        return params

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor | None:
        if not self.cfg.language:
            return None
        if self.trainable_text:
            return self.text_encoder.encode(list(texts))
        with torch.no_grad():
            return self.text_encoder.encode(list(texts))

    # ------------------------------------------------------------------ training

    def fit(
        self,
        dataset: Any,
        logger: MetricsLogger | None = None,
        progress: bool = True,
        *,
        references: Mapping[int, ReferenceSet] | None = None,
        renderer: Any = None,
        checkpoint_dir: str | Path | None = None,
        resume: bool = False,
    ) -> dict[str, Any]:
        """Train on a ``BopDataset`` split with GT visible masks; returns a summary.

        References default to ``render_references`` of each object's model (``n_refs`` Fibonacci-sphere
        views, rendered once per object). Summary: ``final_loss`` (mean of the last log window),
        ``ema_loss`` (EMA of the per-step total loss at the end, Table 7's "training loss"), ``steps``,
        ``seconds``, ``n_samples``, ``loss_curve`` [(step, loss)].
        """
        cfg = self.cfg
        t0 = time.perf_counter()
        objects = dataset.objects()
        obj_ids = sorted(objects)
        refs = dict(references or {})
        own = None
        missing = [o for o in obj_ids if o not in refs]
        if missing and renderer is None:
            from repro.render import get_renderer

            own = renderer = get_renderer("auto")
        try:
            for o in missing:
                refs[o] = render_references(
                    objects[o], n_views=cfg.n_refs, size=cfg.ref_size, renderer=renderer, background=cfg.ref_background
                )
        finally:
            if own is not None:
                own.close()
        frames = dataset.iter_frames(with_gt=True, load_masks=True)
        train_set = SOMTrainingSet(frames, obj_ids, cfg, seed=derive_seed(self.seed, "data"))
        bank = torch.stack([reference_tensor(refs[o], cfg.n_refs) for o in obj_ids])
        texts = [refs[o].description or objects[o].description or objects[o].name for o in obj_ids]
        log.info("SOM fit: %d samples, %d objects, %.1fs setup", len(train_set), len(obj_ids), time.perf_counter() - t0)
        runner = self

        class _Wrapper(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.som = runner.model
                self.text = runner.text_encoder

        wrapper = _Wrapper()

        def loss_fn(model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            obj = batch["obj"]
            text = runner.encode_text([texts[int(i)] for i in obj])
            logits = runner.model(batch["query"], bank[obj], text)
            return som_loss(logits, batch["mask"], cfg)

        tcfg = cfg.train_config(derive_seed(self.seed, "train"))
        loader = make_dataloader(train_set, min(cfg.batch_size, len(train_set)), tcfg.seed)
        rec = _LossRecorder()
        trainer = Trainer(
            wrapper,
            loss_fn,
            loader,
            tcfg.replace(batch_size=loader.batch_size),
            checkpoint_dir=checkpoint_dir,
            tracker=logger,
            callbacks=[rec],
            param_groups=self.parameters(),
            progress=progress,
        )
        result = trainer.fit(resume=resume)
        self.model.eval()
        self._prepared.clear()
        summary = {
            "final_loss": result.final_loss,
            "ema_loss": ema(rec.losses),
            "steps": result.step,
            "seconds": time.perf_counter() - t0,
            "n_samples": len(train_set),
            "loss_curve": downsample_curve(rec.losses),
        }
        self.train_summary = summary
        return summary

    # ------------------------------------------------------------------ inference

    def prepare(self, ref: ReferenceSet) -> None:
        """Cache an object's reference backbone tokens and text embedding."""
        x = reference_tensor(ref, self.cfg.n_refs).unsqueeze(0)
        self.model.eval()
        with torch.no_grad():
            tokens = self.model.encode_references(x)
            text = self.encode_text([ref.description or f"object {ref.obj_id}"])
        self._prepared[ref.obj_id] = _Prepared(x, ref.description, tokens, text)

    def is_prepared(self, obj_id: int) -> bool:
        return int(obj_id) in self._prepared

    def predict_prob(self, rgb: np.ndarray, obj_id: int) -> np.ndarray:
        """Foreground probability (h, w) float32 at the query resolution."""
        if int(obj_id) not in self._prepared:
            raise KeyError(f"object {obj_id} has no references: call prepare(ReferenceSet) first")
        p = self._prepared[int(obj_id)]
        q = normalize_images(resize_query(rgb, self.cfg.query_size)).unsqueeze(0)
        self.model.eval()
        with torch.no_grad():
            logits = self.model(q, p.tokens, p.text_emb)
        return logits[0, 0].sigmoid().numpy().astype(np.float32)

    def segment(self, rgb: np.ndarray, obj_id: int) -> SegmentResult:
        """Mask of ``obj_id`` in an HxWx3 uint8 image (full resolution; may be empty with score 0)."""
        prob = self.predict_prob(rgb, obj_id)
        full = cv2.resize(prob, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_LINEAR)
        return _finish_mask(full, self.cfg.mask_threshold, prob)

    # ------------------------------------------------------------------ persistence

    def state_dict(self) -> dict[str, torch.Tensor]:
        sd = {f"som.{k}": v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        if self.trainable_text:
            sd.update({f"text.{k}": v.detach().cpu().contiguous() for k, v in self.text_encoder.state_dict().items()})
        return sd

    def load_state_dict(self, sd: Mapping[str, torch.Tensor]) -> None:
        som = {k.removeprefix("som."): v for k, v in sd.items() if k.startswith("som.")}
        text = {k.removeprefix("text."): v for k, v in sd.items() if k.startswith("text.")}
        other = sorted(k for k in sd if not k.startswith(("som.", "text.")))
        if other:
            raise CheckpointError(f"SOM checkpoint has unexpected keys: {other[:10]}")
        load_checked(self.model, som, "SOM weights")
        if self.trainable_text:
            load_checked(self.text_encoder, text, "SOM text-encoder weights")
        self._prepared.clear()

    def save(self, folder: str | Path) -> Path:
        """Write ``som.safetensors`` and ``som_config.json`` (config, seed, training summary) atomically."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        write_safetensors(self.state_dict(), folder / WEIGHTS_FILE)
        atomic_write_json(
            folder / CONFIG_FILE, {"config": self.cfg.to_dict(), "seed": self.seed, "train_summary": self.train_summary}
        )
        return folder

    @staticmethod
    def read_checkpoint_config(folder: str | Path) -> tuple[SOMConfig, dict[str, Any]]:
        """The config and metadata saved in ``folder`` (``FileNotFoundError`` names a missing file)."""
        folder = Path(folder)
        for name in (CONFIG_FILE, WEIGHTS_FILE):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"SOM checkpoint file missing: {folder / name}")
        meta = read_json(folder / CONFIG_FILE)
        return SOMConfig.from_mapping(meta["config"]), meta

    def load(self, folder: str | Path) -> None:
        """Load ``save``'s folder into this module; a checkpoint saved with another config raises
        ``CheckpointError`` naming the differing fields."""
        saved, meta = self.read_checkpoint_config(folder)
        a, b = self.cfg.to_dict(), saved.to_dict()
        if a != b:
            diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            raise CheckpointError(f"SOM checkpoint {folder} was saved with a different config (fields {diff})")
        self.load_state_dict(read_safetensors(Path(folder) / WEIGHTS_FILE))
        self.train_summary = meta.get("train_summary")
        self.model.eval()

    @classmethod
    def from_checkpoint(cls, folder: str | Path) -> SegmentingObjectModule:
        """Rebuild a module from ``save``'s folder with its saved config and seed."""
        saved, meta = cls.read_checkpoint_config(folder)
        runner = cls(saved, int(meta.get("seed", 0)), load_pretrained=False)
        runner.load(folder)
        return runner


# --------------------------------------------------------------------------- training-free baseline


@dataclass(frozen=True)
class CosineMatchConfig:
    """``threshold`` on the max cosine similarity; ``min_ref_coverage`` the mask share that makes a
    reference patch foreground."""

    threshold: float = 0.5
    min_ref_coverage: float = 0.5
    query_size: tuple[int, int] = (420, 560)
    ref_size: int = 224
    n_refs: int = 16


class CosineMatchSegmenter:
    """Training-free feature matching (the CNOS-like annotation-free baseline of Table 1, simplified).

    Per query patch: the max cosine similarity to the object's foreground reference-patch features
    (same backbone as SOM); threshold, bilinear upsampling to full resolution, keep the largest connected
    component. Unlike CNOS there is no SAM proposal stage: the mask comes from the patch similarity map.
    """

    def __init__(self, backbone: FeatureExtractor, cfg: CosineMatchConfig | SOMConfig | None = None):
        self.backbone = backbone.eval()
        if isinstance(cfg, SOMConfig):
            cfg = CosineMatchConfig(cfg.cosine_threshold, 0.5, cfg.query_size, cfg.ref_size, cfg.n_refs)
        self.cfg = cfg or CosineMatchConfig()
        self._refs: dict[int, torch.Tensor] = {}

    def prepare(self, ref: ReferenceSet) -> None:
        x = reference_tensor(ref, self.cfg.n_refs)
        if x.shape[-1] != self.cfg.ref_size:
            x = F.interpolate(x, size=(self.cfg.ref_size,) * 2, mode="bilinear", align_corners=False)
        with torch.no_grad():
            out = self.backbone(x)
        h, w = out.grid
        m = torch.from_numpy(ref.masks[: self.cfg.n_refs]).float().unsqueeze(1)
        cov = F.adaptive_avg_pool2d(m, (h, w)).flatten(1)  # (V, T)
        feats = F.normalize(out.patch_tokens, dim=-1)[cov >= self.cfg.min_ref_coverage]
        if len(feats) == 0:
            raise ValueError(f"object {ref.obj_id}: no foreground reference patches")
        self._refs[ref.obj_id] = feats

    def segment(self, rgb: np.ndarray, obj_id: int) -> SegmentResult:
        if int(obj_id) not in self._refs:
            raise KeyError(f"object {obj_id} has no references: call prepare(ReferenceSet) first")
        q = normalize_images(resize_query(rgb, self.cfg.query_size)).unsqueeze(0)
        with torch.no_grad():
            out = self.backbone(q)
        f = F.normalize(out.patch_tokens[0], dim=-1)
        sim = (f @ self._refs[int(obj_id)].T).max(dim=1).values.reshape(out.grid).numpy().astype(np.float32)
        prob_small = np.clip(sim, 0.0, 1.0)
        full = cv2.resize(prob_small, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_LINEAR)
        mask = largest_component(full > self.cfg.threshold)
        score = float(full[mask].mean()) if mask.any() else 0.0
        return SegmentResult(mask=mask, score=score, prob=prob_small)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a boolean mask (empty stays empty)."""
    if not mask.any():
        return mask.astype(bool)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n <= 2:
        return mask.astype(bool)
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return labels == best


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boolean masks (1.0 when both are empty)."""
    inter = np.logical_and(a, b).sum()
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(inter / union)


__all__ = [
    "HSFA",
    "PRESETS",
    "SOM",
    "CosineMatchConfig",
    "CosineMatchSegmenter",
    "HSFALayer",
    "ReferenceTokens",
    "SOMConfig",
    "SOMTrainingSet",
    "SegmentResult",
    "SegmentingObjectModule",
    "UpsampleHead",
    "build_backbone",
    "build_text_encoder",
    "ema",
    "largest_component",
    "mask_iou",
    "som_loss",
]
