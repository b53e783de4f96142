"""A run asking for several processes (train.processes) in the workflow: the pretrain job is
started by torchrun with its settings quoted and asks for that many GPUs; the SLURM profile
keeps them on one node; settings no node or batch can satisfy are refused before planning."""

from __future__ import annotations

import pytest

from ssltrace import config as sslconfig
from ssltrace import study
from tests import tiny_study
from tests.test_slurm import SLURM_PROFILE, profile_args

TWO = {"method_settings": {"simclr": {"train": {"processes": 2, "batch_size": 32}}}}


def checked(**top_level):
    return study.checked(tiny_study.tiny_config(**top_level))


def test_a_run_asks_for_its_processes_as_gpus_and_is_started_by_torchrun(tmp_path):
    work = tiny_study.make_workdir(tmp_path / "study", **TWO)
    proc = tiny_study.snakemake(work, "-n", "-p", "--forceall", f"{tiny_study.RUN}/train_log.tsv")
    out = proc.stdout + proc.stderr
    assert "torchrun --standalone --nproc-per-node 2 -m ssltrace.cli pretrain --dataset" in out
    assert "gpu=2" in out
    assert "'\"'\"'processes'\"'\"': 2" not in out  # settings stay one quoted JSON word
    assert "--settings '{" in out


def test_batch_not_divisible_by_processes_is_refused_naming_the_keys():
    bad = {"method_settings": {"simclr": {"train": {"processes": 3, "batch_size": 32}}}}
    with pytest.raises(sslconfig.ConfigError, match=r"batch_size' = 32: not divisible by "):
        checked(**bad)
    assert checked(**TWO)["method_settings"]["simclr"]["train"]["processes"] == 2


def test_sync_bn_on_the_cpu_is_refused_naming_the_key():
    cpu = {"train": {"device": "cpu", "sync_bn": True}, **TWO}
    with pytest.raises(sslconfig.ConfigError, match="'train.sync_bn': torch's SyncBatchNorm"):
        checked(**cpu)


def test_more_processes_than_a_node_has_gpus_is_refused(monkeypatch):
    monkeypatch.setenv("SSLTRACE_SLURM_GPUS_PER_NODE", "1")
    with pytest.raises(sslconfig.ConfigError, match="processes' = 2: run 'simclr' asks for 2 GPUs"):
        checked(**TWO)
    monkeypatch.setenv("SSLTRACE_SLURM_GPUS_PER_NODE", "2")
    checked(**TWO)
    monkeypatch.setenv("SSLTRACE_SLURM_GPUS_PER_NODE", "two")
    with pytest.raises(sslconfig.ConfigError, match="GPUS_PER_NODE must be a whole number"):
        checked(**TWO)


def test_slurm_profile_keeps_the_runs_gpus_on_one_node():
    args = profile_args(SLURM_PROFILE, SSLTRACE_SLURM_GPUS="2")
    assert "pretrain:nodes=1" in args["set-resources"]
    assert "extract:gpu=2" in args["set-resources"]
    assert not any(a.startswith("pretrain:gpu=") for a in args["set-resources"])  # its own N
    assert "pretrain:gpu=0" in profile_args(SLURM_PROFILE, SSLTRACE_SLURM_GPUS="0")["set-resources"]


def test_more_gpu_processes_than_snakemake_grants_are_refused(monkeypatch):
    """Snakemake lowers a job's gpu resource to --resources gpu=G silently; torchrun would not."""
    from ssltrace.checks import check_granted_gpus

    on_gpus = checked(**{**TWO, "train": {"device": "cuda"}})
    with pytest.raises(sslconfig.ConfigError, match=r"processes' = 2: .* --resources gpu=1"):
        check_granted_gpus(on_gpus, 1)
    check_granted_gpus(on_gpus, 2)
    check_granted_gpus(on_gpus, None)  # no limit given
    check_granted_gpus(checked(**{**TWO, "train": {"device": "cpu"}}), 1)  # gloo on the CPU
    auto = checked(**{**TWO, "train": {"device": "auto"}})
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    check_granted_gpus(auto, 1)  # auto on a machine without CUDA trains on the CPU
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    with pytest.raises(sslconfig.ConfigError, match="more than --resources gpu=1 grants"):
        check_granted_gpus(auto, 1)


def test_the_dry_run_refuses_a_run_wider_than_the_granted_gpus(tmp_path):
    work = tiny_study.make_workdir(tmp_path / "study", **{**TWO, "train": {"device": "cuda"}})
    proc = tiny_study.snakemake(work, "-n", "--resources", "gpu=1", check=False)
    assert proc.returncode != 0
    assert "'method_settings.simclr.train.processes' = 2" in proc.stdout + proc.stderr
