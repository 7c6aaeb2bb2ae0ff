"""Joint augmentations: alignment of image, masks and depth; identities; involutions; seeded determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from methods.common.augment import (
    ColorJitter,
    Compose,
    GaussianBlur,
    GaussianNoise,
    RandomAffine,
    RandomErasing,
    RandomHorizontalFlip,
    RandomVerticalFlip,
    ResizeCenterCrop,
    Sample,
    adjust_hue,
    affine_matrix,
    hflip,
    storm_som_augmentation,
    vflip,
    warp_affine,
)

H, W = 48, 64


def scene(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A textured background with a red rectangle; its mask; a depth map that is 500 on it, 900 elsewhere."""
    g = torch.Generator().manual_seed(seed)
    image = 0.3 * torch.rand(3, H, W, generator=g)
    mask = torch.zeros(H, W, dtype=torch.bool)
    mask[14:34, 18:46] = True
    image[:, mask] = torch.tensor([1.0, 0.0, 0.0]).unsqueeze(1)
    depth = torch.where(mask, 500.0, 900.0)
    return image, mask, depth


def erode(mask: torch.Tensor, r: int = 2) -> torch.Tensor:
    inv = (~mask).float()[None, None]
    return F.max_pool2d(inv, 2 * r + 1, stride=1, padding=r)[0, 0] == 0


def dilate(mask: torch.Tensor, r: int = 2) -> torch.Tensor:
    return F.max_pool2d(mask.float()[None, None], 2 * r + 1, stride=1, padding=r)[0, 0] > 0


@pytest.mark.parametrize("seed", range(6))
def test_geometric_transforms_keep_image_mask_and_depth_aligned(seed: int) -> None:
    image, mask, depth = scene()
    aug = Compose(
        [
            RandomHorizontalFlip(0.5),
            RandomVerticalFlip(0.5),
            RandomAffine(degrees=180, translate=(0.1, 0.1), scale=(0.8, 1.2), shear=(-25, 25, -10, 10)),
        ]
    )
    out = aug(image, mask, depth, generator=seed)
    m = out.mask
    assert isinstance(m, torch.Tensor) and m.dtype == torch.bool and m.shape == (H, W)
    assert 0.6 * mask.sum() < m.sum() < 1.5 * mask.sum()
    red = (out.image[0] > 0.6) & (out.image[1] < 0.4)
    inner = erode(m)
    assert inner.any() and red[inner].all()  # every pixel well inside the warped mask is the red rectangle
    assert not (red & ~dilate(m)).any()  # and no red pixel lies away from it
    assert out.depth is not None
    assert torch.equal(out.depth == 500.0, m)  # depth and mask use the same nearest warp
    assert set(out.depth.unique().tolist()) <= {0.0, 500.0, 900.0}  # never interpolated


def test_affine_matches_opencv_convention() -> None:
    cv2 = pytest.importorskip("cv2")
    g = torch.Generator().manual_seed(1)
    mask = torch.rand(H, W, generator=g) > 0.5
    matrix = affine_matrix((H, W), angle=33.0, translate=(3.0, -2.0), scale=1.03, shear=(12.0, 0.0))
    out = warp_affine(Sample(torch.zeros(3, H, W), (mask,)), matrix, "nearest").masks[0]
    ref = cv2.warpAffine(mask.numpy().astype(np.uint8), matrix.numpy(), (W, H), flags=cv2.INTER_NEAREST)
    # OpenCV rounds source coordinates in 1/1024-pixel fixed point: a few ties go the other way; a wrong
    # convention (direction, centre, half-pixel offset) would disagree on about half of this random mask
    assert (out.numpy() != ref.astype(bool)).mean() < 0.02


def test_flips_are_involutions() -> None:
    image, mask, depth = scene()
    assert torch.equal(hflip(hflip(image)), image) and torch.equal(vflip(vflip(mask)), mask)
    for flip in (RandomHorizontalFlip(p=1.0), RandomVerticalFlip(p=1.0)):
        once = flip(image, mask, depth, generator=0)
        assert not torch.equal(once.image, image)
        twice = flip(once.image, once.mask, once.depth, generator=0)
        assert torch.equal(twice.image, image) and torch.equal(twice.mask, mask) and torch.equal(twice.depth, depth)
    once = RandomHorizontalFlip(p=1.0)(image, mask, generator=0)
    assert torch.equal(once.mask, mask.flip(-1)) and torch.equal(once.image, image.flip(-1))


def test_identity_parameters_give_identity() -> None:
    image, mask, depth = scene()
    identities = [
        RandomAffine(degrees=0.0, translate=None, scale=(1.0, 1.0), shear=None),
        ColorJitter(0.0, 0.0, 0.0, 0.0),
        RandomErasing(p=0.0),
        RandomHorizontalFlip(p=0.0),
        ResizeCenterCrop((H, W)),
        GaussianBlur(p=0.0),
        GaussianNoise(p=0.0),
    ]
    out = Compose(identities)(image, mask, depth, generator=3)
    assert torch.equal(out.image, image) and torch.equal(out.mask, mask) and torch.equal(out.depth, depth)
    # forcing the resampling path with the identity matrix reproduces the input as well
    warped = warp_affine(Sample(image, (mask,), depth), affine_matrix((H, W)), "bicubic")
    torch.testing.assert_close(warped.image, image, atol=1e-5, rtol=0)
    assert torch.equal(warped.masks[0], mask) and torch.equal(warped.depth, depth)


def test_same_seed_same_output_and_no_global_rng_use() -> None:
    image, mask, depth = scene()
    aug = storm_som_augmentation()
    torch.manual_seed(0)
    before = torch.get_rng_state()
    a = aug(image, mask, depth, generator=torch.Generator().manual_seed(11))
    b = aug(image, mask, depth, generator=11)
    c = aug(image, mask, depth, generator=12)
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(a.image, b.image) and torch.equal(a.mask, b.mask) and torch.equal(a.depth, b.depth)
    assert not torch.equal(a.image, c.image)
    n1 = aug(image, mask, generator=np.random.default_rng(5))
    n2 = aug(image, mask, generator=np.random.default_rng(5))
    assert torch.equal(n1.image, n2.image) and torch.equal(n1.mask, n2.mask)
    gen = torch.Generator().manual_seed(11)
    first, second = aug(image, mask, generator=gen), aug(image, mask, generator=gen)
    assert not torch.equal(first.image, second.image)  # a shared generator advances


def test_color_jitter_changes_image_only() -> None:
    image, mask, depth = scene()
    jitter = ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.1)
    out = jitter(image, mask, depth, generator=4)
    assert out.mask is mask and out.depth is depth
    assert not torch.equal(out.image, image)
    assert out.image.min() >= 0.0 and out.image.max() <= 1.0
    assert (out.image - image).abs().max() < 0.8


def test_hue_shift_round_trip() -> None:
    image, _, _ = scene()
    torch.testing.assert_close(adjust_hue(adjust_hue(image, 0.25), -0.25), image, atol=1e-5, rtol=0)
    red = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1)
    torch.testing.assert_close(adjust_hue(red, 1 / 3), torch.tensor([0.0, 1.0, 0.0]).view(3, 1, 1), atol=1e-6, rtol=0)


def test_random_erasing_follows_the_paper() -> None:
    image, mask, depth = scene()
    full = torch.ones(H, W, dtype=torch.bool)
    erase = RandomErasing(p=1.0, scale=(0.02, 0.1), ratio=(0.3, 3.3), value="random", erase_mask=True)
    for seed in range(10):
        out = erase(image, full, depth, generator=seed)
        frac = 1.0 - out.mask.float().mean().item()
        assert 0.015 <= frac <= 0.11
        erased = ~out.mask
        assert not torch.equal(out.image[:, erased], image[:, erased])
        assert torch.equal(out.image[:, ~erased], image[:, ~erased])
        assert torch.equal(out.depth, depth)
    kept = RandomErasing(p=1.0, erase_mask=False)(image, mask, generator=0)
    assert torch.equal(kept.mask, mask) and not torch.equal(kept.image, image)


def test_several_masks_dtypes_and_stacks() -> None:
    image, mask, _ = scene()
    labels = mask.to(torch.uint8) * 7
    stack = torch.stack([mask, ~mask])
    aug = RandomAffine(degrees=90, scale=(0.9, 1.1))
    out = aug(image, [mask, labels, stack], generator=2)
    assert isinstance(out.mask, tuple) and len(out.mask) == 3
    m, lab, st = out.mask
    assert lab.dtype == torch.uint8 and set(lab.unique().tolist()) <= {0, 7}
    assert torch.equal(lab == 7, m)
    assert st.shape == (2, H, W) and st.dtype == torch.bool and torch.equal(st[0], m)
    assert out.depth is None


def test_storm_preset_and_resize_crop() -> None:
    image, mask, depth = scene()
    aug = storm_som_augmentation(size=32)
    out = aug(image, mask, depth, generator=0)
    assert out.image.shape == (3, 32, 32) and out.mask.shape == (32, 32) and out.depth.shape == (32, 32)
    assert out.image.dtype == image.dtype and out.mask.dtype == torch.bool
    assert 0.0 <= out.image.min() and out.image.max() <= 1.0
    names = [type(t).__name__ for t in aug.transforms]
    assert names == ["ColorJitter", "RandomHorizontalFlip", "RandomAffine", "ResizeCenterCrop", "RandomErasing"]
    affine = aug.transforms[2]
    assert isinstance(affine, RandomAffine)
    assert affine.degrees == (-180.0, 180.0) and affine.scale == (0.95, 1.05) and affine.shear_x == (-25.0, 25.0)
    crop = ResizeCenterCrop(24)(image, mask, generator=0)
    assert crop.image.shape == (3, 24, 24) and crop.mask.shape == (24, 24)


def test_blur_and_noise_touch_the_image_only() -> None:
    image, mask, depth = scene()
    for t in (GaussianBlur(kernel_size=5, p=1.0), GaussianNoise(std=(0.05, 0.05), p=1.0)):
        out = t(image, mask, depth, generator=0)
        assert out.mask is mask and out.depth is depth
        assert out.image.shape == image.shape and not torch.equal(out.image, image)


def test_bad_inputs_are_rejected() -> None:
    image, mask, _ = scene()
    with pytest.raises(TypeError, match="float"):
        RandomHorizontalFlip()((image * 255).to(torch.uint8), mask, generator=0)
    with pytest.raises(ValueError, match="mask 0"):
        RandomHorizontalFlip()(image, mask[:-1], generator=0)
    with pytest.raises(TypeError, match="bool or integer"):
        RandomHorizontalFlip()(image, mask.float(), generator=0)
    with pytest.raises(ValueError, match="depth"):
        RandomHorizontalFlip()(image, mask, torch.zeros(3, 3), generator=0)
    with pytest.raises(TypeError, match="Generator"):
        RandomHorizontalFlip()(image, mask, generator="seed")  # type: ignore[arg-type]
