"""`ssltrace plan`: job counts agree with Snakemake's own plan; sizes agree with real files."""

import re

import pytest
import torch

from ssltrace import study
from ssltrace.plan import jobs_per_rule, network_sizes, summary
from tests.conftest import ROOT, run_snakemake


def snakemake_job_stats(workdir) -> dict[str, int]:
    return parse_job_stats(run_snakemake(workdir, "-n").stdout)


def parse_job_stats(out: str) -> dict[str, int]:
    table = out.split("Job stats:")[1].split("total")[0]
    return {m[0]: int(m[1]) for m in re.findall(r"^(\w+)\s+(\d+)$", table, re.MULTILINE)}


def test_job_counts_match_a_snakemake_dry_run(tmp_path):
    cfg = study.load(ROOT / "config.yaml", ROOT / "presets/ci.yaml")
    assert jobs_per_rule(cfg) == snakemake_job_stats(tmp_path)


@pytest.mark.parametrize("method", ["simclr", "byol", "supervised"])
def test_checkpoint_and_activation_sizes_match_real_networks(method):
    from ssltrace.extract import activations
    from ssltrace.network import build_network

    cfg = study.load(ROOT / "config.yaml", ROOT / "presets/ci.yaml")
    ckpt_bytes, values = network_sizes(cfg, method)
    net = build_network({"name": "resnet18", "width": 0.125}, method, {}, 20)
    real = sum(t.numel() * t.element_size() for t in net.state_dict().values())
    assert ckpt_bytes == real
    images = torch.randint(0, 255, (2, 32, 32, 3), dtype=torch.uint8).numpy()
    for kind, how in [("novel", "avg2x2"), ("rdm", "flatten")]:
        acts = activations(
            net.eval(), images, study.analysed_layers(cfg), how, 2, None, projection_dim=4096
        )
        assert values[kind] == sum(a.shape[1] for a in acts.values())


def test_summary_uses_given_throughput_for_gpu_hours():
    cfg = study.load(ROOT / "config.yaml")
    text = summary(cfg, images_per_s=25_000.0)
    # 200 epochs x 25,000 known-class images / 25,000 img/s = 200 s per run, 55 trained runs
    # and the 2 random-target networks (seed 004 §5): 57 x 200 s = 3.17 h
    assert "GPU-hours for training (all runs): 3.2" in text
    assert "target_vit" in text
    assert "untrained" in text and "pretrain" in text
