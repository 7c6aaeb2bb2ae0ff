"""Losses shared by the methods.

Mask losses take logits by default (``from_logits=False`` for probabilities) and are computed per
sample over all non-batch dimensions, then reduced over the batch. Region losses (dice, Tversky,
soft IoU) use a ``smooth`` term in numerator and denominator so empty masks give a finite loss.

- ``sigmoid_focal_loss``: Lin et al. 2017 (RetinaNet), torchvision semantics; STORM uses alpha=0.25,
  gamma=2 (appendix) and the alpha-free form of Eq. (3) is ``alpha=None``.
- ``tversky_loss``: STORM Eq. (4), ``1 - TP / (TP + alpha FN + beta FP)`` (note: alpha weights the
  false negatives, beta the false positives, as written in STORM; STORM uses alpha=0.3, beta=0.7).
- ``laplace_nll``: Co-op Eq. (9) probabilistic flow loss, ``|mu - y| / b + log b (+ log 2)``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

Reduction = Literal["mean", "sum", "none"]


def _reduce(x: torch.Tensor, reduction: Reduction) -> torch.Tensor:
    if reduction == "mean":
        return x.mean()
    if reduction == "sum":
        return x.sum()
    if reduction == "none":
        return x
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _probs(pred: torch.Tensor, from_logits: bool) -> torch.Tensor:
    return pred.sigmoid() if from_logits else pred


def sigmoid_focal_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    alpha: float | None = 0.25,
    gamma: float = 2.0,
    reduction: Reduction = "mean",
    from_logits: bool = True,
) -> torch.Tensor:
    """Element-wise binary focal loss ``-alpha_t (1 - p_t)^gamma log p_t`` (``alpha=None``: no weighting).

    ``reduction='mean'`` averages over all elements (torchvision's ``sigmoid_focal_loss``).
    """
    target = target.to(pred.dtype)
    if from_logits:
        p = pred.sigmoid()
        ce = F.binary_cross_entropy_with_logits(pred, target, reduction="none")
    else:
        p = pred
        ce = F.binary_cross_entropy(pred, target, reduction="none")
    p_t = p * target + (1 - p) * (1 - target)
    loss = ce * (1 - p_t) ** gamma
    if alpha is not None and alpha >= 0:
        loss = (alpha * target + (1 - alpha) * (1 - target)) * loss
    return _reduce(loss, reduction)


def _region_sums(
    pred: torch.Tensor, target: torch.Tensor, from_logits: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    p = _probs(pred, from_logits).flatten(1)
    t = target.to(p.dtype).flatten(1)
    tp = (p * t).sum(1)
    fp = (p * (1 - t)).sum(1)
    fn = ((1 - p) * t).sum(1)
    return tp, fp, fn


def dice_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    smooth: float = 1.0,
    reduction: Reduction = "mean",
    from_logits: bool = True,
) -> torch.Tensor:
    """Soft dice ``1 - (2 sum(p t) + s) / (sum p + sum t + s)`` per sample (Milletari et al. 2016)."""
    tp, fp, fn = _region_sums(pred, target, from_logits)
    loss = 1 - (2 * tp + smooth) / (2 * tp + fp + fn + smooth)
    return _reduce(loss, reduction)


def tversky_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    alpha: float = 0.3,
    beta: float = 0.7,
    smooth: float = 1.0,
    reduction: Reduction = "mean",
    from_logits: bool = True,
) -> torch.Tensor:
    """Soft Tversky loss, STORM Eq. (4): ``1 - (TP + s) / (TP + alpha FN + beta FP + s)`` per sample.

    ``alpha`` weights false negatives and ``beta`` false positives (STORM's convention; Salehi et al.
    2017 name them the other way round). ``alpha = beta = 0.5`` is the dice loss.
    """
    tp, fp, fn = _region_sums(pred, target, from_logits)
    loss = 1 - (tp + smooth) / (tp + alpha * fn + beta * fp + smooth)
    return _reduce(loss, reduction)


def soft_iou_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    smooth: float = 1.0,
    reduction: Reduction = "mean",
    from_logits: bool = True,
) -> torch.Tensor:
    """Soft Jaccard ``1 - (sum(p t) + s) / (sum p + sum t - sum(p t) + s)`` per sample."""
    tp, fp, fn = _region_sums(pred, target, from_logits)
    loss = 1 - (tp + smooth) / (tp + fp + fn + smooth)
    return _reduce(loss, reduction)


def laplace_nll(
    mean: torch.Tensor,
    target: torch.Tensor,
    log_scale: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    include_constant: bool = True,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """Negative log-likelihood of ``target`` under Laplace(``mean``, b = exp(``log_scale``)), element-wise.

    ``log_scale`` broadcasts against ``mean`` (e.g. one scale for both flow components, Co-op Eq. 9:
    summing the two components gives ``|mu - y|_1 / b + 2 log b``). ``mask`` (broadcastable, bool or
    0/1) selects the elements that count; ``'mean'`` then averages over the selected elements.
    Predicting the log of the scale keeps ``b`` positive without a clamp.
    """
    nll = (mean - target).abs() * torch.exp(-log_scale) + log_scale
    if include_constant:
        nll = nll + math.log(2.0)
    if mask is None:
        return _reduce(nll, reduction)
    m = mask.to(nll.dtype).expand_as(nll)
    nll = torch.where(m > 0, nll * m, torch.zeros_like(nll))
    if reduction == "mean":
        return nll.sum() / m.sum().clamp_min(1.0)
    return _reduce(nll, reduction)
