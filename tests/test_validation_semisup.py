"""Validation of seed 003's semi-supervised methods on the synthetic dataset: with 10 % of the
labels, Mean Teacher and Local Label Propagation, which also learn from the unlabelled 90 %,
must classify held-out images of the known fine classes better than the few-label control
trained on the labelled 10 % alone (seed 003 Fig. 4d, f).

One module-scoped study: synthetic data (10 known fine classes x 120 training images), the
same labelled subset for every method (`method_settings.<name>.labels: {fraction: 0.1}`, 12
images per class), `EPOCHS` epochs of each method at batch 32 (36 steps per epoch, the same
for all three: the control cycles its 120 labelled images), then the network's own category
prediction (Mean Teacher's student head, the analysed network, and the control's classifier
head; LLP's category classifier) on 200 test images of each known class. "Better" is a margin
of `MARGIN_SE` binomial standard errors of the control's accuracy (0.011 here): with 30 test
images per class (the former setting) the same control network scored 0.373, with 200 0.438.
Short-training settings as tests/test_validation.py (Adam 3e-3, crops >= 25 %, one thread).

Regime, the best found for Mean Teacher and LLP within ~2 CPU minutes (about 30 / 40 / 32 CPU
s for the control / Mean Teacher / LLP on this 2-core machine): Mean Teacher with half of each
batch labelled (the authors' ImageNet sampler), EMA 0.99 throughout (their CIFAR-10 4,000-
label runs), consistency ramped over 8 of the 24 epochs; LLP with the paper's linear
embedding head (`linear_head`), 8 IR epochs, a quarter of each batch labelled.
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

EPOCHS = 24
LABELS = {"fraction": 0.1, "seed": 0}
PARAMS = {
    "few_label": {},
    "mean_teacher": {
        "labelled_share": 0.5,
        "base_momentum": 0.99,
        "final_momentum": 0.99,
        "rampup_epochs": 8,
    },
    "local_label_propagation": {"linear_head": True, "ir_epochs": 8, "labelled_share": 0.25},
}
MARGIN_SE = 2  # the semi-supervised accuracy must exceed the control's by this many SE
TRAIN = {
    **defaults()["train"],
    "epochs": EPOCHS,
    "batch_size": 32,
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
    prepare_dataset("synthetic", root, data, train_per_class=120, test_per_class=200)
    write_split(data, split, n_known=2, n_novel=4, seed=0)
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
    out["n_test"] = len(labels)
    write_json(root / "accuracy.json", out)


@pytest.fixture(scope="module")
def accuracy() -> dict[str, float]:
    # Built once per test run, whichever xdist worker needs it first (tests/shared.py).
    out = read_json(shared.build_once("semisup_validation", _build) / "accuracy.json")
    print("fine-class test accuracy with 10 % labels:", out)
    return out


# Not shown at CPU scale (2026-12-07, after the Mean Teacher fixes of that day: the authors'
# classification normalisation and EMA warm-up). Accuracy on the 2,000 test images of this
# file's regime (control / Mean Teacher student / LLP):
# - seed 0, labelled subset 0 (this test): 0.438 / 0.432 / 0.382;
# - training seed 1, subset 0: 0.396 / 0.411 / 0.278;  seed 0, subset 1: 0.431 / 0.392 / 0.422;
#   seed 0, subset 2: 0.499 / 0.364 / 0.454;  36 instead of 24 epochs, subset 0: 0.464 / 0.457.
# Mean Teacher is level with the control or below it (-0.006, +0.015, -0.039, -0.135; -0.007
# at 36 epochs), LLP below it (-0.056, -0.118, -0.009, -0.045: its propagated labels are
# 44-50 % right at the end, and the classifier trained on them does not pass the
# control). Trials on the way (300 test images unless marked; control / MT / LLP):
# - 20 classes x 60, batch 64, 8 epochs (the former regime): 0.198 / 0.102 / 0.107 (LLP's
#   propagated labels 7-10 % right: the 2-epoch IR bank is noise; MT teacher 0.062);
# - the same, 24 epochs: MT share 0.5, EMA 0.99: 0.498 / 0.462 / -; the paper's defaults
#   (share 0.25, EMA 0.99 -> 0.999, ramp 5): - / 0.180 / LLP (5 IR epochs) 0.283; Wu et al.'s
#   augmentation for all three: 0.513 / 0.383 / 0.165;
# - 10 classes x 120, batch 64, 24 epochs (2,000 test images): 0.372 / 0.340 / 0.360; MT with
#   EMA 0.97: 0.359, consistency 30: 0.328, 300: 0.304, ramp 8: 0.373; subset 1: control
#   0.455, LLP 0.358; LLP with 4 IR epochs: 0.356 (subset 0), 0.369 (subset 1);
# - 10 classes x 60, batch 64, 48 epochs: 0.323 / 0.313 / 0.337;
# - this regime with a 12-epoch ramp, subset 1: MT 0.357 (300 images; 0.403 with 8); without
#   the EMA warm-up (`ema_warmup: false`): MT 0.411 (teacher 0.408) against 0.432 (0.428);
#   with the classification averaged over the labelled rows instead of the batch (the code
#   before the fix; the authors divide by the batch): MT 0.451 (teacher 0.454) against the
#   control's 0.438, within 2 SE, and 0.437 / 0.378 against 0.431 / 0.499 with subsets 1, 2;
#   the teacher (fixed code) never beat the control either (0.382, 0.373, 0.406 with subsets
#   1, 2 and training seed 1).
# The papers' advantage comes after hundreds of epochs; each run here costs 30-45 CPU seconds.
# Strict: the day a method beats the control here, the suite says so and the mark goes.
@pytest.mark.xfail(reason="semi-supervised advantage not reached in a CPU-minute run", strict=True)
@pytest.mark.parametrize("method", ["mean_teacher", "local_label_propagation"])
def test_semi_supervised_beats_the_few_label_control(accuracy, method):
    control = accuracy["few_label"]
    se = (control * (1 - control) / accuracy["n_test"]) ** 0.5
    assert accuracy[method] > control + MARGIN_SE * se, accuracy
