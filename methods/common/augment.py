"""Joint image / mask / depth augmentations in pure torch (STORM, appendix D).

Every transform takes a ``Sample`` — an image (C, H, W) float in [0, 1], any number of masks ((H, W) or
(N, H, W), bool or integer) and an optional depth map (H, W) — and a ``torch.Generator``; geometric
transforms move all of them with the same warp (image bicubic/bilinear, masks and depth nearest, so
labels and depth values are never blended), photometric ones touch the image only. Randomness comes
only from the generator passed in (a ``torch.Generator``, an ``np.random.Generator`` or an int seed),
so a sample's augmentation is reproducible from ``derive_seed(seed, epoch, index)`` in any worker.

``storm_som_augmentation`` is the paper's pipeline: ColorJitter(0.3, 0.3, 0.3, 0.1), horizontal flip
p=0.5, RandomAffine(rotation ±180°, scale [0.95, 1.05], shear ±25°; bicubic image, nearest mask),
optional resize-shorter-side + centre crop, RandomErasing(p=0.5, 2-10 % of the area, aspect 0.3-3.3,
random values in the image, zeros in the mask). ImageNet normalisation is left to the backbone's
``preprocess``. Geometric transforms do not update camera intrinsics or poses: they are meant for
segmentation/feature training (SOM), not for pose labels.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

GeneratorLike = torch.Generator | np.random.Generator | int
Interpolation = Literal["nearest", "bilinear", "bicubic"]
MaskInput = torch.Tensor | Sequence[torch.Tensor] | None


@dataclass(frozen=True)
class Sample:
    """An image with the masks and depth that must stay aligned with it."""

    image: torch.Tensor
    masks: tuple[torch.Tensor, ...] = ()
    depth: torch.Tensor | None = None

    @property
    def size(self) -> tuple[int, int]:
        return int(self.image.shape[-2]), int(self.image.shape[-1])

    def replace(self, **changes: object) -> Sample:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Augmented:
    """Result of calling a transform: ``mask`` has the structure it was given (tensor, tuple or None)."""

    image: torch.Tensor
    mask: torch.Tensor | tuple[torch.Tensor, ...] | None
    depth: torch.Tensor | None


def as_generator(generator: GeneratorLike) -> torch.Generator:
    """A CPU ``torch.Generator``: as given, seeded from an int, or seeded by one draw from a numpy generator."""
    if isinstance(generator, torch.Generator):
        if generator.device.type != "cpu":
            raise ValueError("augmentations draw their parameters from a CPU torch.Generator")
        return generator
    if isinstance(generator, np.random.Generator):
        return torch.Generator().manual_seed(int(generator.integers(0, 2**63 - 1)))
    if isinstance(generator, int | np.integer) and not isinstance(generator, bool):
        return torch.Generator().manual_seed(int(generator))
    raise TypeError(f"expected a torch.Generator, np.random.Generator or int seed, got {type(generator).__name__}")


def make_sample(image: torch.Tensor, mask: MaskInput = None, depth: torch.Tensor | None = None) -> Sample:
    """Validate shapes and dtypes and wrap them in a ``Sample``."""
    if not isinstance(image, torch.Tensor) or image.ndim != 3 or not image.is_floating_point():
        raise TypeError("image must be a float tensor (C, H, W) with values in [0, 1]")
    hw = tuple(image.shape[-2:])
    masks: tuple[torch.Tensor, ...]
    if mask is None:
        masks = ()
    elif isinstance(mask, torch.Tensor):
        masks = (mask,)
    else:
        masks = tuple(mask)
    for i, m in enumerate(masks):
        if not isinstance(m, torch.Tensor) or m.ndim not in (2, 3) or tuple(m.shape[-2:]) != hw:
            raise ValueError(f"mask {i} must be (H, W) or (N, H, W) with H, W = {hw}, got {getattr(m, 'shape', m)}")
        if m.is_floating_point() or m.is_complex():
            raise TypeError(f"mask {i} must be bool or integer, got {m.dtype}")
    if depth is not None and (not isinstance(depth, torch.Tensor) or tuple(depth.shape) != hw):
        raise ValueError(f"depth must be (H, W) = {hw}, got {getattr(depth, 'shape', depth)}")
    return Sample(image, masks, depth)


def _unwrap(sample: Sample, mask: MaskInput) -> Augmented:
    out_mask: torch.Tensor | tuple[torch.Tensor, ...] | None
    if mask is None:
        out_mask = None
    elif isinstance(mask, torch.Tensor):
        out_mask = sample.masks[0]
    else:
        out_mask = sample.masks
    return Augmented(sample.image, out_mask, sample.depth)


def _rand(gen: torch.Generator) -> float:
    return float(torch.rand((), generator=gen, dtype=torch.float64))


def _uniform(gen: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * _rand(gen)


def _randint(gen: torch.Generator, lo: int, hi: int) -> int:
    """Uniform integer in [lo, hi)."""
    return int(torch.randint(lo, hi, (), generator=gen))


def _range(value: float | Sequence[float] | None, name: str, center: float = 0.0) -> tuple[float, float]:
    """``v`` -> (center - v, center + v); a pair is taken as is."""
    if value is None:
        return center, center
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
        return center - float(value), center + float(value)
    lo, hi = (float(v) for v in value)
    if lo > hi:
        raise ValueError(f"{name} range must be (min, max), got {(lo, hi)}")
    return lo, hi


class Transform(abc.ABC):
    """A (random) transform of a ``Sample``; parameters are drawn from the generator passed in."""

    @abc.abstractmethod
    def apply(self, sample: Sample, gen: torch.Generator) -> Sample:
        """Transform ``sample`` using ``gen`` for every random draw."""

    def __call__(
        self,
        image: torch.Tensor,
        mask: MaskInput = None,
        depth: torch.Tensor | None = None,
        *,
        generator: GeneratorLike,
    ) -> Augmented:
        """Augment ``image`` with its ``mask`` (tensor or sequence of tensors) and ``depth``."""
        sample = self.apply(make_sample(image, mask, depth), as_generator(generator))
        return _unwrap(sample, mask)


class Compose(Transform):
    """Apply transforms in order, all drawing from the same generator."""

    def __init__(self, transforms: Sequence[Transform]):
        self.transforms = list(transforms)

    def apply(self, sample: Sample, gen: torch.Generator) -> Sample:
        for t in self.transforms:
            sample = t.apply(sample, gen)
        return sample

    def __repr__(self) -> str:
        inner = ",\n  ".join(repr(t) for t in self.transforms)
        return f"Compose([\n  {inner}\n])"


# --------------------------------------------------------------------------- photometric (image only)


def rgb_to_grayscale(image: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma (1, H, W) of an RGB image (a 1-channel image is returned as is)."""
    if image.shape[-3] == 1:
        return image
    r, g, b = image.unbind(-3)
    return (0.299 * r + 0.587 * g + 0.114 * b).unsqueeze(-3)


def _blend(a: torch.Tensor, b: torch.Tensor | float, factor: float) -> torch.Tensor:
    return (factor * a + (1.0 - factor) * b).clamp(0.0, 1.0)


def adjust_brightness(image: torch.Tensor, factor: float) -> torch.Tensor:
    return image if factor == 1.0 else (image * factor).clamp(0.0, 1.0)


def adjust_contrast(image: torch.Tensor, factor: float) -> torch.Tensor:
    if factor == 1.0:
        return image
    return _blend(image, rgb_to_grayscale(image).mean(dim=(-3, -2, -1), keepdim=True), factor)


def adjust_saturation(image: torch.Tensor, factor: float) -> torch.Tensor:
    if factor == 1.0 or image.shape[-3] != 3:
        return image
    return _blend(image, rgb_to_grayscale(image), factor)


def _rgb_to_hsv(image: torch.Tensor) -> torch.Tensor:
    r, g, b = image.unbind(-3)
    maxc = image.amax(-3)
    minc = image.amin(-3)
    eqc = maxc == minc
    cr = maxc - minc
    ones = torch.ones_like(maxc)
    s = cr / torch.where(eqc, ones, maxc)
    div = torch.where(eqc, ones, cr)
    rc, gc, bc = (maxc - r) / div, (maxc - g) / div, (maxc - b) / div
    hr = (maxc == r) * (bc - gc)
    hg = ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
    hb = ((maxc != g) & (maxc != r)) * (4.0 + gc - rc)
    h = torch.fmod((hr + hg + hb) / 6.0 + 1.0, 1.0)
    return torch.stack((h, s, maxc), dim=-3)


def _hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    h, s, v = hsv.unbind(-3)
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.to(torch.int64) % 6
    p = (v * (1.0 - s)).clamp(0.0, 1.0)
    q = (v * (1.0 - s * f)).clamp(0.0, 1.0)
    t = (v * (1.0 - s * (1.0 - f))).clamp(0.0, 1.0)
    sector = (i.unsqueeze(-3) == torch.arange(6, device=i.device).view(-1, 1, 1)).to(hsv.dtype)
    a1 = torch.stack((v, q, p, p, t, v), dim=-3)
    a2 = torch.stack((t, v, v, q, p, p), dim=-3)
    a3 = torch.stack((p, p, t, v, v, q), dim=-3)
    return torch.einsum("...ijk,...xijk->...xjk", sector, torch.stack((a1, a2, a3), dim=-4))


def adjust_hue(image: torch.Tensor, shift: float) -> torch.Tensor:
    """Rotate the hue by ``shift`` turns (in [-0.5, 0.5]) through HSV."""
    if shift == 0.0 or image.shape[-3] != 3:
        return image
    hsv = _rgb_to_hsv(image)
    h = torch.remainder(hsv[..., 0, :, :] + shift, 1.0)
    return _hsv_to_rgb(torch.stack((h, hsv[..., 1, :, :], hsv[..., 2, :, :]), dim=-3))


class ColorJitter(Transform):
    """Random brightness, contrast, saturation (factors in [max(0, 1 - v), 1 + v]) and hue shift (±h), image only.

    The four adjustments are applied in a random order, as torchvision does.
    """

    def __init__(
        self,
        brightness: float = 0.0,
        contrast: float = 0.0,
        saturation: float = 0.0,
        hue: float = 0.0,
        p: float = 1.0,
    ):
        for name, v in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
            if v < 0:
                raise ValueError(f"{name} must be >= 0, got {v}")
        if not 0 <= hue <= 0.5:
            raise ValueError(f"hue must be in [0, 0.5], got {hue}")
        self.brightness, self.contrast, self.saturation, self.hue, self.p = brightness, contrast, saturation, hue, p

    def apply(self, sample: Sample, gen: torch.Generator) -> Sample:
        if _rand(gen) >= self.p:
            return sample
        order = torch.randperm(4, generator=gen).tolist()
        b = _uniform(gen, max(0.0, 1 - self.brightness), 1 + self.brightness) if self.brightness else 1.0
        c = _uniform(gen, max(0.0, 1 - self.contrast), 1 + self.contrast) if self.contrast else 1.0
        s = _uniform(gen, max(0.0, 1 - self.saturation), 1 + self.saturation) if self.saturation else 1.0
        h = _uniform(gen, -self.hue, self.hue) if self.hue else 0.0
        ops = (
            lambda x: adjust_brightness(x, b),
            lambda x: adjust_contrast(x, c),
            lambda x: adjust_saturation(x, s),
            lambda x: adjust_hue(x, h),
        )
        image = sample.image
        for i in order:
            image = ops[i](image)
        return sample.replace(image=image)

    def __repr__(self) -> str:
        return (
            f"ColorJitter(brightness={self.brightness}, contrast={self.contrast}, "
            f"saturation={self.saturation}, hue={self.hue}, p={self.p})"
        )


class GaussianNoise(Transform):
    """Add zero-mean Gaussian noise with std drawn from ``std`` (image only, clamped to [0, 1])."""

    def __init__(self, std: tuple[float, float] = (0.0, 0.03), p: float = 0.5):
        self.std, self.p = (float(std[0]), float(std[1])), p

    def apply(self, sample: Sample, gen: torch.Generator) -> Sample:
        if _rand(gen) >= self.p:
            return sample
        sigma = _uniform(gen, *self.std)
        noise = torch.randn(sample.image.shape, generator=gen, dtype=sample.image.dtype)
        return sample.replace(image=(sample.image + sigma * noise.to(sample.image.device)).clamp(0.0, 1.0))

    def __repr__(self) -> str:
        return f"GaussianNoise(std={self.std}, p={self.p})"


def gaussian_blur(image: torch.Tensor, kernel_size: int, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with reflect padding (``kernel_size`` odd)."""
    if kernel_size % 2 != 1 or kernel_size < 1:
        raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
    half = kernel_size // 2
    x = torch.arange(-half, half + 1, dtype=image.dtype, device=image.device)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = k / k.sum()
    c = image.shape[-3]
    img = image.unsqueeze(0)
    mode = "reflect" if min(image.shape[-2:]) > half else "replicate"
    img = F.pad(img, (half, half, half, half), mode=mode)
    img = F.conv2d(img, k.view(1, 1, 1, -1).expand(c, 1, 1, kernel_size), groups=c)
    img = F.conv2d(img, k.view(1, 1, -1, 1).expand(c, 1, kernel_size, 1), groups=c)
    return img.squeeze(0)


class GaussianBlur(Transform):
    """Gaussian blur with sigma drawn from ``sigma`` (image only)."""

    def __init__(self, kernel_size: int = 5, sigma: tuple[float, float] = (0.1, 2.0), p: float = 0.5):
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.kernel_size, self.sigma, self.p = kernel_size, (float(sigma[0]), float(sigma[1])), p

    def apply(self, sample: Sample, gen: torch.Generator) -> Sample:
        if _rand(gen) >= self.p:
            return sample
        return sample.replace(image=gaussian_blur(sample.image, self.kernel_size, _uniform(gen, *self.sigma)))

    def __repr__(self) -> str:
        return f"GaussianBlur(kernel_size={self.kernel_size}, sigma={self.sigma}, p={self.p})"


# --------------------------------------------------------------------------- geometric (joint)


def hflip(x: torch.Tensor) -> torch.Tensor:
    return x.flip(-1)


def vflip(x: torch.Tensor) -> torch.Tensor:
    return x.flip(-2)


def _map_all(sample: Sample, fn: Callable[[torch.Tensor], torch.Tensor]) -> Sample:
    """Apply a spatial function to the image, every mask and the depth."""
    return Sample(
        fn(sample.image), tuple(fn(m) for m in sample.masks), None if sample.depth is None else fn(sample.depth)
    )


class RandomHorizontalFlip(Transform):
    """Mirror image, masks and depth left-right with probability ``p``."""

    def __init__(self, p: float = 0.5):
        self.p = p

    def apply(self, sample: Sample, gen: torch.Generator) -> Sample:
        return _map_all(sample, hflip) if _rand(gen) < self.p else sample

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


class RandomVerticalFlip(Transform):
    """Mirror image, masks and depth top-bottom with probability ``p``."""

    def __init__(self, p: float = 0.5):
        self.p = p

    def apply(self, sample: Sample, gen: torch.Generator) -> Sample:
        return _map_all(sample, vflip) if _rand(gen) < self.p else sample

    def __repr__(self) -> str:
        return f"RandomVerticalFlip(p={self.p})"


def affine_matrix(
    size: tuple[int, int],
    angle: float = 0.0,
    translate: tuple[float, float] = (0.0, 0.0),
    scale: float = 1.0,
    shear: tuple[float, float] = (0.0, 0.0),
) -> torch.Tensor:
    """Forward 2x3 pixel-coordinate matrix (float64) about the image centre.

    Pixel centres are at integer (x, y), y down; ``angle`` in degrees, positive is counter-clockwise on
    screen; ``shear`` (x, y) in degrees; ``translate`` in pixels. ``p' = A (p - c) + c + t``.
    """
    h, w = size
    a = math.radians(angle)
    rot = torch.tensor([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]], dtype=torch.float64)
    shx = torch.tensor([[1.0, math.tan(math.radians(shear[0]))], [0.0, 1.0]], dtype=torch.float64)
    shy = torch.tensor([[1.0, 0.0], [math.tan(math.radians(shear[1])), 1.0]], dtype=torch.float64)
    lin = scale * rot @ shy @ shx
    c = torch.tensor([(w - 1) / 2.0, (h - 1) / 2.0], dtype=torch.float64)
    t = torch.tensor(translate, dtype=torch.float64)
    return torch.cat([lin, (c + t - lin @ c).unsqueeze(1)], dim=1)


def _sampling_grid(matrix: torch.Tensor, size: tuple[int, int], dtype: torch.dtype) -> torch.Tensor:
    """grid_sample grid (1, H, W, 2) reading each output pixel from ``matrix^-1 @ p`` (align_corners=False)."""
    h, w = size
    full = torch.eye(3, dtype=torch.float64)
    full[:2] = matrix
    inv = torch.linalg.inv(full)[:2]
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    pts = torch.stack([xs, ys, torch.ones_like(xs)], dim=-1) @ inv.T
    gx = (2.0 * pts[..., 0] + 1.0) / w - 1.0
    gy = (2.0 * pts[..., 1] + 1.0) / h - 1.0
    return torch.stack([gx, gy], dim=-1).unsqueeze(0).to(dtype)


def _warp_labels(x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour warp of a mask / depth / label map ((H, W) or (N, H, W)); outside -> 0."""
    work = torch.float64 if not x.is_floating_point() or x.dtype == torch.float64 else x.dtype
    stacked = x.reshape(1, -1, *x.shape[-2:]).to(work)
    out = F.grid_sample(stacked, grid.to(work), mode="nearest", padding_mode="zeros", align_corners=False)
    out = out.reshape(x.shape)
    if x.dtype == torch.bool:
        return out > 0.5
    if not x.is_floating_point():
        return out.round().to(x.dtype)
    return out


def warp_affine(
    sample: Sample, matrix: torch.Tensor, interpolation: Interpolation = "bicubic", fill: float = 0.0
) -> Sample:
    """Warp everything in ``sample`` by the forward pixel matrix (2x3); the image is clamped to [0, 1].

    Pixels that come from outside the input are ``fill`` in the image and 0 in masks and depth.
    """
    size = sample.size
    img = sample.image
    grid = _sampling_grid(matrix, size, img.dtype).to(img.device)
    out = F.grid_sample(img.unsqueeze(0), grid, mode=interpolation, padding_mode="zeros", align_corners=False)
    if fill != 0.0:
        ones = torch.ones((1, 1, *size), dtype=img.dtype, device=img.device)
        valid = F.grid_sample(ones, grid, mode="nearest", padding_mode="zeros", align_corners=False)
        out = out + (1.0 - valid) * fill
    image = out.squeeze(0).clamp(0.0, 1.0)
    masks = tuple(_warp_labels(m, grid.to(m.device)) for m in sample.masks)
    depth = None if sample.depth is None else _warp_labels(sample.depth, grid.to(sample.depth.device))
    return Sample(image, masks, depth)


class RandomAffine(Transform):
    """Random rotation, translation, scale and shear applied jointly (torchvision ``RandomAffine`` ranges).

    ``degrees`` v -> angle in [-v, v]; ``translate`` (fx, fy) -> shift up to fx*W, fy*H (whole pixels);
    ``scale`` (lo, hi); ``shear`` v -> x-shear in [-v, v], (lo, hi) -> x-shear, (xlo, xhi, ylo, yhi) ->
    both. The image uses ``interpolation`` (the paper: bicubic), masks and depth nearest. When the drawn
    transform is the identity nothing is resampled.
    """

    def __init__(
        self,
        degrees: float | tuple[float, float] = 0.0,
        translate: tuple[float, float] | None = None,
        scale: tuple[float, float] | None = None,
        shear: float | Sequence[float] | None = None,
        *,
        interpolation: Interpolation = "bicubic",
        fill: float = 0.0,
        p: float = 1.0,
    ):
        self.degrees = _range(degrees, "degrees")
        if translate is not None and not all(0.0 <= t <= 1.0 for t in translate):
            raise ValueError(f"translate fractions must be in [0, 1], got {translate}")
        self.translate = translate
        self.scale = (1.0, 1.0) if scale is None else (float(scale[0]), float(scale[1]))
        if not 0 < self.scale[0] <= self.scale[1]:
            raise ValueError(f"scale must be (min, max) with 0 < min <= max, got {scale}")
        if shear is None or isinstance(shear, int | float):
            self.shear_x, self.shear_y = _range(shear, "shear"), (0.0, 0.0)
        elif len(shear) == 2:
            self.shear_x, self.shear_y = _range(tuple(shear), "shear"), (0.0, 0.0)
        elif len(shear) == 4:
            self.shear_x, self.shear_y = _range(tuple(shear[:2]), "shear"), _range(tuple(shear[2:]), "shear")
        else:
            raise ValueError(f"shear must be a number or 2 or 4 numbers, got {shear}")
        if interpolation not in ("nearest", "bilinear", "bicubic"):
            raise ValueError(f"interpolation must be nearest, bilinear or bicubic, got {interpolation!r}")
        self.interpolation: Interpolation = interpolation
        self.fill, self.p = float(fill), p

    def sample_matrix(self, size: tuple[int, int], gen: torch.Generator) -> torch.Tensor:
        """Draw the parameters and return the forward pixel matrix (2x3, float64)."""
        h, w = size
        angle = _uniform(gen, *self.degrees)
        if self.translate is not None:
            tx = float(round(_uniform(gen, -self.translate[0] * w, self.translate[0] * w)))
            ty = float(round(_uniform(gen, -self.translate[1] * h, self.translate[1] * h)))
        else:
            tx = ty = 0.0
        scale = _uniform(gen, *self.scale)
        shear = (_uniform(gen, *self.shear_x), _uniform(gen, *self.shear_y))
        return affine_matrix(size, angle, (tx, ty), scale, shear)

    def apply(self, sample: Sample, gen: torch.Generator) -> Sample:
        if _rand(gen) >= self.p:
            return sample
        matrix = self.sample_matrix(sample.size, gen)
        if torch.equal(matrix, torch.eye(2, 3, dtype=torch.float64)):
            return sample
        return warp_affine(sample, matrix, self.interpolation, self.fill)

    def __repr__(self) -> str:
        return (
            f"RandomAffine(degrees={self.degrees}, translate={self.translate}, scale={self.scale}, "
            f"shear_x={self.shear_x}, shear_y={self.shear_y}, interpolation={self.interpolation!r}, p={self.p})"
        )


def _resize(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    if tuple(x.shape[-2:]) == size:
        return x
    if mode == "nearest-exact":
        work = torch.float64 if not x.is_floating_point() else x.dtype
        out = F.interpolate(x.reshape(1, -1, *x.shape[-2:]).to(work), size=size, mode="nearest-exact")
        out = out.reshape(*x.shape[:-2], *size)
        if x.dtype == torch.bool:
            return out > 0.5
        return out if x.is_floating_point() else out.round().to(x.dtype)
    shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    out = F.interpolate(x.unsqueeze(0), size=size, mode=mode, align_corners=False, antialias=shrink)
    return out.squeeze(0).clamp(0.0, 1.0)


class ResizeCenterCrop(Transform):
    """Resize so the image covers ``size`` (shorter side to the target for a square size), then centre-crop.

    Deterministic; image bicubic (antialiased when shrinking), masks and depth nearest.
    """

    def __init__(self, size: int | tuple[int, int]):
        self.size = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))

    def apply(self, sample: Sample, gen: torch.Generator) -> Sample:
        h, w = sample.size
        th, tw = self.size
        s = max(th / h, tw / w)
        rh, rw = max(th, round(h * s)), max(tw, round(w * s))
        top, left = (rh - th) // 2, (rw - tw) // 2

        def crop(x: torch.Tensor) -> torch.Tensor:
            return x[..., top : top + th, left : left + tw]

        return Sample(
            crop(_resize(sample.image, (rh, rw), "bicubic")),
            tuple(crop(_resize(m, (rh, rw), "nearest-exact")) for m in sample.masks),
            None if sample.depth is None else crop(_resize(sample.depth, (rh, rw), "nearest-exact")),
        )

    def __repr__(self) -> str:
        return f"ResizeCenterCrop(size={self.size})"


class RandomErasing(Transform):
    """With probability ``p`` erase a rectangle of ``scale`` x area and aspect ratio in ``ratio``.

    The image gets uniform random values in [0, 1] (``value="random"``) or a constant; masks are
    zeroed there when ``erase_mask`` (STORM: "zeros in the mask"); depth is left as is. Up to 10 draws
    are tried for a rectangle that fits (torchvision's rule); if none does, nothing is erased.
    """

    def __init__(
        self,
        p: float = 0.5,
        scale: tuple[float, float] = (0.02, 0.1),
        ratio: tuple[float, float] = (0.3, 3.3),
        value: float | Literal["random"] = "random",
        erase_mask: bool = True,
    ):
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"scale must be (min, max) within (0, 1], got {scale}")
        if not 0 < ratio[0] <= ratio[1]:
            raise ValueError(f"ratio must be (min, max) with 0 < min <= max, got {ratio}")
        self.p, self.scale, self.ratio, self.value, self.erase_mask = p, scale, ratio, value, erase_mask

    def sample_box(self, size: tuple[int, int], gen: torch.Generator) -> tuple[int, int, int, int] | None:
        """(top, left, height, width) of the rectangle, or ``None`` when no draw fits."""
        h, w = size
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        for _ in range(10):
            area = h * w * _uniform(gen, *self.scale)
            aspect = math.exp(_uniform(gen, log_lo, log_hi))
            eh, ew = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
            if 0 < eh < h and 0 < ew < w:
                return _randint(gen, 0, h - eh + 1), _randint(gen, 0, w - ew + 1), eh, ew
        return None

    def apply(self, sample: Sample, gen: torch.Generator) -> Sample:
        if _rand(gen) >= self.p:
            return sample
        box = self.sample_box(sample.size, gen)
        if box is None:
            return sample
        top, left, eh, ew = box
        image = sample.image.clone()
        c = image.shape[-3]
        if self.value == "random":
            patch = torch.rand((c, eh, ew), generator=gen, dtype=image.dtype).to(image.device)
        else:
            patch = torch.full((c, eh, ew), float(self.value), dtype=image.dtype, device=image.device)
        image[..., top : top + eh, left : left + ew] = patch
        masks = sample.masks
        if self.erase_mask:
            cleared = []
            for m in masks:
                m = m.clone()
                m[..., top : top + eh, left : left + ew] = 0
                cleared.append(m)
            masks = tuple(cleared)
        return Sample(image, masks, sample.depth)

    def __repr__(self) -> str:
        return (
            f"RandomErasing(p={self.p}, scale={self.scale}, ratio={self.ratio}, value={self.value!r}, "
            f"erase_mask={self.erase_mask})"
        )


def storm_som_augmentation(size: int | tuple[int, int] | None = None) -> Compose:
    """STORM's SOM training augmentation (appendix D), with an optional resize + centre crop to ``size``.

    The appendix's affine has no translation (the training-details paragraph mentions "random
    rotations and translations"; appendix D's list is followed).
    """
    transforms: list[Transform] = [
        ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.1),
        RandomHorizontalFlip(p=0.5),
        RandomAffine(degrees=180.0, scale=(0.95, 1.05), shear=25.0, interpolation="bicubic"),
    ]
    if size is not None:
        transforms.append(ResizeCenterCrop(size))
    transforms.append(RandomErasing(p=0.5, scale=(0.02, 0.1), ratio=(0.3, 3.3), value="random", erase_mask=True))
    return Compose(transforms)
