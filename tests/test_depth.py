"""Seed 003's depth prediction: the synthetic depth maps, depth following its view through
the augmentation, the loss on a hand case, the method, and the dry-run refusal."""

import dataclasses

import numpy as np
import pytest
import torch

from ssltrace import config as sslconfig
from ssltrace import study
from ssltrace.augment import Augmenter, resized_crop, resized_crop_maps
from ssltrace.data import synthetic
from ssltrace.data.validate import DataFormatError, validate_dataset
from ssltrace.losses.depth import depth_loss, standardise_depth
from ssltrace.network import build_network
from ssltrace.training import train_run
from tests.test_config import base
from tests.test_semisup import data  # noqa: F401  (the tiny training set fixture)
from tests.test_training import Log, make_run, weights

ARCH = {"name": "resnet18", "width": 0.125}


def test_synthetic_depth_is_background_plane_minus_foreground_layer():
    images, depth = synthetic.render_fine_class_with_depth(3, 6, seed=0)
    assert np.array_equal(images, synthetic.render_fine_class(3, 6, seed=0))  # images unchanged
    assert depth.shape == (6, 32, 32) and depth.dtype == np.float16
    assert 4.0 - 1.5 - 3.0 - 0.01 <= depth.min() and depth.max() <= 8.0 + 1.5 + 0.01
    # Foreground pixels (lighter colour) are nearer than background ones of the same image.
    luma = images.astype(float) @ [0.299, 0.587, 0.114]
    for img_luma, img_depth in zip(luma, depth.astype(float), strict=True):
        bright = img_luma >= img_luma.max() - 1  # pure foreground (two colours per image)
        dark = img_luma <= img_luma.min() + 1
        assert img_depth[bright].mean() < img_depth[dark].mean()


def test_depth_is_exactly_the_layered_planes():
    rng = np.random.default_rng(0)
    coverage = rng.random((2, 32, 32)).astype(np.float32)
    depth = synthetic._depth(np.random.default_rng(5), coverage).astype(float)
    r = np.random.default_rng(5)
    base_ = r.uniform(4, 8, (2, 1, 1))
    tx, ty = r.uniform(-1.5, 1.5, (2, 2, 1, 1))
    gap = r.uniform(1, 3, (2, 1, 1))
    y, x = np.mgrid[0:32, 0:32] + 0.5
    expected = base_ + tx * (x / 32 - 0.5) + ty * (y / 32 - 0.5) - gap * coverage
    assert np.allclose(depth, expected, atol=0.01)


def test_dataset_file_carries_depth_and_validation_checks_it():
    arrays = synthetic.synthetic_dataset(0, train_per_class=2, test_per_class=1)
    assert arrays["train_depth"].shape == (200, 32, 32)
    validate_dataset(arrays)
    arrays["test_depth"] = arrays["test_depth"][:, :16]
    with pytest.raises(DataFormatError, match="test_depth: expected shape"):
        validate_dataset(arrays)


def test_depth_map_follows_its_view_through_crop_and_flip():
    # A map equal to the image's red channel must come out as the view's red channel.
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (5, 32, 32, 3), dtype=torch.uint8, generator=g)
    boxes = torch.tensor(
        [[0, 0, 32, 32], [4, 2, 20, 24], [8, 8, 9, 9], [0, 5, 30, 12], [3, 3, 28, 28]]
    )
    flip = torch.tensor([False, True, False, True, True])
    red = resized_crop(images, boxes, 32, flip)[:, 0]
    maps = resized_crop_maps(images[..., 0].float() / 255.0, boxes, 32, flip)
    assert torch.allclose(maps, red, atol=1e-5)
    aug = Augmenter({"preset": "seed000"}, "cpu")
    plain = aug.views(images, 1, torch.Generator().manual_seed(3))
    views, warped = aug.views_with_maps(
        images, images[..., 0].float(), 1, torch.Generator().manual_seed(3)
    )
    assert torch.equal(views[0], plain[0])  # the same draws as views()
    assert warped[0].shape == (5, 32, 32)


def test_depth_loss_by_hand():
    depth = torch.tensor([[[1.0, 3.0], [1.0, 3.0]]])  # mean 2, population std 1
    target = torch.tensor([[[-1.0, 1.0], [-1.0, 1.0]]])
    assert torch.allclose(standardise_depth(depth), target)
    prediction = torch.tensor([[[0.0, 1.0], [-1.0, 3.0]]])
    out = depth_loss(prediction, depth)
    assert out["loss"].item() == pytest.approx((1 + 0 + 0 + 4) / 4)
    assert out["invariance"].item() == out["loss"].item() and out["regularisation"].item() == 0
    flat = standardise_depth(torch.full((1, 2, 2), 5.0))
    assert torch.equal(flat, torch.zeros(1, 2, 2))  # a flat image is all zeros, not NaN


def test_depth_method_outputs_a_map_at_the_input_size_and_learns():
    torch.manual_seed(0)
    net = build_network(ARCH, "depth_prediction", {"hidden_dim": 32}, 4)
    x = torch.randn(4, 3, 32, 32)
    assert net.predict(x).shape == (4, 32, 32)
    depth = torch.rand(4, 32, 32)
    out = net.loss([x], None, torch.arange(4), depth=[depth])
    out["loss"].backward()
    assert net.backbone.stem.conv.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="depth map"):
        net.loss([x], None, torch.arange(4))
    assert net.probe_forward(x).shape[:2] == (4, 32)


def test_a_depth_method_on_a_dataset_without_depth_fails_the_dry_run(monkeypatch):
    from ssltrace.data import DATASETS

    cfg = base()
    cfg["methods"] = ["depth_prediction"]
    study.checked(base() | {"methods": ["depth_prediction"]})  # synthetic has depth
    no_depth = dataclasses.replace(DATASETS.get("synthetic"), depth=False)
    monkeypatch.setitem(DATASETS._items, "synthetic", no_depth)
    with pytest.raises(sslconfig.ConfigError, match="'dataset.name'.*depth_prediction.*no depth"):
        study.checked(cfg)


def test_depth_run_trains_and_the_engine_refuses_data_without_depth(data, tmp_path):  # noqa: F811
    from ssltrace.io import load_npz, save_npz

    run = make_run("depth_prediction", epochs=1, method_params={"hidden_dim": 16})
    with pytest.raises(ValueError, match="no train_depth"):
        train_run(run, *data, tmp_path / "none", Log())
    arrays = load_npz(data[0])
    rng = np.random.default_rng(0)
    arrays["train_depth"] = rng.uniform(1, 5, (72, 32, 32)).astype(np.float16)
    save_npz(tmp_path / "with_depth.npz", arrays)
    log = Log()
    train_run(run, tmp_path / "with_depth.npz", data[1], tmp_path / "run", log)
    assert "epoch 1/1" in log.text()
    assert "head.fc1.weight" in weights(tmp_path / "run", 1)
