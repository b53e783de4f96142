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
    runs = len(cfg["methods"]) * len(cfg["seeds"])
    analyses = study.active_analyses(cfg)  # all-classes mode skips those of novel classes
    jobs = {"dataset": 1, "human_dataset": 1, "split": 1}
    if study.simulated_neural(cfg):
        jobs["neural_simulated"] = len(study.simulated_neural(cfg))
    jobs.update({f"probe_{kind}": 1 for kind in study.probe_kinds(cfg)})
    jobs["collect_table"] = len(analyses)
    # study t-test matrices between methods (seed 003 ED Figs. 1, 8; workflow/rules/metrics.smk)
    jobs.update({f"{name}_ttests": 1 for name in ("predictivity", "behaviour") if name in analyses})
    jobs.update({rule: runs for rule in ("pretrain", "extract", *analyses)})
    targets = len(study.target_runs(cfg))  # random-target networks: pretrain runs + one rule
    jobs["pretrain"] += targets
    if targets and "random_targets" in analyses:
        jobs["target_labels"] = 1
    jobs.update({row.rule: 1 for row in study.active_figures(cfg)})
    jobs["all"] = 1
    return jobs


def network_sizes(cfg: dict, method: str) -> tuple[int, dict[str, int]]:
    """(checkpoint bytes, {probe kind: activation values per image over the extracted
    layers}): the pooling is chosen per probe set (the neural
    probe set's by `neural.pooling`), and projection caps each layer's width."""
    import torch

    from ssltrace.extract import pool, pooling_of
    from ssltrace.network import build_network

    run = study.run_settings(cfg, method, 0)
    n_classes = study.dataset(cfg).fine_per_coarse * study.n_known_coarse(cfg)
    with torch.device("meta"):
        net = build_network(cfg["architecture"], run["method"], run["method_params"], n_classes)
    state = net.state_dict()
    ckpt_bytes = sum(t.numel() * t.element_size() for t in state.values())
    outputs: dict[str, torch.Tensor] = {}
    modules = net.layer_modules()
    hooks = [
        modules[name].register_forward_hook(
            lambda _m, _i, out, name=name: outputs.__setitem__(name, out)
        )
        for name in study.analysed_layers(cfg)
        if name in modules  # head_fc2 only where the method's head has one
    ]
    net.eval()
    with torch.no_grad():
        net.probe_forward(torch.zeros(2, 3, 32, 32, device="meta"))
    for hook in hooks:
        hook.remove()
    extract = study.extract_settings(cfg)
    values = {}
    for kind in layout.PROBES:
        how = pooling_of(extract["pooling"], kind)
        cap = extract["projection_dim"] or float("inf")
        cap = float("inf") if kind in extract["unprojected"] else cap
        values[kind] = int(sum(min(pool(out, how).shape[1], cap) for out in outputs.values()))
    return ckpt_bytes, values


def checkpoint_bytes(cfg: dict, run: str) -> int:
    """Bytes of one checkpoint of run `run` (its own architecture), built on the meta device."""
    import torch

    from ssltrace.network import build_network

    settings = study.run_settings(cfg, run, 0)
    n_classes = study.dataset(cfg).fine_per_coarse * study.n_known_coarse(cfg)
    with torch.device("meta"):
        net = build_network(
            settings["architecture"], settings["method"], settings["method_params"], n_classes
        )
    return sum(t.numel() * t.element_size() for t in net.state_dict().values())


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
        per_checkpoint = sum(values[kind] * n for kind, n in sizes.items())
        act_total += per_checkpoint * act_dtype * n_analysed * seeds
        source = "logs" if method in measured else ("given" if images_per_s else "unknown")
        rate_text = f"{rate:,.0f} img/s ({source})" if rate else "throughput unknown"
        lines.append(
            f"  {method:13s} {epochs:4d} epochs, {rate_text}, {hours:7.2f} GPU-h, "
            f"checkpoint {ckpt_bytes / 1e6:6.1f} MB"
        )
    for run in study.target_runs(cfg):  # random-target networks: one seed, nothing extracted
        ckpt_bytes = checkpoint_bytes(cfg, run)
        n_ckpt = len(study.checkpoint_epochs(cfg, run))
        rate = measured.get(run, images_per_s)
        hours = (n_ckpt - 1) * n_train / rate / 3600 if rate else 0.0
        gpu_hours += hours
        ckpt_total += ckpt_bytes * n_ckpt
        lines.append(
            f"  {run:13s} {n_ckpt - 1:4d} epochs, random-target network (one seed), "
            f"{hours:7.2f} GPU-h, checkpoint {ckpt_bytes / 1e6:6.1f} MB"
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
