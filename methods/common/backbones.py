"""Image backbones: the ``FeatureExtractor`` interface, a DINOv2-architecture ViT and its presets.

``VisionTransformer`` follows DINOv2 (Oquab et al. 2023) and "Vision Transformers Need Registers"
(Darcet et al. 2024) exactly: patch embedding, CLS token, learned position embeddings interpolated
bicubically to other grids (with DINOv2's offset/antialias settings), optional register tokens
inserted after the position embeddings, pre-norm blocks with LayerScale, MLP or SwiGLU FFN, final
LayerNorm (eps 1e-6). Its parameter names are those of the official torch.hub checkpoints, so those
load as they are; Hugging Face ``transformers`` checkpoints (``Dinov2Model`` /
``Dinov2WithRegistersModel``) are mapped with ``hf_to_hub_state_dict``.

Presets: ``dinov2_vit{s,b,l,g}14`` and ``..._reg`` need local weights (nothing is downloaded);
``vit_tiny_scratch`` is the small offline default that trains from scratch on CPU.
``ConvNetBackbone`` (preset ``convnet_small_scratch``) is a small from-scratch CNN for CPU presets;
``create_feature_extractor`` builds any preset (ViT or CNN).
"""

from __future__ import annotations

import abc
import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from methods.common.blocks import DropPath, LayerScale, Mlp
from methods.common.checkpoint import (
    FusedQKV,
    StateDictMapping,
    WeightsNotFoundError,
    load_checked,
    load_state_dict_file,
    resolve_weights_file,
    strip_first_prefix,
)
from methods.common.rng import seeded

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

ImageInput = np.ndarray | torch.Tensor | Sequence[np.ndarray]


# --------------------------------------------------------------------------- outputs & preprocessing


@dataclass
class BackboneOutput:
    """What a ``FeatureExtractor`` returns.

    ``patch_tokens`` (B, N, C) final-normed patch tokens in row-major (h, w) order; ``cls_token``
    (B, C) or ``None``; ``register_tokens`` (B, R, C) (R may be 0); ``grid`` the (h, w) patch grid;
    ``intermediates`` the patch tokens (B, N, C) of the requested ``layers`` (0-based block indices,
    in the requested order; normed with the final norm unless asked otherwise) and
    ``intermediate_cls`` their CLS tokens — the inputs of DPT-style decoders.
    """

    patch_tokens: torch.Tensor
    cls_token: torch.Tensor | None
    register_tokens: torch.Tensor
    grid: tuple[int, int]
    intermediates: list[torch.Tensor] = field(default_factory=list)
    intermediate_cls: list[torch.Tensor] = field(default_factory=list)
    layers: tuple[int, ...] = ()

    def patch_map(self, tokens: torch.Tensor | None = None) -> torch.Tensor:
        """Tokens (B, N, C) (default the final patch tokens) as a feature map (B, C, h, w)."""
        t = self.patch_tokens if tokens is None else tokens
        h, w = self.grid
        return t.transpose(1, 2).reshape(t.shape[0], t.shape[2], h, w)

    def intermediate_maps(self) -> list[torch.Tensor]:
        """The requested layers' tokens as feature maps (B, C, h, w)."""
        return [self.patch_map(t) for t in self.intermediates]


def to_float_images(images: ImageInput) -> torch.Tensor:
    """Images as a float tensor (B, 3, H, W) in [0, 1].

    Accepts HxWx3 / BxHxWx3 numpy arrays (uint8 0..255 or float 0..1), a list of equally sized HxWx3
    arrays, or tensors (3, H, W) / (B, 3, H, W) (uint8 or float 0..1).
    """
    if isinstance(images, torch.Tensor):
        t = images
        if t.ndim == 3:
            t = t.unsqueeze(0)
        if t.ndim != 4 or t.shape[1] != 3:
            raise ValueError(f"expected a (B, 3, H, W) or (3, H, W) tensor, got {tuple(images.shape)}")
    else:
        if isinstance(images, np.ndarray):
            arr = images
        else:
            shapes = {np.asarray(a).shape for a in images}
            if len(shapes) != 1:
                raise ValueError(f"images of different sizes {sorted(shapes)}: preprocess them one by one")
            arr = np.stack([np.asarray(a) for a in images])
        if arr.ndim == 3:
            arr = arr[None]
        if arr.ndim != 4 or arr.shape[-1] != 3:
            raise ValueError(f"expected HxWx3 or BxHxWx3 RGB arrays, got {arr.shape}")
        t = torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2)
    if t.dtype == torch.uint8:
        return t.float() / 255.0
    return t.float()


def _round_to(x: float, multiple: int) -> int:
    return max(multiple, round(x / multiple) * multiple)


def preprocess_images(
    images: ImageInput,
    *,
    patch_size: int,
    size: int | tuple[int, int] | None = None,
    mode: Literal["resize", "center_crop"] = "resize",
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    crop_fraction: float = 224 / 256,
) -> torch.Tensor:
    """DINOv2 preprocessing: resize (bicubic, antialiased), normalise with ImageNet mean/std.

    ``mode='resize'`` (dense features): ``size=None`` keeps the image size, an ``int`` resizes the
    shorter side to it (aspect kept), ``(h, w)`` resizes to that; every side is then rounded to the
    nearest multiple of ``patch_size``. ``mode='center_crop'``: the official DINOv2 evaluation
    transform, ``Resize(size / crop_fraction)`` of the shorter side (256 for 224) then
    ``CenterCrop(size)`` (``size`` default 224, must be a multiple of ``patch_size``).
    Returns (B, 3, H', W') float32.
    """
    x = to_float_images(images)
    _, _, h, w = x.shape
    if mode == "resize":
        if size is None:
            th, tw = float(h), float(w)
        elif isinstance(size, int):
            s = size / min(h, w)
            th, tw = h * s, w * s
        else:
            th, tw = float(size[0]), float(size[1])
        out_hw = (_round_to(th, patch_size), _round_to(tw, patch_size))
        x = _resize(x, out_hw)
    elif mode == "center_crop":
        crop = 224 if size is None else size
        if not isinstance(crop, int):
            raise ValueError("mode='center_crop' takes an int size")
        if crop % patch_size:
            raise ValueError(f"center crop {crop} is not a multiple of the patch size {patch_size}")
        short = round(crop / crop_fraction)
        if h <= w:
            new_hw = (short, int(short * w / h))
        else:
            new_hw = (int(short * h / w), short)
        x = _resize(x, new_hw)
        top = round((new_hw[0] - crop) / 2.0)
        left = round((new_hw[1] - crop) / 2.0)
        x = x[:, :, top : top + crop, left : left + crop]
    else:
        raise ValueError(f"mode must be 'resize' or 'center_crop', got {mode!r}")
    m = torch.tensor(mean, dtype=x.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - m) / s


def _resize(x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(hw):
        return x
    return F.interpolate(x, size=hw, mode="bicubic", align_corners=False, antialias=True).clamp_(0.0, 1.0)


class FeatureExtractor(nn.Module, metaclass=abc.ABCMeta):
    """Interface of every image backbone: ``forward(images) -> BackboneOutput`` on preprocessed images.

    Attributes: ``embed_dim``, ``patch_size``, ``num_register_tokens``, ``num_layers``, ``mean``,
    ``std`` (preprocessing normalisation) and ``weights_source`` (where the weights came from, for
    provenance in every output).
    """

    embed_dim: int
    patch_size: int
    num_register_tokens: int
    num_layers: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    weights_source: str = "random init"

    @abc.abstractmethod
    def forward(
        self,
        images: torch.Tensor,
        layers: int | Sequence[int] | None = None,
        *,
        masks: torch.Tensor | None = None,
        norm_intermediates: bool = True,
    ) -> BackboneOutput:
        """Features of normalised images (B, 3, H, W), H and W multiples of ``patch_size``.

        ``layers``: block indices to return as intermediates (negative counts from the end) or an
        int n for the last n blocks (DINOv2's ``get_intermediate_layers`` convention).
        """

    def _layer_indices(self, layers: int | Sequence[int] | None) -> list[int]:
        """0-based indices of the requested blocks (stages): ``None`` none, an int the last n, else a list
        (negative counts from the end)."""
        if layers is None:
            return []
        if isinstance(layers, int):
            if not 0 < layers <= self.num_layers:
                raise ValueError(f"cannot take the last {layers} of {self.num_layers} blocks")
            return list(range(self.num_layers - layers, self.num_layers))
        out = []
        for i in layers:
            j = i + self.num_layers if i < 0 else i
            if not 0 <= j < self.num_layers:
                raise ValueError(f"layer index {i} out of range for {self.num_layers} blocks")
            out.append(j)
        return out

    def preprocess(
        self,
        images: ImageInput,
        size: int | tuple[int, int] | None = None,
        mode: Literal["resize", "center_crop"] = "resize",
    ) -> torch.Tensor:
        """``preprocess_images`` with this backbone's patch size and normalisation, on its device."""
        x = preprocess_images(images, patch_size=self.patch_size, size=size, mode=mode, mean=self.mean, std=self.std)
        p = next(self.parameters(), None)
        return x if p is None else x.to(device=p.device, dtype=p.dtype)

    def extract(
        self,
        images: ImageInput,
        size: int | tuple[int, int] | None = None,
        layers: int | Sequence[int] | None = None,
    ) -> BackboneOutput:
        """Preprocess raw images and run the backbone."""
        return self(self.preprocess(images, size=size), layers)


# --------------------------------------------------------------------------- the ViT


@dataclass(frozen=True)
class ViTConfig:
    """Architecture of a DINOv2-style ViT.

    ``img_size`` fixes the stored position-embedding grid (``img_size // patch_size`` squared; 518
    -> 37x37 for DINOv2). ``interpolate_offset``/``interpolate_antialias`` reproduce DINOv2's
    position-embedding interpolation: 0.1/False for the original models, 0.0/True for the register
    models. ``layerscale_init=None`` disables LayerScale; ``ffn='swiglu'`` is ViT-g's SwiGLU FFN.
    """

    img_size: int = 224
    patch_size: int = 16
    embed_dim: int = 192
    depth: int = 6
    num_heads: int = 3
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    ffn: Literal["mlp", "swiglu"] = "mlp"
    layerscale_init: float | None = None
    num_register_tokens: int = 0
    interpolate_offset: float = 0.1
    interpolate_antialias: bool = False
    norm_eps: float = 1e-6
    in_chans: int = 3
    drop_path_rate: float = 0.0

    @property
    def grid_size(self) -> int:
        return self.img_size // self.patch_size


class PatchEmbed(nn.Module):
    """Non-overlapping patches -> tokens (B, N, C) with a strided conv (``proj`` as in DINOv2)."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class ViTAttention(nn.Module):
    """Fused-qkv multi-head self-attention (DINOv2 ``attn.qkv`` / ``attn.proj``) on SDPA."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class SwiGLUFFN(nn.Module):
    """DINOv2's fused SwiGLU FFN (``w12``/``w3``); hidden width rounded as ``(int(2/3 h) + 7) // 8 * 8``."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        hidden = (int(hidden * 2 / 3) + 7) // 8 * 8
        self.w12 = nn.Linear(dim, 2 * hidden)
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(x1) * x2)


class ViTBlock(nn.Module):
    """Pre-norm ViT block ``x + ls1(attn(norm1 x))``, ``x + ls2(mlp(norm2 x))``."""

    def __init__(self, cfg: ViTConfig, drop_path: float = 0.0):
        super().__init__()
        dim = cfg.embed_dim
        self.norm1 = nn.LayerNorm(dim, eps=cfg.norm_eps)
        self.attn = ViTAttention(dim, cfg.num_heads, cfg.qkv_bias)
        self.ls1 = LayerScale(dim, cfg.layerscale_init) if cfg.layerscale_init else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=cfg.norm_eps)
        hidden = int(dim * cfg.mlp_ratio)
        self.mlp = SwiGLUFFN(dim, hidden) if cfg.ffn == "swiglu" else Mlp(dim, hidden)
        self.ls2 = LayerScale(dim, cfg.layerscale_init) if cfg.layerscale_init else nn.Identity()
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.ls1(self.attn(self.norm1(x))))
        return x + self.drop_path(self.ls2(self.mlp(self.norm2(x))))


class VisionTransformer(FeatureExtractor):
    """DINOv2-architecture ViT (parameter names = official torch.hub checkpoint keys)."""

    def __init__(self, cfg: ViTConfig, name: str = "vit"):
        super().__init__()
        if cfg.embed_dim % cfg.num_heads:
            raise ValueError(f"embed_dim {cfg.embed_dim} is not divisible by num_heads {cfg.num_heads}")
        self.cfg = cfg
        self.name = name
        self.embed_dim = cfg.embed_dim
        self.patch_size = cfg.patch_size
        self.num_register_tokens = cfg.num_register_tokens
        self.num_layers = cfg.depth
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.in_chans, cfg.embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.grid_size**2 + 1, cfg.embed_dim))
        if cfg.num_register_tokens:
            self.register_tokens = nn.Parameter(torch.zeros(1, cfg.num_register_tokens, cfg.embed_dim))
        else:
            self.register_parameter("register_tokens", None)
        dpr = [cfg.drop_path_rate * i / max(cfg.depth - 1, 1) for i in range(cfg.depth)]
        self.blocks = nn.ModuleList(ViTBlock(cfg, dpr[i]) for i in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.embed_dim, eps=cfg.norm_eps)
        self.mask_token = nn.Parameter(torch.zeros(1, cfg.embed_dim))
        self._init_weights()

    def _init_weights(self) -> None:
        """DINOv2/timm init: trunc-normal(0.02) position embeddings and linears, tiny CLS/register tokens."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        if self.register_tokens is not None:
            nn.init.normal_(self.register_tokens, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def interpolate_pos_encoding(self, h: int, w: int) -> torch.Tensor:
        """Position embeddings (1, 1 + h w, C) for an h x w patch grid (DINOv2's bicubic interpolation).

        The native grid returns the stored embeddings unchanged. Otherwise the stored M x M grid is
        resized bicubically, with ``scale_factor=((h + offset) / M, (w + offset) / M)`` when
        ``interpolate_offset`` is set (the original DINOv2 kludge) and ``size=(h, w)`` otherwise, and
        ``antialias=interpolate_antialias``.
        """
        n = self.pos_embed.shape[1] - 1
        m = math.isqrt(n)
        if m * m != n:
            raise ValueError(f"stored position embeddings ({n}) are not a square grid")
        if (h, w) == (m, m):
            return self.pos_embed
        dtype = self.pos_embed.dtype
        pos = self.pos_embed.float()
        patch = pos[:, 1:].reshape(1, m, m, -1).permute(0, 3, 1, 2)
        off = self.cfg.interpolate_offset
        if off:
            kwargs: dict = {"scale_factor": ((h + off) / m, (w + off) / m)}
        else:
            kwargs = {"size": (h, w)}
        patch = F.interpolate(patch, mode="bicubic", antialias=self.cfg.interpolate_antialias, **kwargs)
        if tuple(patch.shape[-2:]) != (h, w):
            raise RuntimeError(f"position embedding interpolation gave {tuple(patch.shape[-2:])}, wanted {(h, w)}")
        patch = patch.permute(0, 2, 3, 1).reshape(1, h * w, -1)
        return torch.cat([pos[:, :1], patch], dim=1).to(dtype)

    def prepare_tokens(self, images: torch.Tensor, masks: torch.Tensor | None = None) -> torch.Tensor:
        """Patch embedding (+ mask token), CLS, position embeddings, then registers (DINOv2 order)."""
        _, _, hh, ww = images.shape
        p = self.patch_size
        if hh % p or ww % p:
            raise ValueError(
                f"image size {hh}x{ww} is not a multiple of the patch size {p}; use preprocess() to resize"
            )
        x = self.patch_embed(images)
        if masks is not None:
            x = torch.where(masks.unsqueeze(-1), self.mask_token.to(x.dtype).unsqueeze(0), x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)
        x = x + self.interpolate_pos_encoding(hh // p, ww // p).to(x.dtype)
        if self.register_tokens is not None:
            reg = self.register_tokens.expand(x.shape[0], -1, -1).to(x.dtype)
            x = torch.cat([x[:, :1], reg, x[:, 1:]], dim=1)
        return x

    def forward(
        self,
        images: torch.Tensor,
        layers: int | Sequence[int] | None = None,
        *,
        masks: torch.Tensor | None = None,
        norm_intermediates: bool = True,
    ) -> BackboneOutput:
        grid = (images.shape[-2] // self.patch_size, images.shape[-1] // self.patch_size)
        take = self._layer_indices(layers)
        x = self.prepare_tokens(images, masks)
        r = 1 + self.num_register_tokens
        kept: dict[int, torch.Tensor] = {}
        for i, blk in enumerate(self.blocks):
            x = blk(x)
            if i in take:
                kept[i] = x
        xn = self.norm(x)
        inter = [self.norm(kept[i]) if norm_intermediates else kept[i] for i in take]
        return BackboneOutput(
            patch_tokens=xn[:, r:],
            cls_token=xn[:, 0],
            register_tokens=xn[:, 1:r],
            grid=grid,
            intermediates=[t[:, r:] for t in inter],
            intermediate_cls=[t[:, 0] for t in inter],
            layers=tuple(take),
        )

    def load_weights(self, source: str | Path | Mapping[str, torch.Tensor]) -> None:
        """Load a checkpoint (file path or state dict) in the torch.hub or Hugging Face layout, strictly.

        ``mask_token`` may be absent (some Hugging Face exports drop it; it only matters for masked
        inputs). Anything else missing, unexpected or of the wrong shape raises ``CheckpointKeyError``.
        """
        what = f"{self.name} weights"
        if isinstance(source, str | Path):
            what = f"{self.name} weights from {source}"
            sd = load_state_dict_file(source)
            self.weights_source = str(source)
        else:
            sd = dict(source)
            self.weights_source = "state dict"
        if detect_vit_layout(sd) == "hf":
            sd = hf_to_hub_state_dict(sd)
        load_checked(self, sd, what, optional=("mask_token",))


# --------------------------------------------------------------------------- layouts


_HF_PREFIXES = ("dinov2_with_registers.", "dinov2.", "model.", "backbone.")

DINOV2_HF_TO_HUB = StateDictMapping(
    renames={
        "embeddings.cls_token": "cls_token",
        "embeddings.position_embeddings": "pos_embed",
        "embeddings.register_tokens": "register_tokens",
        "embeddings.mask_token": "mask_token",
        "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
        "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
        "layernorm.weight": "norm.weight",
        "layernorm.bias": "norm.bias",
    },
    source_layer="encoder.layer.{i}.",
    target_layer="blocks.{i}.",
    layer_renames={
        "norm1": "norm1",
        "norm2": "norm2",
        "attention.output.dense": "attn.proj",
        "layer_scale1.lambda1": "ls1.gamma",
        "layer_scale2.lambda1": "ls2.gamma",
        "mlp.fc1": "mlp.fc1",
        "mlp.fc2": "mlp.fc2",
        "mlp.weights_in": "mlp.w12",
        "mlp.weights_out": "mlp.w3",
    },
    qkv=FusedQKV(
        fused="attn.qkv.{kind}",
        separate="attention.attention.{part}.{kind}",
        parts=("query", "key", "value"),
        fused_on="target",
    ),
    source_prefixes=_HF_PREFIXES,
)
"""Hugging Face ``Dinov2Model``/``Dinov2WithRegistersModel`` keys (source) <-> torch.hub keys (target)."""


def detect_vit_layout(sd: Mapping[str, torch.Tensor]) -> Literal["hub", "hf"]:
    """``'hf'`` for Hugging Face ``Dinov2Model`` keys (``embeddings.*``/``encoder.layer.*``), else ``'hub'``."""
    for k in sd:
        stripped = strip_first_prefix(k, _HF_PREFIXES)
        if stripped.startswith(("embeddings.", "encoder.layer.")):
            return "hf"
    return "hub"


def hf_to_hub_state_dict(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map Hugging Face DINOv2 keys to the torch.hub layout (query/key/value fused into ``qkv``).

    A model prefix (``dinov2.``, ``dinov2_with_registers.``, ``model.``, ``backbone.``) is stripped.
    Keys it does not know (e.g. a ``classifier.*`` head) are passed through unchanged so the strict
    check reports them; so are the query/key/value of a layer that lacks one of them.
    """
    return DINOV2_HF_TO_HUB.forward(sd)


def hub_to_hf_state_dict(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of ``hf_to_hub_state_dict``: torch.hub DINOv2 keys -> Hugging Face ``Dinov2Model`` keys."""
    return DINOV2_HF_TO_HUB.inverse(sd)


# --------------------------------------------------------------------------- presets & registry


@dataclass(frozen=True)
class BackbonePreset:
    """A named backbone: architecture, whether it needs pretrained weights, and the expected files."""

    name: str
    config: ViTConfig
    pretrained: bool
    weight_files: tuple[str, ...] = ()
    source: str = ""


_DINOV2_ARCHS = {
    "s": ("small", 384, 12, 6, "mlp"),
    "b": ("base", 768, 12, 12, "mlp"),
    "l": ("large", 1024, 24, 16, "mlp"),
    "g": ("giant", 1536, 40, 24, "swiglu"),
}


def _dinov2_presets() -> dict[str, BackbonePreset]:
    presets: dict[str, BackbonePreset] = {}
    for letter, (size, dim, depth, heads, ffn) in _DINOV2_ARCHS.items():
        for reg in (False, True):
            name = f"dinov2_vit{letter}14" + ("_reg" if reg else "")
            hub_file = f"dinov2_vit{letter}14{'_reg4' if reg else ''}_pretrain.pth"
            hf_repo = f"facebook/dinov2-{'with-registers-' if reg else ''}{size}"
            cfg = ViTConfig(
                img_size=518,
                patch_size=14,
                embed_dim=dim,
                depth=depth,
                num_heads=heads,
                ffn=ffn,  # type: ignore[arg-type]
                layerscale_init=1.0,
                num_register_tokens=4 if reg else 0,
                interpolate_offset=0.0 if reg else 0.1,
                interpolate_antialias=reg,
            )
            presets[name] = BackbonePreset(
                name=name,
                config=cfg,
                pretrained=True,
                weight_files=(hub_file, "model.safetensors", "pytorch_model.bin"),
                source=(
                    f"torch.hub checkpoint '{hub_file}' (https://dl.fbaipublicfiles.com/dinov2/"
                    f"dinov2_vit{letter}14/{hub_file}) or the Hugging Face '{hf_repo}' "
                    "model.safetensors / pytorch_model.bin"
                ),
            )
    presets["vit_tiny_scratch"] = BackbonePreset(
        name="vit_tiny_scratch",
        config=ViTConfig(
            img_size=224,
            patch_size=16,
            embed_dim=192,
            depth=6,
            num_heads=3,
            interpolate_offset=0.0,
            interpolate_antialias=False,
        ),
        pretrained=False,
        weight_files=("backbone.safetensors", "backbone.pt"),
        source="a checkpoint saved from this project's vit_tiny_scratch (train it with the method's fit)",
    )
    return presets


BACKBONE_PRESETS: Mapping[str, BackbonePreset] = MappingProxyType(_dinov2_presets())


def available_backbones() -> list[str]:
    """Names accepted by ``create_feature_extractor`` (``create_backbone`` takes the ViT ones)."""
    return sorted([*BACKBONE_PRESETS, *CONVNET_PRESETS])


def create_backbone(
    name: str,
    weights: str | Path | None = None,
    *,
    random_init: bool = False,
    seed: int | None = None,
    **overrides: object,
) -> VisionTransformer:
    """Build a backbone preset, optionally loading weights from a local file or folder.

    A pretrained preset (``dinov2_*``) needs ``weights`` (the checkpoint file, or a folder holding it);
    without it, ``WeightsNotFoundError`` names the expected file, unless ``random_init=True`` asks for
    an untrained network (tests, smoke runs). ``vit_tiny_scratch`` starts from random init.
    ``overrides`` replace ``ViTConfig`` fields (e.g. ``patch_size=8``, ``depth=4``); ``seed`` makes the
    initialisation deterministic without touching the global RNG.
    """
    if name not in BACKBONE_PRESETS:
        hint = " (a CNN preset: use create_feature_extractor)" if name in CONVNET_PRESETS else ""
        raise ValueError(f"unknown backbone {name!r}{hint}; ViT presets: {', '.join(sorted(BACKBONE_PRESETS))}")
    preset = BACKBONE_PRESETS[name]
    fields = {f.name for f in dataclasses.fields(ViTConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise TypeError(f"unknown ViTConfig field(s) for {name}: {unknown}; known: {sorted(fields)}")
    cfg = dataclasses.replace(preset.config, **overrides)  # type: ignore[arg-type]
    if preset.pretrained and weights is None and not random_init:
        raise WeightsNotFoundError(
            f"backbone preset {name!r} needs pretrained weights: pass weights=<path> to the {preset.source} "
            "(nothing is downloaded), or random_init=True for an untrained network"
        )
    with seeded(seed):
        model = VisionTransformer(cfg, name=name)
    model.weights_source = f"random init (seed={seed})"
    if weights is not None:
        path = resolve_weights_file(weights, preset.weight_files, f"backbone {name!r} ({preset.source})")
        model.load_weights(path)
        log.info("backbone %s: loaded %s", name, path)
    elif preset.pretrained:
        log.warning("backbone %s built with RANDOM weights (random_init=True): not the paper configuration", name)
    return model


# --------------------------------------------------------------------------- small CNN


@dataclass(frozen=True)
class ConvNetConfig:
    """A plain strided CNN: ``len(widths)`` stages, each ``conv3x3(stride 2)-GN-ReLU`` followed by
    ``depth_per_stage - 1`` ``conv3x3-GN-ReLU``; total stride ``2 ** len(widths)``. A 1x1 conv then
    projects to ``embed_dim`` and a LayerNorm normalises the tokens. ``groups`` is the GroupNorm group
    count (clipped to divide each width).
    """

    widths: tuple[int, ...] = (32, 64, 96, 128)
    embed_dim: int = 128
    depth_per_stage: int = 2
    groups: int = 8
    in_chans: int = 3
    norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        if not self.widths:
            raise ValueError("ConvNetConfig.widths must name at least one stage")
        if self.depth_per_stage < 1:
            raise ValueError("ConvNetConfig.depth_per_stage must be >= 1")
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))

    @property
    def stride(self) -> int:
        return 2 ** len(self.widths)


def _gn(width: int, groups: int) -> nn.GroupNorm:
    g = math.gcd(width, max(1, groups))
    return nn.GroupNorm(g, width)


class ConvNetBackbone(FeatureExtractor):
    """Small from-scratch CNN with the ``FeatureExtractor`` interface (offline CPU presets).

    ``patch_size`` is the total stride; ``patch_tokens`` are the final feature map's pixels (row-major),
    ``cls_token`` their mean, ``register_tokens`` empty (B, 0, C). ``num_layers`` is the number of
    stages: requested ``layers`` return each stage's output average-pooled to the final grid and
    projected to ``embed_dim`` by a 1x1 conv (so multi-level decoders get equally shaped tokens).
    """

    def __init__(self, cfg: ConvNetConfig, name: str = "convnet"):
        super().__init__()
        self.cfg = cfg
        self.name = name
        self.embed_dim = cfg.embed_dim
        self.patch_size = cfg.stride
        self.num_register_tokens = 0
        self.num_layers = len(cfg.widths)
        stages = []
        c_in = cfg.in_chans
        for w in cfg.widths:
            layers: list[nn.Module] = [nn.Conv2d(c_in, w, 3, stride=2, padding=1, bias=False), _gn(w, cfg.groups)]
            layers.append(nn.ReLU(inplace=True))
            for _ in range(cfg.depth_per_stage - 1):
                layers += [nn.Conv2d(w, w, 3, padding=1, bias=False), _gn(w, cfg.groups), nn.ReLU(inplace=True)]
            stages.append(nn.Sequential(*layers))
            c_in = w
        self.stages = nn.ModuleList(stages)
        self.proj = nn.Conv2d(c_in, cfg.embed_dim, 1)
        self.laterals = nn.ModuleList(nn.Conv2d(w, cfg.embed_dim, 1) for w in cfg.widths)
        self.norm = nn.LayerNorm(cfg.embed_dim, eps=cfg.norm_eps)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(
        self,
        images: torch.Tensor,
        layers: int | Sequence[int] | None = None,
        *,
        masks: torch.Tensor | None = None,
        norm_intermediates: bool = True,
    ) -> BackboneOutput:
        if masks is not None:
            raise ValueError("ConvNetBackbone does not support token masks")
        _, _, hh, ww = images.shape
        p = self.patch_size
        if hh % p or ww % p:
            raise ValueError(f"image size {hh}x{ww} is not a multiple of the stride {p}; use preprocess() to resize")
        grid = (hh // p, ww // p)
        take = self._layer_indices(layers)
        x = images
        feats: dict[int, torch.Tensor] = {}
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in take:
                feats[i] = x
        tokens = self.proj(x).flatten(2).transpose(1, 2)
        xn = self.norm(tokens)
        inter = []
        for i in take:
            f = self.laterals[i](F.adaptive_avg_pool2d(feats[i], grid)).flatten(2).transpose(1, 2)
            inter.append(self.norm(f) if norm_intermediates else f)
        return BackboneOutput(
            patch_tokens=xn,
            cls_token=xn.mean(dim=1),
            register_tokens=xn.new_zeros(xn.shape[0], 0, xn.shape[2]),
            grid=grid,
            intermediates=inter,
            intermediate_cls=[t.mean(dim=1) for t in inter],
            layers=tuple(take),
        )

    def load_weights(self, source: str | Path | Mapping[str, torch.Tensor]) -> None:
        """Load a state dict (file path or mapping) strictly."""
        if isinstance(source, str | Path):
            sd = load_state_dict_file(source)
            self.weights_source = str(source)
        else:
            sd = dict(source)
            self.weights_source = "state dict"
        load_checked(self, sd, f"{self.name} weights")


@dataclass(frozen=True)
class ConvNetPreset:
    """A named CNN preset (always trained from scratch in this project)."""

    name: str
    config: ConvNetConfig
    weight_files: tuple[str, ...] = ("backbone.safetensors", "backbone.pt")


CONVNET_PRESETS: Mapping[str, ConvNetPreset] = MappingProxyType(
    {
        "convnet_small_scratch": ConvNetPreset(
            name="convnet_small_scratch",
            config=ConvNetConfig(widths=(32, 64, 96, 128), embed_dim=128, depth_per_stage=2),
        ),
    }
)


def create_feature_extractor(
    name: str,
    weights: str | Path | None = None,
    *,
    random_init: bool = False,
    seed: int | None = None,
    **overrides: object,
) -> FeatureExtractor:
    """Build any backbone preset: CNN presets (``convnet_*``) here, ViT presets via ``create_backbone``.

    For a CNN preset ``overrides`` replace ``ConvNetConfig`` fields (e.g. ``widths=(16, 32, 64)`` for
    stride 8, ``embed_dim=64``); ``weights`` optionally loads a saved state dict (file or folder);
    ``random_init`` is accepted for symmetry (CNN presets always start from random init).
    """
    if name not in CONVNET_PRESETS:
        if name not in BACKBONE_PRESETS:
            raise ValueError(f"unknown backbone {name!r}; available: {', '.join(available_backbones())}")
        return create_backbone(name, weights, random_init=random_init, seed=seed, **overrides)
    preset = CONVNET_PRESETS[name]
    fields = {f.name for f in dataclasses.fields(ConvNetConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise TypeError(f"unknown ConvNetConfig field(s) for {name}: {unknown}; known: {sorted(fields)}")
    cfg = dataclasses.replace(preset.config, **overrides)  # type: ignore[arg-type]
    with seeded(seed):
        model = ConvNetBackbone(cfg, name=name)
    model.weights_source = f"random init (seed={seed})"
    if weights is not None:
        path = resolve_weights_file(weights, preset.weight_files, f"backbone {name!r}")
        model.load_weights(path)
        log.info("backbone %s: loaded %s", name, path)
    return model
