"""Incremental reruns: only what depends on a change is scheduled (Snakemake dry runs), and
extending training continues runs and reuses every unchanged epoch's results (real reruns)."""

import re

import pandas as pd
import pytest
import yaml

from ssltrace import io
from tests.conftest import ROOT, run_snakemake

pytestmark = pytest.mark.slow


def planned(workdir, *config):
    """(rule, wildcards) of every job a dry run schedules."""
    proc = run_snakemake(workdir, "-n", config=config)
    out = proc.stdout + proc.stderr
    if "Nothing to be done" in out:
        return []
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", out):
        head = re.match(r"(?:local)?rule (\w+):", block)
        if head:
            wildcards = re.search(r"wildcards: (.*)", block)
            pairs = (
                dict(p.split("=", 1) for p in wildcards.group(1).split(", ")) if wildcards else {}
            )
            jobs.append((head.group(1), pairs))
    return jobs


def rules(jobs):
    return {rule for rule, _ in jobs}


def test_unchanged_rerun_schedules_nothing(ci_study):
    _, work, _ = ci_study
    assert planned(work) == []


def test_runtime_only_settings_rerun_nothing(ci_study):
    # Where and how fast (device, compilation, threads) does not change what is computed.
    _, work, _ = ci_study
    assert planned(work, "train={device: cpu, compile: true}", "extract={device: cpu}") == []


def test_fewshot_parameter_reruns_only_fewshot_analyses_and_figures(ci_study):
    _, work, cfg = ci_study
    jobs = planned(work, f"fewshot={{shots: {cfg['fewshot']['shots'] - 1}}}")
    assert "fewshot" in rules(jobs)
    assert rules(jobs) <= {
        "fewshot",
        "clustering",
        "human",
        "collect_table",
        "all",
    } | {r for r in rules(jobs) if r.startswith("figure_")}
    assert not rules(jobs) & {"pretrain", "extract", "trajectory", "geometry", "dataset"}


def test_training_parameter_of_one_method_reruns_only_its_runs(ci_study):
    _, work, _ = ci_study
    jobs = planned(work, "method_settings={simclr: {train: {optimizer: {lr: 0.05}}}}")
    assert ("pretrain", {"method": "simclr", "seed": "0"}) in jobs
    per_run = [(rule, w) for rule, w in jobs if "method" in w]
    assert per_run and all(w["method"] == "simclr" for _, w in per_run)
    assert not rules(jobs) & {"dataset", "split", "probe_novel", "probe_sample"}


def test_new_seed_and_new_method_schedule_only_new_runs(ci_study):
    _, work, cfg = ci_study
    jobs = planned(work, f"seeds={[*cfg['seeds'], 7]}")
    per_run = [w for _, w in jobs if "seed" in w]
    assert per_run and all(w["seed"] == "7" for w in per_run)
    assert {m for m in cfg["methods"]} == {w["method"] for w in per_run}
    jobs = planned(work, f"methods={cfg['methods'] + ['simsiam']}")
    per_run = [w for _, w in jobs if "method" in w]
    assert per_run and all(w["method"] == "simsiam" for w in per_run)


def test_figure_setting_reruns_figures_only(ci_study):
    _, work, cfg = ci_study
    jobs = planned(work, f"figures={{dpi: {cfg['figures']['dpi'] + 1}}}")
    assert jobs and all(r.startswith("figure_") or r == "all" for r in rules(jobs))


def test_extending_epochs_continues_and_reuses_unchanged_epochs(ci_study, tmp_path):
    """epochs 1 -> 2 with an epoch-independent schedule: the run resumes from its checkpoint,
    epoch 0/1 activations and analyses come from the cache, and results equal a fresh run's:
    the ci study's simclr run, trained for its 2 epochs from scratch with the same settings
    (presets/ci.yaml keeps a constant schedule so that it can serve as that fresh run)."""
    _, ci_work, ci_cfg = ci_study
    assert ci_cfg["train"]["schedule"]["name"] == "constant" and ci_cfg["train"]["epochs"] == 2
    with open(ROOT / "presets/ci.yaml") as fh:
        preset = yaml.safe_load(fh)
    preset.update(methods=["simclr"], seeds=[0])
    preset["train"].update(epochs=1)
    (tmp_path / "small.yaml").write_text(yaml.safe_dump(preset))
    work = tmp_path / "study"
    work.mkdir()
    target = str(work / "results/tables/fewshot.tsv")
    run_snakemake(work, target, preset=tmp_path / "small.yaml")
    first = io.torch_load(work / "results/runs/simclr/seed0/checkpoints/epoch_001.pt")
    run_snakemake(work, target, preset=tmp_path / "small.yaml", config=("train={epochs: 2}",))
    logs = work / "results/logs"
    pretrain = (logs / "pretrain/simclr_seed0.log").read_text()
    assert "initialisation saved" not in pretrain and "epoch 2/2" in pretrain
    assert "epoch 1/2" not in pretrain
    resumed = io.torch_load(work / "results/runs/simclr/seed0/checkpoints/epoch_001.pt")
    assert all((resumed["state_dict"][k] == v).all() for k, v in first["state_dict"].items())
    extract = (logs / "extract/simclr_seed0.log").read_text().splitlines()
    novel = [line for line in extract if "/novel/" in line]
    assert sum("cached activations" in line for line in novel) == 2
    assert any(line.startswith("epoch 2 novel:") for line in novel)
    fewshot = (logs / "fewshot/simclr_seed0.log").read_text()
    assert fewshot.count(": cached") == 2 and "epoch 2: cached" not in fewshot
    assert "fewshot novel epoch 2: " in fewshot  # computed
    # the fresh run (the ci study's simclr run) ends with the same weights and the same rows
    run = "results/runs/simclr/seed0/checkpoints/epoch_002.pt"
    extended, fresh = (io.torch_load(root / run)["state_dict"] for root in (work, ci_work))
    assert all((extended[k] == v).all() for k, v in fresh.items())
    a = pd.read_csv(target, sep="\t")
    b = pd.read_csv(ci_work / "results/tables/fewshot.tsv", sep="\t")
    b = b[b["method"] == "simclr"].reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)
