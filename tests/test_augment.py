"""Batched augmentation: equality with torchvision's per-image ops, rates, ranges, determinism."""

import dataclasses
import math

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from scipy.stats import ks_2samp
from torchvision.transforms import RandomResizedCrop

from ssltrace import augment as A
from ssltrace.augment import AugmentConfig, Augmenter

RAW = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}  # output = pixel values in [0, 1]
NOTHING = {"preset": "none", **RAW}
N_RATE = 3000  # images per rate test: 4 standard deviations is about +-0.036 at p = 0.5


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def random_images(n, height=32, width=32, seed=0):
    return torch.randint(0, 256, (n, height, width, 3), dtype=torch.uint8, generator=gen(seed))


def assert_rate(hits, p):
    n = hits.numel()
    rate = hits.float().mean().item()
    tolerance = 4 * math.sqrt(p * (1 - p) / n) + 1e-9
    assert abs(rate - p) <= tolerance, f"rate {rate:.4f} vs p={p} (n={n}, tol {tolerance:.4f})"


# ---------------------------------------------------------------- equality with torchvision ops


def torchvision_pipeline(images, params, config):
    """The same augmentation done image by image with torchvision.transforms.functional."""
    ops = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
    out = []
    for i in range(images.shape[0]):
        x = images[i].permute(2, 0, 1).float() / 255
        top, left, h, w = params.crop[i].tolist()
        x = TF.resized_crop(x, top, left, h, w, [config.size] * 2, antialias=True)
        if params.flip[i]:
            x = TF.hflip(x)
        if params.jitter[i]:
            for op in params.jitter_order[i].tolist():
                x = ops[op](x, params.jitter_factors[i, op].item())
        if params.grayscale[i]:
            x = TF.rgb_to_grayscale(x, num_output_channels=3)
        if params.blur[i]:
            k = config.blur_kernel
            x = TF.gaussian_blur(x, [k, k], [params.blur_sigma[i].item()] * 2)
        if params.solarize[i]:
            x = TF.solarize(x, config.solarize_threshold)
        out.append(TF.normalize(x, list(config.mean), list(config.std)))
    return torch.stack(out)


@pytest.mark.parametrize(
    "options, shape",
    [
        ({"preset": "simclr", "blur_p": 0.5, "solarize_p": 0.3}, (48, 32, 32)),
        ({"preset": "seed000", "size": 20, "blur_p": 0.5, "blur_kernel": 5}, (24, 40, 28)),
        ({"preset": "seed000", "size": 48, "jitter_random_order": False}, (24, 32, 32)),
        ({"preset": "seed004"}, (48, 32, 32)),  # kernel-23 blur, solarisation, ImageNet stats
    ],
)
def test_batched_pipeline_equals_torchvision_per_image(options, shape):
    config = AugmentConfig.from_dict(options)
    images = random_images(shape[0], *shape[1:])
    params = A.sample_params(config, shape[0], shape[1], shape[2], gen(3))
    assert params.jitter.any() and params.flip.any() and params.grayscale.any()
    expected = torchvision_pipeline(images, params, config)
    got = A.apply_params(images, params, config)
    # Float rounding only; at the solarisation threshold 0.5, x and 1 - x are close too.
    torch.testing.assert_close(got, expected, rtol=0, atol=2e-5)


def float_images(n=12, seed=0):
    """Random colours plus pixels that stress the HSV code: greys, ties and saturated hues."""
    x = torch.rand(n, 3, 8, 8, generator=gen(seed))
    x[:, :, 0, :] = torch.tensor([0.0, 0.5, 1.0])[torch.randint(0, 3, (n, 3, 8), generator=gen(1))]
    x[:, :, 1, :4] = 0.3  # grey
    x[:, :, 1, 4:] = torch.tensor([1.0, 1.0, 0.0])[:, None]  # r == g == max
    return x


@pytest.mark.parametrize(
    "ours, reference, low, high",
    [
        (A.adjust_brightness, TF.adjust_brightness, 0.0, 2.0),
        (A.adjust_contrast, TF.adjust_contrast, 0.0, 2.0),
        (A.adjust_saturation, TF.adjust_saturation, 0.0, 2.0),
        (A.adjust_hue, TF.adjust_hue, -0.5, 0.5),
    ],
)
def test_colour_ops_equal_torchvision(ours, reference, low, high):
    x = float_images()
    factors = low + (high - low) * torch.rand(x.shape[0], generator=gen(2))
    factors[0], factors[1] = low, high
    expected = torch.stack([reference(img, f.item()) for img, f in zip(x, factors, strict=True)])
    torch.testing.assert_close(ours(x, factors), expected, rtol=0, atol=1e-5)


def test_grayscale_and_blur_equal_torchvision():
    x = float_images()
    torch.testing.assert_close(A.grayscale(x), TF.rgb_to_grayscale(x), rtol=0, atol=1e-6)
    sigma = torch.tensor([0.1, 0.7, 2.0]).repeat(4)
    expected = torch.stack(
        [TF.gaussian_blur(img, [5, 5], [s.item()] * 2) for img, s in zip(x, sigma, strict=True)]
    )
    torch.testing.assert_close(A.gaussian_blur(x, sigma, 5), expected, rtol=0, atol=1e-6)


def test_normalisation_equals_torchvision_normalize():
    images = random_images(8)
    for stats in ("cifar10", "cifar100"):
        aug = Augmenter({"preset": "none", "mean": stats, "std": stats}, device="cpu")
        mean, std = A.NORMALISATION[stats]
        expected = TF.normalize(images.permute(0, 3, 1, 2).float() / 255, list(mean), list(std))
        torch.testing.assert_close(aug(images, gen()), expected, rtol=0, atol=1e-6)
        torch.testing.assert_close(aug.plain(images), expected, rtol=0, atol=1e-6)


def test_normalised_output_has_zero_mean_unit_std_on_matching_pixels():
    # Pixels drawn with the configured per-channel mean and std come out standardised.
    mean, std = np.array([0.3, 0.5, 0.6]), np.array([0.1, 0.15, 0.05])
    rng = np.random.default_rng(0)
    pixels = np.clip(np.round(255 * rng.normal(mean, std, (64, 32, 32, 3))), 0, 255)
    images = torch.from_numpy(pixels.astype(np.uint8))
    exact_mean = pixels.mean(axis=(0, 1, 2)) / 255
    exact_std = pixels.std(axis=(0, 1, 2)) / 255
    aug = Augmenter({**NOTHING, "mean": exact_mean.tolist(), "std": exact_std.tolist()})
    out = aug(images, gen()).double()
    torch.testing.assert_close(
        out.mean(dim=(0, 2, 3)), torch.zeros(3, dtype=torch.float64), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(
        out.std(dim=(0, 2, 3), correction=0), torch.ones(3, dtype=torch.float64), atol=1e-5, rtol=0
    )


# ---------------------------------------------------------------- random resized crop


def plausible_box(h, w, height, width, scale, ratio):
    """Could integer (h, w) come from rounding a real (h', w') inside the scale and ratio ranges?"""
    area = height * width
    return (
        (h + 0.5) * (w + 0.5) >= scale[0] * area - 1e-9
        and (h - 0.5) * (w - 0.5) <= scale[1] * area + 1e-9
        and (w + 0.5) / (h - 0.5) >= ratio[0] - 1e-9
        and (w - 0.5) / (h + 0.5) <= ratio[1] + 1e-9
    )


def test_sampled_crops_stay_in_the_scale_and_ratio_ranges():
    scale, ratio = (0.08, 1.0), (0.75, 1.25)
    boxes = A.sample_crops(4000, 32, 32, scale, ratio, gen())
    top, left, h, w = boxes.T
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + h <= 32).all() and (left + w <= 32).all()
    assert all(
        plausible_box(hh, ww, 32, 32, scale, ratio)
        for hh, ww in zip(h.tolist(), w.tolist(), strict=True)
    )
    area = (h * w).double() / 1024
    assert area.min() < 0.1 and area.max() > 0.95  # the whole range is used
    aspect = (w / h).double()
    assert aspect.min() < 0.8 and aspect.max() > 1.2


@pytest.mark.parametrize(
    "height, width, scale, ratio",
    [
        (32, 32, (0.08, 1.0), (0.2, 5.0)),  # wide ratios: many rejected attempts
        (32, 8, (0.3, 1.0), (0.75, 4 / 3)),  # a narrow image: the fallback crop is common
    ],
)
def test_crop_distribution_matches_torchvision(height, width, scale, ratio):
    n = 3000
    torch.manual_seed(0)  # torchvision's get_params draws from the global generator
    img = torch.zeros(3, height, width)
    ref = torch.tensor(
        [RandomResizedCrop.get_params(img, list(scale), list(ratio)) for _ in range(n)]
    ).double()
    ours = A.sample_crops(n, height, width, scale, ratio, gen()).double()
    for column in range(4):  # top, left, height, width
        assert ks_2samp(ref[:, column], ours[:, column]).pvalue > 1e-3, column
    ref_area, ours_area = ref[:, 2] * ref[:, 3], ours[:, 2] * ours[:, 3]
    assert ks_2samp(ref_area, ours_area).pvalue > 1e-3
    ref_aspect, ours_aspect = ref[:, 3] / ref[:, 2], ours[:, 3] / ours[:, 2]
    assert ks_2samp(ref_aspect.log(), ours_aspect.log()).pvalue > 1e-3
    fallback = torch.tensor(A._fallback_crop(height, width, ratio), dtype=torch.float64)
    ref_rate = (ref == fallback).all(dim=1).double().mean().item()
    assert_rate((ours == fallback).all(dim=1), ref_rate)


def test_fallback_is_torchvisions_central_crop():
    # Ten attempts can never fit: torchvision then takes the centre clamped to the ratio range.
    boxes = A.sample_crops(50, 40, 10, (0.9, 1.0), (2.0, 3.0), gen())
    expected = torch.tensor([(40 - 5) // 2, 0, 5, 10])  # h = round(10 / 2.0) = 5
    assert (boxes == expected).all()


def coordinate_images(n, side=32):
    """Channel 0 holds 8 * column, channel 1 holds 8 * row: a crop's output reveals its box."""
    cols = torch.arange(side).repeat(side, 1)
    image = torch.stack([8 * cols, 8 * cols.T, torch.zeros_like(cols)], dim=-1)
    return image.to(torch.uint8).expand(n, side, side, 3).contiguous()


def box_from_output(ramp, size):
    """Offset and length of the crop that produced a bilinear-resampled coordinate ramp."""
    # Interior samples are exact linear interpolations (edge samples are clamped for crops
    # narrower than the output): value(t) = offset - 0.5 + (t + 0.5) * length / size.
    t = torch.arange(4, size - 4, dtype=torch.float64)
    values = ramp[4 : size - 4].double() * 255 / 8
    slope = (values[-1] - values[0]) / (t[-1] - t[0])
    length = slope.abs() * size
    start = values[0] if slope > 0 else values[-1]
    offset = start + 0.5 - (t[0] + 0.5) * slope.abs()
    return offset, length, bool(slope < 0)


def test_crop_boxes_measured_from_the_output_of_a_coordinate_image():
    config = AugmentConfig.from_dict(
        {**NOTHING, "crop_p": 1.0, "crop_ratio": [0.75, 1.25], "flip_p": 0.5}
    )
    n = 200
    params = A.sample_params(config, n, 32, 32, gen(5))
    out = A.apply_params(coordinate_images(n), params, config)
    for i in range(n):
        top, left, h, w = params.crop[i].tolist()
        col_offset, col_length, mirrored = box_from_output(out[i, 0, 16], 32)
        row_offset, row_length, _ = box_from_output(out[i, 1, :, 16], 32)
        assert abs(col_offset - left) < 1e-3 and abs(col_length - w) < 1e-3
        assert abs(row_offset - top) < 1e-3 and abs(row_length - h) < 1e-3
        assert mirrored == bool(params.flip[i])
        area = row_length * col_length / 1024
        assert 0.08 * 0.8 <= area <= 1.0 + 1e-6  # rounding to pixels moves small crops a little
        assert plausible_box(
            round(float(row_length)), round(float(col_length)), 32, 32, (0.08, 1.0), (0.75, 1.25)
        )


def test_crop_probability():
    # Crops are at most half the image here, so a full-image box means "not cropped".
    config = AugmentConfig.from_dict({**NOTHING, "crop_p": 0.3, "crop_scale": [0.1, 0.5]})
    params = A.sample_params(config, N_RATE, 32, 32, gen())
    assert_rate((params.crop == torch.tensor([0, 0, 32, 32])).all(dim=1), 0.7)


# ---------------------------------------------------------------- application rates


def test_flip_rate_on_asymmetric_images():
    images = torch.zeros(N_RATE, 32, 32, 3, dtype=torch.uint8)
    images[:, :, 16:] = 255  # left half black, right half white
    out = Augmenter({**NOTHING, "flip_p": 0.3})(images, gen())
    flipped = out[:, :, :, 0] > out[:, :, :, -1]
    assert (flipped.all(dim=(1, 2)) | (~flipped).all(dim=(1, 2))).all()
    assert_rate(flipped[:, 0, 0], 0.3)
    torch.testing.assert_close(out[flipped[:, 0, 0]][0], out[~flipped[:, 0, 0]][0].flip(-1))


def test_grayscale_rate():
    images = random_images(N_RATE, 8, 8)
    out = Augmenter({**NOTHING, "size": 8, "grayscale_p": 0.35})(images, gen())
    gray = (out[:, 0] == out[:, 1]).all(dim=(1, 2)) & (out[:, 1] == out[:, 2]).all(dim=(1, 2))
    assert_rate(gray, 0.35)


@pytest.mark.parametrize(
    "options",
    [
        {"brightness": 0.4},
        {"contrast": 0.4},
        {"saturation": 0.4},
        {"hue": 0.1},
    ],
)
def test_jitter_rate_per_operation(options):
    jitter = {"brightness": 0.0, "contrast": 0.0, "saturation": 0.0, "hue": 0.0, **options}
    config = {**NOTHING, "size": 8, "jitter_p": 0.6, **jitter}
    images = random_images(N_RATE, 8, 8)
    plain = Augmenter(NOTHING).plain(images)
    changed = (Augmenter(config)(images, gen()) - plain).abs().amax(dim=(1, 2, 3)) > 1e-4
    assert_rate(changed, 0.6)


def test_blur_and_solarize_rates():
    images = random_images(N_RATE, 8, 8)
    plain = Augmenter(NOTHING).plain(images)
    blurred = Augmenter({**NOTHING, "size": 8, "blur_p": 0.25, "blur_kernel": 3})(images, gen())
    assert_rate((blurred - plain).abs().amax(dim=(1, 2, 3)) > 1e-4, 0.25)
    bright = torch.full((N_RATE, 8, 8, 3), 200, dtype=torch.uint8)  # every pixel >= threshold
    solar = Augmenter({**NOTHING, "size": 8, "solarize_p": 0.45})(bright, gen())
    inverted = torch.isclose(solar, torch.tensor(1 - 200 / 255)).all(dim=(1, 2, 3))
    kept = torch.isclose(solar, torch.tensor(200 / 255)).all(dim=(1, 2, 3))
    assert (kept ^ inverted).all()
    assert_rate(inverted, 0.45)


# ---------------------------------------------------------------- sampled parameters


def test_jitter_factors_and_order():
    config = AugmentConfig.from_dict({"preset": "seed000"})
    params = A.sample_params(config, N_RATE, 32, 32, gen())
    factors = params.jitter_factors
    for column, (low, high) in enumerate([(0.6, 1.4)] * 3 + [(-0.1, 0.1)]):
        assert factors[:, column].min() >= low and factors[:, column].max() <= high
        assert factors[:, column].min() < low + 0.01 and factors[:, column].max() > high - 0.01
        # uniform: the mean is the midpoint within 4 standard errors
        se = (high - low) / math.sqrt(12 * N_RATE)
        assert abs(factors[:, column].mean().item() - (low + high) / 2) < 4 * se
    assert (params.jitter_order.sort(dim=1).values == torch.arange(4)).all()
    for step in range(4):
        for op in range(4):
            assert_rate(params.jitter_order[:, step] == op, 0.25)
    assert_rate(params.jitter, 0.8)
    assert_rate(params.flip, 0.5)
    assert_rate(params.grayscale, 0.2)
    assert not params.blur.any() and not params.solarize.any()
    fixed = A.sample_params(AugmentConfig(jitter_random_order=False), 10, 32, 32, gen())
    assert (fixed.jitter_order == torch.arange(4)).all()


def test_brightness_factor_below_zero_is_clamped_like_torchvision():
    params = A.sample_params(AugmentConfig(brightness=1.5), 2000, 32, 32, gen())
    assert params.jitter_factors[:, 0].min() >= 0.0 and params.jitter_factors[:, 0].max() <= 2.5


# ---------------------------------------------------------------- reproducibility and devices


def test_output_dtype_shape_device():
    images = random_images(5, 40, 36)
    out = Augmenter({"preset": "simclr", "size": 24}, device="cpu")(images, gen())
    assert (
        out.dtype == torch.float32 and out.shape == (5, 3, 24, 24) and out.device == images.device
    )


def test_same_seed_same_output_and_resume_from_generator_state():
    aug = Augmenter({"preset": "seed000"}, device="cpu")
    images = random_images(16)
    assert torch.equal(aug(images, gen(7)), aug(images, gen(7)))
    assert not torch.equal(aug(images, gen(7)), aug(images, gen(8)))
    g = gen(7)
    aug(images, g)
    state = g.get_state()
    second = aug(images, g)
    resumed = torch.Generator()
    resumed.set_state(state)
    assert torch.equal(aug(images, resumed), second)


def test_views_are_independent():
    aug = Augmenter({"preset": "simclr"}, device="cpu")
    images = random_images(8)
    views = aug.views(images, 3, gen())
    assert len(views) == 3
    assert not torch.equal(views[0], views[1]) and not torch.equal(views[1], views[2])
    g = gen()
    assert torch.equal(views[1], [aug(images, g) for _ in range(2)][1])
    with pytest.raises(ValueError, match="n must"):
        aug.views(images, 0, gen())


def test_accelerator_path_gives_the_same_result(monkeypatch):
    """The where-based selection (used off the CPU) equals the gather path used on the CPU."""
    config = AugmentConfig.from_dict({"preset": "simclr", "blur_p": 0.5})
    images = random_images(32)
    params = A.sample_params(config, 32, 32, 32, gen())
    gathered = A.apply_params(images, params, config)
    monkeypatch.setattr(A, "_gather_on", lambda x: False)
    selected = A.apply_params(images, params, config)
    torch.testing.assert_close(selected, gathered, rtol=0, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_images_with_cpu_generator_match_cpu():
    aug = Augmenter({"preset": "simclr", "blur_p": 0.5}, device="cuda")
    images = random_images(64)
    on_cpu = aug(images, gen(1))
    on_gpu = aug(images.cuda(), gen(1))
    assert on_gpu.device.type == "cuda"
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, rtol=0, atol=1e-4)


# ---------------------------------------------------------------- configuration


def test_presets_hold_the_published_values():
    seed000 = AugmentConfig.from_dict({"preset": "seed000"})
    assert seed000.crop_scale == (0.08, 1.0) and seed000.crop_ratio == (0.75, 1.25)
    assert (seed000.brightness, seed000.contrast, seed000.saturation, seed000.hue) == pytest.approx(
        (0.4, 0.4, 0.4, 0.1)
    )
    assert (seed000.flip_p, seed000.jitter_p, seed000.grayscale_p) == (0.5, 0.8, 0.2)
    assert seed000.blur_p == 0 and seed000.solarize_p == 0
    simclr = AugmentConfig.from_dict({"preset": "simclr"})
    assert simclr.crop_ratio == (3 / 4, 4 / 3) and simclr.crop_scale == (0.08, 1.0)
    assert simclr.jitter_p == 0.8 and simclr.grayscale_p == 0.2 and simclr.blur_p == 0
    assert AugmentConfig.from_dict(None) == seed000
    assert simclr.blur_kernel == 3  # int(0.1 * 32), odd


def test_jitter_strength_and_overrides():
    config = AugmentConfig.from_dict({"preset": "simclr", "jitter_strength": 1.0, "hue": 0.05})
    assert (config.brightness, config.contrast, config.saturation, config.hue) == pytest.approx(
        (0.8, 0.8, 0.8, 0.05)
    )


def test_to_dict_round_trips():
    config = AugmentConfig.from_dict({"preset": "seed000", "blur_p": 0.2, "mean": "cifar10"})
    plain = config.to_dict()
    assert all(isinstance(v, (int, float, bool, list)) for v in plain.values())
    assert AugmentConfig.from_dict(plain) == config


@pytest.mark.parametrize(
    "options, message",
    [
        ({"flip": 0.5}, "'flip'.*valid keys:.*flip_p"),
        ({"preset": "byol"}, "preset"),
        ({"flip_p": 1.5}, "flip_p"),
        ({"jitter_p": -0.1}, "jitter_p"),
        ({"grayscale_p": "0.2"}, "grayscale_p"),
        ({"crop_scale": [0.9, 0.1]}, "crop_scale"),
        ({"crop_scale": [0.0, 1.0]}, "crop_scale"),
        ({"crop_ratio": [1.5]}, "crop_ratio"),
        ({"blur_sigma": [2.0, 0.1]}, "blur_sigma"),
        ({"hue": 0.6}, "hue"),
        ({"brightness": -1}, "brightness"),
        ({"jitter_strength": -1}, "jitter_strength"),
        ({"blur_kernel": 4}, "blur_kernel"),
        ({"size": 0}, "size"),
        ({"std": [0.2, 0.0, 0.2]}, "std"),
        ({"mean": "stl10"}, "mean"),
        ({"autoaugment": "cifar100"}, "autoaugment.*cifar10, imagenet, svhn"),
        ({"solarize_threshold": 2}, "solarize_threshold"),
        ({"jitter_random_order": 1}, "jitter_random_order"),
    ],
)
def test_config_validation_names_the_key(options, message):
    with pytest.raises(ValueError, match=message):
        AugmentConfig.from_dict(options)


@pytest.mark.parametrize(
    "images, error, message",
    [
        (torch.zeros(2, 3, 32, 32, dtype=torch.uint8), ValueError, "permute"),
        (torch.zeros(2, 32, 32, 3), ValueError, "uint8"),
        (torch.zeros(32, 32, 3, dtype=torch.uint8), ValueError, r"\[B, H, W, 3\]"),
        (torch.zeros(0, 32, 32, 3, dtype=torch.uint8), ValueError, "empty"),
        (np.zeros((2, 32, 32, 3), dtype=np.uint8), TypeError, "torch.Tensor"),
    ],
)
def test_bad_images_are_refused(images, error, message):
    with pytest.raises(error, match=message):
        Augmenter({"preset": "simclr"})(images, gen())


def test_generator_is_required():
    with pytest.raises(TypeError, match="generator"):
        Augmenter({"preset": "simclr"})(random_images(2), 0)


# ---------------------------------------------------------------- seed 004 presets, AutoAugment


def test_seed004_preset_is_appendix_a1():
    """Seed 004, Appendix A.1, item by item."""
    config = AugmentConfig.from_dict({"preset": "seed004"})
    assert config.crop_scale == (0.08, 1.0) and config.crop_ratio == (3 / 4, 4 / 3)
    assert config.size == 32 and config.crop_p == 1.0 and config.flip_p == 0.5
    assert config.jitter_p == 0.8  # ColorJitter(0.4, 0.4, 0.2, 0.1) with probability 0.8
    assert (config.brightness, config.contrast, config.saturation, config.hue) == (
        0.4,
        0.4,
        0.2,
        0.1,
    )
    assert config.grayscale_p == 0.2
    assert config.blur_p == 0.5 and config.blur_kernel == 23
    assert config.solarize_p == 0.1
    assert config.mean == (0.485, 0.456, 0.406) and config.std == (0.229, 0.224, 0.225)
    assert config.autoaugment is None


def test_seed004_rates_of_blur_and_solarisation():
    config = AugmentConfig.from_dict({"preset": "seed004"})
    params = A.sample_params(config, N_RATE, 32, 32, gen(7))
    assert_rate(params.blur, 0.5)
    assert_rate(params.solarize, 0.1)
    assert_rate(params.jitter, 0.8)


def test_autoaugment_equals_torchvision_autoaugment_per_image():
    """Image i is torchvision's AutoAugment(CIFAR10) applied to it under its own seed."""
    from torchvision.transforms import AutoAugment, AutoAugmentPolicy

    config = AugmentConfig.from_dict({"preset": "autoaugment_cifar10", **RAW})
    images = random_images(16)
    params = A.sample_params(config, 16, 32, 32, gen(5))
    assert params.autoaugment_seed.shape == (16,)
    reference = AutoAugment(AutoAugmentPolicy.CIFAR10)
    expected = []
    for image, seed in zip(images, params.autoaugment_seed.tolist(), strict=True):
        torch.manual_seed(seed)
        out = reference(image.permute(2, 0, 1))
        expected.append(out.float() / 255)
    expected = torch.stack(expected)
    expected = torch.where(params.flip[:, None, None, None], expected.flip(-1), expected)
    got = A.apply_params(images, params, config)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_autoaugment_changes_images_and_varies_its_ops():
    config = AugmentConfig.from_dict({"preset": "autoaugment_cifar10", "flip_p": 0.0, **RAW})
    images = random_images(64)
    out = Augmenter(config, "cpu")(images, gen(1))
    plain = images.permute(0, 3, 1, 2).float() / 255
    changed = (out - plain).abs().amax(dim=(1, 2, 3)) > 1e-6
    # Every CIFAR-10 sub-policy has two ops with probabilities well above 0: most images
    # change, and not all in the same way (a per-batch policy would change all or none).
    assert 0.5 < changed.float().mean() <= 1.0
    differences = (out - plain).reshape(64, -1)
    assert len({tuple(d[:50].round(decimals=3).tolist()) for d in differences}) > 10


def test_autoaugment_is_seeded_by_the_generator_and_leaves_the_global_rng_alone():
    aug = Augmenter({"preset": "autoaugment_cifar10"}, "cpu")
    images = random_images(8)
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    first = aug(images, gen(2))
    assert torch.equal(torch.random.get_rng_state(), before)
    torch.manual_seed(999)  # a different global state changes nothing
    assert torch.equal(aug(images, gen(2)), first)
    assert not torch.equal(aug(images, gen(3)), first)


def test_autoaugment_draws_last_so_other_draws_are_unchanged():
    """Its seeds come after every other draw: a run without it keeps its random stream."""
    plain = A.sample_params(AugmentConfig.from_dict({"preset": "seed000"}), 10, 32, 32, gen(4))
    config = AugmentConfig.from_dict({"preset": "seed000", "autoaugment": "cifar10"})
    with_aa = A.sample_params(config, 10, 32, 32, gen(4))
    assert plain.autoaugment_seed.numel() == 0 and with_aa.autoaugment_seed.numel() == 10
    for field in dataclasses.fields(plain):
        if field.name != "autoaugment_seed":
            assert torch.equal(getattr(plain, field.name), getattr(with_aa, field.name))


def test_none_preset_is_no_augmentation():
    images = random_images(6)
    aug = Augmenter({"preset": "none"}, "cpu")
    torch.testing.assert_close(aug(images, gen(0)), aug.plain(images), rtol=0, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_autoaugment_on_cuda_images_matches_cpu():
    aug_cpu = Augmenter({"preset": "autoaugment_cifar10", **RAW}, "cpu")
    aug_gpu = Augmenter({"preset": "autoaugment_cifar10", **RAW}, "cuda")
    images = random_images(32)
    expected = aug_cpu(images, gen(9))
    got = aug_gpu(images.cuda(), gen(9)).cpu()
    # uint8 ops round alike; the float pipeline after them agrees within float rounding
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
