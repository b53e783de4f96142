"""End to end: the smallest full DAG (presets/ci.yaml) through Snakemake, every output checked."""

import numpy as np
import pandas as pd
import pytest

from ssltrace import config as sslconfig
from ssltrace import io
from tests.conftest import run_snakemake

pytestmark = pytest.mark.slow


def snakemake(root, workdir, *args, check=True):
    return run_snakemake(workdir, *args, check=check)


def test_every_run_has_a_checkpoint_per_epoch_and_a_log(ci_study):
    _, work, cfg = ci_study
    for method in cfg["methods"]:
        for seed in cfg["seeds"]:
            run = work / "results" / "runs" / method / f"seed{seed}"
            epochs = sslconfig.checkpoint_epochs(cfg, method)
            files = sorted(p.name for p in (run / "checkpoints").glob("epoch_*.pt"))
            assert files == [f"epoch_{e:03d}.pt" for e in epochs]
            ckpt = io.torch_load(run / "checkpoints" / files[-1])
            assert ckpt["method"] == method and ckpt["seed"] == seed
            assert ckpt["epoch"] == epochs[-1]
            log = pd.read_csv(run / "train_log.tsv", sep="\t")
            assert {"epoch", "loss", "lr", "seconds", "images_per_s"} <= set(log.columns)
            assert log["epoch"].tolist() == epochs[1:]
            assert np.isfinite(log["loss"].astype(float)).all()


def test_activations_hold_every_layer_for_every_epoch(ci_study):
    _, work, cfg = ci_study
    layers = sslconfig.analysed_layers(cfg)
    for method in cfg["methods"]:
        for probe, n in (("novel", 4 * 5 * 12), ("human", 10 * 12)):
            folder = work / "results" / "activations" / method / "seed0" / probe
            for epoch in sslconfig.analysed_epochs(cfg, method):
                acts = io.load_npz(folder / f"epoch_{epoch:03d}.npz")
                assert acts["layers"].tolist() == layers
                for layer in layers:
                    assert acts[layer].shape[0] == n and np.isfinite(acts[layer]).all()


def test_tables_cover_every_run_epoch_and_layer(ci_study):
    _, work, cfg = ci_study
    layers = sslconfig.analysed_layers(cfg)
    fewshot = pd.read_csv(work / "results/tables/fewshot.tsv", sep="\t")
    clustering = pd.read_csv(work / "results/tables/clustering.tsv", sep="\t")
    for method in cfg["methods"]:
        n_epochs = len(sslconfig.analysed_epochs(cfg, method))
        rows = fewshot[(fewshot.method == method) & (fewshot.metric == "fewshot_error")]
        assert len(rows) == n_epochs * len(layers) * len(cfg["seeds"])
        assert rows["value"].between(0, 1).all()
        mi = clustering[(clustering.method == method) & (clustering.metric == "mi_bits")]
        assert len(mi) == n_epochs * len(layers) * len(cfg["seeds"])
        assert mi["value"].between(0, np.log2(4) + 1e-9).all()


FIGURES = [
    "seed000/fig04_fewshot_error_matrices",
    "seed000/fig05_fewshot_error_vs_layer",
    "seed000/fig06_dendrograms",
    "seed000/fig07_correspondence",
    "seed000/fig08_mi_vs_layer",
    "seed000/fig09_human_confusion",
    "seed000/fig10_spearman_vs_layer",
    "seed001/fig01_rdm_stability",
    "seed001/fig02_category_dissimilarity",
    "seed001/rdm_snapshots",
    "seed004/fig02_geometry_accuracy",
    "seed004/fig03_loss_and_accuracy",
    "seed004/fig05_geometry_layers",
    "seed004/cdnv_vs_epoch",
    "training/training_curves",
]


def test_figures_exist_and_rerun_does_nothing(ci_study):
    root, work, cfg = ci_study
    folder = work / "results" / "figures"
    for stem in FIGURES:
        for fmt in cfg["figures"]["formats"]:
            assert (folder / f"{stem}.{fmt}").stat().st_size > 1000, f"{stem}.{fmt}"
    assert len(list(folder.rglob("*.png"))) == len(FIGURES)
    dry = snakemake(root, work, "-n")
    assert "Nothing to be done" in dry.stdout + dry.stderr
