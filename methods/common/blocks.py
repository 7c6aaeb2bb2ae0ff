"""Neural building blocks shared by the methods.

Mask conventions (the same everywhere in this module):
- ``attn_mask``: boolean, **True = may attend** (``F.scaled_dot_product_attention``'s convention), of
  shape (L, S), (B, L, S) or (B, H, L, S); or a float mask added to the logits.
- ``key_padding_mask``: boolean (B, S), **True = padding, ignored** (``nn.MultiheadAttention``/DETR).
A query row that a boolean rule leaves with no key to attend to yields zeros (not NaN, with finite
gradients); a float mask that is -inf over a whole row is the caller's responsibility.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from methods.common.losses import (
    dice_loss,
    laplace_nll,
    sigmoid_focal_loss,
    soft_iou_loss,
    tversky_loss,
)

__all__ = [
    "AdaLNZero",
    "AdaLNZeroLayer",
    "AdaNormZero",
    "DPTDecoder",
    "DropPath",
    "FeatureFusionBlock",
    "GeM",
    "LayerScale",
    "MSDeformableAttention",
    "Mlp",
    "MultiHeadAttention",
    "ResidualConvUnit",
    "TransformerLayer",
    "dice_loss",
    "flatten_levels",
    "gem",
    "laplace_nll",
    "level_reference_points",
    "modulate",
    "ms_deform_attn_core",
    "sigmoid_focal_loss",
    "soft_iou_loss",
    "tversky_loss",
]


# --------------------------------------------------------------------------- small pieces


class DropPath(nn.Module):
    """Stochastic depth per sample (Huang et al. 2016); identity in eval mode or with ``p = 0``."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class LayerScale(nn.Module):
    """Per-channel residual scaling (CaiT); parameter named ``gamma`` as in DINOv2."""

    def __init__(self, dim: int, init_value: float = 1e-5):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Mlp(nn.Module):
    """Two-layer MLP ``fc2(drop(act(fc1(x))))`` (ViT/DINOv2 naming)."""

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int | None = None,
        out_dim: int | None = None,
        *,
        act: Callable[[], nn.Module] = nn.GELU,
        bias: bool = True,
        drop: float = 0.0,
    ):
        super().__init__()
        hidden_dim = hidden_dim or in_dim
        self.fc1 = nn.Linear(in_dim, hidden_dim, bias=bias)
        self.act = act()
        self.fc2 = nn.Linear(hidden_dim, out_dim or in_dim, bias=bias)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


# --------------------------------------------------------------------------- attention


def _as_4d(mask: torch.Tensor) -> torch.Tensor:
    if mask.ndim == 2:
        return mask[None, None]
    if mask.ndim == 3:
        return mask[:, None]
    if mask.ndim == 4:
        return mask
    raise ValueError(f"attn_mask must be 2-D, 3-D or 4-D, got shape {tuple(mask.shape)}")


def merge_masks(
    attn_mask: torch.Tensor | None,
    key_padding_mask: torch.Tensor | None,
    dtype: torch.dtype,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Combine ``attn_mask`` and ``key_padding_mask`` into one SDPA mask (4-D) plus an 'allowed' bool mask.

    Returns ``(sdpa_mask, allowed)``; ``allowed`` (True = may attend) is ``None`` when nothing is masked
    by a boolean rule.
    """
    allowed: torch.Tensor | None = None
    additive: torch.Tensor | None = None
    if attn_mask is not None:
        m = _as_4d(attn_mask)
        if m.dtype == torch.bool:
            allowed = m
        else:
            additive = m.to(dtype)
    if key_padding_mask is not None:
        if key_padding_mask.dtype != torch.bool:
            raise TypeError("key_padding_mask must be boolean (True = padding)")
        kp = ~key_padding_mask[:, None, None, :]
        allowed = kp if allowed is None else allowed & kp
    if additive is None:
        return allowed, allowed
    if allowed is not None:
        additive = additive.masked_fill(~allowed, float("-inf"))
    return additive, allowed


class MultiHeadAttention(nn.Module):
    """Multi-head (self or cross) attention on ``F.scaled_dot_product_attention`` (Vaswani et al. 2017).

    ``kv_dim`` lets keys/values come from a stream of another width (cross attention). See the module
    docstring for the mask conventions.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        kv_dim: int | None = None,
        qkv_bias: bool = True,
        out_dim: int | None = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        kv_dim = kv_dim or dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.q_proj = nn.Linear(dim, dim, bias=qkv_bias)
        self.k_proj = nn.Linear(kv_dim, dim, bias=qkv_bias)
        self.v_proj = nn.Linear(kv_dim, dim, bias=qkv_bias)
        self.out_proj = nn.Linear(dim, out_dim or dim)
        self.attn_drop = float(attn_drop)
        self.proj_drop = nn.Dropout(proj_drop)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.reshape(b, n, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor | None = None,
        value: torch.Tensor | None = None,
        *,
        attn_mask: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
        is_causal: bool = False,
    ) -> torch.Tensor:
        """``query`` (B, L, dim); ``key``/``value`` (B, S, kv_dim), default ``query`` / ``key``."""
        key = query if key is None else key
        value = key if value is None else value
        q = self._heads(self.q_proj(query))
        k = self._heads(self.k_proj(key))
        v = self._heads(self.v_proj(value))
        if is_causal and (attn_mask is not None or key_padding_mask is not None):
            causal = torch.ones(q.shape[2], k.shape[2], dtype=torch.bool, device=q.device).tril()
            if attn_mask is None:
                attn_mask = causal
            elif attn_mask.dtype == torch.bool:
                attn_mask = _as_4d(attn_mask) & causal
            else:
                attn_mask = _as_4d(attn_mask).masked_fill(~causal, float("-inf"))
            is_causal = False
        mask, allowed = merge_masks(attn_mask, key_padding_mask, q.dtype)
        row_ok = None
        if allowed is not None and mask is not None:
            # rows with nothing to attend to attend to everything instead (no NaN in any SDPA backend,
            # forward or backward) and are zeroed below
            row_ok = allowed.any(-1, keepdim=True)
            if mask.dtype == torch.bool:
                mask = mask | ~row_ok
            else:
                mask = torch.where(row_ok, mask, torch.zeros((), dtype=mask.dtype, device=mask.device))
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.attn_drop if self.training else 0.0, is_causal=is_causal
        )
        if row_ok is not None:
            out = torch.where(row_ok, out, torch.zeros((), dtype=out.dtype, device=out.device))
        out = out.transpose(1, 2).reshape(query.shape[0], query.shape[1], -1)
        return self.proj_drop(self.out_proj(out))


class TransformerLayer(nn.Module):
    """Pre-norm transformer layer: ``[self-attn] -> [cross-attn] -> MLP``, each ``x + drop_path(ls(f(norm(x))))``.

    Self-only is an encoder layer, cross-only a perceiver/read-out layer, both a decoder layer.
    ``pos``/``memory_pos`` are added to queries/keys only (DETR style). The memory is layer-normed
    before use (``norm_memory``) so raw backbone tokens can be attended to directly.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        mlp_ratio: float = 4.0,
        self_attention: bool = True,
        cross_attention: bool = False,
        kv_dim: int | None = None,
        norm_memory: bool = True,
        qkv_bias: bool = True,
        dropout: float = 0.0,
        drop_path: float = 0.0,
        layerscale_init: float | None = None,
        norm_eps: float = 1e-6,
        act: Callable[[], nn.Module] = nn.GELU,
    ):
        super().__init__()
        if not (self_attention or cross_attention):
            raise ValueError("a TransformerLayer needs self_attention and/or cross_attention")

        def ls() -> nn.Module:
            return LayerScale(dim, layerscale_init) if layerscale_init else nn.Identity()

        self.self_attn: MultiHeadAttention | None = None
        self.cross_attn: MultiHeadAttention | None = None
        if self_attention:
            self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
            self.self_attn = MultiHeadAttention(dim, num_heads, qkv_bias=qkv_bias, attn_drop=dropout)
            self.ls1 = ls()
        if cross_attention:
            kv_dim = kv_dim or dim
            self.norm_cross = nn.LayerNorm(dim, eps=norm_eps)
            self.norm_memory = nn.LayerNorm(kv_dim, eps=norm_eps) if norm_memory else nn.Identity()
            self.cross_attn = MultiHeadAttention(dim, num_heads, kv_dim=kv_dim, qkv_bias=qkv_bias, attn_drop=dropout)
            self.ls_cross = ls()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act=act, drop=dropout)
        self.ls2 = ls()
        self.drop_path = DropPath(drop_path)

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor | None = None,
        *,
        pos: torch.Tensor | None = None,
        memory_pos: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
        memory_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if self.self_attn is not None:
            h = self.norm1(x)
            qk = h if pos is None else h + pos
            a = self.self_attn(qk, qk, h, attn_mask=attn_mask, key_padding_mask=key_padding_mask)
            x = x + self.drop_path(self.ls1(a))
        if self.cross_attn is not None:
            if memory is None:
                raise ValueError("this layer has cross attention: pass memory")
            h = self.norm_cross(x)
            m = self.norm_memory(memory)
            q = h if pos is None else h + pos
            k = m if memory_pos is None else m + memory_pos
            a = self.cross_attn(q, k, m, attn_mask=memory_mask, key_padding_mask=memory_padding_mask)
            x = x + self.drop_path(self.ls_cross(a))
        return x + self.drop_path(self.ls2(self.mlp(self.norm2(x))))


# --------------------------------------------------------------------------- conditioning


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """DiT modulation ``x (1 + scale) + shift`` with per-sample (B, C) shift/scale over tokens (B, N, C)."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class AdaLNZero(nn.Module):
    """adaLN-Zero conditioning (Peebles & Xie 2023, DiT): ``SiLU -> Linear`` to (shift, scale, gate) per
    sub-block, zero-initialised so gates start at 0 and the conditioned block is the identity."""

    def __init__(self, dim: int, cond_dim: int, num_blocks: int = 2):
        super().__init__()
        self.num_blocks = num_blocks
        self.act = nn.SiLU()
        self.linear = nn.Linear(cond_dim, 3 * num_blocks * dim)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, cond: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """``cond`` (B, cond_dim) -> ``num_blocks`` triples (shift, scale, gate), each (B, dim)."""
        chunks = self.linear(self.act(cond)).chunk(3 * self.num_blocks, dim=-1)
        return [tuple(chunks[3 * i : 3 * i + 3]) for i in range(self.num_blocks)]  # type: ignore[misc]


class AdaLNZeroLayer(nn.Module):
    """Pre-norm transformer layer conditioned by adaLN-Zero: each sub-block (self-attn, optional
    cross-attn, MLP) is ``x + gate * f(modulate(norm(x), shift, scale))``; identity at initialisation."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        cond_dim: int,
        *,
        mlp_ratio: float = 4.0,
        cross_attention: bool = False,
        kv_dim: int | None = None,
        qkv_bias: bool = True,
        norm_eps: float = 1e-6,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps, elementwise_affine=False)
        self.attn = MultiHeadAttention(dim, num_heads, qkv_bias=qkv_bias)
        self.cross_attn: MultiHeadAttention | None = None
        if cross_attention:
            self.norm_cross = nn.LayerNorm(dim, eps=norm_eps, elementwise_affine=False)
            self.cross_attn = MultiHeadAttention(dim, num_heads, kv_dim=kv_dim, qkv_bias=qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps, elementwise_affine=False)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act=partial(nn.GELU, approximate="tanh"))
        self.ada = AdaLNZero(dim, cond_dim, num_blocks=3 if cross_attention else 2)

    def forward(
        self,
        x: torch.Tensor,
        cond: torch.Tensor,
        memory: torch.Tensor | None = None,
        *,
        key_padding_mask: torch.Tensor | None = None,
        memory_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        mods = self.ada(cond)
        shift, scale, gate = mods[0]
        x = x + gate.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift, scale), key_padding_mask=key_padding_mask)
        if self.cross_attn is not None:
            if memory is None:
                raise ValueError("this layer has cross attention: pass memory")
            shift, scale, gate = mods[1]
            h = modulate(self.norm_cross(x), shift, scale)
            x = x + gate.unsqueeze(1) * self.cross_attn(h, memory, key_padding_mask=memory_padding_mask)
        shift, scale, gate = mods[-1]
        return x + gate.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift, scale))


class AdaNormZero(nn.Module):
    """STORM's language injection (AdaNorm-Zero, Eq. 1):
    ``F_hat = (gamma + W_gamma e) * (F - mu) / (sigma + eps) + (beta + W_beta e)``.

    With ``stats='tokens'`` (Eq. 1 as written) ``mu_c``/``sigma_c`` are the mean and (biased) standard
    deviation of channel c over the N tokens of each sample; ``stats='channels'`` normalises each
    token over its channels (LayerNorm statistics) instead. ``gamma``/``beta`` are the usual learnable
    affine parameters (init 1/0); ``W_gamma``/``W_beta`` are zero-initialised, so at initialisation the
    text embedding has no effect and the layer is a plain normalisation. ``key_padding_mask`` (B, N,
    True = padding) excludes tokens from the statistics.
    """

    def __init__(
        self,
        dim: int,
        cond_dim: int,
        *,
        eps: float = 1e-5,
        stats: Literal["tokens", "channels"] = "tokens",
    ):
        super().__init__()
        if stats not in ("tokens", "channels"):
            raise ValueError(f"stats must be 'tokens' or 'channels', got {stats!r}")
        self.eps = eps
        self.stats = stats
        self.gamma = nn.Parameter(torch.ones(dim))
        self.beta = nn.Parameter(torch.zeros(dim))
        self.to_gamma = nn.Linear(cond_dim, dim, bias=False)
        self.to_beta = nn.Linear(cond_dim, dim, bias=False)
        nn.init.zeros_(self.to_gamma.weight)
        nn.init.zeros_(self.to_beta.weight)

    def normalize(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``(x - mu) / (sigma + eps)`` with the configured statistics; ``x`` is (B, N, C)."""
        if self.stats == "channels":
            mu = x.mean(-1, keepdim=True)
            sigma = x.var(-1, unbiased=False, keepdim=True).sqrt()
        elif key_padding_mask is None:
            mu = x.mean(1, keepdim=True)
            sigma = x.var(1, unbiased=False, keepdim=True).sqrt()
        else:
            w = (~key_padding_mask).to(x.dtype).unsqueeze(-1)
            n = w.sum(1, keepdim=True).clamp_min(1.0)
            mu = (x * w).sum(1, keepdim=True) / n
            sigma = (((x - mu) ** 2) * w).sum(1, keepdim=True).div(n).sqrt()
        return (x - mu) / (sigma + self.eps)

    def forward(
        self,
        x: torch.Tensor,
        cond: torch.Tensor | None = None,
        *,
        key_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``x`` (B, N, C) tokens, ``cond`` (B, cond_dim) text embedding or ``None`` (no injection)."""
        gamma = self.gamma.expand(x.shape[0], -1)
        beta = self.beta.expand(x.shape[0], -1)
        if cond is not None:
            gamma = gamma + self.to_gamma(cond)
            beta = beta + self.to_beta(cond)
        return gamma.unsqueeze(1) * self.normalize(x, key_padding_mask) + beta.unsqueeze(1)


# --------------------------------------------------------------------------- DPT decoder


class ResidualConvUnit(nn.Module):
    """DPT residual unit ``x + conv(relu(conv(relu(x))))`` (Ranftl et al. 2021)."""

    def __init__(self, features: int):
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class FeatureFusionBlock(nn.Module):
    """DPT fusion: ``x (+ rcu1(skip)) -> rcu2 -> bilinear upsample (x2 or to size) -> 1x1 conv``.

    ``with_skip=False`` (the deepest level) has no ``res1``, so no parameter goes unused.
    """

    def __init__(self, features: int, with_skip: bool = True):
        super().__init__()
        self.res1 = ResidualConvUnit(features) if with_skip else None
        self.res2 = ResidualConvUnit(features)
        self.out_conv = nn.Conv2d(features, features, 1)

    def forward(
        self, x: torch.Tensor, skip: torch.Tensor | None = None, size: tuple[int, int] | None = None
    ) -> torch.Tensor:
        if skip is not None:
            if self.res1 is None:
                raise ValueError("this fusion block was built without a skip input")
            x = x + self.res1(skip)
        x = self.res2(x)
        if size is None:
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=True)
        else:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
        return self.out_conv(x)


class DPTDecoder(nn.Module):
    """Dense Prediction Transformer decoder (Ranftl et al. 2021; the Depth-Anything/DINOv2 variant).

    Tokens of four backbone layers (B, N, C) on an (h, w) patch grid are *reassembled* into maps at
    4x, 2x, 1x and 1/2x the grid (1x1 projection + transposed/strided conv), brought to ``features``
    channels, fused coarse-to-fine by ``FeatureFusionBlock`` s (output at 8x the grid) and decoded by
    a head (3x3 conv, x2 or ``output_size`` upsampling, 3x3 conv, ReLU, 1x1 conv to ``out_channels``).
    ``readout`` handles the CLS token as in DPT: ``ignore``, ``add`` or ``project`` (concat + MLP).
    """

    def __init__(
        self,
        in_dim: int,
        *,
        features: int = 64,
        level_channels: Sequence[int] = (48, 96, 192, 384),
        out_channels: int = 1,
        head_hidden: int = 32,
        readout: Literal["ignore", "add", "project"] = "ignore",
    ):
        super().__init__()
        if len(level_channels) != 4:
            raise ValueError("DPTDecoder uses exactly four levels (level_channels of length 4)")
        if readout not in ("ignore", "add", "project"):
            raise ValueError(f"readout must be 'ignore', 'add' or 'project', got {readout!r}")
        self.readout = readout
        self.in_dim = in_dim
        if readout == "project":
            self.readout_proj = nn.ModuleList(
                nn.Sequential(nn.Linear(2 * in_dim, in_dim), nn.GELU()) for _ in range(4)
            )
        c = list(level_channels)
        self.projects = nn.ModuleList(nn.Conv2d(in_dim, ch, 1) for ch in c)
        self.resize = nn.ModuleList(
            [
                nn.ConvTranspose2d(c[0], c[0], kernel_size=4, stride=4),
                nn.ConvTranspose2d(c[1], c[1], kernel_size=2, stride=2),
                nn.Identity(),
                nn.Conv2d(c[3], c[3], kernel_size=3, stride=2, padding=1),
            ]
        )
        self.layer_rn = nn.ModuleList(nn.Conv2d(ch, features, 3, padding=1, bias=False) for ch in c)
        self.refine = nn.ModuleList(FeatureFusionBlock(features, with_skip=i < 3) for i in range(4))
        half = max(features // 2, 1)
        self.head_in = nn.Conv2d(features, half, 3, padding=1)
        self.head_out = nn.Sequential(
            nn.Conv2d(half, head_hidden, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(head_hidden, out_channels, 1)
        )

    def _reassemble(
        self, tokens: Sequence[torch.Tensor], grid: tuple[int, int], cls_tokens: Sequence[torch.Tensor] | None
    ) -> list[torch.Tensor]:
        h, w = grid
        if len(tokens) != 4:
            raise ValueError(f"DPTDecoder needs the tokens of 4 layers, got {len(tokens)}")
        if self.readout != "ignore" and (cls_tokens is None or len(cls_tokens) != 4):
            raise ValueError(f"readout={self.readout!r} needs the 4 layers' CLS tokens")
        maps = []
        for i, t in enumerate(tokens):
            b, n, c = t.shape
            if n != h * w:
                raise ValueError(f"layer {i}: {n} tokens do not fit the {h}x{w} grid")
            if self.readout == "add":
                t = t + cls_tokens[i].unsqueeze(1)  # type: ignore[index]
            elif self.readout == "project":
                cls = cls_tokens[i].unsqueeze(1).expand(-1, n, -1)  # type: ignore[index]
                t = self.readout_proj[i](torch.cat([t, cls], dim=-1))
            x = t.transpose(1, 2).reshape(b, c, h, w)
            maps.append(self.layer_rn[i](self.resize[i](self.projects[i](x))))
        return maps

    def forward_features(
        self,
        tokens: Sequence[torch.Tensor],
        grid: tuple[int, int],
        cls_tokens: Sequence[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Fused feature map (B, features, 8h, 8w) before the head."""
        l1, l2, l3, l4 = self._reassemble(tokens, grid, cls_tokens)
        p = self.refine[3](l4, size=tuple(l3.shape[-2:]))
        p = self.refine[2](p, l3, size=tuple(l2.shape[-2:]))
        p = self.refine[1](p, l2, size=tuple(l1.shape[-2:]))
        return self.refine[0](p, l1)

    def forward(
        self,
        tokens: Sequence[torch.Tensor],
        grid: tuple[int, int],
        cls_tokens: Sequence[torch.Tensor] | None = None,
        output_size: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """Dense prediction (B, out_channels, 16h, 16w), or at ``output_size`` (e.g. the input image size)."""
        x = self.head_in(self.forward_features(tokens, grid, cls_tokens))
        if output_size is None:
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=True)
        else:
            x = F.interpolate(x, size=tuple(output_size), mode="bilinear", align_corners=True)
        return self.head_out(x)


# --------------------------------------------------------------------------- deformable attention


def _shapes_list(spatial_shapes: torch.Tensor | Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    if isinstance(spatial_shapes, torch.Tensor):
        return [(int(h), int(w)) for h, w in spatial_shapes.tolist()]
    return [(int(h), int(w)) for h, w in spatial_shapes]


def ms_deform_attn_core(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor | Sequence[tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Multi-scale deformable attention, pure torch (Deformable DETR's ``ms_deform_attn_core_pytorch``).

    ``value`` (B, S, H, D) with S = sum of H_l W_l; ``sampling_locations`` (B, Lq, H, L, P, 2) as
    normalised (x, y) in [0, 1] (pixel centres at (i + 0.5) / W, zero outside); ``attention_weights``
    (B, Lq, H, L, P). Returns (B, Lq, H * D).
    """
    shapes = _shapes_list(spatial_shapes)
    b, _, m, d = value.shape
    _, lq, _, n_levels, n_points, _ = sampling_locations.shape
    if len(shapes) != n_levels:
        raise ValueError(f"{len(shapes)} spatial shapes for {n_levels} levels")
    values = value.split([h * w for h, w in shapes], dim=1)
    grids = 2 * sampling_locations - 1
    sampled = []
    for lvl, (h, w) in enumerate(shapes):
        v = values[lvl].flatten(2).transpose(1, 2).reshape(b * m, d, h, w)
        g = grids[:, :, :, lvl].transpose(1, 2).flatten(0, 1)
        sampled.append(F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False))
    weights = attention_weights.transpose(1, 2).reshape(b * m, 1, lq, n_levels * n_points)
    out = (torch.stack(sampled, dim=-2).flatten(-2) * weights).sum(-1).view(b, m * d, lq)
    return out.transpose(1, 2).contiguous()


class MSDeformableAttention(nn.Module):
    """Multi-scale deformable attention module (Zhu et al. 2021, Deformable DETR), used by SeqPose's
    geometry-aware cross-attention: each query samples ``num_points`` locations per head and level
    around its reference point, with learned offsets and softmax weights."""

    def __init__(self, dim: int, num_heads: int = 8, num_levels: int = 4, num_points: int = 4):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.dim, self.num_heads, self.num_levels, self.num_points = dim, num_heads, num_levels, num_points
        self.sampling_offsets = nn.Linear(dim, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(dim, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(dim, dim)
        self.output_proj = nn.Linear(dim, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Deformable DETR initialisation: offsets start on a ring of directions, uniform weights."""
        nn.init.zeros_(self.sampling_offsets.weight)
        thetas = torch.arange(self.num_heads, dtype=torch.float32) * (2.0 * math.pi / self.num_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = (grid / grid.abs().max(-1, keepdim=True)[0]).view(self.num_heads, 1, 1, 2)
        grid = grid.repeat(1, self.num_levels, self.num_points, 1)
        grid = grid * torch.arange(1, self.num_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.reshape(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def forward(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        value: torch.Tensor,
        spatial_shapes: torch.Tensor | Sequence[tuple[int, int]],
        value_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``query`` (B, Lq, C); ``reference_points`` (B, Lq, L, 2) normalised (x, y) or (B, Lq, L, 4)
        boxes (cx, cy, w, h); ``value`` (B, S, C) flattened levels; ``value_padding_mask`` (B, S) True = pad."""
        shapes = _shapes_list(spatial_shapes)
        b, lq, _ = query.shape
        s = value.shape[1]
        if sum(h * w for h, w in shapes) != s:
            raise ValueError(f"value has {s} tokens but spatial shapes sum to {sum(h * w for h, w in shapes)}")
        m, n_levels, n_points = self.num_heads, self.num_levels, self.num_points
        v = self.value_proj(value)
        if value_padding_mask is not None:
            v = v.masked_fill(value_padding_mask[..., None], 0.0)
        v = v.view(b, s, m, self.dim // m)
        offsets = self.sampling_offsets(query).view(b, lq, m, n_levels, n_points, 2)
        weights = self.attention_weights(query).view(b, lq, m, n_levels * n_points).softmax(-1)
        weights = weights.view(b, lq, m, n_levels, n_points)
        if reference_points.shape[-1] == 2:
            normalizer = torch.tensor([[w, h] for h, w in shapes], dtype=query.dtype, device=query.device)
            loc = reference_points[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]
        elif reference_points.shape[-1] == 4:
            loc = (
                reference_points[:, :, None, :, None, :2]
                + offsets / n_points * reference_points[:, :, None, :, None, 2:] * 0.5
            )
        else:
            raise ValueError(f"reference_points last dim must be 2 or 4, got {reference_points.shape[-1]}")
        return self.output_proj(ms_deform_attn_core(v, shapes, loc, weights))


def flatten_levels(
    features: Sequence[torch.Tensor],
) -> tuple[torch.Tensor, list[tuple[int, int]], torch.Tensor]:
    """Feature maps [(B, C, H_l, W_l)] -> (tokens (B, sum H_l W_l, C), shapes, level start indices)."""
    shapes = [(int(f.shape[-2]), int(f.shape[-1])) for f in features]
    flat = torch.cat([f.flatten(2).transpose(1, 2) for f in features], dim=1)
    sizes = torch.tensor([h * w for h, w in shapes], dtype=torch.long)
    start = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    return flat, shapes, start


def level_reference_points(
    spatial_shapes: torch.Tensor | Sequence[tuple[int, int]], device: torch.device | str | None = None
) -> torch.Tensor:
    """Normalised (x, y) pixel centres of every token of every level, (S, 2) (encoder reference points)."""
    pts = []
    for h, w in _shapes_list(spatial_shapes):
        ys, xs = torch.meshgrid(
            (torch.arange(h, dtype=torch.float32, device=device) + 0.5) / h,
            (torch.arange(w, dtype=torch.float32, device=device) + 0.5) / w,
            indexing="ij",
        )
        pts.append(torch.stack([xs.reshape(-1), ys.reshape(-1)], -1))
    return torch.cat(pts, 0)


# --------------------------------------------------------------------------- pooling


def gem(x: torch.Tensor, p: float | torch.Tensor = 3.0, *, eps: float = 1e-6, dim: int | Sequence[int] = (-2, -1)):
    """Generalized mean pooling ``mean(clamp(x, eps)^p)^(1/p)`` over ``dim`` (Radenović et al. 2018).

    p = 1 is average pooling, p -> inf approaches max pooling. GS-Pose's RA-Encoder pools with it.
    """
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    return x.clamp(min=eps).pow(p).mean(dim=dims).pow(1.0 / p)


class GeM(nn.Module):
    """Generalized mean pooling with a learnable (or fixed) exponent; (B, C, H, W) -> (B, C) by default."""

    def __init__(self, p: float = 3.0, *, eps: float = 1e-6, learnable: bool = True, dim: Sequence[int] = (-2, -1)):
        super().__init__()
        self.eps = eps
        self.dim = tuple(dim)
        if learnable:
            self.p = nn.Parameter(torch.tensor([float(p)]))
        else:
            self.register_buffer("p", torch.tensor([float(p)]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gem(x, self.p, eps=self.eps, dim=self.dim)
