"""Training one run with 2 processes (torchrun, gloo on the CPU) through the CLI: killed mid
epoch and resumed it ends bit-identical to an uninterrupted 2-process run; a 2-process state
is not resumed by 1 process; bad settings are refused naming the key; a SIGKILL of torchrun
while rank 0 writes a checkpoint leaves neither a rank process nor a partial checkpoint.

The run is MoCo v2 with a queue and shuffled-BatchNorm groups: the queue is shared across
ranks (every rank enqueues every rank's keys) and the shuffles draw from each rank's own
global RNG, so a resume that restored only rank 0's RNG state, or a queue that diverged,
would not end bit-identical.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import uuid

import numpy as np
import pandas as pd
import pytest
import torch

from ssltrace.config import defaults
from ssltrace.io import save_npz, torch_load, write_json
from ssltrace.network import build_network
from ssltrace.training import ddp, train_run
from tests import ddp_kill, killpoints, tiny_study

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    save_npz(
        root / "tiny.npz",
        {
            "train_images": rng.integers(0, 256, (48, 32, 32, 3), dtype=np.uint8),
            "train_fine": np.arange(48, dtype=np.int64) % 4,
            "test_images": rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8),
            "test_fine": np.arange(4, dtype=np.int64),
        },
    )
    write_json(root / "split.json", {"seed": 0, "known_fine": [0, 1, 2], "novel_fine": [3]})
    return root / "tiny.npz", root / "split.json"


def make_run(processes=2, **train):
    return {
        "method": "moco_v2",
        "seed": 0,
        "method_params": {"queue_size": 24, "proj_dim": 16, "shuffle_bn_groups": 2},
        "architecture": {"name": "resnet18", "width": 0.125},
        "train": {
            **defaults()["train"],
            "epochs": 2,
            "batch_size": 16,
            "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4},
            "schedule": {"name": "constant", "warmup_epochs": 0},
            "device": "cpu",
            "deterministic": True,
            "threads": 1,
            "processes": processes,
            **train,
        },
        "augment": {"preset": "seed000"},
    }


def torchrun_command(data, out, *, kill=None, tmp=None, env=None):
    """(command, environment) of `ssltrace pretrain` of make_run() in 2 processes; `kill` =
    killpoints spec."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
    for name in ddp.ENV:
        env.pop(name, None)
    entry = ["-m", "ssltrace.cli"]
    if kill is not None:  # the CLI behind the kill hooks of tests/killpoints.py
        entry = [str(killpoints.wrapper_dir(tmp) / "ssltrace")]
        env.update(killpoints.kill_env(**kill))
    if ddp_kill.PAUSE_ENV in env:  # the CLI behind the pause hook of tests/ddp_kill.py
        entry = [str(ddp_kill.wrapper_dir(tmp) / "ssltrace-paused")]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node"]
    cmd += ["2", *entry, "pretrain", "--dataset", str(data[0]), "--split", str(data[1])]
    cmd += ["--out-dir", str(out), "--threads", "1", "--settings", json.dumps(make_run())]
    return cmd, env


def torchrun(data, out, *, kill=None, tmp=None):
    cmd, env = torchrun_command(data, out, kill=kill, tmp=tmp)
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "run"
    proc = torchrun(data, out)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def interrupted(data, tmp_path_factory):
    """A 2-process run SIGKILLed at epoch 2's first step (epoch 1 committed)."""
    tmp = tmp_path_factory.mktemp("killed")
    out = tmp / "run"
    proc = torchrun(data, out, kill=dict(at="step", match=[2, 0], scope="job"), tmp=tmp)
    assert proc.returncode != 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (out / "checkpoints" / "epoch_001.pt").exists()
    assert not (out / "checkpoints" / "epoch_002.pt").exists()
    keep = tmp / "kept"
    shutil.copytree(out, keep)  # a copy for the world-size test
    return out, keep


def test_two_processes_write_once_and_log_the_global_batch(reference):
    out, text = reference
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        f"epoch_00{e}.pt" for e in range(3)
    ]
    log = pd.read_csv(out / "train_log.tsv", sep="\t")
    assert log["epoch"].tolist() == [1, 2] and np.isfinite(log["loss"]).all()
    assert text.count("initialisation saved as epoch 0") == 1  # rank 0 alone reports
    state = torch_load(out / ".state" / "resume.pt")
    assert state["world_size"] == 2 and len(state["rank_rng"]) == 2
    # Each rank has its own RNG stream (seeded from (seed, rank)).
    assert not torch.equal(state["rank_rng"][0]["torch"], state["rank_rng"][1]["torch"])


def assert_same_run(out, ref):
    for epoch in range(3):
        a = torch_load(out / "checkpoints" / f"epoch_00{epoch}.pt")["state_dict"]
        b = torch_load(ref / "checkpoints" / f"epoch_00{epoch}.pt")["state_dict"]
        assert a.keys() == b.keys()
        for key in a:  # weights, BatchNorm statistics, the MoCo queue
            assert torch.equal(a[key], b[key]), (epoch, key)
    columns = ["epoch", "loss", "invariance", "regularisation", "lr"]
    logs = [pd.read_csv(d / "train_log.tsv", sep="\t")[columns] for d in (out, ref)]
    pd.testing.assert_frame_equal(*logs)


def test_killed_and_resumed_two_process_run_is_bit_identical(data, reference, interrupted):
    out, _ = interrupted
    proc = torchrun(data, out)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "resuming after epoch 1" in proc.stdout + proc.stderr
    assert_same_run(out, reference[0])


def test_sigkill_of_torchrun_while_rank0_writes_a_checkpoint(data, reference, tmp_path):
    """A SIGKILL of torchrun alone (the launcher of a job killed by its scheduler, `kill -9`)
    while rank 0 has written epoch 1's checkpoint to its temp file and not yet renamed it:
    both ranks die with torchrun (their parent-death signal) within seconds instead of
    training on as orphans, nothing half-written carries a checkpoint's name, and the rerun
    resumes after epoch 0, ends bit-identical to the uninterrupted run and removes the temp."""
    out, tag = tmp_path / "run", uuid.uuid4().hex
    marker = tmp_path / "paused"
    pause = ddp_kill.pause_env(marker, "before-replace", f"{out}/.state/epochs/epoch_001.pt", 0)
    cmd, env = torchrun_command(data, out, tmp=tmp_path, env={**pause, ddp_kill.TAG_ENV: tag})
    output = open(tmp_path / "killed.log", "w")  # noqa: SIM115 (closed below)
    launcher = subprocess.Popen(cmd, env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        ddp_kill.wait_for_markers(marker, 1, launcher, timeout=240)
        assert len(ddp_kill.tagged(tag)) == 3  # torchrun and its two ranks
        launcher.send_signal(signal.SIGKILL)
        assert launcher.wait(timeout=30) == -signal.SIGKILL
        assert ddp_kill.survivors(tag, within=5.0) == [], "a rank outlived torchrun"
    finally:
        launcher.kill()
        output.close()
        ddp_kill.survivors(tag, within=0.0)  # a failure leaves no paused rank behind
    epochs = out / ".state" / "epochs"
    assert sorted(p.name for p in epochs.glob("epoch_*.pt")) == ["epoch_000.pt"]
    assert [p.name for p in (out / "checkpoints").glob("epoch_001*")] == []
    temps = tiny_study.temp_leftovers(out)
    assert [p.name.split(".")[1] for p in temps] == ["epoch_001"], temps  # only a temp
    assert temps[0].stat().st_size > 0  # written in full, never renamed

    proc = torchrun(data, out)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "resuming after epoch 0" in proc.stdout + proc.stderr
    assert_same_run(out, reference[0])
    assert tiny_study.temp_leftovers(out) == []  # the rerun's write of epoch 1 removed it


def test_a_two_process_state_is_not_resumed_by_one_process(data, interrupted, tmp_path):
    _, kept = interrupted
    with pytest.raises(ValueError, match="trained by 2 processes and this run has 1"):
        train_run(make_run(processes=1), *data, kept, lambda line: None)
    with pytest.raises(ValueError, match="train.processes is 2 but 1 process runs it"):
        train_run(make_run(processes=2), *data, kept, lambda line: None)
    assert (kept / ".state" / "resume.pt").exists()  # nothing was discarded


def test_a_batch_that_does_not_split_evenly_is_refused(data, tmp_path, monkeypatch):
    for name, value in zip(ddp.ENV, ("2", "0", "0"), strict=True):
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match="train.batch_size 15 is not divisible by the 2"):
        train_run(make_run(batch_size=15), *data, tmp_path, lambda line: None)


def test_world_from_env():
    assert ddp.world_from_env({}) == ddp.World(1, 0, 0)
    assert ddp.world_from_env(dict(WORLD_SIZE="4", RANK="3", LOCAL_RANK="1")) == ddp.World(4, 3, 1)
    with pytest.raises(ValueError, match="set but not RANK, LOCAL_RANK"):
        ddp.world_from_env({"WORLD_SIZE": "2"})
    with pytest.raises(ValueError, match="is not a rank"):
        ddp.world_from_env(dict(WORLD_SIZE="2", RANK="2", LOCAL_RANK="0"))


def test_local_order_shares_each_global_batch():
    order = torch.arange(20)
    shares = [ddp.local_order(order, 2, 8, ddp.World(2, r, r)).tolist() for r in range(2)]
    assert shares == [[0, 2, 4, 6, 8, 10, 12, 14], [1, 3, 5, 7, 9, 11, 13, 15]]
    assert ddp.local_order(order, 2, 8, ddp.World()) is order


def test_rank_seeds():
    assert ddp.rank_seed(123, 0) == 123  # rank 0: the one-process stream
    assert len({ddp.rank_seed(123, r) for r in range(4)}) == 4


def test_sync_bn_converts_batchnorm_keeping_the_state_dict_and_is_refused_on_cpu():
    def net():
        torch.manual_seed(0)
        return build_network({"name": "resnet18", "width": 0.125}, "simclr", {}, n_classes=2)

    plain = net()
    converted = ddp.sync_batchnorm(net(), ddp.World(2, 0, 0), torch.device("cuda"))
    assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in converted.modules())
    assert not any(type(m) is torch.nn.BatchNorm2d for m in converted.modules())
    assert converted.state_dict().keys() == plain.state_dict().keys()
    with pytest.raises(ValueError, match="train.sync_bn: torch's SyncBatchNorm runs on GPUs"):
        ddp.sync_batchnorm(net(), ddp.World(2, 0, 0), torch.device("cpu"))
