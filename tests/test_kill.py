"""SIGKILL at exact points of training, extraction, analysis and figures, then rerun the
workflow: nothing is lost (the result equals an uninterrupted run's, bit for bit) and nothing
half-written is ever taken for complete.

Each kill comes from inside the job at a named point (tests/killpoints.py): before or after
a given file is renamed into place, or after a given optimiser step. What is killed:
"group", Snakemake and every job at once (a node dying), so Snakemake's incomplete-output
marks are what stands between the partial files and the rerun; "job", only the job (the OOM
killer), which Snakemake sees fail and cleans up after; "shell", the shell of the job, whose
stage must then die with it (its parent-death signal) instead of writing on as an orphan;
"snakemake", Snakemake alone, its job running on to its end (a rerun's trainer waits for it);
"shell+snakemake", both.
"""

from __future__ import annotations

import fcntl
import shutil
import signal
import time

import numpy as np
import pandas as pd
import pytest
import torch

from ssltrace import io
from tests import killpoints, tiny_study
from tests.tiny_study import FIG5, RUN, TABLES, hooked_env, reference, snakemake

pytestmark = pytest.mark.slow

TRAIN_LOG = f"{RUN}/train_log.tsv"

# (kill point, scope, what the killed job itself logged before dying: the state it found)
TRAINING_KILLS = [
    # 1. while the initialisation is being saved (its temp written, not yet renamed)
    (dict(at="before-replace", match="*/.state/epochs/epoch_000.pt"), "group", None),
    # 2. right after epoch 1's weights are stored, before the checkpoint link and the commit
    (
        dict(at="after-replace", match="*/.state/epochs/epoch_001.pt"),
        "shell",
        "initialisation saved as epoch 0",
    ),
    # 3. while resume.pt (the commit point of epoch 1) is being written
    (dict(at="before-replace", match="*/.state/resume.pt"), "group", "after epoch 0"),
    # 4. while train_log.tsv is being written (epoch 1 is committed, the log is not)
    (dict(at="before-replace", match=f"*/{TRAIN_LOG}"), "shell+snakemake", "after epoch 0"),
    # 5. mid-epoch 2, after its second optimiser step (only the job dies)
    (dict(at="step", match=[2, 1]), "job", "after epoch 1"),
    # 6. at epoch 2's first step Snakemake alone dies; the trainer finishes the run orphaned
    (dict(at="step", match=[2, 0]), "snakemake", "after epoch 1"),
]


def copy_reference(tmp_path, *remove):
    """A copy of the reference study (Snakemake metadata included) without `remove`."""
    work = tmp_path / "study"
    shutil.copytree(reference(), work, symlinks=True)
    for rel in remove:
        shutil.rmtree(work / rel)
    return work


def assert_killed(proc, scope, work):
    if scope in ("group", "snakemake", "shell+snakemake"):  # no cleanup, no error report
        assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
        if scope == "snakemake":
            wait_for_orphans(work)
        unlock(work)
    else:  # only the job (or its shell) died: Snakemake reports it and removes its outputs
        assert proc.returncode == 1 and "Error in rule" in proc.stderr, proc.stderr[-3000:]
    assert not survivors(work), "a stage outlived the shell of its job"


def survivors(work):
    path = work.parent / f"{work.name}_survived"
    return path.read_text().splitlines() if path.exists() else []


def wait_for_orphans(work, timeout=300.0):
    """Wait until no trainer of the run is left (it holds the run's lock while it trains):
    the orphan of a killed Snakemake rewrites the run's outputs until it ends, while the rerun
    below checks them."""
    lock = work / RUN / ".train.lock"
    deadline = time.monotonic() + timeout
    with open(lock, "a") as fh:
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                assert time.monotonic() < deadline, "the orphaned trainer never ended"
                time.sleep(0.2)


def unlock(work):
    """What `snakemake --unlock` does after a crash (run for real once, in the DAG test):
    remove the locks the killed Snakemake left, which would otherwise refuse every rerun."""
    locks = list((work / ".snakemake" / "locks").iterdir())
    assert locks, "a killed Snakemake leaves its lock"
    for lock in locks:
        lock.unlink()


def assert_every_checkpoint_loads(run):
    for path in [*run.glob(".state/epochs/epoch_*.pt"), *run.glob("checkpoints/epoch_*.pt")]:
        assert io.torch_load(path)["state_dict"], path


def assert_same_checkpoint(a, b):
    ca, cb = io.torch_load(a), io.torch_load(b)
    assert {k: v for k, v in ca.items() if k != "state_dict"} == {
        k: v for k, v in cb.items() if k != "state_dict"
    }
    assert ca["state_dict"].keys() == cb["state_dict"].keys()
    for key, tensor in ca["state_dict"].items():
        assert torch.equal(tensor, cb["state_dict"][key]), f"{a}: {key}"


def test_sigkill_at_six_points_of_training_then_rerun_is_bit_identical(tmp_path):
    work = copy_reference(tmp_path, "results/runs")
    log = work / "results/logs/pretrain/simclr_seed0.log"
    for kill, scope, found in TRAINING_KILLS:
        env = hooked_env(work, **kill, scope=scope)
        env[killpoints.SURVIVED_ENV] = str(work.parent / f"{work.name}_survived")
        proc = snakemake(work, TRAIN_LOG, "--rerun-incomplete", env=env, check=False)
        assert_killed(proc, scope, work)
        text = log.read_text()
        if found is None:
            assert "resuming" not in text, text
        else:
            assert found in text, (kill, text)
        assert_every_checkpoint_loads(work / RUN)

    snakemake(work, TRAIN_LOG, "--rerun-incomplete", env=hooked_env(work))
    assert "epochs 0..2 already trained; nothing to do" in log.read_text()
    ref = reference() / RUN
    names = sorted(p.name for p in (work / RUN / "checkpoints").glob("epoch_*.pt"))
    assert names == ["epoch_000.pt", "epoch_001.pt", "epoch_002.pt"]
    for name in names:
        assert_same_checkpoint(work / RUN / "checkpoints" / name, ref / "checkpoints" / name)
    columns = ["epoch", "loss", "invariance", "regularisation", "lr"]
    pd.testing.assert_frame_equal(
        pd.read_csv(work / TRAIN_LOG, sep="\t")[columns],
        pd.read_csv(reference() / TRAIN_LOG, sep="\t")[columns],
    )
    assert tiny_study.temp_leftovers(work / "results") == []


DOWNSTREAM = [  # the per-epoch cache too: extraction and analysis really compute
    "results/cache",
    "results/activations",
    "results/metrics",
    "results/tables",
    "results/figures",
]
TARGETS = [TABLES[0], TABLES[1], *FIG5]  # fewshot, clustering and figure 5
NOVEL = "results/activations/simclr/seed0/novel"

DAG_KILLS = [
    # extraction: two of the three epoch files written
    (dict(at="after-replace", match=f"*/{NOVEL}/epoch_001.npz"), "group"),
    # analysis: the few-shot table written, its error matrices not
    (dict(at="after-replace", match="*/metrics/fewshot/simclr/seed0.tsv"), "group"),
    # figures: the PNG written, the PDF not
    (dict(at="after-replace", match=f"*/{FIG5[0]}"), "group"),
]


def test_sigkill_during_extraction_analysis_and_figures_leaves_nothing_taken_for_complete(
    tmp_path,
):
    work = copy_reference(tmp_path, *DOWNSTREAM)
    for i, (kill, scope) in enumerate(DAG_KILLS):
        proc = snakemake(
            work, *TARGETS, "--rerun-incomplete", env=hooked_env(work, **kill, scope=scope),
            check=False,
        )  # fmt: skip
        if i == 0:  # the user's way back after a crash: --unlock, then --rerun-incomplete
            assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
            assert list((work / ".snakemake" / "locks").iterdir())  # left by the dead Snakemake
            snakemake(work, "--unlock")
            partial = sorted(p.name for p in (work / NOVEL).glob("epoch_*.npz"))
            assert partial == ["epoch_000.npz", "epoch_001.npz"]  # looks plausible, is not
            dry = snakemake(work, *TARGETS, "-n", check=False)
            out = dry.stdout + dry.stderr
            assert dry.returncode != 0 and "IncompleteFilesException" in out, out[-3000:]
            incomplete = out[out.index("Incomplete files:") :].splitlines()
            assert NOVEL in incomplete, out[-3000:]
        else:
            assert_killed(proc, scope, work)

    snakemake(work, *TARGETS, "--rerun-incomplete", env=hooked_env(work))
    dry = snakemake(work, *TARGETS, "-n")
    assert "Nothing to be done" in dry.stdout + dry.stderr
    ref = reference()
    for epoch in range(3):
        name = f"{NOVEL}/epoch_{epoch:03d}.npz"
        got, want = io.load_npz(work / name), io.load_npz(ref / name)
        assert got.keys() == want.keys()
        for key in want:
            assert np.array_equal(got[key], want[key]), (name, key)
    for name in (
        *TABLES[:2],
        "results/metrics/fewshot/simclr/seed0.tsv",
        "results/metrics/clustering/simclr/seed0.tsv",
    ):
        assert (work / name).read_bytes() == (ref / name).read_bytes(), name
    for name in ("fewshot/simclr/seed0_errors.npz", "clustering/simclr/seed0_clusters.npz"):
        got, want = (
            io.load_npz(work / "results/metrics" / name),
            io.load_npz(ref / "results/metrics" / name),
        )
        assert all(np.array_equal(got[k], want[k]) for k in want), name
    assert_figure_complete(work / FIG5[0], work / FIG5[1])
    assert tiny_study.temp_leftovers(work / "results") == []


def assert_figure_complete(png, pdf):
    import matplotlib.image

    image = matplotlib.image.imread(png)  # a truncated PNG fails to decode
    assert image.ndim == 3 and min(image.shape[:2]) > 50
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF") and data.rstrip().endswith(b"%%EOF")
