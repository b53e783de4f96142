"""Summarise a study before it starts: jobs per rule, GPU-hours, disk.

Job counts follow the workflow's granularity (per run and stage; see docs/ARCHITECTURE.md):
the stages, every registered analysis and every row of the figure table; the tests check
them against `snakemake -n`. GPU-hours come from measured throughput: the
median images/s of the study's own training logs (e.g. after a one-epoch pilot run) or a
value the user measured (`--images-per-s`); failing both, for the 224-px architectures, from
the reference table below (`reference_rate`), scaled by each method's passes per image. Disk
comes from the networks' parameter counts and the layer sizes of the probe sets at the
network's input side, both computed on the meta device (no memory, no weights).

Reference throughput (`SUPERVISED_IMAGES_PER_S`, one `REFERENCE_GPU`): supervised training
images/s, forward and backward, per architecture. ResNet-50: NVIDIA's DeepLearningExamples
ResNet-50 v1.5 (PyTorch, mixed precision, batch 256, one A100 80 GB) report about 2,700
img/s; 2,600 is kept for data loading. ResNet-18: not measured here; ResNet-50's rate scaled
by forward FLOPs at 224 px (4.1 / 1.8 GFLOPs), 6,000 img/s. Replace them with a pilot
epoch's logs (they take precedence) as soon as one has run. A method's cost per image
(`METHOD_PASSES`) counts the network passes it makes: a pass with gradients as 3 (backward
is about two forwards), one without as 1, relative to supervised's single pass with
gradients. Extraction is forward only: 3 x the supervised rate.
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


REFERENCE_GPU = "one NVIDIA A100 80 GB, bf16 mixed precision, channels_last"
SUPERVISED_IMAGES_PER_S = {"resnet50_imagenet": 2600.0, "resnet18_imagenet": 6000.0}
# (passes with gradients, passes without) per training image; why, per method.
METHOD_PASSES = {
    "supervised": (1, 0),
    "few_label": (1, 0),
    "instance_recognition": (1, 0),  # one view against a memory bank
    "local_aggregation": (1, 0),  # IR's bank; its k-means on the bank costs no network pass
    "local_label_propagation": (1, 0),
    "colorization": (1, 0),
    "relative_position": (1, 0),  # two patches of about a quarter image each
    "depth_prediction": (1, 0),
    "deepcluster": (1, 1),  # + every epoch's pass over the data for its clusters
    "mean_teacher": (1, 1),  # student + EMA teacher
    "simclr": (2, 0),  # two views
    "simsiam": (2, 0),
    "vicreg": (2, 0),
    "barlow_twins": (2, 0),
    "cmc": (2, 0),  # an L and an ab network, one view each
    "autoencoder": (2, 0),  # encoder + a reversed ResNet decoder
    "cpc": (4, 0),  # a 7 x 7 grid of overlapping 64-px crops: about 4 image areas
    "byol": (2, 2),  # two views through the online and the target network
    "untrained": (0, 0),
}


def method_cost(cfg: dict, run: str) -> float | None:
    """Cost of one training image of `run`, relative to supervised (None: not tabled).
    MoCo v2: the query with gradients and the key encoder without, twice when symmetric."""
    method = study.method_of(cfg, run)
    if method == "moco_v2":
        symmetric = study.settings_of(cfg, run).get("params", {}).get("symmetric", True)
        grad, plain = (2, 2) if symmetric else (1, 1)
    elif method in METHOD_PASSES:
        grad, plain = METHOD_PASSES[method]
    else:
        return None
    return (3 * grad + plain) / 3


def reference_rate(cfg: dict, run: str) -> float | None:
    """Training images/s of `run` on the reference GPU from the table (None: unknown)."""
    arch = study.run_settings(cfg, run, 0)["architecture"]["name"]
    cost = method_cost(cfg, run)
    if arch not in SUPERVISED_IMAGES_PER_S or not cost:
        return None
    return SUPERVISED_IMAGES_PER_S[arch] / cost


def extraction_hours(cfg: dict, run: str, per_checkpoint: int) -> float | None:
    """GPU-hours to extract `per_checkpoint` probe images from every analysed checkpoint of
    one seed of `run`: forward only, 3 x the supervised reference rate (None: not tabled)."""
    arch = study.run_settings(cfg, run, 0)["architecture"]["name"]
    if arch not in SUPERVISED_IMAGES_PER_S:
        return None
    images = per_checkpoint * len(study.analysed_epochs(cfg, run))
    return images / (3 * SUPERVISED_IMAGES_PER_S[arch]) / 3600


def input_side(cfg: dict, architecture: dict) -> int:
    """Side of the network's input: the architecture's image_size, else the dataset's (folder
    sets), else 224 for the *_imagenet networks and 32 for the CIFAR-stem ones."""
    if "image_size" in architecture:
        return int(architecture["image_size"])
    options = cfg["dataset"].get("options") or {}
    if "image_size" in options:
        return int(options["image_size"])
    return 224 if architecture["name"].endswith("_imagenet") else 32


def network_sizes(cfg: dict, method: str) -> tuple[int, dict[str, int]]:
    """(checkpoint bytes, {probe kind: activation values per image over the extracted
    layers}): the pooling is chosen per probe set (the neural
    probe set's by `neural.pooling`), and projection caps each layer's width (a PCA also at
    the probe set's number of images: it has at most that many components)."""
    import torch

    from ssltrace.extract import pool, pooling_of
    from ssltrace.network import build_network

    run = study.run_settings(cfg, method, 0)
    n_classes = study.dataset(cfg).fine_per_coarse * study.n_known_coarse(cfg)
    side = input_side(cfg, run["architecture"])
    with torch.device("meta"):
        net = build_network(run["architecture"], run["method"], run["method_params"], n_classes)
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
        net.probe_forward(torch.zeros(2, 3, side, side, device="meta"))
    for hook in hooks:
        hook.remove()
    extract = study.extract_settings(cfg)
    values = {}
    sizes = study.probe_sizes(cfg) if extract.get("reduction") == "pca" else {}
    for kind in layout.PROBES:
        how = pooling_of(extract["pooling"], kind)
        cap = extract["projection_dim"] or float("inf")
        cap = float("inf") if kind in extract["unprojected"] else cap
        if kind in sizes and cap != float("inf"):
            cap = min(cap, sizes[kind])
        values[kind] = int(sum(min(pool(out, how).shape[1], cap) for out in outputs.values()))
    return ckpt_bytes, values


def activation_bytes(cfg: dict, run: str, values: dict[str, int] | None = None) -> int:
    """Bytes of every analysed epoch's activations of `run` over all seeds, if all are kept:
    layer widths after pooling and reduction x probe images x epochs x seeds x dtype."""
    values = network_sizes(cfg, run)[1] if values is None else values
    per_checkpoint = sum(values[kind] * n for kind, n in study.probe_sizes(cfg).items())
    dtype = 2 if cfg["extract"]["dtype"] == "float16" else 4
    return per_checkpoint * dtype * len(study.analysed_epochs(cfg, run)) * len(cfg["seeds"])


def kept_fraction(cfg: dict, run: str) -> float:
    """Share of a run's analysed epochs whose activations `extract.keep` keeps."""
    analysed = study.analysed_epochs(cfg, run)
    keep = cfg["extract"]["keep"]
    return 1.0 if keep == "all" else len(set(keep) & set(analysed)) / len(analysed)


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
    n_train = study.training_images(cfg)
    gpu_hours, ckpt_total, act_total, extract_total, kept_total = 0.0, 0, 0, 0.0, 0.0
    tabled = False
    lines.append("Per method (per seed):")
    for method in cfg["methods"]:
        ckpt_bytes, values = network_sizes(cfg, method)
        n_ckpt = len(study.checkpoint_epochs(cfg, method))
        epochs = n_ckpt - 1
        rate = measured.get(method, images_per_s)
        source = "logs" if method in measured else ("given" if images_per_s else "unknown")
        if rate is None and reference_rate(cfg, method):
            rate, source, tabled = reference_rate(cfg, method), "reference table", True
        hours = epochs * n_train / rate / 3600 if rate and epochs else 0.0
        seeds = len(cfg["seeds"])
        gpu_hours += hours * seeds
        ckpt_total += ckpt_bytes * n_ckpt * seeds
        act_total += activation_bytes(cfg, method, values)
        kept_total += activation_bytes(cfg, method, values) * kept_fraction(cfg, method)
        extract_total += (extraction_hours(cfg, method, sum(sizes.values())) or 0.0) * seeds
        rate_text = f"{rate:,.0f} img/s ({source})" if rate else "throughput unknown"
        lines.append(
            f"  {method:13s} {epochs:4d} epochs, {rate_text}, {hours:7.2f} GPU-h, "
            f"checkpoint {ckpt_bytes / 1e6:6.1f} MB"
        )
    for run in study.target_runs(cfg):  # random-target networks: one seed, nothing extracted
        ckpt_bytes = checkpoint_bytes(cfg, run)
        n_ckpt = len(study.checkpoint_epochs(cfg, run))
        rate = measured.get(run, images_per_s) or reference_rate(cfg, run)
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
            if measured or images_per_s or tabled
            else " (no throughput known: run one epoch first or pass --images-per-s)"
        )
    )
    if tabled:
        lines.append(f"  (reference table: {REFERENCE_GPU}; ssltrace.plan documents it)")
    if extract_total:
        lines.append(f"GPU-hours for extraction (all runs, reference table): {extract_total:.1f}")
    lines += [f"  (training log left out: {message})" for message in skipped]
    lines.append(
        f"Disk: checkpoints {ckpt_total / 1e9:.1f} GB; activations if all kept "
        f"{act_total / 1e9:.1f} GB ({', '.join(f'{k} {v}' for k, v in sizes.items())}"
        " images per checkpoint)"
    )
    if kept_total < act_total:
        lines.append(f"  activations kept after analysis (extract.keep): {kept_total / 1e9:.1f} GB")
    return "\n".join(lines)
