"""Two runs of the tiny study on the CPU, in two directories and with different --cores, give
identical results.

The second run is the one under the hostile directory name of test_security (sharing it
keeps the suite within its time budget), so this also shows that where a study lives does not
change what it computes. It runs on `--cores 1`, the reference on 2: Snakemake grants the
training job min(its threads, --cores), and a deterministic CPU run's numbers depend on the
thread count, so the trainer fixes it (`train.threads`, default 2) whatever it is granted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ssltrace import io, layout
from tests import tiny_study

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def two_runs() -> tuple[Path, Path]:
    return tiny_study.reference() / "results", tiny_study.hostile()[1]


def test_the_two_runs_had_different_cores_and_the_same_training_threads(two_runs):
    logs = [root / "logs/pretrain/simclr_seed0.log" for root in two_runs]
    for log in logs:
        assert "deterministic on the CPU, so on 2 torch threads" in log.read_text()
    pretrain = [argv for argv in tiny_study.argv_of_hostile() if argv[0] == "pretrain"]
    assert len(pretrain) == 1 and pretrain[0][pretrain[0].index("--threads") + 1] == "1"


def relative_files(root: Path, pattern: str) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.glob(pattern) if p.is_file())


def test_every_table_is_identical_byte_for_byte(two_runs):
    a, b = two_runs
    tables = relative_files(a, "tables/*.tsv")
    assert [t.stem for t in tables] == sorted(tiny_study.ANALYSES)
    assert relative_files(b, "tables/*.tsv") == tables
    for table in tables:
        assert (a / table).read_bytes() == (b / table).read_bytes(), table


def test_every_per_run_table_and_matrix_is_identical(two_runs):
    a, b = two_runs
    files = relative_files(a, "metrics/**/*")
    assert len(files) >= 9 and relative_files(b, "metrics/**/*") == files
    for name in files:
        # .npz files are written byte-reproducibly too (ssltrace.io.save_npz)
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_checkpoints_and_activations_are_identical(two_runs):
    a, b = two_runs
    checkpoints = relative_files(a, "runs/*/*/checkpoints/*.pt")
    assert len(checkpoints) == 3 and relative_files(b, "runs/*/*/checkpoints/*.pt") == checkpoints
    for name in checkpoints:
        ca, cb = io.torch_load(a / name), io.torch_load(b / name)
        assert all(torch.equal(v, cb["state_dict"][k]) for k, v in ca["state_dict"].items())
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    activations = relative_files(a, "activations/**/*.npz")
    assert (
        len(activations) == len(layout.PROBES) * 3
        and relative_files(b, "activations/**/*.npz") == activations
    )
    for name in activations:
        xa, xb = io.load_npz(a / name), io.load_npz(b / name)
        assert xa.keys() == xb.keys()
        assert all(np.array_equal(xa[k], xb[k]) for k in xa), name
