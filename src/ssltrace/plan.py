"""Summarise a study before it starts: jobs per rule, GPU-hours, disk.

Job counts follow the workflow's granularity (per run and stage; see docs/ARCHITECTURE.md):
the stages, every registered analysis and every row of the figure table; the tests check
them against `snakemake -n`. GPU-hours come from measured throughput: the
median images/s of the study's own training logs (e.g. after a one-epoch pilot run) or a
value the user measured (`--images-per-s`). Disk comes from the networks' parameter counts and
the layer sizes of the probe sets, both computed on the meta device (no memory, no weights).
"""

from __future__ import annotations

import glob
from pathlib import Path

import numpy as np

from ssltrace import io, layout, study, tables


def jobs_per_rule(cfg: dict) -> dict[str, int]:
    """Jobs of each rule, as the workflow plans them (one per run and stage; see the rules)."""
    from ssltrace.analysis import registered
    from ssltrace.figures.table import figure_table

    runs = len(cfg["methods"]) * len(cfg["seeds"])
    analyses = registered().names()
    jobs = {"dataset": 1, "human_dataset": 1, "split": 1}
    if study.simulated_neural(cfg):
        jobs["neural_simulated"] = len(study.simulated_neural(cfg))
    jobs.update({f"probe_{kind}": 1 for kind in layout.PROBES})
    jobs["collect_table"] = len(analyses)
    jobs.update({rule: runs for rule in ("pretrain", "extract", *analyses)})
    jobs.update({row.rule: 1 for row in figure_table()})
    jobs["all"] = 1
    return jobs


def network_sizes(cfg: dict, method: str, pooling: str | None = None) -> tuple[int, int]:
    """(checkpoint bytes, activation values per image over the extracted layers), pooled as
    `extract.pooling` or `pooling` (the neural probe set's `neural.pooling`)."""
    pooling = pooling or cfg["extract"]["pooling"]
    import torch

    from ssltrace.extract import pool
    from ssltrace.network import build_network

    run = study.run_settings(cfg, method, 0)
    n_classes = study.dataset(cfg).fine_per_coarse * cfg["split"]["n_known"]
    with torch.device("meta"):
        net = build_network(cfg["architecture"], run["method"], run["method_params"], n_classes)
    state = net.state_dict()
    ckpt_bytes = sum(t.numel() * t.element_size() for t in state.values())
    dims: dict[str, int] = {}
    modules = net.layer_modules()
    hooks = [
        modules[name].register_forward_hook(
            lambda _m, _i, out, name=name: dims.__setitem__(name, pool(out, pooling).shape[1])
        )
        for name in study.analysed_layers(cfg)
    ]
    net.eval()
    with torch.no_grad():
        net.probe_forward(torch.zeros(2, 3, 32, 32, device="meta"))
    for hook in hooks:
        hook.remove()
    return ckpt_bytes, sum(dims.values())


def measured_throughput(results_dir: Path, skipped: list[str] | None = None) -> dict[str, float]:
    """Median training images/s per method from the study's own logs (empty if none).

    A damaged log is left out (its message appended to `skipped`) and left in place: planning
    changes no file; the workflow's reader removes it when a job reads it.
    """
    rates: dict[str, list[float]] = {}
    for path in glob.glob(str(results_dir / layout.fill(layout.TRAIN_LOG, method="*", seed="*"))):
        try:
            log = tables.read_train_log(path, ["images_per_s"], remove=False)
        except (io.ArtifactReadError, OSError) as error:
            if skipped is not None:
                skipped.append(str(error))
            continue
        if len(log):
            rates.setdefault(Path(path).parents[1].name, []).extend(log["images_per_s"])
    return {method: float(np.median(v)) for method, v in rates.items()}


def summary(cfg: dict, images_per_s: float | None = None) -> str:
    lines = ["Jobs per rule:"]
    jobs = jobs_per_rule(cfg)
    lines += [f"  {rule:18s} {n:6d}" for rule, n in jobs.items()]
    lines.append(f"  {'total':18s} {sum(jobs.values()):6d}")
    skipped: list[str] = []
    measured = measured_throughput(Path(cfg["results_dir"]), skipped)
    sizes = study.probe_sizes(cfg)
    act_dtype = 2 if cfg["extract"]["dtype"] == "float16" else 4
    n_train = study.training_images(cfg)
    gpu_hours, ckpt_total, act_total = 0.0, 0, 0
    lines.append("Per method (per seed):")
    for method in cfg["methods"]:
        ckpt_bytes, values = network_sizes(cfg, method)
        n_ckpt = len(study.checkpoint_epochs(cfg, method))
        n_analysed = len(study.analysed_epochs(cfg, method))
        epochs = n_ckpt - 1
        rate = measured.get(method, images_per_s)
        hours = epochs * n_train / rate / 3600 if rate and epochs else 0.0
        seeds = len(cfg["seeds"])
        gpu_hours += hours * seeds
        ckpt_total += ckpt_bytes * n_ckpt * seeds
        _, neural_values = network_sizes(cfg, method, cfg["neural"]["pooling"])
        per_checkpoint = values * (sum(sizes.values()) - sizes["neural"])
        per_checkpoint += neural_values * sizes["neural"]  # the neural probe's full maps
        act_total += per_checkpoint * act_dtype * n_analysed * seeds
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
    lines += [f"  (training log left out: {message})" for message in skipped]
    lines.append(
        f"Disk: checkpoints {ckpt_total / 1e9:.1f} GB; activations if all kept "
        f"{act_total / 1e9:.1f} GB ({', '.join(f'{k} {v}' for k, v in sizes.items())}"
        " images per checkpoint)"
    )
    return "\n".join(lines)
