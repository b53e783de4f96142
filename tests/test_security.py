"""Nothing from a file or the config runs as code: checkpoints and arrays carrying pickled
code are refused before the code runs, and hostile paths travel through every rule's shell
line as plain text."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ssltrace import io
from tests import tiny_study
from tests.conftest import ROOT


class Payload:
    """Unpickling this runs a shell command that creates `sentinel`."""

    def __init__(self, sentinel: Path):
        self.sentinel = sentinel

    def __reduce__(self):
        return (os.system, (f"touch {self.sentinel}",))


def checkpoint(**extra):
    """A checkpoint of the shape the training engine writes (ARCHITECTURE.md)."""
    return {
        "format": "ssltrace-checkpoint/1",
        "method": "untrained",
        "seed": 0,
        "epoch": 0,
        "architecture": {"name": "resnet18", "width": 0.125},
        "method_params": {},
        "n_classes": 4,
        "state_dict": {"head.fc1.weight": torch.zeros(2, 2)},
        **extra,
    }


@pytest.fixture
def evil_checkpoint(tmp_path):
    sentinel = tmp_path / "CODE_RAN"
    path = tmp_path / "checkpoints" / "epoch_000.pt"
    path.parent.mkdir()
    torch.save(checkpoint(method_params={"temperature": Payload(sentinel)}), path)
    return path, sentinel


def test_the_payload_really_runs_code_when_unpickled_unsafely(evil_checkpoint):
    """Guards the tests below: a refusal means something only if the file is dangerous."""
    path, sentinel = evil_checkpoint
    torch.load(path, weights_only=False)
    assert sentinel.exists()


def test_torch_load_refuses_a_checkpoint_carrying_code(evil_checkpoint):
    path, sentinel = evil_checkpoint
    with pytest.raises(io.ArtifactReadError) as err:
        io.torch_load(path)
    message = str(err.value)
    assert message.startswith(f"refusing to load {path}: not a plain-weights checkpoint")
    assert "posix.system" in message and "weights_only=True" in message
    assert "weights_only` set to `False`" not in message  # never advise running the code
    assert not sentinel.exists()


def test_a_plain_checkpoint_loads(tmp_path):
    io.torch_save(tmp_path / "epoch_000.pt", checkpoint())
    loaded = io.torch_load(tmp_path / "epoch_000.pt")
    assert loaded["architecture"] == {"name": "resnet18", "width": 0.125}
    assert torch.equal(loaded["state_dict"]["head.fc1.weight"], torch.zeros(2, 2))


def test_extraction_refuses_a_checkpoint_carrying_code(evil_checkpoint, tmp_path):
    from ssltrace.network import load_network

    path, sentinel = evil_checkpoint
    with pytest.raises(io.ArtifactReadError, match="refusing to load"):
        load_network(path, torch.device("cpu"))
    probe = tmp_path / "probe.npz"
    io.save_npz(probe, {"images": np.zeros((2, 32, 32, 3), np.uint8), "labels": np.zeros(2)})
    proc = subprocess.run(
        [sys.executable, "-m", "ssltrace.cli", "extract", "--checkpoints-dir", str(path.parent),
         "--probe", f"novel={probe}", "--epochs", "0", "--out-dir", str(tmp_path / "acts")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1 and f"refusing to load {path}" in errors[0], proc.stderr
    assert not sentinel.exists() and not (tmp_path / "acts" / "novel" / "epoch_000.npz").exists()


def test_load_npz_refuses_arrays_carrying_code(tmp_path):
    sentinel = tmp_path / "CODE_RAN"
    path = tmp_path / "acts.npz"
    np.savez(path, layers=np.array([Payload(sentinel)], dtype=object))
    with pytest.raises(io.ArtifactReadError, match=f"refusing to load {path}: it holds pickled"):
        io.load_npz(path)
    assert not sentinel.exists()
    with pytest.raises(ValueError, match="holds Python objects"):  # nor are such files written
        io.save_npz(tmp_path / "out.npz", {"layers": np.array([Payload(sentinel)], dtype=object)})
    assert not (tmp_path / "out.npz").exists() and not sentinel.exists()


SRC = ROOT / "src" / "ssltrace"


def source_lines(pattern: str) -> list[str]:
    """'file:line: text' of every line of ssltrace's source matching `pattern`."""
    hits = []
    for path in sorted(SRC.rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(pattern, line) and not line.lstrip().startswith("#"):
                hits.append(f"{path.relative_to(SRC)}:{number}: {line.strip()}")
    return hits


def test_no_reader_bypasses_the_safe_loaders():
    """Checkpoints load only through io.torch_load (weights_only=True), arrays never with
    pickles, and nothing hands a string to a shell."""
    assert [h for h in source_lines(r"torch\.load\(") if not h.startswith("io.py:")] == []
    assert [h for h in source_lines(r"np\.load\(") if "allow_pickle=False" not in h] == []
    unpicklers = source_lines(r"pickle\.(load|loads|Unpickler)\b")
    assert all(h.startswith("data/cifar.py:") for h in unpicklers), unpicklers
    assert source_lines(r"shell\s*=\s*True|os\.system\(|os\.popen\(") == []


@pytest.mark.slow
def test_hostile_results_and_data_dirs_run_the_dag_and_execute_nothing():
    work, results = tiny_study.hostile()
    for name in tiny_study.TABLES:
        assert (results / name.removeprefix("results/")).stat().st_size > 0
    for fig in tiny_study.FIG5:
        assert (results / fig.removeprefix("results/")).stat().st_size > 1000
    # No injected command ran: each would have created a PWNED* file in the job's directory.
    for folder in (work, work.parent, ROOT, Path.cwd()):
        assert not [p for p in folder.rglob("PWNED*")], folder
    # Each job got every path as one intact argument: the shell did not split or expand it.
    calls = tiny_study.argv_of_hostile()
    assert len(calls) >= 20
    for argv in calls:
        touched = [arg for arg in argv if "PWNED" in arg]
        assert touched, argv  # every job reads or writes under the hostile directory
        for arg in touched:
            assert tiny_study.HOSTILE in arg, (arg, argv)
