"""Batched image augmentation on the device: one call augments a whole batch.

Input: uint8 images [B, H, W, 3] (HWC, the layout of the dataset files, kept on the device by
the training engine) on any device. Output: float32 [B, 3, size, size], normalised, on the same
device. Random parameters come from the `torch.Generator` passed in, drawn in a fixed order and
number per batch, so a run resumed with the generator's saved state is bit-identical. Parameters
are drawn on the generator's device; a CPU generator therefore gives the same augmentations on
CPU and GPU.

Pipeline (the SimCLR / BYOL order): [AutoAugment] -> random resized crop -> horizontal flip ->
colour jitter (with probability jitter_p) -> random grayscale -> Gaussian blur -> solarisation ->
normalise.

Semantics, compared with torchvision's per-image transforms:
- Crop: torchvision's RandomResizedCrop sampling, vectorised exactly: per image ten attempts
  of (area fraction ~ U(crop_scale), log aspect ~ U(log crop_ratio)), w = round(sqrt(area *
  aspect)), h = round(sqrt(area / aspect)); the first attempt that fits is taken, at a uniform
  integer position; if none fits, the central crop of the image's shape clamped to crop_ratio.
  The crop is resized with bilinear antialiased weights (torchvision's tensor default), built
  as two small per-image matrices, so crop, resize and flip are two batched matmuls.
- Colour jitter: factors brightness, contrast, saturation ~ U[max(0, 1-v), 1+v] and hue shift
  ~ U[-hue, hue], applied in a per-image random order as torchvision's ColorJitter does
  (jitter_random_order=False fixes the order to brightness, contrast, saturation, hue). The
  operations are torchvision's formulas on float images (blend with black / mean grey / grey,
  clamped to [0, 1]; hue shift in HSV); they agree with torchvision.transforms.functional
  within float rounding. Unlike torchvision on uint8 images, nothing is rounded to 8 bits
  between steps.
- Blur: Gaussian kernel of side blur_kernel (default int(0.1 * size), made odd, as SimCLR),
  sigma ~ U(blur_sigma), reflect padding, as torchvision's GaussianBlur.
- Solarisation: pixels >= solarize_threshold (in [0, 1] units) become 1 - x.
- AutoAugment (`autoaugment: cifar10 | imagenet | svhn`, off by default): torchvision's
  `AutoAugment` with that learned policy (Cubuk et al. 2019), applied image by image to the
  uint8 images first (its ops posterize and equalize need 8-bit images; torchvision's CIFAR
  recipes also run it on the 8-bit image). Its random choices come from torch's global
  generator, so each image's call runs under `torch.random.fork_rng` seeded with a number
  drawn from the batch generator: reproducible, and the caller's global RNG is left as it was.

Colour spaces (a method's `colour_space`): "rgb" normalises with the config's `mean`/`std`;
"lab" converts the augmented RGB to CIE Lab (scikit-image's rgb2lab: sRGB, D65, 2-degree
observer) and maps each channel's range to [-1, 1] with the constants of CMC's code (Tian et
al. 2019, train_CMC.py), which augments RGB first and converts last, as here.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from numbers import Integral, Real

import torch

# Per-channel pixel statistics of the training sets (all pixels, values in [0, 1]).
NORMALISATION = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    # ImageNet's statistics, which seed 004 (Appendix A.1) uses on CIFAR as well.
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
# torchvision's learned AutoAugment policies (`autoaugment` key).
AUTOAUGMENT_POLICIES = ("cifar10", "imagenet", "svhn")
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # ITU-R 601 luma, as torchvision's rgb_to_grayscale
CROP_ATTEMPTS = 10  # torchvision RandomResizedCrop.get_params
JITTER_OPS = ("brightness", "contrast", "saturation", "hue")
# sRGB -> CIE XYZ (D65) and the D65 white point (2-degree observer), as scikit-image's rgb2lab.
XYZ_FROM_RGB = (
    (0.412453, 0.357580, 0.180423),
    (0.212671, 0.715160, 0.072169),
    (0.019334, 0.119193, 0.950227),
)
D65_WHITE = (0.95047, 1.0, 1.08883)
# CMC's Lab normalisation (train_CMC.py): the range of each channel over sRGB, L in [0, 100],
# a in [-86.183, 98.233], b in [-107.857, 94.478], mapped to [-1, 1].
LAB_RANGE = ((0.0, 100.0), (-86.183, 98.233), (-107.857, 94.478))
LAB_MEAN = tuple((low + high) / 2 for low, high in LAB_RANGE)
LAB_STD = tuple((high - low) / 2 for low, high in LAB_RANGE)


def _named_statistics(key: str, name: str) -> tuple[float, ...]:
    if name not in NORMALISATION:
        raise ValueError(
            f"{key} must be three numbers or one of {', '.join(sorted(NORMALISATION))}, "
            f"got {name!r}"
        )
    return NORMALISATION[name][0 if key == "mean" else 1]


def _number(name: str, value, low: float = -math.inf, high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value!r}")
    return float(value)


def _integer(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _range(name: str, value, low: float, high: float = math.inf) -> tuple[float, float]:
    """An ordered pair (lo, hi) with low < lo <= hi <= high."""
    if isinstance(value, str) or not hasattr(value, "__len__") or len(value) != 2:
        raise ValueError(f"{name} must be a pair [low, high], got {value!r}")
    lo, hi = (_number(name, v) for v in value)
    if not low < lo <= hi <= high:
        raise ValueError(f"{name} must satisfy {low} < low <= high <= {high}, got {list(value)}")
    return lo, hi


def _triple(name: str, value, low: float) -> tuple[float, float, float]:
    if isinstance(value, str) or not hasattr(value, "__len__") or len(value) != 3:
        raise ValueError(f"{name} must be three numbers (R, G, B), got {value!r}")
    out = tuple(_number(name, v) for v in value)
    if not all(v > low for v in out):
        raise ValueError(f"{name} values must be > {low}, got {list(value)}")
    return out


def jitter_from_strength(strength: float) -> dict[str, float]:
    """SimCLR's colour distortion of strength s: (0.8s, 0.8s, 0.8s, 0.2s)."""
    strength = _number("jitter_strength", strength, low=0.0)
    return {
        "brightness": 0.8 * strength,
        "contrast": 0.8 * strength,
        "saturation": 0.8 * strength,
        "hue": 0.2 * strength,
    }


PRESETS: dict[str, dict] = {
    # Seed paper 000, Table 1.
    "seed000": {
        "crop_scale": (0.08, 1.0),
        "crop_ratio": (0.75, 1.25),
        "flip_p": 0.5,
        "jitter_p": 0.8,
        **jitter_from_strength(0.5),
        "grayscale_p": 0.2,
        "blur_p": 0.0,
        "solarize_p": 0.0,
    },
    # SimCLR's CIFAR protocol (seed paper 004, Appendix A.1): no blur on 32x32 images.
    "simclr": {
        "crop_scale": (0.08, 1.0),
        "crop_ratio": (3 / 4, 4 / 3),
        "flip_p": 0.5,
        "jitter_p": 0.8,
        **jitter_from_strength(0.5),
        "grayscale_p": 0.2,
        "blur_p": 0.0,
        "solarize_p": 0.0,
    },
    # Seed paper 004, Appendix A.1: SimCLR's protocol with ColorJitter(0.4, 0.4, 0.2, 0.1),
    # Gaussian blur (p = 0.5, kernel 23), solarisation (p = 0.1; threshold 0.5, i.e. PIL's
    # 128 of 255 as in the VICReg code) and ImageNet normalisation. Blur sigma is not stated:
    # SimCLR's / torchvision's U(0.1, 2.0) is kept.
    "seed004": {
        "crop_scale": (0.08, 1.0),
        "crop_ratio": (3 / 4, 4 / 3),
        "flip_p": 0.5,
        "jitter_p": 0.8,
        "brightness": 0.4,
        "contrast": 0.4,
        "saturation": 0.2,
        "hue": 0.1,
        "grayscale_p": 0.2,
        "blur_p": 0.5,
        "blur_kernel": 23,
        "solarize_p": 0.1,
        "mean": "imagenet",
        "std": "imagenet",
    },
    # Seed 004, Fig. 3 right / Appendix A.1: the supervised baseline "with augmentation" uses
    # AutoAugment's CIFAR-10 policy; the paper names no other op, so only the horizontal flip
    # that every CIFAR AutoAugment recipe keeps is added (crops: set crop_p / crop_scale).
    "autoaugment_cifar10": {
        "crop_p": 0.0,
        "flip_p": 0.5,
        "jitter_p": 0.0,
        "grayscale_p": 0.0,
        "blur_p": 0.0,
        "solarize_p": 0.0,
        "autoaugment": "cifar10",
    },
    # No augmentation: conversion and normalisation only.
    "none": {
        "crop_p": 0.0,
        "flip_p": 0.0,
        "jitter_p": 0.0,
        "grayscale_p": 0.0,
        "blur_p": 0.0,
        "solarize_p": 0.0,
    },
}


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation settings; the defaults are the `simclr` preset, normalised for CIFAR-100."""

    size: int = 32  # output side in pixels
    crop_p: float = 1.0  # probability of a random resized crop (else the whole image, resized)
    crop_scale: tuple[float, float] = (0.08, 1.0)  # crop area / image area
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # crop width / height
    flip_p: float = 0.5
    jitter_p: float = 0.8  # probability of colour jitter (all four ops, or none)
    brightness: float = 0.4  # factor ~ U[max(0, 1 - v), 1 + v]; likewise contrast, saturation
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1  # shift ~ U[-v, v] turns of the colour wheel, v <= 0.5
    jitter_random_order: bool = True  # per-image random order of the four ops, as torchvision
    grayscale_p: float = 0.2
    blur_p: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)  # pixels
    blur_kernel: int | None = None  # odd side; None: int(0.1 * size) made odd
    solarize_p: float = 0.0
    solarize_threshold: float = 0.5  # in [0, 1] pixel units
    mean: tuple[float, float, float] = NORMALISATION["cifar100"][0]
    std: tuple[float, float, float] = NORMALISATION["cifar100"][1]
    autoaugment: str | None = None  # torchvision AutoAugment policy, applied first (or None)

    def __post_init__(self) -> None:
        fix = object.__setattr__  # frozen: normalised values are written once, here
        fix(self, "size", _integer("size", self.size, low=1))
        for name in ("crop_p", "flip_p", "jitter_p", "grayscale_p", "blur_p", "solarize_p"):
            fix(self, name, _number(name, getattr(self, name), low=0.0, high=1.0))
        fix(self, "crop_scale", _range("crop_scale", self.crop_scale, low=0.0, high=1.0))
        fix(self, "crop_ratio", _range("crop_ratio", self.crop_ratio, low=0.0))
        for name in ("brightness", "contrast", "saturation"):
            fix(self, name, _number(name, getattr(self, name), low=0.0))
        fix(self, "hue", _number("hue", self.hue, low=0.0, high=0.5))
        if not isinstance(self.jitter_random_order, bool):
            raise ValueError(
                f"jitter_random_order must be true or false, got {self.jitter_random_order!r}"
            )
        fix(self, "blur_sigma", _range("blur_sigma", self.blur_sigma, low=0.0))
        kernel = self.blur_kernel
        if kernel is None:
            kernel = int(0.1 * self.size) | 1  # SimCLR: 10% of the side, made odd
        kernel = _integer("blur_kernel", kernel, low=1)
        if kernel % 2 == 0:
            raise ValueError(f"blur_kernel must be odd, got {kernel}")
        fix(self, "blur_kernel", kernel)
        fix(self, "solarize_threshold", _number("solarize_threshold", self.solarize_threshold))
        if not 0.0 <= self.solarize_threshold <= 1.0:
            raise ValueError(f"solarize_threshold must be in [0, 1], got {self.solarize_threshold}")
        fix(self, "mean", _triple("mean", self.mean, low=-math.inf))
        fix(self, "std", _triple("std", self.std, low=0.0))
        if self.autoaugment is not None and self.autoaugment not in AUTOAUGMENT_POLICIES:
            raise ValueError(
                f"autoaugment must be null or one of {', '.join(AUTOAUGMENT_POLICIES)}, "
                f"got {self.autoaugment!r}"
            )

    @classmethod
    def from_dict(cls, options: Mapping | None = None) -> AugmentConfig:
        """Build from `{"preset": name, **overrides}` (preset default: seed000).

        `jitter_strength: s` sets brightness, contrast, saturation, hue to (0.8s, 0.8s, 0.8s,
        0.2s); explicit values of those keys in the same dict win. `mean`/`std` accept three
        numbers or a dataset name (cifar10, cifar100, imagenet).
        """
        options = dict(options or {})
        valid = {f.name for f in dataclasses.fields(cls)} | {"preset", "jitter_strength"}
        unknown = sorted(set(options) - valid)
        if unknown:
            raise ValueError(
                f"unknown augment key(s) {', '.join(map(repr, unknown))}; "
                f"valid keys: {', '.join(sorted(valid))}"
            )
        preset = options.pop("preset", "seed000")
        if preset not in PRESETS:
            raise ValueError(
                f"unknown augment preset {preset!r}; presets: {', '.join(sorted(PRESETS))}"
            )
        values = dict(PRESETS[preset])
        if "jitter_strength" in options:
            values.update(jitter_from_strength(options.pop("jitter_strength")))
        values.update(options)
        for key in ("mean", "std"):
            if isinstance(values.get(key), str):
                values[key] = _named_statistics(key, values[key])
        return cls(**values)

    def to_dict(self) -> dict:
        """Plain values (lists, numbers, booleans) for configs and checkpoints.

        `autoaugment` appears only when set, so the run fingerprints of studies that do not
        use it are those from before it existed (nothing retrains).
        """
        return {
            key: list(value) if isinstance(value, tuple) else value
            for key, value in dataclasses.asdict(self).items()
            if not (key == "autoaugment" and value is None)
        }


@dataclass
class AugmentParams:
    """Random parameters of one batch (B images); every field has leading axis B."""

    crop: torch.Tensor  # int64 [B, 4]: top, left, height, width in input pixels
    flip: torch.Tensor  # bool [B]
    jitter: torch.Tensor  # bool [B]: colour jitter applied
    jitter_factors: torch.Tensor  # float32 [B, 4]: brightness, contrast, saturation, hue shift
    jitter_order: torch.Tensor  # int64 [B, 4]: index into JITTER_OPS applied at each step
    grayscale: torch.Tensor  # bool [B]
    blur: torch.Tensor  # bool [B]
    blur_sigma: torch.Tensor  # float32 [B]
    solarize: torch.Tensor  # bool [B]
    # int64 [B]: seed of each image's AutoAugment call; empty [0] when AutoAugment is off
    autoaugment_seed: torch.Tensor = dataclasses.field(
        default_factory=lambda: torch.zeros(0, dtype=torch.int64)
    )

    def to(self, device: torch.device) -> AugmentParams:
        return AugmentParams(
            **{f.name: getattr(self, f.name).to(device) for f in dataclasses.fields(self)}
        )


def sample_params(
    config: AugmentConfig, batch: int, height: int, width: int, generator: torch.Generator
) -> AugmentParams:
    """Draw one batch's parameters on the generator's device, a fixed number of draws."""
    dev = generator.device

    def uniform(*shape: int, dtype=torch.float32) -> torch.Tensor:
        return torch.rand(shape, generator=generator, device=dev, dtype=dtype)

    crop = sample_crops(batch, height, width, config.crop_scale, config.crop_ratio, generator)
    full = torch.tensor([0, 0, height, width], device=dev).expand(batch, 4)
    crop = torch.where((uniform(batch) < config.crop_p)[:, None], crop, full)
    flip = uniform(batch) < config.flip_p
    jitter = uniform(batch) < config.jitter_p
    low = torch.tensor([max(0.0, 1.0 - v) for v in _bcs(config)] + [-config.hue], device=dev)
    high = torch.tensor([1.0 + v for v in _bcs(config)] + [config.hue], device=dev)
    factors = low + (high - low) * uniform(batch, 4)
    order = uniform(batch, 4).argsort(dim=1)  # a uniform random permutation per image
    if not config.jitter_random_order:
        order = torch.arange(4, device=dev).expand(batch, 4)
    grayscale = uniform(batch) < config.grayscale_p
    blur = uniform(batch) < config.blur_p
    lo, hi = config.blur_sigma
    sigma = lo + (hi - lo) * uniform(batch)
    solarize = uniform(batch) < config.solarize_p
    params = AugmentParams(crop, flip, jitter, factors, order, grayscale, blur, sigma, solarize)
    if config.autoaugment is not None:
        # Drawn last and only when on, so the other draws (and every run without AutoAugment)
        # are those of a config without the key.
        params.autoaugment_seed = torch.randint(
            0, 2**62, (batch,), generator=generator, device=dev, dtype=torch.int64
        )
    return params


def _bcs(config: AugmentConfig) -> tuple[float, float, float]:
    return config.brightness, config.contrast, config.saturation


def sample_crops(
    batch: int,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator,
) -> torch.Tensor:
    """RandomResizedCrop boxes (top, left, height, width), int64 [batch, 4]; see module doc."""
    dev, f64 = generator.device, torch.float64
    draws = torch.rand((batch, CROP_ATTEMPTS, 2), generator=generator, device=dev, dtype=f64)
    area = height * width * (scale[0] + (scale[1] - scale[0]) * draws[..., 0])
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * draws[..., 1])
    w = torch.sqrt(area * aspect).round()  # round half to even, as Python's round()
    h = torch.sqrt(area / aspect).round()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)  # first fitting attempt
    w = w.gather(1, first).squeeze(1)
    h = h.gather(1, first).squeeze(1)
    position = torch.rand((batch, 2), generator=generator, device=dev, dtype=f64)
    top = (position[:, 0] * (height - h + 1)).floor().clamp(max=height - h)
    left = (position[:, 1] * (width - w + 1)).floor().clamp(max=width - w)
    fb_top, fb_left, fb_h, fb_w = _fallback_crop(height, width, ratio)
    found = fits.any(dim=1)
    box = torch.stack(
        [
            torch.where(found, top, fb_top),
            torch.where(found, left, fb_left),
            torch.where(found, h, fb_h),
            torch.where(found, w, fb_w),
        ],
        dim=1,
    )
    return box.to(torch.int64)


def _fallback_crop(height: int, width: int, ratio: tuple[float, float]) -> tuple[int, ...]:
    """torchvision's central crop after ten failed attempts: the image clamped to `ratio`."""
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        w, h = int(round(height * ratio[1])), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def check_images(images: object) -> torch.Tensor:
    """Raise unless `images` is a uint8 tensor [B, H, W, 3]."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        hint = ""
        if images.ndim == 4 and images.shape[1] == 3 and images.shape[-1] != 3:
            hint = " (these look channels-first; pass images.permute(0, 2, 3, 1))"
        raise ValueError(
            "images must be uint8 [B, H, W, 3] (HWC, as stored in the dataset files), got "
            f"{images.dtype} {list(images.shape)}{hint}"
        )
    if images.shape[0] == 0:
        raise ValueError("images must hold at least one image, got an empty batch")
    return images


def apply_params(
    images: torch.Tensor,
    params: AugmentParams,
    config: AugmentConfig,
    mean: torch.Tensor | None = None,
    std: torch.Tensor | None = None,
) -> torch.Tensor:
    """Augment uint8 [B, H, W, 3] images with given parameters -> float32 [B, 3, S, S].

    `mean`/`std` default to the config's values (tensors may be passed to avoid re-creating
    them on every batch).
    """
    images = check_images(images)
    params = params.to(images.device)
    if config.autoaugment is not None:
        images = autoaugment(images, params.autoaugment_seed, config.autoaugment)
    x = resized_crop(images, params.crop, config.size, params.flip)
    if config.jitter_p > 0:
        x = colour_jitter(x, params, config)
    if config.grayscale_p > 0:
        x = torch.where(params.grayscale[:, None, None, None], grayscale(x).expand_as(x), x)
    if config.blur_p > 0:
        blur = functools.partial(gaussian_blur, side=config.blur_kernel)
        x = _apply_selected(x.clone(), params.blur, blur, params.blur_sigma)
    if config.solarize_p > 0:
        flip_values = params.solarize[:, None, None, None] & (x >= config.solarize_threshold)
        x = torch.where(flip_values, 1.0 - x, x)
    mean = torch.tensor(config.mean) if mean is None else mean
    std = torch.tensor(config.std) if std is None else std
    return normalise(x, mean, std)


def autoaugment(images: torch.Tensor, seeds: torch.Tensor, policy: str) -> torch.Tensor:
    """torchvision's AutoAugment (`policy`) on each uint8 [H, W, 3] image, seeded per image.

    Image i's result is `AutoAugment(policy)(image_i)` under `torch.manual_seed(seeds[i])`
    (tests/test_augment.py checks this against torchvision image by image). torchvision draws
    one sub-policy per call, so a batch passed to it at once would get the same ops for every
    image; here each image's choices are drawn as torchvision's `forward` draws them (its
    `get_params`, under the forked global RNG, so callers' draws are unaffected), then the
    images sharing an (op, magnitude) at a step go through torchvision's op as one batch:
    measured on one core of the (shared) dev machine, 512 CIFAR images through the whole
    `autoaugment_cifar10` pipeline: 1.2 s with per-image calls, 0.33 s so.
    The ops are per-image (equalize, autocontrast) or elementwise/geometric with the same
    parameters, so a batch gives each image what a single call would.
    """
    from torchvision.transforms import AutoAugment, AutoAugmentPolicy
    from torchvision.transforms.autoaugment import _apply_op  # the op forward() applies

    if len(seeds) != len(images):
        raise ValueError(f"{len(images)} images but {len(seeds)} AutoAugment seeds")
    transform = AutoAugment(AutoAugmentPolicy(policy))
    height, width = images.shape[1:3]
    space = transform._augmentation_space(10, (height, width))
    steps: list[dict[tuple[str, float], list[int]]] = [{}, {}]
    with torch.random.fork_rng(devices=[]):
        for i, seed in enumerate(seeds.tolist()):
            # The CPU generator alone: torch.manual_seed also queues CUDA seeding, with a
            # stack trace per call (measured: 6 ms of the 7 ms per image).
            torch.default_generator.manual_seed(seed)
            policy_id, probs, signs = transform.get_params(len(transform.policies))
            for step, (name, p, level) in enumerate(transform.policies[policy_id]):
                if probs[step] <= p:  # as forward(): the op applies with probability p
                    magnitudes, signed = space[name]
                    magnitude = float(magnitudes[level].item()) if level is not None else 0.0
                    if signed and signs[step] == 0:
                        magnitude *= -1.0
                    steps[step].setdefault((name, magnitude), []).append(i)
    out = images.permute(0, 3, 1, 2).contiguous()
    for groups in steps:
        for (name, magnitude), members in groups.items():
            index = torch.tensor(members, device=out.device)
            out[index] = _apply_op(
                out[index], name, magnitude, interpolation=transform.interpolation, fill=None
            )
    return out.permute(0, 2, 3, 1)


def resized_crop(
    images: torch.Tensor, boxes: torch.Tensor, size: int, flip: torch.Tensor | None = None
) -> torch.Tensor:
    """Crop boxes of uint8 [B, H, W, 3] resized to [B, 3, size, size] floats in [0, 1].

    Bilinear resampling is linear and separable, so each image's crop, resize and optional
    mirror is Wy @ image @ Wx^T per channel: two batched matmuls, no Python loop.
    """
    _, height, width, _ = images.shape
    wy = _resample_weights(boxes[:, 0], boxes[:, 2], height, size) / 255.0
    wx = _resample_weights(boxes[:, 1], boxes[:, 3], width, size)
    if flip is not None:
        wx = torch.where(flip[:, None, None], wx.flip(1), wx)
    batch = images.shape[0]
    x = images.permute(0, 3, 1, 2).to(torch.float32, memory_format=torch.contiguous_format)
    rows = torch.bmm(x.reshape(batch, 3 * height, width), wx.transpose(1, 2))
    return wy[:, None] @ rows.reshape(batch, 3, height, size)


def resized_crop_maps(
    maps: torch.Tensor, boxes: torch.Tensor, size: int, flip: torch.Tensor | None = None
) -> torch.Tensor:
    """`resized_crop` of per-pixel maps (depth) float [B, H, W] -> [B, size, size]: the same
    crop, resize and mirror as the images get with the same boxes and flips."""
    _, height, width = maps.shape
    wy = _resample_weights(boxes[:, 0], boxes[:, 2], height, size)
    wx = _resample_weights(boxes[:, 1], boxes[:, 3], width, size)
    if flip is not None:
        wx = torch.where(flip[:, None, None], wx.flip(1), wx)
    return wy @ maps.to(torch.float32) @ wx.transpose(1, 2)


def _resample_weights(
    offset: torch.Tensor, length: torch.Tensor, n_in: int, n_out: int
) -> torch.Tensor:
    """Per image [n_out, n_in] antialiased bilinear weights over pixels offset..offset+length.

    PyTorch's antialiased bilinear kernel (interpolate(antialias=True), which torchvision's
    resize uses): a triangle of half-width max(scale, 1) input pixels around each output
    pixel's centre, renormalised over the pixels inside the crop. For upsampling it equals
    plain bilinear interpolation with edge clamping.
    """
    dev, f32 = offset.device, torch.float32
    offset, length = offset.to(f32)[:, None, None], length.to(f32)[:, None, None]
    scale = length / n_out
    centre = offset + scale * (torch.arange(n_out, device=dev, dtype=f32)[:, None] + 0.5)
    pixel_centre = torch.arange(n_in, device=dev, dtype=f32) + 0.5
    weights = (pixel_centre - centre).mul_(1.0 / scale.clamp(min=1.0)).abs_()
    weights = weights.neg_().add_(1.0).clamp_(min=0.0)
    weights.mul_((pixel_centre > offset) & (pixel_centre < offset + length))
    return weights.div_(weights.sum(dim=-1, keepdim=True))


def colour_jitter(x: torch.Tensor, params: AugmentParams, config: AugmentConfig) -> torch.Tensor:
    """ColorJitter with per-image factors and order; images without jitter pass unchanged."""
    enabled = [v > 0 for v in (*_bcs(config), config.hue)]
    x = x.clone()  # _apply_selected writes into x
    for step in range(4):
        chosen = params.jitter_order[:, step]
        candidates = range(4) if config.jitter_random_order else (step,)
        for op in candidates:
            if enabled[op]:
                selected = params.jitter & (chosen == op)
                x = _apply_selected(x, selected, JITTER_FUNCTIONS[op], params.jitter_factors[:, op])
    return x


def _apply_selected(
    x: torch.Tensor, selected: torch.Tensor, op: Callable, factor: torch.Tensor
) -> torch.Tensor:
    """`op(x, factor)` on the images where `selected` is true, the others unchanged.

    On CPU `x` is updated in place (and returned); elsewhere a new tensor is returned.
    """
    if _gather_on(x):
        # Only the selected images are computed: for one jitter step ~1/5 of the batch.
        index = selected.nonzero().squeeze(1)
        if len(index):
            x[index] = op(x[index], factor[index])
        return x
    # On an accelerator a data-dependent size would make the host wait for the device queue;
    # computing the whole batch and selecting costs microseconds there.
    return torch.where(selected[:, None, None, None], op(x, factor), x)


def _gather_on(x: torch.Tensor) -> bool:
    return x.device.type == "cpu"


def _per_image(factor: torch.Tensor) -> torch.Tensor:
    return factor.to(torch.float32).reshape(-1, 1, 1, 1)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """Luma [B, 1, H, W] of float RGB [B, 3, H, W] (torchvision's rgb_to_grayscale weights)."""
    r, g, b = x.unbind(dim=1)
    return (GRAY_WEIGHTS[0] * r + GRAY_WEIGHTS[1] * g + GRAY_WEIGHTS[2] * b).unsqueeze(1)


def _blend(x: torch.Tensor, other: torch.Tensor | float, factor: torch.Tensor) -> torch.Tensor:
    f = _per_image(factor)
    return (f * x + (1.0 - f) * other).clamp(0.0, 1.0)


def adjust_brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Per-image torchvision adjust_brightness: blend with black."""
    return _blend(x, 0.0, factor)


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Per-image torchvision adjust_contrast: blend with the image's mean luma."""
    return _blend(x, grayscale(x).mean(dim=(-3, -2, -1), keepdim=True), factor)


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Per-image torchvision adjust_saturation: blend with the pixel's luma."""
    return _blend(x, grayscale(x), factor)


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Per-image torchvision adjust_hue: rotate the HSV hue by `shift` turns (in [-0.5, 0.5]).

    RGB -> hue sector h in [0, 6); back with the closed form channel_n = V - C * clamp(min(k,
    4 - k), 0, 1), k = (n + h) mod 6 for n = 5, 3, 1 (R, G, B), where C = max - min = V * S.
    """
    r, g, b = x.unbind(dim=1)
    value = x.amax(dim=1)
    chroma = value - x.amin(dim=1)
    safe = torch.where(chroma > 0, chroma, 1.0)
    sector = torch.where(
        value == r,
        (g - b) / safe,
        torch.where(value == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0),
    )
    sector = sector + 6.0 * _per_image(shift).squeeze(1)
    n = torch.tensor([5.0, 3.0, 1.0], device=x.device).reshape(1, 3, 1, 1)
    k = (n + sector.unsqueeze(1)).remainder(6.0)
    ramp = torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)
    return value.unsqueeze(1) - chroma.unsqueeze(1) * ramp


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, side: int) -> torch.Tensor:
    """Per-image Gaussian blur: separable, reflect padding, odd kernel side `side`."""
    half = side // 2
    taps = torch.linspace(-half, half, side, device=x.device)
    kernel = torch.exp(-0.5 * (taps / sigma.to(x.device)[:, None]) ** 2)
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).reshape(-1, 1, side, 1, 1)
    height, width = x.shape[-2:]
    padded = torch.nn.functional.pad(x, (half, half, half, half), mode="reflect")
    rows = sum(kernel[:, :, t] * padded[:, :, t : t + height, :] for t in range(side))
    return sum(kernel[:, :, t] * rows[:, :, :, t : t + width] for t in range(side))


def normalise(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """(x - mean) / std per channel of float [B, 3, H, W]; mean and std hold three values."""
    mean = torch.as_tensor(mean, dtype=x.dtype).to(x.device).reshape(1, 3, 1, 1)
    std = torch.as_tensor(std, dtype=x.dtype).to(x.device).reshape(1, 3, 1, 1)
    return (x - mean) / std


def rgb_to_lab(x: torch.Tensor) -> torch.Tensor:
    """CIE Lab [B, 3, H, W] of float sRGB [B, 3, H, W] in [0, 1] (scikit-image's rgb2lab).

    Written out per channel rather than as a matmul: TF32 matmuls (on when training is not
    deterministic on a GPU) would round XYZ to ~1e-3 and move Lab by ~0.1.
    """
    # The clamps keep pow away from negative bases in the branch torch.where discards.
    gamma = ((x.clamp(min=0.0) + 0.055) / 1.055).pow(2.4)
    linear = torch.where(x > 0.04045, gamma, x / 12.92).unbind(dim=1)
    f = []
    for row, white in zip(XYZ_FROM_RGB, D65_WHITE, strict=True):
        t = sum(weight * channel for weight, channel in zip(row, linear, strict=True)) / white
        f.append(torch.where(t > 0.008856, t.clamp(min=0.008856).pow(1 / 3), 7.787 * t + 16 / 116))
    fx, fy, fz = f
    return torch.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], dim=1)


JITTER_FUNCTIONS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)
# What the network sees (a method's `colour_space`): normalised RGB, or Lab (CMC).
COLOUR_SPACES = ("rgb", "lab")


class Augmenter:
    """`aug(images_uint8, generator) -> float32 [B, 3, size, size]` on the images' device.

    `device` ("auto": CUDA when available) is where the images are expected to live; the
    normalisation constants are kept there. Images on another device still work.
    `colour_space` is what the network takes (`Method.colour_space`): "lab" augments in RGB,
    then converts to Lab normalised with CMC's constants (the config's RGB `mean`/`std` do not
    apply); "rgb" is the normalised RGB of `apply_params`, unchanged by the Lab option.
    """

    def __init__(
        self,
        config: AugmentConfig | Mapping | None = None,
        device: object = "auto",
        colour_space: str = "rgb",
    ):
        if not isinstance(config, AugmentConfig):
            config = AugmentConfig.from_dict(config)
        if colour_space not in COLOUR_SPACES:
            raise ValueError(
                f"colour space {colour_space!r} unknown; expected one of {', '.join(COLOUR_SPACES)}"
            )
        self.config, self.colour_space = config, colour_space
        self.device = _resolve_device(device)
        self._mean = torch.tensor(config.mean, device=self.device)
        self._std = torch.tensor(config.std, device=self.device)
        if colour_space == "lab":
            # apply_params with mean 0 and std 1 returns the augmented RGB itself (x - 0) / 1.
            self._unit = (torch.zeros(3, device=self.device), torch.ones(3, device=self.device))
            stats = (LAB_MEAN, LAB_STD)
            self._lab_stats = tuple(torch.tensor(v, device=self.device) for v in stats)

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self._augment(images, generator)[0]

    def _augment(
        self, images: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, AugmentParams]:
        images = check_images(images)
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        batch, height, width, _ = images.shape
        params = sample_params(self.config, batch, height, width, generator)
        if self.colour_space == "rgb":
            return apply_params(images, params, self.config, self._mean, self._std), params
        return self._lab(apply_params(images, params, self.config, *self._unit)), params

    def views_with_maps(
        self, images: torch.Tensor, maps: torch.Tensor, n: int, generator: torch.Generator
    ) -> tuple[list, list]:
        """`views`, plus each view's crop, resize and mirror applied to per-pixel `maps`
        float [B, H, W] (a depth map follows its image; colour operations leave it alone).
        The views are those `views` draws from the same generator state."""
        n = _integer("n", n, low=1)
        views, warped = [], []
        for _ in range(n):
            x, params = self._augment(images, generator)
            params = params.to(maps.device)
            views.append(x)
            warped.append(resized_crop_maps(maps, params.crop, self.config.size, params.flip))
        return views, warped

    def views(self, images: torch.Tensor, n: int, generator: torch.Generator) -> list:
        """`n` independently augmented views of the same images."""
        n = _integer("n", n, low=1)
        return [self(images, generator) for _ in range(n)]

    def plain(self, images: torch.Tensor) -> torch.Tensor:
        """No augmentation: uint8 [B, H, W, 3] -> normalised float32 [B, 3, H, W]."""
        x = check_images(images).permute(0, 3, 1, 2)
        x = x.to(torch.float32, memory_format=torch.contiguous_format) / 255.0
        if self.colour_space == "rgb":
            return normalise(x, self._mean, self._std)
        return self._lab(x)

    def _lab(self, rgb: torch.Tensor) -> torch.Tensor:
        """Float RGB in [0, 1] -> Lab normalised as CMC's code does."""
        return normalise(rgb_to_lab(rgb), *self._lab_stats)


def _resolve_device(device: object) -> torch.device:
    from ssltrace.device import resolve_device

    return resolve_device(device)
