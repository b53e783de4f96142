"""End to end on an image folder at 224-px input (issue 19): the whole DAG on the CPU with an
ImageNet-stem ResNet-18 (tests/folder_study.py), its 2-process pretrain killed and resumed by
the workflow, and the corrupt-image settings at the data stage, before any training."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from ssltrace import io
from tests import ddp_kill
from tests.conftest import ROOT
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


RUN = "results/runs/simclr/seed0"


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as fh:
        return int(fh.read().rsplit(")", 1)[1].split()[1])


@pytest.fixture(scope="module")
def resumed(folder_study, tmp_path_factory):
    """A copy of the study whose SimCLR run (2 processes) the workflow trains again, killed
    while both ranks are at epoch 2's first step (epoch 1 committed): the pretrain job's
    process (torchrun, the shell it replaced gone) is SIGKILLed, as a scheduler or `kill -9`
    does. Returns (the copy, the killed Snakemake's output, what was left alive, the rerun's
    pretrain log)."""
    tmp = tmp_path_factory.mktemp("resumed")
    work = tmp / "work"
    shutil.copytree(folder_study, work, symlinks=True)
    shutil.rmtree(work / RUN)
    tag, marker = uuid.uuid4().hex, tmp / "paused"
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PATH": f"{ddp_kill.wrapper_dir(tmp)}{os.pathsep}{os.environ['PATH']}",
        ddp_kill.TAG_ENV: tag,
        **ddp_kill.pause_env(marker, "step", [2, 0]),
    }
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile")]
    cmd += ["--directory", str(work), "--cores", "2", f"{RUN}/train_log.tsv"]
    with open(tmp / "killed.log", "w") as out:
        proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=out, stderr=out)
        try:
            ddp_kill.wait_for_markers(marker, 2, proc)
            jobs = [pid for pid in ddp_kill.tagged(tag) if _parent(pid) == proc.pid]
            assert len(jobs) == 1, jobs
            with open(f"/proc/{jobs[0]}/cmdline", "rb") as fh:
                assert b"torch.distributed.run" in fh.read()  # no shell between
            os.kill(jobs[0], signal.SIGKILL)
            proc.wait(timeout=300)
            left = ddp_kill.survivors(tag, within=15.0)
        finally:
            proc.kill()
            ddp_kill.survivors(tag, within=0.0)  # a failure leaves no paused rank behind
    killed = (tmp / "killed.log").read_text()
    snakemake(work, f"{RUN}/train_log.tsv")  # the rerun, without the pause hook
    log = (work / "results/logs/pretrain/simclr_seed0.log").read_text()
    return work, killed, left, log


def test_a_killed_two_process_pretrain_leaves_no_process_and_resumes_bit_identical(
    folder_study, resumed
):
    work, killed, left, log = resumed
    assert "Error in rule pretrain" in killed, killed[-3000:]
    assert left == [], "processes of the killed job outlived it"  # ranks, loader workers
    assert "resuming after epoch 1" in log and "epoch 2/2" in log, log
    assert "epoch 1/2" not in log  # only the epoch after the kill was trained again
    ref = folder_study / RUN
    for epoch in range(3):
        name = f"checkpoints/epoch_{epoch:03d}.pt"
        got, want = io.torch_load(work / RUN / name), io.torch_load(ref / name)
        assert {k: v for k, v in got.items() if k != "state_dict"} == {
            k: v for k, v in want.items() if k != "state_dict"
        }
        assert got["state_dict"].keys() == want["state_dict"].keys()
        for key, tensor in want["state_dict"].items():
            assert torch.equal(got["state_dict"][key], tensor), (name, key)
    columns = ["epoch", "loss", "invariance", "regularisation", "lr"]  # not the timings
    logs = [pd.read_csv(d / "train_log.tsv", sep="\t")[columns] for d in (work / RUN, ref)]
    pd.testing.assert_frame_equal(*logs)


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
