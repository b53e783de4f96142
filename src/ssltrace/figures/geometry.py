"""Seed 004: clustering geometry along training at sample, fine and coarse label levels.

Fig. 2: NCC train accuracy, the NCC/linear ratio and linear accuracy vs epoch, each normalised
at initialisation (Fig. 6 left: the raw accuracies); Fig. 5: linear accuracy per layer across
epochs for fine and coarse classes and their ratio; CDNV vs epoch. Line figures show the deep
layer (the backbone output) unless `figures.deep_layer` names another.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import seaborn as sns

from ssltrace.figures import FIGURES, readers, style

LEVELS = ["sample", "fine", "coarse"]
LEVEL_TITLES = {
    "sample": "sample level (augmentations of one image)",
    "fine": "fine classes",
    "coarse": "coarse classes",
}
PROBES = {"svm": "linear SVM", "logistic": "logistic regression"}


def linear_metric(settings: dict) -> str:
    probe = settings.get("linear_probe", "svm")
    if probe not in PROBES:
        raise ValueError(
            f"figures.linear_probe: expected one of {', '.join(PROBES)}, got {probe!r}"
        )
    return f"linear_{probe}"


def _levels(data: pd.DataFrame) -> list[str]:
    present = set(data["probe"])
    return [lv for lv in LEVELS if lv in present] + sorted(present - set(LEVELS))


def _note(data: pd.DataFrame) -> str:
    return style.seeds_note(style.seed_count(data))


def _deep_layer_levels(inputs: dict, metrics: list[str], settings: dict):
    """What the line figures along training share: the rows of `metrics` at the deep layer,
    that layer, its label levels and the method colours."""
    data, layer = readers.deep_layer_rows(inputs, metrics, settings)
    colours = style.method_palette(style.ordered_methods(data["method"]))
    return data, layer, _levels(data), colours


def _level_panels(rows: int, levels: list[str], height: float, **share):
    """One column of panels per label level, sharing the epoch axis."""
    return style.panels(rows, len(levels), (3.2 * len(levels) + 1.6, height), sharex=True, **share)


@FIGURES.register("geometry_accuracy")
def geometry_accuracy(inputs: dict, stem: Path, settings: dict) -> list[Path]:
    """Seed 004 Fig. 2: per label level (rows), normalised by each run's value at
    initialisation (epoch 0): NCC train accuracy (left), the NCC / linear test-accuracy ratio
    (middle; the ratio is taken per run, epoch and level for the probe `linear_probe`) and
    linear test accuracy (right), along training at the deep layer.

    Input `table` (geometry.tsv). Settings `deep_layer`, `linear_probe`.
    """
    linear = linear_metric(settings)
    data, layer, levels, colours = _deep_layer_levels(
        inputs, ["ncc_train", "ncc_test", linear], settings
    )
    measures = _normalised_at_init(_with_ratio(data, linear))
    columns = [
        ("ncc_train", "NCC train accuracy"),
        ("ratio", f"NCC / {PROBES[linear.removeprefix('linear_')]} test accuracy"),
        (linear, f"{PROBES[linear.removeprefix('linear_')]} test accuracy"),
    ]
    fig, axes = style.panels(len(levels), 3, (11.5, 2.6 * len(levels) + 0.8), sharex=True)
    for r, level in enumerate(levels):
        for c, (metric, name) in enumerate(columns):
            ax = axes[r, c]
            rows = measures[(measures["metric"] == metric) & (measures["probe"] == level)]
            style.mean_sd_lines(ax, rows, "epoch", colours, marker=".")
            ax.axhline(1, color="0.7", lw=0.8, zorder=0)
            if r == 0:
                ax.set_title(f"{name}\n(÷ its value at initialisation)", fontsize=9)
            if c == 0:
                ax.set_ylabel(LEVEL_TITLES.get(level, level))
            style.epoch_axis(ax, label=r == len(levels) - 1)
            sns.despine(ax=ax)
    style.method_legend(fig, colours, title=f"Method\n({_note(data)})", loc="outside right upper")
    fig.suptitle(f"Clustering by label level along training, {layer} (seed 004 Fig. 2)")
    return style.save(fig, stem, *readers.formats(settings))


def _with_ratio(data: pd.DataFrame, linear: str) -> pd.DataFrame:
    """`data` plus rows `ratio` = ncc_test / linear per run, epoch, layer and level."""
    keys = ["method", "seed", "epoch", "layer", "probe"]
    wide = data.pivot_table(index=keys, columns="metric", values="value").reset_index()
    ratio = wide[keys].assign(metric="ratio", value=wide["ncc_test"] / wide[linear])
    return pd.concat([data, ratio], ignore_index=True)


def _normalised_at_init(data: pd.DataFrame) -> pd.DataFrame:
    """Each value divided by the same run's, layer's, level's and metric's value at epoch 0
    (seed 004 Fig. 2 normalises every curve so)."""
    keys = ["method", "seed", "layer", "probe", "metric"]
    start = data[data["epoch"] == 0].set_index(keys)["value"].rename("start")
    out = data.join(start, on=keys)
    return out.assign(value=out["value"] / out["start"]).drop(columns="start")


@FIGURES.register("geometry_accuracy_raw")
def geometry_accuracy_raw(inputs: dict, stem: Path, settings: dict) -> list[Path]:
    """Seed 004 Fig. 6 (left), the un-normalised Fig. 2: NCC (top) and linear-probe (bottom)
    test accuracy vs epoch per level.

    Input `table` (geometry.tsv). Settings `deep_layer`, `linear_probe`.
    """
    linear = linear_metric(settings)
    data, layer, levels, colours = _deep_layer_levels(inputs, ["ncc_test", linear], settings)
    fig, axes = _level_panels(2, levels, 5.2, sharey=True)
    for r, (metric, name) in enumerate(
        (("ncc_test", "NCC"), (linear, PROBES[linear.removeprefix("linear_")]))
    ):
        for c, level in enumerate(levels):
            ax = axes[r, c]
            rows = data[(data["metric"] == metric) & (data["probe"] == level)]
            style.mean_sd_lines(ax, rows, "epoch", colours, marker=".")
            ax.set_title(LEVEL_TITLES.get(level, level))
            if c == 0:
                ax.set_ylabel(f"{name} test accuracy\n(fraction)")
            style.epoch_axis(ax, label=r == 1)
            sns.despine(ax=ax)
    style.method_legend(fig, colours, title=f"Method\n({_note(data)})", loc="outside right upper")
    fig.suptitle(f"Clustering by label level along training, {layer} (seed 004 Fig. 2)")
    return style.save(fig, stem, *readers.formats(settings))


@FIGURES.register("cdnv_vs_epoch")
def cdnv_vs_epoch(inputs: dict, stem: Path, settings: dict) -> list[Path]:
    """Seed 004: class-distance normalised variance vs epoch per level (log scale).

    CDNV spans orders of magnitude, so seeds are summarised in log space: the line is the
    geometric mean, the band ×/÷ the geometric SD.

    Input `table` (geometry.tsv, metric `cdnv`). Settings `deep_layer`.
    """
    data, layer, levels, colours = _deep_layer_levels(inputs, ["cdnv"], settings)
    fig, axes = _level_panels(1, levels, 3.0)
    for ax, level in zip(axes[0], levels, strict=True):
        rows = data[data["probe"] == level]
        style.mean_sd_lines(ax, rows, "epoch", colours, marker=".", log=True)
        style.plain_log_axis(ax)
        ax.set_title(LEVEL_TITLES.get(level, level))
        style.epoch_axis(ax)
        sns.despine(ax=ax)
    axes[0, 0].set_ylabel("CDNV (unitless, log scale)\ngeometric mean ×/÷ SD")
    style.method_legend(fig, colours, title=f"Method\n({_note(data)})", loc="outside right upper")
    fig.suptitle(f"Class-distance normalised variance along training, {layer} (seed 004)")
    return style.save(fig, stem, *readers.formats(settings))


@FIGURES.register("geometry_layers")
def geometry_layers(inputs: dict, stem: Path, settings: dict) -> list[Path]:
    """Seed 004 Fig. 5: linear accuracy per layer for fine and coarse classes, and their ratio
    superclass / original (coarse / fine) as the paper plots it.

    One row per method; lines are selected epochs in shades of the method's colour (light =
    early). The ratio is taken per run, epoch and layer, then averaged over seeds.
    Input `table` (geometry.tsv). Settings `epochs`, `linear_probe`.
    """
    linear = linear_metric(settings)
    data = readers.read_metrics(inputs, [linear])
    missing = {"fine", "coarse"} - set(data["probe"])
    if missing:
        raise ValueError(
            f"{readers.input_path(inputs, 'table')} has no {linear} rows at level "
            f"{sorted(missing)[0]!r} (probe column)"
        )
    data = data[data["probe"].isin(["fine", "coarse"])]
    keys = ["method", "seed", "epoch", "layer"]
    wide = data.pivot_table(index=keys, columns="probe", values="value").reset_index()
    wide["ratio"] = wide["coarse"] / wide["fine"]  # seed 004 Fig. 5 right: superclass / original
    order = readers.layer_order(settings, data["layer"])
    positions = {layer: i for i, layer in enumerate(order)}
    methods = style.ordered_methods(data["method"])
    colours = style.method_palette(methods)
    trained = data[data["epoch"] > 0]["epoch"] if (data["epoch"] > 0).any() else data["epoch"]
    epochs = readers.chosen_epochs(settings, set(trained) | {0})

    columns = [
        ("fine", "Fine-class accuracy\n(fraction)"),
        ("coarse", "Coarse-class accuracy\n(fraction)"),
        ("ratio", "Coarse / fine accuracy\n(ratio)"),
    ]
    fig, axes = style.panels(len(methods), 3, (10.5, 2.5 * len(methods) + 0.6), sharex=True)
    for r, method in enumerate(methods):
        runs = wide[(wide["method"] == method) & wide["epoch"].isin(epochs)]
        shown = sorted(set(runs["epoch"]))
        epoch_colours = dict(zip(shown, style.shades(colours[method], len(shown)), strict=True))
        for c, (column, label) in enumerate(columns):
            ax = axes[r, c]
            long = runs.rename(columns={column: "value"})
            style.mean_sd_lines(
                ax,
                long,
                "layer",
                epoch_colours,
                hue="epoch",
                positions=positions,
                label_of={e: f"epoch {e}" for e in shown},
                marker=".",
            )
            ax.set_ylabel(label)
            ax.set_title(method, color=colours[method])
            sns.despine(ax=ax)
        axes[r, 2].legend(frameon=False, fontsize=7, bbox_to_anchor=(1.02, 1), loc="upper left")
    for ax in axes[-1]:
        style.layer_axis(ax, order)
    probe = PROBES[linear.removeprefix("linear_")]
    fig.suptitle(f"{probe} accuracy per layer across training, {_note(data)} (seed 004 Fig. 5)")
    return style.save(fig, stem, *readers.formats(settings))
