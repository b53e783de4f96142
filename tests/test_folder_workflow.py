"""End to end on an image folder at 224-px input (issue 19): the whole DAG on the CPU with an
ImageNet-stem ResNet-18 (tests/folder_study.py), and the corrupt-image settings at the data
stage, before any training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from ssltrace import io
from tests.folder_study import (
    DAG_CLASSES,
    DAG_COARSE,
    folder_config,
    make_image_folder,
    write_coarse_map,
)
from tests.tiny_study import snakemake

pytestmark = pytest.mark.slow


def _workdir(path: Path, corrupt: bool = False, **options) -> Path:
    path.mkdir(parents=True)
    root = make_image_folder(path / "images", corrupt=corrupt, classes=DAG_CLASSES)
    cfg = folder_config(root, write_coarse_map(path / "coarse.tsv", DAG_COARSE))
    cfg["dataset"]["options"].update(options)
    (path / "config.yaml").write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def folder_study(tmp_path_factory) -> Path:
    work = _workdir(tmp_path_factory.mktemp("folder") / "work")
    snakemake(work)  # the default target: every table and figure
    return work


def test_runs_train_from_the_folder_and_checkpoint_every_epoch(folder_study):
    for method in ("simclr",):
        run = folder_study / "results" / "runs" / method / "seed0"
        files = sorted(p.name for p in (run / "checkpoints").glob("epoch_*.pt"))
        assert files == ["epoch_000.pt", "epoch_001.pt", "epoch_002.pt"]
        log = pd.read_csv(run / "train_log.tsv", sep="\t")
        assert log["epoch"].tolist() == [1, 2] and np.isfinite(log["loss"]).all()
        assert io.torch_load(run / "checkpoints" / "epoch_002.pt")["architecture"]["name"] == (
            "resnet18_imagenet"
        )
    # SimCLR trained as two processes (torchrun; tests/folder_study.py)
    fingerprint = folder_study / "results/runs/simclr/seed0/.state/fingerprint.json"
    assert '"processes": 2' in fingerprint.read_text()


def test_probe_sets_hold_224_px_images_of_the_folder(folder_study):
    probes = folder_study / "results" / "probes"
    for kind in ("novel", "known", "rdm"):
        images = io.load_npz(probes / f"{kind}.npz", keys=("images",))["images"]
        assert images.dtype == np.uint8 and images.shape[1:] == (224, 224, 3), kind


def test_tables_and_figures_are_complete_and_a_rerun_does_nothing(folder_study):
    tables = sorted(p.name for p in (folder_study / "results" / "tables").glob("*.tsv"))
    assert {"fewshot.tsv", "clustering.tsv", "geometry.tsv"} <= set(tables)
    assert len(list((folder_study / "results" / "figures").rglob("*.png"))) > 10
    dry = snakemake(folder_study, "-n")
    assert "Nothing to be done" in dry.stdout + dry.stderr


def test_a_corrupt_jpeg_stops_the_data_stage_naming_it(tmp_path):
    work = _workdir(tmp_path / "work", corrupt=True)
    proc = snakemake(work, "results/data/imagefolder.npz", check=False)
    assert proc.returncode != 0
    log = (work / "results" / "logs" / "dataset.log").read_text()
    assert "train/apple/apple_000.jpg" in log and "on_corrupt: skip" in log
    assert not (work / "results" / "runs").exists()


def test_a_corrupt_jpeg_is_skipped_with_a_warning(tmp_path):
    work = _workdir(tmp_path / "work", corrupt=True, on_corrupt="skip")
    snakemake(work, "results/data/imagefolder.npz")
    log = (work / "results" / "logs" / "dataset.log").read_text()
    assert "skipping 1 corrupt image(s) of 48" in log and "apple_000.jpg" in log
    files = io.load_npz(work / "results" / "data" / "imagefolder.npz")["train_files"]
    assert "train/apple/apple_000.jpg" not in files.tolist() and len(files) == 47
