"""Seed 003: the embedding's neighbour structure and how observables develop over training.

Fig. 1b: mean ranked cosine similarity before and after training (left) and neighbour
quality along training (right); Fig. 1c: weighted-kNN accuracy by method; Extended Data
Fig. 11: orientation selectivity (median circular variance of an early layer), kNN accuracy
and object-position transfer along training; Fig. 1e: position/pose transfer by method.
Line figures show the deep layer (the backbone output) unless `figures.deep_layer` names
another, and the early layer unless `figures.early_layer` does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns

from ssltrace import tables
from ssltrace.figures import FIGURES, readers, style


def _note(data: pd.DataFrame) -> str:
    return style.seeds_note(style.seed_count(data))


def _ranked_curves(inputs: dict, layer: str) -> pd.DataFrame:
    """Rows (method, seed, epoch, rank, value) of each run's ranked-similarity curve at `layer`
    at its first and last analysed epoch."""
    rows = []
    for (method, seed), path in readers.run_inputs(inputs, "ranked").items():
        found = readers.load_arrays(path, ["ranked", "ranks", "layers", "epochs"])
        layers = [str(x) for x in found["layers"]]
        if layer not in layers:
            raise ValueError(f"{path}: no layer {layer!r}; layers: {', '.join(layers)}")
        epochs = found["epochs"]
        for e in sorted({0, len(epochs) - 1}):
            curve = found["ranked"][e, layers.index(layer)]
            for rank, value in zip(found["ranks"], curve, strict=True):
                rows.append((method, seed, int(epochs[e]), int(rank), float(value)))
    return pd.DataFrame(rows, columns=["method", "seed", "epoch", "rank", "value"])


@FIGURES.register("ranked_similarity")
def ranked_similarity(inputs: dict, stem: Path, settings: dict) -> list[Path]:
    """Seed 003 Fig. 1b: left, the mean ranked cosine similarity of the deep layer at each
    run's first (dashed) and last (solid) analysed epoch, rank on a log axis; right, neighbour
    quality (share of the 10 nearest neighbours with the image's label) along training.

    Inputs `ranked:METHOD:SEED` (neighbours/ranked.npz) and `table` (neighbours.tsv).
    Settings `deep_layer`.
    """
    data, layer = readers.deep_layer_rows(inputs, ["neighbour_quality"], settings)
    colours = style.method_palette(style.ordered_methods(data["method"]))
    curves = _ranked_curves(inputs, layer)
    fig, axes = style.panels(1, 2, (10.0, 3.6))
    left, right = axes[0]
    first = curves.groupby(["method", "seed"])["epoch"].transform("min")
    for is_last, dash in ((False, "--"), (True, "-")):
        last = curves.groupby(["method", "seed"])["epoch"].transform("max")
        pick = curves["epoch"] == (last if is_last else first)
        if not is_last:
            pick &= first != last  # an untrained run has one epoch: drawn once, solid
        style.mean_sd_lines(left, curves[pick], "rank", colours, linestyle=dash)
    left.set_xscale("log")
    left.set_xlabel("Rank of the neighbour (1 = most similar)")
    left.set_ylabel("Cosine similarity\n(mean over images)")
    left.set_title("Ranked similarities: first (dashed) and last epoch", fontsize=9)
    style.mean_sd_lines(right, data, "epoch", colours, marker=".")
    right.set_ylabel("Neighbour quality\n(share of 10 nearest with the same label)")
    right.set_title("Neighbour quality along training", fontsize=9)
    style.epoch_axis(right)
    for ax in axes[0]:
        sns.despine(ax=ax)
    style.method_legend(fig, colours, title=f"Method\n({_note(data)})", loc="outside right upper")
    fig.suptitle(f"Neighbour structure of the embedding, {layer} (seed 003 Fig. 1b)")
    return style.save(fig, stem, *readers.formats(settings))


@FIGURES.register("knn_by_method")
def knn_by_method(inputs: dict, stem: Path, settings: dict) -> list[Path]:
    """Seed 003 Fig. 1c: weighted-kNN accuracy (K=100, τ=0.07) at each run's final epoch:
    bars per method at the deep layer (mean ± SD over seeds, dots the seeds), and per layer.

    Input `table` (neighbours.tsv). Settings `deep_layer`.
    """
    data = readers.final_epoch(readers.read_metrics(inputs, ["knn_accuracy"]))
    order = readers.layer_order(settings, data["layer"])
    deep = readers.early_deep(settings, order)[1]
    methods = style.ordered_methods(data["method"])
    colours = style.method_palette(methods)
    fig, axes = style.panels(1, 2, (10.5, 3.6))
    bars, lines = axes[0]
    at_deep = data[data["layer"] == deep]
    _method_bars(bars, at_deep, methods, colours)
    bars.set_ylabel("Weighted kNN accuracy\n(fraction of test images)")
    bars.set_title(f"{deep}, final epoch", fontsize=9)
    positions = {layer: i for i, layer in enumerate(order)}
    style.mean_sd_lines(lines, data, "layer", colours, positions=positions, marker=".")
    style.layer_axis(lines, order)
    lines.set_ylabel("Weighted kNN accuracy")
    lines.set_title("per layer, final epoch", fontsize=9)
    for ax in axes[0]:
        sns.despine(ax=ax)
    style.method_legend(fig, colours, title=f"Method\n({_note(data)})", loc="outside right upper")
    fig.suptitle("Weighted K-nearest-neighbour classification (K=100) (seed 003 Fig. 1c)")
    return style.save(fig, stem, *readers.formats(settings))


@FIGURES.register("transfer_by_method")
def transfer_by_method(inputs: dict, stem: Path, settings: dict) -> list[Path]:
    """Seed 003 Fig. 1e: held-out Pearson r of object position, pose and scale regressed from
    each run's best layer (chosen on a separate split) at its final epoch; bars per method
    (mean ± SD over seeds), dots the seeds.

    Input `table` (transfer.tsv).
    """
    measures = [
        ("position_r_best", "Object position"),
        ("pose_r_best", "Object pose"),
        ("scale_r_best", "Object size"),
    ]
    data = readers.final_epoch(readers.read_metrics(inputs, [m for m, _ in measures]))
    methods = style.ordered_methods(data["method"])
    colours = style.method_palette(methods)
    fig, axes = style.panels(1, 3, (11.0, 3.4), sharey=True)
    for ax, (metric, title) in zip(axes[0], measures, strict=True):
        _method_bars(ax, data[data["metric"] == metric], methods, colours)
        ax.set_title(title, fontsize=9)
        sns.despine(ax=ax)
    axes[0, 0].set_ylabel("Pearson r, held-out images\n(best layer)")
    style.method_legend(fig, colours, title=f"Method\n({_note(data)})", loc="outside right upper")
    fig.suptitle("Transfer to object position and pose (seed 003 Fig. 1e)")
    return style.save(fig, stem, *readers.formats(settings))


@FIGURES.register("development")
def development(inputs: dict, stem: Path, settings: dict) -> list[Path]:
    """Seed 003 Extended Data Fig. 11: along training, the median circular variance of the
    early layer's units (lower = more orientation selective; band: ± 1 SD over seeds of the
    median), the deep layer's weighted-kNN accuracy, the held-out object-position r of each
    run's best layer and, where the study scores neural data, each region's neural
    predictivity (the best layer's at each epoch, as `neural_over_epochs`).

    Inputs `orientation` (orientation.tsv), `table` (neighbours.tsv), `transfer`
    (transfer.tsv), optional `predictivity` (predictivity.tsv). Settings `early_layer`,
    `deep_layer`, `readouts`, `ceiling`.
    """
    cv = readers.read_metrics(inputs, ["cv_median"], role="orientation")
    early = readers.early_deep(settings, readers.layer_order(settings, cv["layer"]))[0]
    knn, deep = readers.deep_layer_rows(inputs, ["knn_accuracy"], settings)
    position = readers.read_metrics(inputs, ["position_r_best"], role="transfer")
    panels = [
        (
            cv[cv["layer"] == early],
            f"Median circular variance\n({early}; 1 = unselective)",
            "Orientation selectivity",
        ),
        (knn, f"Weighted kNN accuracy\n({deep})", "Object categorisation"),
        (position, "Pearson r, held-out images\n(best layer)", "Object position"),
        *_predictivity_panels(inputs, settings),
    ]
    found = pd.concat([rows for rows, _, _ in panels])
    colours = style.method_palette(style.ordered_methods(set(found["method"])))
    fig, axes = style.panels(1, len(panels), (4.3 * len(panels) + 0.1, 3.4), sharex=True)
    for ax, (rows, label, title) in zip(axes[0], panels, strict=True):
        style.mean_sd_lines(ax, rows, "epoch", colours, marker=".")
        ax.set_ylabel(label)
        ax.set_title(title, fontsize=9)
        style.epoch_axis(ax)
        sns.despine(ax=ax)
    note = _note(found)
    style.method_legend(fig, colours, title=f"Method\n({note})", loc="outside right upper")
    fig.suptitle("Training trajectories (seed 003 Extended Data Fig. 11)")
    return style.save(fig, stem, *readers.formats(settings))


def _predictivity_panels(inputs: dict, settings: dict) -> list[tuple]:
    """One panel per region of the predictivity table: its best layer's score per epoch
    (none without the input or without rows of the shown readout: no neural data scored)."""
    from ssltrace.figures.neural import best_over_layers, score_metric

    if "predictivity" not in inputs:
        return []
    metric, _, label = score_metric(settings)
    table = tables.read(readers.input_path(inputs, "predictivity"))
    best = best_over_layers(table, metric)
    return [
        (best[best["probe"] == region], f"{label}\n(best layer)", f"Neural: {region}")
        for region in sorted(best["probe"].unique())
    ]


def _method_bars(ax, rows, methods: list[str], colours: dict) -> None:
    """One bar per method: the mean over seeds with ± 1 SD, each seed's value as a dot."""
    stats = style.summarise(rows, ["method"]).set_index("method").reindex(methods)
    xs = np.arange(len(methods))
    yerr = stats["std"].fillna(0)
    ax.bar(xs, stats["mean"], yerr=yerr, capsize=3, color=[colours[m] for m in methods])
    for x, method in zip(xs, methods, strict=True):
        seeds = rows[rows["method"] == method]["value"]
        ax.scatter(np.full(len(seeds), x), seeds, color="0.2", s=8, zorder=3)
    ax.set_xticks(xs, methods, rotation=30, ha="right")
