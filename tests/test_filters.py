"""First-layer filters (seed 003 ED Fig. 4) read from checkpoints, and the checkpoint input."""

import numpy as np
import pytest
import torch

from ssltrace.analysis.base import Job, run_job
from ssltrace.analysis.filters import Filters, chosen, filter_structure, first_conv
from ssltrace.io import load_npz, torch_save
from ssltrace.models import build_backbone
from ssltrace.tables import read


def _checkpoint(folder, epoch, seed):
    torch.manual_seed(seed)
    backbone = build_backbone("resnet18", width=0.125)
    state = {f"backbone.{k}": v for k, v in backbone.state_dict().items()}
    state["head.fc1.weight"] = torch.ones(4, 64)
    torch_save(folder / f"epoch_{epoch:03d}.pt", {"epoch": epoch, "state_dict": state})
    stem = next(m for m in backbone.layer_modules()["stem"].modules() if hasattr(m, "kernel_size"))
    return stem.weight.detach().numpy()


def test_filters_are_the_stem_kernels_at_chosen_epochs(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    kernels = {e: _checkpoint(folder, e, seed=e) for e in (0, 1, 2)}
    job = Job("simclr", 0, [0, 1, 2], {"checkpoints": folder}, tmp_path / "cache", lambda m: None)
    run_job(Filters({"epochs": None}), job, tmp_path / "t.tsv", {"filters": tmp_path / "f.npz"})
    out = load_npz(tmp_path / "f.npz")
    np.testing.assert_array_equal(out["epochs"], [0, 2])  # first and last by default
    np.testing.assert_array_equal(out["filters"][1], kernels[2])
    assert str(out["layer"]) == "stem"
    table = read(tmp_path / "t.tsv")
    norm = table[(table["epoch"] == 2) & (table["metric"] == "filter_norm")]["value"].item()
    expected = np.sqrt((kernels[2].astype(np.float64) ** 2).sum(axis=(1, 2, 3))).mean()
    assert norm == pytest.approx(expected, rel=1e-6)
    run_job(Filters({"epochs": [1, 7]}), job, tmp_path / "t2.tsv", {"filters": tmp_path / "g.npz"})
    np.testing.assert_array_equal(load_npz(tmp_path / "g.npz")["epochs"], [1])


def test_filter_structure_by_hand():
    flat = np.ones((1, 3, 3, 3))
    edge = np.zeros((1, 1, 3, 3))
    edge[0, 0, :, 0], edge[0, 0, :, 2] = -1, 1  # zero mean
    half = np.zeros((1, 1, 1, 2))
    half[0, 0, 0] = [1, 0]  # mean 0.5: DC energy 2 * 0.25 = 0.5 of a total 1
    found = filter_structure(np.concatenate([flat[:, :1], edge]))
    np.testing.assert_allclose(found, [0.0, 1.0])
    assert filter_structure(half)[0] == pytest.approx(0.5)


def test_first_conv_and_epoch_choice_errors():
    with pytest.raises(ValueError, match="no convolution"):
        first_conv({"head.fc1.weight": torch.ones(2, 2)})
    with pytest.raises(ValueError, match="filters.epochs"):
        chosen([5], [0], "filters.epochs")
