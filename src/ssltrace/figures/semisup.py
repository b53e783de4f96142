"""Seed 003 Fig. 4e-f: categorisation accuracy (and behavioural consistency) of the
semi-supervised methods and the few-label control against the number of labels.

A run with a labelled subset (`method_settings.<name>.labels`) is a point at its number of
labelled training images (`ssltrace.training.labels.n_labelled` of the dataset's class sizes,
the same count the training engine draws); runs of one registered method (`mean_teacher_f01`,
`mean_teacher_f10`, ...) form one line. Runs without a subset (the supervised baseline with
every label, an unsupervised method with none) are drawn as horizontal reference lines.
Accuracy is the linear-probe test accuracy of the known fine classes (geometry table,
`figures.linear_probe`) at the deep layer (`figures.deep_layer`) and each run's final epoch;
points are means over seeds, bars ± 1 SD. Behavioural consistency (Fig. 4e) is drawn from the
`behaviour` input's `behaviour_consistency` metric when the figure is given one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns

from ssltrace.figures import FIGURES, readers, style
from ssltrace.figures.geometry import PROBES, linear_metric


def label_counts(settings: dict) -> dict[str, tuple[str, int]]:
    """Run name -> (registered method, labelled training images) for every run with a subset."""
    from ssltrace.data import DATASETS
    from ssltrace.training.labels import n_labelled

    if not settings.get("method_settings"):  # a hand-made call without the study's settings
        return {}
    options = settings["dataset"].get("options", {})
    source = DATASETS.get(settings["dataset"]["name"]).resolved(options)  # a folder's counts
    per_class = source.images_per_class("train", options)
    counts = np.full(source.fine_per_coarse * settings["n_known"], per_class)
    out = {}
    for name, run in (settings.get("method_settings") or {}).items():
        if run.get("labels") is not None:
            out[name] = (run.get("method", name), n_labelled(run["labels"], counts))
    return out


def _panel(ax, data: pd.DataFrame, counts: dict, colours: dict, ylabel: str) -> None:
    final = readers.final_epoch(data)
    swept = final[final["method"].isin(counts)]
    swept = swept.assign(
        family=swept["method"].map(lambda m: counts[m][0]),
        labels=swept["method"].map(lambda m: counts[m][1]),
    )
    style.mean_sd_lines(ax, swept, "labels", colours, hue="family", marker="o")
    for method, rows in final[~final["method"].isin(counts)].groupby("method", sort=False):
        ax.axhline(rows["value"].mean(), color=colours[method], linestyle="--", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("Labelled training images")
    ax.set_ylabel(ylabel)
    sns.despine(ax=ax)


@FIGURES.register("label_sweep")
def label_sweep(inputs: dict, stem: Path, settings: dict) -> list[Path]:
    """Seed 003 Fig. 4f (and 4e with a `behaviour` input): a measure against the number of
    labels per semi-supervised method and the few-label control (module docstring).

    Inputs `table` (geometry.tsv), optional `behaviour`. Settings `method_settings`,
    `dataset`, `n_known`, `deep_layer`, `linear_probe`.
    """
    linear = linear_metric(settings)
    data, layer = readers.deep_layer_rows(inputs, [linear], settings)
    data = data[data["probe"] == "fine"]
    counts = label_counts(settings)
    panels = [(data, f"{PROBES[linear.removeprefix('linear_')]} test accuracy, fine classes")]
    if "behaviour" in inputs:
        panels.insert(0, _consistency_panel(inputs, layer))
    families = list(dict.fromkeys(method for method, _ in counts.values()))
    others = [m for m in style.ordered_methods(data["method"]) if m not in counts]
    colours = style.method_palette(families + others)
    fig, axes = style.panels(1, len(panels), (4.6 * len(panels) + 1.8, 3.6))
    for ax, (rows, ylabel) in zip(axes[0], panels, strict=True):
        _panel(ax, rows, counts, colours, ylabel)
        if not counts:
            ax.text(0.5, 0.5, "no run with a labelled subset", transform=ax.transAxes,
                    ha="center", va="center", color="0.5")  # fmt: skip
    title = f"Method\n(dashed: no subset;\n{style.seeds_note(style.seed_count(data))})"
    style.method_legend(fig, colours, title=title, loc="outside right upper")
    fig.suptitle(f"Accuracy against the number of labels, {layer} (seed 003 Fig. 4e-f)")
    return style.save(fig, stem, *readers.formats(settings))


def _consistency_panel(inputs: dict, layer: str) -> tuple:
    """(rows, y label) of Fig. 4e: consistency with the CIFAR-10H humans (probe `human`) of
    the behaviour table, at the deep layer when the behaviour analysis read it, else at the
    layer it read (`behaviour.layers`, default the penultimate)."""
    rows = readers.read_metrics(inputs, ["behaviour_consistency"], role="behaviour")
    rows = rows[rows["probe"] == "human"]
    at = layer if layer in set(rows["layer"]) else rows["layer"].iloc[0]
    return rows[rows["layer"] == at], f"Behavioural consistency with humans, {at}"
