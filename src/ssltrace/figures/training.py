"""Training curves per method and seed, and seed 004 Fig. 3 (left): loss parts vs accuracy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns

from ssltrace import tables
from ssltrace.figures import FIGURES, readers, style
from ssltrace.figures.geometry import LEVELS, PROBES, linear_metric

PARTS = {"loss": "total loss", "invariance": "invariance", "regularisation": "regularisation"}


def read_logs(inputs: dict, columns: list[str]) -> pd.DataFrame:
    """All `log:METHOD:SEED` training logs stacked long: method, seed, epoch, part, value.

    Runs without trained epochs (`untrained`: no file rows) contribute nothing.
    """
    frames = []
    for (method, seed), path in readers.run_inputs(inputs, "log").items():
        log = tables.read_train_log(path, columns)  # verified: a cut log is no shorter run
        long = log.melt(id_vars="epoch", value_vars=columns, var_name="part")
        if long.empty:
            continue  # header only: a run without trained epochs
        long = long.astype({"epoch": "int64", "value": "float64"})
        frames.append(long.assign(method=method, seed=seed))
    data = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    data = data.dropna(subset=["value"]) if not data.empty else data
    if data.empty:
        raise ValueError("no training log has any epoch rows (inputs log:METHOD:SEED)")
    return data


@FIGURES.register("training_curves")
def training_curves(inputs: dict, stem: Path, settings: dict) -> list[Path]:
    """Training loss vs epoch, one panel per method: thin line per seed, mean ± SD band.

    Inputs `log:METHOD:SEED` (runs/{method}/seed{seed}/train_log.tsv). Each method has its own
    y axis: the objectives are on different scales.
    """

    data = read_logs(inputs, ["loss"])
    methods = style.ordered_methods(data["method"])
    colours = style.method_palette(methods)
    n_cols = min(4, len(methods))
    n_rows = int(np.ceil(len(methods) / n_cols))
    fig, axes = style.panels(n_rows, n_cols, (2.9 * n_cols, 2.4 * n_rows + 0.5))
    for ax, method in zip(axes.flat, methods, strict=False):
        rows = data[data["method"] == method]
        for _seed, run in rows.groupby("seed"):
            ax.plot(run["epoch"], run["value"], color=colours[method], lw=0.6, alpha=0.5)
        style.mean_sd_lines(ax, rows, "epoch", {method: colours[method]})
        ax.set_title(method, color=colours[method])
        style.epoch_axis(ax)
        ax.set_ylabel("Training loss (objective units)")
        sns.despine(ax=ax)
    for ax in list(axes.flat)[len(methods) :]:
        ax.axis("off")
    n_seeds = style.seed_count(data)
    fig.suptitle(f"Training curves: thin lines single seeds, bold {style.seeds_note(n_seeds)}")
    return style.save(fig, stem, *readers.formats(settings))


@FIGURES.register("loss_and_accuracy")
def loss_and_accuracy(inputs: dict, stem: Path, settings: dict) -> list[Path]:
    """Seed 004 Fig. 3 (left): loss parts (left) and linear accuracy per level (right) vs epoch.

    One row per trained method, in its colour; line styles separate the loss parts and the
    label levels. Inputs `log:METHOD:SEED` and `table` (geometry.tsv); settings `deep_layer`,
    `linear_probe`.
    """
    import matplotlib.pyplot as plt

    logs = read_logs(inputs, list(PARTS))
    linear = linear_metric(settings)
    accuracy, layer = readers.deep_layer_rows(inputs, [linear], settings)
    methods = style.ordered_methods(logs["method"])
    colours = style.method_palette(methods)
    levels = [lv for lv in LEVELS if lv in set(accuracy["probe"])]

    fig, axes = style.panels(len(methods), 2, (8.0, 2.4 * len(methods) + 0.6), sharex=True)
    for r, method in enumerate(methods):
        colour = {method: colours[method]}
        left, right = axes[r]
        for (part, name), ls in zip(PARTS.items(), style.LINESTYLES, strict=False):
            rows = logs[(logs["method"] == method) & (logs["part"] == part)]
            style.mean_sd_lines(left, rows, "epoch", colour, linestyle=ls, label_of={method: name})
        left.set_ylabel("Loss (objective units)")
        left.set_title(method, color=colours[method])
        for level, ls in zip(levels, style.LINESTYLES, strict=False):
            rows = accuracy[(accuracy["method"] == method) & (accuracy["probe"] == level)]
            style.mean_sd_lines(
                right, rows, "epoch", colour, linestyle=ls, label_of={method: level}
            )
        right.set_ylabel(f"{PROBES[linear.removeprefix('linear_')]}\ntest accuracy (fraction)")
        right.set_title(f"{method} · {layer}", color=colours[method])
        for ax in (left, right):
            sns.despine(ax=ax)
    for r, row in enumerate(axes):
        for ax in row:
            style.epoch_axis(ax, label=r == len(axes) - 1)
    # Line styles mean the same in every row: one key per column, under the bottom row.
    for ax, title, names in (
        (axes[-1, 0], "loss part", list(PARTS.values())),
        (axes[-1, 1], "label level", levels),
    ):
        handles = [
            plt.Line2D([], [], color="0.3", linestyle=ls, label=name)
            for name, ls in zip(names, style.LINESTYLES, strict=False)
        ]
        ax.legend(
            handles=handles,
            title=title,
            ncol=len(handles),
            frameon=False,
            fontsize=7,
            loc="upper center",
            bbox_to_anchor=(0.5, -0.3),
        )
    n_seeds = style.seed_count(logs)
    fig.suptitle(f"Loss parts and linear accuracy, {style.seeds_note(n_seeds)} (seed 004 Fig. 3)")
    return style.save(fig, stem, *readers.formats(settings))
