"""Validation of seed 003's embedding family on the synthetic dataset (issue 15): a short
training run of Instance Recognition, Local Aggregation, DeepCluster and CMC lowers the
method's loss and makes the fine classes of held-out images easier to read out than from the
untrained network.

One module-scoped study, the library's own stage functions (no Snakemake): synthetic data
(10 known fine classes x 60 training images), each method trained with `train_run`, then the
pooled backbone output (`pool`, the analysed network; CMC's L network on the L channel) of the
known-class probe set (30 training + 60 test images per class) extracted from the epoch-0 and
the last checkpoint. The epoch-0 checkpoint is the untrained network of the same architecture
and seed (for CMC a 1-channel L network, for DeepCluster one behind the Sobel filter), so it
is the baseline. Accuracies are Wu et al.'s weighted kNN (k = 20 of the 300 probe training
images, temperature 0.07) and nearest class centre on the 600 test images; the margin is in
binomial standard errors of the untrained accuracy (0.014-0.017 here), not a tuned constant.

Regime, chosen for about 50 CPU seconds for all four on one thread (measured on this 2-core
AMD EPYC, torch CPU, shared by 6 agents; the numbers below are untrained -> trained NCC with
training seeds 0 / 1 / 2, the test runs seed 0):
- one torch thread: with 2 xdist workers on 2 cores, a second thread per worker only adds
  CPU (an IR step: 890-940 images per CPU second with 1 thread, 570 with 2 and
  OMP_WAIT_POLICY=PASSIVE as tests/conftest.py sets it, 54 with 2 spinning threads);
- batch 32, Adam 3e-3 at a constant rate after a 1-epoch warm-up. A cosine schedule decays
  to 0 by the last epochs, where DeepCluster's freshly drawn top layer then cannot learn the
  new clusters (its loss stayed at chance, log k); batch 32 gives 18 steps between two
  clusterings instead of 9;
- Instance Recognition as Wu et al.: one linear layer to the 128-d embedding and their
  augmentation (lemniscate.pytorch: crops of 20-100 %, ColorJitter(0.4, 0.4, 0.4, 0.4) always,
  greyscale 0.2), 16 epochs: 0.138 -> 0.248 / 0.125 -> 0.213 / 0.118 -> 0.187. With the
  project's MLP head and the seed000 jitter it passed with seed 0 only (0.148 -> 0.152 and
  0.118 -> 0.122 with seeds 1, 2 after 12 epochs): the loss fell, but to instance cues that
  do not carry the class (the synthetic images' colours are random);
- DeepCluster with k = 20 (two clusters per class, the paper's over-segmentation) and
  pca_dim 32 (whitening 256 dimensions from 600 images amplified noise: the accuracy rose
  and fell back to the untrained level), 12 epochs: 0.192 -> 0.388 / 0.203 -> 0.370 /
  0.215 -> 0.292;
- CMC without random greyscale, as config.yaml (it blanks the ab view), 12 epochs:
  0.137 -> 0.285 / 0.125 -> 0.288 / 0.157 -> 0.225;
- Local Aggregation as IR above (linear head, Wu et al.'s augmentation), 8 IR epochs then 8
  LA epochs, background_k and kmeans_k the study's defaults scaled to 600 images (600 = the
  whole bank, 5 clusters; 10 clusterings): 0.138 -> 0.252 / 0.125 -> 0.190 / 0.118 -> 0.187.
  That is what IR alone reaches in 16 epochs (0.248 / 0.213 / 0.187): in this short run LA's
  epochs keep what the IR initialisation learned but do not add to it. Regimes that failed:
  the project's MLP head and the seed000 jitter (kmeans_k 20, background_k 300, 3
  clusterings, 6 IR epochs of 14): 0.138 -> 0.218 with seed 0 but 0.125 -> 0.120 and
  0.118 -> 0.113; IR's head and augmentation with those sizes: 0.138 -> 0.188 and
  0.118 -> 0.132 (6 IR epochs), 0.138 -> 0.222, 0.125 -> 0.203, 0.118 -> 0.105 (10 IR
  epochs of 16); after only 4 IR epochs the bank is still nearly random and LA clusters noise.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ssltrace.analysis.geometry import ncc_accuracy
from ssltrace.analysis.neighbours import weighted_knn_accuracy
from ssltrace.config import defaults
from ssltrace.data import prepare_dataset
from ssltrace.extract import activations
from ssltrace.io import load_npz, read_json, write_json
from ssltrace.network import load_network
from ssltrace.splits import write_probe, write_split
from ssltrace.training import train_run
from tests import shared

pytestmark = pytest.mark.slow

TRAIN = {
    **defaults()["train"],
    "batch_size": 32,
    "optimizer": {"name": "adam", "lr": 3.0e-3, "weight_decay": 1.0e-6},
    "schedule": {"name": "constant", "warmup_epochs": 1},
    "device": "cpu",
    "compile": False,
    "threads": 1,
}
LA_IR_EPOCHS = 8
# Wu et al.'s augmentation (lemniscate.pytorch's CIFAR transform).
WU_AUGMENT = {
    "crop_scale": [0.2, 1.0],
    "jitter_p": 1.0,
    "brightness": 0.4,
    "contrast": 0.4,
    "saturation": 0.4,
    "hue": 0.4,
    "grayscale_p": 0.2,
}
# method: (epochs, method_params, augmentation overrides)
METHODS = {
    "instance_recognition": (16, {"linear_head": True}, WU_AUGMENT),
    # IR's head and augmentation; background_k and kmeans_k null: the study's scaled defaults.
    "local_aggregation": (16, {"linear_head": True, "ir_epochs": LA_IR_EPOCHS}, WU_AUGMENT),
    "deepcluster": (12, {"k": 20, "pca_dim": 32}, {}),
    "cmc": (12, {}, {"grayscale_p": 0.0}),
}
PROBE = {"train_per_class": 30, "test_per_class": 60, "seed": 0}
KNN = {"k": 20, "temperature": 0.07, "device": "cpu"}
MARGIN_SE = 3  # the trained accuracy must exceed the untrained one by this many SE


def _run(method: str) -> dict:
    epochs, params, augment = METHODS[method]
    return {
        "method": method,
        "seed": 0,
        "method_params": params,
        "architecture": {"name": "resnet18", "width": 0.125},
        "train": {**TRAIN, "epochs": epochs},
        "augment": {"preset": "seed000", "crop_scale": [0.25, 1.0], **augment},
    }


def _accuracies(checkpoint: Path, probe: dict) -> dict[str, float]:
    """Fine-class kNN and NCC test accuracy of the checkpoint's pooled backbone output."""
    net, _ = load_network(checkpoint, torch.device("cpu"))
    x = activations(net, probe["images"], ["pool"], "mean", 1000)["pool"]
    train, labels = probe["part"] == 0, probe["labels"]
    test = ~train
    knn = weighted_knn_accuracy(x[train], labels[train], x[test], labels[test], **KNN)
    _, ncc = ncc_accuracy(x[train], labels[train], x[test], labels[test], device="cpu")
    return {"knn": knn, "ncc": ncc}


def _build(root: Path) -> None:
    """Train the four methods and write their loss curves and accuracies to results.json."""
    data, split, probe_path = root / "synthetic.npz", root / "split.json", root / "known.npz"
    prepare_dataset("synthetic", root, data, train_per_class=60, test_per_class=60)
    write_split(data, split, n_known=2, n_novel=2, seed=0)
    write_probe("known", data, split, probe_path, **PROBE)
    probe = load_npz(probe_path)
    out = {}
    for method, (epochs, _, _) in METHODS.items():
        train_run(_run(method), data, split, root / method, log=lambda _line: None)
        ckpts = root / method / "checkpoints"
        log = pd.read_csv(root / method / "train_log.tsv", sep="\t")
        out[method] = {
            "loss": log["loss"].tolist(),
            "untrained": _accuracies(ckpts / "epoch_000.pt", probe),
            "trained": _accuracies(ckpts / f"epoch_{epochs:03d}.pt", probe),
            "n_test": int((probe["part"] == 1).sum()),
        }
    write_json(root / "results.json", out)


@pytest.fixture(scope="module")
def study() -> dict[str, dict]:
    # Built once per test run, whichever xdist worker needs it first (tests/shared.py).
    out = read_json(shared.build_once("embedding_validation", _build) / "results.json")
    print({m: (r["untrained"], r["trained"]) for m, r in out.items()})
    return out


@pytest.mark.parametrize("method", list(METHODS))
def test_loss_falls(study, method):
    """The epoch-mean loss of the method's own objective is lower over the second half of its
    epochs than over the first. Halves, not the first and last epoch: LA's and DeepCluster's
    targets are redrawn every epoch (LA's loss went 0.558 -> 0.586 from its first to its last
    epoch with seed 2, yet 0.600 -> 0.547 by halves); for LA the objective starts after the
    IR epochs (before, the loss is IR's)."""
    loss = np.array(study[method]["loss"])
    if method == "local_aggregation":
        loss = loss[LA_IR_EPOCHS:]
    half = len(loss) // 2
    assert loss[half:].mean() < loss[:half].mean(), loss


def test_deepcluster_classifier_beats_chance(study):
    """DeepCluster's loss is a cross-entropy on k = 20 fresh clusters each epoch: after
    training its top layer predicts them better than chance (log k)."""
    loss = np.array(study["deepcluster"]["loss"])
    assert loss[-1] < math.log(METHODS["deepcluster"][1]["k"]) - 0.2, loss


@pytest.mark.parametrize("method", list(METHODS))
def test_fine_class_ncc_accuracy_rises_above_untrained(study, method):
    """Nearest-class-centre accuracy of the trained network on held-out images of the known
    fine classes exceeds the untrained network's by MARGIN_SE binomial standard errors. The
    weighted kNN accuracy, printed alongside, is not asserted: it rose less reliably (IR with
    seed 2: 0.180 -> 0.213; LA with seeds 1, 2: 0.148 -> 0.158, 0.180 -> 0.168)."""
    result = study[method]
    before, after = result["untrained"]["ncc"], result["trained"]["ncc"]
    se = np.sqrt(before * (1 - before) / result["n_test"])
    knn = (result["untrained"]["knn"], result["trained"]["knn"])
    assert after > before + MARGIN_SE * se, (before, after, se, "knn", knn)
