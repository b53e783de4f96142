"""Random targets (seed 004 §5): the ViT target network, target label sets from trained
checkpoints, and the read-out / clustering measures against planted answers."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from torchvision.models import VisionTransformer

from ssltrace import io, layout, study
from ssltrace.analysis import analysis
from ssltrace.analysis.base import Job, run_job
from ssltrace.analysis.geometry import cdnv, mean_class_distance, within_class_variance
from ssltrace.analysis.random_targets import clustering_measures, ratios, target_accuracy
from ssltrace.config import ConfigError
from ssltrace.models import build_backbone
from ssltrace.targets import randomness
from tests.conftest import ROOT
from tests.test_config import base, put


# ---------------------------------------------------------------- the ViT of B.5 ---------------
def test_vit_matches_torchvisions_parameter_count_and_shapes():
    # Seed 004 B.5: 10 layers, 8 heads, 384 wide, class token; torchvision's ViT of the same
    # shape (4x4 patches, MLP 4 x 384) is the independent count: its own head is left out.
    with torch.device("meta"):
        ours = build_backbone("vit")
        ref = VisionTransformer(32, 4, num_layers=10, num_heads=8, hidden_dim=384, mlp_dim=1536)
    count = sum(p.numel() for p in ours.parameters())
    assert count == sum(p.numel() for n, p in ref.named_parameters() if not n.startswith("heads"))
    assert ours.layer_names == ("embed", *(f"block{i}" for i in range(1, 11)), "cls")
    small = build_backbone("vit", depth=2, hidden=32, heads=4)
    assert small(torch.randn(3, 3, 32, 32)).shape == (3, 32)
    with pytest.raises(ValueError, match="heads"):
        build_backbone("vit", hidden=30, heads=4)


# ---------------------------------------------------------------- measures by hand -------------
def test_randomness_is_normalised_from_init_to_end():
    assert randomness([0, 5, 10], 10).tolist() == [1.0, 0.5, 0.0]


def test_target_accuracy_of_degenerate_target_sets():
    x = np.array([[0.0], [1.0], [2.0], [3.0]])
    # One class everywhere in training: the constant classifier, right on 2 of 3 test images.
    assert target_accuracy(x, np.zeros(4, int), x[:3], np.array([0, 0, 5])) == pytest.approx(2 / 3)
    # Two separable classes; a test image of a class unseen in training counts as an error.
    train_x = np.r_[np.zeros((10, 2)), np.ones((10, 2)) * 5] + np.random.default_rng(0).normal(
        0, 0.1, (20, 2)
    )
    train_y = np.repeat([3, 7], 10)
    test_x, test_y = np.array([[0.0, 0.0], [5.0, 5.0], [5.0, 5.0], [0, 0]]), np.array([3, 7, 7, 9])
    assert target_accuracy(train_x, train_y, test_x, test_y, "logistic") == pytest.approx(0.75)


def test_clustering_measures_are_the_geometry_measures():
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(4), 10)
    x = rng.normal(size=(40, 3)) + 3 * rng.normal(size=(4, 3))[y]
    found = clustering_measures(x, y, x, y)
    assert found["cdnv"] == pytest.approx(cdnv(x, y))
    assert found["within_var"] == pytest.approx(within_class_variance(x, y))
    assert found["between_dist"] == pytest.approx(mean_class_distance(x, y))
    single = clustering_measures(
        x, np.zeros(40, int), x, np.r_[np.zeros(30, int), np.ones(10, int)]
    )
    assert single["ncc_test"] == 0.75 and np.isnan(single["cdnv"])


def test_ratios_semantic_over_random():
    sem = {"ncc_test": 0.8, "cdnv": 0.5, "within_var": 2.0, "between_dist": 8.0}
    rnd = {"ncc_test": 0.2, "cdnv": 2.0, "within_var": 2.0, "between_dist": 0.0}
    found = ratios(sem, rnd)
    assert found["ncc_test"] == 4.0 and found["cdnv"] == 0.25 and found["within_var"] == 1.0
    assert np.isnan(found["between_dist"])


# ---------------------------------------------------------------- the analysis -----------------
SETTINGS = {"classifier": "logistic", "backend": "auto", "max_iter": 1000, "semantic": "final"}
SETTINGS |= {"layers": None, "device": "cpu"}


def _planted(tmp_path, n_per_class=20, classes=5):
    """Features that cluster by the true class; target set t relabels a share r(t) of images
    at random, r = 1, 0.5, 0 for epochs 0, 5, 10 (init, half-way, end)."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(classes), n_per_class)
    part = np.tile(np.r_[np.zeros(n_per_class // 2), np.ones(n_per_class // 2)], classes)
    n = labels.size
    preds = []
    for r in (1.0, 0.5, 0.0):
        y = labels.copy()
        flip = rng.random(n) < r
        y[flip] = rng.integers(0, classes, flip.sum())
        preds.append(y)
    targets = {
        "networks": np.array(["cnn"]),
        "predictions_cnn": np.stack(preds),
        "epochs_cnn": np.array([0, 5, 10]),
        "randomness_cnn": randomness([0, 5, 10], 10),
        "labels": labels,
        "part": part.astype(np.int64),
        "n_classes": np.int64(classes),
    }
    io.save_npz(tmp_path / "targets.npz", targets)
    centres = rng.normal(size=(classes, 8)) * 4
    for epoch in (0, 1):
        x = centres[labels] * epoch + rng.normal(size=(n, 8))  # epoch 0: no structure
        acts = {
            "layers": np.array(["deep"]),
            "deep": x.astype(np.float32),
            "labels": labels,
            "coarse": labels,
            "part": part.astype(np.int64),
            "epoch": np.int64(epoch),
        }
        io.save_npz(tmp_path / "known" / layout.epoch_file(epoch), acts)
    inputs = {"known": tmp_path / "known", "targets": tmp_path / "targets.npz"}
    return Job("m", 0, [0, 1], inputs, cache_dir=tmp_path / "cache", log=lambda _m: None)


def test_random_targets_analysis_on_planted_targets(tmp_path):
    job = _planted(tmp_path)
    out = {"scores": tmp_path / "scores.npz"}
    run_job(analysis("random_targets")(SETTINGS), job, tmp_path / "t.tsv", out)
    table = pd.read_csv(tmp_path / "t.tsv", sep="\t")
    acc = table[table.metric == "linear_logistic"].set_index(["epoch", "probe"])["value"]
    # Trained representation: accuracy falls as randomness rises (semantic best).
    assert acc[(1, "cnn:10")] > 0.9 > acc[(1, "cnn:5")] > acc[(1, "cnn:0")]
    ratio = table[table.probe == "cnn"].set_index(["epoch", "metric"])["value"]
    assert ratio[(1, "ratio_ncc_test")] > 2 * ratio[(0, "ratio_ncc_test")]
    assert ratio[(1, "ratio_cdnv")] < 0.5  # semantic targets cluster far tighter
    scores = io.load_npz(out["scores"])
    assert scores["accuracy"].shape == (2, 1, 1, 3)  # epoch x layer x network x target
    assert scores["accuracy"][1, 0, 0, 2] == pytest.approx(acc[(1, "cnn:10")])
    assert scores["randomness"].tolist() == [[1.0, 0.5, 0.0]]
    # Rerun: every epoch from the cache, same numbers.
    run_job(analysis("random_targets")(SETTINGS), job, tmp_path / "t2.tsv", out)
    assert pd.read_csv(tmp_path / "t2.tsv", sep="\t").equals(table)


def test_semantic_labels_option_uses_the_true_classes(tmp_path):
    job = _planted(tmp_path)
    result = analysis("random_targets")({**SETTINGS, "semantic": "labels"}).run(job)
    final = analysis("random_targets")(SETTINGS).run(job)
    pick = lambda rows: {r[3]: r[4] for r in rows if r[0] == 1 and r[2] == "cnn"}  # noqa: E731
    # Target set 'end of training' equals the true labels here (r = 0): same ratios.
    assert pick(result.rows) == pytest.approx(pick(final.rows))


def test_labels_of_another_probe_set_are_refused(tmp_path):
    job = _planted(tmp_path)
    targets = io.load_npz(job.inputs["targets"])
    io.save_npz(job.inputs["targets"], {**targets, "labels": targets["labels"][::-1].copy()})
    with pytest.raises(ValueError, match="target_labels"):
        analysis("random_targets")(SETTINGS).run(job)


# ---------------------------------------------------------------- the DAG's target runs --------
def test_target_networks_are_supervised_runs_with_the_papers_settings():
    cfg = study.checked(base())
    runs = study.target_runs(cfg)
    assert runs == {"target_resnet18": "resnet18", "target_vit": "vit"}
    defaults = study.checked(put(base(), "random_targets", {}))  # ci preset removed
    vit = defaults["random_targets"]["network_settings"]["vit"]
    assert vit["architecture"] == {"name": "vit", "depth": 10, "heads": 8, "hidden": 384}
    run = study.run_settings(defaults, "target_vit", 0)
    assert run["method"] == "supervised" and run["architecture"]["name"] == "vit"
    assert run["train"]["optimizer"] == {"name": "adam", "lr": 1e-3, "weight_decay": 5e-5}
    assert run["train"]["schedule"]["name"] == "cosine"
    res = study.run_settings(defaults, "target_resnet18", 0)
    assert res["train"]["optimizer"] == {"name": "adam", "lr": 0.05}
    assert study.target_epochs(put(cfg, "random_targets.epochs", {"every": 5}), "target_vit") == [
        0,
        2,
    ]


@pytest.mark.parametrize(
    ("key", "value", "named"),
    [
        ("random_targets.networks", ["resnet18", "mlp"], "random_targets.networks"),
        (
            "random_targets.network_settings.vit.architecture",
            {"name": "vit", "heads": 7, "hidden": 32},
            "random_targets.network_settings.vit.architecture",
        ),
        ("random_targets.layers", ["layer9"], "random_targets.layers"),
    ],
)
def test_bad_random_target_settings_name_their_key(key, value, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        study.checked(put(base(), key, value))


def test_target_labels_from_trained_checkpoints(tmp_path):
    # A real target run (tiny ResNet, 2 epochs) and the CLI verb the workflow's rule calls.
    from ssltrace.data import prepare_dataset
    from ssltrace.splits import write_probe, write_split
    from ssltrace.training import train_run

    cfg = study.checked(base())
    data, split, probe = tmp_path / "d.npz", tmp_path / "split.json", tmp_path / "known.npz"
    prepare_dataset("synthetic", tmp_path, data, train_per_class=16, test_per_class=12)
    write_split(data, split, n_known=4, n_novel=4, seed=0)
    write_probe("known", data, split, probe, train_per_class=8, test_per_class=4, seed=0)
    run = study.run_settings(cfg, "target_resnet18", 0)
    run["train"].update(device="cpu", threads=1)
    train_run(run, data, split, tmp_path / "run", log=lambda _m: None)
    settings = {"epochs": {"resnet18": [0, 1, 2]}, "last_epochs": {"resnet18": 2}}
    out = tmp_path / "random_targets.npz"
    command = [sys.executable, "-m", "ssltrace.cli", "target-labels"]
    command += ["--target", f"resnet18={tmp_path / 'run' / 'checkpoints'}", "--probe", str(probe)]
    command += ["--out", str(out), "--settings", json.dumps(settings), "--cache-dir"]
    command += [str(tmp_path / "cache"), "--runtime", json.dumps({"device": "cpu"})]
    subprocess.run(command, check=True, cwd=ROOT, capture_output=True)
    found = io.load_npz(out)
    known = io.load_npz(probe)
    assert found["predictions_resnet18"].shape == (3, known["labels"].size)
    assert found["randomness_resnet18"].tolist() == [1.0, 0.5, 0.0]
    assert found["n_classes"] == 20 and np.array_equal(found["labels"], known["labels"])
    # The predictions are the network's argmax, recomputed independently from the checkpoint.
    from ssltrace.augment import Augmenter
    from ssltrace.network import load_network

    net, ckpt = load_network(tmp_path / "run" / "checkpoints" / "epoch_002.pt", torch.device("cpu"))
    x = Augmenter(ckpt.get("augment"), torch.device("cpu")).plain(torch.from_numpy(known["images"]))
    with torch.no_grad():
        expected = net.head(net.backbone(x)).argmax(1).numpy()
    assert np.array_equal(found["predictions_resnet18"][2], expected)
    cached = list((tmp_path / "cache" / "target_labels").rglob("*.npz"))
    assert len(cached) == 3  # one entry per checkpoint: a rerun predicts nothing again


def test_torch_solver_reads_out_what_scikit_learn_does(tmp_path):
    job = _planted(tmp_path)
    job.cache_dir = None
    pick = lambda rows: np.array([r[4] for r in rows if r[3] == "linear_logistic"])  # noqa: E731
    sklearn = pick(analysis("random_targets")({**SETTINGS, "backend": "sklearn"}).run(job).rows)
    torch_ = pick(analysis("random_targets")({**SETTINGS, "backend": "torch"}).run(job).rows)
    assert np.abs(sklearn - torch_).max() <= 0.06  # same objective, other solver: 3 of 50 images
