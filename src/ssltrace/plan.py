"""Summarise a study before it starts: jobs per rule, GPU-hours, disk.

Job counts follow the workflow's granularity (per run and stage; see docs/ARCHITECTURE.md),
checked against `snakemake -n` by the tests. GPU-hours come from measured throughput: the
median images/s of the study's own training logs (e.g. after a one-epoch pilot run) or a
value the user measured (`--images-per-s`). Disk comes from the networks' parameter counts and
the layer sizes of the probe sets, both computed on the meta device (no memory, no weights).
"""

from __future__ import annotations

import glob
from pathlib import Path

import numpy as np
import pandas as pd

from ssltrace import config as sslconfig

PROBES = ("novel", "human", "rdm", "known", "sample")
PER_RUN_RULES = {
    "pretrain": 1,
    "extract": 1,
    "fewshot": 1,
    "clustering": 1,
    "human_alignment": 1,
    "trajectory": 1,
    "geometry": 1,
}
GLOBAL_RULES = {
    "dataset": 1,
    "human_dataset": 1,
    "split": 1,
    **{f"probe_{p}": 1 for p in PROBES},
    "collect_table": 5,
}


def jobs_per_rule(cfg: dict, n_figure_rules: int) -> dict[str, int]:
    runs = len(cfg["methods"]) * len(cfg["seeds"])
    jobs = {**GLOBAL_RULES, **{rule: n * runs for rule, n in PER_RUN_RULES.items()}}
    jobs["figures"] = n_figure_rules
    jobs["all"] = 1
    return jobs


def probe_sizes(cfg: dict) -> dict[str, int]:
    """Images per probe set."""
    p = cfg["probes"]
    per_novel_class = p["novel"]["images_per_class"]
    n_fine_novel = 5 * cfg["split"]["n_novel"]  # both datasets have 5 fine per coarse class
    n_fine_known = 5 * cfg["split"]["n_known"]
    known = p["known"]["train_per_class"] + p["known"]["test_per_class"]
    sample = p["sample"]["n_images"] * (p["sample"]["k_train"] + p["sample"]["k_test"])
    return {
        "novel": n_fine_novel * per_novel_class,
        "human": 10 * p["human"]["images_per_class"],
        "rdm": p["rdm"]["n_images"],
        "known": n_fine_known * known,
        "sample": sample,
    }


def network_sizes(cfg: dict, method: str) -> tuple[int, int]:
    """(checkpoint bytes, activation values per image over the extracted layers)."""
    import torch

    from ssltrace.extract import named_layers, pool
    from ssltrace.methods import build_method
    from ssltrace.models import build_backbone

    arch = dict(cfg["architecture"])
    with torch.device("meta"):
        backbone = build_backbone(arch.pop("name"), **arch)
        params = cfg["method_settings"].get(method, {}).get("params", {})
        net = build_method(method, backbone, params, 5 * cfg["split"]["n_known"])
    state = net.state_dict()
    ckpt_bytes = sum(t.numel() * t.element_size() for t in state.values())
    layers = sslconfig.analysed_layers(cfg)
    dims: dict[str, int] = {}
    modules = named_layers(net)
    hooks = [
        modules[name].register_forward_hook(
            lambda _m, _i, out, name=name: dims.__setitem__(
                name, pool(out, cfg["extract"]["pooling"]).shape[1]
            )
        )
        for name in layers
    ]
    net.eval()
    with torch.no_grad():
        net.head(net.backbone(torch.zeros(2, 3, 32, 32, device="meta")))
    for hook in hooks:
        hook.remove()
    return ckpt_bytes, sum(dims.values())


def measured_throughput(results_dir: Path) -> dict[str, float]:
    """Median training images/s per method from the study's own logs (empty if none)."""
    rates: dict[str, list[float]] = {}
    for path in glob.glob(str(results_dir / "runs" / "*" / "seed*" / "train_log.tsv")):
        log = pd.read_csv(path, sep="\t")
        if len(log):
            rates.setdefault(Path(path).parents[1].name, []).extend(log["images_per_s"])
    return {method: float(np.median(v)) for method, v in rates.items()}


def summary(cfg: dict, images_per_s: float | None = None, n_figure_rules: int = 1) -> str:
    lines = ["Jobs per rule:"]
    jobs = jobs_per_rule(cfg, n_figure_rules)
    lines += [f"  {rule:18s} {n:6d}" for rule, n in jobs.items()]
    lines.append(f"  {'total':18s} {sum(jobs.values()):6d}")
    measured = measured_throughput(Path(cfg["results_dir"]))
    sizes = probe_sizes(cfg)
    act_dtype = 2 if cfg["extract"]["dtype"] == "float16" else 4
    n_train = sslconfig.training_images(cfg)
    gpu_hours, ckpt_total, act_total = 0.0, 0, 0
    lines.append("Per method (per seed):")
    for method in cfg["methods"]:
        ckpt_bytes, values = network_sizes(cfg, method)
        n_ckpt = len(sslconfig.checkpoint_epochs(cfg, method))
        n_analysed = len(sslconfig.analysed_epochs(cfg, method))
        epochs = n_ckpt - 1
        rate = measured.get(method, images_per_s)
        hours = epochs * n_train / rate / 3600 if rate and epochs else 0.0
        seeds = len(cfg["seeds"])
        gpu_hours += hours * seeds
        ckpt_total += ckpt_bytes * n_ckpt * seeds
        act_total += values * act_dtype * sum(sizes.values()) * n_analysed * seeds
        source = "logs" if method in measured else ("given" if images_per_s else "unknown")
        rate_text = f"{rate:,.0f} img/s ({source})" if rate else "throughput unknown"
        lines.append(
            f"  {method:13s} {epochs:4d} epochs, {rate_text}, {hours:7.2f} GPU-h, "
            f"checkpoint {ckpt_bytes / 1e6:6.1f} MB"
        )
    lines.append(
        f"GPU-hours for training (all runs): {gpu_hours:.1f}"
        + (
            ""
            if measured or images_per_s
            else " (no throughput known: run one epoch first or pass --images-per-s)"
        )
    )
    lines.append(
        f"Disk: checkpoints {ckpt_total / 1e9:.1f} GB; activations if all kept "
        f"{act_total / 1e9:.1f} GB ({', '.join(f'{k} {v}' for k, v in sizes.items())}"
        " images per checkpoint)"
    )
    return "\n".join(lines)
