"""Losses in methods.common.losses against hand-computed values on tiny tensors."""

from __future__ import annotations

import math

import pytest
import torch

from methods.common.losses import dice_loss, laplace_nll, sigmoid_focal_loss, soft_iou_loss, tversky_loss

P = torch.tensor([[1.0, 0.2, 0.6, 0.5]])
T = torch.tensor([[1.0, 0.0, 1.0, 0.0]])


def test_focal_loss_hand_values():
    logits = torch.zeros(2)
    target = torch.tensor([1.0, 0.0])
    # p = 0.5 everywhere: ce = ln 2, (1 - p_t)^2 = 0.25, alpha_t = 0.25 / 0.75
    expected = torch.tensor([0.25 * 0.25 * math.log(2), 0.75 * 0.25 * math.log(2)])
    torch.testing.assert_close(sigmoid_focal_loss(logits, target, reduction="none"), expected)
    torch.testing.assert_close(sigmoid_focal_loss(logits, target), expected.mean())
    torch.testing.assert_close(sigmoid_focal_loss(logits, target, reduction="sum"), expected.sum())
    # STORM Eq. (3) form without alpha, on probabilities: -(1 - p)^gamma ln p for t = 1
    p = torch.tensor([0.9])
    val = sigmoid_focal_loss(p, torch.ones(1), alpha=None, gamma=2.0, from_logits=False)
    assert val.item() == pytest.approx(-(0.1**2) * math.log(0.9), rel=1e-5)


def test_focal_loss_matches_probability_form():
    logits = torch.randn(3, 5, generator=torch.Generator().manual_seed(0))
    target = (torch.rand(3, 5, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    a = sigmoid_focal_loss(logits, target, reduction="none")
    b = sigmoid_focal_loss(logits.sigmoid(), target, reduction="none", from_logits=False)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_dice_tversky_iou_hand_values():
    # TP = 1.6, FP = 0.7, FN = 0.4, sum p = 2.3, sum t = 2
    assert dice_loss(P, T, smooth=0, from_logits=False).item() == pytest.approx(1 - 3.2 / 4.3, rel=1e-6)
    expected_t = 1 - 1.6 / (1.6 + 0.3 * 0.4 + 0.7 * 0.7)
    assert tversky_loss(P, T, alpha=0.3, beta=0.7, smooth=0, from_logits=False).item() == pytest.approx(expected_t)
    assert soft_iou_loss(P, T, smooth=0, from_logits=False).item() == pytest.approx(1 - 1.6 / 2.7, rel=1e-6)
    # Tversky with alpha = beta = 0.5 is dice
    torch.testing.assert_close(
        tversky_loss(P, T, alpha=0.5, beta=0.5, smooth=0, from_logits=False),
        dice_loss(P, T, smooth=0, from_logits=False),
    )


def test_region_losses_per_sample_and_logits():
    p = torch.cat([P, torch.tensor([[0.0, 0.0, 0.0, 0.0]])])
    t = torch.cat([T, torch.tensor([[0.0, 0.0, 0.0, 0.0]])])
    per = dice_loss(p, t, smooth=1.0, from_logits=False, reduction="none")
    assert per.shape == (2,)
    assert per[1].item() == 0.0  # empty prediction of an empty mask: perfect, finite thanks to smooth
    logits = torch.logit(P.clamp(1e-4, 1 - 1e-4))
    torch.testing.assert_close(
        soft_iou_loss(logits, T, smooth=0), soft_iou_loss(P.clamp(1e-4, 1 - 1e-4), T, smooth=0, from_logits=False)
    )


def test_laplace_nll_hand_values_and_optimum():
    mean = torch.tensor([1.0])
    target = torch.tensor([3.0])
    log_b = torch.tensor([math.log(2.0)], requires_grad=True)
    nll = laplace_nll(mean, target, log_b)
    assert nll.item() == pytest.approx(1.0 + 2 * math.log(2.0))
    assert laplace_nll(mean, target, log_b, include_constant=False).item() == pytest.approx(1.0 + math.log(2.0))
    nll.backward()  # b = |mu - y| is the optimum of the scale
    assert abs(log_b.grad.item()) < 1e-6


def test_laplace_nll_broadcast_and_mask():
    mean = torch.zeros(1, 2, 2, 2)
    target = torch.ones(1, 2, 2, 2)
    log_b = torch.zeros(1, 1, 2, 2)
    mask = torch.tensor([[[[True, False], [False, False]]]])
    val = laplace_nll(mean, target, log_b, mask=mask)
    assert val.item() == pytest.approx(1.0 + math.log(2.0))
    # Co-op Eq. (9): summing the two flow components gives |d|_1 / b + 2 log b (+ 2 log 2)
    per = laplace_nll(mean, target, log_b, include_constant=False, reduction="none").sum(1)
    torch.testing.assert_close(per, torch.full((1, 2, 2), 2.0))
    big = torch.full((1, 2, 2, 2), float("inf"))
    masked = laplace_nll(big, target, log_b, mask=torch.zeros(1, 1, 2, 2, dtype=torch.bool), reduction="sum")
    assert masked.item() == 0.0


def test_bad_reduction():
    with pytest.raises(ValueError, match="reduction"):
        dice_loss(P, T, reduction="avg")  # type: ignore[arg-type]
