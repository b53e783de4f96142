"""Optimal stimuli (seed 003 ED Figs. 5-6): the Fourier parameterisation, a planted optimum,
determinism, and the analysis on a checkpoint."""

import numpy as np
import pytest
import torch
from torch import nn

from ssltrace.analysis.base import Job, run_job
from ssltrace.analysis.stimuli import (
    Stimuli,
    backbone_from_checkpoint,
    fourier_image,
    fourier_scale,
    optimal_stimuli,
    random_affine,
)
from ssltrace.io import load_npz, torch_save
from ssltrace.models import build_backbone
from ssltrace.tables import read


class _Toy(nn.Module):
    """One 1x1 convolution whose channel 0 is R - G and channel 1 is B - R."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1, bias=False)
        with torch.no_grad():
            self.conv.weight[:] = torch.tensor([[1.0, -1, 0], [-1, 0, 1]])[:, :, None, None]

    def layer_modules(self):
        return {"conv": self.conv}

    def forward(self, x):
        return self.conv(x)


def test_fourier_parameterisation_reaches_any_image():
    size = 8
    target = torch.rand(1, 3, size, size) * 0.8 + 0.1
    spectrum = torch.fft.rfft2(torch.logit(target), norm="ortho") / fourier_scale(size)
    coeffs = torch.view_as_real(spectrum)
    torch.testing.assert_close(fourier_image(coeffs, fourier_scale(size), size), target)


def test_planted_optimum_of_a_colour_opponent_channel():
    # The spatial mean of R - G is largest for R = 1, G = 0 (B free); of B - R for B = 1, R = 0.
    images, response = optimal_stimuli(
        _Toy(), lambda x: x, "conv", [0, 1], size=8, steps=200, jitter=1.0
    )
    assert images.shape == (2, 8, 8, 3)
    # (median: a border pixel that no jittered view samples gets no push of its own)
    assert np.median(images[0, ..., 0]) > 0.95 and np.median(images[0, ..., 1]) < 0.05
    assert np.median(images[1, ..., 2]) > 0.95 and np.median(images[1, ..., 0]) < 0.05
    # the response (max 1) is the spatial mean, border pixels included: well above the
    # start's ~0 and the grey image's 0
    assert (response > 0.75).all()


def test_optimal_stimuli_are_seeded():
    a = optimal_stimuli(_Toy(), lambda x: x, "conv", [0], size=8, steps=5, seed=3)[0]
    b = optimal_stimuli(_Toy(), lambda x: x, "conv", [0], size=8, steps=5, seed=3)[0]
    c = optimal_stimuli(_Toy(), lambda x: x, "conv", [0], size=8, steps=5, seed=4)[0]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_random_affine_without_change_is_the_identity():
    x = torch.rand(2, 3, 8, 8)
    out = random_affine(x, 0.0, (1.0, 1.0), 0.0, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, x)


def _checkpoint(folder, epoch):
    torch.manual_seed(epoch)
    backbone = build_backbone("resnet18", width=0.125)
    state = {f"backbone.{k}": v for k, v in backbone.state_dict().items()}
    ckpt = {
        "epoch": epoch,
        "state_dict": state,
        "architecture": {"name": "resnet18", "width": 0.125},
    }
    torch_save(folder / f"epoch_{epoch:03d}.pt", ckpt)
    return backbone


SETTINGS = {
    "epochs": None,
    "layers": ["layer2"],
    "channels": [0, 3],
    "size": 16,
    "steps": 4,
    "lr": 0.05,
    "jitter": 1.0,
    "scale": [0.9, 1.1],
    "rotation": 10.0,
    "seed": 0,
}


def test_stimuli_analysis_on_a_checkpoint(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    nets = {e: _checkpoint(folder, e) for e in (0, 1)}
    job = Job("simclr", 0, [0, 1], {"checkpoints": folder}, tmp_path / "cache", lambda m: None)
    run_job(Stimuli(SETTINGS), job, tmp_path / "t.tsv", {"stimuli": tmp_path / "s.npz"})
    out = load_npz(tmp_path / "s.npz")
    assert out["stimuli"].shape == (1, 1, 2, 16, 16, 3)  # last epoch, one layer, two channels
    assert 0 <= out["stimuli"].min() and out["stimuli"].max() <= 1
    table = read(tmp_path / "t.tsv")
    assert set(table["probe"]) == {"channel0", "channel3"} and set(table["epoch"]) == {1}
    # the backbone is rebuilt with the checkpoint's weights
    rebuilt = backbone_from_checkpoint(torch.load(folder / "epoch_001.pt", weights_only=True))
    for a, b in zip(rebuilt.state_dict().values(), nets[1].state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="stimuli.layers"):
        run_job(
            Stimuli({**SETTINGS, "layers": ["head_fc1"]}),
            job,
            tmp_path / "u.tsv",
            {"stimuli": tmp_path / "u.npz"},
        )
    with pytest.raises(ValueError, match="stimuli.channels"):
        run_job(
            Stimuli({**SETTINGS, "channels": [999]}),
            job,
            tmp_path / "u.tsv",
            {"stimuli": tmp_path / "u.npz"},
        )


def test_a_single_channel_backbone_sees_the_l_channel(tmp_path):
    from ssltrace.analysis.stimuli import input_transform
    from ssltrace.augment import LAB_MEAN, LAB_STD, normalise, rgb_to_lab

    rgb = torch.rand(2, 3, 8, 8)
    expected = normalise(rgb_to_lab(rgb), torch.tensor(LAB_MEAN), torch.tensor(LAB_STD))[:, :1]
    torch.testing.assert_close(input_transform({}, 1)(rgb), expected)
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    backbone = build_backbone("resnet18", width=0.125, in_channels=1)
    state = {f"backbone.{k}": v for k, v in backbone.state_dict().items()}
    arch = {"name": "resnet18", "width": 0.125}
    torch_save(folder / "epoch_000.pt", {"epoch": 0, "state_dict": state, "architecture": arch})
    job = Job("cmc", 0, [0], {"checkpoints": folder}, tmp_path / "cache", lambda m: None)
    run_job(
        Stimuli({**SETTINGS, "steps": 2}), job, tmp_path / "t.tsv", {"stimuli": tmp_path / "s.npz"}
    )
    assert load_npz(tmp_path / "s.npz")["stimuli"].shape == (1, 1, 2, 16, 16, 3)
